"""The engine's commit on a real 3-master Redis Cluster: one slot per call, readers merge.

Layout v1 wrote every batch with one Lua call over keys in many slots (and keys it never
declared), which a cluster refuses with CROSSSLOT; layout v2 commits once per partition.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis.asyncio.cluster import RedisCluster

from stream_app import lookup
from stream_app.pipeline import Ingestor, RawRecord
from stream_app.settings import Settings
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


def test_batches_commit_and_read_back_on_a_cluster(cluster: PrivateCluster) -> None:
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
        client = RedisCluster.from_url(cluster.url)
        try:
            store = CustomerStore(client, keys)
            ingestor = Ingestor(settings, store, Sink())
            for batch in batches:
                await ingestor.process(batch)
            records = [await lookup.customer(client, settings, cid, keys=keys) for cid in ids]
            top = await lookup.top(client, "net_contribution", 5, keys)
            channels = await lookup.rollups(client, "channel", keys)
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
