"""Frozen event types, built from messages that already passed the JSON Schema.

Money is held as integer cents of the base currency so that sums are exact and
independent of the order in which they are added. Event time is integer
milliseconds since the Unix epoch (UTC).

Every conversion here is bounded: a value the engine cannot hold exactly (an amount
above `MAX_AMOUNT`, a sentiment outside -1..1, an fx rate that is not a positive finite
number) raises `InvalidEventValue` with a reason, never an arithmetic error, so the worker
dead-letters the message instead of stopping. `check_time` bounds event time; the caller
supplies the limits (the domain has no clock).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

MS_PER_DAY = 86_400_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: The largest money value of an input, in major units (the schemas' ``maximum``), also
#: after conversion to the base currency: 10^12 (one trillion) units.
MAX_AMOUNT = 10**12
#: `MAX_AMOUNT` in cents; about 10^4 times below the int64 range of Redis counters.
MAX_CENTS = MAX_AMOUNT * 100
_MAX_CENTS_DECIMAL = Decimal(MAX_CENTS)


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
class Line:
    """One order line: product, category, units and unit price in cents (None: not given)."""

    sku: str
    category: str
    quantity: int
    unit_price_c: int | None


#: The category of an order line that names none.
NO_CATEGORY = "uncategorised"


@dataclass(frozen=True, slots=True)
class Purchase:
    event_id: str
    customer_id: str
    occurred_at: int
    kind: str  # "order" | "return"
    amount_c: int
    cost_c: int | None
    channel: str
    items: tuple[Line, ...] = ()


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
    day, rest = divmod(ms, MS_PER_DAY)
    seconds, millis = divmod(rest, 1000)
    minutes, s = divmod(seconds, 60)
    h, m = divmod(minutes, 60)
    return f"{_day_text(day)}T{h:02d}:{m:02d}:{s:02d}.{millis:03d}Z"


@functools.lru_cache(maxsize=4096)
def _day_text(day: int) -> str:
    """The calendar date of a day since the epoch, as `format_time` writes it (a record
    carries several times, mostly of a few recent days: formatting the date once each)."""
    return (_EPOCH + timedelta(days=day)).strftime("%Y-%m-%d")


def to_cents(amount: float | int, rate: Decimal = Decimal(1), name: str = "amount") -> int:
    """Convert a major-unit amount to integer cents of the base currency.

    Raises `InvalidEventValue` when the value is not a finite number or, converted, lies
    outside ``-MAX_AMOUNT..MAX_AMOUNT`` (`name` is the field named in the reason).

    >>> to_cents(12.345)
    1234
    >>> to_cents(10, Decimal("1.5"))
    1500
    >>> to_cents(1e300)
    Traceback (most recent call last):
    ...
    stream_app.domain.events.InvalidEventValue: amount: 1e+300 is above the maximum of \
1000000000000 (in the base currency)
    """
    if isinstance(amount, bool) or not isinstance(amount, int | float | Decimal):
        raise InvalidEventValue("invalid_value", f"{name}: {amount!r} is not a number")
    try:
        value = Decimal(str(amount)) * rate
        if not value.is_finite():
            raise InvalidEventValue("invalid_value", f"{name}: {amount!r} is not a finite number")
        if abs(value) > MAX_AMOUNT:
            raise InvalidEventValue(
                "invalid_value",
                f"{name}: {amount!r} is above the maximum of {MAX_AMOUNT} (in the base currency)"
                if value > 0 else
                f"{name}: {amount!r} is below the minimum of -{MAX_AMOUNT} (in the base currency)",
            )
        return int((value * 100).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
    except ArithmeticError:  # InvalidOperation, Overflow: a value Decimal cannot hold
        raise InvalidEventValue(
            "invalid_value", f"{name}: {amount!r} cannot be converted to cents"
        ) from None


def to_milli(score: float | int, name: str = "sentiment") -> int:
    """A score from -1 to 1 in thousandths; `InvalidEventValue` outside that range.

    >>> to_milli(-0.25)
    -250
    """
    if isinstance(score, bool) or not isinstance(score, int | float):
        raise InvalidEventValue("invalid_value", f"{name}: {score!r} is not a number")
    if not -1 <= score <= 1:  # also false for NaN
        raise InvalidEventValue("invalid_value", f"{name}: {score!r} is not within -1..1")
    return round(score * 1000)


def check_time(
    occurred_at: int, earliest: int, latest: int | None = None, latest_basis: str = ""
) -> None:
    """Raise `InvalidEventValue` unless ``earliest <= occurred_at <= latest``.

    The caller chooses the limits (a wall clock plus a tolerated skew, or a watermark plus
    a tolerated lead); `latest_basis` says in the reason where `latest` comes from. None
    for `latest` means no upper limit.

    >>> check_time(parse_time("2199-01-01T00:00:00Z"), 0, parse_time("2026-01-02T00:00:00Z"),
    ...            "the wall clock plus 1 day")
    Traceback (most recent call last):
    ...
    stream_app.domain.events.InvalidEventValue: occurred_at: 2199-01-01T00:00:00.000Z is after \
2026-01-02T00:00:00.000Z, the latest time accepted (the wall clock plus 1 day)
    """
    if occurred_at < earliest:
        raise InvalidEventValue(
            "invalid_value",
            f"occurred_at: {format_time(occurred_at)} is before {format_time(earliest)}, "
            "the earliest time accepted (CVM_EARLIEST_EVENT_TIME)",
        )
    if latest is not None and occurred_at > latest:
        basis = f" ({latest_basis})" if latest_basis else ""
        raise InvalidEventValue(
            "invalid_value",
            f"occurred_at: {format_time(occurred_at)} is after {format_time(latest)}, "
            f"the latest time accepted{basis}",
        )


def _rate(currency: str, base_currency: str, fx_rates: Mapping[str, Decimal]) -> Decimal:
    if currency == base_currency:
        return Decimal(1)
    try:
        rate = fx_rates[currency]
    except KeyError:
        raise InvalidEventValue(
            "unsupported_currency",
            f"currency: no exchange rate from {currency} to {base_currency} "
            "(set CVM_FX_RATES)",
        ) from None
    if not (isinstance(rate, Decimal) and rate.is_finite() and rate > 0):
        raise InvalidEventValue(
            "unsupported_currency",
            f"currency: the exchange rate from {currency} to {base_currency} is {rate!r}, "
            "not a positive finite number (check CVM_FX_RATES)",
        )
    return rate


def _line_price(price: float | int | None, rate: Decimal) -> int | None:
    """An order line's unit price in cents, or None when absent or beyond `MAX_AMOUNT`.

    The lines are informative: a price the engine cannot hold leaves the line unpriced
    (`stream_app.domain.products.line_revenues` then shares the amount) rather than
    rejecting the purchase.

    >>> _line_price(2.5, Decimal(1)), _line_price(10**12, Decimal(2)), _line_price(None, Decimal(1))
    (250, None, None)
    """
    if price is None:
        return None
    try:
        return to_cents(price, rate, "items.unit_price")
    except InvalidEventValue:
        return None


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
            cost_c=None if cost is None else to_cents(cost, rate, "cost"),
            channel=message["channel"],
            items=tuple(
                Line(
                    sku=line["sku"],
                    category=line.get("category") or NO_CATEGORY,
                    quantity=line["quantity"],
                    unit_price_c=_line_price(line.get("unit_price"), rate),
                )
                for line in message.get("items") or ()
            ),
        )
    if kind == "service_contact":
        sentiment = message.get("sentiment")
        return ServiceContact(
            event_id=message["event_id"],
            customer_id=message["customer_id"],
            occurred_at=occurred_at,
            channel=message["channel"],
            reason=message["reason"],
            cost_c=to_cents(message["cost"], name="cost"),
            resolved=bool(message["resolved"]),
            sentiment_m=None if sentiment is None else to_milli(sentiment),
        )
    if kind == "campaign_touch":
        return CampaignTouch(
            event_id=message["event_id"],
            customer_id=message["customer_id"],
            occurred_at=occurred_at,
            campaign_id=message["campaign_id"],
            channel=message["channel"],
            action=message["action"],
            cost_c=to_cents(message["cost"], name="cost"),
        )
    raise ValueError(f"unknown event kind {kind!r}")
