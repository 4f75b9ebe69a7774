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
    pack,
    period_end,
    period_index,
    shift_net,
    trim,
    unpack,
)
from stream_app.domain.ledger import CustomerState
from stream_app.domain.rollups import Increment
from stream_app.domain.trends import event_flows, history_increments
from stream_app.domain.valuation import Valuation
from stream_app.planner import Cuts, rfm_fields, value_tier
from stream_app.settings import Settings
from stream_app.store.customers import Change, Loaded
from stream_app.store.keys import Keys

__all__ = ["HISTORY", "HistoryConfig", "Trail", "customer_partition", "extend", "point"]

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


def customer_partition(state: CustomerState) -> int:
    """The Kafka partition a customer's events come from (the lowest, should there be several;
    0 before any)."""
    return min((p for _, p in state.offsets), default=0)


def point(state: CustomerState, valuation: Valuation, cuts: Cuts, period: int) -> Point:
    """A customer's history point for `period`, from a valuation."""
    segment = rfm_fields(state, cuts, valuation.as_of).get("rfm_segment", NO_SEGMENT)
    clv = valuation.clv if valuation.clv == valuation.clv else 0.0  # NaN: none
    return Point(period, round(clv * 100), round(valuation.p_alive * 10_000), segment,
                 state.net_contribution_c, value_tier(valuation, cuts))


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
    cid = after.customer_id
    unit = config.unit
    fields = dict(change.fields)
    sums: dict[str, int] = dict(trail.flows.get(cid, {})) if trail is not None else {}
    if valuation is not None:
        stored_unit, old = unpack(loaded.fields.get(HISTORY, ""))
        if stored_unit != unit:
            old = ()  # another period unit: the history starts again
        stored = old
        current = period_index(valuation.as_of, unit)
        deltas = trail.deltas.get(cid, []) if trail is not None else []
        if old:
            # The batch's events that precede the end of periods already closed.
            old = shift_net(old, deltas, unit, old[-1].period)
        due = due_closings(old, current, config.max_points)
        states = [
            (loaded.state if trail is None
             else trail.state_at(cid, period_end(p, unit), loaded.state), period_end(p, unit))
            for p in due
        ]
        # The net contribution at a period's end counts exactly the events before it,
        # whatever order they arrived in; the valuation uses the state after the last
        # event that arrived before the end.
        base = loaded.state.net_contribution_c
        closings = [
            replace(point(state, v, cuts, p),
                    net_c=base + sum(d for at, d in deltas if at < end))
            for p, (state, end), v in zip(due, states, value_at(states) if due else [],
                                          strict=True)
            if v is not None
        ]
        new = advance(old, closings, point(after, valuation, cuts, current))
        for name, delta in history_increments(stored, new, unit, config.lost_below).items():
            sums[name] = sums.get(name, 0) + delta
        packed = pack(unit, trim(new, config.max_points))
        if loaded.fields.get(HISTORY) != packed:
            fields[HISTORY] = packed
    if not sums and len(fields) == len(change.fields):
        return change
    key = keys.trends(customer_partition(after))
    increments = [*change.increments, *((key, n, d) for n, d in sorted(sums.items()) if d)]
    return replace(change, fields=fields, increments=increments)
