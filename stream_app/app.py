"""Builds the Faust app and its topics from settings; nothing else."""

from __future__ import annotations

from dataclasses import dataclass

import faust
from faust.types import TopicT

from stream_app import codec
from stream_app.connections import broker_credentials
from stream_app.kafka_producer import producer_urls
from stream_app.settings import Settings


@dataclass(frozen=True)
class Channels:
    """The app's topics: one channel over the three inputs, and each output."""

    inputs: TopicT
    alerts: TopicT
    winback: TopicT
    dead_letter: TopicT
    training: TopicT


def broker_urls(bootstrap_servers: str) -> list[str]:
    """Faust broker URLs from a Kafka bootstrap list.

    >>> broker_urls("a:9092,b:9093")
    ['kafka://a:9092', 'kafka://b:9093']
    """
    return [f"kafka://{host.strip()}" for host in bootstrap_servers.split(",") if host.strip()]


def create_app(settings: Settings) -> tuple[faust.App, Channels]:
    """A Faust app whose every topic uses the orjson codec (inputs are read raw)."""
    codec.register()
    app = faust.App(
        settings.app_id,
        # Faust's aiokafka transport, whose producer (alerts, triggers, dead letters,
        # training examples) also has idempotence on, so a retry across a broker
        # failover writes no message twice (`stream_app.kafka_producer`).
        broker=producer_urls(broker_urls(settings.kafka_bootstrap_servers)),
        # TLS and SASL for the consumer, the producer and topic creation alike.
        broker_credentials=broker_credentials(settings.kafka_security),
        store="memory://",
        datadir=settings.data_dir,
        key_serializer="raw",
        value_serializer=codec.NAME,
        topic_partitions=settings.partitions,
        consumer_auto_offset_reset="earliest",
        web_enabled=True,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        # Lookups are answered on the web server's own thread and event loop, so they do
        # not wait for a batch that holds this loop (`stream_app.web.WebSide`).
        web_in_thread=settings.web_in_thread,
        producer_acks=-1,
        # A killed worker's group membership lingers until its session times out,
        # and its replacement's join waits for that (about a minute at Faust's
        # 60 s default). A stable instance id (static membership) shortens it more.
        broker_session_timeout=settings.session_timeout_s,
        consumer_group_instance_id=settings.group_instance_id or None,
        # Stopping waits for in-flight batches; take_events acknowledges a batch
        # when the loop body returns, so this keeps a clean stop exact.
        stream_wait_empty=True,
        # Dead letters embed the original payload (base64), truncated to
        # CVM_DEAD_LETTER_MAX_BYTES, which the settings check keeps below this.
        producer_max_request_size=settings.producer_max_request_bytes,
    )
    topics = settings.topics
    channels = Channels(
        # Inputs are decoded by the contract at the edge (orjson + JSON Schema), so
        # a payload that is not even JSON reaches the dead-letter topic byte for byte.
        inputs=app.topic(*topics.inputs, key_serializer="raw", value_serializer="raw"),
        alerts=app.topic(topics.alerts, value_serializer=codec.NAME),
        winback=app.topic(topics.winback, value_serializer=codec.NAME),
        dead_letter=app.topic(topics.dead_letter, value_serializer=codec.NAME),
        training=app.topic(topics.training, value_serializer=codec.NAME),
    )
    return app, channels
