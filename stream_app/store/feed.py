"""The alert feed in Redis: what the ops page and `cvm alerts` show first.

Every alert and win-back trigger the engine publishes is also pushed here,
newest first, capped at `FEED_LENGTH` entries. The ids already published are
kept for `PUBLISHED_DAYS` so that a batch replayed after a crash does not
publish the same alert twice.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from redis.asyncio import Redis

from stream_app.store.keys import Keys

FEED_LENGTH = 500
PUBLISHED_DAYS = 30


def feed_entry(topic_kind: str, message: dict[str, Any]) -> bytes:
    """One feed entry: ``{"type": "alert"|"winback", "message": {...}}``."""
    return orjson.dumps({"type": topic_kind, "message": message})


async def push(redis: Redis, keys: Keys, topic_kind: str, message: dict[str, Any]) -> None:
    """Add a published alert or trigger to the feed and remember its id."""
    ident = message.get("alert_id") or message.get("trigger_id")
    now = time.time()
    async with redis.pipeline(transaction=True) as pipe:
        pipe.lpush(keys.alert_feed, feed_entry(topic_kind, message))
        pipe.ltrim(keys.alert_feed, 0, FEED_LENGTH - 1)
        if ident:
            pipe.zadd(keys.published, {ident: now})
            pipe.zremrangebyscore(keys.published, "-inf", now - PUBLISHED_DAYS * 86_400)
        await pipe.execute()


async def already_published(redis: Redis, keys: Keys, ident: str) -> bool:
    """Whether an alert or trigger with this id was published before."""
    return await redis.zscore(keys.published, ident) is not None


async def recent(redis: Redis, keys: Keys, n: int = 50) -> list[dict[str, Any]]:
    """The newest `n` feed entries, newest first."""
    rows = await redis.lrange(keys.alert_feed, 0, n - 1)
    return [orjson.loads(r) for r in rows]
