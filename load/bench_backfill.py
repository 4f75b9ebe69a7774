"""Backfill rate against reading the same files, and against one streaming worker.

``python -m load.bench_backfill`` (or the ``backfill`` stage of ``make bench``):

1. Simulates a population (at least 5,000,000 events; ``--quick``: 300,000) and writes it
   to history files, CSV and Parquet (`load.history_files`), once, in a cache folder.
2. **Read only**: polars reads and parses the same files (`stream_app.backfill.read_file`,
   every column materialised), best of three: the rate the library alone allows.
3. **Backfill**: `stream_app.backfill.backfill` of the same files into an empty Redis
   database of the dev stack (Redis only; the seam needs no Kafka here), with the phase
   timings of its report.
4. **Store floor**: the keys the backfill left, read back and written again with pipelined
   commands into a second empty database, nothing computed: what storing the result costs
   Redis and a client alone, the least any backfill into one Redis can take.
5. **One worker**: the steady rate of one streaming worker, from the throughput stage of
   the same ``make bench`` run when there is one, otherwise measured here on a
   pre-published slice of the same population (`load.bench.run_ingest`).

Targets: backfill >= 0.5x read only, >= 20x one worker.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from load.bench_env import ROOT
from load.history_files import write_files
from load.simulator import SimConfig, simulate
from stream_app.backfill import backfill, read_file
from stream_app.connections import sync_redis
from stream_app.settings import Settings

READ_TARGET = 0.5
WORKER_TARGET = 20.0


@dataclass
class BackfillConfig:
    events: int = 5_000_000
    customers: int = 100_000
    days: int = 730
    seed: int = 42
    worker_events: int = 60_000
    formats: tuple[str, ...] = ("csv", "parquet")

    @classmethod
    def quick(cls) -> BackfillConfig:
        return cls(events=300_000, customers=8_000, days=540, worker_events=15_000)


def log(msg: str) -> None:
    print(f"[bench backfill] {msg}", file=sys.stderr, flush=True)


def history_files(cfg: BackfillConfig, fmt: str, cache: Path) -> list[Path]:
    """The simulated history as files of `fmt`, written once per configuration."""
    folder = cache / f"history-{cfg.events}-{cfg.customers}-{cfg.days}-{cfg.seed}" / fmt
    done = folder / "done"
    if not done.exists():
        log(f"writing {cfg.events:,} simulated events as {fmt} to {folder}")
        config = SimConfig(n_customers=cfg.customers, days=cfg.days,
                           acquisition_days=max(cfg.days // 2, 1), seed=cfg.seed)
        write_files(itertools.islice(simulate(config), cfg.events), folder, fmt)
        done.write_text("ok")
    return sorted(p for p in folder.iterdir() if p.suffix == f".{fmt}")


def read_only(paths: list[Path], repeats: int = 3) -> dict[str, Any]:
    """Best-of-`repeats` time polars takes to read and parse the files."""
    best = cpu = float("inf")
    rows = 0
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        rows = sum(read_file(p).height for p in paths)
        best = min(best, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
    return {"rows": rows, "seconds": round(best, 3), "events_per_s": round(rows / best, 1),
            "cpu_s": round(cpu, 3), "events_per_cpu_s": round(rows / cpu, 1)}


def redis_cpu(client: Any) -> float:
    """CPU seconds the Redis server has used (user + system, all threads)."""
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _db_settings(stack: Settings, db: int) -> Settings:
    base = stack.redis_url.rsplit("/", 1)[0]
    return Settings.from_env({"REDIS_URL": f"{base}/{db}"})


def run_backfill(paths: list[Path], stack: Settings, db: int) -> dict[str, Any]:
    """One backfill into an emptied Redis database `db`; the report, the rate and the
    store floor (`store_floor`, into database `db + 1`)."""
    settings = _db_settings(stack, db)
    client = sync_redis(settings)
    try:
        client.flushdb()
        r0, c0 = redis_cpu(client), time.process_time()
        report = asyncio.run(backfill(paths, settings, kafka=False))
        cpu, server = time.process_time() - c0, redis_cpu(client) - r0
        out = report.summary()
        out["cpu_s"] = round(cpu, 3)
        out["redis_cpu_s"] = round(server, 3)
        out["events_per_cpu_s"] = round(report.events / (cpu + server), 1)
        out["redis_used_memory"] = client.info("memory").get("used_memory")
        out["store_floor"] = store_floor(client, sync_redis(_db_settings(stack, db + 1)))
        return out
    finally:
        client.flushdb()
        client.close()


#: Commands per pipeline round trip of the store floor (the backfill's own writer sends
#: a few hundred customers per round trip).
FLOOR_PIPELINE = 500


def store_floor(source: Any, target: Any) -> dict[str, Any]:
    """Every key of `source` (hashes, sorted sets, strings, sets, lists) written again into
    the emptied database of `target` with pipelined HSET / ZADD / SET / SADD / RPUSH, one
    command per key, nothing computed; wall time, client CPU and Redis CPU of the writing
    alone."""
    commands: list[tuple[str, bytes, Any]] = []
    for key in source.scan_iter(count=1000):
        kind = source.type(key).decode()
        if kind == "hash":
            commands.append((kind, key, source.hgetall(key)))
        elif kind == "zset":
            commands.append((kind, key, dict(source.zrange(key, 0, -1, withscores=True))))
        elif kind == "string":
            commands.append((kind, key, source.get(key)))
        elif kind == "set":
            commands.append((kind, key, source.smembers(key)))
        elif kind == "list":
            commands.append((kind, key, source.lrange(key, 0, -1)))
        else:
            raise ValueError(f"store floor: key {key!r} of type {kind} not handled")
    fields = sum(len(v) if isinstance(v, dict | set | list) else 1 for _, _, v in commands)
    try:
        target.flushdb()
        r0, c0, t0 = redis_cpu(target), time.process_time(), time.perf_counter()
        pipe = target.pipeline(transaction=False)
        for i, (kind, key, value) in enumerate(commands, 1):
            if kind == "hash":
                pipe.hset(key, mapping=value)
            elif kind == "zset":
                pipe.zadd(key, value)
            elif kind == "string":
                pipe.set(key, value)
            elif kind == "list":
                pipe.rpush(key, *value)
            else:
                pipe.sadd(key, *value)
            if i % FLOOR_PIPELINE == 0:
                pipe.execute()
        pipe.execute()
        wall, cpu, server = (time.perf_counter() - t0, time.process_time() - c0,
                             redis_cpu(target) - r0)
        written = target.info("memory").get("used_memory")
    finally:
        target.flushdb()
        target.close()
    return {"keys": len(commands), "fields": fields, "seconds": round(wall, 3),
            "client_cpu_s": round(cpu, 3), "redis_cpu_s": round(server, 3),
            "redis_used_memory": written}


def one_worker(stack: Settings, cfg: BackfillConfig, outdir: Path) -> dict[str, Any]:
    """The steady rate of one real worker on a slice of the same population."""
    from load.bench import Config, run_ingest
    from load.bench_profile import throughput_events

    events = throughput_events(cfg.worker_events, min(cfg.customers, 20_000), 120, cfg.seed)
    bench = Config(warmup_s=4, measure_s=15)
    result = run_ingest(stack, bench, events, 1, outdir, extras=False)
    cpu = result.get("cpu") or {}
    return {"events_per_s": result["rate"], "events": len(events), "source": "measured here",
            "cpu_us_per_event": cpu.get("workers_cpu_us_per_event"), "cpu": cpu}


def measure(cfg: BackfillConfig, stack: Settings, outdir: Path,
            worker_rate: float | None = None, worker_cpu_us: float | None = None,
            db: int = 14) -> dict[str, Any]:
    """Every format's read-only and backfill rates, and the ratios to the targets."""
    cache = ROOT / ".devstack" / "bench-history"
    cache.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {"events": cfg.events, "customers": cfg.customers, "days": cfg.days}
    if worker_rate is None:
        log("one streaming worker on a slice of the population")
        out["one_worker"] = one_worker(stack, cfg, outdir)
        worker_rate = out["one_worker"]["events_per_s"]
        worker_cpu_us = out["one_worker"].get("cpu_us_per_event")
    else:
        out["one_worker"] = {"events_per_s": worker_rate, "cpu_us_per_event": worker_cpu_us,
                             "source": "throughput stage of this run"}
    for fmt in cfg.formats:
        paths = history_files(cfg, fmt, cache)
        log(f"{fmt}: read only")
        read = read_only(paths)
        log(f"{fmt}: read only {read['events_per_s']:,.0f} rows/s; backfill")
        done = run_backfill(paths, stack, db)
        rate = done["events_per_s"]
        log(f"{fmt}: backfill {rate:,.0f} events/s ({done['customers']:,} customers)")
        out[fmt] = {
            "read_only": read, "backfill": done,
            "vs_read_only": round(rate / read["events_per_s"], 3),
            "vs_one_worker": round(rate / worker_rate, 1) if worker_rate else None,
            "cpu_vs_read_only": round(done["events_per_cpu_s"] / read["events_per_cpu_s"], 3),
            # The best any backfill into this one Redis could do against reading: storing
            # the result alone, with nothing computed.
            "floor_vs_read_only": round(read["seconds"] / done["store_floor"]["seconds"], 3),
        }
        if worker_cpu_us:
            out[fmt]["cpu_vs_one_worker"] = round(
                done["events_per_cpu_s"] * worker_cpu_us / 1e6, 1)
    return out


def table(result: dict[str, Any]) -> str:
    """The backfill section of the bench report (Markdown)."""
    worker = result["one_worker"]["events_per_s"]
    lines = [
        f"Backfill of {result['events']:,} simulated events ({result['customers']:,} "
        f"customers, {result['days']} days); one streaming worker: {worker:,.0f} events/s "
        f"({result['one_worker']['source']}).",
        "",
        "| format | read only (events/s) | backfill (events/s) | vs read only "
        f"(target {READ_TARGET}x) | vs one worker (target {WORKER_TARGET:.0f}x) | "
        "per CPU-second: vs read only | vs one worker | read / aggregate / value / total s | "
        "store floor s (client CPU / Redis CPU) | store floor vs read only |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for fmt in ("csv", "parquet"):
        if fmt not in result:
            continue
        r = result[fmt]
        b = r["backfill"]
        lines.append(
            f"| {fmt} | {r['read_only']['events_per_s']:,.0f} | {b['events_per_s']:,.0f} | "
            f"{r['vs_read_only']}x | {r['vs_one_worker']}x | {r['cpu_vs_read_only']}x | "
            f"{r.get('cpu_vs_one_worker', '-')}x | {b['read_s']} / {b['aggregate_s']} / "
            f"{b['value_s']} / {b['seconds']} | {_floor(b)} | {r.get('floor_vs_read_only', '-')}x |"
        )
    return "\n".join(lines)


def _floor(backfilled: dict[str, Any]) -> str:
    floor = backfilled.get("store_floor")
    if not floor:
        return "-"
    return f"{floor['seconds']} ({floor['client_cpu_s']} / {floor['redis_cpu_s']})"


def main(argv: list[str] | None = None) -> int:
    """``python -m load.bench_backfill``: print the table, write reports/bench/backfill.json."""
    parser = argparse.ArgumentParser(prog="python -m load.bench_backfill",
                                     description=main.__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--events", type=int)
    parser.add_argument("--customers", type=int)
    parser.add_argument("--worker-rate", type=float,
                        help="one worker's events/s, if known (skips measuring it)")
    parser.add_argument("--formats", default="csv,parquet")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "bench")
    args = parser.parse_args(argv)
    cfg = BackfillConfig.quick() if args.quick else BackfillConfig()
    if args.events:
        cfg.events = args.events
    if args.customers:
        cfg.customers = args.customers
    cfg.formats = tuple(args.formats.split(","))
    args.out.mkdir(parents=True, exist_ok=True)
    result = measure(cfg, Settings.from_env(), args.out, args.worker_rate)
    (args.out / "backfill.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(table(result))
    return 0


__all__ = ["BackfillConfig", "measure", "table"]

if __name__ == "__main__":
    raise SystemExit(main())
