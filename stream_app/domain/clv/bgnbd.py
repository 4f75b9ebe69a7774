"""BG/NBD: the purchase and dropout process, its likelihood, fit and closed forms.

Fader, Hardie & Lee (2005) "Counting your customers the easy way: an alternative to the
Pareto/NBD model", Marketing Science 24(2). Time in days (see `stream_app.domain.clv`).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._arrays import (
    _CHUNK_ELEMENTS,
    ClvInputError,
    FloatArray,
    FloatOrArray,
    _history,
    _is_scalar,
    _out,
    _weights,
    special,
)
from ._fitting import _log_init, _minimise, fit_result
from .params import BgNbdParams, FitResult

__all__ = [
    "bgnbd_log_likelihood",
    "expected_purchases",
    "expected_purchases_new",
    "fit_bgnbd",
    "p_alive",
]

# Below this |1 - (1-z)^(a-1) 2F1(...)| the closed form has lost too many digits to cancellation.
_CANCELLATION_FLOOR = 1e-7
# Quadrature tails are cut where the integrand is below exp(-_TAIL) of its scale.
_TAIL = 45.0
_MAX_NODES = 20_000
# The centred rule: nodes within this many posterior standard deviations of the log-odds.
_CENTRED_HALF_WIDTH = 16.0
_CENTRED_NODES = 65


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
    >>> from stream_app.domain.clv.simulate import simulate_bgnbd
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
    if float(w @ xa) == 0.0:
        problems.append(
            "no repeat purchases: a and b are not identified (left at their start values) and "
            "the likelihood only rises towards r -> 0, alpha -> inf"
        )
    return fit_result(params, theta, ("r", "alpha", "a", "b"), (nit, ok, message), ll, total,
                      problems)


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

    Elements whose posterior is narrow get a rule centred on it (`_centred_quadrature`); the
    others share one tanh-sinh (double exponential) grid in ``tau`` with
    ``p = expit(pi sinh tau)``: it absorbs the algebraic end-point singularities of the Beta
    density, the nodes come from the log-odds so ``p`` and ``1 - p`` never cancel, and the
    step is chosen from the width of the Beta posterior and of the ``(1+ps)^-k`` transition.
    Both integrands are bounded (``0 <= (1-(1+ps)^-k)/p <= k s``), so the result is always
    finite.
    """
    n = beta.size
    rate, surv = np.empty(n), np.empty(n)
    if n == 0:
        return rate, surv
    rest = np.flatnonzero(~_centred_quadrature(a, beta, k, s, rate, surv))
    if rest.size:
        rate[rest], surv[rest] = _tanh_sinh_quadrature(a, beta[rest], k[rest], s[rest])
    return rate, surv


def _centred_quadrature(
    a: float, beta: FloatArray, k: FloatArray, s: FloatArray, rate: FloatArray, surv: FloatArray
) -> NDArray[np.bool_]:
    """Fill `rate` and `surv` by a trapezoid rule centred on each element's posterior; return
    where it holds.

    A posterior Beta(a, beta) with large parameters (a fit that has seen few dropouts) is
    narrow: its log-odds ``l`` have mode ``log(a/beta)`` and standard deviation about
    ``sqrt(1/a + 1/beta)``. A grid shared by all elements must be as fine as the narrowest
    of them over the span of all, up to `_MAX_NODES` nodes per element; here each element
    gets `_CENTRED_NODES` nodes of its own, where ``(1+ps)^-k`` bends no faster than the
    posterior does. The integrands are smooth (analytic in a strip around the real axis) so
    the trapezoid rule converges geometrically, and it holds wherever both integrands at the
    grid's two ends have fallen below ``exp(-_TAIL)`` of their value at the mode (a bound
    below their peak); elsewhere (a heavy tail, a small ``a``) the caller falls back to the
    shared grid. The posterior's nodes and weights are computed once per distinct ``beta``
    (one customer's CLV steps share theirs).
    """
    n = beta.size
    done = np.zeros(n, dtype=bool)
    u = np.linspace(-_CENTRED_HALF_WIDTH, _CENTRED_HALF_WIDTH, _CENTRED_NODES)
    mid = u.size // 2  # u = 0: the mode of the log-odds density, where log_w is 0
    betas, inverse = np.unique(beta, return_inverse=True)
    sigma = np.sqrt(1.0 / a + 1.0 / betas)
    with np.errstate(all="ignore"):
        ell = (math.log(a) - np.log(betas))[:, None] + sigma[:, None] * u[None, :]
        log_p = -np.logaddexp(0.0, -ell)
        log_w = a * log_p - betas[:, None] * np.logaddexp(0.0, ell)
        log_w -= log_w[:, mid : mid + 1]
        p, weight = np.exp(log_p), np.exp(log_w)
        total = weight.sum(axis=1)
        ends_w = log_w[:, [0, -1]]
        held = ends_w.max(axis=1) < -_TAIL
        # (1+ps)^-k bends the integrand by at most k min(s, 4)/4 per unit of log-odds squared:
        # the step resolves the posterior, so the rule holds only where that bends it no more.
        held = held[inverse] & (sigma[inverse] ** 2 * k * np.minimum(s, 4.0) <= 4.0)
        rows = max(1, _CHUNK_ELEMENTS // u.size)
        for lo in range(0, n, rows):
            sl = slice(lo, lo + rows)
            at = inverse[sl]
            g, ku = _mixture_integrands(k[sl, None], s[sl, None], p[at] * s[sl, None])
            w = weight[at]
            rate[sl] = (w * g).sum(axis=1) / total[at]
            surv[sl] = (w * np.exp(-ku)).sum(axis=1) / total[at]
            ends = ends_w[at]
            log_g = np.log(g[:, [0, mid, -1]])
            held[sl] &= ((ends - ku[:, [0, -1]]).max(axis=1) < -ku[:, mid] - _TAIL) & (
                (ends + log_g[:, [0, 2]]).max(axis=1) < log_g[:, 1] - _TAIL)
        done[:] = held & np.isfinite(rate) & np.isfinite(surv)
    return done


def _mixture_integrands(
    k: FloatArray, s: FloatArray, ps: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """``(1 - (1+ps)^-k) / p`` and ``k log(1+ps)``, computed without cancellation."""
    u = np.log1p(ps)
    ku = k * u
    phi = np.where(ku > 0, -np.expm1(-ku) / np.where(ku > 0, ku, 1.0), 1.0)
    ratio = np.where(ps > 0, u / np.where(ps > 0, ps, 1.0), 1.0)
    return k * s * phi * ratio, ku


def _tanh_sinh_quadrature(
    a: float, beta: FloatArray, k: FloatArray, s: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """`_beta_mixture_quadrature` on one grid shared by all elements (see there)."""
    n = beta.size
    rate, surv = np.empty(n), np.empty(n)
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
        g, ku = _mixture_integrands(k[sl, None], s[sl, None], p[None, :] * s[sl, None])
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
    # Element-wise throughout, so the arguments broadcast as they are; only the elements
    # the quadrature redoes are picked out of full-shape copies.
    s = t / (alpha + T)
    k = r + x
    log_1mz = -np.log1p(s)
    z = s / (1.0 + s)
    with np.errstate(all="ignore"):
        if survival:
            h = special.hyp2f1(a, a + b - r, a + b + x, z)
            out = _full(np.exp(a * log_1mz) * h, shape)
            bad = ~np.isfinite(out) | (out < 0.0) | (out > 1.0 + 1e-12)
        else:
            h = special.hyp2f1(a + b - 1.0 - r, a - 1.0, a + b + x - 1.0, z)
            bracket = -np.expm1((a - 1.0) * log_1mz + np.log(h))
            out = _full((a + b + x - 1.0) / (a - 1.0) * bracket if a != 1.0 else np.nan, shape)
            bad = (
                ~np.isfinite(out)
                | (out < 0.0)
                | (out > k * s * (1.0 + 1e-9))
                | (np.abs(bracket) < _CANCELLATION_FLOOR)
            )
    positive = s > 0
    bad &= positive
    if bad.any():
        def full(v: FloatArray) -> FloatArray:
            return np.broadcast_to(v, shape)[bad]

        rate, surv = _beta_mixture_quadrature(a, b + full(x), full(k), full(s))
        out[bad] = surv if survival else rate
    out = np.maximum(np.where(positive, out, 1.0 if survival else 0.0), 0.0)
    return np.minimum(out, 1.0) if survival else out


def _full(values: FloatArray | float, shape: tuple[int, ...]) -> FloatArray:
    """`values` as a writable array of `shape`: itself when it is one already."""
    if isinstance(values, np.ndarray) and values.shape == shape and values.flags.writeable:
        return values
    return np.broadcast_to(values, shape).copy()


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
