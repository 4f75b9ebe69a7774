"""Alert rules re-decided from a trace make the alerts the study's replay makes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from load.alert_fit import BEFORE, Rule, _held, alerts_of, evaluate, grid, load, main, pick
from load.alert_study import Scores
from load.alert_study import main as study_main
from stream_app.domain.alerts import AlertPolicy

#: The study's candidate that is `AlertPolicy()`.
DEFAULT = "last order's value, P(alive) fall 0.9, score 2.5, churn 0.5, lapsed 90"


def test_a_trace_re_decides_the_replays_alerts_for_every_policy(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The default, the one before it, one with the contact surge and one of the grid (a
    higher churn threshold, the weights before the default's): the same alerts as the
    replay's."""
    path = tmp_path / "trace.pkl"
    assert study_main(["--customers", "60", "--days", "280", "--warmup-days", "100",
                       "--candidates", f"{DEFAULT};"
                       "reweighed, score 2.9;reweighed, score 2.9, contact surge;"
                       "reweighed, score 2.4, churn 0.8, lapsed 90",
                       "--trace", str(path), "--out", str(tmp_path / "alerts")]) == 0
    trace = load(str(path))
    assert len(trace.rows) > 100 and trace.complete  # every scoring: the default needs them
    default = evaluate(trace, Rule(AlertPolicy()))
    assert default == trace.scores[DEFAULT]
    assert evaluate(trace, Rule(BEFORE)) == trace.scores["reweighed, score 2.9"]
    surge = Rule(replace(BEFORE, contact_surge=2.0))
    assert evaluate(trace, surge) == trace.scores["reweighed, score 2.9, contact surge"]
    assert alerts_of(trace, Rule(AlertPolicy()))  # the population raises some alerts
    assert main([str(path), "--choose", "7"]) == 0  # the comparison runs on it
    (_, high), = grid([0.8], [2.4], {"p_alive_drop": [0.5]})
    high = replace(high, policy=replace(high.policy, value_at_last_order=False))
    assert evaluate(trace, high) == trace.scores["reweighed, score 2.4, churn 0.8, lapsed 90"]
    capsys.readouterr()
    assert main([str(path), "--choose", "7", "--grid", "0.5,0.8;2.5"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| churn")]
    s = default
    assert [r.split(" | ")[0] for r in rows] == ["| churn 0.5, score 2.5", "| churn 0.8, score 2.5"]
    assert rows[0].split(" | ")[1].startswith(f"{s.recall_ahead():.3f} at {s.precision:.3f}, "
                                              f"{s.median_lead_days:.0f} d")


def test_the_pick_needs_precision_on_every_choice_population() -> None:
    good = Scores(100, 55, 0, 100, 60, 50, (20.0,) * 52, 500.0)
    more = Scores(100, 49, 0, 100, 60, 50, (20.0,) * 60, 500.0)
    tied = Scores(90, 50, 0, 100, 60, 50, (20.0,) * 51, 450.0)
    assert pick({"good": [good, good], "more": [more, good]}) == "good"
    assert pick({"good": [good, good], "tied": [tied, tied]}) == "tied"
    assert pick({"more": [more, more]}) is None


def test_held_signals_add_up_over_their_span_and_then_lapse() -> None:
    day = 86_400_000
    held: dict[str, tuple[float, int]] = {}
    assert _held(held, [("complaints", 2.0)], 0, 7 * day) == [("complaints", 2.0)]
    # Five days on, the complaint counts still, at its strength then, next to a later signal.
    assert sorted(_held(held, [("recency_gap", 1.2), ("complaints", 1.0)], 5 * day, 7 * day)) == [
        ("complaints", 2.0), ("recency_gap", 1.2)]
    # Eight days after it, the complaint no longer counts unless it fires again.
    assert _held(held, [("recency_gap", 1.3)], 8 * day, 7 * day) == [("recency_gap", 1.3)]


def test_the_grid_refuses_a_weight_of_no_signal(tmp_path: Path) -> None:
    path = tmp_path / "none.pkl"
    path.write_bytes(b"")
    with pytest.raises(SystemExit) as e:
        main([str(path), "--choose", "7", "--grid", "0.5;2.5", "--weight", "p_alive=0.7"])
    assert e.value.code == 2


def test_a_trace_of_the_valuable_scorings_only_refuses_the_tier_at_the_last_order(
        tmp_path: Path) -> None:
    """Without the scorings below the value floor, a customer valuable by their last order
    cannot be re-decided: refused, rather than figures that would look right."""
    path = tmp_path / "trace.pkl"
    assert study_main(["--customers", "60", "--days", "280", "--warmup-days", "100",
                       "--candidates", "reweighed, score 2.9", "--trace", str(path),
                       "--out", str(tmp_path / "alerts")]) == 0
    trace = load(str(path))
    assert not trace.complete
    assert evaluate(trace, Rule(BEFORE)) == trace.scores["reweighed, score 2.9"]
    with pytest.raises(ValueError, match="every scoring"):
        evaluate(trace, Rule(AlertPolicy()))
