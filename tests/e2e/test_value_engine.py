"""The value engine through the real stack: fit, lookups with a horizon, rankings, roll-ups."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from decimal import Decimal

import orjson
import pytest
import redis

from load.generator import publish as publish_events
from load.simulator import SimConfig, simulate
from stream_app.connections import sync_redis
from stream_app.domain.rfm import SEGMENTS
from stream_app.settings import Settings
from stream_app.store.records import format_time
from stream_app.worker_process import wait_until
from tests.conftest import ROOT, WorkerProcess, http_json, publish, settings_env
from tests.e2e.helpers import CUSTOMER_PATTERN, KEYS, applied_count, rank_scores, watermarks

pytestmark = pytest.mark.integration


def _applied_total(client: redis.Redis) -> int:
    return applied_count(client)


def _post(settings: Settings, path: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    url = f"http://{settings.web_host}:{settings.web_port}{path}"
    request = urllib.request.Request(
        url, method="POST", data=b"{}", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, orjson.loads(err.read())


@pytest.fixture
def populated(settings: Settings, worker: WorkerProcess) -> redis.Redis:
    events = list(simulate(SimConfig(n_customers=300, days=240, acquisition_days=120, seed=5)))
    report = publish_events(events, settings)
    assert report.failed == 0
    client = sync_redis(settings, decode_responses=True)
    assert wait_until(lambda: _applied_total(client) >= len(events), deadline_s=180), (
        worker.log_tail())
    return client


def test_fit_lookup_rank_and_rollups(
    settings: Settings, worker: WorkerProcess, populated: redis.Redis
) -> None:
    client = populated
    status, model = _post(settings, "/model?as_of=2025-08-29T00:00:00Z")
    assert status == 200, model
    assert model["version"] == 1 and model["bgnbd_n"] >= 250
    assert all(v > 0 for v in model["bgnbd"].values())
    status, current = http_json(settings, "/model")
    assert status == 200 and current["version"] == 1
    # The refit rescored everyone at the engine's watermark, not at their own last event.
    marks = [v for k, v in watermarks(client).items()
             if k.rpartition("/")[0] in settings.topics.inputs]
    watermark = format_time(min(marks))
    stored = [client.hmget(k, "as_of", "last_event_at") for k in client.scan_iter(CUSTOMER_PATTERN)]
    assert stored and all(as_of == max(watermark, last) for as_of, last in stored)

    status, top = http_json(settings, "/customers/top?by=clv&n=10")
    assert status == 200
    clvs = [row["clv"] for row in top["customers"]]
    assert len(clvs) == 10 and clvs == sorted(clvs, reverse=True)
    cid = top["customers"][0]["customer_id"]
    assert top["customers"][0]["value_tier"] >= 90

    _, short = http_json(settings, f"/customers/{cid}?horizon_days=30")
    _, long = http_json(settings, f"/customers/{cid}?horizon_days=365")
    assert short["horizon_days"] == 30 and long["horizon_days"] == 365
    assert 0 < short["expected_purchases"] < long["expected_purchases"]
    assert short["clv"] < long["clv"]
    assert 0 <= long["p_alive"] <= 1 and long["model_version"] == 1
    assert long["rfm_segment"] in SEGMENTS
    later = "2025-09-01T00:00:00Z"
    _, moved = http_json(settings, f"/customers/{cid}?horizon_days=365&as_of={later}")
    assert moved["as_of"].startswith("2025-09-01")

    status, bad = http_json(settings, f"/customers/{cid}?horizon_days=-3")
    assert status == 400 and bad["error"] == "bad_request"
    status, bad = http_json(settings, "/customers/top?by=nonsense")
    assert status == 400
    # A parameter that is not a number is named in the error, not a Python message.
    for path, detail in (
        (f"/customers/{cid}?horizon_days=soon", "horizon_days: 'soon' is not a number"),
        ("/customers/top?n=ten", "n: 'ten' is not an integer"),
        (f"/customers/{cid}/offers?k=1e3", "k: '1e3' is not an integer"),
        ("/trends?periods=x", "periods: 'x' is not an integer"),
        ("/customers/unprofitable?n=1.5", "n: '1.5' is not an integer"),
    ):
        status, bad = http_json(settings, path)
        assert (status, bad["detail"]) == (400, detail), path

    status, risk = http_json(settings, "/customers/top?by=value_at_risk&n=5")
    assert status == 200 and len(risk["customers"]) == 5

    # Severity bands: the 80th, 95th and 99th percentiles of value at risk.
    def bands_match() -> bool:
        ranked = rank_scores(client, "value_at_risk")
        n = len(ranked)
        expected = [ranked[min(max(-(-p * n // 100) - 1, 0), n - 1)] for p in (80, 95, 99)]
        return http_json(settings, "/model")[1]["severity_bands"] == expected

    assert wait_until(bands_match, deadline_s=30)

    env = {**os.environ, **settings_env(settings)}
    out = subprocess.run(
        [sys.executable, "-m", "stream_app.cli", "lookup", cid, "--horizon-days", "90",
         "--json"],
        env=env, cwd=ROOT, capture_output=True, check=True, timeout=60,
    )
    view = orjson.loads(out.stdout)
    assert view["customer_id"] == cid and view["horizon_days"] == 90

    # Channel roll-ups hold the sum of their customers' ledgers, to the cent.
    _, channels = http_json(settings, "/rollups/channels")
    total = sum(Decimal(str(row["net_contribution"])) for row in channels["rows"])
    customers = [k for k in client.scan_iter(CUSTOMER_PATTERN)]
    direct = sum(Decimal(client.hget(k, "net_contribution") or "0") for k in customers)
    assert total == direct
    assert sum(row["customers"] for row in channels["rows"]) == len(customers)
    _, campaigns = http_json(settings, "/rollups/campaigns")
    assert campaigns["rows"] and all("payoff" in row for row in campaigns["rows"])


def test_a_late_purchase_counts_as_if_it_came_in_order(
    settings: Settings, worker: WorkerProcess
) -> None:
    def order(day: str, channel: str, n: int) -> tuple[str, bytes, bytes]:
        msg = {"event_id": f"late-{n}", "customer_id": "L1", "occurred_at": f"{day}T12:00:00Z",
               "kind": "order", "amount": 50.0, "cost": 20.0, "currency": "USD",
               "channel": channel}
        return settings.topics.purchases, b"L1", orjson.dumps(msg)

    publish(settings, [order("2026-03-10", "web", 1), order("2026-03-20", "web", 2)])
    client = sync_redis(settings, decode_responses=True)
    assert wait_until(lambda: client.hget(KEYS.customer("L1"), "orders") == "2")
    publish(settings, [order("2026-03-05", "store", 3), order("2026-03-10", "web", 4)])
    assert wait_until(lambda: client.hget(KEYS.customer("L1"), "orders") == "4")
    _, view = http_json(settings, "/customers/L1?as_of=2026-03-30T00:00:00Z")
    assert view["first_purchase_at"].startswith("2026-03-05")
    assert view["last_purchase_at"].startswith("2026-03-20")
    assert view["repeat_purchases"] == 2  # 5th, 10th (twice: once), 20th
    assert view["acquisition_channel"] == "store"
    assert view["recency_days"] == 10
