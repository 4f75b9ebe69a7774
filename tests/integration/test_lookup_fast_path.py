"""A lookup answers from the stored record when it holds what was asked for.

The real write path (`Ingestor.process` and its Lua commit) stores customers in the real
Redis of the dev stack. A lookup whose as-of time, horizon and model version are the
record's answers with the record's values as stored; any other lookup revalues. To tell
the two apart the test overwrites a stored figure: only an answer read from the record
can return it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from stream_app import lookup
from stream_app.domain.valuation import ValueModel, value_one
from stream_app.pipeline import Ingestor, RawRecord
from stream_app.settings import Settings
from stream_app.store.customers import CustomerStore
from stream_app.store.keys import Keys
from stream_app.store.records import from_fields, parse_time
from tests.e2e.helpers import NoDeadLetters, own_redis_db

pytestmark = pytest.mark.integration

SENTINEL = "12345.67"


@pytest.fixture(scope="module")
def redis_settings() -> Iterator[Settings]:
    with own_redis_db(Settings.from_env()) as s:
        yield s


def order(n: int, cid: str, day: str) -> dict[str, Any]:
    return {"event_id": f"o-{n}", "customer_id": cid, "occurred_at": f"{day}T10:00:00Z",
            "kind": "order", "amount": 80.0, "cost": 50.0, "currency": "USD",
            "channel": "web"}


async def scenario(settings: Settings) -> dict[str, Any]:
    redis = Redis.from_url(settings.redis_url)
    try:
        await redis.flushdb()
        ingestor = Ingestor(settings, CustomerStore(redis), NoDeadLetters())
        topic = settings.topics.purchases
        days = [("A1", "2026-03-01"), ("A1", "2026-03-09"), ("B2", "2026-03-20"),
                ("A1", "2026-03-25")]
        records = [
            RawRecord(topic, 0, i, cid.encode(), orjson.dumps(order(i, cid, day)))
            for i, (cid, day) in enumerate(days)
        ]
        await ingestor.process(records)
        keys = Keys()
        stored = {k.decode(): v.decode()
                  for k, v in (await redis.hgetall(keys.customer("A1"))).items()}
        await redis.hset(keys.customer("A1"), "clv", SENTINEL)
        own = parse_time(stored["as_of"])
        horizon = float(stored["horizon_days"])
        out: dict[str, Any] = {"stored": stored}
        # At the record's own as-of time, horizon and model: the record as stored.
        out["same"] = await lookup.customer(redis, settings, "A1", horizon, own)
        # The watermark is the customer's own last event here (the latest of the batch).
        out["default"] = await lookup.customer(redis, settings, "A1")
        out["other_horizon"] = await lookup.customer(redis, settings, "A1", 90.0, own)
        out["later"] = await lookup.customer(redis, settings, "A1", horizon,
                                             own + 30 * 86_400_000)
        out["newer_model"] = await lookup.customer(
            redis, settings, "A1", horizon, own, model=ValueModel(version=7))
        state = from_fields("A1", stored)
        out["want_90"] = value_one(ValueModel(), state, own, 90.0)
        # Concurrent lookups that revalue share one valuation and each get their own.
        out["concurrent"] = await asyncio.gather(*(
            lookup.customer(redis, settings, cid, 30.0 + k) for k, cid in
            enumerate(["A1", "B2", "A1", "B2"])
        ))
        return out
    finally:
        await redis.aclose()


def test_a_lookup_of_what_is_stored_reads_it_and_any_other_revalues(
    redis_settings: Settings,
) -> None:
    out = asyncio.run(scenario(redis_settings))
    assert out["same"]["clv"] == float(SENTINEL)
    assert out["default"]["clv"] == float(SENTINEL)
    for name in ("other_horizon", "later", "newer_model"):
        assert out[name]["clv"] != float(SENTINEL), name
    assert out["other_horizon"]["horizon_days"] == 90
    assert out["other_horizon"]["expected_purchases"] == round(
        out["want_90"].expected_purchases, 4)
    assert out["newer_model"]["model_version"] == 7
    views = out["concurrent"]
    assert [v["customer_id"] for v in views] == ["A1", "B2", "A1", "B2"]
    assert [v["horizon_days"] for v in views] == [30, 31, 32, 33]
    assert views[0]["expected_purchases"] < views[2]["expected_purchases"]
