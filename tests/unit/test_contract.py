"""The edge contract: schema files, examples, and every way a message can be rejected."""

from __future__ import annotations

import base64
import doctest
import hashlib
import pickle
import random
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import jsonschema_rs
import orjson
import pytest

from stream_app import contract
from stream_app.contract import (
    ERROR_CODES,
    EVENT_KINDS,
    OUTPUT_KINDS,
    Contract,
    InvalidEvent,
    load_schema,
    schema_dir,
)
from stream_app.settings import Topics

ALL_SCHEMAS = EVENT_KINDS + OUTPUT_KINDS
EXAMPLES = sorted((schema_dir() / "examples").glob("*.json"))


@pytest.fixture(scope="module")
def cvm() -> Contract:
    return Contract()


def example(name: str) -> dict[str, Any]:
    """Load ``schemas/examples/<name>.json`` as a fresh dict."""
    data = orjson.loads((schema_dir() / "examples" / f"{name}.json").read_bytes())
    assert isinstance(data, dict)
    return data


def encode(message: Any) -> bytes:
    return orjson.dumps(message)


def rejected(cvm: Contract, kind: str, raw: Any) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as info:
        cvm.decode(kind, raw)
    return info.value


# --- the schema files ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_SCHEMAS)
def test_schema_file_is_a_valid_2020_12_schema(name: str) -> None:
    schema = load_schema(name)
    jsonschema_rs.meta.validate(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"urn:cvm:schema:{name}:v1"
    assert schema["title"] and schema["description"]
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is True  # tolerant reader, documented
    assert set(schema["required"]) <= set(schema["properties"])


def _subschemas(node: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield path, node
        for key, child in node.items():
            if key in ("properties", "$defs"):
                for name, sub in child.items():
                    yield from _subschemas(sub, f"{path}/{key}/{name}")
            elif key == "items":
                yield from _subschemas(child, f"{path}/items")


@pytest.mark.parametrize("name", ALL_SCHEMAS)
def test_every_property_has_a_description(name: str) -> None:
    schema = load_schema(name)
    for path, sub in _subschemas(schema, name):
        for prop, spec in sub.get("properties", {}).items():
            assert spec.get("description"), f"{path}/properties/{prop} has no description"


@pytest.mark.parametrize("name", ALL_SCHEMAS)
def test_every_listed_property_is_typed(name: str) -> None:
    for path, sub in _subschemas(load_schema(name), name):
        for prop, spec in sub.get("properties", {}).items():
            assert {"type", "const", "$ref"} & spec.keys(), f"{path}/{prop} is untyped"


@pytest.mark.parametrize("name", ALL_SCHEMAS)
def test_every_pattern_has_a_readable_hint(name: str) -> None:
    for path, sub in _subschemas(load_schema(name), name):
        if "pattern" in sub:
            assert sub["pattern"] in contract.PATTERN_HINTS, f"{path}: add a hint"


def test_dead_letter_error_codes_match_the_module() -> None:
    enum = load_schema("dead_letter")["properties"]["error_code"]["enum"]
    assert tuple(enum) == ERROR_CODES


def test_load_schema_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown schema"):
        load_schema("../pyproject")


# --- the examples ----------------------------------------------------------------------------


def test_there_is_an_example_for_every_schema() -> None:
    covered = {path.name.split(".")[0] for path in EXAMPLES}
    assert covered == set(ALL_SCHEMAS)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_validates(cvm: Contract, path: Any) -> None:
    name = path.name.split(".")[0]
    raw = path.read_bytes()
    if name in EVENT_KINDS:
        assert cvm.decode(name, raw) == orjson.loads(raw)
    else:
        cvm.validate_output(name, orjson.loads(raw))


@pytest.mark.parametrize("path", sorted((schema_dir() / "examples").glob("dead_letter.*.json")))
def test_dead_letter_examples_are_consistent(path: Any) -> None:
    letter = orjson.loads(path.read_bytes())
    original = base64.b64decode(letter["payload_b64"], validate=True)
    text = letter["payload_text"]
    if letter.get("payload_truncated"):
        # Only a prefix of the payload: no text copy, and the whole is longer than the prefix.
        assert text is None and letter["payload_bytes"] > len(original)
        return
    if "payload_sha256" in letter:
        assert letter["payload_sha256"] == hashlib.sha256(original).hexdigest()
        assert letter["payload_bytes"] == len(original)
    try:
        assert text == original.decode("utf-8")
    except UnicodeDecodeError:
        assert text is None


# --- decode: the happy path ------------------------------------------------------------------


def test_decode_keeps_unknown_properties(cvm: Contract) -> None:
    event = dict(example("purchase.minimal"), coupon="WELCOME10", extra={"nested": [1, 2]})
    assert cvm.decode("purchase", encode(event)) == event


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
def test_decode_accepts_any_bytes_like(cvm: Contract, wrap: Any) -> None:
    raw = encode(example("campaign_touch.sent"))
    assert cvm.decode("campaign_touch", wrap(raw))["action"] == "sent"


@pytest.mark.parametrize(
    "stamp",
    [
        "2026-01-01T00:00:00.123+02:00",
        "2026-01-01T00:00:00Z",
        "2026-01-01T23:59:59.123456789-05:30",
        "2024-02-29T12:00:00+00:00",
    ],
)
def test_decode_accepts_rfc3339_with_offset(cvm: Contract, stamp: str) -> None:
    event = cvm.decode("purchase", encode(dict(example("purchase.minimal"), occurred_at=stamp)))
    # everything the contract accepts, Python 3.11 can parse into an aware datetime
    assert datetime.fromisoformat(event["occurred_at"]).tzinfo is not None


def test_payload_of_exactly_the_limit_is_accepted() -> None:
    cvm = Contract(max_event_bytes=512)
    event = example("purchase.minimal")
    event["note"] = ""
    event["note"] = "x" * (512 - len(encode(event)))
    assert len(encode(event)) == 512
    assert cvm.decode("purchase", encode(event))["note"]


# --- decode: rejections ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (None, "missing"),
        (b"", "empty"),
        (b'{"event_id": ', "not valid JSON"),
        (b"{'event_id': 'single quotes'}", "not valid JSON"),
        (b"[1, 2, 3]", "JSON array"),
        (b'"a string"', "JSON string"),
        (b"42", "JSON number"),
        (b"null", "JSON null"),
        (b"true", "JSON boolean"),
        (b'{"event_id": "\xff\xfe"}', "not valid UTF-8: byte 0xff at offset 14"),
        (b'{"event_id": "\\ud800"}', "not valid JSON"),
        (b'{"amount": NaN}', "NaN and Infinity"),
        (b'{"amount": -Infinity}', "NaN and Infinity"),
        (b'{"amount": 1e400}', "infinity"),
        (b"[" * 2000 + b"]" * 2000, "not valid JSON"),
        (b'{"items": ' + b"[" * 1100 + b"]" * 1100 + b"}", "not valid JSON"),
        (b'\xef\xbb\xbf{"event_id": "x"}', "byte order mark"),
        ("{}", "expected bytes"),
    ],
)
def test_unparseable_payloads_are_invalid_json(cvm: Contract, raw: Any, fragment: str) -> None:
    error = rejected(cvm, "purchase", raw)
    assert error.error_code == "invalid_json"
    assert fragment in error.reason


def _mutate(name: str, **changes: Any) -> bytes:
    event = example(name)
    for key, value in changes.items():
        if value is ...:
            del event[key]
        else:
            event[key] = value
    return encode(event)


@pytest.mark.parametrize(
    ("kind", "raw", "expected"),
    [
        ("purchase", _mutate("purchase.order", amount=...), "amount: missing (required)"),
        ("purchase", _mutate("purchase.order", amount="12.5"), 'amount: "12.5" is not of type'),
        ("purchase", _mutate("purchase.order", amount=True), "amount: true is not of type"),
        (
            "purchase",
            _mutate("purchase.order", amount=-3),
            "amount: -3 is less than the minimum of 0",
        ),
        ("purchase", _mutate("purchase.order", cost=-0.01), "cost: -0.01 is less than"),
        ("purchase", _mutate("purchase.order", kind="refund"), 'kind: "refund" is not one of'),
        ("purchase", _mutate("purchase.order", currency="usd"), "currency: "),
        ("purchase", _mutate("purchase.order", channel=""), "channel: "),
        ("purchase", _mutate("purchase.order", event_id=17), "event_id: 17 is not of type"),
        ("purchase", _mutate("purchase.order", customer_id="c{1}"), 'customer_id: "c{1}" must'),
        ("purchase", _mutate("purchase.order", customer_id="c 1"), "customer_id: "),
        ("purchase", _mutate("purchase.order", customer_id=""), "customer_id: "),
        ("purchase", _mutate("purchase.order", customer_id="c" * 129), "customer_id: "),
        ("purchase", _mutate("purchase.order", schema_version=2), "schema_version: 2 is not"),
        (
            "purchase",
            _mutate("purchase.order", items=[{"sku": "A", "quantity": 0}]),
            "items[0].quantity: 0 is less than the minimum of 1",
        ),
        (
            "purchase",
            _mutate("purchase.order", items=[{"sku": "A", "quantity": 1.5}]),
            "items[0].quantity: 1.5 is not of type",
        ),
        (
            "purchase",
            b'{"event_id":"e","customer_id":"c","occurred_at":"2026-01-01T00:00:00Z","kind":"order",'
            b'"amount":1,"currency":"USD","channel":"web",'
            b'"items":[{"sku":"A","quantity":100000000000000000000000000000}]}',
            "items[0].quantity: ",
        ),
        ("purchase", _mutate("purchase.order", items=[{"quantity": 1}]), "items[0].sku: missing"),
        ("purchase", _mutate("purchase.order", items={"sku": "A"}), "items: "),
        (
            "service_contact",
            _mutate("service_contact.complaint", channel="fax"),
            'channel: "fax" is not one of',
        ),
        (
            "service_contact",
            _mutate("service_contact.complaint", reason="angry"),
            'reason: "angry" is not one of',
        ),
        (
            "service_contact",
            _mutate("service_contact.complaint", sentiment=1.5),
            "sentiment: 1.5 is greater than the maximum of 1",
        ),
        (
            "service_contact",
            _mutate("service_contact.complaint", resolved="yes"),
            'resolved: "yes" is not of type',
        ),
        (
            "campaign_touch",
            _mutate("campaign_touch.clicked", action="liked"),
            'action: "liked" is not one of',
        ),
        (
            "campaign_touch",
            _mutate("campaign_touch.clicked", campaign_id=...),
            "campaign_id: missing (required)",
        ),
    ],
)
def test_schema_violations_name_the_field(
    cvm: Contract, kind: str, raw: bytes, expected: str
) -> None:
    error = rejected(cvm, kind, raw)
    assert error.error_code == "schema_violation"
    assert expected in error.reason


@pytest.mark.parametrize(
    "stamp",
    [
        "2026-01-01T00:00:00",  # no offset
        "2026-13-01T00:00:00Z",  # month 13
        "2026-02-30T00:00:00Z",  # no such day
        "2026-01-01 00:00:00Z",  # space instead of T
        "2026-01-01T24:00:00Z",
        "2016-12-31T23:59:60Z",  # leap second: valid RFC 3339, but Python cannot parse it
        "0001-01-01T00:00:00Z",  # outside 1900..2199
        "2026-01-01T00:00:00+2:00",
        "2026-01-01",
        "1767225600",
        "",
    ],
)
def test_bad_timestamps_are_rejected(cvm: Contract, stamp: str) -> None:
    error = rejected(cvm, "purchase", _mutate("purchase.minimal", occurred_at=stamp))
    assert error.error_code == "schema_violation"
    assert error.reason.startswith("occurred_at: ")
    assert "RFC 3339" in error.reason
    assert ";" not in error.reason  # one message per field, even when two keywords fail


def test_reason_lists_three_errors_then_counts_the_rest(cvm: Contract) -> None:
    error = rejected(cvm, "purchase", b'{"event_id": "e-1", "amount": -1}')
    parts = error.reason.split("; ")
    assert len(parts) == 3
    assert error.reason.endswith("more)")
    assert all(part.split(": ")[1].startswith("missing") for part in parts[:2])


def test_long_values_are_shortened_in_the_reason(cvm: Contract) -> None:
    error = rejected(cvm, "purchase", _mutate("purchase.minimal", event_id="x" * 5000))
    assert error.reason.startswith("event_id: ")
    assert len(error.reason) < 300


def test_oversize_payload_is_rejected_before_parsing() -> None:
    cvm = Contract(max_event_bytes=256)
    error = rejected(cvm, "purchase", b"[" * 257)  # would be invalid JSON, too
    assert error.error_code == "oversize"
    assert "257 bytes" in error.reason and "256" in error.reason
    assert "CVM_MAX_EVENT_BYTES" in error.reason


def test_oversize_with_the_default_limit(cvm: Contract) -> None:
    event = dict(example("purchase.minimal"), padding="x" * 70_000)
    assert rejected(cvm, "purchase", encode(event)).error_code == "oversize"


def test_unknown_kind_is_a_programming_error(cvm: Contract) -> None:
    with pytest.raises(ValueError, match="unknown event kind") as info:
        cvm.decode("refund", b"{}")
    assert not isinstance(info.value, InvalidEvent)


def test_max_event_bytes_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Contract(max_event_bytes=0)


def test_random_bytes_never_leak_a_raw_exception(cvm: Contract) -> None:
    rng = random.Random(20260101)
    seeds = [path.read_bytes() for path in EXAMPLES if path.name.split(".")[0] in EVENT_KINDS]
    for _ in range(3000):
        raw = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            position = rng.randrange(len(raw))
            raw[position] = rng.randrange(256)
        kind = rng.choice(EVENT_KINDS)
        try:
            assert isinstance(cvm.decode(kind, bytes(raw)), dict)
        except InvalidEvent as error:
            assert error.error_code in ("invalid_json", "schema_violation")
            assert error.reason


# --- outputs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "changes", "expected"),
    [
        ("alert.defection_risk", {"severity": "urgent"}, 'severity: "urgent" is not one of'),
        ("alert.defection_risk", {"churn_probability": 1.2}, "churn_probability: 1.2 is greater"),
        ("alert.defection_risk", {"value_tier": -1}, "value_tier: -1 is less"),
        ("alert.defection_risk", {"raised_at": "2026-01-01T00:00:00"}, "raised_at: "),
        ("alert.defection_risk", {"kind": "Defection Risk"}, "kind: "),
        ("alert.defection_risk", {"reasons": [{"code": "x"}]}, "reasons[0].detail: missing"),
        ("winback.email", {"offer_budget": -5}, "offer_budget: -5 is less"),
        ("winback.email", {"control_group": 0}, "control_group: 0 is not of type"),
        ("winback.email", {"p_alive": None}, "p_alive: null is not of type"),
        ("dead_letter.schema_violation", {"error_code": "boom"}, 'error_code: "boom"'),
        ("dead_letter.schema_violation", {"payload_b64": "not base64!"}, "payload_b64: "),
        ("dead_letter.schema_violation", {"source_offset": -1}, "source_offset: -1 is less"),
        ("dead_letter.invalid_json", {"key": 7}, "key: 7 is not of type"),
    ],
)
def test_bad_outputs_are_rejected(
    cvm: Contract, name: str, changes: dict[str, Any], expected: str
) -> None:
    message = dict(example(name), **changes)
    with pytest.raises(InvalidEvent) as info:
        cvm.validate_output(name.split(".")[0], message)
    assert info.value.error_code == "schema_violation"
    assert expected in info.value.reason


def test_output_with_a_python_only_value_is_rejected_cleanly(cvm: Contract) -> None:
    message = dict(example("winback.email"), raised_at=datetime(2026, 1, 1))
    with pytest.raises(InvalidEvent) as info:
        cvm.validate_output("winback", message)
    assert info.value.error_code == "schema_violation"


def test_output_that_is_not_a_dict_is_rejected(cvm: Contract) -> None:
    with pytest.raises(InvalidEvent, match="expected a dict"):
        cvm.validate_output("alert", [example("alert.defection_risk")])  # type: ignore[arg-type]


def test_unknown_output_is_a_programming_error(cvm: Contract) -> None:
    with pytest.raises(ValueError, match="unknown output"):
        cvm.validate_output("purchase", example("purchase.minimal"))


# --- the exception ---------------------------------------------------------------------------


def test_invalid_event_carries_code_and_reason() -> None:
    error = InvalidEvent("invalid_value", "amount: 3 exceeds the order")
    assert isinstance(error, ValueError)
    assert (error.error_code, error.reason) == ("invalid_value", "amount: 3 exceeds the order")
    assert str(error) == "invalid_value: amount: 3 exceeds the order"
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.error_code, copy.reason) == (error.error_code, error.reason)


def test_invalid_event_rejects_unknown_codes() -> None:
    with pytest.raises(ValueError, match="unknown error_code"):
        InvalidEvent("bad", "whatever")


def test_module_doctests() -> None:
    assert doctest.testmod(contract).failed == 0


# --- the README ------------------------------------------------------------------------------


def test_readme_documents_topics_and_the_redis_layout() -> None:
    readme = (schema_dir() / "README.md").read_text(encoding="utf-8")
    topics = Topics()
    for name in (*topics.inputs, *topics.outputs):
        assert f"`{name}`" in readme
    for variable in (
        "CVM_TOPIC_PURCHASES",
        "CVM_TOPIC_SERVICE_CONTACTS",
        "CVM_TOPIC_CAMPAIGN_TOUCHES",
        "CVM_TOPIC_ALERTS",
        "CVM_TOPIC_WINBACK",
        "CVM_TOPIC_DEAD_LETTER",
    ):
        assert variable in readme
    assert "## Redis key layout\n" in readme
    from stream_app.domain.ledger import CustomerState
    from stream_app.store.keys import customer_key
    from stream_app.store.records import to_fields

    assert "`cvm:<p>:customer:<customer_id>`" in readme
    # The documented examples are the keys the readers' function gives.
    assert f"e.g. `{customer_key('C1', 4)}`" in readme
    assert f"`HGETALL {customer_key('C42', 4)}`" in readme
    for field in to_fields(CustomerState("C1")):
        assert field.startswith("_") or f"`{field}`" in readme, field
    for name in ALL_SCHEMAS:
        assert f"{name}.v1.json" in readme
        for field in load_schema(name)["properties"]:
            assert f"| `{field}` |" in readme or field == "schema_version", f"{name}.{field}"
