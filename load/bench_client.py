"""The worker's CPU per Redis round trip: what a call costs the client, apart from the server.

A batch of a dozen records commits with one Lua call per partition it touched (about four)
and loads its customers with one pipeline, so at the batch sizes of half capacity the
client's cost per round trip is paid about five times a batch. This measures it with the
engine's own clients (`stream_app.connections`: the asyncio one the worker uses, which packs
commands with hiredis, and the blocking one), on a script that does nothing (``return 1``),
so the server's share is as small as it gets:

* ``ping``: one round trip with no arguments;
* ``evalsha_0`` and ``evalsha_N``: one script call with no arguments and with `args` short
  text arguments (a commit of about three customers carries some 300);
* ``four_calls`` and ``one_pipeline``: four calls of `args` / 4 arguments each, one after
  the other (as the commit makes them) and in one pipeline (one round trip).

CPU is the process's user and system time (``getrusage``) per operation, wall the elapsed
time; both vary with how busy the machine is, so compare rows of one run.

``--commit-split BATCH`` also drives `Ingestor.process` over simulated events (as
`load.bench_profile` does) in batches of BATCH records and splits the client CPU of each
commit call (`load.bench_profile`'s CPU timers around redis-py's steps, counted only inside
the call): packing the arguments (hiredis), sending them, reading the reply, and taking
and returning the pooled connection; ``call`` is the whole call, the rest of it redis-py's
own dispatch.
Run: ``python -m load.bench_client [--calls 3000] [--args 300] [--commit-split 12]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from redis.asyncio.connection import AbstractConnection, ConnectionPool

from load.bench_env import PrivateRedis
from load.bench_profile import (
    _wrap_async,
    _wrap_sync,
    profile_pipeline,
    raw_records,
    throughput_events,
)
from stream_app import resp
from stream_app.connections import async_redis, sync_redis
from stream_app.settings import Settings
from stream_app.store.customers import CustomerStore

__all__ = ["commit_split", "measure_client"]

#: The script every call runs: the server's work is as small as it gets.
NOTHING = "return 1"


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _row(cpu_s: float, wall_s: float, n: int) -> dict[str, float]:
    return {"cpu_us": round(cpu_s / n * 1e6, 1), "wall_us": round(wall_s / n * 1e6, 1)}


async def _timed(op: Callable[[], Awaitable[Any]], n: int) -> dict[str, float]:
    await op()  # the connection is open and the script known before the clock starts
    c0, w0 = _cpu(), time.perf_counter()
    for _ in range(n):
        await op()
    return _row(_cpu() - c0, time.perf_counter() - w0, n)


async def _async_rows(settings: Settings, calls: int, args: list[str]) -> dict[str, Any]:
    client = async_redis(settings)
    script = client.register_script(NOTHING)
    quarter = args[: len(args) // 4]

    async def four_calls() -> None:
        for _ in range(4):
            await script(keys=[], args=quarter)

    async def one_pipeline() -> None:
        async with client.pipeline(transaction=False) as pipe:
            for _ in range(4):
                await script(keys=[], args=quarter, client=pipe)
            await pipe.execute()

    try:
        return {
            "ping": await _timed(client.ping, calls),
            "evalsha_0": await _timed(lambda: script(keys=[], args=[]), calls),
            f"evalsha_{len(args)}": await _timed(lambda: script(keys=[], args=args), calls),
            "four_calls": await _timed(four_calls, max(calls // 4, 1)),
            "one_pipeline": await _timed(one_pipeline, max(calls // 4, 1)),
        }
    finally:
        await client.aclose()


def _sync_rows(settings: Settings, calls: int, args: list[str]) -> dict[str, Any]:
    client = sync_redis(settings)
    script = client.register_script(NOTHING)
    rows: dict[str, Any] = {}
    try:
        for name, op in (("ping", client.ping),
                         (f"evalsha_{len(args)}", lambda: script(keys=[], args=args))):
            op()
            c0, w0 = _cpu(), time.perf_counter()
            for _ in range(calls):
                op()
            rows[name] = _row(_cpu() - c0, time.perf_counter() - w0, calls)
    finally:
        client.close()
    return rows


def measure_client(url: str, calls: int = 3000, args: int = 300) -> dict[str, Any]:
    """CPU and wall time per operation of the engine's Redis clients (see the module)."""
    settings = Settings(redis_url=url)
    texts = [f"field.{i:04d}" for i in range(args)]
    return {
        "calls": calls,
        "args": args,
        "asyncio": asyncio.run(_async_rows(settings, calls, texts)),
        "blocking": _sync_rows(settings, calls, texts),
    }


#: The redis-py steps `commit_split` times: (owner, method, label, is a coroutine).
_STEPS = (
    (resp._HiredisPacking, "pack_command", "pack", False),
    (AbstractConnection, "send_packed_command", "send", True),
    (AbstractConnection, "read_response", "read", True),
    (ConnectionPool, "get_connection", "pool", True),
    (ConnectionPool, "release", "pool", True),
)


class _InsideCommits:
    """Where `load.bench_profile`'s timers report: keeps the client CPU of what runs inside
    a commit call (by step, without the label's suffix) and drops the rest."""

    def __init__(self, spent: dict[str, float]) -> None:
        self.spent = spent
        self.inside = False

    def add(self, name: str, seconds: float) -> None:
        if self.inside and "waiting" not in name:
            self.spent[name.removesuffix(": client CPU")] += seconds


@contextmanager
def _split_commits(spent: dict[str, float]) -> Iterator[None]:
    """Add each commit call's client CPU, whole and by step, to `spent` (seconds)."""
    sink = _InsideCommits(spent)
    saved: list[tuple[Any, str, Any]] = []
    for owner, name, label, coroutine in _STEPS:
        original = owner.__dict__[name]
        saved.append((owner, name, original))
        wrap = _wrap_async if coroutine else _wrap_sync
        setattr(owner, name, wrap(original, label, sink))  # type: ignore[arg-type]
    original_init = CustomerStore.__init__

    def init(store: CustomerStore, *args: Any, **kwargs: Any) -> None:
        original_init(store, *args, **kwargs)
        script = store._commit

        async def call(keys: list[str], args: list[Any]) -> Any:
            sink.inside = True
            c0 = time.process_time()
            try:
                return await script(keys=keys, args=args)
            finally:
                spent["call"] += time.process_time() - c0
                spent["calls"] += 1
                sink.inside = False

        store._commit = call  # type: ignore[assignment]

    saved.append((CustomerStore, "__init__", original_init))
    CustomerStore.__init__ = init  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        for owner, name, original in reversed(saved):
            setattr(owner, name, original)


def commit_split(url: str, batch_size: int = 12, events: int = 6000,
                 seed: int = 7) -> dict[str, Any]:
    """Client CPU per commit call by redis-py step, over `events` simulated events."""
    settings = Settings(redis_url=url)
    records = raw_records(throughput_events(events, events, 120, seed), settings)
    # Imports and first calls outside the measurement.
    asyncio.run(profile_pipeline(settings, records[: min(600, events)], batch_size=50,
                                 timers=False))
    spent: dict[str, float] = defaultdict(float)
    with _split_commits(spent):
        asyncio.run(profile_pipeline(settings, records, batch_size=batch_size, timers=False))
    calls = int(spent.pop("calls"))
    return {"events": len(records), "batch_size": batch_size, "commit_calls": calls,
            "client_cpu_us_per_call": {k: round(v / calls * 1e6, 1) for k, v in spent.items()},
            "client_cpu_us_per_event": {k: round(v / len(records) * 1e6, 1)
                                        for k, v in spent.items()}}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--args", type=int, default=300)
    parser.add_argument("--commit-split", type=int, metavar="BATCH",
                        help="also split each commit call's client CPU at this batch size")
    cli = parser.parse_args()
    with PrivateRedis() as server:
        out = measure_client(server.url, cli.calls, cli.args)
        if cli.commit_split:
            out["commit_split"] = commit_split(server.url, cli.commit_split)
        print(json.dumps(out, indent=2))
