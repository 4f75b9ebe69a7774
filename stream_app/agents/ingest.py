"""The agent over the three input topics: batches of raw records into the pipeline."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable, Mapping

import faust
from faust.types import TP
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from stream_app.app import Channels
from stream_app.pipeline import RawRecord
from stream_app.runtime import Runtime
from stream_app.store import churn_models, server

log = logging.getLogger(__name__)

RETRY_DELAYS = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


async def resume_points(
    runtime: Runtime, assigned: Iterable[TP], committed: Mapping[TP, int]
) -> dict[TP, int]:
    """Input partitions whose group offset is ahead of what Redis holds, and where to resume.

    Redis records, atomically with each batch's writes, the last offset it
    applied per partition. If Redis lost recent writes (a machine crash under
    ``appendfsync everysec``) or lost everything, the group's committed offset
    is ahead of it and those events must be read again. The reverse (Redis
    ahead, after a worker crash) needs nothing: already applied events are
    skipped per customer. The training topic resumes from the offset of the
    newest churn model snapshot, so a restarted learner relearns what its
    snapshot lacks.
    """
    inputs = {*runtime.settings.topics.inputs, runtime.settings.topics.training}
    applied = await runtime.store.applied_offsets()
    # The learner's position is the offset its newest model snapshot holds.
    snapshot = await churn_models.load(runtime.redis, runtime.keys, runtime.settings.signing_key)
    applied[(runtime.settings.topics.training, 0)] = -1 if snapshot is None else snapshot.offset
    lower: dict[TP, int] = {}
    for tp in assigned:
        if tp.topic not in inputs:
            continue
        group = committed.get(tp)
        if group is None or group <= 0:
            continue
        resume = applied.get((tp.topic, tp.partition), -1) + 1
        if resume < group:
            lower[tp] = resume
    return lower


def register(app: faust.App, channels: Channels, runtime: Runtime) -> None:
    """Attach the ingest agent and its resume-from-Redis hook to `app`."""
    settings = runtime.settings
    within = settings.batch_within_ms / 1000

    @app.task
    async def check_redis_config() -> None:
        # Customer records stay compact listpacks only if the server allows long values.
        await server.check_listpack_value(runtime.redis)

    @app.on_rebalance_complete.connect
    async def resume_from_redis(sender: faust.App, **kwargs: object) -> None:
        # Faust sends this after assignment, while the partitions are still
        # paused and just before it seeks them to their committed offsets, so
        # lowering the committed offset here makes the stream start from the
        # last offset Redis really holds, before any message is fetched.
        assigned = sender.consumer.assignment()
        committed = await sender.consumer.seek_to_committed()
        lower = await resume_points(runtime, assigned, committed)
        if lower:
            log.warning("Redis is behind the committed offsets; re-reading from %s", lower)
            await sender.consumer._commit(lower)  # noqa: SLF001 - Faust has no public API
            # aiokafka's seek-to-committed leaves a partition alone when the
            # committed offset is 0, so seek explicitly as well.
            for tp, offset in lower.items():
                await sender.consumer.seek(tp, offset)

    @app.agent(channels.inputs, name="cvm.ingest")
    async def ingest(stream: faust.StreamT) -> None:
        # take_events acknowledges a batch only after this loop body returns,
        # so no offset is committed before its effect is in Redis.
        async for batch in stream.take_events(settings.batch_size, within=within):
            records = [
                RawRecord(
                    topic=e.message.topic,
                    partition=e.message.partition,
                    offset=e.message.offset,
                    key=e.message.key,
                    value=e.message.value,
                )
                for e in batch
            ]
            attempt = 0
            while True:
                try:
                    await runtime.ingestor.process(records)
                    break
                except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                    delay = RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)]
                    attempt += 1
                    log.warning("Redis unavailable (%s); retrying batch in %.1fs", exc, delay)
                    await asyncio.sleep(delay)
                except Exception:
                    # Fail-stop: an unexpected error must not skip the batch. The
                    # process exits without committing, and a restart re-reads it.
                    log.critical("cannot apply batch; stopping the worker", exc_info=True)
                    os._exit(70)
