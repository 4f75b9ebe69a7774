"""Publish a simulated event stream to the three input topics, paced, with optional bad messages.

Each `SimEvent` goes, in event-time order, to the topic of its kind (names from
``Settings.topics``), keyed by the customer id (UTF-8) with an orjson value. The producer is
idempotent with ``acks=all``, batches with ``linger.ms`` and compresses with lz4, and uses the
``murmur2_random`` partitioner: librdkafka's default (CRC32) would put a customer on a different
partition than aiokafka and the Java client do (see ``schemas/README.md``).

``malformed_share`` adds, after each good event and with that probability, one *extra* bad
message built from it (the good events are all still sent). `PublishReport.malformed_by_kind`
counts them per kind in `MALFORMED_KINDS`, each of which the contract rejects, so a test can
check that exactly that many messages reached the dead-letter topic.

Examples
--------
>>> from load.simulator import SimConfig, simulate
>>> event = next(simulate(SimConfig(n_customers=1, days=1)))
>>> topic_kind, key, value = malformed_message("bad_customer_id", event, max_event_bytes=65536)
>>> topic_kind, key
('purchase', b'{C0000001}')
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from load.simulator import SimConfig, SimEvent, simulate
from stream_app.producing import Producer, producer_config
from stream_app.settings import Settings

__all__ = [
    "MALFORMED_KINDS",
    "PublishReport",
    "main",
    "malformed_message",
    "producer_config",
    "publish",
]

#: Every kind of bad message the generator can inject; each one is rejected by the contract.
MALFORMED_KINDS = (
    "invalid_json",  # truncated JSON text
    "wrong_type",  # a required field with the wrong JSON type
    "unknown_enum",  # a value outside an enum
    "missing_field",  # a required field left out
    "oversize",  # more than max_event_bytes (otherwise a valid purchase)
    "negative_amount",  # a purchase with amount < 0
    "bad_customer_id",  # a customer id with braces (also the key)
    "unsupported_currency",  # a purchase in a currency with no exchange rate
)

_WRONG_TYPE = {
    "purchase": ("amount", "59.99 USD"),
    "service_contact": ("resolved", "yes"),
    "campaign_touch": ("cost", "n/a"),
}
_UNKNOWN_ENUM = {
    "purchase": ("kind", "refund"),
    "service_contact": ("reason", "alien_abduction"),
    "campaign_touch": ("action", "liked"),
}
_REQUIRED = {
    "purchase": ("event_id", "customer_id", "occurred_at", "kind", "amount", "currency"),
    "service_contact": ("event_id", "customer_id", "occurred_at", "reason", "cost", "resolved"),
    "campaign_touch": ("event_id", "customer_id", "occurred_at", "campaign_id", "action", "cost"),
}


@dataclass
class PublishReport:
    """What `publish` sent; ``failed`` counts messages whose delivery failed or never finished."""

    sent: int = 0
    malformed: int = 0
    malformed_by_kind: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(MALFORMED_KINDS, 0)
    )
    failed: int = 0
    seconds: float = 0.0
    bytes: int = 0
    errors: list[str] = field(default_factory=list)
    #: (topic, key, value) of each message whose delivery failed, in the order reported,
    #: for `publish_again`.
    undelivered: list[tuple[str, bytes | None, bytes | None]] = field(
        default_factory=list, repr=False)

    @property
    def messages(self) -> int:
        return self.sent + self.malformed

    @property
    def rate(self) -> float:
        """Messages (good and malformed) per second."""
        return self.messages / self.seconds if self.seconds > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        """Megabytes (10**6, keys plus values) per second."""
        return self.bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "malformed": self.malformed,
            "malformed_by_kind": self.malformed_by_kind,
            "failed": self.failed,
            "seconds": round(self.seconds, 3),
            "events_per_s": round(self.rate, 1),
            "mb_per_s": round(self.mb_per_s, 3),
            "errors": self.errors,
        }


def malformed_message(
    kind: str,
    event: SimEvent,
    max_event_bytes: int,
    rng: random.Random | None = None,
    fx_rates: Iterable[str] = (),
) -> tuple[str, bytes, bytes]:
    """Build one bad message of ``kind`` from a good ``event``: ``(topic_kind, key, value)``.

    The bad message gets its own ``event_id`` (the good one with ``-bad``) so it cannot be taken
    for a duplicate of the good event. Purchase-only faults (oversize, negative amount,
    unsupported currency) turn any event into a purchase of the same customer.
    """
    rng = rng or random.Random(0)
    topic_kind = event.topic_kind
    payload = dict(event.payload)
    payload["event_id"] = f"{payload['event_id']}-bad"
    key = event.customer_id
    if kind == "invalid_json":
        text = orjson.dumps(payload)
        return topic_kind, key.encode(), text[: rng.randrange(1, len(text) - 1)]
    if kind == "wrong_type":
        name, value = _WRONG_TYPE[topic_kind]
        payload[name] = value
    elif kind == "unknown_enum":
        name, value = _UNKNOWN_ENUM[topic_kind]
        payload[name] = value
    elif kind == "missing_field":
        del payload[rng.choice(_REQUIRED[topic_kind])]
    elif kind == "bad_customer_id":
        key = "{" + event.customer_id + "}"
        payload["customer_id"] = key
    elif kind in ("oversize", "negative_amount", "unsupported_currency"):
        topic_kind = "purchase"
        payload = _purchase_like(payload, event.customer_id)
        if kind == "negative_amount":
            payload["amount"] = -payload["amount"]
        elif kind == "unsupported_currency":
            payload["currency"] = next(c for c in ("XXX", "XTS", "XAU") if c not in fx_rates)
        else:
            line = {"sku": "SKU-PADDING", "category": "padding", "quantity": 1, "unit_price": 0.01}
            lines = max_event_bytes // len(orjson.dumps(line)) + 8
            payload["items"] = [line] * lines
            payload["amount"] = round(0.01 * lines, 2)
    else:
        raise ValueError(f"unknown malformed kind {kind!r}; expected one of {MALFORMED_KINDS}")
    return topic_kind, key.encode(), orjson.dumps(payload)


def _purchase_like(payload: dict[str, Any], customer: str) -> dict[str, Any]:
    if "amount" in payload and "kind" in payload:
        return payload
    return {
        "event_id": payload["event_id"],
        "customer_id": customer,
        "occurred_at": payload["occurred_at"],
        "kind": "order",
        "amount": 25.0,
        "currency": "USD",
        "channel": "web",
    }


class _Pacer:
    """Token bucket: at most ``rate`` messages a second with bursts of 1/20 s; 0 = no limit."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate / 20)
        self.tokens = self.capacity
        self.last = time.monotonic()

    def take(self) -> None:
        if self.rate <= 0:
            return
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < 1.0:
            # sleep at least 1 ms: shorter sleeps overshoot and would cap high rates
            time.sleep(max((1.0 - self.tokens) / self.rate, 0.001))
            now = time.monotonic()
            self.tokens += (now - self.last) * self.rate
            self.last = now
        self.tokens -= 1.0


def publish_again(
    messages: Sequence[tuple[str, bytes | None, bytes | None]],
    settings: Settings,
    flush_timeout: float = 60.0,
    producer_factory: Callable[[dict[str, Any]], Producer] | None = None,
) -> int:
    """Send `messages` (a report's ``undelivered``) again, in order, through a new producer.

    Returns how many failed again. A message that timed out may have been written after
    all; the engine counts an event id it has already applied once.
    """
    failed = [0]

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            failed[0] += 1

    producer = _producer(settings, on_delivery, producer_factory)
    for topic, key, value in messages:
        _produce(producer, topic, key, value)
    _left, unreported = _drain(producer, flush_timeout, lambda: failed[0])
    return failed[0] + unreported


def _producer(
    settings: Settings,
    on_delivery: Callable[[Any, Any], None],
    factory: Callable[[dict[str, Any]], Producer] | None,
    delivery_timeout: float | None = None,
) -> Producer:
    config = producer_config(settings)
    if delivery_timeout is not None:
        config["message.timeout.ms"] = max(1, round(delivery_timeout * 1000))
    config["on_delivery"] = on_delivery
    if factory is None:
        from confluent_kafka import Producer as KafkaProducer

        factory = KafkaProducer
    return factory(config)


#: Seconds to wait for the delivery reports of purged messages (librdkafka gives them at once).
PURGE_REPORT_S = 10.0


def _drain(
    producer: Producer, flush_timeout: float, reported: Callable[[], int]
) -> tuple[int, int]:
    """Flush; purge what is still queued or in flight after `flush_timeout`.

    Purged messages get a delivery report with an error, so the delivery callback counts
    them (and `publish` keeps them to send again) like any other failure. `reported()` is
    the callback's count of failures. Returns (messages left at the timeout, of which not
    reported even after the purge).
    """
    left = producer.flush(flush_timeout)  # delivery reports arrive during the flush
    if not left:
        return 0, 0
    before = reported()
    purge = getattr(producer, "purge", None)
    if purge is not None:
        purge()
        producer.flush(PURGE_REPORT_S)
    return left, max(0, left - (reported() - before))


def _produce(producer: Producer, topic: str, key: bytes | None, value: bytes | None) -> None:
    """Produce one message, serving delivery reports while the local queue is full."""
    while True:
        try:
            producer.produce(topic, value=value, key=key)
            return
        except BufferError:
            producer.poll(0.05)


def publish(
    events: Iterable[SimEvent],
    settings: Settings,
    rate: float = 0.0,
    malformed_share: float = 0.0,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
    *,
    producer_factory: Callable[[dict[str, Any]], Producer] | None = None,
    flush_timeout: float = 60.0,
    delivery_timeout: float | None = None,
) -> PublishReport:
    """Send ``events`` in order to the input topics at ``rate`` messages/s (0: as fast as possible).

    ``progress(n)`` is called with the number of messages produced so far at most every 0.2 s
    and once at the end; setting ``stop`` ends the run early (what was produced is still flushed).
    ``producer_factory`` builds the producer from `producer_config` (default
    ``confluent_kafka.Producer``; tests pass a fake). Delivery failures are counted through the
    delivery callback, and messages still queued after ``flush_timeout`` are purged, so
    that they too are reported failed and kept in ``undelivered``, in order.
    ``delivery_timeout`` (seconds; default librdkafka's ``message.timeout.ms``, 5 minutes)
    bounds how long one message may wait for its delivery before it is reported failed.
    """
    if not 0.0 <= malformed_share <= 1.0:
        raise ValueError(f"malformed_share={malformed_share} must be within 0..1")
    if rate < 0:
        raise ValueError(f"rate={rate} must not be negative")
    report = PublishReport()
    lock = threading.Lock()

    def on_delivery(err: Any, msg: Any) -> None:
        if err is None:
            return
        with lock:
            report.failed += 1
            if msg is not None:
                report.undelivered.append((msg.topic(), msg.key(), msg.value()))
            if len(report.errors) < 10:
                report.errors.append(f"{msg.topic() if msg is not None else '?'}: {err}")

    producer = _producer(settings, on_delivery, producer_factory, delivery_timeout)
    topics = {
        "purchase": settings.topics.purchases,
        "service_contact": settings.topics.service_contacts,
        "campaign_touch": settings.topics.campaign_touches,
    }
    rng = random.Random(seed)
    kinds = MALFORMED_KINDS
    fx = tuple(settings.fx_rates) + (settings.base_currency,)
    pacer = _Pacer(rate)
    dumps = orjson.dumps
    produced = 0
    size = 0
    last_progress = [time.monotonic()]
    began = time.perf_counter()

    def send(topic: str, key: bytes, value: bytes) -> None:
        nonlocal produced, size
        pacer.take()
        try:
            _produce(producer, topic, key, value)
        except Exception as exc:  # KafkaException, e.g. larger than message.max.bytes
            with lock:
                report.failed += 1
                if len(report.errors) < 10:
                    report.errors.append(f"{topic}: {exc}")
            return
        produced += 1
        size += len(key) + len(value)
        if produced % 10_000 == 0:
            producer.poll(0)
        if progress is not None and (now := time.monotonic()) - last_progress[0] >= 0.2:
            last_progress[0] = now
            progress(produced)

    try:
        for event in events:
            if stop is not None and stop.is_set():
                break
            send(topics[event.topic_kind], event.customer_id.encode(), dumps(event.payload))
            report.sent += 1
            if malformed_share and rng.random() < malformed_share:
                kind = kinds[rng.randrange(len(kinds))]
                topic_kind, key, value = malformed_message(
                    kind, event, settings.max_event_bytes, rng, fx
                )
                send(topics[topic_kind], key, value)
                report.malformed += 1
                report.malformed_by_kind[kind] += 1
    finally:
        left, unreported = _drain(producer, flush_timeout, lambda: report.failed)
        report.seconds = time.perf_counter() - began
        report.bytes = size
        if left:
            report.failed += unreported
            report.errors.append(f"{left} messages still undelivered after {flush_timeout} s; "
                                 f"{left - unreported} purged and kept to send again")
    if progress is not None:
        progress(produced)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m load.generator``: simulate and publish a population; 1 if a delivery failed."""
    parser = argparse.ArgumentParser(prog="python -m load.generator", description=main.__doc__)
    parser.add_argument("--customers", type=int, default=10_000,
                        help="simulated customers (default 10000)")
    parser.add_argument("--days", type=int, default=365,
                        help="days of event time to simulate (default 365)")
    parser.add_argument("--seed", type=int, default=42,
                        help="seed of the simulation: same seed, same events (default 42)")
    parser.add_argument("--start", default="2025-01-01T00:00:00Z", help="RFC 3339 start time")
    parser.add_argument("--rate", type=float, default=0.0, help="messages/s, 0 = unpaced")
    parser.add_argument("--malformed-share", type=float, default=0.0,
                        help="share of extra malformed messages, 0..1, to exercise the "
                             "dead-letter path (default 0)")
    parser.add_argument("--limit", type=int, default=0, help="stop after this many good events")
    parser.add_argument("--bootstrap-servers", help="override KAFKA_BOOTSTRAP_SERVERS")
    parser.add_argument("--to-files", metavar="DIR", default=None,
                        help="write the events to history files in DIR instead of Kafka "
                             "(for `cvm backfill`)")
    parser.add_argument("--format", choices=("csv", "parquet"), default="parquet",
                        help="file format of --to-files")
    args = parser.parse_args(argv)

    settings = Settings.from_env()
    if args.bootstrap_servers:
        settings = dataclasses.replace(settings, kafka_bootstrap_servers=args.bootstrap_servers)
    config = SimConfig(
        n_customers=args.customers, days=args.days, seed=args.seed,
        start=datetime.fromisoformat(args.start),
    )
    events: Iterable[SimEvent] = simulate(config)
    if args.limit:
        events = _take(events, args.limit)
    if args.to_files:
        from load.history_files import write_files

        for path in write_files(events, args.to_files, args.format):
            print(path)
        return 0
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    last = [time.monotonic()]

    def progress(n: int) -> None:
        if time.monotonic() - last[0] >= 5.0:
            last[0] = time.monotonic()
            print(f"... {n:,} messages", file=sys.stderr, flush=True)

    report = publish(
        events, settings, rate=args.rate, malformed_share=args.malformed_share, seed=args.seed,
        progress=progress, stop=stop,
    )
    print(orjson.dumps(report.summary()).decode())
    print(
        f"{report.sent:,} events + {report.malformed:,} malformed in {report.seconds:.1f} s: "
        f"{report.rate:,.0f} events/s, {report.mb_per_s:.2f} MB/s, {report.failed} failed",
        file=sys.stderr,
    )
    return 1 if report.failed else 0


def _take(events: Iterable[SimEvent], limit: int) -> Iterable[SimEvent]:
    for n, event in enumerate(events, 1):
        yield event
        if n >= limit:
            return


if __name__ == "__main__":
    raise SystemExit(main())
