"""`scripts/devstack up --brokers 3`: a replicated Kafka that loses a broker and loses nothing.

The test runs on this package's three brokers (`tests.private_kafka`: own ports, own cache
folder; the shared broker is not touched), checks the engine's topics are created with
replication factor 3 and min.insync.replicas=2, and sends with the producer configuration
the engine's producers use (acks=all, idempotence) while one broker is killed: every
message is acknowledged and read back exactly once.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, ConfigResource

from load.generator import producer_config
from stream_app.settings import Settings
from tests.private_kafka import ReplicatedKafka

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _metadata_with(admin: AdminClient, topic: str, timeout_s: float = 30.0) -> Any:
    """The cluster metadata once the broker that answers knows `topic` (see `_topic_config`)."""
    deadline = time.monotonic() + timeout_s
    while True:
        metadata = admin.list_topics(timeout=15)
        if topic in metadata.topics or time.monotonic() > deadline:
            return metadata
        time.sleep(0.5)


def _topic_config(admin: AdminClient, topic: str, timeout_s: float = 30.0) -> dict[str, Any]:
    """The topic's configuration, once the broker asked knows the topic.

    A topic just created is in the metadata of one broker before the others: a
    describe sent to another broker meanwhile answers "unknown topic or partition".
    """
    deadline = time.monotonic() + timeout_s
    while True:
        (described,) = admin.describe_configs([ConfigResource("topic", topic)]).values()
        try:
            return dict(described.result())
        except KafkaException as exc:
            # _DESTROY_BROKER: sent through a bootstrap connection the client was replacing
            if (exc.args[0].code() not in (KafkaError.UNKNOWN_TOPIC_OR_PART,
                                           KafkaError._DESTROY_BROKER)
                    or time.monotonic() > deadline):
                raise
        time.sleep(0.5)


def test_acks_all_survives_a_broker_killed(three_brokers: ReplicatedKafka) -> None:
    bootstrap = three_brokers.bootstrap
    assert len(bootstrap.split(",")) == 3
    settings = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": bootstrap})
    admin = AdminClient(settings.kafka_config())
    topic = settings.topics.purchases
    metadata = _metadata_with(admin, topic)
    assert len(metadata.brokers) == 3
    assert all(len(p.replicas) == 3 for p in metadata.topics[topic].partitions.values())
    assert _topic_config(admin, topic)["min.insync.replicas"].value == "2"

    config = producer_config(settings, delivery_report_only_error=False, linger_ms=5)
    assert config["acks"] == "all" and config["enable.idempotence"] is True
    delivered: list[Any] = []
    failed: list[Any] = []

    def on_delivery(err: Any, msg: Any) -> None:
        (failed if err is not None else delivered).append(err or msg.value())

    producer = Producer(config)
    run = uuid.uuid4().hex[:6]
    sent = [f"{run}-{i}".encode() for i in range(600)]
    for value in sent[:300]:
        producer.produce(topic, key=value[-3:], value=value, on_delivery=on_delivery)
    assert producer.flush(60) == 0
    three_brokers.kill(2)  # SIGKILL: no controlled shutdown
    for value in sent[300:]:
        producer.produce(topic, key=value[-3:], value=value, on_delivery=on_delivery)
        producer.poll(0)
    assert producer.flush(120) == 0
    assert not failed, failed[:3]
    assert sorted(delivered) == sorted(sent)

    consumer = Consumer({**settings.kafka_config(), "group.id": f"reader-{run}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    # From the beginning, without asking the group coordinator for committed offsets: with a
    # broker down the offsets topic may not exist yet (it needs all three replicas).
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING)
                     for p in metadata.topics[topic].partitions])
    got: list[bytes] = []
    try:
        for _ in range(240):
            for msg in consumer.consume(500, timeout=0.5):
                if msg.error() is None:
                    got.append(msg.value())
            if len(got) >= len(sent):
                break
    finally:
        consumer.close()
    assert sorted(got) == sorted(sent)  # every message once: none lost, none doubled
