"""Read side of value history, population trends and loss-making customers.

Shared by the CLI and the web views, like `stream_app.lookup`. Trends are kept
in one hash per Kafka partition (`Keys.trends`) and merged here by adding them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis

from stream_app.domain import history as hist
from stream_app.domain import trends as tr
from stream_app.domain import unprofitable as up
from stream_app.history_plan import HISTORY
from stream_app.lookup import LookupError_
from stream_app.models import engine_watermark
from stream_app.settings import Settings
from stream_app.store.customers import text
from stream_app.store.keys import Keys
from stream_app.store.records import parse_money

__all__ = ["history", "trends", "unprofitable"]

#: Customers read per round trip when listing the loss-making ones.
CHUNK = 1000
_LOSS_FIELDS = ("clv", "net_contribution", "revenue", "refunds", "cost_of_goods",
                "cost_to_serve", "marketing_cost", "acquisition_channel", "rfm_segment")


async def history(
    redis: Redis, settings: Settings, customer_id: str, keys: Keys | None = None
) -> dict[str, Any] | None:
    """A customer's value history, oldest point first; None if the customer is unknown.

    The last point is ``open`` while the engine's watermark is still in its period:
    its values are then the latest, not those at the period's end.
    """
    keys = keys or Keys(partitions=settings.partitions)
    key = keys.customer(customer_id)
    raw, exists = await redis.hget(key, HISTORY), await redis.exists(key)
    if not exists:
        return None
    packed = "" if raw is None else (raw.decode() if isinstance(raw, bytes) else raw)
    unit, points = hist.unpack(packed)
    if not packed:
        unit = settings.history_period
    watermark = await engine_watermark(redis, keys, settings)
    now = None if watermark is None else hist.period_index(watermark, unit)
    rows = []
    for i, p in enumerate(points):
        rows.append({
            "period": hist.period_label(p.period, unit),
            "clv": p.clv_c / 100,
            "p_alive": p.p_alive_m / 10_000,
            "rfm_segment": p.segment,
            "value_tier": p.tier,
            "net_contribution": p.net_c / 100,
            "lost": p.lost(settings.winback_p_alive_threshold),
            "open": i == len(points) - 1 and (now is None or p.period >= now),
        })
    return {"customer_id": customer_id, "period_unit": unit,
            "max_points": settings.history_max_points, "points": rows}


async def trend_fields(redis: Redis, settings: Settings, keys: Keys) -> dict[str, int]:
    """The trend sums of every partition, added up (fields of another period unit left out)."""
    async with redis.pipeline(transaction=False) as pipe:
        for p in range(settings.partitions):
            pipe.hgetall(keys.trends(p))
        shards = await pipe.execute()
    merged = tr.merge({k: int(v) for k, v in text(raw).items()} for raw in shards)
    unit = settings.history_period
    out = {}
    for name, value in merged.items():
        try:
            hist.period_of_label(name.partition("|")[0], unit)
        except hist.HistoryError:
            continue
        out[name] = value
    return out


async def trends(
    redis: Redis, settings: Settings, last: int | None = None, keys: Keys | None = None
) -> dict[str, Any]:
    """Per period, up to the engine's watermark: stocks at its end and its flows."""
    keys = keys or Keys(partitions=settings.partitions)
    if last is not None and not 1 <= last <= 1000:
        raise LookupError_(f"periods: {last} is not within 1..1000")
    unit = settings.history_period
    watermark = await engine_watermark(redis, keys, settings)
    fields = await trend_fields(redis, settings, keys)
    until = None if watermark is None else hist.period_index(watermark, unit)
    return {
        "period_unit": unit,
        "watermark_period": None if until is None else hist.period_label(until, unit),
        "lost_below_p_alive": settings.winback_p_alive_threshold,
        "periods": tr.summarize(fields, unit, until=until, last=last),
    }


def _money_c(raw: str | None) -> int:
    return 0 if raw is None else parse_money(raw)


async def _loss_candidates(redis: Redis, keys: Keys) -> AsyncIterator[list[Any]]:
    """Ids with a negative net contribution, in chunks, from every partition's ranking."""
    for shard in keys.shards():
        start = 0
        while True:
            ids = await redis.zrangebyscore(shard.rank("net_contribution"), "-inf", "(0",
                                            start=start, num=CHUNK)
            if ids:
                yield ids
            if len(ids) < CHUNK:
                break
            start += len(ids)


async def unprofitable(
    redis: Redis, settings: Settings, n: int = 50, keys: Keys | None = None
) -> dict[str, Any]:
    """Customers with negative net contribution and negative CLV: totals, causes, the worst `n`.

    Reads the customers with a negative net contribution from the net contribution
    ranking, worst first, in chunks.
    """
    keys = keys or Keys(partitions=settings.partitions)
    if not 1 <= n <= 10_000:
        raise LookupError_(f"n: {n} is not within 1..10000")
    makers = []
    async for ids in _loss_candidates(redis, keys):
        names = [i.decode() if isinstance(i, bytes) else i for i in ids]
        async with redis.pipeline(transaction=False) as pipe:
            for cid in names:
                pipe.hmget(keys.customer(cid), *_LOSS_FIELDS)
            rows = await pipe.execute()
        for cid, row in zip(names, rows, strict=True):
            d = dict(zip(_LOSS_FIELDS, (
                None if v is None else (v.decode() if isinstance(v, bytes) else v) for v in row
            ), strict=True))
            clv = None if d["clv"] is None else float(d["clv"])
            net_c = _money_c(d["net_contribution"])
            if not up.is_loss_making(net_c, clv):
                continue
            assert clv is not None
            makers.append(up.loss_maker(
                cid, net_c, clv, d["acquisition_channel"] or "unattributed",
                d["rfm_segment"] or hist.NO_SEGMENT,
                {name: _money_c(d[name]) for name in _LOSS_FIELDS[2:7]},
                settings.default_margin_rate,
            ))
    doc = up.summarize(makers, n)
    doc["reference_margin_rate"] = settings.default_margin_rate
    return doc
