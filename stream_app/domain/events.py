"""Frozen event types, built from messages that already passed the JSON Schema.

Money is held as integer cents of the base currency so that sums are exact and
independent of the order in which they are added. Event time is integer
milliseconds since the Unix epoch (UTC).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

MS_PER_DAY = 86_400_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class InvalidEventValue(ValueError):
    """A schema-valid message whose values the engine still cannot use."""

    def __init__(self, error_code: str, reason: str) -> None:
        super().__init__(reason)
        self.error_code = error_code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Source:
    """Where an event was read from: the key of the exactly-once bookkeeping."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Purchase:
    event_id: str
    customer_id: str
    occurred_at: int
    kind: str  # "order" | "return"
    amount_c: int
    cost_c: int | None
    channel: str


@dataclass(frozen=True, slots=True)
class ServiceContact:
    event_id: str
    customer_id: str
    occurred_at: int
    channel: str
    reason: str
    cost_c: int
    resolved: bool
    sentiment_m: int | None  # sentiment in thousandths, -1000..1000


@dataclass(frozen=True, slots=True)
class CampaignTouch:
    event_id: str
    customer_id: str
    occurred_at: int
    campaign_id: str
    channel: str
    action: str
    cost_c: int


Event = Purchase | ServiceContact | CampaignTouch


def parse_time(text: str) -> int:
    """Return epoch milliseconds of an RFC 3339 time that carries an offset.

    Sub-millisecond digits are truncated.

    >>> parse_time("1970-01-02T00:00:00Z")
    86400000
    >>> parse_time("1970-01-01T01:00:00.5+01:00")
    500
    """
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidEventValue("invalid_value", f"occurred_at: {text!r} is not RFC 3339") from None
    if moment.tzinfo is None:
        raise InvalidEventValue("invalid_value", f"occurred_at: {text!r} has no UTC offset")
    delta = moment - _EPOCH
    return delta.days * MS_PER_DAY + delta.seconds * 1000 + delta.microseconds // 1000


def format_time(ms: int) -> str:
    """RFC 3339 UTC with milliseconds of epoch milliseconds (the inverse of `parse_time`).

    >>> format_time(86_400_123)
    '1970-01-02T00:00:00.123Z'
    """
    moment = _EPOCH + timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def to_cents(amount: float | int, rate: Decimal = Decimal(1)) -> int:
    """Convert a major-unit amount to integer cents of the base currency.

    >>> to_cents(12.345)
    1234
    >>> to_cents(10, Decimal("1.5"))
    1500
    """
    try:
        value = Decimal(str(amount)) * rate * 100
    except InvalidOperation:
        raise InvalidEventValue("invalid_value", f"amount: {amount!r} is not a number") from None
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def _rate(currency: str, base_currency: str, fx_rates: Mapping[str, Decimal]) -> Decimal:
    if currency == base_currency:
        return Decimal(1)
    try:
        return fx_rates[currency]
    except KeyError:
        raise InvalidEventValue(
            "unsupported_currency",
            f"currency: no exchange rate from {currency} to {base_currency} "
            "(set CVM_FX_RATES)",
        ) from None


def from_message(
    kind: str,
    message: Mapping[str, Any],
    base_currency: str = "USD",
    fx_rates: Mapping[str, Decimal] | None = None,
) -> Event:
    """Build a domain event from a schema-valid message of the given kind."""
    occurred_at = parse_time(message["occurred_at"])
    if kind == "purchase":
        rate = _rate(message["currency"], base_currency, fx_rates or {})
        cost = message.get("cost")
        return Purchase(
            event_id=message["event_id"],
            customer_id=message["customer_id"],
            occurred_at=occurred_at,
            kind=message["kind"],
            amount_c=to_cents(message["amount"], rate),
            cost_c=None if cost is None else to_cents(cost, rate),
            channel=message["channel"],
        )
    if kind == "service_contact":
        sentiment = message.get("sentiment")
        return ServiceContact(
            event_id=message["event_id"],
            customer_id=message["customer_id"],
            occurred_at=occurred_at,
            channel=message["channel"],
            reason=message["reason"],
            cost_c=to_cents(message["cost"]),
            resolved=bool(message["resolved"]),
            sentiment_m=None if sentiment is None else round(sentiment * 1000),
        )
    if kind == "campaign_touch":
        return CampaignTouch(
            event_id=message["event_id"],
            customer_id=message["customer_id"],
            occurred_at=occurred_at,
            campaign_id=message["campaign_id"],
            channel=message["channel"],
            action=message["action"],
            cost_c=to_cents(message["cost"]),
        )
    raise ValueError(f"unknown event kind {kind!r}")
