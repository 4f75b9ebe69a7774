"""CPU per customer of a valuation under the value models that fits actually give.

A simulated population is replayed through the domain's ledger (`churn_study.domain_events`,
`ledger.apply_event`) and fitted as a worker's fit reads its statistics tables
(`backfill.fit_model`) at several ages: while few dropouts have been seen, BG/NBD's a and
b can run into the tens of thousands; at the end of the stream they settle. Every customer
of the mature population is then valued (`valuation.value_arrays` on `valuation.history`,
with their own margin and cost to serve, over the default horizon) under the default model
and under each fit, in chunks of 50 as the rescoring timers do and one at a time as a lookup
does. The clock is `time.perf_counter`, best of three, in this one process; the ratios to the
default model in the same run are what to compare between machines.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from load.churn_study import domain_events
from load.simulator import SimConfig
from stream_app.backfill import fit_model
from stream_app.domain.events import MS_PER_DAY
from stream_app.domain.ledger import CustomerState, apply_event
from stream_app.domain.valuation import ValueModel, history, value_arrays
from stream_app.settings import Settings

__all__ = ["main", "measure_valuation", "section"]

#: Customers a rescoring timer values at once (`rescore.rescore_all`'s chunk).
CHUNK = 50


def _replay(config: SimConfig, days: Sequence[int]) -> dict[int, tuple[int, list[CustomerState]]]:
    """The population's states (and that time, in ms) `days` after its first event."""
    cuts = sorted(days)
    states: dict[str, CustomerState] = {}
    out: dict[int, tuple[int, list[CustomerState]]] = {}
    start: int | None = None
    for event, source in domain_events(config):
        start = event.occurred_at if start is None else start
        while cuts and event.occurred_at >= start + cuts[0] * MS_PER_DAY:
            out[cuts[0]] = (start + cuts[0] * MS_PER_DAY, list(states.values()))
            cuts.pop(0)
        cid = event.customer_id
        states[cid] = apply_event(states.get(cid, CustomerState(cid)), event, source,
                                  Settings.default_margin_rate)
    for day in cuts:
        out[day] = ((start or 0) + day * MS_PER_DAY, list(states.values()))
    return out


def _fit(states: Sequence[CustomerState], as_of: int) -> ValueModel:
    """The model a worker's fit stores at `as_of` (the default model if it does not converge)."""
    default = ValueModel()
    fit, _ = fit_model(states, as_of, default)
    if not fit.bg.converged:
        return default
    gg = fit.gg.params if fit.gg is not None and fit.gg.converged else default.gg
    return ValueModel(bg=fit.bg.params, gg=gg, version=1)


def _best_us(run: Callable[[], object], customers: int, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        began = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - began)
    return round(best * 1e6 / customers, 1)


def measure_valuation(customers: int = 600, days: int = 300,
                      fit_days: Sequence[int] = (40, 60, 160), seed: int = 31,
                      horizon_days: float = 365.0, one_at_a_time: int = 100) -> dict[str, Any]:
    """µs per customer of a valuation under the default model and the fits at `fit_days`
    and at `days` (the whole stream)."""
    ages = sorted({*fit_days, days})
    replayed = _replay(SimConfig(n_customers=customers, days=days,
                                 acquisition_days=max(days // 3, 1), seed=seed), ages)
    as_of, mature = replayed[days]
    stats = [h for h in (history(state, as_of) for state in mature) if h is not None]
    x, t_x, T, spend, margin, cost = (
        np.array(column, dtype=np.float64) for column in zip(
            *((h.x, h.t_x, h.T, h.mean_spend, h.margin_rate, h.cost_per_day) for h in stats),
            strict=True))
    n = x.size

    def chunked(model: ValueModel) -> None:
        for lo in range(0, n, CHUNK):
            sl = slice(lo, lo + CHUNK)
            value_arrays(model, x[sl], t_x[sl], T[sl], spend[sl], margin[sl], cost[sl],
                         horizon_days)

    def singly(model: ValueModel) -> None:
        for i in range(min(one_at_a_time, n)):
            sl = slice(i, i + 1)
            value_arrays(model, x[sl], t_x[sl], T[sl], spend[sl], margin[sl], cost[sl],
                         horizon_days)

    models = {"default": ValueModel(),
              **{f"fit at day {day}": _fit(replayed[day][1], replayed[day][0]) for day in ages}}
    rows = []
    for name, model in models.items():
        rows.append({
            "model": name, "a": model.bg.a, "b": model.bg.b,
            "us_per_customer_chunked": _best_us(lambda m=model: chunked(m), n),
            "us_per_customer_one_at_a_time": _best_us(lambda m=model: singly(m),
                                                      min(one_at_a_time, n)),
        })
    base = rows[0]
    for row in rows:
        for kind in ("chunked", "one_at_a_time"):
            row[f"vs_default_{kind}"] = round(
                row[f"us_per_customer_{kind}"] / base[f"us_per_customer_{kind}"], 2)
    return {"customers": n, "days": days, "fit_days": ages, "seed": seed,
            "horizon_days": horizon_days, "rows": rows}


def section(results: dict[str, Any] | None) -> Sequence[str]:
    """The report's section for `measure_valuation`'s results (none without them)."""
    if not results:
        return []
    lines = [
        "## Valuation under fitted models",
        "",
        f"The {results['customers']:,} customers of a simulated population (seed "
        f"{results['seed']}) at day {results['days']}, valued over {results['horizon_days']:g} "
        f"days with their margin and cost to serve (`load/bench_valuation.py`), under the "
        f"default model and the models fitted at days "
        f"{', '.join(str(d) for d in results['fit_days'])} (`backfill.fit_model`, the worker's "
        f"statistics); µs of CPU per customer, best of three, and the ratio to the default "
        f"model:",
        "",
        "| model | a | b | chunks of 50 (µs) | ratio | one at a time (µs) | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        lines.append(
            f"| {r['model']} | {r['a']:.4g} | {r['b']:.4g} | {r['us_per_customer_chunked']} | "
            f"{r['vs_default_chunked']} | {r['us_per_customer_one_at_a_time']} | "
            f"{r['vs_default_one_at_a_time']} |")
    return [*lines, ""]


def main(argv: Sequence[str] | None = None) -> int:
    """Print the valuation stage's section (the `make bench` stage alone, in seconds)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m load.bench_valuation",
                                     description=main.__doc__)
    parser.add_argument("--customers", type=int, default=600)
    parser.add_argument("--days", type=int, default=300)
    parser.add_argument("--fit-days", default="40,60,160",
                        help="comma separated days to fit at, besides the last")
    parser.add_argument("--seed", type=int, default=31)
    args = parser.parse_args(argv)
    result = measure_valuation(args.customers, args.days,
                               [int(d) for d in args.fit_days.split(",") if d], args.seed)
    print("\n".join(section(result)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
