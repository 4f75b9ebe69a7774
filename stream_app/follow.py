"""``cvm alerts``: print the alerts and win-back triggers on Kafka, or tail them with ``--follow``.

The core is pure: `parse` turns one Kafka message into a `Record` (a checked
message, or why it is malformed), `Filter.matches` applies the command-line
filters, and `format_line` / `format_json` render a record. `read` is the loop
over a consumer (anything with ``poll``), and `run` is the command: it assigns
every partition of the two topics itself (no consumer group to join, no offsets
committed), so a tail starts at once and leaves nothing behind.

Examples
--------
>>> raw = (b'{"trigger_id": "wb-1", "customer_id": "c-7", "raised_at": "2026-03-01T06:00:00Z",'
...        b' "as_of": "2026-02-28T23:59:59Z", "clv_lost": 1610, "p_alive": 0.18,'
...        b' "recommended_channel": "email", "offer_budget": 45, "control_group": true,'
...        b' "reasons": [{"code": "p_alive_low", "detail": "0.18", "contribution": 0.55}],'
...        b' "model_version": "m1"}')
>>> print(format_line(parse("winback", raw)))
2026-03-01T06:00:00Z      WIN-BACK  c-7           winback         clv lost 1,610.00  p_alive 0.18  \
email budget 45.00 [control: no offer]  reasons: p_alive_low +0.55 (0.18)
>>> bad = parse("alert", b'{"alert_id": 1', topic="cvm.alerts", partition=2, offset=9)
>>> print(format_line(bad))  # doctest: +ELLIPSIS
-                         MALFORMED cvm.alerts[2]@9  invalid_json: ... raw: {"alert_id": 1
>>> Filter(min_severity="high").matches(parse("winback", raw))
False
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TextIO

import orjson

from stream_app.contract import Contract, InvalidEvent
from stream_app.domain.severity import SEVERITIES
from stream_app.settings import Settings

__all__ = [
    "DESCRIPTION",
    "Filter",
    "FollowError",
    "Record",
    "add_arguments",
    "filter_from_args",
    "format_json",
    "format_line",
    "parse",
    "read",
    "run",
]

DESCRIPTION = (
    "Print the defection alerts and win-back triggers published on Kafka (CVM_TOPIC_ALERTS, "
    "CVM_TOPIC_WINBACK), one readable line each: time raised, severity, customer, kind, value, "
    "top reasons. Without --follow it prints what the topics hold now and exits; with --follow "
    "it waits for new messages until Ctrl-C (from the end, or from the beginning with "
    "--from-beginning). Malformed messages are shown as MALFORMED with the reason."
)

#: Kind shown (and filtered on) for win-back triggers, which have no ``kind`` field.
WINBACK_KIND = "winback"
_RAW_PREVIEW = 120
_REASONS_SHOWN = 3
_COLORS = {
    "low": "\x1b[36m",
    "medium": "\x1b[33m",
    "high": "\x1b[1;31m",
    "critical": "\x1b[1;37;41m",
    WINBACK_KIND: "\x1b[32m",
    "malformed": "\x1b[35m",
}
_RESET = "\x1b[0m"


@dataclass(frozen=True, slots=True)
class Record:
    """One message of the alerts or win-back topic: checked, or malformed with the reason.

    ``topic_kind`` is ``alert`` or ``winback`` (from the topic it was read from);
    ``message`` is None when the message is malformed, and ``error`` says why.
    """

    topic_kind: str
    message: dict[str, Any] | None
    error: str | None = None
    raw: bytes | None = None
    key: bytes | None = None
    topic: str = ""
    partition: int = -1
    offset: int = -1
    timestamp_ms: int | None = None

    @property
    def kind(self) -> str | None:
        """The alert's ``kind``, ``winback`` for a trigger, None when malformed."""
        if self.message is None:
            return None
        return WINBACK_KIND if self.topic_kind == WINBACK_KIND else str(self.message["kind"])

    @property
    def severity(self) -> str | None:
        """The alert's severity; None for a win-back trigger or a malformed message."""
        if self.message is None or self.topic_kind == WINBACK_KIND:
            return None
        return str(self.message["severity"])

    @property
    def customer_id(self) -> str | None:
        """The message's customer, or the Kafka key of a malformed message."""
        if self.message is not None:
            return str(self.message["customer_id"])
        return None if self.key is None else self.key.decode("utf-8", "replace")


_CONTRACT: Contract | None = None


def _contract() -> Contract:
    global _CONTRACT
    if _CONTRACT is None:
        _CONTRACT = Contract()
    return _CONTRACT


def parse(
    topic_kind: str,
    raw: bytes | None,
    *,
    key: bytes | None = None,
    topic: str = "",
    partition: int = -1,
    offset: int = -1,
    timestamp_ms: int | None = None,
    contract: Contract | None = None,
) -> Record:
    """Decode and check one message against ``schemas/{alert,winback}.v1.json``; never raises.

    >>> parse("alert", b"[]").error
    'invalid_json: payload is a JSON array, expected an object'
    >>> parse("alert", None).error
    'invalid_json: payload is missing (null message value)'
    """
    if topic_kind not in ("alert", WINBACK_KIND):
        raise ValueError(f"topic_kind {topic_kind!r} is not alert or winback")
    where = {"raw": raw, "key": key, "topic": topic, "partition": partition, "offset": offset,
             "timestamp_ms": timestamp_ms}
    if raw is None:
        return Record(topic_kind, None, "invalid_json: payload is missing (null message value)",
                      **where)
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Record(topic_kind, None, f"invalid_json: {exc}", **where)
    if not isinstance(message, dict):
        kind = {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
            type(message), "number")
        return Record(topic_kind, None,
                      f"invalid_json: payload is a JSON {kind}, expected an object", **where)
    try:
        (contract or _contract()).validate_output(topic_kind, message)
    except InvalidEvent as exc:
        return Record(topic_kind, None, f"{exc.error_code}: {exc.reason}", **where)
    return Record(topic_kind, message, None, **where)


@dataclass(frozen=True, slots=True)
class Filter:
    """The command-line filters; an empty one lets everything through.

    ``min_severity`` keeps alerts at or above it; win-back triggers carry no
    severity, so they are left out when it is set. ``kinds`` holds alert kinds
    and/or ``winback``; ``customers`` exact customer ids. A malformed message is
    always shown (it is a problem to see), unless its Kafka key names a customer
    outside ``customers``.

    >>> f = Filter(min_severity="medium", kinds=frozenset({"defection_risk"}))
    >>> [f.severity_ok(s) for s in ("low", "medium", "critical", None)]
    [False, True, True, False]
    """

    min_severity: str | None = None
    kinds: frozenset[str] = field(default_factory=frozenset)
    customers: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if self.min_severity is not None and self.min_severity not in SEVERITIES:
            raise ValueError(
                f"severity {self.min_severity!r} is not one of {', '.join(SEVERITIES)}"
            )

    def severity_ok(self, severity: str | None) -> bool:
        """Whether a message of this severity passes ``min_severity``."""
        if self.min_severity is None:
            return True
        if severity not in SEVERITIES:
            return False
        return SEVERITIES.index(severity) >= SEVERITIES.index(self.min_severity)

    def wants_topic(self, topic_kind: str) -> bool:
        """Whether any message of this topic can pass (so the topic need not be read)."""
        if topic_kind == WINBACK_KIND:
            return self.min_severity is None and (not self.kinds or WINBACK_KIND in self.kinds)
        return not self.kinds or bool(self.kinds - {WINBACK_KIND})

    def matches(self, record: Record) -> bool:
        """Whether `record` passes every filter."""
        customer = record.customer_id
        if self.customers and customer is not None and customer not in self.customers:
            return False
        if record.message is None:
            return True
        if self.kinds and record.kind not in self.kinds:
            return False
        return self.severity_ok(record.severity)


def _clean(value: Any) -> str:
    """Text safe to print on a terminal: control characters are escaped.

    >>> _clean("c-1\\x1b[2J\\n")
    'c-1\\\\x1b[2J\\\\n'
    """
    text = value if isinstance(value, str) else str(value)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in text)


def _money(value: Any) -> str:
    return f"{value:,.2f}" if isinstance(value, int | float) else "-"


def _share(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, int | float) else "-"


def _reasons(reasons: Iterable[Mapping[str, Any]]) -> str:
    parts = [
        f"{_clean(r['code'])} {r['contribution']:+.2f} ({_clean(r['detail'])})"
        for r in list(reasons)[:_REASONS_SHOWN]
    ]
    return "reasons: " + ("; ".join(parts) if parts else "none")


def _paint(word: str, style: str, color: bool) -> str:
    padded = f"{word:<9}"
    if not color or style not in _COLORS:
        return padded
    return f"{_COLORS[style]}{word}{_RESET}{' ' * (len(padded) - len(word))}"


def _kafka_time(ms: int | None) -> str:
    if ms is None or ms <= 0:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def format_line(record: Record, color: bool = False) -> str:
    """One readable line: time raised, severity, customer, kind, value, top reasons.

    ``color`` adds ANSI colours to the severity (for a terminal).
    """
    m = record.message
    if m is None:
        raw = b"" if record.raw is None else record.raw
        preview = _clean(raw[:_RAW_PREVIEW].decode("utf-8", "replace"))
        if len(raw) > _RAW_PREVIEW:
            preview += "..."
        where = f"{_clean(record.topic)}[{record.partition}]@{record.offset}"
        key = "" if record.key is None else f"  key {_clean(record.customer_id)}"
        return (f"{_kafka_time(record.timestamp_ms):<24}  "
                f"{_paint('MALFORMED', 'malformed', color)} {where}{key}  "
                f"{_clean(record.error)}  raw: {preview}")
    head = f"{_clean(m['raised_at']):<24}  "
    customer = f"{_clean(m['customer_id']):<12}"
    if record.topic_kind == WINBACK_KIND:
        control = " [control: no offer]" if m["control_group"] else ""
        return (f"{head}{_paint('WIN-BACK', WINBACK_KIND, color)} {customer}  "
                f"{WINBACK_KIND:<14}  clv lost {_money(m['clv_lost'])}  "
                f"p_alive {_share(m['p_alive'])}  {_clean(m['recommended_channel'])} budget "
                f"{_money(m['offer_budget'])}{control}  {_reasons(m['reasons'])}")
    severity = str(m["severity"])
    value = f"clv {_money(m['clv'])}"
    if isinstance(m.get("value_at_risk"), int | float):
        value = f"at risk {_money(m['value_at_risk'])}  {value}"
    tier = f"tier {m['value_tier']:g}"
    then = m.get("value_tier_at_last_order")
    if isinstance(then, int | float) and then > m["value_tier"]:
        tier += f" ({then:g} at the last order)"
    return (f"{head}{_paint(severity.upper(), severity, color)} {customer}  "
            f"{_clean(m['kind']):<14}  {value}  churn {_share(m['churn_probability'])}  "
            f"{tier}  {_reasons(m['reasons'])}")


def format_json(record: Record) -> str:
    """The message as one line of JSON (``--json``); a malformed record has none.

    >>> format_json(parse("alert", b'{"a": 1}'))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: a malformed message has no JSON form: schema_violation: ...
    """
    if record.message is None:
        raise ValueError(f"a malformed message has no JSON form: {record.error}")
    return orjson.dumps(record.message).decode()


# --------------------------------------------------------------------------- Kafka shell


class _Message(Protocol):
    def error(self) -> Any: ...
    def topic(self) -> str: ...
    def partition(self) -> int: ...
    def offset(self) -> int: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def timestamp(self) -> tuple[int, int]: ...


class _Consumer(Protocol):
    def poll(self, timeout: float) -> _Message | None: ...


_PARTITION_EOF = -191  # confluent_kafka.KafkaError._PARTITION_EOF


def read(
    consumer: _Consumer,
    kinds: Mapping[str, str],
    until: Mapping[tuple[str, int], int] | None = None,
    *,
    idle_timeout_s: float = 15.0,
    on_error: Callable[[str], None] = lambda _: None,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[Record]:
    """Records from `consumer`, whose topics map to ``alert``/``winback`` in `kinds`.

    ``until`` None: follow forever. Otherwise stop once every (topic, partition)
    of ``until`` reached its end offset (the high watermark when the read began)
    or its end-of-partition event, or when nothing arrived for
    ``idle_timeout_s`` (reported through `on_error`). Consumer errors other than
    end-of-partition are reported through `on_error` and the read goes on.
    """
    pending = None if until is None else {tp: end for tp, end in until.items()}
    last = clock()
    while pending is None or pending:
        msg = consumer.poll(0.5)
        if msg is None:
            if pending is not None and clock() - last > idle_timeout_s:
                on_error(f"nothing more arrived within {idle_timeout_s:g} s; "
                         f"{len(pending)} partition(s) not read to the end")
                return
            continue
        last = clock()
        err = msg.error()
        if err is not None:
            if err.code() == _PARTITION_EOF:
                if pending is not None:
                    pending.pop((msg.topic(), msg.partition()), None)
            else:
                on_error(str(err))
            continue
        tp = (msg.topic(), msg.partition())
        ts_type, ts = msg.timestamp()
        yield parse(kinds[msg.topic()], msg.value(), key=msg.key(), topic=tp[0],
                    partition=tp[1], offset=msg.offset(), timestamp_ms=ts if ts_type else None)
        if pending is not None and tp in pending and msg.offset() + 1 >= pending[tp]:
            del pending[tp]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Every argument of ``cvm alerts``."""
    p.add_argument("-f", "--follow", action="store_true",
                   help="keep waiting for new messages (Ctrl-C stops)")
    p.add_argument("--from-beginning", action="store_true",
                   help="with --follow: start from the oldest message kept, not from now "
                        "(without --follow the topics are always read from the beginning)")
    p.add_argument("--severity", choices=SEVERITIES, default=None,
                   help="only alerts at or above this severity (win-back triggers, which "
                        "have none, are then left out)")
    p.add_argument("--kind", action="append", default=[], metavar="KIND",
                   help="only this alert kind, e.g. defection_risk, or 'winback' for win-back "
                        "triggers; repeat or separate with commas for several")
    p.add_argument("--customer", action="append", default=[], metavar="ID",
                   help="only this customer; repeat for several")
    p.add_argument("--json", action="store_true",
                   help="print each message as one line of JSON (malformed ones go to stderr)")
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                   help="colour the severity (auto: on a terminal unless NO_COLOR is set)")


def filter_from_args(args: argparse.Namespace) -> Filter:
    """The `Filter` of parsed arguments."""
    kinds = {k.strip() for arg in args.kind for k in arg.split(",") if k.strip()}
    return Filter(args.severity, frozenset(kinds), frozenset(args.customer))


def _use_color(choice: str, stream: TextIO) -> bool:
    if choice != "auto":
        return choice == "always"
    return stream.isatty() and not os.environ.get("NO_COLOR")


class FollowError(RuntimeError):
    """Kafka or a topic is not there: the command exits 1 with this message."""


def _assign(
    consumer: Any, kinds: Mapping[str, str], follow: bool, from_beginning: bool
) -> tuple[list[Any], dict[tuple[str, int], int]]:
    """Every partition of the topics, and (without `follow`) where each one ends now."""
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, KafkaException, TopicPartition

    start = OFFSET_BEGINNING if from_beginning or not follow else OFFSET_END
    assignment: list[Any] = []
    until: dict[tuple[str, int], int] = {}
    try:
        metadata = consumer.list_topics(timeout=10)
        for topic in kinds:
            meta = metadata.topics.get(topic)
            if meta is None or meta.error is not None:
                raise FollowError(f"topic {topic!r} does not exist (is the engine's stack up? "
                                  "see CVM_TOPIC_ALERTS and CVM_TOPIC_WINBACK)")
            for partition in sorted(meta.partitions):
                assignment.append(TopicPartition(topic, partition, start))
                if not follow:
                    low, high = consumer.get_watermark_offsets(
                        TopicPartition(topic, partition), timeout=10)
                    if high > low:
                        until[(topic, partition)] = high
    except KafkaException as exc:
        detail = exc.args[0].str() if exc.args and hasattr(exc.args[0], "str") else exc
        raise FollowError(f"cannot read from Kafka: {detail}") from None
    return assignment, until


class _ErrorReport:
    """Kafka client errors on stderr: each code at most once a minute (a down broker repeats)."""

    def __init__(self, write: Callable[[str], None], every_s: float = 60.0) -> None:
        self.write = write
        self.every_s = every_s
        self.muted = False
        self._last: dict[Any, float] = {}

    def __call__(self, error: Any) -> None:
        code = error.code() if hasattr(error, "code") else str(error)
        now = time.monotonic()
        if self.muted or now - self._last.get(code, -self.every_s) < self.every_s:
            return
        self._last[code] = now
        self.write(f"kafka: {error}")


def run(settings: Settings, args: argparse.Namespace) -> int:
    """``cvm alerts``: 0 on success or Ctrl-C, 1 when Kafka or a topic is not there."""
    from confluent_kafka import Consumer

    prog = "cvm alerts"
    out, err = sys.stdout, sys.stderr
    flt = filter_from_args(args)
    kinds = {
        topic: kind
        for topic, kind in ((settings.topics.alerts, "alert"),
                            (settings.topics.winback, WINBACK_KIND))
        if flt.wants_topic(kind)
    }
    if not kinds:
        print(f"{prog}: no message can match these filters", file=err)
        return 0
    color = _use_color(args.color, out)
    errors = _ErrorReport(lambda text: print(f"{prog}: {text}", file=err))
    consumer = Consumer({
        **settings.kafka_config(),
        "group.id": f"cvm-alerts-{uuid.uuid4().hex[:12]}",  # never joined: partitions assigned
        "client.id": "cvm-alerts",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
        "reconnect.backoff.ms": 500,
        "reconnect.backoff.max.ms": 5000,
        "log_level": 0,  # librdkafka's own log lines: its errors come through error_cb
        "error_cb": errors,
    })
    try:
        assignment, until = _assign(consumer, kinds, args.follow, args.from_beginning)
        if not args.follow and not until:
            return 0
        consumer.assign(assignment)
        if args.follow:  # say so at once: nothing else is printed until a message comes
            start = "the oldest message kept" if args.from_beginning else "now"
            print(f"{prog}: waiting for messages on {', '.join(kinds)} from {start} "
                  "(Ctrl-C stops)", file=err, flush=True)
        records = read(consumer, kinds, None if args.follow else until,
                       on_error=lambda e: print(f"{prog}: {e}", file=err))
        for record in records:
            if not flt.matches(record):
                continue
            if args.json and record.message is None:
                print(format_line(record), file=err, flush=True)
            else:
                line = format_json(record) if args.json else format_line(record, color)
                print(line, file=out, flush=True)
    except FollowError as exc:
        errors.muted = True  # the client's queued errors say the same at length
        print(f"{prog}: {exc} (KAFKA_BOOTSTRAP_SERVERS={settings.kafka_bootstrap_servers})",
              file=err)
        return 1
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # e.g. `cvm alerts | head`
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
    finally:
        consumer.close()
    return 0
