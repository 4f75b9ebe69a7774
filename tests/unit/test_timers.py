"""The worker's timers: a failing run is retried, and a stop waits for the running ones.

Faust stops the Kafka producer before it cancels an app's timers, so a timer that was
publishing when the worker stopped failed on a closed producer. `Timers.stop` runs on the
app's ``on_before_shutdown`` signal, which Faust sends before it stops the producer.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from redis.exceptions import ConnectionError as RedisConnectionError

from stream_app.runtime import Timers
from stream_app.settings import Settings
from stream_app.worker import build


async def test_a_stop_waits_for_the_running_timer_and_refuses_new_runs() -> None:
    timers = Timers()
    release = asyncio.Event()
    log: list[str] = []

    async def publishing() -> None:
        log.append("start")
        await release.wait()
        log.append("end")

    async def other() -> None:
        log.append("other")

    running = asyncio.ensure_future(timers.run("publishing", publishing))
    await asyncio.sleep(0.01)
    stopping = asyncio.ensure_future(timers.stop())
    await asyncio.sleep(0.05)
    assert not stopping.done(), "the stop did not wait for the running timer"
    assert await timers.run("other", other) is False
    release.set()
    await asyncio.wait_for(stopping, 5)
    assert await running is True
    assert log == ["start", "end"]


async def test_a_failing_run_is_retried_until_it_succeeds() -> None:
    timers = Timers()
    attempts = []

    async def flaky() -> None:
        attempts.append(1)
        if len(attempts) < 3:
            raise RedisConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")

    assert await asyncio.wait_for(timers.run("flaky", flaky), 10) is True
    assert len(attempts) == 3


async def test_the_worker_stops_its_timers_before_the_producer_closes(tmp_path: Path) -> None:
    settings = dataclasses.replace(Settings(), data_dir=str(tmp_path / "faust"))
    app, runtime = build(settings)
    assert not runtime.timers.stopping
    # App.on_stop sends this after the consumer stopped and before the producer is flushed
    # and stopped.
    await app.on_before_shutdown.send()
    assert runtime.timers.stopping
    await runtime.close()


async def test_each_run_of_a_timer_is_timed_by_name() -> None:
    from stream_app import metrics

    def runs() -> tuple[float, float]:
        labels = {"timer": "timed"}
        return (metrics.REGISTRY.get_sample_value("cvm_timer_seconds_count", labels) or 0.0,
                metrics.REGISTRY.get_sample_value("cvm_timer_seconds_sum", labels) or 0.0)

    attempts = []

    async def timed() -> None:
        attempts.append(1)
        await asyncio.sleep(0.02)
        if len(attempts) < 2:
            raise RedisConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")

    count, seconds = runs()
    assert await asyncio.wait_for(Timers().run("timed", timed), 10) is True
    after_count, after_seconds = runs()
    assert after_count - count == 2  # the failed run and the one that succeeded
    assert after_seconds - seconds >= 0.04
