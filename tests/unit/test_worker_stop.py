"""The stop deadline of `stream_app.worker.Worker`: armed by a stop signal or by a crash."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import faust

from stream_app.consumer_group import OutOfGroup
from stream_app.settings import Settings
from stream_app.worker import Worker


def _worker(tmp_path: Path) -> Worker:
    settings = dataclasses.replace(Settings(), data_dir=str(tmp_path / "faust"))
    app = faust.App("cvm-stop-test", broker=f"kafka://{settings.kafka_bootstrap_servers}",
                    datadir=settings.data_dir)
    return Worker(app, loglevel="warning", quiet=True, stop_timeout_s=3600.0)


def test_a_crash_arms_the_stop_deadline_once(tmp_path: Path) -> None:
    worker = _worker(tmp_path)
    assert worker._deadline is None  # noqa: SLF001
    try:
        worker._crash(OutOfGroup("out of its group for 120 s"))  # noqa: SLF001
        deadline = worker._deadline  # noqa: SLF001
        assert deadline is not None and deadline.is_alive()
        assert isinstance(worker.crash_reason, OutOfGroup)  # Faust's crash goes on as before
        worker._crash(RuntimeError("a second one"))  # noqa: SLF001
        assert worker._deadline is deadline  # one deadline: the first stop's
    finally:
        if worker._deadline is not None:  # noqa: SLF001
            worker._deadline.cancel()  # noqa: SLF001
