"""One batch of raw input records: validate, dead-letter, apply, commit, publish.

This is the worker's hot path without Faust: the agent hands it the records of
a batch and acknowledges their offsets only after `Ingestor.process` returns.
The order of the steps, and what a crash between two of them does, is written
down once, in `stream_app.store.customers`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Protocol

import orjson

from stream_app import history_plan, metrics
from stream_app import offers as product_offers
from stream_app.contract import DUPLICATE_EVENT, Contract, InvalidEvent
from stream_app.domain import products, step
from stream_app.domain.alerts import AlertPolicy
from stream_app.domain.churn import Snapshot
from stream_app.domain.events import (
    MS_PER_DAY,
    Event,
    InvalidEventValue,
    Purchase,
    Source,
    check_time,
    format_time,
    from_message,
    parse_time,
)
from stream_app.domain.ledger import CustomerState
from stream_app.domain.outcomes import WinbackOutcome
from stream_app.domain.retention import (
    Retention,
    RetentionPolicy,
    Scorer,
)
from stream_app.domain.rollups import Increment
from stream_app.domain.rules import DEFAULT_WEIGHTS
from stream_app.domain.tiers import Cuts
from stream_app.domain.valuation import ValueModel, value_states
from stream_app.domain.winback import WinbackPolicy
from stream_app.messages import alert_message, winback_message
from stream_app.planner import plan
from stream_app.settings import Settings
from stream_app.store import feed, shards
from stream_app.store import profiles as profile_codec
from stream_app.store.customers import Change, Committed, CustomerStore, Loaded, StoreError
from stream_app.store.records import retention_of

log = logging.getLogger(__name__)

MAX_COMMIT_ATTEMPTS = 5
#: Tests only: a path; the first commit that puts an alert or trigger in the outbox
#: creates this file and kills the process (SIGKILL) before publishing it.
CRASH_AFTER_COMMIT_ENV = "CVM_TEST_CRASH_AFTER_COMMIT"
# Above this size a dead letter keeps the payload only as base64, not also as text.
TEXT_COPY_LIMIT = 64 * 1024
# A dead letter's Kafka key and its ``key`` field keep at most this many bytes of the key.
DEAD_LETTER_KEY_LIMIT = 1024
# The default of CVM_DEAD_LETTER_MAX_BYTES.
DEAD_LETTER_MAX_BYTES = 1_000_000


@dataclass(frozen=True, slots=True)
class RawRecord:
    """An input message as read from Kafka, before any decoding."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class LiveModel:
    """The models and population cut points a worker currently uses."""

    model: ValueModel = field(default_factory=ValueModel)
    cuts: Cuts = field(default_factory=Cuts)
    scorer: Scorer | None = None
    churn_version: str = "none"
    severity_bands: tuple[float, float, float] | None = None


class Publisher(Protocol):
    """Where training examples, alerts and win-back triggers go; `send` waits for the ack."""

    async def send(self, kind: str, key: bytes, message: dict[str, Any]) -> None: ...


#: Outbox field (``kind:id``) -> (kind, message) of the messages a commit may write.
Outgoing = dict[str, tuple[str, dict[str, Any]]]


@dataclass
class Effects:
    """The messages a batch's decisions produce; the commit writes them (see `customers`)."""

    examples: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    triggers: list[dict[str, Any]] = field(default_factory=list)
    closed: list[WinbackOutcome] = field(default_factory=list)
    #: Events whose `event_id` the customer had applied already: dead-lettered, not counted.
    duplicates: list[tuple[Event, Source]] = field(default_factory=list)


def retention_policy(settings: Settings) -> RetentionPolicy:
    """The retention policy the settings describe."""
    alert = AlertPolicy(
        min_value_tier=settings.alert_min_value_tier,
        value_at_last_order=settings.alert_value_at_last_order,
        churn_threshold=settings.alert_churn_threshold,
        cooldown_days=settings.alert_cooldown_days,
        min_signals=settings.alert_min_signals,
        min_score=settings.alert_min_score,
        max_silence_days=settings.alert_max_silence_days or None,
    )
    if settings.alert_severity_bands is not None:
        alert = replace(alert, severity_bands=settings.alert_severity_bands)
    if settings.alert_weights:
        alert = replace(alert, weights=MappingProxyType(
            {**DEFAULT_WEIGHTS, **settings.alert_weights}))
    return RetentionPolicy(
        horizon_ms=settings.churn_horizon_days * MS_PER_DAY,
        snapshot_gap_ms=round(settings.snapshot_gap_days * MS_PER_DAY),
        lead_ms=settings.churn_lead_days * MS_PER_DAY,
        alert=alert,
        winback=WinbackPolicy(
            p_alive_threshold=settings.winback_p_alive_threshold,
            silence_days=float(settings.churn_horizon_days),
            min_value_tier=settings.alert_min_value_tier,
            control_share=settings.winback_control_share,
        ),
        seed=settings.winback_seed,
    )


def example_message(snap: Snapshot, label: int, labelled_at: int) -> dict[str, Any]:
    """A labelled example for the training topic."""
    return {
        "example_id": f"{snap.customer_id}:{snap.taken_at}",
        "customer_id": snap.customer_id,
        "taken_at": snap.taken_at,
        "labelled_at": labelled_at,
        "label": label,
        "features": dict(snap.features),
    }


class DeadLetterSink(Protocol):
    """Where rejected records go; `send` returns once the broker has them."""

    async def send(self, key: bytes | None, message: dict[str, Any]) -> None: ...


@dataclass
class BatchResult:
    """What one batch did, for metrics and tests."""

    records: int = 0
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    customers: int = 0
    conflicts: int = 0
    dead_letter_codes: dict[str, int] = field(default_factory=dict)


def _count_letter(result: BatchResult, error_code: str, topic: str) -> None:
    metrics.dead_lettered(topic, error_code)
    result.dead_lettered += 1
    result.dead_letter_codes[error_code] = result.dead_letter_codes.get(error_code, 0) + 1


def _maybe_crash(mark: str, outgoing: Outgoing, done: Committed) -> None:
    """The fault injection point of `CRASH_AFTER_COMMIT_ENV` (tests only)."""
    if os.path.exists(mark):
        return
    if any(outgoing[f][0] != "training" for f in done.enqueued):
        with open(mark, "w") as out:
            out.write(",".join(done.enqueued))
        os.kill(os.getpid(), signal.SIGKILL)


def utc_now_iso() -> str:
    """Wall-clock time as RFC 3339 UTC with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def dead_letter_key(record: RawRecord) -> bytes | None:
    """The dead letter's Kafka key: the original key, cut to `DEAD_LETTER_KEY_LIMIT` bytes."""
    if record.key is None:
        return None
    return bytes(record.key[:DEAD_LETTER_KEY_LIMIT])


def dead_letter_message(
    record: RawRecord,
    error_code: str,
    reason: str,
    failed_at: str,
    max_bytes: int = DEAD_LETTER_MAX_BYTES,
) -> dict[str, Any]:
    """The dead-letter message for a rejected record: original bytes and why.

    If the JSON of the message would exceed `max_bytes` (CVM_DEAD_LETTER_MAX_BYTES), the
    payload is cut to the prefix that fits: ``payload_truncated`` is then true and
    ``payload_sha256`` and ``payload_bytes`` describe the whole original payload, so that
    the message can be found again at its source coordinates and checked.
    """
    payload = bytes(record.value or b"")
    key_bytes = None if record.key is None else bytes(record.key)
    key = None if key_bytes is None else key_bytes[:DEAD_LETTER_KEY_LIMIT].decode(
        "utf-8", errors="replace"
    )
    message = {
        "source_topic": record.topic,
        "source_partition": record.partition,
        "source_offset": record.offset,
        "key": key,
        "error_code": error_code,
        "reason": reason,
        "payload_b64": "",
        "payload_text": None,
        "failed_at": failed_at,
        "payload_bytes": len(payload),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "payload_truncated": False,
    }
    if key_bytes is not None and len(key_bytes) > DEAD_LETTER_KEY_LIMIT:
        message["key_truncated"] = True
    envelope = len(orjson.dumps(message))
    text: str | None = None
    if len(payload) <= TEXT_COPY_LIMIT:
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            text = None
    b64_len = 4 * ((len(payload) + 2) // 3)
    text_len = 0 if text is None else len(orjson.dumps(text))
    if envelope + b64_len + text_len <= max_bytes:
        message["payload_b64"] = base64.b64encode(payload).decode("ascii")
        message["payload_text"] = text
        return message
    # Truncated: only base64 (JSON-safe, 4 bytes per 3), of as long a prefix as fits.
    keep = max(max_bytes - envelope, 0) // 4 * 3
    message["payload_b64"] = base64.b64encode(payload[:keep]).decode("ascii")
    message["payload_truncated"] = True
    return message


class Ingestor:
    """Applies batches of raw records to the customer store."""

    def __init__(
        self,
        settings: Settings,
        store: CustomerStore,
        dead_letters: DeadLetterSink,
        contract: Contract | None = None,
        clock: Callable[[], str] = utc_now_iso,
        live: LiveModel | None = None,
        publisher: Publisher | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.live = live or LiveModel()
        self.dead_letters = dead_letters
        self.publisher = publisher
        self.contract = contract or Contract(settings.max_event_bytes)
        self.clock = clock
        self.policy = retention_policy(settings)
        self.history = history_plan.HistoryConfig.from_settings(settings)
        self._banded = self.policy
        # The agent and the timers publish from the same event loop: one at a
        # time, so a drain of the outbox never sends an entry that a batch is
        # sending, or has sent but not yet removed.
        self._publishing = asyncio.Lock()
        # The agent's batches and the rescoring timers read and commit customers one at a
        # time in this worker: otherwise a timer writing a customer between a batch's read
        # and its commit makes the batch lose the compare-and-set and read again. Workers
        # of other processes still meet at the compare-and-set.
        self._writing = asyncio.Lock()
        self._kinds = {topic: settings.topics.kind_of(topic) for topic in settings.topics.inputs}
        # Outbox entries committed before this instance existed are a crash's leftovers.
        self._started_ms = time.time() * 1000
        self._drained_at: float | None = None
        self._crash_mark = os.environ.get(CRASH_AFTER_COMMIT_ENV)
        # The highest event time applied on any input partition, as far as this worker
        # knows (it only grows; read again from Redis when an event seems too far ahead).
        self._highest: int | None = None
        # The product affinity the offers of win-back triggers use, refreshed from Redis
        # every CVM_REFRESH_INTERVAL_S (`refresh_affinity`).
        self.affinity = product_offers.Tables()
        self._affinity_at: float | None = None

    def affinity_due(self) -> bool:
        """Whether `refresh_affinity` would reload: never loaded, or older than the interval."""
        return (self._affinity_at is None
                or time.monotonic() - self._affinity_at >= self.settings.refresh_interval_s)

    async def refresh_affinity(self, force: bool = False) -> None:
        """Reload the merged affinity counters if the last load is older than the interval."""
        if not force and not self.affinity_due():
            return
        mono = time.monotonic()
        self._affinity_at = mono
        self.affinity = await product_offers.load_tables(
            self.store.redis, self.settings, self.store.keys
        )
        if self.affinity.stale:
            await product_offers.drop(self.store.redis, self.store.keys, self.affinity.stale)

    def decision_policy(self) -> RetentionPolicy:
        """The retention policy with the live severity bands, unless configuration fixes them."""
        bands = self.live.severity_bands
        if bands is None or self.settings.alert_severity_bands is not None:
            return self.policy
        # The web thread calls this too: work on a local so the policy returned is the
        # one of the bands read here, whatever the other thread stores meanwhile.
        banded = self._banded
        if banded.alert.severity_bands != bands:
            banded = replace(self.policy, alert=replace(self.policy.alert, severity_bands=bands))
            self._banded = banded
        return banded

    def decode(self, record: RawRecord) -> Event:
        """Turn one raw record into a domain event or raise why it cannot be."""
        kind = self._kinds[record.topic]
        message = self.contract.decode(kind, record.value)
        key = None if record.key is None else record.key.decode("utf-8", errors="replace")
        # A null key, or a partition other than murmur2 of the key gives, is applied like
        # any other message: applied offsets are kept per topic partition. A key naming
        # another customer is a producer bug the contract rejects.
        if key is not None and key != message["customer_id"]:
            raise InvalidEventValue(
                "invalid_value",
                f"key: message key {key!r} differs from customer_id "
                f"{message['customer_id']!r}; inputs must be keyed by customer_id",
            )
        return from_message(kind, message, self.settings.base_currency, self.settings.fx_rates)

    async def highest_watermark(self) -> int | None:
        """The highest event-time watermark over the input partitions, as stored in Redis."""
        raw = await shards.watermarks(self.store.redis, self.store.keys)
        inputs = set(self.settings.topics.inputs)
        marks = [value for (topic, _), value in raw.items() if topic in inputs]
        return max(marks, default=None)

    async def check_event_time(self, event: Event, now_ms: int) -> None:
        """Raise `InvalidEventValue` if the event's time lies outside the accepted window.

        Earliest: CVM_EARLIEST_EVENT_TIME. Latest, in live mode (CVM_WALL_CLOCK_WATERMARK):
        the wall clock `now_ms` plus CVM_MAX_CLOCK_SKEW_S. In event-time mode (a replay or a
        simulation, whose time may be far from the wall clock, before or after it): the
        later of that and the highest watermark of the input partitions plus
        CVM_MAX_EVENT_LEAD_DAYS. Data up to the wall clock may come in any order; data past
        it moves the clock on by at most the lead per step; an event dated centuries ahead
        moves no watermark. An engine that has applied nothing yet takes its first event's
        time as the start of its clock.
        """
        s = self.settings
        t = event.occurred_at
        wall = now_ms + round(s.max_clock_skew_s * 1000)
        skew = f"the wall clock plus CVM_MAX_CLOCK_SKEW_S={s.max_clock_skew_s:g}"
        if s.wall_clock_watermark:
            check_time(t, s.earliest_event_ms, wall, skew)
            return
        check_time(t, s.earliest_event_ms)
        lead = round(s.max_event_lead_days * MS_PER_DAY)
        if t > wall and (self._highest is None or t > self._highest + lead):
            # Too far ahead of what this worker knows, or nothing known yet: other workers
            # may have moved the clock on, so ask Redis before rejecting.
            stored = await self.highest_watermark()
            if stored is not None:
                self._highest = stored if self._highest is None else max(self._highest, stored)
            if self._highest is not None:
                check_time(t, s.earliest_event_ms, max(wall, self._highest + lead),
                           f"the later of {skew} and the highest input watermark "
                           f"{format_time(self._highest)} plus "
                           f"CVM_MAX_EVENT_LEAD_DAYS={s.max_event_lead_days:g}")
        self._highest = t if self._highest is None else max(self._highest, t)

    async def process(self, records: Sequence[RawRecord]) -> BatchResult:
        """Apply a batch; returns only once its effect is durable in Redis and Kafka.

        Steps 1 to 6 of the commit order in `stream_app.store.customers`.
        """
        result = BatchResult(records=len(records))
        started = time.perf_counter()
        now = self.clock()
        now_ms = parse_time(now)
        events: list[tuple[Event, Source]] = []
        raw: dict[Source, RawRecord] = {}
        applied: dict[tuple[str, int], int] = {}
        watermarks: dict[tuple[str, int], int] = {}
        letters = []
        limit = self.settings.dead_letter_max_bytes
        for record in records:
            tp = (record.topic, record.partition)
            applied[tp] = max(applied.get(tp, -1), record.offset)
            try:
                event = self.decode(record)
                await self.check_event_time(event, now_ms)
                watermarks[tp] = max(watermarks.get(tp, event.occurred_at), event.occurred_at)
            except (InvalidEvent, InvalidEventValue) as exc:
                letters.append(self.dead_letters.send(
                    dead_letter_key(record),
                    dead_letter_message(record, exc.error_code, exc.reason, now, limit),
                ))
                _count_letter(result, exc.error_code, record.topic)
                continue
            except Exception as exc:
                # Not the message's fault as far as we know (Redis, a bug): the worker stops
                # or retries; the note names the message for `cvm skip` should it recur.
                exc.add_note(f"while decoding {record.topic}/{record.partition} "
                             f"offset {record.offset}")
                raise
            source = Source(record.topic, record.partition, record.offset)
            raw[source] = record
            events.append((event, source))
        # Every dead letter is acknowledged before the batch's offsets can be committed.
        await asyncio.gather(*letters)
        await self._drain_if_due()
        await self.refresh_affinity()
        rejected: set[Source] = set()
        isolated = await self._commit_events(
            events, applied, watermarks, result, now, raw, rejected
        )
        if isolated:
            # A sum overflowed for a customer with several events in the batch: commit
            # that customer's events one at a time to find the offending ones, and only
            # then the batch's offsets.
            for item in isolated:
                await self._commit_events([item], {}, {}, result, now, raw, rejected)
            await self._commit_events([], applied, watermarks, result, now, raw, rejected)
        metrics.batch_committed(events, result, time.perf_counter() - started)
        return result

    async def _commit_events(
        self,
        events: list[tuple[Event, Source]],
        applied: dict[tuple[str, int], int],
        watermarks: dict[tuple[str, int], int],
        result: BatchResult,
        now: str,
        raw: dict[Source, RawRecord],
        rejected: set[Source],
    ) -> list[tuple[Event, Source]]:
        """Steps 2 to 6 for `events`; returns the events left to commit one at a time."""
        pending = events
        isolated: list[tuple[Event, Source]] = []
        attempts = 0
        while True:
            async with self._writing:
                loaded = await self.store.load_many(e.customer_id for e, _ in pending)
                processed = None
                if any(entry.state.legacy_offsets for entry in loaded.values()):
                    processed = await self.store.applied_offsets()
                changes, counts, effects = self._apply(loaded, pending, now, processed)
                await self.reject_duplicates(effects.duplicates, raw, now, rejected, result)
                changes, outgoing = self._outgoing(changes, effects)
                origins: dict[str, set[int]] = {}
                for event, source in pending:
                    origins.setdefault(event.customer_id, set()).add(source.partition)
                done = await self.store.commit(changes, applied, watermarks, origins)
            if done.overflow is not None:
                # Nothing was written. One event of its customer: it is the offending
                # one. Several: they are retried alone after the rest, and the offsets
                # wait for them.
                cid = done.overflow.customer_id
                mine = [item for item in pending if item[0].customer_id == cid]
                pending = [item for item in pending if item[0].customer_id != cid]
                if len(mine) == 1:
                    await self._dead_letter_overflow(mine[0][1], done, raw, result, now)
                else:
                    isolated += mine
                    applied, watermarks = {}, {}
                continue
            lost = set(done.lost)
            if self._crash_mark:
                _maybe_crash(self._crash_mark, outgoing, done)
            await self.publish(outgoing, done.enqueued)
            for cid, (applied_n, duplicates) in counts.items():
                if cid not in lost:
                    result.applied += applied_n
                    result.duplicates += duplicates
            result.customers += len(changes) - len(lost)
            if not lost:
                return isolated
            attempts += 1
            result.conflicts += len(lost)
            if attempts >= MAX_COMMIT_ATTEMPTS:
                raise StoreError(f"gave up after {MAX_COMMIT_ATTEMPTS} compare-and-set conflicts")
            pending = [(e, s) for e, s in pending if e.customer_id in lost]
            log.warning("%d customers changed under us; reloading them", len(lost))

    async def _dead_letter_overflow(
        self, source: Source, done: Committed, raw: dict[Source, RawRecord],
        result: BatchResult, now: str,
    ) -> None:
        assert done.overflow is not None
        record = raw[source]
        log.warning("dead-lettering %s/%d@%d: %s", record.topic, record.partition,
                    record.offset, done.overflow.reason)
        await self.dead_letters.send(
            dead_letter_key(record),
            dead_letter_message(record, "invalid_value", done.overflow.reason, now,
                                self.settings.dead_letter_max_bytes),
        )
        _count_letter(result, "invalid_value", record.topic)

    async def revisit(self, customer_ids: Sequence[str], watermark: int | None) -> int:
        """Label due snapshots and rescore customers whom event time has passed by.

        Used by the rescoring timers; a customer the agent wrote in between is
        skipped (its write is the fresher one). Without a `watermark` (nothing
        applied yet) each customer is rescored at their own latest event and no
        label is due. Commits and publishes as steps 2 to 6 of
        `stream_app.store.customers` do, without offsets. Returns the customers
        rewritten.
        """
        await self._drain_if_due()
        await self.refresh_affinity()
        async with self._writing:
            loaded = await self.store.load_many(customer_ids)
            states = [entry.state for entry in loaded.values() if entry.version]
            as_of = None if watermark is None else {
                s.customer_id: max(watermark, s.last_event or watermark) for s in states
            }
            now = self.clock()
            changes, effects = self.plan(
                loaded, states, {}, now, as_of=as_of, label_watermark=watermark
            )
            changes, outgoing = self._outgoing(changes, effects)
            while True:
                done = await self.store.commit(changes)
                if done.overflow is None:
                    break
                log.warning("not rescoring: %s", done.overflow.reason)
                changes = [c for c in changes if c.customer_id != done.overflow.customer_id]
        await self.publish(outgoing, done.enqueued)
        metrics.conflicts("rescore", len(done.lost))
        return len(changes) - len(done.lost)

    async def reject_duplicates(
        self,
        duplicates: Sequence[tuple[Event, Source]],
        raw: dict[Source, RawRecord],
        now: str,
        done: set[Source],
        result: BatchResult,
    ) -> None:
        """Dead-letter the duplicate events (each once per batch) before the batch commits.

        The commit then records their offsets as applied, so a replay after a
        crash skips them silently instead of dead-lettering them again.
        """
        sends = []
        for event, source in duplicates:
            if source in done:
                continue
            done.add(source)
            reason = (
                f"event_id: {event.event_id!r} was already applied to customer "
                f"{event.customer_id!r} (a producer retry); not counted again"
            )
            record = raw[source]
            sends.append(self.dead_letters.send(
                dead_letter_key(record),
                dead_letter_message(record, DUPLICATE_EVENT, reason, now,
                                    self.settings.dead_letter_max_bytes),
            ))
            _count_letter(result, DUPLICATE_EVENT, record.topic)
        if sends:
            await asyncio.gather(*sends)

    def _outgoing(self, changes: list[Change], effects: Effects) -> tuple[list[Change], Outgoing]:
        """Attach each customer's messages to its change; the outbox fields to publish."""
        per_customer: dict[str, list[tuple[str, str, bytes]]] = {}
        outgoing: Outgoing = {}
        if self.publisher is not None:
            for kind, messages, id_field in (("training", effects.examples, "example_id"),
                                             ("alert", effects.alerts, "alert_id"),
                                             ("winback", effects.triggers, "trigger_id")):
                for message in messages:
                    ident = message[id_field]
                    per_customer.setdefault(message["customer_id"], []).append(
                        (kind, ident, orjson.dumps(message))
                    )
                    outgoing[feed.outbox_field(kind, ident)] = (kind, message)
        for outcome in effects.closed:
            per_customer.setdefault(outcome.customer_id, []).append(
                ("outcome", outcome.trigger_id, orjson.dumps(asdict(outcome)))
            )
        if not per_customer:
            return changes, outgoing
        return [
            replace(c, messages=per_customer[c.customer_id]) if c.customer_id in per_customer
            else c
            for c in changes
        ], outgoing

    async def publish(self, outgoing: Outgoing, fields: Sequence[str]) -> None:
        """Steps 5 and 6: publish what a commit put in the outbox, then settle it."""
        if self.publisher is None or not fields:
            return
        entries = [outgoing[f] for f in fields]
        async with self._publishing:
            await asyncio.gather(*(
                self.publisher.send(kind, message["customer_id"].encode(), message)
                for kind, message in entries
            ))
            by_shard: dict[int, list[str]] = {}
            keys = self.store.keys
            for name, (_, message) in zip(fields, entries, strict=True):
                by_shard.setdefault(keys.partition_of(message["customer_id"]), []).append(name)
            for partition, names in by_shard.items():
                await self.settle(names, partition)
        metrics.published(entries, ())

    async def settle(self, fields: Sequence[str], partition: int) -> None:
        """Step 6: Kafka has these outbox messages of one input partition's outbox; remove
        them, record the ids published."""
        await feed.settle(self.store.redis, self.store.keys.shard(partition), fields)

    async def drain(self, before_ms: float) -> int:
        """Publish the outbox entries committed before `before_ms` (a crash's leftovers).

        Returns how many were published. At least once: an entry is removed only
        after Kafka's acknowledgement, so a crash in between publishes it again,
        with the same id.
        """
        if self.publisher is None:
            return 0
        redis, keys = self.store.redis, self.store.keys
        published = 0
        async with self._publishing:
            for shard in keys.shards():
                while entries := await feed.due(redis, shard, before_ms):
                    messages = []
                    for name, body in entries:
                        if body is not None:
                            kind, _ = feed.split_field(name)
                            messages.append((kind, orjson.loads(body)))
                    await asyncio.gather(*(
                        self.publisher.send(kind, message["customer_id"].encode(), message)
                        for kind, message in messages
                    ))
                    await self.settle([name for name, _ in entries], shard.partition)
                    metrics.published(messages, ())
                    published += len(messages)
        if published:
            log.info("published %d messages left in the outbox", published)
        return published

    async def drain_due(self) -> None:
        """Publish outbox leftovers now if due: those of an earlier process, then stale ones.

        Called by each batch and by the worker's outbox timer, so an idle worker
        publishes what a crash left behind as well.
        """
        await self._drain_if_due()

    async def _drain_if_due(self) -> None:
        """Drain what an earlier process left at the first call, then every grace period."""
        if self.publisher is None:
            return
        mono = time.monotonic()
        if self._drained_at is None:
            before = self._started_ms
        elif mono - self._drained_at >= feed.OUTBOX_GRACE_S:
            before = time.time() * 1000 - feed.OUTBOX_GRACE_S * 1000
        else:
            return
        self._drained_at = mono
        await self.drain(before)

    def _retention(self, entry: Loaded) -> Retention:
        return retention_of(entry.state.customer_id, entry.fields)

    def _apply(
        self,
        loaded: dict[str, Loaded],
        events: list[tuple[Event, Source]],
        now: str,
        processed: dict[tuple[str, int], int] | None = None,
    ) -> tuple[list[Change], dict[str, tuple[int, int]], Effects]:
        """Apply events in order; return the changes, (applied, replayed) counts, effects.

        The domain step (`step.apply_events`) applies them; this adds what the store
        keeps beside the ledger: the product profiles and affinity counters, and the
        value history's trail. Duplicate event ids come back in `Effects.duplicates`;
        their customers are written too, so that their offsets are recorded.
        `processed` is the engine's applied offset of every partition, needed only
        for records in the old offset layout (`CustomerState.has_applied`).
        """
        applied = step.apply_events(
            {cid: entry.state for cid, entry in loaded.items()},
            lambda cid: self._retention(loaded[cid]),
            events, self.policy, self.settings.default_margin_rate,
            self.settings.event_id_window, processed,
        )
        profiles: dict[str, products.Profile] = {}
        counters: dict[str, list[tuple[str, str, int]]] = {}
        trail = history_plan.Trail(self.history.unit)
        for e in applied.events:
            trail.observe(e.before, e.after, e.event, e.campaign)
            if isinstance(e.event, Purchase) and e.event.items:
                self._apply_products(loaded[e.after.customer_id], e.event, e.source, profiles,
                                     counters)
        changes, effects = self.plan(
            loaded, [applied.states[cid] for cid in applied.changed], applied.increments, now,
            retentions=applied.retentions, labelled=applied.labelled, trail=trail,
            profiles=profiles,
        )
        if profiles:
            changes = [_with_products(c, profiles.get(c.customer_id), loaded[c.customer_id],
                                      counters.get(c.customer_id, ())) for c in changes]
        effects.duplicates = applied.duplicates
        return changes, applied.counts, effects

    def _apply_products(
        self,
        entry: Loaded,
        event: Purchase,
        source: Source,
        profiles: dict[str, products.Profile],
        counters: dict[str, list[tuple[str, str, int]]],
    ) -> None:
        """Update the customer's product profile and the affinity counters for `event`."""
        cid = event.customer_id
        before = profiles.get(cid)
        if before is None:
            before = profile_codec.decode(entry.fields.get(product_offers.PRODUCTS))
        s = self.settings
        after = products.apply(before, event, s.profile_max_categories, s.profile_max_skus)
        profiles[cid] = after
        counters.setdefault(cid, []).extend(product_offers.counter_increments(
            self.store.keys, s, before, after, event, entry.fields.get("rfm_segment"),
            self.store.keys.partition_of(cid),
        ))

    def trigger_offers(
        self, entry: Loaded, profile: products.Profile | None, p_alive: float, t: int
    ) -> list[dict[str, Any]]:
        """The offers a win-back trigger carries: the customer's top CVM_OFFERS_K."""
        if profile is None:
            profile = profile_codec.decode(entry.fields.get(product_offers.PRODUCTS))
        return product_offers.to_messages(product_offers.rank(
            self.affinity, self.settings, profile, entry.fields.get("rfm_segment"), p_alive,
            t // MS_PER_DAY,
        ))

    def plan(
        self,
        loaded: dict[str, Loaded],
        changed: list[CustomerState],
        increments: dict[str, list[Increment]],
        now: str,
        retentions: dict[str, Retention] | None = None,
        labelled: dict[str, list[tuple[Snapshot, int, int]]] | None = None,
        as_of: dict[str, int] | None = None,
        label_watermark: int | None = None,
        trail: history_plan.Trail | None = None,
        profiles: dict[str, products.Profile] | None = None,
    ) -> tuple[list[Change], Effects]:
        """Value and score the changed customers and build their store changes.

        Each customer is valued as of their own latest event unless `as_of`
        says otherwise (the rescoring timer values at the watermark), so the
        stored values do not depend on how events were batched.
        """
        live = self.live
        horizon = float(self.settings.horizon_days)
        as_of = as_of or {}
        retentions = retentions or {}
        labelled = labelled or {}
        outcomes = step.decide_batch(
            [step.Customer(s, retentions.get(s.customer_id) or self._retention(
                loaded[s.customer_id]), as_of.get(s.customer_id, s.last_event or 0))
             for s in changed],
            step.Models(live.model, live.cuts, live.scorer, live.churn_version),
            self.decision_policy(), horizon, label_watermark,
        )
        extra = {"updated_at": now}
        effects = Effects()
        changes: list[history_plan.Item] = []
        for o in outcomes:
            cid, state, valuation, d = o.customer_id, o.customer.state, o.valuation, o.decision
            effects.examples += [example_message(s, y, at)
                                 for s, y, at in (*labelled.get(cid, ()), *o.labelled)]
            if d.alert is not None:
                effects.alerts.append(alert_message(d.alert, now))
            if d.trigger is not None:
                trigger = winback_message(d.trigger, now)
                trigger["offers"] = self.trigger_offers(
                    loaded[cid], (profiles or {}).get(cid), d.trigger.p_alive, o.customer.as_of
                )
                effects.triggers.append(trigger)
            if d.closed is not None:
                effects.closed.append(d.closed)
            change = plan(
                self.store.keys,
                loaded[cid],
                state,
                valuation,
                live.cuts,
                increments.get(cid, ()),
                extra,
                retention=d.retention,
                churn_probability=d.churn_probability,
                tier=o.tier,
                label_due_at=o.label_at,
                rescore_at=o.rescore_at,
            )
            changes.append(history_plan.Item(change, loaded[cid], state, valuation))
        # The value history and the population trends, in the same commit.
        return history_plan.extend_many(
            changes, self.store.keys, live.cuts,
            lambda pairs: value_states(live.model, pairs, horizon), self.history, trail,
        ), effects


def _with_products(
    change: Change,
    profile: products.Profile | None,
    entry: Loaded,
    counters: Sequence[tuple[str, str, int]],
) -> Change:
    """The change plus the customer's new product profile and the affinity counters."""
    if profile is None:
        return change
    packed = profile_codec.encode(profile)
    fields = dict(change.fields)
    if entry.fields.get(product_offers.PRODUCTS, "") != packed:
        fields[product_offers.PRODUCTS] = packed
    return replace(change, fields=fields, increments=[*change.increments, *counters])
