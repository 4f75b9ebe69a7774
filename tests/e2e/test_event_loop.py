"""The worker on each event loop it offers (`CVM_EVENT_LOOP`): the same records either way."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_app.settings import Settings
from tests.conftest import WorkerProcess
from tests.e2e.test_pipeline import make_events, publish_and_wait_for_totals

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_the_worker_runs_on_the_loop_asked_for_and_every_record_is_exact(
    settings: Settings, tmp_path: Path, loop: str
) -> None:
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.env["CVM_EVENT_LOOP"] = loop
    worker.start()
    try:
        publish_and_wait_for_totals(settings, worker, make_events(300, customers=20, seed=23))
        assert f"event loop: {loop}" in worker.log_path.read_text(), worker.log_tail()
    finally:
        worker.stop()
