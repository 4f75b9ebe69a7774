"""A Kafka broker and a Redis Cluster master die while events flow: nothing lost, nothing doubled.

The engine runs on a replicated Kafka (three brokers of this package's own,
`tests.private_kafka`: topics with replication factor 3 and ``min.insync.replicas=2``; the
worker's and the publisher's producers send with acks=all and idempotence) and on a Redis
Cluster of three masters with one replica each (six ``redis-server`` processes of this
test's own). While the load generator publishes and a real worker applies:

1. The broker that coordinates the worker's consumer group, and leads some of its input
   partitions, is SIGKILLed: the controller moves leadership and the group to the other two
   brokers, which keep acks=all writable (two in-sync replicas); publishing, fetching and
   committing go on there.
2. The Redis master that owns one of the partitions' slots is SIGKILLed (with the worker
   still applying, the publisher sometimes done by then); the cluster promotes
   its replica (``cluster-node-timeout`` 2 s). Replication is asynchronous, so a promoted
   replica may lack the master's last writes; the test makes sure it does, by stopping the
   replica (SIGSTOP) and cutting its link for a moment of writes before the kill. The worker
   must notice the new primary (`stream_app.fence`: a run id outside the accepted set), stop
   applying input and resume every partition from what the cluster holds.

Every customer's record must then equal the totals computed from the published events
(nothing lost, nothing counted twice), the offsets must reach the end of every partition,
every alert and win-back trigger Redis records as published must be on its topic, and none
twice before the Redis kill (publishing is at least once across a loss of Redis writes: a
batch whose writes the promoted replica lacks, or whose settling the kill cut short, is
published again, with the same ids).
"""

from __future__ import annotations

import dataclasses
import signal
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import orjson
import pytest
import redis
from confluent_kafka import Consumer, KafkaException, TopicPartition

from load.simulator import SimConfig
from stream_app.connections import sync_redis
from stream_app.settings import Settings
from stream_app.store.keys import Keys
from stream_app.worker_process import wait_until
from tests.conftest import WorkerProcess, fresh_settings
from tests.e2e.helpers import (
    BackgroundPublisher,
    applied_count,
    delete_worker_topics,
    ground_truth,
    partition_ends,
)
from tests.e2e.test_crash import assert_exact, population, wait_caught_up
from tests.private_cluster import PrivateCluster
from tests.private_kafka import ReplicatedKafka

pytestmark = pytest.mark.integration

SEED = 20_261_129
PUBLISH_RATE = 400.0
#: Events published, applied and committed before the rest flows: the worker's start-up (its
#: group join on three brokers) then no longer eats into the time events flow before the kill.
WARM_UP = 300
#: Alerts and win-back triggers published before the Redis master is killed, at least.
OUT_BEFORE = 10
#: Seconds the replica is stopped, with the master taking writes, before the master is killed.
STALL_S = 1.5


@pytest.fixture
def replicated_cluster(tmp_path: Path) -> Iterator[PrivateCluster]:
    cluster = PrivateCluster(tmp_path / "redis-cluster", masters=3, replicas=1)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def _safely(check: object) -> bool:
    try:
        return bool(check())  # type: ignore[operator]
    except (redis.RedisError, OSError, KafkaException):  # a failover in progress
        return False


def _committed(settings: Settings) -> int:
    """How many input records the worker group's committed offsets cover.

    Asked with a consumer of the group that does not join it: its calls wait for their
    answer (up to 30 s while the group moves to another coordinator), so no request is
    left behind by a client that is gone.
    """
    consumer = Consumer({**settings.kafka_config(), "group.id": settings.app_id,
                         "enable.auto.commit": False, "log_level": 4})
    try:
        partitions = [TopicPartition(t, p) for t in settings.topics.inputs
                      for p in range(settings.partitions)]
        return sum(tp.offset for tp in consumer.committed(partitions, timeout=30)
                   if tp.offset > 0)
    finally:
        consumer.close()


def _owner(cluster: PrivateCluster, key: str) -> tuple[int, int]:
    """(port of the master that owns `key`'s slot, port of its replica)."""
    client = redis.Redis(port=cluster.ports[0], decode_responses=True)
    try:
        slot = int(client.cluster("keyslot", key))
        nodes = client.cluster("nodes")
    finally:
        client.close()
    for address, info in nodes.items():
        if "master" in info["flags"] and any(
                int(r[0]) <= slot <= int(r[-1]) for r in info["slots"]):
            replicas = [_port(a) for a, i in nodes.items()
                        if i.get("master_id") == info["node_id"]]
            assert replicas, f"the master {address} has no replica: {nodes}"
            return _port(address), replicas[0]
    raise AssertionError(f"no master owns slot {slot}: {nodes}")


def _port(address: str) -> int:
    return int(address.split("@")[0].rsplit(":", 1)[1])


def _offsets(client: redis.Redis, keys: set[str]) -> dict[str, dict[str, str]]:
    return {key: client.hgetall(key) for key in keys}


def _promoted(cluster: PrivateCluster, port: int) -> bool:
    client = redis.Redis(port=port, decode_responses=True)
    try:
        return (client.info("replication")["role"] == "master"
                and client.cluster("info")["cluster_state"] == "ok")
    finally:
        client.close()


def _coordinator(kafka: ReplicatedKafka, group: str) -> int:
    """The id of the broker that coordinates `group`."""
    admin = kafka.admin()  # kept until the answer: the future dies with its client
    deadline = time.monotonic() + 60
    while True:
        (future,) = admin.describe_consumer_groups([group]).values()
        try:
            return int(future.result(timeout=30).coordinator.id)
        except KafkaException:  # e.g. sent through a bootstrap connection being replaced
            if time.monotonic() > deadline:
                raise
        time.sleep(0.5)


def _leaders(kafka: ReplicatedKafka, topics: list[str]) -> dict[str, int]:
    """``"topic/partition"`` -> id of the broker that leads it."""
    md = kafka.admin().list_topics(timeout=15)
    return {f"{t}/{p}": part.leader for t in topics for p, part in md.topics[t].partitions.items()}


def _outputs(settings: Settings) -> list[tuple[str, int, dict[str, object]]]:
    """Every message of the alert and win-back topics from the start: (topic/partition,
    offset, message)."""
    topics = [settings.topics.alerts, settings.topics.winback]
    ends = {tp: n for tp, n in partition_ends(settings, topics).items() if n}
    consumer = Consumer({**settings.kafka_config(), "group.id": f"{settings.app_id}-outputs",
                         "enable.auto.commit": False})
    pairs = [tp.rsplit("/", 1) for tp in ends]
    consumer.assign([TopicPartition(topic, int(p), 0) for topic, p in pairs])
    out: list[tuple[str, int, dict[str, object]]] = []
    seen: dict[str, int] = {}
    deadline = time.monotonic() + 60
    try:
        while any(seen.get(tp, 0) < n for tp, n in ends.items()):
            assert time.monotonic() < deadline, f"read {seen} of {ends}"
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            tp = f"{msg.topic()}/{msg.partition()}"
            seen[tp] = msg.offset() + 1
            out.append((tp, msg.offset(), orjson.loads(msg.value())))
    finally:
        consumer.close()
    return out


def _message_id(message: dict[str, object]) -> str:
    return str(message.get("alert_id") or message["trigger_id"])


@pytest.mark.slow
def test_a_kafka_broker_and_a_redis_master_die_while_events_flow(
    stack: Settings, three_brokers: ReplicatedKafka, replicated_cluster: PrivateCluster,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CVM_SESSION_TIMEOUT_S", "10")
    events, _ = population(SimConfig(n_customers=800, seed=SEED, days=120), SEED)
    log_path = tmp_path / "worker.log"
    kafka = three_brokers
    on_kafka = dataclasses.replace(stack, kafka_bootstrap_servers=kafka.bootstrap)
    with fresh_settings(on_kafka, tmp_path, replicated_cluster.url, redis_cluster=True,
                        replicas=3) as s:
        kafka.wait_known(s.topics.partition_counts)
        truth = ground_truth(events, s.default_margin_rate)
        # A master other than the one REDIS_URL names: the one holding partition 1.
        keys = Keys(partitions=s.partitions)
        owners = {p: _owner(replicated_cluster, keys.shard(p).applied)
                  for p in range(s.partitions)}
        victim, replica = next(pair for pair in owners.values()
                               if pair[0] != replicated_cluster.ports[0])
        victim_partitions = [p for p, pair in owners.items() if pair[0] == victim]
        worker = WorkerProcess(s, log_path)
        warm_up = BackgroundPublisher(events[:WARM_UP], s, rate=PUBLISH_RATE)
        publisher = BackgroundPublisher(events[WARM_UP:], s, rate=PUBLISH_RATE)
        steps: list[str] = []
        with closing(sync_redis(s, decode_responses=True)) as client:
            try:
                worker.start()
                warm_up.start()
                warm_up.join()
                # The worker is in its group and applying, and the group's offsets are on the
                # brokers (the offsets topic, which needs all three replicas to be created,
                # exists) before the rest flows and one broker goes.
                assert wait_until(lambda: applied_count(client) >= WARM_UP,
                                  deadline_s=180, every=0.1), worker.log_tail()
                assert wait_until(lambda: _committed(s) > 0, deadline_s=60,
                                  every=0.2), worker.log_tail()
                publisher.start()
                # A tenth of the events applied: with the worker behind the publisher on these
                # six Redis and three Kafka processes, most of the rest is still to come.
                tenth = len(events) // 10
                assert wait_until(lambda: applied_count(client) > tenth or publisher.done,
                                  deadline_s=180, every=0.1), worker.log_tail()
                broker = _coordinator(kafka, s.app_id)
                led = [tp for tp, leader in _leaders(kafka, list(s.topics.inputs)).items()
                       if leader == broker]
                assert led, f"precondition: broker {broker} leads no input partition"
                committed = _committed(s)
                applied = applied_count(client)
                assert not publisher.done, "precondition: events still flow at the broker kill"
                kafka.kill(broker)
                steps.append(f"broker {broker} killed (group coordinator, leader of {led}) "
                             f"at {applied} applied, {committed} committed, "
                             f"{publisher.produced + WARM_UP} published, "
                             f"{time.monotonic() - publisher.began:.0f}s in")
                # The group's commits now go to another coordinator; the partitions the dead
                # broker led are read from their new leaders.
                assert wait_until(lambda: _safely(lambda: _committed(s) > applied),
                                  deadline_s=120, every=0.5), (
                    f"no commit after broker {broker} died:\n{worker.log_tail()}")
                steps.append(f"committed past it, {time.monotonic() - publisher.began:.0f}s in")
                # The replica stops reading the master's stream while the victim partitions'
                # writes go on, so it is promoted without them: lost writes, for certain.
                outputs = [s.topics.alerts, s.topics.winback]
                # Enough alerts and triggers out to check that none went twice before Redis fails.
                assert wait_until(lambda: _safely(lambda: sum(
                    partition_ends(s, outputs).values()) >= OUT_BEFORE),
                    deadline_s=120, every=0.5), worker.log_tail()
                earlier = partition_ends(s, outputs)  # what was published before Redis fails
                stalled = replicated_cluster.procs[replicated_cluster.ports.index(replica)]
                stalled.send_signal(signal.SIGSTOP)
                try:
                    # Cut the replication link too: what the master had sent stays in the
                    # stopped replica's socket buffer, what it writes from now on does not.
                    with closing(redis.Redis(port=victim)) as master:
                        master.execute_command("CLIENT", "KILL", "TYPE", "replica")
                    shard = {keys.shard(p).applied for p in victim_partitions}
                    before = _offsets(client, shard)
                    assert wait_until(lambda: _safely(lambda: _offsets(client, shard) != before),
                                      deadline_s=60, every=0.1), worker.log_tail()
                    time.sleep(STALL_S)
                    written = _offsets(client, shard)  # what the master holds as it dies
                    proc = replicated_cluster.procs[replicated_cluster.ports.index(victim)]
                    proc.kill()
                    proc.wait(timeout=30)
                finally:
                    stalled.send_signal(signal.SIGCONT)
                steps.append(f"Redis master :{victim} killed "
                             f"{'after' if publisher.done else 'while'} publishing, "
                             f"{time.monotonic() - publisher.began:.0f}s in")
                assert wait_until(lambda: _safely(lambda: _promoted(replicated_cluster, replica)),
                                  deadline_s=60, every=0.1), "the replica was not promoted"
                with closing(redis.Redis(port=replica, decode_responses=True)) as promoted:
                    kept = {key: promoted.hgetall(key) for key in shard}
                assert kept != written, (
                    f"precondition: the promoted replica must lack writes ({kept} vs {written})")
                steps.append(f"replica promoted, {time.monotonic() - publisher.began:.0f}s in")
                publisher.join()
                wait_caught_up(client, s, worker)
                steps.append(f"caught up, {time.monotonic() - publisher.began:.0f}s in")
                assert_exact(client, s, truth, worker, [], log_path)
                # What a batch cut short by the Redis kill left in the outbox is published by
                # the worker's drain timer, up to twice `feed.OUTBOX_GRACE_S` (30 s) later
                # (tests/e2e/test_outbox.py checks that path): not waited for here.
                wait_until(lambda: not any(client.hlen(sh.outbox) for sh in keys.shards()),
                           deadline_s=3, every=0.2)
                pending = sum(client.hlen(sh.outbox) for sh in keys.shards())
                recorded = {m for sh in keys.shards() for m in client.zrange(sh.published, 0, -1)}
                messages = _outputs(s)
                steps.append(f"outputs read, {time.monotonic() - publisher.began:.0f}s in, "
                             f"{pending} left in the outbox for the drain timer")
            finally:
                publisher.stop.set()
                worker.stop()
                delete_worker_topics(s)
    log = log_path.read_text(errors="replace")
    assert "Redis restarted" in log, "the worker did not notice the promoted replica"
    published = Counter(_message_id(m) for _, _, m in messages)
    assert recorded, "precondition: the worker published alerts or win-back triggers"
    lost = recorded - set(published)
    assert not lost, f"alerts or triggers recorded as published but not on Kafka: {lost}"
    # Up to the Redis kill, through the broker's loss, each id went out once (idempotent
    # producers; a retried send is not a new message). After it, the batches whose writes
    # the promoted replica lost, or whose settling it cut short, are published again.
    before = Counter(_message_id(m) for tp, offset, m in messages if offset < earlier[tp])
    assert before, "precondition: alerts or triggers were published before Redis failed"
    doubled = {i: n for i, n in before.items() if n > 1}
    assert not doubled, f"published twice before Redis failed: {doubled}"
    again = sum(published.values()) - len(published)
    print(f"\n{len(events)} events, {len(truth)} customers, {len(published)} alerts and "
          f"triggers ({len(before)} before the Redis kill, {again} published again after it); "
          + "; ".join(steps))
