"""The alert feed in Redis: what the ops page and `cvm alerts` show first.

Every alert and win-back trigger the engine publishes is also pushed here,
newest first, capped at `FEED_LENGTH` entries. The ids already published are
kept for `PUBLISHED_DAYS` so that a batch replayed after a crash does not
publish the same alert twice.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
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
    await push_many(redis, keys, [(topic_kind, message)])


async def push_many(
    redis: Redis, keys: Keys, entries: Sequence[tuple[str, dict[str, Any]]]
) -> None:
    """Add published alerts and triggers, in order, in one transaction; remember their ids."""
    if not entries:
        return
    now = time.time()
    ids = {
        ident: now for _, m in entries if (ident := m.get("alert_id") or m.get("trigger_id"))
    }
    async with redis.pipeline(transaction=True) as pipe:
        for topic_kind, message in entries:
            pipe.lpush(keys.alert_feed, feed_entry(topic_kind, message))
        pipe.ltrim(keys.alert_feed, 0, FEED_LENGTH - 1)
        if ids:
            pipe.zadd(keys.published, ids)
            pipe.zremrangebyscore(keys.published, "-inf", now - PUBLISHED_DAYS * 86_400)
        await pipe.execute()


async def published_among(redis: Redis, keys: Keys, idents: Sequence[str]) -> set[str]:
    """Which of these alert or trigger ids were published before (one ZMSCORE)."""
    if not idents:
        return set()
    scores = await redis.zmscore(keys.published, list(idents))
    return {i for i, score in zip(idents, scores, strict=True) if score is not None}
