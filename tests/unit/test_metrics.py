"""The metrics hooks and what the sampler makes of them (no Kafka, no Redis)."""

from __future__ import annotations

import asyncio
import gc
import time
from types import SimpleNamespace

from stream_app import metrics
from stream_app.domain.events import Source
from stream_app.pipeline import BatchResult


def _value(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def test_batch_hook_counts_events_by_topic_and_observes_latency() -> None:
    before = (_value("cvm_events_applied_total", topic="u.purchases"),
              _value("cvm_events_applied_total", topic="u.touches"),
              _value("cvm_batch_seconds_count"), _value("cvm_commit_conflicts_total", path="batch"))
    events = [(None, Source("u.purchases", 0, 1)), (None, Source("u.purchases", 1, 7)),
              (None, Source("u.touches", 0, 3))]
    metrics.batch_committed(events, BatchResult(records=4, applied=3, conflicts=2), 0.012)
    after = (_value("cvm_events_applied_total", topic="u.purchases"),
             _value("cvm_events_applied_total", topic="u.touches"),
             _value("cvm_batch_seconds_count"), _value("cvm_commit_conflicts_total", path="batch"))
    assert [a - b for a, b in zip(after, before, strict=True)] == [2, 1, 1, 2]


def test_published_counts_by_severity_and_group_and_skips_what_was_sent_before() -> None:
    def sent() -> tuple[float, ...]:
        return (_value("cvm_alerts_published_total", severity="high"),
                _value("cvm_winback_triggers_published_total", group="control"),
                _value("cvm_winback_triggers_published_total", group="treatment"))

    before = sent()
    metrics.published([
        ("alert", {"alert_id": "a1", "severity": "high"}),
        ("alert", {"alert_id": "a2", "severity": "high"}),
        ("winback", {"trigger_id": "w1", "control_group": True}),
        ("winback", {"trigger_id": "w2", "control_group": False}),
    ], skipped={"a2"})
    assert [a - b for a, b in zip(sent(), before, strict=True)] == [1, 1, 1]


def test_summary_line_and_overview_follow_the_counters() -> None:
    now = [1000.0]
    runtime = SimpleNamespace(settings=SimpleNamespace(topics=SimpleNamespace(inputs=())))
    sampler = metrics.Sampler(SimpleNamespace(), runtime, clock=lambda: now[0])
    _, start = sampler.summary_line(None)
    metrics.dead_lettered("u.purchases", "invalid_json")
    metrics.batch_committed([(None, Source("u.purchases", 0, i)) for i in range(50)],
                            BatchResult(records=51, applied=50), 0.01)
    sampler.lag = {("u.purchases", 2): 40, ("u.purchases", 0): 0}
    now[0] += 10
    line, _ = sampler.summary_line(start)
    assert line.startswith("throughput 5.0 events/s, 1 dead letters, lag 40 "
                           "(most: u.purchases[2] 40)"), line
    sampler.history.append(metrics.Sample(at=now[0], applied=start.applied + 50,
                                          dead_letters=0, lag=40))
    view = sampler.overview()
    assert view["history"][-1]["events_per_s"] == 5.0 and view["history"][-1]["lag"] == 40
    assert view["dead_letters"]["invalid_json"] >= 1
    assert view["lag"] == {"u.purchases[0]": 0, "u.purchases[2]": 40}


async def test_the_loop_lag_sampler_sees_the_loop_held() -> None:
    before_n, before_s = _value("cvm_event_loop_lag_seconds_count"), _value(
        "cvm_event_loop_lag_seconds_sum")
    sampler = asyncio.ensure_future(metrics.loop_lag(0.01, samples=3))
    await asyncio.sleep(0)  # the sampler is asleep now
    time.sleep(0.06)  # a batch that holds the loop without yielding
    await asyncio.wait_for(sampler, 5)
    assert _value("cvm_event_loop_lag_seconds_count") - before_n == 3
    assert _value("cvm_event_loop_lag_seconds_sum") - before_s >= 0.05


def test_garbage_collections_are_timed_by_generation_without_a_lock_in_the_callback() -> None:
    clock = metrics.GcClock()
    before = _value("cvm_gc_seconds_count", generation="1")
    clock("start", {"generation": 1, "collected": 0, "uncollectable": 0})
    time.sleep(0.01)
    clock("stop", {"generation": 1, "collected": 3, "uncollectable": 0})
    assert _value("cvm_gc_seconds_count", generation="1") == before  # kept until the flush
    clock.flush()
    assert _value("cvm_gc_seconds_count", generation="1") - before == 1
    assert clock.pending == []
    metrics.watch_gc()
    metrics.watch_gc()
    assert gc.callbacks.count(metrics.GC_CLOCK) == 1


def test_group_errors_are_counted_by_type_and_membership_is_sampled() -> None:
    before = _value("cvm_consumer_group_errors_taken_total", error="ValueError")
    metrics.group_error_taken(ValueError("refused"))
    assert _value("cvm_consumer_group_errors_taken_total", error="ValueError") - before == 1

    coordinator = SimpleNamespace(member_id="", generation=-1, _coordination_task=None)
    thread = SimpleNamespace(_consumer=SimpleNamespace(_coordinator=coordinator))
    consumer = SimpleNamespace(_thread=thread, assignment=lambda: set())
    app = SimpleNamespace(_consumer=consumer, consumer=consumer)
    runtime = SimpleNamespace(settings=SimpleNamespace(topics=SimpleNamespace(inputs=())))
    sampler = metrics.Sampler(app, runtime)
    sampler.sample_redis = _no_redis  # type: ignore[method-assign]
    asyncio.run(sampler.sample())
    assert _value("cvm_consumer_group_member") == 0
    coordinator.member_id = "faust-1"
    asyncio.run(sampler.sample())
    assert _value("cvm_consumer_group_member") == 1


async def _no_redis() -> None:
    return None
