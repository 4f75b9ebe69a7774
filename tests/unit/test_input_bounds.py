"""Bounds on input values: every message the engine cannot apply is rejected with a reason.

Money, sentiment, exchange rates and event times are checked at the edge, so that no valid
message can raise an arithmetic error deeper in the worker, and dead letters always fit the
producer's request size.
"""

from __future__ import annotations

import base64
import hashlib
from decimal import Decimal
from typing import Any

import orjson
import pytest

from stream_app.contract import MAX_AMOUNT, MONEY_FIELDS, Contract, InvalidEvent, load_schema
from stream_app.domain.events import (
    MAX_CENTS,
    InvalidEventValue,
    ServiceContact,
    check_time,
    from_message,
    parse_time,
    to_cents,
    to_milli,
)
from stream_app.domain.ledger import estimated_cost
from stream_app.pipeline import (
    DEAD_LETTER_KEY_LIMIT,
    Ingestor,
    RawRecord,
    dead_letter_key,
    dead_letter_message,
)
from stream_app.settings import Settings, SettingsError

PURCHASE = {
    "event_id": "o-1", "customer_id": "C1", "occurred_at": "2026-01-01T00:00:00Z",
    "kind": "order", "amount": 10.0, "currency": "USD", "channel": "web",
}


def purchase(**changes: Any) -> dict[str, Any]:
    return {**PURCHASE, **changes}


# --- money -------------------------------------------------------------------------------


@pytest.mark.parametrize("amount", [1e300, 1e26, 1e13, MAX_AMOUNT + 0.01])
def test_to_cents_rejects_amounts_above_the_maximum_with_a_reason(amount: float) -> None:
    with pytest.raises(InvalidEventValue) as err:
        to_cents(amount)
    assert err.value.error_code == "invalid_value"
    assert err.value.reason.startswith("amount: ") and "maximum" in err.value.reason


def test_to_cents_takes_the_maximum_exactly() -> None:
    assert to_cents(MAX_AMOUNT) == MAX_CENTS
    assert to_cents(float(MAX_AMOUNT)) == MAX_CENTS
    assert to_cents(-MAX_AMOUNT) == -MAX_CENTS


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "12", True, None])
def test_to_cents_rejects_what_is_not_a_finite_number(bad: Any) -> None:
    with pytest.raises(InvalidEventValue) as err:
        to_cents(bad, name="cost")
    assert err.value.reason.startswith("cost: ")


def test_conversion_above_the_maximum_is_invalid_value() -> None:
    message = purchase(amount=MAX_AMOUNT, currency="KWD")
    with pytest.raises(InvalidEventValue) as err:
        from_message("purchase", message, "USD", {"KWD": Decimal("3.25")})
    assert err.value.error_code == "invalid_value" and "amount" in err.value.reason
    ok = from_message("purchase", purchase(amount=1000, currency="KWD"), "USD",
                      {"KWD": Decimal("3.25")})
    assert ok.amount_c == 325_000


@pytest.mark.parametrize("rate", [Decimal("NaN"), Decimal("Infinity"), Decimal(0), Decimal(-1)])
def test_a_bad_fx_rate_is_a_reason_not_an_arithmetic_error(rate: Decimal) -> None:
    with pytest.raises(InvalidEventValue) as err:
        from_message("purchase", purchase(currency="EUR"), "USD", {"EUR": rate})
    assert err.value.error_code == "unsupported_currency"


@pytest.mark.parametrize("margin", [0.0, 0.3, 1.0])
def test_estimated_cost_holds_at_the_maximum_amount(margin: float) -> None:
    assert 0 <= estimated_cost(MAX_CENTS, margin) <= MAX_CENTS


@pytest.mark.parametrize("score", [1.5, -1.0001, float("nan"), 1e308])
def test_sentiment_outside_its_range_is_invalid_value(score: float) -> None:
    with pytest.raises(InvalidEventValue) as err:
        to_milli(score)
    assert err.value.reason.startswith("sentiment: ")


def test_sentiment_in_range_converts() -> None:
    message = {
        "event_id": "s-1", "customer_id": "C1", "occurred_at": "2026-01-01T00:00:00Z",
        "channel": "chat", "reason": "billing", "cost": 2.5, "resolved": True, "sentiment": -1,
    }
    event = from_message("service_contact", message)
    assert isinstance(event, ServiceContact) and event.sentiment_m == -1000


@pytest.mark.parametrize("kind", sorted(MONEY_FIELDS))
def test_every_money_field_of_every_input_schema_has_the_maximum(kind: str) -> None:
    schema = load_schema(kind)
    for path in MONEY_FIELDS[kind]:
        node = schema
        for part in path.split("."):
            node = node["properties"][part]
            if node.get("type") == "array":
                node = node["items"]
        assert node["maximum"] == MAX_AMOUNT, f"{kind}.{path}"
        assert node["minimum"] == 0, f"{kind}.{path}"
    numbers = _number_paths(schema)
    money = set(MONEY_FIELDS[kind])
    # Every other number of an input is bounded too (sentiment, quantity).
    for path, node in numbers.items():
        assert "maximum" in node and "minimum" in node, f"{kind}.{path} is unbounded"
        assert path in money or node["maximum"] <= 10**6, f"{kind}.{path}"


def _number_paths(schema: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, node in schema.get("properties", {}).items():
        if node.get("type") == "array":
            node = node["items"]
        if node.get("type") in ("number", "integer"):
            out[prefix + name] = node
        if node.get("type") == "object":
            out.update(_number_paths(node, f"{prefix}{name}."))
    return out


@pytest.mark.parametrize(("kind", "message"), [
    ("purchase", purchase(amount=1e300)),
    ("purchase", purchase(amount=1e26)),
    ("purchase", purchase(cost=1e13)),
    ("purchase", purchase(items=[{"sku": "a", "quantity": 1, "unit_price": 1e20}])),
    ("service_contact", {
        "event_id": "s-1", "customer_id": "C1", "occurred_at": "2026-01-01T00:00:00Z",
        "channel": "chat", "reason": "billing", "cost": 1e300, "resolved": True,
    }),
    ("campaign_touch", {
        "event_id": "t-1", "customer_id": "C1", "occurred_at": "2026-01-01T00:00:00Z",
        "campaign_id": "k", "channel": "email", "action": "sent", "cost": 1e26,
    }),
])
def test_the_contract_rejects_money_above_the_maximum(kind: str, message: dict[str, Any]) -> None:
    with pytest.raises(InvalidEvent) as err:
        Contract().decode(kind, orjson.dumps(message))
    assert err.value.error_code == "schema_violation"
    assert "maximum of 1000000000000" in err.value.reason


# --- event time --------------------------------------------------------------------------


def test_check_time_bounds_both_ends_and_names_the_basis() -> None:
    earliest = parse_time("1970-01-01T00:00:00Z")
    latest = parse_time("2026-01-02T00:00:00Z")
    check_time(parse_time("2026-01-01T00:00:00Z"), earliest, latest)
    check_time(latest, earliest, latest)
    with pytest.raises(InvalidEventValue) as err:
        check_time(parse_time("2199-06-01T00:00:00Z"), earliest, latest, "the wall clock")
    assert err.value.error_code == "invalid_value"
    assert err.value.reason == (
        "occurred_at: 2199-06-01T00:00:00.000Z is after 2026-01-02T00:00:00.000Z, "
        "the latest time accepted (the wall clock)"
    )
    with pytest.raises(InvalidEventValue) as err:
        check_time(parse_time("1900-01-01T00:00:00Z"), earliest, None)
    assert err.value.reason.startswith("occurred_at: 1900-01-01T00:00:00.000Z is before")


class _Redis:
    """Stands in for the one read `Ingestor.check_event_time` makes: HGETALL watermarks
    (of the one partition's shard of `_Store`), in a pipeline."""

    def __init__(self, marks: dict[bytes, bytes]) -> None:
        self.marks = marks
        self.reads = 0

    async def hgetall(self, key: str) -> dict[bytes, bytes]:
        self.reads += 1
        return dict(self.marks)

    def pipeline(self, transaction: bool = True) -> _Pipe:
        return _Pipe(self)


class _Pipe:
    def __init__(self, redis: _Redis) -> None:
        self.redis = redis
        self.queued = 0

    async def __aenter__(self) -> _Pipe:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def hgetall(self, key: str) -> None:
        self.queued += 1

    async def execute(self) -> list[dict[bytes, bytes]]:
        return [await self.redis.hgetall("") for _ in range(self.queued)]


class _Store:
    def __init__(self, redis: _Redis) -> None:
        from stream_app.store.keys import Keys

        self.redis = redis
        self.keys = Keys(partitions=1)


def _ingestor(settings: Settings, marks: dict[bytes, bytes]) -> tuple[Ingestor, _Redis]:
    redis = _Redis(marks)
    return Ingestor(settings, _Store(redis), None), redis  # type: ignore[arg-type]


def _event(when: str) -> Any:
    return from_message("purchase", purchase(occurred_at=when))


async def test_event_time_mode_bounds_future_events_by_the_highest_watermark() -> None:
    # A simulation dated after the wall clock: the data's own clock bounds it.
    settings = Settings()
    mark = parse_time("2026-03-01T00:00:00Z")
    ingestor, redis = _ingestor(
        settings, {f"{settings.topics.purchases}/0".encode(): str(mark).encode()}
    )
    now = parse_time("2020-06-01T00:00:00Z")
    await ingestor.check_event_time(_event("2026-03-25T00:00:00Z"), now)
    await ingestor.check_event_time(_event("1997-01-01T00:00:00Z"), now)  # a late event is fine
    with pytest.raises(InvalidEventValue) as err:
        await ingestor.check_event_time(_event("2199-01-01T00:00:00Z"), now)
    assert "CVM_MAX_EVENT_LEAD_DAYS=30" in err.value.reason
    assert "CVM_MAX_CLOCK_SKEW_S=86400" in err.value.reason
    assert "watermark 2026-03-25T00:00:00.000Z" in err.value.reason  # accepted: moved it on
    with pytest.raises(InvalidEventValue) as err:
        await ingestor.check_event_time(_event("1969-12-31T23:59:59Z"), now)
    assert "CVM_EARLIEST_EVENT_TIME" in err.value.reason
    with pytest.raises(InvalidEventValue):
        await ingestor.check_event_time(_event("2026-04-25T00:00:01Z"), now)
    # Each step of at most the lead is accepted (the clock moves on with the data).
    await ingestor.check_event_time(_event("2026-04-20T00:00:00Z"), now)
    reads = redis.reads
    await ingestor.check_event_time(_event("2026-05-19T00:00:00Z"), now)
    assert redis.reads == reads  # within the known lead: no Redis read


async def test_event_time_mode_takes_past_events_in_any_order() -> None:
    # A backfill of history up to the wall clock, in no particular order, is all accepted.
    settings = Settings()
    ingestor, redis = _ingestor(settings, {})
    now = parse_time("2026-11-29T00:00:00Z")
    for when in ("2026-01-12T00:00:00Z", "2026-09-20T00:00:00Z", "2025-02-01T00:00:00Z",
                 "2026-11-29T23:00:00Z"):
        await ingestor.check_event_time(_event(when), now)
    assert redis.reads == 0
    with pytest.raises(InvalidEventValue) as err:  # 2199: past the wall clock and the data
        await ingestor.check_event_time(_event("2199-01-01T00:00:00Z"), now)
    assert err.value.reason.startswith("occurred_at: 2199-01-01T00:00:00.000Z is after "
                                       "2026-12-29T23:00:00.000Z")


async def test_event_time_mode_asks_redis_before_rejecting() -> None:
    settings = Settings()
    ingestor, redis = _ingestor(settings, {})
    await ingestor.check_event_time(_event("2025-01-01T00:00:00Z"), 0)  # first event: the start
    # Another worker moved another partition on; this worker learns it from Redis.
    redis.marks[f"{settings.topics.campaign_touches}/3".encode()] = str(
        parse_time("2025-06-01T00:00:00Z")).encode()
    redis.marks[b"other.topic/0"] = str(parse_time("2199-01-01T00:00:00Z")).encode()
    await ingestor.check_event_time(_event("2025-06-20T00:00:00Z"), 0)
    with pytest.raises(InvalidEventValue):  # the non-input topic's mark does not count
        await ingestor.check_event_time(_event("2100-01-01T00:00:00Z"), 0)


async def test_live_mode_bounds_events_by_the_injected_wall_clock() -> None:
    settings = Settings(wall_clock_watermark=True, max_clock_skew_s=3600)
    ingestor, redis = _ingestor(settings, {})
    now = parse_time("2026-11-29T12:00:00Z")
    await ingestor.check_event_time(_event("2026-11-29T12:59:59Z"), now)
    with pytest.raises(InvalidEventValue) as err:
        await ingestor.check_event_time(_event("2026-11-29T13:00:01Z"), now)
    assert "CVM_MAX_CLOCK_SKEW_S=3600" in err.value.reason
    assert redis.reads == 0


# --- dead letters ------------------------------------------------------------------------


def test_a_large_dead_letter_is_truncated_to_the_limit() -> None:
    payload = orjson.dumps(purchase(padding="x" * 3_200_000))
    record = RawRecord("cvm.purchases", 2, 41, b"C1", payload)
    limit = 1_000_000
    message = dead_letter_message(record, "oversize", "payload is too big", "2026-01-01T00:00:00Z",
                                  limit)
    assert len(orjson.dumps(message)) <= limit
    assert message["payload_truncated"] is True and message["payload_text"] is None
    assert message["payload_bytes"] == len(payload)
    assert message["payload_sha256"] == hashlib.sha256(payload).hexdigest()
    prefix = base64.b64decode(message["payload_b64"])
    assert payload.startswith(prefix) and len(prefix) > limit // 2
    assert (message["source_topic"], message["source_partition"], message["source_offset"]) == (
        "cvm.purchases", 2, 41)
    assert message["reason"] == "payload is too big" and message["error_code"] == "oversize"
    Contract().validate_output("dead_letter", message)


def test_a_small_dead_letter_keeps_the_whole_payload_and_its_digest() -> None:
    payload = b'{"amount": 1e300}'
    record = RawRecord("cvm.purchases", 0, 1, b"C1", payload)
    message = dead_letter_message(record, "schema_violation", "why", "2026-01-01T00:00:00Z")
    assert base64.b64decode(message["payload_b64"]) == payload
    assert message["payload_text"] == payload.decode()
    assert message["payload_truncated"] is False and message["payload_bytes"] == len(payload)
    Contract().validate_output("dead_letter", message)


def test_a_huge_key_is_cut_in_the_dead_letter_and_its_kafka_key() -> None:
    record = RawRecord("cvm.purchases", 0, 1, b"k" * 100_000, b"{}")
    message = dead_letter_message(record, "invalid_value", "why", "2026-01-01T00:00:00Z", 4096)
    assert len(orjson.dumps(message)) <= 4096 and message["key_truncated"] is True
    assert dead_letter_key(record) == b"k" * DEAD_LETTER_KEY_LIMIT
    assert dead_letter_key(RawRecord("t", 0, 0, None, None)) is None


# --- settings ----------------------------------------------------------------------------


def test_new_settings_are_read_from_the_environment() -> None:
    s = Settings.from_env({
        "CVM_EARLIEST_EVENT_TIME": "1990-01-01T00:00:00Z", "CVM_MAX_CLOCK_SKEW_S": "60",
        "CVM_MAX_EVENT_LEAD_DAYS": "7", "CVM_DEAD_LETTER_MAX_BYTES": "500000",
        "CVM_PRODUCER_MAX_REQUEST_BYTES": "2000000",
    })
    assert s.earliest_event_ms == parse_time("1990-01-01T00:00:00Z")
    assert (s.max_clock_skew_s, s.max_event_lead_days) == (60, 7)
    assert (s.dead_letter_max_bytes, s.producer_max_request_bytes) == (500_000, 2_000_000)
    d = Settings.from_env({})
    assert (d.earliest_event_ms, d.max_clock_skew_s, d.max_event_lead_days) == (0, 86400, 30)
    assert (d.dead_letter_max_bytes, d.producer_max_request_bytes) == (1_000_000, 4 << 20)


@pytest.mark.parametrize("env", [
    {"CVM_DEAD_LETTER_MAX_BYTES": str(4 << 20)},  # does not fit the producer's request
    {"CVM_DEAD_LETTER_MAX_BYTES": "100"},
    {"CVM_EARLIEST_EVENT_TIME": "1990-01-01"},  # no offset
    {"CVM_EARLIEST_EVENT_TIME": "yesterday"},
    {"CVM_MAX_EVENT_LEAD_DAYS": "-1"},
    {"CVM_MAX_CLOCK_SKEW_S": "nan"},
    {"CVM_FX_RATES": "EUR=NaN"},
    {"CVM_FX_RATES": "EUR=Infinity"},
    {"CVM_FX_RATES": "EUR=1e300"},
    {"CVM_ALERT_WEIGHTS": "p_alive=0.7"},  # no such signal
    {"CVM_ALERT_WEIGHTS": "p_alive_low=2"},  # a win-back reason, not an alert signal
    {"CVM_ALERT_WEIGHTS": "complaints=-1"},
    {"CVM_ALERT_WEIGHTS": "complaints=nan"},
    {"CVM_ALERT_WEIGHTS": "complaints"},
])
def test_unusable_settings_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError):
        Settings.from_env(env)


async def test_an_unexpected_error_names_the_message_that_raised_it() -> None:
    # A record from a topic the worker does not read is a bug, not a bad message: it is
    # raised (fail-stop), with the coordinates an operator needs for `cvm skip`.
    ingestor, _ = _ingestor(Settings(), {})
    with pytest.raises(KeyError) as err:
        await ingestor.process([RawRecord("not.an.input", 3, 77, b"C1", b"{}")])
    assert "while decoding not.an.input/3 offset 77" in err.value.__notes__
