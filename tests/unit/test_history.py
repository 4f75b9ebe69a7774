"""Value history: periods, closing silent periods at their end, the bound in bytes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from stream_app.domain.events import CampaignTouch, Event, Purchase, ServiceContact, Source
from stream_app.domain.history import (
    POINT_MAX_BYTES,
    HistoryError,
    Point,
    advance,
    due_closings,
    pack,
    period_end,
    period_index,
    period_label,
    period_of_label,
    trim,
    unpack,
)
from stream_app.domain.ledger import CustomerState, ingest
from stream_app.domain.rollups import campaign_increments
from stream_app.domain.tiers import Cuts, value_tier
from stream_app.domain.trends import summarize
from stream_app.domain.valuation import ValueModel, value_one, value_states
from stream_app.history_plan import HISTORY, HistoryConfig, Trail, extend
from stream_app.store.customers import Change, Loaded
from stream_app.store.keys import Keys


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


@pytest.mark.parametrize(("unit", "t", "label", "end"), [
    ("month", ms(2026, 1, 31, 23, 59), "2026-01", ms(2026, 2, 1)),
    ("month", ms(2026, 2, 1), "2026-02", ms(2026, 3, 1)),
    ("month", ms(2024, 12, 31, 12), "2024-12", ms(2025, 1, 1)),
    ("week", ms(2026, 3, 8, 23), "2026-03-02", ms(2026, 3, 9)),  # Sunday, week of Monday 2nd
    ("week", ms(2026, 3, 9), "2026-03-09", ms(2026, 3, 16)),
    ("day", ms(2026, 3, 9, 17), "2026-03-09", ms(2026, 3, 10)),
])
def test_periods_of_each_unit(unit: str, t: int, label: str, end: int) -> None:
    p = period_index(t, unit)
    assert period_label(p, unit) == label
    assert period_of_label(label, unit) == p
    assert period_end(p, unit) == end
    assert period_index(end, unit) == p + 1 and period_index(end - 1, unit) == p


def test_unknown_unit_and_label_are_refused() -> None:
    with pytest.raises(HistoryError):
        period_index(0, "quarter")
    with pytest.raises(HistoryError):
        period_of_label("March", "month")


def test_history_closes_silent_periods_and_keeps_the_open_one() -> None:
    jan = Point(672, 1000, 9000, "new", 100, 50)
    # A second change in January replaces the open point.
    jan2 = Point(672, 1200, 9100, "new", 150, 55)
    h = advance([jan], [], jan2)
    assert h == (jan2,)
    # A change in April closes January, February and March.
    assert due_closings(h, 675, 24) == [672, 673, 674]
    closings = [Point(p, 900 - p, 8000, "new", 150, 50) for p in (672, 673, 674)]
    apr = Point(675, 2000, 9500, "loyal", 300, 70)
    h = advance(h, closings, apr)
    assert [p.period for p in h] == [672, 673, 674, 675]
    assert h[0] == closings[0] and h[-1] == apr
    # Bounded: the oldest points go.
    assert [p.period for p in trim(h, 2)] == [674, 675]


def test_packed_history_is_bounded_in_bytes() -> None:
    worst = Point(9_999_999, -(2**53 - 1), 10_000, "potential_loyalist", -(2**53 - 1), 99)
    assert len(pack("month", [worst])) - 2 == POINT_MAX_BYTES == 54
    full = pack("month", [worst] * 24)
    assert len(full.encode()) <= 2 + 24 * (POINT_MAX_BYTES + 1)
    assert unpack(full) == ("month", (worst,) * 24)
    typical = Point(675, 45_678, 8123, "champions", 12_345, 87)
    assert len(pack("month", [typical] * 24)) == 2 + 24 * 26 - 1  # 625 bytes for two years


def _events() -> list[tuple[Event, Source]]:
    src = iter(range(100))

    def s() -> Source:
        return Source("cvm.purchases", 2, next(src))

    return [
        (Purchase("o1", "C1", ms(2026, 1, 10), "order", 10_000, 6_000, "web"), s()),
        (ServiceContact("s1", "C1", ms(2026, 1, 20), "phone", "billing", 500, True, None), s()),
        (CampaignTouch("t1", "C1", ms(2026, 2, 3), "spring", "email", "clicked", 30), s()),
        (Purchase("o2", "C1", ms(2026, 4, 2), "order", 5_000, 3_000, "web"), s()),
    ]


def test_extend_values_closed_periods_at_their_end_with_the_state_then() -> None:
    """January is closed with the state after its events and valued at 1 February, February
    and March (silent but for a touch) at their ends; April is the open point."""
    model, cuts, keys = ValueModel(), Cuts(), Keys()
    config = HistoryConfig("month", 24, 0.25)
    first, second = _events()[:2], _events()[2:]
    state = CustomerState("C1")
    trail = Trail("month")
    for event, source in first:
        after, _ = ingest(state, event, source)
        trail.observe(state, after, event, campaign_increments(state, event, 0.3))
        state = after
    jan_valuation = value_one(model, state, state.last_event or 0, 365.0)
    empty = Change("C1", "", {})
    c1 = extend(empty, keys, Loaded(CustomerState("C1"), ""), state, jan_valuation, cuts,
                lambda pairs: value_states(model, pairs, 365.0), config, trail)
    unit, points = unpack(c1.fields[HISTORY])
    assert unit == "month" and [p.period for p in points] == [672]
    assert points[0].net_c == 10_000 - 6_000 - 500
    stored = dict(c1.fields)
    jan_state = state

    trail = Trail("month")
    for event, source in second:
        after, _ = ingest(state, event, source)
        trail.observe(state, after, event, campaign_increments(state, event, 0.3))
        state = after
    valuation = value_one(model, state, state.last_event or 0, 365.0)
    c2 = extend(empty, keys, Loaded(jan_state, "1", stored), state, valuation, cuts,
                lambda pairs: value_states(model, pairs, 365.0), config, trail)
    _, points = unpack(c2.fields[HISTORY])
    assert [period_label(p.period, "month") for p in points] == [
        "2026-01", "2026-02", "2026-03", "2026-04"]
    after_touch = CustomerState("C1")
    for event, source in _events()[:3]:
        after_touch = ingest(after_touch, event, source)[0]
    expected = [(jan_state, ms(2026, 2, 1)), (after_touch, ms(2026, 3, 1)),
                (after_touch, ms(2026, 4, 1))]
    for p, (st, end) in zip(points[:3], expected, strict=True):
        v = value_one(model, st, end, 365.0)
        assert p.net_c == st.net_contribution_c
        assert p.p_alive_m == round(v.p_alive * 10_000)
        assert p.clv_c == round(v.clv * 100)
        assert p.tier == value_tier(v, cuts)
    assert points[1].clv_c != points[2].clv_c  # the same state, valued at another time
    assert points[3].net_c == state.net_contribution_c
    # The trend sums go to the trend hash of the customer's partition, with the flows.
    trend_keys = {k for k, _, _ in c2.increments}
    assert trend_keys == {keys.trends(keys.partition_of("C1"))}
    sums = {f: d for _, f, d in c2.increments}
    assert sums["2026-02|cp|spring|cost_c"] == 30
    assert sums["2026-04|ch|web|revenue_c"] == 5_000
    assert sums["2026-04|s|net_c"] == state.net_contribution_c - after_touch.net_contribution_c


def test_extend_without_a_valuation_adds_only_the_flows() -> None:
    state = CustomerState("C9")
    event = ServiceContact("s9", "C9", ms(2026, 5, 2), "chat", "inquiry", 200, True, None)
    after, _ = ingest(state, event, Source("cvm.service-contacts", 1, 0))
    trail = Trail("month")
    trail.observe(state, after, event)
    change = extend(Change("C9", "", {}), Keys(), Loaded(state, ""), after, None, Cuts(),
                    lambda pairs: [], HistoryConfig(), trail)
    assert HISTORY not in change.fields
    assert {(k, f, d) for k, f, d in change.increments} == {
        (f"cvm:{{p{Keys().partition_of('C9')}}}:trends",
         "2026-05|ch|unattributed|cost_to_serve_c", 200),
        (f"cvm:{{p{Keys().partition_of('C9')}}}:trends", "2026-05|ch|unattributed|net_c", -200),
    }


def test_a_late_event_corrects_the_closed_periods_it_precedes() -> None:
    """A contact from January that arrives with an April order (another topic, read later)
    lowers the net contribution of January, February and March at their ends, and the
    trend rows of those periods with it."""
    model, cuts, keys = ValueModel(), Cuts(), Keys()
    config = HistoryConfig("month", 24, 0.25)
    src = iter(range(100))
    order1 = Purchase("o1", "C1", ms(2026, 1, 10), "order", 10_000, 6_000, "web")
    order2 = Purchase("o2", "C1", ms(2026, 2, 10), "order", 4_000, 2_000, "web")
    state = CustomerState("C1")
    fields: dict[str, str] = {}
    shard: dict[str, int] = {}

    def step(events: list[Event]) -> None:
        nonlocal state, fields
        trail = Trail("month")
        before_batch = state
        for event in events:
            after, _ = ingest(state, event, Source("t", 0, next(src)))
            trail.observe(state, after, event)
            state = after
        v = value_one(model, state, state.last_event or 0, 365.0)
        change = extend(Change("C1", "", {}), keys, Loaded(before_batch, "v", fields), state, v,
                        cuts, lambda pairs: value_states(model, pairs, 365.0), config, trail)
        fields = {**fields, **change.fields}
        for _, name, delta in change.increments:
            shard[name] = shard.get(name, 0) + delta

    step([order1])
    step([order2])
    late = ServiceContact("s1", "C1", ms(2026, 1, 25), "phone", "complaint", 700, False, None)
    step([Purchase("o3", "C1", ms(2026, 4, 2), "order", 1_000, 500, "web"), late])
    _, points = unpack(fields[HISTORY])
    assert [(period_label(p.period, "month"), p.net_c) for p in points] == [
        ("2026-01", 4_000 - 700), ("2026-02", 6_000 - 700), ("2026-03", 6_000 - 700),
        ("2026-04", 6_500 - 700)]
    rows = summarize(shard, "month")
    assert [round(r["net_contribution"] * 100) for r in rows] == [3_300, 5_300, 5_300, 5_800]
    assert rows[0]["net_contribution_in_period"] == 40.0 - 7.0  # o1 and the late contact


def test_history_settings_are_checked() -> None:
    from stream_app.settings import Settings, SettingsError

    s = Settings.from_env({"CVM_HISTORY_PERIOD": "Week", "CVM_HISTORY_MAX_POINTS": "52"})
    assert HistoryConfig.from_settings(s) == HistoryConfig("week", 52, s.winback_p_alive_threshold)
    with pytest.raises(SettingsError, match="CVM_HISTORY_PERIOD"):
        Settings.from_env({"CVM_HISTORY_PERIOD": "quarter"})
    with pytest.raises(SettingsError, match="CVM_HISTORY_MAX_POINTS"):
        Settings.from_env({"CVM_HISTORY_MAX_POINTS": "121"})
