"""Shared pieces of the end-to-end tests: ground truth, Redis and Kafka probes, publishing.

The ground truth here is computed straight from the published messages with `Decimal`
and `datetime`, without the engine's domain code, so a test that compares it with the
Redis records checks the engine rather than restating it.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import redis
from confluent_kafka import (
    Consumer,
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from load.generator import PublishReport, publish_again
from load.generator import publish as publish_events
from load.simulator import SimEvent
from stream_app.connections import sync_redis
from stream_app.settings import Settings
from stream_app.store.keys import Keys, Shard

CONTACT_REASONS = ("billing", "complaint", "technical", "cancellation_request", "inquiry", "other")
TOUCH_ACTIONS = ("sent", "delivered", "opened", "clicked", "converted", "unsubscribed", "bounced")
#: Every customer record of the v2 layout (`stream_app.store.keys`), whatever its partition.
CUSTOMER_PATTERN = "cvm:{p*}:customer:*"
#: The engine's shards at the tests' partition count (CVM_PARTITIONS=4).
KEYS = Keys()
CENT = Decimal("0.01")

MONEY_FIELDS = (
    "revenue", "refunds", "cost_of_goods", "gross_margin", "cost_to_serve", "marketing_cost",
    "net_contribution",
)
COUNT_FIELDS = (
    "orders", "returns", "cost_of_goods_estimated", "contacts", "unresolved_contacts",
    "repeat_purchases",
    *(f"contacts.{r}" for r in CONTACT_REASONS),
    *(f"touches.{a}" for a in TOUCH_ACTIONS),
)
TIME_FIELDS = ("first_purchase_at", "last_purchase_at", "first_event_at", "last_event_at")


# -- ground truth -----------------------------------------------------------------------------


def money(x: float | int) -> Decimal:
    """A JSON amount as exact cents, rounded half to even."""
    return Decimal(str(x)).quantize(CENT, rounding=ROUND_HALF_EVEN)


def moment(text: str) -> datetime:
    """An RFC 3339 time as an aware UTC datetime, truncated to the millisecond."""
    t = datetime.fromisoformat(text).astimezone(UTC)
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


@dataclass
class Truth:
    """What one customer's record must say."""

    money: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    times: dict[str, datetime | None] = field(default_factory=lambda: dict.fromkeys(TIME_FIELDS))
    purchase_days: set[date] = field(default_factory=set)


def ground_truth(events: Iterable[SimEvent], margin_rate: float) -> dict[str, Truth]:
    """Per-customer totals from the published messages; see `Truth`.

    A purchase without ``cost`` has cost ``amount * (1 - margin_rate)``, rounded half to even
    to the cent. Returns refund the amount and take the cost back out of the cost of goods;
    only orders are purchases (first/last purchase, purchase days).
    """
    keep = Decimal(1) - Decimal(str(margin_rate))
    truth: dict[str, Truth] = defaultdict(Truth)
    for event in events:
        m = event.payload
        t = truth[m["customer_id"]]
        when = moment(m["occurred_at"])
        for name, pick in (("first_event_at", min), ("last_event_at", max)):
            old = t.times[name]
            t.times[name] = when if old is None else pick(old, when)
        if event.topic_kind == "purchase":
            amount = money(m["amount"])
            if "cost" in m:
                cost = money(m["cost"])
            else:
                cost = (amount * keep).quantize(CENT, rounding=ROUND_HALF_EVEN)
                t.counts["cost_of_goods_estimated"] += 1
            if m["kind"] == "order":
                t.counts["orders"] += 1
                t.money["revenue"] += amount
                t.money["cost_of_goods"] += cost
                t.purchase_days.add(when.date())
                for name, pick in (("first_purchase_at", min), ("last_purchase_at", max)):
                    old = t.times[name]
                    t.times[name] = when if old is None else pick(old, when)
            else:
                t.counts["returns"] += 1
                t.money["refunds"] += amount
                t.money["cost_of_goods"] -= cost
        elif event.topic_kind == "service_contact":
            t.counts["contacts"] += 1
            t.counts[f"contacts.{m['reason']}"] += 1
            t.counts["unresolved_contacts"] += 0 if m["resolved"] else 1
            t.money["cost_to_serve"] += money(m["cost"])
        else:
            t.counts[f"touches.{m['action']}"] += 1
            t.money["marketing_cost"] += money(m["cost"])
    for t in truth.values():
        mo = t.money
        mo["gross_margin"] = mo["revenue"] - mo["refunds"] - mo["cost_of_goods"]
        mo["net_contribution"] = mo["gross_margin"] - mo["cost_to_serve"] - mo["marketing_cost"]
        t.counts["repeat_purchases"] = max(len(t.purchase_days) - 1, 0)
    return dict(truth)


def field_diffs(truth: Truth, got: Mapping[str, str]) -> list[tuple[str, Any, Any]]:
    """(field, want, got) for every public field of a record that differs from `truth`."""
    diffs: list[tuple[str, Any, Any]] = []
    for name in MONEY_FIELDS:
        want = truth.money.get(name, Decimal(0))
        raw = got.get(name)
        if raw is None or Decimal(raw) != want:
            diffs.append((name, str(want.quantize(CENT)), raw))
    for name in COUNT_FIELDS:
        want_n = truth.counts.get(name, 0)
        raw = got.get(name, "0")
        if int(raw) != want_n:
            diffs.append((name, want_n, raw))
    for name in TIME_FIELDS:
        want_t = truth.times[name]
        raw = got.get(name)
        if (raw is None) != (want_t is None) or (raw is not None and moment(raw) != want_t):
            diffs.append((name, None if want_t is None else want_t.isoformat(), raw))
    known = set(COUNT_FIELDS)
    for name, raw in got.items():
        if name.startswith(("contacts.", "touches.")) and name not in known:
            diffs.append((name, None, raw))
    return diffs


def mismatches(
    client: redis.Redis, truth: Mapping[str, Truth], chunk: int = 1000
) -> dict[str, list[tuple[str, Any, Any]]]:
    """Customers whose Redis record differs from `truth`, with field-level diffs.

    A customer missing from Redis shows as one diff on the field ``(record)``.
    """
    out: dict[str, list[tuple[str, Any, Any]]] = {}
    ids = sorted(truth)
    for lo in range(0, len(ids), chunk):
        part = ids[lo : lo + chunk]
        with client.pipeline(transaction=False) as pipe:
            for cid in part:
                pipe.hgetall(KEYS.customer(cid))
            rows = pipe.execute()
        for cid, got in zip(part, rows, strict=True):
            if not got:
                out[cid] = [("(record)", "present", None)]
                continue
            diffs = field_diffs(truth[cid], got)
            if diffs:
                out[cid] = diffs
    return out


def describe_mismatches(bad: Mapping[str, list[tuple[str, Any, Any]]], n: int = 8) -> str:
    """The first `n` mismatching customers, one field diff per line."""
    lines = [f"{len(bad)} customers differ from the ground truth; the first {min(n, len(bad))}:"]
    for cid in list(bad)[:n]:
        lines.append(f"  {cid}:")
        lines.extend(f"    {name}: want {want!r}, got {got!r}" for name, want, got in bad[cid])
    return "\n".join(lines)


# -- Redis ------------------------------------------------------------------------------------

CLAIM_KEY = "cvm-test:claimed-by"


@contextmanager
def own_redis_db(settings: Settings, first: int = 10, last: int = 15) -> Iterator[Settings]:
    """`settings` with a Redis database of its own, claimed for the test and emptied after.

    The shared ``settings`` fixture gives every test database 9 and flushes it at setup and
    teardown, so a test that runs for minutes is at the mercy of any other session's test.
    This claims the first empty database in ``first..last`` with ``SET NX`` (one key, left
    there until the end) and hands back settings that point the worker at it.
    """
    if settings.redis_cluster:  # a cluster of the session's own, with only database 0
        try:
            yield settings
        finally:
            with closing(sync_redis(settings)) as cluster:
                cluster.flushdb()
        return
    base = settings.redis_url.rsplit("/", 1)[0]
    for db in range(first, last + 1):
        client = redis.Redis.from_url(f"{base}/{db}")
        if client.set(CLAIM_KEY, settings.app_id, nx=True, ex=3600):
            if client.dbsize() == 1:
                break
            client.delete(CLAIM_KEY)
        client.close()
    else:
        raise RuntimeError(f"no empty Redis database in {first}..{last} to claim")
    try:
        yield dataclasses.replace(settings, redis_url=f"{base}/{db}")
    finally:
        client.flushdb()
        client.close()


class NoDeadLetters:
    """A dead-letter sink for tests whose every event is valid: one sent fails the test."""

    async def send(self, key: bytes | None, message: dict[str, Any]) -> None:
        raise AssertionError(f"dead-lettered: {message}")


def applied_offsets(client: redis.Redis) -> dict[str, int]:
    """The engine's applied offsets: ``"topic/partition"`` -> last applied offset."""
    return {
        (k.decode() if isinstance(k, bytes) else k): int(v)
        for shard in KEYS.shards() for k, v in client.hgetall(shard.applied).items()
    }


def watermarks(client: redis.Redis) -> dict[str, int]:
    """The engine's watermarks: ``"topic/partition"`` -> event time (ms)."""
    return {
        (k.decode() if isinstance(k, bytes) else k): int(v)
        for shard in KEYS.shards() for k, v in client.hgetall(shard.watermarks).items()
    }


def customer_ids(client: redis.Redis) -> set[str]:
    """The ids of every customer record in Redis."""
    return {KEYS.customer_id(k) for k in client.scan_iter(match=CUSTOMER_PATTERN, count=1000)}


def merged_hash(client: redis.Redis, key: Callable[[Shard], str]) -> dict[str, int]:
    """A roll-up's or histogram's shares of every partition added up, as readers do."""
    out: dict[str, int] = {}
    for shard in KEYS.shards():
        for k, v in client.hgetall(key(shard)).items():
            name = k.decode() if isinstance(k, bytes) else k
            out[name] = out.get(name, 0) + int(v)
    return out


def rank_scores(client: redis.Redis, rank: str) -> list[float]:
    """Every score of a rank set over all partitions, lowest first."""
    return sorted(score for shard in KEYS.shards()
                  for _, score in client.zrange(shard.rank(rank), 0, -1, withscores=True))


def applied_count(client: redis.Redis) -> int:
    """How many input records the applied offsets cover (offsets start at 0)."""
    return sum(offset + 1 for offset in applied_offsets(client).values())


def count_customers(client: redis.Redis) -> int:
    return sum(1 for _ in client.scan_iter(match=CUSTOMER_PATTERN, count=1000))


# -- Kafka ------------------------------------------------------------------------------------


def partition_ends(settings: Settings, topics: Iterable[str]) -> dict[str, int]:
    """Each partition's high watermark (one past its last offset) as ``"topic/partition"``."""
    consumer = Consumer({
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "group.id": f"{settings.app_id}-probe",
        "enable.auto.commit": False,
    })
    try:
        ends: dict[str, int] = {}
        for topic in topics:
            for p in range(settings.partitions):
                _low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                ends[f"{topic}/{p}"] = high
        return ends
    finally:
        consumer.close()


def last_offsets(settings: Settings) -> dict[str, int]:
    """The last offset of every non-empty input partition, as the applied offsets name them."""
    ends = partition_ends(settings, settings.topics.inputs)
    return {tp: high - 1 for tp, high in ends.items() if high > 0}


def committed_offsets(settings: Settings) -> dict[str, int]:
    """The worker group's committed offsets (next offset to read) of every input partition."""
    # log_level 4: without it librdkafka prints an info line about its background queue
    # every time an admin client is destroyed.
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers, "log_level": 4})
    request = ConsumerGroupTopicPartitions(settings.app_id)
    future = admin.list_consumer_group_offsets([request])[settings.app_id]
    result = future.result(timeout=10)
    return {
        f"{tp.topic}/{tp.partition}": tp.offset
        for tp in result.topic_partitions
        if tp.offset >= 0 and tp.topic in settings.topics.inputs
    }


def event_coordinates(
    settings: Settings, customers: Iterable[str], limit: int = 200_000
) -> dict[str, list[tuple[str, int, int]]]:
    """Where each of `customers`' input events sits in Kafka: ``(topic, partition, offset)``.

    Read with a throwaway consumer from the start of every input partition; for
    explaining a mismatch after a fault, not for checking one.
    """
    wanted = {c.encode() for c in customers}
    out: dict[str, list[tuple[str, int, int]]] = {c: [] for c in customers}
    ends = partition_ends(settings, settings.topics.inputs)
    consumer = Consumer({
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "group.id": f"{settings.app_id}-locate",
        "enable.auto.commit": False,
    })
    try:
        consumer.assign([TopicPartition(t, p, 0) for t in settings.topics.inputs
                         for p in range(settings.partitions)])
        remaining = {tp for tp, high in ends.items() if high > 0}
        seen = 0
        while remaining and seen < limit:
            msg = consumer.poll(5)
            if msg is None:
                break
            if msg.error():
                continue
            seen += 1
            tp = f"{msg.topic()}/{msg.partition()}"
            if msg.key() in wanted:
                out[msg.key().decode()].append((msg.topic(), msg.partition(), msg.offset()))
            if msg.offset() >= ends[tp] - 1:
                remaining.discard(tp)
        return out
    finally:
        consumer.close()


def delete_worker_topics(settings: Settings) -> None:
    """Delete the topics a worker of `settings` creates by itself (Faust's leader topic).

    The ``settings`` fixture deletes the six topics it created but not this one.
    """
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers, "log_level": 4})
    leader = f"{settings.app_id}-__assignor-__leader"
    if leader in admin.list_topics(timeout=10).topics:
        for future in admin.delete_topics([leader], operation_timeout=30).values():
            future.result(timeout=30)


# -- events -----------------------------------------------------------------------------------


@dataclass
class LateStats:
    """How many purchases `with_late_purchases` sent behind a later event of their customer."""

    late: int = 0
    first_orders_late: int = 0
    max_days: float = 0.0


def with_late_purchases(
    events: Iterable[SimEvent],
    rng: random.Random,
    share: float = 0.03,
    first_order_share: float = 0.10,
    min_days: float = 2.0,
    stats: LateStats | None = None,
) -> Iterator[SimEvent]:
    """Hold back some purchases until their customer has a later event at least `min_days` on.

    The simulator yields events in event-time order; this sends a held purchase right after
    the first event of the same customer that is `min_days` or more younger, so it arrives
    late and out of order. Customers' acquisition orders are held more often
    (`first_order_share`): when they arrive, first_purchase_at moves back in time.
    """
    stats = stats if stats is not None else LateStats()
    held: dict[str, list[tuple[SimEvent, bool]]] = {}
    seen: set[str] = set()
    for event in events:
        cid = event.customer_id
        first = cid not in seen
        seen.add(cid)
        if event.topic_kind == "purchase" and rng.random() < (
            first_order_share if first else share
        ):
            held.setdefault(cid, []).append((event, first))
            continue
        yield event
        waiting = held.get(cid)
        if not waiting:
            continue
        still: list[tuple[SimEvent, bool]] = []
        for old, was_first in waiting:
            days = (event.occurred_at - old.occurred_at).total_seconds() / 86_400
            if days >= min_days:
                stats.late += 1
                stats.first_orders_late += was_first
                stats.max_days = max(stats.max_days, days)
                yield old
            else:
                still.append((old, was_first))
        held[cid] = still
    for waiting in held.values():
        for old, _ in waiting:
            yield old


#: How long `BackgroundPublisher`'s first producer waits for one message's delivery.
DELIVERY_TIMEOUT_S = 60.0


class BackgroundPublisher:
    """`load.generator.publish` in a thread, so the worker can be killed mid-stream."""

    def __init__(self, events: list[SimEvent], settings: Settings, rate: float) -> None:
        self.events = events
        self.settings = settings
        self.rate = rate
        self.report: PublishReport | None = None
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.began = 0.0
        self.ended = 0.0
        self.produced = 0
        self.resent = 0
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)

    def _run(self) -> None:
        self.began = time.monotonic()

        def produced(n: int) -> None:
            self.produced = n

        try:
            # A broker restarted under an idempotent producer may take minutes to hand out
            # a new producer id (its coordinator reloads its log): wait for the last
            # deliveries that long rather than the default minute.
            # librdkafka can also lose a restarted broker from its cache for good ("new
            # leader-1 not found in cache"): the messages of its partitions then wait for
            # their delivery timeout (5 minutes by default) however the broker does. So a
            # message gets DELIVERY_TIMEOUT_S, more than a broker's restart takes here,
            # and what timed out goes again through a new producer, as a producing
            # application would send it (the engine counts an event id it has already
            # applied once); that one waits the full flush timeout.
            report = publish_events(self.events, self.settings, rate=self.rate,
                                    progress=produced, stop=self.stop, flush_timeout=300.0,
                                    delivery_timeout=DELIVERY_TIMEOUT_S)
            if report.undelivered and not self.stop.is_set():
                again = publish_again(report.undelivered, self.settings, flush_timeout=300.0)
                report.errors.append(f"{len(report.undelivered)} sent again, {again} failed")
                report.failed -= len(report.undelivered) - again
                self.resent = len(report.undelivered)
            self.report = report
        except BaseException as exc:  # handed to the test thread by `join`
            self.error = exc
        finally:
            self.ended = time.monotonic()

    def start(self) -> None:
        self._thread.start()

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def status(self) -> str:
        """How far the publisher is, for a test's account of its steps."""
        state = "done" if self.done else "running"
        again = f", {self.resent} sent again" if self.resent else ""
        return (f"publisher {state}, {self.produced} of {len(self.events)} events produced"
                f"{again}")

    def join(self, timeout: float = 300) -> PublishReport:
        """Wait for the last delivery; raise what the thread raised or a failed delivery."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.stop.set()
            raise TimeoutError(f"publishing did not finish within {timeout} s")
        if self.error is not None:
            raise self.error
        assert self.report is not None
        if self.report.failed or self.report.sent != len(self.events):
            raise AssertionError(f"publishing failed: {self.report.summary()}")
        return self.report


def log_problems(text: str, n: int = 20) -> str:
    """The first `n` distinct WARNING/ERROR/CRITICAL lines of a worker log, without timestamps."""
    seen: dict[str, None] = {}
    for line in text.splitlines():
        if "[WARNING]" in line or "[ERROR]" in line or "[CRITICAL]" in line:
            seen.setdefault(line.split("] ", 2)[-1][:200], None)
    return "\n".join(list(seen)[:n])


def group_state(settings: Settings) -> ConsumerGroupState | None:
    """The state of the workers' consumer group as the broker reports it; None if it will not."""
    admin = AdminClient(settings.kafka_config())  # kept until the answer
    (future,) = admin.describe_consumer_groups([settings.app_id]).values()
    try:
        state: ConsumerGroupState = future.result(timeout=10).state
    except KafkaException:
        return None
    return state
