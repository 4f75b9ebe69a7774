"""The alert study's metrics on hand-made cases, and one tiny run that writes the report."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from load.alert_study import (
    CANDIDATES,
    NEVER,
    PRE_STUDY_WEIGHTS,
    TREND_PRECURSORS,
    Periods,
    Scores,
    Window,
    base_rate,
    caught,
    ceiling,
    choose,
    current_dropout,
    f1,
    is_right,
    main,
    operator_load,
    periods_of,
    policy_of,
    score,
    warned_share,
)
from stream_app.domain.events import MS_PER_DAY

D = MS_PER_DAY
H = 90 * D
# Alive days 0..100, gone, won back on day 300, gone again on day 350.
WON_BACK = Periods(starts=(0, 300 * D), ends=(100 * D, 350 * D))


def test_an_alert_is_about_the_dropout_of_its_period_or_the_one_before() -> None:
    assert current_dropout(50 * D, WON_BACK) == 100 * D  # alive: the coming dropout
    assert current_dropout(100 * D, WON_BACK) == 100 * D  # the dropout itself
    assert current_dropout(200 * D, WON_BACK) == 100 * D  # gone: the dropout that left them
    assert current_dropout(300 * D, WON_BACK) == 350 * D  # back: the next dropout
    assert current_dropout(-1, WON_BACK) is None


def test_right_means_the_dropout_within_h_on_either_side() -> None:
    assert is_right(10 * D, 100 * D, H)  # defects 90 days later: just within
    assert not is_right(9 * D, 100 * D, H)  # 91 days later
    assert is_right(190 * D, 100 * D, H)  # gone 90 days ago: late but right
    assert not is_right(191 * D, 100 * D, H)  # gone longer: a win-back case
    assert not is_right(0, NEVER, H) and not is_right(0, None, H)


def test_caught_takes_the_first_right_alert_of_the_same_episode() -> None:
    assert caught([5 * D, 30 * D, 120 * D], 100 * D, WON_BACK, H) == 30 * D
    # an alert after the return is about the next dropout, not the first one
    assert caught([310 * D], 100 * D, WON_BACK, H) is None
    assert caught([310 * D], 350 * D, WON_BACK, H) == 310 * D


def test_score_on_a_small_population() -> None:
    truth = {
        "A": Periods((0,), (100 * D,)),  # defects on day 100, alerted 40 days before
        "B": Periods((0,), (NEVER,)),  # stays: its alert is wrong
        "C": Periods((0,), (150 * D,)),  # valuable, defects, never alerted: a miss
        "E": Periods((0,), (120 * D,)),  # defects, alerted 20 days late: right, late, caught
        "F": Periods((0,), (100 * D,)),  # defects but never valuable: not an episode
        "G": Periods((0,), (260 * D,)),  # valuable, defects after the window: not a miss
    }
    alerts = {"A": [60 * D], "B": [50 * D], "E": [140 * D]}
    valuable = {"A": [30 * D], "B": [30 * D], "C": [100 * D], "E": [90 * D],
                "G": [200 * D]}
    s = score(alerts, truth, valuable, Window(0, 200 * D), H, 3_000.0)
    assert (s.alerts, s.right, s.late) == (3, 2, 1)
    assert s.precision == pytest.approx(2 / 3) and s.late_share == 0.5
    assert (s.episodes, s.caught, s.caught_in_time) == (3, 2, 1)
    assert s.recall == pytest.approx(2 / 3) and s.recall_in_time == pytest.approx(1 / 3)
    assert sorted(s.leads_days) == [-20.0, 40.0] and s.median_lead_days == 10.0
    assert s.f1 == pytest.approx(2 / 3)
    assert s.load == pytest.approx(30.0)  # 3 alerts over 3,000 valuable customer-days


def test_alerts_outside_the_window_are_not_counted_but_may_catch() -> None:
    truth = {"A": Periods((0,), (100 * D,))}
    s = score({"A": [20 * D]}, truth, {"A": [20 * D]}, Window(50 * D, 200 * D), H, 100.0)
    assert s.alerts == 0 and math.isnan(s.precision)
    assert (s.episodes, s.caught) == (1, 1)


def test_no_alerts_and_no_episodes_give_nan_not_an_error() -> None:
    s = score({}, {"A": Periods((0,), (NEVER,))}, {}, Window(0, D), H, 0.0)
    assert math.isnan(s.precision) and math.isnan(s.recall) and math.isnan(s.f1)
    assert math.isnan(s.median_lead_days) and math.isnan(s.load)


def test_operator_load_and_f1() -> None:
    assert operator_load(60, 60_000.0) == 30.0  # 2,000 customers for 30 days, 60 alerts
    assert f1(1.0, 1.0) == 1.0 and f1(0.0, 0.0) == 0.0


def test_base_rate_is_the_precision_of_alerting_at_every_valuable_scoring() -> None:
    truth = {"A": Periods((0,), (100 * D,)), "B": Periods((0,), (NEVER,))}
    valuable = {"A": [5 * D, 20 * D, 500 * D], "B": [20 * D, 30 * D]}
    assert base_rate(valuable, truth, Window(0, 100 * D), H) == 0.25


def test_choose_prefers_f1_within_the_load_cap_and_the_lower_load_on_a_tie() -> None:
    def s(right: int, alerts: int, hit: int, load: float) -> Scores:
        return Scores(alerts, right, 0, 100, hit, hit, (), load)

    rows = {"flood": s(100, 200, 80, 900.0), "lean": s(40, 60, 50, 80.0),
            "leaner": s(39, 59, 50, 70.0), "quiet": s(10, 12, 10, 10.0)}
    assert choose(rows, max_load=150.0)[0] == "leaner"
    assert choose(rows)[0] == "flood"
    assert choose({"flood": rows["flood"]}, max_load=1.0)[0] == "flood"  # none fits: all count


def test_periods_of_a_ground_truth_row_uses_the_latent_dropout_past_the_end() -> None:
    row = {
        "periods": [{"start": "2025-01-01T00:00:00.000Z", "end": "2025-01-11T00:00:00.000Z"},
                    {"start": "2025-02-01T00:00:00.000Z", "end": None}],
        "latent_dropout_day": 400.0,
    }
    start = 1_735_689_600_000  # 2025-01-01
    p = periods_of(row, start)
    assert p.starts == (start, start + 31 * D)
    assert p.ends == (start + 10 * D, start + 400 * D)
    assert periods_of({**row, "latent_dropout_day": None}, start).ends[-1] == NEVER


def test_candidates_start_from_the_pre_study_policy() -> None:
    p = policy_of({"min_signals": 2})
    assert (p.min_signals, p.churn_threshold, p.cooldown_days, p.min_score) == (2, 0.5, 14.0, 0.0)
    assert (p.sentiment, p.weights) == (-0.5, PRE_STUDY_WEIGHTS)


def test_a_dropout_is_warned_of_by_a_precursor_14_to_60_days_before_it() -> None:
    warnings = {"A": [(30 * D, "complaint")], "B": [(90 * D, "complaint")],
                "C": [(20 * D, "unsubscribed"), (50 * D, "negative_sentiment")]}
    dropouts = [("A", 100 * D), ("B", 100 * D), ("C", 100 * D), ("D", 100 * D)]
    # A: 70 days before (too early for the decline), B: 10 days (too late), C: 50 days
    assert warned_share(warnings, dropouts, 14 * D, 60 * D) == 0.25
    assert warned_share(warnings, dropouts, 14 * D, 75 * D) == 0.5
    assert warned_share(warnings, dropouts, 5 * D, 60 * D, kinds=("complaint",)) == 0.25


def test_the_ceiling_of_a_silent_population_is_nil_and_of_a_warning_one_is_not() -> None:
    from load.simulator import SimConfig

    config = SimConfig(n_customers=300, days=200, seed=5, precursors=True)
    warned = ceiling(config, horizon_days=30, warmup_days=60)
    assert warned["dropouts"] > 20 and warned["any"] > 0.2
    silent = ceiling(SimConfig(n_customers=300, days=200, seed=5, precursors=True,
                               silent_share=1.0, contact_rate=0.0, touch_rate=0.0),
                     horizon_days=30, warmup_days=60)
    assert silent["any"] == 0.0


def test_a_tiny_run_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "alerts"
    assert main(["--customers", "80", "--days", "280", "--warmup-days", "100",
                 "--out", str(out)]) == 0
    text = (out / "study.md").read_text()
    assert "## Choice" in text and "| candidate |" in text and "precision" in text
    assert (out / "precision_recall.png").stat().st_size > 0
    assert (out / "lead_time.png").stat().st_size > 0


def test_the_ceiling_also_counts_trends_and_how_often_calm_customers_show_them() -> None:
    from load.simulator import SimConfig

    shares = ceiling(SimConfig(n_customers=300, days=200, seed=5, precursors=True),
                     horizon_days=30, warmup_days=60)
    assert shares["any, trends included"] >= max(shares["any"], shares["any trend"])
    assert shares["any trend"] >= max(shares[f"trend:{k}"] for k in TREND_PRECURSORS)
    assert shares["trend:longer_gaps"] > 0
    assert all(0 <= shares[f"calm:{k}"] < 1 for k in TREND_PRECURSORS)


def test_a_run_replays_only_the_candidates_asked_for(tmp_path: Path) -> None:
    out = tmp_path / "alerts"
    names = "score 4, churn 0.4;reweighed, score 2.9"
    assert main(["--customers", "60", "--days", "280", "--warmup-days", "100",
                 "--candidates", names, "--out", str(out)]) == 0
    rows = [line for line in (out / "study.md").read_text().splitlines()
            if line.startswith("| 1 |") or line.startswith("| 2 |") or line.startswith("| 3 |")]
    assert len(rows) == 2 and "score 4, churn 0.4" in rows[0] and "reweighed, score 2.9" in rows[1]
    with pytest.raises(SystemExit):
        main(["--candidates", "no such policy", "--out", str(out)])


def test_the_default_policy_is_a_candidate() -> None:
    from stream_app.domain.alerts import AlertPolicy

    assert any(policy_of(changes) == AlertPolicy() for changes in CANDIDATES.values())
