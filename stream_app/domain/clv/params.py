"""The models' parameters and the outcome of a fit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from ._arrays import _check_positive

__all__ = ["BgNbdParams", "FitResult", "GammaGammaParams"]


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
