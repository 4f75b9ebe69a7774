"""Hostile input for the end-to-end acceptance test: a registry of message kinds.

Every kind builds messages for one of the three input topics and says what the engine
must do with each: ``dead`` (exactly one dead letter with a reason, no effect on any
record) or ``apply`` (counted like any valid event). Its ``stage`` says what can reject a
``dead`` message, which `tests/unit/test_hostile_kinds.py` checks without Kafka or Redis:

- ``contract``: `stream_app.contract.Contract.decode` rejects it (no clock, no history);
- ``value``: the contract or the conversion to a domain event
  (`stream_app.domain.events.from_message`) rejects it: the engine's bounds on values
  such as money, wherever they are enforced;
- ``worker``: only the running worker can, because the verdict depends on the wall clock
  (dates in the future, dates before the earliest accepted date), on the message key, on
  the customer's history (an ``event_id`` sent twice), or on the dead-letter topic's size
  limit.

Messages are built from templates whose values stay within the time range of the valid
traffic they are mixed into, with event ids of their own, so a rejected message never
shares an ``event_id`` with a valid one (except the duplicates, on purpose).
"""

from __future__ import annotations

import base64
import dataclasses
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import orjson

from load.simulator import SimEvent
from stream_app.settings import Settings

DEAD = "dead"
APPLY = "apply"
CONTRACT = "contract"
VALUE = "value"
WORKER = "worker"

PURCHASE = "purchase"
CONTACT = "service_contact"
TOUCH = "campaign_touch"
TOPIC_KINDS = (PURCHASE, CONTACT, TOUCH)

INVALID_JSON = frozenset({"invalid_json"})
SCHEMA = frozenset({"schema_violation"})
OVERSIZE = frozenset({"oversize"})
OUT_OF_BOUNDS = frozenset({"schema_violation", "invalid_value"})
NOT_FINITE = frozenset({"invalid_json", "schema_violation", "invalid_value"})
BAD_TIME = frozenset({"invalid_value"})
TOO_OLD = frozenset({"invalid_value", "schema_violation"})

#: Money amounts above this many major units are rejected.
MONEY_BOUND = 1e12
#: Dates before this are rejected when Settings names no earliest date of its own.
DEFAULT_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
#: How far ahead of the wall clock an event may be, unless Settings says otherwise.
DEFAULT_FUTURE_TOLERANCE = timedelta(days=1)

_MINUS_11 = timezone(timedelta(hours=-11))
_MONEY_FIELD = {PURCHASE: "amount", CONTACT: "cost", TOUCH: "cost"}


@dataclass(frozen=True)
class Context:
    """What the verdicts depend on besides the message: the clock and the engine's limits."""

    now: datetime
    earliest: datetime | None = None
    future_tolerance: timedelta = DEFAULT_FUTURE_TOLERANCE
    max_event_bytes: int = 65536
    base_currency: str = "USD"
    fx_currencies: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, settings: Settings, now: datetime) -> Context:
        """Limits from `settings`; the earliest date and future tolerance if it names them."""
        return cls(
            now=now,
            earliest=settings_earliest(settings),
            future_tolerance=settings_future_tolerance(settings),
            max_event_bytes=settings.max_event_bytes,
            base_currency=settings.base_currency,
            fx_currencies=frozenset(settings.fx_rates),
        )

    @property
    def latest_accepted(self) -> datetime:
        """The latest event time the engine accepts at `now`."""
        return self.now + self.future_tolerance

    @property
    def earliest_or_default(self) -> datetime:
        return self.earliest or DEFAULT_EARLIEST


def _as_datetime(value: Any, unit: str = "") -> datetime | None:
    """A date-like settings value as an aware datetime; None unless it lies in 1900..2199.

    `unit` is the suffix of the field's name: ``ms`` or ``s`` make a number epoch
    milliseconds or seconds.
    """
    found: datetime | None = None
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if number and unit in ("ms", "s"):
        found = datetime.fromtimestamp(value / (1000 if unit == "ms" else 1), UTC)
    elif isinstance(value, datetime):
        found = value if value.tzinfo else value.replace(tzinfo=UTC)
    elif isinstance(value, date):
        found = datetime(value.year, value.month, value.day, tzinfo=UTC)
    elif isinstance(value, str) and value:
        try:
            found = _as_datetime(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            found = None
    elif isinstance(value, int) and not isinstance(value, bool) and 1900 <= value <= 2199:
        found = datetime(value, 1, 1, tzinfo=UTC)  # a year
    elif isinstance(value, int | float) and not isinstance(value, bool) and abs(value) > 1e11:
        found = datetime.fromtimestamp(value / 1000, UTC)  # epoch milliseconds
    if found is None or not 1900 <= found.year <= 2199:
        return None
    return found


_EARLIEST_WORDS = ("earliest", "oldest", "min_event", "min_occurred", "event_time_floor")


def settings_earliest(settings: Settings) -> datetime | None:
    """The earliest accepted event date if `Settings` has a field for it, else None.

    The engine's setting is looked up by name (``earliest`` or ``oldest`` in it, or
    ``min_event...``), so the test follows the configuration whatever the field is called.
    """
    for f in dataclasses.fields(settings):
        if any(word in f.name for word in _EARLIEST_WORDS):
            found = _as_datetime(getattr(settings, f.name), f.name.rsplit("_", 1)[-1])
            if found is not None:
                return found
    return None


_UNITS = {
    "ms": timedelta(milliseconds=1), "s": timedelta(seconds=1), "sec": timedelta(seconds=1),
    "secs": timedelta(seconds=1), "seconds": timedelta(seconds=1),
    "min": timedelta(minutes=1), "minutes": timedelta(minutes=1),
    "h": timedelta(hours=1), "hours": timedelta(hours=1), "days": timedelta(days=1),
}


def settings_future_tolerance(settings: Settings) -> timedelta:
    """How far in the future events may be, if `Settings` has a field for it, else one day.

    Looked up by name: a field with ``future`` or ``clock_skew`` in it holding a
    `timedelta`, or a number whose name ends in its unit (``_s``, ``_ms``, ``_days``, ...).
    """
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        named = "future" in f.name or "clock_skew" in f.name
        if not named or isinstance(value, bool):
            continue
        if isinstance(value, timedelta):
            return value
        unit = _UNITS.get(f.name.rsplit("_", 1)[-1])
        if unit is not None and isinstance(value, int | float) and value > 0:
            return unit * value
    return DEFAULT_FUTURE_TOLERANCE


@dataclass(frozen=True)
class Hostile:
    """One hostile message and what must become of it."""

    kind: str
    topic_kind: str
    key: bytes | None
    value: bytes | None
    expect: str
    #: For ``apply``: the event as the ground truth must count it.
    event: SimEvent | None = None
    #: For duplicates: the index of the valid event it repeats; it is sent after that one.
    after: int | None = None
    #: For duplicates: the repeated id, which the dead letter's reason must name.
    event_id: str | None = None


@dataclass(frozen=True)
class Kind:
    """A registered kind of hostile message."""

    name: str
    expect: str
    stage: str
    build: Callable[[Maker, str], Hostile]
    codes: frozenset[str] | None  # acceptable error codes of its dead letters; None: any known
    count: int
    topic_kinds: tuple[str, ...]
    why: str


KINDS: dict[str, Kind] = {}


def kind(
    name: str,
    expect: str,
    stage: str,
    why: str,
    codes: frozenset[str] | None = None,
    count: int = 55,
    topic_kinds: tuple[str, ...] = TOPIC_KINDS,
) -> Callable[[Callable[[Maker, str], Hostile]], Callable[[Maker, str], Hostile]]:
    """Register a builder of messages of kind `name`."""

    def register(build: Callable[[Maker, str], Hostile]) -> Callable[[Maker, str], Hostile]:
        if name in KINDS:
            raise ValueError(f"hostile kind {name!r} registered twice")
        if expect == APPLY and stage != CONTRACT:
            raise ValueError(f"{name}: a kind that must apply passes every stage; use CONTRACT")
        KINDS[name] = Kind(name, expect, stage, build, codes, count, topic_kinds, why)
        return build

    return register


def _text(moment: datetime) -> str:
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


@dataclass
class Maker:
    """Builds template payloads, keys and ids for the kinds; one per generated stream."""

    ctx: Context
    rng: random.Random
    valid: Sequence[SimEvent]
    avoid: frozenset[str] = frozenset()
    _serial: int = 0
    _used: set[int] = field(default_factory=set)
    _customers: list[str] = field(default_factory=list)
    _repeatable: frozenset[str] = frozenset()
    _span: tuple[datetime, datetime] = (datetime(2025, 1, 1, tzinfo=UTC),
                                         datetime(2025, 7, 1, tzinfo=UTC))

    def __post_init__(self) -> None:
        self._customers = sorted({e.customer_id for e in self.valid} - self.avoid)
        # Events are repeated only for customers that get no other extra valid event, so
        # the original is the customer's latest event when its copy comes: recent by any
        # measure of an engine's window of recent events.
        self._repeatable = frozenset(self._customers[::2])
        if self.valid:
            self._span = (min(e.occurred_at for e in self.valid),
                          max(e.occurred_at for e in self.valid))

    # -- ids and times ----------------------------------------------------------------------

    def event_id(self, name: str) -> str:
        self._serial += 1
        return f"hostile-{name}-{self._serial}"

    def customer(self) -> str:
        """An existing customer of the valid traffic (none of `avoid`)."""
        if not self._customers:
            return self.fresh_customer()
        return self.rng.choice(self._customers)

    def apply_customer(self) -> str:
        """An existing customer whose events are never repeated (see `original`)."""
        for _ in range(100):
            cid = self.customer()
            if cid not in self._repeatable:
                return cid
        return self.fresh_customer()

    def fresh_customer(self) -> str:
        """A customer that has no valid event."""
        self._serial += 1
        return f"H{self._serial:07d}"

    def moment(self) -> datetime:
        """A time inside the span of the valid traffic, to the millisecond."""
        lo, hi = self._span
        ms = self.rng.randrange(int((hi - lo).total_seconds() * 1000) + 1)
        return lo + timedelta(milliseconds=ms)

    # -- payloads ---------------------------------------------------------------------------

    def payload(
        self, topic_kind: str, name: str, customer_id: str | None = None,
        when: datetime | None = None
    ) -> dict[str, Any]:
        """A valid message of `topic_kind` with a fresh event id."""
        rng = self.rng
        base: dict[str, Any] = {
            "event_id": self.event_id(name),
            "customer_id": self.customer() if customer_id is None else customer_id,
            "occurred_at": _text(when or self.moment()),
        }
        if topic_kind == PURCHASE:
            amount = round(rng.uniform(1, 300), 2)
            base |= {"kind": rng.choice(("order", "order", "order", "return")),
                     "amount": amount, "currency": self.ctx.base_currency,
                     "channel": rng.choice(("web", "store", "app"))}
            if rng.random() < 0.7:
                base["cost"] = round(amount * rng.uniform(0.2, 0.8), 2)
            return base
        if topic_kind == CONTACT:
            base |= {"channel": rng.choice(("phone", "email", "chat", "store", "other")),
                     "reason": rng.choice(("billing", "complaint", "technical",
                                           "cancellation_request", "inquiry", "other")),
                     "cost": round(rng.uniform(0, 20), 2), "resolved": rng.random() < 0.7}
            if rng.random() < 0.5:
                base["sentiment"] = round(rng.uniform(-1, 1), 3)
            return base
        if topic_kind == TOUCH:
            return base | {"campaign_id": f"K{rng.randrange(6)}",
                           "channel": rng.choice(("email", "sms", "push", "mail", "call", "ad")),
                           "action": rng.choice(("sent", "delivered", "opened", "clicked",
                                                 "converted", "unsubscribed", "bounced")),
                           "cost": round(rng.uniform(0, 1), 2)}
        raise ValueError(f"unknown topic kind {topic_kind!r}")

    def original(self, topic_kind: str) -> int:
        """The index of a valid `topic_kind` event not yet repeated, of a repeatable customer."""
        for _ in range(10_000):
            i = self.rng.randrange(len(self.valid))
            e = self.valid[i]
            fits = e.topic_kind == topic_kind and e.customer_id in self._repeatable
            if fits and i not in self._used:
                self._used.add(i)
                return i
        raise ValueError(f"no valid {topic_kind} event left to repeat")

    # -- messages ---------------------------------------------------------------------------

    def dead(self, name: str, topic_kind: str, value: bytes | None,
             key: bytes | None = None, customer_id: str | None = None) -> Hostile:
        if key is None and customer_id is not None:
            key = customer_id.encode()
        return Hostile(name, topic_kind, key, value, DEAD)

    def dead_payload(self, name: str, topic_kind: str, changes: dict[str, Any],
                     drop: Sequence[str] = (), key: bytes | None = None) -> Hostile:
        """A template payload with `changes` applied and `drop` removed, keyed by its customer."""
        p = self.payload(topic_kind, name)
        for f in drop:
            p.pop(f, None)
        p.update(changes)
        cid = p.get("customer_id")
        if key is None:
            key = cid.encode() if isinstance(cid, str) else self.customer().encode()
        return Hostile(name, topic_kind, key, orjson.dumps(p), DEAD)

    def apply(self, name: str, topic_kind: str, payload: dict[str, Any],
              key: bytes | None | str = "customer", value: bytes | None = None) -> Hostile:
        """A message that must be applied; `payload` is what the ground truth counts."""
        cid = payload["customer_id"]
        k = cid.encode() if key == "customer" else key
        assert not isinstance(k, str)
        when = datetime.fromisoformat(payload["occurred_at"]).astimezone(UTC)
        event = SimEvent(topic_kind, cid, when, payload)
        return Hostile(name, topic_kind, k, value if value is not None else orjson.dumps(payload),
                       APPLY, event=event)


# -- invalid JSON and UTF-8, null and empty values ------------------------------------------


@kind("null_value", DEAD, CONTRACT, "a tombstone: no value at all", INVALID_JSON)
def _null_value(m: Maker, tk: str) -> Hostile:
    return m.dead("null_value", tk, None, customer_id=m.customer())


@kind("empty_value", DEAD, CONTRACT, "a zero-length value", INVALID_JSON)
def _empty_value(m: Maker, tk: str) -> Hostile:
    return m.dead("empty_value", tk, b"", customer_id=m.customer())


@kind("whitespace_value", DEAD, CONTRACT, "only blanks and newlines", INVALID_JSON)
def _whitespace_value(m: Maker, tk: str) -> Hostile:
    return m.dead("whitespace_value", tk, b" \n\t \r\n", customer_id=m.customer())


@kind("invalid_utf8", DEAD, CONTRACT, "bytes that are not UTF-8 inside a string", INVALID_JSON)
def _invalid_utf8(m: Maker, tk: str) -> Hostile:
    p = orjson.dumps(m.payload(tk, "invalid_utf8"))
    return m.dead("invalid_utf8", tk, p.replace(b'"hostile-', b'"\xff\xfe\xc3\x28-', 1),
                  customer_id=m.customer())


@kind("binary_garbage", DEAD, CONTRACT, "random bytes", INVALID_JSON)
def _binary_garbage(m: Maker, tk: str) -> Hostile:
    return m.dead("binary_garbage", tk, b"\x80" + m.rng.randbytes(m.rng.randrange(1, 200)),
                  customer_id=m.customer())


@kind("utf8_bom", DEAD, CONTRACT, "a valid object behind a UTF-8 byte order mark", INVALID_JSON)
def _utf8_bom(m: Maker, tk: str) -> Hostile:
    return m.dead("utf8_bom", tk, b"\xef\xbb\xbf" + orjson.dumps(m.payload(tk, "utf8_bom")),
                  customer_id=m.customer())


@kind("utf16_json", DEAD, CONTRACT, "a valid object encoded as UTF-16", INVALID_JSON)
def _utf16_json(m: Maker, tk: str) -> Hostile:
    text = orjson.dumps(m.payload(tk, "utf16_json")).decode()
    return m.dead("utf16_json", tk, text.encode("utf-16"), customer_id=m.customer())


@kind("lone_surrogate", DEAD, CONTRACT, "a \\ud800 escape with no low surrogate", INVALID_JSON)
def _lone_surrogate(m: Maker, tk: str) -> Hostile:
    p = orjson.dumps(m.payload(tk, "lone_surrogate"))
    return m.dead("lone_surrogate", tk, p.replace(b'"hostile-', b'"\\ud800-', 1),
                  customer_id=m.customer())


@kind("truncated_json", DEAD, CONTRACT, "a valid object cut short", INVALID_JSON)
def _truncated_json(m: Maker, tk: str) -> Hostile:
    p = orjson.dumps(m.payload(tk, "truncated_json"))
    return m.dead("truncated_json", tk, p[: m.rng.randrange(1, len(p) - 1)],
                  customer_id=m.customer())


@kind("trailing_garbage", DEAD, CONTRACT, "a valid object followed by more text", INVALID_JSON)
def _trailing_garbage(m: Maker, tk: str) -> Hostile:
    p = orjson.dumps(m.payload(tk, "trailing_garbage"))
    return m.dead("trailing_garbage", tk, p + m.rng.choice((b"x", b"{}", b",", b"\x00")),
                  customer_id=m.customer())


@kind("trailing_comma", DEAD, CONTRACT, "a comma before the closing brace", INVALID_JSON)
def _trailing_comma(m: Maker, tk: str) -> Hostile:
    p = orjson.dumps(m.payload(tk, "trailing_comma"))
    return m.dead("trailing_comma", tk, p[:-1] + b",}", customer_id=m.customer())


@kind("single_quotes", DEAD, CONTRACT, "a Python dict repr rather than JSON", INVALID_JSON)
def _single_quotes(m: Maker, tk: str) -> Hostile:
    return m.dead("single_quotes", tk, repr(m.payload(tk, "single_quotes")).encode(),
                  customer_id=m.customer())


@kind("plain_text", DEAD, CONTRACT, "prose, not JSON", INVALID_JSON)
def _plain_text(m: Maker, tk: str) -> Hostile:
    return m.dead("plain_text", tk, b"order placed by " + m.customer().encode(),
                  customer_id=m.customer())


@kind("json_array", DEAD, CONTRACT, "a JSON array holding a valid object", INVALID_JSON)
def _json_array(m: Maker, tk: str) -> Hostile:
    return m.dead("json_array", tk, orjson.dumps([m.payload(tk, "json_array")]),
                  customer_id=m.customer())


@kind("json_scalar", DEAD, CONTRACT, "a JSON string, number, boolean or null", INVALID_JSON)
def _json_scalar(m: Maker, tk: str) -> Hostile:
    return m.dead("json_scalar", tk, m.rng.choice((b'"order"', b"42", b"true", b"null", b"-0.5")),
                  customer_id=m.customer())


@kind("deep_nesting", DEAD, CONTRACT, "arrays nested 5,000 deep in an extra field", INVALID_JSON)
def _deep_nesting(m: Maker, tk: str) -> Hostile:
    p = orjson.dumps(m.payload(tk, "deep_nesting"))
    depth = m.rng.randrange(1100, 5000)
    return m.dead("deep_nesting", tk, p[:-1] + b',"x":' + b"[" * depth + b"]" * depth + b"}",
                  customer_id=m.customer())


def _literal(name: str, literal: bytes, why: str, codes: frozenset[str]) -> None:
    @kind(name, DEAD, CONTRACT, why, codes)
    def build(m: Maker, tk: str) -> Hostile:
        p = m.payload(tk, name)
        field_name = _MONEY_FIELD[tk]
        p[field_name] = 7.0
        raw = orjson.dumps(p).replace(f'"{field_name}":7.0'.encode(),
                                      f'"{field_name}":'.encode() + literal, 1)
        return m.dead(name, tk, raw, customer_id=p["customer_id"])


_literal("nan_amount", b"NaN", "NaN as an amount or cost", INVALID_JSON)
_literal("infinity_amount", b"Infinity", "Infinity as an amount or cost", INVALID_JSON)
_literal("minus_infinity_amount", b"-Infinity", "-Infinity as an amount or cost", INVALID_JSON)
_literal("overflow_1e400", b"1e400", "1e400: no finite double", NOT_FINITE)


# -- schema violations ----------------------------------------------------------------------


def _mutation(name: str, why: str, changes: dict[str, dict[str, Any]],
              drop: dict[str, tuple[str, ...]] | None = None,
              codes: frozenset[str] = SCHEMA, stage: str = CONTRACT) -> None:
    """A kind that changes fields of a template payload; `changes` per topic kind."""
    topic_kinds = tuple(tk for tk in TOPIC_KINDS if tk in changes or (drop and tk in drop))

    @kind(name, DEAD, stage, why, codes, topic_kinds=topic_kinds)
    def build(m: Maker, tk: str) -> Hostile:
        return m.dead_payload(name, tk, dict(changes.get(tk, {})), (drop or {}).get(tk, ()))


_ALL = dict.fromkeys(TOPIC_KINDS)
_mutation("missing_event_id", "no event_id", {}, drop=dict.fromkeys(TOPIC_KINDS, ("event_id",)))
_mutation("missing_customer_id", "no customer_id", {},
          drop=dict.fromkeys(TOPIC_KINDS, ("customer_id",)))
_mutation("missing_occurred_at", "no occurred_at", {},
          drop=dict.fromkeys(TOPIC_KINDS, ("occurred_at",)))
_mutation("missing_required", "a required field of the kind left out", {},
          drop={PURCHASE: ("currency",), CONTACT: ("resolved",), TOUCH: ("campaign_id",)})
_mutation("empty_object", "{}", {}, drop={tk: ("event_id", "customer_id", "occurred_at")
                                          for tk in TOPIC_KINDS})
_mutation("null_required", "null in a required field", {
    PURCHASE: {"amount": None}, CONTACT: {"resolved": None}, TOUCH: {"action": None}})
_mutation("null_customer_id", "customer_id: null", {tk: {"customer_id": None} for tk in _ALL})
_mutation("null_occurred_at", "occurred_at: null", {tk: {"occurred_at": None} for tk in _ALL})
_mutation("null_optional", "null in an optional field", {
    PURCHASE: {"cost": None}, CONTACT: {"sentiment": None}, TOUCH: {"schema_version": None}})
_mutation("empty_event_id", "event_id: empty string", {tk: {"event_id": ""} for tk in _ALL})
_mutation("empty_string_field", "an empty string where 1+ characters are required", {
    PURCHASE: {"channel": ""}, CONTACT: {"reason": ""}, TOUCH: {"campaign_id": ""}})
_mutation("wrong_type_money", "money as a string", {
    PURCHASE: {"amount": "59.99 USD"}, CONTACT: {"cost": "4.50"}, TOUCH: {"cost": "n/a"}})
_mutation("wrong_type_bool", "true/false where a number or string belongs, or 'yes'", {
    PURCHASE: {"amount": True}, CONTACT: {"resolved": "yes"}, TOUCH: {"channel": False}})
_mutation("wrong_type_container", "an object or array where a scalar belongs", {
    PURCHASE: {"currency": ["USD"]}, CONTACT: {"channel": {"name": "phone"}},
    TOUCH: {"cost": [0.1]}})
_mutation("numeric_event_id", "event_id as a number", {tk: {"event_id": 12345} for tk in _ALL})
_mutation("numeric_customer_id", "customer_id as a number", {
    tk: {"customer_id": 42} for tk in _ALL})
_mutation("unknown_enum", "a value outside an enum", {
    PURCHASE: {"kind": "refund"}, CONTACT: {"reason": "alien_abduction"},
    TOUCH: {"action": "liked"}})
_mutation("enum_wrong_case", "an enum value in upper case", {
    PURCHASE: {"kind": "ORDER"}, CONTACT: {"channel": "Phone"}, TOUCH: {"channel": "EMAIL"}})
_mutation("negative_money", "a negative amount or cost", {
    PURCHASE: {"amount": -5.0}, CONTACT: {"cost": -0.01}, TOUCH: {"cost": -1}})
_mutation("negative_cost", "a purchase with a negative cost of goods", {PURCHASE: {"cost": -3.5}})
_mutation("sentiment_out_of_range", "sentiment outside -1..1", {CONTACT: {"sentiment": 1.5}})
_mutation("bad_currency", "a currency that is not three upper-case letters", {
    PURCHASE: {"currency": "usd"}})
_mutation("bad_items", "order lines that break the schema", {
    PURCHASE: {"items": [{"sku": "", "quantity": 0}]}})
_mutation("items_not_array", "items as an object", {
    PURCHASE: {"items": {"sku": "A", "quantity": 1}}})
_mutation("schema_version_2", "schema_version 2 on a v1 topic", {
    tk: {"schema_version": 2} for tk in _ALL})
_mutation("long_event_id", "an event_id of 129 characters", {
    tk: {"event_id": "e" * 129} for tk in _ALL})
_mutation("unsupported_currency", "a currency with no exchange rate", {
    PURCHASE: {"currency": "XTS"}}, codes=frozenset({"unsupported_currency"}), stage=VALUE)


@kind("duplicate_json_key", DEAD, CONTRACT, "amount given twice, the last one negative", SCHEMA,
      topic_kinds=(PURCHASE,))
def _duplicate_json_key(m: Maker, tk: str) -> Hostile:
    p = m.payload(tk, "duplicate_json_key")
    raw = orjson.dumps(p)[:-1] + b',"amount":-1}'
    return m.dead("duplicate_json_key", tk, raw, customer_id=p["customer_id"])


# -- bad timestamps -------------------------------------------------------------------------


def _bad_time(name: str, why: str, render: Callable[[datetime], Any]) -> None:
    @kind(name, DEAD, CONTRACT, why, SCHEMA)
    def build(m: Maker, tk: str) -> Hostile:
        return m.dead_payload(name, tk, {"occurred_at": render(m.moment())})


_bad_time("time_without_offset", "no Z and no offset", lambda t: t.strftime("%Y-%m-%dT%H:%M:%S"))
_bad_time("time_impossible_date", "February 30th", lambda t: t.strftime("%Y-02-30T%H:%M:%SZ"))
_bad_time("time_leap_second", "second 60", lambda t: t.strftime("%Y-%m-%dT23:59:60Z"))
_bad_time("time_space_separator", "a space for the T", lambda t: t.strftime("%Y-%m-%d %H:%M:%SZ"))
_bad_time("time_date_only", "a date with no time", lambda t: t.strftime("%Y-%m-%d"))
_bad_time("time_epoch_number", "epoch milliseconds as a number",
          lambda t: int(t.timestamp() * 1000))
_bad_time("time_ten_fraction_digits", "ten fractional digits",
          lambda t: t.strftime("%Y-%m-%dT%H:%M:%S.1234567890Z"))
_bad_time("time_offset_24h", "an offset of +24:00", lambda t: t.strftime("%Y-%m-%dT%H:%M:%S+24:00"))
_bad_time("time_year_1899", "a year before the schema's 1900",
          lambda t: t.strftime("1899-%m-%dT%H:%M:%SZ"))
_bad_time("time_year_2200", "a year after the schema's 2199",
          lambda t: t.strftime("2200-%m-%dT%H:%M:%SZ"))
_bad_time("time_garbage", "not a time at all", lambda t: "yesterday")


# -- customer ids and keys --------------------------------------------------------------------


def _bad_customer(name: str, why: str, make_id: Callable[[str], str]) -> None:
    @kind(name, DEAD, CONTRACT, why, SCHEMA)
    def build(m: Maker, tk: str) -> Hostile:
        cid = make_id(m.customer())
        p = m.payload(tk, name, customer_id=cid)
        return m.dead(name, tk, orjson.dumps(p), key=cid.encode())


_bad_customer("customer_id_braces", "braces: they would break the Redis hash tag",
              lambda c: "{" + c + "}")
_bad_customer("customer_id_one_brace", "a closing brace inside", lambda c: c[:3] + "}" + c[3:])
_bad_customer("customer_id_space", "a space inside", lambda c: c[:3] + " " + c[3:])
_bad_customer("customer_id_edge_whitespace", "a trailing newline or leading tab",
              lambda c: c + "\n" if len(c) % 2 else "\t" + c)
_bad_customer("customer_id_nbsp", "a no-break space inside", lambda c: c[:3] + "\u00a0" + c[3:])
_bad_customer("customer_id_empty", "an empty string", lambda c: "")
_bad_customer("customer_id_too_long", "129 characters", lambda c: (c * 130)[:129])


def _key_kind(name: str, why: str, make_key: Callable[[Maker, str], bytes]) -> None:
    @kind(name, DEAD, WORKER, why)
    def build(m: Maker, tk: str) -> Hostile:
        p = m.payload(tk, name)
        return m.dead(name, tk, orjson.dumps(p), key=make_key(m, p["customer_id"]))


def _other_key(m: Maker, cid: str) -> bytes:
    for _ in range(100):
        other = m.customer()
        if other != cid:
            return other.encode()
    return (cid + "-other").encode()


_key_kind("key_other_customer", "keyed by another customer", _other_key)
_key_kind("key_empty", "a zero-length key (not a null key)", lambda m, c: b"")
_key_kind("key_invalid_utf8", "the customer id with bytes that are not UTF-8",
          lambda m, c: c.encode() + b"\xff")
_key_kind("key_padded", "the customer id with a trailing space", lambda m, c: c.encode() + b" ")
_key_kind("key_lower_case", "the customer id in lower case", lambda m, c: c.lower().encode())
_key_kind("key_json_quoted", "the customer id as a JSON string", lambda m, c: orjson.dumps(c))


# -- money out of bounds ----------------------------------------------------------------------


def _money(name: str, why: str, value: float | int, fields: dict[str, str] | None = None,
           literal: bytes | None = None) -> None:
    fields = fields or _MONEY_FIELD

    text = literal if literal is not None else orjson.dumps(value)

    @kind(name, DEAD, VALUE, why, OUT_OF_BOUNDS, topic_kinds=tuple(fields))
    def build(m: Maker, tk: str) -> Hostile:
        p = m.payload(tk, name)
        p[fields[tk]] = 7.0
        raw = orjson.dumps(p).replace(f'"{fields[tk]}":7.0'.encode(),
                                      f'"{fields[tk]}":'.encode() + text, 1)
        return m.dead(name, tk, raw, customer_id=p["customer_id"])


_money("money_just_above_bound", "1e12 + 1 major units", MONEY_BOUND + 1)
_money("money_1e15", "a quadrillion", 1e15)
_money("money_1e300", "1e300", 1e300)
_money("money_max_double", "the largest finite double", 1.7976931348623157e308)
_money("money_huge_integer", "a 31-digit integer literal", 10**30,
       literal=b"1000000000000000000000000000000")
_money("purchase_cost_above_bound", "a purchase's cost of goods above 1e12", 5e12,
       fields={PURCHASE: "cost"})


# -- dates against the clock and the earliest date ----------------------------------------------


def _dated(name: str, why: str, when: Callable[[Context], datetime],
           codes: frozenset[str], render: Callable[[datetime], str] = _text) -> None:
    @kind(name, DEAD, WORKER, why, codes)
    def build(m: Maker, tk: str) -> Hostile:
        return m.dead_payload(name, tk, {"occurred_at": render(when(m.ctx))})


_dated("future_two_days", "a day past the future tolerance",
       lambda c: c.latest_accepted + timedelta(days=1), BAD_TIME)
_dated("future_month", "a month ahead of the clock",
       lambda c: c.latest_accepted + timedelta(days=30), BAD_TIME)
_dated("future_offset_form", "ahead of the clock, written with a -11:00 offset",
       lambda c: c.latest_accepted + timedelta(days=3), BAD_TIME,
       render=lambda t: t.astimezone(_MINUS_11).strftime("%Y-%m-%dT%H:%M:%S-11:00"))
_dated("far_future_2199", "the last year the schema allows",
       lambda c: datetime(2199, 12, 31, 23, 59, 59, tzinfo=UTC), BAD_TIME)
_dated("far_future_2100", "the year 2100", lambda c: datetime(2100, 1, 1, tzinfo=UTC), BAD_TIME)
_dated("far_past_1900", "the first year the schema allows",
       lambda c: datetime(1900, 1, 1, tzinfo=UTC), TOO_OLD)
_dated("far_past_1901", "1901, long before the earliest accepted date",
       lambda c: datetime(1901, 6, 15, 12, tzinfo=UTC), TOO_OLD)
_dated("before_earliest", "a second before the earliest accepted date (1950 if none is set)",
       lambda c: (c.earliest - timedelta(seconds=1)) if c.earliest else
       datetime(1950, 6, 1, tzinfo=UTC), TOO_OLD)


# -- size -------------------------------------------------------------------------------------


def _padded(m: Maker, tk: str, name: str, size: int) -> tuple[str, bytes]:
    """A valid payload padded with incompressible text in an extra field to `size` bytes."""
    p = m.payload(tk, name)
    head = orjson.dumps(p)[:-1] + b',"pad":"'
    need = max(size - len(head) - 2, 0)
    pad = base64.b64encode(m.rng.randbytes(need * 3 // 4 + 3))[:need]
    return p["customer_id"], head + pad + b'"}'


def _oversize(name: str, why: str, size: Callable[[Context], int], count: int) -> None:
    @kind(name, DEAD, CONTRACT, why, OVERSIZE, count=count)
    def build(m: Maker, tk: str) -> Hostile:
        cid, raw = _padded(m, tk, name, size(m.ctx))
        return m.dead(name, tk, raw, customer_id=cid)


_oversize("oversize_by_one_byte", "one byte above CVM_MAX_EVENT_BYTES",
          lambda c: c.max_event_bytes + 1, 30)
_oversize("oversize_100k", "about 100 KB", lambda c: max(100_000, c.max_event_bytes + 1), 20)
_oversize("oversize_1mb", "about 1 MB: its dead letter is near a producer's default limit",
          lambda c: max(1_000_000, c.max_event_bytes + 1), 3)
_oversize("oversize_3mb", "3.2 MB: its full dead letter would not fit the topic",
          lambda c: max(3_200_000, c.max_event_bytes + 1), 2)


# -- duplicates -------------------------------------------------------------------------------


@kind("duplicate_resend", DEAD, WORKER, "a valid event sent again byte for byte (producer retry)")
def _duplicate_resend(m: Maker, tk: str) -> Hostile:
    i = m.original(tk)
    e = m.valid[i]
    return Hostile("duplicate_resend", tk, e.customer_id.encode(), orjson.dumps(e.payload), DEAD,
                   after=i, event_id=e.payload["event_id"])


@kind("duplicate_changed", DEAD, WORKER, "a valid event's id reused with a different amount")
def _duplicate_changed(m: Maker, tk: str) -> Hostile:
    i = m.original(tk)
    e = m.valid[i]
    p = dict(e.payload)
    field_name = _MONEY_FIELD[tk]
    p[field_name] = round(p[field_name] + 1.25, 2)
    return Hostile("duplicate_changed", tk, e.customer_id.encode(), orjson.dumps(p), DEAD,
                   after=i, event_id=e.payload["event_id"])


# -- hostile but valid: these must be applied ---------------------------------------------------


def _valid(name: str, why: str, change: Callable[[Maker, dict[str, Any]], None],
           key: str | None = "customer", fresh: bool = False,
           topic_kinds: tuple[str, ...] = TOPIC_KINDS, count: int = 55) -> None:
    @kind(name, APPLY, CONTRACT, why, topic_kinds=topic_kinds, count=count)
    def build(m: Maker, tk: str) -> Hostile:
        p = m.payload(tk, name, customer_id=m.fresh_customer() if fresh else m.apply_customer())
        change(m, p)
        return m.apply(name, tk, p, key=key)


def _nothing(m: Maker, p: dict[str, Any]) -> None:
    return None


_valid("null_key", "a valid event with no key: it lands on any partition", _nothing, key=None,
       count=120)
_valid("unknown_fields", "extra properties, including nested ones",
       lambda m, p: p.update({"x_note": "hello", "x_nested": {"a": [1, {"b": None}]},
                              "x_null": None}))


@kind("deep_nesting_allowed", APPLY, CONTRACT, "arrays nested 500 deep in an extra property")
def _deep_nesting_allowed(m: Maker, tk: str) -> Hostile:
    p = m.payload(tk, "deep_nesting_allowed", customer_id=m.apply_customer())
    raw = orjson.dumps(p)[:-1] + b',"x_deep":' + b"[" * 500 + b"]" * 500 + b"}"
    return m.apply("deep_nesting_allowed", tk, p, value=raw)


_valid("ids_with_braces_and_spaces", "event_id (and campaign_id) with braces and whitespace",
       lambda m, p: p.update({"event_id": "{" + p["event_id"] + "} \t x",
                              **({"campaign_id": "{K 1}\n"} if "campaign_id" in p else {})}))
_valid("unicode_customer_id", "a customer id with accents, CJK and an emoji",
       lambda m, p: p.update({"customer_id": f"É客户-🙂-{m.fresh_customer()}"}), fresh=True)
_valid("customer_id_128_chars", "a customer id of exactly 128 characters",
       lambda m, p: p.update({"customer_id": (m.fresh_customer() + "x" * 128)[:128]}), fresh=True)
_valid("offset_timestamp", "occurred_at with a -05:30 offset and 9 fractional digits",
       lambda m, p: p.update({"occurred_at": (
           datetime.fromisoformat(p["occurred_at"]) - timedelta(hours=5, minutes=30)
       ).strftime("%Y-%m-%dT%H:%M:%S.123456789-05:30")}))
_valid("schema_version_1", "schema_version 1 given explicitly", lambda m, p: p.update(
    {"schema_version": 1}))
_valid("zero_money", "amount or cost 0, and -0.0",
       lambda m, p: p.update({_money_field(p): m.rng.choice((0, 0.0, -0.0))}))
_valid("half_cent_rounding", "amounts with a third decimal (rounded half to even)",
       lambda m, p: p.update({_money_field(p): m.rng.choice((12.345, 0.005, 0.015, 7.125))}))
_valid("money_just_below_bound", "just under 1e12 major units",
       lambda m, p: p.update({_money_field(p): 999_999_999_999.99}), fresh=True, count=30)
_valid("near_future", "six hours ahead of the clock, within the tolerance",
       lambda m, p: p.update({"occurred_at": _text(m.ctx.now + timedelta(hours=6))}),
       fresh=True, count=30)
_valid("long_ago_but_accepted", "a day after the earliest accepted date (2012 if none is set)",
       lambda m, p: p.update({"occurred_at": _text(
           m.ctx.earliest + timedelta(days=1) if m.ctx.earliest else
           datetime(2012, 3, 4, 5, 6, 7, tzinfo=UTC))}), fresh=True, count=30)


def _money_field(p: dict[str, Any]) -> str:
    return "amount" if "amount" in p else "cost"


@kind("event_id_of_other_customer", APPLY, CONTRACT,
      "an event_id another customer already used: duplicates are per customer")
def _event_id_of_other_customer(m: Maker, tk: str) -> Hostile:
    i = m.original(tk)
    e = m.valid[i]
    p = m.payload(tk, "event_id_of_other_customer", customer_id=m.fresh_customer())
    p["event_id"] = e.payload["event_id"]
    return m.apply("event_id_of_other_customer", tk, p)


# -- generation -------------------------------------------------------------------------------


def generate(
    valid: Sequence[SimEvent],
    ctx: Context,
    seed: int = 0,
    scale: float = 1.0,
    avoid: frozenset[str] = frozenset(),
    kinds: Sequence[str] | None = None,
) -> list[Hostile]:
    """Every registered kind's messages, `scale` times its count (at least one each).

    Duplicates repeat events of `valid`; no message repeats or names a customer in `avoid`
    except by chance of `fresh_customer` (never). The order is by kind; the caller mixes them
    into the valid traffic.
    """
    rng = random.Random(seed)
    maker = Maker(ctx, rng, valid, avoid)
    out: list[Hostile] = []
    for name in kinds or sorted(KINDS):
        k = KINDS[name]
        n = max(1, round(k.count * scale))
        for i in range(n):
            out.append(k.build(maker, k.topic_kinds[i % len(k.topic_kinds)]))
    return out


def describe_kinds() -> str:
    """One line per kind: name, expected outcome, stage, count, why."""
    return "\n".join(
        f"{k.name:32} {k.expect:5} {k.stage:8} {k.count:4}  {k.why}" for k in KINDS.values()
    )


__all__ = [
    "APPLY", "CONTRACT", "DEAD", "KINDS", "VALUE", "WORKER", "Context", "Hostile", "Kind",
    "Maker", "describe_kinds", "generate", "settings_earliest", "settings_future_tolerance",
]
