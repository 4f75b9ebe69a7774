"""Loss-making customers: who costs more than they bring, why, and what to do about it.

A customer is loss-making when both their net contribution to date and their CLV
(the expected future net contribution) are negative: they have cost money and
are expected to go on costing it.

What took their margin away is broken down into four causes, in cents:

* ``returns``: the margin lost on returned orders, the refunds times the margin
  rate the customer's kept orders earned (the reference rate if they kept none);
* ``cost_to_serve``: service contacts;
* ``marketing_cost``: campaign touches;
* ``low_margin``: how far the gross margin falls short of the reference margin
  rate (CVM_DEFAULT_MARGIN_RATE) on what the customer kept; deep discounts and
  cheap baskets show here.

The largest is the customer's primary cause, and each cause has a recommended
action (`ACTIONS`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

__all__ = ["ACTIONS", "CAUSES", "LossMaker", "causes", "is_loss_making", "loss_maker",
           "summarize"]

CAUSES: Final = ("returns", "cost_to_serve", "marketing_cost", "low_margin")
#: What a marketer or service manager can do about each cause.
ACTIONS: Final = MappingProxyType({
    "returns": "review the returns: check return reasons and sizing advice, and leave the "
               "customer out of free-return and high-return-rate offers",
    "cost_to_serve": "move service to a cheaper channel (self-service, chat, email) and fix "
                     "the cause of repeated contacts",
    "marketing_cost": "stop paid touches: keep to owned channels (email, app) until the "
                      "customer buys again",
    "low_margin": "stop discounts and steer offers to higher-margin products",
})


def is_loss_making(net_c: int, clv: float | None) -> bool:
    """Negative net contribution and negative CLV (a customer never valued is not listed).

    >>> is_loss_making(-1, -0.5), is_loss_making(-1, 3.0), is_loss_making(5, -3.0)
    (True, False, False)
    """
    return net_c < 0 and clv is not None and clv < 0


def causes(
    revenue_c: int,
    refunds_c: int,
    cost_of_goods_c: int,
    cost_to_serve_c: int,
    marketing_cost_c: int,
    reference_margin_rate: float,
) -> dict[str, int]:
    """What each cause took from the customer's margin, in cents (each >= 0).

    `cost_of_goods_c` is net of returned goods, as the ledger keeps it.

    >>> causes(10_000, 2_000, 6_400, 1_500, 800, 0.3)
    {'returns': 400, 'cost_to_serve': 1500, 'marketing_cost': 800, 'low_margin': 800}
    >>> causes(0, 0, 0, 500, 0, 0.3)
    {'returns': 0, 'cost_to_serve': 500, 'marketing_cost': 0, 'low_margin': 0}
    """
    kept = revenue_c - refunds_c
    margin = kept - cost_of_goods_c
    rate = margin / kept if kept > 0 else reference_margin_rate
    return {
        "returns": max(round(refunds_c * max(rate, 0.0)), 0),
        "cost_to_serve": max(cost_to_serve_c, 0),
        "marketing_cost": max(marketing_cost_c, 0),
        "low_margin": max(round(reference_margin_rate * max(kept, 0)) - margin, 0),
    }


@dataclass(frozen=True, slots=True)
class LossMaker:
    """One loss-making customer, with the causes of the loss."""

    customer_id: str
    net_c: int
    clv: float
    channel: str
    segment: str
    causes: Mapping[str, int]

    @property
    def primary_cause(self) -> str:
        """The cause that took the most (the first of `CAUSES` on a tie)."""
        return max(CAUSES, key=lambda c: (self.causes.get(c, 0), -CAUSES.index(c)))

    def as_dict(self) -> dict[str, Any]:
        total = sum(self.causes.values())
        return {
            "customer_id": self.customer_id,
            "net_contribution": self.net_c / 100,
            "clv": self.clv,
            "acquisition_channel": self.channel,
            "rfm_segment": self.segment,
            "causes": {c: self.causes.get(c, 0) / 100 for c in CAUSES},
            "cause_shares": {
                c: None if not total else round(self.causes.get(c, 0) / total, 3)
                for c in CAUSES
            },
            "primary_cause": self.primary_cause,
            "action": ACTIONS[self.primary_cause],
        }


def loss_maker(
    customer_id: str,
    net_c: int,
    clv: float,
    channel: str,
    segment: str,
    money: Mapping[str, int],
    reference_margin_rate: float,
) -> LossMaker:
    """A `LossMaker` from a record's money (cents: revenue, refunds, cost_of_goods,
    cost_to_serve, marketing_cost)."""
    return LossMaker(customer_id, net_c, clv, channel, segment, causes(
        money.get("revenue", 0), money.get("refunds", 0), money.get("cost_of_goods", 0),
        money.get("cost_to_serve", 0), money.get("marketing_cost", 0), reference_margin_rate,
    ))


def _group(makers: Iterable[LossMaker], key: str) -> list[dict[str, Any]]:
    rows: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for m in makers:
        row = rows[getattr(m, key)]
        row[0] += 1
        row[1] -= m.net_c
    return [
        {key: name, "customers": n, "loss": loss / 100}
        for name, (n, loss) in sorted(rows.items(), key=lambda kv: (-kv[1][1], kv[0]))
    ]


def summarize(makers: Iterable[LossMaker], n: int) -> dict[str, Any]:
    """Counts and losses overall, per cause, channel and segment; the `n` largest losses.

    The loss of a customer is minus their net contribution. Per cause: the
    customers whose primary cause it is, and the amount the cause took over all
    loss-making customers.

    >>> a = LossMaker("A", -500, -2.0, "web", "lost", {"cost_to_serve": 900})
    >>> b = LossMaker("B", -100, -1.0, "store", "lost", {"returns": 300, "marketing_cost": 50})
    >>> doc = summarize([a, b], 1)
    >>> doc["customers"], doc["total_loss"], [c["customer_id"] for c in doc["top"]]
    (2, 6.0, ['A'])
    >>> doc["by_cause"]["returns"], doc["by_segment"]
    ({'customers': 1, 'amount': 3.0, 'action': 'review the returns: check return reasons and \
sizing advice, and leave the customer out of free-return and high-return-rate offers'}, \
[{'segment': 'lost', 'customers': 2, 'loss': 6.0}])
    """
    makers = list(makers)
    counts = dict.fromkeys(CAUSES, 0)
    cents = dict.fromkeys(CAUSES, 0)
    for m in makers:
        counts[m.primary_cause] += 1
        for c in CAUSES:
            cents[c] += m.causes.get(c, 0)
    by_cause: dict[str, dict[str, Any]] = {
        c: {"customers": counts[c], "amount": cents[c] / 100, "action": ACTIONS[c]}
        for c in CAUSES
    }
    makers.sort(key=lambda m: (m.net_c, m.customer_id))
    return {
        "customers": len(makers),
        "total_loss": -sum(m.net_c for m in makers) / 100,
        "by_cause": by_cause,
        "by_channel": _group(makers, "channel"),
        "by_segment": _group(makers, "segment"),
        "top": [m.as_dict() for m in makers[:n]],
    }
