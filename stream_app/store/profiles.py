"""The product profile's encoding in the customer's record (the ``products`` field).

Compact JSON: a row per category and per sku, names included.

>>> from stream_app.domain.events import Line, Purchase
>>> from stream_app.domain.products import Profile, apply
>>> p = Purchase("o1", "C1", 864_000_000, "order", 3000, None, "web",
...              (Line("S1", "coffee", 2, 1000), Line("S2", "mugs", 1, 1000)))
>>> prof = apply(Profile(), p)
>>> encode(prof)
'{"c":[["coffee",2000,2,1,10,10,0,0],["mugs",1000,1,1,10,10,0,0]],"s":[["S1","coffee",2000,2],["S2","mugs",1000,1]]}'
>>> decode(encode(prof)) == prof
True
"""

from __future__ import annotations

from types import MappingProxyType

import orjson

from stream_app.domain.products import CategoryStats, Profile, SkuStats

__all__ = ["decode", "encode"]


def encode(profile: Profile) -> str:
    """The compact JSON kept in the customer's record (``products`` field); "" when empty.

    About 40 bytes per category plus the name, and 25 per sku plus the names.
    """
    if not profile.categories and not profile.skus:
        return ""
    return orjson.dumps({
        "c": [[k, c.revenue_c, c.units, c.orders, c.first_day, c.last_day, c.gap_days, c.gaps]
              for k, c in sorted(profile.categories.items())],
        "s": [[k, s.category, s.revenue_c, s.units] for k, s in sorted(profile.skus.items())],
    }).decode()


def decode(raw: str | None) -> Profile:
    """The inverse of `encode` ("" or None: an empty profile)."""
    if not raw:
        return Profile()
    doc = orjson.loads(raw)
    cats = {row[0]: CategoryStats(*row[1:]) for row in doc.get("c", ())}
    skus = {row[0]: SkuStats(*row[1:]) for row in doc.get("s", ())}
    return Profile(MappingProxyType(cats), MappingProxyType(skus))
