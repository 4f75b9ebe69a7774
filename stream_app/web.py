"""The worker's web server: probes, lookups (thin views over `stream_app.reads`), ops page.

`register` installs, in order: the guard every request passes (`stream_app.auth`), the
probes, the lookups, the ops page. A new route is added by one more ``_register_*``
function; it is guarded without a word (read scope to read, admin to change). The views
run on the web server's own thread and loop (`stream_app.web_side`): they read Redis
through ``side.redis``, never ``runtime.redis``.
"""

from __future__ import annotations

import faust
from faust.web import Request, Response, View

from stream_app import auth, lookup, metrics, ops, probes, reads
from stream_app.agents.valuation import fit_now
from stream_app.runtime import Runtime
from stream_app.web_side import WebSide


def _reply(web: View, reply: reads.Reply) -> Response:
    status, doc = reply
    return web.json(doc, status=status)


def register(app: faust.App, runtime: Runtime) -> None:
    """Attach the guard, the probes, the lookups and the ops page to `app`."""
    side = WebSide(app, runtime)
    app.web.web_app.middlewares.append(auth.middleware(auth.Guard(runtime.settings.api_tokens)))
    _register_probes(app, side)

    async def bands() -> reads.Bands:
        return runtime.ingestor.decision_policy().alert.severity_bands

    reader = reads.Reader(
        redis=lambda: side.redis, settings=runtime.settings, keys=runtime.keys,
        severity_bands=bands, model=lambda: runtime.live.model,
        cuts=lambda: runtime.live.cuts, affinity=side.affinity,
    )
    _register_history(app, reader)  # before the lookups: /customers/unprofitable
    _register_lookups(app, side, reader)
    ops.register(app, side)  # the ops page: feed, top value at risk, churn metrics
    ops.register_trends(app, runtime)  # the trends page: /ops/trends
    metrics.register(app, runtime, side)  # GET /metrics (Prometheus) and the summary line


def _register_probes(app: faust.App, side: WebSide) -> None:
    """``/livez``, ``/readyz`` and ``/healthz`` (= ``/readyz``), open to all (see `probes`)."""
    health = probes.Health(side.runtime.settings.out_of_group_s)
    health.register(app)

    @app.page("/livez")
    async def livez(web: View, request: Request) -> Response:
        ok, doc = health.liveness()
        return web.json({"live": ok, **doc}, status=200 if ok else 503)

    async def ready(web: View) -> Response:
        ok, doc = await health.readiness(app, side.redis)
        return web.json(doc, status=200 if ok else 503)

    @app.page("/readyz")
    async def readyz(web: View, request: Request) -> Response:
        return await ready(web)

    @app.page("/healthz")
    async def healthz(web: View, request: Request) -> Response:
        return await ready(web)


def _register_history(app: faust.App, reader: reads.Reader) -> None:
    """Value history, population trends and loss-making customers (`history_lookup`)."""

    @app.page("/customers/unprofitable")
    async def unprofitable(web: View, request: Request) -> Response:
        return _reply(web, await reads.unprofitable(reader, request.query))

    @app.page("/customers/{customer_id}/history")
    async def history(web: View, request: Request, customer_id: str) -> Response:
        return _reply(web, await reads.history(reader, customer_id))

    @app.page("/trends")
    async def trends(web: View, request: Request) -> Response:
        return _reply(web, await reads.trends(reader, request.query))


def _register_lookups(app: faust.App, side: WebSide, reader: reads.Reader) -> None:
    """Customers, roll-ups, the value model and win-back results (`stream_app.reads`)."""
    runtime = side.runtime

    @app.page("/customers/top")
    async def top(web: View, request: Request) -> Response:
        return _reply(web, await reads.top(reader, request.query))

    @app.page("/customers/{customer_id}")
    async def customer(web: View, request: Request, customer_id: str) -> Response:
        return _reply(web, await reads.customer(reader, customer_id, request.query))

    @app.page("/customers/{customer_id}/offers")
    async def customer_offers(web: View, request: Request, customer_id: str) -> Response:
        return _reply(web, await reads.customer_offers(reader, customer_id, request.query))

    @app.page("/rollups/{scope}")
    async def rollups(web: View, request: Request, scope: str) -> Response:
        return _reply(web, await reads.rollups(reader, scope))

    @app.page("/model")
    class Model(View):
        async def get(self, request: Request) -> Response:
            return _reply(self, await reads.model(reader))

        async def post(self, request: Request) -> Response:
            try:
                as_of = lookup.parse_as_of(request.query.get("as_of"))
            except ValueError as exc:
                return _reply(self, reads.error(400, "bad_request", str(exc)))
            doc = await side.on_worker(lambda: fit_now(runtime, as_of))
            if doc is None:
                return _reply(self, reads.error(
                    409, "not_fitted", "not enough data to fit; see the log"))
            return self.json(doc)

    @app.page("/winback/results")
    async def winback(web: View, request: Request) -> Response:
        return _reply(web, await reads.winback(reader))
