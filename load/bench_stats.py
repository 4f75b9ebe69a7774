"""Pure helpers of the benchmark: percentiles, steady rates, targets and tables.

Nothing here touches Kafka, Redis or the clock, so `tests/unit/test_bench.py` checks it
without the dev stack.

Examples
--------
>>> percentile([1.0, 2.0, 3.0, 4.0], 50)
2.5
>>> summarize([0.001, 0.002, 0.003]).p50_ms
2.0
>>> steady_rate([(0.0, 0), (1.0, 100), (2.0, 300), (3.0, 500), (4.0, 600)], total=600)
(200.0, 1.0, 3.0)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Latency",
    "Target",
    "categorize_stack",
    "histogram_delta",
    "parse_metrics",
    "markdown_table",
    "percentile",
    "span_of_stack",
    "steady_rate",
    "summarize",
    "text_table",
]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between order statistics.

    Same definition as numpy's default (``method="linear"``); NaN for no values.

    >>> percentile([10.0], 99), percentile([1.0, 2.0], 100), percentile([3.0, 1.0, 2.0], 0)
    (10.0, 2.0, 1.0)
    """
    if not 0 <= q <= 100:
        raise ValueError(f"q={q} is not within 0..100")
    data = sorted(values)
    if not data:
        return math.nan
    pos = (len(data) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


@dataclass(frozen=True)
class Latency:
    """Summary of latencies measured in seconds, reported in milliseconds."""

    n: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float

    def as_dict(self) -> dict[str, float | int]:
        return {
            "n": self.n, "p50_ms": self.p50_ms, "p95_ms": self.p95_ms,
            "p99_ms": self.p99_ms, "max_ms": self.max_ms, "mean_ms": self.mean_ms,
        }


def summarize(seconds: Iterable[float]) -> Latency:
    """p50/p95/p99/max/mean in ms of latencies given in seconds (NaN when empty)."""
    data = sorted(seconds)
    if not data:
        return Latency(0, math.nan, math.nan, math.nan, math.nan, math.nan)

    def ms(q: float) -> float:
        return round(percentile(data, q) * 1000, 4)

    return Latency(
        n=len(data),
        p50_ms=ms(50),
        p95_ms=ms(95),
        p99_ms=ms(99),
        max_ms=round(data[-1] * 1000, 4),
        mean_ms=round(sum(data) / len(data) * 1000, 4),
    )


def steady_rate(
    samples: Sequence[tuple[float, int]],
    total: int,
    lo: float = 0.1,
    hi: float = 0.9,
    min_t: float | None = None,
) -> tuple[float, float, float]:
    """Least-squares slope (items/s) of a cumulative count over its steady part.

    ``samples`` are ``(time_s, cumulative_count)``; the steady part is the samples whose count
    lies within ``lo * total .. hi * total`` (start-up and the drained tail are left out) and,
    when given, at or after ``min_t``. Returns ``(rate, t_start, t_end)``; the rate is NaN if
    fewer than two samples qualify.

    >>> steady_rate([(0.0, 0), (1.0, 10)], total=10)
    (nan, nan, nan)
    """
    window = [
        (t, n) for t, n in samples
        if lo * total <= n <= hi * total and (min_t is None or t >= min_t)
    ]
    if len(window) < 2:
        return (math.nan, math.nan, math.nan)
    ts = [t for t, _ in window]
    ns = [float(n) for _, n in window]
    mt, mn = sum(ts) / len(ts), sum(ns) / len(ns)
    var = sum((t - mt) ** 2 for t in ts)
    if var == 0:
        return (math.nan, math.nan, math.nan)
    slope = sum((t - mt) * (n - mn) for t, n in zip(ts, ns, strict=True)) / var
    return (round(slope, 3), ts[0], ts[-1])


@dataclass(frozen=True)
class Target:
    """One target of the issue: the goal, the measurement, and what bounds it if missed."""

    name: str
    goal: str
    measured: str
    met: bool
    bound: str = ""

    def row(self) -> list[str]:
        return [self.name, self.goal, self.measured, "yes" if self.met else "NO", self.bound]


def _cell(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table; ``|`` inside cells is escaped.

    >>> print(markdown_table(["a", "b"], [[1, 2.5]]))
    | a | b |
    |---|---|
    | 1 | 2.500 |
    """
    def line(cells: Sequence[object]) -> str:
        return "| " + " | ".join(_cell(c).replace("|", "\\|") for c in cells) + " |"

    out = [line(header), "|" + "|".join("---" for _ in header) + "|"]
    out += [line(r) for r in rows]
    return "\n".join(out)


def text_table(header: Sequence[str], rows: Iterable[Sequence[object]], width: int = 60) -> str:
    """A plain-text table for the terminal; cells longer than ``width`` are cut with ``…``.

    >>> print(text_table(["name", "n"], [["x", 1]]))
    name  n
    ----  -
    x     1
    """
    cells = [[_cell(c) for c in header]] + [[_cell(c) for c in r] for r in rows]
    cells = [[c if len(c) <= width else c[: width - 1] + "…" for c in r] for r in cells]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


#: Profile categories: path components matched on each frame's file, from the leaf up.
_CATEGORY_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("valuation (numpy/scipy)", ("stream_app/domain/valuation.py", "stream_app/domain/clv/")),
    ("planner + record encoding", ("stream_app/planner.py", "stream_app/store/records.py",
                                   "stream_app/domain/rfm.py")),
    ("domain apply (ledger, roll-ups)", ("stream_app/domain/ledger.py",
                                         "stream_app/domain/rollups.py")),
    ("decode + contract validation", ("stream_app/contract.py", "stream_app/domain/events.py")),
    ("churn, alerts, win-back", ("stream_app/domain/retention.py", "stream_app/domain/churn.py",
                                 "stream_app/domain/alerts.py", "river/",
                                 "stream_app/store/feed.py")),
    ("Redis client (redis-py, load/commit)", ("redis/", "hiredis/",
                                              "stream_app/store/customers.py")),
    ("pipeline glue (Ingestor)", ("stream_app/pipeline.py",)),
    ("Faust/aiokafka stream overhead", ("faust/", "aiokafka/", "mode/", "kafka/",
                                        "stream_app/agents/")),
    ("web server (aiohttp)", ("aiohttp/", "yarl/", "multidict/", "stream_app/web.py",
                              "stream_app/lookup.py")),
)
#: Used only when no frame of a stack matches a rule above.
_LOOP = ("asyncio event loop", ("asyncio/", "selectors.py", "uvloop/"))


def _matches(frame: str, patterns: Sequence[str]) -> bool:
    return any(f"({p}" in frame or f"/{p}" in frame for p in patterns)


def categorize_stack(frames: Sequence[str]) -> str:
    """Category of one sampled stack (frames root first, as py-spy's raw format lists them).

    Frames are scanned from the leaf up, so time in numpy under the valuation counts as
    valuation and time in asyncio streams under redis-py counts as the Redis client.

    >>> categorize_stack(["run (faust/worker.py:1)", "process (stream_app/pipeline.py:9)",
    ...                   "value_many (stream_app/domain/valuation.py:5)", "f (numpy/x.py:1)"])
    'valuation (numpy/scipy)'
    >>> categorize_stack(["execute (redis/client.py:3)", "readline (asyncio/streams.py:5)"])
    'Redis client (redis-py, load/commit)'
    >>> categorize_stack(["_run_once (asyncio/base_events.py:1)", "select (selectors.py:2)"])
    'asyncio event loop'
    >>> categorize_stack(["<module> (x.py:1)"])
    'other'
    """
    for frame in reversed(frames):
        for name, patterns in _CATEGORY_RULES:
            if _matches(frame, patterns):
                return name
    if any(_matches(frame, _LOOP[1]) for frame in frames):
        return _LOOP[0]
    return "other"


#: Who a sampled stack works for, from the root down: the first span one of its frames
#: names. The rest is Faust's stream machinery, aiokafka and the event loop.
_SPANS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # The store's Redis calls of a batch run in tasks of their own (one per shard), whose
    # stacks start at the event loop, not under Ingestor.process.
    ("batch step (Ingestor.process and its store calls)", ("Ingestor.process ",
                                                          "CustomerStore.")),
    ("engine timers (rescoring, model refresh, outbox)", ("Timers.run ", "Timers.register")),
    ("web server (aiohttp)", ("aiohttp/",)),
)
#: The span of a stack that names none of the above.
STREAM_SPAN = "Faust, aiokafka, the event loop and the rest"


def span_of_stack(frames: Sequence[str]) -> str:
    """The part of the worker one sampled stack works for (frames root first).

    Unlike `categorize_stack`, which names the leaf-most library, this names the caller, so
    the spans add up to where the worker's CPU goes: a Redis call under a rescoring timer
    counts as the timer, numpy under the batch step as the batch step.

    >>> span_of_stack(["_execute_actor (faust/agents/agent.py:1)",
    ...                "Ingestor.process (stream_app/pipeline.py:9)", "f (numpy/x.py:1)"])
    'batch step (Ingestor.process and its store calls)'
    >>> span_of_stack(["Handle._run (asyncio/events.py:80)",
    ...                "CustomerStore._commit_shard (stream_app/store/customers.py:5)"])
    'batch step (Ingestor.process and its store calls)'
    >>> span_of_stack(["Timers.run (stream_app/runtime.py:3)", "execute (redis/client.py:3)"])
    'engine timers (rescoring, model refresh, outbox)'
    >>> span_of_stack(["_fetcher (faust/transport/consumer.py:4)", "getmany (aiokafka/x.py:2)"])
    'Faust, aiokafka, the event loop and the rest'
    """
    for frame in frames:
        for name, markers in _SPANS:
            if any(frame.startswith(m) or f"/{m}" in frame or f"({m}" in frame
                   for m in markers):
                return name
    return STREAM_SPAN


# --------------------------------------------------------------------------- worker metrics

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_metrics(text: str) -> Samples:
    """Every sample of a Prometheus text page, keyed by (name, sorted labels)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def histogram_delta(before: Samples, after: Samples, name: str,
                    **labels: str) -> dict[str, Any]:
    """What a histogram gained between two scrapes: count, sum, mean, and the upper bounds
    of the buckets that hold the 50th and 99th percentiles and the largest observation.

    >>> b = {("h_bucket", (("le", "0.1"),)): 1, ("h_bucket", (("le", "1.0"),)): 1,
    ...      ("h_bucket", (("le", "+Inf"),)): 1, ("h_count", ()): 1, ("h_sum", ()): 0.05}
    >>> a = {("h_bucket", (("le", "0.1"),)): 99, ("h_bucket", (("le", "1.0"),)): 100,
    ...      ("h_bucket", (("le", "+Inf"),)): 100, ("h_count", ()): 100, ("h_sum", ()): 3.05}
    >>> histogram_delta(b, a, "h")
    {'count': 99, 'sum': 3.0, 'mean': 0.0303, 'p50_le': 0.1, 'p99_le': 1.0, 'max_le': 1.0}
    """
    want = set(labels.items())

    def pick(samples: Samples, suffix: str) -> dict[float, float]:
        out: dict[float, float] = {}
        for (n, ls), v in samples.items():
            if n != name + suffix or not want <= set(ls):
                continue
            le = dict(ls).get("le")
            key = float(le) if le is not None else 0.0
            out[key] = out.get(key, 0.0) + v
        return out

    count = sum(pick(after, "_count").values()) - sum(pick(before, "_count").values())
    total = sum(pick(after, "_sum").values()) - sum(pick(before, "_sum").values())
    b_before, b_after = pick(before, "_bucket"), pick(after, "_bucket")
    cumulative = sorted((le, b_after[le] - b_before.get(le, 0.0)) for le in b_after)
    out: dict[str, Any] = {"count": int(count), "sum": round(total, 6),
                           "mean": round(total / count, 4) if count else None}
    for label, q in (("p50_le", 0.5), ("p99_le", 0.99), ("max_le", 1.0)):
        out[label] = next((le for le, c in cumulative if count and c >= q * count - 1e-9),
                          None)
    return out
