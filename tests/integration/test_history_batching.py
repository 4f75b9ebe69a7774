"""A customer's value history and the population trends do not depend on how the customer's
events were batched: the ingest path, in one batch and in a batch per event, against Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from stream_app.history_plan import HISTORY
from stream_app.pipeline import Ingestor, RawRecord
from stream_app.settings import Settings
from stream_app.store.customers import CustomerStore
from stream_app.store.keys import Keys
from tests.e2e.helpers import own_redis_db

pytestmark = pytest.mark.integration

#: (day of 2026, kind): a contact before the first order, orders over four months, a touch.
EVENTS = [("01-05", "contact"), ("01-20", "order"), ("02-11", "order"), ("02-25", "touch"),
          ("04-02", "order"), ("05-14", "contact"), ("05-20", "order")]


class Sink:
    async def send(self, *args: Any) -> None:
        pass


@pytest.fixture
def own(stack: Settings) -> Iterator[Settings]:
    with own_redis_db(stack) as s:
        yield s


def _records(settings: Settings) -> list[RawRecord]:
    out = []
    for n, (day, kind) in enumerate(EVENTS):
        at = f"2026-{day}T10:00:00Z"
        if kind == "order":
            topic, body = settings.topics.purchases, {
                "kind": "order", "amount": 60.0 + n, "currency": "USD", "channel": "web"}
        elif kind == "contact":
            topic, body = settings.topics.service_contacts, {
                "channel": "phone", "reason": "billing", "cost": 3.0, "resolved": True}
        else:
            topic, body = settings.topics.campaign_touches, {
                "campaign_id": "K1", "channel": "email", "action": "opened", "cost": 0.1}
        message = {"event_id": f"e{n}", "customer_id": "C1", "occurred_at": at, **body}
        out.append(RawRecord(topic, 0, n, b"C1", orjson.dumps(message)))
    return out


async def _ingest(settings: Settings, batches: list[list[RawRecord]]) -> tuple[str, dict[str, str]]:
    """The customer's packed history and their partition's trend sums after `batches`."""
    redis = Redis.from_url(settings.redis_url)
    try:
        await redis.flushdb()
        ingestor = Ingestor(settings, CustomerStore(redis), Sink(), publisher=Sink())
        for batch in batches:
            await ingestor.process(batch)
        keys = Keys(partitions=settings.partitions)
        record = await redis.hgetall(keys.customer("C1"))
        trends = await redis.hgetall(keys.trends(keys.partition_of("C1")))
        return (record[HISTORY.encode()].decode(),
                {k.decode(): v.decode() for k, v in trends.items()})
    finally:
        await redis.aclose()


def _months(history: str) -> list[str]:
    return [p.partition(",")[0] for p in history.split("|")[1].split(";")]


def test_one_batch_and_a_batch_per_event_give_the_same_history_and_trends(
        own: Settings) -> None:
    records = _records(own)
    alone = asyncio.run(_ingest(own, [[r] for r in records]))
    together = asyncio.run(_ingest(own, [records]))
    history, trends = alone
    # January (the first order) to May: four closed months and the open one.
    assert _months(history) == ["672", "673", "674", "675", "676"]
    assert together == alone and trends


def test_a_later_event_read_before_the_first_order_starts_the_history_at_its_month(
        own: Settings) -> None:
    """The February touch is read first (another topic ran ahead): the first order is valued
    as of it, so the history starts in February however the rest is batched, and no January
    point counts the touch's cost."""
    records = _records(own)
    touch = records[3]
    rest = [r for r in records if r is not touch]
    alone = asyncio.run(_ingest(own, [[touch], *([r] for r in rest)]))
    together = asyncio.run(_ingest(own, [[touch], rest]))
    at_once = asyncio.run(_ingest(own, [[touch, *rest]]))
    assert _months(alone[0]) == ["673", "674", "675", "676"]
    assert together == alone == at_once
