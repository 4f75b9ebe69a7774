"""A customer's predicted value: BG/NBD and Gamma-Gamma applied to the ledger.

Inputs come from the ledger's sufficient statistics, in days of event time:
``x`` repeat purchase days, ``t_x`` days from first to last purchase day,
``T`` days from the first purchase day to the as-of time, and the mean spend
per purchase day (Gamma-Gamma with ``spend_basis="all"``: every purchase day
informs the spend estimate, the first one included).

A batch is valued as arrays (`value_arrays`): P(alive) once, the BG/NBD terms
of every customer and CLV step in one vectorised call (`clv.horizon_terms`),
the expected purchases read off the last step. CLV is linear in the margin rate
and in the cost to serve, so the expected discounted revenue and alive-days are
computed once and each customer's own margin rate and cost to serve per day are
applied afterwards. The alive-days term, as costly as the revenue one, is
computed only for the customers with a cost to serve (most have none): the
others' cost term is exactly 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stream_app.domain import clv
from stream_app.domain.clv import BgNbdParams, FitResult, FloatArray, GammaGammaParams
from stream_app.domain.events import MS_PER_DAY
from stream_app.domain.ledger import CustomerState

#: Tenure floor when turning cost to serve to date into a daily rate.
MIN_TENURE_DAYS = 30.0
#: Parameters used until the first fit: a typical retailer, rates per day.
PRIOR_BG = BgNbdParams(r=0.25, alpha=10.0, a=0.8, b=2.5)
PRIOR_GG = GammaGammaParams(p=6.0, q=4.0, v=25.0)


@dataclass(frozen=True, slots=True)
class ValueModel:
    """Fitted population parameters plus the business assumptions of CLV."""

    bg: BgNbdParams = PRIOR_BG
    gg: GammaGammaParams = PRIOR_GG
    version: int = 0
    annual_discount_rate: float = 0.10
    step_days: float = 7.0


@dataclass(frozen=True, slots=True)
class History:
    """The sufficient statistics of one customer at an as-of time (days)."""

    x: float
    t_x: float
    T: float
    mean_spend: float
    margin_rate: float
    cost_per_day: float


@dataclass(frozen=True, slots=True)
class Valuation:
    """Predicted value of one customer over a horizon from an as-of time."""

    as_of: int
    horizon_days: float
    p_alive: float
    expected_purchases: float
    expected_spend: float
    clv: float
    margin_rate: float
    cost_to_serve_per_day: float
    model_version: int

    @property
    def value_at_risk(self) -> float:
        """Value the customer would bring if alive, times the chance they are gone.

        ``clv / p_alive`` is the expected value given the customer is alive, since
        every term of CLV is weighted by being alive. The churn model, where it
        exists, replaces ``1 - p_alive`` with its own probability.
        """
        if self.clv <= 0:
            return 0.0
        return self.clv / max(self.p_alive, 1e-3) * (1.0 - self.p_alive)


def history(state: CustomerState, as_of: int) -> History | None:
    """Sufficient statistics at `as_of` (ms); None for a customer with no order yet.

    A customer whose orders were all free (or all refunded) has a purchase
    history like any other: BG/NBD predicts from it, and their mean spend is 0.

    >>> from stream_app.domain.ledger import CustomerState
    >>> s = CustomerState("C1", orders=3, revenue_c=9000, cogs_c=6000,
    ...                   purchase_days=(10, 12, 20), first_event=10 * 86_400_000)
    >>> h = history(s, 30 * 86_400_000)
    >>> (h.x, h.t_x, h.T, h.mean_spend, round(h.margin_rate, 3))
    (2.0, 10.0, 20.0, 30.0, 0.333)
    """
    days = state.purchase_days
    if not days:
        return None
    as_of_day = as_of / MS_PER_DAY
    first = float(days[0])
    T = max(as_of_day - first, float(days[-1]) - first)
    net_revenue = state.revenue_c - state.returned_c
    margin_rate = 0.0
    if net_revenue > 0:
        margin_rate = min(max(state.gross_margin_c / net_revenue, 0.0), 1.0)
    # Refunds lower the value of each future purchase day as they lowered past ones.
    mean_spend = max(net_revenue, 0) / 100 / len(days)
    start = state.first_event if state.first_event is not None else days[0] * MS_PER_DAY
    tenure = max((as_of - start) / MS_PER_DAY, MIN_TENURE_DAYS)
    return History(
        x=float(len(days) - 1),
        t_x=float(days[-1]) - first,
        T=T,
        mean_spend=mean_spend,
        margin_rate=margin_rate,
        cost_per_day=state.service_cost_c / 100 / tenure,
    )


@dataclass(frozen=True, slots=True)
class BatchValues:
    """A batch's predicted values as arrays, one element per customer."""

    p_alive: FloatArray
    expected_purchases: FloatArray
    expected_spend: FloatArray
    clv: FloatArray


def value_arrays(
    model: ValueModel,
    x: FloatArray,
    t_x: FloatArray,
    T: FloatArray,
    mean_spend: FloatArray,
    margin_rate: FloatArray,
    cost_per_day: FloatArray,
    horizon_days: float,
) -> BatchValues:
    """Value a batch of customers given as arrays of their sufficient statistics.

    One pass of BG/NBD over the batch (`clv.horizon_terms`): P(alive) once, the
    hypergeometric terms of every customer and CLV step in one vectorised call, the
    expected purchases read off the last step; the alive-days term (as costly as the
    revenue one) only for the customers with a cost to serve.

    >>> one = np.array([1.0])
    >>> v = value_arrays(ValueModel(), one, np.array([10.0]), np.array([20.0]),
    ...                  np.array([30.0]), np.array([0.5]), np.array([0.0]), 365.0)
    >>> bool(0 < v.p_alive[0] <= 1 and v.clv[0] > 0)
    True
    """
    x, t_x, T = clv.check_history(x, t_x, T)
    terms = clv.horizon_terms(
        model.bg, x, t_x, T, horizon_days, model.annual_discount_rate, model.step_days,
        costed=cost_per_day != 0.0,
    )
    # The spend factor of the revenue term, for every customer (`clv.clv` with
    # spend_basis="all": x + 1 purchase days): the margin rate of one who has never paid is 0.
    if mean_spend.shape == x.shape and float(mean_spend.min(initial=0.0)) >= 0.0 and (
            math.isfinite(float(mean_spend.sum()))):
        spend_value = clv.posterior_mean_spend(model.gg, x + 1.0, mean_spend)
    else:  # its checks name what is wrong
        spend_value = np.asarray(
            clv.expected_spend(model.gg, x, mean_spend, spend_basis="all"), dtype=np.float64
        )
    with np.errstate(invalid="ignore"):
        revenue = np.where(
            terms.discounted_purchases > 0, terms.discounted_purchases * spend_value, 0.0
        )
    # Gamma-Gamma models positive spends only; for a customer who has never paid it would
    # predict the population's mean spend, money they have never spent. Their expected
    # spend is 0, as is their margin rate and so the revenue term of their CLV.
    exp_spend = np.where(mean_spend > 0, spend_value, 0.0)
    # CLV is linear in the margin rate and in the cost to serve.
    value = revenue * margin_rate + (0.0 - terms.discounted_alive_days) * cost_per_day
    return BatchValues(terms.p_alive, terms.expected_purchases, exp_spend, value)


def value_many(
    model: ValueModel,
    histories: Sequence[History],
    horizon_days: float,
    as_of: Sequence[int],
) -> list[Valuation]:
    """Value many customers at once (vectorised over customers, see `value_arrays`)."""
    if not histories:
        return []
    columns = np.array(
        [(h.x, h.t_x, h.T, h.mean_spend, h.margin_rate, h.cost_per_day) for h in histories],
        dtype=np.float64,
    ).T
    x, t_x, T, spend, margin, cost = columns
    v = value_arrays(model, x, t_x, T, spend, margin, cost, horizon_days)
    version = model.version
    return [
        Valuation(as_of_i, horizon_days, p, n, e, c, h.margin_rate, h.cost_per_day, version)
        for as_of_i, h, p, n, e, c in zip(
            as_of, histories, v.p_alive.tolist(), v.expected_purchases.tolist(),
            v.expected_spend.tolist(), v.clv.tolist(), strict=True,
        )
    ]


def value_states(
    model: ValueModel, states: Sequence[tuple[CustomerState, int]], horizon_days: float
) -> list[Valuation | None]:
    """Value customers, each at its own as-of time; None for one before their first order."""
    histories = [history(state, as_of) for state, as_of in states]
    valued = [i for i, h in enumerate(histories) if h is not None]
    values = value_many(
        model, [h for h in histories if h is not None], horizon_days,
        [states[i][1] for i in valued],
    )
    out: list[Valuation | None] = [None] * len(states)
    for i, v in zip(valued, values, strict=True):
        out[i] = v
    return out


def value_one(
    model: ValueModel, state: CustomerState, as_of: int, horizon_days: float
) -> Valuation | None:
    """Value one customer; None before their first order."""
    return value_states(model, [(state, as_of)], horizon_days)[0]


@dataclass(frozen=True, slots=True)
class PopulationFit:
    """The result of fitting both models to the population's statistics."""

    bg: FitResult[BgNbdParams]
    gg: FitResult[GammaGammaParams] | None
    as_of_day: int


def fit_population(
    repeat_rows: Sequence[tuple[int, int, int, int]],
    spend_rows: Sequence[tuple[int, float, int]],
    as_of_day: int,
    previous: ValueModel | None = None,
) -> PopulationFit:
    """Fit BG/NBD on (x, t_x, first_day, count) rows and Gamma-Gamma on (n, spend, count).

    Rows are aggregated counts of identical statistics, so a population of any
    size is fitted from a table whose size grows with its diversity only. A `previous`
    model is a warm start, but the likelihood of a young stream is flat enough for a start
    in one corner (nobody drops out: a near 0) to stay there while the data move on; so the
    neutral start is fitted too, and the better of the converged fits kept.
    """
    rows = [r for r in repeat_rows if r[3] > 0 and as_of_day - r[2] >= r[1]]
    x = np.array([r[0] for r in rows], dtype=float)
    t_x = np.array([r[1] for r in rows], dtype=float)
    T = np.array([max(as_of_day - r[2], r[1]) for r in rows], dtype=float)
    w = np.array([r[3] for r in rows], dtype=float)
    bg = clv.fit_bgnbd(x, t_x, T, weights=w)
    if previous is not None and previous.version > 0:
        warm = clv.fit_bgnbd(x, t_x, T, weights=w, init=previous.bg)
        if warm.converged and (not bg.converged or warm.log_likelihood >= bg.log_likelihood):
            bg = warm
    spend = [r for r in spend_rows if r[0] > 0 and r[1] > 0 and r[2] > 0]
    gg = None
    if len(spend) >= 2:
        gg = clv.fit_gamma_gamma(
            np.array([r[0] for r in spend], dtype=float) - 1,
            np.array([r[1] for r in spend], dtype=float),
            weights=np.array([r[2] for r in spend], dtype=float),
            spend_basis="all",
        )
    return PopulationFit(bg=bg, gg=gg, as_of_day=as_of_day)
