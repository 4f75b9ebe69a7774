"""The ledger against totals computed independently from the events."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from stream_app.domain.events import (
    MS_PER_DAY,
    CampaignTouch,
    InvalidEventValue,
    Purchase,
    ServiceContact,
    Source,
    from_message,
    to_cents,
)
from stream_app.domain.ledger import CustomerState, apply_event
from stream_app.store.records import from_fields, to_fields

DAY = MS_PER_DAY


def _events(rng: random.Random, n: int) -> list[tuple[object, Source]]:
    out: list[tuple[object, Source]] = []
    offsets = {"p": 0, "c": 0, "t": 0}
    for _ in range(n):
        when = rng.randrange(0, 400) * DAY + rng.randrange(0, DAY)
        pick = rng.choice("pct")
        if pick == "p":
            cost = None if rng.random() < 0.2 else rng.randrange(0, 5000)
            ev: object = Purchase(
                "e", "C1", when, rng.choice(["order", "order", "return"]),
                rng.randrange(0, 10_000), cost, rng.choice(["web", "store"]),
            )
        elif pick == "c":
            ev = ServiceContact(
                "e", "C1", when, "phone", rng.choice(["complaint", "billing"]),
                rng.randrange(0, 900), rng.random() < 0.5, rng.choice([None, -500, 250]),
            )
        else:
            ev = CampaignTouch(
                "e", "C1", when, "K1", "email", rng.choice(["sent", "opened"]),
                rng.randrange(0, 50),
            )
        out.append((ev, Source(pick, 0, offsets[pick])))
        offsets[pick] += 1
    return out


def _fold(events: list[tuple[object, Source]]) -> CustomerState:
    state = CustomerState("C1")
    for ev, src in events:
        state = apply_event(state, ev, src, 0.3)  # type: ignore[arg-type]
    return state


def test_totals_match_an_independent_sum() -> None:
    events = _events(random.Random(1), 500)
    state = _fold(events)
    orders = [e for e, _ in events if isinstance(e, Purchase) and e.kind == "order"]
    returns = [e for e, _ in events if isinstance(e, Purchase) and e.kind == "return"]
    contacts = [e for e, _ in events if isinstance(e, ServiceContact)]
    touches = [e for e, _ in events if isinstance(e, CampaignTouch)]

    def cogs(p: Purchase) -> int:
        return p.cost_c if p.cost_c is not None else int(
            (Decimal(p.amount_c) * Decimal("0.7")).to_integral_value(rounding="ROUND_HALF_EVEN")
        )

    assert state.orders == len(orders)
    assert state.returns == len(returns)
    assert state.revenue_c == sum(p.amount_c for p in orders)
    assert state.returned_c == sum(p.amount_c for p in returns)
    assert state.cogs_c == sum(map(cogs, orders)) - sum(map(cogs, returns))
    assert state.service_cost_c == sum(c.cost_c for c in contacts)
    assert state.marketing_cost_c == sum(t.cost_c for t in touches)
    assert state.contacts_total == len(contacts)
    assert state.unresolved == sum(not c.resolved for c in contacts)
    assert state.first_purchase == min(p.occurred_at for p in orders)
    assert state.last_purchase == max(p.occurred_at for p in orders)
    assert state.purchase_days == tuple(sorted({p.occurred_at // DAY for p in orders}))
    assert state.last_event == max(e.occurred_at for e, _ in events)  # type: ignore[attr-defined]
    assert state.net_contribution_c == (
        state.revenue_c - state.returned_c - state.cogs_c
        - state.service_cost_c - state.marketing_cost_c
    )


def test_replaying_any_prefix_changes_nothing() -> None:
    events = _events(random.Random(2), 300)
    state = _fold(events)
    assert _fold(events + events[:150]) == state


def test_topics_interleave_in_any_order_to_the_same_totals() -> None:
    events = _events(random.Random(3), 300)
    by_topic: dict[str, list[tuple[object, Source]]] = {}
    for ev, src in events:
        by_topic.setdefault(src.topic, []).append((ev, src))
    # Keep each topic's own order (one partition per customer), interleave topics.
    shuffled: list[tuple[object, Source]] = []
    queues = [list(q) for q in by_topic.values()]
    rng = random.Random(4)
    while any(queues):
        q = rng.choice([q for q in queues if q])
        shuffled.append(q.pop(0))
    a, b = _fold(events), _fold(shuffled)
    assert (a.revenue_c, a.cogs_c, a.service_cost_c, a.marketing_cost_c) == (
        b.revenue_c, b.cogs_c, b.service_cost_c, b.marketing_cost_c
    )
    assert a.purchase_days == b.purchase_days
    assert a.acquisition_channel == b.acquisition_channel


def test_a_late_purchase_counts_as_if_in_order() -> None:
    src = iter(range(10))
    s = CustomerState("C1")
    for day in (10, 20):
        p = Purchase("e", "C1", day * DAY, "order", 100, 50, "web")
        s = apply_event(s, p, Source("p", 0, next(src)))
    late = Purchase("e", "C1", 5 * DAY, "order", 100, 50, "store")
    s = apply_event(s, late, Source("p", 0, next(src)))
    assert s.purchase_days == (5, 10, 20)
    assert s.first_purchase == 5 * DAY
    assert s.acquisition_channel == "store"
    assert s.repeat_purchases == 2
    same_day = Purchase("e", "C1", 10 * DAY + 3600_000, "order", 100, 50, "web")
    s = apply_event(s, same_day, Source("p", 0, next(src)))
    assert s.repeat_purchases == 2
    assert s.orders == 4


def test_records_round_trip() -> None:
    state = _fold(_events(random.Random(5), 200))
    assert from_fields("C1", to_fields(state)) == state
    assert from_fields("C9", {}) == CustomerState("C9")


def test_foreign_currency_needs_a_rate() -> None:
    msg = {
        "event_id": "e1", "customer_id": "C1", "occurred_at": "2026-01-01T00:00:00Z",
        "kind": "order", "amount": 10.0, "currency": "EUR", "channel": "web",
    }
    with pytest.raises(InvalidEventValue) as err:
        from_message("purchase", msg, "USD", {})
    assert err.value.error_code == "unsupported_currency"
    p = from_message("purchase", msg, "USD", {"EUR": Decimal("1.10")})
    assert isinstance(p, Purchase) and p.amount_c == 1100


def test_cents_round_half_even() -> None:
    assert to_cents(0.125) == 12
    assert to_cents(0.135) == 14
