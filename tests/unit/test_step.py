"""The engine's one batch step (`stream_app.domain.step`) on a simulated population.

What the worker, its rescoring timers and the alert study share must not depend on how
events are batched: a customer decided in a batch of many gets what they get alone, and
a batch applied at once leaves the states that applying it event by event leaves.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace
from types import SimpleNamespace

import pytest

from load.churn_study import domain_events
from load.simulator import SimConfig
from stream_app.domain import churn, step
from stream_app.domain.alerts import Alert
from stream_app.domain.events import MS_PER_DAY, Event, Purchase, Source
from stream_app.domain.ledger import CustomerState, apply_event
from stream_app.domain.retention import Retention, RetentionPolicy
from stream_app.domain.scoring import LinearScorer
from stream_app.domain.tiers import Cuts
from stream_app.domain.valuation import ValueModel

POLICY = RetentionPolicy(horizon_ms=60 * MS_PER_DAY, snapshot_gap_ms=20 * MS_PER_DAY)


def _events(days: int = 240) -> Iterator[tuple[Event, Source]]:
    return domain_events(SimConfig(n_customers=80, days=days, seed=5, precursors=True))


def _applied(days: int = 240) -> step.Applied:
    events = list(_events(days))
    states = {e.customer_id: CustomerState(e.customer_id) for e, _ in events}
    return step.apply_events(states, lambda cid: Retention(), events, POLICY, 0.3)


def _scorer() -> LinearScorer:
    model = churn.make_model("logreg")
    for i in range(40):
        model.learn_one({"recency_days": float(i * 5), "orders": float(i % 7),
                         "p_alive": 1.0 - i / 40}, int(i > 20))
    scorer = LinearScorer.from_model(model)
    assert scorer is not None
    return scorer


def test_applying_a_batch_at_once_equals_applying_it_event_by_event() -> None:
    events = list(_events())
    applied = _applied()
    alone: dict[str, CustomerState] = {}
    for event, source in events:
        cid = event.customer_id
        alone[cid] = apply_event(alone.get(cid) or CustomerState(cid), event, source, 0.3)
    assert applied.states == alone
    assert sum(n for n, _ in applied.counts.values()) == len(events)
    assert set(applied.changed) == set(alone)
    assert len(applied.events) == len(events)


def test_replays_are_skipped_and_duplicates_move_only_the_offsets() -> None:
    order = Purchase("e1", "C1", 3 * MS_PER_DAY, "order", 5_000, 3_000, "web")
    again = replace(order, occurred_at=4 * MS_PER_DAY)  # the same event id, later
    first, later = Source("cvm.purchases", 0, 7), Source("cvm.purchases", 2, 1)
    applied = step.apply_events(
        {"C1": CustomerState("C1")}, lambda cid: Retention(),
        [(order, first), (order, first), (again, later)], POLICY, 0.3, event_id_window=8,
    )
    state = applied.states["C1"]
    assert applied.counts == {"C1": (1, 1)}
    assert state.orders == 1 and dict(state.offsets)[("cvm.purchases", 2)] == 1
    assert applied.duplicates == [(again, later)] and applied.changed == ["C1"]


def test_a_failing_event_names_where_it_was_read() -> None:
    broken = SimpleNamespace(customer_id="C2", occurred_at=MS_PER_DAY)  # not an event
    with pytest.raises(AttributeError) as info:
        step.apply_events({"C2": CustomerState("C2")}, lambda cid: Retention(),
                          [(broken, Source("t", 3, 9))], POLICY, event_id_window=8)  # type: ignore[list-item]
    assert "while applying t/3 offset 9" in "".join(getattr(info.value, "__notes__", []))


def _same_alert(a: Alert | None, b: Alert | None) -> bool:
    """The same alert, its amounts to 1e-9 like the valuations they come from (a customer
    valued in a batch and alone agree to 1e-9, not always to the last bit)."""
    if a is None or b is None:
        return a is b
    return (replace(a, clv=0.0, value_at_risk=0.0) == replace(b, clv=0.0, value_at_risk=0.0)
            and math.isclose(a.clv, b.clv, rel_tol=1e-9)
            and math.isclose(a.value_at_risk, b.value_at_risk, rel_tol=1e-9))


@pytest.mark.parametrize("scored", [False, True])
def test_a_customer_decided_in_a_batch_gets_what_they_get_alone(scored: bool) -> None:
    applied = _applied()
    cids = sorted(applied.changed)
    assert len(cids) > 50
    watermark = max(s.last_event or 0 for s in applied.states.values()) + 30 * MS_PER_DAY
    models = step.Models(ValueModel(), Cuts(clv=tuple(range(150, 348, 2))),
                         _scorer() if scored else None, "churn-1")
    # Each customer decided once first, so that the batch below also labels snapshots.
    first = step.decide_batch(
        [step.Customer(applied.states[c], applied.retentions[c],
                       applied.states[c].last_event or 0) for c in cids],
        models, POLICY, 365.0,
    )
    customers = [step.Customer(o.customer.state, o.decision.retention, watermark)
                 for o in first]
    together = step.decide_batch(customers, models, POLICY, 365.0, watermark)
    alone = [step.decide_batch([c], models, POLICY, 365.0, watermark)[0] for c in customers]
    assert sum(len(o.labelled) for o in together) > 0
    assert sum(o.decision.alert is not None for o in together + first) > 0
    for a, b in zip(together, alone, strict=True):
        assert a.customer_id == b.customer_id
        assert a.tier == b.tier and a.labelled == b.labelled
        assert (a.label_at, a.rescore_at) == (b.label_at, b.rescore_at)
        assert _same_alert(a.decision.alert, b.decision.alert)
        assert a.decision.trigger == b.decision.trigger
        pa, pb = a.decision.churn_probability, b.decision.churn_probability
        assert (pa is None) == (pb is None) == (not scored)
        assert pa is None or math.isclose(pa, pb, rel_tol=1e-9)
        assert (a.valuation is None) == (b.valuation is None)
        if a.valuation is not None and b.valuation is not None:
            assert math.isclose(a.valuation.clv, b.valuation.clv, rel_tol=1e-9, abs_tol=1e-9)
            assert math.isclose(a.valuation.p_alive, b.valuation.p_alive, rel_tol=1e-9)
