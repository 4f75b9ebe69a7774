"""The profitability ledger of one customer over the whole relationship.

`apply_event(state, event, source)` returns the new state; it never mutates.
`ingest` does the same and also says what happened to the event:

- ``replayed``: the customer already holds the event's offset of its topic
  partition. This is Kafka redelivering what we applied before a crash; it is
  skipped silently, which turns at-least-once delivery into an exactly-once
  effect. Offsets are kept per (topic, partition), because one customer's events
  can arrive on several partitions (a null key, or a producer with another
  partitioner) and offsets of different partitions cannot be compared.
- ``duplicate``: a new offset, but the `event_id` is among the last `window`
  event ids applied to the customer: a producer's retry. Nothing is counted;
  the offset is recorded so a replay of it is a silent skip, and the caller
  dead-letters it.
- ``applied``: everything else.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import ROUND_HALF_EVEN, Decimal
from types import MappingProxyType
from typing import Any, Final, Literal

from stream_app.domain.events import (
    MS_PER_DAY,
    CampaignTouch,
    Event,
    Purchase,
    ServiceContact,
    Source,
)

CONTACT_REASONS: Final = (
    "billing",
    "complaint",
    "technical",
    "cancellation_request",
    "inquiry",
    "other",
)
TOUCH_ACTIONS: Final = (
    "sent",
    "delivered",
    "opened",
    "clicked",
    "converted",
    "unsubscribed",
    "bounced",
)

_EMPTY: Final[MappingProxyType[str, int]] = MappingProxyType({})
_NO_OFFSETS: Final[MappingProxyType[tuple[str, int], int]] = MappingProxyType({})
_EMPTY_F: Final[MappingProxyType[str, float]] = MappingProxyType({})

#: Time constant of the recent-activity counters: an event weighs 1/e after this long.
RECENT_TAU_MS: Final = 30 * MS_PER_DAY
#: Time constant of the fast counters (the keys of `FAST_KEYS`, stored as ``"f_" + key``): 10
#: days. Set against the 30-day counters they show a trend: a rate that rose or fell in the
#: last weeks. One float per key and customer, like the 30-day ones.
FAST_TAU_MS: Final = 10 * MS_PER_DAY
#: Prefix of the fast counters' keys.
FAST_PREFIX: Final = "f_"
#: The counters also kept with the fast time constant.
FAST_KEYS: Final = (
    "orders", "spend", "contacts", "complaints", "cancellation_requests", "unresolved",
    "sentiment", "delivered", "opened", "clicked", "unsubscribed",
)
#: The recent-activity counters kept per customer (exponentially decayed in event time): the
#: 30-day ones, then the fast ones.
RECENT_KEYS: Final = (
    "orders", "spend", "contacts", "complaints", "cancellation_requests", "unresolved",
    "sentiment", "opened", "clicked", "converted", "unsubscribed", "bounced", "delivered",
    *(FAST_PREFIX + k for k in FAST_KEYS),
)
#: Each recent counter with whether it decays with the fast time constant.
_RECENT_SPEEDS: Final = tuple((k, k.startswith(FAST_PREFIX)) for k in RECENT_KEYS)


def _tau(key: str) -> int:
    return FAST_TAU_MS if key.startswith(FAST_PREFIX) else RECENT_TAU_MS


def _bump(counts: MappingProxyType[str, int], key: str) -> MappingProxyType[str, int]:
    new = dict(counts)
    new[key] = new.get(key, 0) + 1
    return MappingProxyType(new)


@dataclass(frozen=True, slots=True)
class CustomerState:
    """What one customer earned and cost the business, and when.

    Money is integer cents of the base currency; times are epoch milliseconds
    of event time.
    """

    customer_id: str
    orders: int = 0
    returns: int = 0
    revenue_c: int = 0
    returned_c: int = 0
    cogs_c: int = 0
    cogs_estimated: int = 0
    service_cost_c: int = 0
    marketing_cost_c: int = 0
    contacts: MappingProxyType[str, int] = field(default_factory=lambda: _EMPTY)
    unresolved: int = 0
    sentiment_sum_m: int = 0
    sentiment_n: int = 0
    touches: MappingProxyType[str, int] = field(default_factory=lambda: _EMPTY)
    first_purchase: int | None = None
    last_purchase: int | None = None
    first_event: int | None = None
    last_event: int | None = None
    acquisition_channel: str | None = None
    last_click_campaign: str | None = None
    last_click_at: int | None = None
    purchase_days: tuple[int, ...] = ()
    recent: MappingProxyType[str, float] = field(default_factory=lambda: _EMPTY_F)
    recent_at: int | None = None
    #: (topic, partition) -> the last offset applied from it.
    offsets: MappingProxyType[tuple[str, int], int] = field(default_factory=lambda: _NO_OFFSETS)
    #: topic -> offset, as records written before offsets were kept per partition hold it.
    legacy_offsets: MappingProxyType[str, int] = field(default_factory=lambda: _EMPTY)
    #: 64-bit hashes (`event_hash`) of the last event ids applied, oldest first.
    event_ids: tuple[int, ...] = ()

    @property
    def contacts_total(self) -> int:
        return sum(self.contacts.values())

    @property
    def gross_margin_c(self) -> int:
        """Revenue net of refunds minus the net cost of goods."""
        return self.revenue_c - self.returned_c - self.cogs_c

    @property
    def net_contribution_c(self) -> int:
        """Gross margin minus cost to serve and marketing cost."""
        return self.gross_margin_c - self.service_cost_c - self.marketing_cost_c

    @property
    def repeat_purchases(self) -> int:
        """Distinct purchase days after the first (the x of BG/NBD)."""
        return max(len(self.purchase_days) - 1, 0)

    def recent_at_time(self, as_of: int) -> dict[str, float]:
        """The decayed recent-activity counters seen from `as_of` (>= `recent_at`)."""
        if self.recent_at is None:
            return dict.fromkeys(RECENT_KEYS, 0.0)
        dt = max(as_of - self.recent_at, 0)
        slow, fast = math.exp(-dt / RECENT_TAU_MS), math.exp(-dt / FAST_TAU_MS)
        get = self.recent.get
        return {k: get(k, 0.0) * (fast if is_fast else slow) for k, is_fast in _RECENT_SPEEDS}

    def has_applied(
        self, source: Source, processed: Mapping[tuple[str, int], int] | None = None
    ) -> bool:
        """Whether the event at `source` is already part of this state.

        A record written before offsets were kept per partition holds one offset
        per topic, of whichever partition its last event came from, so it cannot
        tell by itself. `processed` (the engine's last processed offset of every
        partition) settles it: an event at or below both that topic offset and its
        partition's processed offset was seen by the engine already; anything else
        is applied. Without `processed` the old offsets are not used at all, so an
        event is never dropped on their account.
        """
        tp = (source.topic, source.partition)
        if self.offsets.get(tp, -1) >= source.offset:
            return True
        old = self.legacy_offsets.get(source.topic)
        if old is None or processed is None:
            return False
        return source.offset <= min(old, processed.get(tp, -1))


def add_recent(
    recent: MappingProxyType[str, float],
    recent_at: int | None,
    at: int,
    weights: dict[str, float],
) -> tuple[MappingProxyType[str, float], int]:
    """Add weights at event time `at` to decayed counters kept as of `recent_at`.

    A late event is discounted to the counters' reference time; a newer one moves
    the reference time forward, so the result does not depend on arrival order
    (up to floating-point rounding). Keys with the `FAST_PREFIX` decay with
    `FAST_TAU_MS`, the others with `RECENT_TAU_MS`.

    >>> r, t = add_recent(MappingProxyType({}), None, 0, {"orders": 1.0})
    >>> r, t = add_recent(r, t, RECENT_TAU_MS, {"orders": 1.0})
    >>> round(r["orders"], 4), t == RECENT_TAU_MS
    (1.3679, True)
    """
    if not weights:
        return recent, recent_at if recent_at is not None else at
    new = dict(recent)
    if recent_at is None:
        ref = at
    elif at <= recent_at:
        ref = recent_at
        weights = {k: w * math.exp(-(recent_at - at) / _tau(k)) for k, w in weights.items()}
    else:
        ref = at
        new = {k: v * math.exp(-(at - recent_at) / _tau(k)) for k, v in new.items()}
    for key, w in weights.items():
        new[key] = new.get(key, 0.0) + w
    return MappingProxyType(new), ref


def _recent_weights(event: Event) -> dict[str, float]:
    w = _slow_weights(event)
    for key in FAST_KEYS:
        if key in w:
            w[FAST_PREFIX + key] = w[key]
    return w


def _slow_weights(event: Event) -> dict[str, float]:
    if isinstance(event, Purchase):
        if event.kind != "order":
            return {}
        return {"orders": 1.0, "spend": event.amount_c / 100}
    if isinstance(event, ServiceContact):
        w = {"contacts": 1.0}
        if event.reason == "complaint":
            w["complaints"] = 1.0
        elif event.reason == "cancellation_request":
            w["cancellation_requests"] = 1.0
        if not event.resolved:
            w["unresolved"] = 1.0
        if event.sentiment_m is not None:
            w["sentiment"] = event.sentiment_m / 1000
        return w
    if event.action in ("delivered", "opened", "clicked", "converted", "unsubscribed", "bounced"):
        return {event.action: 1.0}
    return {}


def estimated_cost(amount_c: int, margin_rate: float) -> int:
    """Cost of goods when a purchase does not say, from a default margin rate.

    Exact decimal arithmetic, rounded half to even.

    >>> estimated_cost(10_000, 0.3), estimated_cost(1245, 0.3)
    (7000, 872)
    """
    cost = Decimal(amount_c) * (1 - Decimal(str(margin_rate)))
    return int(cost.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


#: What an event changes in a customer's state: field name -> new value. The three
#: helpers below return it, and `ingest` applies it with the bookkeeping in one `replace`
#: (a `CustomerState` has some thirty fields; copying it once per event instead of twice is
#: a measurable share of the batch step).
Changes = dict[str, Any]


def _purchase_changes(state: CustomerState, p: Purchase, margin_rate: float) -> Changes:
    cost_c = p.cost_c if p.cost_c is not None else estimated_cost(p.amount_c, margin_rate)
    estimated = 0 if p.cost_c is not None else 1
    if p.kind == "return":
        return {
            "returns": state.returns + 1,
            "returned_c": state.returned_c + p.amount_c,
            "cogs_c": state.cogs_c - cost_c,
            "cogs_estimated": state.cogs_estimated + estimated,
        }
    day = p.occurred_at // MS_PER_DAY
    days = state.purchase_days
    i = bisect.bisect_left(days, day)
    if i == len(days) or days[i] != day:
        days = days[:i] + (day,) + days[i:]
    earliest = state.first_purchase is None or p.occurred_at < state.first_purchase
    return {
        "orders": state.orders + 1,
        "revenue_c": state.revenue_c + p.amount_c,
        "cogs_c": state.cogs_c + cost_c,
        "cogs_estimated": state.cogs_estimated + estimated,
        "first_purchase": p.occurred_at if earliest else state.first_purchase,
        "last_purchase": max(p.occurred_at, state.last_purchase or p.occurred_at),
        "acquisition_channel": p.channel if earliest else state.acquisition_channel,
        "purchase_days": days,
    }


def _contact_changes(state: CustomerState, c: ServiceContact) -> Changes:
    return {
        "service_cost_c": state.service_cost_c + c.cost_c,
        "contacts": _bump(state.contacts, c.reason),
        "unresolved": state.unresolved + (0 if c.resolved else 1),
        "sentiment_sum_m": state.sentiment_sum_m + (c.sentiment_m or 0),
        "sentiment_n": state.sentiment_n + (0 if c.sentiment_m is None else 1),
    }


CLICK_ACTIONS: Final = ("clicked", "converted")


def _touch_changes(state: CustomerState, t: CampaignTouch) -> Changes:
    changes: Changes = {
        "marketing_cost_c": state.marketing_cost_c + t.cost_c,
        "touches": _bump(state.touches, t.action),
    }
    if t.action in CLICK_ACTIONS and (
        state.last_click_at is None or t.occurred_at >= state.last_click_at
    ):
        changes["last_click_campaign"] = t.campaign_id
        changes["last_click_at"] = t.occurred_at
    return changes


Outcome = Literal["applied", "replayed", "duplicate"]


def event_hash(event: Event) -> int:
    """A 64-bit hash of the event's type and `event_id`, stable across processes.

    >>> p = Purchase("o-1", "C1", 0, "order", 100, None, "web")
    >>> event_hash(p) == event_hash(replace(p, amount_c=5)), event_hash(p) < 2**64
    (True, True)
    """
    return id_hash(type(event).__name__, event.event_id)


def id_hash(type_name: str, event_id: str) -> int:
    """`event_hash` from the event's type name and id alone (a bulk load has no event objects).

    >>> p = Purchase("o-1", "C1", 0, "order", 100, None, "web")
    >>> id_hash("Purchase", "o-1") == event_hash(p)
    True
    """
    text = f"{type_name}:{event_id}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def ingest(
    state: CustomerState,
    event: Event,
    source: Source,
    default_margin_rate: float = 0.3,
    window: int = 0,
    processed: Mapping[tuple[str, int], int] | None = None,
) -> tuple[CustomerState, Outcome]:
    """Apply `event` read at `source` unless it is a replay or a duplicate.

    `window` is how many recent event ids per customer are remembered (0: none,
    every new offset is applied); `processed` is passed to `has_applied` for
    records in the old offset layout.

    >>> from stream_app.domain.events import Purchase, Source
    >>> p = Purchase("e1", "C1", 86_400_000, "order", 5_000, 3_000, "web")
    >>> s, what = ingest(CustomerState("C1"), p, Source("cvm.purchases", 0, 7), window=8)
    >>> what, s.orders, dict(s.offsets)
    ('applied', 1, {('cvm.purchases', 0): 7})
    >>> ingest(s, p, Source("cvm.purchases", 0, 7), window=8)[1]
    'replayed'
    >>> d, what = ingest(s, p, Source("cvm.purchases", 3, 2), window=8)
    >>> what, d.orders, dict(d.offsets)[("cvm.purchases", 3)]
    ('duplicate', 1, 2)
    """
    if state.has_applied(source, processed):
        return state, "replayed"
    offsets = dict(state.offsets)
    offsets[(source.topic, source.partition)] = source.offset
    h = event_hash(event) if window > 0 else None
    if h is not None and h in state.event_ids[-window:]:
        return replace(state, offsets=MappingProxyType(offsets)), "duplicate"
    if isinstance(event, Purchase):
        changes = _purchase_changes(state, event, default_margin_rate)
    elif isinstance(event, ServiceContact):
        changes = _contact_changes(state, event)
    else:
        changes = _touch_changes(state, event)
    first = state.first_event
    last = state.last_event
    recent, recent_at = add_recent(
        state.recent, state.recent_at, event.occurred_at, _recent_weights(event)
    )
    ids = state.event_ids if h is None else (*state.event_ids, h)[-window:]
    return replace(
        state,
        **changes,
        first_event=event.occurred_at if first is None else min(first, event.occurred_at),
        last_event=event.occurred_at if last is None else max(last, event.occurred_at),
        recent=recent,
        recent_at=recent_at,
        offsets=MappingProxyType(offsets),
        event_ids=ids,
    ), "applied"


def apply_event(
    state: CustomerState,
    event: Event,
    source: Source,
    default_margin_rate: float = 0.3,
    window: int = 0,
) -> CustomerState:
    """Return `state` with `event` applied, or `state` itself if already applied.

    A duplicate `event_id` within `window` returns a state that only records
    the offset (see `ingest`).

    >>> from stream_app.domain.events import Purchase, Source
    >>> p = Purchase("e1", "C1", 86_400_000, "order", 5_000, 3_000, "web")
    >>> s = apply_event(CustomerState("C1"), p, Source("cvm.purchases", 0, 7))
    >>> (s.orders, s.gross_margin_c, s.purchase_days, dict(s.offsets))
    (1, 2000, (1,), {('cvm.purchases', 0): 7})
    >>> apply_event(s, p, Source("cvm.purchases", 0, 7)) is s
    True
    """
    return ingest(state, event, source, default_margin_rate, window)[0]
