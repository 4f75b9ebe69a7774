"""``cvm evaluate``: the engine's predictions of a holdout period, against a batch fit and naive.

A transaction log is split at ``calibration_end``: the rows before it are replayed through
Kafka into a worker of its own (isolated topics, consumer group and Redis database), the
model is fitted at ``calibration_end`` and every calibration customer is looked up with a
horizon reaching ``holdout_end``. The engine's expected purchases and spend are compared with
what each customer actually did in ``[calibration_end, holdout_end)``, next to two references
computed here in Python from the same rows:

* **batch BG/NBD**: `stream_app.domain.clv.fit_bgnbd` on ``(x, t_x, T)`` per customer at day
  granularity, with Gamma-Gamma on the mean spend per purchase day (all purchase days, the
  engine's basis);
* **naive**: each customer's calibration purchase days per day since the first purchase,
  times the holdout length, ``(x + 1) / T * holdout_days``.

"Purchases" are purchase *days*, as in the engine: several orders on one UTC day count once.
Spend is net revenue (orders minus returns).

Pure functions (no Kafka, Redis, clock or files): `split`, `customer_stats`,
`naive_predictions`, `fit_batch`, `batch_predictions`, `metrics`, `by_frequency`,
`render_report`, `report_json`. The orchestration (`run`) is the thin shell around them.

Examples
--------
>>> from decimal import Decimal
>>> from stream_app.replay import Transaction, parse_instant
>>> day = 86_400_000
>>> rows = [Transaction(1, "A", 0, Decimal(10)), Transaction(2, "A", 3 * day, Decimal(20)),
...         Transaction(3, "A", 12 * day, Decimal(5)), Transaction(4, "B", 11 * day, Decimal(7))]
>>> window = Window(calibration_end=10 * day, holdout_end=20 * day)
>>> [(s.customer_id, s.x, s.t_x, s.T, s.holdout_purchases) for s in customer_stats(rows, window)]
[('A', 1, 3, 10.0, 1)]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import orjson

from stream_app.connections import async_redis, sync_redis
from stream_app.domain.clv import BgNbdParams, FitResult, GammaGammaParams
from stream_app.replay import (
    LogFormat,
    ReplayError,
    Transaction,
    add_log_arguments,
    format_time,
    in_event_time_order,
    log_format_from_args,
    parse_instant,
    read_log,
    report_parse,
    source_name,
)
from stream_app.settings import Settings, Topics
from stream_app.worker_process import WorkerError, WorkerProcess, free_port

__all__ = [
    "DESCRIPTION",
    "METHODS",
    "BatchFit",
    "CustomerStats",
    "Evaluation",
    "EvaluationError",
    "Metrics",
    "Split",
    "Window",
    "add_arguments",
    "batch_predictions",
    "by_frequency",
    "customer_stats",
    "fit_batch",
    "metrics",
    "metrics_table",
    "naive_predictions",
    "plot_by_frequency",
    "render_report",
    "report_json",
    "run",
    "split",
]

MS_PER_DAY = 86_400_000
#: The compared methods, in the order of every table, with their labels.
METHODS = {
    "engine": "engine (streaming BG/NBD + Gamma-Gamma)",
    "batch": "batch BG/NBD + Gamma-Gamma",
    "naive": "naive rate extrapolation",
}
#: Calibration repeat frequencies of the validation plot: 0 .. TOP_FREQUENCY-1, then "TOP+".
TOP_FREQUENCY = 7
DEFAULT_REDIS_DB = 14
#: Redis keys `cvm evaluate` keeps in its database: a lock while it runs and a marker that
#: the data there is an evaluation's (so the next run may flush it).
LOCK_KEY = "cvm-eval:lock"
MARK_KEY = "cvm-eval:run"
LOCK_TTL_S = 6 * 3600
#: The worker's model timer is pushed out of the way: the fit happens at calibration_end.
FIT_INTERVAL_S = 10_000_000

DESCRIPTION = f"""\
Calibration/holdout evaluation of the value model on a transaction log.

Rows before --calibration-end are replayed through Kafka into a worker started for this run
(its own app id, consumer group and topics cvm-eval-RUN.*, created with CVM_PARTITIONS
partitions and deleted at the end, a free web port, Redis database --redis-db, model timers
off), the model is fitted as of --calibration-end, and each calibration customer's expected
purchases and spend up to --holdout-end are compared with the actual ones, next to a batch
BG/NBD fit and a naive rate extrapolation.

WARNING: the Redis database --redis-db (default {DEFAULT_REDIS_DB}) is emptied (FLUSHDB) at the
start. To protect other data, the command refuses a database that holds keys it did not write
itself (unless --force-flush) or the engine's own database (REDIS_URL); its data is left in
place after the run for inspection (e.g. REDIS_URL=.../{DEFAULT_REDIS_DB} cvm lookup ID).

Writes REPORT_DIR/report.md, metrics.json, purchases_by_frequency.png and worker.log, and
prints the metrics table. Exit status: 0 done, 1 the evaluation failed, 2 unusable input.
"""


class EvaluationError(RuntimeError):
    """The evaluation cannot go on; the message says why (and may carry a worker log tail)."""


# --------------------------------------------------------------------------- split and stats


@dataclass(frozen=True)
class Window:
    """The calibration period ends (exclusive) at ``calibration_end``; the holdout runs to
    ``holdout_end`` (exclusive). Epoch ms, UTC."""

    calibration_end: int
    holdout_end: int

    def __post_init__(self) -> None:
        if self.holdout_end <= self.calibration_end:
            raise EvaluationError(
                f"holdout end {format_time(self.holdout_end)} is not after calibration end "
                f"{format_time(self.calibration_end)}"
            )

    @property
    def holdout_days(self) -> float:
        return (self.holdout_end - self.calibration_end) / MS_PER_DAY


@dataclass(frozen=True)
class Split:
    """Rows of the calibration period, of the holdout, and how many fell after the holdout."""

    calibration: list[Transaction]
    holdout: list[Transaction]
    after: int


def split(transactions: Iterable[Transaction], window: Window) -> Split:
    """Calibration = rows before ``calibration_end``; holdout = rows in [cal end, holdout end).

    >>> from decimal import Decimal
    >>> rows = [Transaction(n, "A", t, Decimal(1)) for n, t in enumerate([5, 10, 19, 20, 30])]
    >>> s = split(rows, Window(10, 20))
    >>> [t.occurred_at for t in s.calibration], [t.occurred_at for t in s.holdout], s.after
    ([5], [10, 19], 2)
    """
    calibration, holdout, after = [], [], 0
    for tx in transactions:
        if tx.occurred_at < window.calibration_end:
            calibration.append(tx)
        elif tx.occurred_at < window.holdout_end:
            holdout.append(tx)
        else:
            after += 1
    return Split(calibration, holdout, after)


@dataclass(frozen=True)
class CustomerStats:
    """One calibration customer: BG/NBD statistics at calibration end and the holdout truth.

    ``x`` repeat purchase days, ``t_x`` days from the first to the last purchase day, ``T``
    days from the first purchase day to calibration end, ``calibration_net`` net revenue of
    the calibration period; ``holdout_purchases`` distinct purchase days and
    ``holdout_spend`` net revenue in the holdout.
    """

    customer_id: str
    x: int
    t_x: int
    T: float
    first_day: int
    calibration_net: float
    holdout_purchases: int
    holdout_spend: float

    @property
    def mean_spend(self) -> float:
        """Net revenue per calibration purchase day (0 when refunds exceed revenue)."""
        return max(self.calibration_net, 0.0) / (self.x + 1)


def customer_stats(transactions: Iterable[Transaction], window: Window) -> list[CustomerStats]:
    """Statistics of every customer with an order before calibration end, by customer id.

    Only orders make purchase days; returns lower the net revenue of the period they fall in.
    Rows at or after ``holdout_end`` are ignored.
    """
    cal_days: dict[str, set[int]] = {}
    cal_net: dict[str, Decimal] = {}
    hold_days: dict[str, set[int]] = {}
    hold_net: dict[str, Decimal] = {}
    for tx in transactions:
        if tx.occurred_at < window.calibration_end:
            days, net = cal_days, cal_net
        elif tx.occurred_at < window.holdout_end:
            days, net = hold_days, hold_net
        else:
            continue
        net[tx.customer_id] = net.get(tx.customer_id, Decimal(0)) + tx.amount
        if not tx.is_return:
            days.setdefault(tx.customer_id, set()).add(tx.day)
    end_day = window.calibration_end / MS_PER_DAY
    out = []
    for cid in sorted(cal_days):
        first, last = min(cal_days[cid]), max(cal_days[cid])
        out.append(CustomerStats(
            customer_id=cid,
            x=len(cal_days[cid]) - 1,
            t_x=last - first,
            T=end_day - first,
            first_day=first,
            calibration_net=float(cal_net.get(cid, 0)),
            holdout_purchases=len(hold_days.get(cid, ())),
            holdout_spend=float(hold_net.get(cid, 0)),
        ))
    return out


def _arrays(stats: Sequence[CustomerStats]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.array([s.x for s in stats], dtype=float),
        np.array([s.t_x for s in stats], dtype=float),
        np.array([s.T for s in stats], dtype=float),
    )


# --------------------------------------------------------------------------- reference methods


def naive_predictions(
    stats: Sequence[CustomerStats], horizon_days: float
) -> tuple[np.ndarray, np.ndarray]:
    """Naive purchases ``(x + 1) / T * horizon`` and spend = purchases x mean spend per day.

    The rate is the customer's calibration purchase days per day observed since the first
    purchase day (``T >= 1`` for anyone who bought before calibration end).

    >>> s = CustomerStats("A", x=1, t_x=3, T=10.0, first_day=0, calibration_net=30.0,
    ...                   holdout_purchases=1, holdout_spend=5.0)
    >>> naive_predictions([s], 10.0)
    (array([2.]), array([30.]))
    """
    x, _, T = _arrays(stats)
    purchases = (x + 1.0) / np.maximum(T, 1.0) * horizon_days
    spend = purchases * np.array([s.mean_spend for s in stats], dtype=float)
    return purchases, spend


@dataclass(frozen=True)
class BatchFit:
    """The batch reference: BG/NBD on (x, t_x, T), Gamma-Gamma on mean spend per day."""

    bg: FitResult[BgNbdParams]
    gg: FitResult[GammaGammaParams] | None


def _grouped(*columns: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Distinct rows of the columns and how often each occurs (the fits' ``weights``)."""
    table, counts = np.unique(np.column_stack(columns), axis=0, return_counts=True)
    return [table[:, i] for i in range(table.shape[1])], counts.astype(float)


def fit_batch(stats: Sequence[CustomerStats]) -> BatchFit:
    """Fit both models to the per-customer statistics, the way a batch analysis would.

    Identical ``(x, t_x, T)`` rows are fitted once with their count as weight (the same
    likelihood), and mean spend is taken to the cent for Gamma-Gamma. Besides speed this
    avoids a false alarm of the optimiser: on tens of thousands of unweighted rows L-BFGS-B
    can stop with "ABNORMAL" at the optimum (the objective's rounding noise exceeds its
    last improvement), which `fit_gamma_gamma` reports as not converged.
    """
    from stream_app.domain import clv

    x, t_x, T = _arrays(stats)
    (gx, gt, gT), w = _grouped(x, t_x, T)
    bg = clv.fit_bgnbd(gx, gt, gT, weights=w)
    spend = np.round(np.array([s.mean_spend for s in stats], dtype=float), 2)
    usable = spend > 0
    gg = None
    if int(usable.sum()) >= 2:
        (sx, sm), sw = _grouped(x[usable], spend[usable])
        gg = clv.fit_gamma_gamma(sx, sm, weights=sw, spend_basis="all")
    return BatchFit(bg, gg)


def batch_predictions(
    fit: BatchFit, stats: Sequence[CustomerStats], horizon_days: float
) -> tuple[np.ndarray, np.ndarray | None]:
    """Expected purchases in the holdout, and spend when the Gamma-Gamma fit converged."""
    from stream_app.domain import clv

    x, t_x, T = _arrays(stats)
    purchases = np.atleast_1d(clv.expected_purchases(fit.bg.params, horizon_days, x, t_x, T))
    if fit.gg is None or not fit.gg.converged:
        return purchases, None
    spend = np.array([s.mean_spend for s in stats], dtype=float)
    per_day = np.atleast_1d(clv.expected_spend(fit.gg.params, x, spend, spend_basis="all"))
    return purchases, purchases * per_day


# --------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class Metrics:
    """Errors of one method on one target over ``n`` customers."""

    n: int
    mae: float
    rmse: float
    pearson: float | None
    total_predicted: float
    total_actual: float

    @property
    def total_error(self) -> float | None:
        """Relative error of the total, (predicted - actual) / actual."""
        if self.total_actual == 0:
            return None
        return (self.total_predicted - self.total_actual) / self.total_actual


def metrics(
    predicted: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray
) -> Metrics:
    """MAE, RMSE, Pearson correlation and totals; Pearson is None without variance.

    >>> m = metrics([1.0, 2.0, 4.0], [1.0, 3.0, 2.0])
    >>> m.mae, round(m.rmse, 4), round(m.pearson, 4), m.total_predicted, m.total_actual
    (1.0, 1.291, 0.3273, 7.0, 6.0)
    """
    p = np.asarray(predicted, dtype=float)
    a = np.asarray(actual, dtype=float)
    if p.shape != a.shape or p.size == 0:
        raise ValueError(f"need two non-empty arrays of one shape, got {p.shape} and {a.shape}")
    err = p - a
    pearson = None
    if p.size >= 2 and np.std(p) > 0 and np.std(a) > 0:
        pearson = float(np.corrcoef(p, a)[0, 1])
    return Metrics(
        n=int(p.size),
        mae=float(np.mean(np.abs(err))),
        rmse=float(np.sqrt(np.mean(err**2))),
        pearson=pearson,
        total_predicted=float(p.sum()),
        total_actual=float(a.sum()),
    )


def by_frequency(
    x: Sequence[int] | np.ndarray,
    actual: Sequence[float] | np.ndarray,
    predicted: Mapping[str, Sequence[float] | np.ndarray],
    top: int = TOP_FREQUENCY,
) -> list[dict[str, Any]]:
    """Mean actual and predicted holdout values per calibration repeat frequency 0..top+.

    >>> by_frequency([0, 0, 1, 9], [0, 2, 1, 5], {"m": [1, 1, 1, 4]}, top=2)
    ... # doctest: +NORMALIZE_WHITESPACE
    [{'frequency': '0', 'customers': 2, 'actual': 1.0, 'm': 1.0},
     {'frequency': '1', 'customers': 1, 'actual': 1.0, 'm': 1.0},
     {'frequency': '2+', 'customers': 1, 'actual': 5.0, 'm': 4.0}]
    """
    xs = np.minimum(np.asarray(x, dtype=int), top)
    act = np.asarray(actual, dtype=float)
    rows = []
    for k in range(top + 1):
        mask = xs == k
        n = int(mask.sum())
        row: dict[str, Any] = {"frequency": f"{k}+" if k == top else str(k), "customers": n,
                               "actual": float(act[mask].mean()) if n else None}
        for name, values in predicted.items():
            v = np.asarray(values, dtype=float)
            row[name] = float(v[mask].mean()) if n else None
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- the report


@dataclass
class Evaluation:
    """Everything the report says: inputs, fits, metrics; built by `run`, rendered purely."""

    command: str
    generated_at: str
    log_path: str
    window: Window
    counts: dict[str, int]
    engine_model: dict[str, Any]
    batch: BatchFit
    #: Log-likelihood of each parameter set on this log's calibration statistics.
    own_data_ll: dict[str, dict[str, float | None]]
    #: target ("purchases", "spend") -> method -> Metrics
    metrics: dict[str, dict[str, Metrics]]
    frequency: list[dict[str, Any]]
    environment: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: `compare_lookups` of the sampled `lookup.customer` calls; None when all were lookups.
    lookup_check: dict[str, Any] | None = None
    #: The isolated namespace of the run: id, app id, topics, Redis URL, worker pid.
    run: dict[str, Any] = field(default_factory=dict)


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:,.{digits}f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:+.1f}%"


def metrics_table(table: Mapping[str, Mapping[str, Metrics]]) -> str:
    """The metrics as one markdown table (target, method, n, MAE, RMSE, r, totals)."""
    lines = [
        "| target | method | n | MAE | RMSE | Pearson r | total predicted | total actual "
        "| total error |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for target, by_method in table.items():
        for method, m in by_method.items():
            lines.append(
                f"| {target} | {METHODS.get(method, method)} | {m.n:,} | {_fmt(m.mae)} | "
                f"{_fmt(m.rmse)} | {_fmt(m.pearson)} | {_fmt(m.total_predicted, 1)} | "
                f"{_fmt(m.total_actual, 1)} | {_pct(m.total_error)} |"
            )
    return "\n".join(lines)


def _rel(a: float | None, b: float | None) -> str:
    if a is None or b is None or a == 0:
        return "-"
    return f"{100 * (b - a) / a:+.2f}%"


def _params_table(ev: Evaluation) -> list[str]:
    model = ev.engine_model
    bg_e, gg_e = model["bgnbd"], model["gamma_gamma"]
    bg_b = asdict(ev.batch.bg.params)
    gg_b = asdict(ev.batch.gg.params) if ev.batch.gg is not None else {}
    ll = ev.own_data_ll
    rows = [
        "| model | parameter | engine (streaming) | batch fit | batch vs engine |",
        "|---|---|---:|---:|---:|",
    ]
    for name, unit in (("r", ""), ("alpha", " (days)"), ("a", ""), ("b", "")):
        rows.append(f"| BG/NBD | {name}{unit} | {_fmt(bg_e[name], 4)} | {_fmt(bg_b[name], 4)} | "
                    f"{_rel(bg_e[name], bg_b[name])} |")
    rows.append(f"| BG/NBD | log-likelihood (own input) | "
                f"{_fmt(model.get('bgnbd_log_likelihood'), 2)} | "
                f"{_fmt(ev.batch.bg.log_likelihood, 2)} | |")
    rows.append(f"| BG/NBD | log-likelihood on this log's calibration (x, t_x, T) | "
                f"{_fmt(ll['bgnbd'].get('engine'), 2)} | {_fmt(ll['bgnbd'].get('batch'), 2)} | |")
    rows.append(f"| BG/NBD | n (customers) | {_fmt(model.get('bgnbd_n'), 0)} | "
                f"{_fmt(ev.batch.bg.n, 0)} | |")
    for name in ("p", "q", "v"):
        rows.append(f"| Gamma-Gamma | {name} | {_fmt(gg_e[name], 4)} | {_fmt(gg_b.get(name), 4)} | "
                    f"{_rel(gg_e[name], gg_b.get(name))} |")
    gg_ll = None if ev.batch.gg is None else ev.batch.gg.log_likelihood
    gg_n = None if ev.batch.gg is None else ev.batch.gg.n
    rows.append(f"| Gamma-Gamma | log-likelihood (own input) | "
                f"{_fmt(model.get('gamma_gamma_log_likelihood'), 2)} | {_fmt(gg_ll, 2)} | |")
    rows.append(f"| Gamma-Gamma | log-likelihood on this log's calibration spend | "
                f"{_fmt(ll['gamma_gamma'].get('engine'), 2)} | "
                f"{_fmt(ll['gamma_gamma'].get('batch'), 2)} | |")
    rows.append(f"| Gamma-Gamma | n (customers) | {_fmt(model.get('gamma_gamma_n'), 0)} | "
                f"{_fmt(gg_n, 0)} | |")
    return rows


def _frequency_table(rows: Sequence[Mapping[str, Any]], methods: Sequence[str]) -> list[str]:
    head = "| calibration repeat purchases | customers | actual | " + " | ".join(
        METHODS.get(m, m) for m in methods) + " |"
    lines = [head, "|---" * (3 + len(methods)) + "|"]
    for row in rows:
        cells = [row["frequency"], f"{row['customers']:,}", _fmt(row["actual"])]
        cells += [_fmt(row.get(m)) for m in methods]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def render_report(ev: Evaluation, plot_name: str = "purchases_by_frequency.png") -> str:
    """The markdown report of an evaluation (pure: everything comes from `ev`)."""
    c, w = ev.counts, ev.window
    methods = list(ev.metrics.get("purchases", {}))
    out = [
        "# Holdout evaluation of the value model",
        "",
        f"Generated {ev.generated_at} by:",
        "",
        "```",
        ev.command,
        "```",
        "",
    ]
    if ev.environment:
        out += ["Environment: " + ", ".join(f"`{k}={v}`" for k, v in ev.environment.items()),
                ""]
    out += [
        "## Data",
        "",
        f"- log: `{ev.log_path}`: {c['rows']:,} rows read, {c['bad_rows']:,} skipped as "
        "unparseable",
        f"- calibration: rows before {format_time(w.calibration_end)}: "
        f"{c['calibration_rows']:,} rows, {c['customers']:,} customers with a purchase",
        f"- holdout: [{format_time(w.calibration_end)}, {format_time(w.holdout_end)}) = "
        f"{w.holdout_days:g} days: {c['holdout_rows']:,} rows "
        f"({c['holdout_rows_new_customers']:,} of them by customers first seen in the holdout, "
        "not evaluated)",
        f"- rows after the holdout (ignored): {c['after_rows']:,}",
        f"- customers valued by the engine: {c['engine_valued']:,} of {c['customers']:,}; the "
        f"metrics cover {c['evaluated']:,}",
        "",
        "## Fitted parameters (time unit: days)",
        "",
        f"The engine's model v{ev.engine_model.get('version')} was fitted as of "
        f"{ev.engine_model.get('as_of')} from its Redis statistics; the batch fit ran on the "
        "per-customer statistics computed here from the calibration rows.",
        "",
        *_params_table(ev),
        "",
        f"Batch fits: BG/NBD {'converged' if ev.batch.bg.converged else 'DID NOT CONVERGE'} "
        f"({ev.batch.bg.message}); Gamma-Gamma "
        + ("not fitted" if ev.batch.gg is None else
           ("converged" if ev.batch.gg.converged else "DID NOT CONVERGE")
           + f" ({ev.batch.gg.message})") + ".",
        "",
        "## Holdout predictions",
        "",
        "Purchases are distinct purchase days in the holdout; spend is net revenue.",
        "",
        metrics_table(ev.metrics),
        "",
        "## Holdout purchases by calibration repeat frequency",
        "",
        *_frequency_table(ev.frequency, methods),
        "",
        f"![mean holdout purchases by calibration frequency]({plot_name})",
        "",
        "## Methods",
        "",
        "- engine: the calibration rows replayed through Kafka into a worker, "
        "`models.fit_and_store` at calibration end, then each customer valued as "
        "`lookup.customer(horizon_days=holdout days, as_of=calibration end)` does; spend = "
        "expected purchases x expected spend per purchase day. " + _lookup_note(ev),
        "- batch: `clv.fit_bgnbd` on (x, t_x, T) per customer (days), `clv.expected_purchases`; "
        "`clv.fit_gamma_gamma` on the mean net spend per purchase day with spend_basis=\"all\".",
        "- naive: (calibration purchase days) / (days since the first purchase day) x holdout "
        "days; spend = that x the calibration mean spend per purchase day.",
    ]
    if ev.notes:
        out += ["", "## Notes", "", *(f"- {n}" for n in ev.notes)]
    if ev.timings:
        out += ["", "Timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in ev.timings.items())]
    return "\n".join(out) + "\n"


def _lookup_note(ev: Evaluation) -> str:
    c = ev.lookup_check
    if c is None:
        return "Every prediction came from `lookup.customer`."
    verdict = "agreed" if c["agree"] else f"DISAGREED on {c['disagreeing']:,}"
    return (
        "Predictions were computed in one vectorised pass of the same valuation "
        f"(`valuation.value_many`); `lookup.customer` on {c['customers']:,} sampled customers "
        f"{verdict} (max |difference| {c['max_abs_diff_purchases']:.2g} purchases, "
        f"{c['max_abs_diff_spend']:.2g} spend per purchase day; lookups round to 4 and 2 "
        "decimals)."
    )


def _metrics_json(m: Metrics) -> dict[str, Any]:
    return {**asdict(m), "total_error": m.total_error}


def report_json(ev: Evaluation) -> dict[str, Any]:
    """The evaluation as JSON-ready values (``metrics.json``)."""
    batch: dict[str, Any] = {
        "bgnbd": asdict(ev.batch.bg.params),
        "bgnbd_log_likelihood": ev.batch.bg.log_likelihood,
        "bgnbd_n": ev.batch.bg.n,
        "bgnbd_converged": ev.batch.bg.converged,
        "gamma_gamma": None if ev.batch.gg is None else asdict(ev.batch.gg.params),
        "gamma_gamma_log_likelihood": None if ev.batch.gg is None else ev.batch.gg.log_likelihood,
        "gamma_gamma_n": None if ev.batch.gg is None else ev.batch.gg.n,
        "gamma_gamma_converged": ev.batch.gg is not None and ev.batch.gg.converged,
    }
    return {
        "command": ev.command,
        "generated_at": ev.generated_at,
        "log": ev.log_path,
        "window": {
            "calibration_end": format_time(ev.window.calibration_end),
            "holdout_end": format_time(ev.window.holdout_end),
            "holdout_days": ev.window.holdout_days,
        },
        "counts": ev.counts,
        "params": {"engine": ev.engine_model, "batch": batch},
        "log_likelihood_on_calibration": ev.own_data_ll,
        "metrics": {
            target: {method: _metrics_json(m) for method, m in by_method.items()}
            for target, by_method in ev.metrics.items()
        },
        "by_frequency": ev.frequency,
        "lookup_check": ev.lookup_check,
        "run": ev.run,
        "environment": ev.environment,
        "timings_s": ev.timings,
        "notes": ev.notes,
    }


def plot_by_frequency(rows: Sequence[Mapping[str, Any]], methods: Sequence[str], path: Path,
                      title: str = "") -> None:
    """The classic BG/NBD validation plot: mean holdout purchases by calibration frequency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['frequency']}\n(n={r['customers']:,})" for r in rows]
    xs = np.arange(len(rows))
    # The engine and the batch fit often coincide: the engine is drawn wide and hollow so
    # the batch line stays visible on top of it.
    styles: dict[str, dict[str, Any]] = {
        "engine": {"color": "tab:blue", "ls": "-", "lw": 4.0, "alpha": 0.55, "marker": "o",
                   "markersize": 10, "markerfacecolor": "none", "markeredgewidth": 2},
        "batch": {"color": "tab:orange", "ls": "--", "lw": 1.5, "marker": "s",
                  "markersize": 4},
        "naive": {"color": "tab:green", "ls": ":", "lw": 1.6, "marker": "^"},
    }
    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=110)
    ax.plot(xs, [r["actual"] for r in rows], color="black", lw=2.2, marker="D",
            label="actual")
    for m in methods:
        style = styles.get(m, {"marker": "x"})
        ax.plot(xs, [r.get(m) for r in rows], label=METHODS.get(m, m), **style)
    ax.set_xticks(xs, labels, fontsize=8)
    ax.set_xlabel("repeat purchase days in the calibration period")
    ax.set_ylabel("mean purchase days in the holdout")
    ax.set_title(title or "Holdout purchases by calibration frequency", fontsize=11)
    ax.grid(alpha=0.3)
    ax.set_ylim(bottom=0)
    ax.legend(frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# --------------------------------------------------------------------------- the command


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Every argument of ``cvm evaluate``."""
    add_log_arguments(p)
    g = p.add_argument_group("evaluation")
    g.add_argument("--calibration-end", required=True, metavar="DATE",
                   help="end of the calibration period, exclusive (YYYY-MM-DD, YYYYMMDD or "
                        "RFC 3339)")
    g.add_argument("--holdout-end", required=True, metavar="DATE",
                   help="end of the holdout period, exclusive")
    g.add_argument("--report-dir", default="reports/evaluation", type=Path,
                   help="where report.md, metrics.json and the PNG go (default %(default)s)")
    g.add_argument("--redis-db", type=int, default=DEFAULT_REDIS_DB,
                   help="Redis database of this run, on the REDIS_URL server; FLUSHED at the "
                        "start (default %(default)s)")
    g.add_argument("--force-flush", action="store_true",
                   help="flush --redis-db even if it holds keys cvm evaluate did not write")
    g.add_argument("--apply-timeout", type=float, default=600.0, metavar="S",
                   help="seconds to wait for the worker to apply the calibration rows "
                        "(default %(default)s)")
    g.add_argument("--lookups", default=300, type=_lookups_arg, metavar="N|all",
                   help="'all': every customer's prediction comes from lookup.customer (20-50 "
                        "ms each); N (default %(default)s): predictions are computed in one "
                        "vectorised pass of the same valuation and N customers are looked up "
                        "to check that both agree")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")


def _lookups_arg(text: str) -> int | str:
    if text == "all":
        return text
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is neither 'all' nor a count >= 0")
    return n


def run(settings: Settings, args: argparse.Namespace) -> int:
    """``cvm evaluate``: 0 done, 1 the evaluation failed, 2 unusable input."""
    try:
        fmt = log_format_from_args(args)
        window = Window(parse_instant(args.calibration_end), parse_instant(args.holdout_end))
    except (ReplayError, EvaluationError) as exc:
        print(f"cvm evaluate: {exc}", file=sys.stderr)
        return 2
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return _Run(settings, args, fmt, window).execute()
    except ReplayError as exc:
        print(f"cvm evaluate: {exc}", file=sys.stderr)
        return 2
    except EvaluationError as exc:
        print(f"cvm evaluate: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)


def _terminate(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through the cleanup of `_Run.execute`


def _command_line() -> str:
    """This process's command line as a ``cvm`` command (also under ``python -m``)."""
    return shlex.join(["cvm", *sys.argv[1:]])


def _redact(url: str) -> str:
    """A URL without its password.

    >>> _redact("redis://user:secret@host:6379/0")
    'redis://user:***@host:6379/0'
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def isolated_topics(prefix: str) -> Topics:
    """Every topic of `Topics` (whatever fields it has) renamed under ``prefix``.

    >>> isolated_topics("cvm-eval-x").dead_letter
    'cvm-eval-x.dead-letter'
    """
    return Topics.namespaced(prefix)


def topic_partitions(settings: Settings) -> dict[str, int]:
    """Every topic of `settings` with the partitions the worker expects it to have."""
    topics = settings.topics
    out = {getattr(topics, f.name): settings.partitions for f in fields(Topics)}
    for name, n in getattr(topics, "partition_counts", {}).items():
        out[name] = settings.partitions if n is None else n
    return out


def isolated_settings(settings: Settings, run_id: str, redis_db: int, data_dir: str) -> Settings:
    """`settings` with a namespace of its own: app id, topics, web port, Redis db, data dir.

    The model timers (fit, and the periodic rescoring) are pushed out of the way: the fit
    happens at calibration end, and lookups revalue on read.

    >>> s = isolated_settings(Settings(), "abc", 14, "/tmp/x")
    >>> s.app_id, s.topics.purchases, s.redis_url
    ('cvm-eval-abc', 'cvm-eval-abc.purchases', 'redis://127.0.0.1:6379/14')
    """
    parts = urlsplit(settings.redis_url)
    prefix = f"cvm-eval-{run_id}"
    return replace(
        settings,
        app_id=prefix,
        topics=isolated_topics(prefix),
        web_port=free_port(),
        redis_url=urlunsplit(parts._replace(path=f"/{redis_db}")),
        data_dir=data_dir,
        fit_interval_s=float(FIT_INTERVAL_S),
        rescore_interval_s=float(FIT_INTERVAL_S),
        wall_clock_watermark=False,
        group_instance_id="",
    )


def redis_db_of(url: str) -> int:
    """The database a Redis URL selects (0 when it names none).

    >>> redis_db_of("redis://h:6379/3"), redis_db_of("redis://h:6379"), redis_db_of("redis://h/")
    (3, 0, 0)
    """
    tail = urlsplit(url).path.strip("/")
    return int(tail) if tail.isdigit() else 0


def worker_env(settings: Settings) -> dict[str, str]:
    """The environment of a ``cvm worker`` that reproduces `settings`' namespace and timers."""
    return {
        **os.environ,
        **settings.namespace_env(),
        "CVM_FIT_INTERVAL_S": str(settings.fit_interval_s),
        "CVM_RESCORE_INTERVAL_S": str(settings.rescore_interval_s),
        "CVM_WALL_CLOCK_WATERMARK": "1" if settings.wall_clock_watermark else "0",
        "CVM_GROUP_INSTANCE_ID": settings.group_instance_id,
    }


#: Tolerances of the lookup cross-check: a lookup rounds expected purchases to 4 decimals
#: and expected spend to 2 (see `stream_app.planner.valuation_fields`).
LOOKUP_TOLERANCE = (1e-4, 1e-2)


async def engine_predictions(
    client: Any, settings: Settings, ids: Sequence[str], horizon_days: float, as_of: int,
    chunk: int = 2000,
) -> dict[str, tuple[float, float] | None]:
    """(expected purchases, expected spend per purchase day) of each customer, or None.

    What `lookup.customer` computes, for many customers at once: the stored record, valued
    with the current model at ``max(as_of, last event)`` over ``horizon_days`` by
    `stream_app.domain.valuation.value_states` (`lookup.customer` calls ``value_one``, the same
    function on one customer). None where the engine values nobody (no order, or no revenue).
    """
    from stream_app.domain.valuation import value_states
    from stream_app.models import load_model
    from stream_app.store.customers import text
    from stream_app.store.keys import Keys
    from stream_app.store.records import from_fields

    keys = Keys(partitions=settings.partitions)
    model = await load_model(client, keys, settings)
    out: dict[str, tuple[float, float] | None] = {}
    for lo in range(0, len(ids), chunk):
        part = ids[lo:lo + chunk]
        async with client.pipeline(transaction=False) as pipe:
            for cid in part:
                pipe.hgetall(keys.customer(cid))
            rows = await pipe.execute()
        known, states = [], []
        for cid, raw in zip(part, rows, strict=True):
            out[cid] = None
            fields = text(raw)
            if not fields:
                continue
            state = from_fields(cid, fields)
            known.append(cid)
            states.append(
                (state, as_of if state.last_event is None else max(as_of, state.last_event))
            )
        for cid, v in zip(known, value_states(model, states, horizon_days), strict=True):
            if v is not None:
                out[cid] = (v.expected_purchases, v.expected_spend)
    return out


async def lookups(
    client: Any, settings: Settings, ids: Sequence[str], horizon_days: float, as_of: int,
    version: int, progress: bool,
) -> dict[str, tuple[float, float] | None]:
    """`lookup.customer` for each id: (expected purchases, expected spend) or None.

    None when the customer is unknown or the view carries no valuation of model `version`.
    """
    from stream_app import lookup

    out: dict[str, tuple[float, float] | None] = {}
    bar = _bar(len(ids), "lookups", progress)

    async def one(cid: str) -> None:
        view = await lookup.customer(client, settings, cid, horizon_days=horizon_days,
                                     as_of=as_of, offers=False)
        if (view is None or view.get("model_version") != version
                or "expected_purchases" not in view):
            out[cid] = None
        else:
            out[cid] = (float(view["expected_purchases"]), float(view["expected_spend"]))

    for lo in range(0, len(ids), 32):
        await asyncio.gather(*(one(cid) for cid in ids[lo:lo + 32]))
        bar.update(min(32, len(ids) - lo))
    bar.close()
    return out


def _sample(ids: Sequence[str], n: int) -> list[str]:
    """``n`` ids spread evenly over `ids` (deterministic), all of them if fewer.

    >>> _sample(list("abcdefghij"), 3)
    ['a', 'd', 'g']
    """
    if n >= len(ids):
        return list(ids)
    if n <= 0:
        return []
    return [ids[i * len(ids) // n] for i in range(n)]


def compare_lookups(
    bulk: Mapping[str, tuple[float, float] | None],
    looked: Mapping[str, tuple[float, float] | None],
    tolerance: tuple[float, float] = LOOKUP_TOLERANCE,
) -> dict[str, Any]:
    """How far the bulk predictions are from `lookup.customer` on the looked-up customers.

    >>> c = compare_lookups({"a": (1.23456, 10.0), "b": None}, {"a": (1.2346, 10.0), "b": None})
    >>> c["customers"], round(c["max_abs_diff_purchases"], 6), c["agree"]
    (2, 4e-05, True)
    >>> compare_lookups({"a": (1.0, 10.0)}, {"a": (1.5, 10.0)})["examples"]
    ['a: lookup (1.5, 10.0), bulk (1.0, 10.0)']
    """
    d_p = d_s = 0.0
    bad: list[str] = []
    for cid, want in looked.items():
        got = bulk.get(cid)
        if (want is None) != (got is None):
            bad.append(f"{cid}: lookup {want}, bulk {got}")
            continue
        if want is None or got is None:
            continue
        dp, ds = abs(want[0] - got[0]), abs(want[1] - got[1])
        d_p, d_s = max(d_p, dp), max(d_s, ds)
        if dp > tolerance[0] * (1 + abs(want[0])) or ds > tolerance[1] * (1 + abs(want[1])):
            bad.append(f"{cid}: lookup {want}, bulk {got}")
    return {
        "customers": len(looked),
        "max_abs_diff_purchases": d_p,
        "max_abs_diff_spend": d_s,
        "disagreeing": len(bad),
        "agree": not bad,
        "examples": bad[:3],
    }


class _Run:
    """One evaluation: the imperative shell around the pure functions above."""

    def __init__(self, settings: Settings, args: argparse.Namespace, fmt: LogFormat,
                 window: Window) -> None:
        self.base = settings
        self.args = args
        self.fmt = fmt
        self.window = window
        self.run_id = uuid.uuid4().hex[:8]
        self.report_dir: Path = args.report_dir
        self.progress = not args.no_progress
        self.settings: Settings | None = None
        self.worker: WorkerProcess | None = None
        self.topics_created: list[str] = []
        self.redis: Any = None
        self.timings: dict[str, float] = {}
        self.notes: list[str] = []
        self.lookup_check: dict[str, Any] | None = None
        self.worker_pid: int | None = None

    def say(self, text: str) -> None:
        print(f"cvm evaluate: {text}", file=sys.stderr, flush=True)

    # -- the steps ---------------------------------------------------------------------------

    def execute(self) -> int:
        began = time.perf_counter()
        log = read_log(self.args.file, self.fmt, strict=self.args.strict)
        report_parse(log, self.args.file, sys.stderr, "cvm evaluate")
        rows = in_event_time_order(log.transactions)
        parts = split(rows, self.window)
        stats = customer_stats(rows, self.window)
        if not stats:
            raise EvaluationError(
                f"no purchase before the calibration end {format_time(self.window.calibration_end)}"
            )
        self.say(f"calibration: {len(parts.calibration):,} rows of {len(stats):,} customers; "
                 f"holdout: {len(parts.holdout):,} rows over {self.window.holdout_days:g} days")
        self.report_dir.mkdir(parents=True, exist_ok=True)
        data_dir = tempfile.mkdtemp(prefix=f"cvm-eval-{self.run_id}-")
        self.settings = isolated_settings(self.base, self.run_id, self.args.redis_db, data_dir)
        try:
            self.claim_redis()
            self.create_topics()
            self.start_worker()
            sent = self.replay(parts.calibration)
            self.wait_healthy()
            self.wait_applied(sent)
            doc, engine = asyncio.run(self.fit_and_lookup(stats))
        finally:
            self.cleanup(data_dir)
        t0 = time.perf_counter()
        ev = self.evaluate(log_rows=len(log.transactions), bad_rows=len(log.bad), parts=parts,
                           stats=stats, doc=doc, engine=engine)
        self.timings["batch fit and metrics"] = time.perf_counter() - t0
        self.timings["total"] = time.perf_counter() - began
        ev.timings = dict(self.timings)
        self.write(ev)
        return 0

    def claim_redis(self) -> None:
        import redis

        assert self.settings is not None
        if self.base.redis_cluster:
            raise EvaluationError(
                "cvm evaluate runs in a Redis database of its own (--redis-db), which a Redis "
                "Cluster does not have: point REDIS_URL at a single Redis and unset "
                "CVM_REDIS_CLUSTER"
            )
        db = self.args.redis_db
        if db == redis_db_of(self.base.redis_url):
            raise EvaluationError(
                f"--redis-db {db} is the engine's own database (REDIS_URL); choose another"
            )
        client = sync_redis(self.settings)
        try:
            client.ping()
        except redis.RedisError as exc:
            raise EvaluationError(f"Redis at {_redact(self.settings.redis_url)}: {exc}") from None
        if not client.set(LOCK_KEY, self.run_id, nx=True, ex=LOCK_TTL_S):
            holder = client.get(LOCK_KEY)
            raise EvaluationError(
                f"Redis database {db} is in use by evaluation run {holder!r}; choose another "
                f"--redis-db (or delete the key {LOCK_KEY} if that run is dead)"
            )
        keys = client.dbsize()
        if keys > 1 and not client.exists(MARK_KEY) and not self.args.force_flush:
            client.delete(LOCK_KEY)
            raise EvaluationError(
                f"Redis database {db} holds {keys - 1:,} keys that cvm evaluate did not write; "
                "choose another --redis-db or pass --force-flush"
            )
        client.flushdb()
        client.set(LOCK_KEY, self.run_id, ex=LOCK_TTL_S)
        client.set(MARK_KEY, self.run_id)
        self.redis = client
        self.say(f"flushed Redis database {db} ({max(keys - 1, 0):,} keys)")

    def create_topics(self) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic

        assert self.settings is not None
        s = self.settings
        admin = AdminClient(s.kafka_config())
        futures = admin.create_topics(
            [NewTopic(name, n, -1, config={"max.message.bytes": str(4 << 20)})
             for name, n in topic_partitions(s).items()],
            request_timeout=30,
        )
        for name, future in futures.items():
            try:
                future.result(timeout=60)
            except Exception as exc:  # KafkaException; report which topic
                raise EvaluationError(f"cannot create topic {name}: {exc}") from None
            self.topics_created.append(name)
        self.say(f"created {len(self.topics_created)} topics {s.app_id}.*")

    def start_worker(self) -> None:
        assert self.settings is not None
        log_path = self.report_dir / "worker.log"
        self.worker = WorkerProcess(self.settings, log_path, worker_env(self.settings),
                                    append=False)
        self.worker.start(wait=False)
        self.worker_pid = self.worker.pid
        self.say(f"started worker pid {self.worker_pid} (log {log_path})")

    def replay(self, calibration: list[Transaction]) -> dict[str, int]:
        from stream_app.replay import publish

        assert self.settings is not None
        report = publish(
            calibration, self.settings, source_name(self.args.file),
            currency=self.args.currency, channel=self.args.channel, progress=self.progress,
        )
        self.timings["replay"] = report.seconds
        if report.failed:
            raise EvaluationError(
                f"{report.failed:,} of {report.sent:,} messages were not delivered: "
                + "; ".join(report.errors)
            )
        self.say(f"replayed {report.sent:,} calibration rows in {report.seconds:.1f} s "
                 f"({report.rate:,.0f} msg/s)")
        return report.offsets

    def worker_log_tail(self, n: int = 40) -> str:
        if self.worker is None:
            return "(no worker log)"
        return "\n".join("    " + ln for ln in self.worker.log_tail(n).splitlines())

    def check_worker(self) -> None:
        if self.worker is not None:
            try:
                self.worker.check()
            except WorkerError as exc:
                raise EvaluationError(str(exc)) from None

    def wait_healthy(self, deadline_s: float = 90.0) -> None:
        if self.worker is not None:
            try:
                self.worker.wait_healthy(deadline_s)
            except WorkerError as exc:
                raise EvaluationError(str(exc)) from None

    def wait_applied(self, produced: Mapping[str, int]) -> None:
        """Wait until the applied offsets reach every produced offset (bounded)."""
        from stream_app.store.keys import Keys

        total = sum(o + 1 for o in produced.values())
        bar = _bar(total, "applied", self.progress)
        assert self.settings is not None
        applied_keys = [s.applied for s in Keys(partitions=self.settings.partitions).shards()]
        began = time.perf_counter()
        end = time.monotonic() + self.args.apply_timeout
        done = 0
        try:
            while True:
                raw = {k.decode(): int(v) for key in applied_keys
                       for k, v in self.redis.hgetall(key).items()}
                done = sum(min(raw.get(tp, -1), last) + 1 for tp, last in produced.items())
                bar.update(done - bar.n)
                if all(raw.get(tp, -1) >= last for tp, last in produced.items()):
                    break
                self.check_worker()
                if time.monotonic() > end:
                    raise EvaluationError(
                        f"the worker applied {done:,} of {total:,} calibration rows within "
                        f"--apply-timeout {self.args.apply_timeout:g} s; its log ends with:\n"
                        + self.worker_log_tail()
                    )
                time.sleep(0.25)
        finally:
            bar.close()
        self.timings["apply (after replay)"] = time.perf_counter() - began
        self.say(f"the worker applied all {total:,} calibration rows")

    async def fit_and_lookup(
        self, stats: Sequence[CustomerStats]
    ) -> tuple[dict[str, Any], dict[str, tuple[float, float] | None]]:
        """Fit at calibration end, then the engine's predictions for every customer.

        With ``--lookups all`` every customer goes through `lookup.customer` (the read path
        of ``cvm lookup`` and the web view, about 20-50 ms each). By default the records are
        read in bulk and valued with the same domain call in one vectorised pass
        (`engine_predictions`), and a sample of customers is looked up with `lookup.customer`
        to check that both give the same numbers.
        """
        from stream_app.models import FitError, fit_and_store
        from stream_app.store.keys import Keys

        assert self.settings is not None
        settings = self.settings
        client = async_redis(settings)
        try:
            t0 = time.perf_counter()
            try:
                doc = await fit_and_store(client, Keys(partitions=settings.partitions), settings,
                                          as_of=self.window.calibration_end)
            except FitError as exc:
                raise EvaluationError(f"the engine's fit failed: {exc}") from None
            self.timings["engine fit"] = time.perf_counter() - t0
            bg = doc["bgnbd"]
            self.say(f"engine model v{doc['version']}: r={bg['r']:.4f} alpha={bg['alpha']:.3f} "
                     f"a={bg['a']:.4f} b={bg['b']:.4f} (n={doc['bgnbd_n']:,.0f})")
            ids = [s.customer_id for s in stats]
            horizon, as_of = self.window.holdout_days, self.window.calibration_end
            t0 = time.perf_counter()
            if self.args.lookups == "all":
                out = await lookups(client, settings, ids, horizon, as_of, doc["version"],
                                    self.progress)
                self.timings["engine lookups"] = time.perf_counter() - t0
                return doc, out
            out = await engine_predictions(client, settings, ids, horizon, as_of)
            self.timings["engine predictions (vectorised)"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            sample = _sample(ids, int(self.args.lookups))
            looked = await lookups(client, settings, sample, horizon, as_of, doc["version"],
                                   progress=False)
            self.timings["lookup cross-check"] = time.perf_counter() - t0
            self.lookup_check = compare_lookups(out, looked)
            check = self.lookup_check
            self.say(f"lookup.customer cross-check on {check['customers']:,} customers: max "
                     f"|difference| {check['max_abs_diff_purchases']:.2g} purchases, "
                     f"{check['max_abs_diff_spend']:.2g} spend")
            if not check["agree"]:
                self.notes.append(
                    "the vectorised engine predictions DIFFER from lookup.customer on "
                    f"{check['disagreeing']:,} of {check['customers']:,} sampled customers "
                    f"(e.g. {check['examples']})"
                )
            return doc, out
        finally:
            await client.aclose()

    def evaluate(self, *, log_rows: int, bad_rows: int, parts: Split,
                 stats: list[CustomerStats], doc: dict[str, Any],
                 engine: Mapping[str, tuple[float, float] | None]) -> Evaluation:
        from stream_app.domain import clv

        horizon = self.window.holdout_days
        valued = [s for s in stats if engine.get(s.customer_id) is not None]
        missing = len(stats) - len(valued)
        if missing:
            self.notes.append(
                f"{missing:,} calibration customers have no engine valuation (e.g. only "
                "zero-amount orders) and are left out of every method's metrics"
            )
        if not valued:
            raise EvaluationError("the engine valued none of the calibration customers")
        batch = fit_batch(stats)
        if not batch.bg.converged:
            self.notes.append(f"the batch BG/NBD fit did not converge: {batch.bg.message}")
        b_purchases, b_spend = batch_predictions(batch, valued, horizon)
        n_purchases, n_spend = naive_predictions(valued, horizon)
        e = np.array([engine[s.customer_id] for s in valued], dtype=float)
        e_purchases, e_spend = e[:, 0], e[:, 0] * e[:, 1]
        actual_p = np.array([s.holdout_purchases for s in valued], dtype=float)
        actual_s = np.array([s.holdout_spend for s in valued], dtype=float)
        table: dict[str, dict[str, Metrics]] = {
            "purchases": {
                "engine": metrics(e_purchases, actual_p),
                "batch": metrics(b_purchases, actual_p),
                "naive": metrics(n_purchases, actual_p),
            },
            "spend": {"engine": metrics(e_spend, actual_s)},
        }
        if b_spend is not None:
            table["spend"]["batch"] = metrics(b_spend, actual_s)
        else:
            self.notes.append("no batch spend predictions: the Gamma-Gamma fit did not converge")
        table["spend"]["naive"] = metrics(n_spend, actual_s)
        x = np.array([s.x for s in valued])
        freq = by_frequency(x, actual_p, {"engine": e_purchases, "batch": b_purchases,
                                          "naive": n_purchases})
        # Both parameter sets on this log's own statistics: comparable log-likelihoods.
        xa, txa, Ta = _arrays(stats)
        bg_e = BgNbdParams(**doc["bgnbd"])
        ll_bg = {
            "engine": float(np.sum(clv.bgnbd_log_likelihood(bg_e, xa, txa, Ta))),
            "batch": batch.bg.log_likelihood,
        }
        spend = np.array([s.mean_spend for s in stats])
        use = spend > 0
        gg_e = GammaGammaParams(**doc["gamma_gamma"])
        ll_gg: dict[str, float | None] = {
            "engine": float(np.sum(clv.gamma_gamma_log_likelihood(
                gg_e, xa[use], spend[use], spend_basis="all"))),
            "batch": None if batch.gg is None else batch.gg.log_likelihood,
        }
        new_in_holdout = {t.customer_id for t in parts.holdout} - {s.customer_id for s in stats}
        s = self.settings
        assert s is not None
        return Evaluation(
            command=_command_line(),
            generated_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            log_path=str(self.args.file),
            window=self.window,
            counts={
                "rows": log_rows,
                "bad_rows": bad_rows,
                "calibration_rows": len(parts.calibration),
                "holdout_rows": len(parts.holdout),
                "holdout_rows_new_customers": sum(
                    1 for t in parts.holdout if t.customer_id in new_in_holdout),
                "after_rows": parts.after,
                "customers": len(stats),
                "engine_valued": len(valued),
                "evaluated": len(valued),
            },
            engine_model=doc,
            batch=batch,
            own_data_ll={"bgnbd": ll_bg, "gamma_gamma": ll_gg},
            metrics=table,
            frequency=freq,
            environment={
                "KAFKA_BOOTSTRAP_SERVERS": s.kafka_bootstrap_servers,
                "KAFKA_SECURITY_PROTOCOL": s.kafka_security.describe(),
                "REDIS_URL": _redact(s.redis_url),
                "CVM_PARTITIONS": str(s.partitions),
                "CVM_BASE_CURRENCY": s.base_currency,
            },
            notes=self.notes,
            lookup_check=self.lookup_check,
            run={
                "id": self.run_id,
                "app_id": s.app_id,
                "topics": sorted(topic_partitions(s)),
                "redis_url": _redact(s.redis_url),
                "worker_pid": self.worker_pid,
            },
        )

    def write(self, ev: Evaluation) -> None:
        d = self.report_dir
        plot_by_frequency(ev.frequency, list(ev.metrics["purchases"]),
                          d / "purchases_by_frequency.png",
                          title=f"Holdout ({ev.window.holdout_days:g} days) purchases by "
                                f"calibration frequency, {ev.counts['evaluated']:,} customers")
        (d / "report.md").write_text(render_report(ev))
        (d / "metrics.json").write_bytes(
            orjson.dumps(report_json(ev), option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
        )
        print(metrics_table(ev.metrics))
        print(f"\nreport: {d / 'report.md'}  plot: {d / 'purchases_by_frequency.png'}  "
              f"metrics: {d / 'metrics.json'}")

    # -- cleanup -----------------------------------------------------------------------------

    def stop_worker(self, timeout_s: float = 30.0) -> None:
        if self.worker is not None and self.worker.stop(timeout_s):
            self.say(f"the worker ignored SIGTERM for {timeout_s:g} s: SIGKILL")
        self.worker = None

    def delete_kafka_objects(self) -> None:
        from confluent_kafka.admin import AdminClient

        assert self.settings is not None
        s = self.settings
        admin = AdminClient(s.kafka_config())
        try:
            existing = set(admin.list_topics(timeout=10).topics)
        except Exception as exc:  # KafkaException: report and give up on the cleanup
            self.say(f"could not list topics to delete: {exc}")
            return
        # Ours, plus the internal topics Faust created under the app id (e.g. its assignor).
        names = sorted(n for n in existing
                       if n in self.topics_created or n.startswith(f"{s.app_id}-"))
        if names:
            for name, future in admin.delete_topics(names, request_timeout=30).items():
                try:
                    future.result(timeout=60)
                except Exception as exc:  # KafkaException
                    self.say(f"could not delete topic {name}: {exc}")
        try:
            for future in admin.delete_consumer_groups([s.app_id], request_timeout=30).values():
                future.result(timeout=30)
        except Exception as exc:  # KafkaException: the group may not exist
            if "GROUP_ID_NOT_FOUND" not in str(exc):
                self.say(f"could not delete consumer group {s.app_id}: {exc}")
        self.say(f"deleted {len(names)} topics of {s.app_id}")

    def cleanup(self, data_dir: str) -> None:
        self.stop_worker()
        if self.settings is not None and self.topics_created:
            self.delete_kafka_objects()
        if self.redis is not None:
            try:
                if self.redis.get(LOCK_KEY) == self.run_id.encode():
                    self.redis.delete(LOCK_KEY)
            finally:
                self.redis.close()
            self.redis = None
        shutil.rmtree(data_dir, ignore_errors=True)


def _bar(total: int, desc: str, show: bool) -> Any:
    from stream_app.replay import progress_bar

    return progress_bar(total, show, desc=desc, unit="row" if desc == "applied" else "customer")
