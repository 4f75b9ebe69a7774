"""Draws from the BG/NBD and Gamma-Gamma processes, for tests, studies and examples."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from ._arrays import ClvInputError, FloatArray, SpendBasis, _array, _n_transactions
from .params import BgNbdParams, GammaGammaParams

__all__ = ["simulate_bgnbd", "simulate_gamma_gamma"]


def simulate_bgnbd(
    params: BgNbdParams, n_customers: int, T_days: ArrayLike, rng: np.random.Generator
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Draw (x, t_x, T) for ``n_customers`` from the BG/NBD process; deterministic given ``rng``.

    Each customer gets ``lambda ~ Gamma(r, rate alpha)`` and ``p ~ Beta(a, b)``, makes the first
    purchase at day 0, then buys at Poisson rate ``lambda`` and drops out right after each repeat
    purchase with probability ``p``. ``T_days`` is a scalar or one observation length per
    customer. Times are continuous; round them if you model whole days.

    Examples
    --------
    >>> bg = BgNbdParams(r=0.8, alpha=60.0, a=0.6, b=3.0)
    >>> x, t_x, T = simulate_bgnbd(bg, 3, 365.0, np.random.default_rng(0))
    >>> x.shape, bool(np.all(t_x <= T))
    ((3,), True)
    """
    T = np.broadcast_to(_array("T_days", T_days), (n_customers,)).astype(np.float64)
    if np.any(T < 0):
        raise ClvInputError("T_days must be >= 0")
    lam = rng.gamma(shape=params.r, scale=1.0 / params.alpha, size=n_customers)
    p = np.clip(rng.beta(params.a, params.b, size=n_customers), 1e-12, 1.0)
    purchases_before_dropout = rng.geometric(p)
    arrivals = rng.poisson(lam * T)
    x = np.minimum(arrivals, purchases_before_dropout)
    # Given N Poisson arrivals in (0, T], the x-th arrival time is T * Beta(x, N - x + 1).
    order = rng.beta(np.maximum(x, 1), np.maximum(arrivals - x + 1, 1))
    t_x = np.where(x > 0, T * order, 0.0)
    return x.astype(np.float64), t_x, T


def simulate_gamma_gamma(
    params: GammaGammaParams,
    frequency: ArrayLike,
    rng: np.random.Generator,
    *,
    spend_basis: SpendBasis = "repeat",
) -> FloatArray:
    """Draw each customer's mean spend over ``n`` transactions from the Gamma-Gamma model.

    ``nu ~ Gamma(q, rate v)`` per customer; transaction values ``~ Gamma(p, rate nu)``, so the
    mean of ``n`` of them is ``Gamma(p n, rate nu n)``. ``n`` follows ``spend_basis`` as in
    ``fit_gamma_gamma``; customers with ``n = 0`` get 0.0.

    Examples
    --------
    >>> gg = GammaGammaParams(p=6.0, q=4.0, v=15.0)
    >>> spend = simulate_gamma_gamma(gg, [0, 1, 5], np.random.default_rng(0))
    >>> spend[0], bool(np.all(spend[1:] > 0))
    (np.float64(0.0), True)
    """
    n = _n_transactions(np.atleast_1d(_array("frequency", frequency)), spend_basis)
    if np.any(n < 0):
        raise ClvInputError("frequency must be >= 0")
    nu = rng.gamma(shape=params.q, scale=1.0 / params.v, size=n.shape)
    has = n > 0
    safe_n = np.where(has, n, 1.0)
    mean = rng.gamma(shape=params.p * safe_n, scale=1.0 / (nu * safe_n))
    return np.where(has, mean, 0.0)
