"""Worker logging: JSON lines on request, and repeated warnings collapsed with a count."""

from __future__ import annotations

import io
import logging
import logging.config
from collections.abc import Iterator

import orjson
import pytest

from stream_app import logs
from stream_app.settings import Settings


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _configure(capsys: pytest.CaptureFixture[str], **env: str) -> None:
    capsys.readouterr()
    logs.configure(Settings.from_env(env))


def test_json_format_one_object_per_line(
    capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    _configure(capsys, CVM_LOG_FORMAT="json", CVM_LOG_LEVEL="debug")
    log = logging.getLogger("stream_app.test")
    log.debug("batch: %d records", 3)
    log.info('a "quoted"\nmultiline message with %s', "ünïcode")
    try:
        raise ValueError("boom")
    except ValueError:
        log.error("cannot apply batch", exc_info=True)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3, lines
    docs = [orjson.loads(line) for line in lines]
    assert [d["level"] for d in docs] == ["debug", "info", "error"]
    assert {d["logger"] for d in docs} == {"stream_app.test"}
    assert docs[0]["message"] == "batch: 3 records"
    assert docs[1]["message"] == 'a "quoted"\nmultiline message with ünïcode'
    assert docs[2]["exc"].startswith("Traceback") and "ValueError: boom" in docs[2]["exc"]
    assert all(d["ts"].endswith("Z") and len(d["ts"]) == 24 for d in docs)


def test_text_format_is_the_default(
    capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    _configure(capsys)
    logging.getLogger("stream_app.test").warning("Redis unavailable (%s)", "down")
    out = capsys.readouterr().out
    assert "[WARNING] stream_app.test: Redis unavailable (down)" in out
    with pytest.raises(Exception, match="CVM_LOG_FORMAT"):
        Settings.from_env({"CVM_LOG_FORMAT": "xml"})


def test_a_flood_of_one_error_prints_one_line_per_window(
    capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    _configure(capsys, CVM_LOG_FORMAT="json")
    kafka = logging.getLogger("aiokafka")
    for i in range(1000):  # one template, changing arguments: one message
        kafka.error("Unable connect to node with id %s: [Errno 111] attempt %d", 1, i)
    kafka.error("Unable to update metadata from [%s]", 1)
    logging.getLogger("aiokafka.fetcher").error("Unable connect to node with id %s: x %d", 1, 0)
    logging.getLogger("stream_app.metrics").info("summary: %s", "a")
    logging.getLogger("stream_app.metrics").info("summary: %s", "b")
    out = capsys.readouterr().out
    messages = [orjson.loads(line)["message"] for line in out.splitlines()]
    assert messages == [
        "Unable connect to node with id 1: [Errno 111] attempt 0",
        "Unable to update metadata from [1]",  # another template
        "Unable connect to node with id 1: x 0",  # another logger
        "summary: a", "summary: b",  # below warning: never held back
    ]
    assert len(out) < 1000


def test_the_first_repeat_after_the_window_carries_the_count() -> None:
    now = [0.0]
    f = logs.RepeatFilter(window_s=60, clock=lambda: now[0])
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(f)
    handler.setFormatter(logs.JsonFormatter())
    log = logging.Logger("redis")
    log.addHandler(handler)
    for t in (0, 1, 30, 59.9, 60.0, 61, 200):
        now[0] = t
        log.warning("Redis unavailable (%s); retrying batch in %.1fs", "refused", 0.5)
    docs = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert [d.get("repeated") for d in docs] == [None, 3, 1]
    assert docs[1]["repeat_window_s"] == 60
    text = logs.TextFormatter()
    record = logging.LogRecord("redis", logging.WARNING, "", 0, "down", (), None)
    record.repeated, record.repeat_window_s = 3, 60.0
    assert text.format(record).endswith("redis: down [repeated 3 more times in 60s]")


def test_window_zero_lets_everything_through() -> None:
    f = logs.RepeatFilter(window_s=0)
    record = logging.LogRecord("x", logging.ERROR, "", 0, "same", (), None)
    assert all(f.filter(record) for _ in range(5))


def test_templates_are_forgotten_beyond_the_cap() -> None:
    now = [0.0]
    f = logs.RepeatFilter(window_s=1, clock=lambda: now[0])
    for i in range(logs.MAX_TEMPLATES + 10):
        now[0] = i * 0.01
        f.filter(logging.LogRecord("x", logging.ERROR, "", 0, f"message {i}", (), None))
    assert len(f._seen) <= logs.MAX_TEMPLATES  # noqa: SLF001 - the bound is the point
