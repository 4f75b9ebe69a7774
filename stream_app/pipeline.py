"""One batch of raw input records: validate, dead-letter, apply, commit.

This is the worker's hot path without Faust: the agent hands it the records of
a batch and acknowledges their offsets only after `Ingestor.process` returns,
so Kafka's at-least-once delivery plus the store's applied-offset check give an
exactly-once effect in Redis.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from stream_app.contract import Contract, InvalidEvent
from stream_app.domain.events import Event, InvalidEventValue, Source, from_message
from stream_app.domain.ledger import CustomerState, apply_event
from stream_app.domain.rollups import Increment, campaign_increments
from stream_app.domain.valuation import ValueModel, history, value_many
from stream_app.planner import Cuts, plan
from stream_app.settings import Settings
from stream_app.store.customers import Change, CustomerStore, Loaded, StoreError

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
    """The value model and population cut points a worker currently uses."""

    model: ValueModel = field(default_factory=ValueModel)
    cuts: Cuts = field(default_factory=Cuts)


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
    ) -> None:
        self.settings = settings
        self.store = store
        self.live = live or LiveModel()
        self.dead_letters = dead_letters
        self.contract = contract or Contract(settings.max_event_bytes)
        self.clock = clock
        self._kinds = {topic: settings.topics.kind_of(topic) for topic in settings.topics.inputs}

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
        now = self.clock()
        events: list[tuple[Event, Source]] = []
        applied: dict[tuple[str, int], int] = {}
        watermarks: dict[tuple[str, int], int] = {}
        for record in records:
            tp = (record.topic, record.partition)
            applied[tp] = max(applied.get(tp, -1), record.offset)
            try:
                event = self.decode(record)
                watermarks[tp] = max(watermarks.get(tp, event.occurred_at), event.occurred_at)
            except (InvalidEvent, InvalidEventValue) as exc:
                await self.dead_letters.send(
                    record.key, dead_letter_message(record, exc.error_code, exc.reason, now)
                )
                result.dead_lettered += 1
                codes = result.dead_letter_codes
                codes[exc.error_code] = codes.get(exc.error_code, 0) + 1
                continue
            events.append((event, Source(record.topic, record.partition, record.offset)))

        pending = events
        for _attempt in range(MAX_COMMIT_ATTEMPTS):
            loaded = await self.store.load_many(e.customer_id for e, _ in pending)
            changes, counts = self._apply(loaded, pending, now)
            conflicts = await self.store.commit(changes, applied, watermarks)
            lost = set(conflicts)
            for cid, (applied_n, duplicates) in counts.items():
                if cid not in lost:
                    result.applied += applied_n
                    result.duplicates += duplicates
            result.customers += len(changes) - len(lost)
            if not lost:
                return result
            result.conflicts += len(lost)
            pending = [(e, s) for e, s in pending if e.customer_id in lost]
            log.warning("%d customers changed under us; reloading them", len(lost))
        raise StoreError(f"gave up after {MAX_COMMIT_ATTEMPTS} compare-and-set conflicts")

    def _apply(
        self, loaded: dict[str, Loaded], events: list[tuple[Event, Source]], now: str
    ) -> tuple[list[Change], dict[str, tuple[int, int]]]:
        """Apply events in order; return the changes and (applied, duplicate) counts."""
        states = {cid: entry.state for cid, entry in loaded.items()}
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
            states[cid] = after
            counts[cid] = (applied_n + 1, duplicates)
        changed = [states[cid] for cid, (n, _) in counts.items() if n > 0]
        return self.plan(loaded, changed, increments, now), counts

    def plan(
        self,
        loaded: dict[str, Loaded],
        changed: list[CustomerState],
        increments: dict[str, list[Increment]],
        now: str,
    ) -> list[Change]:
        """Value the changed customers (vectorised) and build their store changes.

        Each customer is valued as of their own latest event, so the stored
        values do not depend on how events were batched; lookups revalue at the
        engine's watermark.
        """
        live = self.live
        horizon = float(self.settings.horizon_days)
        valued: list[CustomerState] = []
        histories = []
        for state in changed:
            h = history(state, state.last_event or 0, live.model.default_margin_rate)
            if h is not None:
                valued.append(state)
                histories.append(h)
        as_of = [s.last_event or 0 for s in valued]
        by_id = dict(zip(
            (s.customer_id for s in valued),
            value_many(live.model, histories, horizon, as_of),
            strict=True,
        ))
        extra = {"updated_at": now}
        return [
            plan(
                self.store.keys,
                loaded[s.customer_id],
                s,
                by_id.get(s.customer_id),
                live.cuts,
                increments.get(s.customer_id, ()),
                extra,
            )
            for s in changed
        ]
