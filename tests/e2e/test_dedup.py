"""One customer's events on several partitions, and producer retries, through a real worker."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from confluent_kafka import Producer

from stream_app.settings import Settings
from stream_app.store.keys import Keys
from stream_app.worker_process import wait_until
from tests.conftest import WorkerProcess, consume_all, http_json
from tests.e2e.helpers import (
    applied_count,
    committed_offsets,
    delete_worker_topics,
    last_offsets,
)
from tests.e2e.test_pipeline import expected_totals, make_events, records_match, topic_of

pytestmark = pytest.mark.integration

#: (topic, key, value, partition or None for the producer's partitioner)
Message = tuple[str, bytes | None, bytes, int | None]


def produce(settings: Settings, messages: Iterable[Message], partitioner: str) -> int:
    """Publish with a librdkafka producer using `partitioner`; wait for every delivery."""
    producer = Producer({
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "enable.idempotence": True,
        "linger.ms": 5,
        "partitioner": partitioner,
    })
    failures: list[Any] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(err)

    n = 0
    for topic, key, value, partition in messages:
        extra = {} if partition is None else {"partition": partition}
        producer.produce(topic, key=key, value=value, on_delivery=on_delivery, **extra)
        producer.poll(0)
        n += 1
    producer.flush(60)
    assert not failures, failures
    return n


def order(event_id: str, cid: str, amount: float = 10.0, day: int = 10) -> dict[str, Any]:
    return {"event_id": event_id, "customer_id": cid, "occurred_at": f"2026-03-{day:02d}T12:00:00Z",
            "kind": "order", "amount": amount, "cost": round(amount / 2, 2), "currency": "USD",
            "channel": "web"}


def dead_letters(settings: Settings, expected: int, deadline_s: float = 30) -> list[Any]:
    return consume_all(settings, settings.topics.dead_letter, expected, deadline_s)


def test_a_null_key_on_a_busier_partition_does_not_hide_the_next_events(
    settings: Settings, worker: WorkerProcess
) -> None:
    topic = settings.topics.purchases
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    # Another customer's 40 orders make partition 3 the busy one.
    filler = [order(f"f{i}", "FILL", day=1 + i % 9) for i in range(40)]
    produce(settings, ((topic, b"FILL", orjson.dumps(m), 3) for m in filler), "murmur2_random")
    # N1's first order has no key and lands on partition 3 at offset 40; its next ones are
    # keyed and land on partition 0 at offsets 0..5: all below 40.
    first = order("n-0", "N1", amount=1.0)
    keyed = [order(f"n-{i}", "N1", amount=float(10 * i), day=10 + i) for i in range(1, 7)]
    produce(settings, [(topic, None, orjson.dumps(first), 3)], "murmur2_random")
    produce(settings, ((topic, b"N1", orjson.dumps(m), 0) for m in keyed), "murmur2_random")

    assert wait_until(lambda: applied_count(client) >= 47), worker.log_tail()
    record = client.hgetall(Keys().customer("N1"))
    assert record["orders"] == "7", record
    assert Decimal(record["revenue"]) == Decimal("1.00") + sum(Decimal(10 * i) for i in range(1, 7))
    assert dead_letters(settings, 1, deadline_s=3) == []


def test_null_keys_and_two_partitioners_lose_nothing_and_count_nothing_twice(
    settings: Settings, worker: WorkerProcess
) -> None:
    events = make_events(600, customers=30, seed=23)
    rng = random.Random(5)
    # Each message goes through one of three producers: the Java-compatible partitioner,
    # librdkafka's default (CRC32), or with no key at all.
    plans: dict[str, list[Message]] = {"murmur2_random": [], "consistent_random": [], "none": []}
    for kind, m in events:
        how = rng.choice(list(plans))
        key = None if how == "none" else m["customer_id"].encode()
        plans[how].append((topic_of(settings, kind), key, orjson.dumps(m), None))
    produce(settings, plans["murmur2_random"], "murmur2_random")
    produce(settings, plans["consistent_random"], "consistent_random")
    produce(settings, plans["none"], "random")
    totals = expected_totals(events, settings.default_margin_rate)
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    assert wait_until(lambda: applied_count(client) >= len(events)), worker.log_tail()
    assert wait_until(lambda: records_match(client, totals), deadline_s=20), worker.log_tail()
    for cid, want in totals.items():
        got = client.hgetall(Keys().customer(cid))
        for name in ("orders", "returns", "contacts"):
            assert int(got.get(name, "0")) == want.get(name, 0), (cid, name)
    assert dead_letters(settings, 1, deadline_s=3) == []


def test_a_retried_event_id_counts_once_and_is_dead_lettered_once(
    settings: Settings, worker: WorkerProcess, tmp_path: Path
) -> None:
    topic = settings.topics.purchases
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    original = order("o-retry", "R1", amount=25.0)
    other = order("o-other", "R1", amount=5.0, day=11)
    # The retry is the same message again, as a producer resends it; it may land on
    # another partition (here: a producer with no key).
    produce(settings, [(topic, b"R1", orjson.dumps(original), None),
                       (topic, b"R1", orjson.dumps(other), None)], "murmur2_random")
    produce(settings, [(topic, None, orjson.dumps(original), None)], "random")
    produce(settings, [(topic, b"R1", orjson.dumps(original), None)], "murmur2_random")

    assert wait_until(lambda: applied_count(client) >= 4), worker.log_tail()
    letters = dead_letters(settings, 2)
    assert len(letters) == 2
    for letter in letters:
        body = orjson.loads(letter.value())
        assert body["error_code"] == "duplicate_event"
        assert "'o-retry'" in body["reason"] and "already applied" in body["reason"]
        assert orjson.loads(body["payload_text"]) == original
    record = client.hgetall(Keys().customer("R1"))
    assert (record["orders"], record["revenue"]) == ("2", "30.00")

    # A full redelivery (a second consumer group reading from the start, as after a crash
    # before any offset commit) changes nothing and dead-letters nothing again.
    worker.stop()
    again = dataclasses.replace(settings, app_id=f"{settings.app_id}-again")
    second = WorkerProcess(again, tmp_path / "again.log")
    second.start()
    try:
        ends = last_offsets(settings)

        def replayed() -> bool:
            done = committed_offsets(again)
            return all(done.get(tp, -1) > last for tp, last in ends.items())

        assert wait_until(replayed), second.log_tail()
        status, view = http_json(again, "/customers/R1")
        assert status == 200 and view["orders"] == 2 and view["revenue"] == 30.0
        assert len(dead_letters(settings, 3, deadline_s=8)) == 2
    finally:
        second.stop()
        delete_worker_topics(again)
