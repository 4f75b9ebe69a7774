"""The batch valuation gives the numbers of the closed forms applied customer by customer.

`valuation.value_states` values a whole batch in one pass (`clv.horizon_terms`); the
reference below is the per-customer composition of the public closed forms (`p_alive`,
`expected_purchases`, `expected_spend` and two `clv` sums), called one customer at a time,
as the engine computed each valuation before. They must agree to 1e-9 relative on random
ledgers, for any model, horizon and as-of time.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_app.domain import clv
from stream_app.domain.events import MS_PER_DAY
from stream_app.domain.ledger import CustomerState
from stream_app.domain.valuation import Valuation, ValueModel, history, value_arrays, value_states

REL = 1e-9


def reference_value(
    model: ValueModel, state: CustomerState, as_of: int, horizon: float
) -> Valuation | None:
    """One customer valued with the public closed forms, one call per quantity."""
    h = history(state, as_of)
    if h is None:
        return None
    bg, gg = model.bg, model.gg
    alive = float(clv.p_alive(bg, h.x, h.t_x, h.T))
    purchases = float(clv.expected_purchases(bg, horizon, h.x, h.t_x, h.T))
    spend = 0.0
    if h.mean_spend > 0:
        spend = float(clv.expected_spend(gg, h.x, h.mean_spend, spend_basis="all"))
    revenue = float(clv.clv(bg, gg, h.x, h.t_x, h.T, h.mean_spend, horizon, 1.0,
                            model.annual_discount_rate, 0.0, model.step_days,
                            spend_basis="all"))
    alive_days = 0.0
    if h.cost_per_day != 0.0:
        alive_days = float(clv.clv(bg, gg, h.x, h.t_x, h.T, h.mean_spend, horizon, 0.0,
                                   model.annual_discount_rate, 1.0, model.step_days,
                                   spend_basis="all"))
    return Valuation(as_of, horizon, alive, purchases, spend,
                     revenue * h.margin_rate + alive_days * h.cost_per_day,
                     h.margin_rate, h.cost_per_day, model.version)


def close(got: float, want: float) -> bool:
    return math.isclose(got, want, rel_tol=REL, abs_tol=1e-12)


ledger = st.builds(
    lambda first, gaps, revenue, refund_share, cogs_share, service, silence: (
        CustomerState(
            "C",
            orders=len(gaps) + 1,
            revenue_c=revenue,
            returned_c=int(revenue * refund_share),
            cogs_c=int(revenue * cogs_share),
            service_cost_c=service,
            purchase_days=tuple(np.cumsum([first, *gaps]).tolist()),
            first_event=first * MS_PER_DAY - 3_600_000,
        ),
        silence,
    ),
    st.integers(19_000, 20_500),
    st.lists(st.integers(1, 120), max_size=40),
    st.integers(0, 5_000_000),
    st.sampled_from([0.0, 0.0, 0.1, 1.0]),
    st.floats(0.0, 1.2),
    st.sampled_from([0, 0, 0, 150, 20_000]),
    st.integers(0, 900 * MS_PER_DAY),
)
model = st.builds(
    lambda r, alpha, a, b, p, q, v, rate: ValueModel(
        bg=clv.BgNbdParams(r, alpha, a, b), gg=clv.GammaGammaParams(p, q, v),
        annual_discount_rate=rate,
    ),
    st.floats(0.05, 3.0), st.floats(1.0, 200.0), st.floats(0.2, 3.0), st.floats(0.5, 8.0),
    st.floats(0.5, 10.0), st.floats(1.5, 8.0), st.floats(1.0, 100.0),
    st.sampled_from([0.0, 0.1, 0.3]),
)


@settings(max_examples=60, deadline=None)
@given(model, st.lists(ledger, min_size=1, max_size=25),
       st.sampled_from([30.0, 90.0, 365.0, 400.5]))
def test_batch_equals_customer_by_customer(
    m: ValueModel, ledgers: list[tuple[CustomerState, int]], horizon: float
) -> None:
    batch = [(s, (s.purchase_days[-1] * MS_PER_DAY) + silence) for s, silence in ledgers]
    got = value_states(m, batch, horizon)
    for (state, as_of), v in zip(batch, got, strict=True):
        want = reference_value(m, state, as_of, horizon)
        assert want is not None and v is not None
        for name in ("p_alive", "expected_purchases", "expected_spend", "clv",
                     "margin_rate", "cost_to_serve_per_day"):
            assert close(getattr(v, name), getattr(want, name)), (name, v, want)
        assert (v.as_of, v.horizon_days, v.model_version) == (as_of, horizon, m.version)


def test_a_batch_mixes_customers_with_and_without_a_cost_to_serve() -> None:
    m = ValueModel()
    day = 20_000
    states = [
        (CustomerState("A", orders=3, revenue_c=9_000, cogs_c=6_000, service_cost_c=2_000,
                       purchase_days=(day, day + 9, day + 30)), (day + 60) * MS_PER_DAY),
        (CustomerState("B", orders=1, revenue_c=0, purchase_days=(day,)), day * MS_PER_DAY),
        (CustomerState("C", first_event=0), MS_PER_DAY),
    ]
    got = value_states(m, states, 365.0)
    assert got[2] is None
    for (state, as_of), v in zip(states[:2], got[:2], strict=True):
        want = reference_value(m, state, as_of, 365.0)
        assert v is not None and want is not None
        assert dataclasses.astuple(v) == pytest.approx(dataclasses.astuple(want), rel=REL)
    assert got[0] is not None and got[0].cost_to_serve_per_day > 0


# A batch's arrays are checked in a few whole-array operations (`clv.check_history`); what
# fails them is checked element by element, which names the problem.
@pytest.mark.parametrize(("column", "value", "message"), [
    (0, math.nan, "x: 1 non-finite"),
    (0, -1.0, "x: 1 negative"),
    (1, math.inf, "t_x: 1 non-finite"),
    (1, 50.0, "t_x > T for 1"),
    (2, -math.inf, "T: 1 non-finite"),
    (3, -5.0, "mean_spend: 1 negative"),
    (3, math.nan, "mean_spend: 1 non-finite"),
])
def test_a_bad_statistic_in_a_batch_is_named(column: int, value: float, message: str) -> None:
    columns = [np.array([2.0, 1.0, 3.0]), np.array([10.0, 5.0, 20.0]),
               np.array([30.0, 40.0, 50.0]), np.array([20.0, 0.0, 35.0])]
    columns[column][1] = value
    with pytest.raises(clv.ClvInputError, match=message):
        value_arrays(ValueModel(), *columns, np.zeros(3), np.zeros(3), 365.0)


def test_statistics_whose_sum_overflows_are_still_valued() -> None:
    huge = np.array([1e308, 1e308])
    v = value_arrays(ValueModel(), np.array([1.0, 2.0]), np.array([1e307, 1e307]), huge,
                     np.array([10.0, 10.0]), np.array([0.5, 0.5]), np.zeros(2), 365.0)
    assert v.p_alive.shape == (2,)


def test_t_x_within_the_rounding_slack_of_t_is_taken_as_t() -> None:
    x, T = np.array([2.0]), np.array([100.0])
    ok = value_arrays(ValueModel(), x, T * (1 + 1e-12), T, np.array([10.0]), np.array([0.5]),
                      np.zeros(1), 365.0)
    exact = value_arrays(ValueModel(), x, T.copy(), T, np.array([10.0]), np.array([0.5]),
                         np.zeros(1), 365.0)
    assert ok.clv[0] == exact.clv[0]


def test_a_refit_is_not_trapped_by_a_degenerate_previous_fit() -> None:
    """Early in this stream the fit says nobody drops out (a near 0); warm-started from it,
    later fits stayed there, 2 to 21 log-likelihood units below the fit from the neutral
    start. The population is the simulator's, replayed through the ledger, and the statistics
    are those a worker's fit reads (`backfill.fit_model`)."""
    from load.bench_valuation import _replay
    from load.simulator import SimConfig
    from stream_app.backfill import fit_model

    replayed = _replay(SimConfig(n_customers=600, days=300, acquisition_days=100, seed=31),
                       (40, 100))
    first, _ = fit_model(replayed[40][1], replayed[40][0], ValueModel())
    assert first.bg.converged and first.bg.params.a < 1e-3  # the degenerate corner
    previous = ValueModel(bg=first.bg.params, version=1)
    as_of, states = replayed[100]
    warm, _ = fit_model(states, as_of, previous)
    cold, _ = fit_model(states, as_of, ValueModel())
    assert warm.bg.converged
    assert warm.bg.log_likelihood >= cold.bg.log_likelihood - 1e-9
    assert warm.bg.params.a > 0.5
