"""``make bench``: throughput, freshness, lookup latency, memory and scaling of the engine.

Each measurement runs in a namespace of its own on the dev stack (topics, consumer group and
app id, Redis database; see `load.bench_env`) and removes it afterwards:

1. **Throughput.** N simulated events are published first; then one real worker
   (``python -m stream_app.cli worker``) starts and the events it has applied are read from the
   ``cvm:applied`` hash twice a second; the rate is the least-squares slope over the steady
   part (after a warm-up, before the tail). A plain confluent-kafka consumer that only reads and
   parses (orjson) the same events gives the practical ceiling, and a Faust agent that only
   reads and parses them (`load.bench_faust`) the framework's own. During the run the worker's CPU
   is read from /proc, py-spy samples it, and lookups are measured while it ingests flat out.
2. **Freshness** at a fixed rate (`load.bench_fresh`), then lookups while it ingests at that
   rate, then lookups with the worker idle (`load.bench_lookup`, in a subprocess).
3. **Memory** per customer on a private redis-server (`load.bench_memory`).
4. **Profile** of `Ingestor.process` driven directly, phase by phase (`load.bench_profile`).
5. **Scaling** from one to two workers of the same group over 4 partitions, and events per
   worker CPU-second with 1, 2 and 4 workers with Redis CPU per event (`load.bench_scale`).
6. **Backfill**: ``cvm backfill`` of at least 5,000,000 simulated events from CSV and Parquet
   against polars merely reading the same files, and against one worker
   (`load.bench_backfill`).

``python -m load.bench`` (about 13 minutes) or ``--quick`` (2 to 3 minutes) prints the table of
targets and writes ``reports/bench/report.md``, ``bench.png`` and ``results.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shlex
import subprocess
import sys
import threading
import time
import traceback
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import orjson
import redis

from load import bench_quix
from load.bench_env import (
    ROOT,
    CpuMeter,
    Namespace,
    PrivateRedis,
    ReadServerProcess,
    WorkerProcess,
    cpu_seconds,
    find_server_pids,
    free_port,
    load_average,
    machine_info,
    settings_env,
    total_cpu_seconds,
    wait_until,
)
from load.bench_faust import APP_SUFFIX, COUNT_KEY
from load.bench_fresh import FreshnessTracer, run_in_thread
from load.bench_lookup import c_client_hgetall
from load.bench_memory import measure_memory
from load.bench_products import measure_products
from load.bench_profile import (
    parse_pyspy_raw,
    profile_pipeline,
    pyspy_available,
    pyspy_record,
    pyspy_spans,
    raw_records,
    throughput_events,
    top_functions,
)
from load.bench_report import HALF_CAPACITY_LOOKUPS, SERVE
from load.bench_stats import Samples, histogram_delta, parse_metrics, steady_rate, summarize
from load.bench_valuation import measure_valuation
from load.generator import publish
from load.simulator import SimEvent
from stream_app.connections import sync_redis
from stream_app.settings import Settings
from stream_app.store.keys import Keys


@dataclass
class Config:
    """Sizes and durations of one benchmark run (``--quick`` shrinks them)."""

    events: int = 300_000
    customers: int = 40_000
    days: int = 120
    seed: int = 42
    warmup_s: float = 10.0
    measure_s: float = 45.0
    pyspy_s: float = 10.0
    scaling_events: int = 300_000
    scaling_workers: int = 2
    fresh_rate: float = 2000.0
    fresh_warmup_s: float = 8.0
    fresh_s: float = 20.0
    fresh_low_s: float = 20.0
    fresh_trickle_rate: float = 50.0
    fresh_trickle_s: float = 12.0
    fresh_sample_every: int = 20
    drain_s: float = 90.0
    lookup_s: float = 3.0
    concurrency: tuple[int, ...] = (1, 16, 64)
    headline_concurrency: int = 16
    direct_events: int = 12_000
    memory_scales: tuple[int, ...] = (100_000, 1_000_000)
    memory_templates: int = 500
    memory_alt_scale: int = 100_000
    batch_size: int = 500
    skip: tuple[str, ...] = ()

    @classmethod
    def quick(cls) -> Config:
        return cls(events=30_000, customers=10_000, warmup_s=4, measure_s=10, pyspy_s=4,
                   scaling_events=20_000, fresh_warmup_s=4, fresh_s=5, fresh_low_s=5,
                   fresh_trickle_s=5,
                   drain_s=20, lookup_s=1.0, concurrency=(1, 16), direct_events=3_000,
                   memory_scales=(10_000, 30_000), memory_templates=80,
                   memory_alt_scale=10_000)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- helpers


def applied_total(client: redis.Redis, settings: Settings) -> int:
    """Records consumed so far: the sum over input partitions of the last applied offset + 1."""
    inputs = set(settings.topics.inputs)
    total = 0
    for shard in Keys(partitions=settings.partitions).shards():
        for name, value in client.hgetall(shard.applied).items():
            topic = name.decode().rpartition("/")[0]
            if topic in inputs:
                total += int(value) + 1
    return total


def raw_consumer(settings: Settings, total: int, timeout_s: float = 180) -> dict[str, Any]:
    """Read and parse (orjson) every input event with a plain confluent-kafka consumer."""
    from confluent_kafka import Consumer

    consumer = Consumer({
        **settings.kafka_config(),
        "group.id": f"{settings.app_id}-raw",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.subscribe(list(settings.topics.inputs))
    loads = orjson.loads
    n = 0
    first_n = 0
    t_first = t_last = 0.0
    cpu0 = 0.0
    deadline = time.monotonic() + timeout_s
    try:
        while n < total and time.monotonic() < deadline:
            msgs = consumer.consume(10_000, 1.0)
            for m in msgs:
                if m.error() is None:
                    loads(m.value())
                    n += 1
            if msgs and not t_first:
                t_first, first_n, cpu0 = time.perf_counter(), n, time.process_time()
            t_last = time.perf_counter()
        cpu = time.process_time() - cpu0
    finally:
        consumer.close()
    elapsed = t_last - t_first
    rate = (n - first_n) / elapsed if elapsed > 0 else math.nan
    return {"events": n, "seconds": round(elapsed, 3), "events_per_s": round(rate, 1),
            "cpu_cores": round(cpu / elapsed, 3) if elapsed > 0 else math.nan,
            "events_per_cpu_s": round((n - first_n) / cpu, 1) if cpu > 0 else math.nan}


def lookup_ids(settings: Settings, path: Path, limit: int = 5000) -> Path:
    client = sync_redis(settings)
    ids = []
    keys = Keys(partitions=settings.partitions)
    for key in client.scan_iter(match=keys.customer_pattern, count=2000):
        ids.append(keys.customer_id(key))
        if len(ids) >= limit:
            break
    client.close()
    path.write_text("\n".join(ids) + "\n")
    return path


def typical_customer(settings: Settings, ids: Path, sample: int = 200) -> str | None:
    """The customer whose record has the median size (MEMORY USAGE) among the first `sample`."""
    client = sync_redis(settings)
    keys = Keys(partitions=settings.partitions)
    sized = []
    for cid in ids.read_text().split()[:sample]:
        size = client.memory_usage(keys.customer(cid), samples=0)
        if size:
            sized.append((int(size), cid))
    client.close()
    sized.sort()
    return sized[len(sized) // 2][1] if sized else None


def run_lookup(settings: Settings, kind: str, ids: Path, concurrency: int,
               duration: float, label: str, worker_pid: int | None = None,
               reads: ReadServerProcess | None = None) -> dict[str, Any]:
    """One lookup measurement in a subprocess (`load.bench_lookup`).

    With `worker_pid`, the worker's CPU over the measurement (warm-up included) is divided by
    the requests it served: its CPU per lookup (meaningful when it is not ingesting). Kind
    `SERVE` is ``http`` against the read server `reads`, whose CPU per lookup is reported.
    """
    asked = kind
    if kind == SERVE:
        assert reads is not None
        settings, kind, worker_pid = reads.settings, "http", reads.pid
    cpu0 = cpu_seconds(worker_pid) if worker_pid else math.nan
    cmd = [sys.executable, "-m", "load.bench_lookup", "--kind", kind, "--ids-file", str(ids),
           "--concurrency", str(concurrency), "--duration", str(duration)]
    env = {**os.environ, **settings_env(settings), "CVM_WEB_PORT": str(settings.web_port)}
    out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=duration + 120)
    if out.returncode != 0:
        log(f"lookup {asked} failed: {out.stderr[-1500:]}")
        return {"kind": asked, "concurrency": concurrency, "state": label,
                "error": out.stderr[-500:]}
    result = orjson.loads(out.stdout.strip().splitlines()[-1])
    result["state"], result["kind"] = label, asked
    if worker_pid:
        served = result["n"] + result.get("warmup_requests", 0)
        used = cpu_seconds(worker_pid) - cpu0
        result["worker_cpu_us_per_request"] = round(used * 1e6 / served, 1) if served else None
    log(f"lookup {asked:8s} c={concurrency:<3d} {label:28s} p50 {result['p50_ms']:.3f} ms  "
        f"p99 {result['p99_ms']:.3f} ms  {result['requests_per_s']:.0f}/s")
    return dict(result)


class Sampler:
    """Applied events and CPU seconds of the workers, sampled twice a second in a thread."""

    def __init__(self, settings: Settings, pids: dict[str, int]) -> None:
        self.settings = settings
        self.pids = pids
        self.samples: list[tuple[float, int, dict[str, float]]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        client = sync_redis(self.settings)
        while not self.stop.is_set():
            n = applied_total(client, self.settings)
            cpu = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
            cpu["bench"] = cpu_seconds(os.getpid())
            cpu["machine"] = total_cpu_seconds()
            self.samples.append((time.monotonic(), n, cpu))
            self.stop.wait(0.5)
        client.close()

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)

    def latest(self) -> int:
        return self.samples[-1][1] if self.samples else 0


def _window_stats(samples: Sequence[tuple[float, int, dict[str, float]]], t0: float,
                  t1: float) -> dict[str, Any]:
    inside = [s for s in samples if t0 <= s[0] <= t1]
    if len(inside) < 2:
        return {}
    (ta, na, ca), (tb, nb, cb) = inside[0], inside[-1]
    dt, dn = tb - ta, nb - na
    out: dict[str, Any] = {"window_s": round(dt, 1), "events": dn}
    for name in ca:
        used = cb[name] - ca[name]
        out[f"{name}_cores"] = round(used / dt, 3) if dt > 0 else math.nan
        if name.startswith("worker"):
            out[f"{name}_cpu_us_per_event"] = round(used * 1e6 / dn, 1) if dn else math.nan
    known = sum(cb[n] - ca[n] for n in ca if n != "machine")
    out["other_processes_cores"] = round((cb["machine"] - ca["machine"] - known) / dt, 3)
    workers = [cb[n] - ca[n] for n in ca if n.startswith("worker")]
    if workers and dn:
        out["workers_cpu_us_per_event"] = round(sum(workers) * 1e6 / dn, 1)
        out["events_per_worker_cpu_s"] = round(dn / sum(workers), 1)
    return out


def faust_reader(ns: Namespace, total: int, outdir: Path,
                 timeout_s: float = 300) -> dict[str, Any]:
    """Read and parse every input event with a Faust agent that does nothing else.

    `load.bench_faust` in a subprocess, with a consumer group of its own; the rate is the
    steady slope of its count (sampled every 0.2 s, from 0.5 s after its first batch, between
    5 % and 95 % of the events).
    """
    settings = replace(ns.settings, app_id=ns.settings.app_id + APP_SUFFIX, web_port=free_port(),
                       data_dir=ns.settings.data_dir + APP_SUFFIX)
    reader = WorkerProcess(settings, outdir / f"faust-read-{ns.run}.log", module="load.bench_faust")
    client = ns.redis()
    samples: list[tuple[float, int, float]] = []
    try:
        reader.start()
        began = time.monotonic()

        def done() -> bool:
            n = int(client.get(COUNT_KEY) or 0)
            samples.append((time.monotonic() - began, n, cpu_seconds(reader.pid)))
            return n >= total

        wait_until(done, timeout_s, every=0.2)
    finally:
        reader.stop()
        client.delete(COUNT_KEY)
        client.close()
    started = next((t for t, n, _ in samples if n > 0), math.nan)
    rate, w0, w1 = steady_rate([(t, n) for t, n, _ in samples], total, lo=0.05, hi=0.95,
                               min_t=started + 0.5)
    inside = [(t, n, c) for t, n, c in samples if w0 <= t <= w1]
    cpu = inside[-1][2] - inside[0][2] if len(inside) >= 2 else math.nan
    events = inside[-1][1] - inside[0][1] if len(inside) >= 2 else 0
    seconds = inside[-1][0] - inside[0][0] if len(inside) >= 2 else math.nan
    return {"events": samples[-1][1] if samples else 0, "events_per_s": round(rate, 1),
            "samples": [(round(t, 2), n) for t, n, _ in samples],
            "window_s": round(seconds, 2),
            "cpu_cores": round(cpu / seconds, 3) if seconds and seconds > 0 else math.nan,
            "cpu_us_per_event": round(cpu * 1e6 / events, 1) if events else math.nan}


def quix_ledger(ns: Namespace, total: int, outdir: Path, timeout_s: float = 600) -> dict[str, Any]:
    """The Quix Streams ledger job (`load.bench_quix`) on the same events, in a subprocess."""
    settings = replace(ns.settings, data_dir=ns.settings.data_dir + "-quix")
    log_path = outdir / f"quix-ledger-{ns.run}.log"
    with log_path.open("w") as err:
        out = subprocess.run(
            [sys.executable, "-m", "load.bench_quix", "--events", str(total)],
            env={**os.environ, **settings_env(settings)}, cwd=ROOT, stdout=subprocess.PIPE,
            stderr=err, text=True, timeout=timeout_s,
        )
    if out.returncode != 0 or not out.stdout.strip():
        log(f"quix ledger job failed (exit {out.returncode}); see {log_path}")
        return {}
    return dict(orjson.loads(out.stdout.strip().splitlines()[-1]))


# --------------------------------------------------------------------------- 1 and 5: ingest


def run_ingest(stack: Settings, cfg: Config, events: list[SimEvent], n_workers: int,
               outdir: Path, extras: bool,
               redis_pids: Mapping[str, int] | None = None) -> dict[str, Any]:
    """Pre-publish, (raw consumer,) start `n_workers`, measure the steady applied rate.

    `redis_pids` (name -> pid) replace the dev stack's Redis in the CPU readings: the
    nodes of a Redis Cluster, one per shard.
    """
    ns = Namespace.create(stack, "t" if n_workers == 1 else "s")
    ns.settings = replace(ns.settings, batch_size=cfg.batch_size)
    result: dict[str, Any] = {"workers": n_workers, "namespace": ns.run,
                              "events": len(events)}
    workers: list[WorkerProcess] = []
    try:
        log(f"ingest x{n_workers}: publishing {len(events):,} events to b{ns.run}.*")
        report = publish(events, ns.settings)
        result["publish"] = report.summary()
        if report.failed:
            raise RuntimeError(f"publishing failed: {report.errors}")
        if extras:
            log("ingest: raw confluent-kafka consumer (read + orjson.loads)")
            result["raw_consumer"] = raw_consumer(ns.settings, len(events))
            log(f"ingest: raw consumer {result['raw_consumer']['events_per_s']:,.0f} events/s")
            log("ingest: Faust agent that only reads and parses (load.bench_faust)")
            result["faust_reader"] = faust_reader(ns, len(events), outdir)
            log(f"ingest: Faust reader {result['faust_reader']['events_per_s']:,.0f} events/s")
            if bench_quix.available():
                log("ingest: Quix Streams ledger job (load.bench_quix)")
                result["quix_ledger"] = quix_ledger(ns, len(events), outdir)
                log(f"ingest: Quix ledger {result['quix_ledger'].get('events_per_s', 0):,.0f} "
                    "events/s")
            else:
                log("ingest: Quix Streams is not installed (the bench extra): no peer row")
        servers = find_server_pids(stack)
        if redis_pids:
            servers = {k: v for k, v in servers.items() if k != "redis"} | dict(redis_pids)
        # Each worker its own web port; the first one keeps the namespace's.
        workers = [WorkerProcess(replace(ns.settings, web_port=ns.settings.web_port if i == 0
                                         else free_port()),
                                 outdir / f"worker-{ns.run}-{i}.log", CVM_FIT_INTERVAL_S="3600")
                   for i in range(n_workers)]
        for w in workers:
            w.start(wait=False)
        for w in workers:
            w.wait_healthy()
        pids = {f"worker{i}": w.pid for i, w in enumerate(workers)} | servers
        total = len(events)
        la0 = load_average()
        with Sampler(ns.settings, pids) as sampler:
            began = time.monotonic()
            wait_until(lambda: sampler.latest() > 0, 120, every=0.2)
            t_first = time.monotonic()
            gc_before = worker_metrics(workers[0].settings)
            limit = cfg.warmup_s + cfg.measure_s
            wait_until(lambda: sampler.latest() >= 0.95 * total
                       or time.monotonic() - t_first >= limit, limit + 600, every=0.5)
            t_end = time.monotonic()
            gc_after = worker_metrics(workers[0].settings)
            if gc_before and gc_after:  # the first worker's collections while it ingested
                result["gc_seconds"] = {
                    g: histogram_delta(gc_before, gc_after, "cvm_gc_seconds", generation=g)
                    for g in ("0", "1", "2")}
            series = [(t - began, n) for t, n, _ in sampler.samples]
            rate, w0, w1 = steady_rate(series, total, lo=0.0, hi=0.95,
                                       min_t=t_first - began + cfg.warmup_s)
            result["series"] = series
            result["startup_s"] = round(t_first - began, 2)
            result["rate"] = rate
            result["window"] = [w0, w1]
            result["load_average"] = [la0, load_average()]
            if not math.isnan(w0):
                result["cpu"] = _window_stats(sampler.samples, began + w0, began + w1)
            log(f"ingest x{n_workers}: steady {rate:,.0f} events/s over "
                f"{(w1 - w0) if not math.isnan(w0) else 0:.0f} s; cpu {result.get('cpu')}")
            if extras:
                result.update(_during_ingest(ns, cfg, workers[0], sampler, total, outdir))
            result["applied_at_end"] = sampler.latest()
        result["measured_until_s"] = round(t_end - began, 1)
    finally:
        for w in workers:
            w.stop()
        ns.cleanup()
    return result


def _during_ingest(ns: Namespace, cfg: Config, worker: WorkerProcess, sampler: Sampler,
                   total: int, outdir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    remaining = total - sampler.latest()
    if pyspy_available() and remaining > 0:
        log(f"ingest: py-spy record {cfg.pyspy_s:.0f} s on the worker ({remaining:,} events left)")
        raw = pyspy_record(worker.pid, cfg.pyspy_s, outdir / "worker-pyspy.txt")
        if raw is not None:
            text = raw.read_text()
            out["pyspy"] = {"categories": parse_pyspy_raw(text), "spans": pyspy_spans(text),
                            "top_leaf_functions": top_functions(text, 20),
                            "ingesting_throughout": total - sampler.latest() > 0}
    elif not pyspy_available():
        out["pyspy"] = {"skipped": "py-spy is not installed (make bench installs it)"}
    ids = lookup_ids(ns.settings, outdir / f"ids-{ns.run}.txt")
    state = ("worker ingesting flat out" if total - sampler.latest() > 0
             else "worker idle (backlog done)")
    c = cfg.headline_concurrency
    out["lookups_max_ingest"] = [
        run_lookup(ns.settings, kind, ids, c, cfg.lookup_s, state) for kind in ("http", "hgetall")
    ]
    return out


# --------------------------------------------------------------------------- 2 and 3


def worker_metrics(settings: Settings) -> Samples:
    """The worker's ``GET /metrics``, parsed; empty if it does not answer."""
    url = f"http://{settings.web_host}:{settings.web_port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return parse_metrics(r.read().decode())
    except OSError as exc:
        log(f"cannot scrape {url}: {exc}")
        return {}


def phase_loop(before: Samples, after: Samples) -> dict[str, Any]:
    """What held the worker's event loop during a phase: its batches, the lag of the
    loop-lag sampler, each timer's runs and the garbage collections (histogram deltas
    between two scrapes)."""
    if not before or not after:
        return {}
    timers = sorted({dict(ls)["timer"] for (n, ls) in after if n == "cvm_timer_seconds_count"})
    return {
        "batch_seconds": histogram_delta(before, after, "cvm_batch_seconds"),
        "batch_records": histogram_delta(before, after, "cvm_batch_records"),
        "loop_lag_seconds": histogram_delta(before, after, "cvm_event_loop_lag_seconds"),
        "timer_seconds": {t: histogram_delta(before, after, "cvm_timer_seconds", timer=t)
                          for t in timers},
        "gc_seconds": {g: histogram_delta(before, after, "cvm_gc_seconds", generation=g)
                       for g in ("0", "1", "2")},
    }


def run_freshness(stack: Settings, cfg: Config, outdir: Path,
                  capacity: float) -> dict[str, Any]:
    """Freshness at a fixed rate (and at half the capacity if that is lower), then lookups."""
    ns = Namespace.create(stack, "f")
    ns.settings = replace(ns.settings, batch_size=cfg.batch_size)
    # A trickle first: the latency of the path itself, far from any capacity limit.
    phases: list[tuple[str, float, float]] = [("low rate", cfg.fresh_trickle_rate,
                                               cfg.fresh_trickle_s)]
    low = 0.5 * capacity if not math.isnan(capacity) else math.nan
    if not math.isnan(low) and low < 0.8 * cfg.fresh_rate:
        phases.append(("half capacity", round(low, -1), cfg.fresh_low_s))
    phases.append(("target rate", cfg.fresh_rate, cfg.fresh_s))
    result: dict[str, Any] = {"namespace": ns.run, "phases": [], "lookups": []}
    worker = WorkerProcess(ns.settings, outdir / f"worker-{ns.run}.log", CVM_FIT_INTERVAL_S="3600")
    # The read server (`cvm serve`): the same HTTP lookups in a process that only reads.
    reads = ReadServerProcess(ns.settings, outdir / f"serve-{ns.run}.log")
    try:
        # Lookups under ingest run in two phases: 2 * (3 * lookup_s + 3) more seconds.
        total_s = cfg.fresh_warmup_s + sum(d for _, _, d in phases) + 7 * cfg.lookup_s + 16
        n_events = int(max(r for _, r, _ in phases) * total_s * 1.2) + 200
        events = throughput_events(n_events, customers=20_000, days=cfg.days, seed=cfg.seed + 1)
        worker.start()
        reads.start()
        servers = find_server_pids(stack)
        tracer = FreshnessTracer(ns.settings, every=cfg.fresh_sample_every)
        client = ns.redis()
        ids_path = outdir / f"ids-{ns.run}.txt"
        # A probe first: the phases start once the worker has joined the group and applies.
        pos = 200
        publish(events[:pos], ns.settings)
        if not wait_until(lambda: applied_total(client, ns.settings) >= pos, 120, every=0.2):
            raise RuntimeError(f"worker applied nothing in 120 s:\n{worker.log_tail()}")
        poll_stop = threading.Event()
        poller = threading.Thread(target=tracer.poll_loop, args=(poll_stop,), daemon=True)
        poller.start()
        for i, (label, rate, seconds) in enumerate(phases):
            if label == "target rate":
                # Lookups with the worker idle (caught up), before the target rate's backlog.
                lookup_ids(ns.settings, ids_path)
                for kind in ("hgetall", "lookup", "values", "http", SERVE):
                    for c in cfg.concurrency:
                        result["lookups"].append(run_lookup(
                            ns.settings, kind, ids_path, c, cfg.lookup_s, "worker idle",
                            worker.pid if kind == "http" else None, reads))
                typical = typical_customer(ns.settings, ids_path)
                for c in cfg.concurrency:
                    row = c_client_hgetall(ns.settings, typical, c) if typical else None
                    if row is not None:
                        log(f"lookup hgetall-c c={c:<3d} worker idle  p50 {row['p50_ms']:.3f} "
                            f"ms  p99 {row['p99_ms']:.3f} ms  {row['requests_per_s']:.0f}/s")
                        result["lookups"].append({**row, "state": "worker idle"})
            warm = cfg.fresh_warmup_s if i == 0 else 2.0
            # Lookups under ingest: at half the capacity (the target's condition) and at
            # the fixed target rate.
            lookup_s = (3 * cfg.lookup_s + 3 if label in ("target rate", "half capacity")
                        else 0.0)
            count = int(rate * (warm + seconds + lookup_s))
            chunk = events[pos:pos + count]
            pos += count
            stop = threading.Event()
            tracer.phase = "warmup"
            tracer.every = 1 if rate <= 100 else cfg.fresh_sample_every
            meter = CpuMeter({"worker": worker.pid} | servers)
            thread, box = run_in_thread(lambda c=chunk, r=rate, s=stop: publish(
                c, ns.settings, rate=r, stop=s, producer_factory=tracer.producer_factory))
            log(f"freshness: {label} {rate:,.0f} events/s ({len(chunk):,} events)")
            time.sleep(warm)
            tracer.phase = label
            meter.begin()
            scraped = worker_metrics(ns.settings)
            time.sleep(seconds)
            cpu = meter.end()
            loop = phase_loop(scraped, worker_metrics(ns.settings))
            lookups_during = []
            if lookup_s:
                tracer.phase = f"{label} + lookups"
                lookup_ids(ns.settings, ids_path)
                state = (f"{HALF_CAPACITY_LOOKUPS} ({rate:,.0f}/s)" if label == "half capacity"
                         else f"worker ingesting {rate:,.0f}/s")
                for kind in ("http", SERVE, "hgetall"):
                    lookups_during.append(run_lookup(ns.settings, kind, ids_path,
                                                     cfg.headline_concurrency, cfg.lookup_s,
                                                     state, reads=reads))
            tracer.phase = "drain"
            stop.set()
            thread.join(timeout=120)
            published = box[0] if box and not isinstance(box[0], BaseException) else None
            # Wait for the worker to catch up before the next phase (bounded).
            caught = wait_until(lambda: tracer.pending() == 0, cfg.drain_s, every=0.5)
            phase_result = {
                "label": label, "rate": rate, "seconds": seconds,
                "published": None if published is None else published.summary(),
                "caught_up": caught, "cpu_cores": cpu, "load_average": load_average(),
                "worker_loop": loop,
            }
            for name in (label, f"{label} + lookups"):
                lat = tracer.latencies(name)
                if lat or tracer.unseen(name):
                    phase_result[name] = {**summarize(lat).as_dict(),
                                          "unseen": tracer.unseen(name)}
            result["phases"].append(phase_result)
            result["lookups"].extend(lookups_during)
            log(f"freshness: {label}: {phase_result.get(label)}")
        poll_stop.set()
        poller.join(timeout=90)
        cycles = sorted(tracer.cycles)
        result["poll_cycle_ms"] = summarize(cycles).as_dict() if cycles else {}
        result["samples"] = [
            (s.phase, s.latency) for s in tracer.samples if s.latency is not None
        ]
        client.close()
    finally:
        reads.stop()
        worker.stop()
        ns.cleanup()
    return result


# --------------------------------------------------------------------------- 4 and profile


def run_direct_profile(cfg: Config, events: list[SimEvent]) -> dict[str, Any]:
    """`Ingestor.process` driven directly against a private Redis: phases, then totals only."""
    out: dict[str, Any] = {}
    with PrivateRedis() as server:
        settings = Settings(redis_url=server.url)
        records = raw_records(events[:cfg.direct_events], settings)
        log(f"profile: Ingestor.process directly on {len(records):,} events (phase timers)")
        prof = asyncio.run(profile_pipeline(settings, records, cfg.batch_size, timers=True))
        out["timed"] = prof.as_dict()
        out["timed"]["rows"] = prof.rows()
        log(f"profile: {prof.as_dict()['cpu_us_per_event']} µs CPU/event with timers")
        plain = asyncio.run(profile_pipeline(settings, records, cfg.batch_size, timers=False))
        out["untimed"] = plain.as_dict()
        log(f"profile: {plain.as_dict()['cpu_us_per_event']} µs CPU/event without timers")
        redis_pid = server.proc.pid if server.proc else None
        out["redis_server_cpu_note"] = f"private redis-server pid {redis_pid}"
    return out


def run_memory(cfg: Config) -> dict[str, Any]:
    with PrivateRedis() as server:
        return measure_memory(server.url, cfg.memory_scales, cfg.memory_templates,
                              cfg.memory_alt_scale, log=log)


# --------------------------------------------------------------------------- main


def run_scale(stack: Settings, cfg: Config, events: list[SimEvent],
              outdir: Path) -> dict[str, Any]:
    """Events per worker CPU-second with 1, 2 and 4 workers (`load.bench_scale`), on the
    dev stack's Redis and on a Redis Cluster of three masters."""
    from load.bench_scale import measure, measure_cluster

    single = measure(stack, events, run_ingest, cfg, outdir)
    if "scale_cluster" not in cfg.skip:
        log("scale_cpu: the same runs with the state on a private 3-master Redis Cluster")
        single["cluster"] = measure_cluster(stack, events, run_ingest, cfg, outdir)
    return single


def run_backfill(stack: Settings, cfg: Config, results: dict[str, Any],
                 outdir: Path) -> dict[str, Any]:
    """`cvm backfill` against reading the same files and one worker (`load.bench_backfill`)."""
    from load.bench_backfill import BackfillConfig, measure

    bcfg = BackfillConfig.quick() if cfg.events < Config().events else BackfillConfig()
    tp = results.get("throughput") or {}
    rate = tp.get("rate")
    cpu_us = (tp.get("cpu") or {}).get("workers_cpu_us_per_event")
    if rate is None or (isinstance(rate, float) and math.isnan(rate)):
        rate = cpu_us = None
    return measure(bcfg, stack, outdir, rate, cpu_us)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and write reports/bench/{report.md,bench.png,results.json}."""
    parser = argparse.ArgumentParser(prog="python -m load.bench", description=main.__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: about 2 minutes")
    parser.add_argument("--events", type=int, help="events pre-published for throughput")
    parser.add_argument("--customers", type=int, help="simulated customers for throughput")
    parser.add_argument("--measure-s", type=float, help="steady window of the throughput run")
    parser.add_argument("--fresh-rate", type=float, help="events/s of the freshness run")
    parser.add_argument("--fresh-s", type=float, help="seconds of freshness measurement")
    parser.add_argument("--concurrency", help="lookup clients, comma separated (e.g. 1,16,64)")
    parser.add_argument("--memory-scales", help="customers, comma separated (e.g. 100000,1000000)")
    parser.add_argument("--batch-size", type=int, help="CVM_BATCH_SIZE of the workers")
    parser.add_argument("--skip", default="", help="comma separated: throughput,freshness,"
                        "memory,profile,scaling,products,valuation,scale_cpu,scale_cluster,backfill")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "bench")
    args = parser.parse_args(argv)
    cfg = Config.quick() if args.quick else Config()
    overrides = {
        "events": args.events, "customers": args.customers, "measure_s": args.measure_s,
        "fresh_rate": args.fresh_rate, "fresh_s": args.fresh_s, "batch_size": args.batch_size,
    }
    for name, value in overrides.items():
        if value is not None:
            setattr(cfg, name, value)
    if args.concurrency:
        cfg.concurrency = tuple(int(c) for c in args.concurrency.split(","))
        if cfg.headline_concurrency not in cfg.concurrency:
            cfg.headline_concurrency = cfg.concurrency[-1]
    if args.memory_scales:
        cfg.memory_scales = tuple(int(c) for c in args.memory_scales.split(","))
    cfg.skip = tuple(filter(None, args.skip.split(",")))
    args.out.mkdir(parents=True, exist_ok=True)

    from load.bench_report import write_report

    stack = Settings.from_env()
    began = time.monotonic()
    results: dict[str, Any] = {
        "command": "python -m load.bench " + " ".join(shlex.quote(a) for a in
                                                       (argv if argv is not None
                                                        else sys.argv[1:])),
        "config": asdict(cfg),
        "machine": machine_info(stack),
        "batch_within_ms": stack.batch_within_ms,
    }
    log(f"config: {results['config']}")
    log(f"simulating {cfg.events:,} events of {cfg.customers:,} customers")
    events = throughput_events(cfg.events, cfg.customers, cfg.days, cfg.seed)
    results["throughput_customers"] = len({e.customer_id for e in events})
    stages: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("throughput", lambda: run_ingest(stack, cfg, events, 1, args.out, extras=True)),
        ("profile", lambda: run_direct_profile(cfg, events)),
        ("freshness", lambda: run_freshness(
            stack, cfg, args.out, results.get("throughput", {}).get("rate", math.nan))),
        ("scaling", lambda: run_ingest(stack, cfg, events[:cfg.scaling_events],
                                       cfg.scaling_workers, args.out, extras=False)),
        ("memory", lambda: run_memory(cfg)),
        ("products", lambda: measure_products(events)),
        ("valuation", measure_valuation),
        ("scale_cpu", lambda: run_scale(stack, cfg, events[:cfg.scaling_events], args.out)),
        ("backfill", lambda: run_backfill(stack, cfg, results, args.out)),
    ]
    failed = []
    for name, stage in stages:
        if name in cfg.skip:
            continue
        t0 = time.monotonic()
        try:
            results[name] = stage()
        except Exception:  # one failed measurement must not lose the others
            log(f"{name} failed:\n{traceback.format_exc()}")
            failed.append(name)
            results[f"{name}_error"] = traceback.format_exc()[-3000:]
        results.setdefault("stage_seconds", {})[name] = round(time.monotonic() - t0, 1)
        _save(results, args.out)
    results["elapsed_s"] = round(time.monotonic() - began, 1)
    results["load_average_at_end"] = load_average()
    _save(results, args.out)
    table = write_report(results, args.out)
    print(table)
    print(f"\nreport: {args.out / 'report.md'}  chart: {args.out / 'bench.png'}  "
          f"({results['elapsed_s']:.0f} s)")
    if failed:
        print(f"failed measurements: {', '.join(failed)} (see the log above)", file=sys.stderr)
    return 1 if failed else 0


def _save(results: dict[str, Any], out: Path) -> None:
    (out / "results.json").write_bytes(orjson.dumps(
        results, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))


if __name__ == "__main__":
    raise SystemExit(main())
