"""HTTP lookups served by the worker: thin views over `stream_app.lookup`."""

from __future__ import annotations

import faust
import orjson
from faust.web import Request, Response, View

from stream_app import lookup, metrics, ops
from stream_app.agents.valuation import fit_now
from stream_app.runtime import Runtime


def _error(web: View, status: int, code: str, detail: str) -> Response:
    return web.json({"error": code, "detail": detail}, status=status)


def register(app: faust.App, runtime: Runtime) -> None:
    """Attach the web views to `app`."""

    @app.page("/customers/top")
    async def top(web: View, request: Request) -> Response:
        try:
            n = int(request.query.get("n", "100"))
            rows = await lookup.top(runtime.redis, request.query.get("by", "clv"), n)
        except ValueError as exc:
            return _error(web, 400, "bad_request", str(exc))
        return web.json({"by": request.query.get("by", "clv"), "customers": rows})

    @app.page("/customers/{customer_id}")
    async def customer(web: View, request: Request, customer_id: str) -> Response:
        try:
            horizon = request.query.get("horizon_days")
            view = await lookup.customer(
                runtime.redis,
                runtime.settings,
                customer_id,
                horizon_days=None if horizon is None else float(horizon),
                as_of=lookup.parse_as_of(request.query.get("as_of")),
                model=runtime.live.model,
                cuts=runtime.live.cuts,
            )
        except ValueError as exc:
            return _error(web, 400, "bad_request", str(exc))
        if view is None:
            return _error(web, 404, "not_found", f"customer {customer_id!r} is unknown")
        return web.json(view)

    @app.page("/rollups/{scope}")
    async def rollups(web: View, request: Request, scope: str) -> Response:
        try:
            rows = await lookup.rollups(runtime.redis, scope.rstrip("s"))
        except ValueError as exc:
            return _error(web, 404, "not_found", str(exc))
        return web.json({"scope": scope, "rows": rows})

    @app.page("/model")
    class Model(View):
        async def get(self, request: Request) -> Response:
            raw = await runtime.redis.get(runtime.keys.model)
            doc = (
                {"version": 0, "detail": "prior parameters; no fit yet"}
                if raw is None else orjson.loads(raw)
            )
            doc["severity_bands"] = list(runtime.ingestor.decision_policy().alert.severity_bands)
            return self.json(doc)

        async def post(self, request: Request) -> Response:
            try:
                as_of = lookup.parse_as_of(request.query.get("as_of"))
            except ValueError as exc:
                return _error(self, 400, "bad_request", str(exc))
            doc = await fit_now(runtime, as_of)
            if doc is None:
                return _error(self, 409, "not_fitted", "not enough data to fit; see the log")
            return self.json(doc)

    @app.page("/winback/results")
    async def winback(web: View, request: Request) -> Response:
        return web.json(await lookup.winback_results(runtime.redis, runtime.settings))

    @app.page("/healthz")
    async def health(web: View, request: Request) -> Response:
        ok = bool(await runtime.redis.ping())
        return web.json({"redis": ok}, status=200 if ok else 503)

    ops.register(app, runtime)  # the ops page: feed, top value at risk, churn metrics
    metrics.register(app, runtime)  # GET /metrics (Prometheus) and the periodic summary line
