"""`cvm evaluate` without Kafka or Redis: split, statistics, references, metrics, report.

Also the transaction-log generator (`load.translog`) that the end-to-end test feeds it.
"""

from __future__ import annotations

import doctest
import math
from dataclasses import fields
from decimal import Decimal
from pathlib import Path

import numpy as np
import orjson
import pytest

from load import translog
from stream_app import cli, evaluation
from stream_app.domain import clv
from stream_app.domain.clv import BgNbdParams
from stream_app.evaluation import (
    BatchFit,
    CustomerStats,
    Evaluation,
    Metrics,
    Window,
    batch_predictions,
    by_frequency,
    customer_stats,
    fit_batch,
    metrics,
    metrics_table,
    naive_predictions,
    render_report,
    report_json,
    split,
)
from stream_app.replay import LogFormat, Transaction, parse_log
from stream_app.settings import Settings, Topics

DAY = 86_400_000


def tx(line: int, cid: str, day: float, amount: str) -> Transaction:
    return Transaction(line, cid, int(day * DAY), Decimal(amount))


#: Calibration ends on day 10, the holdout on day 20.
WINDOW = Window(calibration_end=10 * DAY, holdout_end=20 * DAY)
ROWS = [
    tx(1, "A", 0.25, "10"),
    tx(2, "A", 0.75, "5"),  # same day as line 1: one purchase day
    tx(3, "A", 4.5, "20"),
    tx(4, "A", 5, "-8"),  # a return: no purchase day, lowers net revenue
    tx(5, "A", 12, "30"),
    tx(6, "A", 12.9, "1"),  # same holdout day
    tx(7, "A", 15, "-4"),
    tx(8, "B", 9.99, "7"),
    tx(9, "C", 11, "50"),  # first seen in the holdout: not evaluated
    tx(10, "B", 20, "99"),  # at holdout end: ignored
    tx(11, "D", 3, "-5"),  # only a return: not a calibration customer
]


def test_split_boundaries() -> None:
    parts = split(ROWS, WINDOW)
    assert [t.line for t in parts.calibration] == [1, 2, 3, 4, 8, 11]
    assert [t.line for t in parts.holdout] == [5, 6, 7, 9]
    assert parts.after == 1


def test_window_must_have_a_holdout() -> None:
    with pytest.raises(evaluation.EvaluationError):
        Window(10 * DAY, 10 * DAY)
    assert Window(0, 273 * DAY).holdout_days == 273


def test_customer_stats_by_hand() -> None:
    a, b = customer_stats(ROWS, WINDOW)
    # A: purchase days 0 and 4 -> x=1, t_x=4, T=10; calibration net 10+5+20-8 = 27
    assert (a.customer_id, a.x, a.t_x, a.T, a.first_day) == ("A", 1, 4, 10.0, 0)
    assert a.calibration_net == 27.0 and a.mean_spend == 13.5
    # holdout: day 12 twice (one purchase day), net 30 + 1 - 4
    assert (a.holdout_purchases, a.holdout_spend) == (1, 27.0)
    # B bought on day 9 (9.99 is still day 9): T = 1; its day-20 order is after the holdout
    assert (b.customer_id, b.x, b.t_x, b.T, b.holdout_purchases, b.holdout_spend) == (
        "B", 0, 0, 1.0, 0, 0.0)


def test_T_is_fractional_when_calibration_ends_within_a_day() -> None:
    (s,) = customer_stats([tx(1, "A", 2.5, "1")], Window(int(10.5 * DAY), 20 * DAY))
    assert s.T == 8.5


def test_mean_spend_is_never_negative() -> None:
    s = CustomerStats("A", x=1, t_x=1, T=5.0, first_day=0, calibration_net=-3.0,
                      holdout_purchases=0, holdout_spend=0.0)
    assert s.mean_spend == 0.0


def test_naive_rate_extrapolation_by_hand() -> None:
    stats = customer_stats(ROWS, WINDOW)
    purchases, spend = naive_predictions(stats, WINDOW.holdout_days)
    # A: 2 purchase days in 10 days -> 0.2 a day x 10 days; B: 1 in 1 day -> 10
    assert purchases.tolist() == [2.0, 10.0]
    assert spend.tolist() == [2.0 * 13.5, 10.0 * 7.0]


def test_metrics_by_hand() -> None:
    m = metrics([0.0, 2.0, 4.0, 2.0], [1.0, 1.0, 5.0, 1.0])
    assert m.n == 4
    assert m.mae == pytest.approx((1 + 1 + 1 + 1) / 4)
    assert m.rmse == pytest.approx(1.0)
    # predicted deviations (-2, 0, 2, 0), actual deviations (-1, -1, 3, -1):
    # cov = 2 + 0 + 6 + 0 = 8, |p| = sqrt 8, |a| = sqrt 12 -> r = 8 / sqrt 96
    assert m.pearson == pytest.approx(8 / math.sqrt(96))
    assert (m.total_predicted, m.total_actual) == (8.0, 8.0)
    assert m.total_error == 0.0


def test_metrics_without_variance_or_actuals() -> None:
    m = metrics([1.0, 1.0], [0.0, 0.0])
    assert m.pearson is None and m.total_error is None and m.mae == 1.0
    with pytest.raises(ValueError):
        metrics([1.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        metrics([], [])


def test_by_frequency_groups_the_tail() -> None:
    x = [0, 0, 1, 3, 7, 8, 30]
    actual = [0, 1, 2, 3, 4, 6, 8]
    rows = by_frequency(x, actual, {"m": [1, 1, 1, 1, 1, 1, 4]})
    assert [r["frequency"] for r in rows] == ["0", "1", "2", "3", "4", "5", "6", "7+"]
    assert [r["customers"] for r in rows] == [2, 1, 0, 1, 0, 0, 0, 3]
    assert rows[0]["actual"] == 0.5 and rows[2]["actual"] is None and rows[2]["m"] is None
    assert rows[7]["actual"] == 6.0 and rows[7]["m"] == 2.0


def _simulated_stats(n: int, seed: int) -> list[CustomerStats]:
    rng = np.random.default_rng(seed)
    bg = translog.TRUE_BGNBD
    T = np.floor(rng.uniform(189, 273, n))
    x, t_x, T = clv.simulate_bgnbd(bg, n, T, rng)
    spend = rng.gamma(20, 2.0, n)
    return [
        CustomerStats(f"C{i}", int(x[i]), int(round(t_x[i])), float(T[i]), 0,
                      float(spend[i] * (x[i] + 1)), 0, 0.0)
        for i in range(n)
    ]


def test_batch_fit_and_predictions() -> None:
    stats = _simulated_stats(4000, seed=5)
    fit = fit_batch(stats)
    assert fit.bg.converged and fit.gg is not None and fit.gg.converged
    assert fit.bg.n == 4000
    assert fit.bg.params.r == pytest.approx(translog.TRUE_BGNBD.r, rel=0.25)
    purchases, spend = batch_predictions(fit, stats[:3], 100.0)
    s = stats[0]
    assert purchases[0] == pytest.approx(
        clv.expected_purchases(fit.bg.params, 100.0, s.x, s.t_x, s.T))
    assert spend is not None
    per_day = clv.expected_spend(fit.gg.params, s.x, s.mean_spend, spend_basis="all")
    assert spend[0] == pytest.approx(purchases[0] * per_day)


def test_no_batch_spend_without_a_converged_gamma_gamma_fit() -> None:
    stats = _simulated_stats(200, seed=1)
    fit = fit_batch(stats)
    purchases, spend = batch_predictions(BatchFit(fit.bg, None), stats, 10.0)
    assert spend is None and purchases.shape == (200,)


# --------------------------------------------------------------------------- the report


def _evaluation() -> Evaluation:
    stats = _simulated_stats(500, seed=2)
    fit = fit_batch(stats)
    m = Metrics(n=500, mae=1.25, rmse=2.5, pearson=0.75, total_predicted=110.0,
                total_actual=100.0)
    naive = Metrics(n=500, mae=3.5, rmse=4.0, pearson=None, total_predicted=0.0,
                    total_actual=100.0)
    engine_model = {
        "version": 3, "as_of": "1997-10-01T00:00:00.000Z",
        "bgnbd": {"r": 2.1, "alpha": 81.0, "a": 0.52, "b": 2.05},
        "gamma_gamma": {"p": 6.0, "q": 3.5, "v": 15.0},
        "bgnbd_log_likelihood": -1234.5, "bgnbd_n": 500,
        "gamma_gamma_log_likelihood": -99.0, "gamma_gamma_n": 499,
    }
    return Evaluation(
        command="cvm evaluate log.txt --calibration-end 1997-10-01 --holdout-end 1998-07-01",
        generated_at="2026-01-02T03:04:05Z",
        log_path="log.txt",
        window=Window(875_664_000_000, 875_664_000_000 + 273 * DAY),
        counts={"rows": 1000, "bad_rows": 2, "calibration_rows": 700, "holdout_rows": 300,
                "holdout_rows_new_customers": 0, "after_rows": 0, "customers": 500,
                "engine_valued": 500, "evaluated": 500},
        engine_model=engine_model,
        batch=fit,
        own_data_ll={"bgnbd": {"engine": -1240.25, "batch": fit.bg.log_likelihood},
                     "gamma_gamma": {"engine": -100.0, "batch": -98.0}},
        metrics={"purchases": {"engine": m, "batch": m, "naive": naive},
                 "spend": {"engine": m}},
        frequency=by_frequency([0, 1, 9], [0.5, 1.0, 7.0],
                               {"engine": [0.4, 1.1, 6.5], "batch": [0.4, 1.1, 6.5],
                                "naive": [1.0, 2.0, 9.0]}),
        environment={"CVM_PARTITIONS": "4"},
        timings={"total": 12.5},
        notes=["something to know"],
        lookup_check={"customers": 300, "max_abs_diff_purchases": 4e-5,
                      "max_abs_diff_spend": 0.004, "disagreeing": 0, "agree": True,
                      "examples": []},
    )


def test_metrics_table() -> None:
    ev = _evaluation()
    table = metrics_table(ev.metrics).splitlines()
    assert table[0].startswith("| target | method | n | MAE | RMSE | Pearson r |")
    assert table[2] == ("| purchases | engine (streaming BG/NBD + Gamma-Gamma) | 500 | 1.250 | "
                        "2.500 | 0.750 | 110.0 | 100.0 | +10.0% |")
    assert table[4] == ("| purchases | naive rate extrapolation | 500 | 3.500 | 4.000 | - | "
                        "0.0 | 100.0 | -100.0% |")
    assert len(table) == 2 + 4


def test_render_report() -> None:
    ev = _evaluation()
    text = render_report(ev)
    assert text.startswith("# Holdout evaluation of the value model\n")
    assert "Generated 2026-01-02T03:04:05Z by:" in text
    assert "```\ncvm evaluate log.txt --calibration-end 1997-10-01 --holdout-end 1998-07-01\n```" \
        in text
    batch_r = f"{ev.batch.bg.params.r:,.4f}"
    assert f"| BG/NBD | r | 2.1000 | {batch_r} |" in text
    assert "| BG/NBD | alpha (days) | 81.0000 |" in text
    assert "| BG/NBD | log-likelihood (own input) | -1,234.50 |" in text
    assert "| BG/NBD | log-likelihood on this log's calibration (x, t_x, T) | -1,240.25 |" in text
    assert "| BG/NBD | n (customers) | 500 | 500 | |" in text
    assert "| Gamma-Gamma | n (customers) | 499 |" in text
    assert metrics_table(ev.metrics) in text
    assert "| 7+ | 1 | 7.000 | 6.500 | 6.500 | 9.000 |" in text
    assert "![mean holdout purchases by calibration frequency](purchases_by_frequency.png)" in text
    assert "- something to know" in text
    assert "on 300 sampled customers agreed" in text
    assert "1997-10-01T00:00:00Z" in text and "273 days" in text


def test_report_json_is_serialisable_and_complete() -> None:
    ev = _evaluation()
    doc = orjson.loads(orjson.dumps(report_json(ev), option=orjson.OPT_SERIALIZE_NUMPY))
    assert doc["params"]["engine"]["bgnbd"] == {"r": 2.1, "alpha": 81.0, "a": 0.52, "b": 2.05}
    assert set(doc["params"]["batch"]["bgnbd"]) == {"r", "alpha", "a", "b"}
    assert doc["metrics"]["purchases"]["engine"]["mae"] == 1.25
    assert doc["metrics"]["purchases"]["engine"]["total_error"] == pytest.approx(0.1)
    assert doc["metrics"]["purchases"]["naive"]["pearson"] is None
    assert doc["window"] == {"calibration_end": "1997-10-01T00:00:00Z",
                             "holdout_end": "1998-07-01T00:00:00Z", "holdout_days": 273.0}
    assert doc["by_frequency"][0]["frequency"] == "0"


def test_plot_is_a_png(tmp_path: Path) -> None:
    ev = _evaluation()
    path = tmp_path / "plot.png"
    evaluation.plot_by_frequency(ev.frequency, ["engine", "batch", "naive"], path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- the shell's pure parts


def test_isolated_settings_and_worker_environment(tmp_path: Path) -> None:
    base = Settings(redis_url="redis://:pw@redis.example:6380/0", partitions=3)
    s = evaluation.isolated_settings(base, "r1", 14, str(tmp_path))
    assert s.app_id == "cvm-eval-r1" and s.partitions == 3
    names = list(evaluation.topic_partitions(s))
    assert set(names) >= {*s.topics.inputs, *s.topics.outputs}
    assert len(set(names)) == len(fields(Topics)) and all(n.startswith("cvm-eval-r1.")
                                                          for n in names)
    assert s.redis_url == "redis://:pw@redis.example:6380/14"
    assert s.web_port != base.web_port and s.fit_interval_s >= 1e6
    again = Settings.from_env(evaluation.worker_env(s))
    for name in ("kafka_bootstrap_servers", "redis_url", "app_id", "topics", "partitions",
                 "web_port", "data_dir", "fit_interval_s", "rescore_interval_s",
                 "wall_clock_watermark", "group_instance_id"):
        assert getattr(again, name) == getattr(s, name), name
    assert evaluation._redact(s.redis_url) == "redis://:***@redis.example:6380/14"


def test_cli_parses_evaluate_flags() -> None:
    args = cli.parser().parse_args([
        "evaluate", "log.txt", "--calibration-end", "1997-10-01", "--holdout-end", "19980701",
        "--redis-db", "7", "--lookups", "all", "--amount-col", "3",
    ])
    assert args.func is evaluation.run and args.redis_db == 7 and args.lookups == "all"
    assert args.amount_col == 3 and str(args.report_dir) == "reports/evaluation"
    assert cli.parser().parse_args(["evaluate", "f", "--calibration-end", "1",
                                    "--holdout-end", "2"]).lookups == 300
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["evaluate", "f", "--calibration-end", "1",
                                 "--holdout-end", "2", "--lookups", "some"])


def test_run_rejects_unusable_dates(capsys: pytest.CaptureFixture[str]) -> None:
    args = cli.parser().parse_args(["evaluate", "f", "--calibration-end", "1998-07-01",
                                    "--holdout-end", "1997-10-01"])
    assert evaluation.run(Settings(), args) == 2
    assert "is not after calibration end" in capsys.readouterr().err
    args = cli.parser().parse_args(["evaluate", "f", "--calibration-end", "soon",
                                    "--holdout-end", "1997-10-01"])
    assert evaluation.run(Settings(), args) == 2


def test_docstring_examples() -> None:
    result = doctest.testmod(evaluation, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# --------------------------------------------------------------------------- load.translog


def test_translog_is_deterministic_and_cdnow_shaped(tmp_path: Path) -> None:
    config = translog.TranslogConfig(n_customers=300, seed=9)
    path = tmp_path / "log.txt"
    doc = translog.write_log(path, config)
    again = tmp_path / "again.txt"
    translog.write_log(again, config)
    assert path.read_bytes() == again.read_bytes()
    assert doc["bgnbd"] == {"r": 2.0, "alpha": 80.0, "a": 0.5, "b": 2.0}
    assert doc["gamma_gamma"] == {"p": 6.25, "q": 3.74, "v": 15.44} and doc["time_unit"] == "days"
    lines = path.read_text().splitlines()
    assert len(lines) == doc["lines"]
    ids, days, amounts = zip(*(ln.split() for ln in lines), strict=True)
    assert ids == tuple(sorted(ids)) and len(set(ids)) == 300 and len(ids[0]) == 5
    assert min(days) >= "19970101" and max(days) <= "19980630"  # 546 days
    assert all(float(a) >= 0.01 for a in amounts)
    # everyone's first purchase falls in the acquisition window
    first = {}
    for cid, day in zip(ids, days, strict=True):
        first.setdefault(cid, day)
    assert max(first.values()) < "19970326"
    # the replay parser reads it as it is
    log = parse_log(lines, LogFormat())
    assert not log.bad and len(log.transactions) == len(lines)


def test_translog_follows_the_bgnbd_process() -> None:
    """Mean repeat purchases per customer match E[X(t)] of the true BG/NBD parameters."""
    config = translog.TranslogConfig(n_customers=6000, seed=4, days=273)
    purchases = translog.simulate(config)
    first: dict[int, float] = {}
    count: dict[int, int] = {}
    for p in purchases:
        first.setdefault(p.customer, p.day)
        count[p.customer] = count.get(p.customer, 0) + 1
    repeats = np.array([count[c] - 1 for c in sorted(count)], dtype=float)
    # each customer is observed from the first purchase (uniform over 84 days) to day 273
    t = np.linspace(273 - 84, 273, 201)
    expected = float(np.mean(clv.expected_purchases_new(translog.TRUE_BGNBD, t)))
    assert repeats.mean() == pytest.approx(expected, rel=0.06)


def test_translog_command_prints_the_truth(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "log.txt"
    truth = tmp_path / "truth.json"
    assert translog.main(["--customers", "20", "--seed", "3", "--out", str(out),
                          "--truth", str(truth), "--alpha", "60", "--gg-p", "5"]) == 0
    printed = orjson.loads(capsys.readouterr().out)
    assert printed == orjson.loads(truth.read_bytes())
    assert printed["bgnbd"]["alpha"] == 60.0 and printed["gamma_gamma"]["p"] == 5.0
    assert printed["n_customers"] == 20 and out.exists()


def test_translog_docstring_examples() -> None:
    result = doctest.testmod(translog)
    assert result.attempted > 0 and result.failed == 0


def test_translog_rejects_a_bad_config() -> None:
    with pytest.raises(ValueError):
        translog.TranslogConfig(n_customers=0)
    with pytest.raises(ValueError):
        translog.TranslogConfig(acquisition_days=600, days=546)
    assert isinstance(translog.TRUE_BGNBD, BgNbdParams)
