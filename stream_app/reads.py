"""The read API's requests, answered apart from any web server.

Each handler takes the request's path values and query parameters as text and a `Reader`,
and returns ``(HTTP status, JSON document)``. The worker's web server (`stream_app.web`,
Faust's pages) and the read server (`stream_app.serve`, aiohttp on its own) route to the
same handlers, so both answer the same requests alike. A worker's `Reader` lends the
handlers the value model, cut points and affinity tables it holds; the read server's has
none, so `stream_app.lookup` reads them from Redis and keeps them (`lookup.Kept`).

A query parameter that is not what it should be is a 400 naming it; an unknown customer
is a 404.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from stream_app import history_lookup, lookup
from stream_app import offers as product_offers
from stream_app.domain.tiers import Cuts
from stream_app.domain.valuation import ValueModel
from stream_app.settings import Settings
from stream_app.store.keys import Keys

__all__ = ["Reader", "Reply", "customer", "customer_offers", "history", "model", "number",
           "rollups", "top", "trends", "unprofitable", "winback"]

#: (HTTP status, JSON document)
Reply = tuple[int, Any]

Bands = tuple[float, float, float]


def _nothing() -> None:
    return None


@dataclass(frozen=True)
class Reader:
    """What the handlers read with: the serving loop's Redis client and, in a worker, its
    models (each a callable: the worker replaces them while it runs)."""

    redis: Callable[[], Redis]
    settings: Settings
    keys: Keys
    severity_bands: Callable[[], Awaitable[Bands]]
    model: Callable[[], ValueModel | None] = _nothing
    cuts: Callable[[], Cuts | None] = _nothing
    affinity: Callable[[], Awaitable[product_offers.Tables | None]] | None = None

    async def tables(self) -> product_offers.Tables | None:
        """The worker's affinity tables, or None (the lookup reads and keeps its own)."""
        return None if self.affinity is None else await self.affinity()


def error(status: int, code: str, detail: str) -> Reply:
    """An error reply: ``{"error": code, "detail": detail}``."""
    return status, {"error": code, "detail": detail}


def number(
    query: Mapping[str, str], name: str, kind: type[int] | type[float]
) -> int | float | None:
    """Query parameter `name` as `kind`, None if absent; a `ValueError` naming it if not one.

    >>> number({"n": "10"}, "n", int), number({}, "n", int)
    (10, None)
    >>> number({"n": "ten"}, "n", int)
    Traceback (most recent call last):
    ...
    ValueError: n: 'ten' is not an integer
    """
    raw = query.get(name)
    if raw is None:
        return None
    try:
        return kind(raw)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise ValueError(f"{name}: {raw[:40]!r} is not {what}") from None


def _int(query: Mapping[str, str], name: str) -> int | None:
    value = number(query, name, int)
    return None if value is None else int(value)


def _count(query: Mapping[str, str], name: str, default: int) -> int:
    value = _int(query, name)
    return default if value is None else value


def _unknown(customer_id: str) -> Reply:
    return error(404, "not_found", f"customer {customer_id!r} is unknown")


async def customer(reader: Reader, customer_id: str, query: Mapping[str, str]) -> Reply:
    """``GET /customers/{id}``: the record valued at ``as_of`` over ``horizon_days``."""
    try:
        view = await lookup.customer(
            reader.redis(), reader.settings, customer_id,
            horizon_days=number(query, "horizon_days", float),
            as_of=lookup.parse_as_of(query.get("as_of")),
            keys=reader.keys, model=reader.model(), cuts=reader.cuts(),
            affinity=await reader.tables(),
        )
    except ValueError as exc:
        return error(400, "bad_request", str(exc))
    return _unknown(customer_id) if view is None else (200, view)


async def customer_offers(reader: Reader, customer_id: str, query: Mapping[str, str]) -> Reply:
    """``GET /customers/{id}/offers``: the next best offers (``k`` of them)."""
    try:
        view = await lookup.customer_offers(
            reader.redis(), reader.settings, customer_id, k=_int(query, "k"),
            keys=reader.keys, model=reader.model(), affinity=await reader.tables(),
        )
    except ValueError as exc:
        return error(400, "bad_request", str(exc))
    return _unknown(customer_id) if view is None else (200, view)


async def top(reader: Reader, query: Mapping[str, str]) -> Reply:
    """``GET /customers/top``: the ``n`` highest customers ``by`` a ranking."""
    by = query.get("by", "clv")
    try:
        rows = await lookup.top(reader.redis(), by, _count(query, "n", 100), reader.keys)
    except ValueError as exc:
        return error(400, "bad_request", str(exc))
    return 200, {"by": by, "customers": rows}


async def rollups(reader: Reader, scope: str) -> Reply:
    """``GET /rollups/{channels|campaigns}``."""
    try:
        rows = await lookup.rollups(reader.redis(), scope.rstrip("s"), reader.keys)
    except ValueError as exc:
        return error(404, "not_found", str(exc))
    return 200, {"scope": scope, "rows": rows}


async def history(reader: Reader, customer_id: str) -> Reply:
    """``GET /customers/{id}/history``: the value history."""
    doc = await history_lookup.history(reader.redis(), reader.settings, customer_id)
    return _unknown(customer_id) if doc is None else (200, doc)


async def unprofitable(reader: Reader, query: Mapping[str, str]) -> Reply:
    """``GET /customers/unprofitable``: the ``n`` largest losses."""
    try:
        return 200, await history_lookup.unprofitable(
            reader.redis(), reader.settings, _count(query, "n", 50))
    except ValueError as exc:
        return error(400, "bad_request", str(exc))


async def trends(reader: Reader, query: Mapping[str, str]) -> Reply:
    """``GET /trends``: population trends over the last ``periods``."""
    try:
        return 200, await history_lookup.trends(
            reader.redis(), reader.settings, _int(query, "periods"))
    except ValueError as exc:
        return error(400, "bad_request", str(exc))


async def model(reader: Reader) -> Reply:
    """``GET /model``: the stored value model (or the prior) and the severity bands."""
    raw = await reader.redis().get(reader.keys.model)
    doc = ({"version": 0, "detail": "prior parameters; no fit yet"}
           if raw is None else orjson.loads(raw))
    doc["severity_bands"] = list(await reader.severity_bands())
    return 200, doc


async def winback(reader: Reader) -> Reply:
    """``GET /winback/results``: treatment against control over the closed outcomes."""
    return 200, await lookup.winback_results(reader.redis(), reader.settings, reader.keys)
