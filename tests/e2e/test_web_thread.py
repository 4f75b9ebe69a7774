"""Lookups on the web server's own thread (CVM_WEB_IN_THREAD): answered while a batch holds
the worker's event loop, with their own Redis client that the worker closes as it stops.

The batch is held by a real worker whose decoding step, for one marked record, stops the
worker's loop until the test releases it (a wrapper module around ``stream_app.cli``):
with the web on its own thread a lookup is answered before the release, on the worker's
loop only after it. No time is asserted, only that order.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream_app.settings import Settings
from stream_app.worker_process import WorkerProcess, wait_until
from tests.conftest import ROOT, http_json, publish, settings_env

pytestmark = pytest.mark.integration

#: Runs the worker with `Ingestor.decode` holding the loop for the record of customer ``hold``:
#: it creates the file HELD, then blocks (a synchronous step, as a CPU-bound one would)
#: until the file RELEASE exists.
HOLDING_WORKER = '''
import os, runpy, time
from stream_app import pipeline

_decode = pipeline.Ingestor.decode

def decode(self, record):
    if record.key == b"hold":
        open(os.environ["HOLD_HELD"], "w").close()
        while not os.path.exists(os.environ["HOLD_RELEASE"]):
            time.sleep(0.01)
    return _decode(self, record)

pipeline.Ingestor.decode = decode
runpy.run_module("stream_app.cli", run_name="__main__")
'''

#: How long the test waits for the lookup before it releases the loop anyway (a bound on
#: the test's duration, not a performance target).
PATIENCE_S = 10.0


def _order(settings: Settings, event_id: str, customer_id: str, day: int
           ) -> tuple[str, bytes, bytes]:
    message = {"event_id": event_id, "customer_id": customer_id,
               "occurred_at": f"2026-03-{day:02d}T09:00:00Z", "kind": "order",
               "amount": 40.0, "currency": "USD", "channel": "web"}
    return settings.topics.purchases, customer_id.encode(), orjson.dumps(message)


def _get(settings: Settings, path: str, method: str = "GET") -> tuple[int, Any]:
    request = urllib.request.Request(
        f"http://{settings.web_host}:{settings.web_port}{path}", method=method,
        data=b"{}" if method == "POST" else None,
        headers={"Content-Type": "application/json"} if method == "POST" else {},
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _worker(settings: Settings, tmp_path: Path, in_thread: bool) -> WorkerProcess:
    (tmp_path / "holding_worker.py").write_text(HOLDING_WORKER)
    env = {
        **settings_env(settings),
        "CVM_WEB_IN_THREAD": "true" if in_thread else "false",
        "PYTHONPATH": f"{tmp_path}:{ROOT}",
        "PYTHONWARNINGS": "always::ResourceWarning",
        "HOLD_HELD": str(tmp_path / "held"),
        "HOLD_RELEASE": str(tmp_path / "release"),
    }
    return WorkerProcess(settings, tmp_path / "worker.log", env, module="holding_worker",
                         cwd=ROOT)


@pytest.mark.parametrize("in_thread", [True, False], ids=["web-thread", "worker-loop"])
def test_a_lookup_is_answered_while_a_batch_holds_the_worker_loop(
    settings: Settings, tmp_path: Path, in_thread: bool
) -> None:
    worker = _worker(settings, tmp_path, in_thread)
    worker.start()
    try:
        publish(settings, [_order(settings, "o-1", "P1", 2)])
        assert wait_until(lambda: http_json(settings, "/customers/P1")[0] == 200), (
            worker.log_tail())
        publish(settings, [_order(settings, "o-2", "hold", 3)])
        assert wait_until(lambda: (tmp_path / "held").exists()), worker.log_tail()

        answered = threading.Event()
        got: dict[str, Any] = {}

        def look_up() -> None:
            got["status"], got["body"] = _get(settings, "/customers/P1")
            got["released_first"] = (tmp_path / "release").exists()
            if in_thread:  # the probes are answered from the web thread as well
                got["livez"] = _get(settings, "/livez")[0]
                got["readyz"] = _get(settings, "/readyz")
                got["released_after_probes"] = (tmp_path / "release").exists()
            answered.set()

        thread = threading.Thread(target=look_up, daemon=True)
        thread.start()
        answered.wait(PATIENCE_S)
        (tmp_path / "release").touch()
        thread.join(180)
        assert answered.is_set(), worker.log_tail()
        assert got["status"] == 200 and orjson.loads(got["body"])["orders"] == 1, got
        if in_thread:
            assert got["released_first"] is False, "the lookup waited for the held batch"
            assert got["released_after_probes"] is False
            assert got["livez"] == 200
            assert got["readyz"][0] == 200, got["readyz"]
        else:  # the control: on the worker's loop the lookup waits for the batch
            assert got["released_first"] is True
        # The held record is applied once released.
        assert wait_until(lambda: http_json(settings, "/customers/hold")[0] == 200), (
            worker.log_tail())
    finally:
        worker.stop()


def test_the_web_threads_redis_client_is_closed_when_the_worker_stops(
    settings: Settings, tmp_path: Path
) -> None:
    """Every kind of view runs, then a clean stop leaves no client, task or loop behind."""
    worker = _worker(settings, tmp_path, in_thread=True)
    worker.start()
    try:
        publish(settings, [_order(settings, f"o-{i}", f"C{i}", 2 + i) for i in range(5)])
        assert wait_until(lambda: http_json(settings, "/customers/C4")[0] == 200), (
            worker.log_tail())
        for path in ("/customers/C1", "/customers/C1/offers", "/customers/C1/history",
                     "/customers/top?by=clv&n=3", "/customers/unprofitable", "/trends",
                     "/rollups/channels", "/model", "/winback/results", "/ops/feed.json",
                     "/readyz"):
            status, body = _get(settings, path)
            assert status == 200, (path, status, body)
        # On the worker's loop: the consumer's positions, and a fit on demand.
        status, body = _get(settings, "/metrics")
        assert status == 200 and b"cvm_consumer_lag{" in body, body[:500]
        status, body = _get(settings, "/model", method="POST")
        assert status in (200, 409), body
    finally:
        forced = worker.stop()
    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert not forced, log[-3000:]
    for problem in ("nclosed", "different loop", "different event loop", "Task was destroyed",
                    "Event loop is closed", "never awaited", "Traceback"):
        assert problem not in log, (problem, log[-3000:])
