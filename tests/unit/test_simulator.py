"""The simulator's stream, its ground truth and the load generator, without Kafka."""

from __future__ import annotations

import bisect
import collections
import random
import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson
import pytest
from scipy.special import hyp2f1

from load.generator import (
    MALFORMED_KINDS,
    PublishReport,
    malformed_message,
    publish,
    publish_again,
)
from load.simulator import (
    CONTACT_CHANNELS,
    CONTACT_REASONS,
    TOUCH_ACTIONS,
    TOUCH_CHANNELS,
    SimConfig,
    SimEvent,
    SimulationError,
    ground_truth,
    simulate,
    write_events,
    write_ground_truth,
)
from stream_app.settings import Settings

CONFIG = SimConfig(n_customers=4000, seed=11)
DAY = timedelta(days=1)

PURCHASE_FIELDS = {"event_id": str, "customer_id": str, "occurred_at": str, "kind": str,
                   "amount": float, "currency": str, "channel": str}
PURCHASE_OPTIONAL = {"cost": float, "items": list}
CONTACT_FIELDS = {"event_id": str, "customer_id": str, "occurred_at": str, "channel": str,
                  "reason": str, "cost": float, "resolved": bool}
CONTACT_OPTIONAL = {"sentiment": float}
TOUCH_FIELDS = {"event_id": str, "customer_id": str, "occurred_at": str, "campaign_id": str,
                "channel": str, "action": str, "cost": float}
SHAPES = {
    "purchase": (PURCHASE_FIELDS, PURCHASE_OPTIONAL),
    "service_contact": (CONTACT_FIELDS, CONTACT_OPTIONAL),
    "campaign_touch": (TOUCH_FIELDS, {}),
}


@pytest.fixture(scope="module")
def events() -> list[SimEvent]:
    return list(simulate(CONFIG))


@pytest.fixture(scope="module")
def truth() -> dict[str, dict[str, Any]]:
    return {row["customer_id"]: row for row in ground_truth(CONFIG)}


@pytest.fixture(scope="module")
def by_customer(events: list[SimEvent]) -> dict[str, list[SimEvent]]:
    grouped: dict[str, list[SimEvent]] = collections.defaultdict(list)
    for event in events:
        grouped[event.customer_id].append(event)
    return grouped


def _when(text: str | None) -> datetime:
    return datetime.max.replace(tzinfo=UTC) if text is None else datetime.fromisoformat(text)


def _orders(stream: list[SimEvent]) -> list[SimEvent]:
    return [e for e in stream if e.topic_kind == "purchase" and e.payload["kind"] == "order"]


def _phase(row: dict[str, Any], at: datetime, days: float = 30) -> str:
    """'leaving' within ``days`` before a true dropout, 'alive' earlier in a period, else 'gone'."""
    for period in row["periods"]:
        if _when(period["start"]) <= at < _when(period["end"]):
            return "leaving" if _when(period["end"]) - at <= days * DAY else "alive"
    return "gone"


# -- determinism and order ---------------------------------------------------------------------


def test_same_seed_same_events_and_other_seed_differs() -> None:
    small = SimConfig(n_customers=150, days=90, seed=5)
    first = list(simulate(small))
    assert first == list(simulate(small))
    assert list(ground_truth(small)) == list(ground_truth(small))
    other = list(simulate(replace(small, seed=6)))
    assert [e.payload for e in other] != [e.payload for e in first]


def test_events_are_in_time_order_within_the_horizon(events: list[SimEvent]) -> None:
    times = [e.occurred_at for e in events]
    assert times == sorted(times)
    assert CONFIG.start <= times[0] and times[-1] < CONFIG.start + CONFIG.days * DAY
    assert {e.topic_kind for e in events} == {"purchase", "service_contact", "campaign_touch"}


def test_event_ids_are_unique_and_carry_the_seed(events: list[SimEvent]) -> None:
    ids = [e.payload["event_id"] for e in events]
    assert len(set(ids)) == len(ids)
    assert all(e.payload["event_id"].startswith(f"{CONFIG.seed}-{e.customer_id}-") for e in events)


def test_empty_population_and_bad_config() -> None:
    assert list(simulate(SimConfig(n_customers=0, days=10))) == []
    assert list(ground_truth(SimConfig(n_customers=0, days=10))) == []
    with pytest.raises(SimulationError):
        SimConfig(start=datetime(2025, 1, 1))
    with pytest.raises(SimulationError):
        SimConfig(alpha=0)


# -- the contract -------------------------------------------------------------------------------


def test_payloads_have_exactly_the_contract_field_types(events: list[SimEvent]) -> None:
    for event in events:
        payload = event.payload
        required, optional = SHAPES[event.topic_kind]
        assert required.keys() <= payload.keys() <= required.keys() | optional.keys()
        for name, value in payload.items():
            expected = required.get(name) or optional[name]
            assert type(value) is expected, (name, value)
        assert payload["customer_id"] == event.customer_id
        assert datetime.fromisoformat(payload["occurred_at"]) == event.occurred_at
        assert payload["occurred_at"].endswith("Z")
        for name in ("amount", "cost"):
            if name in payload:
                assert payload[name] >= 0 and round(payload[name], 2) == payload[name]
        if event.topic_kind == "purchase":
            assert payload["kind"] in ("order", "return") and payload["currency"] == "USD"
            items = payload.get("items", [])
            cents = sum(round(i["unit_price"] * 100) * i["quantity"] for i in items)
            assert not items or cents == round(payload["amount"] * 100)
            for item in items:
                assert {"sku": str, "category": str, "quantity": int, "unit_price": float} == {
                    k: type(v) for k, v in item.items()
                }
        elif event.topic_kind == "service_contact":
            assert payload["channel"] in CONTACT_CHANNELS
            assert payload["reason"] in CONTACT_REASONS
            assert -1 <= payload.get("sentiment", 0.0) <= 1
        else:
            assert payload["channel"] in TOUCH_CHANNELS and payload["action"] in TOUCH_ACTIONS
        orjson.dumps(payload)


def test_payloads_pass_the_contract(events: list[SimEvent]) -> None:
    contract_module = pytest.importorskip("stream_app.contract")
    if not hasattr(contract_module, "Contract"):
        pytest.skip("stream_app.contract has no Contract yet")
    contract = contract_module.Contract()
    for event in events[::7]:
        decoded = contract.decode(event.topic_kind, orjson.dumps(event.payload))
        assert decoded == event.payload


# -- ground truth ---------------------------------------------------------------------------------


def test_ground_truth_agrees_with_the_events(
    truth: dict[str, dict[str, Any]], by_customer: dict[str, list[SimEvent]]
) -> None:
    assert len(truth) == CONFIG.n_customers and by_customer.keys() == truth.keys()
    won_back = 0
    for cid, row in truth.items():
        stream = by_customer[cid]
        orders = _orders(stream)
        assert stream[0].payload["occurred_at"] == row["acquired_at"] == orders[0].payload[
            "occurred_at"]
        starts = [_when(p["start"]) for p in row["periods"]]
        for order in orders:  # every order falls inside an alive period: none after a dropout
            k = bisect.bisect_right(starts, order.occurred_at) - 1
            assert order.occurred_at <= _when(row["periods"][k]["end"]), cid
        order_times = {o.payload["occurred_at"] for o in orders}
        for period in row["periods"]:  # the dropout is the last purchase of its period
            assert period["end"] is None or period["end"] in order_times
        assert row["dropout_at"] == row["periods"][-1]["end"]
        assert row["alive_at_end"] == (row["dropout_at"] is None)
        for back in row["won_back_at"]:  # a win-back is a converted touch and an order together
            converted = [e for e in stream if e.payload["occurred_at"] == back
                         and e.payload.get("action") == "converted"]
            assert converted and converted[0].payload["campaign_id"].startswith("winback-")
            assert back in order_times
        won_back += row["won_back"]
    assert 0 < won_back < 0.3 * len(truth)


def test_without_win_back_nobody_buys_after_the_dropout() -> None:
    config = SimConfig(n_customers=300, days=200, seed=2, winback_rate=0.0)
    truth = {row["customer_id"]: row for row in ground_truth(config)}
    assert not any(row["won_back"] for row in truth.values())
    for event in simulate(config):
        if event.topic_kind == "purchase" and event.payload["kind"] == "order":
            assert event.occurred_at <= _when(truth[event.customer_id]["dropout_at"])
        if event.topic_kind == "campaign_touch":
            assert not event.payload["campaign_id"].startswith("winback-")


# -- the signals before a dropout ----------------------------------------------------------------


def test_complaints_rise_in_the_30_days_before_a_dropout(
    events: list[SimEvent], truth: dict[str, dict[str, Any]]
) -> None:
    counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for event in events:
        if event.topic_kind == "service_contact":
            phase = _phase(truth[event.customer_id], event.occurred_at)
            counts[phase][event.payload["reason"]] += 1
            counts[phase]["unresolved"] += not event.payload["resolved"]

    def share(phase: str, *reasons: str) -> float:
        total = sum(counts[phase][r] for r in CONTACT_REASONS)
        return sum(counts[phase][r] for r in reasons) / total

    assert share("leaving", "complaint") > 2 * share("alive", "complaint")
    assert share("leaving", "cancellation_request") > 3 * share("alive", "cancellation_request")
    assert share("leaving", "unresolved") > share("alive", "unresolved")


def test_contacts_are_more_frequent_before_a_dropout(
    events: list[SimEvent], truth: dict[str, dict[str, Any]]
) -> None:
    exposure = collections.Counter[str]()
    for row in truth.values():
        for period in row["periods"]:
            start, end = _when(period["start"]), _when(period["end"])
            end = min(end, CONFIG.start + CONFIG.days * DAY)
            last = (end - max(start, end - 30 * DAY)) / DAY if period["end"] else 0.0
            exposure["leaving"] += last
            exposure["alive"] += (end - start) / DAY - last
    contacts = collections.Counter(
        _phase(truth[e.customer_id], e.occurred_at)
        for e in events if e.topic_kind == "service_contact"
    )
    assert contacts["leaving"] / exposure["leaving"] > 1.5 * contacts["alive"] / exposure["alive"]


def test_touch_engagement_falls_before_a_dropout(
    events: list[SimEvent], truth: dict[str, dict[str, Any]]
) -> None:
    actions: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for event in events:
        if event.topic_kind == "campaign_touch" and not event.payload["campaign_id"].startswith(
            "winback-"
        ):
            actions[_phase(truth[event.customer_id], event.occurred_at)][
                event.payload["action"]] += 1

    def open_rate(phase: str) -> float:
        return actions[phase]["opened"] / actions[phase]["delivered"]

    assert open_rate("leaving") < 0.75 * open_rate("alive")
    assert open_rate("gone") < open_rate("leaving")
    assert actions["alive"]["converted"] > 0 and actions["alive"]["bounced"] > 0
    assert actions["leaving"]["unsubscribed"] / actions["leaving"]["sent"] > (
        actions["alive"]["unsubscribed"] / actions["alive"]["sent"]
    )


# -- BG/NBD and Gamma-Gamma statistics -------------------------------------------------------------


def _first_period_repeats(
    truth: dict[str, dict[str, Any]], by_customer: dict[str, list[SimEvent]]
) -> dict[str, int]:
    repeats = {}
    for cid, row in truth.items():
        end = _when(row["periods"][0]["end"])
        repeats[cid] = sum(1 for o in _orders(by_customer[cid]) if o.occurred_at <= end) - 1
    return repeats


def test_bgnbd_repeat_purchases_match_the_closed_forms(
    truth: dict[str, dict[str, Any]], by_customer: dict[str, list[SimEvent]]
) -> None:
    horizon = CONFIG.start + CONFIG.days * DAY
    repeats = _first_period_repeats(truth, by_customer)
    zero, mean = [], []
    for row in truth.values():
        r, alpha, a, b = CONFIG.bgnbd_params(row["channel"])
        t = (horizon - _when(row["acquired_at"])) / DAY
        zero.append((alpha / (alpha + t)) ** r)  # P(X(t) = 0)
        mean.append((a + b - 1) / (a - 1) * (  # E[X(t)], Fader, Hardie and Lee (2005), eq. 9
            1 - (alpha / (alpha + t)) ** r * hyp2f1(r, b, a + b - 1, t / (alpha + t))))
    observed = np.array(list(repeats.values()))
    assert abs((observed == 0).mean() - np.mean(zero)) < 0.015
    assert observed.mean() == pytest.approx(np.mean(mean), rel=0.08)


def test_purchase_rate_of_alive_customers_matches_lambda(
    truth: dict[str, dict[str, Any]], by_customer: dict[str, list[SimEvent]]
) -> None:
    horizon = CONFIG.start + CONFIG.days * DAY
    repeats = _first_period_repeats(truth, by_customer)
    expected = 0.0  # Wald: E[repeats] = lambda * E[time alive within the horizon]
    for row in truth.values():
        alive_until = min(_when(row["periods"][0]["end"]), horizon)
        expected += row["lambda"] * (alive_until - _when(row["acquired_at"])) / DAY
    assert sum(repeats.values()) == pytest.approx(expected, rel=0.06)

    shares = {c.name: c.share for c in CONFIG.channels}
    mean_lambda = sum(s * CONFIG.bgnbd_params(c)[0] / CONFIG.bgnbd_params(c)[1]
                      for c, s in shares.items())
    mean_p = sum(s * CONFIG.bgnbd_params(c)[2] / sum(CONFIG.bgnbd_params(c)[2:])
                 for c, s in shares.items())
    lambdas = [row["lambda"] for row in truth.values()]
    assert np.mean(lambdas) == pytest.approx(mean_lambda, rel=0.06)
    assert np.mean([row["p"] for row in truth.values()]) == pytest.approx(mean_p, rel=0.06)
    assert 0.025 < mean_lambda < 0.045  # about one purchase a month


def test_spend_follows_gamma_gamma(
    truth: dict[str, dict[str, Any]], by_customer: dict[str, list[SimEvent]]
) -> None:
    amount = expected = 0.0
    orders = returns = 0
    for cid, row in truth.items():
        for event in by_customer[cid]:
            if event.topic_kind != "purchase":
                continue
            if event.payload["kind"] == "order":
                orders += 1
                amount += event.payload["amount"]
                expected += row["mean_order_value"]
                assert event.payload.get("cost", 0.0) <= 1.1 * event.payload["amount"]
            else:
                returns += 1
    assert amount == pytest.approx(expected, rel=0.05)
    assert 45 < amount / orders < 80
    assert 0.6 * CONFIG.return_share < returns / orders < 1.2 * CONFIG.return_share


# -- files ----------------------------------------------------------------------------------------


def test_written_files_match_the_iterators(tmp_path: Any) -> None:
    small = SimConfig(n_customers=20, days=30, seed=1)
    n = write_events(small, tmp_path / "events.jsonl")
    lines = [orjson.loads(line) for line in (tmp_path / "events.jsonl").read_bytes().splitlines()]
    assert n == len(lines) and lines == [
        {"topic_kind": e.topic_kind, "key": e.customer_id, "value": e.payload}
        for e in simulate(small)
    ]
    assert write_ground_truth(small, tmp_path / "truth.jsonl") == 20
    rows = [orjson.loads(line) for line in (tmp_path / "truth.jsonl").read_bytes().splitlines()]
    assert rows == [orjson.loads(orjson.dumps(row)) for row in ground_truth(small)]


# -- the load generator ---------------------------------------------------------------------------


def _sample_events() -> list[SimEvent]:
    wanted: dict[str, SimEvent] = {}
    for event in simulate(SimConfig(n_customers=30, days=30, seed=4)):
        wanted.setdefault(event.topic_kind, event)
    return list(wanted.values())


@pytest.mark.parametrize("kind", MALFORMED_KINDS)
def test_malformed_builder_makes_each_kind_and_the_contract_rejects_it(kind: str) -> None:
    rng = random.Random(1)
    samples = _sample_events()
    assert len(samples) == 3
    for event in samples:
        topic_kind, key, value = malformed_message(kind, event, 65536, rng)
        assert topic_kind in ("purchase", "service_contact", "campaign_touch")
        assert value != orjson.dumps(event.payload)
        if kind == "invalid_json":
            with pytest.raises(orjson.JSONDecodeError):
                orjson.loads(value)
            continue
        message = orjson.loads(value)
        assert message.get("event_id") != event.payload["event_id"]
        if kind == "oversize":
            assert len(value) > 65536
        if kind == "negative_amount":
            assert message["amount"] < 0
        if kind == "bad_customer_id":
            assert key == message["customer_id"].encode() and b"{" in key
        else:
            assert key == event.customer_id.encode()
        if kind == "missing_field":
            assert len(message) == len(event.payload) - 1
        _assert_rejected(kind, topic_kind, value)


def _assert_rejected(kind: str, topic_kind: str, value: bytes) -> None:
    try:
        from stream_app.contract import Contract, InvalidEvent
    except ImportError:
        return
    contract = Contract(max_event_bytes=65536)
    if kind != "unsupported_currency":
        with pytest.raises(InvalidEvent):
            contract.decode(topic_kind, value)
        return
    message = contract.decode(topic_kind, value)  # schema-valid: the engine rejects the currency
    try:
        from stream_app.domain.events import InvalidEventValue, from_message
    except ImportError:
        return
    with pytest.raises(InvalidEventValue):
        from_message(topic_kind, message, base_currency="USD", fx_rates={})


class FakeProducer:
    """Records what `publish` produces; fails ``fail_topic`` at flush, keeps the last ``stuck``
    others queued until a purge, refuses > ``max_bytes``."""

    def __init__(self, config: dict[str, Any], fail_topic: str | None = None,
                 stuck: int = 0, max_bytes: int | None = None) -> None:
        self.config = config
        self.max_bytes = max_bytes
        self.messages: list[tuple[str, bytes, bytes]] = []
        self.fail_topic = fail_topic
        self.stuck = stuck
        self.flushed = False

    def produce(self, topic: str, value: bytes, key: bytes) -> None:
        if self.max_bytes is not None and len(value) > self.max_bytes:
            raise ValueError("Message size too large")  # as KafkaException(MSG_SIZE_TOO_LARGE)
        self.messages.append((topic, key, value))

    def poll(self, timeout: float) -> int:
        return 0

    def _queued(self) -> list[tuple[str, bytes, bytes]]:
        """The last ``stuck`` messages not of ``fail_topic``: never reported by a flush."""
        others = [m for m in self.messages if m[0] != self.fail_topic]
        return others[len(others) - self.stuck:] if self.stuck else []

    def flush(self, timeout: float) -> int:
        if not self.flushed:  # one delivery report per message
            self.flushed = True
            for topic, key, value in self.messages:
                if topic == self.fail_topic:
                    self.config["on_delivery"]("broker down", _Delivered(topic, key, value))
        return len(self._queued())

    def purge(self) -> None:
        for topic, key, value in self._queued():
            self.config["on_delivery"]("Local: Purged in queue", _Delivered(topic, key, value))
        self.stuck = 0


@dataclass
class _Delivered:
    """The message a delivery report names, as confluent-kafka's `Message` gives it."""

    _topic: str
    _key: bytes
    _value: bytes

    def topic(self) -> str:
        return self._topic

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes:
        return self._value


def test_publish_sends_every_event_in_order_with_extra_malformed_messages() -> None:
    settings = Settings()
    stream = list(simulate(SimConfig(n_customers=40, days=60, seed=8)))
    fakes: list[FakeProducer] = []

    def factory(config: dict[str, Any]) -> FakeProducer:
        fakes.append(FakeProducer(config))
        return fakes[-1]

    report = publish(stream, settings, malformed_share=0.2, seed=3, producer_factory=factory)
    (fake,) = fakes
    assert fake.config["acks"] == "all" and fake.config["enable.idempotence"] is True
    assert fake.config["partitioner"] == "murmur2_random"
    assert report.sent == len(stream) and report.failed == 0
    assert report.malformed == sum(report.malformed_by_kind.values()) > 0.1 * len(stream)
    assert len(fake.messages) == report.sent + report.malformed
    good = [m for m in fake.messages if not orjson.loads(_json_or(m[2])).get(
        "event_id", "-bad").endswith("-bad")]
    topics = {"purchase": settings.topics.purchases,
              "service_contact": settings.topics.service_contacts,
              "campaign_touch": settings.topics.campaign_touches}
    assert good == [(topics[e.topic_kind], e.customer_id.encode(), orjson.dumps(e.payload))
                    for e in stream]
    assert report.rate > 0 and report.mb_per_s > 0
    # librdkafka's own delivery timeout unless one is given
    assert "message.timeout.ms" not in fake.config
    publish(stream[:5], settings, producer_factory=factory, delivery_timeout=60.0)
    assert fakes[-1].config["message.timeout.ms"] == 60_000


def _json_or(value: bytes) -> bytes:
    try:
        orjson.loads(value)
    except orjson.JSONDecodeError:
        return b'{"event_id": "x-bad"}'
    return value


def test_failed_deliveries_are_kept_in_order_and_can_be_sent_again() -> None:
    settings = Settings()
    stream = list(simulate(SimConfig(n_customers=60, days=60, seed=10)))[:200]
    contacts = settings.topics.service_contacts
    first = publish(stream, settings, producer_factory=lambda c: FakeProducer(
        c, fail_topic=contacts))
    failed = [(settings.topics.service_contacts, e.customer_id.encode(), orjson.dumps(e.payload))
              for e in stream if e.topic_kind == "service_contact"]
    assert failed and first.undelivered == failed and first.failed == len(failed)

    fakes: list[FakeProducer] = []

    def factory(config: dict[str, Any]) -> FakeProducer:
        fakes.append(FakeProducer(config))
        return fakes[-1]

    assert publish_again(first.undelivered, settings, producer_factory=factory) == 0
    (fake,) = fakes
    assert fake.messages == failed and fake.config["enable.idempotence"] is True
    # A broker still down: every message fails again.
    assert publish_again(first.undelivered, settings, producer_factory=lambda c: FakeProducer(
        c, fail_topic=contacts)) == len(failed)
    # One left in the queue at the flush's timeout fails too: purged, it is reported.
    assert publish_again(first.undelivered, settings, producer_factory=lambda c: FakeProducer(
        c, stuck=1)) == 1

    # Messages still queued at the timeout are purged: reported failed once, kept in order
    # after those that failed before, so that they can be sent again too.
    stuck = publish(stream, settings, producer_factory=lambda c: FakeProducer(
        c, fail_topic=contacts, stuck=2))
    topics = {"purchase": settings.topics.purchases,
              "campaign_touch": settings.topics.campaign_touches}
    others = [(topics[e.topic_kind], e.customer_id.encode(), orjson.dumps(e.payload))
              for e in stream if e.topic_kind != "service_contact"]
    assert stuck.undelivered == failed + others[-2:]
    assert stuck.failed == len(failed) + 2
    assert "2 messages still undelivered after 60.0 s; 2 purged" in stuck.errors[-1]


def test_publish_counts_failures_paces_and_stops() -> None:
    settings = Settings()
    stream = list(simulate(SimConfig(n_customers=100, days=60, seed=9)))[:300]
    assert len(stream) == 300
    report = publish(stream, settings, producer_factory=lambda c: FakeProducer(
        c, fail_topic=settings.topics.service_contacts, stuck=2))
    contacts = sum(e.topic_kind == "service_contact" for e in stream)
    assert report.failed == contacts + 2 and report.errors

    big = publish(stream, settings, malformed_share=1.0,
                  producer_factory=lambda c: FakeProducer(c, max_bytes=65536))
    assert big.failed == big.malformed_by_kind["oversize"] > 0

    began = time.perf_counter()
    paced = publish(stream[:200], settings, rate=1000.0, producer_factory=FakeProducer)
    # a burst of rate / 20 messages, then 1000/s: 150 messages take 0.15 s
    assert time.perf_counter() - began >= 0.14 and paced.rate < 1500

    stop = threading.Event()
    seen: list[int] = []

    def stopping() -> Any:
        for n, event in enumerate(stream):
            if n == 50:
                stop.set()
            yield event

    stopped = publish(stopping(), settings, stop=stop, progress=seen.append,
                      producer_factory=FakeProducer)
    assert stopped.sent == 50 and seen[-1] == 50
    assert isinstance(stopped, PublishReport)


# -- defection with precursors -------------------------------------------------------------------

PRECURSORS = SimConfig(n_customers=3000, days=365, seed=12, precursors=True)


def _order_pace(config: SimConfig) -> dict[str, tuple[float, float]]:
    """Per phase (30 days before a dropout or earlier): orders per alive day, mean order value."""
    truth = {row["customer_id"]: row for row in ground_truth(config)}
    exposure = collections.Counter[str]()
    for row in truth.values():
        for period in row["periods"]:
            start, end = _when(period["start"]), _when(period["end"])
            end = min(end, config.start + config.days * DAY)
            last = (end - max(start, end - 30 * DAY)) / DAY if period["end"] else 0.0
            exposure["leaving"] += last
            exposure["alive"] += (end - start) / DAY - last
    n = collections.Counter[str]()
    amount = collections.Counter[str]()
    for e in _orders(list(simulate(config))):
        row = truth[e.customer_id]
        if e.occurred_at == _when(row["periods"][0]["start"]):
            continue  # the acquisition order
        phase = _phase(row, e.occurred_at)
        n[phase] += 1
        amount[phase] += e.payload["amount"]
    return {p: (n[p] / exposure[p], amount[p] / n[p]) for p in ("leaving", "alive")}


def test_with_precursors_orders_thin_out_and_shrink_before_a_dropout() -> None:
    classic = _order_pace(replace(PRECURSORS, precursors=False))
    declining = _order_pace(PRECURSORS)
    # classic: purchases keep their pace and size until the dropout (the dropout is an order)
    assert classic["leaving"][0] > classic["alive"][0]
    assert classic["leaving"][1] == pytest.approx(classic["alive"][1], rel=0.1)
    # with precursors: fewer orders and smaller baskets in the last 30 days
    assert declining["leaving"][0] < 0.75 * classic["leaving"][0]
    assert declining["leaving"][1] < 0.85 * declining["alive"][1]


def test_with_precursors_the_classic_population_and_dropouts_are_unchanged() -> None:
    classic = replace(PRECURSORS, precursors=False, n_customers=200)
    rows = list(ground_truth(classic))
    assert rows == list(ground_truth(replace(classic, precursors=True)))
    assert list(simulate(classic)) == list(simulate(replace(classic, precursors=False)))
    with pytest.raises(SimulationError, match="silent_share"):
        SimConfig(precursors=True, silent_share=1.5)
