"""Logging of a worker: text or JSON lines, with repeated warnings collapsed.

Configured once, when the worker starts: Faust's worker (mode) clears the root
logger's handlers and applies a `logging.config.dictConfig`, so the worker hands
it `dict_config` rather than configuring logging beside it. The standard library
is enough here: a formatter for JSON and a filter for repeats; structlog would
add a second logging pipeline next to the one Faust, aiokafka and redis-py use.

``CVM_LOG_FORMAT=json`` prints one JSON object per line: ``ts`` (UTC, ms),
``level``, ``logger``, ``message``, and ``exc`` with the traceback when there is
one, ``repeated`` when the line stands for suppressed repeats.

`RepeatFilter` keeps a broker or Redis outage from flooding the log: a warning
or error whose logger and message template (the format string before its
arguments) were already printed within the window is dropped and counted; the
first one after the window passes with the count of those dropped.
"""

from __future__ import annotations

import logging
import logging.config
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from stream_app.settings import Settings

__all__ = ["JsonFormatter", "RepeatFilter", "TextFormatter", "configure", "dict_config"]

TEXT_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"
#: Templates remembered at most; older ones are forgotten first once the window passed.
MAX_TEMPLATES = 2000
#: ``extra=`` of a record that must never be collapsed: a rare change of state that an
#: operator needs every time (a Redis restart noticed, a rewind to what Redis holds).
ALWAYS = {"always_log": True}


class RepeatFilter(logging.Filter):
    """Drops repeats of a record (same logger, level and template) within `window_s` seconds.

    Records below `min_level` always pass (batch lines at debug, summaries at info), and
    so do records logged with ``extra=ALWAYS``.
    The first record after a window that dropped some gets ``record.repeated``: how many.

    >>> f = RepeatFilter(window_s=60, clock=iter([0, 1, 2, 61]).__next__)
    >>> rec = lambda: logging.LogRecord("kafka", logging.ERROR, "", 0, "down: %s", ("x",), None)
    >>> [f.filter(rec()) for _ in range(3)]
    [True, False, False]
    >>> r = rec(); f.filter(r), r.repeated
    (True, 2)
    >>> r = rec(); r.always_log = True; f.filter(r)
    True
    """

    def __init__(
        self,
        window_s: float = 60.0,
        min_level: int = logging.WARNING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.window_s = window_s
        self.min_level = min_level
        self.clock = clock
        # (logger, level, template) -> [window start, records dropped in it]
        self._seen: dict[tuple[str, int, str], list[float]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.min_level or self.window_s <= 0:
            return True
        if getattr(record, "always_log", False):
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        entry = self._seen.get(key)
        if entry is not None and now - entry[0] < self.window_s:
            entry[1] += 1
            return False
        if entry is not None and entry[1]:
            record.repeated = int(entry[1])
            record.repeat_window_s = self.window_s
        if entry is None and len(self._seen) >= MAX_TEMPLATES:
            self._forget(now)
        self._seen[key] = [now, 0]
        return True

    def _forget(self, now: float) -> None:
        expired = [k for k, (start, _) in self._seen.items() if now - start >= self.window_s]
        for k in expired or list(self._seen)[: len(self._seen) // 2]:
            del self._seen[k]


def _repeat_note(record: logging.LogRecord) -> str:
    n = getattr(record, "repeated", 0)
    if not n:
        return ""
    return f" [repeated {n} more times in {getattr(record, 'repeat_window_s', 0):g}s]"


class TextFormatter(logging.Formatter):
    """The usual one-line text, with a note on suppressed repeats."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        note = _repeat_note(record)
        if not note:
            return text
        first, nl, rest = text.partition("\n")
        return first + note + nl + rest


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line.

    >>> rec = logging.LogRecord("cvm", logging.INFO, "", 0, "applied %d", (3,), None)
    >>> rec.created = 0.0
    >>> JsonFormatter().format(rec)
    '{"ts":"1970-01-01T00:00:00.000Z","level":"info","logger":"cvm","message":"applied 3"}'
    """

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if getattr(record, "repeated", 0):
            doc["repeated"] = record.repeated
            doc["repeat_window_s"] = getattr(record, "repeat_window_s", None)
        if record.exc_info:
            doc["exc"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        elif record.exc_text:
            doc["exc"] = record.exc_text
        if record.stack_info:
            doc["stack"] = record.stack_info
        return orjson.dumps(doc, default=str).decode()


def dict_config(settings: Settings) -> dict[str, Any]:
    """The `logging.config.dictConfig` of a worker: one stdout handler, filtered and formatted."""
    formatter = JsonFormatter if settings.log_format == "json" else TextFormatter
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": {"()": formatter}},
        "filters": {"repeats": {"()": RepeatFilter, "window_s": settings.log_repeat_window_s}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stdout",
                "formatter": "default",
                "filters": ["repeats"],
            },
        },
        "root": {"level": settings.log_level.upper(), "handlers": ["default"]},
    }


def configure(settings: Settings) -> None:
    """Apply `dict_config` (for processes that do not run a Faust worker)."""
    logging.config.dictConfig(dict_config(settings))
