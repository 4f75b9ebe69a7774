"""`cvm backfill`: build the store from years of history in files, then hand over to Kafka.

A company starts with its orders, service contacts and campaign touches in CSV or
Parquet files whose columns are the contract's fields (one kind of event per file,
recognised by its columns; ``schemas/``). The backfill reads them with polars,
aggregates every customer's history in columnar form, turns each aggregate into the
engine's own `CustomerState`, and from there goes through the engine's own steps:
`planner.plan` for the record, roll-ups, histograms and rankings, the value model's
`fit_population` on the same statistics tables a worker fits on, and `value_states`
to value every customer with the fitted model. The writes are pipelined (one hash per
customer, the sums added once per key and field), not one Lua call per event.

The seam (see README, "Loading history")
----------------------------------------
A cut-off time T (``--until``; default: 1 ms after the latest event in the files).

* The files hold the events before T; rows at or after T are skipped and counted.
* Kafka holds the events from T: for each partition of the three input topics, the
  first offset whose message timestamp is at or after T (Kafka's offsets-for-times
  lookup; the end of the partition if there is none) is committed for the worker's
  consumer group (``CVM_APP_ID``) and recorded in Redis as the partition's applied
  offset minus one, through the store's own commit, so the first worker starts there
  whether it resumes from Kafka or from Redis.
* Message timestamps are the producers' create times, never earlier than the event;
  an event of the files that Kafka delivers again after the seam (a late producer)
  is within the customer's remembered event ids (``CVM_EVENT_ID_WINDOW``, filled
  from the files) and is dead-lettered as a duplicate, not counted twice.

Start no worker during a backfill: the group commit fails while the group has members.

What is not rebuilt from history: the churn memory of a customer (pending
snapshots, alert cooldowns, win-back episodes; field ``_ret``) starts empty, no
alert or win-back trigger is raised for the past and the churn model learns from the
labels of live events only. Files are deduplicated on (type, event id) per customer.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any

import orjson
import polars as pl
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from stream_app.domain.events import (
    MAX_AMOUNT,
    MS_PER_DAY,
    InvalidEventValue,
    format_time,
    parse_time,
    to_cents,
)
from stream_app.domain.ledger import (
    CONTACT_REASONS,
    FAST_KEYS,
    FAST_PREFIX,
    FAST_TAU_MS,
    RECENT_TAU_MS,
    TOUCH_ACTIONS,
    CustomerState,
    estimated_cost,
    id_hash,
)
from stream_app.domain.retention import Retention, rescore_due
from stream_app.domain.rollups import ATTRIBUTION_WINDOW_MS
from stream_app.domain.tiers import Cuts, value_tier
from stream_app.domain.valuation import Valuation, ValueModel, fit_population, value_states
from stream_app.models import (
    CUT_HISTOGRAMS,
    MIN_FIT_CUSTOMERS,
    FitError,
    cuts_from_histograms,
    load_model,
    model_from_json,
    statistics_rows,
    store_fit,
)
from stream_app.planner import HISTOGRAMS, markers, plan
from stream_app.settings import Settings
from stream_app.store.customers import Change, CustomerStore, Loaded
from stream_app.store.keys import Keys
from stream_app.store.records import VERSION

DESCRIPTION = __doc__.split("\n\n", 1)[1].split("What is not", 1)[0] if __doc__ else ""

#: The contract's kinds, the domain type name each one's event ids are hashed with, and the
#: order of kinds at the same millisecond (touches, then contacts, then purchases).
KINDS = ("campaign_touch", "service_contact", "purchase")
TYPE_NAMES = {"purchase": "Purchase", "service_contact": "ServiceContact",
              "campaign_touch": "CampaignTouch"}
#: A column only one kind has: how a file's kind is recognised.
_MARK_COLUMN = {"amount": "purchase", "reason": "service_contact", "campaign_id": "campaign_touch"}
_REQUIRED = {
    "purchase": ("event_id", "customer_id", "occurred_at", "kind", "amount", "currency",
                 "channel"),
    "service_contact": ("event_id", "customer_id", "occurred_at", "channel", "reason", "cost",
                        "resolved"),
    "campaign_touch": ("event_id", "customer_id", "occurred_at", "campaign_id", "channel",
                       "action", "cost"),
}
_CLICKS = ("clicked", "converted")
#: Customers planned and written per pipeline round trip.
WRITE_CHUNK = 2000


class BackfillError(RuntimeError):
    """The files or the store do not allow a backfill."""


@dataclass
class Report:
    """What a backfill read, skipped and wrote."""

    files: int = 0
    rows: int = 0
    events: int = 0
    customers: int = 0
    after_seam: int = 0
    duplicates: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    until: int | None = None
    watermark: int | None = None
    model_version: int = 0
    seam: dict[str, int] = field(default_factory=dict)
    read_s: float = 0.0
    aggregate_s: float = 0.0
    value_s: float = 0.0
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "files": self.files, "rows": self.rows, "events": self.events,
            "customers": self.customers, "after_seam": self.after_seam,
            "duplicates": self.duplicates, "rejected": dict(self.rejected),
            "until": None if self.until is None else format_time(self.until),
            "watermark": None if self.watermark is None else format_time(self.watermark),
            "model_version": self.model_version, "seam_offsets": self.seam,
            "read_s": round(self.read_s, 3), "aggregate_s": round(self.aggregate_s, 3),
            "value_s": round(self.value_s, 3), "seconds": round(self.seconds, 3),
            "events_per_s": round(self.events / self.seconds, 1) if self.seconds else None,
        }


# --- reading -------------------------------------------------------------------------------


def read_file(path: Path) -> pl.DataFrame:
    """One file as polars reads it (CSV: money and sentiment as floats, the rest as text)."""
    if path.suffix.lower() in (".parquet", ".pq"):
        return pl.read_parquet(path)
    return pl.read_csv(
        path,
        schema_overrides={"amount": pl.Float64, "cost": pl.Float64, "sentiment": pl.Float64,
                          "event_id": pl.String, "customer_id": pl.String,
                          "campaign_id": pl.String},
    )


def file_kind(columns: Sequence[str]) -> str:
    """The event kind of a file, from the one column only that kind has."""
    found = {kind for column, kind in _MARK_COLUMN.items() if column in columns}
    if len(found) != 1:
        raise BackfillError(
            f"columns {sorted(columns)} name no single event kind: a file holds purchases "
            "(amount), service contacts (reason) or campaign touches (campaign_id)"
        )
    return found.pop()


def _cents(
    amount: pl.Series, currency: pl.Series | None, settings: Settings
) -> tuple[pl.Series, pl.Series]:
    """Integer cents of the base currency and a mask of valid values, as `to_cents` gives.

    Vectorised where the float is unambiguous; a value within a hair of half a cent
    (where the float and the decimal text may round apart), or in another currency,
    goes through `to_cents` itself.
    """
    a = amount.cast(pl.Float64)
    c = a * 100
    rounded = c.round(0, mode="half_to_even")
    frac = (c - c.floor()).fill_null(0.0).fill_nan(0.0)
    ambiguous = ((frac - 0.5).abs() < 1e-6).fill_null(False)
    base = settings.base_currency
    foreign = (
        pl.Series([False] * len(a)) if currency is None
        else (currency != base).fill_null(False)
    )
    ok = (a.is_not_null() & a.is_finite() & (a.abs() <= MAX_AMOUNT)).fill_null(False)
    cents = rounded.cast(pl.Int64, strict=False)
    slow = (ambiguous | foreign) & ok
    if slow.any():
        values = cents.to_list()
        valid = ok.to_list()
        cur = None if currency is None else currency.to_list()
        for i in slow.arg_true().to_list():
            rate = Decimal(1)
            if cur is not None and cur[i] != base:
                rate = settings.fx_rates.get(cur[i], Decimal(0))
                if not rate:
                    valid[i] = False
                    continue
            try:
                values[i] = to_cents(float(a[i]), rate)
            except InvalidEventValue:
                valid[i] = False
        cents = pl.Series(values, dtype=pl.Int64)
        ok = pl.Series(valid, dtype=pl.Boolean)
    return cents, ok


def _times(text: pl.Series) -> pl.Series:
    """Epoch milliseconds of RFC 3339 times (null where a time cannot be read)."""
    ms = text.str.to_datetime(time_unit="ms", time_zone="UTC", strict=False).dt.epoch("ms")
    missing = ms.is_null() & text.is_not_null()
    if missing.any():
        values = ms.to_list()
        raw = text.to_list()
        for i in missing.arg_true().to_list():
            try:
                values[i] = parse_time(raw[i])
            except (InvalidEventValue, TypeError):
                values[i] = None
        ms = pl.Series(values, dtype=pl.Int64)
    return ms


def _column(df: pl.DataFrame, name: str, dtype: Any) -> pl.Series:
    if name in df.columns:
        return df[name].cast(dtype, strict=False)
    return pl.Series(name, [None] * df.height, dtype=dtype)


def normalise(df: pl.DataFrame, kind: str, file_no: int, settings: Settings,
              report: Report) -> pl.DataFrame:
    """One file's rows as engine events (integer cents, epoch ms), invalid rows dropped."""
    n = df.height
    bad = pl.Series([False] * n)

    def reject(mask: pl.Series, reason: str) -> None:
        nonlocal bad
        mask = mask.fill_null(True) & ~bad
        count = int(mask.sum())
        if count:
            report.rejected[f"{kind}: {reason}"] += count
            bad = bad | mask

    for name in _REQUIRED[kind]:
        if name not in df.columns:
            raise BackfillError(f"a {kind} file lacks the required column {name!r}")
        reject(df[name].is_null(), f"{name} missing")
    cid = _column(df, "customer_id", pl.String)
    reject(~cid.str.contains(r"^[^\s{}]{1,128}$"), "customer_id not of the contract's form")
    eid = _column(df, "event_id", pl.String)
    reject(eid.str.len_chars() == 0, "event_id empty")
    t = _times(_column(df, "occurred_at", pl.String))
    reject(t.is_null(), "occurred_at not RFC 3339 with an offset")
    reject(t < settings.earliest_event_ms, "occurred_at before CVM_EARLIEST_EVENT_TIME")
    channel = _column(df, "channel", pl.String)
    null_i = pl.Series([None] * n, dtype=pl.Int64)
    null_s = pl.Series([None] * n, dtype=pl.String)
    p_kind, amount_c, cost_c, fee_c = null_s, null_i, null_i, null_i
    reason, action, campaign = null_s, null_s, null_s
    resolved = pl.Series([None] * n, dtype=pl.Boolean)
    sentiment_m = null_i
    if kind == "purchase":
        p_kind = _column(df, "kind", pl.String)
        reject(~p_kind.is_in(["order", "return"]), "kind not order or return")
        currency = _column(df, "currency", pl.String)
        amount_c, ok = _cents(_column(df, "amount", pl.Float64), currency, settings)
        reject(~ok | (amount_c < 0), "amount not a number within 0..10^12 in a known currency")
        raw_cost = _column(df, "cost", pl.Float64)
        cost_c, ok = _cents(raw_cost, currency, settings)
        reject(raw_cost.is_not_null() & (~ok | (cost_c < 0)), "cost not within 0..10^12")
    else:
        fee_c, ok = _cents(_column(df, "cost", pl.Float64), None, settings)
        reject(~ok | (fee_c < 0), "cost not a number within 0..10^12")
    if kind == "service_contact":
        reason = _column(df, "reason", pl.String)
        reject(~reason.is_in(list(CONTACT_REASONS)), "reason unknown")
        raw_resolved = df["resolved"]
        if raw_resolved.dtype == pl.Boolean:
            resolved = raw_resolved
        else:
            text = raw_resolved.cast(pl.String).str.to_lowercase()
            reject(~text.is_in(["true", "false"]), "resolved not true or false")
            resolved = text == "true"
        s = _column(df, "sentiment", pl.Float64)
        reject(s.is_not_null() & ~((s >= -1) & (s <= 1)).fill_null(False),
               "sentiment not within -1..1")
        sentiment_m = (s * 1000).round(0, mode="half_to_even").cast(pl.Int64, strict=False)
    if kind == "campaign_touch":
        action = _column(df, "action", pl.String)
        reject(~action.is_in(list(TOUCH_ACTIONS)), "action unknown")
        campaign = _column(df, "campaign_id", pl.String)
    out = pl.DataFrame({
        "customer_id": cid, "event_id": eid, "type": pl.Series([kind] * n, dtype=pl.String),
        "rank": pl.Series([KINDS.index(kind)] * n, dtype=pl.Int8), "t": t,
        "file": pl.Series([file_no] * n, dtype=pl.Int32),
        "row": pl.Series(range(n), dtype=pl.Int64),
        "p_kind": p_kind, "amount_c": amount_c, "cost_c": cost_c, "fee_c": fee_c,
        "channel": channel, "reason": reason, "resolved": resolved,
        "sentiment_m": sentiment_m, "campaign_id": campaign, "action": action,
    })
    return out.filter(~bad)


def read_events(
    paths: Sequence[Path], settings: Settings, until: int | None, report: Report
) -> pl.DataFrame:
    """Every valid event of the files before `until`, deduplicated, each customer's events in
    application order.

    Application order, the order a worker reading the topics in event-time order applies
    a customer's events in: event time, then touches before contacts before purchases at
    the same millisecond, then file and row. The rows are sorted so for all customers at
    once, not by customer first: restricted to one customer it is the same order, and
    sorting by numbers alone takes half the time of sorting by customer id first.
    """
    frames = []
    for file_no, path in enumerate(paths):
        raw = read_file(path)
        report.files += 1
        report.rows += raw.height
        frames.append(normalise(raw, file_kind(raw.columns), file_no, settings, report))
    events = pl.concat(frames, how="vertical") if frames else normalise(
        pl.DataFrame({c: [] for c in _REQUIRED["purchase"]}), "purchase", 0, settings, report
    )
    if until is None:
        latest = events["t"].max()
        until = (int(latest) + 1) if latest is not None else 0  # type: ignore[arg-type]
    report.until = until
    late = events["t"] >= until
    report.after_seam = int(late.sum())
    events = events.filter(~late).sort(["t", "rank", "file", "row"])
    before = events.height
    events = events.unique(subset=["customer_id", "type", "event_id"], keep="first",
                           maintain_order=True)
    report.duplicates = before - events.height
    report.events = events.height
    return events


# --- aggregation ---------------------------------------------------------------------------


def _estimated_costs(amount_c: pl.Expr, margin_rate: float) -> pl.Expr:
    """`estimated_cost` vectorised: amount x (1 - rate), exact, rounded half to even."""
    num, den = (1 - Decimal(str(margin_rate))).as_integer_ratio()
    if den > 10**6:  # exact integer arithmetic would overflow: one value at a time
        return amount_c.map_elements(lambda a: estimated_cost(a, margin_rate),
                                     return_dtype=pl.Int64)
    prod = amount_c * num
    q = prod // den
    r = prod - q * den
    up = (2 * r > den) | ((2 * r == den) & (q % 2 == 1))
    return q + up.cast(pl.Int64)


def _weights() -> dict[str, pl.Expr]:
    """Each recent-activity counter's weight of an event (null: the event adds no weight)."""
    t, c = pl.col("type"), pl.col("type") == "service_contact"
    order = (t == "purchase") & (pl.col("p_kind") == "order")
    one = pl.lit(1.0)
    w = {
        "orders": pl.when(order).then(one),
        "spend": pl.when(order).then(pl.col("amount_c") / 100),
        "contacts": pl.when(c).then(one),
        "complaints": pl.when(c & (pl.col("reason") == "complaint")).then(one),
        "cancellation_requests": pl.when(c & (pl.col("reason") == "cancellation_request"))
        .then(one),
        "unresolved": pl.when(c & ~pl.col("resolved")).then(one),
        "sentiment": pl.when(c & pl.col("sentiment_m").is_not_null())
        .then(pl.col("sentiment_m") / 1000),
    }
    for action in ("delivered", "opened", "clicked", "converted", "unsubscribed", "bounced"):
        w[action] = pl.when((t == "campaign_touch") & (pl.col("action") == action)).then(one)
    # The fast counters take the same weights and decay with FAST_TAU_MS (`ledger.add_recent`).
    for key in FAST_KEYS:
        if key in w:
            w[FAST_PREFIX + key] = w[key]
    return w


def aggregate(events: pl.DataFrame, margin_rate: float, window: int) -> pl.DataFrame:
    """One row per customer with every sum, count, time and list of their ledger."""
    weights = _weights()
    purchase = pl.col("type") == "purchase"
    order = purchase & (pl.col("p_kind") == "order")
    ret = purchase & (pl.col("p_kind") == "return")
    contact = pl.col("type") == "service_contact"
    touch = pl.col("type") == "campaign_touch"
    click = touch & pl.col("action").is_in(list(_CLICKS))
    weighted = pl.any_horizontal([w.is_not_null() for w in weights.values()])
    frame = events.with_columns(
        cost_eff=pl.coalesce(pl.col("cost_c"), _estimated_costs(pl.col("amount_c"),
                                                                margin_rate)),
        weighted=weighted,
        **{f"w_{k}": w for k, w in weights.items()},
    ).with_columns(
        ref=pl.coalesce(
            pl.when(pl.col("weighted")).then(pl.col("t")).max().over("customer_id"),
            pl.col("t").min().over("customer_id"),
        ),
    ).with_columns(decay=((pl.col("t") - pl.col("ref")) / RECENT_TAU_MS).exp(),
                   decay_fast=((pl.col("t") - pl.col("ref")) / FAST_TAU_MS).exp())
    aggs = [
        order.sum().alias("orders"),
        ret.sum().alias("returns"),
        pl.col("amount_c").filter(order).sum().alias("revenue_c"),
        pl.col("amount_c").filter(ret).sum().alias("returned_c"),
        (pl.col("cost_eff").filter(order).sum() - pl.col("cost_eff").filter(ret).sum())
        .alias("cogs_c"),
        (purchase & pl.col("cost_c").is_null()).sum().alias("cogs_estimated"),
        pl.col("fee_c").filter(contact).sum().alias("service_cost_c"),
        pl.col("fee_c").filter(touch).sum().alias("marketing_cost_c"),
        (contact & ~pl.col("resolved")).sum().alias("unresolved"),
        pl.col("sentiment_m").filter(contact).sum().alias("sentiment_sum_m"),
        pl.col("sentiment_m").filter(contact).count().alias("sentiment_n"),
        pl.col("t").filter(order).min().alias("first_purchase"),
        pl.col("t").filter(order).max().alias("last_purchase"),
        pl.col("channel").filter(order).first().alias("acquisition_channel"),
        (pl.col("t").filter(order) // MS_PER_DAY).unique().sort().alias("purchase_days"),
        pl.col("t").min().alias("first_event"),
        pl.col("t").max().alias("last_event"),
        pl.col("campaign_id").filter(click).last().alias("last_click_campaign"),
        pl.col("t").filter(click).max().alias("last_click_at"),
        pl.col("ref").first().alias("recent_at"),
        *[(contact & (pl.col("reason") == r)).sum().alias(f"contacts.{r}")
          for r in CONTACT_REASONS],
        *[(touch & (pl.col("action") == a)).sum().alias(f"touches.{a}") for a in TOUCH_ACTIONS],
        *[(pl.col(f"w_{k}") * pl.col("decay_fast" if k.startswith(FAST_PREFIX) else "decay"))
          .sum().alias(f"recent.{k}") for k in weights],
        *[pl.col(f"w_{k}").is_not_null().any().alias(f"has.{k}") for k in weights],
    ]
    if window > 0:
        aggs += [pl.col("type").tail(window).alias("id_types"),
                 pl.col("event_id").tail(window).alias("id_values")]
    # Within a group the rows keep the frame's order (each customer's application order);
    # the customers come out sorted by id.
    return frame.group_by("customer_id", maintain_order=True).agg(aggs).sort("customer_id")


def states(customers: pl.DataFrame) -> Iterator[CustomerState]:
    """The engine's `CustomerState` of every aggregated customer, in the frame's order."""
    recent_keys = [c[len("recent."):] for c in customers.columns if c.startswith("recent.")]
    has_ids = "id_types" in customers.columns
    for row in customers.iter_rows(named=True):
        contacts = {r: n for r in CONTACT_REASONS if (n := row[f"contacts.{r}"])}
        touches = {a: n for a in TOUCH_ACTIONS if (n := row[f"touches.{a}"])}
        recent = {k: float(row[f"recent.{k}"]) for k in recent_keys if row[f"has.{k}"]}
        ids: tuple[int, ...] = ()
        if has_ids:
            ids = tuple(id_hash(TYPE_NAMES[k], e)
                        for k, e in zip(row["id_types"], row["id_values"], strict=True))
        yield CustomerState(
            customer_id=row["customer_id"],
            orders=row["orders"], returns=row["returns"], revenue_c=row["revenue_c"],
            returned_c=row["returned_c"], cogs_c=row["cogs_c"],
            cogs_estimated=row["cogs_estimated"], service_cost_c=row["service_cost_c"],
            marketing_cost_c=row["marketing_cost_c"],
            contacts=MappingProxyType(contacts), unresolved=row["unresolved"],
            sentiment_sum_m=row["sentiment_sum_m"], sentiment_n=row["sentiment_n"],
            touches=MappingProxyType(touches),
            first_purchase=row["first_purchase"], last_purchase=row["last_purchase"],
            first_event=row["first_event"], last_event=row["last_event"],
            acquisition_channel=row["acquisition_channel"],
            last_click_campaign=row["last_click_campaign"] if row["last_click_at"] is not None
            else None,
            last_click_at=row["last_click_at"],
            purchase_days=tuple(row["purchase_days"]),
            recent=MappingProxyType(recent), recent_at=row["recent_at"],
            event_ids=ids,
        )


def campaign_sums(events: pl.DataFrame, margin_rate: float) -> list[tuple[str, str, int]]:
    """Campaign roll-up sums: touches and cost, and last-click attributed orders.

    An order is attributed to the campaign of the customer's latest click (or
    conversion) applied before it, if that click is at most the attribution window
    older: `rollups.campaign_increments` over the application order.
    """
    touches = events.filter(pl.col("type") == "campaign_touch")
    out: list[tuple[str, str, int]] = []
    by_action = touches.group_by(["campaign_id", "action"]).agg(pl.len().alias("n"))
    for name, action, n in by_action.iter_rows():
        out.append((name, f"touches.{action}", int(n)))
    for name, cost in touches.group_by("campaign_id").agg(pl.col("fee_c").sum()).iter_rows():
        out.append((name, "cost_c", int(cost)))
    clicks = touches.filter(pl.col("action").is_in(list(_CLICKS))).select(
        "customer_id", pl.col("t").alias("click_at"), "campaign_id", "file", "row"
    ).sort(["customer_id", "click_at", "file", "row"])
    orders = events.filter((pl.col("type") == "purchase") & (pl.col("p_kind") == "order"))
    if clicks.height and orders.height:
        orders = orders.with_columns(
            cost_eff=pl.coalesce(pl.col("cost_c"), _estimated_costs(pl.col("amount_c"),
                                                                    margin_rate)),
        ).select("customer_id", "t", "amount_c", "cost_eff").sort(["customer_id", "t"])
        joined = orders.join_asof(
            clicks.select("customer_id", "click_at", "campaign_id"),
            left_on="t", right_on="click_at", by="customer_id", strategy="backward",
            check_sortedness=False,
        ).filter(
            pl.col("click_at").is_not_null()
            & (pl.col("t") - pl.col("click_at") <= ATTRIBUTION_WINDOW_MS)
        )
        sums = joined.group_by("campaign_id").agg(
            pl.len().alias("attributed_orders"),
            pl.col("amount_c").sum().alias("attributed_revenue_c"),
            (pl.col("amount_c") - pl.col("cost_eff")).sum().alias("attributed_margin_c"),
        )
        for row in sums.iter_rows(named=True):
            for name in ("attributed_orders", "attributed_revenue_c", "attributed_margin_c"):
                out.append((row["campaign_id"], name, int(row[name])))
    return out


# --- valuation and records -----------------------------------------------------------------

#: Stands in for a valuation when only a state's purchase-history buckets are wanted
#: (`markers` needs one to count a customer at all; those buckets do not depend on it).
_ANY_VALUATION = Valuation(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0)


def fit_model(
    customers: Sequence[CustomerState], as_of: int, previous: ValueModel
) -> tuple[Any, int]:
    """Fit the value model on the statistics tables a worker's fit reads from Redis."""
    repeat: Counter[str] = Counter()
    spend: Counter[str] = Counter()
    bgnbd, spent = HISTOGRAMS.index("bgnbd"), HISTOGRAMS.index("spend")
    for state in customers:
        marks = markers(state, _ANY_VALUATION)
        if marks[bgnbd]:
            repeat[marks[bgnbd]] += 1
        if marks[spent]:
            spend[marks[spent]] += 1
    repeat_rows, spend_rows = statistics_rows(
        {k: str(v) for k, v in repeat.items()}, {k: str(v) for k, v in spend.items()}
    )
    n = sum(r[3] for r in repeat_rows)
    if n < MIN_FIT_CUSTOMERS:
        raise FitError(f"only {n} customers with a purchase; need {MIN_FIT_CUSTOMERS}")
    return fit_population(repeat_rows, spend_rows, as_of // MS_PER_DAY, previous), n


def population_cuts(
    customers: Sequence[CustomerState], valuations: Sequence[Valuation | None]
) -> Cuts:
    """The cut points a worker would load from the histograms of these customers."""
    counts: dict[str, Counter[str]] = {name: Counter() for name in CUT_HISTOGRAMS}
    index = {name: HISTOGRAMS.index(name) for name in CUT_HISTOGRAMS}
    for state, valuation in zip(customers, valuations, strict=True):
        marks = markers(state, valuation)
        for name, i in index.items():
            if marks[i]:
                counts[name][marks[i]] += 1
    return cuts_from_histograms(
        *({k: str(v) for k, v in counts[name].items()} for name in CUT_HISTOGRAMS)
    )


async def store_is_empty(redis: Redis, keys: Keys) -> bool:
    """Whether no customer record exists yet."""
    _, found = await redis.scan(0, match=keys.customer_pattern, count=1000)
    if found:
        return False
    async for _ in redis.scan_iter(match=keys.customer_pattern, count=10_000):
        return False
    return True


def write_changes(
    redis: SyncRedis, keys: Keys, changes: Sequence[Change], sums: Counter[tuple[str, str]]
) -> None:
    """Write new customers' records and rankings in one pipeline; add their sums to `sums`.

    The records are new (the backfill runs on an empty store), so each is one HSET of
    every field with version 1, as the store's commit would write it. A blocking client:
    redis-py packs its commands in C (hiredis) there, not in Python as the asyncio one does.
    """
    ranks: dict[str, dict[str, float]] = {}
    pipe = redis.pipeline(transaction=False)
    for change in changes:
        fields = dict(change.fields)
        fields[VERSION] = "1"
        pipe.hset(keys.customer(change.customer_id), mapping=fields)
        for key, score in change.ranks.items():
            if score is not None and math.isfinite(score):
                ranks.setdefault(key, {})[change.customer_id] = float(score)
        for key, name, delta in change.increments:
            sums[(key, name)] += int(delta)
    for key, members in ranks.items():
        pipe.zadd(key, members)
    pipe.execute()


def write_sums(redis: SyncRedis, sums: Counter[tuple[str, str]], chunk: int = 5000) -> None:
    """Add the summed roll-up and histogram increments, one HINCRBY per key and field."""
    items = [(k, f, d) for (k, f), d in sums.items() if d]
    for start in range(0, len(items), chunk):
        pipe = redis.pipeline(transaction=False)
        for key, name, delta in items[start:start + chunk]:
            pipe.hincrby(key, name, delta)
        pipe.execute()


# --- the seam ------------------------------------------------------------------------------


def seam_offsets(settings: Settings, until: int) -> dict[tuple[str, int], int]:
    """Per input partition, the first offset at or after `until` (message timestamps)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**settings.kafka_config(), "group.id": settings.app_id,
                         "enable.auto.commit": False})
    try:
        metadata = consumer.list_topics(timeout=15)
        wanted = []
        for topic in settings.topics.inputs:
            meta = metadata.topics.get(topic)
            if meta is None or meta.error is not None:
                continue  # no topic yet: Kafka holds nothing before the seam
            wanted += [TopicPartition(topic, p, until) for p in sorted(meta.partitions)]
        if not wanted:
            return {}
        found = consumer.offsets_for_times(wanted, timeout=15)
        out: dict[tuple[str, int], int] = {}
        for tp in found:
            offset = tp.offset
            if offset < 0:  # no message at or after the seam yet: the end of the partition
                offset = consumer.get_watermark_offsets(tp, timeout=15)[1]
            out[(tp.topic, tp.partition)] = int(offset)
        commit = [TopicPartition(t, p, o) for (t, p), o in out.items()]
        consumer.commit(offsets=commit, asynchronous=False)
        return out
    finally:
        consumer.close()


async def set_seam(
    settings: Settings, store: CustomerStore, until: int, watermark: int | None
) -> dict[tuple[str, int], int]:
    """Commit the seam's offsets for the group, and record them and the watermark in Redis."""
    offsets = await asyncio.to_thread(seam_offsets, settings, until)
    applied = {tp: o - 1 for tp, o in offsets.items() if o > 0}
    marks = {} if watermark is None else dict.fromkeys(offsets, watermark)
    if applied or marks:
        await store.commit([], applied, marks)
    return offsets


# --- the whole run -------------------------------------------------------------------------


async def backfill(
    paths: Sequence[Path],
    settings: Settings,
    until: int | None = None,
    progress: Callable[[int], None] | None = None,
    kafka: bool = True,
) -> Report:
    """Load the files into the empty store of `settings`; see the module docstring."""
    from stream_app.connections import async_redis, sync_redis

    redis = async_redis(settings)
    bulk = sync_redis(settings)
    try:
        return await _backfill(paths, settings, redis, bulk, until, progress, kafka)
    finally:
        await redis.aclose()
        bulk.close()


async def _backfill(
    paths: Sequence[Path],
    settings: Settings,
    redis: Redis,
    bulk: SyncRedis,
    until: int | None,
    progress: Callable[[int], None] | None,
    kafka: bool,
) -> Report:
    started = time.perf_counter()
    report = Report()
    keys = Keys(partitions=settings.partitions)
    store = CustomerStore(redis, keys)
    if not await store_is_empty(redis, keys):
        raise BackfillError("the store already holds customers: a backfill starts empty")
    events = read_events(paths, settings, until, report)
    report.read_s = time.perf_counter() - started
    customers = list(states(aggregate(events, settings.default_margin_rate,
                                      settings.event_id_window)))
    report.customers = len(customers)
    report.aggregate_s = time.perf_counter() - started - report.read_s
    latest = events["t"].max()
    report.watermark = None if latest is None else int(latest)  # type: ignore[arg-type]
    horizon = float(settings.horizon_days)
    model = await load_model(redis, keys, settings)
    if report.watermark is not None:
        try:
            fit, n = await asyncio.to_thread(fit_model, customers, report.watermark, model)
            doc = await store_fit(redis, keys, fit, model, report.watermark, n)
            model = model_from_json(orjson.dumps(doc), settings)
        except FitError as exc:
            print(f"cvm backfill: the prior model stays in use: {exc}", file=sys.stderr)
    report.model_version = model.version
    # Each customer valued as of their own latest event, as a worker values a customer
    # it has just written.
    valuations = value_states(model, [(s, s.last_event or 0) for s in customers], horizon)
    cuts = population_cuts(customers, valuations)
    report.value_s = time.perf_counter() - started - report.read_s - report.aggregate_s
    from stream_app.pipeline import retention_policy

    policy = retention_policy(settings)
    extra = {"updated_at": format_time(int(time.time() * 1000))}
    fresh = Retention()
    sums: Counter[tuple[str, str]] = Counter()
    # Plan the next chunk while the previous one is written: Redis and Python in parallel.
    with ThreadPoolExecutor(max_workers=1) as writer:
        pending: Future[None] | None = None
        for start in range(0, len(customers), WRITE_CHUNK):
            changes = []
            for state, valuation in zip(customers[start:start + WRITE_CHUNK],
                                        valuations[start:start + WRITE_CHUNK], strict=True):
                tier = 0 if valuation is None else value_tier(valuation, cuts)
                t = state.last_event or 0
                changes.append(plan(
                    keys, Loaded(CustomerState(state.customer_id), ""), state, valuation, cuts,
                    (), extra, tier=tier, rescore_at=rescore_due(fresh, tier, t, policy),
                ))
            if pending is not None:
                pending.result()
            pending = writer.submit(write_changes, bulk, keys, changes, sums)
            if progress is not None:
                progress(len(changes))
        if pending is not None:
            pending.result()
    # Campaign roll-ups are summed over every partition on read, so the history's totals
    # may sit in any one partition's share: the first.
    share = keys.shard(0)
    for name, fld, delta in campaign_sums(events, settings.default_margin_rate):
        sums[(share.rollup("campaign", name), fld)] += delta
        if fld.startswith("touches."):
            sums[(share.rollup_index("campaign"), name)] += delta
    write_sums(bulk, sums)
    if kafka and report.until is not None:
        offsets = await set_seam(settings, store, report.until, report.watermark)
        report.seam = {f"{t}/{p}": o for (t, p), o in sorted(offsets.items())}
    report.seconds = time.perf_counter() - started
    return report


# --- command line --------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``cvm backfill``."""
    p.add_argument("paths", nargs="+", type=Path,
                   help="CSV or Parquet files of purchases, service contacts or touches")
    p.add_argument("--until", default=None,
                   help="RFC 3339 cut-off: files hold the events before it, Kafka those from "
                        "it (default: 1 ms after the latest event in the files)")
    p.add_argument("--no-kafka", action="store_true",
                   help="write Redis only; set no seam offsets (Kafka holds nothing to resume)")


def run(settings: Settings, args: argparse.Namespace) -> int:
    """``cvm backfill``: load the files, print the report as JSON."""
    from tqdm import tqdm

    until = None if args.until is None else parse_time(args.until)

    async def main() -> Report:
        bar = tqdm(desc="customers", unit=" customers", file=sys.stderr, mininterval=0.5)
        try:
            return await backfill(args.paths, settings, until, bar.update,
                                  kafka=not args.no_kafka)
        finally:
            bar.close()

    try:
        report = asyncio.run(main())
    except (BackfillError, FitError, OSError, pl.exceptions.PolarsError) as exc:
        print(f"cvm backfill: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(orjson.dumps(report.summary(), option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


__all__ = ["BackfillError", "Report", "backfill", "read_events", "run"]
