"""Churn: features of a customer at an event time, labels that never peek, the river models.

The question asked of the model: *will this customer place no order within the next
``horizon`` of event time?* (default 90 days).

* **Features.** `features(state, valuation, as_of)` describes a customer at event time ``as_of``
  from the ledger state alone: RFM, the rhythm of purchases and its trend, the value engine's
  P(alive) and expected purchases, recent service contacts and campaign engagement (decayed
  counters of the ledger) and their lifetime shares. Always the keys of `FEATURE_NAMES`, always
  finite floats. O(1) per call: it reads the last few purchase days, never the whole history.
* **Snapshots.** A `Snapshot` is the feature vector of one customer at the event time it was taken.
  `should_snapshot` allows one per customer per ``min_gap`` (default 7 days) of event time.
* **Labels without peeking.** A snapshot taken at ``t`` is *retained* (label 0) as soon as an
  order at ``t < time <= t + horizon`` is seen (`label_on_purchase`) and *churned* (label 1) as
  soon as the event-time watermark passes ``t + horizon`` without one (`label_on_watermark`). Both
  decisions depend on event times only, never on when a message arrived or on a clock, so replaying
  history gives the labels a live run gave, provided no order arrives after the watermark passed
  its time: give `label_on_watermark` the newest event time minus the lateness you allow.
* **Learning order.** Under `DEFAULT_SCHEDULE` (``"horizon"``) a labelled snapshot is learned when
  the watermark passes ``t + horizon``, retained or churned alike (`mature`, `learn_at`), oldest
  first; a retained label known earlier waits. ``"label"`` learns as soon as the label is known,
  which biases the model (see `DEFAULT_SCHEDULE`).
* **Bounded memory.** Every snapshot leaves the customer's list when the watermark passes
  ``t + horizon`` (churned, or retained and learned), and snapshots of one customer are at least
  ``min_gap`` apart. So a customer never holds more than `max_pending` ``= ceil(horizon /
  min_gap) + 1`` snapshots, pending and waiting together (14 with the defaults, about 1 kB each
  as JSON); with a watermark that lags the newest event time by ``lag``, use
  ``max_pending(horizon + lag, min_gap)``.
* **Models.** `make_model(kind)` builds each candidate river pipeline (`MODEL_KINDS`);
  `DEFAULT_MODEL` is the one chosen by ``python -m load.churn_study`` (see ``reports/churn``).
  `ProgressiveMetrics` keeps what progressive validation (predict, then learn, in learning order:
  `learn_many`) shows: ROC AUC, log loss, calibration by decile and drift of the log loss.

Examples
--------
>>> from stream_app.domain.ledger import CustomerState
>>> DAY = MS_PER_DAY
>>> state = CustomerState("C1", orders=2, revenue_c=8_000, purchase_days=(0, 30),
...                       first_purchase=0, last_purchase=30 * DAY, first_event=0,
...                       last_event=30 * DAY)
>>> x = features(state, None, 40 * DAY)
>>> list(x) == list(FEATURE_NAMES), x["recency_days"], x["frequency"], x["monetary"]
(True, 10.0, 2.0, 40.0)
>>> s = Snapshot("C1", 40 * DAY, x)
>>> label_on_purchase([s], 100 * DAY, DEFAULT_HORIZON_MS)[0] == [(s, RETAINED)]
True
>>> label_on_watermark([s], 131 * DAY, DEFAULT_HORIZON_MS)[0] == [(s, CHURNED)]
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:  # river is imported where a model is built: a lookup needs none of it
    from river import compose, drift, metrics

from stream_app.domain.events import MS_PER_DAY
from stream_app.domain.ledger import FAST_PREFIX, FAST_TAU_MS, RECENT_TAU_MS, CustomerState
from stream_app.domain.valuation import Valuation

__all__ = [
    "CHURNED",
    "DEFAULT_HORIZON_MS",
    "DEFAULT_MIN_GAP_MS",
    "DEFAULT_MODEL",
    "DEFAULT_SCHEDULE",
    "FEATURE_NAMES",
    "LEARN_SCHEDULES",
    "MAX_RATIO",
    "MODEL_KINDS",
    "PRIOR_GAP_DAYS",
    "RETAINED",
    "Labelled",
    "ProgressiveMetrics",
    "TREND_NAMES",
    "Snapshot",
    "churn_probability",
    "features",
    "trend_features",
    "label_on_purchase",
    "label_on_watermark",
    "learn_at",
    "learn_many",
    "make_model",
    "mature",
    "max_pending",
    "should_snapshot",
]

#: Label of a snapshot followed by an order within the horizon.
RETAINED: Final = 0
#: Label of a snapshot with no order within the horizon.
CHURNED: Final = 1
#: How far ahead a snapshot looks for an order: 90 days of event time.
DEFAULT_HORIZON_MS: Final = 90 * MS_PER_DAY
#: The least event time between two snapshots of one customer: 7 days.
DEFAULT_MIN_GAP_MS: Final = 7 * MS_PER_DAY
#: Inter-purchase gap assumed before a customer has one (a typical retailer: a month). It enters
#: the customer's mean gap as one pseudo-gap, so the mean moves from it to the customer's own.
PRIOR_GAP_DAYS: Final = 30.0
#: Ratios (trends) are clipped to this range so that one odd customer cannot dominate a scaler.
MAX_RATIO: Final = 20.0

#: The feature keys, in the order `features` returns them.
FEATURE_NAMES: Final = (
    # recency, frequency, monetary value, tenure
    "no_purchase",
    "recency_days",
    "frequency",
    "orders",
    "monetary",
    "return_rate",
    "tenure_days",
    # the rhythm of purchases and of spend
    "gap_mean_days",
    "gap_trend",
    "overdue_days",
    "overdue_ratio",
    "spend_trend",
    "recent_orders",
    "recent_spend",
    # the value engine
    "p_alive",
    "expected_purchases",
    # service contacts
    "recent_contacts",
    "recent_complaints",
    "recent_cancellation_requests",
    "recent_unresolved",
    "recent_sentiment",
    "contact_trend",
    "complaint_share",
    "cancellation_share",
    "unresolved_share",
    "sentiment_mean",
    # campaign engagement
    "recent_opened",
    "recent_clicked",
    "recent_converted",
    "recent_unsubscribed",
    "recent_bounced",
    "open_rate",
    "click_rate",
    "conversion_rate",
    "bounce_rate",
    "unsubscribed",
    "open_trend",
    # trends over the last weeks: the 10-day counters against the 30-day ones and the
    # customer's own rhythm (see `trend_features`)
    "order_pace",
    "order_pace_fast",
    "last_gap_ratio",
    "basket_trend_fast",
    "contacts_fast",
    "contact_accel",
    "complaints_fast",
    "cancellation_fast",
    "unresolved_fast",
    "sentiment_fast",
    "sentiment_change",
    "open_rate_recent",
    "open_rate_change",
    "click_rate_change",
    "unsubscribed_fast",
)
#: The trend features (a suffix of `FEATURE_NAMES`).
TREND_NAMES: Final = FEATURE_NAMES[FEATURE_NAMES.index("order_pace"):]


def _ratio(num: float, den: float, default: float = 0.0) -> float:
    return num / den if den > 0 else default


def _clip(value: float, lo: float = 0.0, hi: float = MAX_RATIO) -> float:
    return min(max(value, lo), hi)


def _rate_trend(recent: float, lifetime: float, tenure_days: float) -> float:
    """Decayed recent count against the lifetime rate over the counters' time constant.

    A steady rate gives about 1; a count that fell gives less, one that rose more. One
    pseudo-event on both sides keeps quiet customers near 1 instead of 0/0.
    """
    tau_days = RECENT_TAU_MS / MS_PER_DAY
    expected = lifetime * tau_days / max(tenure_days, tau_days)
    return _clip((recent + 1.0) / (expected + 1.0))


def features(
    state: CustomerState, valuation: Valuation | None, as_of: int
) -> dict[str, float]:
    """The churn features of a customer at event time `as_of` (epoch ms); keys `FEATURE_NAMES`.

    Durations are days of event time, money is major units of the base currency, ``recent_*``
    are the ledger's exponentially decayed counters (time constant 30 days) seen from `as_of`.
    ``valuation`` is the value engine's at (or near) `as_of` with a fixed horizon; without one
    (no order yet) P(alive) is 1 (BG/NBD: nobody drops out before a repeat purchase) and expected
    purchases 0. A customer without an order has ``no_purchase = 1``, recency equal to tenure and
    the prior gap of `PRIOR_GAP_DAYS`. An `as_of` before the state's last event (a late event)
    gives zero durations rather than negative ones. Cost: O(1), a few dozen float operations.

    >>> from stream_app.domain.ledger import CustomerState
    >>> x = features(CustomerState("C1", first_event=0), None, 3 * MS_PER_DAY)
    >>> x["no_purchase"], x["recency_days"], x["tenure_days"], x["p_alive"], len(x)
    (1.0, 3.0, 3.0, 1.0, 52)
    """
    day = float(MS_PER_DAY)
    tenure = 0.0 if state.first_event is None else max(as_of - state.first_event, 0) / day
    if state.last_purchase is None:
        recency = tenure
    else:
        recency = max(as_of - state.last_purchase, 0) / day
    days = state.purchase_days
    n_days = len(days)
    gaps = max(n_days - 1, 0)
    span = float(days[-1] - days[0]) if n_days else 0.0
    gap_mean = (span + PRIOR_GAP_DAYS) / (gaps + 1)
    if gaps >= 2:
        k = min(3, gaps)
        gap_trend = ((days[-1] - days[-1 - k]) / k) / (span / gaps)
    else:
        gap_trend = 1.0
    orders = float(state.orders)
    monetary = _ratio(state.revenue_c / 100, orders)
    recent = state.recent_at_time(as_of)
    r_orders, r_spend = recent["orders"], recent["spend"]
    # recent spend per recent order against the lifetime mean, shrunk to 1 by one pseudo-order
    spend_trend = _ratio(r_spend + monetary, (r_orders + 1.0) * monetary, 1.0)

    contacts = state.contacts
    n_contacts = float(state.contacts_total)
    r_contacts = recent["contacts"]
    touches = state.touches
    delivered = float(touches.get("delivered", 0))
    opened = float(touches.get("opened", 0))

    if valuation is None:
        p_alive, expected = 1.0, 0.0
    else:
        p_alive, expected = valuation.p_alive, valuation.expected_purchases

    values = (
        1.0 if n_days == 0 else 0.0,
        recency,
        float(n_days),
        orders,
        monetary,
        _ratio(state.returns, orders),
        tenure,
        gap_mean,
        _clip(gap_trend),
        recency - gap_mean,
        _clip(recency / gap_mean, hi=10 * MAX_RATIO),
        _clip(spend_trend),
        r_orders,
        r_spend,
        p_alive,
        expected,
        r_contacts,
        recent["complaints"],
        recent["cancellation_requests"],
        recent["unresolved"],
        # decayed sentiment sum over decayed contacts, shrunk to 0 by one neutral contact
        recent["sentiment"] / (r_contacts + 1.0),
        _rate_trend(r_contacts, n_contacts, tenure),
        _ratio(contacts.get("complaint", 0), n_contacts),
        _ratio(contacts.get("cancellation_request", 0), n_contacts),
        _ratio(state.unresolved, n_contacts),
        _ratio(state.sentiment_sum_m / 1000, state.sentiment_n),
        recent["opened"],
        recent["clicked"],
        recent["converted"],
        recent["unsubscribed"],
        recent["bounced"],
        _clip(_ratio(opened, delivered), hi=1.0),
        _clip(_ratio(touches.get("clicked", 0), delivered), hi=1.0),
        _clip(_ratio(touches.get("converted", 0), delivered), hi=1.0),
        _clip(_ratio(touches.get("bounced", 0), touches.get("sent", 0)), hi=1.0),
        1.0 if touches.get("unsubscribed", 0) else 0.0,
        _rate_trend(recent["opened"], opened, tenure),
        *trend_features(state, recent, gap_mean, monetary).values(),
    )
    isfinite = math.isfinite
    return {name: f if isfinite(f := float(v)) else 0.0
            for name, v in zip(FEATURE_NAMES, values, strict=True)}


def trend_features(
    state: CustomerState, recent: Mapping[str, float], gap_mean: float, monetary: float
) -> dict[str, float]:
    """The trend features (keys `TREND_NAMES`): how the last weeks differ from before.

    ``recent`` is `CustomerState.recent_at_time` at the scoring time: the 30-day counters and
    the 10-day ones (``f_`` keys). A decayed counter of events at a steady rate settles at rate
    times its time constant, so ``order_pace`` (30-day orders against the customer's own mean
    gap) and ``order_pace_fast`` are about 1 for a customer buying at their usual pace and fall
    towards 0 as orders thin out; ``contact_accel`` compares the 10-day contact rate with the
    30-day one (1: steady, more: rising; one pseudo-contact on both sides); ``*_fast`` are the
    10-day counters; ``sentiment_change`` is the 10-day mean sentiment minus the 30-day one
    (negative: falling); the open and click rate changes are the 10-day rates minus the
    lifetime ones. Ratios are clipped to `MAX_RATIO`.

    >>> from stream_app.domain.ledger import CustomerState
    >>> t = trend_features(CustomerState("C1"), CustomerState("C1").recent_at_time(0), 30.0, 0.0)
    >>> list(t) == list(TREND_NAMES), t["contact_accel"], t["order_pace"]
    (True, 1.0, 0.0)
    """
    slow_days = RECENT_TAU_MS / MS_PER_DAY
    fast_days = FAST_TAU_MS / MS_PER_DAY

    def fast(key: str) -> float:
        return recent.get(FAST_PREFIX + key, 0.0)

    days = state.purchase_days
    if len(days) >= 3:
        earlier = (days[-2] - days[0]) / (len(days) - 2)
        last_gap = _clip((days[-1] - days[-2]) / max(earlier, 1.0))
    else:
        last_gap = 1.0
    f_orders, f_spend = fast("orders"), fast("spend")
    basket_fast = _ratio(f_spend + monetary, (f_orders + 1.0) * monetary, 1.0)
    r_contacts, f_contacts = recent["contacts"], fast("contacts")
    accel = (f_contacts * slow_days / fast_days + 1.0) / (r_contacts + 1.0)
    sentiment_slow = recent["sentiment"] / (r_contacts + 1.0)
    sentiment_fast = fast("sentiment") / (f_contacts + 1.0)
    touches = state.touches
    delivered = float(touches.get("delivered", 0))
    open_rate = _clip(_ratio(float(touches.get("opened", 0)), delivered), hi=1.0)
    click_rate = _clip(_ratio(float(touches.get("clicked", 0)), delivered), hi=1.0)
    f_delivered = fast("delivered")
    return {
        "order_pace": _clip(recent["orders"] * gap_mean / slow_days),
        "order_pace_fast": _clip(f_orders * gap_mean / fast_days),
        "last_gap_ratio": last_gap,
        "basket_trend_fast": _clip(basket_fast),
        "contacts_fast": f_contacts,
        "contact_accel": _clip(accel),
        "complaints_fast": fast("complaints"),
        "cancellation_fast": fast("cancellation_requests"),
        "unresolved_fast": fast("unresolved"),
        "sentiment_fast": sentiment_fast,
        "sentiment_change": sentiment_fast - sentiment_slow,
        "open_rate_recent": (recent["opened"] + open_rate) / (recent["delivered"] + 1.0),
        "open_rate_change": (fast("opened") + open_rate) / (f_delivered + 1.0) - open_rate,
        "click_rate_change": (fast("clicked") + click_rate) / (f_delivered + 1.0) - click_rate,
        "unsubscribed_fast": fast("unsubscribed"),
    }


# --------------------------------------------------------------------------------- snapshots


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The features of one customer at the event time `taken_at` (epoch ms), awaiting a label.

    >>> s = Snapshot("C1", 5, {"recency_days": 1.0})
    >>> Snapshot.from_dict(s.to_dict()) == s
    True
    """

    customer_id: str
    taken_at: int
    features: Mapping[str, float] = field(default_factory=dict)
    #: With a lead window (`label_on_purchase`'s ``lead_ms`` > 0): the newest order seen within
    #: it, from which the silence of the horizon is counted; None: none yet.
    last_order_at: int | None = None

    @property
    def anchor(self) -> int:
        """The event time from which the horizon's silence is counted (ms)."""
        if self.last_order_at is None:
            return self.taken_at
        return max(self.taken_at, self.last_order_at)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for the pending list kept per customer)."""
        data: dict[str, Any] = {"customer_id": self.customer_id, "taken_at": self.taken_at,
                                "features": dict(self.features)}
        if self.last_order_at is not None:
            data["last_order_at"] = self.last_order_at
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Snapshot:
        """The inverse of `to_dict`."""
        last = data.get("last_order_at")
        return cls(str(data["customer_id"]), int(data["taken_at"]),
                   {str(k): float(v) for k, v in data["features"].items()},
                   None if last is None else int(last))


def max_pending(horizon_ms: int = DEFAULT_HORIZON_MS, min_gap_ms: int = DEFAULT_MIN_GAP_MS) -> int:
    """The most snapshots one customer can have pending: ``ceil(horizon / min_gap) + 1``.

    Pending snapshots have ``taken_at`` within ``[watermark - horizon, newest event time]`` and lie
    `min_gap_ms` apart (`should_snapshot`), hence the bound. Pass ``horizon + lag`` when the
    watermark lags the newest event time by ``lag``.

    >>> max_pending(), max_pending(90 * MS_PER_DAY, 30 * MS_PER_DAY)
    (14, 4)
    """
    if horizon_ms < 0 or min_gap_ms <= 0:
        raise ValueError(f"horizon {horizon_ms} must be >= 0 and min_gap {min_gap_ms} > 0")
    return math.ceil(horizon_ms / min_gap_ms) + 1


def should_snapshot(
    last_snapshot_at: int | None, now: int, min_gap_ms: int = DEFAULT_MIN_GAP_MS
) -> bool:
    """Whether to take a snapshot of a customer at event time `now`.

    True for a customer's first snapshot and once `min_gap_ms` of event time has passed since the
    last one; never for an event older than the last snapshot (a late event: its features would
    include events after it). With `label_on_watermark` run at least up to the current watermark
    this bounds the pending snapshots of a customer by `max_pending` (14 for 90 and 7 days).

    >>> DAY = MS_PER_DAY
    >>> should_snapshot(None, 0), should_snapshot(0, 6 * DAY), should_snapshot(0, 7 * DAY)
    (True, False, True)
    """
    if min_gap_ms <= 0:
        raise ValueError(f"min_gap {min_gap_ms} must be > 0")
    return last_snapshot_at is None or now - last_snapshot_at >= min_gap_ms


# ------------------------------------------------------------------------------------ labels

Labelled = list[tuple[Snapshot, int]]


def label_on_watermark(
    pending: Sequence[Snapshot], watermark: int, horizon_ms: int = DEFAULT_HORIZON_MS
) -> tuple[Labelled, list[Snapshot]]:
    """Label churned every snapshot whose horizon the event-time `watermark` has passed.

    A snapshot taken at ``t`` is churned once ``watermark > t + horizon_ms``: every order up to
    ``t + horizon_ms`` (inclusive) has been seen, and none labelled it retained. Returns the
    labelled snapshots, oldest first (the order their labels became known), and the rest in their
    order.

    >>> DAY = MS_PER_DAY
    >>> a, b = Snapshot("C1", 0), Snapshot("C1", 10 * DAY)
    >>> labelled, rest = label_on_watermark([a, b], 90 * DAY + 1, 90 * DAY)
    >>> labelled == [(a, CHURNED)], rest == [b]
    (True, True)
    >>> label_on_watermark([a], 90 * DAY, 90 * DAY)[0]
    []
    """
    labelled: Labelled = []
    rest: list[Snapshot] = []
    for snap in pending:
        if watermark > snap.anchor + horizon_ms:
            labelled.append((snap, CHURNED))
        else:
            rest.append(snap)
    labelled.sort(key=lambda pair: pair[0].taken_at)
    return labelled, rest


def label_on_purchase(
    pending: Sequence[Snapshot],
    purchase_at: int,
    horizon_ms: int = DEFAULT_HORIZON_MS,
    lead_ms: int = 0,
) -> tuple[Labelled, list[Snapshot]]:
    """Label the customer's pending snapshots with an order at event time `purchase_at`.

    With a lead window ``lead_ms`` > 0 the question becomes *will the customer drop out within
    the next lead days*: a snapshot at ``t`` is churned when the silence of the horizon starts
    within ``[t, t + lead]``, i.e. after its last order in that window (its `Snapshot.anchor`),
    and retained when an order comes after ``t + lead`` within the horizon of the anchor. An
    order within the window only moves the anchor. ``lead_ms = 0`` is the plain question.

    A snapshot taken at ``t < purchase_at <= t + horizon_ms`` is retained; one with
    ``t + horizon_ms < purchase_at`` is churned (its horizon passed with no order, or an earlier
    one would have labelled it); one taken at or after the order stays pending: an order never
    labels a snapshot from before the snapshot, which would be peeking. Returns the labelled
    snapshots, churned ones first (their labels were known first), then by ``taken_at``.

    >>> DAY = MS_PER_DAY
    >>> old, mid, new = Snapshot("C1", 0), Snapshot("C1", 50 * DAY), Snapshot("C1", 120 * DAY)
    >>> labelled, rest = label_on_purchase([old, mid, new], 100 * DAY, 90 * DAY)
    >>> [(s.taken_at // DAY, y) for s, y in labelled], rest == [new]
    ([(0, 1), (50, 0)], True)
    """
    if not 0 <= lead_ms <= horizon_ms:
        raise ValueError(f"lead {lead_ms} must be within 0..horizon {horizon_ms}")
    churned, rest = label_on_watermark(pending, purchase_at, horizon_ms)
    retained: Labelled = []
    still: list[Snapshot] = []
    for snap in rest:
        if snap.taken_at + lead_ms < purchase_at:
            retained.append((snap, RETAINED))
        elif snap.taken_at < purchase_at:
            last = purchase_at if snap.last_order_at is None else max(snap.last_order_at,
                                                                       purchase_at)
            still.append(replace(snap, last_order_at=last))
        else:
            still.append(snap)
    retained.sort(key=lambda pair: pair[0].taken_at)
    return churned + retained, still


# ---------------------------------------------------------------------------- learning order

#: When a labelled snapshot is learned. ``"horizon"``: when the watermark passes ``t + horizon``,
#: whatever the label (retained labels wait). ``"label"``: as soon as the label is known.
LEARN_SCHEDULES: Final = ("horizon", "label")
#: The schedule chosen by ``python -m load.churn_study``: learning every example at the end of
#: its horizon makes the order of learning independent of the label. Learning retained labels
#: early feeds the model, at any moment, recent snapshots that are all retained (their churned
#: twins are still pending), which biases the scores it serves towards "retained" for customers
#: that look recent.
DEFAULT_SCHEDULE: Final = "horizon"


def learn_at(
    taken_at: int,
    labelled_at: int,
    horizon_ms: int = DEFAULT_HORIZON_MS,
    schedule: str = DEFAULT_SCHEDULE,
) -> int:
    """The event time at which a snapshot labelled at `labelled_at` is learned under `schedule`.

    >>> DAY = MS_PER_DAY
    >>> learn_at(0, 5 * DAY, 90 * DAY, "label") // DAY, learn_at(0, 5 * DAY, 90 * DAY) // DAY
    (5, 90)
    """
    if schedule == "label":
        return labelled_at
    if schedule == "horizon":
        return max(labelled_at, taken_at + horizon_ms + 1)
    raise ValueError(f"unknown schedule {schedule!r}; one of {', '.join(LEARN_SCHEDULES)}")


def mature(
    labelled: Sequence[tuple[Snapshot, int]],
    watermark: int,
    horizon_ms: int = DEFAULT_HORIZON_MS,
) -> tuple[Labelled, Labelled]:
    """Split labelled snapshots into those to learn now (horizon passed) and those that wait.

    The ``"horizon"`` schedule: a labelled snapshot is learned once ``watermark > taken_at +
    horizon_ms``, the moment a churned one would have been labelled. Returns the ready ones by
    ``taken_at`` and the rest in their order. A customer's waiting and pending snapshots together
    stay within `max_pending`, since both leave at ``taken_at + horizon``.

    >>> DAY = MS_PER_DAY
    >>> a, b = Snapshot("C1", 0), Snapshot("C1", 30 * DAY)
    >>> ready, waiting = mature([(b, RETAINED), (a, RETAINED)], 91 * DAY, 90 * DAY)
    >>> ready == [(a, RETAINED)], waiting == [(b, RETAINED)]
    (True, True)
    """
    ready: Labelled = []
    waiting: Labelled = []
    for pair in labelled:
        if watermark > pair[0].anchor + horizon_ms:
            ready.append(pair)
        else:
            waiting.append(pair)
    ready.sort(key=lambda pair: pair[0].taken_at)
    return ready, waiting


# ------------------------------------------------------------------------------------ models

#: The candidate models of `make_model`.
MODEL_KINDS: Final = ("logreg", "hoeffding", "arf")
#: The model chosen by progressive validation on simulated data (``python -m load.churn_study``).
DEFAULT_MODEL: Final = "logreg"


def make_model(kind: str = DEFAULT_MODEL, seed: int = 42) -> compose.Pipeline:
    """A fresh river pipeline for churn: ``learn_one(x, y)``, ``predict_proba_one(x)[1]``.

    * ``"logreg"``: `StandardScaler` then `LogisticRegression` by plain SGD (step 0.001, L2
      1e-4): about 20 µs to predict and 70 µs to learn one example, calibrated probabilities.
    * ``"hoeffding"``: a Hoeffding adaptive tree (naive Bayes adaptive leaves, ADWIN-guarded
      subtrees that replace branches after drift).
    * ``"arf"``: an adaptive random forest of 10 Hoeffding trees (majority-class leaves, online
      bagging with Poisson(1) weights, ADWIN drift and warning detectors per tree); about 1 ms
      per example, some 15 times the linear model.

    `seed` makes the tree models reproducible (the linear model has no randomness).

    >>> model = make_model("logreg")
    >>> model.learn_one({"recency_days": 100.0}, 1)
    >>> 0.0 < model.predict_proba_one({"recency_days": 100.0})[1] < 1.0
    True
    """
    from river import compose, forest, linear_model, optim, preprocessing, tree

    if kind == "logreg":
        return compose.Pipeline(
            preprocessing.StandardScaler(),
            linear_model.LogisticRegression(optimizer=optim.SGD(0.001), l2=1e-4),
        )
    if kind == "hoeffding":
        return compose.Pipeline(
            tree.HoeffdingAdaptiveTreeClassifier(
                grace_period=100, delta=1e-5, leaf_prediction="nba", seed=seed
            )
        )
    if kind == "arf":
        return compose.Pipeline(
            forest.ARFClassifier(
                n_models=10, grace_period=100, lambda_value=1, leaf_prediction="mc", seed=seed
            )
        )
    raise ValueError(f"unknown churn model {kind!r}; one of {', '.join(MODEL_KINDS)}")


def churn_probability(model: compose.Pipeline, x: Mapping[str, float]) -> float:
    """P(churned) by `model` for features `x`, 0.5 before the model has learned anything.

    >>> churn_probability(make_model("logreg"), {"recency_days": 1.0})
    0.5
    """
    proba = model.predict_proba_one(dict(x))
    if not proba:
        return 0.5
    p = float(proba.get(CHURNED, proba.get(True, 0.0)))
    return min(max(p, 0.0), 1.0) if math.isfinite(p) else 0.5


# ----------------------------------------------------------------------------------- metrics

_BINS: Final = 10


def _river_metric(name: str, **kwargs: Any) -> Any:
    from river import metrics

    return getattr(metrics, name)(**kwargs)


def _adwin(delta: float) -> Any:
    from river import drift

    return drift.ADWIN(delta=delta)

_EPS: Final = 1e-15


def _new_bins() -> list[float]:
    return [0.0] * _BINS


@dataclass
class ProgressiveMetrics:
    """What progressive validation shows: update with each label and the prediction made before.

    * ``auc``: river's `ROCAUC` over the whole stream (thresholded approximation, 100 thresholds);
    * ``rolling_auc``: river's `RollingROCAUC`, exact, over the last `window` examples;
    * ``log_loss``: river's `LogLoss` over the whole stream;
    * calibration by decile of predicted probability (bins ``[0, 0.1)``, ..., ``[0.9, 1]``):
      count, mean predicted and observed churn rate per bin, and the expected calibration error;
    * ``detector``: ADWIN on each example's log loss; ``drifts`` counts detections and
      ``last_drift`` is the example number of the latest.

    Picklable, so a learner can keep it next to its model and publish `summary`.

    >>> m = ProgressiveMetrics()
    >>> for y, p in [(0, 0.1), (0, 0.4), (1, 0.35), (1, 0.8)]:
    ...     m.update(y, p)
    >>> s = m.summary()
    >>> s["n"], s["churn_rate"], round(s["rolling_auc"], 2), s["calibration"][1]["n"]
    (4, 0.5, 0.75, 1)
    """

    window: int = 5_000
    auc: metrics.ROCAUC = field(default_factory=lambda: _river_metric("ROCAUC", n_thresholds=100))
    rolling_auc: metrics.RollingROCAUC = field(init=False)
    log_loss: metrics.LogLoss = field(default_factory=lambda: _river_metric("LogLoss"))
    detector: drift.ADWIN = field(default_factory=lambda: _adwin(0.002))
    n: int = 0
    positives: int = 0
    drifts: int = 0
    last_drift: int | None = None
    bin_n: list[float] = field(default_factory=_new_bins)
    bin_p: list[float] = field(default_factory=_new_bins)
    bin_y: list[float] = field(default_factory=_new_bins)

    def __post_init__(self) -> None:
        self.rolling_auc = _river_metric("RollingROCAUC", window_size=self.window)

    def update(self, y_true: int | bool, p: float) -> None:
        """Add one labelled example: `y_true` 1 if churned, `p` the predicted P(churned)."""
        y = bool(y_true)
        p = min(max(float(p), 0.0), 1.0) if math.isfinite(p) else 0.5
        self.n += 1
        self.positives += int(y)
        self.auc.update(y, p)
        self.rolling_auc.update(y, p)
        self.log_loss.update(y, p)
        b = min(int(p * _BINS), _BINS - 1)
        self.bin_n[b] += 1
        self.bin_p[b] += p
        self.bin_y[b] += y
        loss = -math.log(max(p if y else 1.0 - p, _EPS))
        self.detector.update(loss)
        if self.detector.drift_detected:
            self.drifts += 1
            self.last_drift = self.n

    def summary(self) -> dict[str, Any]:
        """Plain numbers (JSON-ready): n, churn rate, AUCs, log loss, calibration, drift."""
        calibration = []
        ece = 0.0
        for b in range(_BINS):
            count = self.bin_n[b]
            mean_p = self.bin_p[b] / count if count else None
            observed = self.bin_y[b] / count if count else None
            if count and mean_p is not None and observed is not None:
                ece += count * abs(mean_p - observed)
            calibration.append({
                "bin": f"{b / _BINS:.1f}-{(b + 1) / _BINS:.1f}",
                "n": int(count),
                "mean_predicted": mean_p,
                "observed": observed,
            })
        return {
            "n": self.n,
            "churn_rate": self.positives / self.n if self.n else None,
            "auc": float(self.auc.get()) if self.n else None,
            "rolling_auc": float(self.rolling_auc.get()) if self.n else None,
            "log_loss": float(self.log_loss.get()) if self.n else None,
            "ece": ece / self.n if self.n else None,
            "calibration": calibration,
            "drifts": self.drifts,
            "last_drift": self.last_drift,
        }


def learn_many(
    model: compose.Pipeline,
    batch: Sequence[tuple[Snapshot, int]],
    progress: ProgressiveMetrics | None = None,
) -> list[float]:
    """Predict every example of `batch`, then learn them in order; return the predictions.

    A batch is what became ready at one event time (`mature`, or `label_on_purchase` under the
    ``"label"`` schedule). All are predicted before any is learned: snapshots of one customer
    labelled by one order are near-copies, and learning one before predicting the next would
    score the model on what it has just been told.

    >>> model = make_model("logreg")
    >>> batch = [(Snapshot("C1", 0, {"recency_days": 1.0}), RETAINED),
    ...          (Snapshot("C1", 1, {"recency_days": 1.0}), RETAINED)]
    >>> learn_many(model, batch)
    [0.5, 0.5]
    """
    predictions = [churn_probability(model, snap.features) for snap, _ in batch]
    for (snap, y), p in zip(batch, predictions, strict=True):
        if progress is not None:
            progress.update(y, p)
        model.learn_one(dict(snap.features), y)
    return predictions
