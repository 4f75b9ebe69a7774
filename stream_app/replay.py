"""``cvm replay``: publish a transaction log to the purchases topic, in event-time order.

A transaction log is one purchase per line: a customer id, a date or time, an amount and
optionally a cost, as CSV (comma, tab or semicolon) or whitespace-separated columns like the
classic CDNOW file (``00001 19970101 1 11.77``), with or without a header line.

Parsing is pure: `parse_log` turns lines and a `LogFormat` into `Transaction` values (file
order) and `BadRow` reports (line number and reason), `in_event_time_order` sorts them stably
by time, and `to_message` builds the purchase message of the contract
(``schemas/purchase.v1.json``). Publishing (`publish`) is a thin loop over a confluent-kafka
producer configured by `stream_app.producing.producer_config`; `run` is the command.

Conventions:

* a date without a time is midnight UTC; a time without an offset is UTC;
* a negative amount is a return of the absolute amount (``kind="return"``), and its cost, if
  any, is taken as the absolute cost of the goods taken back;
* amounts and costs are rounded half-to-even to 2 decimals;
* ``event_id`` is ``{file stem}-{line number}``, so replaying a file twice sends the same ids;
* line numbers are 1-based physical lines of the file.

Examples
--------
>>> fmt = LogFormat(customer_col=0, date_col=1, amount_col=-1)
>>> log = parse_log(["00002 19970112 2 -10.005", "00001 19970101 1 11.77"], fmt)
>>> [(t.line, t.customer_id, t.amount) for t in in_event_time_order(log.transactions)]
[(2, '00001', Decimal('11.77')), (1, '00002', Decimal('-10.00'))]
>>> to_message(log.transactions[0], "cdnow", currency="USD", channel="replay")["kind"]
'return'
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import orjson

from stream_app.settings import Settings

__all__ = [
    "DATE_FORMATS",
    "DESCRIPTION",
    "BadRow",
    "LogFormat",
    "ParsedLog",
    "ReplayError",
    "ReplayReport",
    "Transaction",
    "add_log_arguments",
    "detect_separator",
    "format_time",
    "in_event_time_order",
    "log_format_from_args",
    "parse_instant",
    "parse_log",
    "parse_when",
    "publish",
    "read_log",
    "run",
    "to_message",
]

ColumnRef = int | str

#: The description of ``cvm replay --help``.
DESCRIPTION = (
    "Publish a transaction log (CSV or whitespace-separated like CDNOW) to the purchases topic, "
    "keyed by customer id, in event-time order (stable: ties keep file order). Each row becomes "
    "a purchase message with event_id FILESTEM-LINE; a negative amount is a return. Rows that "
    "cannot be parsed are listed with their line number and skipped."
)
#: Named values of ``--date-format`` besides strftime formats.
DATE_FORMATS = ("auto", "iso", "epoch", "epoch_ms")
#: Separator names accepted by ``--sep`` (besides a literal one-character separator).
_SEPARATORS = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "ws": None,
               "whitespace": None, "space": None, " ": None}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS_PER_DAY = 86_400_000
# The contract's occurred_at pattern allows years 1900 to 2199.
_MIN_MS = int((datetime(1900, 1, 1, tzinfo=UTC) - _EPOCH).total_seconds() * 1000)
_MAX_MS = int((datetime(2200, 1, 1, tzinfo=UTC) - _EPOCH).total_seconds() * 1000)
_CENT = Decimal("0.01")
_CUSTOMER_ID = re.compile(r"^[^\s{}]{1,128}$")
_EIGHT_DIGITS = re.compile(r"^\d{8}$")
# How many lines `detect_separator` looks at.
_SNIFF_LINES = 20


class ReplayError(ValueError):
    """The log as a whole cannot be used: unknown column, unreadable file, a --strict bad row."""


@dataclass(frozen=True)
class LogFormat:
    """How to read a transaction log: columns, separator, dates, header.

    Column references are 0-based indices (negative counts from the end, ``-1`` is the last
    column) or header names (case-insensitive; they require a header line). ``sep`` None
    detects the separator from the first lines (see `detect_separator`); ``"ws"`` means runs
    of whitespace. ``header`` is ``"auto"`` (the first line is a header when neither its date
    nor its amount parses), ``"yes"`` or ``"no"``.
    """

    customer_col: ColumnRef = 0
    date_col: ColumnRef = 1
    amount_col: ColumnRef = -1
    cost_col: ColumnRef | None = None
    sep: str | None = None
    date_format: str = "auto"
    header: str = "auto"
    skip_rows: int = 0

    def __post_init__(self) -> None:
        if self.header not in ("auto", "yes", "no"):
            raise ReplayError(f"header: {self.header!r} is not auto, yes or no")
        if self.skip_rows < 0:
            raise ReplayError(f"skip_rows: {self.skip_rows} is negative")
        names = [c for c in self.columns.values() if isinstance(c, str)]
        if names and self.header == "no":
            raise ReplayError(f"columns {names} are header names but header is 'no'")

    @property
    def columns(self) -> dict[str, ColumnRef]:
        cols: dict[str, ColumnRef] = {
            "customer": self.customer_col, "date": self.date_col, "amount": self.amount_col,
        }
        if self.cost_col is not None:
            cols["cost"] = self.cost_col
        return cols


@dataclass(frozen=True, slots=True)
class Transaction:
    """One parsed row: ``amount`` is signed (negative = return), times are epoch ms UTC."""

    line: int
    customer_id: str
    occurred_at: int
    amount: Decimal
    cost: Decimal | None = None

    @property
    def day(self) -> int:
        """The UTC day number (days since 1970-01-01) of the transaction."""
        return self.occurred_at // _MS_PER_DAY

    @property
    def is_return(self) -> bool:
        return self.amount < 0


@dataclass(frozen=True, slots=True)
class BadRow:
    """A row that was skipped, and why."""

    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass
class ParsedLog:
    """The outcome of `parse_log`: transactions in file order plus every skipped row."""

    transactions: list[Transaction] = field(default_factory=list)
    bad: list[BadRow] = field(default_factory=list)
    separator: str | None = None
    header: list[str] | None = None
    header_line: int | None = None


# --------------------------------------------------------------------------- parsing (pure)


def detect_separator(lines: Sequence[str]) -> str | None:
    """The separator shared by every sample line: tab, comma, semicolon, else whitespace (None).

    >>> detect_separator(["a\\tb", "c\\td"]), detect_separator(["a;b", "c;d"])
    ('\\t', ';')
    >>> detect_separator(["00001 19970101 1 11.77"]) is None
    True
    """
    sample = [ln for ln in lines if ln.strip()][:_SNIFF_LINES]
    for sep in ("\t", ",", ";"):
        if sample and all(sep in ln for ln in sample):
            return sep
    return None


def _split(line: str, sep: str | None) -> list[str]:
    if sep is None:
        return line.split()
    return [cell.strip() for cell in next(csv.reader([line], delimiter=sep))]


def parse_when(text: str, date_format: str = "auto") -> int:
    """Epoch milliseconds (UTC) of a date or time in ``date_format``; ValueError if unusable.

    ``date_format`` is ``auto`` (``YYYYMMDD`` when the value has 8 digits, ISO otherwise),
    ``iso`` (ISO 8601 / RFC 3339 date or date-time, ``Z`` allowed), ``epoch`` (seconds),
    ``epoch_ms``, or a strftime format such as ``%Y%m%d`` or ``%d/%m/%Y %H:%M``. A date alone is
    midnight UTC and a time without an offset is UTC.

    >>> parse_when("19970101"), parse_when("1970-01-02")
    (852076800000, 86400000)
    >>> parse_when("1970-01-01T01:00:00+01:00"), parse_when("1.5", "epoch")
    (0, 1500)
    >>> parse_when("02/01/1970", "%d/%m/%Y")
    86400000
    """
    value = text.strip()
    if not value:
        raise ValueError("empty date")
    if date_format == "epoch_ms":
        ms = int(value)
    elif date_format == "epoch":
        seconds = float(value)
        if not math.isfinite(seconds):
            raise ValueError(f"{value!r} is not a finite number of seconds")
        ms = math.floor(seconds * 1000 + 0.5)
    else:
        fmt = date_format
        if fmt == "auto":
            fmt = "%Y%m%d" if _EIGHT_DIGITS.match(value) else "iso"
        if fmt == "iso":
            moment = datetime.fromisoformat(value)
        else:
            moment = datetime.strptime(value, fmt)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        delta = moment - _EPOCH
        ms = delta.days * _MS_PER_DAY + delta.seconds * 1000 + delta.microseconds // 1000
    if not _MIN_MS <= ms < _MAX_MS:
        raise ValueError(f"{value!r} is outside the years 1900 to 2199")
    return ms


def parse_instant(text: str) -> int:
    """A command-line date: ``YYYY-MM-DD``, ``YYYYMMDD`` or an RFC 3339 time, in epoch ms.

    >>> parse_instant("1997-10-01") == parse_instant("19971001") == 875664000000
    True
    """
    try:
        return parse_when(text, "auto")
    except ValueError as exc:
        raise ReplayError(f"{text!r} is not a date (YYYY-MM-DD, YYYYMMDD or RFC 3339): {exc}") \
            from None


def format_time(ms: int) -> str:
    """RFC 3339 UTC with ``Z``; milliseconds only when there are any.

    >>> format_time(852076800000), format_time(1500)
    ('1997-01-01T00:00:00Z', '1970-01-01T00:00:01.500Z')
    """
    moment = _EPOCH + timedelta(milliseconds=ms)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{ms % 1000:03d}Z" if ms % 1000 else f"{text}Z"


def _money(text: str, what: str) -> Decimal:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"{what} {text!r} is not a number") from None
    if not value.is_finite():
        raise ValueError(f"{what} {text!r} is not a finite number")
    return value.quantize(_CENT, rounding=ROUND_HALF_EVEN)


def _resolve(ref: ColumnRef, header: list[str] | None, what: str) -> int:
    if isinstance(ref, int):
        return ref
    if header is None:
        raise ReplayError(f"{what} column {ref!r} is a name but the log has no header line")
    names = [h.strip().lower() for h in header]
    try:
        return names.index(ref.strip().lower())
    except ValueError:
        raise ReplayError(
            f"{what} column {ref!r} is not in the header ({', '.join(header)})"
        ) from None


def _cell(cells: list[str], index: int, what: str) -> str:
    try:
        return cells[index]
    except IndexError:
        raise ValueError(f"{len(cells)} field(s), no {what} column {index}") from None


def _looks_like_header(cells: list[str], fmt: LogFormat) -> bool:
    """True when neither the date nor the amount column of `cells` parses."""
    if any(isinstance(c, str) for c in fmt.columns.values()):
        return True
    assert isinstance(fmt.date_col, int) and isinstance(fmt.amount_col, int)
    try:
        parse_when(_cell(cells, fmt.date_col, "date"), fmt.date_format)
        return False
    except ValueError:
        pass
    try:
        _money(_cell(cells, fmt.amount_col, "amount"), "amount")
        return False
    except ValueError:
        return True


def _row(line: int, cells: list[str], index: dict[str, int], fmt: LogFormat) -> Transaction:
    customer = _cell(cells, index["customer"], "customer")
    if not _CUSTOMER_ID.match(customer):
        raise ValueError(
            f"customer id {customer!r} must be 1 to 128 characters without whitespace or braces"
        )
    raw_date = _cell(cells, index["date"], "date")
    try:
        when = parse_when(raw_date, fmt.date_format)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"date {raw_date!r} does not match {fmt.date_format!r}: {exc}") from None
    amount = _money(_cell(cells, index["amount"], "amount"), "amount")
    cost = None
    if "cost" in index:
        raw_cost = _cell(cells, index["cost"], "cost")
        if raw_cost.strip():
            cost = _money(raw_cost, "cost")
            if cost < 0 and amount >= 0:
                raise ValueError(f"cost {raw_cost!r} is negative on an order")
            cost = abs(cost)
    return Transaction(line, customer, when, amount, cost)


def parse_log(lines: Iterable[str], fmt: LogFormat, *, strict: bool = False) -> ParsedLog:
    """Parse the lines of a log into transactions (file order) and bad rows.

    Blank lines are ignored; the first ``fmt.skip_rows`` lines are skipped unread. With
    ``strict`` the first bad row raises `ReplayError` instead of being reported.

    >>> log = parse_log(["id,day,amount", "c1,2026-01-02,5", "c2,yesterday,1"], LogFormat())
    >>> log.header, len(log.transactions)
    (['id', 'day', 'amount'], 1)
    >>> print(log.bad[0])
    line 3: date 'yesterday' does not match 'auto': Invalid isoformat string: 'yesterday'
    """
    out = ParsedLog()
    numbered: Iterator[tuple[int, str]] = (
        (n, ln.rstrip("\r\n")) for n, ln in enumerate(lines, start=1) if n > fmt.skip_rows
    )
    head: list[tuple[int, str]] = []
    for n, ln in numbered:
        if ln.strip():
            head.append((n, ln))
        if len(head) >= _SNIFF_LINES:
            break
    if fmt.sep is None:
        out.separator = detect_separator([ln for _, ln in head])
    else:
        out.separator = _SEPARATORS.get(fmt.sep, fmt.sep)
    rows = _chain(head, numbered)
    index: dict[str, int] | None = None
    for n, ln in rows:
        if not ln.strip():
            continue
        try:
            cells = _split(ln, out.separator)
        except csv.Error as exc:
            _bad(out, BadRow(n, f"unreadable CSV: {exc}"), strict)
            continue
        if index is None:
            if fmt.header == "yes" or (fmt.header == "auto" and _looks_like_header(cells, fmt)):
                out.header, out.header_line = cells, n
                index = {k: _resolve(v, cells, k) for k, v in fmt.columns.items()}
                _check_distinct(index, len(cells))
                continue
            index = {k: _resolve(v, None, k) for k, v in fmt.columns.items()}
            _check_distinct(index, len(cells))
        try:
            out.transactions.append(_row(n, cells, index, fmt))
        except ValueError as exc:
            _bad(out, BadRow(n, str(exc)), strict)
    return out


def _check_distinct(index: dict[str, int], width: int) -> None:
    """Raise when two roles read the same column of a ``width``-column line."""
    seen: dict[int, str] = {}
    for role, i in index.items():
        at = i + width if i < 0 else i
        if at in seen:
            raise ReplayError(
                f"the {seen[at]} and {role} columns are both column {at} (0-based) of "
                f"{width}; set --{seen[at]}-col / --{role}-col"
            )
        seen[at] = role


def _chain(
    head: list[tuple[int, str]], rest: Iterator[tuple[int, str]]
) -> Iterator[tuple[int, str]]:
    yield from head
    yield from rest


def _bad(out: ParsedLog, row: BadRow, strict: bool) -> None:
    if strict:
        raise ReplayError(f"{row} (--strict)")
    out.bad.append(row)


def read_log(path: str | Path, fmt: LogFormat, *, strict: bool = False) -> ParsedLog:
    """`parse_log` over a file (``-`` is standard input); a UTF-8 BOM is ignored."""
    if str(path) == "-":
        return parse_log(sys.stdin, fmt, strict=strict)
    try:
        with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
            return parse_log(f, fmt, strict=strict)
    except OSError as exc:
        raise ReplayError(f"cannot read {path}: {exc.strerror or exc}") from None


def in_event_time_order(transactions: Iterable[Transaction]) -> list[Transaction]:
    """Transactions sorted by time; ties keep their file order (the sort is stable)."""
    return sorted(transactions, key=lambda t: t.occurred_at)


def source_name(path: str | Path) -> str:
    """The ``event_id`` prefix of a file: its stem (``stdin`` for ``-``), at most 100 chars.

    >>> source_name("/data/CDNOW_master.txt")
    'CDNOW_master'
    """
    if str(path) == "-":
        return "stdin"
    return Path(path).stem[:100] or "log"


def to_message(
    tx: Transaction, source: str, *, currency: str, channel: str
) -> dict[str, Any]:
    """The purchase message of the contract for one transaction.

    >>> tx = Transaction(7, "C1", 852076800000, Decimal("-3.50"), Decimal("2.00"))
    >>> to_message(tx, "log", currency="USD", channel="replay")
    ... # doctest: +NORMALIZE_WHITESPACE
    {'event_id': 'log-7', 'customer_id': 'C1', 'occurred_at': '1997-01-01T00:00:00Z',
     'kind': 'return', 'amount': 3.5, 'currency': 'USD', 'channel': 'replay', 'cost': 2.0}
    """
    message: dict[str, Any] = {
        "event_id": f"{source}-{tx.line}",
        "customer_id": tx.customer_id,
        "occurred_at": format_time(tx.occurred_at),
        "kind": "return" if tx.is_return else "order",
        "amount": float(abs(tx.amount)),
        "currency": currency,
        "channel": channel,
    }
    if tx.cost is not None:
        message["cost"] = float(tx.cost)
    return message


# --------------------------------------------------------------------------- publishing (thin)

if TYPE_CHECKING:
    from stream_app.producing import Producer


@dataclass
class ReplayReport:
    """What `publish` sent. ``offsets`` maps ``"topic/partition"`` to the last acked offset."""

    sent: int = 0
    failed: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    offsets: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


def publish(
    transactions: Sequence[Transaction],
    settings: Settings,
    source: str,
    *,
    currency: str | None = None,
    channel: str = "replay",
    speed: float | None = None,
    progress: bool = True,
    producer_factory: Callable[[dict[str, Any]], Producer] | None = None,
    flush_timeout: float = 60.0,
    sleep: Callable[[float], None] = time.sleep,
) -> ReplayReport:
    """Produce `transactions`, in the given order, to the purchases topic keyed by customer id.

    ``speed`` None sends at full speed; otherwise event-time gaps are slept through divided
    by ``speed`` (86400 = one day of event time per second), on a schedule that does not
    drift. Delivery reports are requested for every message so that ``offsets`` says exactly
    what the broker holds; failed deliveries and messages still queued after
    ``flush_timeout`` count in ``failed``.
    """
    if speed is not None and not speed > 0:
        raise ReplayError(f"speed: {speed} must be > 0")
    from stream_app.producing import producer_config

    report = ReplayReport()
    lock = threading.Lock()

    def on_delivery(err: Any, msg: Any) -> None:
        with lock:
            if err is not None:
                report.failed += 1
                if len(report.errors) < 10:
                    report.errors.append(f"{msg.topic() if msg is not None else '?'}: {err}")
                return
            tp = f"{msg.topic()}/{msg.partition()}"
            if msg.offset() > report.offsets.get(tp, -1):
                report.offsets[tp] = msg.offset()

    config = producer_config(
        settings, client_id=f"{settings.app_id}-replay", delivery_report_only_error=False
    )
    config["on_delivery"] = on_delivery
    if producer_factory is None:
        from confluent_kafka import Producer as KafkaProducer

        producer_factory = KafkaProducer
    producer = producer_factory(config)
    topic = settings.topics.purchases
    currency = currency or settings.base_currency
    bar = progress_bar(len(transactions), progress)
    began = time.perf_counter()
    first_ms = transactions[0].occurred_at if transactions else 0
    try:
        for i, tx in enumerate(transactions):
            if speed is not None:
                due = began + (tx.occurred_at - first_ms) / 1000.0 / speed
                ahead = due - time.perf_counter()
                if ahead > 0:
                    producer.poll(0)
                    sleep(ahead)
            value = orjson.dumps(to_message(tx, source, currency=currency, channel=channel))
            key = tx.customer_id.encode()
            while True:
                try:
                    producer.produce(topic, value=value, key=key)
                    break
                except BufferError:  # local queue full: serve delivery reports, then retry
                    producer.poll(0.05)
            report.sent += 1
            if speed is not None:
                bar.update(1)
            elif i % 1000 == 999:
                producer.poll(0)
                bar.update(1000)
        bar.update(report.sent - bar.n)
    finally:
        left = producer.flush(flush_timeout)
        report.seconds = time.perf_counter() - began
        bar.close()
        if left:
            report.failed += left
            report.errors.append(f"{left} messages still undelivered after {flush_timeout} s")
    return report


class _NoBar:
    n = 0

    def update(self, k: int) -> None:
        self.n += k

    def close(self) -> None:
        pass


def progress_bar(total: int, show: bool, desc: str = "replay", unit: str = "msg") -> Any:
    """A tqdm bar on stderr, or a stand-in that only counts when ``show`` is False."""
    if not show:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, unit_scale=True, file=sys.stderr, mininterval=0.5,
                desc=desc, dynamic_ncols=True)


# --------------------------------------------------------------------------- command


def _column(text: str) -> ColumnRef:
    """A ``--*-col`` value: an integer index or a header name."""
    return int(text) if re.fullmatch(r"-?\d+", text.strip()) else text


def add_log_arguments(p: argparse.ArgumentParser) -> None:
    """The FILE argument and the flags that say how to read it (shared with ``cvm evaluate``)."""
    p.add_argument("file", metavar="FILE", help="transaction log; - reads standard input")
    g = p.add_argument_group("reading the log")
    g.add_argument("--sep", default=None,
                   help="column separator: ',', ';', tab or ws (runs of whitespace); "
                        "default: detected (tab, comma, semicolon, else whitespace)")
    g.add_argument("--customer-col", type=_column, default=0,
                   help="customer id column: 0-based index or header name (default 0)")
    g.add_argument("--date-col", type=_column, default=1,
                   help="date/time column: index or header name (default 1)")
    g.add_argument("--amount-col", type=_column, default=-1,
                   help="amount column: index (negative counts from the end) or header name "
                        "(default -1, the last column); a negative amount is a return")
    g.add_argument("--cost-col", type=_column, default=None,
                   help="optional cost-of-goods column: index or header name")
    g.add_argument("--date-format", default="auto",
                   help="strftime format such as %%Y%%m%%d, or iso (RFC 3339 / ISO 8601), epoch "
                        "(seconds), epoch_ms; default auto: YYYYMMDD if 8 digits, else iso. "
                        "A date alone is midnight UTC, a time without offset is UTC")
    g.add_argument("--header", choices=("auto", "yes", "no"), default="auto",
                   help="whether the first line is a header (default auto: when neither its "
                        "date nor its amount parses; implied by column names)")
    g.add_argument("--skip-rows", type=int, default=0, metavar="N",
                   help="ignore the first N lines of the file")
    g.add_argument("--currency", default=None,
                   help="ISO 4217 currency of the amounts (default CVM_BASE_CURRENCY)")
    g.add_argument("--channel", default="replay", help="sales channel of every purchase")
    g.add_argument("--strict", action="store_true",
                   help="stop at the first row that cannot be parsed instead of skipping it")


def log_format_from_args(args: argparse.Namespace) -> LogFormat:
    if args.date_format not in DATE_FORMATS and "%" not in args.date_format:
        raise ReplayError(
            f"--date-format {args.date_format!r} is not a strftime format (with %) nor one of "
            f"{', '.join(DATE_FORMATS)}"
        )
    return LogFormat(
        customer_col=args.customer_col, date_col=args.date_col, amount_col=args.amount_col,
        cost_col=args.cost_col, sep=args.sep, date_format=args.date_format,
        header=args.header, skip_rows=args.skip_rows,
    )


#: At most this many bad rows are printed one by one; the total is always printed.
MAX_REPORTED_ROWS = 50


def report_parse(log: ParsedLog, path: str, out: TextIO, prog: str) -> None:
    """Tell the user how the log was read and which rows were skipped (never silently)."""
    sep = {None: "whitespace", "\t": "tab"}.get(log.separator, repr(log.separator))
    header = "no header" if log.header is None else (
        f"header on line {log.header_line}: {', '.join(log.header)}"
    )
    print(f"{prog}: {path}: {len(log.transactions):,} rows, separator {sep}, {header}", file=out)
    for row in log.bad[:MAX_REPORTED_ROWS]:
        print(f"{prog}: {path}: skipped {row}", file=out)
    if log.bad:
        more = len(log.bad) - MAX_REPORTED_ROWS
        tail = f" ({more:,} more not listed)" if more > 0 else ""
        print(f"{prog}: {path}: {len(log.bad):,} rows skipped{tail}; --strict makes them fatal",
              file=out)


def add_replay_arguments(p: argparse.ArgumentParser) -> None:
    """Every argument of ``cvm replay``."""
    add_log_arguments(p)
    g = p.add_argument_group("publishing")
    g.add_argument("--speed", type=float, default=None,
                   help="event time per wall time, e.g. 86400 = one day per second "
                        "(default: full speed)")
    g.add_argument("--limit-before", default=None, metavar="DATE",
                   help="publish only rows before DATE (YYYY-MM-DD, YYYYMMDD or RFC 3339)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(settings: Settings, args: argparse.Namespace) -> int:
    """``cvm replay``: 0 when every message was delivered, 1 when some were not, 2 on bad input."""
    prog = "cvm replay"
    try:
        fmt = log_format_from_args(args)
        limit = None if args.limit_before is None else parse_instant(args.limit_before)
        log = read_log(args.file, fmt, strict=args.strict)
    except ReplayError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    report_parse(log, args.file, sys.stderr, prog)
    rows = in_event_time_order(log.transactions)
    if limit is not None:
        kept = [t for t in rows if t.occurred_at < limit]
        print(f"{prog}: {len(rows) - len(kept):,} rows at or after {format_time(limit)} "
              "not published (--limit-before)", file=sys.stderr)
        rows = kept
    report = publish(
        rows, settings, source_name(args.file), currency=args.currency, channel=args.channel,
        speed=args.speed, progress=not args.no_progress,
    )
    for error in report.errors:
        print(f"{prog}: delivery failed: {error}", file=sys.stderr)
    print(
        f"replayed {report.sent - report.failed:,} of {len(rows):,} purchases to "
        f"{settings.topics.purchases} in {report.seconds:.1f} s ({report.rate:,.0f} msg/s); "
        f"{report.failed:,} failed, {len(log.bad):,} bad rows skipped"
    )
    return 1 if report.failed else 0
