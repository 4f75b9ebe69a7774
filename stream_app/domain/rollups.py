"""Roll-ups per acquisition channel and per campaign: which ones pay off.

Every function returns increments ``(scope, name, field, delta)`` with integer
deltas (cents and counts), so roll-ups are kept exactly by adding the
increments in the same atomic write as the customer's own record.

Channel roll-ups hold the sum of their customers' ledgers; a customer whose
acquisition channel changes (a late, earlier first order) moves with all their
totals. Campaign roll-ups hold the campaign's touches and cost, and the orders
attributed to it: an order placed within the attribution window after the
customer's last click (or conversion) on that campaign, judged against the
touches applied so far (last-click attribution).
"""

from __future__ import annotations

from typing import Final

from stream_app.domain.events import MS_PER_DAY, CampaignTouch, Event, Purchase
from stream_app.domain.ledger import CustomerState, estimated_cost

Increment = tuple[str, str, str, int]

UNATTRIBUTED: Final = "unattributed"
ATTRIBUTION_WINDOW_MS: Final = 7 * MS_PER_DAY


def channel_totals(state: CustomerState) -> dict[str, int]:
    """The totals a customer contributes to their channel's roll-up."""
    if state.first_event is None:
        return {}
    return {
        "customers": 1,
        "buyers": 1 if state.orders > 0 else 0,
        "orders": state.orders,
        "revenue_c": state.revenue_c,
        "refunds_c": state.returned_c,
        "gross_margin_c": state.gross_margin_c,
        "cost_to_serve_c": state.service_cost_c,
        "marketing_cost_c": state.marketing_cost_c,
        "net_contribution_c": state.net_contribution_c,
    }


def channel_increments(before: CustomerState, after: CustomerState) -> list[Increment]:
    """Increments that move a customer's totals from `before` to `after`.

    >>> from stream_app.domain.ledger import CustomerState
    >>> a = CustomerState("C1", orders=1, revenue_c=500, first_event=0, acquisition_channel="web")
    >>> b = CustomerState("C1", orders=2, revenue_c=900, first_event=0, acquisition_channel="web")
    >>> sorted(i for i in channel_increments(a, b) if i[3])
    [('channel', 'web', 'gross_margin_c', 400), ('channel', 'web', 'net_contribution_c', 400), \
('channel', 'web', 'orders', 1), ('channel', 'web', 'revenue_c', 400)]
    """
    old_name = before.acquisition_channel or UNATTRIBUTED
    new_name = after.acquisition_channel or UNATTRIBUTED
    old, new = channel_totals(before), channel_totals(after)
    out: list[Increment] = []
    if old_name == new_name:
        for field in new.keys() | old.keys():
            delta = new.get(field, 0) - old.get(field, 0)
            if delta:
                out.append(("channel", new_name, field, delta))
        return out
    out += [("channel", old_name, f, -v) for f, v in old.items() if v]
    out += [("channel", new_name, f, v) for f, v in new.items() if v]
    return out


def campaign_increments(
    before: CustomerState, event: Event, default_margin_rate: float
) -> list[Increment]:
    """Increments a single event adds to campaign roll-ups (given the state before it)."""
    if isinstance(event, CampaignTouch):
        return [
            ("campaign", event.campaign_id, f"touches.{event.action}", 1),
            ("campaign", event.campaign_id, "cost_c", event.cost_c),
        ]
    if (
        isinstance(event, Purchase)
        and event.kind == "order"
        and before.last_click_campaign is not None
        and before.last_click_at is not None
        and 0 <= event.occurred_at - before.last_click_at <= ATTRIBUTION_WINDOW_MS
    ):
        cost = (
            event.cost_c
            if event.cost_c is not None
            else estimated_cost(event.amount_c, default_margin_rate)
        )
        name = before.last_click_campaign
        return [
            ("campaign", name, "attributed_orders", 1),
            ("campaign", name, "attributed_revenue_c", event.amount_c),
            ("campaign", name, "attributed_margin_c", event.amount_c - cost),
        ]
    return []
