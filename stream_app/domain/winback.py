"""Win-back: one trigger per lapse episode of a formerly valuable customer.

`decide_winback` raises a trigger with the channel this customer responded to best
(`recommended_channel`, from the per-channel counts `record_touch` keeps), an offer
budget bounded by the value to regain and a deterministic control-group split
(`in_control_group`). What became of a trigger is `stream_app.domain.outcomes`'s
business; the message of the contract is built at the edge (`stream_app.messages`).
Pure: event time in epoch milliseconds, no IO, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Final

from stream_app.domain.events import MS_PER_DAY, CampaignTouch
from stream_app.domain.ledger import CustomerState
from stream_app.domain.rules import (
    DEFAULT_WEIGHTS,
    Reason,
    check_positive,
    check_share,
    day_stamp,
    digest,
    distinct,
    shares,
)
from stream_app.domain.valuation import Valuation

__all__ = [
    "ChannelCounts",
    "Trigger",
    "WinbackMemory",
    "WinbackPolicy",
    "decide_winback",
    "in_control_group",
    "recommended_channel",
    "record_touch",
    "trigger_id",
]

_RESPONSES: Final = ("clicked", "converted")


_BLOCKS: Final = ("unsubscribed", "bounced")



@dataclass(frozen=True, slots=True)
class WinbackPolicy:
    """Thresholds of the win-back trigger; every one is configuration.

    Parameters
    ----------
    p_alive_threshold
        A customer is lapsed when P(alive) falls below this (0.25: three chances
        in four that they are gone) ...
    silence_days
        ... or when their last order is more than this many days old (90, the
        horizon H: a quarter without an order).
    min_value_tier
        Only customers whose value tier was at least this when they were last
        active (``value_tier_when_valuable``) are worth winning back (80).
    min_value_to_regain
        No trigger when the value to regain is at most this (base currency).
    control_share
        Share of triggers held out as a control group (0.10): large enough to
        measure the uplift within a few hundred triggers, small enough to forgo
        little.
    offer_share, offer_cap
        The offer budget is ``offer_share`` of the value to regain, at most
        ``offer_cap`` (base currency). The offer pays off in expectation while the
        share stays below the measured uplift (`winback_results`), so start low
        (0.10) and revise with the results.
    response_window_days
        A purchase or converted touch this many days after the trigger counts as
        a return (60).
    channels
        Channels a recommendation may fall back on, in order of preference, when
        the customer has no usable response history.
    prior_responses, prior_touches
        Beta prior of a channel's response rate (1 response in 10 touches), so a
        single lucky click does not beat a long, steady record.
    """

    p_alive_threshold: float = 0.25
    silence_days: float = 90.0
    min_value_tier: float = 80.0
    min_value_to_regain: float = 0.0
    control_share: float = 0.10
    offer_share: float = 0.10
    offer_cap: float = 100.0
    response_window_days: float = 60.0
    channels: tuple[str, ...] = ("email", "sms", "push", "mail", "call")
    prior_responses: float = 1.0
    prior_touches: float = 10.0
    weights: Mapping[str, float] = field(default_factory=lambda: DEFAULT_WEIGHTS, hash=False)
    max_strength: float = 3.0

    def __post_init__(self) -> None:
        owner = "WinbackPolicy"
        check_positive(
            owner,
            p_alive_threshold=self.p_alive_threshold,
            silence_days=self.silence_days,
            response_window_days=self.response_window_days,
            prior_touches=self.prior_touches,
            max_strength=self.max_strength,
        )
        check_share(
            owner,
            p_alive_threshold=self.p_alive_threshold,
            control_share=self.control_share,
            offer_share=self.offer_share,
        )
        if self.offer_cap < 0 or self.prior_responses < 0:
            raise ValueError(f"{owner}: offer_cap and prior_responses must be >= 0")
        if not 0 <= self.prior_responses <= self.prior_touches:
            raise ValueError(f"{owner}: prior_responses must be within [0, prior_touches]")
        if not self.channels:
            raise ValueError(f"{owner}.channels must name at least one channel")


@dataclass(frozen=True, slots=True)
class ChannelCounts:
    """One customer's campaign history on one channel.

    ``touches`` counts ``sent`` touches, ``responses`` clicks and conversions
    (opens are left out: mail clients open by themselves), ``blocked``
    unsubscribes and bounces; a blocked channel is never recommended.
    """

    touches: int = 0
    responses: int = 0
    blocked: int = 0


def record_touch(
    channels: Mapping[str, ChannelCounts], touch: CampaignTouch
) -> Mapping[str, ChannelCounts]:
    """The per-channel counts with `touch` added (the same mapping if it does not count).

    >>> c = record_touch({}, CampaignTouch("t1", "C1", 0, "K1", "sms", "sent", 0))
    >>> c = record_touch(c, CampaignTouch("t2", "C1", 1, "K1", "sms", "clicked", 0))
    >>> c["sms"]
    ChannelCounts(touches=1, responses=1, blocked=0)
    """
    old = channels.get(touch.channel, ChannelCounts())
    if touch.action == "sent":
        new = replace(old, touches=old.touches + 1)
    elif touch.action in _RESPONSES:
        new = replace(old, responses=old.responses + 1)
    elif touch.action in _BLOCKS:
        new = replace(old, blocked=old.blocked + 1)
    else:
        return channels
    out = dict(channels)
    out[touch.channel] = new
    return MappingProxyType(out)


def recommended_channel(
    channels: Mapping[str, ChannelCounts] | None, policy: WinbackPolicy | None = None
) -> str:
    """The channel this customer responded to best, by smoothed response rate.

    The rate is ``(responses + a) / (touches + n)`` with the policy's Beta prior
    (``a`` responses in ``n`` touches); ties go to the policy's channel order.
    Blocked channels are skipped; with no usable history the first unblocked
    channel of the policy is chosen (the first one if every channel is blocked).

    >>> recommended_channel({"email": ChannelCounts(50, 2), "sms": ChannelCounts(10, 4)})
    'sms'
    >>> recommended_channel({"sms": ChannelCounts(10, 4, blocked=1)})
    'email'
    """
    policy = policy or WinbackPolicy()
    channels = channels or {}
    order = {name: i for i, name in enumerate(policy.channels)}

    def rate(counts: ChannelCounts) -> float:
        touches = max(counts.touches, counts.responses)
        return (counts.responses + policy.prior_responses) / (touches + policy.prior_touches)

    usable = [
        (name, counts) for name, counts in channels.items()
        if counts.blocked == 0 and (counts.touches > 0 or counts.responses > 0)
    ]
    if usable:
        best = min(usable, key=lambda nc: (-rate(nc[1]), order.get(nc[0], len(order)), nc[0]))
        return best[0]
    for name in policy.channels:
        if channels.get(name, ChannelCounts()).blocked == 0:
            return name
    return policy.channels[0]


def in_control_group(customer_id: str, trigger_id: str, seed: int | str, share: float) -> bool:
    """Whether a trigger is held out as control: a hash of its ids and the seed below `share`.

    Deterministic, so a replay makes the same split; independent across
    triggers, so the control share is `share` over many customers.

    >>> in_control_group("C1", "wb-x", 7, 0.1) == in_control_group("C1", "wb-x", 7, 0.1)
    True
    >>> in_control_group("C1", "wb-x", 7, 0.0), in_control_group("C1", "wb-x", 7, 1.0)
    (False, True)
    """
    u = int.from_bytes(digest("control", str(seed), customer_id, trigger_id)[:8], "big") / 2**64
    return u < share


def trigger_id(customer_id: str, episode: int) -> str:
    """Deterministic id of the win-back trigger of a lapse episode.

    An episode is named by the last purchase before the lapse (epoch ms), so the
    id does not depend on which event revealed the lapse.

    >>> trigger_id("C1", 86_400_000)[:12], trigger_id("C1", 1) == trigger_id("C1", 1)
    ('wb-19700102-', True)
    """
    key = digest("winback", customer_id, str(episode))
    return f"wb-{day_stamp(episode)}-{key.hex()[:24]}"


@dataclass(frozen=True, slots=True)
class WinbackMemory:
    """What `decide_winback` remembers: the lapse episode already triggered.

    ``episode`` is the customer's last purchase time (ms) when the trigger was
    raised; a later purchase starts a new episode.
    """

    episode: int | None = None
    trigger_id: str | None = None


@dataclass(frozen=True, slots=True)
class Trigger:
    """A win-back trigger, without its wall-clock ``raised_at`` (see `to_winback_message`)."""

    trigger_id: str
    customer_id: str
    as_of: int
    episode: int
    clv_lost: float
    p_alive: float
    recommended_channel: str
    offer_budget: float
    control_group: bool
    reasons: tuple[Reason, ...]
    model_version: str


def decide_winback(
    customer_id: str,
    state: CustomerState,
    valuation: Valuation,
    value_tier_when_valuable: float,
    memory: WinbackMemory | None,
    as_of: int,
    policy: WinbackPolicy | None = None,
    model_version: str = "0",
    seed: int | str = 0,
    *,
    channels: Mapping[str, ChannelCounts] | None = None,
) -> tuple[Trigger | None, WinbackMemory]:
    """Whether to trigger a win-back for this customer now, and the memory to keep.

    A trigger is raised once per lapse episode (`WinbackMemory.episode`) for a
    customer who

    1. was valuable: ``value_tier_when_valuable >= policy.min_value_tier`` (the
       shell passes the value tier at the customer's latest purchase);
    2. is lapsed: P(alive) below ``policy.p_alive_threshold`` or no order for
       more than ``policy.silence_days``;
    3. has value to regain: ``clv_lost`` (CLV if alive minus CLV, i.e.
       `Valuation.value_at_risk`) above ``policy.min_value_to_regain``.

    ``channels`` is the customer's per-channel history (`record_touch`), which
    `CustomerState` does not keep. ``seed`` fixes the control-group split.
    """
    policy = policy or WinbackPolicy()
    before = memory or WinbackMemory()
    episode = state.last_purchase
    if episode is None or before.episode == episode:
        return None, before
    if value_tier_when_valuable < policy.min_value_tier:
        return None, before
    signals: list[tuple[str, float, str]] = []
    p_alive = min(max(valuation.p_alive, 0.0), 1.0)
    if p_alive < policy.p_alive_threshold:
        signals.append((
            "p_alive_low",
            policy.p_alive_threshold / max(p_alive, 1e-3),
            "probability alive {}, below {}".format(*distinct(p_alive, policy.p_alive_threshold)),
        ))
    silence = (as_of - episode) / MS_PER_DAY
    if silence > policy.silence_days:
        signals.append((
            "long_silence",
            silence / policy.silence_days,
            f"no order for {silence:.0f} days, beyond {policy.silence_days:.0f}",
        ))
    if not signals:
        return None, before
    clv_lost = valuation.value_at_risk
    if clv_lost <= policy.min_value_to_regain:
        return None, before
    new_id = trigger_id(customer_id, episode)
    trigger = Trigger(
        trigger_id=new_id,
        customer_id=customer_id,
        as_of=as_of,
        episode=episode,
        clv_lost=clv_lost,
        p_alive=p_alive,
        recommended_channel=recommended_channel(channels, policy),
        offer_budget=round(min(policy.offer_share * clv_lost, policy.offer_cap), 2),
        control_group=in_control_group(customer_id, new_id, seed, policy.control_share),
        reasons=tuple(shares(signals, policy.weights, policy.max_strength)),
        model_version=model_version,
    )
    return trigger, WinbackMemory(episode=episode, trigger_id=new_id)

