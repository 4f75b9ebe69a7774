"""Product affinity learned from the stream: which categories the same customers buy.

Counting: when a customer buys a category for the first time, the category's
buyer count ``n`` rises by one, and so does the pair count of that category
with every category the customer already had (customer-level co-occurrence:
"customers who buy X also buy Y"); the directed count ``a`` of (X, Y) rises
by one when the customer already had X (bought on an earlier order) when they
first buy Y. A customer's second order of a category adds one to its repeat
count ``rep``. Every order line adds its revenue and
margin (cents) and one line to the category's sums, from which an offer's
margin per purchase comes. `increments` returns these counts as integer
deltas, which the engine adds atomically with the customer's record, in one
hash per (scope, period, partition): scope ``all`` and one per segment.

Decay: the counts of each period (`period` of a day) are weighted by
``0.5 ** (age_days / half_life_days)`` relative to the newest period when they
are merged (`merge`), and periods older than a bound are dropped; memory is
bounded by periods x scopes x partitions x (categories + 3 x category pairs): each unordered
pair has its ``c`` count and up to two directed ``a`` counts.

Examples
--------
>>> t = merge([(0, {"customers": 10, "n\\x1fX": 10, "n\\x1fY": 5, "c\\x1fX\\x1fY": 4})], 0, 90)
>>> round(t.confidence("X", "Y"), 2), round(t.confidence("Y", "X"), 2)
(0.4, 0.8)
>>> round(t.similarity("X", "Y"), 3)
0.566

Of the 10 buyers of X, 4 bought Y as well; 2 of them had Y before X. Of the 8
who came to X without Y, 2 bought Y with or after it: P(Y | X, no Y yet) 0.25.

>>> t = merge([(0, {"n\x1fX": 10, "n\x1fY": 5, "c\x1fX\x1fY": 4, "a\x1fY\x1fX": 2})], 0, 90)
>>> t.confidence("X", "Y"), t.conditional("X", "Y")
(0.4, 0.25)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from stream_app.domain.products import Profile

__all__ = [
    "ALL",
    "SEP",
    "Table",
    "increments",
    "merge",
    "period_of",
    "weight",
]

#: The scope of the population-wide counts.
ALL = "all"
#: Separator inside a counter's field name (categories are free text).
SEP = "\x1f"
#: The most one order line adds to a category's revenue or margin sum (cents): 10^6 major
#: units, so a period's sum on one partition needs 9 * 10^7 such lines to reach 2^53.
LINE_CAP_C = 10**8


def period_of(day: int, period_days: int) -> int:
    """The decay period a day falls in."""
    return day // period_days


def weight(age_periods: int, period_days: int, half_life_days: float) -> float:
    """The weight of a period `age_periods` older than the newest one.

    >>> weight(2, 30, 60)
    0.5
    """
    return float(0.5 ** (max(age_periods, 0) * period_days / half_life_days))


def _pair(x: str, y: str) -> str:
    a, b = (x, y) if x <= y else (y, x)
    return f"c{SEP}{a}{SEP}{b}"


def _after(x: str, y: str) -> str:
    return f"a{SEP}{x}{SEP}{y}"


def increments(
    before: Profile,
    after: Profile,
    line_margins: Sequence[tuple[str, int, int]],
    is_order: bool,
) -> list[tuple[str, int]]:
    """The counter deltas (field, delta) of one purchase that moved `before` to `after`.

    `line_margins`: (category, revenue cents, margin cents) of each order line
    (a return's lines count negatively in the sums but not in the buyer counts);
    each is capped at `LINE_CAP_C`.

    >>> from stream_app.domain.products import CategoryStats
    >>> from types import MappingProxyType as M
    >>> b = Profile(M({"X": CategoryStats(orders=1)}))
    >>> a = Profile(M({"X": CategoryStats(orders=2), "Y": CategoryStats(orders=1)}))
    >>> sorted(f.replace(SEP, "|") for f, _ in increments(b, a, [], True))
    ['a|X|Y', 'c|X|Y', 'n|Y', 'rep|X']
    """
    out: dict[str, int] = {}
    sign = 1 if is_order else -1
    for category, revenue_c, margin_c in line_margins:
        revenue_c = min(max(revenue_c, 0), LINE_CAP_C)
        margin_c = min(max(margin_c, -LINE_CAP_C), LINE_CAP_C)
        out[f"r{SEP}{category}"] = out.get(f"r{SEP}{category}", 0) + sign * revenue_c
        out[f"m{SEP}{category}"] = out.get(f"m{SEP}{category}", 0) + sign * margin_c
        if is_order:
            out[f"o{SEP}{category}"] = out.get(f"o{SEP}{category}", 0) + 1
    if is_order:
        if not before.categories and after.categories:
            out["customers"] = 1
        new = sorted(k for k in after.categories if k not in before.categories)
        old = sorted(before.categories)
        for i, y in enumerate(new):
            out[f"n{SEP}{y}"] = 1
            for x in old + new[:i]:
                out[_pair(x, y)] = 1
            for x in old:
                out[_after(x, y)] = 1
        for k, c in after.categories.items():
            b = before.categories.get(k)
            if b is not None and b.orders == 1 and c.orders == 2:
                out[f"rep{SEP}{k}"] = 1
    return [(k, v) for k, v in out.items() if v]


@dataclass(frozen=True, slots=True)
class Table:
    """Decayed counts of one scope, merged over periods and partitions."""

    customers: float = 0.0
    buyers: Mapping[str, float] = field(default_factory=dict)
    pairs: Mapping[tuple[str, str], float] = field(default_factory=dict)  # a < b
    #: (x, y): customers who had `x` from an earlier order when they first bought `y`.
    after: Mapping[tuple[str, str], float] = field(default_factory=dict)
    repeats: Mapping[str, float] = field(default_factory=dict)
    revenue_c: Mapping[str, float] = field(default_factory=dict)
    margin_c: Mapping[str, float] = field(default_factory=dict)
    lines: Mapping[str, float] = field(default_factory=dict)
    #: What `conditional` and `margin_per_line` worked out, by their arguments: a table is
    #: read by every lookup and offer until the next refresh, and its counts never change.
    _conditionals: dict[tuple[str, str], float] = field(
        default_factory=dict, compare=False, repr=False)
    _margins: dict[tuple[str, float], float] = field(
        default_factory=dict, compare=False, repr=False)

    def together(self, x: str, y: str) -> float:
        """Customers (decayed) who bought both `x` and `y`."""
        return self.pairs.get((x, y) if x <= y else (y, x), 0.0)

    def confidence(self, x: str, y: str) -> float:
        """P(buys `y` | buys `x`): the share of the buyers of `x` who also bought `y`."""
        n = self.buyers.get(x, 0.0)
        return 0.0 if n <= 0 else min(self.together(x, y) / n, 1.0)

    def conditional(self, x: str, y: str) -> float:
        """P(buys `y` | buys `x` without having `y` yet): of the buyers of `x` who had no `y`
        before it, the share who bought `y` with or after it.

        The buyers who came to `x` with `y` already bought are left out: a customer who buys
        `x` and has not bought `y` is one of the others. Without directed counts (``a``) it is
        the `confidence`.
        """
        found = self._conditionals.get((x, y))
        if found is not None:
            return found
        before = min(self.after.get((y, x), 0.0), self.together(x, y))
        n = self.buyers.get(x, 0.0) - before
        p = 0.0 if n <= 0 else min(max(self.together(x, y) - before, 0.0) / n, 1.0)
        self._conditionals[(x, y)] = p
        return p

    def similarity(self, x: str, y: str) -> float:
        """Item-to-item cosine similarity of the buyer sets of `x` and `y`."""
        d = self.buyers.get(x, 0.0) * self.buyers.get(y, 0.0)
        return 0.0 if d <= 0 else min(self.together(x, y) / math.sqrt(d), 1.0)

    def popularity(self, y: str) -> float:
        """The share of customers who bought `y`."""
        return 0.0 if self.customers <= 0 else min(self.buyers.get(y, 0.0) / self.customers, 1.0)

    def repeat_rate(self, y: str) -> float:
        """The share of the buyers of `y` who bought it again."""
        n = self.buyers.get(y, 0.0)
        return 0.0 if n <= 0 else min(self.repeats.get(y, 0.0) / n, 1.0)

    def margin_per_line(self, y: str, default_margin_rate: float) -> float:
        """Mean margin (major units) of one order line of `y`; 0 when never sold."""
        found = self._margins.get((y, default_margin_rate))
        if found is not None:
            return found
        lines = self.lines.get(y, 0.0)
        margin = self.margin_c.get(y)
        if margin is None:
            margin = self.revenue_c.get(y, 0.0) * default_margin_rate
        value = 0.0 if lines <= 0 else max(margin / lines / 100, 0.0)
        self._margins[(y, default_margin_rate)] = value
        return value

    def similar(self, x: str, k: int = 5) -> list[tuple[str, float]]:
        """The `k` categories most similar to `x` (cosine), best first."""
        scores = [(y, self.similarity(x, y)) for y in self.buyers if y != x]
        return sorted((s for s in scores if s[1] > 0), key=lambda s: (-s[1], s[0]))[:k]


def merge(
    rows: Iterable[tuple[int, Mapping[str, int | float]]],
    newest: int | None,
    half_life_days: float,
    period_days: int = 30,
) -> Table:
    """One `Table` from (period, counters) rows, each weighted by its age behind `newest`.

    `newest` None takes the newest period of the rows.
    """
    rows = list(rows)
    if newest is None:
        newest = max((p for p, _ in rows), default=0)
    customers = 0.0
    sums: dict[str, dict[str, float]] = {k: {} for k in ("n", "rep", "r", "m", "o")}
    pairs: dict[tuple[str, str], float] = {}
    after: dict[tuple[str, str], float] = {}
    for period, counters in rows:
        w = weight(newest - period, period_days, half_life_days)
        for name, value in counters.items():
            v = float(value) * w
            if name == "customers":
                customers += v
                continue
            head, _, rest = name.partition(SEP)
            if head in ("c", "a"):
                a, _, b = rest.partition(SEP)
                into = pairs if head == "c" else after
                into[(a, b)] = into.get((a, b), 0.0) + v
            elif head in sums:
                sums[head][rest] = sums[head].get(rest, 0.0) + v
    return Table(customers, sums["n"], pairs, after, sums["rep"], sums["r"], sums["m"], sums["o"])
