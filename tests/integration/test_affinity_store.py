"""Product affinity counters in a real Redis, written by the real batch commit.

The counters of each input partition and period are summed in the customers'
commit (exactly once: a replayed batch adds nothing), merged with decay on read,
and the periods no reader merges any more are deleted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis
from redis.asyncio import Redis

from stream_app import offers as product_offers
from stream_app.pipeline import Ingestor, RawRecord
from stream_app.settings import Settings
from stream_app.store.customers import CustomerStore
from stream_app.store.keys import Keys
from tests.conftest import flushed_db

pytestmark = pytest.mark.integration

DB = 9
KEYS = Keys()
COFFEE = {"sku": "COF", "category": "coffee", "quantity": 1, "unit_price": 10}
MUG = {"sku": "MUG", "category": "mugs", "quantity": 1, "unit_price": 20}
TEA = {"sku": "TEA", "category": "tea", "quantity": 1, "unit_price": 5}


@pytest.fixture
def redis_url(stack: Settings) -> Iterator[str]:
    with flushed_db(stack, DB) as url:
        yield url


class Recorder:
    """A dead-letter sink that keeps what it was given (no broker here)."""

    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []

    async def send(self, *args: Any) -> None:
        self.sent.append(args)


def _order(settings: Settings, offset: int, cid: str, day: str, items: list[dict[str, Any]],
           partition: int) -> RawRecord:
    message = {"event_id": f"ev-{cid}-{day}", "customer_id": cid,
               "occurred_at": f"2026-{day}T10:00:00Z", "kind": "order",
               "amount": sum(x["unit_price"] for x in items), "currency": "USD",
               "channel": "web", "items": items}
    return RawRecord(settings.topics.purchases, partition, offset, cid.encode(),
                     orjson.dumps(message))


def test_counters_are_summed_once_merged_with_decay_and_old_periods_dropped(
    redis_url: str,
) -> None:
    # Periods of 30 days (2026-01-10 is day 20463, in period 682), a half-life of one
    # period, and two periods merged.
    settings = Settings(redis_url=redis_url, affinity_period_days=30,
                        affinity_half_life_days=30, affinity_periods=2)
    first = [_order(settings, i, f"M{i}", "01-10", [COFFEE, MUG], 0) for i in range(10)]
    first += [_order(settings, i, f"E{i}", "01-10", [COFFEE, TEA], 1) for i in range(10)]
    later = [_order(settings, 10 + i, f"N{i}", "02-10", [COFFEE, MUG], 0) for i in range(10)]
    much_later = [_order(settings, 20, "L0", "05-10", [TEA], 0)]
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    letters = Recorder()

    async def main() -> tuple[list[product_offers.Tables], list[str]]:
        r = Redis.from_url(redis_url)
        try:
            ingestor = Ingestor(settings, CustomerStore(r), letters)
            seen = []
            await ingestor.process(first)
            await ingestor.process(first)  # a replay after a crash: applied already
            seen.append(await product_offers.load_tables(r, settings))
            index = sorted(k for i in product_offers.index_keys(KEYS) for k in client.hkeys(i))
            assert not client.exists(KEYS.affinity_index)  # each partition has its own
            await ingestor.process(later)
            seen.append(await product_offers.load_tables(r, settings))
            await ingestor.process(much_later)
            await ingestor.refresh_affinity(force=True)
            seen.append(ingestor.affinity)
            return seen, index
        finally:
            await r.aclose()

    (once, decayed, moved_on), index = asyncio.run(main())
    assert not letters.sent
    # Both partitions' keys are merged: 20 coffee buyers, 10 of them with mugs.
    assert once.all.buyers == {"coffee": 20, "mugs": 10, "tea": 10}
    assert once.all.customers == 20
    assert once.all.confidence("coffee", "mugs") == 0.5
    assert once.all.margin_per_line("mugs", 0.3) == pytest.approx(6.0)  # 30 % of 20
    # One key per partition of the buyers (the customer's partition, whatever the record's).
    assert index == sorted({KEYS.affinity("all", 682, KEYS.partition_of(r.key.decode()))
                            for r in first})
    assert len(index) > 1
    # A period later the January counts weigh half: (5 + 10) / (10 + 10).
    assert decayed.all.confidence("coffee", "mugs") == pytest.approx(0.75)
    # The product profile is in the customer's record, committed with it.
    profile = orjson.loads(client.hget(KEYS.customer("N3"), "products"))
    assert [row[:4] for row in profile["c"]] == [["coffee", 1000, 1, 1], ["mugs", 2000, 1, 1]]
    # May is period 686: only 685 and 686 are merged (684 would be kept, one spare);
    # the keys of January (682) and February (683) are deleted.
    assert moved_on.newest_period == 686
    assert moved_on.all.buyers == {"tea": 1}
    gone = [*index, *{KEYS.affinity("all", 683, KEYS.partition_of(r.key.decode()))
                      for r in later}]
    assert not client.exists(*gone)
    newest = KEYS.affinity("all", 686, KEYS.partition_of("L0"))
    assert [k for i in product_offers.index_keys(KEYS) for k in client.hkeys(i)] == [newest]
    assert client.hkeys(KEYS.shard_of("L0").affinity_index) == [newest]
    client.close()


def test_a_reader_without_a_worker_keeps_the_tables_for_the_refresh_interval(
    redis_url: str,
) -> None:
    """`lookup.customer` without a worker's tables merges the counters once per
    CVM_REFRESH_INTERVAL_S: an order committed in between shows only after it."""
    from stream_app import lookup

    keeping = Settings(redis_url=redis_url, refresh_interval_s=3600.0)
    fresh = Settings(redis_url=redis_url, refresh_interval_s=0.0)
    coffee = [_order(keeping, i, f"M{i}", "01-10", [COFFEE, MUG], 0) for i in range(10)]
    tea = [_order(keeping, 10 + i, f"T{i}", "01-11", [COFFEE, TEA], 0) for i in range(10)]

    async def main() -> tuple[dict[str, Any], ...]:
        r = Redis.from_url(redis_url)
        other = Redis.from_url(redis_url)
        try:
            ingestor = Ingestor(keeping, CustomerStore(r), Recorder())
            await ingestor.process(coffee)
            before = await lookup.customer(r, keeping, "M1")
            await ingestor.process(tea)
            kept = await lookup.customer(r, keeping, "M1")
            reread = await lookup.customer(r, fresh, "M1")
            other_client = await lookup.customer(other, keeping, "M1")
            assert before and kept and reread and other_client
            return before, kept, reread, other_client
        finally:
            await r.aclose()
            await other.aclose()

    before, kept, reread, other_client = asyncio.run(main())

    def offered(view: dict[str, Any]) -> set[str]:
        return {o["category"] for o in view["offers"]}

    assert "tea" not in offered(before)
    assert offered(kept) == offered(before)  # the tables read for `before`, kept
    assert "tea" in offered(reread)  # an interval of 0 reads them again
    assert "tea" in offered(other_client)  # kept per client
