"""Where a worker's time goes: phase timers around `Ingestor.process`, and py-spy on a worker.

`profile_pipeline` drives the real `Ingestor.process` in this process (no Faust, no Kafka)
against a Redis server, batch by batch, with timers wrapped around each phase of the hot path:

* decode: `Contract.decode` (orjson + JSON Schema) and `from_message` (event construction);
* domain apply: `ingest` and `campaign_increments`;
* valuation: `history` and `value_many` (BG/NBD and Gamma-Gamma with numpy/scipy);
* planner: `planner.plan` (record fields, histogram markers, ranks, roll-up increments);
* load: `CustomerStore.load_many` (pipelined HGETALL), wall and client CPU;
* commit: `CustomerStore.commit` (argument packing and the Lua call), wall and client CPU.

The wrappers are installed on the classes and module attributes only for the run; no engine
file is changed. Server time (Lua included) comes from ``INFO commandstats`` when the server is
the benchmark's own. ``py-spy record`` samples a worker subprocess instead, so Faust's share can
be read from the same categories (`load.bench_stats.categorize_stack`).

``python -m load.bench_profile --redis-url URL --events N`` prints the phase table as JSON (the
form used to compare a change on a scratch copy of the repository).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from load.bench_stats import categorize_stack, span_of_stack
from load.simulator import SimConfig, SimEvent, simulate
from stream_app import history_plan
from stream_app import pipeline as pipeline_module
from stream_app.connections import async_redis
from stream_app.contract import Contract
from stream_app.domain import valuation as valuation_module
from stream_app.pipeline import Ingestor, RawRecord
from stream_app.settings import Settings
from stream_app.store.customers import CustomerStore
from stream_app.store.keys import Keys, partition_of

__all__ = [
    "PhaseProfile",
    "parse_pyspy_raw",
    "pyspy_spans",
    "profile_pipeline",
    "pyspy_record",
    "raw_records",
    "throughput_events",
]


def throughput_events(n: int, customers: int, days: int, seed: int) -> list[SimEvent]:
    """The first `n` simulated events of a population acquired over the first half of `days`."""
    config = SimConfig(n_customers=customers, days=days, acquisition_days=max(days // 2, 1),
                       seed=seed)
    return list(itertools.islice(simulate(config), n))


def raw_records(events: Iterable[SimEvent], settings: Settings,
                partitions: int = 4) -> list[RawRecord]:
    """Kafka-like records of simulated events: keyed by customer, on the partition Kafka's
    default partitioner picks, offsets per partition."""
    topics = {
        "purchase": settings.topics.purchases,
        "service_contact": settings.topics.service_contacts,
        "campaign_touch": settings.topics.campaign_touches,
    }
    offsets: Counter[tuple[str, int]] = Counter()
    out = []
    for e in events:
        key = e.customer_id.encode()
        # Kafka's default partitioner (murmur2), as the engine's producers use.
        tp = (topics[e.topic_kind], partition_of(e.customer_id, partitions))
        out.append(RawRecord(tp[0], tp[1], offsets[tp], key, orjson.dumps(e.payload)))
        offsets[tp] += 1
    return out


class _NullSink:
    async def send(self, key: bytes | None, message: dict[str, Any]) -> None:
        return None


@dataclass
class PhaseProfile:
    """Seconds spent per phase over a run of `Ingestor.process`."""

    events: int = 0
    batches: int = 0
    #: Customers the batches touched, each counted once per batch: what the batch step
    #: loads, values, plans and commits (a customer's events in one batch go together).
    updates: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)
    server: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, seconds: float) -> None:
        self.phases[name] = self.phases.get(name, 0.0) + seconds
        self.calls[name] += 1

    def rows(self) -> list[tuple[str, float, float]]:
        """(phase, µs per event, share of process CPU) for the report."""
        per = 1e6 / max(self.events, 1)
        rows = [(name, round(s * per, 1), round(s / self.cpu_s, 3) if self.cpu_s else 0.0)
                for name, s in self.phases.items() if "waiting" not in name]
        return sorted(rows, key=lambda r: -r[1])

    def as_dict(self) -> dict[str, Any]:
        return {
            "events": self.events, "batches": self.batches,
            "customer_updates": self.updates,
            "events_per_update": round(self.events / self.updates, 2) if self.updates else 0.0,
            "wall_s": round(self.wall_s, 3), "cpu_s": round(self.cpu_s, 3),
            "events_per_s_wall": round(self.events / self.wall_s, 1) if self.wall_s else 0.0,
            "events_per_cpu_s": round(self.events / self.cpu_s, 1) if self.cpu_s else 0.0,
            "cpu_us_per_event": round(self.cpu_s * 1e6 / max(self.events, 1), 1),
            "phases_us_per_event": {n: us for n, us, _ in self.rows()},
            "waits_us_per_event": {n: round(s * 1e6 / max(self.events, 1), 1)
                                   for n, s in self.phases.items() if "waiting" in n},
            "server": self.server,
        }


def _wrap_sync(fn: Callable[..., Any], name: str, prof: PhaseProfile) -> Callable[..., Any]:
    # CPU time, not wall time: on a shared machine the wall clock also counts run-queue waits.
    clock = time.process_time

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = clock()
        try:
            return fn(*args, **kwargs)
        finally:
            prof.add(name, clock() - t0)

    return wrapper


def _wrap_async(fn: Callable[..., Any], name: str, prof: PhaseProfile) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        w0, c0 = time.perf_counter(), time.process_time()
        try:
            return await fn(*args, **kwargs)
        finally:
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            prof.add(f"{name}: client CPU", cpu)
            prof.add(f"{name}: waiting (Redis, network, run queue)", max(wall - cpu, 0.0))

    return wrapper


_SYNC_PATCHES = (
    (Contract, "decode", "decode: contract (orjson + JSON Schema)"),
    (pipeline_module, "from_message", "decode: event construction"),
    (pipeline_module, "ingest", "domain apply (ledger)"),
    (pipeline_module, "campaign_increments", "domain apply (campaign roll-ups)"),
    (valuation_module, "history", "valuation: inputs (history)"),
    (valuation_module, "value_many", "valuation: value_many (numpy/scipy)"),
    (pipeline_module, "plan", "planner.plan (fields, markers, ranks)"),
    (pipeline_module, "unpack_retention", "churn: unpack retention memory"),
    (pipeline_module, "observe", "churn: observe (retention memory)"),
    (pipeline_module, "decide", "churn: decide (score, alerts, win-back)"),
    # Includes the valuations at the end of closed periods (also under value_many).
    (history_plan, "extend_many", "history: value history and trend sums"),
    (history_plan.Trail, "observe", "history: period flows per event"),
)
_ASYNC_PATCHES = (
    (CustomerStore, "load_many", "load_many (HGETALL pipeline)"),
    (CustomerStore, "commit", "commit (Lua)"),
    (Ingestor, "publish", "publish alerts and win-back"),
)


def _commandstats(info: dict[str, Any]) -> dict[str, tuple[int, int]]:
    out = {}
    for key, value in info.items():
        if key.startswith("cmdstat_") and isinstance(value, dict):
            out[key[len("cmdstat_"):]] = (int(value["calls"]), int(value["usec"]))
    return out


async def _process_all(ingestor: Ingestor, records: Sequence[RawRecord], batch: int,
                       prof: PhaseProfile) -> None:
    for i in range(0, len(records), batch):
        chunk = records[i:i + batch]
        await ingestor.process(chunk)
        prof.batches += 1
        prof.updates += len({r.key for r in chunk})


async def profile_pipeline(
    settings: Settings,
    records: Sequence[RawRecord],
    batch_size: int = 500,
    timers: bool = True,
    flush: bool = True,
) -> PhaseProfile:
    """Apply `records` with `Ingestor.process` in batches; time each phase if `timers`."""
    prof = PhaseProfile(events=len(records))
    client = async_redis(settings)
    if flush:
        await client.flushdb()
    ingestor = Ingestor(settings, CustomerStore(client, Keys(partitions=settings.partitions)),
                        _NullSink())
    saved: list[tuple[Any, str, Any]] = []
    if timers:
        # Names the engine does not have (any more) are skipped: the rest is still timed.
        for owner, attr, name in _SYNC_PATCHES:
            if hasattr(owner, attr):
                saved.append((owner, attr, getattr(owner, attr)))
                setattr(owner, attr, _wrap_sync(getattr(owner, attr), name, prof))
        for owner, attr, name in _ASYNC_PATCHES:
            if hasattr(owner, attr):
                saved.append((owner, attr, getattr(owner, attr)))
                setattr(owner, attr, _wrap_async(getattr(owner, attr), name, prof))
    stats_before = _commandstats(await client.info("commandstats"))
    try:
        w0, c0 = time.perf_counter(), time.process_time()
        await _process_all(ingestor, records, batch_size, prof)
        prof.wall_s, prof.cpu_s = time.perf_counter() - w0, time.process_time() - c0
    finally:
        for owner, attr, original in reversed(saved):
            setattr(owner, attr, original)
    stats_after = _commandstats(await client.info("commandstats"))
    for cmd, (calls, usec) in stats_after.items():
        c0_, u0 = stats_before.get(cmd, (0, 0))
        if calls - c0_ > 0 and cmd in ("evalsha", "eval", "hgetall"):
            prof.server[f"{cmd}_calls"] = calls - c0_
            prof.server[f"{cmd}_us_per_event"] = round((usec - u0) / max(len(records), 1), 1)
            prof.server[f"{cmd}_us_per_call"] = round((usec - u0) / (calls - c0_), 1)
    if timers:
        measured = sum(v for k, v in prof.phases.items() if "waiting" not in k)
        # CPU the timers do not cover: Ingestor glue (loops, dicts, BatchResult) and timers.
        prof.phases["pipeline glue (Ingestor loops, dicts)"] = max(prof.cpu_s - measured, 0.0)
        prof.calls["pipeline glue (Ingestor loops, dicts)"] = prof.batches
    await client.aclose()
    return prof


# --------------------------------------------------------------------------- py-spy


def pyspy_available() -> str | None:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return found if Path(found).exists() else None


def pyspy_record(pid: int, seconds: float, out: Path, rate: int = 100) -> Path | None:
    """``py-spy record --format raw`` of a running process; None if py-spy is unavailable."""
    exe = pyspy_available()
    if exe is None:
        return None
    cmd = [exe, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate",
           str(rate), "--format", "raw", "--nonblocking", "--output", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if result.returncode != 0 or not out.exists():
        sys.stderr.write(f"py-spy failed: {result.stderr[-2000:]}\n")
        return None
    return out


def _count_stacks(text: str, key: Callable[[list[str]], str]) -> Counter[str]:
    """Samples per ``key(frames)`` from py-spy's raw (collapsed) output: ``f1;f2;... count``."""
    counts: Counter[str] = Counter()
    for line in text.splitlines():
        stack, _, n = line.rpartition(" ")
        if stack and n.isdigit():
            counts[key(stack.split(";"))] += int(n)
    return counts


def parse_pyspy_raw(text: str) -> dict[str, int]:
    """Samples per category (`load.bench_stats.categorize_stack`) from py-spy's raw output."""
    return dict(_count_stacks(text, categorize_stack).most_common())


def pyspy_spans(text: str) -> dict[str, int]:
    """Samples per span (`load.bench_stats.span_of_stack`) from py-spy's raw output."""
    return dict(_count_stacks(text, span_of_stack).most_common())


def top_functions(text: str, n: int = 15) -> list[tuple[str, int]]:
    """The leaf functions with the most samples (self time)."""
    return _count_stacks(text, lambda frames: frames[-1]).most_common(n)


def main(argv: Sequence[str] | None = None) -> int:
    """Profile the pipeline directly and print JSON (compare a change on a scratch copy)."""
    parser = argparse.ArgumentParser(prog="python -m load.bench_profile", description=main.__doc__)
    parser.add_argument("--redis-url", required=True, help="a Redis database it may flush")
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--customers", type=int, default=40_000)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--no-timers", action="store_true", help="only the totals")
    args = parser.parse_args(argv)
    settings = Settings(redis_url=args.redis_url)
    records = raw_records(throughput_events(args.events, args.customers, args.days, args.seed),
                          settings)
    prof = asyncio.run(profile_pipeline(settings, records, args.batch_size,
                                        timers=not args.no_timers))
    print(orjson.dumps(prof.as_dict(), option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
