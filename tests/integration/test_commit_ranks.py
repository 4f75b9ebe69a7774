"""The commit writes each sorted set once per call, with the end state of one write each."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.asyncio import Redis

from stream_app.settings import Settings
from stream_app.store.customers import Change, CustomerStore
from stream_app.store.keys import Keys

pytestmark = pytest.mark.integration

DB = 9
KEYS = Keys()
#: Forty customers of one partition: one commit call writes all of them.
IDS = [cid for cid in (f"R{i}" for i in range(400))
       if KEYS.partition_of(cid) == KEYS.partition_of("R0")][:40]
SHARD = KEYS.shard_of(IDS[0])


@pytest.fixture
def client(stack: Settings) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(f"{stack.redis_url.rsplit('/', 1)[0]}/{DB}")
    c.flushdb()
    yield c
    c.flushdb()
    c.close()


def _calls(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name: int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))
            for name in ("zadd", "zrem", "evalsha")}


def _commit(client: redis.Redis, changes: list[Change]) -> Any:
    async def main() -> Any:
        r = Redis(connection_pool=redis.asyncio.ConnectionPool(
            **client.connection_pool.connection_kwargs))
        try:
            return await CustomerStore(r, KEYS).commit(changes)
        finally:
            await r.aclose()

    return asyncio.run(main())


def test_one_zadd_and_one_zrem_per_sorted_set_whatever_the_customers(
        client: redis.Redis) -> None:
    clv, net, due = SHARD.rank("clv"), SHARD.rank("net_contribution"), SHARD.rescore_due
    gone = IDS[:5]
    client.zadd(due, dict.fromkeys(gone, 7))
    changes = [
        Change(cid, "", {"customer_id": cid},
               {clv: 10.0 * i, net: -1.5 * i, due: None if cid in gone else 100 + i})
        for i, cid in enumerate(IDS)
    ]
    before = _calls(client)
    outcome = _commit(client, changes)
    after = _calls(client)

    assert outcome.lost == [] and outcome.overflow is None
    assert after["evalsha"] - before["evalsha"] == 1
    assert after["zadd"] - before["zadd"] == 3  # clv, net contribution, rescore times
    assert after["zrem"] - before["zrem"] == 1
    assert client.zrange(clv, 0, -1, withscores=True) == [
        (cid.encode(), 10.0 * i) for i, cid in enumerate(IDS)]
    assert dict(client.zrange(net, 0, -1, withscores=True)) == {
        cid.encode(): -1.5 * i for i, cid in enumerate(IDS)}
    assert dict(client.zrange(due, 0, -1, withscores=True)) == {
        cid.encode(): 100.0 + i for i, cid in enumerate(IDS) if cid not in gone}


def test_a_customer_that_loses_the_compare_and_set_moves_no_sorted_set(
        client: redis.Redis) -> None:
    clv = SHARD.rank("clv")
    client.hset(KEYS.customer(IDS[1]), mapping={"customer_id": IDS[1], "_v": "4"})
    client.zadd(clv, {IDS[1]: 3.0})
    outcome = _commit(client, [
        Change(IDS[0], "", {"customer_id": IDS[0]}, {clv: 1.0}),
        Change(IDS[1], "3", {"customer_id": IDS[1]}, {clv: None}),
        Change(IDS[2], "", {"customer_id": IDS[2]}, {clv: 2.0}),
    ])
    assert outcome.lost == [IDS[1]]
    assert client.zrange(clv, 0, -1, withscores=True) == [
        (IDS[0].encode(), 1.0), (IDS[2].encode(), 2.0), (IDS[1].encode(), 3.0)]
