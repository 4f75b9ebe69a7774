"""The profitability ledger of one customer over the whole relationship.

`apply_event(state, event, source)` returns the new state; it never mutates.
Events a customer already had applied (by the offset of their source topic) are
skipped, which is what turns Kafka's at-least-once delivery into an
exactly-once effect. Events of one customer and one topic always come from one
partition (inputs are keyed by customer id), so "offset already applied" is a
total order per (customer, topic).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field, replace
from decimal import ROUND_HALF_EVEN, Decimal
from types import MappingProxyType
from typing import Final

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
_EMPTY_F: Final[MappingProxyType[str, float]] = MappingProxyType({})

#: Time constant of the recent-activity counters: an event weighs 1/e after this long.
RECENT_TAU_MS: Final = 30 * MS_PER_DAY
#: The recent-activity counters kept per customer (exponentially decayed in event time).
RECENT_KEYS: Final = (
    "orders", "spend", "contacts", "complaints", "cancellation_requests", "unresolved",
    "sentiment", "opened", "clicked", "converted", "unsubscribed", "bounced",
)


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
    offsets: MappingProxyType[str, int] = field(default_factory=lambda: _EMPTY)

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
        factor = math.exp(-max(as_of - self.recent_at, 0) / RECENT_TAU_MS)
        return {k: self.recent.get(k, 0.0) * factor for k in RECENT_KEYS}

    def has_applied(self, source: Source) -> bool:
        """Whether the event at `source` is already part of this state."""
        return self.offsets.get(source.topic, -1) >= source.offset


def add_recent(
    recent: MappingProxyType[str, float],
    recent_at: int | None,
    at: int,
    weights: dict[str, float],
) -> tuple[MappingProxyType[str, float], int]:
    """Add weights at event time `at` to decayed counters kept as of `recent_at`.

    A late event is discounted to the counters' reference time; a newer one moves
    the reference time forward, so the result does not depend on arrival order
    (up to floating-point rounding).

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
        factor = math.exp(-(recent_at - at) / RECENT_TAU_MS)
        weights = {k: w * factor for k, w in weights.items()}
    else:
        ref = at
        factor = math.exp(-(at - recent_at) / RECENT_TAU_MS)
        new = {k: v * factor for k, v in new.items()}
    for key, w in weights.items():
        new[key] = new.get(key, 0.0) + w
    return MappingProxyType(new), ref


def _recent_weights(event: Event) -> dict[str, float]:
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
    if event.action in ("opened", "clicked", "converted", "unsubscribed", "bounced"):
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


def _apply_purchase(state: CustomerState, p: Purchase, margin_rate: float) -> CustomerState:
    cost_c = p.cost_c if p.cost_c is not None else estimated_cost(p.amount_c, margin_rate)
    estimated = 0 if p.cost_c is not None else 1
    if p.kind == "return":
        return replace(
            state,
            returns=state.returns + 1,
            returned_c=state.returned_c + p.amount_c,
            cogs_c=state.cogs_c - cost_c,
            cogs_estimated=state.cogs_estimated + estimated,
        )
    day = p.occurred_at // MS_PER_DAY
    days = state.purchase_days
    i = bisect.bisect_left(days, day)
    if i == len(days) or days[i] != day:
        days = days[:i] + (day,) + days[i:]
    earliest = state.first_purchase is None or p.occurred_at < state.first_purchase
    return replace(
        state,
        orders=state.orders + 1,
        revenue_c=state.revenue_c + p.amount_c,
        cogs_c=state.cogs_c + cost_c,
        cogs_estimated=state.cogs_estimated + estimated,
        first_purchase=p.occurred_at if earliest else state.first_purchase,
        last_purchase=max(p.occurred_at, state.last_purchase or p.occurred_at),
        acquisition_channel=p.channel if earliest else state.acquisition_channel,
        purchase_days=days,
    )


def _apply_contact(state: CustomerState, c: ServiceContact) -> CustomerState:
    return replace(
        state,
        service_cost_c=state.service_cost_c + c.cost_c,
        contacts=_bump(state.contacts, c.reason),
        unresolved=state.unresolved + (0 if c.resolved else 1),
        sentiment_sum_m=state.sentiment_sum_m + (c.sentiment_m or 0),
        sentiment_n=state.sentiment_n + (0 if c.sentiment_m is None else 1),
    )


CLICK_ACTIONS: Final = ("clicked", "converted")


def _apply_touch(state: CustomerState, t: CampaignTouch) -> CustomerState:
    new = replace(
        state,
        marketing_cost_c=state.marketing_cost_c + t.cost_c,
        touches=_bump(state.touches, t.action),
    )
    if t.action in CLICK_ACTIONS and (
        state.last_click_at is None or t.occurred_at >= state.last_click_at
    ):
        new = replace(new, last_click_campaign=t.campaign_id, last_click_at=t.occurred_at)
    return new


def apply_event(
    state: CustomerState,
    event: Event,
    source: Source,
    default_margin_rate: float = 0.3,
) -> CustomerState:
    """Return `state` with `event` applied, or `state` itself if already applied.

    >>> from stream_app.domain.events import Purchase, Source
    >>> p = Purchase("e1", "C1", 86_400_000, "order", 5_000, 3_000, "web")
    >>> s = apply_event(CustomerState("C1"), p, Source("cvm.purchases", 0, 7))
    >>> (s.orders, s.gross_margin_c, s.purchase_days, dict(s.offsets))
    (1, 2000, (1,), {'cvm.purchases': 7})
    >>> apply_event(s, p, Source("cvm.purchases", 0, 7)) is s
    True
    """
    if state.has_applied(source):
        return state
    if isinstance(event, Purchase):
        new = _apply_purchase(state, event, default_margin_rate)
    elif isinstance(event, ServiceContact):
        new = _apply_contact(state, event)
    else:
        new = _apply_touch(state, event)
    offsets = dict(state.offsets)
    offsets[source.topic] = source.offset
    first = state.first_event
    last = state.last_event
    recent, recent_at = add_recent(
        state.recent, state.recent_at, event.occurred_at, _recent_weights(event)
    )
    return replace(
        new,
        first_event=event.occurred_at if first is None else min(first, event.occurred_at),
        last_event=event.occurred_at if last is None else max(last, event.occurred_at),
        recent=recent,
        recent_at=recent_at,
        offsets=MappingProxyType(offsets),
    )
