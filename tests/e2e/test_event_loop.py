"""The worker on each event loop it offers (`CVM_EVENT_LOOP`): the same records either way."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from stream_app.connections import sync_redis
from stream_app.settings import Settings
from stream_app.worker_process import wait_until
from tests.conftest import WorkerProcess, publish
from tests.e2e.test_pipeline import expected_totals, make_events, records_match, topic_of

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_the_worker_runs_on_the_loop_asked_for_and_every_record_is_exact(
    settings: Settings, tmp_path: Path, loop: str
) -> None:
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.env["CVM_EVENT_LOOP"] = loop
    worker.start()
    try:
        events = make_events(300, customers=20, seed=23)
        publish(settings, (
            (topic_of(settings, kind), m["customer_id"].encode(), orjson.dumps(m))
            for kind, m in events
        ))
        totals = expected_totals(events, settings.default_margin_rate)
        client = sync_redis(settings, decode_responses=True)
        assert wait_until(lambda: records_match(client, totals)), worker.log_tail()
        client.close()
        assert f"event loop: {loop}" in worker.log_path.read_text(), worker.log_tail()
    finally:
        worker.stop()
