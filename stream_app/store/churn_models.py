"""Churn model snapshots in Redis: versioned, checksummed, loaded by every scorer.

One learner publishes a snapshot at an interval: the pickled river pipeline,
its SHA-256, a version number, the training-topic offset it has learned up to,
and its progressive-validation metrics. Scorers load the newest snapshot whose
checksum matches and ignore a corrupt one. Pickle is only ever read from this
key, which only the engine writes.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from stream_app.store.customers import text
from stream_app.store.keys import Keys

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSnapshot:
    """A loaded churn model and what it was trained on."""

    version: int
    kind: str
    offset: int
    examples: int
    model: Any


async def save(
    redis: Redis,
    keys: Keys,
    model: Any,
    kind: str,
    offset: int,
    examples: int,
    metrics: dict[str, Any],
) -> int:
    """Store a new snapshot and its metrics; returns its version."""
    blob = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
    version = int(await redis.hincrby(keys.churn_model, "next_version", 1))
    metrics = {**metrics, "model_version": f"churn-{kind}-v{version}", "examples": examples}
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(keys.churn_model, mapping={
            "version": version,
            "kind": kind,
            "offset": offset,
            "examples": examples,
            "sha256": hashlib.sha256(blob).hexdigest(),
            "model": blob,
        })
        pipe.set(keys.churn_metrics, orjson.dumps(metrics))
        await pipe.execute()
    return version


async def current_version(redis: Redis, keys: Keys) -> int:
    """Version of the newest snapshot (0 if none)."""
    raw = await redis.hget(keys.churn_model, "version")
    return int(raw) if raw else 0


async def load(redis: Redis, keys: Keys) -> ModelSnapshot | None:
    """The newest snapshot, or None if there is none or its checksum does not match."""
    raw = await redis.hgetall(keys.churn_model)
    if not raw or b"model" not in raw:
        return None
    blob = raw[b"model"]
    meta = text({k: v for k, v in raw.items() if k != b"model"})
    if hashlib.sha256(blob).hexdigest() != meta.get("sha256"):
        log.error("churn model v%s fails its checksum; keeping the one loaded", meta.get("version"))
        return None
    return ModelSnapshot(
        version=int(meta["version"]),
        kind=meta.get("kind", "logreg"),
        offset=int(meta.get("offset", -1)),
        examples=int(meta.get("examples", 0)),
        model=pickle.loads(blob),  # noqa: S301 - written only by the engine's learner
    )


async def metrics(redis: Redis, keys: Keys) -> dict[str, Any] | None:
    """The learner's latest progressive-validation metrics."""
    raw = await redis.get(keys.churn_metrics)
    return None if raw is None else orjson.loads(raw)
