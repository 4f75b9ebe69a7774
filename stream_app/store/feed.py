"""The alert feed and the outbox in Redis (steps 4 to 6 of `stream_app.store.customers`).

The commit (`commit.lua`) pushes every new alert and win-back trigger to the
feed, newest first, capped at `FEED_LENGTH` entries, and puts it, like every
training example, in the outbox: a hash ``kind:id`` -> message JSON, with a
sorted set of its fields by commit time. Once Kafka has acknowledged a message,
`settle` removes it from the outbox and records an alert or trigger id as
published; the ids are kept for `PUBLISHED_DAYS`, and the commit neither feeds
nor enqueues an id that is in the outbox or published, so the feed holds each id
once. Entries a crash left behind are read by `due` and published again.

Each input partition has its own feed, outbox and published ids, under its hash
tag (`stream_app.store.keys.Shard`); `stream_app.store.shards.feed` merges the feeds.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import orjson
from redis.asyncio import Redis

from stream_app.store.keys import Keys, Shard

FEED_LENGTH = 500
PUBLISHED_DAYS = 30
#: An outbox entry older than this (seconds) is taken for one a crashed worker left
#: behind, and published by whichever worker drains the outbox next.
OUTBOX_GRACE_S = 30.0
#: Kinds of outbox message whose ids are recorded as published (and shown in the feed).
FED_KINDS = ("alert", "winback")


def feed_entry(topic_kind: str, message: dict[str, Any], at_ms: int) -> bytes:
    """One feed entry: ``{"type": "alert"|"winback", "at": <commit time, ms>, "message": {...}}``.

    The commit time orders the entries of the partitions' feeds when they are merged.
    """
    return orjson.dumps({"type": topic_kind, "at": at_ms, "message": message})


async def push(redis: Redis, keys: Keys, topic_kind: str, message: dict[str, Any]) -> None:
    """Add an entry to the feed of the message's customer by hand (the engine's entries
    come from the commit)."""
    key = keys.shard_of(str(message["customer_id"])).alert_feed
    async with redis.pipeline(transaction=True) as pipe:
        pipe.lpush(key, feed_entry(topic_kind, message, int(time.time() * 1000)))
        pipe.ltrim(key, 0, FEED_LENGTH - 1)
        await pipe.execute()


def outbox_field(kind: str, ident: str) -> str:
    """The outbox field of a message: ``kind:id``."""
    return f"{kind}:{ident}"


def split_field(name: str) -> tuple[str, str]:
    """``kind:id`` -> (kind, id)."""
    kind, _, ident = name.partition(":")
    return kind, ident


async def due(
    redis: Redis, keys: Shard, before_ms: float, limit: int = 500
) -> list[tuple[str, bytes | None]]:
    """One partition's outbox entries committed before `before_ms` (oldest first):
    (field, JSON or None)."""
    raw = await redis.zrangebyscore(keys.outbox_queue, "-inf", before_ms, start=0, num=limit)
    fields = [f.decode() if isinstance(f, bytes) else f for f in raw]
    if not fields:
        return []
    bodies = await redis.hmget(keys.outbox, fields)
    return [
        (name, body.encode() if isinstance(body, str) else body)
        for name, body in zip(fields, bodies, strict=True)
    ]


async def settle(redis: Redis, keys: Shard, fields: Sequence[str]) -> None:
    """Step 6: drop acknowledged messages from one partition's outbox and record the ids
    published."""
    if not fields:
        return
    now = time.time()
    ids = {ident: now for kind, ident in map(split_field, fields) if kind in FED_KINDS}
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hdel(keys.outbox, *fields)
        pipe.zrem(keys.outbox_queue, *fields)
        if ids:
            pipe.zadd(keys.published, ids)
            pipe.zremrangebyscore(keys.published, "-inf", now - PUBLISHED_DAYS * 86_400)
        await pipe.execute()
