"""Redis loses recent writes (or everything): the worker reads those events again."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import redis
from confluent_kafka import Consumer, TopicPartition

from stream_app.connections import sync_redis
from stream_app.settings import Settings
from stream_app.worker_process import WorkerProcess, wait_until
from tests.conftest import ROOT, publish, settings_env
from tests.e2e.helpers import applied_offsets
from tests.e2e.test_pipeline import expected_totals, make_events, records_match, topic_of

pytestmark = pytest.mark.integration

#: Runs the worker with aiokafka's fetcher noting, in the file SEEKS_OFF_THREAD, every seek
#: made on the worker's main thread. The fetcher belongs to the consumer's own thread, which
#: may be handing out records at that moment: a seek from another thread races it (a
#: worker crashed on such a race with a KeyError in ``Fetcher.fetched_records``).
SEEK_WATCHING_WORKER = '''
import os, runpy, threading, traceback
from aiokafka.consumer import fetcher

_seek_to = fetcher.Fetcher.seek_to

def seek_to(self, tp, offset):
    if threading.current_thread() is threading.main_thread():
        with open(os.environ["SEEKS_OFF_THREAD"], "a") as out:
            out.write(f"{tp} -> {offset}\\n" + "".join(traceback.format_stack(limit=6)))
    return _seek_to(self, tp, offset)

fetcher.Fetcher.seek_to = seek_to
runpy.run_module("stream_app.cli", run_name="__main__")
'''


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


def _seek_watching_worker(settings: Settings, tmp_path: Path) -> WorkerProcess:
    (tmp_path / "seek_watching_worker.py").write_text(SEEK_WATCHING_WORKER)
    env = {**settings_env(settings), "PYTHONPATH": f"{tmp_path}:{ROOT}",
           "SEEKS_OFF_THREAD": str(tmp_path / "seeks-off-thread")}
    return WorkerProcess(settings, tmp_path / "worker.log", env,
                         module="seek_watching_worker", cwd=ROOT)


def test_lost_writes_and_a_wiped_redis_are_rebuilt_from_kafka(
    settings: Settings, tmp_path: Path
) -> None:
    worker = _seek_watching_worker(settings, tmp_path)
    try:
        _lose_writes_and_everything(settings, worker)
    finally:
        worker.stop()
    off_thread = tmp_path / "seeks-off-thread"
    assert not off_thread.exists(), (
        "the worker sought partitions outside the consumer's thread:\n" + off_thread.read_text())


def _lose_writes_and_everything(settings: Settings, worker: WorkerProcess) -> None:
    worker.start()
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
