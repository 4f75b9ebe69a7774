"""Assembles a worker: app, topics, agents, web views."""

from __future__ import annotations

import gc
import logging
import os
import threading

import faust

from stream_app import logs, loops, web
from stream_app.agents import ingest, learner, valuation
from stream_app.agents.ingest import EXIT_STOPPED_UNWRITTEN
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


class Worker(faust.Worker):
    """Faust's worker, which exits at most `stop_timeout_s` after a stop signal or a crash.

    Stopping commits the offsets of what was applied, and aiokafka retries a commit for as
    long as the group's coordinator is unreachable: with the broker down, a stopping worker
    would never exit. Past the deadline a thread ends the process (`EXIT_STOPPED_UNWRITTEN`)
    without those commits; Redis holds what was applied, and the next worker reads the rest
    again, counting each event once. A crash (Faust's, or the group watch's
    `consumer_group.OutOfGroup`) stops the worker the same way, under the same deadline.
    """

    def __init__(self, *args: object, stop_timeout_s: float, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.stop_timeout_s = stop_timeout_s
        self._deadline: threading.Timer | None = None

    def _on_sigint(self) -> None:
        self._arm_deadline("SIGINT")
        super()._on_sigint()

    def _on_sigterm(self) -> None:
        self._arm_deadline("SIGTERM")
        super()._on_sigterm()

    def _crash(self, reason: BaseException) -> None:
        self._arm_deadline(f"a crash ({type(reason).__name__})")
        super()._crash(reason)

    def _arm_deadline(self, cause: str) -> None:
        if self._deadline is not None:
            return

        def expire() -> None:
            log.error("the worker did not stop within %.0fs of %s (is Kafka or Redis "
                      "unreachable?); exiting without its last commits: what it had not "
                      "acknowledged is read again", self.stop_timeout_s, cause)
            logging.shutdown()
            os._exit(EXIT_STOPPED_UNWRITTEN)

        self._deadline = threading.Timer(self.stop_timeout_s, expire)
        self._deadline.daemon = True
        self._deadline.name = "stop-deadline"
        self._deadline.start()


#: Net new tracked objects between two young collections of a running worker (Python: 700).
GC_YOUNG_THRESHOLD = 20_000


def tune_gc(young: int = GC_YOUNG_THRESHOLD) -> None:
    """Keep the cyclic garbage collector off the hot path of a started worker.

    The objects a worker makes as it starts (Faust, aiokafka, river, the modules: about
    175,000) live as long as it does, and each full collection walked all of them again:
    every second or two while it caught up, 100 to 180 ms each, during which no event was
    read. They are collected once and frozen (`gc.freeze`: never scanned again), and a
    young collection waits for `young` net new objects instead of 700: a batch's objects
    are freed by reference counting, so collections rarely find anything to free.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young, middle, old)
    log.info("garbage collector: %d objects of the start frozen; young collections every %d "
             "new objects", gc.get_freeze_count(), young)


def run(settings: Settings) -> None:
    """Run a worker in this process until it is stopped.

    Kafka and Redis are asked once first, so that a refused login or certificate
    stops the start with one line (`ConnectionRefused`) instead of endless retries.
    """
    loops.install(settings.event_loop)
    check_kafka(settings)
    check_redis(settings)
    app, _ = build(settings)

    @app.task
    async def connected() -> None:  # once logging is set up
        log.info("kafka: %s via %s; redis: %s; event loop: %s", settings.kafka_bootstrap_servers,
                 settings.kafka_security.describe(), redis_address(settings.redis_url),
                 loops.running())
        if settings.gc_freeze:
            tune_gc()

    # Faust's worker applies this logging configuration once, as it starts.
    worker = Worker(
        app, loglevel=settings.log_level, quiet=True, logging_config=logs.dict_config(settings),
        stop_timeout_s=settings.stop_timeout_s,
    )
    worker.execute_from_commandline()
