"""One batch of raw input records: validate, dead-letter, apply, commit.

This is the worker's hot path without Faust: the agent hands it the records of
a batch and acknowledges their offsets only after `Ingestor.process` returns,
so Kafka's at-least-once delivery plus the store's applied-offset check give an
exactly-once effect in Redis.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from stream_app import metrics
from stream_app.contract import Contract, InvalidEvent
from stream_app.domain.alerts import (
    AlertPolicy,
    WinbackOutcome,
    WinbackPolicy,
    to_message,
    to_winback_message,
)
from stream_app.domain.churn import Snapshot
from stream_app.domain.events import MS_PER_DAY, Event, InvalidEventValue, Source, from_message
from stream_app.domain.ledger import CustomerState, apply_event
from stream_app.domain.retention import (
    Retention,
    RetentionPolicy,
    Scorer,
    decide,
    label_due,
    observe,
    rescore_due,
)
from stream_app.domain.rollups import Increment, campaign_increments
from stream_app.domain.valuation import ValueModel, value_states
from stream_app.planner import Cuts, plan, value_tier
from stream_app.settings import Settings
from stream_app.store import feed
from stream_app.store.customers import Change, CustomerStore, Loaded, StoreError
from stream_app.store.records import RETENTION, unpack_retention

log = logging.getLogger(__name__)

MAX_COMMIT_ATTEMPTS = 5
# Above this size a dead letter keeps the payload only as base64, not also as text.
TEXT_COPY_LIMIT = 64 * 1024


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


@dataclass
class Effects:
    """What a batch publishes besides its Redis writes."""

    examples: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    triggers: list[dict[str, Any]] = field(default_factory=list)
    closed: list[WinbackOutcome] = field(default_factory=list)


def retention_policy(settings: Settings) -> RetentionPolicy:
    """The retention policy the settings describe."""
    return RetentionPolicy(
        horizon_ms=settings.churn_horizon_days * MS_PER_DAY,
        snapshot_gap_ms=round(settings.snapshot_gap_days * MS_PER_DAY),
        alert=AlertPolicy(
            min_value_tier=settings.alert_min_value_tier,
            churn_threshold=settings.alert_churn_threshold,
            cooldown_days=settings.alert_cooldown_days,
            min_signals=settings.alert_min_signals,
            min_score=settings.alert_min_score,
            **({} if settings.alert_severity_bands is None
               else {"severity_bands": settings.alert_severity_bands}),
        ),
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


def utc_now_iso() -> str:
    """Wall-clock time as RFC 3339 UTC with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def dead_letter_message(
    record: RawRecord, error_code: str, reason: str, failed_at: str
) -> dict[str, Any]:
    """The dead-letter message for a rejected record: original bytes and why."""
    payload = record.value or b""
    text: str | None = None
    if len(payload) <= TEXT_COPY_LIMIT:
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            text = None
    key = None if record.key is None else record.key.decode("utf-8", errors="replace")
    return {
        "source_topic": record.topic,
        "source_partition": record.partition,
        "source_offset": record.offset,
        "key": key,
        "error_code": error_code,
        "reason": reason,
        "payload_b64": base64.b64encode(payload).decode("ascii"),
        "payload_text": text,
        "failed_at": failed_at,
    }


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
        self._banded = self.policy
        # The agent and the timers publish from the same event loop: one at a
        # time, so an alert id is checked, published and recorded before another
        # coroutine can check it.
        self._publishing = asyncio.Lock()
        self._kinds = {topic: settings.topics.kind_of(topic) for topic in settings.topics.inputs}

    def decision_policy(self) -> RetentionPolicy:
        """The retention policy with the live severity bands, unless configuration fixes them."""
        bands = self.live.severity_bands
        if bands is None or self.settings.alert_severity_bands is not None:
            return self.policy
        if self._banded.alert.severity_bands != bands:
            alert = replace(self.policy.alert, severity_bands=bands)
            self._banded = replace(self.policy, alert=alert)
        return self._banded

    def decode(self, record: RawRecord) -> Event:
        """Turn one raw record into a domain event or raise why it cannot be."""
        kind = self._kinds[record.topic]
        message = self.contract.decode(kind, record.value)
        key = None if record.key is None else record.key.decode("utf-8", errors="replace")
        if key is not None and key != message["customer_id"]:
            raise InvalidEventValue(
                "invalid_value",
                f"key: message key {key!r} differs from customer_id "
                f"{message['customer_id']!r}; inputs must be keyed by customer_id",
            )
        return from_message(kind, message, self.settings.base_currency, self.settings.fx_rates)

    async def process(self, records: Sequence[RawRecord]) -> BatchResult:
        """Apply a batch; returns only once its effect is durable in Redis and Kafka."""
        result = BatchResult(records=len(records))
        started = time.perf_counter()
        now = self.clock()
        events: list[tuple[Event, Source]] = []
        applied: dict[tuple[str, int], int] = {}
        watermarks: dict[tuple[str, int], int] = {}
        letters = []
        for record in records:
            tp = (record.topic, record.partition)
            applied[tp] = max(applied.get(tp, -1), record.offset)
            try:
                event = self.decode(record)
                watermarks[tp] = max(watermarks.get(tp, event.occurred_at), event.occurred_at)
            except (InvalidEvent, InvalidEventValue) as exc:
                letters.append(self.dead_letters.send(
                    record.key, dead_letter_message(record, exc.error_code, exc.reason, now)
                ))
                result.dead_lettered += 1
                codes = result.dead_letter_codes
                codes[exc.error_code] = codes.get(exc.error_code, 0) + 1
                metrics.dead_lettered(record.topic, exc.error_code)
                continue
            events.append((event, Source(record.topic, record.partition, record.offset)))
        # Every dead letter is acknowledged before the batch's offsets can be committed.
        await asyncio.gather(*letters)

        pending = events
        for _attempt in range(MAX_COMMIT_ATTEMPTS):
            loaded = await self.store.load_many(e.customer_id for e, _ in pending)
            changes, counts, effects = self._apply(loaded, pending, now)
            await self.publish(effects)
            conflicts = await self.store.commit(changes, applied, watermarks)
            lost = set(conflicts)
            await self.settle(effects, lost)
            for cid, (applied_n, duplicates) in counts.items():
                if cid not in lost:
                    result.applied += applied_n
                    result.duplicates += duplicates
            result.customers += len(changes) - len(lost)
            if not lost:
                metrics.batch_committed(events, result, time.perf_counter() - started)
                return result
            result.conflicts += len(lost)
            pending = [(e, s) for e, s in pending if e.customer_id in lost]
            log.warning("%d customers changed under us; reloading them", len(lost))
        raise StoreError(f"gave up after {MAX_COMMIT_ATTEMPTS} compare-and-set conflicts")

    async def revisit(self, customer_ids: Sequence[str], watermark: int | None) -> int:
        """Label due snapshots and rescore customers whom event time has passed by.

        Used by the rescoring timers; a customer the agent wrote in between is
        skipped (its write is the fresher one). Without a `watermark` (nothing
        applied yet) each customer is rescored at their own latest event and no
        label is due. Returns the customers rewritten.
        """
        loaded = await self.store.load_many(customer_ids)
        states = [entry.state for entry in loaded.values() if entry.version]
        as_of = None if watermark is None else {
            s.customer_id: max(watermark, s.last_event or watermark) for s in states
        }
        now = self.clock()
        changes, effects = self.plan(
            loaded, states, {}, now, as_of=as_of, label_watermark=watermark
        )
        await self.publish(effects)
        lost = set(await self.store.commit(changes))
        metrics.conflicts("rescore", len(lost))
        await self.settle(effects, lost)
        return len(changes) - len(lost)

    async def publish(self, effects: Effects) -> None:
        """Publish examples, alerts and triggers (an alert id already published is skipped)."""
        if self.publisher is None:
            return
        async with self._publishing:
            await self._publish(effects)

    async def _publish(self, effects: Effects) -> None:
        assert self.publisher is not None
        sends = []
        for example in effects.examples:
            sends.append(self.publisher.send("training", example["customer_id"].encode(),
                                             example))
        redis = self.store.redis
        keys = self.store.keys
        entries = [
            *(("alert", m) for m in effects.alerts), *(("winback", m) for m in effects.triggers)
        ]
        ids = [m.get("alert_id") or m["trigger_id"] for _, m in entries]
        seen = await feed.published_among(redis, keys, ids)
        for (kind, message), ident in zip(entries, ids, strict=True):
            if ident not in seen:
                sends.append(self.publisher.send(kind, message["customer_id"].encode(), message))
        if sends:
            await asyncio.gather(*sends)
        metrics.published(entries, seen)
        await feed.push_many(redis, keys, entries)

    async def settle(self, effects: Effects, lost: set[str]) -> None:
        """After a commit: keep the closed win-back outcomes of the customers written."""
        closed = [o for o in effects.closed if o.customer_id not in lost]
        if closed:
            await self.store.redis.hset(
                self.store.keys.winback_outcomes,
                mapping={o.trigger_id: orjson.dumps(asdict(o)) for o in closed},
            )

    def _retention(self, entry: Loaded) -> Retention:
        return unpack_retention(entry.state.customer_id, entry.fields.get(RETENTION, ""))

    def _apply(
        self, loaded: dict[str, Loaded], events: list[tuple[Event, Source]], now: str
    ) -> tuple[list[Change], dict[str, tuple[int, int]], Effects]:
        """Apply events in order; return the changes, (applied, duplicate) counts, effects."""
        states = {cid: entry.state for cid, entry in loaded.items()}
        retentions: dict[str, Retention] = {}
        labelled: dict[str, list[tuple[Snapshot, int, int]]] = {}
        counts: dict[str, tuple[int, int]] = {}
        increments: dict[str, list[Increment]] = {}
        margin = self.settings.default_margin_rate
        for event, source in events:
            cid = event.customer_id
            before = states[cid]
            after = apply_event(before, event, source, margin)
            applied_n, duplicates = counts.get(cid, (0, 0))
            if after is before:
                counts[cid] = (applied_n, duplicates + 1)
                continue
            increments.setdefault(cid, []).extend(campaign_increments(before, event, margin))
            r = retentions.get(cid) or self._retention(loaded[cid])
            retentions[cid], new = observe(r, event, self.policy)
            labelled.setdefault(cid, []).extend((s, y, event.occurred_at) for s, y in new)
            states[cid] = after
            counts[cid] = (applied_n + 1, duplicates)
        changed = [states[cid] for cid, (n, _) in counts.items() if n > 0]
        changes, effects = self.plan(
            loaded, changed, increments, now, retentions=retentions, labelled=labelled
        )
        return changes, counts, effects

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
    ) -> tuple[list[Change], Effects]:
        """Value and score the changed customers and build their store changes.

        Each customer is valued as of their own latest event unless `as_of`
        says otherwise (the rescoring timer values at the watermark), so the
        stored values do not depend on how events were batched.
        """
        live = self.live
        policy = self.decision_policy()
        horizon = float(self.settings.horizon_days)
        as_of = as_of or {}
        retentions = retentions or {}
        labelled = labelled or {}
        when = {s.customer_id: as_of.get(s.customer_id, s.last_event or 0) for s in changed}
        by_id = dict(zip(
            (s.customer_id for s in changed),
            value_states(live.model, [(s, when[s.customer_id]) for s in changed], horizon),
            strict=True,
        ))
        extra = {"updated_at": now}
        effects = Effects()
        changes = []
        for state in changed:
            cid = state.customer_id
            valuation = by_id.get(cid)
            t = when[cid]
            r = retentions.get(cid) or self._retention(loaded[cid])
            new_labels = list(labelled.get(cid, ()))
            if label_watermark is not None:
                r, due = label_due(r, label_watermark, self.policy)
                new_labels += [(snap, y, label_watermark) for snap, y in due]
            tier = 0 if valuation is None else value_tier(valuation, live.cuts)
            d = decide(r, state, valuation, tier, t, policy, live.scorer, live.churn_version)
            effects.examples += [example_message(s, y, at) for s, y, at in new_labels]
            if d.alert is not None:
                effects.alerts.append(to_message(d.alert, now))
            if d.trigger is not None:
                effects.triggers.append(to_winback_message(d.trigger, now))
            if d.closed is not None:
                effects.closed.append(d.closed)
            due_at = d.retention.label_due
            changes.append(plan(
                self.store.keys,
                loaded[cid],
                state,
                valuation,
                live.cuts,
                increments.get(cid, ()),
                extra,
                retention=d.retention,
                churn_probability=d.churn_probability,
                tier=tier,
                label_due_at=None if due_at is None else due_at + self.policy.horizon_ms,
                rescore_at=rescore_due(d.retention, tier, t, self.policy),
            ))
        return changes, effects
