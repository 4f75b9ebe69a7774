"""Turns a customer's new state into one store `Change`: fields, ranks, increments.

The record keeps a marker of the histogram buckets and statistics rows it is
counted in (`Book.marker` of its bookkeeping field), so a change moves the
customer's counts from the old buckets to the new ones exactly, whatever the
model did in between.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from stream_app.domain.ledger import CustomerState
from stream_app.domain.retention import Retention
from stream_app.domain.rfm import log_bucket, rfm_score, rfm_values
from stream_app.domain.rollups import Increment, channel_increments
from stream_app.domain.severity import value_at_risk
from stream_app.domain.tiers import CLV_BASE, Cuts, value_tier
from stream_app.domain.valuation import Valuation
from stream_app.store.customers import Change, Loaded
from stream_app.store.keys import Keys
from stream_app.store.records import (
    LEGACY_FIELDS,
    book_of,
    format_time,
    pack_retention_bytes,
    state_book,
    to_fields,
)

#: Rank set -> the record field whose value its score is derived from.
_RANKED = (("net_contribution", "net_contribution"), ("clv", "clv"),
           ("value_at_risk", "value_at_risk"))
#: Histograms a customer is counted in, in the order of the marker's parts.
HISTOGRAMS = ("frequency", "monetary", "last_purchase_day", "clv", "bgnbd", "spend")
SPEND_BASE = 1.005


def spend_bucket_value(bucket: int) -> float:
    """Mean spend (major units) represented by a spend bucket: its geometric centre."""
    return (SPEND_BASE ** (bucket + 0.5) - 1) / 100


def markers(state: CustomerState, valuation: Valuation | None) -> tuple[str, ...]:
    """The histogram buckets this state is counted in ("" where it is in none)."""
    values = rfm_values(state)
    if values is None or valuation is None:
        return ("",) * len(HISTOGRAMS)
    days = state.purchase_days
    x, t_x = len(days) - 1, days[-1] - days[0]
    net = max(state.revenue_c - state.returned_c, 0)
    # Gamma-Gamma is fitted on positive spends only: a customer who has never paid
    # counts in the BG/NBD statistics but not in the spend ones.
    spend = f"{len(days)}:{log_bucket(net / len(days), SPEND_BASE)}" if net > 0 else ""
    return (
        str(values.frequency_bucket),
        str(values.monetary_bucket),
        str(values.last_purchase_day),
        str(log_bucket(valuation.clv, CLV_BASE)),
        f"{x}:{t_x}:{days[0]}",
        spend,
    )


def _num(value: float, digits: int) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "0"


def valuation_fields(
    v: Valuation,
    cuts: Cuts,
    churn_probability: float | None = None,
    tier: int | None = None,
    risk: float | None = None,
) -> dict[str, str]:
    """The predicted-value fields of a record; `tier` and `risk` when already computed."""
    if tier is None:
        tier = value_tier(v, cuts)
    if risk is None:
        risk = value_at_risk(v, churn_probability)
    fields = {
        "as_of": format_time(v.as_of),
        "horizon_days": _num(v.horizon_days, 0),
        "p_alive": _num(v.p_alive, 4),
        "expected_purchases": _num(v.expected_purchases, 4),
        "expected_spend": _num(v.expected_spend, 2),
        "clv": _num(v.clv, 2),
        "value_at_risk": _num(risk, 2),
        "value_tier": str(tier),
        "model_version": str(v.model_version),
    }
    if churn_probability is not None:
        fields["churn_probability"] = _num(churn_probability, 4)
    return fields


def rfm_fields(state: CustomerState, cuts: Cuts, as_of: int) -> dict[str, str]:
    """Recency in days at `as_of`, the RFM scores and the named segment."""
    values = rfm_values(state)
    if values is None:
        return {}
    s = rfm_score(values, cuts.rfm, as_of)
    return {"recency_days": str(s.recency_days), "rfm": f"{s.r}{s.f}{s.m}",
            "rfm_segment": s.segment}


def plan(
    keys: Keys,
    loaded: Loaded,
    after: CustomerState,
    valuation: Valuation | None,
    cuts: Cuts,
    event_increments: Sequence[Increment],
    extra: Mapping[str, str],
    retention: Retention | None = None,
    churn_probability: float | None = None,
    tier: int | None = None,
    label_due_at: int | None = None,
    rescore_at: int | None = None,
) -> Change:
    """The complete change for one customer (`tier`: its value tier, if already known).

    `label_due_at` and `rescore_at` (event time, ms; None: not due) place the
    customer in the sorted sets the rescoring timer reads.
    """
    shard = keys.shard_of(after.customer_id)
    stored = loaded.fields
    before = book_of(stored)
    new_marks = markers(after, valuation)
    # The bookkeeping: the histogram marker, the event times the customer is due a churn
    # label and a rescore (as the two sorted sets of the rescoring timer hold them), and
    # the churn memory (kept as stored when there is no new one).
    fields = to_fields(after, state_book(
        after, "|".join(new_marks), label_due_at, rescore_at,
        before.retention if retention is None else pack_retention_bytes(retention)))
    fields.update(extra)
    risk = 0.0 if valuation is None else value_at_risk(valuation, churn_probability)
    if valuation is not None:
        fields.update(valuation_fields(valuation, cuts, churn_probability, tier, risk))
        fields.update(rfm_fields(after, cuts, valuation.as_of))
    old_marks = tuple(before.marker.split("|")) if before.marker else ("",) * len(HISTOGRAMS)
    increments: list[tuple[str, str, int]] = []
    for name, old, new in zip(HISTOGRAMS, old_marks, new_marks, strict=True):
        if old != new:
            if old:
                increments.append((shard.histogram(name), old, -1))
            if new:
                increments.append((shard.histogram(name), new, 1))
    rollups = [*channel_increments(loaded.state, after), *event_increments]
    for scope, name, fld, delta in rollups:
        increments.append((shard.rollup(scope, name), fld, delta))
        if fld == "customers" or fld.startswith("touches."):
            increments.append((shard.rollup_index(scope), name, delta))
    ranks: dict[str, float | None] = {
        shard.rank("net_contribution"): after.net_contribution_c / 100,
    }
    if valuation is not None and math.isfinite(valuation.clv):
        ranks[shard.rank("clv")] = round(valuation.clv, 2)
        ranks[shard.rank("value_at_risk")] = round(risk, 2)
    # Only the fields that differ from the stored hash: the commit's version check
    # guarantees that hash is the one being updated.
    changed = {k: v for k, v in fields.items() if stored.get(k) != v}
    # Only the rankings whose score changed: the stored field that the score is written
    # with (atomically, in every commit) says what the rank set holds.
    if loaded.version:
        for name, source in _RANKED:
            if source not in changed and stored.get(source) is not None:
                ranks.pop(shard.rank(name), None)
    # The rescoring timer's sets, each only when its due time moved (the bookkeeping
    # holds them as the sets do).
    if not loaded.version or before.label_due_at != label_due_at:
        ranks[shard.churn_deadlines] = label_due_at
    if not loaded.version or before.rescore_at != rescore_at:
        ranks[shard.rescore_due] = rescore_at
    # A record of the layout before `BOOK` moves to it at its first write.
    removed = tuple(name for name in LEGACY_FIELDS if name in stored)
    return Change(after.customer_id, loaded.version, changed, ranks, increments,
                  removed=removed)
