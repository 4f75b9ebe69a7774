"""Records written with one applied offset per topic (``_o:<topic>``) drop no event.

The record is written in the v1 key layout too, as such an engine left it; the worker's
start (`layout.ensure`) moves it to layout v2 before the batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from stream_app.domain.ledger import CustomerState
from stream_app.pipeline import Ingestor, RawRecord
from stream_app.settings import Settings
from stream_app.store import layout
from stream_app.store.customers import CustomerStore
from stream_app.store.keys import Keys
from stream_app.store.records import from_fields, to_fields
from tests.e2e.helpers import own_redis_db

pytestmark = pytest.mark.integration

OFFSETS = "_a"  # the record's applied offsets per topic partition


class Letters:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send(self, key: bytes | None, message: dict[str, Any]) -> None:
        self.sent.append(message)


@pytest.fixture
def redis_settings() -> Iterator[Settings]:
    with own_redis_db(Settings.from_env()) as s:
        yield s


def order(event_id: str, day: int) -> bytes:
    return orjson.dumps({
        "event_id": event_id, "customer_id": "L1", "occurred_at": f"2026-01-{day:02d}T10:00:00Z",
        "kind": "order", "amount": 10.0, "currency": "USD", "channel": "web",
    })


async def scenario(settings: Settings) -> tuple[dict[str, str], Letters]:
    redis = Redis.from_url(settings.redis_url, decode_responses=True)
    keys = Keys()
    topic = settings.topics.purchases
    try:
        # As the old layout left it: one order applied from offset 50 of some partition of
        # the topic (partition 0, which the engine has processed up to 50), nothing from
        # partition 1 beyond offset 5.
        old = to_fields(CustomerState("L1", orders=1, revenue_c=1000, purchase_days=(20454,)))
        old.pop(OFFSETS, None)
        old[f"_o:{topic}"] = "50"
        old["_v"] = "1"
        await redis.hset("cvm:customer:{L1}", mapping=old)  # layout v1
        await redis.hset("cvm:applied", mapping={f"{topic}/0": 50, f"{topic}/1": 5})
        assert await layout.ensure(redis, keys) == "migrated"
        assert await CustomerStore(redis).applied_offsets() == {(topic, 0): 50, (topic, 1): 5}
        letters = Letters()
        ingestor = Ingestor(settings, CustomerStore(redis), letters)
        await ingestor.process([
            RawRecord(topic, 0, 50, b"L1", order("old", 1)),  # redelivered: already applied
            RawRecord(topic, 1, 10, None, order("new-1", 2)),  # below 50, never processed
            RawRecord(topic, 1, 11, None, order("new-2", 3)),
        ])
        return await redis.hgetall(keys.customer("L1")), letters
    finally:
        await redis.aclose()


def test_old_topic_offsets_skip_only_events_the_engine_already_processed(
    redis_settings: Settings,
) -> None:
    record, letters = asyncio.run(scenario(redis_settings))
    assert letters.sent == []
    assert record["orders"] == "3", record
    assert record["revenue"] == "30.00"
    topic = redis_settings.topics.purchases
    assert from_fields("L1", record).offsets == {(topic, 1): 11}
    assert record[f"_o:{topic}"] == "50"  # left as it was
