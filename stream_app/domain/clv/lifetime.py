"""Discounted CLV over a horizon: expected margin minus the cost to serve, step by step."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._arrays import (
    _CHUNK_ELEMENTS,
    ClvInputError,
    FloatArray,
    FloatOrArray,
    SpendBasis,
    _history,
    _is_scalar,
    _out,
)
from .bgnbd import _alive_expectations, _p_alive_now
from .gamma_gamma import expected_spend
from .params import BgNbdParams, GammaGammaParams

__all__ = ["DAYS_PER_YEAR", "HorizonTerms", "clv", "horizon_terms"]

#: Days in a year, used to turn an annual discount rate into a daily one.
DAYS_PER_YEAR = 365.25


def clv(
    bg: BgNbdParams,
    gg: GammaGammaParams,
    x: ArrayLike,
    t_x: ArrayLike,
    T: ArrayLike,
    mean_spend: ArrayLike,
    horizon_days: float,
    margin_rate: float,
    annual_discount_rate: float,
    expected_cost_to_serve_per_day: float = 0.0,
    step_days: float = 7.0,
    *,
    spend_basis: SpendBasis = "repeat",
) -> FloatOrArray:
    """Discounted expected margin over ``horizon_days`` minus the discounted cost to serve.

    The horizon is cut into steps of ``step_days`` (the last one possibly shorter). For step
    ``k`` covering ``(s_{k-1}, s_k]`` days after ``T``::

        margin_k = [E purchases up to s_k - E purchases up to s_{k-1}]   (exact BG/NBD)
                   * expected_spend * margin_rate * D(m_k)
        cost_k   = cost_per_day * (s_k - s_{k-1}) * P(alive at T + m_k) * D(m_k)

    with ``m_k`` the step midpoint and ``D(d) = (1 + annual_discount_rate) ** (-d / 365.25)``,
    i.e. continuous discounting at ``ln(1 + annual rate)`` per year, so one year always
    discounts by exactly the annual rate whatever the step; evaluating at the midpoint makes
    the sum a midpoint rule with O(step^2) error. ``clv = sum(margin_k - cost_k)``.

    The cost to serve is weighted by the probability of being alive at each future day (which
    falls over the horizon, since BG/NBD customers drop out after purchases) rather than charged
    to every customer: a customer who has silently churned generates no orders, contacts or
    deliveries to serve. Costs a dead customer still causes (e.g. a fixed account fee) belong
    outside this function. Spend and purchases are independent in the Gamma-Gamma model, so the
    expected margin is the product of the two expectations.

    Examples
    --------
    >>> bg = BgNbdParams(r=0.243, alpha=4.414 * 7, a=0.793, b=2.426)
    >>> gg = GammaGammaParams(p=6.25, q=3.74, v=15.44)
    >>> value = clv(bg, gg, x=2, t_x=213.0, T=272.0, mean_spend=40.0, horizon_days=365.0,
    ...             margin_rate=0.3, annual_discount_rate=0.1)
    >>> round(value, 2)
    17.56
    >>> clv(bg, gg, [0, 2], [0.0, 213.0], [272.0, 272.0], [0.0, 40.0], 365.0, 0.3, 0.1,
    ...     expected_cost_to_serve_per_day=0.01).round(2)
    array([-0.83, 15.41])
    """
    for name, number in (
        ("horizon_days", horizon_days),
        ("margin_rate", margin_rate),
        ("annual_discount_rate", annual_discount_rate),
        ("expected_cost_to_serve_per_day", expected_cost_to_serve_per_day),
        ("step_days", step_days),
    ):
        if not math.isfinite(number):
            raise ClvInputError(f"{name} must be finite, got {number!r}")
    if horizon_days < 0 or step_days <= 0 or annual_discount_rate <= -1:
        raise ClvInputError(
            "need horizon_days >= 0, step_days > 0 and annual_discount_rate > -1, got "
            f"{horizon_days!r}, {step_days!r}, {annual_discount_rate!r}"
        )
    scalar = _is_scalar(x, t_x, T, mean_spend)
    xa, ta, Ta, spend = _history(x, t_x, T, mean_spend)
    spend_value = np.asarray(expected_spend(gg, xa, spend, spend_basis=spend_basis))
    log_discount_per_day = math.log1p(annual_discount_rate) / DAYS_PER_YEAR
    n_steps = math.ceil(horizon_days / step_days - 1e-9) if horizon_days > 0 else 0
    with np.errstate(all="ignore"):
        alive_now = _p_alive_now(bg, xa, ta, Ta)
    # The steps are a trailing axis: one evaluation over (customers, steps), chunked by rows.
    starts = np.arange(n_steps) * step_days
    ends = np.minimum(np.arange(1, n_steps + 1) * step_days, horizon_days)
    mids = 0.5 * (starts + ends)
    discount = np.exp(-log_discount_per_day * mids)
    x_f, T_f, alive_f = xa.ravel(), Ta.ravel(), alive_now.ravel()
    discounted_purchases = np.zeros(x_f.size)
    discounted_cost = np.zeros(x_f.size)
    rows = max(1, _CHUNK_ELEMENTS // (4 * max(n_steps, 1)))
    for lo in range(0, x_f.size if n_steps else 0, rows):
        sl = slice(lo, lo + rows)
        x_c, T_c, alive_c = x_f[sl, None], T_f[sl, None], alive_f[sl, None]
        with np.errstate(all="ignore"):
            if margin_rate != 0.0:  # at margin 0 the purchases term is multiplied by 0
                cumulative = alive_c * _alive_expectations(
                    bg, ends[None, :], x_c, T_c, survival=False
                )
                # cumulative is non-decreasing in exact arithmetic; its running maximum absorbs
                # rounding, so step k adds max(cumulative_k - max of the earlier steps, 0).
                running = np.maximum.accumulate(np.maximum(cumulative, 0.0), axis=1)
                discounted_purchases[sl] = np.diff(running, axis=1, prepend=0.0) @ discount
            if expected_cost_to_serve_per_day != 0.0:
                alive = alive_c * _alive_expectations(
                    bg, mids[None, :], x_c, T_c, survival=True
                )
                discounted_cost[sl] = (alive * (ends - starts)) @ discount
    purchases_sum = discounted_purchases.reshape(xa.shape)
    cost_sum = discounted_cost.reshape(xa.shape)
    with np.errstate(invalid="ignore"):
        margin = np.where(
            (purchases_sum > 0) & (margin_rate != 0.0),
            purchases_sum * spend_value * margin_rate,
            0.0,
        )
    value = margin - expected_cost_to_serve_per_day * cost_sum
    return _out(np.asarray(value, dtype=np.float64), scalar)


@dataclass(frozen=True)
class HorizonTerms:
    """What a valuation needs of BG/NBD over one horizon, for a batch of customers.

    ``discounted_purchases`` is the sum of `clv`'s ``margin_k`` without the spend and margin
    factors, ``discounted_alive_days`` the sum of ``cost_k`` without the cost per day (0 for
    the customers not asked for), so that ``clv(..., margin_rate=m, cost_per_day=c) ==
    where(dp > 0, dp * expected_spend * m, 0) - c * dad`` element-wise.
    """

    p_alive: FloatArray
    expected_purchases: FloatArray
    discounted_purchases: FloatArray
    discounted_alive_days: FloatArray


def horizon_terms(
    bg: BgNbdParams,
    x: FloatArray,
    t_x: FloatArray,
    T: FloatArray,
    horizon_days: float,
    annual_discount_rate: float,
    step_days: float = 7.0,
    costed: NDArray[np.bool_] | None = None,
) -> HorizonTerms:
    """P(alive), expected purchases and the discounted sums of `clv` in one pass over a batch.

    The same numbers as `p_alive`, `expected_purchases` and `clv` called separately, with
    P(alive) computed once and the expected purchases over the horizon read off the last
    step of the CLV grid (its end is the horizon), so the hypergeometric function is
    evaluated once per customer and step boundary, in one call over the whole batch
    (customers x steps). ``costed`` marks the customers whose discounted alive-days are
    wanted (those with a cost to serve); the others get 0. Inputs are 1-d arrays of
    validated statistics (``0 <= t_x <= T``), as `stream_app.domain.valuation` builds them.

    Examples
    --------
    >>> from stream_app.domain.clv.bgnbd import expected_purchases
    >>> bg = BgNbdParams(r=0.243, alpha=4.414 * 7, a=0.793, b=2.426)
    >>> terms = horizon_terms(bg, np.array([2.0]), np.array([213.0]), np.array([272.0]),
    ...                       365.0, 0.1, costed=np.array([True]))
    >>> purchases = expected_purchases(bg, 365.0, 2, 213.0, 272.0)
    >>> bool(abs(terms.expected_purchases[0] - purchases) <= 1e-12 * purchases)
    True
    """
    if not (math.isfinite(horizon_days) and horizon_days >= 0 and step_days > 0):
        raise ClvInputError(f"need a finite horizon_days >= 0 and step_days > 0, got "
                            f"{horizon_days!r}, {step_days!r}")
    n = x.size
    n_steps = math.ceil(horizon_days / step_days - 1e-9) if horizon_days > 0 else 0
    with np.errstate(all="ignore"):
        alive_now = _p_alive_now(bg, x, t_x, T)
        if n_steps == 0 or n == 0:
            return HorizonTerms(alive_now, np.zeros(n), np.zeros(n), np.zeros(n))
        ends, mids, widths, discount = _grid(horizon_days, step_days, annual_discount_rate)
        rows = max(1, _CHUNK_ELEMENTS // (4 * n_steps))
        if n <= rows:  # one block: the batch as it is
            purchases, discounted_purchases = _purchase_terms(bg, ends, discount, x, T, alive_now)
        else:
            purchases, discounted_purchases = np.zeros(n), np.zeros(n)
            for lo in range(0, n, rows):
                sl = slice(lo, lo + rows)
                purchases[sl], discounted_purchases[sl] = _purchase_terms(
                    bg, ends, discount, x[sl], T[sl], alive_now[sl])
        discounted_cost = np.zeros(n)
        if costed is not None and costed.any():
            idx = np.flatnonzero(costed)
            for lo in range(0, idx.size, rows):
                sel = idx[lo:lo + rows]
                alive = alive_now[sel, None] * _alive_expectations(
                    bg, mids[None, :], x[sel, None], T[sel, None], survival=True
                )
                discounted_cost[sel] = (alive * widths) @ discount
    return HorizonTerms(alive_now, purchases, discounted_purchases, discounted_cost)


def _purchase_terms(
    bg: BgNbdParams, ends: FloatArray, discount: FloatArray, x: FloatArray, T: FloatArray,
    alive_now: FloatArray,
) -> tuple[FloatArray, FloatArray]:
    """Expected purchases over the horizon and their discounted sum, for one block."""
    conditional = _alive_expectations(bg, ends[None, :], x[:, None], T[:, None], survival=False)
    purchases = alive_now * conditional[:, -1]
    cumulative = alive_now[:, None] * conditional
    running = np.maximum.accumulate(np.maximum(cumulative, 0.0), axis=1)
    steps = np.empty_like(running)  # the increments of each step: the running sum's diff
    steps[:, 0] = running[:, 0]
    np.subtract(running[:, 1:], running[:, :-1], out=steps[:, 1:])
    return purchases, steps @ discount


@functools.lru_cache(maxsize=32)
def _grid(
    horizon_days: float, step_days: float, annual_discount_rate: float
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """The CLV steps of a horizon: their ends, midpoints, widths and discount factors
    (see `clv`), computed once per horizon and kept read-only."""
    n_steps = math.ceil(horizon_days / step_days - 1e-9)
    log_discount_per_day = math.log1p(annual_discount_rate) / DAYS_PER_YEAR
    starts = np.arange(n_steps) * step_days
    ends = np.minimum(np.arange(1, n_steps + 1) * step_days, horizon_days)
    mids = 0.5 * (starts + ends)
    discount = np.exp(-log_discount_per_day * mids)
    grid = (ends, mids, ends - starts, discount)
    for a in grid:
        a.setflags(write=False)
    return grid
