"""The value-history and trend part of a customer's change.

`extend` adds to the `Change` that `planner.plan` built: the customer's packed
value history (field `HISTORY`, see `domain.history`) and the increments of the
population trends (`domain.trends`) in the trend hash of the customer's Kafka
partition (`Keys.trends`). Both go through the same commit as the rest of the
record (one Lua call, compare-and-set on the customer's version), so a replayed
event adds nothing twice and a customer that lost the compare-and-set adds
nothing at all; no new Lua step is involved, only one more hash field and more
integer sums.

Time is event time: a change is valued as of the customer's latest event (or
the watermark, for a rescore), and a period is closed when a change falls in a
later one.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Final

from stream_app.domain.events import Event
from stream_app.domain.history import (
    NO_SEGMENT,
    Point,
    advance,
    due_closings,
    format_point,
    join,
    parse_point,
    period_end,
    period_index,
    shift_net,
    split,
)
from stream_app.domain.ledger import CustomerState
from stream_app.domain.rollups import Increment
from stream_app.domain.tiers import Cuts, value_tier
from stream_app.domain.trends import event_flows, history_increments
from stream_app.domain.valuation import Valuation
from stream_app.planner import rfm_fields
from stream_app.settings import Settings
from stream_app.store.customers import Change, Loaded
from stream_app.store.keys import Keys

__all__ = ["HISTORY", "HistoryConfig", "Item", "Trail", "extend",
           "extend_many", "point"]

#: The record's field holding the packed value history.
HISTORY: Final = "_vh"

#: Values customers, each at its own as-of time (`domain.valuation.value_states`).
ValueAt = Callable[[Sequence[tuple[CustomerState, int]]], list[Valuation | None]]


@dataclass(frozen=True, slots=True)
class HistoryConfig:
    """Period unit, points kept per customer, and the P(alive) below which one is lost."""

    unit: str = "month"
    max_points: int = 24
    lost_below: float = 0.25

    @classmethod
    def from_settings(cls, settings: Settings) -> HistoryConfig:
        return cls(settings.history_period, settings.history_max_points,
                   settings.winback_p_alive_threshold)


@dataclass
class Trail:
    """What one batch's events did per customer: the state after each, and the flows."""

    unit: str
    states: dict[str, list[tuple[int, CustomerState]]] = field(
        default_factory=lambda: defaultdict(list))
    flows: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(dict))
    #: (event time, change of net contribution in cents) per event, in arrival order.
    deltas: dict[str, list[tuple[int, int]]] = field(default_factory=lambda: defaultdict(list))

    def observe(self, before: CustomerState, after: CustomerState, event: Event,
                campaign: Sequence[Increment] = ()) -> None:
        """Record one applied event."""
        cid = after.customer_id
        self.states[cid].append((event.occurred_at, after))
        self.deltas[cid].append(
            (event.occurred_at, after.net_contribution_c - before.net_contribution_c))
        flows = self.flows[cid]
        for name, delta in event_flows(before, after, event, self.unit, campaign).items():
            flows[name] = flows.get(name, 0) + delta

    def state_at(self, customer_id: str, end: int, default: CustomerState) -> CustomerState:
        """The customer's state after the batch's last event before `end` (else `default`)."""
        found = default
        for at, state in self.states.get(customer_id, ()):
            if at < end:
                found = state
        return found


def point(state: CustomerState, valuation: Valuation, cuts: Cuts, period: int) -> Point:
    """A customer's history point for `period`, from a valuation."""
    segment = rfm_fields(state, cuts, valuation.as_of).get("rfm_segment", NO_SEGMENT)
    return _point(state, valuation, period, segment, value_tier(valuation, cuts))


def _point(state: CustomerState, valuation: Valuation, period: int, segment: str,
           tier: int) -> Point:
    clv = valuation.clv if math.isfinite(valuation.clv) else 0.0
    p_alive = valuation.p_alive if math.isfinite(valuation.p_alive) else 0.0
    return Point(period, round(clv * 100), round(p_alive * 10_000), segment,
                 state.net_contribution_c, tier)


def _tail(parts: list[str], deltas: Sequence[tuple[int, int]], unit: str) -> int:
    """How many of the newest packed points a change needs as `Point`s.

    The newest and the one before it (its row in the trends depends on it), or all
    of them when an event of the batch precedes the end of an earlier period.
    """
    if len(parts) <= 2:
        return len(parts)
    last = int(parts[-1].partition(",")[0])
    if any(at < period_end(last - 1, unit) for at, _ in deltas):
        return len(parts)
    return 2


@dataclass(frozen=True, slots=True)
class Item:
    """One customer's change as the planner built it, with what it was built from."""

    change: Change
    loaded: Loaded
    after: CustomerState
    valuation: Valuation | None


@dataclass(frozen=True, slots=True)
class _Prepared:
    head: list[str]  # older points, still packed
    stored: tuple[Point, ...]  # the newest stored points, parsed
    old: tuple[Point, ...]  # those, with late events' net contribution added
    current: int
    due: list[int]  # periods to close
    states: list[tuple[CustomerState, int]]  # to value at each period's end
    deltas: list[tuple[int, int]]


def _prepare(item: Item, config: HistoryConfig, trail: Trail | None) -> _Prepared | None:
    if item.valuation is None:
        return None
    cid, unit, loaded = item.after.customer_id, config.unit, item.loaded
    stored_unit, parts = split(loaded.fields.get(HISTORY, ""))
    if stored_unit != unit:
        parts = []  # another period unit: the history starts again
    deltas = trail.deltas.get(cid, []) if trail is not None else []
    # Only the newest points are parsed; the older ones stay as they were packed.
    k = _tail(parts, deltas, unit)
    head, stored = parts[:len(parts) - k], tuple(parse_point(q) for q in parts[len(parts) - k:])
    old = stored
    if old:
        # The batch's events that precede the end of periods already closed.
        old = shift_net(old, deltas, unit, old[-1].period)
    current = period_index(item.valuation.as_of, unit)
    start = None if old or trail is None else _first_period(trail, cid, unit)
    due = due_closings(old, current, config.max_points, start)
    states = [
        (loaded.state if trail is None
         else trail.state_at(cid, period_end(p, unit), loaded.state), period_end(p, unit))
        for p in due
    ]
    return _Prepared(head, stored, old, current, due, states, deltas)


def _first_period(trail: Trail, customer_id: str, unit: str) -> int | None:
    """For a customer without points yet, the period of their first point had each event
    come in a batch of its own: at the batch's first event after which they had an order,
    valued as of their latest event so far (`CustomerState.last_event`, which may be a later
    event of another topic read before it). So the history does not depend on how the
    customer's events were batched, and no closed period ends before an event applied ahead
    of it, whose net contribution its point would otherwise count. None: no order yet.
    """
    for at, state in trail.states.get(customer_id, ()):
        if state.purchase_days:
            return period_index(at if state.last_event is None else state.last_event, unit)
    return None


def _finish(item: Item, prep: _Prepared | None, values: Sequence[Valuation | None], keys: Keys,
            cuts: Cuts, config: HistoryConfig, trail: Trail | None) -> Change:
    change, loaded, after, valuation = item.change, item.loaded, item.after, item.valuation
    unit = config.unit
    fields = dict(change.fields)
    sums = dict(trail.flows.get(after.customer_id, {})) if trail is not None else {}
    if prep is not None and valuation is not None:
        # The net contribution at a period's end counts exactly the events before it,
        # whatever order they arrived in; the valuation uses the state after the last
        # event that arrived before the end.
        base = loaded.state.net_contribution_c
        closings = [
            replace(point(state, v, cuts, p),
                    net_c=base + sum(d for at, d in prep.deltas if at < end))
            for p, (state, end), v in zip(prep.due, prep.states, values, strict=True)
            if v is not None
        ]
        # The planner has just computed the current segment and tier: the changed field,
        # or the stored one if it did not change.
        segment = change.fields.get("rfm_segment", loaded.fields.get("rfm_segment"))
        tier = change.fields.get("value_tier", loaded.fields.get("value_tier"))
        now = (point(after, valuation, cuts, prep.current) if segment is None or tier is None
               else _point(after, valuation, prep.current, segment, int(tier)))
        new = advance(prep.old, closings, now)
        # `stored` lacks the point before its first one only when `head` is empty: then
        # there is none.
        for name, delta in history_increments(prep.stored, new, unit,
                                              config.lost_below).items():
            sums[name] = sums.get(name, 0) + delta
        packed = join(unit, [*prep.head, *map(format_point, new)][-config.max_points:])
        if loaded.fields.get(HISTORY) != packed:
            fields[HISTORY] = packed
    if not sums and len(fields) == len(change.fields):
        return change
    key = keys.trends(keys.partition_of(change.customer_id))
    increments = [*change.increments, *((key, n, d) for n, d in sums.items() if d)]
    return Change(change.customer_id, change.version, fields, change.ranks, increments,
                  change.messages, change.removed)


def extend_many(
    items: Sequence[Item],
    keys: Keys,
    cuts: Cuts,
    value_at: ValueAt,
    config: HistoryConfig,
    trail: Trail | None = None,
) -> list[Change]:
    """Each change with the customer's value history and trend increments added.

    The periods a batch closes are valued in one call of `value_at`.
    """
    prepared = [_prepare(item, config, trail) for item in items]
    pairs = [pair for prep in prepared if prep is not None for pair in prep.states]
    values = iter(value_at(pairs) if pairs else [])
    return [
        _finish(item, prep, [next(values) for _ in prep.states] if prep is not None else [],
                keys, cuts, config, trail)
        for item, prep in zip(items, prepared, strict=True)
    ]


def extend(
    change: Change,
    keys: Keys,
    loaded: Loaded,
    after: CustomerState,
    valuation: Valuation | None,
    cuts: Cuts,
    value_at: ValueAt,
    config: HistoryConfig,
    trail: Trail | None = None,
) -> Change:
    """`change` with the customer's value history and their trend increments added."""
    return extend_many([Item(change, loaded, after, valuation)], keys, cuts, value_at, config,
                       trail)[0]
