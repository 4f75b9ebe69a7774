"""The linear churn model as arrays: a batch scored with one matrix-vector product.

The churn pipeline of `stream_app.domain.churn.make_model("logreg")` is a river
``StandardScaler`` followed by a ``LogisticRegression``. A loaded snapshot never learns
(the learner keeps its own copy), so its means, variances, weights and intercept are
read once into arrays and a batch's features become one matrix:
``P(churn) = sigmoid(((X - mean) / std) @ w + b)``, with river's conventions: a feature
of zero variance (or unseen) scales to 0, and the sigmoid saturates beyond +-30.
The same numbers as `churn.churn_probability` on each row, to rounding.

>>> from stream_app.domain.churn import churn_probability, make_model
>>> model = make_model("logreg")
>>> for days, y in ((3.0, 0), (200.0, 1), (10.0, 0), (150.0, 1)):
...     model.learn_one({"recency_days": days, "orders": 2.0}, y)
>>> scorer = LinearScorer.from_model(model)
>>> rows = [{"recency_days": 100.0, "orders": 2.0}, {"recency_days": 1.0, "orders": 5.0}]
>>> got = scorer.score_many(rows)
>>> bool(np.allclose(got, [churn_probability(model, x) for x in rows], rtol=1e-12))
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from river import compose, linear_model, optim, preprocessing

__all__ = ["LinearScorer"]

FloatArray = NDArray[np.float64]

# river's `utils.math.sigmoid` saturates beyond this logit.
_SATURATION = 30.0


@dataclass(frozen=True, eq=False)
class LinearScorer:
    """A fitted scaler and logistic regression, frozen as arrays over the known features."""

    index: Mapping[str, int]
    means: FloatArray
    stds: FloatArray
    weights: FloatArray
    intercept: float

    @classmethod
    def from_model(cls, model: Any) -> LinearScorer | None:
        """The arrays of a ``StandardScaler | LogisticRegression`` pipeline; None for another.

        >>> from stream_app.domain.churn import make_model
        >>> LinearScorer.from_model(make_model("hoeffding")) is None
        True
        """
        steps = list(model.steps.values()) if isinstance(model, compose.Pipeline) else []
        if len(steps) != 2:
            return None
        scaler, logreg = steps
        if not (
            type(scaler) is preprocessing.StandardScaler
            and scaler.with_std
            and scaler.window_size is None
            and type(logreg) is linear_model.LogisticRegression
            and type(logreg.loss) is optim.losses.Log
        ):
            return None
        weights = logreg._weights.to_dict()
        names = sorted(set(weights) | set(scaler.means))
        means = np.array([float(scaler.means.get(n, 0.0)) for n in names])
        variances = np.array([float(scaler.vars.get(n, 0.0)) for n in names])
        return cls(
            index={n: i for i, n in enumerate(names)},
            means=means,
            stds=np.sqrt(np.maximum(variances, 0.0)),
            weights=np.array([float(weights.get(n, 0.0)) for n in names]),
            intercept=float(logreg.intercept),
        )

    def logits(self, rows: Sequence[Mapping[str, float]]) -> FloatArray:
        """``(x - mean) / std @ w + b`` per row; a feature a row lacks contributes 0."""
        matrix = np.tile(self.means, (len(rows), 1))
        index = self.index
        for i, row in enumerate(rows):
            line = matrix[i]
            for name, value in row.items():
                j = index.get(name)
                if j is not None:
                    line[j] = value
        scaled = np.divide(matrix - self.means, self.stds, out=np.zeros_like(matrix),
                           where=self.stds > 0)
        return np.asarray(scaled @ self.weights + self.intercept, dtype=np.float64)

    def score_many(self, rows: Sequence[Mapping[str, float]]) -> FloatArray:
        """P(churn) of each row of features (0.5 where the logit is not a number)."""
        z = self.logits(rows)
        with np.errstate(over="ignore"):
            p = 1.0 / (1.0 + np.exp(-np.clip(z, -_SATURATION, _SATURATION)))
        p = np.where(z < -_SATURATION, 0.0, np.where(z > _SATURATION, 1.0, p))
        return np.asarray(np.where(np.isnan(z), 0.5, p), dtype=np.float64)

    def __call__(self, x: Mapping[str, float]) -> float:
        """P(churn) of one row: a `retention.Scorer`."""
        p = float(self.score_many([x])[0])
        return p if math.isfinite(p) else 0.5
