"""Input checks, array helpers and the lazily imported `scipy.special` shared by the models."""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray


class _LazySpecial:
    """`scipy.special`, imported at first use: a lookup answered from the stored record, or
    ``cvm --help``, then never pays for it. Each function is kept on the instance once read."""

    def __getattr__(self, name: str) -> Any:
        from scipy import special as module

        value = getattr(module, name)
        setattr(self, name, value)
        return value


special: Any = _LazySpecial()

FloatArray = NDArray[np.float64]
FloatOrArray = float | FloatArray
SpendBasis = Literal["repeat", "all"]

# Element budget of one (customers x nodes or steps) block, to bound the memory of a batch.
_CHUNK_ELEMENTS = 2_000_000


class ClvInputError(ValueError):
    """Invalid input to a CLV function (negative counts, ``t_x > T``, non-finite values...)."""


def _check_positive(owner: str, **values: float) -> None:
    for name, value in values.items():
        if not (math.isfinite(value) and value > 0):
            raise ClvInputError(f"{owner}: {name} must be finite and > 0, got {value!r}")


def _array(name: str, value: ArrayLike) -> FloatArray:
    arr = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ClvInputError(f"{name}: {int(np.sum(~np.isfinite(arr)))} non-finite value(s)")
    return arr


def _is_scalar(*values: ArrayLike) -> bool:
    return all(np.ndim(v) == 0 for v in values)


def _out(value: FloatArray, scalar: bool) -> FloatOrArray:
    return float(value) if scalar else value


def _history(
    x: ArrayLike, t_x: ArrayLike, T: ArrayLike, *extra: ArrayLike
) -> tuple[FloatArray, ...]:
    """Validate and broadcast (x, t_x, T, *extra)."""
    xa, ta, Ta = _array("x", x), _array("t_x", t_x), _array("T", T)
    if np.any(xa < 0):
        raise ClvInputError(f"x: {int(np.sum(xa < 0))} negative repeat count(s)")
    if np.any(ta < 0):
        raise ClvInputError(f"t_x: {int(np.sum(ta < 0))} negative value(s)")
    arrays = np.broadcast_arrays(xa, ta, Ta, *(np.asarray(e, dtype=np.float64) for e in extra))
    xa, ta, Ta = arrays[0], arrays[1], arrays[2]
    slack = 1e-9 * np.maximum(Ta, 1.0)
    if np.any(ta > Ta + slack):
        raise ClvInputError(f"t_x > T for {int(np.sum(ta > Ta + slack))} customer(s)")
    ta = np.minimum(ta, Ta)
    return (xa, ta, Ta, *arrays[3:])


def check_history(
    x: ArrayLike, t_x: ArrayLike, T: ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Validated 1-d float arrays of (x, t_x, T); raises `ClvInputError` on bad statistics.

    Arrays that are already 1-d float64 of one length (a valuation's batch) are checked in
    a few whole-array operations; any doubt, and the element-wise checks name the problem.

    >>> check_history([1, 0], [5.0, 0.0], [10.0, 3.0])[1]
    array([5., 0.])
    >>> check_history(np.array([1.0]), np.array([7.0]), np.array([5.0]))
    Traceback (most recent call last):
    ...
    stream_app.domain.clv._arrays.ClvInputError: t_x > T for 1 customer(s)
    """
    if (
        isinstance(x, np.ndarray) and isinstance(t_x, np.ndarray) and isinstance(T, np.ndarray)
        and x.dtype == t_x.dtype == T.dtype == np.float64
        and x.ndim == 1 and x.shape == t_x.shape == T.shape and x.size > 0
    ):
        with np.errstate(all="ignore"):
            # Each test is False for a NaN, and the sums are finite only if every element
            # is (or overflowed: then the element-wise checks below decide).
            ok = (
                float(np.minimum(x, t_x).min()) >= 0.0
                and float((T + 1e-9 * np.maximum(T, 1.0) - t_x).min()) >= 0.0
                and math.isfinite(float(x.sum()) + float(T.sum()))
            )
        if ok:
            return x, np.minimum(t_x, T), T
    xa, ta, Ta = _history(x, t_x, T)
    return xa.ravel(), ta.ravel(), Ta.ravel()


def _weights(weights: ArrayLike | None, shape: tuple[int, ...]) -> FloatArray:
    if weights is None:
        return np.ones(shape)
    w = np.broadcast_to(_array("weights", weights), shape).astype(np.float64)
    if np.any(w < 0):
        raise ClvInputError(f"weights: {int(np.sum(w < 0))} negative value(s)")
    return w


def _n_transactions(frequency: FloatArray, spend_basis: SpendBasis) -> FloatArray:
    if spend_basis == "repeat":
        return frequency
    if spend_basis == "all":
        return frequency + 1.0
    raise ClvInputError(f"spend_basis must be 'repeat' or 'all', got {spend_basis!r}")
