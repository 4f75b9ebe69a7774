"""Readiness from the consumer group's state and the agents; liveness from the heartbeat
and the group membership.

The Redis part is covered against real servers in ``tests/e2e/test_probes.py``; here a
server that always answers stands in for it, so that only the group and agents vary.
"""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest

from stream_app import consumer_group, probes
from stream_app.consumer_group import Membership
from stream_app.runtime import FromStart


class _Answers:
    async def ping(self) -> bool:
        return True


def _app(rebalancing: bool = False, crashed: bool = False) -> Any:
    actor = SimpleNamespace(crashed=crashed)
    return SimpleNamespace(rebalancing=rebalancing,
                           agents={"cvm.ingest": SimpleNamespace(_actors=[actor])})


def _ready(health: probes.Health, app: Any) -> tuple[bool, dict[str, Any]]:
    return asyncio.run(health.readiness(app, _Answers()))  # type: ignore[arg-type]


def test_not_ready_outside_the_group() -> None:
    health = probes.Health()
    ok, doc = _ready(health, _app())
    assert not ok and doc["consumer"]["state"] == "starting"
    health.on_assigned({("t", 0), ("t", 1)})
    ok, doc = _ready(health, _app())
    assert ok and doc["consumer"] == {"ok": True, "state": "assigned", "partitions": 2}
    health.on_revoked()  # the group took the partitions back and never gave them again
    ok, doc = _ready(health, _app())
    assert not ok and doc["consumer"]["state"] == "rebalancing"
    health.on_assigned(set())  # more workers than partitions: idle is ready
    assert _ready(health, _app())[0]
    assert not _ready(health, _app(rebalancing=True))[0]


def test_not_ready_with_a_crashed_agent_or_a_stale_heartbeat() -> None:
    health = probes.Health()
    health.on_assigned({("t", 0)})
    ok, doc = _ready(health, _app(crashed=True))
    assert not ok and doc["agents"] == {"ok": False, "crashed": ["cvm.ingest"]}
    health.beat -= probes.STALE_S + 1
    assert not health.liveness()[0]
    ok, doc = _ready(health, _app())
    assert not ok and doc["live"] is False


class _Task:
    def __init__(self, done: bool) -> None:
        self._done = done

    def done(self) -> bool:
        return self._done


class _Coordinator:
    """aiokafka's GroupCoordinator as far as `consumer_group` reads it."""

    def __init__(self, member_id: str, generation: int, task_done: bool = False) -> None:
        self.member_id, self.generation = member_id, generation
        self._coordination_task = _Task(task_done)
        self._pending_exception: Exception | None = None

    def check_errors(self) -> None:
        exc, self._pending_exception = self._pending_exception, None
        if exc is not None:
            raise exc


class _Thread:
    def __init__(self, coordinator: _Coordinator) -> None:
        self._consumer = SimpleNamespace(_coordinator=coordinator)
        self.calls = 0

    async def call_thread(self, fun: Any) -> Any:
        self.calls += 1
        return await fun()


def _faust_app(member_id: str, generation: int, task_done: bool = False) -> Any:
    """The attribute path from a Faust app to aiokafka's group coordinator."""
    thread = _Thread(_Coordinator(member_id, generation, task_done))
    return SimpleNamespace(_consumer=SimpleNamespace(_thread=thread))


def test_a_pending_group_error_is_taken_on_the_consumer_thread_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = _faust_app("", -1)
    thread = app._consumer._thread
    assert asyncio.run(consumer_group.take_error(app)) is None
    assert thread.calls == 0  # nothing pending: no call to the consumer's thread
    refused = RuntimeError("InconsistentGroupProtocolError")
    thread._consumer._coordinator._pending_exception = refused
    assert asyncio.run(consumer_group.take_error(app)) is refused
    assert thread.calls == 1 and thread._consumer._coordinator._pending_exception is None
    assert "taken, so that it tries again" in caplog.records[-1].getMessage()
    assert asyncio.run(consumer_group.take_error(app)) is None
    ended = _faust_app("", -1, task_done=True)  # nothing to go on: left to the probes
    ended._consumer._thread._consumer._coordinator._pending_exception = refused
    assert asyncio.run(consumer_group.take_error(ended)) is None


def test_membership_reads_the_group_coordinator_and_is_none_before_the_consumer() -> None:
    assert consumer_group.membership(_faust_app("faust-1", 4)) == Membership(True, 4, True)
    assert consumer_group.membership(_faust_app("", -1, task_done=True)) == Membership(
        False, -1, False)
    assert consumer_group.membership(SimpleNamespace(_consumer=None)) is None
    no_thread_yet = SimpleNamespace(_consumer=SimpleNamespace(_thread=SimpleNamespace(
        _consumer=None)))
    assert consumer_group.membership(no_thread_yet) is None


def _live_at(health: probes.Health, now: float) -> tuple[bool, dict[str, Any]]:
    health.beat = now  # the loop turns
    return health.liveness(now)


def test_out_of_the_group_past_the_limit_is_not_live_and_a_rejoin_makes_it_live(
    caplog: pytest.LogCaptureFixture,
) -> None:
    health = probes.Health(out_of_group_s=30.0)
    health.observe(Membership(True, 3, True), now=100.0)
    live, doc = _live_at(health, 100.0)
    assert live and doc["group"] == {"ok": True, "member": True, "out_of_group_s": 0.0,
                                     "limit_s": 30.0, "generation": 3, "coordinating": True}

    evicted = Membership(False, -1, True)  # the broker forgot it: member id reset
    health.observe(evicted, now=110.0)
    health.observe(evicted, now=139.0)
    live, doc = _live_at(health, 139.0)
    assert live and doc["group"]["member"] is False and doc["group"]["out_of_group_s"] == 29.0
    assert not caplog.records
    lost = health.observe(evicted, now=140.0)
    assert lost is not None and "out of its group for 30 s" in lost
    live, doc = _live_at(health, 140.0)
    assert not live and doc["group"]["ok"] is False, doc
    assert health.observe(evicted, now=141.0) is None  # said once, not every second
    assert [r.levelname for r in caplog.records] == ["ERROR"]
    assert "out of its group for 30 s" in caplog.records[0].getMessage()

    health.observe(Membership(True, 5, True), now=150.0)
    live, doc = _live_at(health, 150.0)
    assert live and doc["group"]["generation"] == 5 and doc["group"]["member"] is True
    assert "back in its group (generation 5) after 40 s" in caplog.records[-1].getMessage()


def test_ended_coordination_is_not_live_at_once_and_readiness_needs_a_member() -> None:
    health = probes.Health(out_of_group_s=30.0)
    health.on_assigned({("t", 0)})
    assert _ready(health, _app())[0]
    health.observe(Membership(False, -1, True), now=time.monotonic())
    assert not _ready(health, _app())[0]  # evicted: not ready, though still live
    assert health.liveness()[0]
    lost = health.observe(Membership(True, 7, False), now=time.monotonic())
    assert lost is not None and "coordination has ended" in lost
    live, doc = health.liveness()
    assert not live and doc["group"]["coordinating"] is False
    ended = probes.Health(out_of_group_s=30.0)
    lost = ended.observe(Membership(False, -1, False), now=time.monotonic())
    assert lost is not None and "coordination has ended" in lost


def test_a_worker_before_its_first_join_counts_from_its_start() -> None:
    health = probes.Health(out_of_group_s=30.0)
    start = health.out_since
    assert start is not None and _live_at(health, start + 29)[0]
    health.observe(None, now=start + 31)  # no consumer yet
    live, doc = _live_at(health, start + 31)  # started 31 s ago and never joined
    assert not live and doc["group"]["member"] is False


class _Signal:
    def connect(self, fun: Any) -> Any:
        return fun


class _TimedApp:
    """A Faust app as `Health` uses it: timer, dependencies, signals, stop flag and crash."""

    def __init__(self, coordinator: _Coordinator, stopping: bool = False) -> None:
        self._consumer = SimpleNamespace(_thread=_Thread(coordinator))
        self.on_partitions_revoked = self.on_partitions_assigned = _Signal()
        self.should_stop = stopping
        self.timers: list[Any] = []
        self.dependencies: list[Any] = []
        self.crashed: list[BaseException] = []

    def timer(self, interval: float) -> Any:
        def register(fun: Any) -> Any:
            self.timers.append(fun)
            return fun
        return register

    def add_dependency(self, service: Any) -> Any:
        self.dependencies.append(service)
        return service

    async def crash(self, reason: BaseException) -> None:
        self.crashed.append(reason)


def test_a_consumer_lost_to_its_group_ends_the_worker_once_unless_it_is_stopping() -> None:
    health = probes.Health(out_of_group_s=30.0)
    coordinator = _Coordinator("faust-1", 2)
    app = _TimedApp(coordinator)
    asyncio.run(health.watch_group(app, 100.0))  # type: ignore[arg-type]
    assert not app.crashed and health.generation == 2
    coordinator._coordination_task = _Task(True)  # the routine ended on an error
    asyncio.run(health.watch_group(app, 101.0))  # type: ignore[arg-type]
    asyncio.run(health.watch_group(app, 102.0))  # type: ignore[arg-type]
    assert len(app.crashed) == 1 and isinstance(app.crashed[0], consumer_group.OutOfGroup)
    assert "coordination has ended" in str(app.crashed[0])

    # A worker that stops closes its consumer, whose coordination then ends: no crash.
    stopping = _TimedApp(_Coordinator("faust-1", 2, task_done=True), stopping=True)
    asyncio.run(probes.Health(out_of_group_s=30.0).watch_group(stopping, 100.0))  # type: ignore[arg-type]
    assert not stopping.crashed


def test_the_group_watch_runs_from_the_start_not_after_the_first_assignment() -> None:
    """Faust starts its timers after the first assignment's recovery; a worker whose
    consumer is refused at its first join never gets there, so the watch is a service
    that starts with the app and ends a worker that never joined."""
    health = probes.Health(out_of_group_s=0.05)
    app = _TimedApp(_Coordinator("", -1))  # refused at every join: no member id
    health.register(app)  # type: ignore[arg-type]
    (watch,) = app.dependencies
    assert isinstance(watch, FromStart) and len(app.timers) == 1  # and the heartbeat

    async def run() -> None:
        await watch.start()
        try:
            for _ in range(int(4 * probes.HEARTBEAT_S / 0.05)):
                if app.crashed:
                    break
                await asyncio.sleep(0.05)
        finally:
            await watch.stop()

    asyncio.run(run())  # the first tick comes after HEARTBEAT_S
    assert len(app.crashed) == 1 and "out of its group" in str(app.crashed[0])


def test_from_start_ticks_until_it_stops() -> None:
    ticks: list[float] = []

    async def tick() -> None:
        ticks.append(time.monotonic())

    async def run() -> int:
        service = FromStart(tick, 0.01)
        await service.start()
        await asyncio.sleep(0.2)
        await service.stop()
        seen = len(ticks)
        await asyncio.sleep(0.05)
        return seen

    seen = asyncio.run(run())
    assert seen >= 3 and len(ticks) == seen  # it ticked, and not after its stop
