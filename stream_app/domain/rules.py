"""The vocabulary of the retention rules: reason codes, weights, reasons, ids, checks.

Alerts (`stream_app.domain.alerts`) and win-back triggers (`stream_app.domain.winback`)
explain themselves the same way: each rule that fires is a signal ``(code, strength,
detail)``; its weight times its capped strength is its part of the rule score, and its
share of that score is the reason's contribution. Ids are deterministic digests of what
was decided, so a replay makes the same ids.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Final

from stream_app.domain.events import MS_PER_DAY

__all__ = [
    "ALERT_CODES",
    "DEFAULT_WEIGHTS",
    "WINBACK_CODES",
    "Reason",
    "Signal",
    "check_positive",
    "check_share",
    "day_stamp",
    "digest",
    "distinct",
    "shares",
    "weighted",
]

#: Reason codes of `defection_reasons`, in a fixed order (ties sort by this order).
ALERT_CODES: Final = (
    "cancellation_request",
    "churn_risk",
    "p_alive_drop",
    "complaints",
    "recency_gap",
    "unresolved_contacts",
    "negative_sentiment",
    "unsubscribed",
    "spend_drop",
    "engagement_drop",
    "contact_surge",
)


#: Reason codes of a win-back trigger.
WINBACK_CODES: Final = ("p_alive_low", "long_silence")


#: Relative weight of each signal in the rule score (see `defection_reasons`).
#: A cancellation request is the most direct statement of intent; the churn model
#: summarises many signals; negative sentiment and unsubscribes are rare but, in the alert
#: study (``python -m load.alert_study``), right most often (0.90 and 0.76 of the alerts that
#: carry them) and early, smaller baskets more often than not (0.58); complaints are the
#: strongest service signal in the churn literature; a fall in the open rate is right less
#: than half the time (0.39), so counts half; a fall in P(alive) too (0.42), but it comes
#: early, as orders thin out, and tips the score next to other signals: its weight, 0.9, is
#: chosen with the rule score (see `AlertPolicy.min_score`); the rest count once.
DEFAULT_WEIGHTS: Final[Mapping[str, float]] = MappingProxyType(
    {
        "cancellation_request": 3.0,
        "churn_risk": 2.0,
        "p_alive_drop": 0.9,
        "complaints": 1.5,
        "recency_gap": 1.0,
        "unresolved_contacts": 1.0,
        "negative_sentiment": 2.0,
        "unsubscribed": 2.0,
        "spend_drop": 1.5,
        "engagement_drop": 0.5,
        "contact_surge": 1.0,
        "p_alive_low": 1.0,
        "long_silence": 1.0,
    }
)


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)



def check_positive(owner: str, **values: float) -> None:
    for name, value in values.items():
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"{owner}.{name}={value!r} must be a positive finite number")


def check_share(owner: str, **values: float) -> None:
    for name, value in values.items():
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{owner}.{name}={value!r} must be within [0, 1]")


@dataclass(frozen=True, slots=True)
class Reason:
    """One reason behind an alert or trigger: a stable code, the figures, a share of the score."""

    code: str
    detail: str
    contribution: float


Signal = tuple[str, float, str]  # (code, strength, detail)


def weighted(signals: list[Signal], weights: Mapping[str, float], cap: float) -> list[float]:
    return [weights.get(code, 1.0) * min(strength, cap) for code, strength, _ in signals]


def shares(
    signals: list[Signal], weights: Mapping[str, float], cap: float
) -> list[Reason]:
    """Turn (code, strength, detail) into reasons whose contributions sum to 1."""
    raw = weighted(signals, weights, cap)
    total = sum(raw)
    out = [
        Reason(code, detail, r / total if total > 0 else 1.0 / len(signals))
        for (code, _, detail), r in zip(signals, raw, strict=True)
    ]
    order = {code: i for i, code in enumerate(ALERT_CODES + WINBACK_CODES)}
    out.sort(key=lambda r: (-r.contribution, order.get(r.code, len(order)), r.code))
    return out


def day_stamp(ms: int) -> str:
    """The UTC day of an event time, as ``YYYYMMDD``.

    >>> day_stamp(86_400_000)
    '19700102'
    """
    return (_EPOCH + timedelta(days=ms // MS_PER_DAY)).strftime("%Y%m%d")


def digest(*parts: str) -> bytes:
    """SHA-256 of the parts joined by the unit separator."""
    return hashlib.sha256("\x1f".join(parts).encode()).digest()


def distinct(value: float, limit: float) -> tuple[str, str]:
    """`value` and `limit` with as few decimals (2 to 6) as show them apart.

    >>> distinct(0.2496, 0.25), distinct(0.1, 0.25)
    (('0.2496', '0.2500'), ('0.10', '0.25'))
    """
    for places in range(2, 7):
        a, b = f"{value:.{places}f}", f"{limit:.{places}f}"
        if a != b:
            return a, b
    return a, b

