"""Customer state in Redis: batched loads and one atomic commit per batch.

The exactly-once effect lives here and in `stream_app.domain.ledger`:

1. A batch's customers are loaded with one pipelined round trip.
2. The domain applies each event unless the customer's hash already records
   that offset of that topic as applied.
3. One Lua call writes every changed customer with compare-and-set on a
   version field, together with its roll-up and histogram increments and
   rankings (one JSON argument per customer), and in the same atomic step
   advances the per-partition applied offsets and event-time watermarks.
4. Only then are the batch's Kafka offsets acknowledged for commit.

A crash between 3 and 4 replays events that step 2 then skips; a crash before
3 loses nothing because nothing was acknowledged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import orjson
from redis.asyncio import Redis

from stream_app.domain.ledger import CustomerState
from stream_app.store.keys import Keys
from stream_app.store.records import VERSION, from_fields


class StoreError(RuntimeError):
    """Redis did not accept a write the engine needs."""


@dataclass(frozen=True, slots=True)
class Loaded:
    """A customer's state and raw fields with the version read ("" if new)."""

    state: CustomerState
    version: str
    fields: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Change:
    """Everything one customer's write consists of."""

    customer_id: str
    version: str
    fields: Mapping[str, str]
    ranks: Mapping[str, float | None] = field(default_factory=dict)  # None: remove
    increments: Sequence[tuple[str, str, int]] = ()


def text(raw: Mapping[Any, Any]) -> dict[str, str]:
    """Decode a hash read without ``decode_responses``."""
    return {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in raw.items()
    }


class CustomerStore:
    """Reads and writes customer hashes; see the module docstring for the protocol."""

    def __init__(self, redis: Redis, keys: Keys | None = None) -> None:
        self.redis = redis
        self.keys = keys or Keys()
        source = resources.files("stream_app.store").joinpath("commit.lua").read_text()
        self._commit = redis.register_script(source)

    async def load_many(self, customer_ids: Iterable[str]) -> dict[str, Loaded]:
        """Load customers in one pipelined round trip."""
        ids = list(dict.fromkeys(customer_ids))
        async with self.redis.pipeline(transaction=False) as pipe:
            for cid in ids:
                pipe.hgetall(self.keys.customer(cid))
            rows = await pipe.execute()
        loaded: dict[str, Loaded] = {}
        for cid, raw in zip(ids, rows, strict=True):
            fields = text(raw)
            loaded[cid] = Loaded(from_fields(cid, fields), fields.get(VERSION, ""), fields)
        return loaded

    async def commit(
        self,
        changes: Sequence[Change],
        applied: Mapping[tuple[str, int], int] | None = None,
        watermarks: Mapping[tuple[str, int], int] | None = None,
    ) -> list[str]:
        """Write changes, then applied offsets and watermarks; return ids that lost a race."""
        applied = applied or {}
        watermarks = watermarks or {}
        keys = [self.keys.applied, self.keys.watermarks]
        args: list[str | int | float | bytes] = [len(applied)]
        for (topic, partition), offset in applied.items():
            args += [f"{topic}/{partition}", offset]
        args.append(len(watermarks))
        for (topic, partition), ms in watermarks.items():
            args += [f"{topic}/{partition}", ms]
        for change in changes:
            keys.append(self.keys.customer(change.customer_id))
            fields = dict(change.fields)
            fields[VERSION] = str(int(change.version or "0") + 1)
            ranks = [
                part
                for key, score in change.ranks.items()
                for part in (key, "rem" if score is None else repr(float(score)))
            ]
            increments = [
                part
                for key, name, delta in change.increments
                for part in (key, name, str(int(delta)))
            ]
            # One argument per customer: redis-py encodes each argument in Python, orjson
            # encodes the whole change in C.
            args.append(orjson.dumps(
                [change.version, [part for item in fields.items() for part in item], ranks,
                 increments]
            ))
        conflicts = await self._commit(keys=keys, args=args)
        return [changes[int(i) - 1].customer_id for i in conflicts]

    async def applied_offsets(self) -> dict[tuple[str, int], int]:
        """The last applied offset of every (topic, partition) seen so far."""
        return _by_partition(text(await self.redis.hgetall(self.keys.applied)))


def _by_partition(raw: Mapping[str, str]) -> dict[tuple[str, int], int]:
    out: dict[tuple[str, int], int] = {}
    for name, value in raw.items():
        topic, _, partition = name.rpartition("/")
        out[(topic, int(partition))] = int(value)
    return out
