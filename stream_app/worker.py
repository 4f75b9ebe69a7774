"""Assembles a worker: app, topics, agents, web views."""

from __future__ import annotations

import faust

from stream_app import logs, web
from stream_app.agents import ingest, learner, valuation
from stream_app.app import create_app
from stream_app.runtime import Runtime
from stream_app.settings import Settings


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
    """Run a worker in this process until it is stopped."""
    app, _ = build(settings)
    # Faust's worker applies this logging configuration once, as it starts.
    worker = faust.Worker(
        app, loglevel=settings.log_level, quiet=True, logging_config=logs.dict_config(settings)
    )
    worker.execute_from_commandline()
