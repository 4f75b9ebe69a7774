"""A Redis Cluster master dies while events flow: its replica takes over, nothing is lost.

Three masters with one replica each (six ``redis-server`` processes of this test's own).
While a publisher feeds the worker, the master that owns one of the partitions' slots is
SIGKILLed; the cluster promotes its replica (``cluster-node-timeout`` 2 s). Replication is
asynchronous, so a promoted replica may lack the master's last writes; the test makes sure it
does, by stopping the replica (SIGSTOP) and cutting its link for a moment of writes before
the kill. The worker
must notice the new primary (`stream_app.fence`: a run id outside the accepted set), stop
applying input and resume every partition from what the cluster holds. Every customer's
record must then equal the totals computed from the published events (nothing lost, nothing
counted twice), and the offsets must reach the end of every partition.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
import redis

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
)
from tests.e2e.test_crash import assert_exact, population, wait_caught_up
from tests.private_cluster import PrivateCluster

pytestmark = pytest.mark.integration

SEED = 20_261_129
PUBLISH_RATE = 400.0
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
    except (redis.RedisError, OSError):  # a failover in progress
        return False


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


@pytest.mark.slow
def test_a_master_fails_over_to_its_replica_while_events_flow(
    stack: Settings, replicated_cluster: PrivateCluster, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CVM_SESSION_TIMEOUT_S", "10")
    events, _ = population(SimConfig(n_customers=800, seed=SEED, days=120), SEED)
    log_path = tmp_path / "worker.log"
    with fresh_settings(stack, tmp_path, replicated_cluster.url, redis_cluster=True) as s:
        truth = ground_truth(events, s.default_margin_rate)
        # A master other than the one REDIS_URL names: the one holding partition 1.
        keys = Keys(partitions=s.partitions)
        owners = {p: _owner(replicated_cluster, keys.shard(p).applied)
                  for p in range(s.partitions)}
        victim, replica = next(pair for pair in owners.values()
                               if pair[0] != replicated_cluster.ports[0])
        victim_partitions = [p for p, pair in owners.items() if pair[0] == victim]
        worker = WorkerProcess(s, log_path)
        publisher = BackgroundPublisher(events, s, rate=PUBLISH_RATE)
        with closing(sync_redis(s, decode_responses=True)) as client:
            try:
                worker.start()
                publisher.start()
                third = len(events) // 3
                assert wait_until(lambda: _safely(lambda: applied_count(client) > third),
                                  deadline_s=180, every=0.1), worker.log_tail()
                # The replica stops reading the master's stream while the victim partitions'
                # writes go on, so it is promoted without them: lost writes, for certain.
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
                assert wait_until(lambda: _safely(lambda: _promoted(replicated_cluster, replica)),
                                  deadline_s=60, every=0.1), "the replica was not promoted"
                with closing(redis.Redis(port=replica, decode_responses=True)) as promoted:
                    kept = {key: promoted.hgetall(key) for key in shard}
                assert kept != written, (
                    f"precondition: the promoted replica must lack writes ({kept} vs {written})")
                publisher.join()
                wait_caught_up(client, s, worker)
                assert_exact(client, s, truth, worker, [], log_path)
            finally:
                publisher.stop.set()
                worker.stop()
                delete_worker_topics(s)
    log = log_path.read_text(errors="replace")
    assert "Redis restarted" in log, "the worker did not notice the promoted replica"
    print(f"\n{len(events)} events, {len(truth)} customers; master :{victim} killed, "
          f"replica :{replica} promoted")
