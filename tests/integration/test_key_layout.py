"""Layout v2: a customer's key follows Kafka's partitioner, and each commit touches one slot."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer
from redis.asyncio import Redis
from redis.crc import key_slot

from stream_app.pipeline import Ingestor, RawRecord
from stream_app.settings import Settings
from stream_app.store import layout
from stream_app.store.customers import CustomerStore
from stream_app.store.keys import Keys, customer_key, partition_of
from tests.conftest import ROOT
from tests.e2e.helpers import own_redis_db

pytestmark = pytest.mark.integration


@pytest.fixture
def redis_settings() -> Iterator[Settings]:
    with own_redis_db(Settings.from_env()) as s:
        yield s


def test_partition_of_is_the_partition_kafkas_default_partitioner_picks(
    settings: Settings,
) -> None:
    # librdkafka's murmur2_random is the Java client's default partitioner for keyed records.
    topic = settings.topics.purchases
    producer = Producer({**settings.kafka_config(), "partitioner": "murmur2_random"})
    placed: dict[str, int] = {}

    def delivered(err: Any, msg: Any) -> None:
        assert err is None, err
        placed[msg.key().decode()] = msg.partition()

    ids = [f"C{i}" for i in range(100)] + ["", "é-ü-客户", "x" * 37, "cust:{7}"]
    for cid in ids:
        producer.produce(topic, key=cid.encode(), value=b"{}", on_delivery=delivered)
    assert producer.flush(30) == 0
    assert len(set(placed.values())) == settings.partitions
    assert placed == {cid: partition_of(cid, settings.partitions) for cid in ids}


def test_cvm_key_prints_the_customers_key() -> None:
    env = {**os.environ, "CVM_PARTITIONS": "12"}
    out = subprocess.run([sys.executable, "-m", "stream_app.cli", "key", "C1"], env=env,
                         cwd=ROOT, capture_output=True, check=True, timeout=60, text=True)
    assert out.stdout.strip() == customer_key("C1", 12) == "cvm:{p9}:customer:C1"


def _purchase(settings: Settings, partition: int, offset: int, cid: str) -> RawRecord:
    message = {"event_id": f"ev-{cid}-{offset}", "customer_id": cid,
               "occurred_at": "2026-01-10T10:00:00Z", "kind": "order", "amount": 10.0,
               "currency": "USD", "channel": "web"}
    return RawRecord(settings.topics.purchases, partition, offset, cid.encode(),
                     orjson.dumps(message))


class Letters:
    async def send(self, *args: Any) -> None:
        raise AssertionError(f"nothing is dead-lettered here: {args}")


def test_each_commit_touches_one_slot_once_per_partition(redis_settings: Settings) -> None:
    settings = redis_settings
    keys = Keys(partitions=settings.partitions)
    ids = [f"C{i}" for i in range(12)]
    # Every record on its key's partition, and one on another partition (a producer
    # that did not key by customer id): applied once, offsets after the customers.
    batch = [_purchase(settings, keys.partition_of(cid), i, cid) for i, cid in enumerate(ids)]
    stray = "C3"
    other = (keys.partition_of(stray) + 1) % settings.partitions
    batch.append(_purchase(settings, other, 99, stray))
    calls: list[list[str]] = []

    async def main() -> dict[tuple[str, int], int]:
        redis = Redis.from_url(settings.redis_url)
        try:
            store = CustomerStore(redis, keys)
            script = store._commit

            async def spy(keys: list[str], args: list[Any]) -> Any:
                calls.append(list(keys))
                return await script(keys=keys, args=args)

            store._commit = spy  # type: ignore[assignment]
            await Ingestor(settings, store, Letters()).process(batch)
            for cid in ids:
                assert await redis.hget(keys.customer(cid), "orders") == (
                    b"2" if cid == stray else b"1"), cid
            return await store.applied_offsets()
        finally:
            await redis.aclose()

    applied = asyncio.run(main())
    for call in calls:
        assert len({key_slot(k.encode()) for k in call}) == 1, call
    touched = {keys.partition_of(cid) for cid in ids}
    # Crossed batch: one call per partition for the customers, one per partition for
    # the offsets.
    assert len(calls) == 2 * len(touched)
    topic = settings.topics.purchases
    assert applied[(topic, other)] == 99


def test_a_v1_layout_is_moved_once_and_a_changed_partition_count_is_refused(
    redis_settings: Settings,
) -> None:
    async def main() -> None:
        redis = Redis.from_url(redis_settings.redis_url, decode_responses=True)
        try:
            await redis.hset("cvm:customer:{A7}", mapping={"customer_id": "A7", "orders": "2"})
            await redis.zadd("cvm:rank:clv", {"A7": 12.5})
            await redis.hset("cvm:rollup:channel:web", mapping={"orders": 2})
            await redis.hset("cvm:rollup:channels", mapping={"web": 1})
            await redis.hset("cvm:hist:clv", mapping={"17": 1})
            await redis.lpush("cvm:feed:recent", b'{"type":"alert","message":{}}')
            await redis.hset("cvm:outbox", "alert:al-1", b'{"customer_id":"A7"}')
            await redis.zadd("cvm:outbox:queue", {"alert:al-1": 5})
            await redis.zadd("cvm:feed:published", {"al-0": 9})
            keys = Keys(partitions=4)
            assert await layout.ensure(redis, keys) == "migrated"
            assert await layout.ensure(redis, keys) == "current"
            shard = keys.shard_of("A7")
            assert await redis.hget(keys.customer("A7"), "orders") == "2"
            assert await redis.zscore(shard.rank("clv"), "A7") == 12.5
            zero = keys.shard(0)
            assert await redis.hget(zero.rollup("channel", "web"), "orders") == "2"
            assert await redis.hget(zero.rollup_index("channel"), "web") == "1"
            assert await redis.hget(zero.histogram("clv"), "17") == "1"
            assert await redis.llen(zero.alert_feed) == 1
            assert await redis.hget(shard.outbox, "alert:al-1") == '{"customer_id":"A7"}'
            assert await redis.zscore(shard.outbox_queue, "alert:al-1") == 5
            for s in keys.shards():
                assert await redis.zscore(s.published, "al-0") == 9
            left = [k async for k in redis.scan_iter("cvm:*") if "{p" not in k]
            assert left == ["cvm:layout"], left
            with pytest.raises(layout.LayoutError, match="CVM_PARTITIONS is 8"):
                await layout.ensure(redis, Keys(partitions=8))
        finally:
            await redis.aclose()

    asyncio.run(main())



def test_the_cli_reads_every_partition_of_the_configured_count(redis_settings: Settings) -> None:
    settings = dataclasses.replace(redis_settings, partitions=6)
    keys = Keys(partitions=6)
    ids = [f"C{i}" for i in range(30)]
    assert len({keys.partition_of(cid) for cid in ids}) == 6
    batch = [_purchase(settings, keys.partition_of(cid), i, cid) for i, cid in enumerate(ids)]

    async def main() -> None:
        redis = Redis.from_url(settings.redis_url)
        try:
            await Ingestor(settings, CustomerStore(redis, keys), Letters()).process(batch)
        finally:
            await redis.aclose()

    asyncio.run(main())
    env = {**os.environ, "REDIS_URL": settings.redis_url, "CVM_PARTITIONS": "6"}
    out = subprocess.run([sys.executable, "-m", "stream_app.cli", "top", "-n", "100",
                          "--by", "net_contribution", "--json"],
                         env=env, cwd=ROOT, capture_output=True, check=True, timeout=60)
    assert sorted(row["customer_id"] for row in orjson.loads(out.stdout)) == sorted(ids)
    out = subprocess.run([sys.executable, "-m", "stream_app.cli", "rollups", "channel", "--json"],
                         env=env,
                         cwd=ROOT, capture_output=True, check=True, timeout=60)
    [web] = orjson.loads(out.stdout)
    assert web["customers"] == len(ids) and web["orders"] == len(ids)
