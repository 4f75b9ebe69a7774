"""Tests of the BG/NBD, Gamma-Gamma and CLV domain functions (pure: no Kafka, no Redis).

Every closed form is checked against something computed another way: the raw individual-level
BG/NBD likelihood integrated over the prior (Bayes by quadrature), Monte-Carlo simulation of
the purchase process, the product (non-log) form of the likelihood, or a published value.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from scipy import integrate, optimize, special, stats

from stream_app.domain import clv
from stream_app.domain.clv import (
    BgNbdParams,
    ClvInputError,
    GammaGammaParams,
    bgnbd,
    bgnbd_log_likelihood,
    expected_purchases,
    expected_purchases_new,
    expected_spend,
    fit_bgnbd,
    fit_gamma_gamma,
    gamma_gamma,
    gamma_gamma_log_likelihood,
    p_alive,
    simulate_bgnbd,
    simulate_gamma_gamma,
)

# FHL (2005) CDNOW estimates, published in weeks, and the same population in days.
CDNOW_WEEKS = BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426)
CDNOW_DAYS = BgNbdParams(r=0.243, alpha=4.414 * 7, a=0.793, b=2.426)
CDNOW_GG = GammaGammaParams(p=6.25, q=3.74, v=15.44)

# A day-scale population for recovery: one purchase a month on average (r/alpha = 1/30 per
# day), about 9% chance of dropping out after each purchase (a/(a+b)). With 20,000 customers
# observed 1-3 years the standard errors (observed information) are about 1.1% (r), 1.4%
# (alpha), 2.6% (a) and 4.1% (b), so 10% is at least 2.4 standard errors.
RECOVERY_BG = BgNbdParams(r=1.0, alpha=30.0, a=0.5, b=5.0)
# Order values with a within-customer CV of 71% (p=2) and a population mean of
# p v / (q - 1) = 40; standard errors about 2.2% (p), 1.7% (q) and 3.6% (v).
RECOVERY_GG = GammaGammaParams(p=2.0, q=8.0, v=140.0)

HISTORIES = [(0, 0.0, 100.0), (2, 213.0, 272.0), (5, 50.0, 300.0), (1, 5.0, 10.0)]


def rel_err(estimate: float, truth: float) -> float:
    return abs(estimate / truth - 1.0)


# --------------------------------------------------------------------------- independent references


def individual_likelihood(
    lam: float, p: float, x: int, t_x: float, T: float
) -> tuple[float, float]:
    """BG/NBD likelihood of (x, t_x, T) for one (lambda, p), split into alive and dropped-out."""
    alive = (1 - p) ** x * lam**x * math.exp(-lam * T)
    dropped = p * (1 - p) ** (x - 1) * lam**x * math.exp(-lam * t_x) if x > 0 else 0.0
    return alive, dropped


def beta_integral(params: BgNbdParams, f: Callable[[float], float]) -> float:
    """E[f(p)] for p ~ Beta(a, b) by adaptive quadrature with the algebraic end-point weight."""
    value, _ = integrate.quad(
        f, 0, 1, weight="alg", wvar=(params.a - 1, params.b - 1), epsabs=0, epsrel=1e-12
    )
    return float(value / special.beta(params.a, params.b))


def lambda_moment(params: BgNbdParams, x: int, c: float) -> float:
    """E[lambda^x exp(-lambda c)] for lambda ~ Gamma(r, rate alpha) (a Gamma integral)."""
    r, alpha = params.r, params.alpha
    return math.exp(
        special.gammaln(r + x)
        - special.gammaln(r)
        + r * math.log(alpha)
        - (r + x) * math.log(alpha + c)
    )


def direct_bgnbd_likelihood(params: BgNbdParams, x: int, t_x: float, T: float) -> float:
    """FHL (2005) eq. 6 as a plain product of Gamma and Beta functions (no logs)."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    common = special.gamma(r + x) * alpha**r / special.gamma(r)
    alive = special.beta(a, b + x) / special.beta(a, b) / (alpha + T) ** (r + x)
    dropped = (
        special.beta(a + 1, b + x - 1) / special.beta(a, b) / (alpha + t_x) ** (r + x)
        if x > 0
        else 0.0
    )
    return float(common * (alive + dropped))


def fhl_expected_purchases(params: BgNbdParams, t: float, x: int, t_x: float, T: float) -> float:
    """FHL (2005) eq. 10 verbatim (the un-transformed hypergeometric form)."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    z = t / (alpha + T + t)
    bracket = 1 - ((alpha + T) / (alpha + T + t)) ** (r + x) * special.hyp2f1(
        r + x, b + x, a + b + x - 1, z
    )
    ratio = ((alpha + T) / (alpha + t_x)) ** (r + x)
    return float((a + b + x - 1) / (a - 1) * bracket / (1 + (x > 0) * a / (b + x - 1) * ratio))


# --------------------------------------------------------------------------- purity and validation


def test_package_imports_only_pure_dependencies() -> None:
    roots = set()
    for module in Path(clv.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Import):
                roots |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                roots.add(node.module.split(".")[0])
    assert roots <= {"__future__", "dataclasses", "functools", "math", "numpy", "scipy", "typing"}


@pytest.mark.parametrize(
    "x, t_x, T",
    [(-1, 0.0, 10.0), (1, 11.0, 10.0), (1, -1.0, 10.0), (1, float("nan"), 10.0)],
)
def test_invalid_histories_raise(x: float, t_x: float, T: float) -> None:
    with pytest.raises(ClvInputError):
        p_alive(CDNOW_DAYS, x, t_x, T)


def test_invalid_parameters_raise() -> None:
    with pytest.raises(ClvInputError):
        BgNbdParams(r=0.0, alpha=1.0, a=1.0, b=1.0)
    with pytest.raises(ClvInputError):
        GammaGammaParams(p=1.0, q=float("inf"), v=1.0)


def test_scalars_in_float_out_and_arrays_broadcast() -> None:
    scalar = expected_purchases(CDNOW_DAYS, 90.0, 2, 213.0, 272.0)
    assert isinstance(scalar, float)
    grid = expected_purchases(CDNOW_DAYS, np.array([[30.0], [90.0]]), [0, 2], [0.0, 213.0], 272.0)
    assert isinstance(grid, np.ndarray) and grid.shape == (2, 2)
    assert grid[1, 1] == pytest.approx(scalar, rel=1e-12)


# --------------------------------------------------------------------------- BG/NBD closed forms


@pytest.mark.parametrize(
    "params", [CDNOW_DAYS, BgNbdParams(r=2.0, alpha=5.0, a=3.0, b=0.7)], ids=["cdnow", "a>1"]
)
@pytest.mark.parametrize("history", HISTORIES + [(3, 0.0, 0.5)])
def test_log_likelihood_matches_direct_product_form(
    params: BgNbdParams, history: tuple[int, float, float]
) -> None:
    x, t_x, T = history
    expected = math.log(direct_bgnbd_likelihood(params, x, t_x, T))
    assert float(bgnbd_log_likelihood(params, x, t_x, T)) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("params", [CDNOW_DAYS, BgNbdParams(r=2.0, alpha=5.0, a=3.0, b=0.7)])
@pytest.mark.parametrize("history", HISTORIES)
def test_closed_forms_match_bayes_by_quadrature(
    params: BgNbdParams, history: tuple[int, float, float]
) -> None:
    """Likelihood, P(alive), E[purchases] and survival by integrating the individual model.

    For one customer with (lambda, p): the history has likelihood
    ``(1-p)^x lambda^x e^(-lambda T)`` (still alive) ``+ [x>0] p (1-p)^(x-1) lambda^x
    e^(-lambda t_x)`` (dropped out after the last purchase); an alive customer then makes
    ``(1 - e^(-lambda p t)) / p`` purchases in t days on average and is still alive with
    probability ``e^(-lambda p t)``. lambda is integrated as a Gamma integral, p numerically:
    no hypergeometric function and no conjugate-posterior algebra is involved.
    """
    x, t_x, T = history
    horizon = 365.0
    at_t, at_tx = lambda_moment(params, x, T), lambda_moment(params, x, t_x)
    k, scale = params.r + x, params.alpha + T

    def survive(p: float) -> float:  # E[e^(-lambda p t) | lambda ~ posterior kernel]
        return math.exp(-k * math.log1p(p * horizon / scale))

    def purchases_if_alive(p: float) -> float:  # (1 - survive(p)) / p, which is k s at p = 0
        s = horizon / scale
        return k * s if p == 0 else -math.expm1(-k * math.log1p(p * s)) / p

    alive = beta_integral(params, lambda p: (1 - p) ** x * at_t)
    dropped = beta_integral(params, lambda p: p * (1 - p) ** (x - 1) * at_tx) if x else 0.0
    purchases = beta_integral(params, lambda p: (1 - p) ** x * at_t * purchases_if_alive(p))
    surviving = beta_integral(params, lambda p: (1 - p) ** x * at_t * survive(p))
    evidence = alive + dropped
    assert float(bgnbd_log_likelihood(params, x, t_x, T)) == pytest.approx(
        math.log(evidence), rel=1e-10
    )
    assert p_alive(params, x, t_x, T) == pytest.approx(alive / evidence, rel=1e-9)
    assert expected_purchases(params, horizon, x, t_x, T) == pytest.approx(
        purchases / evidence, rel=1e-9
    )
    assert p_alive(params, x, t_x, T, days_ahead=horizon) == pytest.approx(
        surviving / evidence, rel=1e-9
    )


def test_expected_purchases_matches_monte_carlo_of_the_process() -> None:
    """Simulate the BG/NBD process itself, weighting prior draws by the history's likelihood."""
    params, (x, t_x, T), horizon = CDNOW_DAYS, (2, 213.0, 272.0), 180.0
    rng = np.random.default_rng(20240)
    n = 1_000_000
    lam = rng.gamma(params.r, 1 / params.alpha, n)
    p = rng.beta(params.a, params.b, n)
    alive_w = (1 - p) ** x * lam**x * np.exp(-lam * T)
    dropped_w = p * (1 - p) ** (x - 1) * lam**x * np.exp(-lam * t_x)
    # Future purchases of an alive customer: Poisson arrivals until the geometric dropout.
    future = np.minimum(rng.poisson(lam * horizon), rng.geometric(p))
    numer, denom = alive_w * future, alive_w + dropped_w
    estimate = numer.sum() / denom.sum()
    std_err = math.sqrt(np.sum((numer - estimate * denom) ** 2)) / denom.sum()
    value = expected_purchases(params, horizon, x, t_x, T)
    assert abs(value - estimate) < 4 * std_err, (value, estimate, std_err)
    assert std_err / estimate < 0.01  # the comparison has teeth
    alive_share = alive_w.sum() / denom.sum()
    assert p_alive(params, x, t_x, T) == pytest.approx(alive_share, rel=0.01)


def test_expected_purchases_new_matches_simulation() -> None:
    rng = np.random.default_rng(11)
    for horizon in (30.0, 365.0):
        x, _, _ = simulate_bgnbd(CDNOW_DAYS, 400_000, horizon, rng)
        std_err = x.std() / math.sqrt(x.size)
        value = expected_purchases_new(CDNOW_DAYS, horizon)
        assert abs(value - x.mean()) < 4 * std_err, (horizon, value, x.mean(), std_err)


def test_published_cdnow_conditional_expectation() -> None:
    """FHL (2005): x=2, t_x=30.43, T=38.86 weeks -> 1.226 purchases in the next 39 weeks."""
    weeks = expected_purchases(CDNOW_WEEKS, 39.0, 2, 30.43, 38.86)
    days = expected_purchases(CDNOW_DAYS, 39.0 * 7, 2, 30.43 * 7, 38.86 * 7)
    assert weeks == pytest.approx(1.226, abs=5e-4)
    assert days == pytest.approx(weeks, rel=1e-12)


@pytest.mark.parametrize("history", HISTORIES)
def test_euler_transform_matches_the_published_formula(history: tuple[int, float, float]) -> None:
    x, t_x, T = history
    for horizon in (1.0, 30.0, 365.0, 2000.0):
        expected = fhl_expected_purchases(CDNOW_DAYS, horizon, x, t_x, T)
        assert expected_purchases(CDNOW_DAYS, horizon, x, t_x, T) == pytest.approx(
            expected, rel=1e-10
        )


def test_closed_form_agrees_with_quadrature_fallback_on_random_parameters() -> None:
    rng = np.random.default_rng(5)
    for _ in range(100):
        r, alpha, a, b = np.exp(rng.uniform([-3, -2, -3, -3], [2, 7, 2.5, 3]))
        params = BgNbdParams(r=r, alpha=alpha, a=a, b=b)
        x = rng.integers(0, 600, 30).astype(float)
        T = rng.uniform(0, 10_000, 30)
        t = np.exp(rng.uniform(-3, 11, 30))
        closed = bgnbd._alive_expectations(params, t, x, T, survival=False)
        survival = bgnbd._alive_expectations(params, t, x, T, survival=True)
        quad_rate, quad_surv = bgnbd._beta_mixture_quadrature(a, b + x, r + x, t / (alpha + T))
        np.testing.assert_allclose(closed, quad_rate, rtol=1e-7)
        np.testing.assert_allclose(survival, quad_surv, rtol=1e-6, atol=1e-20)


def test_narrow_posteriors_take_the_centred_rule_and_agree_with_the_shared_grid() -> None:
    """A fit that has seen few dropouts has a and b in the thousands (a young stream gave
    a = 16,489, b = 105,949): hyp2f1 fails for every element, and the Beta posterior is so
    narrow that one shared grid needs up to 20,000 nodes per element. Each element then gets
    a grid centred on its own posterior, which must give the same expectations."""
    a_values, betas = (50.0, 2_000.0, 16_489.0), np.array([20.0, 1e3, 105_949.0, 1e6])
    k = np.array([1.2, 3.0, 30.0, 300.0])
    s = np.array([1e-3, 0.2, 1.5, 40.0])
    beta, k, s = (v.ravel() for v in np.meshgrid(betas, k, s, indexing="ij"))
    for a in a_values:
        rate, surv = np.empty(beta.size), np.empty(beta.size)
        centred = bgnbd._centred_quadrature(a, beta, k, s, rate, surv)
        assert centred.sum() >= beta.size // 2
        shared_rate, shared_surv = bgnbd._tanh_sinh_quadrature(
            a, beta[centred], k[centred], s[centred])
        np.testing.assert_allclose(rate[centred], shared_rate, rtol=1e-11)
        np.testing.assert_allclose(surv[centred], shared_surv, rtol=1e-11, atol=1e-200)
        combined = bgnbd._beta_mixture_quadrature(a, beta, k, s)
        np.testing.assert_array_equal(combined[0][centred], rate[centred])
        for i in np.flatnonzero(centred)[::5]:  # adaptive quadrature over p's bulk
            posterior = stats.beta(a, beta[i])
            lo, hi = posterior.ppf(1e-15), posterior.isf(1e-15)
            expected, _ = integrate.quad(
                lambda p, kk=k[i], ss=s[i], d=posterior: d.pdf(p) * -np.expm1(
                    -kk * np.log1p(p * ss)) / p,
                lo, hi, points=[posterior.mean()], epsabs=0, epsrel=1e-13, limit=500)
            assert rate[i] == pytest.approx(expected, rel=1e-9)
    # a wide posterior (a small a) is left to the shared grid, which absorbs its end points
    wide = bgnbd._centred_quadrature(0.8, np.array([3.0]), np.array([2.0]), np.array([1.0]),
                                     np.empty(1), np.empty(1))
    assert not wide.any()
    # the young stream's model values a year's CLV grid with the centred rule throughout
    young = BgNbdParams(r=1.153, alpha=32.41, a=16_488.6, b=105_949.5)
    x = np.arange(0.0, 30.0)
    T = np.linspace(10.0, 100.0, x.size)
    t = np.arange(7.0, 372.0, 7.0)
    kk, ss = np.broadcast_arrays((young.r + x)[:, None], t[None, :] / (young.alpha + T[:, None]))
    bb = np.broadcast_to(young.b + x[:, None], kk.shape)
    assert bgnbd._centred_quadrature(young.a, bb.ravel(), kk.ravel(), ss.ravel(),
                                     np.empty(kk.size), np.empty(kk.size)).all()


# --------------------------------------------------------------------------- robustness


def test_large_counts_and_long_histories_stay_finite() -> None:
    x = np.array([500.0, 500.0, 0.0, 1.0])
    t_x = np.array([9_999.0, 10.0, 0.0, 0.0])
    T = np.full(4, 10_000.0)
    for params in (CDNOW_DAYS, BgNbdParams(r=50.0, alpha=1e-3, a=1e-4, b=1e4)):
        assert np.all(np.isfinite(bgnbd_log_likelihood(params, x, t_x, T)))
        alive = p_alive(params, x, t_x, T)
        assert np.all((alive >= 0) & (alive <= 1))
        purchases = expected_purchases(params, 3650.0, x, t_x, T)
        assert np.all(np.isfinite(purchases) & (purchases >= 0))
        value = clv.clv(params, CDNOW_GG, x, t_x, T, 40.0, 3650.0, 0.3, 0.1, 0.05, 30.0)
        assert np.all(np.isfinite(value))
    # someone with 500 purchases within 10 days, silent for 27 years, is almost surely gone
    assert p_alive(CDNOW_DAYS, 500, 10.0, 10_000.0) < 1e-100


@pytest.mark.parametrize("x", [0, 1, 5, 500])
@pytest.mark.parametrize("alpha", [CDNOW_DAYS.alpha, 1e-3])
def test_near_the_singular_point_z_to_1_results_are_finite_and_monotone(
    x: int, alpha: float
) -> None:
    """The 2F1 argument t/(alpha+T+t) goes to 1 as the horizon dwarfs alpha + T."""
    params = BgNbdParams(r=0.243, alpha=alpha, a=0.793, b=2.426)
    horizons = np.logspace(-6, 12, 61)
    t_x = 0.5 if x else 0.0
    purchases = np.asarray(expected_purchases(params, horizons, x, t_x, 1.0))
    survival = np.asarray(p_alive(params, x, t_x, 1.0, days_ahead=horizons))
    assert np.all(np.isfinite(purchases)) and np.all(np.isfinite(survival))
    assert np.all(np.diff(purchases) >= -1e-12 * purchases[1:])
    assert np.all(np.diff(survival) <= 1e-15)
    assert np.all(survival >= 0)


def test_a_equal_to_one_is_continuous() -> None:
    """At a = 1 the closed form is 0/0; the quadrature fallback takes over seamlessly."""
    horizons = np.array([1e-6, 7.0, 365.0, 3650.0])
    values = np.array(
        [
            expected_purchases(
                BgNbdParams(r=0.5, alpha=20.0, a=a, b=2.0), horizons, 3, 100.0, 200.0
            )
            for a in (1 - 1e-9, 1.0, 1 + 1e-9)
        ]
    )
    assert np.all(np.isfinite(values))
    np.testing.assert_allclose(values[0], values[1], rtol=1e-7)
    np.testing.assert_allclose(values[2], values[1], rtol=1e-7)


# --------------------------------------------------------------------------- BG/NBD fitting


def test_bgnbd_gradient_matches_finite_differences() -> None:
    rng = np.random.default_rng(1)
    x, t_x, T = simulate_bgnbd(RECOVERY_BG, 500, rng.uniform(30, 400, 500), rng)
    w = rng.integers(1, 4, 500).astype(float)
    theta = np.log([0.7, 25.0, 0.9, 3.0])

    def value(th: np.ndarray) -> float:
        return bgnbd._bgnbd_value_and_grad(th, x, t_x, T, w)[0]

    def grad(th: np.ndarray) -> np.ndarray:
        return bgnbd._bgnbd_value_and_grad(th, x, t_x, T, w)[1]

    numeric = optimize.approx_fprime(theta, value, 1e-6)
    np.testing.assert_allclose(grad(theta), numeric, rtol=1e-4, atol=1e-4)


def test_bgnbd_recovers_parameters_from_20000_simulated_customers() -> None:
    rng = np.random.default_rng(2024)
    n = 20_000
    x, t_x, T = simulate_bgnbd(RECOVERY_BG, n, rng.uniform(365.0, 1095.0, n), rng)
    fit = fit_bgnbd(x, t_x, T)
    assert fit.converged, fit.message
    assert fit.n == n and fit.iterations > 0
    assert math.isfinite(fit.log_likelihood)
    for name in ("r", "alpha", "a", "b"):
        estimate, truth = getattr(fit.params, name), getattr(RECOVERY_BG, name)
        assert rel_err(estimate, truth) < 0.10, (name, estimate, truth)
    # the optimum is a maximum: the true parameters are no more likely
    assert fit.log_likelihood >= bgnbd_log_likelihood(RECOVERY_BG, x, t_x, T).sum()


def test_weighted_fit_on_a_compressed_table_equals_the_full_fit() -> None:
    rng = np.random.default_rng(8)
    x, t_x, T = simulate_bgnbd(CDNOW_DAYS, 5_000, rng.integers(180, 365, 5_000), rng)
    t_x = np.floor(t_x)  # whole days, as the stream records them
    rows, counts = np.unique(np.column_stack([x, t_x, T]), axis=0, return_counts=True)
    assert len(rows) < len(x)
    full = fit_bgnbd(x, t_x, T)
    compressed = fit_bgnbd(rows[:, 0], rows[:, 1], rows[:, 2], weights=counts)
    assert full.converged and compressed.converged
    assert compressed.n == full.n == 5_000
    assert compressed.log_likelihood == pytest.approx(full.log_likelihood, rel=1e-9)
    for name in ("r", "alpha", "a", "b"):
        assert getattr(compressed.params, name) == pytest.approx(
            getattr(full.params, name), rel=1e-5
        )


def test_fit_in_weeks_maps_to_days_by_alpha_times_7() -> None:
    """Scale invariance: r, a, b are unit-free, alpha carries the time unit."""
    rng = np.random.default_rng(3)
    x, t_x, T = simulate_bgnbd(CDNOW_WEEKS, 3_000, rng.uniform(27.0, 39.0, 3_000), rng)
    weeks = fit_bgnbd(x, t_x, T)
    days = fit_bgnbd(x, 7 * t_x, 7 * T)
    assert weeks.converged and days.converged
    assert days.params.alpha == pytest.approx(7 * weeks.params.alpha, rel=1e-6)
    for name in ("r", "a", "b"):
        assert getattr(days.params, name) == pytest.approx(getattr(weeks.params, name), rel=1e-6)
    # densities of event times pick up a Jacobian of 7 per repeat purchase
    assert days.log_likelihood == pytest.approx(
        weeks.log_likelihood - x.sum() * math.log(7), rel=1e-9
    )
    # predictions do not depend on the unit
    assert p_alive(days.params, 2, 7 * 20.0, 7 * 30.0) == pytest.approx(
        p_alive(weeks.params, 2, 20.0, 30.0), rel=1e-6
    )
    assert expected_purchases(days.params, 7 * 52.0, 2, 7 * 20.0, 7 * 30.0) == pytest.approx(
        expected_purchases(weeks.params, 52.0, 2, 20.0, 30.0), rel=1e-6
    )


def test_all_one_time_buyers_give_a_clear_non_converged_result() -> None:
    T = np.linspace(10.0, 400.0, 1_000)
    fit = fit_bgnbd(np.zeros_like(T), np.zeros_like(T), T)
    assert not fit.converged
    assert "no repeat purchases" in fit.message
    values = [fit.log_likelihood, *vars(fit.params).values()]
    assert all(math.isfinite(v) for v in values)
    penalised = fit_bgnbd(np.zeros_like(T), np.zeros_like(T), T, l2_penalty=0.1)
    assert all(math.isfinite(v) for v in vars(penalised.params).values())
    assert not penalised.converged


def test_empty_input_does_not_raise() -> None:
    fit = fit_bgnbd([], [], [])
    assert not fit.converged and fit.n == 0.0
    fit_zero_weight = fit_bgnbd([1.0], [2.0], [3.0], weights=[0.0])
    assert not fit_zero_weight.converged
    assert not fit_gamma_gamma([0, 0], [0.0, 0.0]).converged


def test_l2_penalty_shrinks_towards_the_reference_point() -> None:
    rng = np.random.default_rng(4)
    x, t_x, T = simulate_bgnbd(CDNOW_DAYS, 2_000, 300.0, rng)
    free = fit_bgnbd(x, t_x, T)
    shrunk = fit_bgnbd(x, t_x, T, l2_penalty=1.0)
    assert abs(math.log(shrunk.params.b)) < abs(math.log(free.params.b))
    assert shrunk.log_likelihood <= free.log_likelihood


# --------------------------------------------------------------------------- Gamma-Gamma


@pytest.mark.parametrize("n, mean", [(1, 30.0), (4, 12.5), (25, 80.0)])
def test_gamma_gamma_density_matches_integral_over_nu(n: int, mean: float) -> None:
    p, q, v = CDNOW_GG.p, CDNOW_GG.q, CDNOW_GG.v

    def joint(nu: float) -> float:
        # the mean of n Gamma(p, nu) values is Gamma(p n, rate nu n)
        density_mean = stats.gamma.pdf(mean, p * n, scale=1 / (nu * n))
        return float(density_mean * stats.gamma.pdf(nu, q, scale=1 / v))

    expected, _ = integrate.quad(joint, 0, np.inf, epsabs=0, epsrel=1e-11, limit=200)
    got = float(gamma_gamma_log_likelihood(CDNOW_GG, n, mean))
    assert got == pytest.approx(math.log(expected), rel=1e-8)
    # and it is a density in mean_spend
    total, _ = integrate.quad(
        lambda m: math.exp(float(gamma_gamma_log_likelihood(CDNOW_GG, n, m))), 0, np.inf
    )
    assert total == pytest.approx(1.0, rel=1e-8)


@pytest.mark.parametrize("n, mean", [(1, 30.0), (4, 12.5), (25, 80.0)])
def test_expected_spend_matches_posterior_mean_by_quadrature(n: int, mean: float) -> None:
    p, q, v = CDNOW_GG.p, CDNOW_GG.q, CDNOW_GG.v

    def weight(nu: float) -> float:
        return float(
            stats.gamma.pdf(mean, p * n, scale=1 / (nu * n)) * stats.gamma.pdf(nu, q, scale=1 / v)
        )

    evidence, _ = integrate.quad(weight, 0, np.inf, epsrel=1e-11, limit=200)
    posterior_mean, _ = integrate.quad(
        lambda nu: p / nu * weight(nu), 0, np.inf, epsrel=1e-11, limit=200
    )
    assert expected_spend(CDNOW_GG, n, mean) == pytest.approx(posterior_mean / evidence, rel=1e-8)


def test_spend_basis_all_counts_the_first_transaction() -> None:
    assert expected_spend(CDNOW_GG, 2, 30.0, spend_basis="all") == pytest.approx(
        expected_spend(CDNOW_GG, 3, 30.0)
    )
    assert expected_spend(CDNOW_GG, 0, 0.0) == pytest.approx(CDNOW_GG.p * CDNOW_GG.v / 2.74)
    assert expected_spend(GammaGammaParams(p=1.0, q=0.5, v=1.0), 0, 0.0) == math.inf
    with pytest.raises(ClvInputError):
        expected_spend(CDNOW_GG, 1, 10.0, spend_basis="first")  # type: ignore[arg-type]


def test_gamma_gamma_gradient_matches_finite_differences() -> None:
    rng = np.random.default_rng(6)
    n = rng.integers(1, 10, 400).astype(float)
    m = simulate_gamma_gamma(RECOVERY_GG, n, rng) / 40.0
    w = rng.integers(1, 3, 400).astype(float)
    theta = np.log([1.5, 6.0, 3.0])

    def value(th: np.ndarray) -> float:
        return gamma_gamma._gg_value_and_grad(th, n, m, w)[0]

    numeric = optimize.approx_fprime(theta, value, 1e-6)
    analytic = gamma_gamma._gg_value_and_grad(theta, n, m, w)[1]
    np.testing.assert_allclose(analytic, numeric, rtol=1e-4)


def test_gamma_gamma_recovers_parameters_from_20000_simulated_customers() -> None:
    rng = np.random.default_rng(99)
    x, _, _ = simulate_bgnbd(RECOVERY_BG, 30_000, rng.uniform(365.0, 1095.0, 30_000), rng)
    frequency = x[x > 0][:20_000]
    assert frequency.size == 20_000
    # one-time buyers are in the input but carry no spend information
    frequency = np.concatenate([frequency, np.zeros(500)])
    mean_spend = simulate_gamma_gamma(RECOVERY_GG, frequency, rng)
    fit = fit_gamma_gamma(frequency, mean_spend)
    assert fit.converged, fit.message
    assert fit.n == 20_000
    for name in ("p", "q", "v"):
        estimate, truth = getattr(fit.params, name), getattr(RECOVERY_GG, name)
        assert rel_err(estimate, truth) < 0.10, (name, estimate, truth)


def test_gamma_gamma_fit_is_invariant_to_the_currency_unit() -> None:
    rng = np.random.default_rng(12)
    frequency = rng.integers(1, 8, 3_000)
    spend = simulate_gamma_gamma(CDNOW_GG, frequency, rng)
    dollars = fit_gamma_gamma(frequency, spend)
    cents = fit_gamma_gamma(frequency, 100 * spend)
    assert cents.params.v == pytest.approx(100 * dollars.params.v, rel=1e-6)
    assert cents.params.p == pytest.approx(dollars.params.p, rel=1e-6)


def test_simulators_are_deterministic_given_the_generator() -> None:
    first = simulate_bgnbd(CDNOW_DAYS, 100, 365.0, np.random.default_rng(1))
    second = simulate_bgnbd(CDNOW_DAYS, 100, 365.0, np.random.default_rng(1))
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    x, t_x, T = first
    assert np.all((x == 0) == (t_x == 0)) and np.all(t_x <= T)
    spend = simulate_gamma_gamma(CDNOW_GG, x, np.random.default_rng(2))
    np.testing.assert_array_equal(
        spend, simulate_gamma_gamma(CDNOW_GG, x, np.random.default_rng(2))
    )
    assert np.all((spend > 0) == (x > 0))


# --------------------------------------------------------------------------- CLV

CUSTOMERS = (np.array([0.0, 2.0, 10.0]), np.array([0.0, 213.0, 300.0]), np.full(3, 320.0))
SPEND = np.array([0.0, 40.0, 25.0])


def clv_of(
    horizon_days: float = 365.0,
    margin_rate: float = 0.3,
    annual_discount_rate: float = 0.1,
    expected_cost_to_serve_per_day: float = 0.0,
    step_days: float = 7.0,
) -> np.ndarray:
    value = clv.clv(
        CDNOW_DAYS,
        CDNOW_GG,
        *CUSTOMERS,
        SPEND,
        horizon_days=horizon_days,
        margin_rate=margin_rate,
        annual_discount_rate=annual_discount_rate,
        expected_cost_to_serve_per_day=expected_cost_to_serve_per_day,
        step_days=step_days,
    )
    assert isinstance(value, np.ndarray)
    return value


def test_clv_increases_with_margin_and_horizon() -> None:
    assert np.all(clv_of(margin_rate=0.4) > clv_of(margin_rate=0.3))
    assert np.all(clv_of(horizon_days=730.0) > clv_of(horizon_days=365.0))
    assert np.all(clv_of(horizon_days=0.0) == 0.0)


def test_discounting_and_cost_to_serve_lower_clv() -> None:
    assert np.all(clv_of(annual_discount_rate=0.2) < clv_of(annual_discount_rate=0.1))
    assert np.all(clv_of(annual_discount_rate=0.1) < clv_of(annual_discount_rate=0.0))
    assert np.all(clv_of(expected_cost_to_serve_per_day=0.02) < clv_of())


def test_undiscounted_clv_is_expected_purchases_times_spend_times_margin() -> None:
    x, t_x, T = CUSTOMERS
    purchases = expected_purchases(CDNOW_DAYS, 365.0, x, t_x, T)
    spend = expected_spend(CDNOW_GG, x, SPEND)
    for step in (1.0, 7.0, 365.0, 500.0):
        np.testing.assert_allclose(
            clv_of(annual_discount_rate=0.0, step_days=step), purchases * spend * 0.3, rtol=1e-10
        )


def test_discounted_clv_matches_the_continuous_time_integral() -> None:
    """sum over steps approximates int D(u) dE[purchases](u) - c int D(u) P(alive at u) du."""
    x, t_x, T = 2, 213.0, 320.0
    rate = math.log(1.1) / clv.DAYS_PER_YEAR
    spend = expected_spend(CDNOW_GG, x, 40.0)

    def purchase_density(u: float) -> float:
        h = 1e-4
        upper = float(expected_purchases(CDNOW_DAYS, u + h, x, t_x, T))
        lower = float(expected_purchases(CDNOW_DAYS, max(u - h, 0.0), x, t_x, T))
        return (upper - lower) / (u + h - max(u - h, 0.0))

    margin, _ = integrate.quad(lambda u: math.exp(-rate * u) * purchase_density(u), 0, 365.0)
    cost, _ = integrate.quad(
        lambda u: math.exp(-rate * u) * float(p_alive(CDNOW_DAYS, x, t_x, T, days_ahead=u)),
        0,
        365.0,
    )
    expected = margin * spend * 0.3 - 0.05 * cost
    got = clv.clv(CDNOW_DAYS, CDNOW_GG, x, t_x, T, 40.0, 365.0, 0.3, 0.1, 0.05, step_days=1.0)
    assert got == pytest.approx(expected, rel=1e-5)
    weekly = clv.clv(CDNOW_DAYS, CDNOW_GG, x, t_x, T, 40.0, 365.0, 0.3, 0.1, 0.05, step_days=7.0)
    assert weekly == pytest.approx(expected, rel=1e-3)


def test_clv_is_vectorised_elementwise() -> None:
    batch = clv_of(expected_cost_to_serve_per_day=0.01)
    for i in range(3):
        single = clv.clv(
            CDNOW_DAYS,
            CDNOW_GG,
            float(CUSTOMERS[0][i]),
            float(CUSTOMERS[1][i]),
            float(CUSTOMERS[2][i]),
            float(SPEND[i]),
            365.0,
            0.3,
            0.1,
            0.01,
        )
        assert isinstance(single, float)
        assert single == pytest.approx(batch[i], rel=1e-12)


def step_by_step_clv(
    bg: BgNbdParams,
    x: float,
    t_x: float,
    T: float,
    mean_spend: float,
    horizon: float,
    margin_rate: float,
    annual_rate: float,
    cost_per_day: float,
    step: float,
) -> float:
    """The definition of `clv`, one customer and one step at a time with the public functions."""
    spend = float(expected_spend(CDNOW_GG, x, mean_spend))
    total, start = 0.0, 0.0
    while start < horizon - 1e-9 * step:
        end = min(start + step, horizon)
        mid = 0.5 * (start + end)
        discount = (1.0 + annual_rate) ** (-mid / clv.DAYS_PER_YEAR)
        bought = float(expected_purchases(bg, end, x, t_x, T)) - float(
            expected_purchases(bg, start, x, t_x, T)
        )
        alive = float(p_alive(bg, x, t_x, T, days_ahead=mid))
        total += (bought * spend * margin_rate - cost_per_day * (end - start) * alive) * discount
        start = end
    return total


@pytest.mark.parametrize(
    ("bg", "horizon", "step", "cost"),
    [
        (CDNOW_DAYS, 365.0, 7.0, 0.0),
        (CDNOW_DAYS, 365.0, 7.0, 0.02),
        (CDNOW_DAYS, 100.0, 3.3, 0.05),  # a last step shorter than the others
        (CDNOW_DAYS, 30.0, 1.0, 0.01),
        # a = 1: the closed form cancels, every step takes the quadrature fallback
        (BgNbdParams(r=0.6, alpha=20.0, a=1.0, b=3.0), 120.0, 7.0, 0.01),
    ],
)
def test_clv_over_all_steps_at_once_equals_the_step_by_step_sum(
    bg: BgNbdParams, horizon: float, step: float, cost: float
) -> None:
    x = np.array([[0.0, 2.0, 10.0], [1.0, 5.0, 30.0]])  # 2-D: shapes are kept
    t_x = np.array([[0.0, 213.0, 300.0], [2.0, 50.0, 310.0]])
    T = np.array([[320.0, 320.0, 320.0], [3.0, 60.0, 320.0]])
    spend = np.array([[0.0, 40.0, 25.0], [10.0, 80.0, 12.5]])
    got = clv.clv(bg, CDNOW_GG, x, t_x, T, spend, horizon, 0.3, 0.1, cost, step)
    assert isinstance(got, np.ndarray) and got.shape == x.shape
    for i in np.ndindex(x.shape):
        want = step_by_step_clv(bg, x[i], t_x[i], T[i], spend[i], horizon, 0.3, 0.1, cost, step)
        assert got[i] == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_clv_rejects_nonsense_arguments() -> None:
    with pytest.raises(ClvInputError):
        clv_of(step_days=0.0)
    with pytest.raises(ClvInputError):
        clv_of(annual_discount_rate=-1.0)
    with pytest.raises(ClvInputError):
        clv_of(horizon_days=float("nan"))
