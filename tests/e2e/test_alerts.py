"""Defection alerts, the learner and win-back triggers through the real stack."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import datetime, timedelta

import orjson
import pytest
import redis

from load.generator import publish as publish_events
from load.simulator import SimConfig, ground_truth, simulate
from stream_app.contract import Contract
from stream_app.settings import Settings
from stream_app.worker_process import wait_until
from tests.conftest import WorkerProcess, consume_all, http_json
from tests.e2e.helpers import applied_count

pytestmark = pytest.mark.integration

CONFIG = SimConfig(n_customers=600, days=300, acquisition_days=100, seed=31)


def _applied_total(client: redis.Redis) -> int:
    return applied_count(client)


@pytest.mark.slow
def test_alerts_for_true_defectors_and_no_duplicate_after_a_restart(
    settings: Settings, worker: WorkerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "CVM_FIT_INTERVAL_S": "10",
        "CVM_MODEL_PUBLISH_INTERVAL_S": "3",
        "CVM_RESCORE_INTERVAL_S": "1",
    }.items():
        monkeypatch.setenv(name, value)
    worker.stop()
    worker.start()
    events = list(simulate(CONFIG))
    half = len(events) // 2
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)

    publish_events(events[:half], settings)
    assert wait_until(lambda: _applied_total(client) >= half, deadline_s=240), worker.log_tail()
    # A clean restart mid-stream must not publish any alert a second time.
    worker.stop()
    worker.start()
    done = threading.Event()
    report = []

    def feed() -> None:
        report.append(publish_events(events[half:], settings))
        done.set()

    threading.Thread(target=feed, daemon=True).start()
    assert wait_until(done.is_set, deadline_s=240)
    assert report[0].failed == 0
    assert wait_until(lambda: _applied_total(client) >= len(events), deadline_s=300), (
        worker.log_tail())
    assert wait_until(lambda: client.hexists("cvm:churn:model", "version"), deadline_s=60), (
        worker.log_tail())

    contract = Contract()
    client.llen("cvm:feed:recent")
    alerts = [orjson.loads(m.value()) for m in
              consume_all(settings, settings.topics.alerts, expected=10**9, deadline_s=10)]
    assert alerts, f"no alert published\n{worker.log_tail()}"
    ids = Counter(a["alert_id"] for a in alerts)
    assert max(ids.values()) == 1, [i for i, n in ids.items() if n > 1]
    for alert in alerts:
        contract.validate_output("alert", alert)
        assert alert["value_tier"] >= settings.alert_min_value_tier
        assert alert["reasons"]
        assert abs(sum(r["contribution"] for r in alert["reasons"]) - 1) < 1e-3

    truth = {t["customer_id"]: t for t in ground_truth(CONFIG)}

    def defected_before(customer: str, at: str) -> bool:
        dropout = truth[customer].get("dropout_at")
        if dropout is None:
            return False
        horizon = timedelta(days=settings.churn_horizon_days)
        return datetime.fromisoformat(dropout) <= datetime.fromisoformat(at) + horizon

    alerted = {a["customer_id"]: a["as_of"] for a in alerts}
    true_defectors = [c for c, at in alerted.items() if defected_before(c, at)]
    print(f"{len(alerted)} customers alerted, {len(true_defectors)} truly defect within H")
    assert true_defectors, "no alerted customer truly defects"

    metrics = orjson.loads(client.get("cvm:churn:metrics"))
    assert metrics["n"] > 0 and metrics["model_version"].startswith("churn-")
    triggers = consume_all(settings, settings.topics.winback, expected=10**9, deadline_s=5)
    for message in triggers:
        trigger = orjson.loads(message.value())
        contract.validate_output("winback", trigger)
        assert trigger["offer_budget"] <= trigger["clv_lost"]
    status, results = http_json(settings, "/winback/results")
    assert status == 200 and {"treatment", "control", "uplift"} <= set(results)
