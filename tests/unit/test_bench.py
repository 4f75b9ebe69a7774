"""The benchmark's pure helpers: percentiles, steady rates, tables, profile categories."""

from __future__ import annotations

import math

import numpy as np
import pytest

from load.bench_profile import parse_pyspy_raw, pyspy_spans
from load.bench_report import targets
from load.bench_stats import (
    Target,
    categorize_stack,
    markdown_table,
    percentile,
    steady_rate,
    summarize,
    text_table,
)


@pytest.mark.parametrize("q", [0, 1, 25, 50, 90, 95, 99, 99.9, 100])
def test_percentile_matches_numpy_linear(q: float) -> None:
    values = list(np.random.default_rng(3).exponential(1.0, 1001))
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_edges() -> None:
    assert math.isnan(percentile([], 50))
    assert percentile([5.0], 0) == percentile([5.0], 100) == 5.0
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summarize_reports_milliseconds() -> None:
    lat = summarize([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert lat.n == 100
    assert lat.p50_ms == pytest.approx(50.5)
    assert lat.p99_ms == pytest.approx(99.01)
    assert lat.max_ms == 100.0
    assert lat.mean_ms == pytest.approx(50.5)
    empty = summarize([])
    assert empty.n == 0 and math.isnan(empty.p99_ms)


def test_steady_rate_ignores_startup_and_tail() -> None:
    # Slow start (10/s), steady 1000/s, then the drained tail stays flat.
    samples = [(t * 0.5, min(int(5 * t), 50)) for t in range(20)]
    base = samples[-1][0]
    samples += [(base + 0.5 * k, 50 + 500 * k) for k in range(1, 20)]
    samples += [(samples[-1][0] + 0.5 * k, samples[-1][1]) for k in range(1, 10)]
    total = samples[-1][1]
    rate, t0, t1 = steady_rate(samples, total, lo=0.05, hi=0.95)
    assert rate == pytest.approx(1000.0, rel=1e-6)
    assert t0 > base and t1 < samples[-1][0]


def test_steady_rate_min_t_and_too_few_samples() -> None:
    samples = [(float(t), 100 * t) for t in range(11)]
    rate, t0, _ = steady_rate(samples, 1000, lo=0.0, hi=1.0, min_t=5.0)
    assert rate == pytest.approx(100.0) and t0 == 5.0
    assert all(math.isnan(v) for v in steady_rate(samples[:1], 1000))


def test_tables() -> None:
    md = markdown_table(["a", "b|c"], [[1, math.nan], ["x|y", 12345.678]])
    assert md.splitlines() == [
        "| a | b\\|c |", "|---|---|", "| 1 | n/a |", "| x\\|y | 12,345.7 |",
    ]
    text = text_table(["name", "value"], [["long" * 30, 1.5]], width=10)
    assert "longlonglo…" not in text and "longlongl…" in text
    assert Target("t", ">= 1", "0", False, "why").row() == ["t", ">= 1", "0", "NO", "why"]


def test_categorize_stack_leaf_first() -> None:
    pipeline = "process (stream_app/pipeline.py:140)"
    assert categorize_stack([pipeline, "plan (stream_app/planner.py:9)",
                             "format_time (stream_app/store/records.py:90)"]) \
        == "planner + record encoding"
    assert categorize_stack([pipeline, "load_many (stream_app/store/customers.py:80)",
                             "read (redis/_parsers/resp3.py:1)",
                             "readline (asyncio/streams.py:5)"]) \
        == "Redis client (redis-py, load/commit)"
    assert categorize_stack(["_c_aiter (faust/streams.py:1180)",
                             "getone (aiokafka/consumer/consumer.py:1)"]) \
        == "Faust/aiokafka stream overhead"
    assert categorize_stack(["run (asyncio/base_events.py:1)", "select (selectors.py:468)"]) \
        == "asyncio event loop"


def test_parse_pyspy_raw() -> None:
    raw = "\n".join([
        "MainThread;process (stream_app/pipeline.py:140);"
        "value_many (stream_app/domain/valuation.py:130) 7",
        "MainThread;_c_aiter (faust/streams.py:1180) 3",
        "garbage line",
        "",
    ])
    assert parse_pyspy_raw(raw) == {"valuation (numpy/scipy)": 7,
                                    "Faust/aiokafka stream overhead": 3}


def test_pyspy_spans_name_who_spent_the_time() -> None:
    raw = "\n".join([
        "MainThread;Ingestor.process (stream_app/pipeline.py:434);"
        "execute (redis/asyncio/client.py:1) 5",
        "MainThread;Timers.run (stream_app/runtime.py:9);"
        "value_many (stream_app/domain/valuation.py:130) 2",
        "MainThread;_fetcher (faust/transport/consumer.py:1) 3",
        "garbage",
    ])
    assert pyspy_spans(raw) == {"batch step (Ingestor.process and its store calls)": 5,
                                "Faust, aiokafka, the event loop and the rest": 3,
                                "engine timers (rescoring, model refresh, outbox)": 2}


def _results() -> dict:
    """A run's results as `load.bench` saves them, with every target's measurement."""
    return {
        "config": {"fresh_rate": 2000.0, "headline_concurrency": 16},
        "throughput": {
            "rate": 10_000.0,
            "cpu": {"workers_cpu_us_per_event": 100.0, "worker0_cpu_us_per_event": 100.0},
            "raw_consumer": {"events_per_s": 100_000.0, "events_per_cpu_s": 2e5},
            "faust_reader": {"events_per_s": 12_000.0, "cpu_us_per_event": 80.0},
            "quix_ledger": {"events_per_s": 30_000.0, "cpu_us_per_event": 30.0},
        },
        "profile": {"timed": {"server": {"evalsha_us_per_event": 12.0},
                              "rows": [["planner.plan", 40.0, 0.5]]},
                    "untimed": {"cpu_us_per_event": 70.0}},
        "memory": {"scales": [{"customers": 1000, "bytes_per_customer": 900.0,
                               "record_bytes_avg": 700.0, "record_encodings": {},
                               "rank_bytes_per_member": {"clv": 100.0},
                               "keyspace_and_other": 100.0}]},
        "freshness": {
            "phases": [
                {"label": "low rate", "rate": 50.0, "cpu_cores": {},
                 "low rate": {"p50_ms": 20.0, "p99_ms": 40.0, "unseen": 0}},
                {"label": "half capacity", "rate": 5000.0,
                 "cpu_cores": {"worker": 0.5, "machine": 1.0},
                 "half capacity": {"p50_ms": 60.0, "p99_ms": 140.0, "unseen": 0},
                 "worker_loop": {
                     "batch_seconds": {"count": 40, "mean": 0.02, "p99_le": 0.1,
                                       "max_le": 0.25},
                     "batch_records": {"count": 40, "mean": 12.5},
                     "loop_lag_seconds": {"p50_le": 0.001, "p99_le": 0.25, "max_le": 0.5},
                     "timer_seconds": {"revisit": {"count": 10, "mean": 0.15, "max_le": 0.5}},
                     "gc_seconds": {"0": {"count": 0, "sum": 0.0},
                                    "2": {"count": 3, "sum": 0.03, "max_le": 0.025}},
                 }},
            ],
            "lookups": [
                {"kind": "http", "state": "worker idle", "concurrency": 16, "p50_ms": 2.0,
                 "p99_ms": 4.0, "requests_per_s": 4000.0, "worker_cpu_us_per_request": 250.0},
                {"kind": "http", "state": "worker ingesting at half capacity (5,000/s)",
                 "concurrency": 16, "p50_ms": 5.0, "p99_ms": 30.0, "requests_per_s": 500.0},
                {"kind": "lookup", "state": "worker idle", "concurrency": 16, "p50_ms": 1.0,
                 "p99_ms": 2.0, "requests_per_s": 8000.0, "client_cpu_us_per_request": 400.0},
                {"kind": "values", "state": "worker idle", "concurrency": 16, "p50_ms": 1.0,
                 "p99_ms": 1.5, "requests_per_s": 9000.0, "client_cpu_us_per_request": 310.0},
                {"kind": "hgetall", "state": "worker idle", "concurrency": 16, "p50_ms": 0.5,
                 "p99_ms": 1.0, "requests_per_s": 20000.0, "client_cpu_us_per_request": 90.0},
            ],
        },
        "scale_cpu": {"label": "single node", "rows": [
            {"workers": 1, "efficiency": 1.0}, {"workers": 2, "efficiency": 0.85}]},
        "backfill": {"csv": {"vs_read_only": 0.02, "vs_one_worker": 60.0,
                             "floor_vs_read_only": 0.14}},
    }


def test_targets_flag_missed_and_met() -> None:
    by_name = {t.name: t for t in targets(_results())}
    assert by_name["one worker end to end / bare Faust reader"].met  # 10,000 / 12,000
    quix = by_name["one worker end to end / Quix Streams ledger job"]  # 10,000 / 30,000
    assert not quix.met and quix.measured.startswith("0.333")
    assert by_name["worker CPU per event / Faust reader CPU per event"].met  # 100 / 80
    memory = by_name["Redis bytes per customer at 1,000 customers"]
    assert not memory.met and "rank sets" in memory.bound
    assert by_name["Lua (EVALSHA) time per event"].met
    assert by_name["HTTP lookup p99, 16 clients, worker idle"].met
    busy = by_name["HTTP lookup p99, 16 clients, worker ingesting at half capacity (5,000/s)"]
    assert not busy.met and "interpreter lock" in busy.bound
    lookup = by_name["lookup.customer CPU per request (16 at once)"]
    assert not lookup.met and "HGETALL by the same client costs 90 µs" in lookup.bound
    assert "offers 310 µs (so those cost 90)" in lookup.bound
    fresh = by_name["freshness p99 at half capacity (5,000 events/s)"]
    assert not fresh.met and "20.0/40.0 ms" in fresh.bound
    assert "40 batches of 12.5 records" in fresh.bound and "p99 <= 250 ms" in fresh.bound
    assert "revisit 10 runs, 150.0 ms on average" in fresh.bound
    assert "garbage collections: generation 2 3 taking 30.0 ms in all, longest <= 25 ms" in (
        fresh.bound) and "generation 0" not in fresh.bound
    scaling = by_name["events per worker CPU-second vs one worker (single node)"]
    assert not scaling.met and "2: 0.85" in scaling.measured
    backfill = by_name["backfill vs reading the same files (csv)"]
    assert not backfill.met and "0.14x of reading" in backfill.bound
    assert by_name["backfill vs one streaming worker (csv)"].met


def test_the_worker_bound_names_the_batch_profile_and_the_framework() -> None:
    results = _results()
    results["throughput"]["quix_ledger"]["events_per_s"] = 100_000.0
    quix = {t.name: t for t in targets(results)}["one worker end to end / Quix Streams ledger job"]
    assert not quix.met
    assert "driven alone (no Kafka, no Faust, the profile stage) 70 µs (planner.plan 40 µs)" in (
        quix.bound)
    assert "py-spy" not in quix.bound  # no profile of the worker in this run
    # With the worker's own profile, its CPU per event is split by who spent it.
    results["throughput"]["pyspy"] = {"spans": {
        "batch step (Ingestor.process and its store calls)": 60,
        "Faust, aiokafka, the event loop and the rest": 30,
        "engine timers (rescoring, model refresh, outbox)": 10}}
    quix = {t.name: t for t in targets(results)}["one worker end to end / Quix Streams ledger job"]
    assert ("(100 samples): batch step (Ingestor.process and its store calls) 60% (about 60 µs)"
            in quix.bound)
    assert ("Faust, aiokafka, the event loop and the rest 30% (about 30 µs) against the bare "
            "Faust reader's 80.0 µs") in quix.bound
    # A target whose measurement is missing from the run is left out, not reported as missed.
    results.pop("backfill")
    names = {t.name for t in targets(results)}
    assert not any(name.startswith("backfill") for name in names)


def test_the_reading_agent_is_an_app_of_its_own() -> None:
    from load.bench_faust import build
    from stream_app.settings import Settings

    app = build(Settings(app_id="bench-read-test"))
    assert app.conf.id == "bench-read-test"
    assert any(a.name.endswith("bench.read") for a in app.agents.values())


def test_the_workers_garbage_collection_is_one_cell() -> None:
    from load.bench_report import _collections

    assert _collections(None) == "n/a"
    cell = _collections({"0": {"count": 40, "sum": 0.2}, "1": {"count": 4, "sum": 0.1},
                         "2": {"count": 2, "sum": 0.05, "max_le": 0.05}})
    assert cell == "0.35 s; 2, longest <= 50 ms"


def test_the_valuation_stage_values_under_each_fit_and_reports_ratios() -> None:
    from load.bench_valuation import measure_valuation, section

    result = measure_valuation(customers=150, days=150, fit_days=(40,), one_at_a_time=5)
    rows = {r["model"]: r for r in result["rows"]}
    assert list(rows) == ["default", "fit at day 40", "fit at day 150"]
    assert rows["default"]["vs_default_chunked"] == 1.0
    for row in rows.values():
        assert row["us_per_customer_chunked"] > 0 and row["us_per_customer_one_at_a_time"] > 0
    # the fits are the population's own, not the default model
    assert rows["fit at day 150"]["a"] != rows["default"]["a"]
    assert rows["fit at day 40"]["b"] != rows["fit at day 150"]["b"]
    table = [line for line in section(result) if line.startswith("| ")]
    assert len(table) == 1 + len(rows)
    assert section(None) == []


def test_a_scaling_run_too_short_for_a_rate_is_reported_not_met() -> None:
    results = _results()
    results["scale_cpu"] = {"label": "single node", "rows": [
        {"workers": 1, "efficiency": 1.0}, {"workers": 2, "efficiency": None}]}
    row = {t.name: t for t in targets(results)}[
        "events per worker CPU-second vs one worker (single node)"]
    assert not row.met and row.measured == "1: 1.00 / 2: n/a"
    assert "before a steady window" in row.bound
