"""Read side shared by the CLI and the web views: records, rankings, roll-ups.

A lookup revalues the customer lazily with the current model at the engine's
watermark (or a given as-of time) and the requested horizon; the stored record
holds the values as of the customer's own latest event.
"""

from __future__ import annotations

from typing import Any

import orjson
from redis.asyncio import Redis

from stream_app.domain import alerts
from stream_app.domain.alerts import WinbackOutcome
from stream_app.domain.events import parse_time
from stream_app.domain.valuation import ValueModel, value_one
from stream_app.models import engine_watermark, load_cuts, load_model
from stream_app.planner import Cuts, rfm_fields, valuation_fields
from stream_app.settings import Settings
from stream_app.store import shards
from stream_app.store.customers import text
from stream_app.store.keys import Keys
from stream_app.store.records import format_money, from_fields, public_view

RANKINGS = ("clv", "net_contribution", "value_at_risk")


class LookupError_(ValueError):
    """A lookup argument is not usable (400 over HTTP, exit 2 in the CLI)."""


def parse_as_of(raw: str | None) -> int | None:
    """An RFC 3339 as-of argument in epoch ms, or None."""
    if raw is None or raw == "":
        return None
    try:
        return parse_time(raw)
    except ValueError as exc:
        raise LookupError_(f"as_of: {exc}") from None


async def customer(
    redis: Redis,
    settings: Settings,
    customer_id: str,
    horizon_days: float | None = None,
    as_of: int | None = None,
    keys: Keys | None = None,
    model: ValueModel | None = None,
    cuts: Cuts | None = None,
) -> dict[str, Any] | None:
    """A customer's record, revalued at `as_of` over `horizon_days`; None if unknown.

    A worker passes the `model` and `cuts` it holds; without them they are read
    from Redis.
    """
    keys = keys or Keys(partitions=settings.partitions)
    fields = text(await redis.hgetall(keys.customer(customer_id)))
    if not fields:
        return None
    horizon = float(settings.horizon_days if horizon_days is None else horizon_days)
    if not 0 < horizon <= 36_500:
        raise LookupError_(f"horizon_days: {horizon:g} is not within 1..36500")
    state = from_fields(customer_id, fields)
    if as_of is None:
        as_of = await engine_watermark(redis, keys, settings)
    if as_of is None or (state.last_event is not None and as_of < state.last_event):
        as_of = state.last_event
    if model is None:
        model = await load_model(redis, keys, settings)
    valuation = None if as_of is None else value_one(model, state, as_of, horizon)
    # The revalued fields replace the stored ones, and the record is typed once: typing
    # the parts separately would fill the per-reason and per-action counts with zeros.
    merged = dict(fields)
    if valuation is not None:
        if cuts is None:
            cuts = await load_cuts(redis, keys)
        stored_churn = fields.get("churn_probability")
        churn = None if stored_churn is None else float(stored_churn)
        merged.update(valuation_fields(valuation, cuts, churn))
        merged.update(rfm_fields(state, cuts, as_of))
    view = public_view(merged)
    view["stored_as_of"] = fields.get("as_of")
    return view


async def top(
    redis: Redis, by: str, n: int, keys: Keys | None = None
) -> list[dict[str, Any]]:
    """The `n` highest customers of a ranking, with their key figures."""
    keys = keys or Keys()
    if by not in RANKINGS:
        raise LookupError_(f"by: {by!r} is not one of {', '.join(RANKINGS)}")
    if not 1 <= n <= 10_000:
        raise LookupError_(f"n: {n} is not within 1..10000")
    rows = await shards.top(redis, keys, by, n)
    async with redis.pipeline(transaction=False) as pipe:
        for member, _ in rows:
            pipe.hmget(
                keys.customer(member.decode() if isinstance(member, bytes) else member),
                "clv", "value_at_risk", "p_alive", "net_contribution", "value_tier",
                "rfm_segment", "last_event_at",
            )
        details = await pipe.execute() if rows else []
    out = []
    for rank, ((member, score), d) in enumerate(zip(rows, details, strict=True), start=1):
        d = [v.decode() if isinstance(v, bytes) else v for v in d]
        out.append({
            "rank": rank,
            "customer_id": member.decode() if isinstance(member, bytes) else member,
            by: score,
            "clv": None if d[0] is None else float(d[0]),
            "value_at_risk": None if d[1] is None else float(d[1]),
            "p_alive": None if d[2] is None else float(d[2]),
            "net_contribution": None if d[3] is None else float(d[3]),
            "value_tier": None if d[4] is None else int(d[4]),
            "rfm_segment": d[5],
            "last_event_at": d[6],
        })
    return out


async def rollups(redis: Redis, scope: str, keys: Keys | None = None) -> list[dict[str, Any]]:
    """Every channel or campaign roll-up, most profitable first."""
    keys = keys or Keys()
    if scope not in ("channel", "campaign"):
        raise LookupError_(f"scope: {scope!r} is not channel or campaign")
    names = await shards.rollup_names(redis, keys, scope)
    out = []
    for name in names:
        counts = await shards.rollup(redis, keys, scope, name)
        row: dict[str, Any] = {scope: name}
        for field, value in sorted(counts.items()):
            if field.endswith("_c"):
                row[field[:-2]] = float(format_money(value))
            else:
                row[field] = value
        if scope == "campaign":
            cost = counts.get("cost_c", 0)
            margin = counts.get("attributed_margin_c", 0)
            row["return_on_cost"] = None if cost == 0 else round((margin - cost) / cost, 3)
            row["payoff"] = float(format_money(margin - cost))
        else:
            buyers = counts.get("buyers", 0)
            row["net_per_customer"] = (
                None if not counts.get("customers")
                else round(counts.get("net_contribution_c", 0) / 100 / counts["customers"], 2)
            )
            row["buyers"] = buyers
        out.append(row)
    key = "payoff" if scope == "campaign" else "net_contribution"
    out.sort(key=lambda r: r.get(key) or 0, reverse=True)
    return out


async def winback_results(
    redis: Redis, settings: Settings, keys: Keys | None = None
) -> dict[str, Any]:
    """Win-back treatment against control over the closed outcomes, at the watermark.

    An outcome is closed when the customer returned (an order or a converted
    touch within the response window) or when the window passed; open ones are
    still in the customers' records and not counted here.
    """
    keys = keys or Keys(partitions=settings.partitions)
    raw = await shards.winback_outcomes(redis, keys)
    outcomes = [WinbackOutcome(**orjson.loads(v)) for v in raw.values()]
    watermark = await engine_watermark(redis, keys, settings)
    return {"outcomes": len(outcomes), **alerts.winback_results(outcomes, as_of=watermark)}
