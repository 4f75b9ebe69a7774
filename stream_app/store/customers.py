"""Customer state in Redis, and the commit order of a batch: the one page on it.

Every other docstring that speaks of commits points here. A batch of input
records goes through these steps (`stream_app.pipeline.Ingestor.process`):

1. Decode and validate every record; a record that cannot be used is sent to
   the dead-letter topic, and every such send is acknowledged by the broker
   before step 4.
2. Load the batch's customers with one pipelined round trip (`load_many`).
3. The domain applies each event unless the customer's record already holds
   it (a replay), then values and decides each changed customer. The result is
   one `Change` per customer: its fields, rankings, roll-up and histogram
   increments, and its messages (alerts, win-back triggers, training examples
   and closed win-back outcomes).
4. One Lua call (`commit.lua`) first checks everything: each customer's
   version (compare-and-set) and every sum (within +-(2^53 - 1)). Then it
   writes, atomically, the records, rankings and sums of the customers whose
   version matched, their win-back outcomes, their alerts and triggers to the
   feed (each id once) and all their messages to the outbox; and, if no
   customer lost the compare-and-set, the per-partition applied offsets and
   event-time watermarks.

   * A customer that lost (someone wrote it since step 2) has nothing of its
     change or messages written: it is reloaded and goes through 3 and 4 again.
   * A sum out of range aborts the call before any write (`Overflow`); the
     pipeline dead-letters the offending event and commits the rest.
5. Publish the outbox messages that step 4 wrote to Kafka and wait for every
   acknowledgement (`Ingestor.publish`).
6. Remove them from the outbox and record the alert and trigger ids as
   published, in one transaction (`Ingestor.settle`, `feed.settle`).
7. Return: the agent acknowledges the batch's offsets, which Faust commits to
   Kafka later.

A crash before 4 loses nothing, since nothing was acknowledged: the records
are read again. A crash between 4 and 7 replays the records, and step 3 skips
them as applied; what step 4 put in the outbox is still there, and a worker
publishes such leftovers before its first batch and, later, any entry older
than `stream_app.store.feed.OUTBOX_GRACE_S` (`Ingestor.drain`). Publishing is
therefore at least once, always with the same ids (``alert_id``,
``trigger_id``, ``example_id``), and a message of a customer that lost the
compare-and-set is never published. The rescoring timers (`Ingestor.revisit`)
go through steps 2 to 6 with no offsets.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from redis.asyncio import Redis

from stream_app.domain.ledger import CustomerState
from stream_app.store import feed, shards
from stream_app.store.keys import Keys, Shard
from stream_app.store.records import VERSION, from_fields

#: The largest magnitude a roll-up or histogram sum may reach: every value stays an
#: integer that Lua (and JavaScript) hold exactly.
SUM_LIMIT = 2**53 - 1


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
    #: (kind, id, JSON): "alert", "winback", "training" go to the outbox, "outcome" to
    #: the win-back outcomes; written only if the compare-and-set succeeds.
    messages: Sequence[tuple[str, str, bytes]] = ()
    #: Fields to delete (those of an older record layout), in the same atomic write.
    removed: Sequence[str] = ()


@dataclass(frozen=True, slots=True)
class Overflow:
    """A sum the commit refused: nothing of the call was written."""

    customer_id: str
    key: str
    field: str

    @property
    def reason(self) -> str:
        return (f"customer {self.customer_id}: {self.key} field {self.field} would leave "
                f"+-{SUM_LIMIT} (or holds a value that is not such an integer)")


@dataclass(frozen=True, slots=True)
class Committed:
    """What one commit did (step 4 of the module docstring)."""

    lost: list[str] = field(default_factory=list)  # customer ids that lost the race
    overflow: Overflow | None = None  # set: nothing at all was written
    enqueued: list[str] = field(default_factory=list)  # outbox fields written


def text(raw: Mapping[Any, Any]) -> dict[str, str]:
    """Decode a hash read without ``decode_responses``.

    >>> text({b"a": b"1", "b": "2"})
    {'a': '1', 'b': '2'}
    """
    try:  # every name and value bytes, as a read gives them: no type test per item
        return {k.decode(): v.decode() for k, v in raw.items()}
    except AttributeError:
        return {
            (k.decode() if isinstance(k, bytes) else k):
                (v.decode() if isinstance(v, bytes) else v)
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
        origins: Mapping[str, Iterable[int]] | None = None,
    ) -> Committed:
        """Step 4 of the module docstring: one atomic, checked write per partition touched.

        `origins` maps a customer id to the input partitions its events came from. A
        customer whose events came from a partition other than its own (a producer that
        did not key by customer id with Kafka's default partitioner) makes the batch
        "crossed": its customers are written first, without offsets, and the offsets
        only once every partition's write succeeded, in calls of their own. Otherwise
        each partition's offsets are written atomically with its customers.
        """
        applied = applied or {}
        watermarks = watermarks or {}
        keys = self.keys
        by_shard: dict[int, list[tuple[int, Change]]] = {}
        for index, change in enumerate(changes):
            by_shard.setdefault(keys.partition_of(change.customer_id), []).append(
                (index, change))
        marks_of: dict[int, tuple[dict[tuple[str, int], int], dict[tuple[str, int], int]]] = {}
        for tp, offset in applied.items():
            marks_of.setdefault(keys.shard(tp[1]).partition, ({}, {}))[0][tp] = offset
        for tp, ms in watermarks.items():
            marks_of.setdefault(keys.shard(tp[1]).partition, ({}, {}))[1][tp] = ms
        crossed = any(
            keys.shard(p).partition != keys.partition_of(cid)
            for cid, parts in (origins or {}).items() for p in parts
        )
        # Partitions without offsets first, so that in a batch that is not crossed
        # nothing its offsets cover is left to a later call.
        order = sorted(set(by_shard) | set(marks_of), key=lambda p: (p in marks_of, p))
        lost: list[str] = []
        enqueued: list[str] = []
        for shard in order:
            members = by_shard.get(shard, [])
            if not members and crossed:
                continue
            offsets, marks = ({}, {}) if crossed or lost else marks_of.get(shard, ({}, {}))
            conflicts, overflow, fields = await self._commit_shard(
                keys.shard(shard), [c for _, c in members], offsets, marks)
            if overflow:
                index, key, name = overflow
                return Committed(
                    lost + [members[int(i) - 1][1].customer_id for i in conflicts],
                    Overflow(members[int(index) - 1][1].customer_id, _str(key), _str(name)),
                )
            lost += [members[int(i) - 1][1].customer_id for i in conflicts]
            enqueued += [_str(f) for f in fields]
        if crossed and not lost:
            for shard, (offsets, marks) in sorted(marks_of.items()):
                await self._commit_shard(keys.shard(shard), [], offsets, marks)
        return Committed(lost, None, enqueued)

    async def _commit_shard(
        self,
        shard: Shard,
        changes: Sequence[Change],
        applied: Mapping[tuple[str, int], int],
        watermarks: Mapping[tuple[str, int], int],
    ) -> tuple[list[Any], list[Any], list[Any]]:
        """One call of `commit.lua` on one partition's keys (see the script for the layout).

        The call first goes with the sums merged over its customers (mode "m"); the script
        asks for it again with each customer's sums (mode "c") only when a customer lost
        the compare-and-set or a sum could leave its range, having written nothing.
        """
        result = await self._call(shard, changes, applied, watermarks, merged=True)
        if len(result) > 3:
            result = await self._call(shard, changes, applied, watermarks, merged=False)
        conflicts, overflow, enqueued = result
        return conflicts, overflow, enqueued

    async def _call(
        self,
        shard: Shard,
        changes: Sequence[Change],
        applied: Mapping[tuple[str, int], int],
        watermarks: Mapping[tuple[str, int], int],
        merged: bool,
    ) -> list[Any]:
        script_keys = [shard.applied, shard.watermarks, shard.outbox, shard.outbox_queue,
                       shard.alert_feed, shard.published, shard.winback_outcomes]
        script_keys += [shard.customer(change.customer_id) for change in changes]
        others: dict[str, int] = {}

        def ref(key: str) -> int:
            at = others.get(key)
            if at is None:
                at = others[key] = len(script_keys) + len(others) + 1
            return at

        args: list[str | int | float | bytes] = [
            int(time.time() * 1000), feed.FEED_LENGTH, len(changes), "m" if merged else "c",
            len(applied)
        ]
        for (topic, partition), offset in applied.items():
            args += [f"{topic}/{partition}", offset]
        args.append(len(watermarks))
        for (topic, partition), ms in watermarks.items():
            args += [f"{topic}/{partition}", ms]
        messages: list[str | int | float | bytes] = []
        sums: dict[int, dict[str, int]] = {}  # key index -> field -> total delta
        sizes: dict[tuple[int, str], int] = {}  # (key index, field) -> sum of |delta|
        with_messages = 0
        for index, change in enumerate(changes, 1):
            # Plain arguments, counted: the script reads them in place, with no JSON to
            # decode. Other keys go by their index in KEYS.
            args += [change.version, change.customer_id, len(change.fields) + 1]
            for name, value in change.fields.items():
                args += [name, value]
            args += [VERSION, str(int(change.version or "0") + 1), len(change.removed),
                     *change.removed, len(change.ranks)]
            for key, score in change.ranks.items():
                args += [ref(key), _score(score)]
            if merged:
                args.append(0)
                for key, name, delta in change.increments:
                    at, delta = ref(key), int(delta)
                    totals = sums.setdefault(at, {})
                    totals[name] = totals.get(name, 0) + delta
                    sizes[at, name] = sizes.get((at, name), 0) + abs(delta)
            else:
                args.append(len(change.increments))
                for key, name, delta in change.increments:
                    args += [ref(key), name, int(delta)]
            if change.messages:
                with_messages += 1
                messages += [index, len(change.messages)]
                for kind, ident, body in change.messages:
                    messages += [kind, ident, body]
        if merged:
            # One bound for every field: the script falls back to each customer's sums
            # only if some stored value is within the bound of the limit.
            args += [max(sizes.values(), default=0), len(sums)]
            for at, fields in sums.items():
                args += [at, len(fields)]
                for name, total in fields.items():
                    args += [name, total]
        args.append(with_messages)
        args += messages
        script_keys += list(others)
        result: list[Any] = await self._commit(keys=script_keys, args=args)
        return result

    async def applied_offsets(self) -> dict[tuple[str, int], int]:
        """The last applied offset of every (topic, partition) seen so far."""
        return await shards.applied_offsets(self.redis, self.keys)


def _score(score: float | None) -> str:
    # A score ZADD would refuse (NaN) or that means nothing (infinite) removes the member.
    if score is None or not math.isfinite(score):
        return "rem"
    return repr(float(score))


def _str(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


