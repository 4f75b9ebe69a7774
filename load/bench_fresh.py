"""Freshness: from the producer's ``produce`` call to the update being readable in Redis.

The load generator publishes at a fixed rate through a producer wrapper that, for every
`every`-th message, notes the monotonic time just before ``produce`` and asks for its delivery
report (topic, partition, offset). A poller thread reads, in one pipelined round trip per
cycle, the ``_o:<topic>`` field of every sampled customer not yet seen updated: the offset of
that topic the customer's record has applied, which the engine writes in the same atomic call
as the rest of the update. The sample is visible at the end of the first cycle that reads an
offset at or above its own. Until its delivery report arrives the poller keeps each value it
reads with the time, so a sample applied before its report came back is still timed from the
read that first saw it. The resolution is one poll cycle, reported with the results.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stream_app.connections import sync_redis
from stream_app.settings import Settings
from stream_app.store.keys import Keys
from stream_app.store.records import BOOK, book_of

__all__ = ["FreshnessTracer", "Sample"]


@dataclass
class Sample:
    customer_id: str
    topic: str
    t_produce: float
    phase: str
    offset: int | None = None
    failed: bool = False
    t_visible: float | None = None
    seen: list[tuple[float, int]] = field(default_factory=list)

    @property
    def latency(self) -> float | None:
        return None if self.t_visible is None else self.t_visible - self.t_produce


class _TracingProducer:
    """confluent-kafka Producer that samples every `every`-th message for the tracer."""

    def __init__(self, inner: Any, tracer: FreshnessTracer) -> None:
        self.inner = inner
        self.tracer = tracer
        self.n = 0

    def produce(self, topic: str, value: bytes, key: bytes) -> None:
        self.n += 1
        if self.n % self.tracer.every:
            self.inner.produce(topic, value=value, key=key)
        else:
            sample = Sample(key.decode(), topic, time.monotonic(), self.tracer.phase)
            self.inner.produce(topic, value=value, key=key,
                               on_delivery=lambda err, msg: self.tracer.delivered(sample, err,
                                                                                   msg))
            self.tracer.add(sample)
        self.inner.poll(0)

    def poll(self, timeout: float) -> int:
        return int(self.inner.poll(timeout))

    def flush(self, timeout: float) -> int:
        return int(self.inner.flush(timeout))


def applied_offset(topic: str, book: bytes | str | None, legacy: bytes | str | None) -> int:
    """The customer's applied offset of `topic` (-1: none) from the record's bookkeeping field
    (`stream_app.store.records.BOOK`), or from the per-topic field of records written before it.
    A customer's events of one topic are on one partition, so the highest is that one's.

    >>> from stream_app.store.records import Book, pack_book
    >>> applied_offset("t", pack_book(Book(offsets={("t", 2): 41, ("u", 0): 7})), None)
    41
    >>> applied_offset("t", None, b"12"), applied_offset("t", None, None)
    (12, -1)
    """
    if book:
        text = book.decode() if isinstance(book, bytes) else book
        offsets = [o for (t, _), o in book_of({BOOK: text}).offsets.items() if t == topic]
        return max(offsets, default=-1)
    return -1 if legacy is None else int(legacy)


class FreshnessTracer:
    """Sampled produce times, their offsets, and the poller that sees them applied."""

    def __init__(self, settings: Settings, every: int = 20, poll_sleep: float = 0.001) -> None:
        self.settings = settings
        self.every = every
        self.poll_sleep = poll_sleep
        self.phase = "warmup"
        self.samples: list[Sample] = []
        self.cycles: list[float] = []
        self._active: list[Sample] = []
        self._lock = threading.Lock()
        self._keys = Keys()

    def producer_factory(self, config: dict[str, Any]) -> _TracingProducer:
        from confluent_kafka import Producer

        config = dict(config)
        config["delivery.report.only.error"] = False  # per-message reports for the samples
        return _TracingProducer(Producer(config), self)

    def add(self, sample: Sample) -> None:
        with self._lock:
            self.samples.append(sample)
            self._active.append(sample)

    def delivered(self, sample: Sample, err: Any, msg: Any) -> None:
        with self._lock:
            if err is not None:
                sample.failed = True
                return
            sample.offset = int(msg.offset())
            for t, value in sample.seen:
                if value >= sample.offset:
                    sample.t_visible = t
                    break

    def pending(self) -> int:
        with self._lock:
            return sum(1 for s in self._active if not s.failed)

    def poll_loop(self, stop: threading.Event, drain_s: float = 60.0) -> None:
        """Poll until `stop` is set and every sample is seen (or `drain_s` more seconds)."""
        client = sync_redis(self.settings)
        stopped_at: float | None = None
        last = time.monotonic()
        try:
            while True:
                if stop.is_set():
                    stopped_at = stopped_at or time.monotonic()
                    if not self.pending() or time.monotonic() - stopped_at > drain_s:
                        return
                with self._lock:
                    self._active = [s for s in self._active
                                    if s.t_visible is None and not s.failed]
                    batch = list(self._active)
                if not batch:
                    time.sleep(self.poll_sleep)
                    last = time.monotonic()
                    continue
                pipe = client.pipeline(transaction=False)
                for s in batch:
                    pipe.hmget(self._keys.customer(s.customer_id), BOOK, f"_o:{s.topic}")
                values = [applied_offset(s.topic, *raw)
                          for s, raw in zip(batch, pipe.execute(), strict=True)]
                now = time.monotonic()
                self.cycles.append(now - last)
                last = now
                with self._lock:
                    for s, value in zip(batch, values, strict=True):
                        if s.offset is None:
                            if not s.seen or s.seen[-1][1] != value:
                                s.seen.append((now, value))
                        elif value >= s.offset and s.t_visible is None:
                            s.t_visible = now
                time.sleep(self.poll_sleep)
        finally:
            client.close()

    def latencies(self, phase: str) -> list[float]:
        with self._lock:
            return [s.latency for s in self.samples
                    if s.phase == phase and s.latency is not None]

    def unseen(self, phase: str) -> int:
        with self._lock:
            return sum(1 for s in self.samples if s.phase == phase and s.t_visible is None)


def run_in_thread(target: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Start `target` in a daemon thread; the list receives its result or exception."""
    box: list[Any] = []

    def run() -> None:
        try:
            box.append(target())
        except BaseException as exc:  # handed to the caller
            box.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box
