"""A simulated population through the batch step gives the same records in either record layout.

Run A writes and reads the bookkeeping field `_b` throughout. Run B turns every record
back into the layout before `_b` (its bookkeeping in `_days`, `_recent`, `_a`, `_e`,
`_ret`, `_h`, `_z` and the two sentiment fields) before each batch, so every batch reads
the older layout and moves what it writes to the new one. B's old fields are encoded
from the values the batch step held in memory, with the older layout's own encoders
(not decoded from `_b`), as the engine before `_b` wrote them. The public fields, rank sets,
histograms, roll-ups and churn deadlines of the two runs must agree: the new layout loses
nothing the engine reads (a lossy encoding of the churn snapshots would show in the churn
model's predictions), and an old record is read as it was written.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from load.bench_profile import raw_records
from load.simulator import SimConfig, simulate
from stream_app import planner
from stream_app.connections import async_redis
from stream_app.pipeline import Ingestor, RawRecord
from stream_app.settings import Settings
from stream_app.store.customers import CustomerStore
from stream_app.store.keys import Keys
from stream_app.store.records import (
    BOOK,
    LEGACY_FIELDS,
    Book,
    from_fields,
    pack_days,
    pack_event_ids,
    pack_offsets,
    pack_recent,
    pack_retention,
    retention_of,
    unpack_book,
    unpack_retention_bytes,
)
from tests.e2e.helpers import own_redis_db

pytestmark = pytest.mark.integration

BATCH = 250


class Sink:
    async def send(self, key: bytes | None, message: dict[str, Any]) -> None:
        return None


def legacy_fields(customer_id: str, book: Book, churn: str | None = None) -> dict[str, str]:
    """The bookkeeping `book` as the layout before `_b` wrote it (`churn`: its `_ret`)."""
    due = f"{'' if book.label_due_at is None else book.label_due_at}," + (
        "" if book.rescore_at is None else str(book.rescore_at))
    fields = {"_days": pack_days(book.days), "_h": book.marker, "_z": due,
              "_sentiment_sum_m": str(book.sentiment_sum_m),
              "_sentiment_n": str(book.sentiment_n)}
    if book.recent_at is not None:
        fields["_recent"] = pack_recent(book.recent, book.recent_at)
    if book.offsets:
        fields["_a"] = pack_offsets(book.offsets)
    if book.event_ids:
        fields["_e"] = pack_event_ids(book.event_ids)
    if churn is not None:
        fields["_ret"] = churn
    elif book.retention:
        fields["_ret"] = pack_retention(unpack_retention_bytes(customer_id, book.retention))
    return fields


class OlderLayout:
    """Notes, for each `_b` the batch step writes, its bookkeeping in the older layout."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.churn: dict[bytes, str] = {}
        self.fields: dict[str, dict[str, str]] = {}
        pack_churn, to_fields = planner.pack_retention_bytes, planner.to_fields

        def noting_churn(r: Any, exact: bool = False) -> bytes:
            raw = pack_churn(r, exact)
            self.churn[raw] = pack_retention(r)  # what the older layout wrote from `r`
            return raw

        def noting_fields(state: Any, book: Book | None = None) -> dict[str, str]:
            fields = to_fields(state, book)
            if book is not None:
                self.fields[fields[BOOK]] = legacy_fields(
                    state.customer_id, book, self.churn.get(book.retention))
            return fields

        monkeypatch.setattr(planner, "pack_retention_bytes", noting_churn)
        monkeypatch.setattr(planner, "to_fields", noting_fields)

    def rewrite(self, client: redis.Redis, keys: Keys) -> int:
        """Rewrite every record in the layout before `_b`; returns how many were rewritten."""
        n = 0
        for key in client.scan_iter(match=keys.customer_pattern, count=1000):
            fields = client.hgetall(key)
            if BOOK in fields:
                pipe = client.pipeline(transaction=True)
                pipe.hset(key, mapping=self.fields[fields[BOOK]])
                pipe.hdel(key, BOOK)
                pipe.execute()
                n += 1
        return n


async def run(settings: Settings, records: list[RawRecord],
              older: OlderLayout | None = None) -> list[int]:
    """Apply `records` in batches; with `older`, records go back to the old layout first."""
    client = async_redis(settings)
    sync = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    keys = Keys(partitions=settings.partitions)
    ingestor = Ingestor(settings, CustomerStore(client, keys), Sink())
    rewritten = []
    try:
        for i in range(0, len(records), BATCH):
            if older is not None:
                rewritten.append(older.rewrite(sync, keys))
            await ingestor.process(records[i : i + BATCH])
    finally:
        await client.aclose()
        sync.close()
    return rewritten


def contents(url: str, keys: Keys) -> tuple[dict[str, dict[str, str]], dict[str, Any]]:
    """(customer id -> record, every rank set, histogram, roll-up and churn set)."""
    client = redis.Redis.from_url(url, decode_responses=True)
    records = {}
    for key in client.scan_iter(match=keys.customer_pattern, count=1000):
        record = client.hgetall(key)
        records[record["customer_id"]] = record
    shared: dict[str, Any] = {}
    for key in client.scan_iter(count=1000):
        if any(part in key for part in (":rank:", ":hist:", ":rollup", ":churn:")):
            kind = client.type(key)
            shared[key] = (client.zrange(key, 0, -1, withscores=True) if kind == "zset"
                           else client.hgetall(key))
    client.close()
    return records, shared


def same(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        x, y = float(a), float(b)
    except ValueError:
        return False
    return math.isclose(x, y, rel_tol=1e-9, abs_tol=0.0)


@pytest.fixture
def two_dbs(stack: Settings) -> Iterator[tuple[Settings, Settings]]:
    with own_redis_db(stack) as a, own_redis_db(stack) as b:
        yield a, b


def test_records_are_the_same_whether_each_batch_reads_the_old_or_the_new_layout(
    two_dbs: tuple[Settings, Settings], monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, b = two_dbs
    events = list(simulate(SimConfig(n_customers=60, days=365, seed=23)))
    records = raw_records(events, a, a.partitions)
    asyncio.run(run(a, records))
    older = OlderLayout(monkeypatch)
    rewritten = asyncio.run(run(b, records, older))
    assert rewritten[0] == 0 and min(rewritten[1:]) > 0

    keys = Keys(partitions=a.partitions)
    records_a, shared_a = contents(a.redis_url, keys)
    records_b, shared_b = contents(b.redis_url, keys)
    assert len(records_a) == 60 and records_a.keys() == records_b.keys()
    for cid, ra in records_a.items():
        rb = records_b[cid]
        public_a = {k: v for k, v in ra.items() if not k.startswith("_") and k != "updated_at"}
        public_b = {k: v for k, v in rb.items() if not k.startswith("_") and k != "updated_at"}
        assert public_a.keys() == public_b.keys(), cid
        differ = {k: (v, public_b[k]) for k, v in public_a.items() if not same(v, public_b[k])}
        assert not differ, (cid, differ)
        assert ra["_v"] == rb["_v"], cid
        # The whole state and churn memory, read from either layout, are the same.
        assert from_fields(cid, ra) == from_fields(cid, rb), cid
        assert retention_of(cid, ra) == retention_of(cid, rb), cid
        # Run A never wrote a field of the old layout.
        assert BOOK in ra and not set(LEGACY_FIELDS) & set(ra), cid
        # In run B, a record the last batch wrote moved to the new layout: no field of the
        # old one is left; the others are still as the rewrite left them.
        assert (BOOK in rb) != bool(set(LEGACY_FIELDS) & set(rb)), cid
        if BOOK in rb:
            assert unpack_book(rb[BOOK]) == unpack_book(ra[BOOK]), cid
        else:
            assert older.fields[ra[BOOK]] == {k: rb[k] for k in LEGACY_FIELDS if k in rb}
    assert any(BOOK in r for r in records_b.values())
    assert shared_a and shared_a == shared_b
