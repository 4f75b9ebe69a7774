"""Churn model snapshots in Redis: versioned, stored as data, loaded by every scorer.

One learner publishes a snapshot at an interval, a hash at `Keys.churn_model`:

* ``version``, ``kind``, ``offset`` (the training offset learned up to), ``examples``;
* ``format``: ``json``, the logistic model's state as plain data
  (`stream_app.domain.churn_state`): reading it can never run code. The tree
  models have no such form and are never stored; a snapshot in any other format
  (a pickle) is refused unread, whatever its signature;
* ``model`` and ``progress`` (the progressive-validation metrics, always JSON);
* ``sha256`` of model and progress, which tells a corrupt snapshot;
* ``mac``: with a signing key, HMAC-SHA256 over every field above. The key is a
  secret that Redis does not hold, so whoever can write to Redis cannot forge it.

A snapshot that fails any check is refused with an error in the log, and the
reader keeps what it has (scorers: the model loaded before; the learner: a new
model). A snapshot written by an older release (a pickle with no ``format``) is
refused the same way and is never unpickled.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from stream_app.connections import is_cluster
from stream_app.domain import churn_state
from stream_app.domain.churn import ProgressiveMetrics
from stream_app.store.keys import Keys

__all__ = [
    "ModelSnapshot",
    "SnapshotRefused",
    "current_version",
    "decode",
    "encode",
    "load",
    "metrics",
    "save",
]

log = logging.getLogger(__name__)

#: The fields a MAC covers, in the order they enter it.
_SIGNED = ("version", "kind", "offset", "examples", "format", "model", "progress")


class SnapshotRefused(ValueError):
    """A stored snapshot that is not loaded: corrupt, unsigned, forged or unreadable."""


@dataclass(frozen=True)
class ModelSnapshot:
    """A loaded churn model, its metrics, and what it was trained on."""

    version: int
    kind: str
    offset: int
    examples: int
    model: Any
    progress: ProgressiveMetrics


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _mac(key: bytes, fields: dict[str, bytes]) -> str:
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for name in _SIGNED:
        value = fields.get(name, b"")
        mac.update(f"{name}:{len(value)}:".encode())
        mac.update(value)
    return mac.hexdigest()


def _digest(fields: dict[str, bytes]) -> str:
    blob = fields.get("model", b"") + b"\0" + fields.get("progress", b"")
    return hashlib.sha256(blob).hexdigest()


def encode(
    model: Any,
    progress: ProgressiveMetrics,
    kind: str,
    version: int,
    offset: int,
    examples: int,
    signing_key: bytes | None = None,
) -> dict[str, bytes]:
    """The hash fields of a snapshot.

    Only a model with a data form is stored (`churn_state.NotExportable` otherwise):
    a snapshot never holds code.
    """
    try:
        blob, fmt = orjson.dumps(churn_state.export_model(model)), b"json"
    except churn_state.NotExportable as exc:
        raise churn_state.NotExportable(
            f"the {kind} churn model has no data form and is not stored ({exc})"
        ) from None
    fields = {
        "version": _bytes(version),
        "kind": _bytes(kind),
        "offset": _bytes(offset),
        "examples": _bytes(examples),
        "format": fmt,
        "model": blob,
        "progress": orjson.dumps(churn_state.export_progress(progress)),
    }
    fields["sha256"] = _digest(fields).encode()
    if signing_key:
        fields["mac"] = _mac(signing_key, fields).encode()
    return fields


def verify(raw: dict[Any, Any], signing_key: bytes | None = None) -> dict[str, bytes]:
    """The fields of the hash `raw` once checked; `SnapshotRefused` says why they are not.

    Checks the format, the checksum and, with a key, the signature, without
    rebuilding the model (`decode` does that after this).
    """
    fields = {(k.decode() if isinstance(k, bytes) else k): _bytes(v) for k, v in raw.items()}
    version = fields.get("version", b"?").decode(errors="replace")
    fmt = fields.get("format")
    if fmt is None:
        raise SnapshotRefused(
            f"churn model v{version} is a pickle from an older release; not unpickled"
        )
    if fields.get("sha256", b"").decode(errors="replace") != _digest(fields):
        raise SnapshotRefused(f"churn model v{version} fails its checksum (corrupt)")
    if signing_key and not hmac.compare_digest(
        fields.get("mac", b""), _mac(signing_key, fields).encode()
    ):
        raise SnapshotRefused(
            f"churn model v{version} fails its signature under CVM_MODEL_SIGNING_KEY "
            "(forged, or signed with another key)"
        )
    if fmt != b"json":
        raise SnapshotRefused(
            f"churn model v{version} is a {fmt.decode(errors='replace')!r} snapshot; only data "
            "snapshots are loaded, never unpickled"
        )
    return fields


def decode(raw: dict[Any, Any], signing_key: bytes | None = None) -> ModelSnapshot:
    """The snapshot held in the hash `raw`; `SnapshotRefused` says why it is not loaded."""
    fields = verify(raw, signing_key)
    version = fields.get("version", b"?").decode(errors="replace")
    try:
        model = churn_state.import_model(orjson.loads(fields["model"]))
        progress = churn_state.import_progress(orjson.loads(fields["progress"]))
        return ModelSnapshot(
            version=int(fields["version"]),
            kind=fields["kind"].decode(),
            offset=int(fields["offset"]),
            examples=int(fields["examples"]),
            model=model,
            progress=progress,
        )
    except (KeyError, ValueError, churn_state.InvalidState) as exc:
        if isinstance(exc, SnapshotRefused):
            raise
        raise SnapshotRefused(f"churn model v{version} is unreadable: {exc}") from None


async def save(
    redis: Redis,
    keys: Keys,
    model: Any,
    progress: ProgressiveMetrics,
    kind: str,
    offset: int,
    examples: int,
    metrics: dict[str, Any],
    signing_key: bytes | None = None,
) -> int:
    """Store a new snapshot and its metrics; returns its version.

    Raises `churn_state.NotExportable` for a model with no data form and no key.
    """
    version = int(await redis.hincrby(keys.churn_model, "next_version", 1))
    fields = encode(model, progress, kind, version, offset, examples, signing_key)
    metrics = {**metrics, "model_version": f"churn-{kind}-v{version}", "examples": examples}
    # On a cluster the snapshot and its metrics live in different slots: the snapshot
    # is written atomically, its metrics right after.
    cluster = is_cluster(redis)
    async with redis.pipeline(transaction=True) as pipe:
        if not signing_key:
            pipe.hdel(keys.churn_model, "mac")
        pipe.hset(keys.churn_model, mapping=fields)
        if not cluster:
            pipe.set(keys.churn_metrics, orjson.dumps(metrics))
        await pipe.execute()
    if cluster:
        await redis.set(keys.churn_metrics, orjson.dumps(metrics))
    return version


async def current_version(redis: Redis, keys: Keys) -> int:
    """Version of the newest snapshot (0 if none)."""
    raw = await redis.hget(keys.churn_model, "version")
    return int(raw) if raw else 0


async def load(redis: Redis, keys: Keys, signing_key: bytes | None = None) -> ModelSnapshot | None:
    """The newest snapshot; None if there is none or it is refused (logged as an error)."""
    raw = await redis.hgetall(keys.churn_model)
    if not raw or b"model" not in raw:
        return None
    try:
        return decode(raw, signing_key)
    except SnapshotRefused as exc:
        log.error("%s; the snapshot is refused and this worker keeps its current model", exc)
        return None


async def offset(redis: Redis, keys: Keys, signing_key: bytes | None = None) -> int:
    """The training offset the newest accepted snapshot learned up to; -1 if none.

    Verifies the snapshot like `load` but does not rebuild the model: a rebalance
    needs only this number.
    """
    raw = await redis.hgetall(keys.churn_model)
    if not raw or b"model" not in raw:
        return -1
    try:
        return int(verify(raw, signing_key)["offset"])
    except (SnapshotRefused, KeyError, ValueError) as exc:
        log.error("%s; the learner resumes from the start of its topic", exc)
        return -1


async def metrics(redis: Redis, keys: Keys) -> dict[str, Any] | None:
    """The learner's latest progressive-validation metrics."""
    raw = await redis.get(keys.churn_metrics)
    return None if raw is None else orjson.loads(raw)
