"""Population trends per period, kept as exact integer sums that any shard can hold.

Two kinds of figures, both as ``field -> integer`` increments that the commit
adds atomically with the customer's record (so a replay adds nothing twice):

* **Stocks** at a period's end (customers, total CLV, total net contribution,
  summed P(alive), customers per segment, per value tier, lost): each period's
  row holds the *change* of the stock during the period, and the stock at the
  end of period P is the sum of the rows up to P (`summarize`). A customer's
  value history (`stream_app.domain.history`) gives their stock at each period
  end: a customer silent for a while is carried at their last known values until
  their next change closes the silent periods with period-end values, which then
  correct those periods' rows.
* **Flows** within a period: new customers (first point), lost (P(alive) fell
  below the threshold since the previous period end), won back (rose above it
  again), segment migrations (from -> to), and per acquisition channel and per
  campaign the money the period's events brought and cost.

Fields are ``<period label>|<group>|<name>`` with integer values; channel and
campaign fields end in ``|<measure>``. Sums of fields from several shards (one
hash per Kafka partition) are merged by adding them (`merge`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from stream_app.domain.events import CampaignTouch, Event, Purchase
from stream_app.domain.history import (
    NO_SEGMENT,
    Point,
    period_index,
    period_label,
    period_of_label,
)
from stream_app.domain.ledger import CustomerState
from stream_app.domain.rfm import SEGMENTS
from stream_app.domain.rollups import UNATTRIBUTED, Increment

__all__ = [
    "STOCKS",
    "TIERS",
    "event_flows",
    "history_increments",
    "merge",
    "summarize",
    "tier_band",
]

#: Value tier bands (CLV percentile of the population), best first: (name, lowest tier).
TIERS: Final = (("platinum", 95), ("gold", 80), ("silver", 50), ("bronze", 0))
#: Stock figures kept per period besides the counts per segment and tier.
STOCKS: Final = ("customers", "clv_c", "net_c", "p_alive_m", "lost")
#: Channel measures, from the ledger's totals.
CHANNEL_MEASURES: Final = (
    ("orders", "orders"), ("revenue_c", "revenue_c"), ("refunds_c", "returned_c"),
    ("gross_margin_c", "gross_margin_c"), ("cost_to_serve_c", "service_cost_c"),
    ("marketing_cost_c", "marketing_cost_c"), ("net_c", "net_contribution_c"),
)


def tier_band(tier: int) -> str:
    """The band of a value tier (0..99).

    >>> tier_band(99), tier_band(80), tier_band(79), tier_band(0)
    ('platinum', 'gold', 'silver', 'bronze')
    """
    for name, lowest in TIERS:
        if tier >= lowest:
            return name
    return TIERS[-1][0]


def _add_row(out: dict[str, int], label: str, point: Point, prev: Point | None,
             sign: int, lost_below: float) -> None:
    """Add `sign` times a point's contribution to its period's row (given the previous point).

    The contribution is what the point adds to the stocks (`STOCKS`, the customer's
    segment and tier band) less what the previous point added, plus the flows.
    """

    def add(name: str, value: int) -> None:
        if value:
            key = label + name
            out[key] = out.get(key, 0) + sign * value

    now = point.lost(lost_below)
    if prev is None:
        add("|s|customers", 1)
        add("|s|clv_c", point.clv_c)
        add("|s|net_c", point.net_c)
        add("|s|p_alive_m", point.p_alive_m)
        add("|s|lost", int(now))
        add(f"|seg|{point.segment}", 1)
        add(f"|tier|{tier_band(point.tier)}", 1)
        add("|f|new", 1)
        add(f"|mig|{NO_SEGMENT}>{point.segment}", 1)
        return
    was = prev.lost(lost_below)
    add("|s|clv_c", point.clv_c - prev.clv_c)
    add("|s|net_c", point.net_c - prev.net_c)
    add("|s|p_alive_m", point.p_alive_m - prev.p_alive_m)
    add("|s|lost", int(now) - int(was))
    if prev.segment != point.segment:
        add(f"|seg|{point.segment}", 1)
        add(f"|seg|{prev.segment}", -1)
        add(f"|mig|{prev.segment}>{point.segment}", 1)
    band, prev_band = tier_band(point.tier), tier_band(prev.tier)
    if band != prev_band:
        add(f"|tier|{band}", 1)
        add(f"|tier|{prev_band}", -1)
    if now and not was:
        add("|f|lost", 1)
    elif was and not now:
        add("|f|won_back", 1)


def history_increments(
    old: Sequence[Point], new: Sequence[Point], unit: str, lost_below: float
) -> dict[str, int]:
    """The trend increments that take a customer's rows from history `old` to `new`.

    `new` is `old` with its tail changed (`history.advance`, before `trim`), so
    only the periods from the first differing point on are compared, and each of
    those has the same previous point in both.

    >>> a = Point(674, 10_000, 9000, "new", 500, 60)
    >>> inc = history_increments([], [a], "month", 0.25)
    >>> [inc[f"2026-03|{k}"] for k in ("f|new", "s|customers", "s|clv_c", "seg|new")]
    [1, 1, 10000, 1]
    >>> b = Point(675, 4_000, 2000, "at_risk", 300, 60)
    >>> inc = history_increments([a], [a, b], "month", 0.25)
    >>> inc["2026-04|s|clv_c"], inc["2026-04|f|lost"], inc["2026-04|mig|new>at_risk"]
    (-6000, 1, 1)
    """
    start = 0
    while start < min(len(old), len(new)) and old[start] == new[start]:
        start += 1
    out: dict[str, int] = {}
    labels: dict[int, str] = {}
    for points, sign in ((old, -1), (new, 1)):
        for i in range(start, len(points)):
            p = points[i]
            label = labels.get(p.period)
            if label is None:
                label = labels[p.period] = period_label(p.period, unit)
            _add_row(out, label, p, points[i - 1] if i else None, sign, lost_below)
    return {name: delta for name, delta in out.items() if delta}


def event_flows(
    before: CustomerState,
    after: CustomerState,
    event: Event,
    unit: str,
    campaign: Iterable[Increment] = (),
) -> dict[str, int]:
    """What one applied event adds to its period's channel and campaign flows.

    The channel is the customer's acquisition channel after the event; `campaign`
    is what `rollups.campaign_increments` gave for the event.

    >>> from stream_app.domain.events import Purchase
    >>> p = Purchase("o1", "C1", 1_772_409_600_000, "order", 10_000, 7_000, "web")
    >>> after = CustomerState("C1", orders=1, revenue_c=10_000, cogs_c=7_000,
    ...                       acquisition_channel="web")
    >>> sorted(event_flows(CustomerState("C1"), after, p, "month").items())[:3]
    [('2026-03|ch|web|gross_margin_c', 3000), ('2026-03|ch|web|net_c', 3000), \
('2026-03|ch|web|orders', 1)]
    """
    label = period_label(period_index(event.occurred_at, unit), unit)
    channel = after.acquisition_channel or UNATTRIBUTED
    out: dict[str, int] = {}
    for measure, attr in CHANNEL_MEASURES:
        delta = getattr(after, attr) - getattr(before, attr)
        if delta:
            out[f"{label}|ch|{channel}|{measure}"] = delta
    if isinstance(event, Purchase | CampaignTouch):
        for _scope, name, measure, delta in campaign:
            if delta:
                key = f"{label}|cp|{name}|{measure}"
                out[key] = out.get(key, 0) + delta
    return out


def merge(shards: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """Add the fields of several shards (one per Kafka partition)."""
    out: dict[str, int] = defaultdict(int)
    for shard in shards:
        for name, value in shard.items():
            out[name] += value
    return dict(out)


def _money(cents: int) -> float:
    return round(cents / 100, 2)


def _named(parts: list[str]) -> tuple[str, str]:
    """(name, measure) of a channel or campaign field's tail (a name may hold ``|``)."""
    return "|".join(parts[:-1]), parts[-1]


def summarize(
    fields: Mapping[str, int],
    unit: str,
    until: int | None = None,
    last: int | None = None,
) -> list[dict[str, Any]]:
    """Per period, oldest first: stocks at the period's end and the period's flows.

    Every period from the first with data up to `until` (a period index; default:
    the last with data) is listed, a quiet one with its stocks carried and no
    flows; `last` keeps only the latest periods.

    >>> rows = summarize({"2026-01|s|customers": 2, "2026-01|s|clv_c": 5000,
    ...                   "2026-03|s|customers": 1, "2026-03|f|new": 1}, "month")
    >>> [(r["period"], r["customers"], r["new"]) for r in rows]
    [('2026-01', 2, 0), ('2026-02', 2, 0), ('2026-03', 3, 1)]
    """
    rows: dict[int, dict[str, int]] = defaultdict(dict)
    for name, value in fields.items():
        label, _, rest = name.partition("|")
        rows[period_of_label(label, unit)][rest] = value
    if not rows:
        return []
    first, end = min(rows), max(rows) if until is None else max(until, min(rows))
    totals: dict[str, int] = defaultdict(int)
    out = []
    for period in range(first, end + 1):
        row = rows.get(period, {})
        for name, value in row.items():
            if name.startswith(("s|", "seg|", "tier|")):
                totals[name] += value
        out.append(_period_doc(period_label(period, unit), row, totals))
    return out[-last:] if last else out


def _period_doc(label: str, row: Mapping[str, int], totals: Mapping[str, int]) -> dict[str, Any]:
    customers = totals.get("s|customers", 0)
    channels: dict[str, dict[str, Any]] = defaultdict(dict)
    campaigns: dict[str, dict[str, Any]] = defaultdict(dict)
    migration = []
    for name, value in sorted(row.items()):
        group, _, rest = name.partition("|")
        if group == "ch":
            channel, measure = _named(rest.split("|"))
            channels[channel][measure] = value
        elif group == "cp":
            campaign, measure = _named(rest.split("|"))
            campaigns[campaign][measure] = value
        elif group == "mig" and value:
            source, _, target = rest.partition(">")
            migration.append({"from": source, "to": target, "customers": value})
    return {
        "period": label,
        "customers": customers,
        "total_clv": _money(totals.get("s|clv_c", 0)),
        "mean_clv": None if not customers else _money(round(totals.get("s|clv_c", 0) / customers)),
        "mean_p_alive": None if not customers else round(
            totals.get("s|p_alive_m", 0) / customers / 10_000, 4),
        "net_contribution": _money(totals.get("s|net_c", 0)),
        "net_contribution_in_period": _money(
            sum(v for n, v in row.items() if n.startswith("ch|") and n.endswith("|net_c"))),
        "lost_customers": totals.get("s|lost", 0),
        "segments": {s: totals.get(f"seg|{s}", 0) for s in (*SEGMENTS, NO_SEGMENT)},
        "tiers": {t: totals.get(f"tier|{t}", 0) for t, _ in TIERS},
        "new": row.get("f|new", 0),
        "lost": row.get("f|lost", 0),
        "won_back": row.get("f|won_back", 0),
        "migration": sorted(migration, key=lambda m: -m["customers"]),
        "channels": sorted(
            (_channel_doc(name, m) for name, m in channels.items()),
            key=lambda c: -c["net_contribution"]),
        "campaigns": sorted(
            (_campaign_doc(name, m) for name, m in campaigns.items()),
            key=lambda c: -c["payoff"]),
    }


def _channel_doc(name: str, m: Mapping[str, int]) -> dict[str, Any]:
    return {
        "channel": name,
        "orders": m.get("orders", 0),
        "revenue": _money(m.get("revenue_c", 0)),
        "refunds": _money(m.get("refunds_c", 0)),
        "gross_margin": _money(m.get("gross_margin_c", 0)),
        "cost_to_serve": _money(m.get("cost_to_serve_c", 0)),
        "marketing_cost": _money(m.get("marketing_cost_c", 0)),
        "net_contribution": _money(m.get("net_c", 0)),
    }


def _campaign_doc(name: str, m: Mapping[str, int]) -> dict[str, Any]:
    cost, margin = m.get("cost_c", 0), m.get("attributed_margin_c", 0)
    return {
        "campaign": name,
        "touches": sum(v for k, v in m.items() if k.startswith("touches.")),
        "cost": _money(cost),
        "attributed_orders": m.get("attributed_orders", 0),
        "attributed_revenue": _money(m.get("attributed_revenue_c", 0)),
        "attributed_margin": _money(margin),
        "payoff": _money(margin - cost),
        "return_on_cost": None if cost == 0 else round((margin - cost) / cost, 3),
    }
