"""The atomic commit against a real Redis: checked sums, the outbox, compare-and-set.

Steps 4 to 6 of the commit order (`stream_app.store.customers`): a sum out of range
aborts the whole call before any write and its event is dead-lettered; a customer
that loses the compare-and-set publishes nothing for the lost attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import orjson
import pytest
import redis
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from stream_app.pipeline import Ingestor, RawRecord
from stream_app.settings import Settings
from stream_app.store import feed
from stream_app.store.customers import Change, CustomerStore, Loaded
from stream_app.store.keys import Keys
from tests.conftest import flushed_db

pytestmark = pytest.mark.integration

DB = 8
NEAR_INT64_MAX = 2**63 - 1_000
KEYS = Keys()
#: C1 and C2 are customers of one partition (murmur2), C3 of another; a commit is atomic
#: per partition.
S1 = KEYS.shard_of("C1")
S3 = KEYS.shard_of("C3")
assert KEYS.shard_of("C2") == S1 and S3 != S1


@pytest.fixture
def redis_url(stack: Settings) -> Iterator[str]:
    with flushed_db(stack, DB) as url:
        yield url


class Recorder:
    """A dead-letter sink and publisher that keeps what it was given (no broker here)."""

    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []

    async def send(self, *args: Any) -> None:
        self.sent.append(args)


def _snapshot(client: redis.Redis) -> dict[bytes, bytes | None]:
    return {key: client.dump(key) for key in sorted(client.keys("*"))}


def _purchase(settings: Settings, offset: int, cid: str, day: str, amount: float,
              channel: str = "web", partition: int = 0) -> RawRecord:
    message = {"event_id": f"ev-{cid}-{offset}", "customer_id": cid,
               "occurred_at": f"2026-{day}T10:00:00Z", "kind": "order", "amount": amount,
               "currency": "USD", "channel": channel}
    return RawRecord(settings.topics.purchases, partition, offset, cid.encode(),
                     orjson.dumps(message))


def _contact(settings: Settings, offset: int, cid: str, day: str,
             partition: int = 0) -> RawRecord:
    message = {"event_id": f"ev-{cid}-{offset}", "customer_id": cid,
               "occurred_at": f"2026-{day}T10:00:00Z", "channel": "phone",
               "reason": "complaint", "cost": 5, "resolved": False}
    return RawRecord(settings.topics.service_contacts, partition, offset, cid.encode(),
                     orjson.dumps(message))


def test_a_commit_whose_sum_would_overflow_writes_nothing(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.hset(KEYS.customer("C1"), mapping={"customer_id": "C1", "_v": "3", "orders": "1"})
    client.hset(S1.rollup("channel", "web"), mapping={"revenue_c": NEAR_INT64_MAX})
    client.hset(KEYS.shard(0).applied, "t/0", 4)
    before = _snapshot(client)

    async def commit() -> Any:
        r = Redis.from_url(redis_url)
        try:
            store = CustomerStore(r)
            return await store.commit(
                [
                    Change("C2", "", {"customer_id": "C2", "orders": "1"},
                           {S1.rank("clv"): 5.0}, [(S1.rollup("channel", "store"),
                                                      "revenue_c", 700)]),
                    Change("C1", "3", {"orders": "2"}, {},
                           [(S1.rollup("channel", "web"), "orders", 1),
                            (S1.rollup("channel", "web"), "revenue_c", 5_000)]),
                ],
                {("t", 0): 9},
                {("t", 0): 1_000},
            )
        finally:
            await r.aclose()

    outcome = None
    with contextlib.suppress(ResponseError):  # what HINCRBY's overflow raised, half way
        outcome = asyncio.run(commit())
    assert _snapshot(client) == before, "a failed commit wrote something"
    assert outcome is not None and outcome.overflow is not None
    assert (outcome.overflow.customer_id, outcome.overflow.key, outcome.overflow.field) == (
        "C1", S1.rollup("channel", "web"), "revenue_c")
    client.close()


def _ingest(settings: Settings, batches: Iterable[list[RawRecord]],
            letters: Recorder, published: Recorder | None = None) -> list[Any]:
    async def main() -> list[Any]:
        r = Redis.from_url(settings.redis_url)
        try:
            ingestor = Ingestor(settings, CustomerStore(r), letters, publisher=published)
            out = []
            for batch in batches:
                if published is not None:
                    published.sent.clear()
                out.append(await ingestor.process(batch))
            return out
        finally:
            await r.aclose()

    return asyncio.run(main())


def test_the_offending_events_are_dead_lettered_and_the_rest_applied(redis_url: str) -> None:
    settings = Settings(redis_url=redis_url)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    # The web channel's revenue is near the largest integer Redis keeps: any order adds
    # too much. The old commit raised half way, and the worker crash-looped on it.
    for shard in (S1, S3):
        client.hset(shard.rollup("channel", "web"), mapping={"revenue_c": NEAR_INT64_MAX})
    batch = [
        _purchase(settings, 0, "C1", "01-10", 10.0, channel="store"),
        _contact(settings, 1, "C2", "01-11"),
        _purchase(settings, 2, "C2", "01-12", 20.0),  # offending: C2 joins "web"
        _purchase(settings, 3, "C3", "01-13", 30.0),  # offending, alone
        _purchase(settings, 4, "C1", "01-14", 15.0, channel="store"),
    ]
    letters = Recorder()
    [result] = _ingest(settings, [batch], letters)

    assert result.dead_lettered == 2, result
    offsets = sorted(message["source_offset"] for _, message in letters.sent)
    assert offsets == [2, 3]
    for _, message in letters.sent:
        assert message["error_code"] == "invalid_value"
        assert "revenue_c" in message["reason"]
    assert client.hget(KEYS.customer("C1"), "orders") == "2"
    c2 = client.hgetall(KEYS.customer("C2"))
    assert c2["orders"] == "0" and c2["contacts"] == "1"
    assert not client.exists(KEYS.customer("C3"))
    for shard in (S1, S3):
        assert client.hget(shard.rollup("channel", "web"), "revenue_c") == str(NEAR_INT64_MAX)
    assert sum(int(client.hget(s.rollup("channel", "store"), "revenue_c") or 0)
               for s in KEYS.shards()) == 2500
    assert client.hget(KEYS.shard(0).applied, f"{settings.topics.purchases}/0") == "4"
    client.close()


def _permissive(redis_url: str) -> Settings:
    """Settings under which a lapsed customer with a complaint is alerted on."""
    return Settings(redis_url=redis_url, alert_min_value_tier=0, alert_min_score=0,
                    alert_max_silence_days=0, alert_severity_bands=(0.0, 0.0, 0.0))


def _history(settings: Settings) -> list[list[RawRecord]]:
    """Four orders of C1, one batch each, then a complaint months later (an alert)."""
    orders = [[_purchase(settings, i, "C1", f"01-{10 + 3 * i:02d}", 100.0)] for i in range(4)]
    return [*orders, [_contact(settings, 0, "C1", "04-20")]]


def _ids(published: Recorder) -> list[str]:
    return [m.get("alert_id") or m.get("trigger_id") or m["example_id"]
            for _, _, m in published.sent]


class RacingStore(CustomerStore):
    """A store whose next load is followed by another worker's write of the customer."""

    def __init__(self, r: Redis, other: Ingestor, record: RawRecord) -> None:
        super().__init__(r)
        self.other, self.record = other, record
        self.armed = False

    async def load_many(self, customer_ids: Iterable[str]) -> dict[str, Loaded]:
        loaded = await super().load_many(customer_ids)
        if self.armed:
            self.armed = False
            await self.other.process([self.record])
        return loaded


def test_a_customer_that_loses_the_race_publishes_nothing_for_it(redis_url: str) -> None:
    settings = _permissive(redis_url)
    letters = Recorder()
    # Without a race, the complaint raises an alert the run below must never publish.
    alone = Recorder()
    _ingest(settings, _history(settings), letters, alone)
    lost_attempt = set(_ids(alone))  # what the complaint's batch alone published
    assert any(i.startswith("al-") for i in lost_attempt), "the scenario raises no alert"
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    history = _history(settings)
    # The racing write: an order the day before the complaint, from another partition.
    late_order = _purchase(settings, 10, "C1", "04-19", 100.0, partition=1)

    async def main() -> tuple[Recorder, Recorder, list[Any]]:
        r = Redis.from_url(redis_url)
        mine, theirs = Recorder(), Recorder()
        try:
            other = Ingestor(settings, CustomerStore(r), letters, publisher=theirs)
            store = RacingStore(r, other, late_order)
            ingestor = Ingestor(settings, store, letters, publisher=mine)
            results = [await ingestor.process(batch) for batch in history[:-1]]
            store.armed = True
            results.append(await ingestor.process(history[-1]))
            return mine, theirs, results
        finally:
            await r.aclose()

    mine, theirs, results = asyncio.run(main())
    assert results[-1].conflicts == 1
    published = _ids(mine) + _ids(theirs)
    assert not lost_attempt & set(published), (lost_attempt, published)
    feed_ids = [orjson.loads(e)["message"].get("alert_id") or orjson.loads(e)["message"].get(
        "trigger_id") for e in client.lrange(S1.alert_feed, 0, -1)]
    assert not lost_attempt & set(feed_ids)
    assert len(feed_ids) == len(set(feed_ids))
    assert client.hlen(S1.outbox) == 0
    client.close()


def test_an_id_is_fed_and_enqueued_once_and_a_loser_writes_no_message(redis_url: str) -> None:
    alert = b'{"customer_id":"C1","alert_id":"al-1"}'

    async def main() -> list[Any]:
        r = Redis.from_url(redis_url)
        try:
            store = CustomerStore(r)
            first = await store.commit([Change("C1", "", {"customer_id": "C1"}, {}, (),
                                               [("alert", "al-1", alert)])])
            again = await store.commit([Change("C1", "1", {"x": "1"}, {}, (),
                                               [("alert", "al-1", alert)])])
            await feed.settle(r, S1, first.enqueued)
            settled = await store.commit([Change("C1", "2", {"x": "2"}, {}, (),
                                                 [("alert", "al-1", alert)])])
            lost = await store.commit([Change("C1", "1", {"x": "3"}, {}, (),
                                              [("winback", "wb-1", b"{}"),
                                               ("outcome", "wb-0", b"{}")])])
            return [first, again, settled, lost]
        finally:
            await r.aclose()

    first, again, settled, lost = asyncio.run(main())
    assert first.enqueued == ["alert:al-1"]
    assert again.enqueued == [] and settled.enqueued == []
    assert lost.lost == ["C1"] and lost.enqueued == []
    client = redis.Redis.from_url(redis_url)
    assert client.llen(S1.alert_feed) == 1
    assert client.hlen(S1.outbox) == 0 and client.zcard(S1.outbox_queue) == 0
    assert client.zrange(S1.published, 0, -1) == [b"al-1"]
    assert not client.exists(S1.winback_outcomes)
    client.close()


class SlowLoads(CustomerStore):
    """A store whose reads take a while, as over a busy network: a concurrent writer of the
    same worker would land between a read and its commit."""

    async def load_many(self, customer_ids: Iterable[str]) -> dict[str, Loaded]:
        loaded = await super().load_many(customer_ids)
        await asyncio.sleep(0.05)
        return loaded


def test_a_batch_and_a_rescoring_of_one_worker_never_race_for_a_customer(
    redis_url: str,
) -> None:
    settings = _permissive(redis_url)
    letters = Recorder()
    orders = _history(settings)[:-1]

    async def main() -> tuple[Any, int]:
        r = Redis.from_url(redis_url)
        try:
            ingestor = Ingestor(settings, SlowLoads(r), letters, publisher=Recorder())
            for batch in orders:
                await ingestor.process(batch)
            later = [_purchase(settings, 4, "C1", "02-20", 50.0)]
            watermark = 1_780_000_000_000  # 2026-05-28, after every event
            return await asyncio.gather(ingestor.process(later),
                                        ingestor.revisit(["C1"], watermark))
        finally:
            await r.aclose()

    batch, rescored = asyncio.run(main())
    # Both wrote: neither read the customer while the other was between its read and commit.
    assert batch.conflicts == 0 and batch.applied == 1
    assert rescored == 1
    client = redis.Redis.from_url(redis_url)
    assert client.hget(KEYS.customer("C1"), "orders") == b"5"
    client.close()
