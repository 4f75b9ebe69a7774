"""CPU per event and bytes per customer of the product profile, affinity and offers.

The bench's own simulated events are replayed through the pure steps the worker
runs for a purchase with order lines (`products.apply`, `offers.line_margins`,
`affinity.increments`, `stream_app.store.profiles.encode`) and through `offers.rank` once per
customer with the merged affinity; the clock is `time.perf_counter` around each
step over all events, in this one process. The bytes are those of the record's
``products`` field (`stream_app.store.profiles.encode`) at the end of the stream.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from load.simulator import SimEvent
from stream_app.domain import affinity, offers, products
from stream_app.domain.events import MS_PER_DAY, Purchase, from_message
from stream_app.offers import line_margins
from stream_app.settings import Settings
from stream_app.store import profiles as profile_codec

__all__ = ["measure_products"]


def measure_products(events: Sequence[SimEvent], settings: Settings | None = None) -> dict[
        str, Any]:
    """Microseconds per purchase and per offer ranking, bytes of the profile per customer."""
    settings = settings or Settings()
    purchases = [from_message("purchase", e.payload) for e in events
                 if e.topic_kind == "purchase" and e.payload.get("items")]
    profiles: dict[str, products.Profile] = {}
    counters: dict[str, int] = {}
    started = time.perf_counter()
    for p in purchases:
        assert isinstance(p, Purchase)
        before = profiles.get(p.customer_id, products.Profile())
        after = products.apply(before, p, settings.profile_max_categories,
                               settings.profile_max_skus)
        for name, delta in affinity.increments(
                before, after, line_margins(p, settings.default_margin_rate), p.kind == "order"):
            counters[name] = counters.get(name, 0) + delta
        profile_codec.encode(after)
        profiles[p.customer_id] = after
    per_event = (time.perf_counter() - started) / max(len(purchases), 1)
    table = affinity.merge([(0, counters)], 0, settings.affinity_half_life_days)
    last_day = max((p.occurred_at for p in purchases), default=0) // MS_PER_DAY
    started = time.perf_counter()
    for profile in profiles.values():
        offers.rank(profile, table, None, "", 0.5, last_day, settings.offers_k)
    per_rank = (time.perf_counter() - started) / max(len(profiles), 1)
    sizes = sorted(len(profile_codec.encode(p).encode()) for p in profiles.values())
    return {
        "purchases_with_items": len(purchases),
        "customers": len(profiles),
        "categories": len(table.buyers),
        "us_per_purchase": round(per_event * 1e6, 1),
        "us_per_offer_ranking": round(per_rank * 1e6, 1),
        "affinity_fields": len(counters),
        "profile_bytes_mean": round(sum(sizes) / max(len(sizes), 1)),
        "profile_bytes_p99": sizes[int(0.99 * (len(sizes) - 1))] if sizes else 0,
        "profile_bytes_max": sizes[-1] if sizes else 0,
    }
