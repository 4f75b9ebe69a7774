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
* true preferences: the simulator's latent preference vector of the customer.

Run: ``cvm evaluate-offers --out reports/offers`` (or ``python -m load.offer_study``);
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

from load.simulator import SimConfig, category_model, simulate
from stream_app.domain import affinity, offers, products
from stream_app.domain.events import MS_PER_DAY, Purchase, from_message

MODELS = ("engine offers", "most popular", "item-kNN (implicit)", "true preferences")


def _metrics(ranked: Sequence[str], relevant: set[str]) -> tuple[float, float, float]:
    hit5 = float(any(c in relevant for c in ranked[:5]))
    recall = sum(c in relevant for c in ranked[:10]) / len(relevant)
    dcg = sum(1 / math.log2(i + 2) for i, c in enumerate(ranked[:10]) if c in relevant)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(len(relevant), 10)))
    return hit5, recall, dcg / ideal


def study(n_customers: int = 6000, seed: int = 11, categories: int = 40, days: int = 365,
          cutoff_day: int = 270, holdout_days: int = 90, half_life_days: float = 180.0,
          period_days: int = 30) -> dict[str, Any]:
    """Run the study; returns the figures per model and the setup."""
    started = time.perf_counter()
    config = SimConfig(n_customers=n_customers, seed=seed, days=days,
                       product_categories=categories)
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
    popular = sorted(names, key=lambda c: (-table.buyers.get(c, 0.0), c))

    scores = {m: np.zeros(3) for m in MODELS}
    new_scores = {m: np.zeros(3) for m in MODELS}
    evaluated = new_evaluated = 0
    rows_ = [(u, cid) for u, cid in enumerate(users) if holdout.get(cid)]
    ids = np.array([u for u, _ in rows_])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        recs, _ = knn.recommend(ids, items[ids], N=10, filter_already_liked_items=False)
        fresh, _ = knn.recommend(ids, items[ids], N=10, filter_already_liked_items=True)
    for (_, cid), knn_ids, knn_new in zip(rows_, recs, fresh, strict=True):
        relevant = holdout[cid]
        bought = set(profiles[cid].categories)
        i = int(cid[1:]) - 1
        engine = offers.rank(profiles[cid], table, None, "", 1.0, day, k=len(names))
        tastes = [names[j] for j in np.argsort(-model.preferences[i])]
        ranked = {
            "engine offers": [o.category for o in engine[:10]],
            "most popular": popular[:10],
            "item-kNN (implicit)": [names[j] for j in knn_ids if j >= 0],
            "true preferences": tastes[:10],
        }
        for m in MODELS:
            scores[m] += _metrics(ranked[m], relevant)
        evaluated += 1
        # Cross-sell only: categories new to the customer, every model's list without
        # what the customer bought already.
        new = relevant - bought
        if new:
            crossed = {
                "engine offers": [o.category for o in engine if o.kind != "repurchase"][:10],
                "most popular": [c for c in popular if c not in bought][:10],
                "item-kNN (implicit)": [names[j] for j in knn_new if j >= 0],
                "true preferences": [c for c in tastes if c not in bought][:10],
            }
            for m in MODELS:
                new_scores[m] += _metrics(crossed[m], new)
            new_evaluated += 1

    def table_of(sums: dict[str, np.ndarray], n: int) -> dict[str, dict[str, float]]:
        return {
            m: {"hit_rate@5": round(float(s[0] / max(n, 1)), 4),
                "recall@10": round(float(s[1] / max(n, 1)), 4),
                "ndcg@10": round(float(s[2] / max(n, 1)), 4)}
            for m, s in sums.items()
        }

    figures = table_of(scores, evaluated)
    cross_sell = table_of(new_scores, new_evaluated)
    sizes = sorted(len(products.encode(p).encode()) for p in profiles.values())
    engine, pop, batch = (figures[m]["hit_rate@5"] for m in MODELS[:3])
    return {
        "setup": {"customers": n_customers, "seed": seed, "categories": categories,
                  "days": days, "cutoff_day": cutoff_day, "holdout_days": holdout_days,
                  "history_purchases": purchases, "evaluated_customers": evaluated,
                  "half_life_days": half_life_days, "period_days": period_days},
        "figures": figures,
        "cross_sell": {"evaluated_customers": new_evaluated, "figures": cross_sell},
        "profile_bytes": {"mean": round(sum(sizes) / max(len(sizes), 1)),
                          "p99": sizes[int(0.99 * (len(sizes) - 1))] if sizes else 0,
                          "max": sizes[-1] if sizes else 0},
        "engine_vs_most_popular": round(engine / pop, 3) if pop else None,
        "engine_vs_batch": round(engine / batch, 3) if batch else None,
        "seconds": round(time.perf_counter() - started, 1),
    }


def _chart(report: dict[str, Any], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = ("hit_rate@5", "recall@10", "ndcg@10")
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(MODELS)
    for k, m in enumerate(MODELS):
        values = [report["figures"][m][x] for x in metrics]
        ax.bar([i + k * width for i in range(len(metrics))], values, width, label=m)
    ax.set_xticks([i + width * (len(MODELS) - 1) / 2 for i in range(len(metrics))], metrics)
    ax.set_ylim(0, 1)
    ax.set_title(f"Next best offers on {report['setup']['evaluated_customers']} customers' "
                 f"next {report['setup']['holdout_days']} days")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _markdown(report: dict[str, Any]) -> str:
    lines = ["All categories bought in the holdout:", "",
             "| model | hit-rate@5 | recall@10 | NDCG@10 |", "|---|---|---|---|"]
    for m in MODELS:
        f = report["figures"][m]
        lines.append(f"| {m} | {f['hit_rate@5']:.3f} | {f['recall@10']:.3f} | "
                     f"{f['ndcg@10']:.3f} |")
    cross = report["cross_sell"]
    lines += ["", f"Cross-sell only ({cross['evaluated_customers']} customers who bought a "
              "category new to them; no model may offer what the customer already bought):", "",
              "| model | hit-rate@5 | recall@10 | NDCG@10 |", "|---|---|---|---|"]
    for m in MODELS:
        f = cross["figures"][m]
        lines.append(f"| {m} | {f['hit_rate@5']:.3f} | {f['recall@10']:.3f} | "
                     f"{f['ndcg@10']:.3f} |")
    lines.append("")
    lines.append(f"Engine / most popular (hit-rate@5): {report['engine_vs_most_popular']}; "
                 f"engine / item-kNN: {report['engine_vs_batch']}. Product profile per "
                 f"customer (bytes): {report['profile_bytes']}.")
    return "\n".join(lines) + "\n"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``cvm evaluate-offers``."""
    p.add_argument("--customers", type=int, default=6000)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--categories", type=int, default=40)
    p.add_argument("--out", default="reports/offers", help="folder for the report and chart")


def run(args: argparse.Namespace) -> int:
    """Run the study and write ``offers.json``, ``offers.md`` and ``offers.png`` to ``--out``."""
    report = study(n_customers=args.customers, seed=args.seed, categories=args.categories)
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
