"""Order statistics over a rank set split across partitions, against a real Redis."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator

import pytest
import redis
from redis.asyncio import Redis

from stream_app.settings import Settings
from stream_app.store import shards
from stream_app.store.keys import Keys
from tests.conftest import flushed_db

pytestmark = pytest.mark.integration

DB = 6
KEYS = Keys(partitions=4)


@pytest.fixture
def redis_url(stack: Settings) -> Iterator[str]:
    with flushed_db(stack, DB) as url:
        yield url


def _fill(url: str, rank: str, scores: dict[str, float]) -> None:
    client = redis.Redis.from_url(url)
    for cid, score in scores.items():
        client.zadd(KEYS.shard_of(cid).rank(rank), {cid: score})
    client.close()


def _ask(url: str, rank: str, indices: list[int]) -> tuple[list[float | None], list[float | None]]:
    async def main() -> tuple[list[float | None], list[float | None]]:
        r = Redis.from_url(url)
        try:
            together = await shards.ranks_at(r, KEYS, rank, indices)
            alone = [await shards.rank_at(r, KEYS, rank, i) for i in indices]
            return together, alone
        finally:
            await r.aclose()

    return asyncio.run(main())


def test_every_index_is_the_sorted_union_at_that_index(redis_url: str) -> None:
    rng = random.Random(5)
    # Two-decimal money with ties and negative amounts (net contribution can be negative).
    scores = {f"C{i:04d}": round(rng.choice([-1, 1]) * rng.expovariate(1 / 300), 2)
              for i in range(700)}
    scores.update({f"T{i}": 12.5 for i in range(30)})
    _fill(redis_url, "net_contribution", scores)
    ordered = sorted(scores.values())
    assert len({KEYS.shard_of(c).partition for c in scores}) == 4
    indices = [0, 1, len(ordered) // 2, 589, 693, len(ordered) - 2, len(ordered) - 1, 1]
    together, alone = _ask(redis_url, "net_contribution", indices)
    assert together == [ordered[i] for i in indices]
    assert alone == together


def test_an_empty_rank_set_has_no_scores(redis_url: str) -> None:
    together, alone = _ask(redis_url, "value_at_risk", [0, 5])
    assert together == [None, None] and alone == [None, None]
