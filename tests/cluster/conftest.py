"""The end-to-end tests of `test_engine` run on a Redis Cluster of the session's own.

Three masters (Debian's ``redis-server`` in cluster mode, `tests.private_cluster`) are
started once; the ``settings`` fixture of this package points the worker, the CLI and
the test's own clients at them with ``CVM_REDIS_CLUSTER=true``, and empties the cluster
before and after each test.

The fault tests of this package share one replicated Kafka (three brokers,
`tests.private_kafka`), started once for the package and stopped after its last test;
``three_brokers`` hands it to a test with all three brokers serving and in sync.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stream_app.settings import Settings
from tests.conftest import fresh_settings
from tests.private_cluster import PrivateCluster
from tests.private_kafka import ReplicatedKafka


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateCluster]:
    """A 3-master Redis Cluster for the whole session."""
    cluster = PrivateCluster(Path(tmp_path_factory.mktemp("redis-cluster")))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def settings(stack: Settings, redis_cluster: PrivateCluster, tmp_path: Path) -> Iterator[Settings]:
    """Fresh topics and consumer group; the session's Redis Cluster, emptied."""
    with fresh_settings(stack, tmp_path, redis_cluster.url, redis_cluster=True) as s:
        yield s


@pytest.fixture(scope="package")
def replicated_kafka(
    stack: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ReplicatedKafka]:
    """Three Kafka brokers of this package's own (`tests.private_kafka`)."""
    kafka = ReplicatedKafka(Path(tmp_path_factory.mktemp("kafka-cluster")), stack.redis_url)
    try:
        kafka.start()
        yield kafka
    finally:
        kafka.stop()


@pytest.fixture
def three_brokers(replicated_kafka: ReplicatedKafka) -> ReplicatedKafka:
    """The package's replicated Kafka with all three brokers serving (a killed one restarted)."""
    replicated_kafka.ensure_up()
    return replicated_kafka
