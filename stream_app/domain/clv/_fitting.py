"""Maximum likelihood on log-parameters: L-BFGS-B with bounds, and the checks of its outcome."""

from __future__ import annotations

import math
from typing import Any, TypeVar

import numpy as np

from ._arrays import FloatArray
from .params import BgNbdParams, FitResult, GammaGammaParams

P = TypeVar("P", BgNbdParams, GammaGammaParams)

# scipy.optimize (a second or so to import) is imported by the fits only, not by lookups.

# Bounds of the optimiser on the (scaled) log-parameters: exp(+-12) spans 6e-6 .. 1.6e5.
_LOG_BOUND = 12.0
# A fitted log-parameter this close to a bound counts as "at the bound".
_BOUND_TOL = 1e-3


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


def fit_result(
    params: P,
    theta: FloatArray,
    names: tuple[str, ...],
    fit: tuple[int, bool, str],
    ll: float,
    total: float,
    problems: list[str],
    note: str = "",
) -> FitResult[P]:
    """The `FitResult` of a finished optimisation: ``converged`` unless the optimiser failed,
    a parameter ended on a bound, the likelihood is not finite, or ``problems`` (the
    model's own checks) says why not."""
    nit, ok, message = fit
    problems = ([f"optimiser: {message}"] if not ok else []) + problems
    bound = _at_bound(theta, names)
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
        message=(message if converged else "; ".join(problems)) + note,
    )
