"""A worker killed between the commit and the publish loses no alert or trigger.

The real worker runs with the test-only fault injection point of
`stream_app.pipeline.CRASH_AFTER_COMMIT_ENV`: the first commit that puts an alert or
a win-back trigger in the outbox kills the process (SIGKILL) before it publishes.
After a restart every message of the outbox reaches Kafka, once per id, and the ops
feed holds each id once (steps 4 to 6 of `stream_app.store.customers`).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest
import redis

from stream_app.pipeline import CRASH_AFTER_COMMIT_ENV
from stream_app.settings import Settings
from stream_app.store.keys import Keys
from stream_app.worker_process import wait_until
from tests.conftest import WorkerProcess, consume_all, publish

pytestmark = pytest.mark.integration

CUSTOMERS = [f"C{i}" for i in range(6)]
KEYS = Keys()


def _orders(settings: Settings) -> list[tuple[str, bytes, bytes]]:
    out = []
    for cid in CUSTOMERS:
        for i in range(4):
            message = {"event_id": f"ev-{cid}-o{i}", "customer_id": cid,
                       "occurred_at": f"2026-01-{10 + 3 * i:02d}T10:00:00Z", "kind": "order",
                       "amount": 100, "currency": "USD", "channel": "web"}
            out.append((settings.topics.purchases, cid.encode(), orjson.dumps(message)))
    return out


def _complaints(settings: Settings) -> list[tuple[str, bytes, bytes]]:
    # Months of silence, then a complaint: an alert and a win-back trigger per customer.
    return [
        (settings.topics.service_contacts, cid.encode(), orjson.dumps({
            "event_id": f"ev-{cid}-c", "customer_id": cid,
            "occurred_at": "2026-04-20T10:00:00Z", "channel": "phone",
            "reason": "complaint", "cost": 5, "resolved": False,
        }))
        for cid in CUSTOMERS
    ]


def _fed_ids(client: redis.Redis) -> list[str]:
    entries = [orjson.loads(e)["message"] for s in KEYS.shards()
               for e in client.lrange(s.alert_feed, 0, -1)]
    return [m.get("alert_id") or m["trigger_id"] for m in entries]


def test_a_crash_between_commit_and_publish_loses_no_alert_or_trigger(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mark = tmp_path / "crashed"
    for name, value in {
        CRASH_AFTER_COMMIT_ENV: str(mark),
        "CVM_ALERT_MIN_VALUE_TIER": "0",
        "CVM_ALERT_MIN_SCORE": "0",
        "CVM_ALERT_MAX_SILENCE_DAYS": "0",
        "CVM_ALERT_SEVERITY_BANDS": "0,0,0",
        "CVM_SESSION_TIMEOUT_S": "10",
    }.items():
        monkeypatch.setenv(name, value)
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()
    try:
        publish(settings, _orders(settings))
        assert wait_until(lambda: all(
            client.hget(KEYS.customer(c), "orders") == "4" for c in CUSTOMERS), deadline_s=120
        ), worker.log_tail()
        publish(settings, _complaints(settings))
        assert wait_until(lambda: worker.proc is not None and worker.proc.poll() is not None,
                          deadline_s=120), "the fault injection point never fired"
        assert mark.exists()

        pending = [f.partition(":")[2] for s in KEYS.shards() for f in client.hkeys(s.outbox)
                   if not f.startswith("training:")]
        assert pending, "the crash left no alert or trigger in the outbox"
        assert set(pending) <= set(_fed_ids(client))
        topics = [settings.topics.alerts, settings.topics.winback]
        before = [orjson.loads(m.value()) for t in topics
                  for m in consume_all(settings, t, expected=10**9, deadline_s=3)]
        assert not {m.get("alert_id") or m["trigger_id"] for m in before} & set(pending)

        worker.start()
        assert wait_until(lambda: all(client.hlen(s.outbox) == 0 for s in KEYS.shards()),
                          deadline_s=120), (
            worker.log_tail())
        assert wait_until(lambda: all(
            client.hget(KEYS.customer(c), "contacts") == "1" for c in CUSTOMERS), deadline_s=60
        ), worker.log_tail()
    finally:
        worker.stop()

    messages = [orjson.loads(m.value()) for t in topics
                for m in consume_all(settings, t, expected=10**9, deadline_s=5)]
    published = Counter(m.get("alert_id") or m["trigger_id"] for m in messages)
    assert all(published[i] == 1 for i in pending), (pending, published)
    assert max(published.values()) == 1, published
    fed = _fed_ids(client)
    assert len(fed) == len(set(fed)), fed
    assert set(fed) == set(published)
    assert sum(client.zcard(s.published) for s in KEYS.shards()) == len(published)
    client.close()
