"""Reads that merge the per-partition shares of the state (layout v2, `keys`).

Each input partition keeps its own share of the roll-ups, histograms, rank sets,
offsets, watermarks, alert feed and win-back outcomes under its hash tag; a
reader adds the shares up (sums), unions them (offsets, watermarks, outcomes)
or merges them (top-N, the feed). Each function reads every partition in one
pipelined round trip, which a Redis Cluster client splits by node.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from stream_app.store.keys import Keys, Shard

__all__ = [
    "applied_offsets",
    "customer_page",
    "feed",
    "histogram",
    "merged_hash",
    "rank_at",
    "ranks_at",
    "rank_size",
    "rollup",
    "rollup_names",
    "top",
    "watermarks",
    "winback_outcomes",
]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def _each(redis: Redis, keys: Keys, call: Callable[[Any, Shard], Any]) -> list[Any]:
    async with redis.pipeline(transaction=False) as pipe:
        for shard in keys.shards():
            call(pipe, shard)
        return list(await pipe.execute())


async def _union(redis: Redis, keys: Keys, key: Callable[[Shard], str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw in await _each(redis, keys, lambda pipe, s: pipe.hgetall(key(s))):
        out.update({_text(k): _text(v) for k, v in raw.items()})
    return out


async def customer_page(
    redis: Redis, shard: Shard, cursor: int, count: int
) -> tuple[int, list[Any]]:
    """One SCAN page of a partition's customer keys: (next cursor, 0 at the end; keys).

    On a cluster the page is asked of the primary that owns the partition's slot (a
    cluster client would send a bare SCAN to any node).
    """
    if isinstance(redis, RedisCluster):
        node = redis.get_node_from_key(shard.tag)
        cursors, found = await redis.scan(cursor, match=shard.customer_pattern, count=count,
                                          target_nodes=node)
        return int(next(iter(cursors.values()), 0)), list(found)
    cursor, found = await redis.scan(cursor, match=shard.customer_pattern, count=count)
    return int(cursor), list(found)


def by_partition(raw: dict[str, str]) -> dict[tuple[str, int], int]:
    out: dict[tuple[str, int], int] = {}
    for name, value in raw.items():
        topic, _, partition = name.rpartition("/")
        out[(topic, int(partition))] = int(value)
    return out


async def applied_offsets(redis: Redis, keys: Keys) -> dict[tuple[str, int], int]:
    """The last applied offset of every (topic, partition) seen so far."""
    return by_partition(await _union(redis, keys, lambda s: s.applied))


async def watermarks(redis: Redis, keys: Keys) -> dict[tuple[str, int], int]:
    """The event-time watermark (ms) of every (topic, partition) seen so far."""
    return by_partition(await _union(redis, keys, lambda s: s.watermarks))


async def merged_hash(redis: Redis, keys: Keys, key: Callable[[Shard], str]) -> dict[str, int]:
    """The field-wise integer sum of one hash over every partition."""
    out: dict[str, int] = {}
    for raw in await _each(redis, keys, lambda pipe, s: pipe.hgetall(key(s))):
        for k, v in raw.items():
            name = _text(k)
            out[name] = out.get(name, 0) + int(v)
    return out


async def histogram(redis: Redis, keys: Keys, name: str) -> dict[str, int]:
    """One population histogram (bucket -> count) over every partition."""
    return await merged_hash(redis, keys, lambda s: s.histogram(name))


async def rollup(redis: Redis, keys: Keys, scope: str, name: str) -> dict[str, int]:
    """One channel's or campaign's roll-up over every partition."""
    return await merged_hash(redis, keys, lambda s: s.rollup(scope, name))


async def rollup_names(redis: Redis, keys: Keys, scope: str) -> list[str]:
    """Every channel or campaign name with a roll-up in some partition, sorted."""
    return sorted(await merged_hash(redis, keys, lambda s: s.rollup_index(scope)))


async def top(redis: Redis, keys: Keys, rank: str, n: int) -> list[tuple[str, float]]:
    """The `n` highest members of a rank set over every partition, highest first."""
    if n <= 0:
        return []
    rows = await _each(redis, keys, lambda pipe, s: pipe.zrevrange(s.rank(rank), 0, n - 1,
                                                                    withscores=True))
    merged = heapq.merge(*([(_text(m), float(v)) for m, v in part] for part in rows),
                         key=lambda row: -row[1])
    return list(merged)[:n]


async def rank_size(redis: Redis, keys: Keys, rank: str) -> int:
    """Members of a rank set over every partition."""
    return sum(int(c) for c in await _each(redis, keys, lambda p, s: p.zcard(s.rank(rank))))


async def rank_at(redis: Redis, keys: Keys, rank: str, index: int) -> float | None:
    """The score at 0-based `index` (lowest first) of the union of a rank set's shares."""
    return (await ranks_at(redis, keys, rank, [index]))[0]


async def ranks_at(
    redis: Redis, keys: Keys, rank: str, indices: Sequence[int]
) -> list[float | None]:
    """The scores at 0-based `indices` (lowest first) of the union of a rank set's shares.

    Exact on scores with two decimals (how the engine stores money): a bisection on
    the score in cents, counting members at or below it in every partition. The
    bisections of all `indices` move in step, so each round trip carries one count per
    index and partition. None for every index when the rank set is empty.
    """
    # Each partition's lowest and highest score, in one round trip.
    ends = await _each(redis, keys, lambda p, s: (
        p.zrange(s.rank(rank), 0, 0, withscores=True),
        p.zrange(s.rank(rank), -1, -1, withscores=True)))
    lows = [float(r[0][1]) for r in ends[0::2] if r]
    tops = [float(r[0][1]) for r in ends[1::2] if r]
    if not lows:
        return [None] * len(indices)
    bounds = [[round(min(lows) * 100), round(max(tops) * 100)] for _ in indices]
    while any(lo < hi for lo, hi in bounds):
        open_ = [(i, (lo + hi) // 2) for i, (lo, hi) in enumerate(bounds) if lo < hi]
        # Partition by partition, one count per open bisection.
        mids = [mid for _, mid in open_]
        counts = await _each(redis, keys, lambda p, s, mids=mids: [
            p.zcount(s.rank(rank), "-inf", mid / 100 + 0.004) for mid in mids])
        for k, (i, mid) in enumerate(open_):
            if sum(int(c) for c in counts[k::len(open_)]) > indices[i]:
                bounds[i][1] = mid
            else:
                bounds[i][0] = mid + 1
    return [lo / 100 for lo, _ in bounds]


async def winback_outcomes(redis: Redis, keys: Keys) -> dict[str, str]:
    """Closed win-back outcomes over every partition: trigger id -> JSON."""
    return await _union(redis, keys, lambda s: s.winback_outcomes)


def _at(raw: bytes) -> int:
    try:
        at = orjson.loads(raw).get("at")
    except (orjson.JSONDecodeError, AttributeError):
        return 0
    return at if isinstance(at, int) else 0


async def feed(redis: Redis, keys: Keys, n: int) -> list[bytes]:
    """The `n` newest feed entries over every partition (by commit time ``at``; entries
    without one, of layout v1, after), raw JSON."""
    if n <= 0:
        return []
    parts: Sequence[Iterable[bytes]] = await _each(
        redis, keys, lambda pipe, s: pipe.lrange(s.alert_feed, 0, n - 1))
    entries = [bytes(e) if not isinstance(e, str) else e.encode() for part in parts for e in part]
    # A stable sort: entries of one partition with the same time keep their order.
    entries.sort(key=_at, reverse=True)
    return entries[:n]
