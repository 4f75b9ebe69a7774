"""Timers of the value model: refresh on every worker, fit and rescore on the leader."""

from __future__ import annotations

import logging

import faust

from stream_app import metrics
from stream_app.models import FitError, engine_watermark, fit_and_store
from stream_app.rescore import due_entries, rescore_all, revisit_due
from stream_app.runtime import Runtime
from stream_app.store import feed

log = logging.getLogger(__name__)


def register(app: faust.App, runtime: Runtime) -> None:
    """Attach the model timers to `app`."""
    settings = runtime.settings

    timers = runtime.timers

    async def refresh_model() -> None:
        await runtime.refresh()

    async def fit_model() -> None:
        await fit_now(runtime)

    async def revisit() -> None:
        # Event time passing without events: label churn snapshots whose horizon
        # ended and rescore customers with value at stake once a day of event time,
        # within a time budget per run (the rest stays due for the next run).
        watermark = await engine_watermark(runtime.redis, runtime.keys, settings)
        if watermark is not None:
            await revisit_due(runtime.ingestor, watermark, should_stop=timers.is_stopping,
                              budget_s=settings.rescore_budget_s)
            metrics.RESCORE_DUE.set(await due_entries(runtime.ingestor, watermark))

    async def drain_outbox() -> None:
        # Messages a crash left committed but unpublished go out even when no batch arrives.
        await runtime.ingestor.drain_due()

    # Each timer rides out Redis and Kafka outages and stops before the producer closes.
    timers.register(app, refresh_model, settings.refresh_interval_s)
    timers.register(app, fit_model, settings.fit_interval_s, on_leader=True)
    timers.register(app, revisit, settings.rescore_interval_s, on_leader=True)
    timers.register(app, drain_outbox, feed.OUTBOX_GRACE_S)


async def fit_now(runtime: Runtime, as_of: int | None = None) -> dict[str, object] | None:
    """Fit, store, load and rescore; returns the stored model or None if not fittable."""
    try:
        doc = await fit_and_store(runtime.redis, runtime.keys, runtime.settings, as_of)
    except FitError as exc:
        log.info("value model not refitted: %s", exc)
        return None
    await runtime.refresh()
    watermark = await engine_watermark(runtime.redis, runtime.keys, runtime.settings)
    await rescore_all(runtime.ingestor, watermark, should_stop=runtime.timers.is_stopping)
    return doc
