"""The one learner: labelled examples from the training topic into the river model.

The training topic has one partition, so exactly one worker learns, in the
order the examples were labelled (each batch is sorted by label time, then
snapshot time). Every example is first predicted, then learned (progressive
validation). The model, with its metrics, is published to Redis every
`Settings.model_publish_interval_s`; a restarted learner continues from the
newest snapshot and skips the training offsets it already holds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

import faust

from stream_app.domain import churn
from stream_app.fence import TRANSIENT_REDIS_ERRORS, backoff
from stream_app.runtime import Runtime
from stream_app.store import churn_models

log = logging.getLogger(__name__)


class Learner:
    """The model being trained, its metrics, and how far it has read."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.model = churn.make_model(kind)
        self.progress = churn.ProgressiveMetrics()
        self.offset = -1
        self.examples = 0
        self.version = 0
        self.dirty = 0
        self.published_at = time.monotonic()

    async def restore(self, runtime: Runtime) -> None:
        snap = await churn_models.load(runtime.redis, runtime.keys, runtime.settings.signing_key)
        if snap is None:
            return
        self.model, self.progress = snap.model, snap.progress
        self.kind, self.offset, self.examples = snap.kind, snap.offset, snap.examples
        self.version = snap.version
        log.info("learner continues from churn model v%d (offset %d)", snap.version, snap.offset)

    def learn(self, examples: list[tuple[int, dict[str, Any]]]) -> int:
        """Predict then learn each (offset, example) not yet learned; returns how many."""
        fresh = [(o, e) for o, e in examples if o > self.offset]
        fresh.sort(key=lambda oe: (oe[1]["labelled_at"], oe[1]["taken_at"], oe[0]))
        for offset, example in fresh:
            x = {k: float(v) for k, v in example["features"].items()}
            y = int(example["label"])
            self.progress.update(y, churn.churn_probability(self.model, x))
            self.model.learn_one(x, y)
            self.offset = max(self.offset, offset)
            self.examples += 1
        return len(fresh)

    async def publish(self, runtime: Runtime) -> None:
        summary = self.progress.summary()
        summary["updated_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        summary["kind"] = self.kind
        self.version = await churn_models.save(
            runtime.redis, runtime.keys, self.model, self.progress, self.kind,
            self.offset, self.examples, summary, runtime.settings.signing_key,
        )
        self.published_at = time.monotonic()
        self.dirty = 0
        log.info("published churn model v%d after %d examples (AUC %.3f)",
                 self.version, self.examples, summary.get("auc") or 0.0)


def register(app: faust.App, training: faust.TopicT, runtime: Runtime) -> None:
    """Attach the learner agent to `app`."""
    settings = runtime.settings

    state: dict[str, Learner] = {}

    @app.agent(training, name="cvm.learn")
    async def learn(stream: faust.StreamT) -> None:
        learner = Learner(settings.churn_model)
        # Until Redis answers, there is no snapshot to continue from and nothing to learn.
        attempt = 0
        while True:
            try:
                await learner.restore(runtime)
                break
            except TRANSIENT_REDIS_ERRORS as exc:
                if attempt == 0:
                    log.warning("cannot read the churn model snapshot (%r); retrying", exc)
                await asyncio.sleep(backoff(attempt))
                attempt += 1
        state["learner"] = learner
        async for batch in stream.take_events(1000, within=1.0):
            learner.dirty += learner.learn([(e.message.offset, e.value) for e in batch])
            if time.monotonic() - learner.published_at >= settings.model_publish_interval_s:
                # The model lives in memory; a publish that fails (Redis away) is
                # retried by the timer, and what was learned is not lost.
                try:
                    await learner.publish(runtime)
                except TRANSIENT_REDIS_ERRORS as exc:
                    log.warning("churn model not published (%r); will retry", exc)

    async def publish_model() -> None:
        learner = state.get("learner")
        if learner is None or not learner.dirty:
            return
        if time.monotonic() - learner.published_at >= settings.model_publish_interval_s:
            await learner.publish(runtime)

    runtime.timers.register(
        app, publish_model, max(settings.model_publish_interval_s / 3, 1.0)
    )
