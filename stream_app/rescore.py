"""Revalue every stored customer with the current model (after a fit)."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence

from stream_app.pipeline import Ingestor
from stream_app.store import shards

log = logging.getLogger(__name__)


def _never() -> bool:
    return False


async def _in_chunks(
    ingestor: Ingestor,
    ids: Sequence[str],
    watermark: int | None,
    chunk: int,
    should_stop: Callable[[], bool],
    budget_s: float = math.inf,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Revisit `ids` `chunk` at a time, yielding the event loop after each chunk.

    The first chunk always runs; a later one starts only while `should_stop` is false
    and less than `budget_s` has passed since the first began.
    """
    started = clock()
    done = 0
    for start in range(0, len(ids), chunk):
        if start and (should_stop() or clock() - started >= budget_s):
            break
        done += await ingestor.revisit(ids[start : start + chunk], watermark)
        await asyncio.sleep(0)
    return done


async def rescore_all(
    ingestor: Ingestor,
    watermark: int | None,
    page: int = 500,
    should_stop: Callable[[], bool] = _never,
    chunk: int = 50,
) -> int:
    """Rewrite every customer's predicted values, rankings, histogram buckets and scores.

    Each customer is valued and decided at the event-time `watermark` (or at their
    own latest event if that is later), as the rescoring timer does: a customer
    silent for weeks is not decided as of their last event, which would date an
    alert back. Without a watermark (nothing applied yet), at their latest event.
    Uses the same compare-and-set commit as the agent: a customer the agent
    wrote in between is skipped, since the agent's write is the fresher one.
    Each page is revisited `chunk` customers at a time, yielding the event loop
    between chunks, so the agent's batches and the lookups wait for one chunk at
    most. Stops between pages once `should_stop` says so (each page is written
    whole). Returns the number of customers rewritten.
    """
    store = ingestor.store
    redis = store.redis
    cursor = 0
    done = 0
    for shard in store.keys.shards():
        while True:
            cursor, raw_keys = await shards.customer_page(redis, shard, cursor, page)
            ids = [store.keys.customer_id(key) for key in raw_keys]
            if ids:
                done += await _in_chunks(ingestor, ids, watermark, chunk, _never)
            if cursor == 0 or should_stop():
                break
        if should_stop():
            break
    log.info("rescored %d customers with model v%d", done, ingestor.live.model.version)
    return done


async def revisit_due(
    ingestor: Ingestor,
    watermark: int,
    limit: int = 200,
    chunk: int = 50,
    should_stop: Callable[[], bool] = _never,
    budget_s: float = math.inf,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Label and rescore the customers that event time has passed by; returns how many.

    Two sorted sets say who is due: customers whose oldest pending churn
    snapshot has reached its horizon, and customers with value at stake whose
    last score is a day of event time old. Both are scored by event time (ms).
    They are revisited `chunk` at a time, each chunk yielding the event loop
    before the next, so the agent's batches wait for one chunk at most; once
    `should_stop` says so, or `budget_s` seconds (by `clock`) have passed since the
    first chunk began, no further chunk starts (each chunk is written whole). The
    customers left stay due, most overdue first, for the next run: when event time
    runs ahead of wall-clock time (a worker catching up, a replay) rescoring falls
    behind it instead of crowding out the ingest agent (`due_entries` says by how much).
    """
    store = ingestor.store
    redis = store.redis
    async with redis.pipeline(transaction=False) as pipe:
        for shard in store.keys.shards():
            pipe.zrangebyscore(shard.churn_deadlines, "-inf", watermark, start=0, num=limit)
            pipe.zrangebyscore(shard.rescore_due, "-inf", watermark, start=0, num=limit)
        due = await pipe.execute()
    # Due deadlines first, as one set did before the partitions had one set each.
    ordered = [m for rows in due[0::2] for m in rows] + [m for rows in due[1::2] for m in rows]
    ids = list(dict.fromkeys(m.decode() if isinstance(m, bytes) else m for m in ordered))
    return await _in_chunks(ingestor, ids, watermark, chunk, should_stop, budget_s, clock)


async def due_entries(ingestor: Ingestor, watermark: int) -> int:
    """Entries of the due sets at or before `watermark` (a customer in both counts twice)."""
    store = ingestor.store
    async with store.redis.pipeline(transaction=False) as pipe:
        for shard in store.keys.shards():
            pipe.zcount(shard.churn_deadlines, "-inf", watermark)
            pipe.zcount(shard.rescore_due, "-inf", watermark)
        counts = await pipe.execute()
    return sum(int(c) for c in counts)
