"""`cvm replay` without Kafka: parsing transaction logs, ordering, messages, publishing."""

from __future__ import annotations

import argparse
import doctest
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream_app import cli, replay
from stream_app.contract import Contract
from stream_app.replay import (
    LogFormat,
    ReplayError,
    Transaction,
    in_event_time_order,
    parse_log,
    parse_when,
    publish,
    to_message,
)
from stream_app.settings import Settings

DAY = 86_400_000
JAN_1_1997 = 852_076_800_000  # 1997-01-01T00:00:00Z
CDNOW = [
    "00001 19970101 1 11.77",
    "00002 19970112 1 12.00",
    "00002 19970112 5 77.00",
    "00003 19970102 2 20.76",
    "00003 19970330 2 20.76",
]


def test_cdnow_whitespace_file_with_default_mapping() -> None:
    log = parse_log(CDNOW, LogFormat())
    assert log.separator is None and log.header is None and not log.bad
    first = log.transactions[0]
    assert first == Transaction(1, "00001", JAN_1_1997, Decimal("11.77"))
    assert [t.customer_id for t in log.transactions] == ["00001", "00002", "00002", "00003",
                                                         "00003"]
    # date-only values are midnight UTC
    assert all(t.occurred_at % DAY == 0 for t in log.transactions)
    assert log.transactions[1].occurred_at == JAN_1_1997 + 11 * DAY


def test_quantity_column_is_not_the_amount() -> None:
    log = parse_log(CDNOW, LogFormat(amount_col=3))
    assert [t.amount for t in log.transactions][:3] == [Decimal("11.77"), Decimal("12.00"),
                                                        Decimal("77.00")]
    log = parse_log(CDNOW, LogFormat(amount_col=2))
    assert log.transactions[2].amount == Decimal(5)


@pytest.mark.parametrize(("lines", "sep"), [
    (["id,when,amount", "c1,1997-01-01,10.5", "c2,1997-01-02,3"], ","),
    (["id;when;amount", "c1;1997-01-01;10.5", "c2;1997-01-02;3"], ";"),
    (["id\twhen\tamount", "c1\t1997-01-01\t10.5", "c2\t1997-01-02\t3"], "\t"),
])
def test_separators_are_detected_and_the_header_recognised(lines: list[str], sep: str) -> None:
    log = parse_log(lines, LogFormat())
    assert log.separator == sep
    assert log.header == ["id", "when", "amount"] and log.header_line == 1
    assert [(t.line, t.customer_id, t.amount) for t in log.transactions] == [
        (2, "c1", Decimal("10.50")), (3, "c2", Decimal("3.00"))]


def test_columns_by_header_name_in_any_order_and_case() -> None:
    lines = ['"Amount","Cost","Customer ID","Order Date"',
             '"19.99","12.00","A-1","2026-03-01T10:15:00+02:00"',
             '"-5.00","-3.00","A-1","2026-03-02T00:00:00Z"']
    fmt = LogFormat(customer_col="customer id", date_col="ORDER DATE", amount_col="amount",
                    cost_col="Cost", date_format="iso")
    log = parse_log(lines, fmt)
    assert not log.bad
    order, ret = log.transactions
    assert order.customer_id == "A-1" and order.cost == Decimal("12.00")
    assert order.occurred_at == parse_when("2026-03-01T08:15:00Z", "iso")  # offset applied
    assert ret.amount == Decimal("-5.00") and ret.cost == Decimal("3.00") and ret.is_return


def test_a_column_name_without_a_header_line_is_an_error() -> None:
    with pytest.raises(ReplayError, match="not in the header"):
        parse_log(["c1,1997-01-01,3"], LogFormat(customer_col="customer", header="yes"))
    with pytest.raises(ReplayError, match="header is 'no'"):
        LogFormat(customer_col="customer", header="no")


def test_two_roles_on_one_column_is_an_error() -> None:
    # the default amount column is the last one, which is the cost column here
    with pytest.raises(ReplayError, match="amount and cost columns are both column 3"):
        parse_log(["c1,19970101,10,4"], LogFormat(cost_col=3))
    with pytest.raises(ReplayError, match="customer and date"):
        parse_log(["id,when,amount", "c1,19970101,10"], LogFormat(date_col="id"))


def test_header_yes_and_no_override_the_guess() -> None:
    lines = ["c0,19970101,1", "c1,19970102,2"]
    assert len(parse_log(lines, LogFormat(header="yes")).transactions) == 1
    log = parse_log(["x,y,z", "c1,19970102,2"], LogFormat(header="no"))
    assert len(log.transactions) == 1 and [b.line for b in log.bad] == [1]


def test_a_bad_first_row_is_reported_not_taken_for_a_header() -> None:
    # the amount parses, so line 1 is data with a bad date, not a header
    log = parse_log(["c0,1997-13-45,1", "c1,19970102,2"], LogFormat())
    assert log.header is None
    assert [b.line for b in log.bad] == [1]


@pytest.mark.parametrize(("text", "fmt", "ms"), [
    ("19970101", "auto", JAN_1_1997),
    ("1997-01-01", "auto", JAN_1_1997),
    ("1997-01-01T06:00:00", "iso", JAN_1_1997 + DAY // 4),  # no offset: UTC
    ("1997-01-01T06:00:00Z", "iso", JAN_1_1997 + DAY // 4),
    ("1997-01-01T01:00:00-05:00", "iso", JAN_1_1997 + DAY // 4),
    ("1997-01-01 06:00:00.250+00:00", "iso", JAN_1_1997 + DAY // 4 + 250),
    ("852076800", "epoch", JAN_1_1997),
    ("852076800.5", "epoch", JAN_1_1997 + 500),
    ("852076800123", "epoch_ms", JAN_1_1997 + 123),
    ("01/02/1997", "%d/%m/%Y", JAN_1_1997 + 31 * DAY),
    ("1997-01-01 12:00 +0100", "%Y-%m-%d %H:%M %z", JAN_1_1997 + 11 * 3_600_000),
])
def test_date_formats(text: str, fmt: str, ms: int) -> None:
    assert parse_when(text, fmt) == ms


@pytest.mark.parametrize(("text", "fmt"), [
    ("", "auto"), ("19971301", "auto"), ("yesterday", "iso"), ("1e400", "epoch"),
    ("18991231", "auto"), ("22000101", "auto"), ("1.5", "epoch_ms"), ("1997-01-01", "%Y%m%d"),
])
def test_unusable_dates(text: str, fmt: str) -> None:
    with pytest.raises(ValueError):
        parse_when(text, fmt)


def test_bad_rows_are_reported_with_line_numbers_and_reasons() -> None:
    lines = [
        "# exported 2026-01-01",  # skipped by skip_rows
        "customer,date,amount,cost",
        "c1,2026-01-01,10,4",
        "",
        "c2,2026-01-01",  # too few fields
        "c3,not-a-date,5,1",
        "c4,2026-01-02,ten,1",
        "c5,2026-01-02,NaN,1",
        "c 6,2026-01-02,5,1",
        "{c7},2026-01-02,5,1",
        "c8,2026-01-02,5,-1",  # negative cost on an order
        "c9,2026-01-03,7,",  # empty cost: none
    ]
    log = parse_log(lines, LogFormat(amount_col=2, cost_col="cost", skip_rows=1))
    assert [t.line for t in log.transactions] == [3, 12]
    assert log.transactions[1].cost is None
    reasons = {b.line: b.reason for b in log.bad}
    assert sorted(reasons) == [5, 6, 7, 8, 9, 10, 11]
    assert "no amount column" in reasons[5]
    assert "'not-a-date'" in reasons[6]
    assert "'ten' is not a number" in reasons[7]
    assert "not a finite number" in reasons[8]
    assert "whitespace or braces" in reasons[9] and "whitespace or braces" in reasons[10]
    assert "negative on an order" in reasons[11]
    assert str(log.bad[0]).startswith("line 5: ")


def test_strict_makes_the_first_bad_row_fatal() -> None:
    with pytest.raises(ReplayError, match=r"line 3: .*--strict"):
        parse_log(["a 19970101 1", "b 19970101 2", "c 1997 3", "d x 4"], LogFormat(),
                  strict=True)


def test_amounts_round_half_even_to_cents_and_negative_amounts_are_returns() -> None:
    log = parse_log(["a 19970101 10.005", "a 19970101 10.015", "a 19970101 -2.5",
                     "a 19970101 +3"], LogFormat())
    assert [t.amount for t in log.transactions] == [
        Decimal("10.00"), Decimal("10.02"), Decimal("-2.50"), Decimal("3.00")]
    messages = [to_message(t, "f", currency="EUR", channel="web") for t in log.transactions]
    assert [(m["kind"], m["amount"]) for m in messages] == [
        ("order", 10.0), ("order", 10.02), ("return", 2.5), ("order", 3.0)]


def test_event_time_order_is_stable() -> None:
    log = parse_log([
        "b 19970105 1", "a 19970103 2", "c 19970105 3", "a 19970101 4", "d 19970103 5",
    ], LogFormat())
    ordered = in_event_time_order(log.transactions)
    assert [t.line for t in ordered] == [4, 2, 5, 1, 3]  # ties keep file order


def test_messages_follow_the_contract() -> None:
    contract = Contract()
    log = parse_log(["id,when,amount,cost", "C-1,2026-01-01T10:00:00.123+01:00,12.5,7",
                     "C-2,20260102,-4,2", "C-3,2026-01-03,0,"],
                    LogFormat(amount_col=2, cost_col=3))
    for tx in log.transactions:
        message = to_message(tx, "orders-2026", currency="USD", channel="replay")
        decoded = contract.decode("purchase", orjson.dumps(message))
        assert decoded["event_id"] == f"orders-2026-{tx.line}"
        assert decoded["occurred_at"].endswith("Z")
    first = to_message(log.transactions[0], "x", currency="USD", channel="replay")
    assert first["occurred_at"] == "2026-01-01T09:00:00.123Z"
    assert "cost" not in to_message(log.transactions[2], "x", currency="USD", channel="replay")


def test_read_log_from_a_file_with_a_bom_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "my log.csv"
    path.write_bytes("\ufeffid,date,amount\r\nc1,2026-01-01,1\r\n".encode())
    log = replay.read_log(path, LogFormat())
    assert log.header == ["id", "date", "amount"] and len(log.transactions) == 1
    assert replay.source_name(path) == "my log"
    with pytest.raises(ReplayError, match="cannot read"):
        replay.read_log(tmp_path / "missing.csv", LogFormat())


# --------------------------------------------------------------------------- publishing


class FakeMessage:
    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self._t, self._p, self._o = topic, partition, offset

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o


class FakeProducer:
    """Partitions by key length, acks on poll/flush, fails keys listed in ``fail``."""

    def __init__(self, config: dict[str, Any], fail: frozenset[bytes] = frozenset()) -> None:
        self.config = config
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.pending: list[tuple[str, bytes]] = []
        self.offsets: dict[int, int] = {}
        self.fail = fail

    def produce(self, topic: str, value: bytes, key: bytes) -> None:
        self.sent.append((topic, key, value))
        self.pending.append((topic, key))

    def poll(self, timeout: float) -> int:
        callback = self.config["on_delivery"]
        for topic, key in self.pending:
            if key in self.fail:
                callback("broker said no", FakeMessage(topic, -1, -1))
                continue
            p = len(key) % 2
            self.offsets[p] = self.offsets.get(p, -1) + 1
            callback(None, FakeMessage(topic, p, self.offsets[p]))
        n, self.pending = len(self.pending), []
        return n

    def flush(self, timeout: float) -> int:
        self.poll(0)
        return 0


def _rows() -> list[Transaction]:
    log = parse_log(["bb 19970103 3", "a 19970101 1", "a 19970102 -2"], LogFormat())
    return in_event_time_order(log.transactions)


def test_publish_sends_keyed_messages_in_order_and_records_offsets() -> None:
    made: list[FakeProducer] = []

    def factory(config: dict[str, Any]) -> FakeProducer:
        made.append(FakeProducer(config))
        return made[-1]

    settings = Settings()
    report = publish(_rows(), settings, "log", producer_factory=factory, progress=False)
    producer = made[0]
    assert producer.config["delivery.report.only.error"] is False
    assert producer.config["partitioner"] == "murmur2_random"
    assert [(t, k) for t, k, _ in producer.sent] == [
        (settings.topics.purchases, b"a"), (settings.topics.purchases, b"a"),
        (settings.topics.purchases, b"bb")]
    values = [orjson.loads(v) for _, _, v in producer.sent]
    assert [v["event_id"] for v in values] == ["log-2", "log-3", "log-1"]
    assert values[1]["kind"] == "return" and values[1]["currency"] == "USD"
    assert report.sent == 3 and report.failed == 0
    assert report.offsets == {f"{settings.topics.purchases}/1": 1,
                              f"{settings.topics.purchases}/0": 0}


def test_failed_deliveries_are_counted() -> None:
    report = publish(_rows(), Settings(), "log", progress=False,
                     producer_factory=lambda c: FakeProducer(c, fail=frozenset({b"bb"})))
    assert report.failed == 1 and report.errors and "broker said no" in report.errors[0]


def test_speed_sleeps_through_event_time_gaps() -> None:
    slept: list[float] = []
    publish(_rows(), Settings(), "log", speed=86_400.0, progress=False, sleep=slept.append,
            producer_factory=FakeProducer)
    # 1 and 2 days after the first event at one day per second (the fake sleep takes no time)
    assert slept == pytest.approx([1.0, 2.0], abs=0.05)
    with pytest.raises(ReplayError):
        publish(_rows(), Settings(), "log", speed=0.0, producer_factory=FakeProducer)


# --------------------------------------------------------------------------- the command


def test_cli_parses_replay_flags() -> None:
    args = cli.parser().parse_args([
        "replay", "orders.csv", "--customer-col", "Customer ID", "--date-col", "2",
        "--amount-col", "-1", "--date-format", "%Y%m%d", "--speed", "86400",
        "--limit-before", "1997-10-01", "--sep", ";", "--skip-rows", "2", "--strict",
    ])
    assert args.func is replay.run
    assert (args.customer_col, args.date_col, args.amount_col) == ("Customer ID", 2, -1)
    fmt = replay.log_format_from_args(args)
    assert fmt.sep == ";" and fmt.skip_rows == 2 and fmt.date_format == "%Y%m%d"


def _replay_args(path: Path, *extra: str) -> argparse.Namespace:
    return cli.parser().parse_args(["replay", str(path), "--no-progress", *extra])


def test_run_publishes_rows_before_the_limit_in_time_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cdnow.txt"
    path.write_text("\n".join([*CDNOW, "00004 1997xx02 1 1.00"]) + "\n")
    seen: dict[str, Any] = {}

    def fake_publish(rows: list[Transaction], settings: Settings, source: str,
                     **kw: Any) -> replay.ReplayReport:
        seen.update(rows=rows, source=source, **kw)
        return replay.ReplayReport(sent=len(rows), seconds=0.5)

    monkeypatch.setattr(replay, "publish", fake_publish)
    assert replay.run(Settings(), _replay_args(path, "--limit-before", "19970301")) == 0
    assert [t.line for t in seen["rows"]] == [1, 4, 2, 3]
    assert seen["source"] == "cdnow" and seen["channel"] == "replay" and seen["speed"] is None
    out, err = capsys.readouterr()
    assert "skipped line 6: date '1997xx02'" in err
    assert "1 rows at or after 1997-03-01T00:00:00Z not published" in err
    assert out.startswith("replayed 4 of 4 purchases") and "1 bad rows skipped" in out


def test_run_reports_unusable_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert replay.run(Settings(), _replay_args(tmp_path / "nope.txt")) == 2
    assert "cannot read" in capsys.readouterr().err
    path = tmp_path / "bad.txt"
    path.write_text("a 19970101 1\nb 1997 2\n")
    assert replay.run(Settings(), _replay_args(path, "--strict")) == 2
    assert replay.run(Settings(), _replay_args(path, "--date-format", "ymd")) == 2


def test_docstring_examples() -> None:
    result = doctest.testmod(replay, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
