"""Gamma-Gamma: the spend per transaction, its likelihood, fit and conditional mean.

Fader & Hardie (2013) "The Gamma-Gamma model of monetary value".
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from ._arrays import (
    ClvInputError,
    FloatArray,
    FloatOrArray,
    SpendBasis,
    _array,
    _is_scalar,
    _n_transactions,
    _out,
    _weights,
    special,
)
from ._fitting import _log_init, _minimise, fit_result
from .params import FitResult, GammaGammaParams

__all__ = ["expected_spend", "fit_gamma_gamma", "gamma_gamma_log_likelihood",
           "posterior_mean_spend"]


def _spend_inputs(
    frequency: ArrayLike, mean_spend: ArrayLike, spend_basis: SpendBasis
) -> tuple[FloatArray, FloatArray]:
    freq, spend = np.broadcast_arrays(
        _array("frequency", frequency), _array("mean_spend", mean_spend)
    )
    if np.any(freq < 0):
        raise ClvInputError(f"frequency: {int(np.sum(freq < 0))} negative value(s)")
    if np.any(spend < 0):
        raise ClvInputError(f"mean_spend: {int(np.sum(spend < 0))} negative value(s)")
    return _n_transactions(freq, spend_basis), spend


def _gg_terms(p: float, q: float, v: float, n: FloatArray, m: FloatArray) -> FloatArray:
    pn = p * n
    return np.asarray(
        special.gammaln(pn + q)
        - special.gammaln(pn)
        - special.gammaln(q)
        + q * math.log(v)
        + (pn - 1.0) * np.log(m)
        + pn * np.log(n)
        - (pn + q) * np.log(v + m * n),
        dtype=np.float64,
    )


def gamma_gamma_log_likelihood(
    params: GammaGammaParams,
    frequency: ArrayLike,
    mean_spend: ArrayLike,
    *,
    spend_basis: SpendBasis = "repeat",
) -> FloatArray:
    """Per-customer Gamma-Gamma log-density of the mean spend over ``n`` transactions.

    ``log f = log Gamma(pn+q) - log Gamma(pn) - log Gamma(q) + q log v + (pn-1) log m
    + pn log n - (pn+q) log(v + m n)`` (Fader & Hardie 2013), ``n = frequency`` for
    ``spend_basis="repeat"`` and ``frequency + 1`` for ``"all"``. Customers with ``n = 0``
    observed nothing and contribute 0; ``mean_spend = 0`` with ``n > 0`` is outside the support
    and gives ``-inf``.

    Examples
    --------
    >>> gg = GammaGammaParams(p=6.25, q=3.74, v=15.44)
    >>> gamma_gamma_log_likelihood(gg, [0, 1, 4], [0.0, 30.0, 30.0]).round(4)
    array([ 0.    , -3.9485, -3.7886])
    """
    n, m = _spend_inputs(frequency, mean_spend, spend_basis)
    has = n > 0
    with np.errstate(all="ignore"):
        ll = _gg_terms(params.p, params.q, params.v, np.where(has, n, 1.0), np.where(has, m, 1.0))
    ll = np.where(has & (m <= 0), -np.inf, ll)
    return np.asarray(np.where(has, ll, 0.0), dtype=np.float64)


def _gg_value_and_grad(
    log_params: FloatArray, n: FloatArray, m: FloatArray, w: FloatArray
) -> tuple[float, FloatArray]:
    p, q, v = np.exp(log_params)
    pn = p * n
    log_vmn = np.log(v + m * n)
    dg = special.digamma
    d_p = n * (dg(pn + q) - dg(pn) + np.log(m) + np.log(n) - log_vmn)
    d_q = dg(pn + q) - dg(q) + math.log(v) - log_vmn
    d_v = q / v - (pn + q) / (v + m * n)
    grad = np.array([p * w @ d_p, q * w @ d_q, v * w @ d_v])
    return float(w @ _gg_terms(p, q, v, n, m)), grad


def fit_gamma_gamma(
    frequency: ArrayLike,
    mean_spend: ArrayLike,
    weights: ArrayLike | None = None,
    init: GammaGammaParams | None = None,
    *,
    spend_basis: SpendBasis = "repeat",
    l2_penalty: float = 0.0,
    max_iterations: int = 1000,
) -> FitResult[GammaGammaParams]:
    """Fit Gamma-Gamma parameters by maximum likelihood on customers with spend information.

    Only rows with ``n > 0`` transactions in the mean (``frequency > 0`` for
    ``spend_basis="repeat"``) and ``mean_spend > 0`` are used; ``n`` in the result counts them.
    L-BFGS-B on ``(log p, log q, log(v / m_bar))`` with ``m_bar`` the weighted mean spend (so
    the currency unit does not matter), bounds ``[-12, 12]``, optional ``l2_penalty`` as in
    ``fit_bgnbd``; ``converged=False`` with a message instead of exceptions or NaN.

    Examples
    --------
    >>> from stream_app.domain.clv.simulate import simulate_gamma_gamma
    >>> rng = np.random.default_rng(3)
    >>> true = GammaGammaParams(p=6.0, q=4.0, v=15.0)
    >>> freq = rng.integers(1, 8, size=4_000)
    >>> fit = fit_gamma_gamma(freq, simulate_gamma_gamma(true, freq, rng))
    >>> fit.converged, round(fit.params.p)
    (True, 6)
    """
    n, m = _spend_inputs(frequency, mean_spend, spend_basis)
    n, m = n.ravel(), m.ravel()
    w = _weights(weights, n.shape)
    informative = (n > 0) & (w > 0)
    zero_spend = float(w[informative & (m <= 0)].sum())
    used = informative & (m > 0)
    n, m, w = n[used], m[used], w[used]
    start = init or GammaGammaParams(p=1.0, q=2.0, v=1.0)
    total = float(w.sum())
    if total == 0.0:
        return FitResult(start, 0.0, 0.0, False, 0, "no customers with spend information")
    scale = float(w @ m) / total
    theta0 = (
        np.log([1.0, 2.0, 1.0]) if init is None else _log_init((init.p, init.q, init.v), 2, scale)
    )
    m_scaled = m / scale

    def value_and_grad(theta: FloatArray) -> tuple[float, FloatArray]:
        return _gg_value_and_grad(theta, n, m_scaled, w)

    theta, nit, ok, message = _minimise(value_and_grad, theta0, total, l2_penalty, max_iterations)
    p, q, v_scaled = np.exp(theta)
    params = GammaGammaParams(p=float(p), q=float(q), v=float(v_scaled * scale))
    with np.errstate(all="ignore"):
        ll = float(w @ _gg_terms(params.p, params.q, params.v, n, m))
    note = f" ({zero_spend:g} customer(s) with zero mean spend excluded)" if zero_spend else ""
    return fit_result(params, theta, ("p", "q", "v"), (nit, ok, message), ll, total, [], note)


def expected_spend(
    params: GammaGammaParams,
    frequency: ArrayLike,
    mean_spend: ArrayLike,
    *,
    spend_basis: SpendBasis = "repeat",
) -> FloatOrArray:
    """Conditional expected mean transaction value E[M | n, mean_spend] (Gamma-Gamma).

    ``(v + n m) p / (p n + q - 1)``: a weighted average of the population mean
    ``p v / (q - 1)`` and the observed ``mean_spend`` with weight ``p n / (p n + q - 1)``.
    A customer with ``n = 0`` gets the population mean. Where ``p n + q <= 1`` the posterior
    mean is infinite and ``inf`` is returned (only possible for ``q <= 1``).

    Examples
    --------
    >>> gg = GammaGammaParams(p=6.25, q=3.74, v=15.44)
    >>> expected_spend(gg, [0, 1, 10], [0.0, 20.0, 20.0]).round(2)
    array([35.22, 24.64, 20.64])
    """
    scalar = _is_scalar(frequency, mean_spend)
    n, m = _spend_inputs(frequency, mean_spend, spend_basis)
    return _out(posterior_mean_spend(params, n, m), scalar)


def posterior_mean_spend(params: GammaGammaParams, n: FloatArray, m: FloatArray) -> FloatArray:
    """`expected_spend` of ``n`` transactions of mean spend ``m``, arrays already checked
    (finite, ``n >= 0``, ``m >= 0``): what a valuation calls on the statistics it checked.

    >>> gg = GammaGammaParams(p=6.25, q=3.74, v=15.44)
    >>> posterior_mean_spend(gg, np.array([1.0, 10.0]), np.array([20.0, 20.0])).round(2)
    array([24.64, 20.64])
    """
    p, q, v = params.p, params.q, params.v
    denom = p * n + q - 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.where(denom > 0, (v + n * m) * p / np.where(denom > 0, denom, 1.0), np.inf)
    return np.asarray(value, dtype=np.float64)
