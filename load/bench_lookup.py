"""Lookup latency under concurrent load, measured from a process of its own.

Four kinds of lookup of random known customers, each by `concurrency` asyncio clients in a
closed loop (a client sends its next request when the previous answer arrived) for
`duration` seconds:

* ``hgetall``: ``HGETALL`` of the customer's hash with redis-py's asyncio client;
* ``lookup``: `stream_app.lookup.customer` (the hash, the watermark, the model and the cut
  points from Redis, then the revaluation), as the CLI and the web view call it;
* ``values``: the same without the product profile and the offers (``offers=False``), so
  the difference of the two is what the offers cost;
* ``http``: ``GET /customers/{id}`` on the worker's web server with aiohttp;
* ``hgetall-c`` (`c_client_hgetall`): the same ``HGETALL`` by ``redis-benchmark``, a C client.

Latency is the wall time around one request. It runs in a subprocess so the benchmark's own
threads (producer, freshness poller) do not share its interpreter lock. Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import random
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import orjson
from redis.connection import parse_url

from load.bench_stats import summarize
from stream_app import lookup
from stream_app.connections import async_redis
from stream_app.settings import Settings
from stream_app.store.keys import Keys

KINDS = ("hgetall", "lookup", "values", "http")


async def _closed_loop(request: Callable[[str], Awaitable[None]], ids: Sequence[str],
                       concurrency: int, duration: float, seed: int) -> dict[str, object]:
    latencies: list[float] = []
    errors = 0
    end = time.perf_counter() + duration

    async def client(k: int) -> None:
        nonlocal errors
        rng = random.Random(seed * 1000 + k)
        while time.perf_counter() < end:
            cid = ids[rng.randrange(len(ids))]
            t0 = time.perf_counter()
            try:
                await request(cid)
            except Exception:  # counted and reported; the load goes on
                errors += 1
                continue
            latencies.append(time.perf_counter() - t0)

    began, cpu0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client(k) for k in range(concurrency)))
    elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu0
    return {
        **summarize(latencies).as_dict(),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "errors": errors,
        # The client's own CPU: near 1 core means the client process is what saturates.
        "client_cores": round(cpu / elapsed, 3),
        "client_cpu_us_per_request": round(cpu * 1e6 / max(len(latencies), 1), 1),
    }


async def measure(kind: str, settings: Settings, ids: Sequence[str], concurrency: int,
                  duration: float, seed: int = 1) -> dict[str, object]:
    """One closed-loop measurement of `kind` (see the module docstring)."""

    keys = Keys()
    redis = async_redis(settings, max_connections=max(concurrency, 2))
    session = None
    try:
        if kind == "hgetall":
            async def request(cid: str) -> None:
                if not await redis.hgetall(keys.customer(cid)):
                    raise LookupError(cid)
        elif kind in ("lookup", "values"):
            offers = kind == "lookup"

            async def request(cid: str) -> None:
                if await lookup.customer(redis, settings, cid, offers=offers) is None:
                    raise LookupError(cid)
        elif kind == "http":
            import aiohttp

            base = f"http://{settings.web_host}:{settings.web_port}/customers/"
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=concurrency),
                timeout=aiohttp.ClientTimeout(total=30),
            )

            async def request(cid: str) -> None:
                assert session is not None
                async with session.get(base + cid) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise LookupError(f"{cid}: HTTP {resp.status}")
        else:
            raise ValueError(f"kind {kind!r} is not one of {KINDS}")
        # Warm the connections (and the server's caches) before measuring.
        warm = await _closed_loop(request, ids, concurrency, min(0.5, duration), seed + 99)
        result = await _closed_loop(request, ids, concurrency, duration, seed)
        result["warmup_requests"] = warm["n"]
    finally:
        if session is not None:
            await session.close()
        await redis.aclose()
    return {"kind": kind, "concurrency": concurrency, "duration_s": duration, **result}


#: `kind` of the C client's rows: the same HGETALL, without Python on the client side.
C_CLIENT = "hgetall-c"


def c_client_hgetall(settings: Settings, customer_id: str, concurrency: int,
                     requests: int = 100_000) -> dict[str, object] | None:
    """``HGETALL`` of one customer's hash by `concurrency` connections of ``redis-benchmark``.

    ``redis-benchmark`` (Debian's redis-tools, installed with redis-server) is a C client: it
    shows what Redis answers when the client is not the bottleneck. It reads one key, so the
    caller picks a record of typical size. None when the tool is missing or fails.
    """
    tool = shutil.which("redis-benchmark")
    if tool is None:
        return None
    url = parse_url(settings.redis_url)
    cmd = [tool, "-h", str(url.get("host", "127.0.0.1")), "-p", str(url.get("port", 6379)),
           "--dbnum", str(url.get("db", 0)), "-n", str(requests), "-c", str(concurrency),
           "--csv", "HGETALL", Keys().customer(customer_id)]
    if url.get("password"):
        cmd[1:1] = ["-a", str(url["password"]), "--no-auth-warning"]
    before = os.times()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    after = os.times()
    rows = list(csv.DictReader(out.stdout.splitlines()))
    if out.returncode != 0 or not rows:
        return None
    row = rows[-1]
    elapsed = requests / float(row["rps"])
    cpu = (after.children_user - before.children_user
           + after.children_system - before.children_system)
    return {
        "kind": C_CLIENT, "concurrency": concurrency, "n": requests,
        "p50_ms": float(row["p50_latency_ms"]), "p95_ms": float(row["p95_latency_ms"]),
        "p99_ms": float(row["p99_latency_ms"]), "max_ms": float(row["max_latency_ms"]),
        "requests_per_s": float(row["rps"]), "errors": 0,
        "client_cores": round(cpu / elapsed, 3),
        "client_cpu_us_per_request": round(cpu * 1e6 / requests, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Measure lookups; settings (Redis URL, topics, web port) come from the environment."""
    parser = argparse.ArgumentParser(prog="python -m load.bench_lookup", description=main.__doc__)
    parser.add_argument("--kind", choices=KINDS, required=True)
    parser.add_argument("--ids-file", type=Path, required=True, help="one customer id a line")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args(argv)
    ids = [line for line in args.ids_file.read_text().splitlines() if line]
    result = asyncio.run(measure(args.kind, Settings.from_env(), ids, args.concurrency,
                                 args.duration))
    print(orjson.dumps(result).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
