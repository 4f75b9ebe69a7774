"""Redis loses recent writes (or everything): the worker reads those events again."""

from __future__ import annotations

import orjson
import pytest
import redis
from confluent_kafka import Consumer, TopicPartition

from stream_app.connections import sync_redis
from stream_app.settings import Settings
from stream_app.worker_process import wait_until
from tests.conftest import WorkerProcess, publish
from tests.e2e.helpers import applied_offsets
from tests.e2e.test_pipeline import expected_totals, make_events, records_match, topic_of

pytestmark = pytest.mark.integration


def _publish(settings: Settings, events: list) -> None:  # type: ignore[type-arg]
    publish(settings, (
        (topic_of(settings, kind), m["customer_id"].encode(), orjson.dumps(m))
        for kind, m in events
    ))


def _committed(settings: Settings) -> dict[tuple[str, int], int]:
    consumer = Consumer({
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "group.id": settings.app_id,
        "enable.auto.commit": False,
    })
    try:
        tps = [TopicPartition(t, p) for t in settings.topics.inputs
               for p in range(settings.partitions)]
        return {(tp.topic, tp.partition): tp.offset
                for tp in consumer.committed(tps, timeout=30) if tp.offset >= 0}
    finally:
        consumer.close()


def _applied(client: redis.Redis) -> dict[tuple[str, int], int]:
    out = {}
    for field, value in applied_offsets(client).items():
        topic, _, partition = field.rpartition("/")
        out[(topic, int(partition))] = int(value)
    return out


def test_lost_writes_and_a_wiped_redis_are_rebuilt_from_kafka(
    settings: Settings, worker: WorkerProcess
) -> None:
    client = sync_redis(settings, decode_responses=True)
    raw = sync_redis(settings)
    first = make_events(300, customers=20, seed=21)
    _publish(settings, first)
    assert wait_until(lambda: records_match(client, expected_totals(first, 0.3))), (
        worker.log_tail())
    worker.stop()
    snapshot = {key: raw.dump(key) for key in raw.scan_iter("*")}

    worker.start()
    second = make_events(300, customers=20, seed=22)
    _publish(settings, second)
    both = first + second
    assert wait_until(lambda: records_match(client, expected_totals(both, 0.3))), (
        worker.log_tail())
    worker.stop()

    # Redis comes back without the second half of the writes (as after a machine
    # crash), while the consumer group has committed past them.
    raw.flushdb()
    for key, value in snapshot.items():
        raw.restore(key, 0, value)
    committed = _committed(settings)
    applied = _applied(client)
    assert any(offset > applied.get(tp, -1) + 1 for tp, offset in committed.items()), (
        "precondition: the group must have committed past what Redis holds")

    worker.start()
    assert wait_until(lambda: records_match(client, expected_totals(both, 0.3))), (
        worker.log_tail())
    assert "Redis is behind the committed offsets" in worker.log_path.read_text()
    worker.stop()

    # Redis loses everything: the whole retained log is applied again.
    raw.flushdb()
    worker.start()
    assert wait_until(lambda: records_match(client, expected_totals(both, 0.3))), (
        worker.log_tail())
