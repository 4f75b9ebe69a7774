"""Customer state in Redis: batched loads and one atomic commit per batch.

The exactly-once effect lives here and in `stream_app.domain.ledger`:

1. A batch's customers are loaded with one pipelined round trip.
2. The domain applies each event unless the customer's hash already records
   that offset of that topic as applied.
3. One Lua call writes every changed customer with compare-and-set on a
   version field, and in the same atomic step advances the per-partition
   applied offsets.
4. Only then are the batch's Kafka offsets acknowledged for commit.

A crash between 3 and 4 replays events that step 2 then skips; a crash before
3 loses nothing because nothing was acknowledged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from redis.asyncio import Redis

from stream_app.domain.ledger import CustomerState
from stream_app.store.records import VERSION, customer_key, from_fields, to_fields


class StoreError(RuntimeError):
    """Redis did not accept a write the engine needs."""


@dataclass(frozen=True, slots=True)
class Loaded:
    """A customer's state with the version it was read at ("" if new)."""

    state: CustomerState
    version: str


def _text(raw: Mapping[Any, Any]) -> dict[str, str]:
    return {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in raw.items()
    }


class CustomerStore:
    """Reads and writes customer hashes; see the module docstring for the protocol."""

    def __init__(self, redis: Redis, prefix: str = "cvm") -> None:
        self.redis = redis
        self.prefix = prefix
        self.applied_key = f"{prefix}:applied"
        self.rank_net_key = f"{prefix}:rank:net_contribution"
        source = resources.files("stream_app.store").joinpath("commit.lua").read_text()
        self._commit = redis.register_script(source)

    def key(self, customer_id: str) -> str:
        return customer_key(customer_id, self.prefix)

    async def load_many(self, customer_ids: Iterable[str]) -> dict[str, Loaded]:
        """Load customers in one pipelined round trip."""
        ids = list(dict.fromkeys(customer_ids))
        async with self.redis.pipeline(transaction=False) as pipe:
            for cid in ids:
                pipe.hgetall(self.key(cid))
            rows = await pipe.execute()
        loaded: dict[str, Loaded] = {}
        for cid, raw in zip(ids, rows, strict=True):
            fields = _text(raw)
            loaded[cid] = Loaded(from_fields(cid, fields), fields.get(VERSION, ""))
        return loaded

    async def commit(
        self,
        changed: Mapping[str, tuple[CustomerState, str]],
        applied: Mapping[tuple[str, int], int],
        extra: Mapping[str, Mapping[str, str]] | None = None,
    ) -> list[str]:
        """Write changed states and applied offsets; return ids that lost a race.

        `changed` maps customer id to (new state, version it was read at);
        `applied` maps (topic, partition) to the last offset of the batch;
        `extra` adds fields (such as ``updated_at``) per customer.
        """
        ids = list(changed)
        keys = [self.applied_key, *(self.key(cid) for cid in ids)]
        args: list[str | int] = [len(applied)]
        for (topic, partition), offset in applied.items():
            args += [f"{topic}/{partition}", offset]
        for cid in ids:
            state, version = changed[cid]
            fields = to_fields(state)
            if extra and cid in extra:
                fields.update(extra[cid])
            fields[VERSION] = str(int(version or "0") + 1)
            args += [version, len(fields)]
            for name, value in fields.items():
                args += [name, value]
            args += [1, self.rank_net_key, state.net_contribution_c / 100]
        conflicts = await self._commit(keys=keys, args=args)
        return [ids[int(i) - 1] for i in conflicts]

    async def applied_offsets(self) -> dict[tuple[str, int], int]:
        """The last applied offset of every (topic, partition) seen so far."""
        raw = _text(await self.redis.hgetall(self.applied_key))
        out: dict[tuple[str, int], int] = {}
        for field, offset in raw.items():
            topic, _, partition = field.rpartition("/")
            out[(topic, int(partition))] = int(offset)
        return out

    async def top_by_net_contribution(self, n: int) -> list[tuple[str, float]]:
        """The `n` customers with the highest net contribution to date."""
        rows = await self.redis.zrevrange(self.rank_net_key, 0, n - 1, withscores=True)
        return [(m.decode() if isinstance(m, bytes) else m, float(s)) for m, s in rows]

    async def fields(self, customer_id: str) -> dict[str, str]:
        """The raw hash of one customer (empty if unknown)."""
        return _text(await self.redis.hgetall(self.key(customer_id)))
