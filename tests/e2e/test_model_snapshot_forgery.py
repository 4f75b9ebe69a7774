"""A forged churn model snapshot in Redis runs no code in a live worker.

Whoever can write to Redis could replace ``cvm:churn:model`` with a pickle whose
sha256 (kept in the same hash) matches. The worker must refuse it, say so in its
log, and go on serving; the payload would create a marker file.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.asyncio import Redis

from stream_app.domain import churn
from stream_app.settings import Settings
from stream_app.store import churn_models
from stream_app.store.keys import Keys
from stream_app.worker_process import wait_until
from tests.conftest import WorkerProcess, http_json

pytestmark = pytest.mark.integration

SIGNING_KEY = "s3cr3t-signing-key-of-the-test-0001"


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def _forge(client: redis.Redis, marker: Path, version: int, layout: str) -> None:
    """Write a code-running pickle with a matching sha256 as churn model `version`."""
    blob = pickle.dumps((_Payload(marker), _Payload(marker)))
    key = Keys().churn_model
    if layout == "old":  # the layout before snapshots were data: sha256 of the pickle
        client.delete(key)
        client.hset(key, mapping={"version": version, "kind": "logreg", "offset": 0,
                                  "examples": 1, "sha256": hashlib.sha256(blob).hexdigest(),
                                  "model": blob})
        return
    fields = client.hgetall(key)
    progress = fields[b"progress"]
    client.hset(key, mapping={
        "version": version, "format": "pickle", "model": blob,
        "sha256": hashlib.sha256(blob + b"\0" + progress).hexdigest(),
    })


async def _genuine(settings: Settings) -> None:
    model, progress = churn.make_model("logreg"), churn.ProgressiveMetrics()
    model.learn_one({"recency_days": 10.0}, 0)
    client = Redis.from_url(settings.redis_url)
    try:
        await churn_models.save(client, Keys(), model, progress, "logreg", 0, 1, {},
                                SIGNING_KEY.encode())
    finally:
        await client.aclose()


@pytest.mark.parametrize("layout", ["old", "current"])
def test_forged_snapshot_is_refused_and_the_worker_keeps_running(
    settings: Settings, tmp_path: Path, layout: str
) -> None:
    import asyncio

    marker = tmp_path / "pwned"
    client = redis.Redis.from_url(settings.redis_url)
    asyncio.run(_genuine(settings))
    w = WorkerProcess(settings, tmp_path / "worker.log")
    w.env.update({"CVM_MODEL_SIGNING_KEY": SIGNING_KEY, "CVM_REFRESH_INTERVAL_S": "0.5"})
    w.start()
    try:
        assert wait_until(lambda: "continues from churn model v1" in w.log_tail(400), 60)
        _forge(client, marker, 7, layout)
        refusal = "churn model v7"
        assert wait_until(lambda: refusal in w.log_tail(400) and "refused" in w.log_tail(400),
                          60), w.log_tail()
        assert not marker.exists(), "the forged pickle ran code in the worker"
        w.check()
        assert http_json(settings, "/healthz")[0] == 200
        status, _ = http_json(settings, "/customers/top?n=1")
        assert status == 200
        # A restarted worker refuses it at start as well (learner and resume hook).
        w.stop()
        w.start()
        assert wait_until(lambda: w.log_tail(400).count(refusal) >= 2, 60), w.log_tail()
        assert not marker.exists()
        w.check()
    finally:
        w.stop()
        client.close()
