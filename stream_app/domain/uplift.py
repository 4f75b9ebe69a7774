"""Confidence intervals for return rates and the win-back uplift (treatment minus control).

Rates use Wilson's score interval, which stays inside 0..1 and behaves with few
triggers; the difference of two rates uses Newcombe's hybrid score interval
(method 10 of Newcombe, 1998), built from the two Wilson intervals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Interval", "UpliftEstimate", "Z95", "estimate_uplift", "wilson"]

#: The two-sided 95 % normal quantile.
Z95 = 1.959963984540054


@dataclass(frozen=True)
class Interval:
    """A point estimate with its lower and upper confidence bounds."""

    estimate: float
    low: float
    high: float


def wilson(successes: int, trials: int, z: float = Z95) -> Interval | None:
    """Wilson's score interval of a proportion; None without trials.

    >>> i = wilson(7, 43)
    >>> round(i.estimate, 4), round(i.low, 4), round(i.high, 4)
    (0.1628, 0.0812, 0.2997)
    >>> wilson(0, 10).low, round(wilson(10, 10).high, 9)
    (0.0, 1.0)
    """
    if trials <= 0:
        return None
    if not 0 <= successes <= trials:
        raise ValueError(f"successes {successes} not within 0..{trials}")
    p = successes / trials
    z2 = z * z
    centre = (p + z2 / (2 * trials)) / (1 + z2 / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / (1 + z2 / trials)
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class UpliftEstimate:
    """Treatment return rate minus control return rate, with its confidence interval."""

    treatment: Interval
    control: Interval
    uplift: Interval
    confidence: float = 0.95

    @property
    def significant(self) -> bool:
        """Whether the interval of the uplift leaves out zero."""
        return self.uplift.low > 0 or self.uplift.high < 0

    def sentence(self) -> str:
        """One plain sentence saying what the uplift means.

        >>> estimate_uplift(60, 200, 5, 50).sentence()
        'The offers raised the return rate by 20.0 points (95 % CI 7.2 to 28.7): significant.'
        >>> estimate_uplift(30, 100, 2, 20).sentence().split(": ")[1]
        'the interval includes zero, so the effect is not significant.'
        """
        u = self.uplift
        level = f"{self.confidence:.0%}".replace("%", " %")
        ci = f"({level} CI {100 * u.low:.1f} to {100 * u.high:.1f})"
        verb = "raised" if u.estimate >= 0 else "lowered"
        head = f"The offers {verb} the return rate by {100 * abs(u.estimate):.1f} points {ci}"
        if self.significant:
            return f"{head}: significant."
        return f"{head}: the interval includes zero, so the effect is not significant."


def estimate_uplift(
    treated_returned: int, treated: int, control_returned: int, control: int, z: float = Z95
) -> UpliftEstimate | None:
    """Newcombe's hybrid score interval of the difference of two rates; None if a group is empty.

    >>> e = estimate_uplift(60, 200, 5, 50)
    >>> round(e.uplift.estimate, 3), round(e.uplift.low, 3), round(e.uplift.high, 3)
    (0.2, 0.072, 0.287)
    >>> e.significant, estimate_uplift(30, 100, 2, 20).significant
    (True, False)
    >>> estimate_uplift(1, 1, 0, 0) is None
    True
    """
    t = wilson(treated_returned, treated, z)
    c = wilson(control_returned, control, z)
    if t is None or c is None:
        return None
    diff = t.estimate - c.estimate
    low = diff - math.sqrt((t.estimate - t.low) ** 2 + (c.high - c.estimate) ** 2)
    high = diff + math.sqrt((t.high - t.estimate) ** 2 + (c.estimate - c.low) ** 2)
    return UpliftEstimate(t, c, Interval(diff, max(-1.0, low), min(1.0, high)))
