"""Win-back outcomes: did a triggered customer return within the window, and the uplift.

`open_outcome` starts the outcome of a trigger, `observe_event` takes the customer's
later events into account (once each, under the ledger's applied-offset check) and
`winback_results` compares treatment with the control group.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from stream_app.domain.events import MS_PER_DAY, CampaignTouch, Event, Purchase
from stream_app.domain.winback import Trigger, WinbackPolicy

__all__ = ["WinbackOutcome", "observe_event", "open_outcome", "winback_results"]


@dataclass(frozen=True, slots=True)
class WinbackOutcome:
    """What became of one trigger: did the customer return within the window, for how much.

    ``regained_value`` is the gross value of the customer's orders within the
    response window (base currency); a converted touch marks the return without
    adding value.
    """

    trigger_id: str
    customer_id: str
    control_group: bool
    triggered_at: int
    closes_at: int
    clv_lost: float
    offer_budget: float
    returned_at: int | None = None
    returned_via: str | None = None
    regained_value: float = 0.0

    @property
    def returned(self) -> bool:
        return self.returned_at is not None

    def is_final(self, as_of: int) -> bool:
        """Whether the return is decided: the customer returned or the window closed."""
        return self.returned or as_of > self.closes_at


def open_outcome(trigger: Trigger, policy: WinbackPolicy | None = None) -> WinbackOutcome:
    """The outcome of a fresh trigger: not returned, window open from its as-of."""
    policy = policy or WinbackPolicy()
    return WinbackOutcome(
        trigger_id=trigger.trigger_id,
        customer_id=trigger.customer_id,
        control_group=trigger.control_group,
        triggered_at=trigger.as_of,
        closes_at=trigger.as_of + round(policy.response_window_days * MS_PER_DAY),
        clv_lost=trigger.clv_lost,
        offer_budget=0.0 if trigger.control_group else trigger.offer_budget,
    )


def observe_event(outcome: WinbackOutcome, event: Event) -> WinbackOutcome:
    """The outcome with a later event of the customer taken into account.

    An order, or a converted campaign touch, after the trigger and within the
    response window marks the customer returned (at the earliest such event,
    whatever the arrival order); orders add their amount to the regained value.
    Other events, and events outside the window, change nothing. The shell must
    observe each event once (under the ledger's applied-offset check).

    >>> o = WinbackOutcome("wb-1", "C1", False, 0, 10 * MS_PER_DAY, 500.0, 50.0)
    >>> o = observe_event(o, Purchase("e1", "C1", MS_PER_DAY, "order", 12_000, None, "web"))
    >>> o.returned, o.returned_via, o.regained_value
    (True, 'purchase', 120.0)
    """
    if event.customer_id != outcome.customer_id:
        raise ValueError(
            f"customer {event.customer_id}: event {event.event_id} observed on the win-back "
            f"outcome {outcome.trigger_id} of customer {outcome.customer_id}"
        )
    if not outcome.triggered_at < event.occurred_at <= outcome.closes_at:
        return outcome
    if isinstance(event, Purchase) and event.kind == "order":
        via, value = "purchase", event.amount_c / 100
    elif isinstance(event, CampaignTouch) and event.action == "converted":
        via, value = "converted_touch", 0.0
    else:
        return outcome
    new = replace(outcome, regained_value=outcome.regained_value + value)
    if outcome.returned_at is None or event.occurred_at < outcome.returned_at:
        new = replace(new, returned_at=event.occurred_at, returned_via=via)
    return new


@dataclass(slots=True)
class _Tally:
    triggers: int = 0
    returned: int = 0
    value: float = 0.0
    budget: float = 0.0

    def summary(self) -> dict[str, Any]:
        n = self.triggers
        return {
            "triggers": n,
            "returned": self.returned,
            "return_rate": self.returned / n if n else None,
            "regained_value": round(self.value, 2),
            "regained_per_trigger": round(self.value / n, 2) if n else None,
            "offer_budget": round(self.budget, 2),
        }


def winback_results(
    outcomes: Iterable[WinbackOutcome], as_of: int | None = None
) -> dict[str, Any]:
    """Treatment against control: return rates, regained value and the uplift.

    With ``as_of``, outcomes not yet decided (not returned, window still open)
    are counted as ``pending`` and left out of the rates. ``uplift`` is the
    treatment return rate minus the control one; ``incremental_value`` is the
    regained value per treated trigger above the control's, times the treated
    triggers (what the offers brought beyond what would have come anyway). Both
    are None while a group is empty.

    >>> o = [WinbackOutcome(f"t{i}", f"C{i}", i >= 2, 0, 1, 100.0, 10.0,
    ...                     returned_at=1 if i in (0, 2) else None,
    ...                     regained_value=50.0 if i in (0, 2) else 0.0) for i in range(4)]
    >>> r = winback_results(o)
    >>> r["treatment"]["return_rate"], r["control"]["return_rate"], r["uplift"]
    (0.5, 0.5, 0.0)
    """
    groups = {"treatment": _Tally(), "control": _Tally()}
    pending = 0
    for o in outcomes:
        if as_of is not None and not o.is_final(as_of):
            pending += 1
            continue
        g = groups["control" if o.control_group else "treatment"]
        g.triggers += 1
        g.returned += 1 if o.returned else 0
        g.value += o.regained_value
        g.budget += o.offer_budget

    t, c = groups["treatment"], groups["control"]
    uplift: float | None = None
    incremental: float | None = None
    if t.triggers and c.triggers:
        uplift = t.returned / t.triggers - c.returned / c.triggers
        incremental = round((t.value / t.triggers - c.value / c.triggers) * t.triggers, 2)
    return {
        "treatment": t.summary(),
        "control": c.summary(),
        "pending": pending,
        "uplift": uplift,
        "incremental_value": incremental,
    }

