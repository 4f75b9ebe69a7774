"""Defection alerts: which valuable customers show signs of leaving, and why.

Pure rules over a customer's ledger (`CustomerState`) and predicted value
(`Valuation`): no Kafka, Redis, Faust, clock or environment. Every time is epoch
milliseconds of **event time**.

`decide_alert` raises a ``defection_risk`` alert for a customer whose value tier is at
least `AlertPolicy.min_value_tier` and who shows defection signals
(`defection_reasons`) whose rule score reaches `AlertPolicy.min_score`. Severity comes
from the value at risk (`stream_app.domain.severity`). A per-customer `AlertMemory`
gives the cooldown, the deduplication and the reference for "a fall in P(alive)". Like
the ledger, the memory must change exactly once per event: the shell applies it in the
same atomic write as the customer's record. The message of the contract is built at the
edge (`stream_app.messages`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Final

from stream_app.domain.events import MS_PER_DAY
from stream_app.domain.ledger import FAST_PREFIX, FAST_TAU_MS, RECENT_TAU_MS, CustomerState
from stream_app.domain.rules import (
    ALERT_CODES,
    DEFAULT_WEIGHTS,
    Reason,
    Signal,
    check_positive,
    check_share,
    day_stamp,
    digest,
    shares,
    weighted,
)
from stream_app.domain.severity import SEVERITIES, rank, severity, value_at_risk
from stream_app.domain.valuation import Valuation

__all__ = [
    "Alert",
    "AlertMemory",
    "AlertPolicy",
    "alert_id",
    "decide_alert",
    "defection_reasons",
    "lapsed",
]

_TAU_DAYS: Final = RECENT_TAU_MS / MS_PER_DAY


_FAST_DAYS: Final = FAST_TAU_MS / MS_PER_DAY



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
    value_at_last_order
        A customer's tier for `min_value_tier` is the higher of their tier now and their
        tier at their last order (as win-back's). A customer who drifts away loses value as
        their P(alive) falls, often before the signals of leaving add up, and would drop
        below the floor just when the alert is due. With it, the share of valuable dropouts
        alerted 14 days ahead in the alert study rises by 0.12 to 0.19 on six simulated
        populations and the precision by 0.01 to 0.05, at 65 to 74 % more alerts (see the
        README's alert study). False: the tier now only.
    churn_threshold
        Churn probability at or above which ``churn_risk`` fires (0.5, with
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
        weighing at least ``engagement_min_delivered`` in the last ten days. With
        ``engagement_slow_min_delivered`` set, the open rate of the last weeks (30-day
        counters, mailings weighing at least that) counts too, and the window whose rate
        fell the most decides: ten days often hold no mailing at all.
    contact_surge, contact_surge_min
        ``contact_surge`` fires when the customer's contacts of the last weeks (30-day
        decayed count, whatever they were about) reach ``contact_surge`` times their usual
        rate (lifetime contacts over tenure) and at least ``contact_surge_min``: a customer
        who calls far more often than they used to has something to sort out. None: off.
    max_silence_days
        No alert for a customer without an order for longer than this (days of event time):
        they have lapsed, a case for win-back (`stream_app.domain.winback`, whose silence is
        the churn horizon, 90 days), not for a call about a defection still to come. Such an
        alert is mostly wrong (the dropout more than the horizon behind, or the customer only
        silent) or late; without them the alert study's precision rises by 0.02 to 0.034 on
        six simulated populations at about the same share of dropouts alerted ahead (90, score
        2.9, churn 0.4). None: no limit.
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
        ``min_score``; 1 and 0 let any one signal through. 2.5, with the default
        weights: a single signal reaches it only when strong (a cancellation request, a
        churn probability of 0.625 or more, a decayed sentiment sum of -0.25 or less, an
        unsubscribe in the last two weeks, a basket half the usual or smaller, a complaint in
        the last five days, no order for 3.75 times the usual gap, a fall in P(alive) of 0.56
        or more), otherwise it takes two or more; a fall in the open rate never alone. Chosen
        by ``python -m load.alert_fit`` on two simulated populations where defection has
        precursors (seeds 7 and 8 of ``python -m load.alert_study --trace``), with
        `churn_threshold` 0.5, `value_at_last_order`, `max_silence_days` 90, `sentiment` -0.2
        and the weight of ``p_alive_drop`` (0.9, `rules.DEFAULT_WEIGHTS`; the other weights
        set before): of the rules with a precision of at least 0.5 against the true dropouts
        on both, the one that alerts the largest mean share of valuable dropouts at least 14
        days ahead; reported on four other populations (see the README's alert study).
    weights, max_strength
        Signal weights and the cap on a signal's strength in the rule score (see
        `defection_reasons`).
    min_strength
        The strength (observed / threshold) from which a signal counts: 1, at its
        threshold; below 1, weak signals near their thresholds add to the rule score too.
    kind
        The alert's ``kind`` in the contract.
    """

    min_value_tier: float = 80.0
    value_at_last_order: bool = True
    churn_threshold: float = 0.5
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
    engagement_slow_min_delivered: float | None = None
    contact_surge: float | None = None
    contact_surge_min: float = 1.5
    max_silence_days: float | None = 90.0
    cooldown_days: float = 14.0
    escalate_on: tuple[str, ...] = ("cancellation_request",)
    severity_bands: tuple[float, float, float] = (250.0, 1_000.0, 5_000.0)
    min_severity: str = "low"
    min_signals: int = 1
    min_score: float = 2.5
    weights: Mapping[str, float] = field(default_factory=lambda: DEFAULT_WEIGHTS, hash=False)
    max_strength: float = 3.0
    min_strength: float = 1.0
    kind: str = "defection_risk"

    def __post_init__(self) -> None:
        owner = "AlertPolicy"
        check_positive(
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
        check_share(owner, churn_threshold=self.churn_threshold, spend_drop=self.spend_drop,
                     engagement_drop=self.engagement_drop)
        if not self.sentiment < 0:
            raise ValueError(f"{owner}.sentiment={self.sentiment!r} must be negative")
        if not 0 < self.min_strength <= 1:
            raise ValueError(f"{owner}.min_strength={self.min_strength!r} must be in (0, 1]")
        if self.contact_surge is not None:
            check_positive(owner, contact_surge=self.contact_surge,
                           contact_surge_min=self.contact_surge_min)
        if self.engagement_slow_min_delivered is not None:
            check_positive(owner, engagement_slow_min_delivered=self.engagement_slow_min_delivered)
        if self.max_silence_days is not None:
            check_positive(owner, max_silence_days=self.max_silence_days)
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
    #: The tier at the customer's last order, when the policy judges value by it
    #: (`AlertPolicy.value_at_last_order`): why a customer below the floor now is alerted.
    value_tier_at_last_order: float | None = None


def _churn(valuation: Valuation, churn_probability: float | None) -> float:
    p = 1.0 - valuation.p_alive if churn_probability is None else churn_probability
    return min(max(p, 0.0), 1.0)


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
    return shares(signals, policy.weights, policy.max_strength)


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
    weak = policy.min_strength
    if churn >= policy.churn_threshold * weak:
        signals.append((
            "churn_risk",
            churn / policy.churn_threshold,
            f"churn probability {churn:.2f}, "
            f"{'at or above' if churn >= policy.churn_threshold else 'near'} "
            f"{policy.churn_threshold:.2f}; "
            f"{_order_pace(state, recent)}",
        ))
    if previous is not None and previous.p_alive_ref is not None:
        drop = previous.p_alive_ref - valuation.p_alive
        if drop > 0 and drop >= policy.p_alive_drop * weak:
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
        if since > limit * weak:
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
        if weight > 0 and weight >= threshold * weak:
            fast = recent.get(FAST_PREFIX + key, 0.0)
            signals.append((
                code,
                weight / threshold,
                f"{_count(weight)} {label} in the last {3 * _TAU_DAYS / 4:.0f} days, "
                f"{_count(fast)} in the last {_FAST_DAYS:.0f}: {_trend(fast, weight)} "
                f"(decayed counts {weight:.2f} and {fast:.2f})",
            ))
    mood = recent["sentiment"]
    if mood <= policy.sentiment * weak:
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
    surge = _contact_surge(state, recent, as_of, policy)
    if surge is not None:
        signals.append(surge)
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
        if fall > 0 and fall >= policy.spend_drop * weak:
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
    change = _direction(fast, slow, 0.25)
    return (f"orders at {slow:.0%} of their usual pace over the last {3 * _TAU_DAYS / 4:.0f} "
            f"days, {fast:.0%} over the last {_FAST_DAYS:.0f}: {change}")


def _direction(value: float, reference: float, tolerance: float) -> str:
    """Falling, steady or rising: `value` against `reference`, within a relative tolerance.

    >>> _direction(0.7, 1.0, 0.25), _direction(1.2, 1.0, 0.25), _direction(1.3, 1.0, 0.25)
    ('falling', 'steady', 'rising')
    """
    if value < (1.0 - tolerance) * reference:
        return "falling"
    if value > (1.0 + tolerance) * reference:
        return "rising"
    return "steady"


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
    change = _direction(fast, basket, 0.1)
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


def _contact_surge(
    state: CustomerState, recent: Mapping[str, float], as_of: int, policy: AlertPolicy
) -> Signal | None:
    """``contact_surge``: contacts of the last weeks at a multiple of the customer's usual rate.

    A customer contacting the service every ``g`` days keeps a 30-day decayed contact count of
    about ``30 / g``; their usual rate is their lifetime contacts over their tenure (at least
    the 30 days of the counter). The signal fires when the count reaches ``contact_surge``
    times the usual one and at least ``contact_surge_min``, whatever the contacts were about.

    >>> D = MS_PER_DAY
    >>> s = CustomerState("C1", contacts={"inquiry": 4}, first_event=0)
    >>> p = AlertPolicy(contact_surge=2.0)
    >>> code, strength, _ = _contact_surge(s, {"contacts": 2.4, "f_contacts": 1.5}, 240 * D, p)
    >>> code, round(strength, 2)
    ('contact_surge', 1.6)
    >>> _contact_surge(s, {"contacts": 1.2}, 240 * D, p) is None
    True
    """
    if policy.contact_surge is None:
        return None
    weight = recent.get("contacts", 0.0)
    if weight < policy.contact_surge_min * policy.min_strength:
        return None
    first = state.first_event if state.first_event is not None else as_of
    tenure = max((as_of - first) / MS_PER_DAY, _TAU_DAYS)
    usual = state.contacts_total / tenure * _TAU_DAYS
    limit = max(policy.contact_surge * usual, policy.contact_surge_min)
    if weight < limit * policy.min_strength:
        return None
    fast = recent.get(FAST_PREFIX + "contacts", 0.0)
    return (
        "contact_surge",
        weight / limit,
        f"{_count(weight)} contacts in the last {3 * _TAU_DAYS / 4:.0f} days against a usual "
        f"{usual:.1f} a month, {_count(fast)} in the last {_FAST_DAYS:.0f}: {_trend(fast, weight)}",
    )


def _engagement(
    state: CustomerState, recent: Mapping[str, float], policy: AlertPolicy
) -> Signal | None:
    """``engagement_drop``: a recent open rate well below the customer's usual one.

    The last ten days' rate (fast counters), and with ``engagement_slow_min_delivered`` set
    also the last weeks' (30-day counters), which hold two or three mailings where ten days
    often hold none; the window whose rate fell the most decides.

    >>> s = CustomerState("C1", touches={"delivered": 10, "opened": 6})
    >>> slow = {"delivered": 2.5, "opened": 0.2, "f_delivered": 0.5, "f_opened": 0.0}
    >>> _engagement(s, slow, AlertPolicy()) is None
    True
    >>> code, strength, detail = _engagement(
    ...     s, slow, AlertPolicy(engagement_slow_min_delivered=1.5))
    >>> code, round(strength, 2)
    ('engagement_drop', 1.73)
    >>> detail
    'opened 8% of the mailings of the last 22 days against a usual 60%, no clicks; falling'
    """
    delivered = state.touches.get("delivered", 0)
    if delivered <= 0:
        return None
    usual = min(state.touches.get("opened", 0) / delivered, 1.0)
    if usual < policy.engagement_min_rate:
        return None
    windows = [(FAST_PREFIX, policy.engagement_min_delivered, _FAST_DAYS)]
    if policy.engagement_slow_min_delivered is not None:
        windows.append(("", policy.engagement_slow_min_delivered, 3 * _TAU_DAYS / 4))
    best: tuple[float, float, str, float] | None = None
    for prefix, min_sent, days in windows:
        sent = recent.get(prefix + "delivered", 0.0)
        if sent < min_sent:
            continue
        rate = min(recent.get(prefix + "opened", 0.0) / sent, 1.0)
        fall = 1.0 - rate / usual
        if best is None or fall > best[0]:
            best = (fall, rate, prefix, days)
    if best is None or best[0] < policy.engagement_drop * policy.min_strength or best[0] <= 0:
        return None
    fall, rate, prefix, days = best
    clicks = recent.get(prefix + "clicked", 0.0)
    return (
        "engagement_drop",
        fall / policy.engagement_drop,
        f"opened {rate:.0%} of the mailings of the last {days:.0f} days against a usual "
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
    key = digest("alert", customer_id, kind, str(as_of // MS_PER_DAY), severity,
                  ",".join(sorted(set(codes))))
    return f"al-{day_stamp(as_of)}-{key.hex()[:24]}"


def lapsed(state: CustomerState, as_of: int, policy: AlertPolicy) -> bool:
    """Whether the customer's last order lies more than ``policy.max_silence_days`` back.

    >>> s = CustomerState("C1", last_purchase=0)
    >>> lapsed(s, 90 * MS_PER_DAY, AlertPolicy()), lapsed(s, 91 * MS_PER_DAY, AlertPolicy())
    (False, True)
    >>> lapsed(s, 91 * MS_PER_DAY, AlertPolicy(max_silence_days=None))
    False
    """
    limit = policy.max_silence_days
    if limit is None or state.last_purchase is None:
        return False
    return as_of - state.last_purchase > limit * MS_PER_DAY


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
    tier_at_last_order: float = 0.0,
) -> tuple[Alert | None, AlertMemory]:
    """Whether to alert on this customer now, and the memory to keep for next time.

    An alert is raised when all hold:

    1. ``value_tier >= policy.min_value_tier`` (or ``tier_at_last_order``, the tier at the
       customer's last order, with ``policy.value_at_last_order``), and the customer has
       ordered within ``policy.max_silence_days`` (if set);
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
    tier = max(value_tier, tier_at_last_order) if policy.value_at_last_order else value_tier
    if tier < policy.min_value_tier or lapsed(state, as_of, policy):
        return None, after
    signals = _signals(state, valuation, churn_probability, before, as_of, policy)
    if not signals or len(signals) < policy.min_signals:
        return None, after
    if sum(weighted(signals, policy.weights, policy.max_strength)) < policy.min_score:
        return None, after
    reasons = shares(signals, policy.weights, policy.max_strength)
    risk = value_at_risk(valuation, churn_probability)
    level = severity(risk, policy.severity_bands)
    if rank(level) < rank(policy.min_severity):
        return None, after
    codes = tuple(r.code for r in reasons)
    new_id = alert_id(customer_id, policy.kind, as_of, level, codes)
    if new_id == before.last_alert_id:
        return None, after
    if before.last_alert_at is not None and as_of - before.last_alert_at < policy.cooldown_ms:
        escalates = before.last_severity is None or rank(level) > rank(before.last_severity)
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
        value_tier_at_last_order=tier_at_last_order if policy.value_at_last_order else None,
    )
    remembered = AlertMemory(
        last_alert_at=as_of,
        last_severity=level,
        last_alert_id=new_id,
        last_codes=codes,
        p_alive_ref=valuation.p_alive,
    )
    return alert, remembered

