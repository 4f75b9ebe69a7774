"""Predictive customer lifetime value: BG/NBD purchases, Gamma-Gamma spend, discounted CLV.

Pure domain code: no IO, no clock, no environment. Every function takes plain numbers or numpy
arrays and returns new values.

Time unit: **days**, everywhere. Per customer the models use the streaming sufficient statistics

``x``
    number of repeat purchases: distinct purchase days minus 1 (0 for a one-time buyer);
``t_x``
    days between the first and the last purchase (0 when ``x == 0``);
``T``
    days between the first purchase and the as-of time (``0 <= t_x <= T``);
``mean_spend``
    mean value of the transactions counted by ``spend_basis`` (see below).

A rate parameter such as BG/NBD ``alpha`` therefore has the unit "days": parameters published in
weeks map to days by ``alpha_days = 7 * alpha_weeks`` (``r``, ``a`` and ``b`` are unit-free).

``spend_basis`` (Gamma-Gamma)
    ``"repeat"`` (default, the literature's choice): ``mean_spend`` averages the ``x`` repeat
    transactions and customers with ``x == 0`` carry no spend information. ``"all"``: it
    averages all ``x + 1`` transactions, the first one included, so every customer informs the
    fit. Use the basis your ledger actually computes; the models then average over
    ``n = x`` or ``n = x + 1`` transactions respectively.

References: Fader, Hardie & Lee (2005) "Counting your customers the easy way: an alternative to
the Pareto/NBD model", Marketing Science 24(2); Fader, Hardie & Lee (2005) "RFM and CLV: using
iso-value curves for customer base analysis", JMR 42(4); Fader & Hardie (2013) "The Gamma-Gamma
model of monetary value".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import numpy as np
from numpy.typing import ArrayLike, NDArray


class _LazySpecial:
    """`scipy.special`, imported at first use: a lookup answered from the stored record, or
    ``cvm --help``, then never pays for it."""

    def __getattr__(self, name: str) -> Any:
        from scipy import special as module

        globals()["special"] = module
        return getattr(module, name)


special: Any = _LazySpecial()

# scipy.optimize (a second or so to import) is imported by the fits only, not by lookups.

__all__ = [
    "DAYS_PER_YEAR",
    "BgNbdParams",
    "ClvInputError",
    "FitResult",
    "GammaGammaParams",
    "SpendBasis",
    "bgnbd_log_likelihood",
    "HorizonTerms",
    "clv",
    "expected_purchases",
    "expected_purchases_new",
    "expected_spend",
    "fit_bgnbd",
    "fit_gamma_gamma",
    "gamma_gamma_log_likelihood",
    "horizon_terms",
    "p_alive",
    "simulate_bgnbd",
    "simulate_gamma_gamma",
]

FloatArray = NDArray[np.float64]
FloatOrArray = float | FloatArray
SpendBasis = Literal["repeat", "all"]

#: Days in a year, used to turn an annual discount rate into a daily one.
DAYS_PER_YEAR = 365.25

# Bounds of the optimiser on the (scaled) log-parameters: exp(+-12) spans 6e-6 .. 1.6e5.
_LOG_BOUND = 12.0
# A fitted log-parameter this close to a bound counts as "at the bound".
_BOUND_TOL = 1e-3
# Below this |1 - (1-z)^(a-1) 2F1(...)| the closed form has lost too many digits to cancellation.
_CANCELLATION_FLOOR = 1e-7
# Quadrature tails are cut where the integrand is below exp(-_TAIL) of its scale.
_TAIL = 45.0
_MAX_NODES = 20_000
_CHUNK_ELEMENTS = 2_000_000


class ClvInputError(ValueError):
    """Invalid input to a CLV function (negative counts, ``t_x > T``, non-finite values...)."""


@dataclass(frozen=True)
class BgNbdParams:
    """BG/NBD parameters: purchase rate ~ Gamma(r, rate alpha [days]), dropout p ~ Beta(a, b).

    Examples
    --------
    >>> weeks = BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426)  # FHL (2005), CDNOW
    >>> days = BgNbdParams(r=weeks.r, alpha=7 * weeks.alpha, a=weeks.a, b=weeks.b)
    >>> round(days.alpha, 3)
    30.898
    """

    r: float
    alpha: float
    a: float
    b: float

    def __post_init__(self) -> None:
        _check_positive("BgNbdParams", r=self.r, alpha=self.alpha, a=self.a, b=self.b)


@dataclass(frozen=True)
class GammaGammaParams:
    """Gamma-Gamma parameters: spend ~ Gamma(p, rate nu), nu ~ Gamma(q, rate v [currency]).

    Examples
    --------
    >>> gg = GammaGammaParams(p=6.25, q=3.74, v=15.44)
    >>> round(gg.p * gg.v / (gg.q - 1), 2)  # population mean spend per transaction
    35.22
    """

    p: float
    q: float
    v: float

    def __post_init__(self) -> None:
        _check_positive("GammaGammaParams", p=self.p, q=self.q, v=self.v)


P = TypeVar("P", BgNbdParams, GammaGammaParams)


@dataclass(frozen=True)
class FitResult(Generic[P]):
    """Outcome of a maximum-likelihood fit; ``converged`` is False rather than an exception.

    ``log_likelihood`` is the weighted total log-likelihood at ``params`` (without the L2
    penalty); ``n`` is the number of customers that informed the fit (the sum of their weights);
    ``message`` explains a ``converged=False``.
    """

    params: P
    log_likelihood: float
    n: float
    converged: bool
    iterations: int
    message: str


def _check_positive(owner: str, **values: float) -> None:
    for name, value in values.items():
        if not (math.isfinite(value) and value > 0):
            raise ClvInputError(f"{owner}: {name} must be finite and > 0, got {value!r}")


# --------------------------------------------------------------------------- input handling


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

    >>> check_history([1, 0], [5.0, 0.0], [10.0, 3.0])[1]
    array([5., 0.])
    """
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


# --------------------------------------------------------------------------- BG/NBD likelihood


def _bgnbd_terms(
    r: float, alpha: float, a: float, b: float, x: FloatArray, t_x: FloatArray, T: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray, NDArray[np.bool_]]:
    """Return (log A, log of the 'alive' term, log of the 'dropped' term, repeat mask)."""
    repeat = x > 0
    x_m1 = np.where(repeat, x - 1.0, 0.0)  # keeps betaln finite where the term is masked
    log_a = special.gammaln(r + x) - special.gammaln(r) + r * math.log(alpha)
    log_b_ab = special.betaln(a, b)
    alive = special.betaln(a, b + x) - log_b_ab - (r + x) * np.log(alpha + T)
    dropped = special.betaln(a + 1.0, b + x_m1) - log_b_ab - (r + x) * np.log(alpha + t_x)
    dropped = np.where(repeat, dropped, -np.inf)
    return log_a, alive, dropped, repeat


def bgnbd_log_likelihood(
    params: BgNbdParams, x: ArrayLike, t_x: ArrayLike, T: ArrayLike
) -> FloatArray:
    """Per-customer BG/NBD log-likelihood (Fader, Hardie & Lee 2005, eq. 6), in log space.

    ``log L = log Gamma(r+x) - log Gamma(r) + r log(alpha)
    + logaddexp(log B(a, b+x) - log B(a, b) - (r+x) log(alpha+T),
    [x>0] (log B(a+1, b+x-1) - log B(a, b) - (r+x) log(alpha+t_x)))``,
    which stays finite for large ``x`` and ``T`` where the product form overflows.

    Examples
    --------
    >>> bg = BgNbdParams(r=0.25, alpha=30.0, a=0.8, b=2.5)
    >>> bgnbd_log_likelihood(bg, [0, 3], [0.0, 100.0], [200.0, 200.0]).round(4)
    array([ -0.5092, -17.0641])
    """
    xa, ta, Ta = _history(x, t_x, T)
    log_a, alive, dropped, _ = _bgnbd_terms(params.r, params.alpha, params.a, params.b, xa, ta, Ta)
    return np.asarray(log_a + np.logaddexp(alive, dropped), dtype=np.float64)


def _bgnbd_value_and_grad(
    log_params: FloatArray, x: FloatArray, t_x: FloatArray, T: FloatArray, w: FloatArray
) -> tuple[float, FloatArray]:
    """Weighted total log-likelihood and its gradient in (log r, log alpha, log a, log b)."""
    r, alpha, a, b = np.exp(log_params)
    log_a, alive, dropped, repeat = _bgnbd_terms(r, alpha, a, b, x, t_x, T)
    mix = np.logaddexp(alive, dropped)
    w_alive = np.exp(alive - mix)
    w_drop = np.where(repeat, np.exp(dropped - mix), 0.0)
    x_m1 = np.where(repeat, x - 1.0, 0.0)
    log_at, log_atx = np.log(alpha + T), np.log(alpha + t_x)
    dg = special.digamma
    d_r = dg(r + x) - dg(r) + math.log(alpha) - w_alive * log_at - w_drop * log_atx
    d_alpha = r / alpha - (r + x) * (w_alive / (alpha + T) + w_drop / (alpha + t_x))
    base_a = -(dg(a) - dg(a + b))
    base_b = -(dg(b) - dg(a + b))
    d_a = w_alive * (dg(a) - dg(a + b + x) + base_a) + w_drop * (
        dg(a + 1.0) - dg(a + b + x) + base_a
    )
    d_b = w_alive * (dg(b + x) - dg(a + b + x) + base_b) + w_drop * (
        dg(b + x_m1) - dg(a + b + x) + base_b
    )
    grad = np.array([r * w @ d_r, alpha * w @ d_alpha, a * w @ d_a, b * w @ d_b])
    return float(w @ (log_a + mix)), grad


# --------------------------------------------------------------------------- fitting machinery


def _minimise(
    value_and_grad: Any,
    theta0: FloatArray,
    total_weight: float,
    l2_penalty: float,
    max_iterations: int,
) -> tuple[FloatArray, int, bool, str]:
    """L-BFGS-B on the mean negative log-likelihood plus ``l2_penalty * |theta|^2``."""

    def objective(theta: FloatArray) -> tuple[float, FloatArray]:
        with np.errstate(all="ignore"):
            ll, grad = value_and_grad(theta)
        value = -ll / total_weight + l2_penalty * float(theta @ theta)
        gradient = -grad / total_weight + 2.0 * l2_penalty * theta
        if not (math.isfinite(value) and np.all(np.isfinite(gradient))):
            return 1e300, np.zeros_like(theta)  # pushes the line search back; never NaN
        return value, gradient

    bounds = [(-_LOG_BOUND, _LOG_BOUND)] * theta0.size
    from scipy import optimize

    try:
        res = optimize.minimize(
            objective,
            np.clip(theta0, -_LOG_BOUND, _LOG_BOUND),
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"maxiter": max_iterations, "ftol": 1e-13, "gtol": 1e-8},
        )
    except (ArithmeticError, ValueError) as exc:  # defensive: report, do not raise
        return theta0, 0, False, f"optimiser failed: {exc}"
    theta = np.asarray(res.x, dtype=np.float64)
    if not (np.all(np.isfinite(theta)) and math.isfinite(float(res.fun)) and res.fun < 1e299):
        return theta0, int(res.nit), False, "optimiser produced a non-finite objective"
    ok = bool(res.success)
    if not ok and "ABNORMAL" in str(res.message):
        # The line search found no decrease: at an optimum whose gradient is just
        # above gtol this is convergence, not failure (seen on 20,000-row fits).
        _, gradient = objective(theta)
        ok = float(np.max(np.abs(gradient))) < 1e-6
    return theta, int(res.nit), ok, str(res.message)


def _at_bound(theta: FloatArray, names: tuple[str, ...]) -> list[str]:
    return [n for n, t in zip(names, theta, strict=True) if abs(t) > _LOG_BOUND - _BOUND_TOL]


def _log_init(values: tuple[float, ...], scale_index: int, scale: float) -> FloatArray:
    theta = np.log(np.asarray(values, dtype=np.float64))
    theta[scale_index] -= math.log(scale)
    return theta


# --------------------------------------------------------------------------- BG/NBD fit


def fit_bgnbd(
    x: ArrayLike,
    t_x: ArrayLike,
    T: ArrayLike,
    weights: ArrayLike | None = None,
    init: BgNbdParams | None = None,
    *,
    l2_penalty: float = 0.0,
    max_iterations: int = 1000,
) -> FitResult[BgNbdParams]:
    """Fit BG/NBD parameters by maximum likelihood; numerical trouble gives converged=False.

    The optimiser (L-BFGS-B with the analytic gradient) works on
    ``theta = (log r, log(alpha / T_bar), log a, log b)`` with ``T_bar`` the weighted mean of
    ``T``, bounded to ``[-12, 12]``: parameters stay positive and the problem is unit-free (a fit
    in weeks and one in days take the same steps). The objective is the weighted mean negative
    log-likelihood per customer plus ``l2_penalty * |theta|^2`` (0 by default), which shrinks
    towards ``r = a = b = 1``, ``alpha = T_bar``.

    ``weights`` are counts of identical ``(x, t_x, T)`` rows, so a million customers can be
    fitted from a compressed table (e.g. ``T`` and ``t_x`` in whole days). ``converged`` is
    False, with a message, when the optimiser stops abnormally, a parameter ends on a bound
    (the maximum is not interior, e.g. no purchase heterogeneity), or nobody made a repeat
    purchase (then ``a`` and ``b`` are not identified).

    Examples
    --------
    >>> rng = np.random.default_rng(7)
    >>> true = BgNbdParams(r=0.8, alpha=60.0, a=0.6, b=3.0)
    >>> fit = fit_bgnbd(*simulate_bgnbd(true, 5_000, 540.0, rng))
    >>> fit.converged, round(fit.params.r, 1), fit.n
    (True, 0.8, 5000.0)
    """
    xa, ta, Ta = _history(x, t_x, T)
    xa, ta, Ta = xa.ravel(), ta.ravel(), Ta.ravel()
    w = _weights(weights, xa.shape)
    used = w > 0
    xa, ta, Ta, w = xa[used], ta[used], Ta[used], w[used]
    start = init or BgNbdParams(r=1.0, alpha=1.0, a=1.0, b=1.0)
    total = float(w.sum())
    if total == 0.0:
        return FitResult(start, 0.0, 0.0, False, 0, "no customers with positive weight")
    scale = float(w @ Ta) / total
    scale = scale if scale > 0 else 1.0
    if init is None:
        theta0 = np.zeros(4)
    else:
        theta0 = _log_init((init.r, init.alpha, init.a, init.b), 1, scale)
    t_scaled, tx_scaled = Ta / scale, ta / scale

    def value_and_grad(theta: FloatArray) -> tuple[float, FloatArray]:
        return _bgnbd_value_and_grad(theta, xa, tx_scaled, t_scaled, w)

    theta, nit, ok, message = _minimise(value_and_grad, theta0, total, l2_penalty, max_iterations)
    r, alpha_scaled, a, b = np.exp(theta)
    params = BgNbdParams(r=float(r), alpha=float(alpha_scaled * scale), a=float(a), b=float(b))
    with np.errstate(all="ignore"):
        ll = float(w @ bgnbd_log_likelihood(params, xa, ta, Ta))
    problems = []
    if not ok:
        problems.append(f"optimiser: {message}")
    if float(w @ xa) == 0.0:
        problems.append(
            "no repeat purchases: a and b are not identified (left at their start values) and "
            "the likelihood only rises towards r -> 0, alpha -> inf"
        )
    bound = _at_bound(theta, ("r", "alpha", "a", "b"))
    if bound:
        problems.append(f"{', '.join(bound)} at the optimiser bound: the maximum is not interior")
    if not math.isfinite(ll):
        problems.append("non-finite log-likelihood at the solution")
    converged = not problems
    return FitResult(
        params=params,
        log_likelihood=ll if math.isfinite(ll) else -math.inf,
        n=total,
        converged=converged,
        iterations=nit,
        message=message if converged else "; ".join(problems),
    )


# --------------------------------------------------------------------------- BG/NBD closed forms


def _p_alive_now(params: BgNbdParams, x: FloatArray, t_x: FloatArray, T: FloatArray) -> FloatArray:
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    repeat = x > 0
    b_x = np.where(repeat, b + x - 1.0, 1.0)
    log_odds_dead = math.log(a) - np.log(b_x) + (r + x) * (np.log(alpha + T) - np.log(alpha + t_x))
    return np.where(repeat, np.exp(-np.logaddexp(0.0, log_odds_dead)), 1.0)


def _beta_mixture_quadrature(
    a: float, beta: FloatArray, k: FloatArray, s: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Return E[(1 - (1+ps)^-k) / p] and E[(1+ps)^-k] for p ~ Beta(a, beta), element-wise.

    Tanh-sinh (double exponential) quadrature in ``tau`` with ``p = expit(pi sinh tau)``: it
    absorbs the algebraic end-point singularities of the Beta density, the nodes come from the
    log-odds so ``p`` and ``1 - p`` never cancel, and the step is chosen from the width of the
    Beta posterior and of the ``(1+ps)^-k`` transition. Both integrands are bounded
    (``0 <= (1-(1+ps)^-k)/p <= k s``), so the result is always finite.
    """
    n = beta.size
    rate, surv = np.empty(n), np.empty(n)
    if n == 0:
        return rate, surv
    ks = k * s
    log_norm = np.maximum(-special.betaln(a, beta), 0.0)
    left = float(np.max((_TAIL + np.log1p(ks) + log_norm) / a))
    right = float(np.max((_TAIL + log_norm) / beta))
    tau_lo, tau_hi = math.asinh(left / math.pi), math.asinh(right / math.pi)
    centre = special.digamma(a) - special.digamma(beta)
    spread = np.sqrt(special.polygamma(1, a) + special.polygamma(1, beta))
    step_beta = float(np.min(spread / np.hypot(math.pi, centre)))
    step_g = float(np.min(1.0 / np.hypot(math.pi, np.log1p(ks))))
    h = min(1.0 / 16.0, step_beta / 8.0, step_g / 8.0)
    n_nodes = min(_MAX_NODES, math.ceil((tau_lo + tau_hi) / h))
    tau = np.linspace(-tau_lo, tau_hi, n_nodes + 1)
    ell = math.pi * np.sinh(tau)
    log_p = -np.logaddexp(0.0, -ell)
    log_q = -np.logaddexp(0.0, ell)
    log_jac = np.log(math.pi * np.cosh(tau)) + a * log_p + log_q
    p = np.exp(log_p)
    rows = max(1, _CHUNK_ELEMENTS // tau.size)
    for lo in range(0, n, rows):
        sl = slice(lo, lo + rows)
        log_w = log_jac[None, :] + (beta[sl, None] - 1.0) * log_q[None, :]
        weight = np.exp(log_w - log_w.max(axis=1, keepdims=True))
        ps = p[None, :] * s[sl, None]
        u = np.log1p(ps)
        ku = k[sl, None] * u
        phi = np.where(ku > 0, -np.expm1(-ku) / np.where(ku > 0, ku, 1.0), 1.0)
        ratio = np.where(ps > 0, u / np.where(ps > 0, ps, 1.0), 1.0)
        g = ks[sl, None] * phi * ratio
        total = weight.sum(axis=1)
        rate[sl] = (weight * g).sum(axis=1) / total
        surv[sl] = (weight * np.exp(-ku)).sum(axis=1) / total
    return rate, surv


def _alive_expectations(
    params: BgNbdParams, t: FloatArray, x: FloatArray, T: FloatArray, *, survival: bool
) -> FloatArray:
    """E[purchases in (T, T+t] | alive at T], or P(alive at T+t | alive at T) if survival.

    Conditional on being alive at ``T`` the posterior is ``lambda ~ Gamma(r+x, alpha+T)``,
    ``p ~ Beta(a, b+x)``; with ``s = t/(alpha+T)``, ``k = r+x``, ``z = s/(1+s)``:

    * expected purchases ``E[(1-(1+ps)^-k)/p]`` equals FHL (2005) eq. 10's bracket
      ``(a+b+x-1)/(a-1) [1 - (1-z)^k 2F1(k, b+x; a+b+x-1; z)]``; we evaluate its Euler
      transform ``(1-z)^k 2F1(k, b+x; c; z) = (1-z)^(a-1) 2F1(a+b-1-r, a-1; c; z)``, whose first
      two parameters do not grow with ``x`` and whose series converges at ``z = 1`` whenever
      ``x + r + 1 > a``;
    * survival ``E[(1+ps)^-k] = 2F1(k, a; a+b+x; -s)``, Pfaff-transformed to
      ``(1-z)^a 2F1(a, a+b-r; a+b+x; z)``.

    Elements where ``hyp2f1`` is non-finite, leaves the bounds ``[0, k s]`` (resp. ``[0, 1]``)
    or where the bracket has cancelled below 1e-7 (``a`` near 1, tiny ``t``) are recomputed
    by tanh-sinh quadrature of the defining expectation over ``p``.
    """
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    shape = np.broadcast_shapes(t.shape, x.shape, T.shape)
    t, x, T = (np.broadcast_to(v, shape).ravel() for v in (t, x, T))
    s = t / (alpha + T)
    k = r + x
    log_1mz = -np.log1p(s)
    z = s / (1.0 + s)
    with np.errstate(all="ignore"):
        if survival:
            h = special.hyp2f1(a, a + b - r, a + b + x, z)
            out = np.exp(a * log_1mz) * h
            bad = ~np.isfinite(out) | (out < 0.0) | (out > 1.0 + 1e-12)
        else:
            h = special.hyp2f1(a + b - 1.0 - r, a - 1.0, a + b + x - 1.0, z)
            bracket = -np.expm1((a - 1.0) * log_1mz + np.log(h))
            out = (a + b + x - 1.0) / (a - 1.0) * bracket if a != 1.0 else np.full_like(s, np.nan)
            bad = (
                ~np.isfinite(out)
                | (out < 0.0)
                | (out > k * s * (1.0 + 1e-9))
                | (np.abs(bracket) < _CANCELLATION_FLOOR)
            )
    bad &= s > 0
    if np.any(bad):
        rate, surv = _beta_mixture_quadrature(a, b + x[bad], k[bad], s[bad])
        out[bad] = surv if survival else rate
    out = np.where(s > 0, out, 1.0 if survival else 0.0)
    return np.asarray(np.clip(out, 0.0, 1.0 if survival else np.inf), dtype=np.float64).reshape(
        shape
    )


def p_alive(
    params: BgNbdParams,
    x: ArrayLike,
    t_x: ArrayLike,
    T: ArrayLike,
    days_ahead: ArrayLike = 0.0,
) -> FloatOrArray:
    """Probability the customer is alive at ``T + days_ahead`` given (x, t_x, T).

    At ``days_ahead = 0`` this is FHL (2005) eq. 11,
    ``1 / (1 + [x>0] a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x))``, evaluated as a logistic of the
    log-odds so it neither overflows nor returns NaN for large ``x`` and ``T``. A BG/NBD customer
    can only drop out right after a purchase, so a one-time buyer is alive with probability 1
    and the future survival factor is ``E[exp(-lambda p days_ahead)]`` under the posterior.

    Examples
    --------
    >>> bg = BgNbdParams(r=0.243, alpha=4.414 * 7, a=0.793, b=2.426)
    >>> round(p_alive(bg, x=2, t_x=30.43 * 7, T=38.86 * 7), 4)
    0.7266
    >>> p_alive(bg, x=0, t_x=0.0, T=300.0)
    1.0
    >>> bool(p_alive(bg, 2, 213.0, 272.0, days_ahead=365.0) < p_alive(bg, 2, 213.0, 272.0))
    True
    """
    scalar = _is_scalar(x, t_x, T, days_ahead)
    xa, ta, Ta, ahead = _history(x, t_x, T, days_ahead)
    if np.any(ahead < 0) or not np.all(np.isfinite(ahead)):
        raise ClvInputError("days_ahead must be finite and >= 0")
    with np.errstate(all="ignore"):
        now = _p_alive_now(params, xa, ta, Ta)
    if np.any(ahead > 0):
        now = now * _alive_expectations(params, ahead, xa, Ta, survival=True)
    return _out(np.asarray(now, dtype=np.float64), scalar)


def expected_purchases(
    params: BgNbdParams,
    horizon_days: ArrayLike,
    x: ArrayLike,
    t_x: ArrayLike,
    T: ArrayLike,
) -> FloatOrArray:
    """Expected number of purchases in ``(T, T + horizon_days]`` given (x, t_x, T).

    FHL (2005) eq. 10: ``P(alive) * (a+b+x-1)/(a-1) * [1 - ((alpha+T)/(alpha+T+t))^(r+x)
    2F1(r+x, b+x; a+b+x-1; t/(alpha+T+t))]``. The hypergeometric factor is evaluated through
    its Euler transform with ``scipy.special.hyp2f1`` and guarded: where that is non-finite,
    out of its bounds or cancels (``a`` near 1, tiny horizons), a tanh-sinh quadrature of the
    defining expectation takes over (see ``_alive_expectations``). Vectorised: all arguments
    broadcast; scalars in, float out.

    Examples
    --------
    The CDNOW customer of FHL (2005), parameters published in weeks, here in days:

    >>> bg = BgNbdParams(r=0.243, alpha=4.414 * 7, a=0.793, b=2.426)
    >>> round(expected_purchases(bg, 39 * 7, x=2, t_x=30.43 * 7, T=38.86 * 7), 3)
    1.226
    >>> expected_purchases(bg, [0.0, 30.0, 365.0], 2, 200.0, 270.0).round(3)
    array([0.   , 0.154, 1.523])
    """
    scalar = _is_scalar(horizon_days, x, t_x, T)
    xa, ta, Ta, t = _history(x, t_x, T, horizon_days)
    if np.any(t < 0) or not np.all(np.isfinite(t)):
        raise ClvInputError("horizon_days must be finite and >= 0")
    with np.errstate(all="ignore"):
        value = _p_alive_now(params, xa, ta, Ta) * _alive_expectations(
            params, t, xa, Ta, survival=False
        )
    return _out(np.asarray(value, dtype=np.float64), scalar)


def expected_purchases_new(params: BgNbdParams, horizon_days: ArrayLike) -> FloatOrArray:
    """Unconditional E[X(t)]: repeat purchases of a new customer in ``(0, horizon_days]``.

    FHL (2005) eq. 9, ``(a+b-1)/(a-1) [1 - (alpha/(alpha+t))^r 2F1(r, b; a+b-1; t/(alpha+t))]``;
    the same guarded evaluation as ``expected_purchases`` with ``x = t_x = T = 0``.

    Examples
    --------
    >>> bg = BgNbdParams(r=0.243, alpha=4.414 * 7, a=0.793, b=2.426)
    >>> expected_purchases_new(bg, [7.0, 365.0, 3650.0]).round(3)
    array([0.053, 1.449, 4.981])
    """
    return expected_purchases(params, horizon_days, 0.0, 0.0, 0.0)


# --------------------------------------------------------------------------- Gamma-Gamma


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
    problems = []
    if not ok:
        problems.append(f"optimiser: {message}")
    bound = _at_bound(theta, ("p", "q", "v"))
    if bound:
        problems.append(f"{', '.join(bound)} at the optimiser bound: the maximum is not interior")
    if not math.isfinite(ll):
        problems.append("non-finite log-likelihood at the solution")
    converged = not problems
    note = f" ({zero_spend:g} customer(s) with zero mean spend excluded)" if zero_spend else ""
    return FitResult(
        params=params,
        log_likelihood=ll if math.isfinite(ll) else -math.inf,
        n=total,
        converged=converged,
        iterations=nit,
        message=(message if converged else "; ".join(problems)) + note,
    )


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
    p, q, v = params.p, params.q, params.v
    denom = p * n + q - 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.where(denom > 0, (v + n * m) * p / np.where(denom > 0, denom, 1.0), np.inf)
    return _out(np.asarray(value, dtype=np.float64), scalar)


# --------------------------------------------------------------------------- CLV


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
    with np.errstate(all="ignore"):
        alive_now = _p_alive_now(bg, x, t_x, T)
    purchases = np.zeros(n)
    discounted_purchases = np.zeros(n)
    discounted_cost = np.zeros(n)
    n_steps = math.ceil(horizon_days / step_days - 1e-9) if horizon_days > 0 else 0
    if n_steps == 0 or n == 0:
        return HorizonTerms(alive_now, purchases, discounted_purchases, discounted_cost)
    log_discount_per_day = math.log1p(annual_discount_rate) / DAYS_PER_YEAR
    starts = np.arange(n_steps) * step_days
    ends = np.minimum(np.arange(1, n_steps + 1) * step_days, horizon_days)
    mids = 0.5 * (starts + ends)
    discount = np.exp(-log_discount_per_day * mids)
    rows = max(1, _CHUNK_ELEMENTS // (4 * n_steps))
    for lo in range(0, n, rows):
        sl = slice(lo, lo + rows)
        x_c, T_c, alive_c = x[sl, None], T[sl, None], alive_now[sl, None]
        with np.errstate(all="ignore"):
            conditional = _alive_expectations(bg, ends[None, :], x_c, T_c, survival=False)
            purchases[sl] = alive_now[sl] * conditional[:, -1]
            cumulative = alive_c * conditional
            running = np.maximum.accumulate(np.maximum(cumulative, 0.0), axis=1)
            discounted_purchases[sl] = np.diff(running, axis=1, prepend=0.0) @ discount
    if costed is not None and costed.any():
        idx = np.flatnonzero(costed)
        for lo in range(0, idx.size, rows):
            sel = idx[lo:lo + rows]
            with np.errstate(all="ignore"):
                alive = alive_now[sel, None] * _alive_expectations(
                    bg, mids[None, :], x[sel, None], T[sel, None], survival=True
                )
            discounted_cost[sel] = (alive * (ends - starts)) @ discount
    return HorizonTerms(alive_now, purchases, discounted_purchases, discounted_cost)


# --------------------------------------------------------------------------- simulation


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
