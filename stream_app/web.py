"""HTTP lookups served by the worker: thin views over the Redis store."""

from __future__ import annotations

import faust
from faust.web import Request, Response, View

from stream_app.runtime import Runtime
from stream_app.store.records import public_view


def register(app: faust.App, runtime: Runtime) -> None:
    """Attach the web views to `app`."""

    @app.page("/customers/{customer_id}")
    async def customer(web: View, request: Request, customer_id: str) -> Response:
        fields = await runtime.store.fields(customer_id)
        if not fields:
            return web.json(
                {"error": "not_found", "detail": f"customer {customer_id!r} is unknown"},
                status=404,
            )
        return web.json(public_view(fields))

    @app.page("/healthz")
    async def health(web: View, request: Request) -> Response:
        ok = bool(await runtime.redis.ping())
        return web.json({"redis": ok}, status=200 if ok else 503)
