"""Churn features, labels without peeking, the snapshot bound and a small progressive run."""

from __future__ import annotations

import math
import pickle
import random

import numpy as np
import pytest

from load.churn_study import Candidate, progressive, replay, roc_auc
from load.simulator import SimConfig
from stream_app.domain import churn
from stream_app.domain.churn import (
    CHURNED,
    FEATURE_NAMES,
    RETAINED,
    Snapshot,
    features,
    label_on_purchase,
    label_on_watermark,
    learn_at,
    make_model,
    mature,
    max_pending,
    should_snapshot,
)
from stream_app.domain.events import (
    MS_PER_DAY,
    CampaignTouch,
    Event,
    Purchase,
    ServiceContact,
)
from stream_app.domain.ledger import CustomerState
from stream_app.domain.valuation import ValueModel, value_one
from tests.unit.folding import fold

DAY = MS_PER_DAY
H = 90 * DAY


def _order(day: float, amount_c: int = 5_000) -> Purchase:
    return Purchase("e", "C1", int(day * DAY), "order", amount_c, None, "web")


def _contact(day: float, reason: str = "complaint", resolved: bool = False) -> ServiceContact:
    return ServiceContact("e", "C1", int(day * DAY), "phone", reason, 500, resolved, -600)


def _touch(day: float, action: str) -> CampaignTouch:
    return CampaignTouch("e", "C1", int(day * DAY), "K1", "email", action, 1)


def _check(x: dict[str, float]) -> None:
    assert list(x) == list(FEATURE_NAMES)
    assert all(isinstance(v, float) and math.isfinite(v) for v in x.values()), x


# ------------------------------------------------------------------------------------ features


def test_features_of_a_customer_never_seen_or_without_an_order() -> None:
    blank = features(CustomerState("C1"), None, 10 * DAY)
    _check(blank)
    assert blank["no_purchase"] == 1.0 and blank["tenure_days"] == 0.0
    state = fold([_contact(1.0), _touch(2.0, "delivered"), _touch(2.1, "opened")])
    x = features(state, None, 11 * DAY)
    _check(x)
    assert x["no_purchase"] == 1.0
    assert x["recency_days"] == x["tenure_days"] == 10.0
    assert x["frequency"] == x["monetary"] == 0.0
    assert x["gap_mean_days"] == churn.PRIOR_GAP_DAYS
    assert x["p_alive"] == 1.0 and x["expected_purchases"] == 0.0
    assert x["complaint_share"] == 1.0 and x["unresolved_share"] == 1.0
    assert x["sentiment_mean"] == pytest.approx(-0.6)
    assert x["open_rate"] == 1.0 and x["recent_opened"] > 0


def test_features_of_one_and_of_many_orders() -> None:
    one = fold([_order(10.0, 4_000)])
    x = features(one, value_one(ValueModel(), one, 40 * DAY, 365), 40 * DAY)
    _check(x)
    assert (x["no_purchase"], x["recency_days"], x["frequency"], x["monetary"]) == (
        0.0, 30.0, 1.0, 40.0
    )
    assert x["gap_trend"] == 1.0 and x["p_alive"] == 1.0 and x["expected_purchases"] > 0

    # gaps of 10 days, then three of 30: the recent rhythm is slower than the mean
    days = [0, 10, 20, 30, 40, 70, 100, 130]
    many = fold([_order(d) for d in days])
    x = features(many, value_one(ValueModel(), many, 160 * DAY, 365), 160 * DAY)
    _check(x)
    assert x["frequency"] == 8.0 and x["recency_days"] == 30.0
    assert x["gap_trend"] == pytest.approx(30 / (130 / 7))
    assert x["gap_mean_days"] == pytest.approx((130 + churn.PRIOR_GAP_DAYS) / 8)
    assert x["overdue_days"] == pytest.approx(30 - x["gap_mean_days"])
    assert 0.0 < x["p_alive"] <= 1.0


def test_features_move_with_time_only_through_time() -> None:
    state = fold([_order(0), _order(20), _contact(25)])
    early, late = features(state, None, 30 * DAY), features(state, None, 200 * DAY)
    assert late["recency_days"] - early["recency_days"] == 170.0
    assert late["recent_contacts"] < early["recent_contacts"]
    assert late["frequency"] == early["frequency"]


def test_a_late_event_gives_zero_durations_not_negative_ones() -> None:
    # events applied out of order, and an as-of before the newest of them
    state = fold([_order(50), _contact(60), _order(5), _touch(3, "bounced")])
    x = features(state, None, 40 * DAY)
    _check(x)
    assert x["recency_days"] == 0.0 and x["tenure_days"] == 37.0
    assert x["overdue_ratio"] == 0.0


def test_features_stay_finite_for_random_histories() -> None:
    rng = random.Random(5)
    for _ in range(50):
        evs: list[Event] = []
        for _ in range(rng.randrange(0, 30)):
            d = rng.uniform(0, 400)
            pick = rng.random()
            if pick < 0.3:
                evs.append(_order(d, rng.randrange(0, 20_000)))
            elif pick < 0.5:
                evs.append(_contact(d, rng.choice(["complaint", "billing"]), rng.random() < 0.5))
            else:
                evs.append(_touch(d, rng.choice(["sent", "delivered", "opened", "unsubscribed"])))
        state = fold(evs)
        as_of = int(rng.uniform(0, 800) * DAY)
        _check(features(state, value_one(ValueModel(), state, as_of, 365), as_of))


# -------------------------------------------------------------------------------------- labels


def test_an_order_within_the_horizon_labels_retained_at_once() -> None:
    s = Snapshot("C1", 100 * DAY)
    for at in (100 * DAY + 1, 150 * DAY, 100 * DAY + H):
        labelled, rest = label_on_purchase([s], at, H)
        assert labelled == [(s, RETAINED)] and rest == []


def test_the_watermark_labels_churned_only_once_past_the_horizon() -> None:
    s = Snapshot("C1", 100 * DAY)
    assert label_on_watermark([s], 100 * DAY + H, H) == ([], [s])
    assert label_on_watermark([s], 100 * DAY + H + 1, H) == ([(s, CHURNED)], [])
    # an order after the horizon: the horizon passed without one
    assert label_on_purchase([s], 100 * DAY + H + 1, H) == ([(s, CHURNED)], [])


def test_an_order_never_labels_a_snapshot_taken_at_or_after_it() -> None:
    s = Snapshot("C1", 100 * DAY)
    for at in (0, 99 * DAY, 100 * DAY):
        assert label_on_purchase([s], at, H) == ([], [s])


def _oracle(taken_at: int, orders: list[int]) -> int:
    return RETAINED if any(taken_at < o <= taken_at + H for o in orders) else CHURNED


@pytest.mark.parametrize("seed", range(5))
def test_streamed_labels_match_hindsight_whatever_the_watermark_cadence(seed: int) -> None:
    """Labels from orders and watermarks equal the labels computed with the whole future known,
    whether the watermark moves with every event (live) or only now and then (a replay)."""
    rng = random.Random(seed)
    end = 600 * DAY
    times = sorted(rng.randrange(0, end) for _ in range(200))
    orders = sorted(rng.sample(times, 25))
    order_set = set(orders)
    results = []
    for cadence in (1, 17):
        pending: list[Snapshot] = []
        labels: dict[int, int] = {}
        last: int | None = None
        for i, now in enumerate(times):
            if i % cadence == 0:
                done, pending = label_on_watermark(pending, now, H)
                labels.update((s.taken_at, y) for s, y in done)
            if now in order_set:
                done, pending = label_on_purchase(pending, now, H)
                labels.update((s.taken_at, y) for s, y in done)
            if should_snapshot(last, now, 7 * DAY):
                last = now
                pending.append(Snapshot("C1", now))
        done, pending = label_on_watermark(pending, end, H)
        labels.update((s.taken_at, y) for s, y in done)
        for t, y in labels.items():
            assert y == _oracle(t, orders), (t, y)
        # the ones still pending are exactly those whose horizon is open and not yet retained
        for s in pending:
            assert s.taken_at + H >= end and _oracle(s.taken_at, orders) == CHURNED
        results.append(labels)
    assert results[0] == results[1]


def test_labelled_batches_come_oldest_first() -> None:
    snaps = [Snapshot("C1", d * DAY) for d in (30, 0, 60, 10)]
    labelled, _ = label_on_purchase(snaps, 95 * DAY, H)
    assert [(s.taken_at // DAY, y) for s, y in labelled] == [
        (0, CHURNED), (10, RETAINED), (30, RETAINED), (60, RETAINED)
    ]


def test_learn_at_and_mature_follow_the_horizon() -> None:
    s = Snapshot("C1", 0)
    assert learn_at(0, 5 * DAY, H, "label") == 5 * DAY
    assert learn_at(0, 5 * DAY, H, "horizon") == H + 1
    assert learn_at(0, H + 1, H, "horizon") == H + 1
    with pytest.raises(ValueError):
        learn_at(0, 0, H, "never")
    assert mature([(s, RETAINED)], H, H) == ([], [(s, RETAINED)])
    assert mature([(s, RETAINED)], H + 1, H) == ([(s, RETAINED)], [])


# ----------------------------------------------------------------------------- snapshot bound


def test_should_snapshot_keeps_the_gap_and_skips_late_events() -> None:
    assert should_snapshot(None, 0)
    assert not should_snapshot(10 * DAY, 16 * DAY)
    assert should_snapshot(10 * DAY, 17 * DAY)
    assert not should_snapshot(10 * DAY, 3 * DAY)  # a late event
    with pytest.raises(ValueError):
        should_snapshot(None, 0, 0)


@pytest.mark.parametrize(("horizon_days", "gap_days"), [(90, 7), (90, 30), (30, 7), (7, 7)])
def test_pending_and_waiting_snapshots_stay_within_the_bound(
    horizon_days: int, gap_days: int
) -> None:
    horizon, gap = horizon_days * DAY, gap_days * DAY
    bound = max_pending(horizon, gap)
    assert bound == math.ceil(horizon_days / gap_days) + 1
    rng = random.Random(horizon_days * 100 + gap_days)
    # a busy customer (events every few hours) who never orders: the worst case
    now, last = 0, None
    pending: list[Snapshot] = []
    waiting: list[tuple[Snapshot, int]] = []
    most = 0
    for _ in range(5_000):
        now += rng.randrange(1, DAY // 4)
        labelled, pending = label_on_watermark(pending, now, horizon)
        if rng.random() < 0.01:  # now and then an order: retained ones wait for their horizon
            more, pending = label_on_purchase(pending, now, horizon)
            labelled += more
        _, waiting = mature(waiting + labelled, now, horizon)
        if should_snapshot(last, now, gap):
            last = now
            pending.append(Snapshot("C1", now))
        most = max(most, len(pending) + len(waiting))
    assert most <= bound
    assert most >= bound - 1  # the bound is tight up to the boundary


# ------------------------------------------------------------------------- models and metrics


@pytest.mark.parametrize("kind", churn.MODEL_KINDS)
def test_every_candidate_learns_and_gives_a_probability(kind: str) -> None:
    model = make_model(kind, seed=1)
    rng = random.Random(0)
    for _ in range(300):
        r = rng.uniform(0, 200)
        model.learn_one({"recency_days": r, "frequency": rng.uniform(0, 5)}, int(r > 100))
    low = churn.churn_probability(model, {"recency_days": 10.0, "frequency": 2.0})
    high = churn.churn_probability(model, {"recency_days": 190.0, "frequency": 2.0})
    assert 0.0 <= low < high <= 1.0
    assert pickle.loads(pickle.dumps(model)) is not None
    with pytest.raises(ValueError):
        make_model("svm")


def test_progressive_metrics_summary_and_pickling() -> None:
    m = churn.ProgressiveMetrics(window=100)
    rng = random.Random(1)
    for _ in range(1_000):
        y = rng.random() < 0.3
        m.update(y, min(max(rng.gauss(0.6 if y else 0.3, 0.15), 0.0), 1.0))
    m.update(1, float("nan"))  # a broken prediction counts as 0.5, never poisons the sums
    s = pickle.loads(pickle.dumps(m)).summary()
    assert s["n"] == 1_001
    assert sum(row["n"] for row in s["calibration"]) == 1_001
    assert 0.75 < s["auc"] < 1.0 and 0.0 < s["log_loss"] < 1.0
    assert 0.0 <= s["ece"] <= 1.0 and s["drifts"] >= 0
    assert churn.ProgressiveMetrics().summary()["auc"] is None


def test_snapshots_round_trip_through_plain_dicts() -> None:
    s = Snapshot("C1", 7, features(CustomerState("C1"), None, 7))
    assert Snapshot.from_dict(s.to_dict()) == s


# ---------------------------------------------------------------------- a small progressive run


def test_a_small_progressive_run_beats_chance_clearly() -> None:
    rep = replay(SimConfig(n_customers=300, days=360, seed=3))
    assert rep.max_pending <= max_pending()
    labelled = rep.label >= 0
    assert 0.1 < rep.label[labelled].mean() < 0.9
    run = progressive(rep, Candidate(churn.DEFAULT_MODEL, churn.DEFAULT_SCHEDULE), seed=3)
    learned = run.learned_at >= 0
    later = learned & (rep.taken_at >= np.quantile(rep.taken_at[learned], 0.5))
    assert roc_auc(rep.label[later], run.progressive[later]) > 0.7
    assert roc_auc(rep.label[later], run.served[later]) > 0.7
    assert run.metrics.summary()["n"] == int(learned.sum())


LEAD = 60 * DAY


def _lead_oracle(taken_at: int, orders: list[int]) -> int:
    """Churned when a silence of H starts within [t, t + lead]: after the last order there."""
    within = [o for o in orders if taken_at < o <= taken_at + LEAD]
    anchor = max(within, default=taken_at)
    return RETAINED if any(anchor < o <= anchor + H for o in orders) else CHURNED


@pytest.mark.parametrize("seed", range(5))
def test_lead_window_labels_match_hindsight_whatever_the_watermark_cadence(seed: int) -> None:
    rng = random.Random(seed)
    end = 700 * DAY
    times = sorted(rng.randrange(0, end) for _ in range(200))
    orders = sorted(rng.sample(times, 12))
    order_set = set(orders)
    results = []
    for cadence in (1, 13):
        pending: list[Snapshot] = []
        labels: dict[int, int] = {}
        last: int | None = None
        for i, now in enumerate(times):
            if i % cadence == 0:
                done, pending = label_on_watermark(pending, now, H)
                labels.update((s.taken_at, y) for s, y in done)
            if now in order_set:
                done, pending = label_on_purchase(pending, now, H, LEAD)
                labels.update((s.taken_at, y) for s, y in done)
            if should_snapshot(last, now, 7 * DAY):
                last = now
                pending.append(Snapshot("C1", now))
        done, pending = label_on_watermark(pending, end, H)
        labels.update((s.taken_at, y) for s, y in done)
        assert labels
        for t, y in labels.items():
            assert y == _lead_oracle(t, orders), (t, y)
        for s in pending:
            assert s.anchor + H >= end
        results.append(labels)
    assert results[0] == results[1]
    # the lead window labels churned the snapshots of the decline before the last order
    plain = {t: _oracle(t, orders) for t in results[0]}
    assert all(results[0][t] >= y for t, y in plain.items())


def test_an_order_within_the_lead_window_moves_the_anchor_only() -> None:
    s = Snapshot("C1", 100 * DAY)
    labelled, rest = label_on_purchase([s], 130 * DAY, H, LEAD)
    assert labelled == [] and rest == [Snapshot("C1", 100 * DAY, {}, 130 * DAY)]
    assert rest[0].anchor == 130 * DAY
    assert Snapshot.from_dict(rest[0].to_dict()) == rest[0]
    assert label_on_watermark(rest, 130 * DAY + H, H) == ([], rest)
    assert label_on_watermark(rest, 130 * DAY + H + 1, H)[0] == [(rest[0], CHURNED)]
    assert label_on_purchase(rest, 161 * DAY, H, LEAD)[0] == [(rest[0], RETAINED)]
    with pytest.raises(ValueError, match="lead"):
        label_on_purchase([s], 130 * DAY, H, H + 1)


def test_a_replay_with_a_lead_window_labels_more_snapshots_churned() -> None:
    config = SimConfig(n_customers=150, days=300, seed=5, precursors=True)
    plain = replay(config)
    lead = replay(config, lead_ms=LEAD)
    assert len(lead.snapshots) == len(plain.snapshots)
    both = (plain.label >= 0) & (lead.label >= 0)
    assert (lead.label[both] >= plain.label[both]).all()
    assert lead.label[both].mean() > plain.label[both].mean()
