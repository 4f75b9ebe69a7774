"""A customer's product profile: what they buy, how much, how often, and when last.

The profile is updated by every purchase and return that carries order lines
(`apply`). Per category it keeps revenue (cents, net of returns), units, the
number of orders, the first and last purchase day and the gaps between
purchase days, from which it derives the share of wallet and the typical
repurchase interval. Per sku it keeps revenue and units of the `max_skus`
largest skus only, so the record is bounded whatever the catalogue: at most
`max_categories` categories and `max_skus` skus (`stream_app.store.profiles.encode`
states the bytes).

Days are whole days since the Unix epoch (event time); money is integer cents.

Examples
--------
>>> from stream_app.domain.events import Line, Purchase
>>> day = 86_400_000
>>> p = Purchase("o1", "C1", 10 * day, "order", 3000, None, "web",
...              (Line("S1", "coffee", 2, 1000), Line("S2", "mugs", 1, 1000)))
>>> prof = apply(Profile(), p)
>>> prof = apply(prof, Purchase("o2", "C1", 40 * day, "order", 2000, None, "web",
...                             (Line("S1", "coffee", 2, 1000),)))
>>> c = prof.categories["coffee"]
>>> c.revenue_c, c.units, c.orders, c.last_day, interval(c)
(4000, 4, 2, 40, 30.0)
>>> share_of_wallet(prof)
{'coffee': 0.8, 'mugs': 0.2}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from stream_app.domain.events import MS_PER_DAY, Purchase

__all__ = [
    "MAX_CATEGORIES",
    "MAX_SKUS",
    "CategoryStats",
    "Profile",
    "SkuStats",
    "apply",
    "days_since",
    "interval",
    "line_revenues",
    "share_of_wallet",
    "summary",
]

#: Default bound of categories kept per customer (the smallest by revenue go first).
MAX_CATEGORIES = 24
#: Default bound of skus kept per customer (the smallest by revenue go first).
MAX_SKUS = 8
#: Sums saturate here: every value stays an integer that JSON readers and Lua hold exactly.
LIMIT = 2**53 - 1


@dataclass(frozen=True, slots=True)
class CategoryStats:
    """One category of a customer: sums since the first purchase, in cents and days."""

    revenue_c: int = 0
    units: int = 0
    orders: int = 0
    first_day: int = 0
    last_day: int = 0
    gap_days: int = 0  # sum of the gaps between distinct purchase days
    gaps: int = 0  # how many such gaps


@dataclass(frozen=True, slots=True)
class SkuStats:
    """One sku of a customer: its category, revenue (cents) and units."""

    category: str
    revenue_c: int = 0
    units: int = 0


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Profile:
    """What one customer buys; immutable, `apply` returns a new one."""

    categories: Mapping[str, CategoryStats] = field(default_factory=_empty)
    skus: Mapping[str, SkuStats] = field(default_factory=_empty)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Profile) and dict(self.categories) == dict(other.categories)
                and dict(self.skus) == dict(other.skus))

    def __hash__(self) -> int:
        return hash((tuple(sorted(self.categories.items())), tuple(sorted(self.skus.items()))))


def line_revenues(p: Purchase) -> list[int]:
    """The revenue (cents) of each order line of `p`.

    A line with a unit price is worth quantity times that price, but never more
    than the whole order's amount (the lines are informative; the amount is the
    total the ledger counts); the lines without one share what the priced lines
    leave of the amount, by quantity.

    >>> from stream_app.domain.events import Line
    >>> line_revenues(Purchase("o", "C", 0, "order", 1000, None, "web",
    ...     (Line("A", "x", 1, 400), Line("B", "y", 2, None), Line("C", "y", 1, None))))
    [400, 400, 200]
    """
    priced = [None if x.unit_price_c is None else min(x.quantity * x.unit_price_c, p.amount_c)
              for x in p.items]
    rest = max(p.amount_c - sum(v for v in priced if v is not None), 0)
    unpriced = sum(x.quantity for x, v in zip(p.items, priced, strict=True) if v is None)
    return [
        v if v is not None else rest * x.quantity // unpriced
        for x, v in zip(p.items, priced, strict=True)
    ]


def apply(
    profile: Profile,
    p: Purchase,
    max_categories: int = MAX_CATEGORIES,
    max_skus: int = MAX_SKUS,
) -> Profile:
    """The profile after purchase `p` (an order adds, a return takes back; no lines: unchanged).

    A return lowers revenue and units (never below zero) but neither the order
    count nor the purchase days.
    """
    if not p.items:
        return profile
    day = p.occurred_at // MS_PER_DAY
    order = p.kind == "order"
    sign = 1 if order else -1
    cats = dict(profile.categories)
    skus = dict(profile.skus)
    seen: set[str] = set()
    for line, revenue in zip(p.items, line_revenues(p), strict=True):
        name = line.category
        c = cats.get(name)
        if c is None and not order:
            continue  # a return of something never seen: nothing to take back
        rev = _bounded((0 if c is None else c.revenue_c) + sign * revenue)
        units = _bounded((0 if c is None else c.units) + sign * line.quantity)
        if c is None:
            c = CategoryStats(rev, units, 1, day, day, 0, 0)
            seen.add(name)
        elif order and name not in seen:
            seen.add(name)
            later = day > c.last_day
            c = CategoryStats(rev, units, c.orders + 1, min(c.first_day, day),
                              max(c.last_day, day),
                              c.gap_days + (day - c.last_day if later else 0),
                              c.gaps + (1 if later else 0))
        else:
            c = CategoryStats(rev, units, c.orders, c.first_day, c.last_day, c.gap_days, c.gaps)
        cats[name] = c
        s = skus.get(line.sku)
        if s is None and not order:
            continue
        skus[line.sku] = SkuStats(
            name if s is None else s.category,
            _bounded((0 if s is None else s.revenue_c) + sign * revenue),
            _bounded((0 if s is None else s.units) + sign * line.quantity),
        )
    if len(cats) > max_categories:
        keep = sorted(cats, key=lambda k: (-cats[k].revenue_c, -cats[k].last_day, k))
        cats = {k: cats[k] for k in keep[:max_categories]}
    if len(skus) > max_skus:
        keep = sorted(skus, key=lambda k: (-skus[k].revenue_c, k))
        skus = {k: skus[k] for k in keep[:max_skus]}
    return Profile(MappingProxyType(cats), MappingProxyType(skus))


def _bounded(value: int) -> int:
    return min(max(value, 0), LIMIT)


def interval(c: CategoryStats) -> float | None:
    """The typical repurchase interval (mean gap between purchase days), None before a repeat."""
    return None if c.gaps == 0 else c.gap_days / c.gaps


def days_since(c: CategoryStats, day: int) -> int:
    """Days from the category's last purchase to `day` (never negative)."""
    return max(day - c.last_day, 0)


def share_of_wallet(profile: Profile) -> dict[str, float]:
    """Each category's share of the customer's net item revenue, largest first."""
    total = sum(c.revenue_c for c in profile.categories.values())
    if total <= 0:
        return {}
    ranked = sorted(profile.categories.items(), key=lambda kv: (-kv[1].revenue_c, kv[0]))
    return {k: round(c.revenue_c / total, 4) for k, c in ranked}


def summary(profile: Profile, day: int | None = None) -> dict[str, Any]:
    """The profile as a lookup shows it: per category, then the top skus (money in major units)."""
    wallet = share_of_wallet(profile)
    cats = []
    for name, c in sorted(profile.categories.items(), key=lambda kv: (-kv[1].revenue_c, kv[0])):
        every = interval(c)
        row: dict[str, Any] = {
            "category": name,
            "revenue": c.revenue_c / 100,
            "units": c.units,
            "orders": c.orders,
            "share_of_wallet": wallet.get(name, 0.0),
            "last_purchase_day": c.last_day,
            "repurchase_interval_days": None if every is None else round(every, 1),
        }
        if day is not None:
            row["days_since_last"] = days_since(c, day)
        cats.append(row)
    skus = [
        {"sku": k, "category": s.category, "revenue": s.revenue_c / 100, "units": s.units}
        for k, s in sorted(profile.skus.items(), key=lambda kv: (-kv[1].revenue_c, kv[0]))
    ]
    return {"categories": cats, "skus": skus}
