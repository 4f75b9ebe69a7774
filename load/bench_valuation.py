"""CPU per customer of a valuation under the value models that fits actually give.

A simulated population is fitted as the worker's fit timer does (`valuation.fit_population`
on the aggregated statistics) at two ages: young (a few weeks of history, few dropouts
seen yet: BG/NBD's a and b often run into the thousands) and mature (the whole stream).
Every customer of the mature population is then valued (`valuation.value_arrays`, with a
cost to serve, over the default horizon) under the default model and under each fit, in
chunks of 50 as the rescoring timers do and one at a time as a lookup does. The clock is
`time.perf_counter`, best of three, in this one process; the ratios to the default model
in the same run are what to compare between machines.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from load.simulator import SimConfig, simulate
from stream_app.domain.valuation import ValueModel, fit_population, value_arrays

__all__ = ["main", "measure_valuation", "section"]

#: Customers a rescoring timer values at once (`rescore.rescore_all`'s chunk).
CHUNK = 50


@dataclass(frozen=True)
class _Population:
    x: np.ndarray
    t_x: np.ndarray
    T: np.ndarray
    mean_spend: np.ndarray


def _orders(config: SimConfig) -> dict[str, list[tuple[int, float]]]:
    """Each customer's (day, amount) orders, days counted from the first event."""
    events = [e for e in simulate(config)
              if e.topic_kind == "purchase" and e.payload.get("kind") == "order"]
    start = min(e.occurred_at for e in events)
    orders: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for e in events:
        orders[e.customer_id].append(((e.occurred_at - start).days, float(e.payload["amount"])))
    return orders


def _population(orders: dict[str, list[tuple[int, float]]], day: int) -> _Population:
    """The BG/NBD statistics (purchase days, as the ledger counts them) at `day`."""
    rows = []
    for history in orders.values():
        seen = [(d, a) for d, a in history if d <= day]
        if not seen:
            continue
        days = sorted({d for d, _ in seen})
        rows.append((len(days) - 1, days[-1] - days[0], day - days[0],
                     sum(a for _, a in seen) / len(seen)))
    x, t_x, T, spend = (np.array(c, dtype=np.float64) for c in zip(*rows, strict=True))
    return _Population(x, t_x, T, spend)


def _fit(orders: dict[str, list[tuple[int, float]]], day: int) -> ValueModel:
    """What the fit timer stores at `day` (the default model if the fit does not converge)."""
    repeat: dict[tuple[int, int, int], int] = defaultdict(int)
    spend: dict[tuple[int, float], int] = defaultdict(int)
    for history in orders.values():
        seen = [(d, a) for d, a in history if d <= day]
        if not seen:
            continue
        days = sorted({d for d, _ in seen})
        repeat[(len(days) - 1, days[-1] - days[0], days[0])] += 1
        spend[(len(days), round(sum(a for _, a in seen) / len(days), 2))] += 1
    fit = fit_population([(*k, n) for k, n in repeat.items()],
                         [(*k, n) for k, n in spend.items()], day)
    default = ValueModel()
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


def measure_valuation(customers: int = 600, days: int = 300, young_day: int = 60,
                      seed: int = 31, horizon_days: float = 365.0,
                      one_at_a_time: int = 100) -> dict[str, Any]:
    """µs per customer of a valuation under the default model, a young and a mature fit."""
    orders = _orders(SimConfig(n_customers=customers, days=days,
                               acquisition_days=max(days // 3, 1), seed=seed))
    pop = _population(orders, days)
    n = pop.x.size
    margin, cost = np.full(n, 0.3), np.full(n, 0.01)

    def chunked(model: ValueModel) -> None:
        for lo in range(0, n, CHUNK):
            sl = slice(lo, lo + CHUNK)
            value_arrays(model, pop.x[sl], pop.t_x[sl], pop.T[sl], pop.mean_spend[sl],
                         margin[sl], cost[sl], horizon_days)

    def singly(model: ValueModel) -> None:
        for i in range(min(one_at_a_time, n)):
            sl = slice(i, i + 1)
            value_arrays(model, pop.x[sl], pop.t_x[sl], pop.T[sl], pop.mean_spend[sl],
                         margin[sl], cost[sl], horizon_days)

    models = {"default": ValueModel(), f"fit at day {young_day}": _fit(orders, young_day),
              f"fit at day {days}": _fit(orders, days)}
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
    return {"customers": n, "days": days, "young_day": young_day, "seed": seed,
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
        f"days with a cost to serve (`load/bench_valuation.py`), under the default model and "
        f"the models fitted at day {results['young_day']} and day {results['days']}; µs of "
        f"CPU per customer, best of three, and the ratio to the default model:",
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
    parser.add_argument("--young-day", type=int, default=60)
    parser.add_argument("--seed", type=int, default=31)
    args = parser.parse_args(argv)
    result = measure_valuation(args.customers, args.days, args.young_day, args.seed)
    print("\n".join(section(result)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
