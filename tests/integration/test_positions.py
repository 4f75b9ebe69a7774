"""The ingest agent never applies a partition past offsets it has not read.

Against the real broker: a batch whose first record lies beyond the next offset Redis
holds as applied is a hole when records can be read in between (the agent must not apply
it), and no hole when the gap holds only transaction markers, which a transactional
producer writes into the partition and which no consumer ever receives.
"""

from __future__ import annotations

import asyncio

import pytest
from confluent_kafka import Producer

from stream_app.agents.ingest import unread_holes
from stream_app.connections import first_readable_offset
from stream_app.pipeline import RawRecord
from stream_app.positions import Positions
from stream_app.settings import Settings

pytestmark = pytest.mark.integration


def _records(topic: str, offsets: range) -> list[RawRecord]:
    return [RawRecord(topic=topic, partition=0, offset=o, key=b"c", value=b"{}") for o in offsets]


def _probe(settings: Settings):  # noqa: ANN202 - the probe the agent builds
    async def probe(topic: str, partition: int, start: int) -> int | None:
        return await asyncio.to_thread(first_readable_offset, settings, topic, partition, start)
    return probe


def test_a_gap_with_readable_records_is_a_hole(settings: Settings) -> None:
    topic = settings.topics.purchases
    producer = Producer(settings.kafka_config())
    for _ in range(10):
        producer.produce(topic, key=b"c", value=b"{}", partition=0)
    assert producer.flush(30) == 0
    positions = Positions()
    positions.reset({(topic, 0): 2}, [(topic, 0)])

    holes = asyncio.run(unread_holes(positions, _records(topic, range(6, 10)), _probe(settings)))

    assert holes == {f"{topic}/0": (3, 6, 3)}
    # Contiguous with what was applied: no hole, and no probe needed.
    assert asyncio.run(unread_holes(positions, _records(topic, range(3, 10)), _never)) == {}


def test_a_gap_of_transaction_markers_is_verified_once(settings: Settings) -> None:
    topic = settings.topics.purchases
    producer = Producer({**settings.kafka_config(),
                         "transactional.id": f"{settings.app_id}-positions"})
    producer.init_transactions(30)
    for n in (3, 2):  # offsets 0-2, a commit marker at 3; offsets 4-5, a marker at 6
        producer.begin_transaction()
        for _ in range(n):
            producer.produce(topic, key=b"c", value=b"{}", partition=0)
        producer.commit_transaction(30)
    positions = Positions()
    positions.reset({(topic, 0): 2}, [(topic, 0)])

    holes = asyncio.run(unread_holes(positions, _records(topic, range(4, 6)), _probe(settings)))

    assert holes == {}
    # Verified: the same gap is not probed again.
    assert asyncio.run(unread_holes(positions, _records(topic, range(4, 6)), _never)) == {}


async def _never(topic: str, partition: int, start: int) -> int | None:
    raise AssertionError(f"probed {topic}/{partition} at {start} without need")
