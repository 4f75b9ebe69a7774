"""A broker outage under a real worker: JSON log lines, and repeated errors collapsed.

The test starts a Kafka broker of its own (``scripts/devstack up`` with a private
folder and free ports; the shared broker is never touched), runs a worker on it
with ``CVM_LOG_FORMAT=json``, stops the broker and measures what the worker logs.
Without the repeat filter (``CVM_LOG_REPEAT_WINDOW_S=0``) aiokafka's reconnect loop
printed 395 KB in 30 s of outage; with it, each message is printed once per window.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from stream_app.settings import Settings, Topics
from stream_app.worker_process import free_port, wait_until
from tests.conftest import ROOT, WorkerProcess, settings_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DEVSTACK = ROOT / "scripts" / "devstack"
OUTAGE_S = 20
WINDOW_S = 5
#: Bytes the worker may log during the outage: a few lines per message and window.
BUDGET = 40_000


@pytest.fixture
def private_kafka(settings: Settings, tmp_path: Path) -> Iterator[dict[str, str]]:
    """A broker of this test's own; yields the environment that addresses it via devstack."""
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "CVM_DEVSTACK_KAFKA_CONTROLLER_PORT": str(free_port()),
        "CVM_DEVSTACK_DIR": str(tmp_path / "stack"),
        "REDIS_URL": settings.redis_url,  # answers already: devstack reuses it
        "CVM_DEVSTACK_KAFKA_HEAP_OPTS": "-Xms256m -Xmx512m",
    }
    up = subprocess.run([str(DEVSTACK), "up"], env=env, cwd=ROOT, capture_output=True,
                        text=True, timeout=600, check=False)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield env
    finally:
        subprocess.run([str(DEVSTACK), "down"], env=env, cwd=ROOT, capture_output=True,
                       timeout=120, check=False)


def test_broker_outage_logs_json_lines_and_collapses_repeats(
    settings: Settings, private_kafka: dict[str, str], tmp_path: Path
) -> None:
    s = replace(settings, kafka_bootstrap_servers=private_kafka["KAFKA_BOOTSTRAP_SERVERS"],
                topics=Topics())
    log = tmp_path / "worker.log"
    worker = WorkerProcess(s, log)
    worker.env = {**settings_env(s), "CVM_LOG_FORMAT": "json",
                  "CVM_LOG_REPEAT_WINDOW_S": str(WINDOW_S)}
    worker.start()
    try:
        assert wait_until(lambda: b"newly assigned partitions" in log.read_bytes(),
                          deadline_s=90), worker.log_tail()
        before = log.stat().st_size
        down = subprocess.run([str(DEVSTACK), "down", "kafka"], env=private_kafka, cwd=ROOT,
                              capture_output=True, text=True, timeout=120, check=False)
        assert down.returncode == 0, down.stdout + down.stderr
        time.sleep(OUTAGE_S)  # the worker keeps reconnecting meanwhile
        worker.check()
        during = log.read_bytes()[before:]
    finally:
        worker.stop()

    records = [orjson.loads(line) for line in log.read_bytes().splitlines() if line.strip()]
    assert records and all({"ts", "level", "logger", "message"} <= set(r) for r in records)
    errors = [r for r in map(orjson.loads, during.splitlines()) if r["level"] == "error"]
    assert any(r["logger"].startswith("aiokafka") for r in errors), errors[:5]
    print(f"{len(during)} bytes in {OUTAGE_S} s of outage")
    assert len(during) < BUDGET, during[-3000:].decode(errors="replace")
    # What was held back is counted on the next line of the same message.
    repeated = [r for r in records if r.get("repeated")]
    assert repeated and all(r["repeat_window_s"] == WINDOW_S for r in repeated), repeated[:3]
