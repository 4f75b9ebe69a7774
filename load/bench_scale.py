"""Scaling measured per CPU: events per worker CPU-second with 1, 2 and 4 workers.

The machine has two cores, so wall-clock rates cannot grow past two workers; what
coordination costs shows in the efficiency per CPU instead: every run pre-publishes
the same events, starts N workers of one consumer group on the input topics' 4
partitions, and reads the workers' and Redis's CPU from /proc over the steady window
(`load.bench.run_ingest`). Target: with N workers, events per worker CPU-second
within 10 % of one worker's. Redis time per event is the Redis server's CPU over the
same window divided by the events applied.

Cluster rows (`measure_cluster`): the same runs with the state on a Redis Cluster of
three masters started for them (`load.redis_cluster`, ``CVM_REDIS_CLUSTER=true``), each
master's CPU read on its own: Redis time per event per shard. The 4 input partitions'
hash tags fall on the masters unevenly (slots ``{p0}``..``{p3}``), so one master may
hold two partitions and another none; the per-shard columns show it.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from load.redis_cluster import PrivateCluster
from load.simulator import SimEvent
from stream_app.connections import sync_redis
from stream_app.settings import Settings
from stream_app.store.keys import Keys

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


def measure_cluster(
    stack: Settings,
    events: list[SimEvent],
    run_ingest: Callable[..., dict[str, Any]],
    cfg: Any,
    outdir: Path,
    counts: Sequence[int] = WORKER_COUNTS,
    masters: int = 3,
) -> dict[str, Any]:
    """`measure` with the state on a private Redis Cluster of `masters` masters."""
    cluster = PrivateCluster(Path(tempfile.mkdtemp(prefix="cvm-bench-cluster-")), masters)
    try:
        cluster.start()
        names = {f"redis_node{i + 1}": pid for i, pid in enumerate(cluster.pids().values())}
        on_cluster = replace(stack, redis_url=cluster.url, redis_cluster=True)
        keys = Keys(partitions=on_cluster.partitions)
        client = sync_redis(on_cluster)
        try:
            owners = [client.get_node_from_key(keys.shard(p).tag).port
                      for p in range(on_cluster.partitions)]
        finally:
            client.close()
        ports = list(cluster.pids())
        result = measure(on_cluster, events, partial(run_ingest, redis_pids=names), cfg, outdir,
                         counts, label=f"Redis Cluster, {masters} masters",
                         redis_names=tuple(names))
        result["partitions_by_node"] = {
            name: [p for p, port in enumerate(owners) if port == ports[i]]
            for i, name in enumerate(names)
        }
        return result
    finally:
        cluster.stop()
        shutil.rmtree(cluster.workdir, ignore_errors=True)


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
            "target": EFFICIENCY_TARGET, "redis_names": list(redis_names)}


def _f(value: Any, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


def section(result: Mapping[str, Any] | None) -> list[str]:
    """The report's section (Markdown lines), and the cluster's after it if it was run."""
    if not result:
        return []
    names = result.get("redis_names") or ["redis"]
    shards = len(names) > 1
    redis_head = (" | ".join(f"{n.removeprefix('redis_')} Redis CPU per event (µs)"
                             for n in names) if shards else "Redis CPU per event (µs)")
    lines = [
        f"## Scaling per CPU ({result['label']}; {result['events']:,} events per run, "
        "4 partitions)",
        "",
        "| workers | events/s (wall) | events per worker CPU-second | vs one worker "
        f"(target >= {result['target']}) | worker CPU per event (µs) | {redis_head} |",
        "|---|---|---|---|---|" + "---|" * len(names),
    ]
    for r in result["rows"]:
        redis_cells = " | ".join(_f(r.get(f"{n}_us_per_event"), 1) for n in names)
        lines.append(
            f"| {r['workers']} | {_f(r['events_per_s'])} | {_f(r['events_per_worker_cpu_s'])} "
            f"| {_f(r['efficiency'], 3)} | {_f(r['worker_cpu_us_per_event'], 1)} | "
            f"{redis_cells} |"
        )
    lines.append("")
    if result.get("partitions_by_node"):
        lines += ["Input partitions per master: " + ", ".join(
            f"{n.removeprefix('redis_')} {parts or 'none'}"
            for n, parts in result["partitions_by_node"].items()), ""]
    return [*lines, *section(result.get("cluster"))]
