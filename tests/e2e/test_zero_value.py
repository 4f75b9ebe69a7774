"""A customer whose orders are all free still has a purchase history to predict from."""

from __future__ import annotations

import orjson
import pytest
import redis

from stream_app.settings import Settings
from stream_app.store.keys import Keys
from stream_app.worker_process import wait_until
from tests.conftest import WorkerProcess, http_json, publish
from tests.e2e.helpers import merged_hash

pytestmark = pytest.mark.integration


def test_a_customer_with_only_zero_value_orders_gets_a_prediction(
    settings: Settings, worker: WorkerProcess
) -> None:
    orders = [
        {"event_id": f"z-{i}", "customer_id": "Z1", "occurred_at": f"2026-02-{day:02d}T09:00:00Z",
         "kind": "order", "amount": 0, "currency": "USD", "channel": "app"}
        for i, day in enumerate((3, 10, 24))
    ]
    paid = {"event_id": "p-1", "customer_id": "P1", "occurred_at": "2026-02-25T09:00:00Z",
            "kind": "order", "amount": 40.0, "currency": "USD", "channel": "web"}
    publish(settings, (
        (settings.topics.purchases, m["customer_id"].encode(), orjson.dumps(m))
        for m in [*orders, paid]
    ))
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    keys = Keys()
    assert wait_until(
        lambda: client.hget(keys.customer("Z1"), "orders") == "3"
        and client.hget(keys.customer("P1"), "orders") == "1"
    ), worker.log_tail()
    record = client.hgetall(keys.customer("Z1"))
    assert 0 < float(record["p_alive"]) <= 1, record
    assert float(record["expected_purchases"]) > 0, record
    assert float(record["expected_spend"]) == 0.0
    # The customer is in the statistics the BG/NBD fit reads (2 repeat days over 21 days),
    # and not among the spends Gamma-Gamma is fitted on.
    assert merged_hash(client, lambda s: s.histogram("bgnbd"))[f"2:21:{20_487}"] == 1
    spends = merged_hash(client, lambda s: s.histogram("spend"))
    assert [n.split(":")[0] for n, c in spends.items() if c != 0] == ["1"], spends  # P1 only

    status, view = http_json(settings, "/customers/Z1")
    assert status == 200
    assert isinstance(view["p_alive"], float) and 0 < view["p_alive"] <= 1
    assert isinstance(view["expected_purchases"], float) and view["expected_purchases"] > 0

