"""Product profiles, affinity and next best offers through the real stack.

A real worker reads orders with order lines from Kafka: 30 customers buy coffee
and mugs, 10 coffee and tea, and three target customers buy coffee every three
days, fall silent for months and then complain. The worker learns that 30 of
the 43 coffee buyers also bought mugs, so each target's win-back trigger on
Kafka carries mugs as the best offer, "bought by 70 % of customers who buy
coffee", and coffee as a repurchase that is due; the lookups (HTTP and
``cvm offers``) show the same offers and the product profile.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import redis

from stream_app.contract import Contract
from stream_app.settings import Settings
from stream_app.store.keys import Keys
from stream_app.worker_process import wait_until
from tests.conftest import ROOT, WorkerProcess, consume_all, http_json, publish, settings_env

pytestmark = pytest.mark.integration

KEYS = Keys()
TARGETS = [f"T{i}" for i in range(3)]
COFFEE = {"sku": "COF-1", "category": "coffee", "quantity": 2, "unit_price": 10}
MUG = {"sku": "MUG-1", "category": "mugs", "quantity": 1, "unit_price": 20}
TEA = {"sku": "TEA-1", "category": "tea", "quantity": 1, "unit_price": 8}


def _order(settings: Settings, cid: str, n: int, day: int, items: list[dict]) -> tuple[
        str, bytes, bytes]:  # type: ignore[type-arg]
    amount = sum(x["quantity"] * x["unit_price"] for x in items)
    message = {"event_id": f"o-{cid}-{n}", "customer_id": cid,
               "occurred_at": f"2026-01-{day:02d}T10:00:00Z", "kind": "order",
               "amount": amount, "cost": amount / 2, "currency": "USD", "channel": "web",
               "items": items}
    return settings.topics.purchases, cid.encode(), orjson.dumps(message)


def _population(settings: Settings) -> list[tuple[str, bytes, bytes]]:
    out = [_order(settings, f"M{i}", 0, 10, [COFFEE, MUG]) for i in range(30)]
    out += [_order(settings, f"E{i}", 0, 11, [COFFEE, TEA]) for i in range(10)]
    for cid in TARGETS:
        out += [_order(settings, cid, i, 10 + 3 * i, [COFFEE]) for i in range(4)]
    return out


def _complaints(settings: Settings) -> list[tuple[str, bytes, bytes]]:
    return [
        (settings.topics.service_contacts, cid.encode(), orjson.dumps({
            "event_id": f"c-{cid}", "customer_id": cid, "occurred_at": "2026-04-20T10:00:00Z",
            "channel": "phone", "reason": "complaint", "cost": 5, "resolved": False,
        }))
        for cid in TARGETS
    ]


def test_offers_in_lookups_and_in_every_winback_trigger(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "CVM_ALERT_MIN_VALUE_TIER": "0",
        "CVM_ALERT_MIN_SCORE": "0",
        "CVM_REFRESH_INTERVAL_S": "0.5",
    }.items():
        monkeypatch.setenv(name, value)
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()
    try:
        publish(settings, _population(settings))
        assert wait_until(lambda: all(
            client.hget(KEYS.customer(c), "orders") == "4" for c in TARGETS), deadline_s=120
        ), worker.log_tail()

        # The worker's copy of the affinity has caught up with every order.
        def learned() -> bool:
            status, doc = http_json(settings, f"/customers/{TARGETS[0]}/offers?k=3")
            return status == 200 and any(o["category"] == "mugs" for o in doc["offers"])

        assert wait_until(learned, deadline_s=60), worker.log_tail()
        publish(settings, _complaints(settings))
        topic = settings.topics.winback
        assert wait_until(lambda: len({orjson.loads(m.value())["customer_id"] for m in
                                       consume_all(settings, topic, 10**9, deadline_s=2)}
                                      & set(TARGETS)) == len(TARGETS), deadline_s=120), (
            worker.log_tail())

        status, view = http_json(settings, f"/customers/{TARGETS[0]}")
        status_k, only = http_json(settings, f"/customers/{TARGETS[0]}/offers?k=1")
        status_bad, bad = http_json(settings, f"/customers/{TARGETS[0]}/offers?k=0")
        env = {**os.environ, **settings_env(settings)}
        out = subprocess.run(
            [sys.executable, "-m", "stream_app.cli", "offers", TARGETS[1], "-k", "2", "--json"],
            env=env, cwd=ROOT, capture_output=True, check=True, timeout=60,
        )
    finally:
        worker.stop()

    contract = Contract()
    triggers = [orjson.loads(m.value()) for m in consume_all(settings, topic, 10**9, 3)]
    mine = [t for t in triggers if t["customer_id"] in TARGETS]
    assert {t["customer_id"] for t in mine} == set(TARGETS)
    for trigger in mine:
        contract.validate_output("winback", trigger)
        offers = trigger["offers"]
        best = offers[0]
        assert (best["category"], best["kind"], best["because_of"]) == (
            "mugs", "cross_sell", "coffee")
        assert best["probability"] == pytest.approx(30 / 43, abs=1e-4)
        assert best["reason"] == "bought by 70 % of customers who buy coffee"
        # Every mug line sold for 20 at half cost: a margin of 10 per purchase.
        assert best["margin"] == 10.0
        assert best["expected_margin"] == pytest.approx(
            best["probability"] * 10.0 * trigger["p_alive"], abs=0.01)
        kinds = {o["category"]: o["kind"] for o in offers}
        assert kinds == {"mugs": "cross_sell", "tea": "cross_sell", "coffee": "repurchase"}
        assert [o["expected_margin"] for o in offers] == sorted(
            (o["expected_margin"] for o in offers), reverse=True)

    assert status == 200
    assert [o["category"] for o in view["offers"]][:1] == ["mugs"]
    coffee = view["products"]["categories"][0]
    assert coffee["category"] == "coffee" and coffee["orders"] == 4 and coffee["units"] == 8
    assert coffee["revenue"] == 80.0 and coffee["share_of_wallet"] == 1.0
    assert coffee["repurchase_interval_days"] == 3.0
    assert view["products"]["skus"] == [
        {"sku": "COF-1", "category": "coffee", "revenue": 80.0, "units": 8}]
    assert status_k == 200 and len(only["offers"]) == 1
    assert status_bad == 400 and bad["error"] == "bad_request"
    cli = orjson.loads(out.stdout)
    assert cli["customer_id"] == TARGETS[1] and len(cli["offers"]) == 2
    assert cli["offers"][0]["category"] == "mugs"
    client.close()
