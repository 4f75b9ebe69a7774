"""The hostile-message kinds of the end-to-end test reject or apply where they say they do.

Checked without Kafka or Redis: ``contract`` kinds are rejected by `Contract.decode` with
one of their error codes, ``value`` kinds by the contract or by `from_message` (the engine's
bounds on values, wherever they live), and ``apply`` kinds pass both. ``worker`` kinds are
the ones only a running worker can reject (clock, key, history, dead-letter size).
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import cast

import pytest

from load.simulator import SimConfig, SimEvent, simulate
from stream_app.contract import Contract, InvalidEvent
from stream_app.domain.events import InvalidEventValue, from_message
from stream_app.settings import Settings
from tests.e2e.hostile import (
    APPLY,
    CONTRACT,
    DEAD,
    KINDS,
    VALUE,
    WORKER,
    Context,
    Hostile,
    generate,
    settings_earliest,
    settings_future_tolerance,
)

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
SETTINGS = Settings()
CONTRACT_ = Contract(SETTINGS.max_event_bytes)


@functools.cache
def valid() -> tuple[SimEvent, ...]:
    return tuple(simulate(SimConfig(n_customers=300, days=180, acquisition_days=90, seed=3)))


@functools.cache
def messages() -> dict[str, list[Hostile]]:
    ctx = Context.from_settings(SETTINGS, NOW)
    by_kind: dict[str, list[Hostile]] = {}
    for h in generate(valid(), ctx, seed=5, scale=0.2):
        by_kind.setdefault(h.kind, []).append(h)
    return by_kind


def names(expect: str, stage: str) -> list[str]:
    return sorted(n for n, k in KINDS.items() if k.expect == expect and k.stage == stage)


def test_at_least_fifty_kinds_and_five_thousand_messages() -> None:
    ctx = Context.from_settings(SETTINGS, NOW)
    out = generate(valid(), ctx, seed=1)
    per_kind = Counter(h.kind for h in out)
    assert len(KINDS) >= 50
    assert set(per_kind) == set(KINDS)
    assert len(out) >= 5000, per_kind
    assert {h.topic_kind for h in out} == {"purchase", "service_contact", "campaign_touch"}
    assert {h.expect for h in out} == {DEAD, APPLY}
    for name, k in KINDS.items():
        assert k.why, f"{name} says nothing about why it is hostile"


def test_generation_is_deterministic() -> None:
    ctx = Context.from_settings(SETTINGS, NOW)
    a = generate(valid(), ctx, seed=9, scale=0.1)
    b = generate(valid(), ctx, seed=9, scale=0.1)
    assert [(h.kind, h.key, h.value) for h in a] == [(h.kind, h.key, h.value) for h in b]


@pytest.mark.parametrize("name", names(DEAD, CONTRACT))
def test_contract_kinds_are_rejected_by_the_contract(name: str) -> None:
    codes = KINDS[name].codes
    for h in messages()[name]:
        with pytest.raises(InvalidEvent) as err:
            CONTRACT_.decode(h.topic_kind, h.value)
        assert codes is None or err.value.error_code in codes, (h.value or b"")[:200]
        assert err.value.reason


@pytest.mark.parametrize("name", names(DEAD, VALUE))
def test_value_kinds_are_rejected_by_the_contract_or_the_conversion(name: str) -> None:
    codes = KINDS[name].codes
    for h in messages()[name]:
        try:
            message = CONTRACT_.decode(h.topic_kind, h.value)
        except InvalidEvent as exc:
            assert codes is None or exc.error_code in codes, exc
            continue
        with pytest.raises(InvalidEventValue) as err:
            from_message(h.topic_kind, message, SETTINGS.base_currency, SETTINGS.fx_rates)
        assert codes is None or err.value.error_code in codes, err.value
        assert err.value.reason


@pytest.mark.parametrize("name", names(DEAD, WORKER))
def test_worker_kinds_need_the_worker(name: str) -> None:
    """They are valid for the contract (unless a schema bound could catch them too)."""
    k = KINDS[name]
    for h in messages()[name]:
        if k.codes is not None and "schema_violation" in k.codes:
            continue
        message = CONTRACT_.decode(h.topic_kind, h.value)
        from_message(h.topic_kind, message, SETTINGS.base_currency, SETTINGS.fx_rates)
        if h.after is not None:
            original = valid()[h.after]
            assert original.topic_kind == h.topic_kind
            assert original.payload["event_id"] == message["event_id"] == h.event_id
            assert h.key == original.customer_id.encode()


def test_worker_kinds_are_the_clock_key_history_and_size_ones() -> None:
    worker = set(names(DEAD, WORKER))
    families = ("future_", "far_future_", "far_past_", "before_earliest", "key_", "duplicate_")
    assert worker and all(n.startswith(families) for n in worker), worker
    assert {"duplicate_resend", "duplicate_changed", "far_future_2199", "key_other_customer"} <= (
        worker
    )


@pytest.mark.parametrize("name", names(APPLY, CONTRACT))
def test_apply_kinds_are_valid_events(name: str) -> None:
    ctx = Context.from_settings(SETTINGS, NOW)
    for h in messages()[name]:
        assert h.event is not None
        message = CONTRACT_.decode(h.topic_kind, h.value)
        event = from_message(h.topic_kind, message, SETTINGS.base_currency, SETTINGS.fx_rates)
        assert h.key is None or h.key == message["customer_id"].encode()
        assert {k: message[k] for k in h.event.payload} == h.event.payload
        assert event.customer_id == h.event.customer_id
        assert ctx.earliest_or_default <= h.event.occurred_at <= ctx.latest_accepted


def test_the_earliest_date_and_future_tolerance_follow_settings_fields() -> None:
    @dataclass(frozen=True)
    class Named:
        earliest_event_date: str = "2001-02-03"
        max_future_hours: float = 36.0

    @dataclass(frozen=True)
    class Epoch:
        earliest_event_ms: int = 0
        max_clock_skew_s: float = 7200.0

    @dataclass(frozen=True)
    class Plain:
        earliest_something_else: float = 2.5  # not a date: ignored
        future_ratio: float = 3.0  # no unit: ignored

    def read(settings: object) -> tuple[datetime | None, timedelta]:
        s = cast(Settings, settings)
        return settings_earliest(s), settings_future_tolerance(s)

    assert read(Named()) == (datetime(2001, 2, 3, tzinfo=UTC), timedelta(hours=36))
    assert read(Epoch()) == (datetime(1970, 1, 1, tzinfo=UTC), timedelta(hours=2))
    assert read(Plain()) == (None, timedelta(days=1))
    ctx = Context(now=NOW)
    assert ctx.earliest_or_default.year == 2000 and ctx.latest_accepted == NOW + timedelta(days=1)


def test_repeated_events_belong_to_customers_with_no_other_extra_event() -> None:
    out = generate(valid(), Context.from_settings(SETTINGS, NOW), seed=2)
    repeated = {valid()[h.after].customer_id for h in out if h.after is not None}
    applied = {h.event.customer_id for h in out if h.event is not None}
    assert repeated and applied
    assert not repeated & applied
