"""The agent over the three input topics: batches of raw records into the pipeline."""

from __future__ import annotations

import asyncio
import logging
import os

import faust
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from stream_app.app import Channels
from stream_app.pipeline import RawRecord
from stream_app.runtime import Runtime

log = logging.getLogger(__name__)

RETRY_DELAYS = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


def register(app: faust.App, channels: Channels, runtime: Runtime) -> None:
    """Attach the ingest agent to `app`."""
    settings = runtime.settings
    within = settings.batch_within_ms / 1000

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
