"""The churn label's lead window (`CVM_CHURN_LEAD_DAYS`) through the ingest path and Redis.

Each event below is its own `Ingestor.process` call, and labels are released by the rescoring
timer's `Ingestor.revisit`, so a snapshot's anchor (the last order within its lead window) must
survive the customer's record in Redis between them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from stream_app.domain.events import MS_PER_DAY, parse_time
from stream_app.pipeline import Ingestor, RawRecord, retention_policy
from stream_app.settings import Settings, SettingsError
from stream_app.store.customers import CustomerStore
from tests.e2e.helpers import own_redis_db

pytestmark = pytest.mark.integration

DAY0 = parse_time("2026-01-01T10:00:00Z")


class Sent:
    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []

    async def send(self, *args: Any) -> None:
        kind, message = (args[0], args[2]) if len(args) == 3 else ("dead_letter", args[1])
        self.messages.append((kind, message))


@pytest.fixture
def own(stack: Settings) -> Iterator[Settings]:
    with own_redis_db(stack) as s:
        yield s


def _order(settings: Settings, offset: int, day: str) -> RawRecord:
    body = {"event_id": f"o{offset}", "customer_id": "C1", "occurred_at": f"2026-{day}T10:00:00Z",
            "kind": "order", "amount": 80.0, "currency": "USD", "channel": "web"}
    return RawRecord(settings.topics.purchases, 0, offset, b"C1", orjson.dumps(body))


def _contact(settings: Settings, offset: int, day: str) -> RawRecord:
    body = {"event_id": f"c{offset}", "customer_id": "C1", "occurred_at": f"2026-{day}T10:00:00Z",
            "channel": "phone", "reason": "billing", "cost": 4.0, "resolved": True}
    return RawRecord(settings.topics.service_contacts, 0, offset, b"C1", orjson.dumps(body))


async def _labels(settings: Settings) -> list[list[tuple[int, int]]]:
    """(days from the first order to the snapshot, label) of the examples released after each
    batch, when the rescoring timer revisits the customer at that batch's event time."""
    sent, letters = Sent(), Sent()
    redis = Redis.from_url(settings.redis_url)
    try:
        ingestor = Ingestor(settings, CustomerStore(redis), letters, publisher=sent)
        batches = [(_order(settings, 0, "01-01"), 0),      # the first snapshot, day 0
                   (_order(settings, 1, "01-21"), 20),     # an order within 60 days of it
                   (_contact(settings, 0, "04-10"), 99),   # 90 days after day 0
                   (_contact(settings, 1, "04-25"), 114)]  # 90 days after day 20
        out = []
        for record, day in batches:
            sent.messages.clear()
            await ingestor.process([record])
            await ingestor.revisit(["C1"], DAY0 + day * MS_PER_DAY)
            out.append([((m["taken_at"] - DAY0) // MS_PER_DAY, m["label"])
                        for kind, m in sent.messages if kind == "training"])
        assert letters.messages == []
        return out
    finally:
        await redis.aclose()


def test_without_a_lead_an_order_within_the_horizon_labels_the_snapshot_retained(
        own: Settings) -> None:
    assert asyncio.run(_labels(own)) == [[], [], [(0, 0)], []]


def test_with_a_lead_the_silence_counts_from_the_last_order_in_the_window(
        own: Settings) -> None:
    """With 60 days of lead, the order of day 20 falls within the snapshot's window: it only
    moves the anchor, and 90 silent days after it the customer has dropped out within the
    window, so the snapshot of day 0 is labelled churned, at day 110 rather than day 90."""
    lead = replace(own, churn_lead_days=60)
    assert retention_policy(lead).lead_ms == 60 * MS_PER_DAY
    assert asyncio.run(_labels(lead)) == [[], [], [], [(0, 1)]]


def test_a_lead_longer_than_the_horizon_is_refused() -> None:
    with pytest.raises(SettingsError, match="CVM_CHURN_LEAD_DAYS=91"):
        Settings(churn_lead_days=91).check()
