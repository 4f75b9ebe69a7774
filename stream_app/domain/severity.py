"""Severity: the value at risk of a customer, and the bands that make it low to critical."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

from stream_app.domain.valuation import Valuation

__all__ = [
    "MIN_BAND_POPULATION",
    "SEVERITIES",
    "percentile_index",
    "population_bands",
    "rank",
    "severity",
    "value_at_risk",
]

#: Severities from least to most urgent (the alert contract's enum).
SEVERITIES: Final = ("low", "medium", "high", "critical")



def rank(name: str) -> int:
    """The order of a severity, 0 for low.

    >>> rank("low"), rank("critical")
    (0, 3)
    """
    return SEVERITIES.index(name)


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

