"""Offline study of the defection alerts against the simulator's ground truth.

``python -m load.alert_study [--customers N --days D --seed S --simulator S --lead-days D]``
writes ``reports/alerts/study.md``, ``reports/alerts/precision_recall.png`` and
``reports/alerts/lead_time.png``.

1. **Replay at the live engine's semantics.** The simulated events (`churn_study.domain_events`)
   go through the pure domain in event-time order, in batches of ``--tick-hours`` of event time
   (the worker's batches). Per batch, with the worker's own step (`domain.step`): the events
   are applied (`step.apply_events`) and each changed customer is valued at their own latest
   event, given a value tier from the population's CLV percentiles (cut points refreshed after
   every batch from the stored CLVs, as the worker refreshes them from the CLV histogram), scored
   and decided on (`step.decide_batch`, with the churn scorer of the newest model). Then, like
   the rescoring timer (`pipeline.Ingestor.revisit`), customers whose churn snapshots reached
   their horizon or whose value is at stake and whose score is a day old are labelled
   (`retention.label_due`) and rescored at the watermark. The released examples are learned by
   one river model in label order, as the learner does (`churn.make_model`, predict then learn).
   The value model is refitted from the population's statistics every ``--fit-days``
   (`valuation.fit_population` on the rows the planner's histogram markers give), and every
   customer is then revalued.
2. **Candidates in one pass.** Valuations and the churn model do not depend on the alert policy,
   so each candidate `AlertPolicy` is decided (`alerts.decide_alert`) at every decision, with its
   own per-customer `AlertMemory`.
3. **Metrics against ground truth** (`load.simulator.ground_truth`: every customer's alive periods;
   a period ends at its true dropout, which the data never shows): see `current_dropout`,
   `is_right`, `caught`, `operator_load` and `score`. The evaluation window is
   ``[start + warmup, end - H]``: alerts and dropouts in it are counted, so every counted alert and
   dropout has H days of data on both sides within the run, and the models have warmed up.
4. **Choice** (`choose_for_lead`, ``--rule lead``, the default): the largest share of valuable
   dropouts alerted at least `LEAD_TARGET_DAYS` ahead among the candidates with a precision of
   at least `MIN_PRECISION` (`Scores.recall_ahead`); or (`choose`, ``--rule f1``) the highest F1
   (optionally among candidates whose operator load is at most ``--max-load``). A candidate
   within `F1_TIE` of the best is tied, and a tie goes to the lower operator load.

``--simulator precursors`` (default) or ``classic`` chooses how the simulated customers defect
(`SimConfig.precursors`); ``--lead-days`` the lead window of the churn label; ``--candidates``
replays only the named candidates (each candidate's figures do not depend on the others).
``--ceiling`` replays nothing: it counts the true dropouts with a precursor 14 to 60 days before
them, discrete events (`precursors_of`) and trends against the customer's own history
(`trend_precursors`), and how often calm customers show those trends (`ceiling`).
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import math
import pickle
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from types import MappingProxyType
from typing import Any

from load.churn_study import day_text, domain_events, fmt
from load.simulator import SimConfig, ground_truth
from stream_app.domain import churn, step
from stream_app.domain.alerts import AlertMemory, AlertPolicy, decide_alert
from stream_app.domain.events import (
    MS_PER_DAY,
    CampaignTouch,
    Event,
    Purchase,
    ServiceContact,
    Source,
)
from stream_app.domain.ledger import CustomerState
from stream_app.domain.retention import (
    Retention,
    RetentionPolicy,
)
from stream_app.domain.rfm import log_bucket, percentile_cuts
from stream_app.domain.severity import severity, value_at_risk
from stream_app.domain.valuation import Valuation, ValueModel, fit_population, value_states
from stream_app.models import MIN_FIT_CUSTOMERS
from stream_app.planner import CLV_BASE, Cuts, markers, spend_bucket_value
from stream_app.settings import Settings

#: Candidates whose F1 is within this of the best are tied; a tie goes to the lower load.
F1_TIE = 0.01
#: The lead time an alert needs to leave room for an account manager to act (days).
LEAD_TARGET_DAYS = 14.0
#: The precision an alert policy needs to be chosen by `choose_for_lead`.
MIN_PRECISION = 0.5
#: The horizon of the CLV the worker stores (``CVM_HORIZON_DAYS``).
VALUATION_HORIZON_DAYS = 365.0
#: A dropout time for a customer alive past everything the simulator knows.
NEVER = sys.maxsize

#: The signal weights before this study (`rules.DEFAULT_WEIGHTS` then; ``contact_surge`` came
#: later, at weight 1).
PRE_STUDY_WEIGHTS: Mapping[str, float] = MappingProxyType({
    "cancellation_request": 3.0, "churn_risk": 2.0, "p_alive_drop": 1.5, "complaints": 1.5,
    "recency_gap": 1.0, "unresolved_contacts": 1.0, "negative_sentiment": 1.0,
    "unsubscribed": 1.0, "spend_drop": 1.0, "engagement_drop": 1.0, "contact_surge": 1.0,
    "p_alive_low": 1.0, "long_silence": 1.0,
})
#: Negative sentiment at twice the weight (the most precise signal in the study).
SENTIMENT_X2: Mapping[str, float] = MappingProxyType(
    {**PRE_STUDY_WEIGHTS, "negative_sentiment": 2.0}
)
#: Negative sentiment that fires earlier: a decayed sum of -0.2 (`AlertPolicy.sentiment`).
_EARLY_SENTIMENT: Mapping[str, Any] = {"sentiment": -0.2}
#: The signals re-weighed by how often they are right: the precise ones that come early
#: (negative sentiment, unsubscribes, smaller baskets) up, the imprecise ones (a fall in
#: P(alive), in the open rate) down.
REWEIGHED: Mapping[str, float] = MappingProxyType({
    **PRE_STUDY_WEIGHTS, "negative_sentiment": 2.0, "unsubscribed": 2.0, "spend_drop": 1.5,
    "p_alive_drop": 0.5, "engagement_drop": 0.5,
})
#: Further: the service signals by their precision, recency a little up.
REWEIGHED_MORE: Mapping[str, float] = MappingProxyType({
    **REWEIGHED, "negative_sentiment": 2.5, "unsubscribed": 2.5, "p_alive_drop": 0.25,
    "engagement_drop": 0.25, "recency_gap": 1.25, "unresolved_contacts": 0.75, "complaints": 1.25,
})
#: The re-weighed signals with a fall in P(alive) at 0.7 (chosen by ``python -m load.alert_fit
#: --grid ... --weight p_alive_drop=...`` with the tier now as the floor) and at 0.9 (chosen
#: the same way with the tier at the last order: the default since 2026-12-02).
ALIVE_07: Mapping[str, float] = MappingProxyType({**REWEIGHED, "p_alive_drop": 0.7})
ALIVE_09: Mapping[str, float] = MappingProxyType({**REWEIGHED, "p_alive_drop": 0.9})
#: The default before the re-weighing, and what the candidates after it start from.
_CHURN_04: Mapping[str, Any] = {"churn_threshold": 0.4, **_EARLY_SENTIMENT}
#: A surge of contacts at twice the customer's usual rate (`AlertPolicy.contact_surge`).
_SURGE: Mapping[str, Any] = {"contact_surge": 2.0}

#: No alert once the last order is more than the churn horizon (90 days) back: win-back's case
#: (`AlertPolicy.max_silence_days`).
_LAPSED: Mapping[str, Any] = {"max_silence_days": 90.0}

#: The candidate policies, by name: what differs from `AlertPolicy()`'s defaults before this study
#: (any one signal, churn threshold 0.5, negative sentiment at -0.5 with weight 1). The chosen one
#: is marked in the report.
CANDIDATES: Mapping[str, Mapping[str, Any]] = {
    "any signal, churn 0.5": {},
    "any signal, churn 0.7": {"churn_threshold": 0.7},
    "any signal, churn 0.8": {"churn_threshold": 0.8},
    "2 signals, churn 0.5": {"min_signals": 2},
    "2 signals, churn 0.7": {"min_signals": 2, "churn_threshold": 0.7},
    "3 signals, churn 0.5": {"min_signals": 3},
    "score 3, churn 0.5": {"min_score": 3.0},
    "score 4, churn 0.5": {"min_score": 4.0},
    "score 5, churn 0.5": {"min_score": 5.0},
    "score 4, churn 0.7": {"min_score": 4.0, "churn_threshold": 0.7},
    "any signal, cooldown 30": {"cooldown_days": 30.0},
    "2 signals, cooldown 30": {"min_signals": 2, "cooldown_days": 30.0},
    "2 signals, cooldown 45": {"min_signals": 2, "cooldown_days": 45.0},
    "score 4, cooldown 30": {"min_score": 4.0, "cooldown_days": 30.0},
    "3 signals, cooldown 30": {"min_signals": 3, "cooldown_days": 30.0},
    "score 2, churn 0.4": {"min_score": 2.0, "churn_threshold": 0.4},
    "score 3, churn 0.4": {"min_score": 3.0, "churn_threshold": 0.4},
    "score 4, churn 0.4": {"min_score": 4.0, "churn_threshold": 0.4},
    "score 3, cooldown 30": {"min_score": 3.0, "cooldown_days": 30.0},
    "score 3, churn 0.4, cooldown 30": {"min_score": 3.0, "churn_threshold": 0.4,
                                        "cooldown_days": 30.0},
    "score 4, churn 0.3": {"min_score": 4.0, "churn_threshold": 0.3},
    "score 5, churn 0.3": {"min_score": 5.0, "churn_threshold": 0.3},
    "score 5, churn 0.4": {"min_score": 5.0, "churn_threshold": 0.4},
    "score 3, churn 0.6": {"min_score": 3.0, "churn_threshold": 0.6},
    "score 4, churn 0.6": {"min_score": 4.0, "churn_threshold": 0.6},
    "score 4, churn 0.8": {"min_score": 4.0, "churn_threshold": 0.8},
    "score 5, churn 0.8": {"min_score": 5.0, "churn_threshold": 0.8},
    "score 4, churn 0.9": {"min_score": 4.0, "churn_threshold": 0.9},
    "score 5, churn 0.9": {"min_score": 5.0, "churn_threshold": 0.9},
    "score 3.5, churn 0.4": {"min_score": 3.5, "churn_threshold": 0.4},
    "score 3.5, churn 0.5": {"min_score": 3.5, "churn_threshold": 0.5},
    "score 3.5, churn 0.4, early sentiment": {"min_score": 3.5, "churn_threshold": 0.4,
                                              **_EARLY_SENTIMENT},
    "score 3.5, churn 0.5, early sentiment": {"min_score": 3.5, "churn_threshold": 0.5,
                                              **_EARLY_SENTIMENT},
    "score 4, churn 0.4, early sentiment": {"min_score": 4.0, "churn_threshold": 0.4,
                                            **_EARLY_SENTIMENT},
    "score 3, churn 0.4, early sentiment": {"min_score": 3.0, "churn_threshold": 0.4,
                                            **_EARLY_SENTIMENT},
    "score 3.5, churn 0.4, early sentiment x2": {"min_score": 3.5, "churn_threshold": 0.4,
                                                 **_EARLY_SENTIMENT, "weights": SENTIMENT_X2},
    "score 3.5, contact surge": {"min_score": 3.5, **_CHURN_04, **_SURGE},
    "score 3.5, contact surge from 1": {"min_score": 3.5, **_CHURN_04, **_SURGE,
                                        "contact_surge_min": 1.0},
    "score 3.5, contact surge, 30-day opens": {"min_score": 3.5, **_CHURN_04, **_SURGE,
                                               "engagement_slow_min_delivered": 1.5},
    "score 4, weak signals from 0.75": {"min_score": 4.0, **_CHURN_04, "min_strength": 0.75},
    "reweighed, score 2.75, contact surge": {"min_score": 2.75, **_CHURN_04, **_SURGE,
                                             "weights": REWEIGHED},
    "reweighed, score 2.9, contact surge": {"min_score": 2.9, **_CHURN_04, **_SURGE,
                                            "weights": REWEIGHED},
    "reweighed, score 3, contact surge": {"min_score": 3.0, **_CHURN_04, **_SURGE,
                                          "weights": REWEIGHED},
    "reweighed, score 3.5, contact surge": {"min_score": 3.5, **_CHURN_04, **_SURGE,
                                            "weights": REWEIGHED},
    "reweighed, score 2.9": {"min_score": 2.9, **_CHURN_04, "weights": REWEIGHED},
    "reweighed, score 3": {"min_score": 3.0, **_CHURN_04, "weights": REWEIGHED},
    "reweighed more, score 2.75, contact surge": {"min_score": 2.75, **_CHURN_04, **_SURGE,
                                                  "weights": REWEIGHED_MORE},
    "reweighed, score 2.9, lapsed 90": {"min_score": 2.9, **_CHURN_04, "weights": REWEIGHED,
                                        **_LAPSED},
    "reweighed, score 2.4, churn 0.5, lapsed 90": {"min_score": 2.4, "churn_threshold": 0.5,
                                                   **_EARLY_SENTIMENT, "weights": REWEIGHED,
                                                   **_LAPSED},
    "reweighed, score 2.5, churn 0.5, lapsed 90": {"min_score": 2.5, "churn_threshold": 0.5,
                                                   **_EARLY_SENTIMENT, "weights": REWEIGHED,
                                                   **_LAPSED},
    "P(alive) fall 0.7, score 2.5, churn 0.5, lapsed 90": {
        "min_score": 2.5, "churn_threshold": 0.5, **_EARLY_SENTIMENT, "weights": ALIVE_07,
        **_LAPSED},
    "last order's value, P(alive) fall 0.9, score 2.5, churn 0.5, lapsed 90": {
        "min_score": 2.5, "churn_threshold": 0.5, **_EARLY_SENTIMENT, "weights": ALIVE_09,
        **_LAPSED, "value_at_last_order": True},
    "last order's value, P(alive) fall 0.7, score 2.5, churn 0.5, lapsed 90": {
        "min_score": 2.5, "churn_threshold": 0.5, **_EARLY_SENTIMENT, "weights": ALIVE_07,
        **_LAPSED, "value_at_last_order": True},
    "reweighed, score 2.6, churn 0.45, lapsed 90": {"min_score": 2.6, "churn_threshold": 0.45,
                                                    **_EARLY_SENTIMENT, "weights": REWEIGHED,
                                                    **_LAPSED},
    # For the lead-window label (``--lead-days 60``), whose churn scores run higher.
    "reweighed, score 2.4, churn 0.8, lapsed 90": {"min_score": 2.4, "churn_threshold": 0.8,
                                                   **_EARLY_SENTIMENT, "weights": REWEIGHED,
                                                   **_LAPSED},
    "reweighed, score 2.4, churn 0.85, lapsed 90": {"min_score": 2.4, "churn_threshold": 0.85,
                                                    **_EARLY_SENTIMENT, "weights": REWEIGHED,
                                                    **_LAPSED},
}
#: The simulated populations: defection with precursors, or the classic process (see
#: `load.simulator.SimConfig.precursors`).
SIMULATORS = ("precursors", "classic")


def policy_of(changes: Mapping[str, Any]) -> AlertPolicy:
    """The policy a candidate describes: the pre-study defaults with `changes`.

    The pre-study defaults are spelled out, so a candidate means the same thing whatever the
    current defaults are.

    >>> policy_of({"min_signals": 2}).min_signals, policy_of({}).churn_threshold
    (2, 0.5)
    >>> policy_of({}).sentiment, policy_of(_EARLY_SENTIMENT).sentiment
    (-0.5, -0.2)
    """
    base: dict[str, Any] = {
        "churn_threshold": 0.5, "min_signals": 1, "min_score": 0.0, "cooldown_days": 14.0,
        "sentiment": -0.5, "weights": PRE_STUDY_WEIGHTS, "contact_surge": None,
        "contact_surge_min": 1.5, "engagement_slow_min_delivered": None, "min_strength": 1.0,
        "max_silence_days": None, "value_at_last_order": False,
    }
    return AlertPolicy(**{**base, **changes})


# ------------------------------------------------------------------------------ ground truth


@dataclass(frozen=True, slots=True)
class Periods:
    """One customer's true alive periods: starts and dropouts (epoch ms), in order.

    A dropout past the end of the run is the simulator's latent one; `NEVER` when unknown.
    """

    starts: tuple[int, ...]
    ends: tuple[int, ...]


def _ms(text: str) -> int:
    return round(datetime.fromisoformat(text).timestamp() * 1000)


def periods_of(row: Mapping[str, Any], start_ms: int) -> Periods:
    """The `Periods` of one `ground_truth` row (`start_ms`: the simulation's start)."""
    starts, ends = [], []
    last = len(row["periods"]) - 1
    for k, period in enumerate(row["periods"]):
        starts.append(_ms(period["start"]))
        if period["end"] is not None:
            ends.append(_ms(period["end"]))
        elif k == last and row["latent_dropout_day"] is not None:
            ends.append(start_ms + round(row["latent_dropout_day"] * MS_PER_DAY))
        else:
            ends.append(NEVER)
    return Periods(tuple(starts), tuple(ends))


# ------------------------------------------------------------------------------------ metrics


def current_dropout(t: int, periods: Periods) -> int | None:
    """The true dropout an alert at `t` is about: the end of the last period started by `t`.

    While the customer is alive that is the coming dropout; once they are gone it is the
    dropout that left them gone. None before their first period.

    >>> p = Periods(starts=(0, 100), ends=(50, 200))
    >>> [current_dropout(t, p) for t in (10, 70, 150, -1)]
    [50, 50, 200, None]
    """
    k = bisect.bisect_right(periods.starts, t) - 1
    return None if k < 0 else periods.ends[k]


def is_right(t: int, dropout: int | None, horizon_ms: int) -> bool:
    """Whether an alert at `t` is right: the true dropout lies within H of it, either side.

    Before: the customer truly defects within H (the alert's claim). After: the customer was
    already gone, at most H before the alert (latent: no event shows a dropout, so the silence
    had not yet told); such an alert is right but late, with a negative lead time. Gone for
    longer than H is a case for win-back, not a defection alert, and counts as wrong.

    >>> H = 90
    >>> is_right(0, 90, H), is_right(0, 91, H), is_right(100, 10, H), is_right(100, 9, H)
    (True, False, True, False)
    >>> is_right(0, None, H)
    False
    """
    return dropout is not None and dropout != NEVER and abs(dropout - t) <= horizon_ms


def caught(alerts: Sequence[int], dropout: int, periods: Periods, horizon_ms: int) -> int | None:
    """The first of a customer's alert times (sorted) that is right about `dropout`, or None.

    >>> p = Periods(starts=(0, 300), ends=(200, 400))
    >>> caught([50, 120, 250], 200, p, 90), caught([50, 310], 200, p, 90), caught([], 200, p, 90)
    (120, None, None)
    """
    for t in alerts:
        if current_dropout(t, periods) == dropout and is_right(t, dropout, horizon_ms):
            return t
    return None


def operator_load(alerts: int, valuable_customer_days: float) -> float:
    """Alerts per 1,000 valuable customers per 30 days.

    `valuable_customer_days` sums, over the window, the customers valuable on each day.

    >>> operator_load(30, 10_000.0)  # 10,000 customer-days: 1,000 customers for 10 days
    90.0
    >>> math.isnan(operator_load(3, 0.0))
    True
    """
    if valuable_customer_days <= 0:
        return float("nan")
    return alerts / valuable_customer_days * 1_000 * 30


def f1(precision: float, recall: float) -> float:
    """Harmonic mean of precision and recall (0 when both are 0, NaN if either is).

    >>> f1(0.5, 1.0), f1(0.0, 0.0)
    (0.6666666666666666, 0.0)
    """
    if math.isnan(precision) or math.isnan(recall):
        return float("nan")
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def _ratio(num: int, den: int) -> float:
    return num / den if den else float("nan")


@dataclass(frozen=True, slots=True)
class Window:
    """Event times (ms) within which alerts and dropouts are counted, both ends included."""

    first: int
    last: int

    def __contains__(self, t: object) -> bool:
        return isinstance(t, int) and self.first <= t <= self.last


@dataclass(frozen=True)
class Scores:
    """What one candidate's alerts achieved against the ground truth (see `score`)."""

    alerts: int
    right: int
    late: int
    episodes: int
    caught: int
    caught_in_time: int
    leads_days: tuple[float, ...]
    load: float

    @property
    def precision(self) -> float:
        return _ratio(self.right, self.alerts)

    @property
    def recall(self) -> float:
        return _ratio(self.caught, self.episodes)

    @property
    def recall_in_time(self) -> float:
        return _ratio(self.caught_in_time, self.episodes)

    @property
    def f1(self) -> float:
        return f1(self.precision, self.recall)

    @property
    def late_share(self) -> float:
        return _ratio(self.late, self.right)

    @property
    def median_lead_days(self) -> float:
        return statistics.median(self.leads_days) if self.leads_days else float("nan")

    @property
    def lead_quartiles(self) -> tuple[float, float]:
        """The first and third quartile of the lead times (days)."""
        if len(self.leads_days) < 2:
            return (float("nan"), float("nan"))
        q = statistics.quantiles(self.leads_days, n=4)
        return (q[0], q[2])

    def recall_ahead(self, days: float = LEAD_TARGET_DAYS) -> float:
        """The share of episodes whose first right alert came at least `days` before the dropout.

        >>> Scores(4, 3, 0, 4, 3, 3, (20.0, 14.0, 3.0), 1.0).recall_ahead(14)
        0.5
        """
        return _ratio(sum(1 for x in self.leads_days if x >= days), self.episodes)


def score(
    alerts: Mapping[str, Sequence[int]],
    truth: Mapping[str, Periods],
    valuable_at: Mapping[str, Sequence[int]],
    window: Window,
    horizon_ms: int,
    valuable_customer_days: float,
) -> Scores:
    """Precision, recall, lead times and load of one candidate's alerts.

    * `alerts`: per customer, the event times of their alerts, sorted.
    * `valuable_at`: per customer, the sorted event times at which the engine scored them with a
      value tier at or above the policy's ``min_value_tier``.
    * **precision**: among alerts at times in `window`, the share that `is_right`; ``late``
      counts the right ones raised after the dropout.
    * **recall**: the *episodes* are true dropouts in `window` of customers who were valuable at
      some scoring within H before the dropout; an episode is caught when one of the customer's
      alerts (at any time) `is_right` about it. ``caught_in_time``: the first such alert came at
      or before the dropout.
    * **lead time** of a caught episode: dropout minus its first right alert, in days (positive:
      before the dropout).
    * **load**: `operator_load` of the alerts in the window.

    >>> D = MS_PER_DAY
    >>> truth = {"A": Periods((0,), (100 * D,)), "B": Periods((0,), (NEVER,)),
    ...          "C": Periods((0,), (150 * D,))}
    >>> alerts = {"A": [40 * D], "B": [60 * D]}
    >>> valuable = {"A": [30 * D], "B": [30 * D], "C": [100 * D]}
    >>> s = score(alerts, truth, valuable, Window(0, 200 * D), 90 * D, 1_000.0)
    >>> s.precision, s.recall, s.median_lead_days, s.load
    (0.5, 0.5, 60.0, 60.0)
    """
    right = late = n_alerts = 0
    for cid, times in alerts.items():
        periods = truth[cid]
        for t in times:
            if t not in window:
                continue
            n_alerts += 1
            d = current_dropout(t, periods)
            if is_right(t, d, horizon_ms):
                right += 1
                late += int(d is not None and d < t)
    episodes = hit = in_time = 0
    leads: list[float] = []
    for cid, periods in truth.items():
        seen = valuable_at.get(cid, ())
        for d in periods.ends:
            if d not in window:
                continue
            k = bisect.bisect_left(seen, d - horizon_ms)
            if k >= len(seen) or seen[k] > d:
                continue
            episodes += 1
            first = caught(alerts.get(cid, ()), d, periods, horizon_ms)
            if first is not None:
                hit += 1
                in_time += int(first <= d)
                leads.append((d - first) / MS_PER_DAY)
    return Scores(
        alerts=n_alerts, right=right, late=late, episodes=episodes, caught=hit,
        caught_in_time=in_time, leads_days=tuple(leads),
        load=operator_load(n_alerts, valuable_customer_days),
    )


def base_rate(
    valuable_at: Mapping[str, Sequence[int]],
    truth: Mapping[str, Periods],
    window: Window,
    horizon_ms: int,
) -> float:
    """The precision of alerting at random: the share of valuable scorings in the window that an
    alert raised then would have made right.

    >>> D = MS_PER_DAY
    >>> truth = {"A": Periods((0,), (100 * D,)), "B": Periods((0,), (NEVER,))}
    >>> base_rate({"A": [5 * D, 20 * D], "B": [20 * D]}, truth, Window(0, 50 * D), 90 * D)
    0.3333333333333333
    """
    n = ok = 0
    for cid, times in valuable_at.items():
        for t in times:
            if t in window:
                n += 1
                ok += int(is_right(t, current_dropout(t, truth[cid]), horizon_ms))
    return _ratio(ok, n)


def choose(rows: Mapping[str, Scores], max_load: float | None = None) -> tuple[str, str]:
    """The candidate to use and why: the highest F1, among those with load <= `max_load` if given
    (all, if none is); within `F1_TIE` of it counts as tied, and a tie goes to the lower load.

    >>> a = Scores(100, 60, 0, 100, 50, 20, (), 120.0)
    >>> b = Scores(200, 150, 0, 100, 70, 30, (), 400.0)
    >>> c = Scores(90, 55, 0, 100, 49, 20, (), 100.0)
    >>> choose({"a": a, "b": b, "c": c})[0], choose({"a": a, "b": b, "c": c}, 110.0)[0]
    ('b', 'c')
    """
    usable = dict(rows)
    if max_load is not None:
        usable = {k: v for k, v in rows.items() if v.load <= max_load} or usable
    best = max(v.f1 for v in usable.values())
    tied = [k for k, v in usable.items() if v.f1 >= best - F1_TIE]
    pick = min(tied, key=lambda k: (usable[k].load, k))
    why = f"F1 {usable[pick].f1:.3f}"
    if len(tied) > 1:
        why += (f", within {F1_TIE} of the best ({best:.3f}; tied: {', '.join(tied)}), and the "
                f"lowest load among the tied ({usable[pick].load:.0f})")
    else:
        why += ", the highest"
    if len(usable) < len(rows):
        why += f"; only candidates with a load of at most {max_load:.0f} were considered"
    return pick, why


def choose_for_lead(
    rows: Mapping[str, Scores], min_precision: float = MIN_PRECISION,
    lead_days: float = LEAD_TARGET_DAYS,
) -> tuple[str, str]:
    """The candidate to use and why: the largest share of episodes alerted at least `lead_days`
    ahead among those with precision at least `min_precision`; within `F1_TIE` of it counts as
    tied, and a tie goes to the lower load. Without any precise enough candidate: `choose`.

    >>> a = Scores(100, 60, 0, 100, 50, 20, (20.0,) * 40, 120.0)
    >>> b = Scores(200, 90, 0, 100, 70, 30, (20.0,) * 60, 400.0)
    >>> c = Scores(90, 55, 0, 100, 49, 20, (20.0,) * 39, 100.0)
    >>> choose_for_lead({"a": a, "b": b, "c": c})[0]
    'c'
    """
    usable = {k: v for k, v in rows.items() if v.precision >= min_precision}
    if not usable:
        pick, why = choose(rows)
        return pick, (f"no candidate reaches a precision of {min_precision}; by F1 instead: "
                      f"{why}")
    best = max(v.recall_ahead(lead_days) for v in usable.values())
    tied = [k for k, v in usable.items() if v.recall_ahead(lead_days) >= best - F1_TIE]
    pick = min(tied, key=lambda k: (usable[k].load, k))
    s = usable[pick]
    why = (f"{s.recall_ahead(lead_days):.3f} of valuable dropouts alerted at least "
           f"{lead_days:.0f} days ahead at precision {s.precision:.3f}")
    if len(tied) > 1:
        why += (f", within {F1_TIE} of the best ({best:.3f}; tied: {', '.join(tied)}), and the "
                f"lowest load among the tied ({s.load:.0f})")
    else:
        why += f", the most among the {len(usable)} candidates with precision >= {min_precision}"
    return pick, why


# ------------------------------------------------------------------------------------ ceiling

#: The service and campaign events that can warn of a dropout, by name.
PRECURSORS = ("complaint", "cancellation_request", "unresolved", "negative_sentiment",
              "unsubscribed")
#: Contact sentiment at or below which a contact counts as a `negative_sentiment` precursor.
NEGATIVE_SENTIMENT = -0.3


def precursors_of(event: Event) -> tuple[str, ...]:
    """The `PRECURSORS` one event shows (none for an order or a calm contact).

    >>> precursors_of(ServiceContact("e", "C1", 0, "phone", "complaint", 0, False, -500))
    ('complaint', 'unresolved', 'negative_sentiment')
    >>> precursors_of(CampaignTouch("e", "C1", 0, "K", "email", "unsubscribed", 0))
    ('unsubscribed',)
    """
    if isinstance(event, ServiceContact):
        kinds = [event.reason] if event.reason in ("complaint", "cancellation_request") else []
        if not event.resolved:
            kinds.append("unresolved")
        if event.sentiment_m is not None and event.sentiment_m <= NEGATIVE_SENTIMENT * 1000:
            kinds.append("negative_sentiment")
        return tuple(kinds)
    if isinstance(event, CampaignTouch) and event.action == "unsubscribed":
        return ("unsubscribed",)
    return ()


def warned_share(
    warnings: Mapping[str, Sequence[tuple[int, str]]],
    dropouts: Sequence[tuple[str, int]],
    lead_ms: int,
    span_ms: int,
    kinds: Sequence[str] = PRECURSORS,
) -> float:
    """The share of `dropouts` (customer, time) with a precursor of `kinds` in the span
    ``[dropout - span_ms, dropout - lead_ms]``: the most any alert at least `lead_ms` ahead
    that rests on these events could catch.

    >>> w = {"A": [(50, "complaint")], "B": [(95, "complaint")], "C": [(40, "unsubscribed")]}
    >>> warned_share(w, [("A", 100), ("B", 100), ("C", 100), ("D", 100)], 14, 60)
    0.5
    >>> warned_share(w, [("B", 100), ("C", 100)], 14, 60, kinds=("complaint",))
    0.0
    """
    hit = 0
    for cid, d in dropouts:
        hit += any(d - span_ms <= t <= d - lead_ms and kind in kinds
                   for t, kind in warnings.get(cid, ()))
    return _ratio(hit, len(dropouts))


#: The trends the data can show ahead of a dropout (`trend_precursors`), by name.
TREND_PRECURSORS = ("fewer_opens", "longer_gaps", "smaller_baskets")


@dataclass
class Activity:
    """One customer's orders (event time, amount in cents) and mailings (delivered, opened)."""

    orders: list[tuple[int, int]] = field(default_factory=list)
    delivered: list[int] = field(default_factory=list)
    opened: list[int] = field(default_factory=list)

    def add(self, event: Event) -> None:
        if isinstance(event, Purchase) and event.kind == "order":
            self.orders.append((event.occurred_at, event.amount_c))
        elif isinstance(event, CampaignTouch) and event.action == "delivered":
            self.delivered.append(event.occurred_at)
        elif isinstance(event, CampaignTouch) and event.action == "opened":
            self.opened.append(event.occurred_at)


def _between(times: Sequence[int], lo: int, hi: int) -> int:
    """How many of the sorted `times` lie in ``[lo, hi]``."""
    return bisect.bisect_right(times, hi) - bisect.bisect_left(times, lo)


def trend_precursors(
    activity: Activity, lo: int, hi: int, gap_factor: float = 1.5, basket_fall: float = 0.3,
    open_fall: float = 0.5,
) -> tuple[str, ...]:
    """The `TREND_PRECURSORS` a customer's activity shows in the span ``[lo, hi]`` against
    their own history before `lo`, at the engine's default thresholds
    (`AlertPolicy.overdue_factor`, ``spend_drop``, ``engagement_drop``).

    * ``longer_gaps``: a gap between orders ending in the span, or the silence at `hi`, at
      least `gap_factor` times the mean gap between the orders before `lo` (at least three);
    * ``smaller_baskets``: the mean order in the span at least `basket_fall` below the mean of
      the orders before `lo` (at least three);
    * ``fewer_opens``: the share of the span's mailings opened (at least two delivered) at least
      `open_fall` below the share before `lo` (at least three delivered, at least 10 % opened).

    >>> D = MS_PER_DAY
    >>> a = Activity(orders=[(0, 100), (10 * D, 100), (20 * D, 100), (60 * D, 50)])
    >>> trend_precursors(a, 40 * D, 80 * D)
    ('longer_gaps', 'smaller_baskets')
    >>> a = Activity(delivered=[0, D, 2 * D, 50 * D, 60 * D], opened=[0, D, 2 * D])
    >>> trend_precursors(a, 40 * D, 80 * D)
    ('fewer_opens',)
    """
    kinds: list[str] = []
    before = [(t, c) for t, c in activity.orders if t < lo]
    inside = [(t, c) for t, c in activity.orders if lo <= t <= hi]
    n_opened = _between(activity.opened, lo, hi)
    sent_before = _between(activity.delivered, -NEVER, lo - 1)
    sent_inside = _between(activity.delivered, lo, hi)
    if sent_before >= 3 and sent_inside >= 2:
        usual = _between(activity.opened, -NEVER, lo - 1) / sent_before
        if usual >= 0.1 and n_opened / sent_inside <= (1 - open_fall) * usual:
            kinds.append("fewer_opens")
    if len(before) >= 3:
        mean_gap = (before[-1][0] - before[0][0]) / (len(before) - 1)
        times = [before[-1][0], *(t for t, _ in inside), hi]
        if mean_gap > 0 and max(b - a for a, b in pairwise(times)) >= gap_factor * mean_gap:
            kinds.append("longer_gaps")
        usual_basket = sum(c for _, c in before) / len(before)
        if inside and sum(c for _, c in inside) / len(inside) <= (1 - basket_fall) * usual_basket:
            kinds.append("smaller_baskets")
    return tuple(kinds)


def ceiling(config: SimConfig, horizon_days: int, warmup_days: int,
            span_days: float = 60.0) -> dict[str, float]:
    """What the data allows at all, without a replay: per precursor kind (and any),
    `warned_share` at `LEAD_TARGET_DAYS` over the true dropouts in the evaluation window.

    Besides the discrete events (`PRECURSORS`; ``any``), the trends of `trend_precursors` over
    the same span (``trend:<kind>``; ``any trend``; ``any, trends included``). A trend is a
    comparison, not an event, and it also shows by chance: ``calm:<kind>`` is the share of calm
    points that show it — one per 30 days of each customer alive in the window whose true
    dropout is more than the horizon away, taken as if a dropout came 14 days after the point —
    the rate at which an alert resting on it alone would be wrong.
    """
    start_ms = int(config.start.timestamp() * 1000)
    window = Window(start_ms + warmup_days * MS_PER_DAY,
                    start_ms + (config.days - horizon_days) * MS_PER_DAY)
    truth = truth_of(config)
    dropouts = [(cid, d) for cid, p in truth.items() for d in p.ends if d in window]
    warnings: dict[str, list[tuple[int, str]]] = {}
    activity: dict[str, Activity] = {}
    for event, _ in domain_events(config):
        for kind in precursors_of(event):
            warnings.setdefault(event.customer_id, []).append((event.occurred_at, kind))
        activity.setdefault(event.customer_id, Activity()).add(event)
    lead, span = round(LEAD_TARGET_DAYS * MS_PER_DAY), round(span_days * MS_PER_DAY)
    horizon = horizon_days * MS_PER_DAY
    trends = {cid: list(warnings.get(cid, ())) for cid, _ in dropouts}
    for cid, d in dropouts:
        shown = trend_precursors(activity.get(cid, Activity()), d - span, d - lead)
        trends[cid] += [(d - lead, f"trend:{k}") for k in shown]
    shares = {"any": warned_share(warnings, dropouts, lead, span)}
    shares |= {k: warned_share(warnings, dropouts, lead, span, (k,)) for k in PRECURSORS}
    named = tuple(f"trend:{k}" for k in TREND_PRECURSORS)
    shares["any trend"] = warned_share(trends, dropouts, lead, span, named)
    shares |= {k: warned_share(trends, dropouts, lead, span, (k,)) for k in named}
    shares["any, trends included"] = warned_share(trends, dropouts, lead, span,
                                                  PRECURSORS + named)
    calm: Counter[str] = Counter()
    points = 0
    for cid, periods in truth.items():
        seen = activity.get(cid)
        if seen is None:
            continue
        for t in range(window.first, window.last + 1, 30 * MS_PER_DAY):
            d = current_dropout(t, periods)
            if d is None or d - t <= horizon or not seen.orders or seen.orders[0][0] > t:
                continue
            points += 1
            calm.update(trend_precursors(seen, t + lead - span, t))
    shares |= {f"calm:{k}": _ratio(calm[k], points) for k in TREND_PRECURSORS}
    return {"dropouts": float(len(dropouts)), **shares}


# ------------------------------------------------------------------------------------ replay


@dataclass
class Candidate:
    """One alert policy under study, with its per-customer memory and its alerts."""

    name: str
    policy: AlertPolicy
    memory: dict[str, AlertMemory] = field(default_factory=dict)
    alerts: dict[str, list[int]] = field(default_factory=dict)
    events: list[tuple[str, int, tuple[str, ...]]] = field(default_factory=list)


@dataclass
class Run:
    """The outcome of one replay: every candidate's alerts and what the metrics need."""

    horizon_ms: int
    start_ms: int
    end_ms: int
    candidates: list[Candidate]
    valuable_at: dict[float, dict[str, list[int]]]
    valuable_days: dict[float, float]
    window: Window
    events: int = 0
    customers: int = 0
    decisions: int = 0
    rescores: int = 0
    examples: int = 0
    fits: int = 0
    progress: churn.ProgressiveMetrics = field(default_factory=churn.ProgressiveMetrics)
    seconds: float = 0.0


class _Engine:
    """The worker's per-customer state and decisions, without Kafka or Redis."""

    def __init__(self, run: Run, retention: RetentionPolicy, fit_days: float,
                 learn_churn: bool = True) -> None:
        self.run = run
        self.learn_churn = learn_churn
        self.policy = retention
        self.fit_ms = round(fit_days * MS_PER_DAY)
        self.model = ValueModel()
        self.cuts = Cuts()
        self.learner = churn.make_model(churn.DEFAULT_MODEL)
        self.scorer: Callable[[Mapping[str, float]], float] | None = None
        self.states: dict[str, CustomerState] = {}
        self.retention: dict[str, Retention] = {}
        self.valued: dict[str, Valuation] = {}
        self.bucket: dict[str, int] = {}
        self.tier: dict[str, float] = {}
        self.due: list[tuple[int, str]] = []  # (event time, customer): rescore or label due
        self.due_at: dict[str, int] = {}
        self.examples: list[tuple[int, int, churn.Snapshot, int]] = []
        self.last_fit: int | None = None
        self.floors = sorted(run.valuable_at)
        #: Below it a decision cannot alert: the trace keeps only what `AlertMemory` needs.
        self.trace_floor = 0.0 if any(c.policy.value_at_last_order
                                      for c in run.candidates) else self.floors[0]
        #: With `replay`'s ``trace``: per valued decision, what `trace_row` keeps.
        self.trace: list[tuple[Any, ...]] | None = None

    def decide(self, cids: Sequence[str], as_of: Mapping[str, int],
               watermark: int | None = None) -> None:
        """The worker's step (`step.decide_batch`), then every candidate policy's alerts."""
        run = self.run
        version = f"churn-{run.examples}"
        outcomes = step.decide_batch(
            [step.Customer(self.states[c], self.retention[c], as_of[c]) for c in cids],
            step.Models(self.model, self.cuts, self.scorer, version),
            self.policy, VALUATION_HORIZON_DAYS, watermark,
        )
        for o in outcomes:
            cid, state, v, t, tier = (o.customer_id, o.customer.state, o.valuation,
                                      o.customer.as_of, o.tier)
            self.examples += [(at, s.taken_at, s, y) for s, y, at in o.labelled]
            self.retention[cid] = o.decision.retention
            self.tier[cid] = tier
            run.decisions += 1
            if v is not None:
                self.valued[cid] = v
                self.bucket[cid] = log_bucket(v.clv, CLV_BASE)
                for floor in self.floors:
                    if tier >= floor:
                        run.valuable_at[floor].setdefault(cid, []).append(t)
                if self.trace is not None:
                    self.trace.append(trace_row(cid, state, v, o.decision.churn_probability,
                                                tier, t, self.trace_floor))
                for c in run.candidates:
                    alert, c.memory[cid] = decide_alert(
                        cid, state, v, o.decision.churn_probability, tier, c.memory.get(cid), t,
                        c.policy, version, o.decision.retention.tier_at_purchase,
                    )
                    if alert is not None:
                        codes = tuple(x.code for x in alert.reasons)
                        c.alerts.setdefault(cid, []).append(t)
                        c.events.append((cid, t, codes))
            self._schedule(cid, o.label_at, o.rescore_at)

    def _schedule(self, cid: str, label_at: int | None, rescore_at: int | None) -> None:
        when = min((x for x in (rescore_at, label_at) if x is not None), default=None)
        if when is None:
            self.due_at.pop(cid, None)
            return
        self.due_at[cid] = when
        heapq.heappush(self.due, (when, cid))

    def revisit(self, watermark: int) -> None:
        """Label and rescore whom event time has passed by, like `Ingestor.revisit`."""
        ids = []
        while self.due and self.due[0][0] <= watermark:
            when, cid = heapq.heappop(self.due)
            if self.due_at.get(cid) == when:
                del self.due_at[cid]
                ids.append(cid)
        if not ids:
            return
        self.run.rescores += len(ids)
        as_of = {c: max(watermark, self.states[c].last_event or watermark) for c in ids}
        self.decide(ids, as_of, watermark)

    def learn(self) -> None:
        """The learner: released examples in label order, each predicted then learned."""
        if not self.examples or not self.learn_churn:
            self.examples.clear()
            return
        self.examples.sort(key=lambda e: (e[0], e[1]))
        for _, _, snap, y in self.examples:
            x = dict(snap.features)
            self.run.progress.update(y, churn.churn_probability(self.learner, x))
            self.learner.learn_one(x, y)
        self.run.examples += len(self.examples)
        self.examples.clear()
        learner = self.learner
        self.scorer = lambda x: churn.churn_probability(learner, x)

    def refresh_cuts(self) -> None:
        self.cuts = Cuts(clv=percentile_cuts(Counter(self.bucket.values())))

    def maybe_fit(self, watermark: int) -> None:
        """Refit the value model every `fit_ms` of event time, then revalue everyone."""
        if self.last_fit is not None and watermark - self.last_fit < self.fit_ms:
            return
        if self.last_fit is None and watermark - self.run.start_ms < self.fit_ms:
            return
        self.last_fit = watermark
        repeat: Counter[tuple[int, int, int]] = Counter()
        spend: Counter[tuple[int, int]] = Counter()
        for cid, v in self.valued.items():
            marks = markers(self.states[cid], v)
            x, t_x, first = (int(p) for p in marks[4].split(":"))
            repeat[(x, t_x, first)] += 1
            if marks[5]:  # empty for a customer who never paid: not in the spend fit
                n, bucket = (int(p) for p in marks[5].split(":"))
                spend[(n, bucket)] += 1
        if sum(repeat.values()) < MIN_FIT_CUSTOMERS:
            return
        fit = fit_population(
            [(*k, n) for k, n in repeat.items()],
            [(k[0], spend_bucket_value(k[1]), n) for k, n in spend.items()],
            watermark // MS_PER_DAY, self.model,
        )
        if not fit.bg.converged:
            return
        gg = fit.gg.params if fit.gg is not None and fit.gg.converged else self.model.gg
        self.model = ValueModel(bg=fit.bg.params, gg=gg, version=self.model.version + 1)
        self.run.fits += 1
        ids = list(self.valued)
        values = value_states(self.model, [(self.states[c], self.valued[c].as_of) for c in ids],
                              VALUATION_HORIZON_DAYS)
        for cid, v in zip(ids, values, strict=True):
            if v is None:
                continue
            self.valued[cid] = v
            self.bucket[cid] = log_bucket(v.clv, CLV_BASE)

    def valuable_count(self, floor: float) -> int:
        return sum(1 for t in self.tier.values() if t >= floor)


def replay(
    config: SimConfig,
    candidates: Mapping[str, AlertPolicy],
    horizon_days: int = 90,
    warmup_days: int = 180,
    tick_hours: float = 6.0,
    fit_days: float = 30.0,
    lead_days: int = 0,
    retention: RetentionPolicy | None = None,
    learn_churn: bool = True,
    trace: list[tuple[Any, ...]] | None = None,
) -> Run:
    """Replay a simulated population through the domain, deciding every candidate's alerts.

    `retention` sets the churn label and snapshot spacing (its alert policy is replaced by the
    first candidate's); `learn_churn` False keeps the engine's fallback of no churn model
    (1 - P(alive)), as a worker does before its first model is published. With `trace` (a
    list), every valued decision's `trace_row` is appended to it, in decision order.
    """
    began = time.perf_counter()
    horizon = horizon_days * MS_PER_DAY
    start_ms = int(config.start.timestamp() * 1000)
    end_ms = start_ms + config.days * MS_PER_DAY
    floors = {p.min_value_tier for p in candidates.values()}
    run = Run(
        horizon_ms=horizon, start_ms=start_ms, end_ms=end_ms,
        candidates=[Candidate(name, p) for name, p in candidates.items()],
        valuable_at={f: {} for f in floors}, valuable_days=dict.fromkeys(floors, 0.0),
        window=Window(start_ms + warmup_days * MS_PER_DAY, end_ms - horizon),
    )
    first = next(iter(candidates.values()))
    if retention is None:
        retention = RetentionPolicy(horizon_ms=horizon, lead_ms=lead_days * MS_PER_DAY)
    engine = _Engine(run, replace(retention, alert=first), fit_days, learn_churn)
    engine.trace = trace
    tick = round(tick_hours * 3_600_000)
    changed: dict[str, int] = {}
    watermark = start_ms
    tick_end = start_ms + tick

    def close_tick(until: int) -> None:
        nonlocal watermark
        if pending:
            apply_pending()
        if changed:
            engine.decide(list(changed), changed)
            changed.clear()
        engine.revisit(watermark)
        engine.learn()
        engine.maybe_fit(watermark)
        engine.refresh_cuts()
        lo, hi = max(until - tick, run.window.first), min(until, run.window.last)
        if hi > lo:
            for floor in floors:
                run.valuable_days[floor] += engine.valuable_count(floor) * (hi - lo) / MS_PER_DAY

    margin = Settings.default_margin_rate
    pending: list[tuple[Event, Source]] = []

    def apply_pending() -> None:
        """The tick's events through the worker's `step.apply_events`."""
        states = engine.states
        applied = step.apply_events(
            {e.customer_id: states.get(e.customer_id) or CustomerState(e.customer_id)
             for e, _ in pending},
            lambda cid: engine.retention.get(cid) or Retention(), pending, engine.policy,
            margin,
        )
        pending.clear()
        for cid in applied.changed:
            after = states[cid] = applied.states[cid]
            engine.retention[cid] = applied.retentions[cid]
            changed[cid] = after.last_event or 0

    for event, source in domain_events(config):
        run.events += 1
        while event.occurred_at >= tick_end:
            close_tick(tick_end)
            tick_end += tick
        pending.append((event, source))
        watermark = max(watermark, event.occurred_at)
    while tick_end <= end_ms:
        close_tick(tick_end)
        tick_end += tick
    run.customers = len(engine.states)
    run.seconds = time.perf_counter() - began
    return run


#: The decayed counters a `trace_row` keeps, in order.
TRACE_KEYS = ("cancellation_requests", "complaints", "unresolved", "unsubscribed", "sentiment",
              "contacts", "orders", "spend", "delivered", "opened", "f_delivered", "f_opened",
              "f_orders", "f_spend", "f_contacts", "f_sentiment")


def trace_row(cid: str, state: CustomerState, v: Valuation, churn_probability: float | None,
              tier: float, t: int, floor: float) -> tuple[Any, ...]:
    """What an alert rule may look at in one decision, for `load.alert_fit`.

    ``(customer, as_of, tier, churn, p_alive, severity, counters)``, and below `floor` only
    the first five (P(alive) feeds the reference of `AlertMemory`). ``counters``: `TRACE_KEYS`
    at `as_of`, then purchase days, first and last purchase day, days since the last order,
    orders, revenue (cents), contacts, tenure (days), mailings delivered and opened.
    """
    p = 1.0 - v.p_alive if churn_probability is None else churn_probability
    p = min(max(p, 0.0), 1.0)
    if tier < floor:
        return (cid, t, tier, p, v.p_alive)
    recent = state.recent_at_time(t)
    days = state.purchase_days
    since = (t - state.last_purchase) / MS_PER_DAY if state.last_purchase is not None else -1.0
    first = state.first_event if state.first_event is not None else t
    level = severity(value_at_risk(v, churn_probability), AlertPolicy().severity_bands)
    counters = (
        *(recent[k] for k in TRACE_KEYS),
        float(len(days)), float(days[0] if days else 0), float(days[-1] if days else 0), since,
        float(state.orders), float(state.revenue_c), float(state.contacts_total),
        (t - first) / MS_PER_DAY, float(state.touches.get("delivered", 0)),
        float(state.touches.get("opened", 0)),
    )
    return (cid, t, tier, p, v.p_alive, level, counters)


def truth_of(config: SimConfig) -> dict[str, Periods]:
    """Every simulated customer's `Periods`."""
    start_ms = int(config.start.timestamp() * 1000)
    return {row["customer_id"]: periods_of(row, start_ms) for row in ground_truth(config)}


def scores_of(run: Run, truth: Mapping[str, Periods]) -> dict[str, Scores]:
    """`score` for every candidate of `run`."""
    return {
        c.name: score({k: sorted(v) for k, v in c.alerts.items()}, truth,
                      run.valuable_at[c.policy.min_value_tier], run.window, run.horizon_ms,
                      run.valuable_days[c.policy.min_value_tier])
        for c in run.candidates
    }


def code_precision(
    c: Candidate, truth: Mapping[str, Periods], window: Window, horizon_ms: int
) -> dict[str, tuple[int, float]]:
    """Per reason code: alerts in the window carrying it, and the precision of those alerts."""
    n: Counter[str] = Counter()
    ok: Counter[str] = Counter()
    for cid, t, codes in c.events:
        if t not in window:
            continue
        right = is_right(t, current_dropout(t, truth[cid]), horizon_ms)
        for code in codes:
            n[code] += 1
            ok[code] += int(right)
    return {code: (n[code], ok[code] / n[code]) for code in sorted(n, key=lambda k: -n[k])}


# ------------------------------------------------------------------------------------ report


def _plot(rows: Mapping[str, Scores], pick: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    for level in (0.2, 0.3, 0.4, 0.5, 0.6):
        r = [x / 100 for x in range(1, 101)]
        p = [level * x / (2 * x - level) if 2 * x > level else float("nan") for x in r]
        ax.plot(r, p, color="grey", lw=0.6, ls=":")
        ax.annotate(f"F1 {level}", (0.98, level * 0.98 / (1.96 - level)), fontsize=7,
                    color="grey", ha="right")
    for number, (name, s) in enumerate(rows.items(), 1):
        chosen = name == pick
        ax.scatter(s.recall, s.precision, s=20 + s.load / 3, alpha=0.6,
                   color="tab:red" if chosen else "tab:blue", edgecolor="black", lw=0.5,
                   label=f"{number}: {name}")
        ax.annotate(str(number), (s.recall, s.precision), fontsize=7, xytext=(5, 4),
                    textcoords="offset points", fontweight="bold" if chosen else "normal")
    ax.legend(loc="lower left", fontsize=6.5, ncol=2, markerscale=0.4,
              title=f"red: chosen ({pick})", title_fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("recall: valuable defections caught (alert within H either side)")
    ax.set_ylabel("precision: alerts whose customer defects within H")
    ax.set_title("Alert candidates (marker area ~ operator load)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "precision_recall.png", dpi=110)
    plt.close(fig)

    s = rows[pick]
    fig, ax = plt.subplots(figsize=(7.5, 4))
    ax.hist(s.leads_days, bins=list(range(-90, 95, 5)), color="tab:red", alpha=0.8)
    ax.axvline(0, color="black", lw=1)
    ax.axvline(s.median_lead_days, color="black", ls="--", lw=1,
               label=f"median {s.median_lead_days:.0f} days")
    ax.set_xlabel("lead time, days (dropout minus first right alert; > 0: before the dropout)")
    ax.set_ylabel("caught defections")
    ax.set_title(f"Lead time of {pick}")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "lead_time.png", dpi=110)
    plt.close(fig)


def _changes(changes: Mapping[str, Any]) -> str:
    """The candidate's changes as text; weights by what differs from `PRE_STUDY_WEIGHTS`.

    >>> _changes({"min_score": 3.5, **_EARLY_SENTIMENT, "weights": SENTIMENT_X2})
    '`min_score=3.5`, `sentiment=-0.2`, `weights[negative_sentiment]=2.0`'
    """
    parts = []
    for k, v in changes.items():
        if k == "weights":
            parts += [f"`weights[{code}]={w}`" for code, w in v.items()
                      if PRE_STUDY_WEIGHTS.get(code) != w]
        else:
            parts.append(f"`{k}={v}`")
    return ", ".join(parts) or "none (pre-study defaults)"


def render(run: Run, rows: Mapping[str, Scores], pick: str, why: str,
           codes: Mapping[str, Mapping[str, tuple[int, float]]], base: float, command: str,
           rule: str = "lead") -> str:
    """The markdown report."""
    h_days = run.horizon_ms // MS_PER_DAY
    w = run.window
    floor = run.candidates[0].policy.min_value_tier
    episodes = rows[pick].episodes
    lines = [
        "# Defection alert study",
        "",
        f"`{command}` — {run.seconds:.0f} s.",
        "",
        "## Data and replay",
        "",
        f"- {run.events:,} simulated events of {run.customers:,} customers, "
        f"{day_text(run.start_ms)} to {day_text(run.end_ms)}, replayed in event-time order "
        "through the pure domain at the worker's semantics (see the module docstring of "
        "`load/alert_study.py`): batches of event time, valuation at each customer's latest "
        "event, value tiers from the population's CLV percentiles, one churn model learned "
        "online when each example's horizon closes and used to score, daily rescoring of "
        "customers with value at stake, and the value model refitted every month of event time.",
        f"- {run.decisions:,} decisions ({run.rescores:,} of them rescorings without a new "
        f"event), {run.examples:,} churn examples learned (progressive AUC of the churn model "
        f"in this replay: {fmt(run.progress.summary()['auc'])}), {run.fits} value-model fits.",
        f"- Evaluation window: {day_text(w.first)} to {day_text(w.last)} (the first "
        f"{(w.first - run.start_ms) // MS_PER_DAY} days warm the models up; the last {h_days} "
        "are left out so every counted alert and dropout has H days of data after it).",
        "",
        "## Definitions",
        "",
        f"H = {h_days} days, the churn horizon. The simulator knows every customer's true alive "
        "periods; a period ends with a dropout no event shows (the customer's last purchase "
        "before going quiet).",
        "",
        "- **The dropout an alert is about**: the end of the customer's alive period in which it "
        "was raised, or, if the customer is already gone, the dropout that left them gone.",
        "- **Precision**: the share of alerts raised in the window whose dropout lies within H "
        "of the alert: at most H after it (the customer truly defects within H), or at most H "
        "before it (already gone, but the silence had not shown yet: a right but *late* alert "
        "with a negative lead time). An alert on a customer gone for longer than H (a win-back "
        "case) or who stays for longer than H is wrong. **Late share**: the share of right alerts "
        "raised after the dropout.",
        f"- **Recall**: the *episodes* are true dropouts in the window of customers who were "
        f"valuable (value tier ≥ the policy's `min_value_tier`, {floor:.0f}, at some engine "
        "scoring in the H days before the dropout) — "
        f"{episodes:,} episodes here. An episode is caught when an alert is right about it "
        "(raised within H either side of that dropout, before any return). **In time**: the "
        "first such alert came at or before the dropout. Dropouts after the window are not "
        "counted, so a late dropout is never a miss.",
        "- **F1**: harmonic mean of precision and recall.",
        f"- **Base rate**: the precision of alerting at random: the share of valuable scorings "
        f"in the window at which an alert would have been right — {fmt(base)} here.",
        "- **Lead time**: dropout minus the first right alert, in days; positive means before the "
        "dropout. The median is over caught episodes.",
        "- **Load**: alerts in the window per 1,000 valuable customers per 30 days (valuable: "
        "stored value tier at or above `min_value_tier`, counted after every batch). One alert "
        "per episode and no other would give a load of "
        f"{fmt(operator_load(episodes, run.valuable_days[floor]), 0)}: valuable customers "
        "defect often in this population.",
        "",
        "## Candidates",
        "",
        "Every candidate is `AlertPolicy` with the pre-study defaults (any one signal; churn "
        "threshold 0.5; cooldown 14 days) and the changes listed. `min_signals`: at least that "
        "many signals at once; `min_score`: a rule score (the sum of weight × capped strength, "
        "see `defection_reasons`) of at least that.",
        "",
        "| # | candidate | changes | alerts | precision | late share | recall | recall in time | "
        f"≥ {LEAD_TARGET_DAYS:.0f} days ahead | F1 | median lead (quartiles), days | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for number, c in enumerate(run.candidates, 1):
        s = rows[c.name]
        name = f"**{c.name}**" if c.name == pick else c.name
        lines.append(
            f"| {number} | {name} | {_changes(CANDIDATES.get(c.name, {}))} | {s.alerts:,} | "
            f"{fmt(s.precision)} | {fmt(s.late_share, 2)} | {fmt(s.recall)} | "
            f"{fmt(s.recall_in_time)} | {fmt(s.recall_ahead())} | {fmt(s.f1)} | "
            f"{fmt(s.median_lead_days, 0)} ({fmt(s.lead_quartiles[0], 0)}, "
            f"{fmt(s.lead_quartiles[1], 0)}) | {fmt(s.load, 0)} |"
        )
    s = rows[pick]
    q = statistics.quantiles(s.leads_days, n=4) if len(s.leads_days) >= 2 else [math.nan] * 3
    first = run.candidates[0].name
    default = next((c.name for c in run.candidates if c.policy == AlertPolicy()), None)
    lines += [
        "",
        "![precision and recall](precision_recall.png)",
        "",
        "## Choice",
        "",
        f"**{pick}** — {why}. Rule: "
        + (f"the largest share of valuable dropouts alerted at least {LEAD_TARGET_DAYS:.0f} "
           f"days ahead among the candidates with precision ≥ {MIN_PRECISION}"
           if rule == "lead" else "the highest F1")
        + f"; a candidate within {F1_TIE} of it counts "
        "as tied (differences that small change from one seed to the next), and a tie goes to "
        "the lower operator load.",
        "",
        "`AlertPolicy()`'s defaults (and the `CVM_ALERT_*` settings' defaults) are "
        + (f"the candidate **{default}**." if default else "none of the candidates."),
        "",
        f"Against `{first}`: precision {fmt(rows[first].precision)} → {fmt(s.precision)}, "
        f"recall {fmt(rows[first].recall)} → {fmt(s.recall)}, load {fmt(rows[first].load, 0)} → "
        f"{fmt(s.load, 0)}. Lead time of the chosen policy: median {fmt(s.median_lead_days, 0)} "
        f"days, quartiles {fmt(q[0], 0)} and {fmt(q[2], 0)}; {s.caught_in_time} of "
        f"{s.caught} caught episodes were alerted at or before the dropout.",
        "",
        "![lead time](lead_time.png)",
        "",
        f"Right alerts that came after the dropout: {fmt(s.late_share, 2)} of the chosen "
        "policy's. In the classic simulator (`--simulator classic`) a customer drops out "
        "at a purchase and is silent afterwards, and purchases do not slow down before it, so the "
        "silence signals (churn model, P(alive), overdue) carry information only after it; the "
        "churn label — no order within H of a snapshot — is by construction true only after it "
        "too. Before the dropout only the service and campaign signals (complaints, "
        "cancellation requests, unresolved contacts, sentiment, unsubscribes) warn, and they "
        "are rarer but far more precise (below). A late alert is "
        "still useful when it comes soon: the dropout is latent, the customer has not said "
        "goodbye.",
        "",
        "## Reason codes",
        "",
        "Alerts in the window that carry each code, and the precision of those alerts, for "
        + " and ".join(f"`{name}`" for name in codes) + ".",
        "",
        "| code | " + " | ".join(f"alerts ({name}) | precision ({name})" for name in codes) + " |",
        "|---|" + "---|---|" * len(codes),
        *[f"| {code} | " + " | ".join(
            f"{by[code][0]:,} | {by[code][1]:.3f}" if code in by else "0 | –"
            for by in codes.values()) + " |"
          for code in dict.fromkeys(c for by in codes.values() for c in by)],
        "",
        "## The churn model",
        "",
        "The online model against a batch model (scikit-learn gradient boosting on the same "
        "features and labels, evaluated on later data) is studied by `python -m load.churn_study`"
        " (`reports/churn/study.md`); the alerts above use the model it chose "
        f"(`{churn.DEFAULT_MODEL}@{churn.DEFAULT_SCHEDULE}`).",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m load.alert_study``: alert policies against the simulator's ground truth."""
    parser = argparse.ArgumentParser(prog="python -m load.alert_study", description=main.__doc__)
    parser.add_argument("--customers", type=int, default=2_000)
    parser.add_argument("--days", type=int, default=540)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--horizon-days", type=int, default=90)
    parser.add_argument("--warmup-days", type=int, default=180)
    parser.add_argument("--tick-hours", type=float, default=6.0,
                        help="event time per batch (default: %(default)s)")
    parser.add_argument("--fit-days", type=float, default=30.0,
                        help="event time between value-model fits (default: %(default)s)")
    parser.add_argument("--max-load", type=float, default=None,
                        help="consider only candidates with at most this operator load")
    parser.add_argument("--lead-days", type=int, default=0,
                        help="lead window of the churn label: will the customer drop out within "
                             "this many days (0: no order within the horizon; default: "
                             "%(default)s)")
    parser.add_argument("--simulator", choices=SIMULATORS, default="precursors",
                        help="how simulated customers defect (default: %(default)s)")
    parser.add_argument("--rule", choices=("lead", "f1"), default="lead",
                        help="lead: the most valuable dropouts alerted 14 days ahead at "
                             "precision >= 0.5; f1: the highest F1 (default: %(default)s)")
    parser.add_argument("--ceiling", action="store_true",
                        help="only print the share of true dropouts with a precursor event or "
                             "trend 14 to 60 days before them, and how often calm customers "
                             "show the trends (no replay)")
    parser.add_argument("--decline-days", type=float, default=None,
                        help="the simulator's decline_days (default: the simulator's)")
    parser.add_argument("--candidates", default=None,
                        help="replay only these candidates (names separated by ';'; default: all)")
    parser.add_argument("--trace", default=None,
                        help="also write every valued decision (`trace_row`), the ground truth "
                             "and the window to this pickle, for `python -m load.alert_fit`")
    parser.add_argument("--out", default="reports/alerts")
    args = parser.parse_args(argv)
    if args.days <= args.warmup_days + args.horizon_days:
        parser.error("--days must exceed --warmup-days plus --horizon-days")
    config = SimConfig(n_customers=args.customers, days=args.days, seed=args.seed,
                       precursors=args.simulator == "precursors")
    if args.decline_days is not None:
        config = replace(config, decline_days=args.decline_days)
    if args.ceiling:
        shares = ceiling(config, args.horizon_days, args.warmup_days)
        print(f"{shares.pop('dropouts'):.0f} true dropouts in the window; with a precursor "
              f"event {LEAD_TARGET_DAYS:.0f} to 60 days before: "
              + ", ".join(f"{k} {v:.3f}" for k, v in shares.items()))
        return 0
    names = list(CANDIDATES)
    if args.candidates:
        names = [n.strip() for n in args.candidates.split(";") if n.strip()]
        unknown = [n for n in names if n not in CANDIDATES]
        if unknown:
            parser.error(f"unknown candidates: {', '.join(unknown)}")
    policies = {name: policy_of(CANDIDATES[name]) for name in names}
    trace: list[tuple[Any, ...]] | None = [] if args.trace else None
    run = replay(config, policies, args.horizon_days, args.warmup_days, args.tick_hours,
                 args.fit_days, args.lead_days, trace=trace)
    truth = truth_of(config)
    if args.trace:
        floor = run.candidates[0].policy.min_value_tier
        with open(args.trace, "wb") as f:
            pickle.dump({"rows": trace, "truth": truth, "window": run.window,
                         "horizon_ms": run.horizon_ms, "valuable_at": run.valuable_at[floor],
                         "valuable_days": run.valuable_days[floor], "seed": args.seed,
                         "scores": scores_of(run, truth)}, f)
    rows = scores_of(run, truth)
    if args.rule == "lead":
        pick, why = choose_for_lead(rows)
    else:
        pick, why = choose(rows, args.max_load)
    chosen = next(c for c in run.candidates if c.name == pick)
    codes = {c.name: code_precision(c, truth, run.window, run.horizon_ms)
             for c in (run.candidates[0], chosen)}
    floor = run.candidates[0].policy.min_value_tier
    base = base_rate(run.valuable_at[floor], truth, run.window, run.horizon_ms)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _plot(rows, pick, out)
    command = (f"python -m load.alert_study --customers {args.customers} --days {args.days} "
               f"--seed {args.seed} --simulator {args.simulator} --rule {args.rule} "
               f"--lead-days {args.lead_days}")
    if args.candidates:
        command += f" --candidates '{args.candidates}'"
    (out / "study.md").write_text(render(run, rows, pick, why, codes, base, command, args.rule))
    for name, s in rows.items():
        print(f"{name:34} alerts {s.alerts:5} precision {fmt(s.precision)} recall "
              f"{fmt(s.recall)} in time {fmt(s.recall_in_time)} >=14d {fmt(s.recall_ahead())} "
              f"F1 {fmt(s.f1)} lead {fmt(s.median_lead_days, 0)} "
              f"({fmt(s.lead_quartiles[0], 0)}..{fmt(s.lead_quartiles[1], 0)}) "
              f"load {fmt(s.load, 0)}", file=sys.stderr)
    print(f"churn AUC (progressive) {fmt(run.progress.summary()['auc'])}", file=sys.stderr)
    print(f"base rate {fmt(base)}; choice {pick}: {why}; {run.seconds:.0f} s; "
          f"wrote {out / 'study.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
