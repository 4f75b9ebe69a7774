"""`scripts/devstack.py` creates the topics of a replicated Kafka with its replication.

Right after ``up --brokers 3`` starts its brokers, the broker that answers may list only
some of them: the topics must still get replication factor 3 (creating waits until enough
brokers have registered), not the replication of the brokers seen at that moment. The
admin client here is a stand-in that answers as such a broker does; the real three-broker
path is `tests/cluster/test_kafka_replicated.py`.
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import Future
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from tests.conftest import devstack_module

TOPICS = {"t.purchases": 4, "t.alerts": 2}


class RegisteringCluster:
    """An admin client of a cluster whose brokers register one per metadata request."""

    def __init__(self, brokers: int) -> None:
        self.brokers = brokers
        self.seen = 1
        self.created: dict[str, tuple[int, dict[str, str]]] = {}

    def list_topics(self, timeout: float = 0) -> Any:
        seen, self.seen = self.seen, min(self.brokers, self.seen + 1)
        topics = {
            name: SimpleNamespace(error=None, partitions={
                p: SimpleNamespace(leader=1, replicas=list(range(1, rf + 1)))
                for p in range(TOPICS[name])})
            for name, (rf, _) in self.created.items()
        }
        return SimpleNamespace(brokers={i: None for i in range(1, seen + 1)}, topics=topics)

    def create_topics(self, new: list[Any], request_timeout: float = 0) -> dict[str, Future]:
        out: dict[str, Future] = {}
        for topic in new:
            done: Future = Future()
            if topic.replication_factor > self.seen:
                done.set_exception(KafkaException(KafkaError(
                    KafkaError.INVALID_REPLICATION_FACTOR, "not enough brokers")))
            else:
                self.created[topic.topic] = (topic.replication_factor, dict(topic.config))
                done.set_result(None)
            out[topic.topic] = done
        return out


@pytest.mark.parametrize("brokers, replicas", [(3, 3), (1, 1)])
def test_topics_get_the_replication_of_the_brokers_started(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, brokers: int, replicas: int
) -> None:
    devstack = devstack_module()
    cluster = RegisteringCluster(brokers)
    monkeypatch.setattr(devstack, "admin_client", lambda cfg: cluster)
    monkeypatch.setattr(devstack.time, "sleep", lambda s: None)
    cfg = dataclasses.replace(devstack.Config.load(), topics=TOPICS, brokers=brokers,
                              cache=tmp_path)
    devstack.ensure_topics(cfg)
    assert {name: rf for name, (rf, _) in cluster.created.items()} == dict.fromkeys(
        TOPICS, replicas)
    if replicas == 3:
        assert all(config["min.insync.replicas"] == "2"
                   for _, config in cluster.created.values())


def test_a_topic_with_fewer_replicas_than_the_cluster_is_reported(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    devstack = devstack_module()
    cluster = RegisteringCluster(3)
    cluster.seen = 3
    cluster.created = {name: (1, {}) for name in TOPICS}
    monkeypatch.setattr(devstack, "admin_client", lambda cfg: cluster)
    cfg = dataclasses.replace(devstack.Config.load(), topics=TOPICS, brokers=3, cache=tmp_path)
    devstack.ensure_topics(cfg)
    out = capsys.readouterr().out
    assert "topic t.purchases: exists with 1 replicas, not 3" in out
