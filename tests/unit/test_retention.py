"""Retention memory: examples are released when their horizon closes, never earlier."""

from __future__ import annotations

from stream_app.domain import churn
from stream_app.domain.events import MS_PER_DAY, Purchase
from stream_app.domain.ledger import CustomerState
from stream_app.domain.retention import Retention, RetentionPolicy, decide, label_due, observe
from stream_app.store.records import pack_retention, unpack_retention

DAY = MS_PER_DAY
POLICY = RetentionPolicy(horizon_ms=90 * DAY, snapshot_gap_ms=30 * DAY)


def test_a_retained_label_waits_for_its_horizon_like_a_churned_one() -> None:
    early, late = churn.Snapshot("C1", 0, {}), churn.Snapshot("C1", 40 * DAY, {})
    r = Retention(pending=(early, late))
    order = Purchase("e", "C1", 50 * DAY, "order", 100, None, "web")
    r, now = observe(r, order, POLICY)
    assert now == [] and r.pending == () and len(r.waiting) == 2
    r, released = label_due(r, 90 * DAY, POLICY)  # horizon of `early` not yet passed
    assert released == []
    r, released = label_due(r, 90 * DAY + 1, POLICY)
    assert released == [(early, churn.RETAINED)]
    r, released = label_due(r, 131 * DAY, POLICY)
    assert released == [(late, churn.RETAINED)] and r.label_due is None


def test_silence_labels_churned_at_the_horizon() -> None:
    snap = churn.Snapshot("C1", 10 * DAY, {})
    r, released = label_due(Retention(pending=(snap,)), 100 * DAY + 1, POLICY)
    assert released == [(snap, churn.CHURNED)] and r.pending == ()


def test_snapshots_are_spaced_and_bounded() -> None:
    state = CustomerState("C1", orders=1, revenue_c=1000, purchase_days=(0,), first_event=0,
                          last_event=0, first_purchase=0, last_purchase=0)
    r = Retention()
    for day in range(0, 400, 5):
        r = decide(r, state, None, 0.0, day * DAY, POLICY).retention
        assert len(r.pending) + len(r.waiting) <= POLICY.max_pending
    gaps = [b.taken_at - a.taken_at for a, b in zip(r.pending, r.pending[1:], strict=False)]
    assert all(g >= 30 * DAY for g in gaps)


def test_the_memory_round_trips_through_its_record_field() -> None:
    snap = churn.Snapshot("C1", 5 * DAY, {name: 1.5 for name in churn.FEATURE_NAMES})
    r = Retention(pending=(snap,), waiting=((snap, 1),), last_snapshot_at=5 * DAY)
    assert unpack_retention("C1", pack_retention(r)) == r
