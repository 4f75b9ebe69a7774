"""The worker's web server: probes, lookups (thin views over `stream_app.lookup`), ops page.

`register` installs, in order: the guard every request passes (`stream_app.auth`), the
probes, the lookups, the ops page. A new route is added by one more ``_register_*``
function; it is guarded without a word (read scope to read, admin to change). The views
run on the web server's own thread and loop (`stream_app.web_side`): they read Redis
through ``side.redis``, never ``runtime.redis``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import faust
import orjson
from aiohttp import web as aiohttp_web
from faust.web import Request, Response, View

from stream_app import auth, history_lookup, lookup, metrics, ops, probes
from stream_app.agents.valuation import fit_now
from stream_app.runtime import Runtime
from stream_app.settings import is_loopback
from stream_app.web_side import WebSide

_Handler = Callable[[aiohttp_web.Request], Awaitable[aiohttp_web.StreamResponse]]


def _error(web: View, status: int, code: str, detail: str) -> Response:
    return web.json({"error": code, "detail": detail}, status=status)


def _number(request: Request, name: str, kind: type[int] | type[float]) -> int | float | None:
    """Query parameter `name` as `kind`, None if absent; a `ValueError` naming it if not one."""
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        return kind(raw)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise ValueError(f"{name}: {raw[:40]!r} is not {what}") from None


def _int(request: Request, name: str, default: int) -> int:
    """Integer query parameter `name`, `default` if absent (see `_number`)."""
    value = _number(request, name, int)
    return default if value is None else int(value)


def _opt_int(request: Request, name: str) -> int | None:
    """Integer query parameter `name`, None if absent (see `_number`)."""
    value = _number(request, name, int)
    return None if value is None else int(value)


def register(app: faust.App, runtime: Runtime) -> None:
    """Attach the guard, the probes, the lookups and the ops page to `app`."""
    side = WebSide(app, runtime)
    _install_guard(app, auth.Guard(runtime.settings.api_tokens))
    _register_probes(app, side)
    _register_history(app, side)  # before the lookups: /customers/unprofitable
    _register_lookups(app, side)
    ops.register(app, side)  # the ops page: feed, top value at risk, churn metrics
    ops.register_trends(app, runtime)  # the trends page: /ops/trends
    metrics.register(app, runtime, side)  # GET /metrics (Prometheus) and the summary line


def _install_guard(app: faust.App, guard: auth.Guard) -> None:
    """Every request but a probe passes `guard` (an aiohttp middleware on Faust's web app)."""

    @aiohttp_web.middleware
    async def check(
        request: aiohttp_web.Request, handler: _Handler
    ) -> aiohttp_web.StreamResponse:
        host = request.host.rsplit(":", 1)[0] if request.host else ""
        if (not guard.enabled and request.path not in auth.OPEN_PATHS
                and not is_loopback(host)):
            # No tokens means loopback only: a page that rebinds its own name to
            # 127.0.0.1 still sends that name as Host, and is refused here.
            denied: auth.Denied | None = auth.Denied(
                421, "misdirected", "without API tokens only loopback host names are served")
        else:
            denied = guard.check(request.method, request.path, request.headers,
                                 [f"{request.scheme}://{request.host}"])
        if denied is None:
            return await handler(request)
        headers = {"WWW-Authenticate": 'Bearer realm="cvm"'} if denied.status == 401 else {}
        return aiohttp_web.json_response(
            {"error": denied.code, "detail": denied.detail}, status=denied.status,
            headers={**headers, "Cache-Control": "no-store"},
        )

    app.web.web_app.middlewares.append(check)


def _register_probes(app: faust.App, side: WebSide) -> None:
    """``/livez``, ``/readyz`` and ``/healthz`` (= ``/readyz``), open to all (see `probes`)."""
    health = probes.Health()
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


def _register_history(app: faust.App, side: WebSide) -> None:
    """Value history, population trends and loss-making customers (`history_lookup`)."""
    runtime = side.runtime

    @app.page("/customers/unprofitable")
    async def unprofitable(web: View, request: Request) -> Response:
        try:
            doc = await history_lookup.unprofitable(side.redis, runtime.settings,
                                                    _int(request, "n", 50))
        except ValueError as exc:
            return _error(web, 400, "bad_request", str(exc))
        return web.json(doc)

    @app.page("/customers/{customer_id}/history")
    async def history(web: View, request: Request, customer_id: str) -> Response:
        doc = await history_lookup.history(side.redis, runtime.settings, customer_id)
        if doc is None:
            return _error(web, 404, "not_found", f"customer {customer_id!r} is unknown")
        return web.json(doc)

    @app.page("/trends")
    async def trends(web: View, request: Request) -> Response:
        try:
            doc = await history_lookup.trends(
                side.redis, runtime.settings, _opt_int(request, "periods"))
        except ValueError as exc:
            return _error(web, 400, "bad_request", str(exc))
        return web.json(doc)


def _register_lookups(app: faust.App, side: WebSide) -> None:
    """Customers, roll-ups, the value model and win-back results."""
    runtime = side.runtime

    @app.page("/customers/top")
    async def top(web: View, request: Request) -> Response:
        try:
            rows = await lookup.top(side.redis, request.query.get("by", "clv"),
                                    _int(request, "n", 100), runtime.keys)
        except ValueError as exc:
            return _error(web, 400, "bad_request", str(exc))
        return web.json({"by": request.query.get("by", "clv"), "customers": rows})

    @app.page("/customers/{customer_id}")
    async def customer(web: View, request: Request, customer_id: str) -> Response:
        try:
            affinity = await side.affinity()
            view = await lookup.customer(
                side.redis,
                runtime.settings,
                customer_id,
                horizon_days=_number(request, "horizon_days", float),
                as_of=lookup.parse_as_of(request.query.get("as_of")),
                model=runtime.live.model,
                cuts=runtime.live.cuts,
                affinity=affinity,
            )
        except ValueError as exc:
            return _error(web, 400, "bad_request", str(exc))
        if view is None:
            return _error(web, 404, "not_found", f"customer {customer_id!r} is unknown")
        return web.json(view)

    @app.page("/customers/{customer_id}/offers")
    async def customer_offers(web: View, request: Request, customer_id: str) -> Response:
        try:
            affinity = await side.affinity()
            view = await lookup.customer_offers(
                side.redis, runtime.settings, customer_id,
                k=_opt_int(request, "k"), model=runtime.live.model,
                affinity=affinity,
            )
        except ValueError as exc:
            return _error(web, 400, "bad_request", str(exc))
        if view is None:
            return _error(web, 404, "not_found", f"customer {customer_id!r} is unknown")
        return web.json(view)

    @app.page("/rollups/{scope}")
    async def rollups(web: View, request: Request, scope: str) -> Response:
        try:
            rows = await lookup.rollups(side.redis, scope.rstrip("s"), runtime.keys)
        except ValueError as exc:
            return _error(web, 404, "not_found", str(exc))
        return web.json({"scope": scope, "rows": rows})

    @app.page("/model")
    class Model(View):
        async def get(self, request: Request) -> Response:
            raw = await side.redis.get(runtime.keys.model)
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
            doc = await side.on_worker(lambda: fit_now(runtime, as_of))
            if doc is None:
                return _error(self, 409, "not_fitted", "not enough data to fit; see the log")
            return self.json(doc)

    @app.page("/winback/results")
    async def winback(web: View, request: Request) -> Response:
        return web.json(await lookup.winback_results(side.redis, runtime.settings))
