"""The read side is a round trip of the record: what the write path stores, lookups return.

Random event histories go through the real write path (`Ingestor.process`, its Lua commit)
into the real Redis of the dev stack; `lookup.customer` (what ``cvm lookup`` and
``GET /customers/{id}`` serve) must give back the totals computed from the messages, as
numbers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from redis.asyncio import Redis

from stream_app import lookup
from stream_app.pipeline import Ingestor, LiveModel, RawRecord
from stream_app.settings import Settings
from stream_app.store.customers import CustomerStore
from stream_app.store.keys import Keys
from tests.e2e.helpers import CONTACT_REASONS, TOUCH_ACTIONS, own_redis_db
from tests.e2e.test_pipeline import expected_totals

pytestmark = pytest.mark.integration

KINDS = ("purchase", "service_contact", "campaign_touch")
CUSTOMERS = ("C1", "C2", "C3")
MONEY = ("revenue", "refunds", "cost_of_goods", "cost_to_serve", "marketing_cost",
         "net_contribution")
COUNTS = ("orders", "returns", "contacts")

cents = st.integers(0, 50_000).map(lambda c: c / 100)
when = st.tuples(st.integers(1, 9), st.integers(10, 28), st.integers(10, 23)).map(
    lambda t: f"2026-0{t[0]}-{t[1]}T{t[2]}:00:00Z"
)
purchase = st.fixed_dictionaries(
    {"kind": st.sampled_from(["order", "order", "return"]), "amount": cents,
     "currency": st.just("USD"), "channel": st.sampled_from(["web", "store"])},
    optional={"cost": cents},
)
contact = st.fixed_dictionaries(
    {"channel": st.sampled_from(["phone", "chat"]), "reason": st.sampled_from(CONTACT_REASONS),
     "cost": cents, "resolved": st.booleans()},
    optional={"sentiment": st.sampled_from([-1.0, -0.25, 0.0, 0.5, 1.0])},
)
touch = st.fixed_dictionaries(
    {"campaign_id": st.sampled_from(["K1", "K2"]), "channel": st.just("email"),
     "action": st.sampled_from(TOUCH_ACTIONS), "cost": cents},
)
BODIES = {"purchase": purchase, "service_contact": contact, "campaign_touch": touch}
event = st.sampled_from(KINDS).flatmap(
    lambda kind: st.tuples(
        st.just(kind), st.sampled_from(CUSTOMERS), when, BODIES[kind], st.integers(0, 3)
    )
)


class Letters:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send(self, key: bytes | None, message: dict[str, Any]) -> None:
        self.sent.append(message)


@pytest.fixture(scope="module")
def redis_settings() -> Iterator[Settings]:
    with own_redis_db(Settings.from_env()) as s:
        yield s


async def write_then_look_up(
    settings: Settings, messages: list[tuple[str, dict[str, Any], int]]
) -> tuple[dict[str, dict[str, Any] | None], dict[str, dict[str, str]], Letters]:
    redis = Redis.from_url(settings.redis_url)
    try:
        await redis.flushdb()
        letters = Letters()
        # A constant churn model, so that the records also hold a churn_probability.
        live = LiveModel(scorer=lambda _features: 0.25, churn_version="test")
        ingestor = Ingestor(settings, CustomerStore(redis), letters, live=live)
        topics = dict(zip(KINDS, settings.topics.inputs, strict=True))
        offsets: dict[tuple[str, int], int] = {}
        records = []
        for kind, m, partition in messages:
            tp = (topics[kind], partition)
            offsets[tp] = offsets.get(tp, -1) + 1
            key = None if partition == 3 else m["customer_id"].encode()
            records.append(RawRecord(tp[0], partition, offsets[tp], key, orjson.dumps(m)))
        half = len(records) // 2
        await ingestor.process(records[:half])
        await ingestor.process(records[half:])
        views = {cid: await lookup.customer(redis, settings, cid) for cid in CUSTOMERS}
        raw = {}
        for cid in CUSTOMERS:
            stored = await redis.hgetall(Keys().customer(cid))
            raw[cid] = {k.decode(): v.decode() for k, v in stored.items()}
        return views, raw, letters
    finally:
        await redis.aclose()


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(event, min_size=1, max_size=40))
def test_lookup_returns_the_numbers_the_write_path_stored(
    redis_settings: Settings, drawn: list[tuple[str, str, str, dict[str, Any], int]]
) -> None:
    messages = [
        (kind, {"event_id": f"ev-{i}", "customer_id": cid, "occurred_at": at, **body}, part)
        for i, (kind, cid, at, body, part) in enumerate(drawn)
    ]
    settings = redis_settings
    views, raw, letters = asyncio.run(write_then_look_up(settings, messages))
    assert letters.sent == []
    totals = expected_totals([(k, m) for k, m, _ in messages], settings.default_margin_rate)
    for cid in CUSTOMERS:
        view = views[cid]
        if cid not in totals:
            assert view is None
            continue
        assert view is not None
        want = totals[cid]
        for name in MONEY:
            assert isinstance(view[name], float), (name, view[name])
            assert Decimal(str(view[name])) == want.get(name, Decimal(0)), (cid, name)
        for name in COUNTS:
            assert view[name] == want.get(name, 0), (cid, name)
        assert view["contacts_by_reason"] == {
            r: want.get(f"contacts.{r}", 0) for r in CONTACT_REASONS
        }
        assert view["touches_by_action"] == {
            a: want.get(f"touches.{a}", 0) for a in TOUCH_ACTIONS
        }
        # Every number the record holds comes back as a number, the same one.
        stored = raw[cid]
        for name in ("churn_probability", "unresolved_contacts", "cost_of_goods_estimated"):
            if name in stored:
                assert not isinstance(view[name], str), (name, view[name])
                assert float(view[name]) == float(stored[name]), name
