"""The Redis hash of one customer: how a `CustomerState` is written and read.

Public fields are plain strings a reader can use as they are: money as decimal
strings in the base currency, counts as integers, times as RFC 3339 UTC with
milliseconds. Fields starting with ``_`` are the engine's bookkeeping (applied
offsets, recent event ids, the version used for compare-and-set, packed purchase
days) and are not part of the stable interface.

Applied offsets are one field, ``_a`` (`pack_offsets`), per topic partition.
Records written before that kept one ``_o:<topic>`` field per topic; they are
read into `CustomerState.legacy_offsets`, written back unchanged, and never
created any more.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

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
    ("_sentiment_sum_m", "sentiment_sum_m"),
    ("_sentiment_n", "sentiment_n"),
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


def to_fields(state: CustomerState) -> dict[str, str]:
    """Every hash field of a customer's state (bookkeeping fields included)."""
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
    fields["_days"] = pack_days(state.purchase_days)
    if state.recent_at is not None:
        fields["_recent"] = pack_recent(state.recent, state.recent_at)
    if state.offsets:
        fields[OFFSETS] = pack_offsets(state.offsets)
    if state.event_ids:
        fields[EVENT_IDS] = pack_event_ids(state.event_ids)
    for topic, offset in state.legacy_offsets.items():
        fields[f"{OFFSET_PREFIX}{topic}"] = str(offset)
    return fields


def from_fields(customer_id: str, fields: Mapping[str, str]) -> CustomerState:
    """Rebuild a state from its hash fields; an empty hash is a new customer."""
    if not fields:
        return CustomerState(customer_id)
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
    values["purchase_days"] = unpack_days(fields.get("_days", ""))
    values["recent"], values["recent_at"] = unpack_recent(fields.get("_recent", ""))
    values["offsets"] = unpack_offsets(fields.get(OFFSETS, ""))
    values["event_ids"] = unpack_event_ids(fields.get(EVENT_IDS, ""))
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


def public_view(fields: Mapping[str, str]) -> dict[str, Any]:
    """The record as a reader sees it: typed values, no bookkeeping fields."""
    view: dict[str, Any] = {}
    contacts: dict[str, int] = {reason: 0 for reason in CONTACT_REASONS}
    touches: dict[str, int] = {action: 0 for action in TOUCH_ACTIONS}
    money = {name for name, _ in _MONEY} | {"gross_margin", "net_contribution"} | _FLOATS
    for name, raw in sorted(fields.items()):
        if name.startswith("_"):
            continue
        if name.startswith("contacts."):
            contacts[name[len("contacts.") :]] = int(raw)
        elif name.startswith("touches."):
            touches[name[len("touches.") :]] = int(raw)
        elif name in money:
            view[name] = float(raw)
        elif name not in _TEXT and raw.lstrip("-").isdigit():
            view[name] = int(raw)
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
