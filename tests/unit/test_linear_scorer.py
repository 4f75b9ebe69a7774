"""The linear churn model scored as one matrix-vector product gives river's numbers.

`LinearScorer.score_many` must equal `churn.churn_probability` (river's own
``predict_proba_one``) row by row, to 1e-9 relative, for models trained on random
examples, rows that lack features or carry unknown ones, constant features (zero
variance) and saturated logits; `retention.score_batch` must hand `decide` the same
features and probabilities as scoring each customer alone.
"""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from stream_app.domain import churn
from stream_app.domain.events import MS_PER_DAY
from stream_app.domain.ledger import CustomerState
from stream_app.domain.retention import score_batch
from stream_app.domain.scoring import LinearScorer

NAMES = ("recency_days", "orders", "p_alive", "constant", "spend")
value = st.floats(-1e4, 1e4, allow_nan=False)
row = st.dictionaries(st.sampled_from([*NAMES, "unknown"]), value, max_size=6)


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-15)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(row, st.integers(0, 1)), min_size=1, max_size=40),
       st.lists(row, min_size=1, max_size=20))
def test_score_many_equals_river_row_by_row(
    train: list[tuple[dict[str, float], int]], rows: list[dict[str, float]]
) -> None:
    model = churn.make_model("logreg")
    for x, y in train:
        model.learn_one({**x, "constant": 1.0}, y)
    scorer = LinearScorer.from_model(model)
    assert scorer is not None
    got = scorer.score_many(rows)
    for x, p in zip(rows, got.tolist(), strict=True):
        assert close(p, churn.churn_probability(model, x)), (x, p)
        assert close(scorer(x), p)


def test_saturated_logits_score_like_river() -> None:
    model = churn.make_model("logreg")
    for i in range(200):
        model.learn_one({"recency_days": float(i)}, int(i > 100))
    scorer = LinearScorer.from_model(model)
    assert scorer is not None
    rows = [{"recency_days": v} for v in (-1e9, -50.0, 0.0, 100.0, 1e9)]
    assert scorer.score_many(rows).tolist() == [churn.churn_probability(model, x) for x in rows]


def test_other_models_are_scored_row_by_row() -> None:
    assert LinearScorer.from_model(churn.make_model("arf")) is None


def test_score_batch_gives_decide_what_scoring_alone_gives() -> None:
    model = churn.make_model("logreg")
    day = MS_PER_DAY
    states = [
        CustomerState(f"C{i}", orders=i + 1, revenue_c=1000 * (i + 1),
                      purchase_days=tuple(range(20_000, 20_000 + 3 * (i + 1), 3)),
                      first_event=20_000 * day, last_event=(20_000 + 3 * i) * day)
        for i in range(5)
    ]
    rows = [(s, None, (20_030 + i) * day) for i, s in enumerate(states)]
    for s, _, at in rows:
        model.learn_one(churn.features(s, None, at), int(s.orders > 2))
    scorer = LinearScorer.from_model(model)
    assert scorer is not None
    batch = score_batch(rows, scorer)
    alone = score_batch(rows, lambda x: churn.churn_probability(model, x))
    assert [x for x, _ in batch] == [x for x, _ in alone]
    for (_, p), (_, q) in zip(batch, alone, strict=True):
        assert p is not None and q is not None and close(p, q)


def test_the_sigmoid_saturates_where_rivers_does() -> None:
    import numpy as np
    from river.utils.math import sigmoid

    one = LinearScorer({"z": 0}, np.zeros(1), np.ones(1), np.ones(1), 0.0)
    logits = [-40.0, -30.5, -29.5, -25.0, -5.0, 0.0, 25.0, 29.5, 30.5, 40.0]
    got = one.score_many([{"z": z} for z in logits]).tolist()
    for z, p in zip(logits, got, strict=True):
        assert close(p, float(sigmoid(z))), (z, p)
