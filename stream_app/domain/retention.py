"""Per-customer retention bookkeeping: churn snapshots and labels, alert and win-back memory.

`observe` takes each applied event (labels pending snapshots on an order, counts
channel responses, closes the loop of an open win-back); `decide` runs after a
customer's events of a batch, or when event time has moved on without them: it
scores churn, maybe takes a snapshot, and decides alerts and win-back triggers.
Both are pure; the shell stores `Retention` in the customer's record, so it is
written atomically with the ledger and never applied twice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Final

from stream_app.domain import churn
from stream_app.domain.alerts import Alert, AlertMemory, AlertPolicy, decide_alert
from stream_app.domain.events import MS_PER_DAY, CampaignTouch, Event, Purchase
from stream_app.domain.ledger import CustomerState
from stream_app.domain.outcomes import WinbackOutcome, observe_event, open_outcome
from stream_app.domain.valuation import Valuation
from stream_app.domain.winback import (
    ChannelCounts,
    Trigger,
    WinbackMemory,
    WinbackPolicy,
    decide_winback,
    record_touch,
)

Scorer = Callable[[Mapping[str, float]], float]

_NO_CHANNELS: Final[Mapping[str, ChannelCounts]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """Horizon of the churn label, snapshot spacing, alert and win-back policies."""

    horizon_ms: int = churn.DEFAULT_HORIZON_MS
    snapshot_gap_ms: int = churn.DEFAULT_MIN_GAP_MS
    #: The lead window of the churn label (`churn.label_on_purchase`); 0: no order within the
    #: horizon of the snapshot.
    lead_ms: int = 0
    alert: AlertPolicy = field(default_factory=AlertPolicy)
    winback: WinbackPolicy = field(default_factory=WinbackPolicy)
    seed: int = 0

    @property
    def max_pending(self) -> int:
        return churn.max_pending(self.horizon_ms + self.lead_ms, self.snapshot_gap_ms)


@dataclass(frozen=True, slots=True)
class Retention:
    """What one customer's retention decisions remember between events."""

    pending: tuple[churn.Snapshot, ...] = ()
    waiting: tuple[tuple[churn.Snapshot, int], ...] = ()
    last_snapshot_at: int | None = None
    alert: AlertMemory = field(default_factory=AlertMemory)
    winback: WinbackMemory = field(default_factory=WinbackMemory)
    channels: Mapping[str, ChannelCounts] = field(default_factory=lambda: _NO_CHANNELS)
    outcome: WinbackOutcome | None = None
    tier_at_purchase: float = 0.0
    churn_probability: float | None = None
    scored_at: int | None = None

    @property
    def label_due(self) -> int | None:
        """The earliest anchor (ms; the taken-at time without a lead window) of a snapshot whose
        horizon has not closed yet: the next label is due a horizon after it."""
        times = [s.anchor for s in self.pending] + [s.anchor for s, _ in self.waiting]
        return min(times) if times else None


Labelled = list[tuple[churn.Snapshot, int]]


def observe(r: Retention, event: Event, policy: RetentionPolicy) -> tuple[Retention, Labelled]:
    """Take one applied event into account; returns the new memory and examples to learn.

    An order labels the pending snapshots before it at once, but they wait in
    `Retention.waiting` until their horizon closes: learning a retained label
    the moment it is known, while its churned twins are still unlabelled,
    biases the model towards "retained" (see ``load/churn_study.py``). So
    examples are released by `label_due`, and this returns none.

    >>> from stream_app.domain.events import Purchase
    >>> snap = churn.Snapshot("C1", 0, {})
    >>> r = Retention(pending=(snap,))
    >>> order = Purchase("e", "C1", 10 * MS_PER_DAY, "order", 100, None, "web")
    >>> r2, labelled = observe(r, order, RetentionPolicy())
    >>> labelled, r2.pending, r2.waiting == ((snap, churn.RETAINED),)
    ([], (), True)
    """
    labelled: Labelled = []
    if isinstance(event, CampaignTouch):
        channels = record_touch(r.channels, event)
        if channels is not r.channels:
            r = replace(r, channels=channels)
    if isinstance(event, Purchase) and event.kind == "order" and r.pending:
        known, rest = churn.label_on_purchase(r.pending, event.occurred_at, policy.horizon_ms,
                                              policy.lead_ms)
        r = replace(r, pending=tuple(rest), waiting=(*r.waiting, *known))
    if r.outcome is not None:
        outcome = observe_event(r.outcome, event)
        if outcome != r.outcome:
            r = replace(r, outcome=outcome)
    return r, labelled


def label_due(r: Retention, watermark: int, policy: RetentionPolicy) -> tuple[Retention, Labelled]:
    """Release the examples whose horizon the event-time watermark has passed.

    Pending snapshots past their horizon are labelled churned; snapshots
    labelled retained earlier are released too. Oldest snapshot first.
    """
    if not r.pending and not r.waiting:
        return r, []
    churned, rest = churn.label_on_watermark(r.pending, watermark, policy.horizon_ms)
    ready, still = churn.mature(r.waiting, watermark, policy.horizon_ms)
    if not churned and not ready:
        return r, []
    released = sorted([*churned, *ready], key=lambda sy: sy[0].taken_at)
    return replace(r, pending=tuple(rest), waiting=tuple(still)), released


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of `decide` for one customer."""

    retention: Retention
    churn_probability: float | None
    alert: Alert | None = None
    trigger: Trigger | None = None
    closed: WinbackOutcome | None = None


def _round(x: Mapping[str, float]) -> dict[str, float]:
    return {k: float(f"{v:.6g}") for k, v in x.items()}


def decide(
    r: Retention,
    state: CustomerState,
    valuation: Valuation | None,
    value_tier: float,
    as_of: int,
    policy: RetentionPolicy,
    scorer: Scorer | None = None,
    model_version: str = "0",
    *,
    scored: tuple[Mapping[str, float], float | None] | None = None,
) -> Decision:
    """Score churn, maybe snapshot, and decide alerts and win-back for a customer at `as_of`.

    `scorer` maps features to P(churn); without one (no model learned yet) the
    alert rules fall back on 1 - P(alive). A snapshot is taken at most every
    ``snapshot_gap_ms`` of event time; when a customer would exceed
    `RetentionPolicy.max_pending` the oldest snapshot is dropped, which only
    happens if the watermark lags far behind the customer's own events.
    `scored`: the features and P(churn) at `as_of`, when a batch was scored at once
    (`score_batch`); the `scorer` is then not called.
    """
    x: Mapping[str, float]
    if scored is None:
        x = churn.features(state, valuation, as_of)
        p = None if scorer is None else scorer(x)
    else:
        x, p = scored
    # One `replace` at the end: each costs about as much as the rest of this function.
    changes: dict[str, Any] = {"churn_probability": p, "scored_at": as_of}
    if churn.should_snapshot(r.last_snapshot_at, as_of, policy.snapshot_gap_ms) and (
        r.last_snapshot_at is None or as_of > r.last_snapshot_at
    ):
        pending = (*r.pending, churn.Snapshot(state.customer_id, as_of, _round(x)))
        room = max(policy.max_pending - len(r.waiting), 1)
        changes["pending"], changes["last_snapshot_at"] = pending[-room:], as_of
    tier_at_purchase = r.tier_at_purchase
    if state.last_purchase is not None and as_of == state.last_purchase:
        tier_at_purchase = changes["tier_at_purchase"] = value_tier
    closed = None
    outcome = r.outcome
    if outcome is not None and outcome.is_final(as_of):
        closed, outcome = outcome, None
        changes["outcome"] = None
    if valuation is None:
        return Decision(replace(r, **changes), p, closed=closed)
    alert, changes["alert"] = decide_alert(
        state.customer_id, state, valuation, p, value_tier, r.alert, as_of,
        policy.alert, model_version, tier_at_purchase,
    )
    trigger, changes["winback"] = decide_winback(
        state.customer_id, state, valuation, max(tier_at_purchase, 0.0), r.winback, as_of,
        policy.winback, model_version, policy.seed, channels=r.channels,
    )
    if trigger is not None:
        if outcome is not None:
            closed = outcome
        changes["outcome"] = open_outcome(trigger, policy.winback)
    return Decision(replace(r, **changes), p, alert, trigger, closed)


def score_batch(
    rows: Sequence[tuple[CustomerState, Valuation | None, int]], scorer: Scorer | None
) -> list[tuple[Mapping[str, float], float | None]]:
    """Features and P(churn) of a batch of (state, valuation, as-of) at once, for `decide`.

    A scorer with a ``score_many`` (the linear model, `scoring.LinearScorer`) scores the
    whole batch in one matrix-vector product; any other is called row by row.

    >>> from stream_app.domain.ledger import CustomerState
    >>> state = CustomerState("C1", orders=1, purchase_days=(10,), last_event=10 * MS_PER_DAY)
    >>> [(sorted(x)[:1], p) for x, p in score_batch([(state, None, 11 * MS_PER_DAY)], None)]
    [(['basket_trend_fast'], None)]
    """
    xs = [churn.features(state, valuation, as_of) for state, valuation, as_of in rows]
    if scorer is None:
        return [(x, None) for x in xs]
    many = getattr(scorer, "score_many", None)
    if many is not None and xs:
        return list(zip(xs, many(xs).tolist(), strict=True))
    return [(x, scorer(x)) for x in xs]


def rescore_due(r: Retention, value_tier: float, as_of: int, policy: RetentionPolicy) -> int | None:
    """When (event time) this customer should be rescored without new events, if at all.

    Customers with value at stake (value tier or tier at their last purchase at
    least the lower of the alert and win-back thresholds) are rescored a day of
    event time after their last score.
    """
    floor = min(policy.alert.min_value_tier, policy.winback.min_value_tier)
    if max(value_tier, r.tier_at_purchase) < floor:
        return None
    return as_of + MS_PER_DAY
