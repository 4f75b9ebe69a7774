"""Where a customer stands in the population: the cut points and the value tier.

The cut points are refreshed by the shell from the population's histograms; the
value tier is the customer's CLV percentile between them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stream_app.domain.rfm import RfmCuts, log_bucket, percentile
from stream_app.domain.valuation import Valuation

__all__ = ["CLV_BASE", "Cuts", "value_tier"]

#: Relative width of a CLV histogram bucket (2 %).
CLV_BASE = 1.02


@dataclass(frozen=True, slots=True)
class Cuts:
    """Population cut points, refreshed from the histograms every few seconds."""

    rfm: RfmCuts = field(default_factory=RfmCuts)
    clv: tuple[int, ...] = ()


def value_tier(v: Valuation, cuts: Cuts) -> int:
    """CLV percentile of the population (0..99).

    Without cut points (no population yet) every customer is in the middle.

    >>> v = Valuation(0, 365, 0.9, 1.0, 50.0, 120.0, 0.3, 0.0, 1)
    >>> value_tier(v, Cuts()), value_tier(v, Cuts(clv=(log_bucket(100.0, CLV_BASE),) * 99))
    (50, 99)
    """
    return percentile(log_bucket(v.clv, CLV_BASE), cuts.clv)
