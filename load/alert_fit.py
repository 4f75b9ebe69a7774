"""Alert rules replayed from a decision trace, chosen on some populations and tested on others.

``python -m load.alert_study --trace FILE`` writes every valued decision of a replay (the
customer's counters, churn probability, P(alive), value tier and severity: `trace_row`), the
ground truth and the window. This module re-decides alerts from such traces for any rule the
trace can express: the thresholds and weights of `AlertPolicy`, and experimental signals that
the domain does not have (a tail-probability test of the order gap against the customer's own
rate, a binomial test of the open rate, signals that count only next to another one, signals
held for some days, weights from a logistic fit). It reproduces `decide_alert` (cooldown,
escalation, deduplication, the P(alive) reference), so the default policy's figures match the
replay's; it costs seconds per rule instead of minutes per replay.

``python -m load.alert_fit --choose 7,8 TRACE...`` fits and picks rules on the choice
populations (the seeds given) and reports them on the held-out ones (the other traces): per
population, the share of valuable dropouts alerted at least 14 days ahead, the precision and
the median lead; a tick where all three targets are met. ``--grid 'CHURN,...;SCORE,...'``
does the same for the default policy at each churn threshold and rule score given (for
traces of another churn label, ``--lead-days``, whose scores need other thresholds), and with
``--weight CODE=W,...`` at each weight of a signal, with ``--hold DAYS,...`` with the signals
held that long.
"""

from __future__ import annotations

import argparse
import math
import pickle
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from load.alert_study import (
    MIN_PRECISION,
    REWEIGHED,
    TRACE_KEYS,
    Periods,
    Scores,
    Window,
    current_dropout,
    is_right,
    score,
)
from stream_app.domain.alerts import AlertPolicy
from stream_app.domain.events import MS_PER_DAY
from stream_app.domain.severity import rank

_K = {k: i for i, k in enumerate(TRACE_KEYS)}
_N = len(TRACE_KEYS)
(_PDAYS, _FIRST_DAY, _LAST_DAY, _SINCE, _ORDERS, _REVENUE, _CONTACTS, _TENURE, _DELIVERED,
 _OPENED) = range(_N, _N + 10)


@dataclass(frozen=True)
class Trace:
    """One replay's decisions and what scoring them needs (see `load.alert_study.trace_row`)."""

    seed: int
    rows: list[tuple[Any, ...]]
    truth: Mapping[str, Periods]
    window: Window
    horizon_ms: int
    valuable_at: Mapping[str, Sequence[int]]
    valuable_days: float
    scores: Mapping[str, Scores]
    #: Whether it holds every scoring, below the value floor too, as judging a customer by the
    #: tier at their last order (`AlertPolicy.value_at_last_order`) needs.
    complete: bool = False


class _Unpickler(pickle.Unpickler):
    """Reads the study's classes pickled under ``__main__`` (``python -m load.alert_study``)."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "__main__":
            module = "load.alert_study"
        return super().find_class(module, name)


def load(path: str) -> Trace:
    """A trace written by ``python -m load.alert_study --trace``."""
    with open(path, "rb") as f:
        d = _Unpickler(f).load()
    return Trace(d["seed"], d["rows"], d["truth"], d["window"], d["horizon_ms"],
                 d["valuable_at"], d["valuable_days"], d["scores"],
                 all(len(r) > 5 for r in d["rows"]))


@dataclass(frozen=True)
class Rule:
    """An alert rule: an `AlertPolicy` and the experimental options.

    gap_alpha
        ``recency_gap`` from a tail probability instead of ``overdue_factor``: the chance of a
        gap at least this long given the customer's gaps so far (exponential gaps, the rate
        Gamma-distributed given them: ``(1 + since / span) ** -gaps``) at most this; strength
        ``log p / log alpha``.
    open_alpha
        ``engagement_drop`` from a binomial tail: the chance of opening at most the mailings
        opened in the last weeks (30-day counters, at least ``open_min_delivered``) at the
        customer's usual rate, at most this.
    lonely
        These codes count only when another signal fires with them.
    hold_days
        Each signal counts at the largest strength it had over this many days of event time
        (the signals of a span add up, not only those of one moment); None: the moment's.
    """

    policy: AlertPolicy = field(default_factory=AlertPolicy)
    gap_alpha: float | None = None
    open_alpha: float | None = None
    open_min_delivered: float = 1.5
    lonely: tuple[str, ...] = ()
    hold_days: float | None = None


def _betainc_lower_tail(n: float, k: float, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), continued to real n and k (regularised beta)."""
    from scipy.special import betainc

    if k >= n:
        return 1.0
    return float(betainc(n - k, k + 1.0, 1.0 - p))


def fixed_signals(row: tuple[Any, ...], rule: Rule) -> list[tuple[str, float]]:
    """The signals of one decision that do not depend on the alert memory, as `_signals`."""
    pol = rule.policy
    c = row[6]
    out: list[tuple[str, float]] = []
    churn = row[3]
    if churn >= pol.churn_threshold:
        out.append(("churn_risk", churn / pol.churn_threshold))
    n = c[_PDAYS]
    if n >= max(pol.overdue_min_purchase_days, 2) and c[_SINCE] >= 0:
        span = c[_LAST_DAY] - c[_FIRST_DAY]
        since = c[_SINCE]
        if rule.gap_alpha is None:
            limit = pol.overdue_factor * span / (n - 1)
            if since > limit:
                out.append(("recency_gap", since / limit))
        elif span > 0:
            logp = -(n - 1) * math.log1p(since / span)
            if logp <= math.log(rule.gap_alpha):
                out.append(("recency_gap", logp / math.log(rule.gap_alpha)))
    for code, key, thr in (
        ("cancellation_request", "cancellation_requests", pol.cancellation_requests),
        ("complaints", "complaints", pol.complaints),
        ("unresolved_contacts", "unresolved", pol.unresolved),
        ("unsubscribed", "unsubscribed", pol.unsubscribed),
    ):
        w = c[_K[key]]
        if w > 0 and w >= thr:
            out.append((code, w / thr))
    mood = c[_K["sentiment"]]
    if mood <= pol.sentiment:
        out.append(("negative_sentiment", mood / pol.sentiment))
    if pol.contact_surge is not None:
        w = c[_K["contacts"]]
        if w >= pol.contact_surge_min:
            usual = c[_CONTACTS] / max(c[_TENURE], 30.0) * 30.0
            limit = max(pol.contact_surge * usual, pol.contact_surge_min)
            if w >= limit:
                out.append(("contact_surge", w / limit))
    delivered = c[_DELIVERED]
    if delivered > 0:
        usual = min(c[_OPENED] / delivered, 1.0)
        if usual >= pol.engagement_min_rate:
            if rule.open_alpha is None:
                sent = c[_K["f_delivered"]]
                if sent >= pol.engagement_min_delivered:
                    fall = 1.0 - min(c[_K["f_opened"]] / sent, 1.0) / usual
                    if fall > 0 and fall >= pol.engagement_drop:
                        out.append(("engagement_drop", fall / pol.engagement_drop))
            else:
                sent = c[_K["delivered"]]
                if sent >= rule.open_min_delivered and usual < 1.0:
                    p = _betainc_lower_tail(sent, min(c[_K["opened"]], sent), usual)
                    if 0 < p <= rule.open_alpha:
                        out.append(("engagement_drop", math.log(p) / math.log(rule.open_alpha)))
                    elif p == 0:
                        out.append(("engagement_drop", pol.max_strength))
    orders, rev, recent_orders = c[_ORDERS], c[_REVENUE], c[_K["orders"]]
    if orders >= pol.spend_min_orders and rev > 0 and recent_orders >= pol.spend_min_recent_orders:
        usual = rev / 100 / orders
        fall = 1.0 - c[_K["spend"]] / recent_orders / usual
        if fall > 0 and fall >= pol.spend_drop:
            out.append(("spend_drop", fall / pol.spend_drop))
    return out


def alerts_of(trace: Trace, rule: Rule,
              fixed: Sequence[list[tuple[str, float]] | None] | None = None
              ) -> dict[str, list[int]]:
    """Per customer, the times of the alerts `rule` raises over the trace (as `decide_alert`).

    `fixed`: the rows' `fixed_signals` for `rule`, when already computed (None for rows below
    the value floor).
    """
    pol = rule.policy
    if pol.value_at_last_order and not trace.complete:
        raise ValueError(f"seed {trace.seed}: the trace holds the valuable scorings only; a "
                         "customer valuable by their last order needs every scoring (a trace "
                         "written with such a candidate)")
    weights, cap = pol.weights, pol.max_strength
    cool = pol.cooldown_ms
    silence = pol.max_silence_days
    mem: dict[str, list[Any]] = {}  # cid -> [last_at, last_level, last_key, last_codes, ref]
    alerts: dict[str, list[int]] = {}
    hold = None if rule.hold_days is None else rule.hold_days * MS_PER_DAY
    held: dict[str, dict[str, tuple[float, int]]] = {}  # cid -> code -> (strength, since)
    floor = pol.min_value_tier
    bought: dict[str, float] = {}  # cid -> tier at the last order (`Retention.tier_at_purchase`)
    for i, row in enumerate(trace.rows):
        cid, t, tier, _, p_alive = row[:5]
        m = mem.get(cid)
        if m is None:
            m = mem[cid] = [None, None, None, frozenset(), None]
        ref = m[4]
        if ref is None or p_alive > ref:
            m[4] = p_alive
        if len(row) == 5:
            continue
        if row[6][_SINCE] == 0:
            bought[cid] = tier
        if tier < floor and not (pol.value_at_last_order and bought.get(cid, -1.0) >= floor):
            continue
        if silence is not None and row[6][_SINCE] > silence:
            continue
        sig = list(fixed[i] if fixed is not None else fixed_signals(row, rule))  # type: ignore[arg-type]
        if ref is not None:
            drop = ref - p_alive
            if drop > 0 and drop >= pol.p_alive_drop:
                sig.append(("p_alive_drop", drop / pol.p_alive_drop))
        if hold is not None:
            sig = _held(held.setdefault(cid, {}), sig, t, hold)
        if not sig:
            continue
        if rule.lonely and len(sig) == 1 and sig[0][0] in rule.lonely:
            continue
        if rule.lonely:
            sig = [s for s in sig if s[0] not in rule.lonely or len(sig) > 1]
        if len(sig) < pol.min_signals:
            continue
        if sum(weights.get(k, 1.0) * min(s, cap) for k, s in sig) < pol.min_score:
            continue
        level = row[5]
        codes = frozenset(k for k, _ in sig)
        key = (t // MS_PER_DAY, level, codes)
        if key == m[2]:
            continue
        if m[0] is not None and t - m[0] < cool:
            escalates = m[1] is None or rank(level) > rank(m[1])
            urgent = any(k in pol.escalate_on and k not in m[3] for k in codes)
            if not (escalates or urgent):
                continue
        mem[cid] = [t, level, key, codes, p_alive]
        alerts.setdefault(cid, []).append(t)
    return alerts


def _held(h: dict[str, tuple[float, int]], sig: list[tuple[str, float]], t: int,
          hold: float) -> list[tuple[str, float]]:
    """The signals of the moment with those of the last `hold` ms, each at its largest."""
    for code, s in sig:
        old = h.get(code)
        if old is None or s >= old[0] or t - old[1] > hold:
            h[code] = (s, t)
    for code in [c for c, (_, at) in h.items() if t - at > hold]:
        del h[code]
    return [(code, s) for code, (s, _) in h.items()]


def evaluate(trace: Trace, rule: Rule,
             fixed: Sequence[list[tuple[str, float]] | None] | None = None) -> Scores:
    alerts = alerts_of(trace, rule, fixed)
    return score(alerts, trace.truth, trace.valuable_at, trace.window, trace.horizon_ms,
                 trace.valuable_days)


def fixed_of(trace: Trace, rule: Rule) -> list[list[tuple[str, float]] | None]:
    return [fixed_signals(r, rule) if len(r) > 5 else None for r in trace.rows]


def meets(s: Scores) -> bool:
    """Whether all three targets are met: 0.5 ahead, precision 0.5, median lead 14 days."""
    return (s.precision >= MIN_PRECISION and s.recall_ahead() >= 0.5
            and s.median_lead_days >= 14)


# ------------------------------------------------------------------------ logistic weights

def design(trace: Trace, rule: Rule, ahead_days: float = 0.0
           ) -> tuple[list[dict[str, float]], list[int]]:
    """Per valuable decision in the window: capped signal strengths and whether the customer
    drops out within H after it (at least `ahead_days` after it).

    The P(alive) reference is the highest P(alive) so far (no alerts reset it).
    """
    xs: list[dict[str, float]] = []
    ys: list[int] = []
    ref: dict[str, float] = {}
    cap = rule.policy.max_strength
    ahead = ahead_days * MS_PER_DAY
    for row in trace.rows:
        cid, t, tier, _, p_alive = row[:5]
        r = ref.get(cid)
        ref[cid] = p_alive if r is None else max(r, p_alive)
        if len(row) == 5 or tier < rule.policy.min_value_tier or t not in trace.window:
            continue
        silence = rule.policy.max_silence_days
        if silence is not None and row[6][_SINCE] > silence:
            continue
        x = {k: min(s, cap) for k, s in fixed_signals(row, rule)}
        if r is not None and r - p_alive >= rule.policy.p_alive_drop:
            x["p_alive_drop"] = min((r - p_alive) / rule.policy.p_alive_drop, cap)
        d = current_dropout(t, trace.truth[cid])
        y = is_right(t, d, trace.horizon_ms) and d is not None and d - t >= ahead
        xs.append(x)
        ys.append(int(y))
    return xs, ys


def fit_weights(traces: Sequence[Trace], rule: Rule, ahead_days: float = 0.0,
                c: float = 1.0) -> tuple[dict[str, float], float]:
    """Logistic regression of the label of `design` on the signals: weights (negative ones
    clipped to 0) and the intercept; a rule score of ``logit(p) - intercept`` means p."""
    from sklearn.linear_model import LogisticRegression

    codes = sorted({*rule.policy.weights} - {"p_alive_low", "long_silence"})
    X: list[list[float]] = []
    Y: list[int] = []
    for tr in traces:
        xs, ys = design(tr, rule, ahead_days)
        X += [[x.get(k, 0.0) for k in codes] for x in xs]
        Y += ys
    m = LogisticRegression(C=c, max_iter=2000).fit(X, Y)
    coef = dict(zip(codes, m.coef_[0], strict=True))
    weights = {k: max(float(v), 0.0) for k, v in coef.items()}
    return weights, float(m.intercept_[0])


#: Rule scores tried for every family of rules.
SCORES = (2.3, 2.4, 2.5, 2.6, 2.7, 2.8, 2.9, 3.0)
#: The policy before this comparison: `AlertPolicy` without the silence limit, churn 0.4, 2.9,
#: with the weights of its time (a fall in P(alive) at 0.5), the tier now only.
BEFORE = AlertPolicy(churn_threshold=0.4, min_score=2.9, max_silence_days=None,
                     weights=REWEIGHED, value_at_last_order=False)
_TRENDS_ALONE = ("engagement_drop", "p_alive_drop", "recency_gap")


def families(choice: Sequence[Trace]) -> dict[str, list[tuple[str, Rule]]]:
    """The rules compared, by family: each family's rules differ only in their rule score
    (or, for the logistic weights, the probability their score stands for)."""
    out: dict[str, list[tuple[str, Rule]]] = {}
    for churn in (0.4, 0.45, 0.5):
        for silence in (None, 90.0):
            name = f"churn {churn:g}" + (f", lapsed {silence:g}" if silence else "")
            out[name] = [(f"{name}, score {m:g}", Rule(replace(
                BEFORE, churn_threshold=churn, min_score=m, max_silence_days=silence)))
                for m in SCORES]
    experiments: dict[str, dict[str, Any]] = {
        "gap tail p <= 0.1": {"gap_alpha": 0.1},
        "gap tail p <= 0.05": {"gap_alpha": 0.05},
        "opens binomial p <= 0.05": {"open_alpha": 0.05},
        "trends only with another signal": {"lonely": _TRENDS_ALONE},
    }
    for name, kw in experiments.items():
        out[name] = [(f"{name}, score {m:g}", Rule(replace(BEFORE, min_score=m), **kw))
                     for m in SCORES]
    out["two signals"] = [(f"two signals, score {m:g}",
                           Rule(replace(BEFORE, min_score=m, min_signals=2)))
                          for m in (1.5, 2.0, 2.5, 2.9)]
    out["contact surge"] = [(f"contact surge, score {m:g}",
                             Rule(replace(BEFORE, min_score=m, contact_surge=2.0)))
                            for m in SCORES]
    weights, intercept = fit_weights(choice, Rule(BEFORE))
    fitted = {**BEFORE.weights, **weights}
    out["logistic weights"] = [
        (f"logistic weights, p {p:g}", Rule(replace(
            BEFORE, weights=fitted, min_score=max(math.log(p / (1 - p)) - intercept, 0.0))))
        for p in (0.25, 0.3, 0.35, 0.4, 0.45, 0.5)]
    print("logistic weights (fit on the choice populations): " + ", ".join(
        f"{k} {v:.2f}" for k, v in sorted(weights.items())) + f"; intercept {intercept:.2f}",
        file=sys.stderr)
    return out


def pick(rows: Mapping[str, Sequence[Scores]]) -> str | None:
    """The rule to use: among those with precision >= 0.5 on every choice population, the
    largest mean share of dropouts alerted 14 days ahead; within 0.01 of it, the lower load."""
    ok = {k: v for k, v in rows.items() if all(s.precision >= MIN_PRECISION for s in v)}
    if not ok:
        return None

    def ahead(k: str) -> float:
        return sum(s.recall_ahead() for s in ok[k]) / len(ok[k])

    best = max(ahead(k) for k in ok)
    tied = [k for k in ok if ahead(k) >= best - 0.01]
    return min(tied, key=lambda k: sum(s.load for s in ok[k]))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m load.alert_fit``: alert rules replayed from traces, chosen and held out."""
    parser = argparse.ArgumentParser(prog="python -m load.alert_fit", description=main.__doc__)
    parser.add_argument("traces", nargs="+",
                        help="pickles of `python -m load.alert_study --trace`")
    parser.add_argument("--choose", required=True,
                        help="seeds of the populations to choose on, e.g. 7,8")
    parser.add_argument("--grid", default=None, metavar="CHURN;SCORES",
                        help="instead of the families: the default policy at every churn "
                             "threshold and rule score given, e.g. '0.5,0.8;2.4,2.9'")
    parser.add_argument("--weight", action="append", default=[], metavar="CODE=W,...",
                        help="with --grid: also every weight given for this signal, e.g. "
                             "'p_alive_drop=0.5,0.7' (repeatable)")
    parser.add_argument("--hold", default=None, metavar="DAYS,...",
                        help="with --grid: also with each signal held this many days "
                             "(`Rule.hold_days`; 0: not held), e.g. '0,7,14'")
    args = parser.parse_args(argv)
    if (args.weight or args.hold) and args.grid is None:
        parser.error("--weight and --hold go with --grid")
    weights: dict[str, list[float]] = {}
    for spec in args.weight:
        code, _, ws = spec.partition("=")
        try:
            weights[code.strip()] = [float(x) for x in ws.split(",")]
        except ValueError:
            parser.error(f"--weight {spec!r} is not CODE=W,...")
        if code.strip() not in AlertPolicy().weights:
            parser.error(f"--weight {spec!r}: no signal {code.strip()!r}")
    try:
        holds = [None if float(x) == 0 else float(x)
                 for x in (args.hold or "0").split(",")]
    except ValueError:
        parser.error(f"--hold {args.hold!r} is not DAYS,...")
    traces = [load(p) for p in args.traces]
    choice_seeds = {int(x) for x in args.choose.split(",")}
    choice = [t for t in traces if t.seed in choice_seeds]
    held = [t for t in traces if t.seed not in choice_seeds]
    if not choice:
        parser.error("no trace of the choice seeds")
    print(f"choice: seeds {sorted(choice_seeds)}; held out: {[t.seed for t in held]}",
          file=sys.stderr)
    if args.grid is not None:
        try:
            churns, scores = ([float(x) for x in part.split(",")]
                              for part in args.grid.split(";"))
        except ValueError:
            parser.error(f"--grid {args.grid!r} is not CHURN,...;SCORE,...")
        print_grid(traces, choice, grid(churns, scores, weights, holds))
        return 0
    picks: dict[str, tuple[str, Rule]] = {}
    everything: dict[str, tuple[Rule, list[Scores]]] = {}
    for family, rules in families(choice).items():
        rows: dict[str, list[Scores]] = {}
        cache: dict[int, list[list[tuple[str, float]] | None]] = {}
        for name, rule in rules:
            rows[name] = []
            for t in choice:
                if t.seed not in cache:
                    cache[t.seed] = fixed_of(t, rule)
                rows[name].append(evaluate(t, rule, cache[t.seed]))
            everything[name] = (rule, rows[name])
        chosen = pick(rows)
        if chosen is not None:
            picks[family] = (chosen, next(r for n, r in rules if n == chosen))
    overall = pick({k: v for k, (_, v) in everything.items()})
    print(f"chosen on the choice seeds: {overall}", file=sys.stderr)
    print("| rule | " + " | ".join(f"seed {t.seed}{'' if t in held else ' (choice)'}"
                                   for t in traces) + " |")
    print("|---|" + "---|" * len(traces))
    shown = {"before: " + BEFORE_NAME: Rule(BEFORE)}
    shown.update({("**" if name == overall else "") + name + ("**" if name == overall else ""):
                  rule for name, rule in picks.values()})
    for name, rule in shown.items():
        cells = []
        for t in traces:
            cells.append(_cell(evaluate(t, rule)))
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


def _cell(s: Scores) -> str:
    """A table cell: share ahead at precision, median lead; a tick where all targets are met."""
    return (f"{s.recall_ahead():.3f} at {s.precision:.3f}, {s.median_lead_days:.0f} d"
            f"{' ✓' if meets(s) else ''}")


def grid(churns: Sequence[float], scores: Sequence[float],
         weights: Mapping[str, Sequence[float]] | None = None,
         holds: Sequence[float | None] = (None,)) -> list[tuple[str, Rule]]:
    """The default policy (`AlertPolicy()`) at every churn threshold and rule score given, and
    at every weight given for each signal in `weights` and every `Rule.hold_days` in `holds`.

    >>> [name for name, _ in grid([0.5, 0.8], [2.4])]
    ['churn 0.5, score 2.4', 'churn 0.8, score 2.4']
    >>> [name for name, _ in grid([0.5], [2.5], {"p_alive_drop": [0.5, 0.7]}, [None, 7.0])]
    ... # doctest: +NORMALIZE_WHITESPACE
    ['churn 0.5, score 2.5, p_alive_drop 0.5', 'churn 0.5, score 2.5, p_alive_drop 0.5, held 7 d',
     'churn 0.5, score 2.5, p_alive_drop 0.7', 'churn 0.5, score 2.5, p_alive_drop 0.7, held 7 d']
    """
    base = AlertPolicy()
    tried: list[list[tuple[str, float]]] = [[]]
    for code, ws in (weights or {}).items():
        tried = [[*done, (code, w)] for done in tried for w in ws]
    out = []
    for c in churns:
        for m in scores:
            for ws in tried:
                policy = replace(base, churn_threshold=c, min_score=m,
                                 weights={**base.weights, **dict(ws)})
                for hold in holds:
                    name = ", ".join([f"churn {c:g}", f"score {m:g}",
                                      *(f"{code} {w:g}" for code, w in ws),
                                      *([f"held {hold:g} d"] if hold is not None else [])])
                    out.append((name, Rule(policy, hold_days=hold)))
    return out


def print_grid(traces: Sequence[Trace], choice: Sequence[Trace],
               rules: Sequence[tuple[str, Rule]]) -> None:
    """Every rule on every trace, and the one `pick` takes on the `choice` traces."""
    print("| rule | " + " | ".join(f"seed {t.seed}{' (choice)' if t in choice else ''}"
                                   for t in traces) + " |")
    print("|---|" + "---|" * len(traces))
    rows: dict[str, list[Scores]] = {}
    for name, rule in rules:
        cells, mine = [], []
        for t in traces:
            s = evaluate(t, rule)
            if t in choice:
                mine.append(s)
            cells.append(_cell(s))
        rows[name] = mine
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    print(f"chosen on the choice seeds: {pick(rows)}", file=sys.stderr)


#: How `BEFORE` is named in the tables.
BEFORE_NAME = "score 2.9, churn 0.4 (no silence limit)"

__all__ = ["BEFORE", "Rule", "Trace", "alerts_of", "evaluate", "fit_weights", "grid", "load",
           "pick", "print_grid"]

if __name__ == "__main__":
    raise SystemExit(main())
