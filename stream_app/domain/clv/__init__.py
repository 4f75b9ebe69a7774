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

The package, one concept per module:

``params``       the models' parameters and `FitResult`;
``bgnbd``        BG/NBD likelihood, fit, P(alive) and expected purchases;
``gamma_gamma``  Gamma-Gamma likelihood, fit and expected spend;
``lifetime``     the discounted CLV over a horizon, and its batch terms;
``simulate``     draws from both processes.

Everything public is importable from ``stream_app.domain.clv`` itself.
"""

from __future__ import annotations

from ._arrays import ClvInputError, FloatArray, FloatOrArray, SpendBasis, check_history
from .bgnbd import (
    bgnbd_log_likelihood,
    expected_purchases,
    expected_purchases_new,
    fit_bgnbd,
    p_alive,
)
from .gamma_gamma import (
    expected_spend,
    fit_gamma_gamma,
    gamma_gamma_log_likelihood,
    posterior_mean_spend,
)
from .lifetime import DAYS_PER_YEAR, HorizonTerms, clv, horizon_terms
from .params import BgNbdParams, FitResult, GammaGammaParams
from .simulate import simulate_bgnbd, simulate_gamma_gamma

__all__ = [
    "DAYS_PER_YEAR",
    "BgNbdParams",
    "ClvInputError",
    "FitResult",
    "FloatArray",
    "FloatOrArray",
    "GammaGammaParams",
    "HorizonTerms",
    "SpendBasis",
    "bgnbd_log_likelihood",
    "check_history",
    "clv",
    "expected_purchases",
    "expected_purchases_new",
    "expected_spend",
    "fit_bgnbd",
    "fit_gamma_gamma",
    "gamma_gamma_log_likelihood",
    "horizon_terms",
    "p_alive",
    "posterior_mean_spend",
    "simulate_bgnbd",
    "simulate_gamma_gamma",
]
