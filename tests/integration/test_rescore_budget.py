"""The rescoring timers against a real Redis: a time budget per run, and chunks that yield.

Customers are made by the ingest path itself (`Ingestor.process` on purchase records), so
the due sets read here are the ones a worker's batches write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence

import orjson
import pytest
from redis.asyncio import Redis

from stream_app.pipeline import Ingestor, RawRecord
from stream_app.rescore import due_entries, rescore_all, revisit_due
from stream_app.settings import Settings
from stream_app.store.customers import CustomerStore
from tests.conftest import flushed_db

pytestmark = pytest.mark.integration

DB = 7
CUSTOMERS = [f"C{i:03d}" for i in range(23)]
#: 2026-12-31, months after every purchase: every customer is due for a churn label.
WATERMARK = 1_798_675_200_000


@pytest.fixture
def redis_url(stack: Settings) -> Iterator[str]:
    with flushed_db(stack, DB) as url:
        yield url


class Sink:
    async def send(self, *args: object) -> None:
        pass


class CountingIngestor(Ingestor):
    """An ingestor that notes how many customers each revisit call was given."""

    calls: list[int]

    async def revisit(self, customer_ids: Sequence[str], watermark: int | None) -> int:
        self.calls.append(len(customer_ids))
        return await super().revisit(customer_ids, watermark)


def _orders(settings: Settings) -> list[RawRecord]:
    records = []
    for offset, cid in enumerate(CUSTOMERS):
        for k, day in enumerate(("01-10", "02-11", "03-12")):
            message = {"event_id": f"ev-{cid}-{k}", "customer_id": cid,
                       "occurred_at": f"2026-{day}T10:00:00Z", "kind": "order",
                       "amount": 40.0 + offset, "currency": "USD", "channel": "web"}
            records.append(RawRecord(settings.topics.purchases, 0, 3 * offset + k,
                                     cid.encode(), orjson.dumps(message)))
    return records


async def _ingested(redis_url: str, r: Redis) -> CountingIngestor:
    settings = Settings(redis_url=redis_url)
    ingestor = CountingIngestor(settings, CustomerStore(r), Sink(), publisher=Sink())
    ingestor.calls = []
    await ingestor.process(_orders(settings))
    return ingestor


class Clock:
    """A clock that moves `step` seconds each time it is read."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_a_run_stops_starting_chunks_once_its_budget_is_spent(redis_url: str) -> None:
    async def main() -> tuple[int, list[int], int, int, list[int]]:
        r = Redis.from_url(redis_url)
        try:
            ingestor = await _ingested(redis_url, r)
            due = await due_entries(ingestor, WATERMARK)
            # Each chunk takes 0.1 s by this clock: a 0.25 s budget starts three chunks.
            first = await revisit_due(ingestor, WATERMARK, chunk=5, budget_s=0.25,
                                      clock=Clock(0.1))
            calls = list(ingestor.calls)
            left = await due_entries(ingestor, WATERMARK)
            ingestor.calls.clear()
            rest = await revisit_due(ingestor, WATERMARK, chunk=5)
            return due, calls, first, left, [rest, await due_entries(ingestor, WATERMARK)]
        finally:
            await r.aclose()

    due, calls, first, left, (rest, after) = asyncio.run(main())
    assert due >= len(CUSTOMERS), due  # every customer's churn label is due
    assert calls == [5, 5, 5] and first == 15
    # The customers left stay due for the next run, which takes them all.
    assert 0 < left < due
    assert rest == len(CUSTOMERS) - 15 and after == 0


def test_the_first_chunk_runs_even_with_a_budget_already_spent(redis_url: str) -> None:
    async def main() -> tuple[int, list[int]]:
        r = Redis.from_url(redis_url)
        try:
            ingestor = await _ingested(redis_url, r)
            done = await revisit_due(ingestor, WATERMARK, chunk=4, budget_s=1e-9,
                                     clock=Clock(1.0))
            return done, ingestor.calls
        finally:
            await r.aclose()

    done, calls = asyncio.run(main())
    assert calls == [4] and done == 4


def test_a_rescoring_after_a_fit_goes_in_chunks(redis_url: str) -> None:
    async def main() -> tuple[int, list[int]]:
        r = Redis.from_url(redis_url)
        try:
            ingestor = await _ingested(redis_url, r)
            done = await rescore_all(ingestor, WATERMARK, chunk=10)
            return done, ingestor.calls
        finally:
            await r.aclose()

    done, calls = asyncio.run(main())
    assert done == len(CUSTOMERS)
    assert sum(calls) == len(CUSTOMERS) and max(calls) <= 10 and len(calls) >= 3
