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
Run: ``python -m load.bench_client [--calls 3000] [--args 300]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
from collections.abc import Awaitable, Callable
from typing import Any

from load.bench_env import PrivateRedis
from stream_app.connections import async_redis, sync_redis
from stream_app.settings import Settings

__all__ = ["measure_client"]

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
            "four_calls": await _timed(four_calls, calls // 4),
            "one_pipeline": await _timed(one_pipeline, calls // 4),
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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--args", type=int, default=300)
    cli = parser.parse_args()
    with PrivateRedis() as server:
        print(json.dumps(measure_client(server.url, cli.calls, cli.args), indent=2))
