"""``GET /metrics`` scraped from a real worker during a run: the numbers move with the stream."""

from __future__ import annotations

import threading
import urllib.request
from typing import Any

import orjson
import pytest

from load.bench_stats import Samples, parse_metrics
from stream_app.settings import Settings
from tests.conftest import WorkerProcess, consume_all
from tests.e2e.engine_run import BROKEN, feed_stream, wait_for_churn_metrics

pytestmark = pytest.mark.integration


def scrape(settings: Settings) -> tuple[str, Samples]:
    """The content type and every sample of ``/metrics``, keyed by (name, sorted labels)."""
    url = f"http://{settings.web_host}:{settings.web_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as r:
        content_type = r.headers["Content-Type"]
        text = r.read().decode()
    return content_type, parse_metrics(text)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name` over the samples whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def test_metrics_move_with_the_stream(settings: Settings, fast_worker: WorkerProcess) -> None:
    content_type, before = scrape(settings)
    assert content_type.startswith("text/plain")
    inputs = settings.topics.inputs
    for topic in inputs:  # present from the start, at zero
        assert before[("cvm_events_applied_total", (("topic", topic),))] == 0

    sent: list[int] = []
    feeder = threading.Thread(target=lambda: sent.append(feed_stream(settings)), daemon=True)
    feeder.start()
    during: list[Samples] = []
    while feeder.is_alive():
        during.append(scrape(settings)[1])
        feeder.join(0.5)
    n_events = sent[0]
    metrics = wait_for_churn_metrics(settings, fast_worker, n_events)

    # Sampled gauges (models, AUC, Redis) are refreshed every few seconds, and the last
    # offsets are committed within a commit interval: wait for both.
    def settled() -> Samples:
        for _ in range(120):
            after = scrape(settings)[1]
            commit_lag = [v for (n, ls), v in after.items()
                          if n == "cvm_consumer_commit_lag" and dict(ls)["topic"] in inputs]
            if (total(after, "cvm_model_version", model="churn") >= 1
                    and total(after, "cvm_model_version", model="value") >= 1
                    and ("cvm_churn_model_auc", (("window", "stream"),)) in after
                    and commit_lag and max(commit_lag) <= 1):
                return after
            threading.Event().wait(0.5)
        return after

    after = settled()
    # Every valid event applied, counted by its topic; no duplicates in a first run.
    applied = {t: total(after, "cvm_events_applied_total", topic=t) for t in inputs}
    assert sum(applied.values()) == n_events, applied
    assert all(n > 0 for n in applied.values()), applied
    assert total(after, "cvm_events_duplicate_total") == 0
    # Dead letters by topic and error code.
    purchases, contacts = settings.topics.purchases, settings.topics.service_contacts
    assert total(after, "cvm_events_dead_lettered_total", topic=purchases,
                 error_code="invalid_json") == 1
    assert total(after, "cvm_events_dead_lettered_total", topic=purchases,
                 error_code="schema_violation") == 1
    assert total(after, "cvm_events_dead_lettered_total", topic=contacts) == len(
        BROKEN["service_contacts"])
    # Batches: the histogram counted them and their records add up to what was sent.
    assert total(after, "cvm_batch_seconds_count") > total(before, "cvm_batch_seconds_count")
    assert total(after, "cvm_batch_records_sum") == n_events + sum(map(len, BROKEN.values()))
    # Lag per assigned input partition, all caught up once everything is applied.
    lag = {ls: v for (n, ls), v in after.items() if n == "cvm_consumer_lag"}
    lagged_inputs = {dict(ls)["topic"] for ls in lag} & set(inputs)
    assert lagged_inputs == set(inputs), lag
    assert all(v == 0 for ls, v in lag.items() if dict(ls)["topic"] in inputs), lag
    commit_lag = {ls: v for (n, ls), v in after.items() if n == "cvm_consumer_commit_lag"}
    assert {dict(ls)["topic"] for ls in commit_lag} & set(inputs) == set(inputs), commit_lag
    assert all(v <= 1 for ls, v in commit_lag.items() if dict(ls)["topic"] in inputs), commit_lag
    # Models: versions, ages, the churn AUC the learner wrote.
    assert total(after, "cvm_model_version", model="churn") >= 1
    assert total(after, "cvm_model_version", model="value") >= 1
    assert total(after, "cvm_model_age_seconds", model="value") >= 0
    auc = after[("cvm_churn_model_auc", (("window", "stream"),))]
    assert 0.0 <= auc <= 1.0
    assert metrics["auc"] is not None
    # Redis round trips were sampled; every input partition has a watermark age.
    assert total(after, "cvm_redis_roundtrip_seconds_count") > total(
        before, "cvm_redis_roundtrip_seconds_count")
    marks = {dict(ls)["topic"] for (n, ls) in after if n == "cvm_watermark_age_seconds"}
    assert marks == set(inputs)
    # The event loop's lag was sampled all along, and every timer run was timed by name.
    assert total(after, "cvm_event_loop_lag_seconds_count") > total(
        before, "cvm_event_loop_lag_seconds_count")
    assert total(after, "cvm_timer_seconds_count", timer="refresh_model") > 0
    # Garbage collections are timed by generation (young ones at least, in any run).
    assert total(after, "cvm_gc_seconds_count") > 0
    # What the rescoring budget left due: served, never negative.
    assert after[("cvm_rescore_due", ())] >= 0
    # The consumer is a member of its group, as the broker knows it.
    assert after[("cvm_consumer_group_member", ())] == 1
    # Alerts and win-back triggers: counted by severity and group exactly as published. The
    # rescoring timer may still publish: compare once two scrapes around the read agree.
    def published() -> tuple[Samples, list[dict[str, Any]], list[dict[str, Any]]]:
        first = scrape(settings)[1]
        alerts = [orjson.loads(m.value()) for m in consume_all(
            settings, settings.topics.alerts, expected=10**9, deadline_s=4)]
        triggers = [orjson.loads(m.value()) for m in consume_all(
            settings, settings.topics.winback, expected=10**9, deadline_s=3)]
        last = scrape(settings)[1]
        names = ("cvm_alerts_published_total", "cvm_winback_triggers_published_total")
        moved = any(total(first, n) != total(last, n) for n in names)
        return ({} if moved else last), alerts, triggers

    for _ in range(10):
        last, alerts, triggers = published()
        if last:
            break
    assert last, "alerts kept being published"
    for severity in {a["severity"] for a in alerts} | {"low", "medium", "high", "critical"}:
        assert total(last, "cvm_alerts_published_total", severity=severity) == sum(
            a["severity"] == severity for a in alerts), severity
    for group, control in (("treatment", False), ("control", True)):
        assert total(last, "cvm_winback_triggers_published_total", group=group) == sum(
            t["control_group"] is control for t in triggers), group
    print(f"{len(alerts)} alerts, {len(triggers)} win-back triggers")
    print("max lag seen during the run:",
          max((total(s, "cvm_consumer_lag") for s in during), default=0),
          max((total(s, "cvm_consumer_commit_lag") for s in during), default=0))
