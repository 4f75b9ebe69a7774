"""What the web views use, bound to the event loop that serves them.

With CVM_WEB_IN_THREAD (the default) the worker's web server runs in a thread of its
own, with its own event loop (Faust's ``web_in_thread``), so a lookup is answered while
a batch or a rescoring chunk holds the worker's loop, rather than after it. What the
views touch is therefore split three ways:

* **Redis**: an asyncio client belongs to the loop it connects on, so the web thread has
  its own client (`Runtime.new_client`: same URL, credentials, TLS and server fence),
  made as the web server starts and closed as it stops, on the web thread's loop.
* **The worker's models**: the value model, the cut points and the severity bands are
  read from `Runtime.live` as they are: frozen values that the worker replaces whole,
  never changes in place, so a reader in the other thread sees the old one or the new
  one; so are the merged affinity tables the offers use (`WebSide.affinity`).
* **The rest** (a fit on demand, the consumer's positions for ``/metrics``) runs on the
  worker's loop, handed to it by `WebSide.on_worker`.

With CVM_WEB_IN_THREAD off everything runs on the worker's loop, with its own client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import faust
from aiohttp import web as aiohttp_web
from redis.asyncio import Redis

from stream_app import offers as product_offers
from stream_app.runtime import Runtime

__all__ = ["WebSide"]

T = TypeVar("T")


class WebSide:
    """The Redis client, affinity tables and worker calls of the views of one worker."""

    def __init__(self, app: faust.App, runtime: Runtime) -> None:
        self.runtime = runtime
        self.in_thread = bool(app.conf.web_in_thread)
        # Taken here, on the worker's thread: from the web thread, `app.loop` could name
        # that thread's loop.
        self.worker_loop = app.loop
        self._redis: Redis | None = None
        if self.in_thread:
            app.web.web_app.on_startup.append(self._start)
            app.web.web_app.on_cleanup.append(self._stop)

    @property
    def redis(self) -> Redis:
        """The client of the loop the views run on."""
        if not self.in_thread:
            return self.runtime.redis
        if self._redis is None:
            raise RuntimeError("the web server's Redis client is used before it started")
        return self._redis

    async def _start(self, _: aiohttp_web.Application) -> None:
        self._redis = self.runtime.new_client()

    async def _stop(self, _: aiohttp_web.Application) -> None:
        client, self._redis = self._redis, None
        if client is not None:
            await client.aclose()

    async def affinity(self) -> product_offers.Tables:
        """The worker's merged affinity tables, at most CVM_REFRESH_INTERVAL_S old.

        A worker that ingests reloads them with its batches, so a lookup finds them fresh;
        only when they are due (an idle worker) does the lookup have the worker's loop
        reload them, and waits for it.
        """
        ingestor = self.runtime.ingestor
        if not self.in_thread:
            await ingestor.refresh_affinity()
        elif ingestor.affinity_due():
            await self.on_worker(ingestor.refresh_affinity)
        return ingestor.affinity

    async def on_worker(self, make: Callable[[], Awaitable[T]]) -> T:
        """The result of the coroutine `make` returns, run on the worker's loop."""
        if not self.in_thread:
            return await make()

        async def run() -> T:
            return await make()

        return await asyncio.wrap_future(
            asyncio.run_coroutine_threadsafe(run(), self.worker_loop))
