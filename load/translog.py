"""A CDNOW-style transaction log drawn from known BG/NBD and Gamma-Gamma parameters (days).

Each line is ``customer_id date amount``, whitespace-separated, dates ``YYYYMMDD``, sorted by
customer and then date like the CDNOW master file (so a replay has to sort it by time). The
population, per customer:

* **acquisition**: the first purchase at a time uniform over the first ``acquisition_days``
  days after ``start`` (CDNOW's cohort was acquired over 12 weeks);
* **purchases (BG/NBD)**: ``lambda ~ Gamma(r, rate alpha)`` per day and ``p ~ Beta(a, b)``;
  while alive the customer buys as a Poisson process of rate ``lambda``, and after every
  repeat purchase drops out with probability ``p`` (nobody drops out at the first purchase);
  purchases stop at ``start + days``;
* **spend (Gamma-Gamma)**: ``nu ~ Gamma(q, rate v)`` per customer and each transaction's
  amount ``~ Gamma(p, rate nu)``, rounded to cents (at least 0.01).

Purchases happen in continuous time and the log keeps their dates only; two purchases on one
day are two lines. The engine counts purchase *days*, so such pairs count once: with the
default parameters that loses about 1.7% of the repeat purchases (mostly of the heaviest
buyers) and biases a day-level fit of ``alpha`` up by about 5%; see `TranslogConfig`.

Deterministic: the same config and seed give the same file, byte for byte.

Examples
--------
>>> config = TranslogConfig(n_customers=3, seed=1)
>>> lines = log_lines(config)
>>> lines == log_lines(config), lines[0].split()[0]
(True, '00001')
>>> truth(config)["bgnbd"]
{'r': 2.0, 'alpha': 80.0, 'a': 0.5, 'b': 2.0}
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from stream_app.domain.clv import BgNbdParams, GammaGammaParams

__all__ = [
    "TRUE_BGNBD",
    "TRUE_GAMMA_GAMMA",
    "Purchase",
    "TranslogConfig",
    "log_lines",
    "main",
    "simulate",
    "truth",
    "write_log",
]

#: BG/NBD parameters of the default population, rates per day: a purchase every 40 days on
#: average while alive, 20% mean dropout probability after each repeat purchase. Chosen so
#: that a 39-week calibration identifies all four parameters well (see the e2e test).
TRUE_BGNBD = BgNbdParams(r=2.0, alpha=80.0, a=0.5, b=2.0)
#: Gamma-Gamma parameters of the default population (CDNOW's, FHL 2005): mean spend ~35.
TRUE_GAMMA_GAMMA = GammaGammaParams(p=6.25, q=3.74, v=15.44)


@dataclass(frozen=True)
class TranslogConfig:
    """What to simulate: population size, seed, calendar and the true parameters."""

    n_customers: int = 10_000
    seed: int = 42
    start: date = date(1997, 1, 1)
    #: Customers are acquired uniformly over this many days from ``start``.
    acquisition_days: int = 84
    #: Length of the log in days from ``start`` (78 weeks: 39-week calibration + 39 holdout).
    days: int = 546
    bg: BgNbdParams = field(default_factory=lambda: TRUE_BGNBD)
    gg: GammaGammaParams = field(default_factory=lambda: TRUE_GAMMA_GAMMA)

    def __post_init__(self) -> None:
        if self.n_customers < 1:
            raise ValueError(f"n_customers={self.n_customers} must be at least 1")
        if not 0 < self.acquisition_days <= self.days:
            raise ValueError(f"need 0 < acquisition_days <= days, got "
                             f"{self.acquisition_days} and {self.days}")


@dataclass(frozen=True, slots=True)
class Purchase:
    """One line of the log; ``day`` counts days from ``TranslogConfig.start``."""

    customer: int
    day: int
    amount: float


def simulate(config: TranslogConfig) -> list[Purchase]:
    """Every purchase of the population, sorted by customer and day."""
    rng = np.random.default_rng(config.seed)
    n = config.n_customers
    bg, gg = config.bg, config.gg
    lam = rng.gamma(bg.r, 1.0 / bg.alpha, n)
    p = rng.beta(bg.a, bg.b, n)
    # Number of repeat purchases until the dropout (the dropout follows the J-th one).
    repeats = rng.geometric(np.clip(p, 1e-12, 1.0))
    nu = rng.gamma(gg.q, 1.0 / gg.v, n)
    first = rng.uniform(0.0, config.acquisition_days, n)
    end = float(config.days)
    out: list[Purchase] = []
    for i in range(n):
        times = [first[i]]
        t = first[i]
        for _ in range(int(min(repeats[i], 1_000_000))):
            t += rng.exponential(1.0 / lam[i])
            if t >= end:
                break
            times.append(t)
        amounts = rng.gamma(gg.p, 1.0 / nu[i], len(times))
        out.extend(
            Purchase(i + 1, int(when), max(round(float(amount), 2), 0.01))
            for when, amount in zip(times, amounts, strict=True)
        )
    return out


def log_lines(config: TranslogConfig) -> list[str]:
    """The log as text lines (without newlines): ``customer_id YYYYMMDD amount``."""
    width = max(5, len(str(config.n_customers)))
    return [
        f"{p.customer:0{width}d} {(config.start + timedelta(days=p.day)):%Y%m%d} {p.amount:.2f}"
        for p in simulate(config)
    ]


def truth(config: TranslogConfig) -> dict[str, Any]:
    """The true parameters and the calendar of a config, as JSON-ready values."""
    return {
        "bgnbd": asdict(config.bg),
        "gamma_gamma": asdict(config.gg),
        "time_unit": "days",
        "n_customers": config.n_customers,
        "seed": config.seed,
        "start": config.start.isoformat(),
        "acquisition_days": config.acquisition_days,
        "days": config.days,
        "end": (config.start + timedelta(days=config.days)).isoformat(),
    }


def write_log(path: str | Path, config: TranslogConfig) -> dict[str, Any]:
    """Write the log of `config` to `path`; return `truth(config)` plus the line count."""
    lines = log_lines(config)
    Path(path).write_text("\n".join(lines) + "\n", encoding="ascii")
    return {**truth(config), "lines": len(lines)}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m load.translog``: write a log and print its true parameters as JSON."""
    d = TranslogConfig()
    parser = argparse.ArgumentParser(prog="python -m load.translog", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=d.n_customers)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--out", required=True, help="file to write")
    parser.add_argument("--start", type=date.fromisoformat, default=d.start,
                        help="first day of the log (YYYY-MM-DD)")
    parser.add_argument("--days", type=int, default=d.days, help="length of the log in days")
    parser.add_argument("--acquisition-days", type=int, default=d.acquisition_days)
    parser.add_argument("--truth", default=None, help="also write the true parameters (JSON)")
    for name, value in (*asdict(d.bg).items(), *(("gg_" + k, v) for k, v in asdict(d.gg).items())):
        parser.add_argument(f"--{name.replace('_', '-')}", type=float, default=value,
                            help=f"true {'Gamma-Gamma' if name.startswith('gg_') else 'BG/NBD'} "
                                 f"{name.removeprefix('gg_')} (default {value})")
    args = parser.parse_args(argv)
    config = TranslogConfig(
        n_customers=args.customers, seed=args.seed, start=args.start, days=args.days,
        acquisition_days=args.acquisition_days,
        bg=BgNbdParams(r=args.r, alpha=args.alpha, a=args.a, b=args.b),
        gg=GammaGammaParams(p=args.gg_p, q=args.gg_q, v=args.gg_v),
    )
    doc = write_log(args.out, config)
    text = orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode()
    if args.truth:
        Path(args.truth).write_text(text + "\n")
    print(text)
    print(f"wrote {doc['lines']:,} purchases of {config.n_customers:,} customers to {args.out}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
