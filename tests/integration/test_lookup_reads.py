"""What a lookup client keeps between lookups, against the real write path and Redis.

Records and watermarks are written by `Ingestor.process` and its Lua commit. A client keeps
the partitions' watermarks for CVM_LOOKUP_WATERMARK_S and, without a worker, the value model
for CVM_REFRESH_INTERVAL_S; within those times a lookup reads only the customer's record.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from stream_app import lookup
from stream_app.pipeline import Ingestor, RawRecord
from stream_app.settings import Settings
from stream_app.store.customers import CustomerStore
from stream_app.store.keys import Keys
from tests.e2e.helpers import NoDeadLetters, own_redis_db

pytestmark = pytest.mark.integration

MODEL_V7 = {"version": 7, "bgnbd": {"r": 0.3, "alpha": 12.0, "a": 0.7, "b": 2.0},
            "gamma_gamma": {"p": 5.0, "q": 4.0, "v": 20.0}}


@pytest.fixture(scope="module")
def redis_settings() -> Iterator[Settings]:
    with own_redis_db(Settings.from_env()) as s:
        yield s


def order(settings: Settings, offset: int, cid: str, day: str) -> RawRecord:
    message = {"event_id": f"o-{offset}", "customer_id": cid,
               "occurred_at": f"2026-{day}T10:00:00Z", "kind": "order", "amount": 80.0,
               "cost": 50.0, "currency": "USD", "channel": "web"}
    return RawRecord(settings.topics.purchases, 0, offset, cid.encode(), orjson.dumps(message))


async def scenario(settings: Settings) -> dict[str, Any]:
    keeping = replace(settings, lookup_watermark_s=3600.0, refresh_interval_s=3600.0)
    fresh = replace(settings, lookup_watermark_s=0.0, refresh_interval_s=0.0)
    redis, other = Redis.from_url(settings.redis_url), Redis.from_url(settings.redis_url)
    try:
        await redis.flushdb()
        ingestor = Ingestor(settings, CustomerStore(redis), NoDeadLetters())
        await ingestor.process([order(settings, 0, "A1", "03-01"),
                                order(settings, 1, "A1", "03-09")])
        out: dict[str, Any] = {"first": await lookup.customer(redis, keeping, "A1", offers=False)}
        # The partition's watermark moves on to 03-20 and a model is fitted.
        await ingestor.process([order(settings, 2, "B2", "03-20")])
        await redis.set(Keys().model, orjson.dumps(MODEL_V7))
        out["kept"] = await lookup.customer(redis, keeping, "A1", offers=False)
        out["later_customer"] = await lookup.customer(redis, keeping, "B2", offers=False)
        out["reread"] = await lookup.customer(redis, fresh, "A1", offers=False)
        out["other_client"] = await lookup.customer(other, keeping, "A1", offers=False)
        out["kept_after"] = await lookup.customer(redis, keeping, "A1", offers=False)
        return out
    finally:
        await redis.aclose()
        await other.aclose()


@pytest.fixture(scope="module")
def views(redis_settings: Settings) -> dict[str, Any]:
    return asyncio.run(scenario(redis_settings))


def test_a_client_answers_at_the_watermark_and_with_the_model_it_kept(
    views: dict[str, Any],
) -> None:
    assert views["first"]["as_of"] == "2026-03-09T10:00:00.000Z"
    assert views["kept"]["as_of"] == "2026-03-09T10:00:00.000Z"
    assert views["kept"]["model_version"] == views["first"]["model_version"] == 0


def test_a_customer_whose_last_event_is_later_than_the_kept_watermark_is_valued_at_it(
    views: dict[str, Any],
) -> None:
    assert views["later_customer"]["as_of"] == "2026-03-20T10:00:00.000Z"


def test_stale_copies_are_read_again_with_the_record(views: dict[str, Any]) -> None:
    for name in ("reread", "other_client"):
        assert views[name]["as_of"] == "2026-03-20T10:00:00.000Z", name
        assert views[name]["model_version"] == 7, name
        assert views[name]["p_alive"] < views["first"]["p_alive"], name  # 11 more silent days
    # What a client read again it keeps, whatever the settings of the lookup that read it.
    assert views["kept_after"]["as_of"] == "2026-03-20T10:00:00.000Z"
    assert views["kept_after"]["model_version"] == 7
