"""``cvm serve``: the read API on a server of its own, apart from any worker.

A worker answers lookups on its web server's thread, which shares the interpreter with
the worker's batches: under ingest a lookup waits for the batches, and they for it. The
read server answers the same read requests (`stream_app.reads`) in processes that only
read Redis. It holds nothing but what it keeps from Redis for a while (`lookup.Kept`: the
watermarks, the model, the cut points, the affinity tables, the severity bands), so it
scales out by running more of it: ``--processes N`` starts N processes on one port
(``SO_REUSEPORT``: the kernel spreads the connections over them), and more hosts go
behind a load balancer, against the same Redis or its replicas.

Routes, guarded as the worker's (`stream_app.auth`): ``/livez``, ``/readyz`` (and
``/healthz``: Redis answers a PING), ``GET /customers/{id}``, ``/customers/{id}/offers``,
``/customers/{id}/history``, ``/customers/top``, ``/customers/unprofitable``,
``/trends``, ``/rollups/{channels|campaigns}``, ``/model`` and ``/winback/results``.
A fit (``POST /model``), the ops page and ``/metrics`` stay with the workers.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from redis.asyncio import Redis

from stream_app import auth, lookup, loops, reads
from stream_app.connections import async_redis
from stream_app.domain.alerts import AlertPolicy
from stream_app.models import load_severity_bands
from stream_app.probes import redis_answers
from stream_app.settings import Settings
from stream_app.store.keys import Keys

__all__ = ["build", "run"]

log = logging.getLogger(__name__)

_bands: lookup.Kept[reads.Bands] = lookup.Kept(lambda s: s.refresh_interval_s)


def _json(reply: reads.Reply) -> web.Response:
    status, doc = reply
    return web.Response(body=orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS), status=status,
                        content_type="application/json")


def build(settings: Settings) -> web.Application:
    """The read server's aiohttp application; its Redis client opens and closes with it."""
    app = web.Application(middlewares=[auth.middleware(auth.Guard(settings.api_tokens))])
    keys = Keys(partitions=settings.partitions)
    clients: list[Redis] = []

    def redis() -> Redis:
        if not clients:
            raise RuntimeError("the read server's Redis client is used before it started")
        return clients[0]

    async def open_client(_: web.Application) -> None:
        clients.append(async_redis(settings))

    async def close_client(_: web.Application) -> None:
        while clients:
            await clients.pop().aclose()

    app.on_startup.append(open_client)
    app.on_cleanup.append(close_client)

    async def severity_bands() -> reads.Bands:
        if settings.alert_severity_bands is not None:
            return settings.alert_severity_bands
        client = redis()
        return await _bands.get(client, keys, settings, lambda: load_severity_bands(
            client, keys, settings.alert_severity_percentiles, AlertPolicy().severity_bands))

    reader = reads.Reader(redis=redis, settings=settings, keys=keys,
                          severity_bands=severity_bands)

    def route(path: str, answer: Callable[[web.Request], Awaitable[reads.Reply]]) -> None:
        async def handle(request: web.Request) -> web.Response:
            return _json(await answer(request))

        app.router.add_get(path, handle)

    async def live(request: web.Request) -> reads.Reply:
        return 200, {"live": True}

    async def ready(request: web.Request) -> reads.Reply:
        ok, detail = await redis_answers(redis())
        return 200 if ok else 503, {"ready": ok, "redis": detail}

    def path(request: web.Request, name: str) -> str:
        return request.match_info[name]

    route("/livez", live)
    route("/readyz", ready)
    route("/healthz", ready)
    # Plain paths before the patterns they would match (/customers/{customer_id}).
    route("/customers/top", lambda r: reads.top(reader, r.query))
    route("/customers/unprofitable", lambda r: reads.unprofitable(reader, r.query))
    route("/customers/{customer_id}", lambda r: reads.customer(
        reader, path(r, "customer_id"), r.query))
    route("/customers/{customer_id}/offers", lambda r: reads.customer_offers(
        reader, path(r, "customer_id"), r.query))
    route("/customers/{customer_id}/history", lambda r: reads.history(
        reader, path(r, "customer_id")))
    route("/trends", lambda r: reads.trends(reader, r.query))
    route("/rollups/{scope}", lambda r: reads.rollups(reader, path(r, "scope")))
    route("/model", lambda r: reads.model(reader))
    route("/winback/results", lambda r: reads.winback(reader))
    return app


def _serve(settings: Settings, host: str, port: int, reuse_port: bool) -> None:
    loops.install(settings.event_loop)
    web.run_app(build(settings), host=host, port=port, reuse_port=reuse_port, print=None,
                access_log=None)


def _child(settings: Settings, host: str, port: int, parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops the children
    threading.Thread(target=_follow, args=(parent,), daemon=True).start()
    _serve(settings, host, port, reuse_port=True)


def _follow(parent: int, every_s: float = 0.5) -> None:
    """Stop this server (SIGTERM: a clean stop) once `parent` is gone.

    A supervisor killed outright (SIGKILL, the OOM killer) cannot stop its children, and
    orphans would go on serving the port next to the processes of its restart.
    """
    while os.getppid() == parent:
        time.sleep(every_s)
    os.kill(os.getpid(), signal.SIGTERM)


def run(settings: Settings, host: str, port: int, processes: int = 1) -> int:
    """Serve until SIGTERM or SIGINT; the exit status (0, or 1 if a process died).

    With `processes` > 1 this process supervises that many server processes on one port:
    if one dies, the others are stopped and the status is 1, for the supervisor above to
    restart the whole; if this process is killed outright, they stop by themselves.
    """
    if processes < 1:
        raise ValueError(f"processes: {processes} is not at least 1")
    log.info("read server on http://%s:%d (%d process%s)", host, port, processes,
             "" if processes == 1 else "es")
    if processes == 1:
        _serve(settings, host, port, reuse_port=False)
        return 0
    context = multiprocessing.get_context("spawn")
    children = [context.Process(target=_child, args=(settings, host, port, os.getpid()),
                                daemon=True)
                for _ in range(processes)]
    stopping: list[int] = []

    def stop(signum: int, _: Any) -> None:
        stopping.append(signum)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for child in children:
            child.start()
        while not stopping and all(child.is_alive() for child in children):
            _wait(children, 0.2)
        died = not stopping
    finally:
        for child in children:
            if child.is_alive():
                child.terminate()
        for child in children:
            child.join(10)
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 1 if died else 0


def _wait(children: list[Any], timeout: float) -> None:
    """Until a child ends or `timeout` passes (a signal handler runs meanwhile)."""
    multiprocessing.connection.wait([child.sentinel for child in children], timeout)
