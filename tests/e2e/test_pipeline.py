"""Events through the real broker and a real worker into real Redis."""

from __future__ import annotations

import base64
import random
from collections import defaultdict
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import orjson
import pytest
import redis

from stream_app.connections import sync_redis
from stream_app.settings import Settings
from stream_app.store.keys import Keys
from stream_app.worker_process import wait_until
from tests.conftest import WorkerProcess, consume_all, http_json, publish

pytestmark = pytest.mark.integration

REASONS = ["billing", "complaint", "technical", "cancellation_request", "inquiry", "other"]
ACTIONS = ["sent", "delivered", "opened", "clicked", "converted", "unsubscribed", "bounced"]


def _money(x: float) -> Decimal:
    return Decimal(str(x)).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)


def make_events(n: int, customers: int, seed: int) -> list[tuple[str, dict[str, Any]]]:
    """(kind, message) pairs of all three kinds for a few customers."""
    rng = random.Random(seed)
    out: list[tuple[str, dict[str, Any]]] = []
    for i in range(n):
        cid = f"C{rng.randrange(customers):04d}"
        month, day, hour = rng.randrange(1, 10), rng.randrange(10, 28), rng.randrange(10, 23)
        when = f"2026-0{month}-{day}T{hour}:00:00Z"
        base = {"event_id": f"ev-{seed}-{i}", "customer_id": cid, "occurred_at": when}
        kind = rng.choice(["purchase", "purchase", "service_contact", "campaign_touch"])
        if kind == "purchase":
            msg = {
                **base, "kind": rng.choice(["order", "order", "order", "return"]),
                "amount": round(rng.uniform(1, 300), 2), "currency": "USD",
                "channel": rng.choice(["web", "store", "app"]),
            }
            if rng.random() < 0.8:
                msg["cost"] = round(msg["amount"] * rng.uniform(0.2, 0.8), 2)
        elif kind == "service_contact":
            msg = {
                **base, "channel": rng.choice(["phone", "email", "chat"]),
                "reason": rng.choice(REASONS), "cost": round(rng.uniform(0, 20), 2),
                "resolved": rng.random() < 0.7,
            }
        else:
            msg = {
                **base, "campaign_id": f"K{rng.randrange(5)}",
                "channel": rng.choice(["email", "sms", "push"]),
                "action": rng.choice(ACTIONS), "cost": round(rng.uniform(0, 1), 2),
            }
        out.append((kind, msg))
    return out


def expected_totals(events: list[tuple[str, dict[str, Any]]], margin: float) -> dict[str, dict]:
    """Per-customer totals computed straight from the messages, with Decimal."""
    t: dict[str, dict[str, Any]] = defaultdict(lambda: defaultdict(Decimal))
    for kind, m in events:
        c = t[m["customer_id"]]
        if kind == "purchase":
            amount = _money(m["amount"])
            cost = _money(m["cost"]) if "cost" in m else (
                amount * Decimal(str(1 - margin))
            ).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)
            if m["kind"] == "order":
                c["orders"] += 1
                c["revenue"] += amount
                c["cost_of_goods"] += cost
            else:
                c["returns"] += 1
                c["refunds"] += amount
                c["cost_of_goods"] -= cost
        elif kind == "service_contact":
            c["contacts"] += 1
            c["cost_to_serve"] += _money(m["cost"])
            c[f"contacts.{m['reason']}"] += 1
        else:
            c["marketing_cost"] += _money(m["cost"])
            c[f"touches.{m['action']}"] += 1
    for c in t.values():
        c["net_contribution"] = (
            c["revenue"] - c["refunds"] - c["cost_of_goods"]
            - c["cost_to_serve"] - c["marketing_cost"]
        )
    return t


def topic_of(settings: Settings, kind: str) -> str:
    t = settings.topics
    return {
        "purchase": t.purchases,
        "service_contact": t.service_contacts,
        "campaign_touch": t.campaign_touches,
    }[kind]


def records_match(client: redis.Redis, totals: dict[str, dict]) -> bool:
    for cid, want in totals.items():
        got = client.hgetall(Keys().customer(cid))
        if not got:
            return False
        for name, value in want.items():
            if Decimal(got.get(name, "0")) != Decimal(value):
                return False
    return True


def publish_and_wait_for_totals(
    settings: Settings, worker: WorkerProcess, events: list[tuple[str, dict[str, Any]]]
) -> dict[str, dict]:
    """Publish `events` and wait until every record holds their totals; returns the totals."""
    publish(settings, (
        (topic_of(settings, kind), m["customer_id"].encode(), orjson.dumps(m))
        for kind, m in events
    ))
    totals = expected_totals(events, settings.default_margin_rate)
    client = sync_redis(settings, decode_responses=True)
    try:
        assert wait_until(lambda: records_match(client, totals)), worker.log_tail()
    finally:
        client.close()
    return totals


def test_every_record_equals_totals_from_the_published_events(
    settings: Settings, worker: WorkerProcess
) -> None:
    totals = publish_and_wait_for_totals(settings, worker, make_events(400, customers=25, seed=11))

    cid = next(iter(totals))
    status, body = http_json(settings, f"/customers/{cid}")
    assert status == 200
    assert body["customer_id"] == cid
    assert Decimal(str(body["revenue"])) == totals[cid]["revenue"]
    status, body = http_json(settings, "/customers/nobody-here")
    assert status == 404 and body["error"] == "not_found"


MALFORMED: list[tuple[str, bytes, str]] = [
    ("purchase", b"{not json", "invalid_json"),
    ("purchase", b"[1, 2, 3]", "invalid_json"),
    ("purchase", orjson.dumps({"event_id": "x"}), "schema_violation"),
    ("service_contact", orjson.dumps({
        "event_id": "x", "customer_id": "C0001", "occurred_at": "2026-01-01T00:00:00Z",
        "channel": "pigeon", "reason": "billing", "cost": 1.0, "resolved": True,
    }), "schema_violation"),
    ("campaign_touch", orjson.dumps({
        "event_id": "x", "customer_id": "C0001", "occurred_at": "2026-01-01T00:00:00Z",
        "campaign_id": "K1", "channel": "email", "action": "opened", "cost": "cheap",
    }), "schema_violation"),
    ("purchase", orjson.dumps({
        "event_id": "x", "customer_id": "C0001", "occurred_at": "2026-01-01T00:00:00Z",
        "kind": "order", "amount": -5, "currency": "USD", "channel": "web",
    }), "schema_violation"),
    ("purchase", b'{"pad": "' + b"x" * 70_000 + b'"}', "oversize"),
    ("purchase", b"\xff\xfe\x00garbage", "invalid_json"),
]


def test_malformed_events_go_to_the_dead_letter_topic_and_valid_ones_flow(
    settings: Settings, worker: WorkerProcess
) -> None:
    good = make_events(120, customers=10, seed=12)
    messages: list[tuple[str, bytes | None, bytes]] = []
    for i, (kind, m) in enumerate(good):
        messages.append((topic_of(settings, kind), m["customer_id"].encode(), orjson.dumps(m)))
        if i % 15 == 0 and i // 15 < len(MALFORMED):
            bad_kind, payload, _ = MALFORMED[i // 15]
            messages.append((topic_of(settings, bad_kind), b"C0001", payload))
    publish(settings, messages)

    letters = consume_all(settings, settings.topics.dead_letter, expected=len(MALFORMED))
    assert len(letters) == len(MALFORMED)
    decoded = [orjson.loads(m.value()) for m in letters]
    by_payload = {base64.b64decode(d["payload_b64"]): d for d in decoded}
    for kind, payload, code in MALFORMED:
        letter = by_payload[payload]
        assert letter["error_code"] == code, letter
        assert letter["reason"]
        assert letter["source_topic"] == topic_of(settings, kind)
        assert letter["source_offset"] >= 0
    totals = expected_totals(good, settings.default_margin_rate)
    client = sync_redis(settings, decode_responses=True)
    assert wait_until(lambda: records_match(client, totals)), worker.log_tail()
