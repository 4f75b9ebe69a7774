"""Assembles a worker: app, topics, agents, web views."""

from __future__ import annotations

import faust

from stream_app import web
from stream_app.agents import ingest, valuation
from stream_app.app import create_app
from stream_app.runtime import Runtime
from stream_app.settings import Settings


def build(settings: Settings) -> tuple[faust.App, Runtime]:
    """The complete worker app for `settings`."""
    app, channels = create_app(settings)
    runtime = Runtime(settings, channels.dead_letter)
    ingest.register(app, channels, runtime)
    valuation.register(app, runtime)
    web.register(app, runtime)
    return app, runtime


def run(settings: Settings) -> None:
    """Run a worker in this process until it is stopped."""
    app, _ = build(settings)
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True)
    worker.execute_from_commandline()
