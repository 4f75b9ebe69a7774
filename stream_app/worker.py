"""Assembles a worker: app, topics, agents, web views."""

from __future__ import annotations

import logging

import faust

from stream_app import logs, web
from stream_app.agents import ingest, learner, valuation
from stream_app.app import create_app
from stream_app.connections import check_kafka, check_redis, redis_address
from stream_app.runtime import Runtime
from stream_app.settings import Settings

log = logging.getLogger(__name__)


def build(settings: Settings) -> tuple[faust.App, Runtime]:
    """The complete worker app for `settings`."""
    app, channels = create_app(settings)
    runtime = Runtime(
        settings,
        channels.dead_letter,
        {"training": channels.training, "alert": channels.alerts, "winback": channels.winback},
    )
    ingest.register(app, channels, runtime)
    valuation.register(app, runtime)
    learner.register(app, channels.training, runtime)
    web.register(app, runtime)
    return app, runtime


def run(settings: Settings) -> None:
    """Run a worker in this process until it is stopped.

    Kafka and Redis are asked once first, so that a refused login or certificate
    stops the start with one line (`ConnectionRefused`) instead of endless retries.
    """
    check_kafka(settings)
    check_redis(settings)
    app, _ = build(settings)

    @app.task
    async def connected() -> None:  # once logging is set up
        log.info("kafka: %s via %s; redis: %s", settings.kafka_bootstrap_servers,
                 settings.kafka_security.describe(), redis_address(settings.redis_url))

    # Faust's worker applies this logging configuration once, as it starts.
    worker = faust.Worker(
        app, loglevel=settings.log_level, quiet=True, logging_config=logs.dict_config(settings)
    )
    worker.execute_from_commandline()
