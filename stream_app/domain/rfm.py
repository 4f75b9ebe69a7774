"""Recency, frequency, monetary value and named segments.

Quantiles of the current population come from exact bucket counts (a
histogram whose buckets are a few percent wide), kept incrementally: when a
customer's value moves, one bucket loses a count and another gains one. Unlike
a streaming quantile sketch this supports the removal of a customer's old
value, which RFM needs because every customer's values move over time.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from stream_app.domain.events import MS_PER_DAY
from stream_app.domain.ledger import CustomerState

#: Relative width of a monetary bucket (2 %).
MONETARY_BASE = 1.02
#: Relative width of a frequency bucket for large counts (5 %); small counts are exact.
FREQUENCY_BASE = 1.05

SEGMENTS = (
    "champions",
    "loyal",
    "new",
    "potential_loyalist",
    "at_risk",
    "hibernating",
    "lost",
)


def log_bucket(value: float, base: float) -> int:
    """Signed logarithmic bucket of a value: buckets are `base - 1` wide, relatively.

    >>> log_bucket(0, 1.02), log_bucket(100, 1.02), log_bucket(-100, 1.02)
    (0, 233, -233)
    """
    if value == 0:
        return 0
    magnitude = int(math.log1p(abs(value)) / math.log(base))
    return magnitude if value > 0 else -magnitude


@dataclass(frozen=True, slots=True)
class RfmValues:
    """A customer's raw RFM values and the buckets they fall in."""

    last_purchase_day: int
    frequency: int
    monetary_c: int

    @property
    def frequency_bucket(self) -> int:
        return log_bucket(self.frequency, FREQUENCY_BASE)

    @property
    def monetary_bucket(self) -> int:
        return log_bucket(self.monetary_c, MONETARY_BASE)

    def recency_days(self, as_of: int) -> int:
        """Whole days between the last purchase and `as_of` (ms)."""
        return max(as_of // MS_PER_DAY - self.last_purchase_day, 0)


def rfm_values(state: CustomerState) -> RfmValues | None:
    """RFM values of a customer with at least one order; None before that.

    Frequency counts distinct purchase days; monetary is the mean order value.
    """
    if not state.purchase_days or state.orders == 0:
        return None
    return RfmValues(
        last_purchase_day=state.purchase_days[-1],
        frequency=len(state.purchase_days),
        monetary_c=round(state.revenue_c / state.orders),
    )


def quantile_cuts(histogram: Mapping[int, int], parts: int) -> tuple[int, ...]:
    """The buckets at the 1/parts, 2/parts, ... points of a bucket-count histogram.

    >>> quantile_cuts({1: 10, 2: 10, 3: 10, 4: 10, 5: 10}, 5)
    (1, 2, 3, 4)
    >>> quantile_cuts({}, 5)
    ()
    """
    items = sorted((b, n) for b, n in histogram.items() if n > 0)
    total = sum(n for _, n in items)
    if total == 0:
        return ()
    cuts: list[int] = []
    cumulative = 0
    k = 1
    for bucket, n in items:
        cumulative += n
        while k < parts and cumulative >= k * total / parts:
            cuts.append(bucket)
            k += 1
    return tuple(cuts)


def quintile_cuts(histogram: Mapping[int, int]) -> tuple[int, ...]:
    """The buckets at the 20/40/60/80 % points of a bucket-count histogram."""
    return quantile_cuts(histogram, 5)


def score(bucket: int, cuts: Sequence[int]) -> int:
    """Quintile score 1..5: one more than the number of cuts the bucket exceeds.

    >>> score(1, (1, 2, 3, 4)), score(5, (1, 2, 3, 4)), score(3, ())
    (1, 5, 3)
    """
    if not cuts:
        return 3
    return 1 + bisect.bisect_left(cuts, bucket)


@dataclass(frozen=True, slots=True)
class RfmCuts:
    """Quintile cut points of the population, per dimension."""

    recency_day: tuple[int, ...] = ()
    frequency: tuple[int, ...] = ()
    monetary: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class RfmScore:
    recency_days: int
    r: int
    f: int
    m: int
    segment: str


def segment(r: int, f: int) -> str:
    """Named segment from the recency and frequency scores.

    >>> segment(5, 5), segment(1, 5), segment(1, 1), segment(5, 1)
    ('champions', 'at_risk', 'lost', 'new')
    """
    if r >= 4 and f >= 4:
        return "champions"
    if r >= 3 and f >= 3:
        return "loyal"
    if r >= 4 and f == 1:
        return "new"
    if r >= 3:
        return "potential_loyalist"
    if f >= 3:
        return "at_risk"
    if r == 2:
        return "hibernating"
    return "lost"


def rfm_score(values: RfmValues, cuts: RfmCuts, as_of: int) -> RfmScore:
    """Score a customer against the population's cut points at `as_of`."""
    r = score(values.last_purchase_day, cuts.recency_day)
    f = score(values.frequency_bucket, cuts.frequency)
    m = score(values.monetary_bucket, cuts.monetary)
    return RfmScore(values.recency_days(as_of), r, f, m, segment(r, f))


def percentile_cuts(histogram: Mapping[int, int]) -> tuple[int, ...]:
    """The buckets at the 1..99 % points of a bucket-count histogram."""
    return quantile_cuts(histogram, 100)


def percentile(bucket: int, cuts: Sequence[int]) -> int:
    """Share of the population (0..100) below the bucket, from `percentile_cuts`.

    >>> cuts = percentile_cuts({b: 1 for b in range(100)})
    >>> percentile(0, cuts), percentile(50, cuts), percentile(99, cuts)
    (0, 50, 99)
    """
    if not cuts:
        return 50
    return bisect.bisect_left(cuts, bucket)
