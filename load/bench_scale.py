"""Scaling measured per CPU: events per worker CPU-second with 1, 2 and 4 workers.

The machine has two cores, so wall-clock rates cannot grow past two workers; what
coordination costs shows in the efficiency per CPU instead: every run pre-publishes
the same events, starts N workers of one consumer group on the input topics' 4
partitions, and reads the workers' and Redis's CPU from /proc over the steady window
(`load.bench.run_ingest`). Target: with N workers, events per worker CPU-second
within 10 % of one worker's. Redis time per event is the Redis server's CPU over the
same window divided by the events applied.

Cluster rows: `measure` takes a `label`; run it with REDIS_URL and
KAFKA_BOOTSTRAP_SERVERS of a cluster stack (``scripts/devstack up --brokers 3``, and a
Redis Cluster once the store shards by partition) and `redis_pids` naming one server
per shard, to get one Redis time per event per shard.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from load.simulator import SimEvent
from stream_app.settings import Settings

#: Within this share of one worker's events per CPU-second: the target.
EFFICIENCY_TARGET = 0.9
WORKER_COUNTS = (1, 2, 4)


def row(n_workers: int, result: Mapping[str, Any], redis_names: Sequence[str]) -> dict[str, Any]:
    """One line of the table from a `run_ingest` result."""
    cpu = result.get("cpu") or {}
    events, window = cpu.get("events") or 0, cpu.get("window_s") or 0.0
    out: dict[str, Any] = {
        "workers": n_workers,
        "events_per_s": result.get("rate"),
        "events_per_worker_cpu_s": cpu.get("events_per_worker_cpu_s"),
        "worker_cpu_us_per_event": cpu.get("workers_cpu_us_per_event"),
        "load_average": result.get("load_average"),
    }
    for name in redis_names:
        cores = cpu.get(f"{name}_cores")
        out[f"{name}_us_per_event"] = (
            round(cores * window * 1e6 / events, 1) if cores is not None and events else None
        )
    return out


def measure(
    stack: Settings,
    events: list[SimEvent],
    run_ingest: Callable[..., dict[str, Any]],
    cfg: Any,
    outdir: Path,
    counts: Sequence[int] = WORKER_COUNTS,
    label: str = "single node",
    redis_names: Sequence[str] = ("redis",),
) -> dict[str, Any]:
    """Run `run_ingest` with each worker count; the rows and the efficiency per CPU."""
    rows = []
    for n in counts:
        rows.append(row(n, run_ingest(stack, cfg, events, n, outdir, extras=False),
                        redis_names))
    base = rows[0].get("events_per_worker_cpu_s") if rows else None
    for r in rows:
        per_cpu = r.get("events_per_worker_cpu_s")
        r["efficiency"] = round(per_cpu / base, 3) if base and per_cpu else None
    return {"label": label, "events": len(events), "rows": rows,
            "target": EFFICIENCY_TARGET}


def _f(value: Any, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


def section(result: Mapping[str, Any] | None) -> list[str]:
    """The report's section (Markdown lines)."""
    if not result:
        return []
    lines = [
        f"## Scaling per CPU ({result['label']}; {result['events']:,} events per run, "
        "4 partitions)",
        "",
        "| workers | events/s (wall) | events per worker CPU-second | vs one worker "
        f"(target >= {result['target']}) | worker CPU per event (µs) | Redis CPU per event "
        "(µs) |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['workers']} | {_f(r['events_per_s'])} | {_f(r['events_per_worker_cpu_s'])} "
            f"| {_f(r['efficiency'], 3)} | {_f(r['worker_cpu_us_per_event'], 1)} | "
            f"{_f(r.get('redis_us_per_event'), 1)} |"
        )
    return [*lines, ""]
