"""Fixtures of the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stream_app.settings import Settings
from tests.conftest import WorkerProcess
from tests.e2e.engine_run import FAST_TIMERS


@pytest.fixture
def fast_worker(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[WorkerProcess]:
    """A started worker whose model timers run every few seconds."""
    for name, value in FAST_TIMERS.items():
        monkeypatch.setenv(name, value)
    w = WorkerProcess(settings, tmp_path / "worker.log")
    w.start()
    yield w
    w.stop()
