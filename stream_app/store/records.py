"""The Redis hash of one customer: how a `CustomerState` is written and read.

Public fields are plain strings a reader can use as they are: money as decimal
strings in the base currency, counts as integers, times as RFC 3339 UTC with
milliseconds. Fields starting with ``_`` are the engine's bookkeeping and are not
part of the stable interface: ``_v``, the version used for compare-and-set, and
`BOOK` (``_b``), one versioned binary field (`Book`, `pack_book`) with the purchase
days, decayed counters, applied offsets per topic partition, recent event ids,
sentiment sums, histogram marker, due times and churn memory.

Records written before `BOOK` kept these in fields of their own (`LEGACY_FIELDS`:
``_a`` by `pack_offsets`, ``_e``, ``_days``, ``_recent``, ``_ret`` ...); `book_of`
and `retention_of` read either layout, and the next write of such a record moves it
to `BOOK` and deletes them. Records written before ``_a`` kept one ``_o:<topic>``
field per topic; they are read into `CustomerState.legacy_offsets`, written back
unchanged, and never created any more.
"""

from __future__ import annotations

import base64
import functools
import math
import struct
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import numpy as np
import orjson

from stream_app.domain.alerts import AlertMemory
from stream_app.domain.churn import FEATURE_NAMES, Snapshot
from stream_app.domain.events import format_time
from stream_app.domain.ledger import CONTACT_REASONS, TOUCH_ACTIONS, CustomerState
from stream_app.domain.outcomes import WinbackOutcome
from stream_app.domain.retention import Retention
from stream_app.domain.winback import ChannelCounts, WinbackMemory

VERSION = "_v"
#: The applied offsets per topic partition (`pack_offsets`).
OFFSETS = "_a"
#: The hashes of the customer's last event ids (`pack_event_ids`).
EVENT_IDS = "_e"
#: Prefix of the per-topic offset fields of the old layout (read, never created).
OFFSET_PREFIX = "_o:"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_MONEY = (
    ("revenue", "revenue_c"),
    ("refunds", "returned_c"),
    ("cost_of_goods", "cogs_c"),
    ("cost_to_serve", "service_cost_c"),
    ("marketing_cost", "marketing_cost_c"),
)
_COUNTS = (
    ("orders", "orders"),
    ("returns", "returns"),
    ("cost_of_goods_estimated", "cogs_estimated"),
    ("unresolved_contacts", "unresolved"),
)
_FLOATS = frozenset(
    {"p_alive", "expected_purchases", "expected_spend", "clv", "value_at_risk",
     "churn_probability"}
)
_TEXT = frozenset(
    {"customer_id", "acquisition_channel", "last_click_campaign", "rfm", "rfm_segment"}
)
_TIMES = (
    ("first_purchase_at", "first_purchase"),
    ("last_purchase_at", "last_purchase"),
    ("first_event_at", "first_event"),
    ("last_event_at", "last_event"),
)


def format_money(cents: int) -> str:
    """Format integer cents as a decimal string.

    >>> format_money(-1205), format_money(7), format_money(100)
    ('-12.05', '0.07', '1.00')
    """
    sign = "-" if cents < 0 else ""
    whole, frac = divmod(abs(cents), 100)
    return f"{sign}{whole}.{frac:02d}"


def parse_money(text: str) -> int:
    """Inverse of `format_money`.

    >>> parse_money("-12.05"), parse_money("0.07")
    (-1205, 7)
    """
    sign = -1 if text.startswith("-") else 1
    whole, _, frac = text.lstrip("-").partition(".")
    return sign * (int(whole) * 100 + int((frac + "00")[:2]))


def parse_time(text: str) -> int:
    """Inverse of `format_time`."""
    delta = datetime.fromisoformat(text) - _EPOCH
    return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000


def pack_days(days: tuple[int, ...]) -> str:
    """Pack sorted day numbers as the first day and then deltas, comma separated.

    >>> pack_days((20000, 20003, 20010))
    '20000,3,7'
    >>> unpack_days(pack_days((20000, 20003, 20010)))
    (20000, 20003, 20010)
    """
    if not days:
        return ""
    parts = [str(days[0])]
    parts.extend(str(b - a) for a, b in zip(days, days[1:], strict=False))
    return ",".join(parts)


def unpack_days(text: str) -> tuple[int, ...]:
    """Inverse of `pack_days`."""
    if not text:
        return ()
    days: list[int] = []
    total = 0
    for i, part in enumerate(text.split(",")):
        total = int(part) if i == 0 else total + int(part)
        days.append(total)
    return tuple(days)


def pack_recent(recent: Mapping[str, float], at: int) -> str:
    """Pack the decayed counters and their reference time: ``at;key=value,...``.

    Values keep 17 significant digits, so a read-modify-write loses nothing.

    >>> unpack_recent(pack_recent({"orders": 1.5}, 42))
    (mappingproxy({'orders': 1.5}), 42)
    """
    body = ",".join(f"{k}={v!r}" for k, v in sorted(recent.items()))
    return f"{at};{body}"


def unpack_recent(text: str) -> tuple[MappingProxyType[str, float], int | None]:
    """Inverse of `pack_recent`; empty text is no counters."""
    if not text:
        return MappingProxyType({}), None
    at, _, body = text.partition(";")
    values = {}
    for part in filter(None, body.split(",")):
        key, _, value = part.partition("=")
        values[key] = float(value)
    return MappingProxyType(values), int(at)


def pack_offsets(offsets: Mapping[tuple[str, int], int]) -> str:
    """Pack applied offsets as ``topic:partition=offset,...;topic:...``, sorted.

    Kafka topic names use only letters, digits, ``.``, ``_`` and ``-``, so the
    separators cannot occur in them.

    >>> pack_offsets({("cvm.purchases", 3): 90, ("cvm.purchases", 0): 7, ("t", 1): 2})
    'cvm.purchases:0=7,3=90;t:1=2'
    >>> unpack_offsets(pack_offsets({("t", 1): 2, ("t", 0): 5}))
    mappingproxy({('t', 0): 5, ('t', 1): 2})
    """
    topics: dict[str, list[tuple[int, int]]] = {}
    for (topic, partition), offset in sorted(offsets.items()):
        topics.setdefault(topic, []).append((partition, offset))
    return ";".join(
        f"{topic}:" + ",".join(f"{p}={o}" for p, o in parts) for topic, parts in topics.items()
    )


def unpack_offsets(text: str) -> MappingProxyType[tuple[str, int], int]:
    """Inverse of `pack_offsets`; empty text is no offsets."""
    out: dict[tuple[str, int], int] = {}
    for group in filter(None, text.split(";")):
        topic, _, body = group.rpartition(":")
        for part in body.split(","):
            partition, _, offset = part.partition("=")
            out[(topic, int(partition))] = int(offset)
    return MappingProxyType(out)


def pack_event_ids(hashes: tuple[int, ...]) -> str:
    """Pack 64-bit event id hashes as base64 of 8 big-endian bytes each (12 characters per id
    once a few are packed together).

    >>> unpack_event_ids(pack_event_ids((1, 2**64 - 1)))
    (1, 18446744073709551615)
    """
    raw = b"".join(h.to_bytes(8, "big") for h in hashes)
    return base64.b64encode(raw).decode("ascii")


def unpack_event_ids(text: str) -> tuple[int, ...]:
    """Inverse of `pack_event_ids`."""
    raw = base64.b64decode(text)
    return tuple(int.from_bytes(raw[i : i + 8], "big") for i in range(0, len(raw), 8))


def to_fields(state: CustomerState, book: Book | None = None) -> dict[str, str]:
    """Every hash field of a customer's state: the public ones and `BOOK`.

    `book` is the bookkeeping to write (`state_book` of the state by default: no marker,
    no due times, no churn memory). Old per-topic offsets are written back as they were.
    """
    fields: dict[str, str] = {"customer_id": state.customer_id}
    for name, attr in _MONEY:
        fields[name] = format_money(getattr(state, attr))
    fields["gross_margin"] = format_money(state.gross_margin_c)
    fields["net_contribution"] = format_money(state.net_contribution_c)
    for name, attr in _COUNTS:
        fields[name] = str(getattr(state, attr))
    fields["contacts"] = str(state.contacts_total)
    for reason, n in state.contacts.items():
        fields[f"contacts.{reason}"] = str(n)
    for action, n in state.touches.items():
        fields[f"touches.{action}"] = str(n)
    for name, attr in _TIMES:
        value = getattr(state, attr)
        if value is not None:
            fields[name] = format_time(value)
    if state.acquisition_channel is not None:
        fields["acquisition_channel"] = state.acquisition_channel
    if state.last_click_campaign is not None and state.last_click_at is not None:
        fields["last_click_campaign"] = state.last_click_campaign
        fields["last_click_at"] = format_time(state.last_click_at)
    fields["repeat_purchases"] = str(state.repeat_purchases)
    for topic, offset in state.legacy_offsets.items():
        fields[f"{OFFSET_PREFIX}{topic}"] = str(offset)
    fields[BOOK] = pack_book(state_book(state) if book is None else book)
    return fields


def state_book(state: CustomerState, marker: str = "", label_due_at: int | None = None,
               rescore_at: int | None = None, retention: bytes = b"") -> Book:
    """The bookkeeping of a state; the rest of the `Book` as given."""
    return Book(state.purchase_days, state.recent, state.recent_at, state.offsets,
                state.event_ids, state.sentiment_sum_m, state.sentiment_n, marker,
                label_due_at, rescore_at, retention)


def from_fields(customer_id: str, fields: Mapping[str, str]) -> CustomerState:
    """Rebuild a state from its hash fields; an empty hash is a new customer."""
    if not fields:
        return CustomerState(customer_id)
    values = _ledger_values(customer_id, fields)
    book = book_of(fields)
    values["purchase_days"] = book.days
    values["recent"], values["recent_at"] = MappingProxyType(dict(book.recent)), book.recent_at
    values["offsets"] = MappingProxyType(dict(book.offsets))
    values["event_ids"] = book.event_ids
    values["sentiment_sum_m"], values["sentiment_n"] = book.sentiment_sum_m, book.sentiment_n
    contacts: dict[str, int] = {}
    touches: dict[str, int] = {}
    offsets: dict[str, int] = {}
    for name, raw in fields.items():
        if name.startswith("contacts."):
            contacts[name[len("contacts.") :]] = int(raw)
        elif name.startswith("touches."):
            touches[name[len("touches.") :]] = int(raw)
        elif name.startswith(OFFSET_PREFIX):
            offsets[name[len(OFFSET_PREFIX) :]] = int(raw)
    values["contacts"] = MappingProxyType(contacts)
    values["touches"] = MappingProxyType(touches)
    values["legacy_offsets"] = MappingProxyType(offsets)
    return CustomerState(**values)


def valuation_state(customer_id: str, fields: Mapping[str, str]) -> CustomerState:
    """The part of a state that valuing and RFM scoring read, from its hash fields.

    The ledger's sums, counts and times and the purchase days; none of the bookkeeping
    (decayed counters, offsets, event ids, sentiment) nor the counts by contact reason and
    touch action, and of the packed book only its first part, the days (`book_days`). A
    lookup that revalues a customer needs no more; whatever writes a state back reads it
    whole (`from_fields`).
    """
    if not fields:
        return CustomerState(customer_id)
    values = _ledger_values(customer_id, fields)
    # A record of the layout before the packed book is rare: `book_of` reads it whole.
    values["purchase_days"] = (book_days(fields[BOOK]) if BOOK in fields
                               else book_of(fields).days)
    return CustomerState(**values)


def _ledger_values(customer_id: str, fields: Mapping[str, str]) -> dict[str, Any]:
    """The ledger's sums, counts, times and channels of a record, by `CustomerState` field."""
    values: dict[str, Any] = {"customer_id": customer_id}
    for name, attr in _MONEY:
        values[attr] = parse_money(fields.get(name, "0.00"))
    for name, attr in _COUNTS:
        values[attr] = int(fields.get(name, "0"))
    for name, attr in _TIMES:
        raw = fields.get(name)
        values[attr] = None if raw is None else parse_time(raw)
    values["acquisition_channel"] = fields.get("acquisition_channel")
    values["last_click_campaign"] = fields.get("last_click_campaign")
    click = fields.get("last_click_at")
    values["last_click_at"] = None if click is None else parse_time(click)
    return values


#: The fields `public_view` reads as floats: money and the float-valued figures.
_PUBLIC_FLOATS = frozenset({name for name, _ in _MONEY} | {"gross_margin", "net_contribution"}
                           | _FLOATS)


_SKIP, _CONTACT, _TOUCH, _FLOAT, _TEXT_FIELD, _NUMBER = range(6)
#: How `public_view` reads each field name it has met (bounded: names come from storage).
_KINDS: dict[str, int] = {}


def _kind(name: str) -> int:
    kind = _KINDS.get(name)
    if kind is None:
        if name.startswith("_"):
            kind = _SKIP
        elif name.startswith("contacts."):
            kind = _CONTACT
        elif name.startswith("touches."):
            kind = _TOUCH
        elif name in _PUBLIC_FLOATS:
            kind = _FLOAT
        else:
            kind = _TEXT_FIELD if name in _TEXT else _NUMBER
        if len(_KINDS) < 4096:
            _KINDS[name] = kind
    return kind


def public_view(fields: Mapping[str, str]) -> dict[str, Any]:
    """The record as a reader sees it: typed values, no bookkeeping fields.

    >>> public_view({"_b": "x", "clv": "12.5", "orders": "3", "segment": "007",
    ...              "contacts.complaint": "2"})["contacts_by_reason"]["complaint"]
    2
    >>> {k: v for k, v in public_view({"clv": "12.5", "orders": "3", "rfm_segment": "07"}
    ...  ).items() if not k.endswith(("_reason", "_action"))}
    {'clv': 12.5, 'orders': 3, 'rfm_segment': '07'}
    """
    view: dict[str, Any] = {}
    contacts: dict[str, int] = dict.fromkeys(CONTACT_REASONS, 0)
    touches: dict[str, int] = dict.fromkeys(TOUCH_ACTIONS, 0)
    for name, raw in sorted(fields.items()):
        kind = _kind(name)
        if kind == _SKIP:
            continue
        if kind == _FLOAT:
            view[name] = float(raw)
        elif kind == _NUMBER:
            view[name] = int(raw) if raw.lstrip("-").isdigit() else raw
        elif kind == _CONTACT:
            contacts[name[9:]] = int(raw)
        elif kind == _TOUCH:
            touches[name[8:]] = int(raw)
        else:
            view[name] = raw
    view["contacts_by_reason"] = contacts
    view["touches_by_action"] = touches
    return view


RETENTION = "_ret"


def _vector(s: Snapshot, newest: int | None) -> list[float]:
    """A snapshot's features in FEATURE_NAMES order, 4 significant digits.

    Only the newest snapshot (taken by this decision) needs rounding: every
    other one was rounded when the batch that took it packed it, and rounding
    is idempotent, so it is written back as it was read.
    """
    if s.taken_at == newest:
        return [float(f"{s.features.get(n, 0.0):.4g}") for n in FEATURE_NAMES]
    return [s.features.get(n, 0.0) for n in FEATURE_NAMES]


def pack_retention(r: Retention) -> str:
    """The retention memory as compact JSON (see `unpack_retention`)."""
    doc: dict[str, Any] = {}
    newest = r.last_snapshot_at
    if r.pending:
        doc["p"] = [[s.taken_at, _vector(s, newest)] for s in r.pending]
    if r.waiting:
        doc["w"] = [[s.taken_at, y, _vector(s, newest)] for s, y in r.waiting]
    if r.last_snapshot_at is not None:
        doc["ls"] = r.last_snapshot_at
    a = r.alert
    if a != AlertMemory():
        doc["al"] = [a.last_alert_at, a.last_severity, a.last_alert_id, list(a.last_codes),
                     a.p_alive_ref]
    if r.winback != WinbackMemory():
        doc["wb"] = [r.winback.episode, r.winback.trigger_id]
    if r.channels:
        doc["ch"] = {k: [c.touches, c.responses, c.blocked] for k, c in r.channels.items()}
    if r.outcome is not None:
        doc["oc"] = asdict(r.outcome)
    if r.tier_at_purchase:
        doc["tp"] = r.tier_at_purchase
    if r.churn_probability is not None:
        doc["cp"] = r.churn_probability
    if r.scored_at is not None:
        doc["sa"] = r.scored_at
    return orjson.dumps(doc).decode()


def _features(x: list[float] | dict[str, float]) -> dict[str, float]:
    """A stored feature vector (or, as first written, a name -> value mapping)."""
    if isinstance(x, dict):
        return {str(k): float(v) for k, v in x.items()}
    return dict(zip(FEATURE_NAMES, map(float, x), strict=False))


def unpack_retention(customer_id: str, text: str) -> Retention:
    """Inverse of `pack_retention`; empty text is a fresh memory.

    >>> from stream_app.domain.alerts import AlertMemory
    >>> r = Retention(last_snapshot_at=5, alert=AlertMemory(1, "high", "al-x", ("a",), 0.5))
    >>> unpack_retention("C1", pack_retention(r)) == r
    True
    """
    if not text:
        return Retention()
    doc = orjson.loads(text)
    al = doc.get("al")
    wb = doc.get("wb")
    oc = doc.get("oc")
    return Retention(
        pending=tuple(Snapshot(customer_id, int(t), _features(x)) for t, x in doc.get("p", [])),
        waiting=tuple(
            (Snapshot(customer_id, int(t), _features(x)), int(y))
            for t, y, x in doc.get("w", [])
        ),
        last_snapshot_at=doc.get("ls"),
        alert=AlertMemory() if al is None else AlertMemory(al[0], al[1], al[2], tuple(al[3]),
                                                           al[4]),
        winback=WinbackMemory() if wb is None else WinbackMemory(wb[0], wb[1]),
        channels=MappingProxyType(
            {k: ChannelCounts(*v) for k, v in doc.get("ch", {}).items()}
        ),
        outcome=None if oc is None else WinbackOutcome(**oc),
        tier_at_purchase=float(doc.get("tp", 0.0)),
        churn_probability=doc.get("cp"),
        scored_at=doc.get("sa"),
    )


# --------------------------------------------------------------------------- bookkeeping

#: The engine's bookkeeping in one field (`pack_book`): ASCII text, 7 bits a character, of a
#: binary layout whose first byte is `BOOK_FORMAT`.
BOOK = "_b"
#: Version of the binary layout of `BOOK`; a record of another version is refused.
BOOK_FORMAT = 1
#: Fields of the layout before `BOOK` (read, and removed at the record's next write).
LEGACY_FIELDS = ("_days", "_recent", OFFSETS, EVENT_IDS, "_sentiment_sum_m", "_sentiment_n",
                 "_ret", "_h", "_z")
_F64 = struct.Struct("<d")
#: The decayed counters a `BOOK` holds by bit (bit i: the i-th name), frozen with
#: `BOOK_FORMAT`: a counter not named here is stored with its name.
_RECENT_CODES = (
    "orders", "spend", "contacts", "complaints", "cancellation_requests", "unresolved",
    "sentiment", "opened", "clicked", "converted", "unsubscribed", "bounced", "delivered",
    "f_orders", "f_spend", "f_contacts", "f_complaints", "f_cancellation_requests",
    "f_unresolved", "f_sentiment", "f_delivered", "f_opened", "f_clicked", "f_unsubscribed",
)
_RECENT_BITS = {key: 1 << i for i, key in enumerate(_RECENT_CODES)}


class BookError(ValueError):
    """A bookkeeping field of an unknown layout version or cut short."""


@dataclass(frozen=True, slots=True)
class Book:
    """What the engine keeps per customer beside the public fields.

    `retention` is the churn memory as packed (`retention_of` decodes it), so a change
    that does not touch it writes it back as it was read.
    """

    days: tuple[int, ...] = ()
    recent: Mapping[str, float] = field(default_factory=dict)
    recent_at: int | None = None
    offsets: Mapping[tuple[str, int], int] = field(default_factory=dict)
    event_ids: tuple[int, ...] = ()
    sentiment_sum_m: int = 0
    sentiment_n: int = 0
    marker: str = ""
    label_due_at: int | None = None
    rescore_at: int | None = None
    retention: bytes = b""


class _Writer:
    __slots__ = ("out",)

    def __init__(self) -> None:
        self.out = bytearray()

    def uint(self, n: int) -> None:
        out = self.out
        if n < 0x80:
            out.append(n)
            return
        while n > 0x7F:
            out.append((n & 0x7F) | 0x80)
            n >>= 7
        out.append(n)

    def int(self, n: int) -> None:
        self.uint(n << 1 if n >= 0 else (-n << 1) - 1)

    def opt(self, n: int | None) -> None:
        """An optional integer: 0 is None."""
        if n is None:
            self.out.append(0)
        else:
            self.uint(1 + (n << 1 if n >= 0 else (-n << 1) - 1))

    def text(self, s: str | bytes) -> None:
        raw = s.encode() if isinstance(s, str) else s
        self.uint(len(raw))
        self.out += raw


class _Reader:
    __slots__ = ("at", "raw")

    def __init__(self, raw: bytes) -> None:
        self.raw, self.at = raw, 0

    def uint(self) -> int:
        raw, at = self.raw, self.at
        b = raw[at]
        if b < 0x80:
            self.at = at + 1
            return b
        n = shift = 0
        while True:
            b = raw[at]
            at += 1
            n |= (b & 0x7F) << shift
            if b < 0x80:
                self.at = at
                return n
            shift += 7

    def int(self) -> int:
        z = self.uint()
        return (z >> 1) if not z & 1 else -((z + 1) >> 1)

    def opt(self) -> int | None:
        z = self.uint()
        if z == 0:
            return None
        z -= 1
        return (z >> 1) if not z & 1 else -((z + 1) >> 1)

    def bytes(self, n: int) -> bytes:
        out = self.raw[self.at : self.at + n]
        if len(out) != n:
            raise BookError("bookkeeping field cut short")
        self.at += n
        return bytes(out)

    def text(self) -> str:
        return self.bytes(self.uint()).decode()


def pack_book(book: Book) -> str:
    """The bookkeeping as ASCII text (`to_ascii`) of its binary layout (`BOOK_FORMAT`).

    Integers are varints (signed ones zigzag), the decayed counters exact doubles, the
    event id hashes 8 bytes each; the churn memory is `pack_retention_bytes`.

    >>> b = Book(days=(20000, 20003), recent={"orders": 1.5}, recent_at=7,
    ...          offsets={("t", 0): 41}, event_ids=(2**64 - 1,), marker="3|1", rescore_at=9)
    >>> unpack_book(pack_book(b)) == b
    True
    """
    w = _Writer()
    w.out.append(BOOK_FORMAT)
    w.uint(len(book.days))
    prev = 0
    for day in book.days:
        w.int(day - prev)
        prev = day
    w.opt(book.recent_at)
    if book.recent_at is not None:
        present = zero = 0
        extra = []
        for key, value in book.recent.items():
            bit = _RECENT_BITS.get(key)
            if bit is None:
                extra.append((key, value))
            else:
                present |= bit
                if value == 0.0 and math.copysign(1.0, value) > 0:
                    zero |= bit
        w.uint(present)
        w.uint(zero)
        stored = present & ~zero
        values = [book.recent[key] for key in _RECENT_CODES if stored & _RECENT_BITS[key]]
        w.out += struct.pack(f"<{len(values)}d", *values)
        w.uint(len(extra))
        for key, value in extra:
            w.text(key)
            w.out += _F64.pack(value)
    topics: dict[str, list[tuple[int, int]]] = {}
    for (topic, partition), offset in sorted(book.offsets.items()):
        topics.setdefault(topic, []).append((partition, offset))
    w.uint(len(topics))
    for topic, parts in topics.items():
        w.text(topic)
        w.uint(len(parts))
        for partition, offset in parts:
            w.uint(partition)
            w.uint(offset)
    w.uint(len(book.event_ids))
    w.out += struct.pack(f">{len(book.event_ids)}Q", *book.event_ids)
    w.int(book.sentiment_sum_m)
    w.uint(book.sentiment_n)
    w.text(book.marker)
    w.opt(book.label_due_at)
    w.opt(book.rescore_at)
    w.out += book.retention
    return to_ascii(bytes(w.out))


def book_days(text: str) -> tuple[int, ...]:
    """The purchase days of a packed book (`pack_book`), without decoding the rest of it.

    The days come first, so only a prefix of the text is decoded: 64 characters (56
    bytes) hold the days of most customers, and a longer list decodes a prefix four times
    longer until it is whole. What follows the days is not read, nor checked.

    >>> b = Book(days=tuple(range(20_000, 20_400, 3)), event_ids=(7,), marker="m")
    >>> book_days(pack_book(b)) == unpack_book(pack_book(b)).days
    True
    """
    if not text:
        return ()
    chars = 64  # a multiple of 8 characters decodes to whole 7-byte chunks
    while True:
        r = _book_reader(text[:chars])
        try:
            return _read_days(r)
        except IndexError:
            if chars >= len(text):
                raise BookError("bookkeeping field cut short") from None
            chars *= 4


def _book_reader(text: str) -> _Reader:
    """A reader of a packed book's bytes, past its format byte (checked)."""
    raw = from_ascii(text)
    if not raw or raw[0] != BOOK_FORMAT:
        raise BookError(f"bookkeeping format {raw[:1].hex() or 'empty'} is not {BOOK_FORMAT}")
    r = _Reader(raw)
    r.at = 1
    return r


def _read_days(r: _Reader) -> tuple[int, ...]:
    """The purchase days, the book's first part: their count, then each one's delta."""
    days: list[int] = []
    day = 0
    for _ in range(r.uint()):
        day += r.int()
        days.append(day)
    return tuple(days)


@functools.lru_cache(maxsize=4096)
def unpack_book(text: str) -> Book:
    """Inverse of `pack_book`; empty text is an empty book.

    Cached: a batch reads the book of each record it loads more than once.
    """
    if not text:
        return Book()
    r = _book_reader(text)
    raw = r.raw
    try:
        days = _read_days(r)
        recent_at = r.opt()
        recent: dict[str, float] = {}
        if recent_at is not None:
            present, zero = r.uint(), r.uint()
            stored = present & ~zero
            keys = [key for key in _RECENT_CODES if stored & _RECENT_BITS[key]]
            values = iter(struct.unpack(f"<{len(keys)}d", r.bytes(8 * len(keys))))
            for key in _RECENT_CODES:
                bit = _RECENT_BITS[key]
                if present & bit:
                    recent[key] = 0.0 if zero & bit else next(values)
            for _ in range(r.uint()):
                key = r.text()
                recent[key] = _F64.unpack(r.bytes(8))[0]
        offsets: dict[tuple[str, int], int] = {}
        for _ in range(r.uint()):
            topic = r.text()
            for _ in range(r.uint()):
                partition = r.uint()
                offsets[(topic, partition)] = r.uint()
        count = r.uint()
        event_ids = struct.unpack(f">{count}Q", r.bytes(8 * count))
        sentiment_sum_m, sentiment_n = r.int(), r.uint()
        marker = r.text()
        label_due_at, rescore_at = r.opt(), r.opt()
    except IndexError:
        raise BookError("bookkeeping field cut short") from None
    return Book(days, MappingProxyType(recent), recent_at, MappingProxyType(offsets),
                event_ids, sentiment_sum_m,
                sentiment_n, marker, label_due_at, rescore_at, bytes(raw[r.at :]))


def _lanes(lanes: int, *patterns: str) -> tuple[int, ...]:
    """Each 8-byte hex `pattern` repeated over `lanes` 64-bit lanes, as one integer."""
    return tuple(int.from_bytes(bytes.fromhex(p) * lanes, "big") for p in patterns)


_SPREAD = ("00fffffff0000000", "000000000fffffff", "0fffc0000fffc000", "00003fff00003fff",
           "3f803f803f803f80", "007f007f007f007f")
_GATHER = ("7f007f007f007f00", "007f007f007f007f", "3fff00003fff0000", "00003fff00003fff",
           "0fffffff00000000", "000000000fffffff")
#: Masks are kept for texts up to this many 64-bit lanes (8 KiB of text, a record's longest
#: listpack value); a longer one, which only a damaged or forged record has, makes its own.
_KEPT_LANES = 1024


@functools.lru_cache(maxsize=256)
def _kept_masks(lanes: int, patterns: tuple[str, ...]) -> tuple[int, ...]:
    return _lanes(lanes, *patterns)


def _masks(lanes: int, patterns: tuple[str, ...]) -> tuple[int, ...]:
    if lanes <= _KEPT_LANES:
        return _kept_masks(lanes, patterns)
    return _lanes(lanes, *patterns)


def to_ascii(raw: bytes) -> str:
    """`raw` as ASCII text, 7 of its bits per character (8/7 of its length).

    ASCII keeps the field readable by clients that decode every field of a hash as UTF-8,
    at a lower cost than base64 (4/3). Each 7-byte chunk goes to the low 56 bits of a
    64-bit lane of one big integer, whose bits then move apart in three steps (28, 14 and 7
    bits a group, every lane at once) until each byte holds 7 of them.

    >>> to_ascii(b"cvm")
    '1]MP'
    >>> from_ascii("1]MP")
    b'cvm'
    """
    n = len(raw)
    lanes = -(-n // 7)
    padded = raw + bytes(7 * lanes - n)
    wide = bytearray(8 * lanes)
    for j in range(7):
        wide[j + 1 :: 8] = padded[j::7]
    x = int.from_bytes(wide, "big")
    hi28, lo28, hi14, lo14, hi7, lo7 = _masks(lanes, _SPREAD)
    x = ((x & hi28) << 4) | (x & lo28)
    x = ((x & hi14) << 2) | (x & lo14)
    x = ((x & hi7) << 1) | (x & lo7)
    return x.to_bytes(8 * lanes, "big")[: -(-8 * n // 7)].decode("ascii")


def from_ascii(text: str) -> bytes:
    """Inverse of `to_ascii`: the 7-bit groups of each 8 characters close up (7, 14 and 28
    bits a group) into the low 56 bits of a 64-bit lane, whose top byte is then dropped.

    >>> from_ascii(to_ascii(bytes(range(256)))) == bytes(range(256))
    True
    """
    n = len(text)
    lanes = -(-n // 8)
    x = int.from_bytes(text.encode("ascii") + bytes(8 * lanes - n), "big")
    hi7, lo7, hi14, lo14, hi28, lo28 = _masks(lanes, _GATHER)
    x = ((x & hi7) >> 1) | (x & lo7)
    x = ((x & hi14) >> 2) | (x & lo14)
    x = ((x & hi28) >> 4) | (x & lo28)
    out = bytearray(x.to_bytes(8 * lanes, "big"))
    del out[::8]
    return bytes(out[: 7 * n // 8])


def book_of(fields: Mapping[str, str]) -> Book:
    """The bookkeeping of a record in either layout (`BOOK`, or the fields before it)."""
    if BOOK in fields:
        return unpack_book(fields[BOOK])
    recent, recent_at = unpack_recent(fields.get("_recent", ""))
    due = fields.get("_z", ",").split(",")
    ret = fields.get("_ret", "")
    return Book(
        days=unpack_days(fields.get("_days", "")),
        recent=recent,
        recent_at=recent_at,
        offsets=unpack_offsets(fields.get(OFFSETS, "")),
        event_ids=unpack_event_ids(fields.get(EVENT_IDS, "")),
        sentiment_sum_m=int(fields.get("_sentiment_sum_m", "0")),
        sentiment_n=int(fields.get("_sentiment_n", "0")),
        marker=fields.get("_h", ""),
        label_due_at=int(due[0]) if due[0] else None,
        rescore_at=int(due[1]) if len(due) > 1 and due[1] else None,
        retention=pack_retention_bytes(unpack_retention("", ret), exact=True) if ret else b"",
    )


#: Powers of ten a double holds exactly: a decimal m * 10**k (|k| <= 22, m an integer of
#: at most 15 digits) is then one correctly rounded multiplication or division, as exact
#: as `float` of its text.
_POW10 = np.array([float(10**i) for i in range(23)])
#: The exponent that marks a feature kept as a raw double instead.
_RAW_EXP = -128


#: The same powers as Python floats, for `_decimals`.
_POW10_FLOAT = tuple(float(10**i) for i in range(23))


def _decimals(values: list[float]) -> tuple[list[int], list[int], list[float]]:
    """(mantissas, exponents, raw doubles): each value as m * 10**k exactly (|m| <= 9999,
    |k| <= 22), or, where there is no such pair (NaN, infinities, -0.0, more than four
    digits, out of range), exponent `_RAW_EXP` and the value in the raw doubles, in order.

    Of the exponents that work, the one for four digits is tried first, then one more and
    one fewer, so a value has one encoding. Plain Python: a snapshot has a few dozen
    features, too few for numpy's per-call cost to pay off.

    >>> _decimals([1.5, -0.25, 12340.0, 0.0, 12345.0, float("inf")])
    ([1500, -2500, 1234, 0, 0, 0], [-3, -4, 1, -128, -128, -128], [0.0, 12345.0, inf])
    """
    mantissas: list[int] = []
    exponents: list[int] = []
    raw: list[float] = []
    for v in values:
        if v != 0.0 and math.isfinite(v):
            scale = math.floor(math.log10(abs(v))) - 3
            for k in (scale, scale + 1, scale - 1):
                if abs(k) > 22:
                    continue
                power = _POW10_FLOAT[abs(k)]
                m = round(v * power) if k < 0 else round(v / power)
                if m != 0 and abs(m) <= 9999 and (m / power if k < 0 else m * power) == v:
                    mantissas.append(m)
                    exponents.append(k)
                    break
            else:
                mantissas.append(0)
                exponents.append(_RAW_EXP)
                raw.append(v)
        else:
            mantissas.append(0)
            exponents.append(_RAW_EXP)
            raw.append(v)
    return mantissas, exponents, raw


def _values(mantissa: np.ndarray, exponent: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """Inverse of `_decimals`."""
    k = exponent.astype(np.int64)
    power = _POW10[np.clip(np.abs(k), 0, 22)]
    m = mantissa.astype(np.float64)
    out = np.where(k < 0, m / power, m * power)
    out[k == _RAW_EXP] = raw
    return out


class _Features(Mapping[str, float]):
    """A stored snapshot's features, decoded at the first read (most snapshots are only
    carried from one write of the record to the next), and written back as they were read.
    """

    __slots__ = ("_body", "_values")

    def __init__(self, body: bytes) -> None:
        self._body = body
        self._values: dict[str, float] | None = None

    def _decoded(self) -> dict[str, float]:
        if self._values is None:
            r = _Reader(self._body)
            n, mask = r.uint(), r.uint()
            count = mask.bit_count()
            mantissa = np.frombuffer(r.bytes(2 * count), dtype="<i2")
            exponent = np.frombuffer(r.bytes(count), dtype=np.int8)
            raw = np.frombuffer(r.bytes(8 * int((exponent == _RAW_EXP).sum())), dtype="<f8")
            kept = iter(_values(mantissa, exponent, raw).tolist())
            self._values = dict(zip(
                FEATURE_NAMES, [next(kept) if mask >> i & 1 else 0.0 for i in range(n)],
                strict=False))
        return self._values

    def __getitem__(self, key: str) -> float:
        return self._decoded()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._decoded())

    def __len__(self) -> int:
        return len(self._decoded())

    def __repr__(self) -> str:
        return repr(self._decoded())


def _features_body(features: Mapping[str, float], rounded: bool) -> bytes:
    """The feature count, a mask of the features that are not +0.0 (bit i: the i-th of
    `FEATURE_NAMES`), then those as int16 mantissas, int8 exponents and raw doubles."""
    if isinstance(features, _Features):
        return features._body  # as read: rounded already if it had to be
    get = features.get
    row = [float(get(name, 0.0)) for name in FEATURE_NAMES]
    if rounded:
        row = [float(f"{v:.4g}") for v in row]
    mask = 0
    kept = []
    for i, v in enumerate(row):
        if v != 0.0 or math.copysign(1.0, v) < 0:  # every value but +0.0 (NaN included)
            mask |= 1 << i
            kept.append(v)
    w = _Writer()
    w.uint(len(row))
    w.uint(mask)
    mantissas, exponents, raw = _decimals(kept)
    n = len(kept)
    w.out += struct.pack(f"<{n}h{n}b{len(raw)}d", *mantissas, *exponents, *raw)
    return bytes(w.out)


def pack_retention_bytes(r: Retention, exact: bool = False) -> bytes:
    """The churn memory in the binary layout of `Book.retention`.

    Per snapshot: taken at, last order at, the label if waiting, then the features
    (`_features_body`, its length first) as decimals of four significant digits, rounded
    as `pack_retention` rounds them: the newest snapshot (taken by this decision) is
    rounded, every other one was rounded when it was taken and is written as read
    (`exact`: none is rounded). Then the rest of the memory as compact JSON.
    """
    w = _Writer()
    newest = None if exact else r.last_snapshot_at
    w.uint(len(r.pending))
    w.uint(len(r.waiting))
    for s, y in [(s, None) for s in r.pending] + list(r.waiting):
        w.int(s.taken_at)
        w.opt(s.last_order_at)
        if y is not None:
            w.uint(y)
        w.text(_features_body(s.features, s.taken_at == newest))
    doc = pack_retention(replace(r, pending=(), waiting=()))
    w.text(doc if doc != "{}" else b"")
    return bytes(w.out)


def unpack_retention_bytes(customer_id: str, raw: bytes) -> Retention:
    """Inverse of `pack_retention_bytes`; no bytes is a fresh memory.

    The features are decoded when first read (`_Features`).
    """
    if not raw:
        return Retention()
    r = _Reader(raw)
    try:
        pending, waiting = r.uint(), r.uint()
        snaps = []
        for i in range(pending + waiting):
            taken_at, last_order_at = r.int(), r.opt()
            y = r.uint() if i >= pending else 0
            body = r.bytes(r.uint())
            snaps.append((Snapshot(customer_id, taken_at, _Features(body), last_order_at), y))
        rest = r.bytes(r.uint())
    except IndexError:
        raise BookError(f"customer {customer_id}: churn memory cut short") from None
    base = unpack_retention(customer_id, rest.decode()) if rest else Retention()
    return replace(base, pending=tuple(s for s, _ in snaps[:pending]),
                   waiting=tuple(snaps[pending:]))


def retention_of(customer_id: str, fields: Mapping[str, str]) -> Retention:
    """The churn memory of a record in either layout."""
    if BOOK in fields:
        return unpack_retention_bytes(customer_id, unpack_book(fields[BOOK]).retention)
    return unpack_retention(customer_id, fields.get(RETENTION, ""))
