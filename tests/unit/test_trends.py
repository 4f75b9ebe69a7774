"""Population trends: stocks rebuilt from period rows equal a direct count, flows by period."""

from __future__ import annotations

import random
from collections import defaultdict

from stream_app.domain.events import CampaignTouch, Purchase
from stream_app.domain.history import Point, advance, due_closings, period_label, trim
from stream_app.domain.ledger import CustomerState
from stream_app.domain.rfm import SEGMENTS
from stream_app.domain.rollups import campaign_increments
from stream_app.domain.trends import (
    event_flows,
    history_increments,
    merge,
    summarize,
    tier_band,
)

LOST = 0.25


def test_three_customers_known_answer() -> None:
    """A: new in January, lost in March. B: new in February. C: lost in Feb, won back in March."""
    a1 = Point(672, 10_000, 9000, "new", 1_000, 90)
    b2 = Point(673, 5_000, 8000, "new", 500, 60)
    c1 = Point(672, 2_000, 3000, "at_risk", 200, 40)
    c2 = Point(673, 1_000, 1000, "lost", 150, 10)
    c3 = Point(674, 8_000, 9500, "loyal", 900, 96)
    a3 = Point(674, 500, 2000, "hibernating", 1_000, 20)
    shard0: dict[str, int] = defaultdict(int)
    shard1: dict[str, int] = defaultdict(int)
    for shard, steps in ((shard0, [[a1], [a1, a3]]), (shard1, [[b2], [c1], [c1, c2, c3]])):
        histories: dict[str, list[Point]] = {}
        for points in steps:
            key = "b" if points[0] is b2 else ("a" if points[0] is a1 else "c")
            old = histories.get(key, [])
            for name, d in history_increments(old, points, "month", LOST).items():
                shard[name] += d
            histories[key] = points
    rows = summarize(merge([shard0, shard1]), "month")
    by = {r["period"]: r for r in rows}
    assert list(by) == ["2026-01", "2026-02", "2026-03"]
    assert [by[p]["customers"] for p in by] == [2, 3, 3]
    assert [by[p]["new"] for p in by] == [2, 1, 0]
    assert [by[p]["lost"] for p in by] == [0, 1, 1]
    assert [by[p]["won_back"] for p in by] == [0, 0, 1]
    assert by["2026-01"]["total_clv"] == 120.0 and by["2026-01"]["mean_clv"] == 60.0
    # February: A carried at January's values, B new, C at February's.
    assert by["2026-02"]["total_clv"] == 160.0
    assert by["2026-02"]["net_contribution"] == 16.5
    assert by["2026-03"]["total_clv"] == 135.0
    assert by["2026-03"]["segments"]["hibernating"] == 1
    assert by["2026-03"]["segments"]["new"] == 1 and by["2026-03"]["segments"]["loyal"] == 1
    assert by["2026-03"]["tiers"] == {"platinum": 1, "gold": 0, "silver": 1, "bronze": 1}
    assert by["2026-03"]["lost_customers"] == 1  # A, at P(alive) 0.20
    mig = {(m["from"], m["to"]): m["customers"] for m in by["2026-03"]["migration"]}
    assert mig == {("new", "hibernating"): 1, ("lost", "loyal"): 1}


def _oracle(histories: dict[str, list[Point]], periods: range) -> dict[int, dict[str, object]]:
    """Stocks at each period's end counted directly: each customer's last point so far."""
    out = {}
    for period in periods:
        n = clv = lost = 0
        segs: dict[str, int] = defaultdict(int)
        for points in histories.values():
            known = [p for p in points if p.period <= period]
            if known:
                p = known[-1]
                n += 1
                clv += p.clv_c
                lost += p.lost(LOST)
                segs[p.segment] += 1
        out[period] = {"customers": n, "clv_c": clv, "lost": lost, "segments": dict(segs)}
    return out


def test_stocks_from_rows_equal_a_direct_count_over_random_histories() -> None:
    rng = random.Random(5)
    shards: list[dict[str, int]] = [defaultdict(int) for _ in range(3)]
    histories: dict[str, list[Point]] = {}
    untrimmed: dict[str, list[Point]] = {}
    for _step in range(400):
        cid = f"c{rng.randrange(40)}"
        old = histories.get(cid, [])
        last = old[-1].period if old else 600 + rng.randrange(6)
        current = last + rng.choice((0, 0, 1, 2, 5))

        def rand_point(period: int) -> Point:
            return Point(period, rng.randrange(-5_000, 50_000), rng.randrange(10_001),
                         rng.choice(SEGMENTS), rng.randrange(-1000, 9000), rng.randrange(100))

        closings = [rand_point(p) for p in due_closings(old, current, 4)]
        new = advance(old, closings, rand_point(current))
        shard = shards[int(cid[1:]) % 3]
        for name, d in history_increments(old, new, "month", LOST).items():
            shard[name] += d
        histories[cid] = list(trim(new, 4))
        full = untrimmed.get(cid, [])
        untrimmed[cid] = [p for p in full if p.period < new[0].period] + list(new)
    rows = summarize(merge(shards), "month")
    first = min(p.period for h in untrimmed.values() for p in h)
    last = max(p.period for h in untrimmed.values() for p in h)
    truth = _oracle(untrimmed, range(first, last + 1))
    assert [r["period"] for r in rows] == [period_label(p, "month") for p in truth]
    for row, (_period, want) in zip(rows, truth.items(), strict=True):
        assert row["customers"] == want["customers"]
        assert round(row["total_clv"] * 100) == want["clv_c"]
        assert row["lost_customers"] == want["lost"]
        assert {s: n for s, n in row["segments"].items() if n} == want["segments"]


def test_event_flows_by_channel_and_campaign() -> None:
    before = CustomerState("C1", acquisition_channel="store", last_click_campaign="spring",
                           last_click_at=1_772_409_600_000)
    order = Purchase("o", "C1", 1_772_409_600_000 + 3_600_000, "order", 20_000, None, "web")
    after = CustomerState("C1", orders=1, revenue_c=20_000, cogs_c=14_000,
                          acquisition_channel="store", last_click_campaign="spring",
                          last_click_at=1_772_409_600_000)
    flows = event_flows(before, after, order, "month", campaign_increments(before, order, 0.3))
    assert flows == {
        "2026-03|ch|store|orders": 1, "2026-03|ch|store|revenue_c": 20_000,
        "2026-03|ch|store|gross_margin_c": 6_000, "2026-03|ch|store|net_c": 6_000,
        "2026-03|cp|spring|attributed_orders": 1,
        "2026-03|cp|spring|attributed_revenue_c": 20_000,
        "2026-03|cp|spring|attributed_margin_c": 6_000,
    }
    touch = CampaignTouch("t", "C1", 1_772_409_600_000, "spring", "sms", "delivered", 45)
    later = CustomerState("C1", marketing_cost_c=45, acquisition_channel="store")
    flows = event_flows(CustomerState("C1", acquisition_channel="store"), later, touch, "week",
                        campaign_increments(before, touch, 0.3))
    assert flows == {
        "2026-03-02|ch|store|marketing_cost_c": 45, "2026-03-02|ch|store|net_c": -45,
        "2026-03-02|cp|spring|touches.delivered": 1, "2026-03-02|cp|spring|cost_c": 45,
    }
    rows = summarize(flows, "week")
    assert rows[0]["campaigns"] == [{
        "campaign": "spring", "touches": 1, "cost": 0.45, "attributed_orders": 0,
        "attributed_revenue": 0.0, "attributed_margin": 0.0, "payoff": -0.45,
        "return_on_cost": -1.0}]
    assert rows[0]["net_contribution_in_period"] == -0.45


def test_tier_bands_cover_every_tier() -> None:
    assert {tier_band(t) for t in range(100)} == {"platinum", "gold", "silver", "bronze"}
    assert [tier_band(t) for t in (94, 95, 79, 49)] == ["gold", "platinum", "silver", "bronze"]
