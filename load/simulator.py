"""A synthetic customer population whose ground truth is known, streamed in event-time order.

The process, per customer (rates are per day, times are days since ``SimConfig.start``):

* **Acquisition.** Acquisition times are uniform over the first ``acquisition_days`` days and
  sorted, so ``C0000001`` is the first customer acquired. The acquisition is the customer's first
  order (time zero of BG/NBD). Each customer has an acquisition channel (web, store, app,
  marketplace, referral) whose `Channel` scales the population parameters below.
* **Purchases (BG/NBD).** ``lambda ~ Gamma(r, rate=alpha / rate_scale)``,
  ``p ~ Beta(a * dropout_scale, b)``. While alive the customer buys as a Poisson process of rate
  ``lambda``; after every *repeat* purchase they become inactive with probability ``p`` (the
  standard BG/NBD assumption: nobody drops out at the first purchase). Equivalently, and this is
  how it is sampled: the number of repeat purchases ``J ~ Geometric(p)`` on 1, 2, ...; the true
  dropout is the ``J``-th repeat purchase, at ``start + Gamma(J, lambda)``; the ``J - 1`` purchases
  before it are uniform on the period (order statistics of a Poisson process given its ``J``-th
  arrival). Knowing the dropout time in advance is what lets contacts and touches react to it.
* **Spend (Gamma-Gamma).** ``nu ~ Gamma(q, rate=gamma * spend_scale)``, each order's value
  ``~ Gamma(p, rate=nu)`` (``SimConfig.p`` is the Gamma-Gamma shape, not the dropout probability).
  Cost of goods comes from a per-customer margin; ``return_share`` of orders are refunded
  (``kind="return"``) 1 to ~30 days later, wholly or partly. Returns may fall after the dropout:
  they refund an earlier order and are not BG/NBD purchases.
* **Service contacts** arrive at ``contact_rate`` times a per-customer propensity. In the last
  ``warning_days`` before a dropout a ramp goes from 0 to 1 and raises the contact rate (up to
  ``1 + contact_boost`` times), the share of complaints and cancellation requests, the share left
  unresolved, and lowers sentiment. After the dropout contacts are rarer.
* **Campaign touches** are sent at ``touch_rate`` to every acquired customer until they
  unsubscribe: ``sent`` then ``bounced`` or ``delivered``, maybe ``opened``, ``clicked``,
  ``unsubscribed``. Opening and clicking fall with the same ramp and are low after the dropout. A
  purchase within ``attribution_days`` of a click is reported as ``converted`` (at the purchase
  time) with the customer's conversion propensity; conversions never create purchases.
* **Win-back.** After a dropout, a customer comes back after ``Exp(winback_rate * propensity)``
  days (propensity = conversion propensity / its mean). The return is a win-back touch chain
  (sent, delivered, opened, clicked, then ``converted`` at the same instant as an order). That
  order starts a new BG/NBD alive period with the same ``lambda`` and ``p`` (a fresh ``J``), like
  a new acquisition, so within every alive period the BG/NBD truth holds. At most
  ``max_winbacks`` times per customer; ``winback_rate=0`` gives a pure BG/NBD population.

Randomness: the population (parameters, alive periods) comes from one numpy Generator and the
events from another, both spawned from ``SeedSequence(seed)``; `ground_truth` draws only the first,
so it is cheap and agrees with `simulate` exactly. Events are produced window by window
(`SimConfig.window`): every customer's next purchase, contact, touch and win-back time is held in
numpy arrays, all triggers due in the window are drawn vectorised, and the window's events are
sorted and yielded. Follow-ups that fall later (returns, opens, conversions) wait in a heap. Memory
is O(customers + one window of events), never O(events). Times are whole milliseconds. The window
length changes the order of the random draws, so it is part of what a seed reproduces.

Examples
--------
>>> config = SimConfig(n_customers=50, days=60, seed=7)
>>> events = list(simulate(config))
>>> events == list(simulate(config))
True
>>> all(a.occurred_at <= b.occurred_at for a, b in zip(events, events[1:]))
True
>>> first = events[0]
>>> first.topic_kind, first.customer_id, first.payload["kind"]
('purchase', 'C0000001', 'order')
>>> truth = next(ground_truth(config))
>>> truth["acquired_at"] == first.payload["occurred_at"]
True
"""

from __future__ import annotations

import argparse
import heapq
import math
import resource
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson

__all__ = [
    "CONTACT_CHANNELS",
    "CONTACT_REASONS",
    "DEFAULT_CHANNELS",
    "MS_PER_DAY",
    "TOUCH_ACTIONS",
    "TOUCH_CHANNELS",
    "Channel",
    "SimConfig",
    "SimEvent",
    "SimulationError",
    "customer_id",
    "ground_truth",
    "simulate",
    "write_events",
    "write_ground_truth",
]

MS_PER_DAY = 86_400_000
EVENT_KINDS = ("purchase", "service_contact", "campaign_touch")
CONTACT_CHANNELS = ("phone", "email", "chat", "store", "other")
CONTACT_REASONS = ("billing", "complaint", "technical", "cancellation_request", "inquiry", "other")
TOUCH_CHANNELS = ("email", "sms", "push", "mail", "call", "ad")
TOUCH_ACTIONS = ("sent", "delivered", "opened", "clicked", "converted", "unsubscribed", "bounced")
SALES_CHANNELS = ("web", "store", "app", "marketplace")
CATEGORIES = ("apparel", "home", "electronics", "beauty", "grocery", "toys", "sports", "books")
#: The latent taste models of `SimConfig.category_tastes`.
CATEGORY_TASTES = ("retail", "clusters")


class SimulationError(ValueError):
    """A simulation setting that cannot be used."""


@dataclass(frozen=True)
class Channel:
    """An acquisition channel: its share of customers and how it scales the population parameters.

    ``rate_scale`` multiplies the mean purchase rate, ``dropout_scale`` the Beta ``a`` of the
    dropout probability, ``spend_scale`` the mean order value; ``margin`` is the mean gross margin
    and ``conversion_scale`` multiplies the campaign click and conversion propensities.
    """

    name: str
    share: float
    rate_scale: float = 1.0
    dropout_scale: float = 1.0
    spend_scale: float = 1.0
    margin: float = 0.35
    conversion_scale: float = 1.0


DEFAULT_CHANNELS = (
    Channel("web", 0.40, 1.0, 1.0, 1.0, 0.35, 1.0),
    Channel("store", 0.25, 0.8, 0.8, 1.25, 0.40, 0.7),
    Channel("app", 0.15, 1.5, 0.8, 0.8, 0.35, 1.3),
    Channel("marketplace", 0.12, 0.8, 1.6, 0.9, 0.20, 0.6),
    Channel("referral", 0.08, 1.1, 0.6, 1.1, 0.38, 1.2),
)

# Where customers of an acquisition channel buy, get in touch and are reached; rows follow
# SALES_CHANNELS, CONTACT_CHANNELS and TOUCH_CHANNELS. Unknown channel names use the web row.
_SALES_MIX = {
    "web": (0.85, 0.05, 0.10, 0.0),
    "store": (0.20, 0.80, 0.0, 0.0),
    "app": (0.15, 0.0, 0.85, 0.0),
    "marketplace": (0.10, 0.0, 0.0, 0.90),
    "referral": (0.60, 0.0, 0.40, 0.0),
}
_CONTACT_MIX = {
    "web": (0.30, 0.30, 0.35, 0.0, 0.05),
    "store": (0.35, 0.15, 0.10, 0.35, 0.05),
    "app": (0.20, 0.20, 0.55, 0.0, 0.05),
    "marketplace": (0.20, 0.40, 0.30, 0.0, 0.10),
    "referral": (0.30, 0.30, 0.35, 0.0, 0.05),
}
_TOUCH_MIX = {
    "web": (0.55, 0.10, 0.05, 0.05, 0.02, 0.23),
    "store": (0.40, 0.15, 0.02, 0.20, 0.05, 0.18),
    "app": (0.30, 0.08, 0.45, 0.02, 0.01, 0.14),
    "marketplace": (0.35, 0.05, 0.05, 0.03, 0.02, 0.50),
    "referral": (0.55, 0.10, 0.10, 0.05, 0.02, 0.18),
}
# Reason mix far from a dropout, right at it (ramp = 1) and after it; rows follow CONTACT_REASONS.
_REASONS_CALM = np.array([0.20, 0.08, 0.15, 0.02, 0.47, 0.08])
_REASONS_LEAVING = np.array([0.15, 0.38, 0.10, 0.22, 0.10, 0.05])
_REASONS_GONE = np.array([0.25, 0.10, 0.05, 0.15, 0.35, 0.10])
_CONTACT_COST = np.array([6.5, 3.0, 2.2, 8.0, 4.0])  # mean cost to serve per contact channel
_TOUCH_COST = (0.01, 0.03, 0.01, 0.65, 3.0, 0.05)  # cost of a send per touch channel
_TOUCH_OPEN = np.array([1.0, 1.6, 1.0, 0.8, 1.2, 0.3])  # open propensity per touch channel
_TOUCH_BOUNCE = np.array([0.02, 0.015, 0.0, 0.01, 0.0, 0.0])
_CONV_MEAN = 0.25  # mean of the Beta(2, 6) conversion propensity
_GONE_CONTACT = 0.25  # contact rate after a dropout, relative to the calm rate


@dataclass(frozen=True)
class SimConfig:
    """Everything that defines a simulated population; the same config gives the same events.

    Defaults describe a typical retailer: about one purchase a month while active
    (``r / alpha = 1/30``), a mean dropout probability of 0.15 per repeat purchase and a mean order
    of about 60 USD (``p * gamma / (q - 1)``).

    ``precursors`` chooses how customers defect. False (the classic process): the dropout is a
    purchase, purchases keep their pace and size until it, and only contacts and touches react,
    over the last ``warning_days``. True (defection with precursors, as the churn literature
    describes it): satisfaction declines over the last ``decline_days`` of an alive period, along
    a ramp from 0 to 1 that drives more contacts, complaints, cancellation requests and unresolved
    issues, more negative sentiment, fewer opens and clicks and more unsubscribes (up to
    ``decline_unsubscribe`` per touch), and also longer gaps (up to ``decline_thinning`` of the
    orders in the decline are never placed, the one at the dropout included) and smaller baskets
    (order values fall by up to ``decline_basket``); ``silent_share`` of alive periods end without
    any warning (no ramp at all). The dropout time is the same in both: only the events around it
    differ.
    """

    n_customers: int = 10_000
    seed: int = 42
    start: datetime = datetime(2025, 1, 1, tzinfo=UTC)
    days: int = 365
    acquisition_days: int = 180
    r: float = 1.5
    alpha: float = 45.0
    a: float = 1.2
    b: float = 7.0
    p: float = 6.0
    q: float = 4.0
    gamma: float = 30.0
    contact_rate: float = 1 / 60
    contact_boost: float = 3.0
    touch_rate: float = 1 / 14
    return_share: float = 0.05
    currency: str = "USD"
    warning_days: float = 45.0
    attribution_days: float = 7.0
    winback_rate: float = 0.0008
    max_winbacks: int = 2
    window_days: float | None = None
    channels: tuple[Channel, ...] = field(default=DEFAULT_CHANNELS)
    # 0: order lines draw the 8 CATEGORIES uniformly. n > 0: n categories drawn from latent
    # customer preferences, cross-category journeys and repurchase cycles (`category_model`).
    product_categories: int = 0
    # How heterogeneous the latent tastes are (`category_model`): "retail" (each customer's own
    # Dirichlet over their segment's category shares, per-category repurchase cycles in days) or
    # "clusters" (a mix of 6 taste clusters and the customer's own taste; the first model).
    category_tastes: str = "retail"
    precursors: bool = False
    decline_days: float = 60.0
    silent_share: float = 0.2
    decline_thinning: float = 0.6
    decline_basket: float = 0.4
    decline_unsubscribe: float = 0.04

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.start.utcoffset() is None:
            raise SimulationError(f"start={self.start!r} must be timezone-aware")
        if self.n_customers < 0 or self.days < 1 or self.acquisition_days < 0:
            raise SimulationError("n_customers >= 0, days >= 1 and acquisition_days >= 0 needed")
        if self.window_days is not None and not self.window_days > 0:
            raise SimulationError(f"window_days={self.window_days} must be positive")
        for name in ("r", "alpha", "a", "b", "p", "q", "gamma"):
            if not getattr(self, name) > 0:
                raise SimulationError(f"{name}={getattr(self, name)} must be positive")
        for name in ("contact_rate", "contact_boost", "touch_rate", "winback_rate", "warning_days",
                     "decline_days", "decline_unsubscribe"):
            if getattr(self, name) < 0:
                raise SimulationError(f"{name}={getattr(self, name)} must not be negative")
        if not 0 <= self.return_share <= 1:
            raise SimulationError(f"return_share={self.return_share} must be within 0..1")
        for name in ("silent_share", "decline_thinning", "decline_basket"):
            if not 0 <= getattr(self, name) <= 1:
                raise SimulationError(f"{name}={getattr(self, name)} must be within 0..1")
        if self.max_winbacks < 0:
            raise SimulationError(f"max_winbacks={self.max_winbacks} must not be negative")
        if self.category_tastes not in CATEGORY_TASTES:
            raise SimulationError(f"category_tastes={self.category_tastes!r} is not one of "
                                  f"{CATEGORY_TASTES}")
        if not self.channels or sum(c.share for c in self.channels) <= 0:
            raise SimulationError("channels need at least one positive share")
        if len(self.currency) != 3 or not self.currency.isalpha() or not self.currency.isupper():
            raise SimulationError(f"currency={self.currency!r} is not an ISO 4217 code")

    @property
    def window(self) -> float:
        """Days simulated per step: ``window_days``, or by default 1 day up to 25,000 customers,
        shrinking to 0.1 day at 250,000 and more; a window then holds at most about 6,000 events
        (20,000 at a million customers), which bounds the memory of the stream.

        >>> SimConfig(n_customers=1_000_000).window
        0.1
        """
        if self.window_days is not None:
            return self.window_days
        return min(1.0, max(0.1, 25_000 / max(self.n_customers, 1)))

    def bgnbd_params(self, channel: str) -> tuple[float, float, float, float]:
        """Return the ``(r, alpha, a, b)`` that customers of acquisition ``channel`` are drawn from.

        >>> SimConfig().bgnbd_params("web")
        (1.5, 45.0, 1.2, 7.0)
        """
        c = self._channel(channel)
        return (self.r, self.alpha / c.rate_scale, self.a * c.dropout_scale, self.b)

    def gamma_gamma_params(self, channel: str) -> tuple[float, float, float]:
        """Return the ``(p, q, gamma)`` of the spend of customers acquired through ``channel``."""
        c = self._channel(channel)
        return (self.p, self.q, self.gamma * c.spend_scale)

    def _channel(self, name: str) -> Channel:
        for c in self.channels:
            if c.name == name:
                return c
        raise SimulationError(f"unknown channel {name!r}")


@dataclass(frozen=True, slots=True)
class SimEvent:
    """One simulated event: the payload is exactly the contract's JSON object for ``topic_kind``."""

    topic_kind: str
    customer_id: str
    occurred_at: datetime
    payload: dict[str, Any]


def customer_id(index: int) -> str:
    """Return the id of the customer at zero-based ``index`` (acquisition order).

    >>> customer_id(122)
    'C0000123'
    """
    return f"C{index + 1:07d}"


class _Clock:
    """Turns milliseconds since the start into aware datetimes and RFC 3339 ``Z`` strings."""

    _MS = timedelta(milliseconds=1)

    def __init__(self, start: datetime) -> None:
        self.aware = start.astimezone(UTC)
        self.base = np.datetime64(self.aware.replace(tzinfo=None), "ms")

    def texts(self, ms: np.ndarray) -> list[str]:
        """Vectorised: about four times faster than ``datetime.isoformat`` per event."""
        moments = self.base + ms.astype("timedelta64[ms]")
        return np.datetime_as_string(moments, unit="ms", timezone="UTC").tolist()

    def text(self, ms: int) -> str:
        return self.texts(np.array([ms], dtype=np.int64))[0]

    def moment(self, ms: int) -> datetime:
        return self.aware + self._MS * ms


def _ms(t: float) -> int:
    return math.floor(t * MS_PER_DAY)


@dataclass
class _Population:
    """Per-customer parameters and alive periods: everything `ground_truth` reports."""

    acquired: np.ndarray
    channel: np.ndarray  # index into config.channels
    lam: np.ndarray
    p: np.ndarray
    nu: np.ndarray
    margin: np.ndarray
    engagement: np.ndarray
    conversion: np.ndarray
    contact: np.ndarray
    pstart: np.ndarray  # (n, K): start of alive period k, inf if none
    pend: np.ndarray  # (n, K): true dropout of period k (may lie past the horizon)
    pj: np.ndarray  # (n, K): repeat purchases of period k, the last one being the dropout
    wbsend: np.ndarray  # (n, K): when the win-back touch that opens period k is sent
    silent: np.ndarray  # (n, K): period k ends without warning (only with precursors)


def _population(config: SimConfig, seq: np.random.SeedSequence) -> _Population:
    rng = np.random.default_rng(seq)
    n = config.n_customers
    horizon = float(config.days)
    acquired = np.sort(rng.uniform(0.0, float(min(config.acquisition_days, config.days)), n))
    shares = np.array([c.share for c in config.channels], dtype=float)
    channel = rng.choice(len(shares), size=n, p=shares / shares.sum()).astype(np.int8)

    def per(attr: str) -> np.ndarray:
        return np.array([getattr(c, attr) for c in config.channels], dtype=float)[channel]

    lam = np.maximum(rng.gamma(config.r, 1.0, n) * per("rate_scale") / config.alpha, 1e-12)
    p = np.clip(rng.beta(config.a * per("dropout_scale"), config.b), 1e-9, 1.0)
    nu = rng.gamma(config.q, 1.0, n) / (config.gamma * per("spend_scale"))
    mean_margin = np.clip(per("margin"), 0.01, 0.99)
    margin = rng.beta(40.0 * mean_margin, 40.0 * (1.0 - mean_margin))
    engagement = rng.beta(2.0, 5.0, n)
    conversion = np.clip(rng.beta(2.0, 6.0, n) * per("conversion_scale"), 0.0, 0.95)
    contact = rng.gamma(2.0, 0.5, n)

    k_max = config.max_winbacks + 1
    pstart = np.full((n, k_max), np.inf)
    pend = np.full((n, k_max), np.inf)
    pj = np.zeros((n, k_max), dtype=np.int64)
    wbsend = np.full((n, k_max), np.inf)
    hazard = config.winback_rate * conversion / _CONV_MEAN
    start = acquired
    active = np.ones(n, dtype=bool)
    for k in range(k_max):
        j = rng.geometric(p)
        end = start + rng.gamma(j.astype(float), 1.0) / lam
        pstart[active, k] = start[active]
        pend[active, k] = end[active]
        pj[active, k] = j[active]
        if k + 1 == k_max:
            break
        with np.errstate(divide="ignore"):
            gap = rng.exponential(1.0, n) / hazard
        delay = rng.exponential(1.5, n)
        back = end + gap
        active = active & (end < horizon) & (back < horizon)
        wbsend[active, k + 1] = (back - np.minimum(delay, 0.8 * gap))[active]
        start = back
    # drawn last, and only with precursors, so the classic population is unchanged by them
    if config.precursors:
        silent = rng.random((n, k_max)) < config.silent_share
    else:
        silent = np.zeros((n, k_max), dtype=bool)
    return _Population(
        acquired, channel, lam, p, nu, margin, engagement, conversion, contact, pstart, pend, pj,
        wbsend, silent,
    )


def _seeds(config: SimConfig) -> tuple[np.random.SeedSequence, np.random.SeedSequence]:
    population, events = np.random.SeedSequence(config.seed).spawn(2)
    return population, events


def _mix(config: SimConfig, table: dict[str, tuple[float, ...]]) -> np.ndarray:
    """Cumulative mix per acquisition channel, shape (channels, options)."""
    rows = np.array([table.get(c.name, table["web"]) for c in config.channels], dtype=float)
    return np.cumsum(rows / rows.sum(axis=1, keepdims=True), axis=1)


def _due(times: np.ndarray, before: float) -> np.ndarray | None:
    """Indices with ``times < before``, or None; the min is ten times cheaper than the scan."""
    if times.size == 0 or times.min() >= before:
        return None
    return np.flatnonzero(times < before)


def _pick(cum: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Index of the option drawn by uniforms ``u`` from cumulative probabilities ``cum`` (rows)."""
    return np.minimum((cum < u[:, None]).sum(axis=1), cum.shape[1] - 1)


class _Run:
    """The window-by-window state machine behind `simulate`."""

    def __init__(self, config: SimConfig) -> None:
        pop_seq, event_seq = _seeds(config)
        self.config = config
        self.pop = pop = _population(config, pop_seq)
        self.rng = rng = np.random.default_rng(event_seq)
        self.clock = _Clock(config.start)
        self.end_ms = config.days * MS_PER_DAY
        self.seed = config.seed
        n = config.n_customers
        self.k_max = config.max_winbacks + 1
        self.sales_cum = _mix(config, _SALES_MIX)
        self.contact_cum = _mix(config, _CONTACT_MIX)
        self.touch_cum = _mix(config, _TOUCH_MIX)
        self.channel_names = [c.name for c in config.channels]
        self.click_scale = np.array([c.conversion_scale for c in config.channels])[pop.channel]

        # Purchases: ``left`` >= 0 intermediate purchases remain after the scheduled one, -1 the
        # scheduled one is the dropout, -2 it opens period ``buy_k`` (acquisition or win-back).
        self.next_buy = pop.acquired.copy()
        self.left = np.full(n, -2, dtype=np.int64)
        self.buy_k = np.zeros(n, dtype=np.int64)
        with np.errstate(divide="ignore"):
            self.contact_max = config.contact_rate * pop.contact * (1.0 + config.contact_boost)
            self.next_contact = pop.acquired + rng.exponential(1.0, n) / self.contact_max
            self.next_touch = pop.acquired + rng.exponential(1.0, n) / config.touch_rate
        self.wb_k = np.ones(n, dtype=np.int64)
        self.next_wb = pop.wbsend[:, 1].copy() if self.k_max > 1 else np.full(n, np.inf)
        self.unsubscribed = np.zeros(n, dtype=bool)
        self.click_at = np.full(n, -np.inf)
        self.click_code = np.zeros(n, dtype=np.int64)  # week * len(TOUCH_CHANNELS) + channel
        self.counter = [0] * n  # events drawn per customer: the last part of the event id
        self.seq = 0
        self.window_end_ms = 0
        # Pending events as flat tuples (ms, seq, kind, customer, n, *fields): a few hundred
        # bytes each, a third of a payload dict; payloads are built as the events are yielded.
        self.ready: list[tuple[Any, ...]] = []
        self.later: list[tuple[Any, ...]] = []
        self.categories: CategoryModel | None = None
        self.category_names: Sequence[str] = CATEGORIES
        if config.product_categories:
            self.categories = category_model(config)
            self.category_names = self.categories.names
            self.category_rng = np.random.default_rng([config.seed, 7_032])
            self.last_category = np.full(n, -1, dtype=np.int64)
            # The day each customer last bought each category (-inf: never), for the cycles.
            self.category_day = (np.full((n, len(self.category_names)), -np.inf)
                                 if self.categories.cycles is not None else None)

    # -- output ------------------------------------------------------------------------------

    def _number(self, i: int) -> int:
        n = self.counter[i]
        self.counter[i] = n + 1
        return n

    def _push(self, item: tuple[Any, ...]) -> None:
        if item[0] < self.window_end_ms:
            self.ready.append(item)
        else:
            heapq.heappush(self.later, item)

    def _order(self, ms: int, i: int, kind: str, cents: int, cost: int | None, sales: int,
               items: list[dict[str, Any]] | None) -> None:
        if ms < self.end_ms:
            self.seq += 1
            self._push((ms, self.seq, 0, i, self._number(i), kind, cents, cost, sales, items))

    def _contact(self, ms: int, i: int, channel: int, reason: int, cost: int, resolved: bool,
                 sentiment: float | None) -> None:
        if ms < self.end_ms:
            self.seq += 1
            self._push((ms, self.seq, 1, i, self._number(i), channel, reason, cost, resolved,
                        sentiment))

    def _touch(self, ms: int, i: int, campaign: str, channel: int, action: str,
               cost: int) -> None:
        if ms < self.end_ms:
            self.seq += 1
            self._push((ms, self.seq, 2, i, self._number(i), campaign, channel, action, cost))

    def _payloads(self, ready: list[tuple[Any, ...]]) -> Iterator[SimEvent]:
        """Turn a sorted window of pending tuples into events."""
        seed, currency, clock = self.seed, self.config.currency, self.clock
        moment = clock.moment
        ms_all = np.fromiter((item[0] for item in ready), dtype=np.int64, count=len(ready))
        for item, text in zip(ready, clock.texts(ms_all), strict=True):
            kind = item[2]
            cid = customer_id(item[3])
            payload: dict[str, Any]
            if kind == 2:
                payload = {
                    "event_id": f"{seed}-{cid}-{item[4]}", "customer_id": cid,
                    "occurred_at": text, "campaign_id": item[5],
                    "channel": TOUCH_CHANNELS[item[6]], "action": item[7], "cost": item[8] / 100,
                }
            elif kind == 1:
                payload = {
                    "event_id": f"{seed}-{cid}-{item[4]}", "customer_id": cid,
                    "occurred_at": text, "channel": CONTACT_CHANNELS[item[5]],
                    "reason": CONTACT_REASONS[item[6]], "cost": item[7] / 100,
                    "resolved": item[8],
                }
                if item[9] is not None:
                    payload["sentiment"] = item[9]
            else:
                payload = {
                    "event_id": f"{seed}-{cid}-{item[4]}", "customer_id": cid,
                    "occurred_at": text, "kind": item[5], "amount": item[6] / 100,
                    "currency": currency,
                }
                if item[7] is not None:
                    payload["cost"] = item[7] / 100
                payload["channel"] = SALES_CHANNELS[item[8]]
                if item[9] is not None:
                    payload["items"] = item[9]
            yield SimEvent(EVENT_KINDS[kind], cid, moment(item[0]), payload)

    def events(self) -> Iterator[SimEvent]:
        config = self.config
        w0 = 0.0
        while w0 < config.days:
            w1 = min(w0 + config.window, float(config.days))
            self.window_end_ms = _ms(w1)
            self._winbacks(w1)
            self._touches(w1)
            self._contacts(w1)
            self._purchases(w1)
            ready, later = self.ready, self.later
            while later and later[0][0] < self.window_end_ms:
                ready.append(heapq.heappop(later))
            ready.sort()
            self.ready = []
            if ready:
                yield from self._payloads(ready)
            w0 = w1

    # -- status ------------------------------------------------------------------------------

    def _status(self, idx: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Alive at ``t`` and the ramp (0..1) towards the dropout of the period containing ``t``."""
        start = self.pop.pstart[idx]
        end = self.pop.pend[idx]
        tt = t[:, None]
        inside = (start <= tt) & (tt < end)
        alive = inside.any(axis=1)
        to_dropout = np.where(inside, end - tt, np.inf).min(axis=1)
        return alive, self._ramp(idx, inside, to_dropout)

    def _ramp(self, idx: np.ndarray, inside: np.ndarray, to_dropout: np.ndarray) -> np.ndarray:
        """The decline (0..1) towards a dropout ``to_dropout`` days away, per customer."""
        config = self.config
        days = config.decline_days if config.precursors else config.warning_days
        ramp = np.clip(1.0 - to_dropout / max(days, 1e-9), 0.0, 1.0)
        if config.precursors:
            ramp = np.where((inside & self.pop.silent[idx]).any(axis=1), 0.0, ramp)
        return ramp

    def _decline(self, idx: np.ndarray, t: np.ndarray, k: np.ndarray, opening: np.ndarray,
                 final: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """With precursors: which purchases at ``t`` are never placed, and the basket factor.

        The purchase at the dropout (``final``) is at ramp 1 unless the period is silent; the
        one opening a period is always placed.
        """
        m = idx.size
        config = self.config
        if not config.precursors:
            return np.zeros(m, dtype=bool), np.ones(m)
        start = self.pop.pstart[idx]
        end = self.pop.pend[idx]
        tt = t[:, None]
        inside = (start <= tt) & (tt < end)
        to_dropout = np.where(inside, end - tt, np.inf).min(axis=1)
        ramp = self._ramp(idx, inside, to_dropout)
        ramp = np.where(final, np.where(self.pop.silent[idx, k], 0.0, 1.0), ramp)
        skipped = ~opening & (self.rng.random(m) < config.decline_thinning * ramp)
        return skipped, 1.0 - config.decline_basket * ramp

    # -- triggers ----------------------------------------------------------------------------

    def _journey_categories(self, idx: np.ndarray, t: np.ndarray,
                            n_items: np.ndarray) -> np.ndarray:
        return _journey_categories(self, idx, t, n_items)

    def _purchases(self, w1: float) -> None:
        pop, rng, config = self.pop, self.rng, self.config
        while True:
            idx = _due(self.next_buy, w1)
            if idx is None:
                return
            m = idx.size
            t = self.next_buy[idx]
            left = self.left[idx]
            k = self.buy_k[idx]
            dropout = pop.pend[idx, k]
            opening = left == -2
            final = left == -1
            skipped, basket = self._decline(idx, t, k, opening, final)
            # schedule the next purchase
            inter = np.where(opening, pop.pj[idx, k] - 1, left)
            u = rng.random(m)
            with np.errstate(divide="ignore"):
                step = 1.0 - u ** (1.0 / np.maximum(inter, 1))
            nxt = np.where(inter > 0, t + (dropout - t) * step, dropout)
            new_left = np.where(inter > 0, inter - 1, -1)
            nk = np.minimum(k + 1, self.k_max - 1)
            reopen = final & (k + 1 < self.k_max)
            nxt = np.where(final, np.where(reopen, pop.pstart[idx, nk], np.inf), nxt)
            self.next_buy[idx] = nxt
            self.left[idx] = np.where(final, -2, new_left)
            self.buy_k[idx] = np.where(final, nk, k)
            # what was bought
            cents = np.maximum(
                100, np.rint(rng.gamma(config.p, 1.0, m) / pop.nu[idx] * basket * 100)
            )
            cost_rate = 1.0 - pop.margin[idx] * rng.uniform(0.8, 1.2, m)
            cost = np.rint(cents * np.clip(cost_rate, 0.0, 1.1))
            sales = _pick(self.sales_cum[pop.channel[idx]], rng.random(m))
            with_cost = rng.random(m) < 0.95
            with_items = rng.random(m) < 0.8
            n_items = 1 + (rng.random(m) > 0.55) + (rng.random(m) > 0.85)
            weights = rng.uniform(0.2, 1.0, (m, 3))
            doubles = rng.random((m, 3)) < 0.2
            cats = rng.integers(0, len(CATEGORIES), (m, 3))
            skus = rng.integers(0, 5000, (m, 3))
            if self.categories is not None:
                cats = self._journey_categories(idx, t, n_items)
            returned = rng.random(m) < config.return_share
            return_after = 1.0 + rng.gamma(2.0, 4.0, m)
            return_part = np.where(rng.random(m) < 0.7, 1.0, rng.uniform(0.2, 0.8, m))
            clicked_at = self.click_at[idx]
            attributed = (
                ~opening
                & (clicked_at <= t)
                & (t - clicked_at <= config.attribution_days)
                & (rng.random(m) < pop.conversion[idx])
                & ~skipped
            )
            self.click_at[idx[attributed]] = -np.inf
            codes = self.click_code[idx]
            rows = zip(
                idx.tolist(), t.tolist(), cents.tolist(), cost.tolist(), sales.tolist(),
                with_cost.tolist(), with_items.tolist(), n_items.tolist(), weights.tolist(),
                doubles.tolist(), cats.tolist(), skus.tolist(), returned.tolist(),
                return_after.tolist(), return_part.tolist(), attributed.tolist(), codes.tolist(),
                skipped.tolist(), strict=True,
            )
            for (i, ti, c, co, s, has_cost, has_items, ni, w, dbl, cat, sku, ret, after, part,
                 conv, code, skip) in rows:
                if skip:
                    continue
                ms = _ms(ti)
                if conv:
                    week, ch = divmod(code, len(TOUCH_CHANNELS))
                    self._touch(ms, i, f"cmp-w{week:03d}-{TOUCH_CHANNELS[ch]}", ch, "converted", 0)
                items = (_items(int(c), ni, w, dbl, cat, sku, self.category_names)
                         if has_items else None)
                self._order(ms, i, "order", int(c), int(co) if has_cost else None, s, items)
                if ret:
                    rc = int(c) if part == 1.0 else max(1, round(c * part))
                    rco = round(co * rc / c) if has_cost else None
                    lines = [dict(x) for x in items] if items and part == 1.0 else None
                    self._order(_ms(ti + after), i, "return", rc, rco, s, lines)

    def _contacts(self, w1: float) -> None:
        pop, rng, config = self.pop, self.rng, self.config
        boost = 1.0 + config.contact_boost
        while True:
            idx = _due(self.next_contact, w1)
            if idx is None:
                return
            m = idx.size
            t = self.next_contact[idx]
            self.next_contact[idx] = t + rng.exponential(1.0, m) / self.contact_max[idx]
            alive, ramp = self._status(idx, t)
            rate = np.where(alive, 1.0 + config.contact_boost * ramp, _GONE_CONTACT)
            keep = rng.random(m) < rate / boost
            probs = np.where(
                alive[:, None],
                (1.0 - ramp[:, None]) * _REASONS_CALM + ramp[:, None] * _REASONS_LEAVING,
                _REASONS_GONE,
            )
            reason = _pick(np.cumsum(probs, axis=1), rng.random(m))
            channel = _pick(self.contact_cum[pop.channel[idx]], rng.random(m))
            upset = (reason == 1) | (reason == 3)
            cost = _CONTACT_COST[channel] * rng.gamma(4.0, 0.25, m) * np.where(upset, 1.5, 1.0)
            resolved = rng.random(m) < 0.9 - 0.35 * ramp - 0.2 * upset
            mood = 0.35 - 0.9 * ramp - 0.4 * upset - 0.2 * ~resolved - 0.3 * ~alive
            sentiment = np.clip(rng.normal(mood, 0.25), -1.0, 1.0)
            with_sentiment = rng.random(m) < 0.7
            rows = zip(
                idx[keep].tolist(), t[keep].tolist(), channel[keep].tolist(),
                reason[keep].tolist(), np.rint(cost[keep] * 100).tolist(),
                resolved[keep].tolist(), np.round(sentiment[keep], 2).tolist(),
                with_sentiment[keep].tolist(), strict=True,
            )
            for i, ti, ch, why, c, ok, mood_i, has_mood in rows:
                self._contact(_ms(ti), i, ch, why, int(c), ok, mood_i if has_mood else None)

    def _touches(self, w1: float) -> None:
        pop, rng, config = self.pop, self.rng, self.config
        second = 1.0 / 86_400
        while True:
            idx = _due(self.next_touch, w1)
            if idx is None:
                return
            m = idx.size
            t = self.next_touch[idx]
            alive, ramp = self._status(idx, t)
            channel = _pick(self.touch_cum[pop.channel[idx]], rng.random(m))
            bounced = rng.random(m) < _TOUCH_BOUNCE[channel]
            delivered_at = t + rng.exponential(60.0, m) * second
            mood = np.where(alive, 1.0 - 0.75 * ramp, 0.3)
            open_p = np.clip(pop.engagement[idx] * _TOUCH_OPEN[channel] * mood, 0.0, 0.95)
            opened = ~bounced & (rng.random(m) < open_p)
            opened_at = delivered_at + rng.exponential(0.25, m)
            click_p = np.clip(0.2 * self.click_scale[idx] * np.where(alive, 1 - 0.5 * ramp, 0.5),
                              0.0, 0.95)
            clicked = opened & (rng.random(m) < click_p)
            clicked_at = opened_at + rng.exponential(300.0, m) * second
            slope = config.decline_unsubscribe if config.precursors else 0.02
            leave_p = 0.002 + slope * ramp + 0.01 * ~alive
            leaves = ~bounced & (rng.random(m) < leave_p)
            left_at = np.where(opened, opened_at, delivered_at) + rng.exponential(120.0, m) * second
            with np.errstate(divide="ignore"):
                gap = rng.exponential(1.0, m) / config.touch_rate
            self.next_touch[idx] = np.where(leaves, np.inf, t + gap)
            self.unsubscribed[idx[leaves]] = True
            week = (t // 7).astype(np.int64)
            self.click_at[idx[clicked]] = clicked_at[clicked]
            self.click_code[idx[clicked]] = (week * len(TOUCH_CHANNELS) + channel)[clicked]
            rows = zip(
                idx.tolist(), t.tolist(), week.tolist(), channel.tolist(), bounced.tolist(),
                delivered_at.tolist(), opened.tolist(), opened_at.tolist(), clicked.tolist(),
                clicked_at.tolist(), leaves.tolist(), left_at.tolist(), strict=True,
            )
            for i, ti, wk, ch, bounce, t_del, op, t_op, cl, t_cl, leave, t_left in rows:
                campaign = f"cmp-w{wk:03d}-{TOUCH_CHANNELS[ch]}"
                self._touch(_ms(ti), i, campaign, ch, "sent", round(_TOUCH_COST[ch] * 100))
                if bounce:
                    self._touch(_ms(t_del), i, campaign, ch, "bounced", 0)
                    continue
                self._touch(_ms(t_del), i, campaign, ch, "delivered", 0)
                if op:
                    self._touch(_ms(t_op), i, campaign, ch, "opened", 0)
                if cl:
                    self._touch(_ms(t_cl), i, campaign, ch, "clicked", 0)
                if leave:
                    self._touch(_ms(t_left), i, campaign, ch, "unsubscribed", 0)

    def _winbacks(self, w1: float) -> None:
        pop, rng = self.pop, self.rng
        while True:
            idx = _due(self.next_wb, w1)
            if idx is None:
                return
            m = idx.size
            k = self.wb_k[idx]
            sent = self.next_wb[idx]
            back = pop.pstart[idx, k]
            nk = np.minimum(k + 1, self.k_max - 1)
            self.next_wb[idx] = np.where(k + 1 < self.k_max, pop.wbsend[idx, nk], np.inf)
            self.wb_k[idx] = k + 1
            # unsubscribed customers can still be reached by (paid) ads
            channel = np.where(
                self.unsubscribed[idx], 5, _pick(self.touch_cum[pop.channel[idx]], rng.random(m))
            )
            span = back - sent
            rows = zip(idx.tolist(), sent.tolist(), back.tolist(), span.tolist(),
                       channel.tolist(), strict=True)
            for i, s, b, d, ch in rows:
                campaign = f"winback-w{int(s // 7):03d}-{TOUCH_CHANNELS[ch]}"
                self._touch(_ms(s), i, campaign, ch, "sent", round(_TOUCH_COST[ch] * 100))
                self._touch(_ms(s + 0.01 * d), i, campaign, ch, "delivered", 0)
                self._touch(_ms(s + 0.3 * d), i, campaign, ch, "opened", 0)
                self._touch(_ms(s + 0.6 * d), i, campaign, ch, "clicked", 0)
                self._touch(_ms(b), i, campaign, ch, "converted", 0)


def _items(cents: int, n: int, weights: Sequence[float], doubles: Sequence[bool],
           cats: Sequence[int], skus: Sequence[int],
           names: Sequence[str] = CATEGORIES) -> list[dict[str, Any]]:
    """Order lines whose quantities times unit prices add up to ``cents`` exactly."""
    total = sum(weights[:n])
    items = []
    rest = cents
    for j in range(n):
        line = rest if j == n - 1 else max(1, int(cents * weights[j] / total))
        line = min(line, rest - (n - 1 - j))
        rest -= line
        quantity = 2 if doubles[j] and line % 2 == 0 else 1
        items.append({
            "sku": f"SKU-{cats[j]}{skus[j]:04d}",
            "category": names[cats[j]],
            "quantity": quantity,
            "unit_price": line // quantity / 100,
        })
    return items


@dataclass(frozen=True)
class CategoryModel:
    """The latent product tastes of a population (``SimConfig.product_categories`` > 0).

    ``preferences`` (customers x categories, rows sum to 1): what a customer's order lines
    draw from. ``journeys`` (categories x categories): the category an order leads to next,
    e.g. from a camera to its accessories. ``repeat``: per category, the chance the next order
    buys the last category again (the "clusters" model). ``cycles``: per category, the
    repurchase cycle in days (``inf``: a durable, not bought in cycles; the "retail" model);
    ``segments``: each customer's segment (the "retail" model).
    """

    names: tuple[str, ...]
    preferences: np.ndarray
    journeys: np.ndarray
    repeat: np.ndarray
    journey_share: float = 0.35
    cycles: np.ndarray | None = None
    segments: np.ndarray | None = None
    due_share: float = 0.7  # the chance an order starts with a due repurchase


def category_model(config: SimConfig) -> CategoryModel:
    """The latent category model of `config`; the same config always gives the same one."""
    if config.category_tastes == "retail":
        return _retail_tastes(config)
    return _cluster_tastes(config)


def _category_names(n_cat: int) -> tuple[str, ...]:
    return tuple(f"{CATEGORIES[j % len(CATEGORIES)]}-{j // len(CATEGORIES)}"
                 for j in range(n_cat))


def _cluster_tastes(config: SimConfig) -> CategoryModel:
    """The first model: 0.75 of one of 6 taste clusters and 0.25 of the customer's own taste."""
    n_cat = config.product_categories
    rng = np.random.default_rng([config.seed, 7_031])
    clusters = rng.dirichlet(np.full(n_cat, 0.15), 6)
    which = rng.integers(0, len(clusters), config.n_customers)
    own = rng.dirichlet(np.full(n_cat, 0.3), config.n_customers)
    preferences = 0.75 * clusters[which] + 0.25 * own
    journeys = rng.dirichlet(np.full(n_cat, 0.05), n_cat)
    np.fill_diagonal(journeys, 0.0)
    journeys /= journeys.sum(axis=1, keepdims=True)
    repeat = np.where(rng.random(n_cat) < 0.3, rng.uniform(0.3, 0.6, n_cat), 0.0)
    return CategoryModel(_category_names(n_cat), preferences, journeys, repeat)


#: The "retail" tastes: category shares fall with rank as 1 / rank ** ZIPF; each of SEGMENTS
#: segments has its own shares, a Dirichlet with concentration SEGMENT_S around them; each
#: customer's tastes are a Dirichlet with concentration CUSTOMER_S around their segment's
#: (the Dirichlet of brand and category choice, Goodhardt, Ehrenberg and Chatfield 1984).
ZIPF, SEGMENTS, SEGMENT_S, CUSTOMER_S = 0.8, 6, 8.0, 2.0


def _retail_tastes(config: SimConfig) -> CategoryModel:
    """Heterogeneous tastes: a few categories per customer, segment shares, cycles, journeys."""
    n_cat = config.product_categories
    rng = np.random.default_rng([config.seed, 7_033])
    base = 1.0 / np.arange(1, n_cat + 1) ** ZIPF
    base = rng.permutation(base / base.sum())
    shares = rng.dirichlet(SEGMENT_S * base, SEGMENTS)
    segments = rng.integers(0, SEGMENTS, config.n_customers)
    preferences = np.zeros((config.n_customers, n_cat))
    for g in range(SEGMENTS):
        mine = segments == g
        alpha = np.maximum(CUSTOMER_S * shares[g], 1e-3)
        preferences[mine] = rng.dirichlet(alpha, int(mine.sum()))
    preferences /= preferences.sum(axis=1, keepdims=True)
    # Journeys: each category leads on to one to three others (a camera to lenses and bags).
    journeys = rng.dirichlet(np.full(n_cat, 0.05), n_cat)
    np.fill_diagonal(journeys, 0.0)
    journeys /= journeys.sum(axis=1, keepdims=True)
    # A third of the categories are consumables bought every 20 to 75 days.
    cycles = np.where(rng.random(n_cat) < 1 / 3, rng.uniform(20.0, 75.0, n_cat), np.inf)
    return CategoryModel(_category_names(n_cat), preferences, journeys, np.zeros(n_cat),
                         journey_share=0.35, cycles=cycles, segments=segments)


def _draw(rows: np.ndarray, u: np.ndarray) -> np.ndarray:
    """One index per row of a matrix of probabilities (each row sums to 1)."""
    cum = np.cumsum(rows, axis=1)
    return np.minimum((cum < u[:, None] * cum[:, -1:]).sum(axis=1), rows.shape[1] - 1)


def _journey_categories(run: _Run, idx: np.ndarray, t: np.ndarray,
                        n_items: np.ndarray) -> np.ndarray:
    """The categories of the `n_items` (up to 3) order lines of each customer of `idx` at days `t`.

    The first line: a due repurchase (the "retail" cycles) with chance ``due_share``, else the
    last category again (``repeat``), else the next step of a journey from the last category
    (``journey_share``), else a draw from the customer's tastes; the others: taste draws.
    """
    model, rng = run.categories, run.category_rng
    assert model is not None
    m = idx.size
    cats = np.stack([_draw(model.preferences[idx], rng.random(m)) for _ in range(3)], axis=1)
    last = run.last_category[idx]
    seen = last >= 0
    safe = np.where(seen, last, 0)
    u = rng.random(m)
    again = seen & (u < model.repeat[safe])
    onward = seen & ~again & (u < model.repeat[safe] + model.journey_share)
    follow = _draw(model.journeys[safe], rng.random(m))
    cats[:, 0] = np.where(again, last, np.where(onward, follow, cats[:, 0]))
    if model.cycles is not None and run.category_day is not None:
        cats[:, 0] = _due_repurchase(run.category_day[idx], model, t, rng, cats[:, 0])
        for j in range(cats.shape[1]):
            bought = n_items > j
            run.category_day[idx[bought], cats[bought, j]] = t[bought]
    run.last_category[idx] = cats[:, 0]
    return cats


def _due_repurchase(days: np.ndarray, model: CategoryModel, t: np.ndarray,
                    rng: np.random.Generator, first: np.ndarray) -> np.ndarray:
    """The first line's category: the most overdue category whose cycle has passed, if any,
    with chance ``due_share``; `first` otherwise."""
    assert model.cycles is not None
    with np.errstate(invalid="ignore"):
        overdue = (t[:, None] - days) / model.cycles[None, :]
    overdue = np.where(np.isfinite(overdue), overdue, 0.0)
    best = overdue.argmax(axis=1)
    due = (overdue[np.arange(len(t)), best] >= 1.0) & (rng.random(len(t)) < model.due_share)
    return np.where(due, best, first)


def simulate(config: SimConfig) -> Iterator[SimEvent]:
    """Yield every event of the population in non-decreasing ``occurred_at`` order.

    Events fall within ``[start, start + days)``; equal times keep the order they were drawn in.
    """
    return _Run(config).events()


def ground_truth(config: SimConfig) -> Iterator[dict[str, Any]]:
    """Yield one dict per customer, in id order, with the true parameters and alive periods.

    Keys: ``customer_id``, ``channel`` (acquisition channel), ``acquired_at``, ``lambda`` (purchases
    per day while alive), ``p`` (dropout probability per repeat purchase), ``nu`` and
    ``mean_order_value`` (``config.p / nu``), ``margin``, ``conversion``, ``engagement``,
    ``contact_propensity``, ``periods`` (alive periods ``{"start", "end", "repeat_purchases"}``,
    ``end`` None when alive past the horizon), ``dropout_at`` (end of the last period, None if alive
    at the end), ``alive_at_end``, ``won_back``, ``won_back_at`` (start of every later period) and
    ``latent_dropout_day`` (days since start of the last period's dropout, even past the horizon).
    Times are RFC 3339 strings equal to the matching events' ``occurred_at``.
    """
    pop = _population(config, _seeds(config)[0])
    clock = _Clock(config.start)
    names = [c.name for c in config.channels]
    chunk = 65_536
    horizon = float(config.days)
    for lo in range(0, config.n_customers, chunk):
        hi = min(lo + chunk, config.n_customers)
        starts_in, ends_in = pop.pstart[lo:hi] < horizon, pop.pend[lo:hi] < horizon
        start_texts = _texts(clock, pop.pstart[lo:hi], starts_in)
        end_texts = _texts(clock, pop.pend[lo:hi], ends_in)
        columns = zip(
            range(lo, hi), pop.channel[lo:hi].tolist(), pop.lam[lo:hi].tolist(),
            pop.p[lo:hi].tolist(), pop.nu[lo:hi].tolist(), pop.margin[lo:hi].tolist(),
            pop.conversion[lo:hi].tolist(), pop.engagement[lo:hi].tolist(),
            pop.contact[lo:hi].tolist(), pop.pstart[lo:hi].tolist(), pop.pend[lo:hi].tolist(),
            pop.pj[lo:hi].tolist(), start_texts, end_texts, strict=True,
        )
        for i, ch, lam, p, nu, margin, conv, eng, contact, _, ends, js, s_text, e_text in columns:
            periods = [
                {"start": s, "end": e, "repeat_purchases": j}
                for s, e, j in zip(s_text, e_text, js, strict=True)
                if s is not None
            ]
            latent = ends[len(periods) - 1]
            yield {
                "customer_id": customer_id(i),
                "channel": names[ch],
                "acquired_at": periods[0]["start"],
                "lambda": lam,
                "p": p,
                "nu": nu,
                "mean_order_value": config.p / nu,
                "margin": margin,
                "conversion": conv,
                "engagement": eng,
                "contact_propensity": contact,
                "periods": periods,
                "dropout_at": periods[-1]["end"],
                "alive_at_end": periods[-1]["end"] is None,
                "won_back": len(periods) > 1,
                "won_back_at": [period["start"] for period in periods[1:]],
                "latent_dropout_day": latent if latent < 1e300 else None,
            }


def _texts(clock: _Clock, days: np.ndarray, keep: np.ndarray) -> list[list[str | None]]:
    """RFC 3339 texts of a 2-D array of times in days, None where ``keep`` is False."""
    ms = np.floor(np.where(keep, days, 0.0) * MS_PER_DAY).astype(np.int64)
    texts = np.array(clock.texts(ms.ravel()), dtype=object).reshape(ms.shape)
    return np.where(keep, texts, None).tolist()  # type: ignore[no-any-return]


def write_ground_truth(config: SimConfig, path: str | Path) -> int:
    """Write `ground_truth` as JSON lines to ``path``; return the number of customers."""
    n = 0
    with open(path, "wb") as out:
        for row in ground_truth(config):
            out.write(orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE))
            n += 1
    return n


def write_events(config: SimConfig, path: str | Path) -> int:
    """Write `simulate` as JSON lines ``{"topic_kind", "key", "value"}``; return the event count."""
    n = 0
    with open(path, "wb", buffering=1 << 20) as out:
        for event in simulate(config):
            out.write(orjson.dumps(
                {"topic_kind": event.topic_kind, "key": event.customer_id, "value": event.payload},
                option=orjson.OPT_APPEND_NEWLINE,
            ))
            n += 1
    return n


def _peak_rss_mb() -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m load.simulator``: write events / ground truth, or time the stream."""
    parser = argparse.ArgumentParser(prog="python -m load.simulator", description=main.__doc__)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--events", help="write events as JSON lines to this file")
    parser.add_argument("--truth", help="write the ground truth as JSON lines to this file")
    parser.add_argument("--limit", type=int, default=0, help="stop timing after this many events")
    parser.add_argument("--window-days", type=float, help="days per step (default: by size)")
    args = parser.parse_args(argv)
    config = SimConfig(
        n_customers=args.customers, days=args.days, seed=args.seed, window_days=args.window_days
    )
    began = time.perf_counter()
    if args.truth:
        write_ground_truth(config, args.truth)
    if args.events:
        n = write_events(config, args.events)
    else:
        n = 0
        counts = dict.fromkeys(EVENT_KINDS, 0)
        for event in simulate(config):
            counts[event.topic_kind] += 1
            n += 1
            if n == args.limit:
                break
        print(orjson.dumps(counts).decode())
    seconds = time.perf_counter() - began
    print(f"{n} events in {seconds:.1f} s ({n / max(seconds, 1e-9):,.0f} events/s), "
          f"peak RSS {_peak_rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
