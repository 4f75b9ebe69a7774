"""Faust's Kafka transport with an idempotent producer: ``acks=all`` and idempotence on.

Faust's aiokafka producer sends with the app's ``producer_acks`` (-1, all in-sync
replicas) but turns idempotence on only inside transactions. Without it, a retry
after a lost acknowledgement (a broker failing over) can write an alert or a dead
letter twice. The worker's broker URLs use the scheme `SCHEME`, which names this
transport (Faust creates the app's producer from the consumer's transport); its
consumer is Faust's own.

>>> from faust.transport.drivers import TRANSPORTS
>>> TRANSPORTS.by_url(f"{SCHEME}://127.0.0.1:9092") is Transport
True
>>> producer_urls(["kafka://a:9092", "kafka://b:9093"])
['kafka-idempotent://a:9092', 'kafka-idempotent://b:9093']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as faust_aiokafka

SCHEME = "kafka-idempotent"


class Producer(faust_aiokafka.Producer):
    """Faust's aiokafka producer, always idempotent with acks from every in-sync replica."""

    def _settings_extra(self) -> Mapping[str, Any]:
        return {**super()._settings_extra(), "acks": "all", "enable_idempotence": True}


class Transport(faust_aiokafka.Transport):
    """Faust's aiokafka transport whose producers are `Producer`."""

    Producer = Producer


TRANSPORTS.aliases.setdefault(SCHEME, f"{__name__}:Transport")


def producer_urls(urls: Sequence[str]) -> list[str]:
    """The same broker addresses with the scheme `SCHEME` (this transport)."""
    return [f"{SCHEME}://{url.split('://', 1)[-1]}" for url in urls]
