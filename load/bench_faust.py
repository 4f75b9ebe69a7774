"""A Faust agent that only reads and parses the input events: the framework's own ceiling.

``make bench`` runs it between the plain confluent-kafka consumer and the real worker, on the
same pre-published events: the same app settings as the worker (`stream_app.app.create_app`),
the same ``take_events`` batches, and ``orjson.loads`` of each value, but no validation, no
Redis work per customer and no models. The gap between it and the raw consumer is the
framework (Faust, aiokafka, one event loop); the gap between it and the worker is the
engine's own work. It counts the events it has read in Redis (one ``SET`` per batch) under
`COUNT_KEY`, and serves ``/healthz`` so `load.bench_env.WorkerProcess` can wait for it.

``python -m load.bench_faust worker`` runs it with the settings of the environment.
"""

from __future__ import annotations

import faust
import orjson

from stream_app import loops
from stream_app.app import create_app
from stream_app.connections import async_redis
from stream_app.settings import Settings

#: Redis key holding how many events the agent has read and parsed.
COUNT_KEY = "bench:faust-read:events"

#: Suffix of the app id (and consumer group) of the reading agent.
APP_SUFFIX = "-faust-read"


def build(settings: Settings) -> faust.App:
    """The app: one agent over the input topics that reads, parses and counts."""
    app, channels = create_app(settings)
    redis = async_redis(settings)
    within = settings.batch_within_ms / 1000

    @app.agent(channels.inputs, name="bench.read")
    async def read(stream: faust.StreamT) -> None:
        n = 0
        loads = orjson.loads
        async for batch in stream.take_events(settings.batch_size, within=within):
            for event in batch:
                loads(event.message.value)
            n += len(batch)
            await redis.set(COUNT_KEY, n)

    @app.page("/healthz")
    async def health(web: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        return web.json({"status": "ok"})

    return app


def main() -> None:
    """Run the reading agent with the environment's settings (Faust's command line)."""
    settings = Settings.from_env()
    loops.install(settings.event_loop)  # the worker's loop
    worker = faust.Worker(build(settings), loglevel=settings.log_level, quiet=True)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
