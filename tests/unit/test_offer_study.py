"""The offer study runs the engine's offers and its baselines on a small population."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from load.offer_study import MODELS, run, study
from load.simulator import (
    CategoryModel,
    SimConfig,
    SimulationError,
    _due_repurchase,
    category_model,
    simulate,
)


def test_latent_categories_only_when_asked() -> None:
    plain = {x["category"] for e in simulate(SimConfig(n_customers=40, seed=2))
             if e.topic_kind == "purchase" for x in e.payload.get("items") or ()}
    assert all("-" not in c for c in plain)
    config = SimConfig(n_customers=40, seed=2, product_categories=16)
    model = category_model(config)
    assert model.preferences.shape == (40, 16)
    assert model.preferences.sum(axis=1) == pytest.approx(1.0)
    tasted = {x["category"] for e in simulate(config)
              if e.topic_kind == "purchase" for x in e.payload.get("items") or ()}
    assert tasted <= set(model.names) and len(tasted) > 8


def test_study_scores_every_model(tmp_path: Path) -> None:
    pytest.importorskip("implicit")
    report = study(n_customers=600, seed=3, categories=20)
    assert set(report["figures"]) == set(MODELS)
    for figures in report["figures"].values():
        assert all(0 <= v <= 1 for v in figures.values())
    # The true tastes beat guessing the best sellers for everyone.
    assert (report["figures"]["true preferences"]["hit_rate@5"]
            > report["figures"]["most popular"]["hit_rate@5"])
    assert report["figures"]["engine offers"]["hit_rate@5"] > 0.3
    args = argparse.Namespace(customers=300, seed=3, categories=20, out=str(tmp_path))
    assert run(args) == 0
    assert {p.name for p in tmp_path.iterdir()} == {"offers.json", "offers.md", "offers.png"}


def test_retail_tastes_are_heterogeneous_and_the_clusters_stay_reachable() -> None:
    retail = category_model(SimConfig(n_customers=2000, seed=5, product_categories=40))
    clusters = category_model(SimConfig(n_customers=2000, seed=5, product_categories=40,
                                        category_tastes="clusters"))

    def spread(p: np.ndarray) -> float:  # the mean effective number of categories
        return float((1 / (p ** 2).sum(axis=1)).mean())

    assert retail.preferences.shape == clusters.preferences.shape == (2000, 40)
    assert retail.preferences.sum(axis=1) == pytest.approx(1.0)
    # A retail customer spreads over about 3 of the 40 categories; the clusters over about 11.
    assert spread(retail.preferences) < 4 < 8 < spread(clusters.preferences)
    assert retail.segments is not None and set(retail.segments) == set(range(6))
    assert clusters.cycles is None and clusters.segments is None
    # The segments differ: each one's mean tastes put a different category first.
    firsts = {int(retail.preferences[retail.segments == g].mean(axis=0).argmax())
              for g in range(6)}
    assert len(firsts) >= 4
    assert retail.cycles is not None
    consumables = retail.cycles[np.isfinite(retail.cycles)]
    assert 5 <= consumables.size <= 25 and ((consumables >= 20) & (consumables <= 75)).all()
    with pytest.raises(SimulationError):
        SimConfig(category_tastes="uniform")


def test_the_most_overdue_consumable_is_bought_again() -> None:
    model = CategoryModel(("a", "b", "c"), np.full((2, 3), 1 / 3), np.zeros((3, 3)),
                          np.zeros(3), cycles=np.array([10.0, 30.0, np.inf]), due_share=1.0)
    days = np.array([[5.0, 0.0, 0.0],        # a: 1.5 cycles ago, b: 1.0 cycle ago
                     [12.0, -np.inf, 0.0]])  # a: 0.8 of a cycle ago, b: never bought
    first = np.array([2, 2])
    picked = _due_repurchase(days, model, np.array([20.0, 20.0]), np.random.default_rng(0),
                             first)
    assert picked.tolist() == [0, 2]


def test_a_simulated_consumable_comes_back_in_its_cycle() -> None:
    config = SimConfig(n_customers=300, seed=4, product_categories=12)
    model = category_model(config)
    assert model.cycles is not None
    days: dict[tuple[str, str], set[int]] = {}
    for e in simulate(config):
        if e.topic_kind == "purchase" and e.payload["kind"] == "order":
            for x in e.payload.get("items") or ():
                days.setdefault((e.customer_id, x["category"]), set()).add(
                    round(e.occurred_at.timestamp() / 86_400))

    def again(c: str) -> float:  # the share of the category's buyers who bought it again
        return float(np.mean([len(v) > 1 for (_, k), v in days.items() if k == c]))

    consumable = [again(c) for c, d in zip(model.names, model.cycles, strict=True)
                  if np.isfinite(d)]
    durable = [again(c) for c, d in zip(model.names, model.cycles, strict=True)
               if not np.isfinite(d)]
    assert consumable and durable
    # 0.64 of a consumable's buyers buy it again, 0.41 of a durable's (drawn again from tastes).
    assert np.mean(consumable) > 1.3 * np.mean(durable)
