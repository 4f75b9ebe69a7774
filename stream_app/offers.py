"""Product affinity and offers at the edge: counters in Redis, offers for lookups and triggers.

The worker adds the affinity counters of each purchase in the same commit as
the customer's record (`counter_increments`): one hash per (scope, decay
period, input partition), listed in its partition's `Shard.affinity_index`. `load_tables`
merges them into one decayed `Table` per scope; the worker keeps the result
and refreshes it every CVM_REFRESH_INTERVAL_S, a lookup reads it afresh.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from stream_app.domain import affinity, offers, products
from stream_app.domain.events import MS_PER_DAY, Purchase
from stream_app.domain.ledger import estimated_cost
from stream_app.messages import offer_message
from stream_app.settings import Settings
from stream_app.store import profiles as profile_codec
from stream_app.store.customers import text
from stream_app.store.keys import Keys

#: The customer record's field that holds the product profile
#: (`stream_app.store.profiles.encode`).
PRODUCTS = "products"


@dataclass(frozen=True, slots=True)
class Tables:
    """The merged affinity of the population (``all``) and of each segment."""

    all: affinity.Table = field(default_factory=affinity.Table)
    segments: Mapping[str, affinity.Table] = field(default_factory=dict)
    newest_period: int | None = None
    #: Keys of periods too old to be merged any more, for the worker to delete (`drop`).
    stale: tuple[str, ...] = ()


def line_margins(p: Purchase, margin_rate: float) -> list[tuple[str, int, int]]:
    """(category, revenue cents, margin cents) of each line; the order's margin rate applies."""
    revenues = products.line_revenues(p)
    if p.amount_c > 0:
        cost = p.cost_c if p.cost_c is not None else estimated_cost(p.amount_c, margin_rate)
        rate = (p.amount_c - cost) / p.amount_c
    else:
        rate = margin_rate
    return [(x.category, r, round(r * rate)) for x, r in zip(p.items, revenues, strict=True)]


def counter_increments(
    keys: Keys,
    settings: Settings,
    before: products.Profile,
    after: products.Profile,
    p: Purchase,
    segment: str | None,
    partition: int,
) -> list[tuple[str, str, int]]:
    """The (key, field, delta) sums of one purchase, for the commit: ``all`` and the segment."""
    deltas = affinity.increments(
        before, after, line_margins(p, settings.default_margin_rate), p.kind == "order"
    )
    if not deltas:
        return []
    period = affinity.period_of(p.occurred_at // MS_PER_DAY, settings.affinity_period_days)
    out: list[tuple[str, str, int]] = []
    for scope in (affinity.ALL, *((segment,) if segment else ())):
        key = keys.affinity(scope, period, partition)
        out += [(key, name, delta) for name, delta in deltas]
        out.append((keys.shard(partition).affinity_index, key, 1))
    return out


def _split(key: str) -> tuple[str, int, int] | None:
    """``(scope, period, partition)`` of an affinity key, ``cvm:{p<n>}:affinity:<scope>:<period>``.

    >>> _split("cvm:{p3}:affinity:all:682")
    ('all', 682, 3)
    """
    head, found, rest = key.partition(":affinity:")
    scope, _, period = rest.rpartition(":")
    tag = head.rsplit(":", 1)[-1]
    try:
        return (scope, int(period), int(tag.strip("{}p"))) if found and scope else None
    except ValueError:
        return None


async def load_tables(redis: Redis, settings: Settings, keys: Keys | None = None) -> Tables:
    """Merge the affinity counters of the last CVM_AFFINITY_PERIODS periods, decayed."""
    keys = keys or Keys(partitions=settings.partitions)
    async with redis.pipeline(transaction=False) as pipe:
        for index in index_keys(keys):
            pipe.hgetall(index)
        names = list(dict.fromkeys(name for raw in await pipe.execute() for name in text(raw)))
    parsed = [(name, _split(name)) for name in names]
    located = [(name, where) for name, where in parsed if where is not None]
    if not located:
        return Tables()
    newest = max(where[1] for _, where in located)
    oldest = newest - settings.affinity_periods + 1
    wanted = [(name, where) for name, where in located if where[1] >= oldest]
    stale = tuple(name for name, where in located if where[1] < oldest - 1)
    async with redis.pipeline(transaction=False) as pipe:
        for name, _ in wanted:
            pipe.hgetall(name)
        rows = await pipe.execute()
    by_scope: dict[str, list[tuple[int, dict[str, int]]]] = {}
    for (_, (scope, period, _p)), raw in zip(wanted, rows, strict=True):
        counts = {k: int(v) for k, v in text(raw).items()}
        by_scope.setdefault(scope, []).append((period, counts))
    merged = {
        scope: affinity.merge(rows_, newest, settings.affinity_half_life_days,
                              settings.affinity_period_days)
        for scope, rows_ in by_scope.items()
    }
    table = merged.pop(affinity.ALL, affinity.Table())
    return Tables(table, merged, newest, stale)


async def drop(redis: Redis, keys: Keys, names: Sequence[str]) -> None:
    """Delete the counters of periods no reader merges any more (`Tables.stale`).

    Each hash is emptied field by field (HDEL, which the worker's ACL grants), so
    Redis deletes it, and leaves the index. A late purchase of such a period writes
    the key again; the next refresh drops it again.
    """
    for name in names:
        fields = list(text(await redis.hgetall(name)))
        if fields:
            await redis.hdel(name, *fields)
        where = _split(name)
        if where is not None:
            await redis.hdel(keys.shard(where[2]).affinity_index, name)
        await redis.hdel(keys.affinity_index, name)


def index_keys(keys: Keys) -> list[str]:
    """Every partition's index of affinity keys, and the global one of older data."""
    return [*(shard.affinity_index for shard in keys.shards()), keys.affinity_index]


def rank(
    tables: Tables,
    settings: Settings,
    profile: products.Profile,
    segment: str | None,
    p_alive: float,
    day: int,
    k: int | None = None,
) -> list[offers.Offer]:
    """The customer's top `k` offers (default CVM_OFFERS_K)."""
    return offers.rank(
        profile,
        tables.all,
        tables.segments.get(segment or ""),
        segment or "",
        p_alive,
        day,
        settings.offers_k if k is None else k,
        settings.default_margin_rate,
        settings.affinity_min_support,
    )


def to_messages(offer_list: Sequence[offers.Offer]) -> list[dict[str, Any]]:
    """Offers as JSON."""
    return [offer_message(o) for o in offer_list]


def view(
    tables: Tables,
    settings: Settings,
    fields: Mapping[str, str],
    p_alive: float | None,
    as_of_ms: int | None,
    k: int | None = None,
) -> dict[str, Any]:
    """The ``products`` and ``offers`` parts of a customer lookup, from its record fields."""
    profile = profile_codec.decode(fields.get(PRODUCTS))
    day = None if as_of_ms is None else as_of_ms // MS_PER_DAY
    p = float(fields.get("p_alive", "1")) if p_alive is None else p_alive
    chosen = rank(tables, settings, profile, fields.get("rfm_segment"), p,
                  day if day is not None else 0, k)
    return {"products": products.summary(profile, day), "offers": to_messages(chosen)}
