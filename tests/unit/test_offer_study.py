"""The offer study runs the engine's offers and its baselines on a small population."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from load.offer_study import MODELS, run, study
from load.simulator import SimConfig, category_model, simulate


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
