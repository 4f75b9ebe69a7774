"""Concurrent lookups read their records in one pipeline, against the real write path and Redis.

Records are written by `Ingestor.process` and its Lua commit; a first lookup makes the client
keep the watermarks and the model, so the lookups after it read only the customer's record,
which `RecordReads` queues and sends together.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from stream_app import lookup
from stream_app.pipeline import Ingestor
from stream_app.settings import Settings
from stream_app.store.customers import CustomerStore
from stream_app.store.keys import Keys
from tests.e2e.helpers import NoDeadLetters, own_redis_db
from tests.integration.test_lookup_reads import order

pytestmark = pytest.mark.integration

IDS = [f"R{i}" for i in range(8)]


@pytest.fixture(scope="module")
def redis_settings() -> Iterator[Settings]:
    with own_redis_db(Settings.from_env()) as s:
        yield replace(s, lookup_watermark_s=3600.0, refresh_interval_s=3600.0)


def key(settings: Settings, customer_id: str) -> str:
    return Keys(partitions=settings.partitions).customer(customer_id)


class Batches:
    """The keys of every pipeline `RecordReads` sends (a spy: the reads still go to Redis)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sent: list[list[str]] = []
        send = lookup.RecordReads._send

        async def spy(redis: Redis, queue: list[tuple[str, Any]]) -> None:
            self.sent.append([key for key, _ in queue])
            await send(redis, queue)

        monkeypatch.setattr(lookup.RecordReads, "_send", staticmethod(spy))


async def written(settings: Settings, redis: Redis) -> None:
    await redis.flushdb()
    ingestor = Ingestor(settings, CustomerStore(redis), NoDeadLetters())
    await ingestor.process([order(settings, i, cid, f"03-{1 + i:02d}")
                            for i, cid in enumerate(IDS)])


def test_concurrent_lookups_share_one_pipeline_and_answer_as_one_at_a_time(
    redis_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches = Batches(monkeypatch)

    async def main() -> tuple[list[Any], list[Any]]:
        redis = Redis.from_url(redis_settings.redis_url)
        try:
            await written(redis_settings, redis)
            alone = [await lookup.customer(redis, redis_settings, cid) for cid in IDS]
            batches.sent.clear()
            return alone, list(await asyncio.gather(
                *(lookup.customer(redis, redis_settings, cid) for cid in IDS)))
        finally:
            await redis.aclose()

    alone, together = asyncio.run(main())
    assert together == alone
    assert [r["customer_id"] for r in together] == IDS
    assert batches.sent == [[key(redis_settings, cid) for cid in IDS]]


def test_a_forged_record_fails_its_own_lookup_and_not_its_neighbours(
    redis_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches = Batches(monkeypatch)
    forged = "R-forged"

    async def main() -> list[Any]:
        redis = Redis.from_url(redis_settings.redis_url)
        try:
            await written(redis_settings, redis)
            await lookup.customer(redis, redis_settings, IDS[0])  # keeps marks and model
            await redis.set(key(redis_settings, forged), b"not a hash")
            batches.sent.clear()
            return list(await asyncio.gather(
                *(lookup.customer(redis, redis_settings, cid)
                  for cid in (IDS[1], forged, IDS[2])),
                return_exceptions=True))
        finally:
            await redis.aclose()

    first, bad, last = asyncio.run(main())
    assert len(batches.sent) == 1 and len(batches.sent[0]) == 3  # one pipeline for all three
    assert isinstance(bad, ResponseError) and "WRONGTYPE" in str(bad)
    assert first["customer_id"] == IDS[1] and last["customer_id"] == IDS[2]


def test_a_connection_that_fails_fails_every_read_in_its_pipeline() -> None:
    async def main() -> list[Any]:
        dead = Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)  # nothing listens
        try:
            reads = lookup.record_reads(dead)
            return list(await asyncio.gather(
                *(reads.hgetall(dead, f"k{i}") for i in range(3)), return_exceptions=True))
        finally:
            await dead.aclose()

    outcomes = asyncio.run(main())
    assert len(outcomes) == 3
    assert all(isinstance(o, RedisConnectionError) for o in outcomes), outcomes


@pytest.mark.parametrize("when", ["queued", "in flight"])
def test_a_cancelled_read_leaves_the_others_to_finish(
    redis_settings: Settings, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    batches = Batches(monkeypatch)

    async def main() -> tuple[list[Any], bool]:
        redis = Redis.from_url(redis_settings.redis_url)
        try:
            await written(redis_settings, redis)
            reads = lookup.record_reads(redis)
            tasks = [asyncio.ensure_future(reads.hgetall(redis, key(redis_settings, cid)))
                     for cid in IDS[:3]]
            await asyncio.sleep(0)  # every task has queued its key
            if when == "in flight":
                while not batches.sent:
                    await asyncio.sleep(0)
            tasks[1].cancel()
            done = await asyncio.gather(tasks[0], tasks[2])
            # The client is still fit to read after the cancelled one.
            again = await reads.hgetall(redis, key(redis_settings, IDS[1]))
            return [*done, again], tasks[1].cancelled()
        finally:
            await redis.aclose()

    (first, third, again), cancelled = asyncio.run(main())
    assert cancelled
    assert first[b"customer_id"] == IDS[0].encode() and third[b"customer_id"] == IDS[2].encode()
    assert again[b"customer_id"] == IDS[1].encode()
    assert batches.sent[0] == [key(redis_settings, cid) for cid in IDS[:3]]
