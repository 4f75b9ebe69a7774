"""The event loop of the long-running processes: asyncio's own, or uvloop on request.

The worker spends its time in many small asynchronous steps: a fetch from Kafka handed
from Faust's consumer thread, a Redis round trip per batch and partition, a lookup on the
web thread. uvloop (libuv, in C) schedules callbacks and moves bytes through sockets for
less CPU than asyncio's pure Python loop; the bench's throughput stage measures the
difference (README, "The batch step, lookups and the read path"). ``CVM_EVENT_LOOP=uvloop``
runs on it; asyncio's loop stays the default until a worker on uvloop has been seen to
recover from broker failures as reliably (the README says what was seen). A platform
uvloop does not support runs on asyncio's loop.

>>> install("asyncio")
'asyncio'
>>> type(asyncio.new_event_loop()).__module__.startswith("asyncio")
True
"""

from __future__ import annotations

import asyncio
import logging

__all__ = ["LOOPS", "install", "running"]

log = logging.getLogger(__name__)

#: The values of ``CVM_EVENT_LOOP``.
LOOPS = ("uvloop", "asyncio")


def install(name: str) -> str:
    """Make the event loops this process creates from now on `name` loops.

    Returns the name of the loop installed: "asyncio" where uvloop cannot be imported.
    """
    if name not in LOOPS:
        raise ValueError(f"unknown event loop {name!r}: one of {', '.join(LOOPS)}")
    if name == "uvloop":
        try:
            import uvloop
        except ImportError:
            log.warning("uvloop is not installed here; running on asyncio's own loop")
        else:
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
            return "uvloop"
    asyncio.set_event_loop_policy(None)
    return "asyncio"


def running() -> str:
    """The kind of the running event loop: "uvloop" or "asyncio"."""
    module = type(asyncio.get_running_loop()).__module__
    return "uvloop" if module.startswith("uvloop") else "asyncio"
