"""Loss-making customers: causes with known answers, primary cause, groups and actions."""

from __future__ import annotations

import pytest

from stream_app.domain.unprofitable import (
    ACTIONS,
    CAUSES,
    LossMaker,
    causes,
    is_loss_making,
    loss_maker,
    summarize,
)


@pytest.mark.parametrize(("money", "want"), [
    # Kept 80.00 at a 20 % margin: 20.00 returned lost 4.00 of margin; 8.00 short of 30 %.
    ((10_000, 2_000, 6_400, 1_500, 800), {"returns": 400, "cost_to_serve": 1500,
                                          "marketing_cost": 800, "low_margin": 800}),
    # Everything returned: the reference rate prices the lost margin.
    ((5_000, 5_000, 0, 0, 0), {"returns": 1500, "cost_to_serve": 0, "marketing_cost": 0,
                               "low_margin": 0}),
    # Sold below cost: no margin lost to returns, the whole shortfall is low margin.
    ((10_000, 1_000, 9_500, 0, 0), {"returns": 0, "cost_to_serve": 0, "marketing_cost": 0,
                                    "low_margin": 2_700 + 500}),
    # Never bought: only what was spent on the customer.
    ((0, 0, 0, 700, 300), {"returns": 0, "cost_to_serve": 700, "marketing_cost": 300,
                           "low_margin": 0}),
])
def test_causes_known_answers(money: tuple[int, ...], want: dict[str, int]) -> None:
    assert causes(*money, 0.3) == want


def test_loss_making_needs_both_negative() -> None:
    assert is_loss_making(-1, -0.01)
    assert not is_loss_making(0, -5.0)
    assert not is_loss_making(-500, 0.0)
    assert not is_loss_making(-500, None)


def test_primary_cause_action_and_groups() -> None:
    a = loss_maker("A", -2_000, -15.0, "web", "lost",
                   {"revenue": 3_000, "cost_of_goods": 2_100, "cost_to_serve": 2_900}, 0.3)
    b = loss_maker("B", -500, -2.5, "web", "at_risk",
                   {"revenue": 4_000, "refunds": 3_000, "cost_of_goods": 700,
                    "marketing_cost": 100}, 0.3)
    c = LossMaker("C", -300, -1.0, "store", "lost", {"marketing_cost": 200, "low_margin": 200})
    assert a.primary_cause == "cost_to_serve"
    assert b.causes["returns"] == 900 and b.primary_cause == "returns"
    assert c.primary_cause == "marketing_cost"  # a tie goes to the earlier cause
    doc = summarize([c, b, a], n=2)
    assert doc["customers"] == 3 and doc["total_loss"] == 28.0
    assert [m["customer_id"] for m in doc["top"]] == ["A", "B"]
    top = doc["top"][0]
    assert top["action"] == ACTIONS["cost_to_serve"] and top["net_contribution"] == -20.0
    assert top["cause_shares"]["cost_to_serve"] == round(2_900 / 2_900, 3)
    assert doc["by_channel"] == [{"channel": "web", "customers": 2, "loss": 25.0},
                                 {"channel": "store", "customers": 1, "loss": 3.0}]
    assert doc["by_segment"] == [{"segment": "lost", "customers": 2, "loss": 23.0},
                                 {"segment": "at_risk", "customers": 1, "loss": 5.0}]
    assert {k: v["customers"] for k, v in doc["by_cause"].items()} == {
        "returns": 1, "cost_to_serve": 1, "marketing_cost": 1, "low_margin": 0}
    assert doc["by_cause"]["marketing_cost"]["amount"] == 3.0
    assert set(ACTIONS) == set(CAUSES) and all(ACTIONS.values())
