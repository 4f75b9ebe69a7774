"""The engine's commit on a real 3-master Redis Cluster: one slot per call, readers merge.

Layout v1 wrote every batch with one Lua call over keys in many slots (and keys it never
declared), which a cluster refuses with CROSSSLOT; layout v2 commits once per partition.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from stream_app import connections, lookup, resp
from stream_app.pipeline import Ingestor, RawRecord
from stream_app.settings import Settings
from stream_app.store import acl, shards
from stream_app.store.customers import CustomerStore
from stream_app.store.keys import Keys
from tests.private_cluster import PrivateCluster

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateCluster]:
    c = PrivateCluster(Path(tmp_path_factory.mktemp("cluster")))
    try:
        c.start()
        yield c
    finally:
        c.stop()


class Sink:
    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []

    async def send(self, *args: Any) -> None:
        self.sent.append(args)


def _record(settings: Settings, keys: Keys, offset: int, cid: str, day: int,
            amount: float, partition: int | None = None) -> RawRecord:
    message = {"event_id": f"ev-{cid}-{offset}", "customer_id": cid,
               "occurred_at": f"2026-01-{day:02d}T10:00:00Z", "kind": "order",
               "amount": amount, "currency": "USD", "channel": "web" if day % 2 else "store"}
    p = keys.partition_of(cid) if partition is None else partition
    return RawRecord(settings.topics.purchases, p, offset, cid.encode(), orjson.dumps(message))


@pytest.mark.parametrize("make_client", [RedisCluster.from_url, resp.packed_cluster],
                         ids=["redis-py", "packed"])
def test_batches_commit_and_read_back_on_a_cluster(
    cluster: PrivateCluster, make_client: Callable[[str], RedisCluster]
) -> None:
    settings = Settings(redis_url=cluster.url)
    keys = Keys(partitions=settings.partitions)
    ids = [f"C{i}" for i in range(40)]
    batches = [
        [_record(settings, keys, 10 * day + i, cid, day, 10.0 * (i + 1))
         for i, cid in enumerate(ids)]
        for day in (3, 4, 9)
    ]
    # A replay of the first batch (a crash before Kafka got the offsets) and a record on a
    # partition that is not its key's.
    stray = _record(settings, keys, 999, "C5", 20, 7.0,
                    partition=(keys.partition_of("C5") + 1) % settings.partitions)
    batches += [batches[0], [stray]]

    async def main() -> tuple[Any, ...]:
        client = make_client(cluster.url)
        try:
            await client.flushall(target_nodes=RedisCluster.PRIMARIES)
            store = CustomerStore(client, keys)
            ingestor = Ingestor(settings, store, Sink())
            for batch in batches:
                await ingestor.process(batch)
            records = [await lookup.customer(client, settings, cid, keys=keys) for cid in ids]
            # At once, the record reads go in one pipeline over keys in many slots.
            at_once = await asyncio.gather(
                *(lookup.customer(client, settings, cid, keys=keys) for cid in ids))
            assert at_once == records
            top = await lookup.top(client, "net_contribution", 5, keys)
            channels = await lookup.rollups(client, "channel", keys)
            paged: list[str] = []  # the rescoring timer's walk over every partition
            for shard in keys.shards():
                cursor = -1
                while cursor != 0:
                    cursor, found = await shards.customer_page(client, shard, max(cursor, 0), 7)
                    paged += [keys.customer_id(k) for k in found]
            assert sorted(paged) == sorted(ids)
            if make_client is resp.packed_cluster:  # every node's connections pack with hiredis
                used = [c for node in client.get_nodes() for c in node._connections]
                assert used and all(isinstance(c, resp.PackedConnection) for c in used)
            return records, top, channels, await store.applied_offsets()
        finally:
            await client.aclose()

    records, top, channels, applied = asyncio.run(main())
    by_id = {r["customer_id"]: r for r in records}
    for i, cid in enumerate(ids):
        assert by_id[cid]["orders"] == 3 + (cid == "C5"), by_id[cid]
        assert by_id[cid]["revenue"] == pytest.approx(30.0 * (i + 1) + 7.0 * (cid == "C5"))
    assert [row["customer_id"] for row in top] == ["C39", "C38", "C37", "C36", "C35"]
    assert sum(row["customers"] for row in channels) == len(ids)
    assert sum(row["revenue"] for row in channels) == pytest.approx(
        sum(r["revenue"] for r in records))
    topic = settings.topics.purchases
    assert applied[(topic, stray.partition)] == 999
    assert max(o for (t, _), o in applied.items() if t == topic) == 999


def _set_users(cluster: PrivateCluster, *commands: str) -> None:
    for port in cluster.ports:
        node = redis.Redis(port=port)
        try:
            for command in commands:
                node.execute_command(*command.split())
        finally:
            node.close()


def test_the_acl_users_work_on_every_node_with_the_cluster_rules(cluster: PrivateCluster) -> None:
    _set_users(cluster, acl.worker_user("w-plain", "pw-plain-123"),
               acl.worker_user("w-cluster", "pw-cluster-123", cluster=True),
               acl.lookup_user("l-cluster", "pw-lookup-123", cluster=True))
    port = cluster.ports[0]

    def url(user: str, password: str) -> str:
        return f"redis://{user}:{password}@127.0.0.1:{port}/0"

    settings = Settings(redis_url=url("w-cluster", "pw-cluster-123"), redis_cluster=True)
    keys = Keys(partitions=settings.partitions)
    batch = [_record(settings, keys, i, f"A{i}", 5, 12.5) for i in range(12)]

    async def main() -> tuple[Any, ...]:
        plain = RedisCluster.from_url(url("w-plain", "pw-plain-123"))
        try:
            # Without CLUSTER SLOTS the client cannot learn the slot map.
            with pytest.raises(RedisClusterException, match="cannot be connected"):
                await plain.ping()
        finally:
            await plain.aclose()
        worker = connections.async_redis(settings)
        reader = connections.async_redis(replace(
            settings, redis_url=url("l-cluster", "pw-lookup-123")))
        try:
            await Ingestor(settings, CustomerStore(worker, keys), Sink()).process(batch)
            record = await lookup.customer(reader, settings, "A3", keys=keys)
            top = await lookup.top(reader, "net_contribution", 3, keys)
            with pytest.raises(redis.RedisError, match="no permissions"):
                await reader.set(keys.customer("A3"), "x")
            return record, top
        finally:
            await worker.aclose()
            await reader.aclose()

    record, top = asyncio.run(main())
    assert record is not None and record["orders"] == 1 and record["revenue"] == 12.5
    assert len(top) == 3
