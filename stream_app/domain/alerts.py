"""Defection alerts and win-back triggers: reasons, severity, cooldown, control groups.

Pure rules over a customer's ledger (`CustomerState`) and predicted value
(`Valuation`): no Kafka, Redis, Faust, clock or environment. Every time is epoch
milliseconds of **event time**; the wall-clock ``raised_at`` of a published
message is the shell's business and is passed to `to_message` /
`to_winback_message` as a string.

Alerts (``cvm.alerts``)
    `decide_alert` raises a ``defection_risk`` alert for a customer whose value
    tier is at least `AlertPolicy.min_value_tier` and who shows at least one
    defection signal (`defection_reasons`). Severity comes from the value at
    risk. A per-customer `AlertMemory` gives the cooldown, the deduplication and
    the reference for "a fall in P(alive)".

Win-back (``cvm.winback``)
    `decide_winback` raises one trigger per lapse episode of a formerly valuable
    customer, with the channel this customer responded to best, an offer budget
    bounded by the value to regain and a deterministic control-group split.
    `open_outcome`, `observe_event` and `winback_results` close the loop.

What the shell keeps per customer, between events: an `AlertMemory`, a
`WinbackMemory`, the open `WinbackOutcome` (if any), the per-channel
`ChannelCounts` (kept with `record_touch`) and the value tier at the latest
purchase (the ``value_tier_when_valuable`` of `decide_winback`). Like the ledger,
these must change exactly once per event: apply them in the same atomic write as
the customer's record, under the same applied-offset check.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, Final

from stream_app.domain.events import MS_PER_DAY, CampaignTouch, Event, Purchase, format_time
from stream_app.domain.ledger import FAST_PREFIX, FAST_TAU_MS, RECENT_TAU_MS, CustomerState
from stream_app.domain.valuation import Valuation

__all__ = [
    "ALERT_CODES",
    "DEFAULT_WEIGHTS",
    "MIN_BAND_POPULATION",
    "SEVERITIES",
    "WINBACK_CODES",
    "Alert",
    "AlertMemory",
    "AlertPolicy",
    "ChannelCounts",
    "Reason",
    "Trigger",
    "WinbackMemory",
    "WinbackOutcome",
    "WinbackPolicy",
    "alert_id",
    "decide_alert",
    "decide_winback",
    "defection_reasons",
    "in_control_group",
    "observe_event",
    "open_outcome",
    "percentile_index",
    "population_bands",
    "recommended_channel",
    "record_touch",
    "severity",
    "to_message",
    "to_winback_message",
    "trigger_id",
    "value_at_risk",
    "winback_results",
]

#: Severities from least to most urgent (the alert contract's enum).
SEVERITIES: Final = ("low", "medium", "high", "critical")
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
)
#: Reason codes of a win-back trigger.
WINBACK_CODES: Final = ("p_alive_low", "long_silence")
#: Relative weight of each signal in the rule score (see `defection_reasons`).
#: A cancellation request is the most direct statement of intent; the churn model
#: and a fall in P(alive) summarise many signals; complaints are the strongest
#: service signal in the churn literature; the rest count once.
DEFAULT_WEIGHTS: Final[Mapping[str, float]] = MappingProxyType(
    {
        "cancellation_request": 3.0,
        "churn_risk": 2.0,
        "p_alive_drop": 1.5,
        "complaints": 1.5,
        "recency_gap": 1.0,
        "unresolved_contacts": 1.0,
        "negative_sentiment": 1.0,
        "unsubscribed": 1.0,
        "spend_drop": 1.0,
        "engagement_drop": 1.0,
        "p_alive_low": 1.0,
        "long_silence": 1.0,
    }
)

_TAU_DAYS: Final = RECENT_TAU_MS / MS_PER_DAY
_FAST_DAYS: Final = FAST_TAU_MS / MS_PER_DAY
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_RESPONSES: Final = ("clicked", "converted")
_BLOCKS: Final = ("unsubscribed", "bounced")


def _rank(name: str) -> int:
    return SEVERITIES.index(name)


def _check_positive(owner: str, **values: float) -> None:
    for name, value in values.items():
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"{owner}.{name}={value!r} must be a positive finite number")


def _check_share(owner: str, **values: float) -> None:
    for name, value in values.items():
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{owner}.{name}={value!r} must be within [0, 1]")


@dataclass(frozen=True, slots=True)
class AlertPolicy:
    """Thresholds of the defection alert; every one is configuration.

    The recent-activity thresholds apply to the ledger's decayed counters
    (``CustomerState.recent_at_time``, time constant 30 days): one event weighs 1
    when it happens and ``exp(-days / 30)`` later, so a threshold ``x`` is met by a
    single event for ``30 * ln(1 / x)`` days (0.5: about 21 days, 0.25: about 42
    days) or by several older ones.

    Parameters
    ----------
    min_value_tier
        Only customers at or above this CLV percentile (0..100) are alerted on.
        80: the top fifth, where most of the value sits and where a call pays off.
    churn_threshold
        Churn probability at or above which ``churn_risk`` fires (0.4, with
        `min_score`, see there). Without a churn model the probability is
        ``1 - p_alive``.
    p_alive_drop
        Fall of P(alive) from its reference (`AlertMemory.p_alive_ref`: its value at
        the last alert, or its highest value since) that fires ``p_alive_drop``.
    overdue_factor, overdue_min_purchase_days
        ``recency_gap`` fires when the days since the last order exceed
        ``overdue_factor`` times the customer's own mean gap between purchase days,
        for customers with at least ``overdue_min_purchase_days`` purchase days (two
        gaps make a rhythm). 1.5: a late order is common, 50 % late is not.
    complaints, cancellation_requests, unresolved, unsubscribed
        Decayed counts at or above which the signal fires. A complaint, an
        unresolved contact or an unsubscribe counts for about three weeks (0.5); a
        cancellation request, the most direct signal, for about six (0.25).
    sentiment
        Decayed sum of contact sentiment (-1..1 each) at or below which
        ``negative_sentiment`` fires: one moderately negative contact, or a few
        mildly negative ones, in the last three weeks (-0.2). Sentiment turns
        negative weeks before a dropout, while it is still mild: at -0.5 the signal
        came too late to give an account manager two weeks.
    spend_drop, spend_min_orders, spend_min_recent_orders
        ``spend_drop`` fires when the decay-weighted mean order value is at least
        this share below the customer's lifetime mean order value (0.3), for
        customers with ``spend_min_orders`` orders and recent orders weighing at
        least ``spend_min_recent_orders`` (the basket size; a fall in frequency is
        ``recency_gap``'s job).
    engagement_drop, engagement_min_rate, engagement_min_delivered
        ``engagement_drop`` fires when the open rate of the last ten days (decayed
        counters) is at least this share below the customer's lifetime open rate
        (0.5: opening half as often), for customers who opened at least
        ``engagement_min_rate`` of their mailings and had mailings delivered
        weighing at least ``engagement_min_delivered`` in the last ten days.
    cooldown_days
        After an alert no other one for the customer within this many days of event
        time (14: two weekly operator cycles), unless severity escalates or a code
        of ``escalate_on`` appears that the last alert did not have.
    escalate_on
        Reason codes that break the cooldown when new (a cancellation request is
        urgent whatever the severity).
    severity_bands
        Value at risk (base currency) at which severity becomes medium, high and
        critical; below the first band it is low. The worker replaces them with
        percentiles of the population's value at risk (`population_bands`) unless
        they are fixed by configuration; these defaults serve until the population
        is large enough, and suit a retailer whose valuable customers have a CLV in
        the thousands.
    min_severity
        Alerts below this severity are not raised (``low``: all are).
    min_signals, min_score
        An alert needs at least ``min_signals`` defection signals at once and a rule
        score (``sum(weight * capped strength)``, see `defection_reasons`) of at least
        ``min_score``; 1 and 0 let any one signal through. 3.5, with the default
        weights: a single signal reaches it only when strong (a recent cancellation
        request, a churn probability of 0.7 or more, a complaint streak at 7/3 times
        its threshold), otherwise it takes two or more. Chosen by ``python -m
        load.alert_study`` on simulated data where defection has precursors, with
        `churn_threshold` 0.4 and `sentiment` -0.2: of the candidates with a
        precision of at least 0.5 against the true dropouts, the one that alerts the
        largest share of valuable dropouts at least 14 days ahead (see the README's
        alert study).
    weights, max_strength
        Signal weights and the cap on a signal's strength in the rule score (see
        `defection_reasons`).
    kind
        The alert's ``kind`` in the contract.
    """

    min_value_tier: float = 80.0
    churn_threshold: float = 0.4
    p_alive_drop: float = 0.2
    overdue_factor: float = 1.5
    overdue_min_purchase_days: int = 3
    complaints: float = 0.5
    cancellation_requests: float = 0.25
    unresolved: float = 0.5
    sentiment: float = -0.2
    unsubscribed: float = 0.5
    spend_drop: float = 0.3
    spend_min_orders: int = 3
    spend_min_recent_orders: float = 0.25
    engagement_drop: float = 0.5
    engagement_min_rate: float = 0.1
    engagement_min_delivered: float = 1.0
    cooldown_days: float = 14.0
    escalate_on: tuple[str, ...] = ("cancellation_request",)
    severity_bands: tuple[float, float, float] = (250.0, 1_000.0, 5_000.0)
    min_severity: str = "low"
    min_signals: int = 1
    min_score: float = 3.5
    weights: Mapping[str, float] = field(default_factory=lambda: DEFAULT_WEIGHTS, hash=False)
    max_strength: float = 3.0
    kind: str = "defection_risk"

    def __post_init__(self) -> None:
        owner = "AlertPolicy"
        _check_positive(
            owner,
            churn_threshold=self.churn_threshold,
            p_alive_drop=self.p_alive_drop,
            overdue_factor=self.overdue_factor,
            complaints=self.complaints,
            cancellation_requests=self.cancellation_requests,
            unresolved=self.unresolved,
            unsubscribed=self.unsubscribed,
            spend_drop=self.spend_drop,
            engagement_drop=self.engagement_drop,
            max_strength=self.max_strength,
        )
        _check_share(owner, churn_threshold=self.churn_threshold, spend_drop=self.spend_drop,
                     engagement_drop=self.engagement_drop)
        if not self.sentiment < 0:
            raise ValueError(f"{owner}.sentiment={self.sentiment!r} must be negative")
        if not 0 <= self.min_value_tier <= 100:
            raise ValueError(f"{owner}.min_value_tier={self.min_value_tier!r} must be 0..100")
        if self.cooldown_days < 0:
            raise ValueError(f"{owner}.cooldown_days={self.cooldown_days!r} must be >= 0")
        bands = self.severity_bands
        if len(bands) != 3 or not 0 <= bands[0] <= bands[1] <= bands[2]:
            raise ValueError(f"{owner}.severity_bands={bands!r} must be 3 ascending amounts >= 0")
        if self.min_severity not in SEVERITIES:
            raise ValueError(f"{owner}.min_severity={self.min_severity!r} not in {SEVERITIES}")
        if any(w < 0 for w in self.weights.values()):
            raise ValueError(f"{owner}.weights must not be negative")
        if not 1 <= self.min_signals <= len(ALERT_CODES):
            raise ValueError(
                f"{owner}.min_signals={self.min_signals!r} must be 1..{len(ALERT_CODES)}"
            )
        if not (self.min_score >= 0 and math.isfinite(self.min_score)):
            raise ValueError(f"{owner}.min_score={self.min_score!r} must be a finite number >= 0")

    @property
    def cooldown_ms(self) -> int:
        return round(self.cooldown_days * MS_PER_DAY)


@dataclass(frozen=True, slots=True)
class Reason:
    """One reason behind an alert or trigger: a stable code, the figures, a share of the score."""

    code: str
    detail: str
    contribution: float

    def to_message(self) -> dict[str, Any]:
        """The reason as the contract's ``{"code", "detail", "contribution"}`` object."""
        return {
            "code": self.code,
            "detail": self.detail[:1024],
            "contribution": round(self.contribution, 4),
        }


@dataclass(frozen=True, slots=True)
class AlertMemory:
    """What `decide_alert` remembers about one customer between events.

    ``last_alert_at`` (event time, ms), ``last_severity``, ``last_alert_id`` and
    ``last_codes`` describe the last alert raised (cooldown, escalation,
    deduplication). ``p_alive_ref`` is the reference for a fall in P(alive): its
    value at the last alert, raised to any higher value seen since, so a slow
    slide over many events adds up.
    """

    last_alert_at: int | None = None
    last_severity: str | None = None
    last_alert_id: str | None = None
    last_codes: tuple[str, ...] = ()
    p_alive_ref: float | None = None


@dataclass(frozen=True, slots=True)
class Alert:
    """A defection alert, without its wall-clock ``raised_at`` (see `to_message`)."""

    alert_id: str
    customer_id: str
    kind: str
    severity: str
    as_of: int
    clv: float
    churn_probability: float
    value_tier: float
    value_at_risk: float
    reasons: tuple[Reason, ...]
    model_version: str


def _ymd(ms: int) -> str:
    return (_EPOCH + timedelta(days=ms // MS_PER_DAY)).strftime("%Y%m%d")


def _digest(*parts: str) -> bytes:
    return hashlib.sha256("\x1f".join(parts).encode()).digest()


def _churn(valuation: Valuation, churn_probability: float | None) -> float:
    p = 1.0 - valuation.p_alive if churn_probability is None else churn_probability
    return min(max(p, 0.0), 1.0)


def value_at_risk(valuation: Valuation, churn_probability: float | None = None) -> float:
    """Value the customer would bring if alive, times the probability they defect.

    This is `Valuation.value_at_risk` (the ``value_at_risk`` ranking) with the
    churn model's probability in place of ``1 - p_alive`` when there is one. CLV
    is already weighted by P(alive), so it is first divided by it: multiplying
    CLV itself by the churn probability would count the chance of being gone
    twice and rank nearly-lost customers too low.

    >>> v = Valuation(0, 365.0, 0.5, 1.0, 50.0, 1000.0, 0.3, 0.0, 1)
    >>> value_at_risk(v), value_at_risk(v, 0.8)
    (1000.0, 1600.0)
    """
    if churn_probability is None:
        return valuation.value_at_risk
    if valuation.clv <= 0:
        return 0.0
    return valuation.clv / max(valuation.p_alive, 1e-3) * min(max(churn_probability, 0.0), 1.0)


def severity(amount: float, bands: tuple[float, float, float] = (250.0, 1_000.0, 5_000.0)) -> str:
    """Severity of a value at risk: low below the first band, critical from the last.

    >>> [severity(x) for x in (0, 250, 999.99, 1000, 5000)]
    ['low', 'medium', 'medium', 'high', 'critical']
    """
    level = sum(1 for b in bands if amount >= b)
    return SEVERITIES[level]


#: Fewer customers with a value at risk than this, and the percentiles are noise.
MIN_BAND_POPULATION: Final = 100


def percentile_index(n: int, percentile: float) -> int:
    """0-based index of the nearest-rank `percentile` (0..100) among `n` sorted values.

    >>> [percentile_index(1000, p) for p in (80, 95, 99, 100)]
    [799, 949, 989, 999]
    >>> percentile_index(1, 50)
    0
    """
    return min(max(math.ceil(percentile / 100 * n) - 1, 0), n - 1)


def population_bands(
    amounts: Sequence[float], population: int, fallback: tuple[float, float, float]
) -> tuple[float, float, float]:
    """Severity bands from the values at risk found at three percentiles of the population.

    `amounts` are the values at risk at the medium, high and critical
    percentiles (e.g. the 80th, 95th and 99th: medium is the top fifth of all
    customers by value at risk, critical the top 1 %). With fewer than
    `MIN_BAND_POPULATION` customers, or no value at risk at the critical
    percentile, the `fallback` bands stay. Bands are made ascending.

    >>> population_bands([120.0, 900.0, 4000.0], 5000, (250.0, 1000.0, 5000.0))
    (120.0, 900.0, 4000.0)
    >>> population_bands([120.0, 900.0, 4000.0], 50, (250.0, 1000.0, 5000.0))
    (250.0, 1000.0, 5000.0)
    """
    if population < MIN_BAND_POPULATION or len(amounts) != 3 or not amounts[2] > 0:
        return fallback
    low = max(amounts[0], 0.0)
    mid = max(amounts[1], low)
    return low, mid, max(amounts[2], mid)


Signal = tuple[str, float, str]  # (code, strength, detail)


def _weighted(signals: list[Signal], weights: Mapping[str, float], cap: float) -> list[float]:
    return [weights.get(code, 1.0) * min(strength, cap) for code, strength, _ in signals]


def _shares(
    signals: list[Signal], weights: Mapping[str, float], cap: float
) -> list[Reason]:
    """Turn (code, strength, detail) into reasons whose contributions sum to 1."""
    raw = _weighted(signals, weights, cap)
    total = sum(raw)
    out = [
        Reason(code, detail, r / total if total > 0 else 1.0 / len(signals))
        for (code, _, detail), r in zip(signals, raw, strict=True)
    ]
    order = {code: i for i, code in enumerate(ALERT_CODES + WINBACK_CODES)}
    out.sort(key=lambda r: (-r.contribution, order.get(r.code, len(order)), r.code))
    return out


def defection_reasons(
    state: CustomerState,
    valuation: Valuation,
    churn_probability: float | None,
    previous: AlertMemory | None,
    as_of: int,
    policy: AlertPolicy | None = None,
) -> list[Reason]:
    """The defection signals a customer shows at `as_of`, largest contribution first.

    Each signal that fires has a strength: how far past its threshold it is
    (observed / threshold, so at least 1), capped at ``policy.max_strength`` so
    one extreme figure cannot hide the others. Its contribution is its share of
    the rule score ``sum(weight * strength)``: contributions lie in [0, 1] and
    sum to 1, and say which signals made this alert (why this customer, why
    now). A churn model able to attribute its score to features could supply
    the strengths instead; the shares would keep the same meaning.

    ``churn_probability`` None means no churn model: ``1 - p_alive`` stands in.
    ``previous`` gives the reference for a fall in P(alive); None: no reference.

    Examples
    --------
    >>> from stream_app.domain.events import MS_PER_DAY as D
    >>> s = CustomerState("C1", orders=3, revenue_c=30_000, purchase_days=(0, 10, 20),
    ...                   last_purchase=20 * D)
    >>> v = Valuation(50 * D, 365.0, 0.9, 3.0, 100.0, 900.0, 0.3, 0.0, 1)
    >>> [(r.code, round(r.contribution, 2)) for r in defection_reasons(
    ...     s, v, None, AlertMemory(p_alive_ref=0.95), 50 * D)]
    [('recency_gap', 1.0)]
    """
    policy = policy or AlertPolicy()
    signals = _signals(state, valuation, churn_probability, previous, as_of, policy)
    if not signals:
        return []
    return _shares(signals, policy.weights, policy.max_strength)


def _signals(
    state: CustomerState,
    valuation: Valuation,
    churn_probability: float | None,
    previous: AlertMemory | None,
    as_of: int,
    policy: AlertPolicy,
) -> list[Signal]:
    signals: list[Signal] = []
    recent = state.recent_at_time(as_of)
    churn = _churn(valuation, churn_probability)
    if churn >= policy.churn_threshold:
        signals.append((
            "churn_risk",
            churn / policy.churn_threshold,
            f"churn probability {churn:.2f}, at or above {policy.churn_threshold:.2f}; "
            f"{_order_pace(state, recent)}",
        ))
    if previous is not None and previous.p_alive_ref is not None:
        drop = previous.p_alive_ref - valuation.p_alive
        if drop >= policy.p_alive_drop:
            signals.append((
                "p_alive_drop",
                drop / policy.p_alive_drop,
                f"probability alive fell from {previous.p_alive_ref:.2f} "
                f"to {valuation.p_alive:.2f}",
            ))
    days = state.purchase_days
    if len(days) >= max(policy.overdue_min_purchase_days, 2) and state.last_purchase is not None:
        mean_gap = (days[-1] - days[0]) / (len(days) - 1)
        since = (as_of - state.last_purchase) / MS_PER_DAY
        limit = policy.overdue_factor * mean_gap
        if since > limit:
            signals.append((
                "recency_gap",
                since / limit,
                f"no order for {since:.0f} days against a usual gap of {mean_gap:.0f} days",
            ))
    counted = (
        ("cancellation_request", "cancellation_requests", policy.cancellation_requests,
         "cancellation requests"),
        ("complaints", "complaints", policy.complaints, "complaints"),
        ("unresolved_contacts", "unresolved", policy.unresolved, "unresolved contacts"),
        ("unsubscribed", "unsubscribed", policy.unsubscribed, "unsubscribes"),
    )
    for code, key, threshold, label in counted:
        weight = recent[key]
        if weight >= threshold:
            fast = recent.get(FAST_PREFIX + key, 0.0)
            signals.append((
                code,
                weight / threshold,
                f"{_count(weight)} {label} in the last {3 * _TAU_DAYS / 4:.0f} days, "
                f"{_count(fast)} in the last {_FAST_DAYS:.0f}: {_trend(fast, weight)} "
                f"(decayed counts {weight:.2f} and {fast:.2f})",
            ))
    mood = recent["sentiment"]
    if mood <= policy.sentiment:
        slow_mean = mood / max(recent["contacts"], 1e-9)
        fast_n = recent.get(FAST_PREFIX + "contacts", 0.0)
        fast_mean = recent.get(FAST_PREFIX + "sentiment", 0.0) / max(fast_n, 1e-9)
        if fast_n < 0.1:
            change = "no contact in the last days"
        elif fast_mean < slow_mean - 0.05:
            change = f"falling, {fast_mean:+.2f} in the last {_FAST_DAYS:.0f} days"
        else:
            change = f"{fast_mean:+.2f} in the last {_FAST_DAYS:.0f} days"
        signals.append((
            "negative_sentiment",
            mood / policy.sentiment,
            f"contact sentiment {slow_mean:+.2f} on average over the last "
            f"{3 * _TAU_DAYS / 4:.0f} days, {change} (decayed sum {mood:.2f})",
        ))
    engagement = _engagement(state, recent, policy)
    if engagement is not None:
        signals.append(engagement)
    recent_orders = recent["orders"]
    if (
        state.orders >= policy.spend_min_orders
        and state.revenue_c > 0
        and recent_orders >= policy.spend_min_recent_orders
    ):
        usual = state.revenue_c / 100 / state.orders
        basket = recent["spend"] / recent_orders
        fall = 1.0 - basket / usual
        if fall >= policy.spend_drop:
            signals.append((
                "spend_drop",
                fall / policy.spend_drop,
                f"recent orders average {basket:.2f} against a usual {usual:.2f} "
                f"({fall:.0%} lower), {_basket_trend(recent, basket)}",
            ))
    return signals


def _count(weight: float) -> str:
    """A decayed count as the number of events it most likely stands for.

    >>> _count(0.4), _count(0.6), _count(2.2)
    ('no', '1', '2')
    """
    n = round(weight)
    return "no" if n == 0 else str(n)


def _order_pace(state: CustomerState, recent: Mapping[str, float]) -> str:
    """The order pace of the last weeks against the customer's own rhythm, and its trend.

    A customer ordering every ``gap`` days keeps a decayed order count of about ``tau / gap``;
    the count against that is the pace (100 %: as usual). The 10-day pace against the 30-day
    one gives the trend.

    >>> s = CustomerState("C1", purchase_days=(0, 10, 20))
    >>> _order_pace(s, {"orders": 1.5, "f_orders": 0.1})
    'orders at 50% of their usual pace over the last 22 days, 10% over the last 10: falling'
    >>> _order_pace(CustomerState("C1", purchase_days=(0, 10)), {})
    'too few orders for a rhythm'
    """
    days = state.purchase_days
    if len(days) < 3:
        return "too few orders for a rhythm"
    gap = max((days[-1] - days[0]) / (len(days) - 1), 1.0)
    slow = recent.get("orders", 0.0) * gap / _TAU_DAYS
    fast = recent.get(FAST_PREFIX + "orders", 0.0) * gap / _FAST_DAYS
    if fast < 0.75 * slow:
        change = "falling"
    elif fast > 1.25 * slow:
        change = "rising"
    else:
        change = "steady"
    return (f"orders at {slow:.0%} of their usual pace over the last {3 * _TAU_DAYS / 4:.0f} "
            f"days, {fast:.0%} over the last {_FAST_DAYS:.0f}: {change}")


def _basket_trend(recent: Mapping[str, float], basket: float) -> str:
    """The basket of the last ten days against the 30-day one: falling, steady or rising.

    >>> _basket_trend({"f_orders": 1.0, "f_spend": 60.0}, 100.0)
    '60.00 in the last 10 days: falling'
    >>> _basket_trend({"f_orders": 0.05, "f_spend": 3.0}, 100.0)
    'no order in the last 10 days'
    """
    orders = recent.get(FAST_PREFIX + "orders", 0.0)
    if orders < 0.1:
        return f"no order in the last {_FAST_DAYS:.0f} days"
    fast = recent.get(FAST_PREFIX + "spend", 0.0) / orders
    if fast < 0.9 * basket:
        change = "falling"
    elif fast > 1.1 * basket:
        change = "rising"
    else:
        change = "steady"
    return f"{fast:.2f} in the last {_FAST_DAYS:.0f} days: {change}"


def _trend(fast: float, slow: float) -> str:
    """Rising, steady or easing: the 10-day counter against the 30-day one.

    A steady rate keeps ``fast / slow`` at the ratio of their time constants (1/3).

    >>> _trend(1.0, 1.2), _trend(0.4, 1.2), _trend(0.05, 1.2)
    ('rising', 'steady', 'easing')
    """
    ratio = fast / slow * _TAU_DAYS / _FAST_DAYS if slow > 0 else 0.0
    if ratio >= 1.5:
        return "rising"
    if ratio >= 0.5:
        return "steady"
    return "easing"


def _engagement(
    state: CustomerState, recent: Mapping[str, float], policy: AlertPolicy
) -> Signal | None:
    """``engagement_drop``: the last ten days' open rate well below the customer's usual one."""
    delivered = state.touches.get("delivered", 0)
    if delivered <= 0:
        return None
    usual = min(state.touches.get("opened", 0) / delivered, 1.0)
    sent = recent.get(FAST_PREFIX + "delivered", 0.0)
    if usual < policy.engagement_min_rate or sent < policy.engagement_min_delivered:
        return None
    rate = min(recent.get(FAST_PREFIX + "opened", 0.0) / sent, 1.0)
    fall = 1.0 - rate / usual
    if fall < policy.engagement_drop:
        return None
    clicks = recent.get(FAST_PREFIX + "clicked", 0.0)
    return (
        "engagement_drop",
        fall / policy.engagement_drop,
        f"opened {rate:.0%} of the mailings of the last {_FAST_DAYS:.0f} days against a usual "
        f"{usual:.0%}, {_count(clicks)} clicks; falling",
    )


def alert_id(
    customer_id: str, kind: str, as_of: int, severity: str, codes: Iterable[str]
) -> str:
    """Deterministic id of an alert: same customer, kind, day, severity and codes, same id.

    The event-time day (not the exact as-of) makes the id independent of how the
    shell batches a customer's events within a day; severity and the set of codes
    tell an escalation apart from the alert it escalates.

    >>> a = alert_id("C1", "defection_risk", 1_000, "high", ["complaints", "recency_gap"])
    >>> a == alert_id("C1", "defection_risk", 2_000, "high", ["recency_gap", "complaints"])
    True
    >>> a[:12], len(a)
    ('al-19700101-', 36)
    """
    key = _digest("alert", customer_id, kind, str(as_of // MS_PER_DAY), severity,
                  ",".join(sorted(set(codes))))
    return f"al-{_ymd(as_of)}-{key.hex()[:24]}"


def _remember_p_alive(memory: AlertMemory, p_alive: float) -> AlertMemory:
    ref = memory.p_alive_ref
    if ref is None or p_alive > ref:
        return replace(memory, p_alive_ref=p_alive)
    return memory


def decide_alert(
    customer_id: str,
    state: CustomerState,
    valuation: Valuation,
    churn_probability: float | None,
    value_tier: float,
    memory: AlertMemory | None,
    as_of: int,
    policy: AlertPolicy | None = None,
    model_version: str = "0",
) -> tuple[Alert | None, AlertMemory]:
    """Whether to alert on this customer now, and the memory to keep for next time.

    An alert is raised when all hold:

    1. ``value_tier >= policy.min_value_tier``;
    2. at least ``policy.min_signals`` defection signals (`defection_reasons`)
       with a rule score of at least ``policy.min_score``;
    3. severity (from `value_at_risk`) at least ``policy.min_severity``;
    4. its `alert_id` is not the last one raised (a re-run of the same decision);
    5. outside the cooldown since the last alert, or escalating: a higher
       severity, or a code of ``policy.escalate_on`` the last alert lacked.

    The returned memory is always the one to store: it carries the P(alive)
    reference forward even when no alert is raised. ``as_of`` is the event time
    the scores refer to (the triggering event's ``occurred_at``).
    """
    policy = policy or AlertPolicy()
    before = memory or AlertMemory()
    after = _remember_p_alive(before, valuation.p_alive)
    if value_tier < policy.min_value_tier:
        return None, after
    signals = _signals(state, valuation, churn_probability, before, as_of, policy)
    if not signals or len(signals) < policy.min_signals:
        return None, after
    if sum(_weighted(signals, policy.weights, policy.max_strength)) < policy.min_score:
        return None, after
    reasons = _shares(signals, policy.weights, policy.max_strength)
    risk = value_at_risk(valuation, churn_probability)
    level = severity(risk, policy.severity_bands)
    if _rank(level) < _rank(policy.min_severity):
        return None, after
    codes = tuple(r.code for r in reasons)
    new_id = alert_id(customer_id, policy.kind, as_of, level, codes)
    if new_id == before.last_alert_id:
        return None, after
    if before.last_alert_at is not None and as_of - before.last_alert_at < policy.cooldown_ms:
        escalates = before.last_severity is None or _rank(level) > _rank(before.last_severity)
        urgent = any(c in policy.escalate_on and c not in before.last_codes for c in codes)
        if not (escalates or urgent):
            return None, after
    alert = Alert(
        alert_id=new_id,
        customer_id=customer_id,
        kind=policy.kind,
        severity=level,
        as_of=as_of,
        clv=valuation.clv,
        churn_probability=_churn(valuation, churn_probability),
        value_tier=value_tier,
        value_at_risk=risk,
        reasons=tuple(reasons),
        model_version=model_version,
    )
    remembered = AlertMemory(
        last_alert_at=as_of,
        last_severity=level,
        last_alert_id=new_id,
        last_codes=codes,
        p_alive_ref=valuation.p_alive,
    )
    return alert, remembered


def to_message(alert: Alert, raised_at: str) -> dict[str, Any]:
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
        "value_tier": min(max(float(alert.value_tier), 0.0), 100.0),
        "reasons": [r.to_message() for r in alert.reasons],
        "model_version": alert.model_version,
        "schema_version": 1,
    }


# --------------------------------------------------------------------------- win-back


@dataclass(frozen=True, slots=True)
class WinbackPolicy:
    """Thresholds of the win-back trigger; every one is configuration.

    Parameters
    ----------
    p_alive_threshold
        A customer is lapsed when P(alive) falls below this (0.25: three chances
        in four that they are gone) ...
    silence_days
        ... or when their last order is more than this many days old (90, the
        horizon H: a quarter without an order).
    min_value_tier
        Only customers whose value tier was at least this when they were last
        active (``value_tier_when_valuable``) are worth winning back (80).
    min_value_to_regain
        No trigger when the value to regain is at most this (base currency).
    control_share
        Share of triggers held out as a control group (0.10): large enough to
        measure the uplift within a few hundred triggers, small enough to forgo
        little.
    offer_share, offer_cap
        The offer budget is ``offer_share`` of the value to regain, at most
        ``offer_cap`` (base currency). The offer pays off in expectation while the
        share stays below the measured uplift (`winback_results`), so start low
        (0.10) and revise with the results.
    response_window_days
        A purchase or converted touch this many days after the trigger counts as
        a return (60).
    channels
        Channels a recommendation may fall back on, in order of preference, when
        the customer has no usable response history.
    prior_responses, prior_touches
        Beta prior of a channel's response rate (1 response in 10 touches), so a
        single lucky click does not beat a long, steady record.
    """

    p_alive_threshold: float = 0.25
    silence_days: float = 90.0
    min_value_tier: float = 80.0
    min_value_to_regain: float = 0.0
    control_share: float = 0.10
    offer_share: float = 0.10
    offer_cap: float = 100.0
    response_window_days: float = 60.0
    channels: tuple[str, ...] = ("email", "sms", "push", "mail", "call")
    prior_responses: float = 1.0
    prior_touches: float = 10.0
    weights: Mapping[str, float] = field(default_factory=lambda: DEFAULT_WEIGHTS, hash=False)
    max_strength: float = 3.0

    def __post_init__(self) -> None:
        owner = "WinbackPolicy"
        _check_positive(
            owner,
            p_alive_threshold=self.p_alive_threshold,
            silence_days=self.silence_days,
            response_window_days=self.response_window_days,
            prior_touches=self.prior_touches,
            max_strength=self.max_strength,
        )
        _check_share(
            owner,
            p_alive_threshold=self.p_alive_threshold,
            control_share=self.control_share,
            offer_share=self.offer_share,
        )
        if self.offer_cap < 0 or self.prior_responses < 0:
            raise ValueError(f"{owner}: offer_cap and prior_responses must be >= 0")
        if not 0 <= self.prior_responses <= self.prior_touches:
            raise ValueError(f"{owner}: prior_responses must be within [0, prior_touches]")
        if not self.channels:
            raise ValueError(f"{owner}.channels must name at least one channel")


@dataclass(frozen=True, slots=True)
class ChannelCounts:
    """One customer's campaign history on one channel.

    ``touches`` counts ``sent`` touches, ``responses`` clicks and conversions
    (opens are left out: mail clients open by themselves), ``blocked``
    unsubscribes and bounces; a blocked channel is never recommended.
    """

    touches: int = 0
    responses: int = 0
    blocked: int = 0


def record_touch(
    channels: Mapping[str, ChannelCounts], touch: CampaignTouch
) -> Mapping[str, ChannelCounts]:
    """The per-channel counts with `touch` added (the same mapping if it does not count).

    >>> c = record_touch({}, CampaignTouch("t1", "C1", 0, "K1", "sms", "sent", 0))
    >>> c = record_touch(c, CampaignTouch("t2", "C1", 1, "K1", "sms", "clicked", 0))
    >>> c["sms"]
    ChannelCounts(touches=1, responses=1, blocked=0)
    """
    old = channels.get(touch.channel, ChannelCounts())
    if touch.action == "sent":
        new = replace(old, touches=old.touches + 1)
    elif touch.action in _RESPONSES:
        new = replace(old, responses=old.responses + 1)
    elif touch.action in _BLOCKS:
        new = replace(old, blocked=old.blocked + 1)
    else:
        return channels
    out = dict(channels)
    out[touch.channel] = new
    return MappingProxyType(out)


def recommended_channel(
    channels: Mapping[str, ChannelCounts] | None, policy: WinbackPolicy | None = None
) -> str:
    """The channel this customer responded to best, by smoothed response rate.

    The rate is ``(responses + a) / (touches + n)`` with the policy's Beta prior
    (``a`` responses in ``n`` touches); ties go to the policy's channel order.
    Blocked channels are skipped; with no usable history the first unblocked
    channel of the policy is chosen (the first one if every channel is blocked).

    >>> recommended_channel({"email": ChannelCounts(50, 2), "sms": ChannelCounts(10, 4)})
    'sms'
    >>> recommended_channel({"sms": ChannelCounts(10, 4, blocked=1)})
    'email'
    """
    policy = policy or WinbackPolicy()
    channels = channels or {}
    order = {name: i for i, name in enumerate(policy.channels)}

    def rate(counts: ChannelCounts) -> float:
        touches = max(counts.touches, counts.responses)
        return (counts.responses + policy.prior_responses) / (touches + policy.prior_touches)

    usable = [
        (name, counts) for name, counts in channels.items()
        if counts.blocked == 0 and (counts.touches > 0 or counts.responses > 0)
    ]
    if usable:
        best = min(usable, key=lambda nc: (-rate(nc[1]), order.get(nc[0], len(order)), nc[0]))
        return best[0]
    for name in policy.channels:
        if channels.get(name, ChannelCounts()).blocked == 0:
            return name
    return policy.channels[0]


def in_control_group(customer_id: str, trigger_id: str, seed: int | str, share: float) -> bool:
    """Whether a trigger is held out as control: a hash of its ids and the seed below `share`.

    Deterministic, so a replay makes the same split; independent across
    triggers, so the control share is `share` over many customers.

    >>> in_control_group("C1", "wb-x", 7, 0.1) == in_control_group("C1", "wb-x", 7, 0.1)
    True
    >>> in_control_group("C1", "wb-x", 7, 0.0), in_control_group("C1", "wb-x", 7, 1.0)
    (False, True)
    """
    u = int.from_bytes(_digest("control", str(seed), customer_id, trigger_id)[:8], "big") / 2**64
    return u < share


def trigger_id(customer_id: str, episode: int) -> str:
    """Deterministic id of the win-back trigger of a lapse episode.

    An episode is named by the last purchase before the lapse (epoch ms), so the
    id does not depend on which event revealed the lapse.

    >>> trigger_id("C1", 86_400_000)[:12], trigger_id("C1", 1) == trigger_id("C1", 1)
    ('wb-19700102-', True)
    """
    key = _digest("winback", customer_id, str(episode))
    return f"wb-{_ymd(episode)}-{key.hex()[:24]}"


@dataclass(frozen=True, slots=True)
class WinbackMemory:
    """What `decide_winback` remembers: the lapse episode already triggered.

    ``episode`` is the customer's last purchase time (ms) when the trigger was
    raised; a later purchase starts a new episode.
    """

    episode: int | None = None
    trigger_id: str | None = None


@dataclass(frozen=True, slots=True)
class Trigger:
    """A win-back trigger, without its wall-clock ``raised_at`` (see `to_winback_message`)."""

    trigger_id: str
    customer_id: str
    as_of: int
    episode: int
    clv_lost: float
    p_alive: float
    recommended_channel: str
    offer_budget: float
    control_group: bool
    reasons: tuple[Reason, ...]
    model_version: str


def decide_winback(
    customer_id: str,
    state: CustomerState,
    valuation: Valuation,
    value_tier_when_valuable: float,
    memory: WinbackMemory | None,
    as_of: int,
    policy: WinbackPolicy | None = None,
    model_version: str = "0",
    seed: int | str = 0,
    *,
    channels: Mapping[str, ChannelCounts] | None = None,
) -> tuple[Trigger | None, WinbackMemory]:
    """Whether to trigger a win-back for this customer now, and the memory to keep.

    A trigger is raised once per lapse episode (`WinbackMemory.episode`) for a
    customer who

    1. was valuable: ``value_tier_when_valuable >= policy.min_value_tier`` (the
       shell passes the value tier at the customer's latest purchase);
    2. is lapsed: P(alive) below ``policy.p_alive_threshold`` or no order for
       more than ``policy.silence_days``;
    3. has value to regain: ``clv_lost`` (CLV if alive minus CLV, i.e.
       `Valuation.value_at_risk`) above ``policy.min_value_to_regain``.

    ``channels`` is the customer's per-channel history (`record_touch`), which
    `CustomerState` does not keep. ``seed`` fixes the control-group split.
    """
    policy = policy or WinbackPolicy()
    before = memory or WinbackMemory()
    episode = state.last_purchase
    if episode is None or before.episode == episode:
        return None, before
    if value_tier_when_valuable < policy.min_value_tier:
        return None, before
    signals: list[tuple[str, float, str]] = []
    p_alive = min(max(valuation.p_alive, 0.0), 1.0)
    if p_alive < policy.p_alive_threshold:
        signals.append((
            "p_alive_low",
            policy.p_alive_threshold / max(p_alive, 1e-3),
            "probability alive {}, below {}".format(*_distinct(p_alive, policy.p_alive_threshold)),
        ))
    silence = (as_of - episode) / MS_PER_DAY
    if silence > policy.silence_days:
        signals.append((
            "long_silence",
            silence / policy.silence_days,
            f"no order for {silence:.0f} days, beyond {policy.silence_days:.0f}",
        ))
    if not signals:
        return None, before
    clv_lost = valuation.value_at_risk
    if clv_lost <= policy.min_value_to_regain:
        return None, before
    new_id = trigger_id(customer_id, episode)
    trigger = Trigger(
        trigger_id=new_id,
        customer_id=customer_id,
        as_of=as_of,
        episode=episode,
        clv_lost=clv_lost,
        p_alive=p_alive,
        recommended_channel=recommended_channel(channels, policy),
        offer_budget=round(min(policy.offer_share * clv_lost, policy.offer_cap), 2),
        control_group=in_control_group(customer_id, new_id, seed, policy.control_share),
        reasons=tuple(_shares(signals, policy.weights, policy.max_strength)),
        model_version=model_version,
    )
    return trigger, WinbackMemory(episode=episode, trigger_id=new_id)


def to_winback_message(trigger: Trigger, raised_at: str) -> dict[str, Any]:
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
        "reasons": [r.to_message() for r in trigger.reasons],
        "model_version": trigger.model_version,
        "schema_version": 1,
    }


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


def _distinct(value: float, limit: float) -> tuple[str, str]:
    """`value` and `limit` with as few decimals (2 to 6) as show them apart.

    >>> _distinct(0.2496, 0.25), _distinct(0.1, 0.25)
    (('0.2496', '0.2500'), ('0.10', '0.25'))
    """
    for places in range(2, 7):
        a, b = f"{value:.{places}f}", f"{limit:.{places}f}"
        if a != b:
            return a, b
    return a, b
