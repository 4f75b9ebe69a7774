"""Prometheus metrics of a worker, served at ``GET /metrics``, and its periodic summary line.

Counters are bumped by one-line hooks on the hot path (`batch_committed`,
`dead_lettered`, `published`, `conflicts`). What has to be read from elsewhere
(consumer lag, Redis round trip, model versions and ages, churn AUC, watermark
ages) is sampled by `Sampler` every `SAMPLE_INTERVAL_S`, the lags again on each
scrape, so a scrape never waits on Redis. Only `register` touches
Faust: the hooks are called from `pipeline`, which does not depend on it.

Consumer lag per partition is the consumer's highwater (the offset after the
last message in the partition, as of the last fetch) minus its position (the
next offset it will fetch: `cvm_consumer_lag`) or minus the group's committed
offset (`cvm_consumer_commit_lag`). Every worker reports its own assigned
partitions.

The metrics live in one registry of this module (`REGISTRY`), not in
prometheus-client's global one, so only the engine's series are served.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

from stream_app import consumer_group
from stream_app.store import shards

if TYPE_CHECKING:  # the hooks run in the pipeline, which does not depend on Faust
    import faust
    from faust.web import Request, Response, View

    from stream_app.web_side import WebSide

__all__ = [
    "REGISTRY",
    "SAMPLE_INTERVAL_S",
    "Sample",
    "Sampler",
    "batch_committed",
    "conflicts",
    "dead_lettered",
    "group_error_taken",
    "published",
    "register",
]

log = logging.getLogger(__name__)
batch_log = logging.getLogger("stream_app.batches")

#: Seconds between two samples of lag, Redis, models and watermarks.
SAMPLE_INTERVAL_S = 5.0
#: How much throughput and lag history the ops page gets.
HISTORY_S = 15 * 60

REGISTRY = CollectorRegistry()

EVENTS_APPLIED = Counter(
    "cvm_events_applied", "Valid input events committed to Redis, by input topic "
    "(an event found already applied on a replay also counts in cvm_events_duplicate_total).",
    ["topic"], registry=REGISTRY,
)
EVENTS_DUPLICATE = Counter(
    "cvm_events_duplicate", "Input events skipped as already applied (replays).",
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "cvm_events_dead_lettered", "Input records sent to the dead-letter topic, by input topic "
    "and error code.", ["topic", "error_code"], registry=REGISTRY,
)
BATCH_SECONDS = Histogram(
    "cvm_batch_seconds", "Time to apply one batch: decode, dead-letter, load, publish, commit.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)
BATCH_RECORDS = Histogram(
    "cvm_batch_records", "Records per batch.",
    buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000), registry=REGISTRY,
)
COMMIT_CONFLICTS = Counter(
    "cvm_commit_conflicts", "Customers whose compare-and-set commit lost a race and were "
    "reloaded, by path (batch: the ingest agent; rescore: the timers).", ["path"],
    registry=REGISTRY,
)
ALERTS = Counter(
    "cvm_alerts_published", "Defection alerts published, by severity.", ["severity"],
    registry=REGISTRY,
)
TRIGGERS = Counter(
    "cvm_winback_triggers_published", "Win-back triggers published, by group "
    "(treatment or control).", ["group"], registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "cvm_consumer_lag", "Messages between the consumer's position and the partition's "
    "highwater, per assigned partition.", ["topic", "partition"], registry=REGISTRY,
)
COMMIT_LAG = Gauge(
    "cvm_consumer_commit_lag", "Messages between the group's committed offset and the "
    "partition's highwater, per assigned partition (the LAG of kafka-consumer-groups): "
    "fetched but not yet applied and committed, plus not yet fetched.", ["topic", "partition"],
    registry=REGISTRY,
)
GROUP_MEMBER = Gauge(
    "cvm_consumer_group_member", "1 while the broker knows the worker's consumer as a member "
    "of its group, 0 while it is out of it (forgotten by the broker and not joined again); "
    "sampled.", registry=REGISTRY,
)
GROUP_ERRORS = Counter(
    "cvm_consumer_group_errors_taken", "Errors the consumer's group coordination stopped on and "
    "waited to hand over, taken by the worker so that it tries again, by error type.",
    ["error"], registry=REGISTRY,
)
MODEL_VERSION = Gauge(
    "cvm_model_version", "Version of the newest stored model (value: BG/NBD + Gamma-Gamma; "
    "churn: the river model).", ["model"], registry=REGISTRY,
)
MODEL_AGE = Gauge(
    "cvm_model_age_seconds", "Wall-clock seconds since the newest model was fitted "
    "(value) or published (churn).", ["model"], registry=REGISTRY,
)
CHURN_AUC = Gauge(
    "cvm_churn_model_auc", "Progressive-validation ROC AUC of the churn model "
    "(window: stream for the whole stream, rolling for the recent window).", ["window"],
    registry=REGISTRY,
)
#: Seconds the loop-lag sampler sleeps between samples.
LOOP_LAG_SAMPLE_S = 0.1
LOOP_LAG = Histogram(
    "cvm_event_loop_lag_seconds", "How late the worker's event loop woke a sampler that sleeps "
    f"{LOOP_LAG_SAMPLE_S:g} s at a time: the time a batch, a timer or a lookup held the loop "
    "without yielding (lookups and fresh events wait that long).",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0), registry=REGISTRY,
)
GC_SECONDS = Histogram(
    "cvm_gc_seconds", "Duration of one garbage collection in the worker's process, by "
    "generation (2: a full collection); every thread of the process holds still meanwhile.",
    ["generation"], buckets=(0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
    registry=REGISTRY,
)
TIMER_SECONDS = Histogram(
    "cvm_timer_seconds", "Duration of one run of a worker timer (rescoring, model refresh and "
    "fit, outbox drain), by timer, waits on Redis and Kafka included.", ["timer"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)
RESCORE_DUE = Gauge(
    "cvm_rescore_due", "Entries of the churn-label and rescore due sets at or before the "
    "watermark after the leader's last rescoring run (a customer due for both counts twice): "
    "what CVM_RESCORE_BUDGET_S left for later runs; growing while the watermark runs ahead "
    "of wall-clock time (catching up), back near 0 once it is caught up.", registry=REGISTRY,
)
REDIS_SECONDS = Histogram(
    "cvm_redis_roundtrip_seconds", "Round trip of a PING to Redis, sampled.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
    registry=REGISTRY,
)
REDIS_ERRORS = Counter(
    "cvm_redis_sample_errors", "Samples of Redis that failed (Redis unreachable).",
    registry=REGISTRY,
)
WATERMARK_AGE = Gauge(
    "cvm_watermark_age_seconds", "Wall-clock now minus the event-time watermark of an input "
    "partition.", ["topic", "partition"], registry=REGISTRY,
)


# ------------------------------------------------------------------------------------ hooks

def batch_committed(events: Iterable[tuple[Any, Any]], result: Any, seconds: float) -> None:
    """Count a committed batch: its valid events by topic, duplicates, latency; log a line.

    `events` are the batch's (event, source) pairs that passed validation and
    `result` its `pipeline.BatchResult`.
    """
    by_topic: dict[str, int] = {}
    for _event, source in events:
        by_topic[source.topic] = by_topic.get(source.topic, 0) + 1
    for topic, n in by_topic.items():
        EVENTS_APPLIED.labels(topic=topic).inc(n)
    if result.duplicates:
        EVENTS_DUPLICATE.inc(result.duplicates)
    if result.conflicts:
        COMMIT_CONFLICTS.labels(path="batch").inc(result.conflicts)
    BATCH_SECONDS.observe(seconds)
    BATCH_RECORDS.observe(result.records)
    batch_log.debug(
        "batch: %d records, %d applied, %d duplicates, %d dead letters, %d customers, "
        "%d conflicts in %.1f ms", result.records, result.applied, result.duplicates,
        result.dead_lettered, result.customers, result.conflicts, seconds * 1000,
    )


def dead_lettered(topic: str, error_code: str) -> None:
    """Count one record sent to the dead-letter topic."""
    DEAD_LETTERS.labels(topic=topic, error_code=error_code).inc()


def group_error_taken(error: BaseException) -> None:
    """Count an error taken from the consumer's group coordination (`consumer_group`)."""
    GROUP_ERRORS.labels(error=type(error).__name__).inc()


def conflicts(path: str, n: int) -> None:
    """Count `n` customers whose commit lost a race on `path` (``batch`` or ``rescore``)."""
    if n:
        COMMIT_CONFLICTS.labels(path=path).inc(n)


def published(entries: Sequence[tuple[str, Mapping[str, Any]]], skipped: Iterable[str]) -> None:
    """Count the alerts and win-back triggers of `entries` sent (ids in `skipped` were not)."""
    already = set(skipped)
    for kind, message in entries:
        if (message.get("alert_id") or message.get("trigger_id")) in already:
            continue
        if kind == "alert":
            ALERTS.labels(severity=str(message.get("severity") or "none")).inc()
        elif kind == "winback":
            TRIGGERS.labels(group="control" if message.get("control_group") else "treatment").inc()


# --------------------------------------------------------------------------------- sampling

def _total(counter: Counter) -> float:
    """The sum of a counter over all its label values."""
    return sum(
        s.value for m in counter.collect() for s in m.samples if s.name.endswith("_total")
    )


def _by_label(counter: Counter, label: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for m in counter.collect():
        for s in m.samples:
            if s.name.endswith("_total"):
                out[s.labels[label]] = out.get(s.labels[label], 0.0) + s.value
    return out


def _set(gauge: Gauge, values: Mapping[tuple[str, int], int]) -> None:
    """Replace every series of a per-partition gauge (a revoked partition disappears)."""
    gauge.clear()
    for (topic, partition), n in values.items():
        gauge.labels(topic=topic, partition=str(partition)).set(n)


def _iso_seconds(value: Any) -> float | None:
    """POSIX seconds of an ISO 8601 time, or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True)
class Sample:
    """One point of the ops page's history: counters' totals and the lag at a wall time."""

    at: float
    applied: float
    dead_letters: float
    lag: float


class Sampler:
    """Samples lag, Redis, models and watermarks into the gauges; keeps a short history."""

    def __init__(self, app: faust.App, runtime: Any, clock: Any = time.time) -> None:
        self.app = app
        self.runtime = runtime
        self.clock = clock
        self.history: deque[Sample] = deque(maxlen=int(HISTORY_S / SAMPLE_INTERVAL_S) + 1)
        self.lag: dict[tuple[str, int], int] = {}
        self.models: dict[str, dict[str, Any]] = {}
        # The first point of the history is the worker's start, with its counters as they are.
        self.history.append(Sample(at=clock(), applied=_total(EVENTS_APPLIED),
                                   dead_letters=_total(DEAD_LETTERS), lag=0.0))

    def sample_commit_lag(self) -> dict[tuple[str, int], int]:
        """Highwater minus the committed offset per assigned partition (`cvm_consumer_commit_lag`).

        Reads only what the consumer holds in memory: no call into its thread.
        """
        consumer = self.app.consumer
        # Faust keeps the offsets it committed but has no public accessor for them.
        committed = getattr(consumer, "_committed_offset", {})
        lag: dict[tuple[str, int], int] = {}
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is not None:  # None: nothing fetched from it yet
                lag[(tp.topic, tp.partition)] = max(0, int(high) - int(committed.get(tp) or 0))
        _set(COMMIT_LAG, lag)
        self.lag = lag
        return lag

    async def sample_lag(self) -> dict[tuple[str, int], int]:
        """Both lags per assigned partition; returns the commit lag.

        The fetch lag (`cvm_consumer_lag`: highwater minus position) asks the consumer's
        thread for each position, so it is sampled on a scrape, not on the timer.
        """
        lag = self.sample_commit_lag()
        consumer = self.app.consumer
        tps = [tp for tp in consumer.assignment() if consumer.highwater(tp) is not None]
        positions = await asyncio.gather(*(consumer.position(tp) for tp in tps))
        _set(CONSUMER_LAG, {
            (tp.topic, tp.partition): max(0, int(consumer.highwater(tp)) - int(position))
            for tp, position in zip(tps, positions, strict=True) if position is not None
        })
        return lag

    async def sample_redis(self) -> None:
        """Ping Redis; read the models' versions and ages, churn AUC and watermarks."""
        redis, keys = self.runtime.redis, self.runtime.keys
        started = time.perf_counter()
        await redis.ping()
        REDIS_SECONDS.observe(time.perf_counter() - started)
        now = self.clock()
        raw_model, raw_metrics, churn_version, marks = (
            await redis.get(keys.model),
            await redis.get(keys.churn_metrics),
            await redis.hget(keys.churn_model, "version"),
            await shards.watermarks(redis, keys),
        )
        value = orjson.loads(raw_model) if raw_model else {}
        fitted = _iso_seconds(value.get("fitted_at"))
        self.models["value"] = {
            "version": int(value.get("version", 0)),
            "at": fitted,
            "as_of": value.get("as_of"),
        }
        churn = orjson.loads(raw_metrics) if raw_metrics else {}
        updated = _iso_seconds(churn.get("updated_at"))
        self.models["churn"] = {
            "version": int(churn_version or 0),
            "at": updated,
            "name": churn.get("model_version"),
        }
        for name, doc in self.models.items():
            MODEL_VERSION.labels(model=name).set(doc["version"])
            if doc["at"] is not None:
                MODEL_AGE.labels(model=name).set(max(0.0, now - doc["at"]))
        for window, key in (("stream", "auc"), ("rolling", "rolling_auc")):
            if isinstance(churn.get(key), int | float):
                CHURN_AUC.labels(window=window).set(churn[key])
        inputs = set(self.runtime.settings.topics.inputs)
        for (topic, partition), ms in marks.items():
            if topic in inputs:
                WATERMARK_AGE.labels(topic=topic, partition=str(partition)).set(
                    now - int(ms) / 1000)

    async def sample(self) -> None:
        """Take one sample of everything; a part that fails is logged and the rest stands."""
        seen = consumer_group.membership(self.app)
        if seen is not None:  # None: no consumer yet
            GROUP_MEMBER.set(1 if seen.member else 0)
        try:
            self.sample_commit_lag()
        except Exception as exc:  # the consumer may be rebalancing or not started
            log.debug("cannot sample consumer lag: %s", exc)
        try:
            await self.sample_redis()
        except Exception as exc:
            REDIS_ERRORS.inc()
            log.warning("cannot sample Redis for metrics: %s", exc)
        self.history.append(Sample(
            at=self.clock(), applied=_total(EVENTS_APPLIED),
            dead_letters=_total(DEAD_LETTERS), lag=float(sum(self.lag.values())),
        ))

    def overview(self) -> dict[str, Any]:
        """What the ops page shows of this worker: throughput and lag history, dead letters
        by reason, the models' versions and ages.
        """
        # Copies, each taken at once: the web thread reads what the worker's loop updates.
        history, lag, models = tuple(self.history), dict(self.lag), dict(self.models)
        now = self.clock()
        points = []
        previous: Sample | None = None
        for s in history:
            if previous is not None and s.at > previous.at:
                rate = max(0.0, s.applied - previous.applied) / (s.at - previous.at)
                points.append({
                    "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(s.at)),
                    "events_per_s": round(rate, 3), "lag": s.lag,
                })
            previous = s
        return {
            "interval_s": SAMPLE_INTERVAL_S,
            "history": points,
            "applied_total": _total(EVENTS_APPLIED),
            "dead_letters": {k: int(v) for k, v in sorted(_by_label(
                DEAD_LETTERS, "error_code").items())},
            "lag": {f"{t}[{p}]": n for (t, p), n in sorted(lag.items())},
            "models": {
                name: {**{k: v for k, v in doc.items() if k != "at"},
                       "age_s": None if doc["at"] is None else max(0.0, now - doc["at"])}
                for name, doc in models.items()
            },
        }

    def summary_line(self, previous: Sample | None) -> tuple[str, Sample]:
        """The periodic info line: throughput and dead letters since `previous`, the lag now.

        Returns the line and the sample it was computed at, for the next call.
        """
        last = Sample(at=self.clock(), applied=_total(EVENTS_APPLIED),
                      dead_letters=_total(DEAD_LETTERS), lag=float(sum(self.lag.values())))
        if previous is None or last.at <= previous.at:
            rate, dead = 0.0, 0.0
        else:
            rate = max(0.0, last.applied - previous.applied) / (last.at - previous.at)
            dead = max(0.0, last.dead_letters - previous.dead_letters)
        worst = max(self.lag.items(), key=lambda kv: kv[1], default=None)
        worst_text = "" if worst is None or worst[1] <= 0 else (
            f" (most: {worst[0][0]}[{worst[0][1]}] {worst[1]})")
        value = self.models.get("value", {})
        return (
            f"throughput {rate:.1f} events/s, {dead:.0f} dead letters, lag {last.lag:.0f}"
            f"{worst_text}, value model v{value.get('version', 0)}", last,
        )


class GcClock:
    """Times every garbage collection of the process (a `gc.callbacks` entry).

    The callback only appends to a list: a collection can start while this thread holds a
    metric's lock, so it takes none. `flush` moves the durations into `GC_SECONDS`.
    """

    def __init__(self) -> None:
        self.started = 0.0
        self.pending: list[tuple[int, float]] = []

    def __call__(self, phase: str, info: Mapping[str, int]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        else:
            self.pending.append((info["generation"], time.perf_counter() - self.started))

    def flush(self) -> None:
        pending, self.pending = self.pending, []
        for generation, seconds in pending:
            GC_SECONDS.labels(generation=str(generation)).observe(seconds)


#: The process's one `GcClock`, installed by `register`.
GC_CLOCK = GcClock()


def watch_gc() -> None:
    """Time this process's garbage collections into `GC_SECONDS` (once per process)."""
    if GC_CLOCK not in gc.callbacks:
        gc.callbacks.append(GC_CLOCK)


async def loop_lag(every_s: float, samples: int | None = None) -> None:
    """Sleep `every_s` at a time and record in `LOOP_LAG` how much later than asked the
    event loop woke up; forever, or `samples` times."""
    loop = asyncio.get_running_loop()
    n = 0
    while samples is None or n < samples:
        asked = loop.time() + every_s
        await asyncio.sleep(every_s)
        LOOP_LAG.observe(max(loop.time() - asked, 0.0))
        n += 1


def register(app: faust.App, runtime: Any, side: WebSide | None = None) -> Sampler:
    """Attach ``GET /metrics``, the sampling timer and the periodic summary line to `app`.

    The consumer's positions are asked for on the worker's loop (`WebSide.on_worker`).
    """
    sampler = Sampler(app, runtime)
    for topic in runtime.settings.topics.inputs:  # present (at 0) from the first scrape
        EVENTS_APPLIED.labels(topic=topic)
    runtime.sampler = sampler
    watch_gc()
    summary_every = runtime.settings.log_summary_interval_s
    last: dict[str, Sample | None] = {"sample": sampler.history[0]}

    @app.page("/metrics")
    async def metrics_page(web: View, request: Request) -> Response:
        try:
            if side is None:
                await sampler.sample_lag()
            else:
                await side.on_worker(sampler.sample_lag)
        except Exception as exc:
            log.debug("cannot sample consumer lag: %s", exc)
        GC_CLOCK.flush()
        # The content type goes in as a header: aiohttp refuses a charset in content_type.
        return web.bytes(generate_latest(REGISTRY), headers={
            "Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"})

    @app.timer(interval=SAMPLE_INTERVAL_S)
    async def sample_metrics() -> None:
        GC_CLOCK.flush()
        await sampler.sample()

    @app.task
    async def sample_loop_lag() -> None:
        await loop_lag(LOOP_LAG_SAMPLE_S)

    @app.timer(interval=summary_every)
    async def log_summary() -> None:
        try:
            sampler.sample_commit_lag()
        except Exception as exc:
            log.debug("cannot sample consumer lag: %s", exc)
        line, last["sample"] = sampler.summary_line(last["sample"])
        log.info("summary: %s", line)

    return sampler
