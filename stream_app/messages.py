"""The alert, win-back and offer messages of the contract, built from the domain's decisions.

The domain decides (`stream_app.domain.alerts`, `stream_app.domain.winback`); this edge
turns a decision into the JSON object published on ``cvm.alerts`` or ``cvm.winback``
(schemas/alert.v1.json, schemas/winback.v1.json), with the wall-clock ``raised_at`` the
shell read when it publishes.
"""

from __future__ import annotations

from typing import Any

from stream_app.domain.alerts import Alert
from stream_app.domain.events import format_time
from stream_app.domain.offers import Offer
from stream_app.domain.rules import Reason
from stream_app.domain.winback import Trigger

__all__ = ["alert_message", "offer_message", "reason_message", "winback_message"]


def offer_message(offer: Offer) -> dict[str, Any]:
    """An offer as win-back triggers and lookups carry it (schemas/winback.v1.json)."""
    out: dict[str, Any] = {
        "category": offer.category,
        "kind": offer.kind,
        "probability": offer.probability,
        "margin": offer.margin,
        "expected_margin": offer.expected_margin,
        "reason": offer.reason,
    }
    if offer.because_of is not None:
        out["because_of"] = offer.because_of
    return out


def reason_message(reason: Reason) -> dict[str, Any]:
    """A reason as the contract's ``{"code", "detail", "contribution"}`` object."""
    return {
        "code": reason.code,
        "detail": reason.detail[:1024],
        "contribution": round(reason.contribution, 4),
    }


def _percentile(tier: float) -> float:
    return min(max(float(tier), 0.0), 100.0)


def alert_message(alert: Alert, raised_at: str) -> dict[str, Any]:
    """The alert as a ``cvm.alerts`` message (schemas/alert.v1.json).

    ``raised_at`` is the wall-clock time, RFC 3339 with an offset or Z, which the
    shell reads when it publishes; everything else is event time.
    """
    return {
        "alert_id": alert.alert_id,
        "customer_id": alert.customer_id,
        "kind": alert.kind,
        "severity": alert.severity,
        "raised_at": raised_at,
        "as_of": format_time(alert.as_of),
        "clv": round(alert.clv, 2),
        "churn_probability": round(min(max(alert.churn_probability, 0.0), 1.0), 4),
        "value_tier": _percentile(alert.value_tier),
        "reasons": [reason_message(r) for r in alert.reasons],
        "model_version": alert.model_version,
        "schema_version": 1,
        **({} if alert.value_tier_at_last_order is None else {
            "value_tier_at_last_order": _percentile(alert.value_tier_at_last_order)}),
    }



def winback_message(trigger: Trigger, raised_at: str) -> dict[str, Any]:
    """The trigger as a ``cvm.winback`` message (schemas/winback.v1.json).

    A control-group trigger is published too, marked ``control_group: true``:
    readers record it and send nothing.
    """
    return {
        "trigger_id": trigger.trigger_id,
        "customer_id": trigger.customer_id,
        "raised_at": raised_at,
        "as_of": format_time(trigger.as_of),
        "clv_lost": round(trigger.clv_lost, 2),
        "p_alive": round(trigger.p_alive, 4),
        "recommended_channel": trigger.recommended_channel,
        "offer_budget": max(round(trigger.offer_budget, 2), 0.0),
        "control_group": trigger.control_group,
        "reasons": [reason_message(r) for r in trigger.reasons],
        "model_version": trigger.model_version,
        "schema_version": 1,
    }

