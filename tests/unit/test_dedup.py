"""What the ledger skips, dead-letters and applies: offsets per partition, event ids in a window."""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

import pytest

from stream_app.domain.events import MS_PER_DAY, Purchase, ServiceContact, Source
from stream_app.domain.ledger import CustomerState, apply_event, event_hash, ingest
from stream_app.store.records import (
    OFFSETS,
    book_of,
    from_fields,
    pack_event_ids,
    to_fields,
)

T = "cvm.purchases"


def order(event_id: str, amount_c: int = 1000, day: int = 1) -> Purchase:
    return Purchase(event_id, "C1", day * MS_PER_DAY, "order", amount_c, None, "web")


def test_events_of_one_customer_on_two_partitions_all_count() -> None:
    # A null-key event lands on a busier partition at a high offset; the customer's
    # correctly keyed events follow on their own partition at lower offsets.
    s = apply_event(CustomerState("C1"), order("a"), Source(T, 3, 500))
    for i, offset in enumerate(range(10, 15)):
        s = apply_event(s, order(f"k{i}"), Source(T, 0, offset))
    assert s.orders == 6
    assert dict(s.offsets) == {(T, 3): 500, (T, 0): 14}


def test_a_replayed_offset_is_skipped_silently_on_its_own_partition_only() -> None:
    s, what = ingest(CustomerState("C1"), order("a"), Source(T, 0, 7), window=16)
    assert what == "applied"
    again, what = ingest(s, order("a"), Source(T, 0, 7), window=16)
    assert (what, again) == ("replayed", s)
    other, what = ingest(s, order("b"), Source(T, 1, 7), window=16)
    assert what == "applied" and other.orders == 2


def test_a_retried_event_id_is_a_duplicate_that_records_its_offset() -> None:
    s, _ = ingest(CustomerState("C1"), order("o-1"), Source(T, 0, 7), window=16)
    dup, what = ingest(s, order("o-1"), Source(T, 2, 3), window=16)
    assert what == "duplicate"
    assert dup.orders == 1 and dup.revenue_c == 1000
    assert dup.offsets[(T, 2)] == 3
    # After a crash the duplicate's own offset is a silent replay, not a second dead letter.
    assert ingest(dup, order("o-1"), Source(T, 2, 3), window=16)[1] == "replayed"


def test_event_ids_of_different_types_do_not_collide() -> None:
    contact = ServiceContact("x-1", "C1", 0, "phone", "billing", 100, True, None)
    s, _ = ingest(CustomerState("C1"), order("x-1"), Source(T, 0, 1), window=16)
    assert ingest(s, contact, Source("cvm.service-contacts", 0, 1), window=16)[1] == "applied"
    assert event_hash(contact) != event_hash(order("x-1"))


def test_the_window_remembers_the_last_n_event_ids() -> None:
    s = CustomerState("C1")
    for i in range(5):
        s, _ = ingest(s, order(f"e{i}"), Source(T, 0, i), window=3)
    assert len(s.event_ids) == 3
    assert ingest(s, order("e4"), Source(T, 0, 10), window=3)[1] == "duplicate"
    assert ingest(s, order("e2"), Source(T, 0, 11), window=3)[1] == "duplicate"
    # e1 fell out of the window: a retry that late counts again (documented limit).
    assert ingest(s, order("e1"), Source(T, 0, 12), window=3)[1] == "applied"


def test_window_zero_dedups_on_offsets_only() -> None:
    s, _ = ingest(CustomerState("C1"), order("a"), Source(T, 0, 1), window=0)
    s, what = ingest(s, order("a"), Source(T, 0, 2), window=0)
    assert what == "applied" and s.orders == 2 and s.event_ids == ()


def test_a_smaller_window_forgets_the_oldest_ids() -> None:
    s = CustomerState("C1", event_ids=tuple(range(10)))
    s, _ = ingest(s, order("a"), Source(T, 0, 1), window=4)
    assert s.event_ids == (7, 8, 9, event_hash(order("a")))


@pytest.mark.parametrize(
    ("processed", "outcome"),
    [
        (None, "applied"),  # nothing known about the partition: never drop
        ({(T, 1): 5}, "applied"),  # the engine never read offset 10 of partition 1
        ({(T, 1): 20}, "replayed"),  # it did: this is a redelivery
        ({(T, 0): 90}, "applied"),  # another partition's progress says nothing
    ],
)
def test_old_per_topic_offsets_skip_only_what_the_engine_processed(
    processed: dict[tuple[str, int], int] | None, outcome: str
) -> None:
    fields = to_fields(CustomerState("C1", orders=1))
    assert OFFSETS not in fields  # no offsets yet: no field
    fields[f"_o:{T}"] = "50"  # written by the layout before per-partition offsets
    state = from_fields("C1", fields)
    assert dict(state.legacy_offsets) == {T: 50} and not state.offsets
    after, what = ingest(state, order("z"), Source(T, 1, 10), window=16, processed=processed)
    assert what == outcome
    # Above the old offset nothing can have been applied from it.
    assert ingest(state, order("z"), Source(T, 1, 51), processed={(T, 1): 99})[1] == "applied"


def test_offsets_and_event_ids_round_trip_through_the_record() -> None:
    s = CustomerState("C1")
    for i, (p, o) in enumerate([(0, 4), (3, 900), (1, 0)]):
        s = apply_event(s, order(f"e{i}"), Source(T, p, o), window=16)
    s = apply_event(s, order("c"), Source("cvm.campaign-touches", 2, 8), window=16)
    s = replace(s, legacy_offsets=MappingProxyType({"cvm.service-contacts": 12}))
    fields = to_fields(s)
    book = book_of(fields)
    assert book.offsets == {("cvm.campaign-touches", 2): 8, (T, 0): 4, (T, 1): 0, (T, 3): 900}
    assert len(book.event_ids) == 4
    assert fields["_o:cvm.service-contacts"] == "12"
    assert from_fields("C1", fields) == s


def test_event_id_state_costs_12_bytes_per_id() -> None:
    # The hash field's value: 8 bytes per id, base64 (4/3), padded to a multiple of 4.
    for n in (1, 16, 64):
        assert len(pack_event_ids(tuple(range(n)))) == 4 * -(-8 * n // 3)
    assert len(pack_event_ids(tuple(range(16)))) == 172


def test_a_customer_whose_orders_are_all_free_is_valued_and_fitted() -> None:
    from stream_app.domain.valuation import ValueModel, value_one
    from stream_app.planner import HISTOGRAMS, markers

    s = CustomerState("C1")
    for i, day in enumerate((10, 12, 20)):
        s = apply_event(s, order(f"f{i}", amount_c=0, day=day), Source(T, 0, i))
    v = value_one(ValueModel(), s, 30 * MS_PER_DAY, 365)
    assert v is not None
    assert 0 < v.p_alive <= 1 and v.expected_purchases > 0
    # Gamma-Gamma has no spend to go on: nothing is predicted that was never paid.
    assert v.expected_spend == 0 and v.clv == 0
    marks = dict(zip(HISTOGRAMS, markers(s, v), strict=True))
    assert marks["bgnbd"] == "2:10:10"  # counted in the BG/NBD fit
    assert marks["spend"] == ""  # not in the Gamma-Gamma fit
