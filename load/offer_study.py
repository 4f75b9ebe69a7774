"""Offline evaluation of the next best offers on a simulated population with latent tastes.

The simulator (``SimConfig.product_categories``) gives every customer latent
category preferences, cross-category journeys and repurchase cycles. The
purchases before a cut-off day are replayed through the engine's own pure steps
(`stream_app.domain.products.apply`, `affinity.increments`, `affinity.merge`,
`offers.rank`, the code the worker runs); the categories each customer buys in
the `holdout_days` after the cut-off are the truth. The offers are scored by
hit-rate@5, recall@10 and NDCG@10 against:

* most-popular: the categories with the most buyers before the cut-off;
* item-kNN: `implicit`'s CosineRecommender fitted offline on the same history
  (customer x category order counts), a batch model with the whole matrix;
* ALS: `implicit`'s AlternatingLeastSquares (16 factors, 15 iterations) on the same matrix;
* true preferences: the simulator's latent preference vector of the customer (it knows the
  tastes, not when a repurchase is due).

The headline view scores what an offer may name (categories new to the customer, bought once,
or due: `eligible`) in every model's list and in the holdout; the report adds every category
bought and cross-sells only, and the engine's offers ranked by probability besides expected
margin. ``--tastes clusters`` runs the simulator's first, weakly personal taste model.

Run: ``python -m load.offer_study --out reports/offers`` from a checkout;
it writes ``offers.json``, ``offers.md`` and the chart ``offers.png``.
"""

from __future__ import annotations

import argparse
import math
import pathlib
import time
import warnings
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import numpy as np
import orjson

from load.simulator import CATEGORY_TASTES, CategoryModel, SimConfig, category_model, simulate
from stream_app.domain import affinity, offers, products
from stream_app.domain.events import MS_PER_DAY, Purchase, from_message
from stream_app.store import profiles as profile_codec

MODELS = ("engine offers", "engine offers by probability", "most popular", "item-kNN (implicit)",
          "ALS (implicit)", "true preferences")


def eligible(profile: products.Profile, day: int, due_share: float = 0.8) -> set[str]:
    """The categories of the customer's profile an offer may name again: bought once, or due
    (`due_share` of the typical interval passed), as `offers.rank` decides.

    >>> from types import MappingProxyType as M
    >>> from stream_app.domain.products import CategoryStats as C
    >>> p = products.Profile(M({"tea": C(orders=1, last_day=5), "milk": C(orders=3, last_day=95,
    ...     gap_days=20, gaps=2), "rice": C(orders=3, last_day=80, gap_days=20, gaps=2)}))
    >>> sorted(eligible(p, 100))  # milk: every 10 days, last 5 days ago; rice: 20 days ago
    ['rice', 'tea']
    """
    out = set()
    for name, c in profile.categories.items():
        every = products.interval(c)
        if every is None or products.days_since(c, day) >= due_share * every:
            out.add(name)
    return out


def _metrics(ranked: Sequence[str], relevant: set[str]) -> tuple[float, float, float]:
    hit5 = float(any(c in relevant for c in ranked[:5]))
    recall = sum(c in relevant for c in ranked[:10]) / len(relevant)
    dcg = sum(1 / math.log2(i + 2) for i, c in enumerate(ranked[:10]) if c in relevant)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(len(relevant), 10)))
    return hit5, recall, dcg / ideal


def study(n_customers: int = 6000, seed: int = 11, categories: int = 40, days: int = 365,
          cutoff_day: int = 270, holdout_days: int = 90, half_life_days: float = 180.0,
          period_days: int = 30, tastes_model: str = "retail") -> dict[str, Any]:
    """Run the study; returns the figures per model and the setup."""
    started = time.perf_counter()
    config = SimConfig(n_customers=n_customers, seed=seed, days=days,
                       product_categories=categories, category_tastes=tastes_model)
    model = category_model(config)
    names = model.names
    cutoff = config.start + timedelta(days=cutoff_day)
    end = cutoff + timedelta(days=holdout_days)
    profiles: dict[str, products.Profile] = {}
    rows: dict[int, dict[str, int]] = {}
    holdout: dict[str, set[str]] = {}
    purchases = 0
    for event in simulate(config):
        if event.topic_kind != "purchase" or not event.payload.get("items"):
            continue
        if event.occurred_at >= cutoff:
            if event.occurred_at < end and event.payload["kind"] == "order":
                holdout.setdefault(event.customer_id, set()).update(
                    x["category"] for x in event.payload["items"])
            continue
        p = from_message("purchase", event.payload)
        assert isinstance(p, Purchase)
        purchases += 1
        before = profiles.get(p.customer_id, products.Profile())
        after = products.apply(before, p)
        profiles[p.customer_id] = after
        lines = [(c, r, round(r * 0.3)) for c, r in zip(
            (x.category for x in p.items), products.line_revenues(p), strict=True)]
        period = affinity.period_of(p.occurred_at // MS_PER_DAY, period_days)
        counters = rows.setdefault(period, {})
        for name, delta in affinity.increments(before, after, lines, p.kind == "order"):
            counters[name] = counters.get(name, 0) + delta
    day = round(cutoff.timestamp() * 1000) // MS_PER_DAY
    table = affinity.merge(rows.items(), affinity.period_of(day, period_days), half_life_days,
                           period_days)

    # The batch baseline: implicit's item-kNN on the customer x category order counts.
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.nearest_neighbours import CosineRecommender
    from scipy.sparse import csr_matrix

    index = {c: j for j, c in enumerate(names)}
    users = sorted(profiles)
    matrix = np.zeros((len(users), len(names)), dtype=np.float32)
    for u, cid in enumerate(users):
        for c, stats in profiles[cid].categories.items():
            matrix[u, index[c]] = stats.orders
    items = csr_matrix(matrix)
    knn = CosineRecommender(K=len(names))
    with warnings.catch_warnings():
        # implicit converts its own item-item matrix and says so; nothing to act on here.
        warnings.simplefilter("ignore")
        knn.fit(items.tocsr(), show_progress=False)
        als = AlternatingLeastSquares(factors=16, iterations=15, regularization=0.05,
                                      random_state=seed)
        als.fit(items.tocsr(), show_progress=False)
    popular = sorted(names, key=lambda c: (-table.buyers.get(c, 0.0), c))

    views = ("eligible", "all", "cross_sell")
    sums = {v: {m: np.zeros(3) for m in MODELS} for v in views}
    counts = dict.fromkeys(views, 0)
    repurchased = relevant_total = 0
    rows_ = [(u, cid) for u, cid in enumerate(users) if holdout.get(cid)]
    ids = np.array([u for u, _ in rows_])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        recs, _ = knn.recommend(ids, items[ids], N=len(names), filter_already_liked_items=False)
        factored, _ = als.recommend(ids, items[ids], N=len(names),
                                    filter_already_liked_items=False)
    for (_, cid), knn_ids, als_ids in zip(rows_, recs, factored, strict=True):
        relevant = holdout[cid]
        profile = profiles[cid]
        bought = set(profile.categories)
        open_ = eligible(profile, day) | (set(names) - bought)
        repurchased += len(relevant & bought)
        relevant_total += len(relevant)
        i = int(cid[1:]) - 1
        engine = offers.rank(profile, table, None, "", 1.0, day, k=len(names))
        ranked = {
            "engine offers": [o.category for o in engine],
            "engine offers by probability": [o.category for o in sorted(
                engine, key=lambda o: (-o.probability, o.category))],
            "most popular": popular,
            "item-kNN (implicit)": [names[j] for j in knn_ids if j >= 0],
            "ALS (implicit)": [names[j] for j in als_ids if j >= 0],
            "true preferences": [names[j] for j in np.argsort(-model.preferences[i],
                                                              kind="stable")],
        }
        # eligible: what an offer may name (new to the customer, or bought once, or due);
        # all: every category bought in the holdout; cross_sell: categories new to the customer.
        kept = {"eligible": open_, "all": set(names), "cross_sell": set(names) - bought}
        for view in views:
            truth = relevant & kept[view]
            if not truth:
                continue
            for m in MODELS:
                sums[view][m] += _metrics([c for c in ranked[m] if c in kept[view]], truth)
            counts[view] += 1

    def table_of(sums: dict[str, np.ndarray], n: int) -> dict[str, dict[str, float]]:
        return {
            m: {"hit_rate@5": round(float(s[0] / max(n, 1)), 4),
                "recall@10": round(float(s[1] / max(n, 1)), 4),
                "ndcg@10": round(float(s[2] / max(n, 1)), 4)}
            for m, s in sums.items()
        }

    figures = table_of(sums["eligible"], counts["eligible"])
    sizes = sorted(len(profile_codec.encode(p).encode()) for p in profiles.values())
    engine, pop, batch = (figures[m]["hit_rate@5"] for m in
                          ("engine offers", "most popular", "item-kNN (implicit)"))
    tastes = model.preferences
    return {
        "setup": {"customers": n_customers, "seed": seed, "categories": categories,
                  "days": days, "cutoff_day": cutoff_day, "holdout_days": holdout_days,
                  "tastes": tastes_model, "history_purchases": purchases,
                  "evaluated_customers": counts["eligible"],
                  "half_life_days": half_life_days, "period_days": period_days},
        "population": {
            "categories_per_customer": round(float((1 / (tastes ** 2).sum(axis=1)).mean()), 2),
            "top5_taste_share": round(float(np.sort(tastes, axis=1)[:, -5:].sum(axis=1).mean()),
                                      3),
            "holdout_categories_per_customer": round(relevant_total / max(len(rows_), 1), 2),
            "holdout_share_bought_before": round(repurchased / max(relevant_total, 1), 3),
            **_journey_lift(model, table),
        },
        "figures": figures,
        "all_categories": {"evaluated_customers": counts["all"],
                           "figures": table_of(sums["all"], counts["all"])},
        "cross_sell": {"evaluated_customers": counts["cross_sell"],
                       "figures": table_of(sums["cross_sell"], counts["cross_sell"])},
        "profile_bytes": {"mean": round(sum(sizes) / max(len(sizes), 1)),
                          "p99": sizes[int(0.99 * (len(sizes) - 1))] if sizes else 0,
                          "max": sizes[-1] if sizes else 0},
        "engine_vs_most_popular": round(engine / pop, 3) if pop else None,
        "engine_vs_batch": round(engine / batch, 3) if batch else None,
        "engine_vs_als": (round(engine / figures["ALS (implicit)"]["hit_rate@5"], 3)
                          if figures["ALS (implicit)"]["hit_rate@5"] else None),
        "seconds": round(time.perf_counter() - started, 1),
    }


def _journey_lift(model: CategoryModel, table: affinity.Table) -> dict[str, float]:
    """Median lift, P(y | x, no y yet) / P(y), of each category's main journey target y and of
    the other pairs: how much a journey shows in what the engine learns."""
    main, other = [], []
    for i, x in enumerate(model.names):
        target = int(model.journeys[i].argmax())
        for j, y in enumerate(model.names):
            if j != i and table.popularity(y) > 0:
                lift = table.conditional(x, y) / table.popularity(y)
                (main if j == target else other).append(lift)
    return {"journey_lift": round(float(np.median(main)), 2) if main else 0.0,
            "other_pairs_lift": round(float(np.median(other)), 2) if other else 0.0}


def _chart(report: dict[str, Any], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = ("hit_rate@5", "recall@10", "ndcg@10")
    fig, ax = plt.subplots(figsize=(8, 4.6))
    width = 0.8 / len(MODELS)
    for k, m in enumerate(MODELS):
        values = [report["figures"][m][x] for x in metrics]
        ax.bar([i + k * width for i in range(len(metrics))], values, width, label=m)
    ax.set_xticks([i + width * (len(MODELS) - 1) / 2 for i in range(len(metrics))], metrics)
    ax.set_ylim(0, 1)
    setup = report["setup"]
    ax.set_title(f"What an offer may name: {setup['evaluated_customers']} customers' next "
                 f"{setup['holdout_days']} days ({setup['tastes']} tastes, seed {setup['seed']})",
                 fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _table(title: str, figures: dict[str, dict[str, float]]) -> list[str]:
    lines = [title, "", "| model | hit-rate@5 | recall@10 | NDCG@10 |", "|---|---|---|---|"]
    for m in MODELS:
        f = figures[m]
        lines.append(f"| {m} | {f['hit_rate@5']:.3f} | {f['recall@10']:.3f} | "
                     f"{f['ndcg@10']:.3f} |")
    return [*lines, ""]


def _markdown(report: dict[str, Any]) -> str:
    setup, every, cross = report["setup"], report["all_categories"], report["cross_sell"]
    lines = _table(f"What an offer may name ({setup['evaluated_customers']} customers; the "
                   "categories new to the customer, bought once, or due to be bought again, "
                   "in every model's list and in the holdout):", report["figures"])
    lines += _table(f"Every category bought in the holdout ({every['evaluated_customers']} "
                    "customers; the engine's list holds only what it may offer):",
                    every["figures"])
    lines += _table(f"Cross-sell only ({cross['evaluated_customers']} customers who bought a "
                    "category new to them; no model may offer what the customer already bought):",
                    cross["figures"])
    lines.append(f"Engine / most popular (hit-rate@5, what an offer may name): "
                 f"{report['engine_vs_most_popular']}; engine / item-kNN: "
                 f"{report['engine_vs_batch']}; engine / ALS: {report['engine_vs_als']}. "
                 f"Population: {report['population']}. "
                 f"Product profile per customer (bytes): {report['profile_bytes']}.")
    return "\n".join(lines) + "\n"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``python -m load.offer_study``."""
    p.add_argument("--customers", type=int, default=6000)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--categories", type=int, default=40)
    p.add_argument("--tastes", choices=CATEGORY_TASTES, default="retail",
                   help="the simulator's taste model (SimConfig.category_tastes)")
    p.add_argument("--out", default="reports/offers", help="folder for the report and chart")


def run(args: argparse.Namespace) -> int:
    """Run the study and write ``offers.json``, ``offers.md`` and ``offers.png`` to ``--out``."""
    report = study(n_customers=args.customers, seed=args.seed, categories=args.categories,
                   tastes_model=getattr(args, "tastes", "retail"))
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "offers.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    (out / "offers.md").write_text(_markdown(report))
    _chart(report, out / "offers.png")
    print(_markdown(report), end="")
    print(f"wrote {out / 'offers.json'}, {out / 'offers.md'}, {out / 'offers.png'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m load.offer_study", description=__doc__)
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
