"""The key layout version in Redis, and the move of a v1 layout to v2 (schemas/README.md).

Layout v2 (`stream_app.store.keys`) keeps each input partition's state under its
hash tag. A Redis written by an engine before v2 holds one global key per
roll-up, histogram, rank set and bookkeeping structure and ``cvm:customer:{<id>}``
per customer; `ensure`, which the worker runs before it reads any offset, moves
such data into v2 once:

* customer hashes are renamed to their partition's key, unchanged (their
  bookkeeping fields, old ``_o:<topic>`` offsets included, stay as they were);
* applied offsets and watermarks go to the shard of their partition;
* rank set members go to the shard of their customer;
* histograms, roll-ups and their name indexes, the alert feed and the win-back
  outcomes go whole to partition 0's shard: readers add the shares of every
  partition up, so where the old totals sit does not matter;
* outbox entries go to the shard of their customer, and published ids to every
  shard.

Then ``cvm:layout`` records the version and the partition count. A worker whose
CVM_PARTITIONS differs from the recorded count refuses to start: its customers
would be looked for under other keys.

Within v2, the product affinity keys were first listed in one global
``cvm:affinity:index`` and now in each partition's ``cvm:{p<n>}:affinity:index``
(so that a commit writes one Redis Cluster slot only); nothing is moved: readers
union both (`stream_app.offers.index_keys`) and the global one empties as its
periods are dropped. Run this version on the single Redis before moving to a cluster.
"""

from __future__ import annotations

import logging

import orjson
from redis.asyncio import Redis

from stream_app.store.keys import LAYOUT_VERSION, Keys

__all__ = ["LayoutError", "ensure", "migrate_v1"]

log = logging.getLogger(__name__)

_V1_RANKS = ("rank:clv", "rank:net_contribution", "rank:value_at_risk", "churn:deadlines",
             "churn:rescore")


class LayoutError(RuntimeError):
    """Redis holds data of a layout or partition count this engine cannot use."""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def _has_v1(redis: Redis, keys: Keys) -> bool:
    p = keys.prefix
    if await redis.exists(f"{p}:applied", f"{p}:watermarks", f"{p}:outbox"):
        return True
    async for _ in redis.scan_iter(match=f"{p}:customer:{{*", count=1000):
        return True
    return False


async def ensure(redis: Redis, keys: Keys) -> str:
    """Check (and record) the layout before the engine reads or writes state.

    Returns "current" (v2 with the same partition count), "new" (an empty Redis,
    now marked v2) or "migrated" (a v1 layout moved to v2).
    """
    raw = {_text(k): _text(v) for k, v in (await redis.hgetall(keys.layout)).items()}
    if raw:
        version, partitions = int(raw.get("version", 0)), int(raw.get("partitions", 0))
        if version != LAYOUT_VERSION:
            raise LayoutError(f"{keys.layout}: layout v{version}, this engine writes "
                              f"v{LAYOUT_VERSION}")
        if partitions != keys.partitions:
            raise LayoutError(
                f"{keys.layout}: the state was written for {partitions} input partitions, "
                f"CVM_PARTITIONS is {keys.partitions}; customers would be looked for under "
                "other keys (set CVM_PARTITIONS to the recorded count)")
        return "current"
    outcome = "new"
    if await _has_v1(redis, keys):
        moved = await migrate_v1(redis, keys)
        log.warning("moved a v1 key layout to v2 (%d customers)", moved)
        outcome = "migrated"
    await redis.hset(keys.layout, mapping={"version": LAYOUT_VERSION,
                                           "partitions": keys.partitions})
    return outcome


async def migrate_v1(redis: Redis, keys: Keys) -> int:
    """Move every v1 key to its v2 place (module docstring); returns customers moved.

    Single Redis only (a v1 layout never ran on a cluster). Each step is idempotent,
    so a migration interrupted half way is finished by the next start.
    """
    p = keys.prefix
    zero = keys.shard(0)
    moved = 0
    async for raw_key in redis.scan_iter(match=f"{p}:customer:{{*", count=1000):
        key = _text(raw_key)
        cid = key[len(f"{p}:customer:{{"):-1]
        await redis.rename(key, keys.customer(cid))
        moved += 1
    for name, attr in (("applied", "applied"), ("watermarks", "watermarks")):
        old = f"{p}:{name}"
        for field, value in (await redis.hgetall(old)).items():
            partition = int(_text(field).rpartition("/")[2])
            await redis.hset(getattr(keys.shard(partition), attr), _text(field), _text(value))
        await redis.delete(old)
    for name in _V1_RANKS:
        old = f"{p}:{name}"
        rows = await redis.zrange(old, 0, -1, withscores=True)
        async with redis.pipeline(transaction=False) as pipe:
            for member, score in rows:
                cid = _text(member)
                pipe.zadd(f"{keys.shard_of(cid).tag}:{name}", {cid: score})
            await pipe.execute()
        await redis.delete(old)
    for pattern in (f"{p}:hist:*", f"{p}:rollup:*"):
        async for raw_key in redis.scan_iter(match=pattern, count=1000):
            key = _text(raw_key)
            await redis.rename(key, f"{zero.tag}:{key[len(p) + 1:]}")
    for key, target in ((f"{p}:feed:recent", zero.alert_feed),
                        (f"{p}:winback:outcomes", zero.winback_outcomes)):
        if await redis.exists(key):
            await redis.rename(key, target)
    queue = dict(await redis.zrange(f"{p}:outbox:queue", 0, -1, withscores=True))
    for field, body in (await redis.hgetall(f"{p}:outbox")).items():
        shard = keys.shard_of(str(orjson.loads(body)["customer_id"]))
        await redis.hset(shard.outbox, _text(field), body)
        await redis.zadd(shard.outbox_queue, {_text(field): queue.get(field, 0.0)})
    published = await redis.zrange(f"{p}:feed:published", 0, -1, withscores=True)
    if published:
        for shard in keys.shards():
            await redis.zadd(shard.published, {_text(m): s for m, s in published})
    await redis.delete(f"{p}:outbox", f"{p}:outbox:queue", f"{p}:feed:published")
    return moved
