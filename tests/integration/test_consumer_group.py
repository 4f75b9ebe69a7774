"""`stream_app.consumer_group` against aiokafka's real group coordinator and a real broker.

A consumer whose join the broker refuses (another client holds the group with another
assignor: InconsistentGroupProtocol) gets the error handed to its user; aiokafka then waits
for the user to take it, and a user that never reads through ``getmany`` (Faust) never does.
Here nothing reads either: the consumer stays out of its group after the group is free,
until `take_error` takes the error; then it joins.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import InconsistentGroupProtocolError
from confluent_kafka import Consumer

from stream_app.consumer_group import Membership, membership, take_error
from stream_app.settings import Settings

pytestmark = pytest.mark.integration


class _Thread:
    """Faust's consumer thread as `consumer_group` uses it: the consumer and a way onto its loop."""

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self._consumer = consumer

    async def call_thread(self, fun: Callable[[], Awaitable[Any]]) -> Any:
        return await fun()


async def _until(check: Callable[[], bool], deadline_s: float) -> bool:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if check():
            return True
        await asyncio.sleep(0.1)
    return check()


def test_a_refused_join_waits_for_its_error_to_be_taken_and_then_joins(settings: Settings) -> None:
    other = Consumer({**settings.kafka_config(), "group.id": settings.app_id,
                      "partition.assignment.strategy": "roundrobin",
                      "enable.auto.commit": False})
    other.subscribe([settings.topics.purchases])
    deadline = time.monotonic() + 60
    while not other.assignment() and time.monotonic() < deadline:
        other.poll(0.2)
    assert other.assignment(), "the other client got no assignment"

    async def scenario() -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            group_id=settings.app_id, enable_auto_commit=False, retry_backoff_ms=100,
            session_timeout_ms=6000, heartbeat_interval_ms=2000,
            partition_assignment_strategy=(RangePartitionAssignor,),  # the group has roundrobin
        )
        app = SimpleNamespace(_consumer=SimpleNamespace(_thread=_Thread(consumer)))
        await consumer.start()
        consumer.subscribe([settings.topics.purchases])  # after start: nothing waits on it
        try:
            coordinator = consumer._coordinator  # noqa: SLF001
            assert await _until(lambda: coordinator._pending_exception is not None, 30)  # noqa: SLF001
            assert membership(app) == Membership(member=False, generation=-1, coordinating=True)

            other.close()  # the group is free, but the coordinator waits for its user
            await asyncio.sleep(5)
            seen = membership(app)
            assert seen is not None and not seen.member

            taken = await take_error(app)
            assert isinstance(taken, InconsistentGroupProtocolError), taken
            assert await _until(lambda: bool(getattr(membership(app), "member", False)), 30)
            seen = membership(app)
            assert seen is not None and seen.generation >= 1 and seen.coordinating
            assert await _until(lambda: bool(consumer.assignment()), 10)
            assert await take_error(app) is None  # nothing more to take
        finally:
            await consumer.stop()

    try:
        asyncio.run(scenario())
    finally:
        other.close()
