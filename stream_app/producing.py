"""The Kafka producer's configuration shared by ``cvm replay`` and the load tools.

Part of the engine's package so that an installed ``cvm`` needs nothing from the
repository's ``load/`` tools, which are not shipped in the wheel.
"""

from __future__ import annotations

from typing import Any, Protocol

from stream_app.settings import Settings

__all__ = ["Producer", "producer_config"]


class Producer(Protocol):
    """The part of ``confluent_kafka.Producer`` that the publishers use."""

    def produce(self, topic: str, value: bytes, key: bytes) -> None: ...

    def poll(self, timeout: float) -> int: ...

    def flush(self, timeout: float) -> int: ...


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """The confluent-kafka configuration of a publisher; ``overrides`` win (dots as ``_``).

    >>> producer_config(Settings(), linger_ms=5)["linger.ms"]
    5
    """
    config: dict[str, Any] = {
        **settings.kafka_config(),
        "client.id": f"{settings.app_id}-load-generator",
        "acks": "all",
        "enable.idempotence": True,
        "compression.type": "lz4",
        "linger.ms": 20,
        "batch.size": 1_000_000,
        "batch.num.messages": 10_000,
        "queue.buffering.max.messages": 500_000,
        "queue.buffering.max.kbytes": 512 * 1024,
        "message.max.bytes": max(1_000_000, 2 * settings.max_event_bytes + 4096),
        "partitioner": "murmur2_random",
        "delivery.report.only.error": True,
    }
    config.update({key.replace("_", "."): value for key, value in overrides.items()})
    return config
