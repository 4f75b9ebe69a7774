"""Every timer and task of a worker rides out a Redis server that is not there.

The worker app is built as `cvm worker` builds it, pointed at a port where no Redis listens
yet, and its Faust timers and tasks are run as Faust runs them. A timer that lets the
ConnectionError escape ends its task (in a running worker, Faust then crashes the whole
app); each must instead keep running, and succeed once a real Redis server starts there.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream_app.settings import Settings
from stream_app.worker import build
from stream_app.worker_process import free_port

pytestmark = pytest.mark.integration

# The timers that read or write Redis on every tick (publish_model does only when the
# learner has learned something, watch_redis asks outside the worker's pool).
REDIS_TIMERS = ("refresh_model", "fit_model", "revisit")
TIMERS = (*REDIS_TIMERS, "publish_model", "watch_redis")


class LateRedis:
    """A real redis-server on a port chosen now, started only when asked."""

    def __init__(self, data: Path) -> None:
        self.port = free_port()
        self.data = data
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        server = shutil.which("redis-server")
        assert server, "redis-server is needed (Debian's redis-server package)"
        self.data.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.data)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=30)


@pytest.fixture
def late_redis(tmp_path: Path) -> Iterator[LateRedis]:
    server = LateRedis(tmp_path / "redis")
    yield server
    server.stop()


async def test_every_timer_rides_out_a_redis_outage_and_resumes(
    stack: Settings, tmp_path: Path, late_redis: LateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    settings = dataclasses.replace(
        stack,
        redis_url=f"redis://127.0.0.1:{late_redis.port}/0",
        refresh_interval_s=0.2,
        fit_interval_s=0.2,
        rescore_interval_s=0.2,
        data_dir=str(tmp_path / "faust"),
    )
    app, runtime = build(settings)
    # Leader-only timers run here as on the leader (there is no consumer group).
    app.is_leader = lambda: True  # type: ignore[method-assign]
    tasks = {fn.__name__: asyncio.ensure_future(fn()) for fn in app._app_tasks}  # noqa: SLF001
    assert set(REDIS_TIMERS) <= set(tasks), sorted(tasks)
    try:
        await asyncio.sleep(2.0)  # every timer ticks several times against the dead port
        failed = {
            name: t.exception() for name, t in tasks.items()
            if t.done() and not t.cancelled() and t.exception() is not None
        }
        assert not failed, f"timers and tasks ended with an error while Redis was away: {failed}"
        assert set(TIMERS) <= set(tasks), sorted(tasks)
        assert not any(tasks[name].done() for name in TIMERS), "a timer gave up"

        late_redis.start()

        def recovered() -> bool:
            text = caplog.text
            return all(f"{name} succeeded again" in text for name in REDIS_TIMERS)

        for _ in range(100):
            if recovered():
                break
            await asyncio.sleep(0.1)
        assert recovered(), caplog.text[-3000:]
        assert not any(tasks[name].done() for name in TIMERS), "a timer gave up"
    finally:
        await runtime.timers.stop()
        for t in tasks.values():
            t.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        await runtime.close()


async def test_a_stop_waits_for_a_timer_run_in_progress(
    stack: Settings, tmp_path: Path, late_redis: LateRedis
) -> None:
    # Faust stops the Kafka producer right after it sends on_before_shutdown, and cancels
    # the timers only after that: a rescoring run still publishing then fails on a closed
    # producer. The stop must wait for the run in progress.
    late_redis.start()
    settings = dataclasses.replace(
        stack,
        redis_url=f"redis://127.0.0.1:{late_redis.port}/0",
        rescore_interval_s=0.1,
        data_dir=str(tmp_path / "faust"),
    )
    app, runtime = build(settings)
    app.is_leader = lambda: True  # type: ignore[method-assign]
    revisit = next(fn for fn in app._app_tasks if fn.__name__ == "revisit")  # noqa: SLF001
    task = asyncio.ensure_future(revisit())
    proc = late_redis.proc
    assert proc is not None
    stopping: asyncio.Future[object] | None = None
    try:
        await asyncio.sleep(0.5)  # the timer runs against the live server
        proc.send_signal(signal.SIGSTOP)  # the next run waits for Redis, half-way
        await asyncio.sleep(0.5)
        stopping = asyncio.ensure_future(app.on_before_shutdown.send())
        await asyncio.sleep(0.5)
        assert not stopping.done(), "the stop went on while a timer run was in progress"
        proc.send_signal(signal.SIGCONT)
        await asyncio.wait_for(stopping, 10)
    finally:
        proc.send_signal(signal.SIGCONT)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if stopping is not None:
            await asyncio.gather(stopping, return_exceptions=True)
        await runtime.close()
