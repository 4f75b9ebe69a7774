"""`cvm alerts`: parsing, filtering, formatting and the read loop, without a broker."""

from __future__ import annotations

import doctest
import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from stream_app import cli, follow
from stream_app.contract import schema_dir
from stream_app.follow import Filter, Record, format_json, format_line, parse, read


def _example(name: str) -> dict[str, Any]:
    doc = orjson.loads((schema_dir() / "examples" / name).read_bytes())
    assert isinstance(doc, dict)
    return doc


def _alert(**changes: Any) -> dict[str, Any]:
    return {**_example("alert.defection_risk.json"), **changes}


def _winback(**changes: Any) -> dict[str, Any]:
    return {**_example("winback.email.json"), **changes}


def _record(kind: str, message: dict[str, Any], **where: Any) -> Record:
    record = parse(kind, orjson.dumps(message), **where)
    assert record.message is not None, record.error
    return record


def test_doctests() -> None:
    result = doctest.testmod(follow, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# ------------------------------------------------------------------------------------ parse


def test_parse_checks_both_contracts() -> None:
    alert = _record("alert", _alert(), key=b"c-000042", topic="a", partition=1, offset=7)
    assert (alert.kind, alert.severity, alert.customer_id) == ("defection_risk", "high", "c-000042")
    assert (alert.topic, alert.partition, alert.offset, alert.key) == ("a", 1, 7, b"c-000042")
    winback = _record("winback", _winback())
    assert (winback.kind, winback.severity, winback.customer_id) == ("winback", None, "c-000042")


@pytest.mark.parametrize(("raw", "error"), [
    (None, "invalid_json: payload is missing"),
    (b"", "invalid_json: "),
    (b"{not json", "invalid_json: "),
    (b"\xff\xfe", "invalid_json: "),
    (b"42", "invalid_json: payload is a JSON number, expected an object"),
    (b'"x"', "invalid_json: payload is a JSON string, expected an object"),
    (b'{"alert_id": "a"}', "schema_violation: customer_id: missing (required)"),
    (orjson.dumps(_alert(severity="urgent")), "schema_violation: severity:"),
    (orjson.dumps(_alert(churn_probability=1.5)), "schema_violation: churn_probability:"),
    (orjson.dumps(_alert(customer_id="c 1")), "schema_violation: customer_id:"),
])
def test_parse_never_raises_on_malformed_input(raw: bytes | None, error: str) -> None:
    record = parse("alert", raw, key=b"c-1")
    assert record.message is None and record.kind is None and record.severity is None
    assert record.error is not None and record.error.startswith(error), record.error
    assert record.customer_id == "c-1"  # from the key


def test_parse_rejects_an_unknown_topic_kind() -> None:
    with pytest.raises(ValueError, match="dead_letter"):
        parse("dead_letter", b"{}")


def test_a_message_valid_for_the_other_topic_is_malformed() -> None:
    assert parse("winback", orjson.dumps(_alert())).message is None


def test_unknown_properties_and_new_kinds_are_accepted() -> None:
    record = _record("alert", _alert(kind="spend_collapse", extra={"x": 1}))
    assert record.kind == "spend_collapse"


# ------------------------------------------------------------------------------------ format


def test_alert_line_has_time_severity_customer_kind_value_and_top_reasons() -> None:
    reasons = [{"code": f"r{i}", "detail": f"detail {i}", "contribution": 0.4 - i / 10}
               for i in range(4)]
    line = format_line(_record("alert", _alert(reasons=reasons)))
    assert line.startswith("2026-01-22T18:30:01.250Z  HIGH      c-000042      defection_risk  ")
    assert "clv 1,840.25  churn 0.72  tier 94.5 (96 at the last order)" in line
    assert "reasons: r0 +0.40 (detail 0); r1 +0.30 (detail 1); r2 +0.20 (detail 2)" in line
    assert "r3" not in line and "\n" not in line


def test_alert_line_shows_value_at_risk_when_the_message_has_one() -> None:
    line = format_line(_record("alert", _alert(value_at_risk=12345.678)))
    assert "at risk 12,345.68  clv 1,840.25" in line


def test_negative_contribution_and_no_reasons() -> None:
    line = format_line(_record("alert", _alert(
        reasons=[{"code": "loyal", "detail": "", "contribution": -0.1}])))
    assert "reasons: loyal -0.10 ()" in line
    assert format_line(_record("alert", _alert(reasons=[]))).endswith("reasons: none")


def test_winback_line_marks_the_control_group() -> None:
    line = format_line(_record("winback", _winback(control_group=True)))
    assert "WIN-BACK  c-000042      winback" in line
    assert "clv lost 1,610.00  p_alive 0.18  email budget 45.00 [control: no offer]" in line
    assert "reasons: p_alive_low +0.55" in line
    assert "control" not in format_line(_record("winback", _winback()))


def test_malformed_line_shows_where_why_and_the_start_of_the_payload() -> None:
    raw = b'{"alert_id": "x", ' + b'"pad": "' + b"y" * 300 + b'"'
    record = parse("alert", raw, key=b"c-9", topic="cvm.alerts", partition=3, offset=41,
                   timestamp_ms=1_769_106_601_250)
    line = format_line(record)
    assert line.startswith("2026-01-22T18:30:01.250Z  MALFORMED cvm.alerts[3]@41  key c-9  ")
    assert "invalid_json:" in line and 'raw: {"alert_id": "x", "pad": "yyy' in line
    assert line.endswith("...") and len(line) < 400


def test_control_characters_are_escaped_not_sent_to_the_terminal() -> None:
    evil = _alert(reasons=[{"code": "x", "detail": "\x1b[2J\x07 bell\nnext", "contribution": 1}])
    line = format_line(_record("alert", evil))
    assert "\x1b" not in line and "\x07" not in line and "\n" not in line
    assert "\\x1b[2J\\x07 bell\\nnext" in line
    bad = format_line(parse("alert", b"\x1b]0;owned\x07", key=b"\x1bkey"))
    assert "\x1b" not in bad and "\x07" not in bad


def test_color_wraps_only_the_severity() -> None:
    record = _record("alert", _alert(severity="critical"))
    plain, colored = format_line(record), format_line(record, color=True)
    assert "\x1b" not in plain
    assert "\x1b[1;37;41mCRITICAL\x1b[0m" in colored
    assert colored.replace("\x1b[1;37;41m", "").replace("\x1b[0m", "") == plain
    malformed = format_line(parse("alert", b"x"), color=True)
    assert "\x1b[35mMALFORMED\x1b[0m" in malformed


def test_json_is_the_message_on_one_line() -> None:
    message = _alert(reasons=[{"code": "x", "detail": "two\nlines", "contribution": 1}])
    text = format_json(_record("alert", message))
    assert "\n" not in text and orjson.loads(text) == message
    with pytest.raises(ValueError, match="malformed"):
        format_json(parse("alert", b"{"))


# ------------------------------------------------------------------------------------ filter


@pytest.mark.parametrize(("minimum", "shown"), [
    (None, ["low", "medium", "high", "critical", "winback"]),
    ("low", ["low", "medium", "high", "critical"]),
    ("medium", ["medium", "high", "critical"]),
    ("high", ["high", "critical"]),
    ("critical", ["critical"]),
])
def test_minimum_severity(minimum: str | None, shown: list[str]) -> None:
    records = [_record("alert", _alert(severity=s)) for s in follow.SEVERITIES]
    records.append(_record("winback", _winback()))
    flt = Filter(min_severity=minimum)
    assert [r.severity or r.kind for r in records if flt.matches(r)] == shown


def test_kind_and_customer_filters() -> None:
    records = [
        _record("alert", _alert(customer_id="c-1")),
        _record("alert", _alert(customer_id="c-2", kind="spend_collapse")),
        _record("winback", _winback(customer_id="c-1")),
    ]

    def shown(flt: Filter) -> list[tuple[str | None, str | None]]:
        return [(r.kind, r.customer_id) for r in records if flt.matches(r)]

    assert shown(Filter(kinds=frozenset({"winback"}))) == [("winback", "c-1")]
    assert shown(Filter(kinds=frozenset({"defection_risk", "spend_collapse"}))) == [
        ("defection_risk", "c-1"), ("spend_collapse", "c-2")]
    assert shown(Filter(customers=frozenset({"c-1"}))) == [
        ("defection_risk", "c-1"), ("winback", "c-1")]
    assert shown(Filter(customers=frozenset({"c-1"}), kinds=frozenset({"spend_collapse"}))) == []


def test_malformed_messages_pass_filters_unless_their_key_is_another_customer() -> None:
    flt = Filter(min_severity="critical", kinds=frozenset({"defection_risk"}))
    assert flt.matches(parse("alert", b"{"))
    by_customer = Filter(customers=frozenset({"c-1"}))
    assert by_customer.matches(parse("alert", b"{", key=b"c-1"))
    assert by_customer.matches(parse("alert", b"{"))  # no key: cannot tell, so shown
    assert not by_customer.matches(parse("alert", b"{", key=b"c-2"))


def test_filter_rejects_an_unknown_severity() -> None:
    with pytest.raises(ValueError, match="urgent"):
        Filter(min_severity="urgent")


def test_topics_that_no_message_can_pass_are_not_read() -> None:
    assert Filter().wants_topic("alert") and Filter().wants_topic("winback")
    assert not Filter(min_severity="low").wants_topic("winback")
    assert not Filter(kinds=frozenset({"winback"})).wants_topic("alert")
    assert not Filter(kinds=frozenset({"defection_risk"})).wants_topic("winback")


def test_cli_arguments() -> None:
    args = cli.parser().parse_args([
        "alerts", "--follow", "--from-beginning", "--severity", "high",
        "--kind", "defection_risk,winback", "--kind", " spend_collapse ", "--customer", "c-1",
        "--customer", "c-2", "--json",
    ])
    assert args.func is follow.run and args.follow and args.from_beginning and args.json
    assert follow.filter_from_args(args) == Filter(
        "high", frozenset({"defection_risk", "winback", "spend_collapse"}),
        frozenset({"c-1", "c-2"}))
    plain = cli.parser().parse_args(["alerts"])
    assert not plain.follow and not plain.json and follow.filter_from_args(plain) == Filter()
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["alerts", "--severity", "urgent"])


# ------------------------------------------------------------------------------------ read

EOF_CODE = -191


@dataclass
class FakeError:
    value: int
    text: str = "error"

    def code(self) -> int:
        return self.value

    def __str__(self) -> str:
        return self.text


@dataclass
class FakeMessage:
    topic_: str
    partition_: int
    offset_: int
    value_: bytes | None = None
    key_: bytes | None = None
    error_: FakeError | None = None

    def error(self) -> FakeError | None:
        return self.error_

    def topic(self) -> str:
        return self.topic_

    def partition(self) -> int:
        return self.partition_

    def offset(self) -> int:
        return self.offset_

    def key(self) -> bytes | None:
        return self.key_

    def value(self) -> bytes | None:
        return self.value_

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_769_106_601_250)


class FakeConsumer:
    """Hands out the scripted messages (None: an empty poll), then empty polls forever."""

    def __init__(self, script: Iterable[FakeMessage | None]) -> None:
        self.script = list(script)
        self.polls = 0

    def poll(self, timeout: float) -> FakeMessage | None:
        self.polls += 1
        return self.script.pop(0) if self.script else None


KINDS = {"t.alerts": "alert", "t.winback": "winback"}


def _msg(topic: str, partition: int, offset: int, message: Any) -> FakeMessage:
    value = message if isinstance(message, bytes) else orjson.dumps(message)
    return FakeMessage(topic, partition, offset, value, b"c-000042")


def _eof(topic: str, partition: int) -> FakeMessage:
    return FakeMessage(topic, partition, 0, error_=FakeError(EOF_CODE))


def test_read_to_the_end_stops_when_every_partition_is_done() -> None:
    consumer = FakeConsumer([
        _msg("t.alerts", 0, 0, _alert()),
        None,
        _msg("t.winback", 1, 5, _winback()),
        _msg("t.alerts", 0, 1, b"{broken"),  # offset 1 is the last of (t.alerts, 0)
        _msg("t.alerts", 0, 2, _alert()),  # never read: the end was reached
    ])
    records = list(read(consumer, KINDS, {("t.alerts", 0): 2, ("t.winback", 1): 6}))
    assert [(r.topic_kind, r.offset, r.message is None) for r in records] == [
        ("alert", 0, False), ("winback", 5, False), ("alert", 1, True)]
    assert records[2].error is not None and records[2].error.startswith("invalid_json")
    assert records[0].timestamp_ms == 1_769_106_601_250 and records[0].key == b"c-000042"


def test_read_to_the_end_takes_end_of_partition_events() -> None:
    consumer = FakeConsumer([_eof("t.alerts", 0), _msg("t.winback", 0, 0, _winback()),
                             _eof("t.winback", 0)])
    records = list(read(consumer, KINDS, {("t.alerts", 0): 3, ("t.winback", 0): 9}))
    assert [r.topic_kind for r in records] == ["winback"]


def test_read_reports_errors_and_goes_on() -> None:
    errors: list[str] = []
    consumer = FakeConsumer([
        FakeMessage("t.alerts", 0, 0, error_=FakeError(-195, "broker down")),
        _msg("t.alerts", 0, 0, _alert()),
    ])
    records = list(read(consumer, KINDS, {("t.alerts", 0): 1}, on_error=errors.append))
    assert len(records) == 1 and errors == ["broker down"]


def test_read_to_the_end_gives_up_when_nothing_arrives() -> None:
    ticks = itertools.count()
    errors: list[str] = []
    consumer = FakeConsumer([_msg("t.alerts", 0, 0, _alert())])
    records = list(read(consumer, KINDS, {("t.alerts", 0): 5}, idle_timeout_s=10,
                        on_error=errors.append, clock=lambda: float(next(ticks))))
    assert len(records) == 1
    assert errors == ["nothing more arrived within 10 s; 1 partition(s) not read to the end"]


def test_follow_keeps_polling_through_quiet_periods_and_malformed_messages() -> None:
    script: list[FakeMessage | None] = [None] * 50
    script += [_msg("t.alerts", 2, 0, b"\x00"), _msg("t.winback", 0, 0, _winback())]
    consumer = FakeConsumer(script)
    records = list(itertools.islice(read(consumer, KINDS, None, idle_timeout_s=0), 2))
    assert [r.message is None for r in records] == [True, False]
    assert consumer.polls == 52
