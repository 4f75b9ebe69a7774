"""The benchmark's pure helpers: percentiles, steady rates, tables, profile categories."""

from __future__ import annotations

import math

import numpy as np
import pytest

from load.bench_profile import parse_pyspy_raw
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


def test_targets_flag_missed_and_met() -> None:
    results = {
        "config": {"fresh_rate": 2000.0, "headline_concurrency": 16},
        "throughput": {"rate": 25_000.0, "cpu": {"workers_cpu_us_per_event": 40.0},
                       "raw_consumer": {"events_per_s": 100_000.0, "events_per_cpu_s": 2e5}},
        "memory": {"scales": [{"customers": 1000, "bytes_per_customer": 900.0,
                               "record_bytes_avg": 700.0, "record_encodings": {},
                               "rank_bytes_per_member": {"clv": 100.0},
                               "keyspace_and_other": 100.0}]},
    }
    by_name = {t.name: t for t in targets(results)}
    assert by_name["throughput, 1 worker, end to end"].met
    share = by_name["share of a raw consumer's rate"]
    assert not share.met and "µs" in share.bound
    memory = by_name["Redis memory at 1,000 customers"]
    assert not memory.met and "rank sets" in memory.bound


def test_the_share_bound_names_the_framework_when_it_was_measured() -> None:
    results = {
        "config": {"fresh_rate": 2000.0, "headline_concurrency": 16},
        "throughput": {"rate": 2_000.0, "cpu": {"workers_cpu_us_per_event": 400.0},
                       "raw_consumer": {"events_per_s": 100_000.0, "events_per_cpu_s": 2e5},
                       "faust_reader": {"events_per_s": 12_000.0, "cpu_us_per_event": 80.0}},
    }
    share = {t.name: t for t in targets(results)}["share of a raw consumer's rate"]
    assert "Faust agent that only reads" in share.bound and "12,000 events/s" in share.bound
    results["throughput"].pop("faust_reader")
    share = {t.name: t for t in targets(results)}["share of a raw consumer's rate"]
    assert "Faust" not in share.bound


def test_the_reading_agent_is_an_app_of_its_own() -> None:
    from load.bench_faust import build
    from stream_app.settings import Settings

    app = build(Settings(app_id="bench-read-test"))
    assert app.conf.id == "bench-read-test"
    assert any(a.name.endswith("bench.read") for a in app.agents.values())
