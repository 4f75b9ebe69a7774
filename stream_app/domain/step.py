"""The engine's batch step: apply a batch's events, then value, label, score and decide.

One pure step, used unchanged by the worker's agent (`stream_app.pipeline.Ingestor`), its
rescoring timers (the same step with no events, at the event-time watermark) and the
studies that replay a simulated population (`load/alert_study.py`):

1. `apply_events` applies each event to its customer's ledger in order (skipping replays,
   setting duplicates aside) and to their retention memory;
2. `decide_batch` values every customer the batch touched in one vectorised call, releases
   the churn labels event time has reached, scores churn for the whole batch at once, and
   decides each customer's snapshot, alert and win-back trigger.

What the step returns is data: the new states and decisions. Encoding them for the store,
the messages for Kafka and the commit are the shell's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from stream_app.domain.churn import Snapshot
from stream_app.domain.events import Event, Source
from stream_app.domain.ledger import CustomerState, ingest
from stream_app.domain.retention import (
    Decision,
    Retention,
    RetentionPolicy,
    Scorer,
    decide,
    label_due,
    observe,
    rescore_due,
    score_batch,
)
from stream_app.domain.rollups import Increment, campaign_increments
from stream_app.domain.tiers import Cuts, value_tier
from stream_app.domain.valuation import Valuation, ValueModel, value_states

__all__ = [
    "Applied",
    "AppliedEvent",
    "Customer",
    "Models",
    "Outcome",
    "apply_events",
    "decide_batch",
]

#: A released churn example: the snapshot, its label and the event time it was labelled at.
Example = tuple[Snapshot, int, int]


@dataclass(frozen=True, slots=True)
class Models:
    """What the step decides with: the value model, the population's cut points and the
    churn scorer (None before the first churn model: the rules use 1 - P(alive))."""

    value: ValueModel
    cuts: Cuts = field(default_factory=Cuts)
    scorer: Scorer | None = None
    churn_version: str = "0"


@dataclass(frozen=True, slots=True)
class AppliedEvent:
    """One event that changed its customer: the states around it and its campaign sums."""

    event: Event
    source: Source
    before: CustomerState
    after: CustomerState
    campaign: tuple[Increment, ...]


@dataclass(slots=True)
class Applied:
    """What `apply_events` did to a batch.

    `counts` maps each customer seen to (events applied, replays skipped); `duplicates`
    are the events whose id the customer already had, in input order (their customers'
    offsets still moved, so they are in `changed`).
    """

    states: dict[str, CustomerState]
    retentions: dict[str, Retention]
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)
    events: list[AppliedEvent] = field(default_factory=list)
    duplicates: list[tuple[Event, Source]] = field(default_factory=list)
    increments: dict[str, list[Increment]] = field(default_factory=dict)
    labelled: dict[str, list[Example]] = field(default_factory=dict)
    changed: list[str] = field(default_factory=list)


def apply_events(
    states: Mapping[str, CustomerState],
    retention_of: Callable[[str], Retention],
    events: Sequence[tuple[Event, Source]],
    policy: RetentionPolicy,
    default_margin_rate: float = 0.3,
    event_id_window: int = 0,
    processed: Mapping[tuple[str, int], int] | None = None,
) -> Applied:
    """Apply `events` in order to the customers' ledgers and retention memories.

    `states` holds every customer of the batch as loaded; `retention_of` gives a
    customer's stored retention memory when their first event needs it. A replay
    (an offset the customer has applied) is skipped; a duplicate event id moves the
    customer's offsets only. `processed` is the engine's applied offset per partition,
    for records in the old offset layout (`CustomerState.has_applied`).

    >>> from stream_app.domain.events import Purchase
    >>> order = Purchase("e1", "C1", 86_400_000, "order", 5_000, 3_000, "web")
    >>> src = Source("cvm.purchases", 0, 7)
    >>> a = apply_events({"C1": CustomerState("C1")}, lambda c: Retention(),
    ...                  [(order, src), (order, src)], RetentionPolicy(), event_id_window=8)
    >>> a.counts, a.states["C1"].orders, a.changed
    ({'C1': (1, 1)}, 1, ['C1'])
    """
    applied = Applied(dict(states), {})
    duplicated: set[str] = set()
    for event, source in events:
        cid = event.customer_id
        before = applied.states[cid]
        try:
            after, outcome = ingest(before, event, source, default_margin_rate,
                                    event_id_window, processed)
        except Exception as exc:
            exc.add_note(f"while applying {source.topic}/{source.partition} "
                         f"offset {source.offset}")
            raise
        n, replays = applied.counts.get(cid, (0, 0))
        if outcome == "replayed":
            applied.counts[cid] = (n, replays + 1)
            continue
        applied.counts[cid] = (n, replays)
        applied.states[cid] = after
        if outcome == "duplicate":
            duplicated.add(cid)
            applied.duplicates.append((event, source))
            continue
        campaign = tuple(campaign_increments(before, event, default_margin_rate))
        applied.increments.setdefault(cid, []).extend(campaign)
        applied.events.append(AppliedEvent(event, source, before, after, campaign))
        r = applied.retentions.get(cid) or retention_of(cid)
        applied.retentions[cid], new = observe(r, event, policy)
        applied.labelled.setdefault(cid, []).extend((s, y, event.occurred_at) for s, y in new)
        applied.counts[cid] = (n + 1, replays)
    applied.changed = [cid for cid, (n, _) in applied.counts.items()
                       if n > 0 or cid in duplicated]
    return applied


@dataclass(frozen=True, slots=True)
class Customer:
    """A customer to decide: their state, retention memory and the event time to decide at."""

    state: CustomerState
    retention: Retention
    as_of: int


@dataclass(frozen=True, slots=True)
class Outcome:
    """What `decide_batch` decided for one customer.

    `labelled`: the churn examples released (snapshot, label, labelled at).
    `label_at` / `rescore_at`: the event times at which the next label is due and at
    which the customer should be rescored without new events (None: not at all).
    """

    customer: Customer
    valuation: Valuation | None
    tier: int
    decision: Decision
    labelled: tuple[Example, ...] = ()
    label_at: int | None = None
    rescore_at: int | None = None

    @property
    def customer_id(self) -> str:
        return self.customer.state.customer_id


def decide_batch(
    customers: Sequence[Customer],
    models: Models,
    policy: RetentionPolicy,
    horizon_days: float,
    label_watermark: int | None = None,
) -> list[Outcome]:
    """Value, label, score and decide `customers`, each at their own `as_of`.

    The batch is valued in one vectorised call (`value_states`) and its churn
    features scored at once (`score_batch`: one matrix-vector product for the linear
    model). With a `label_watermark` (the rescoring timers), the pending churn
    snapshots whose horizon event time has passed are labelled first.

    >>> from stream_app.domain.events import MS_PER_DAY
    >>> state = CustomerState("C1", orders=2, purchase_days=(1, 30), first_event=MS_PER_DAY,
    ...                       last_event=30 * MS_PER_DAY, last_purchase=30 * MS_PER_DAY)
    >>> [o] = decide_batch([Customer(state, Retention(), 30 * MS_PER_DAY)],
    ...                    Models(ValueModel()), RetentionPolicy(), 365.0)
    >>> o.valuation is not None, o.tier, len(o.decision.retention.pending)
    (True, 50, 1)
    """
    values = value_states(models.value, [(c.state, c.as_of) for c in customers], horizon_days)
    scored = score_batch(
        [(c.state, v, c.as_of) for c, v in zip(customers, values, strict=True)], models.scorer
    )
    outcomes = []
    for c, valuation, x_p in zip(customers, values, scored, strict=True):
        r = c.retention
        labelled: tuple[Example, ...] = ()
        if label_watermark is not None:
            r, due = label_due(r, label_watermark, policy)
            labelled = tuple((snap, y, label_watermark) for snap, y in due)
        tier = 0 if valuation is None else value_tier(valuation, models.cuts)
        d = decide(r, c.state, valuation, tier, c.as_of, policy, models.scorer,
                   models.churn_version, scored=x_p)
        due_anchor = d.retention.label_due
        outcomes.append(Outcome(
            c, valuation, tier, d, labelled,
            label_at=None if due_anchor is None else due_anchor + policy.horizon_ms,
            rescore_at=rescore_due(d.retention, tier, c.as_of, policy),
        ))
    return outcomes
