"""The bookkeeping field `_b` of a customer record: exact round trips, the older layout read."""

from __future__ import annotations

import dataclasses
import math
import random
from types import MappingProxyType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream_app.domain.alerts import AlertMemory
from stream_app.domain.churn import FEATURE_NAMES, Snapshot
from stream_app.domain.ledger import RECENT_KEYS, CustomerState
from stream_app.domain.retention import Retention
from stream_app.domain.rfm import rfm_values
from stream_app.domain.valuation import history
from stream_app.domain.winback import ChannelCounts, WinbackMemory
from stream_app.store.records import (
    BOOK,
    BOOK_FORMAT,
    LEGACY_FIELDS,
    Book,
    BookError,
    book_days,
    book_of,
    from_ascii,
    from_fields,
    pack_book,
    pack_days,
    pack_event_ids,
    pack_offsets,
    pack_recent,
    pack_retention,
    pack_retention_bytes,
    retention_of,
    to_ascii,
    to_fields,
    unpack_book,
    unpack_retention,
    unpack_retention_bytes,
    valuation_state,
)

ints = st.integers(min_value=-(2**62), max_value=2**62)


def _features(rng: random.Random) -> dict[str, float]:
    """Feature values of every kind a snapshot holds: zeros, counts, rates, tiny and large."""
    out = {}
    for name in FEATURE_NAMES:
        kind = rng.randrange(6)
        if kind == 0:
            out[name] = 0.0
        elif kind == 1:
            out[name] = float(rng.randrange(0, 400))
        elif kind == 2:
            out[name] = rng.uniform(-50, 50)
        elif kind == 3:
            out[name] = rng.uniform(0, 1) * 10 ** rng.randrange(-12, 9)
        elif kind == 4:
            out[name] = -rng.expovariate(1e-3)
        else:
            out[name] = rng.random()
    return out


def _retention(rng: random.Random, n: int) -> Retention:
    times = sorted(rng.sample(range(1_600_000_000_000, 1_800_000_000_000), n + 1))
    snaps = [Snapshot("C1", t, _features(rng)) for t in times[:n]]
    cut = rng.randrange(n + 1)
    return Retention(
        pending=tuple(snaps[:cut]),
        waiting=tuple((s, rng.randrange(2)) for s in snaps[cut:]),
        last_snapshot_at=times[n - 1] if n else None,
        alert=AlertMemory(times[-1], "high", "al-1", ("recency",), rng.random()),
        winback=WinbackMemory(2, "wb-1"),
        channels=MappingProxyType({"email": ChannelCounts(3, 1, 0)}),
        tier_at_purchase=42.0,
        churn_probability=rng.random(),
        scored_at=times[-1],
    )


@pytest.mark.parametrize("seed", range(40))
def test_the_churn_memory_reads_back_as_the_json_layout_gives_it(seed: int) -> None:
    """Features are kept at four significant digits, exactly as the JSON of `_ret` kept them:
    the newest snapshot is rounded when written, the others are written as read."""
    rng = random.Random(seed)
    r = _retention(rng, rng.randrange(0, 15))
    json_read = unpack_retention("C1", pack_retention(r))
    binary_read = unpack_retention_bytes("C1", pack_retention_bytes(r))
    assert binary_read == json_read
    # Read and written again, nothing moves: the older snapshots are not rounded twice.
    assert unpack_retention_bytes("C1", pack_retention_bytes(binary_read)) == binary_read
    assert pack_retention_bytes(binary_read) == pack_retention_bytes(r)


def test_a_value_without_four_digit_form_is_kept_as_a_double() -> None:
    odd = [1 / 3, math.pi * 1e-30, 1.0e300, -2.5e-320, 123456.0, float("inf"), -0.0]
    s = Snapshot("C1", 5, dict(zip(FEATURE_NAMES, odd + [0.0] * len(FEATURE_NAMES),
                                   strict=False)))
    r = Retention(pending=(s,), last_snapshot_at=None)  # not the newest: written as read
    read = unpack_retention_bytes("C1", pack_retention_bytes(r)).pending[0]
    assert read == s
    assert math.copysign(1.0, read.features[FEATURE_NAMES[6]]) == -1.0


def test_a_lead_window_order_time_is_kept() -> None:
    s = Snapshot("C1", 5, {FEATURE_NAMES[0]: 1.0}, last_order_at=99)
    read = unpack_retention_bytes("C1", pack_retention_bytes(Retention(pending=(s,))))
    assert read.pending[0].last_order_at == 99


@given(
    days=st.lists(st.integers(min_value=-1000, max_value=40_000), max_size=30),
    recent=st.dictionaries(st.sampled_from([*RECENT_KEYS, "a_new_counter"]),
                           st.floats(allow_nan=False, allow_infinity=False), max_size=30),
    recent_at=st.none() | ints,
    offsets=st.dictionaries(
        st.tuples(st.sampled_from(["cvm.purchases", "t.x-1"]), st.integers(0, 1000)),
        st.integers(0, 2**62), max_size=6),
    ids=st.lists(st.integers(0, 2**64 - 1), max_size=20),
    sentiment=st.tuples(ints, st.integers(0, 2**40)),
    marker=st.text(max_size=50),
    due=st.tuples(st.none() | ints, st.none() | ints),
    retention=st.binary(max_size=50),
)
def test_the_book_round_trips(days: list[int], recent: dict[str, float], recent_at: int | None,
                              offsets: dict[tuple[str, int], int], ids: list[int],
                              sentiment: tuple[int, int], marker: str,
                              due: tuple[int | None, int | None], retention: bytes) -> None:
    book = Book(tuple(sorted(days)), recent if recent_at is not None else {}, recent_at,
                offsets, tuple(ids), *sentiment, marker, *due, retention)
    text = pack_book(book)
    assert text.isascii()  # readers that decode every field of a hash can read the record
    read = unpack_book(text)
    assert read == book
    # Signed zeros and the exact bits of every counter survive.
    assert {k: math.copysign(1, v) for k, v in read.recent.items()} == {
        k: math.copysign(1, v) for k, v in book.recent.items()}


def _bits_to_ascii(raw: bytes) -> str:
    """The text layout by its definition: the bytes' bits in order, 7 to a character."""
    bits = "".join(f"{b:08b}" for b in raw)
    bits += "0" * (-len(bits) % 7)
    return "".join(chr(int(bits[i:i + 7], 2)) for i in range(0, len(bits), 7))


@given(st.binary(max_size=3000))
def test_the_text_of_bytes_holds_their_bits_seven_to_a_character(raw: bytes) -> None:
    text = to_ascii(raw)
    assert text == _bits_to_ascii(raw)
    assert from_ascii(text) == raw


@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=600))
def test_any_ascii_text_reads_as_its_leading_whole_bytes(text: str) -> None:
    bits = "".join(f"{ord(c):07b}" for c in text)
    whole = len(bits) // 8 * 8
    assert from_ascii(text) == bytes(int(bits[i:i + 8], 2) for i in range(0, whole, 8))


def test_a_text_longer_than_any_record_value_reads_without_keeping_its_masks() -> None:
    # A forged book of megabytes must not leave megabytes of masks behind in the process.
    from stream_app.store import records

    raw = bytes(range(256)) * 4_000
    kept = records._kept_masks.cache_info().currsize
    text = to_ascii(raw)
    assert text.startswith(_bits_to_ascii(raw[:4_900]))  # 4,900 bytes: 5,600 whole characters
    assert from_ascii(text) == raw
    assert records._kept_masks.cache_info().currsize == kept


def test_another_format_version_is_refused() -> None:
    raw = bytearray(from_ascii(pack_book(Book(days=(1, 2)))))
    assert raw[0] == BOOK_FORMAT
    raw[0] = BOOK_FORMAT + 1
    with pytest.raises(BookError, match="format"):
        unpack_book(to_ascii(bytes(raw)))
    with pytest.raises(BookError):
        unpack_book(pack_book(Book(days=(1, 2, 3)))[:4])


def _legacy(state: CustomerState, r: Retention, marker: str, due: str) -> dict[str, str]:
    """A record as the layout before `_b` wrote it (its bookkeeping fields)."""
    fields = {k: v for k, v in to_fields(state).items() if k != BOOK}
    fields.update({"_days": pack_days(state.purchase_days), "_h": marker, "_z": due,
                   "_sentiment_sum_m": str(state.sentiment_sum_m),
                   "_sentiment_n": str(state.sentiment_n), "_ret": pack_retention(r)})
    if state.recent_at is not None:
        fields["_recent"] = pack_recent(state.recent, state.recent_at)
    if state.offsets:
        fields["_a"] = pack_offsets(state.offsets)
    if state.event_ids:
        fields["_e"] = pack_event_ids(state.event_ids)
    return fields


def test_a_record_of_the_older_layout_is_read_as_the_same_state() -> None:
    rng = random.Random(3)
    state = CustomerState(
        "C1", orders=3, revenue_c=12_345, purchase_days=(20_000, 20_031, 20_090),
        recent=MappingProxyType({"orders": 1.25, "spend": 0.1 + 0.2, "f_orders": 0.0}),
        recent_at=1_767_000_000_000,
        offsets=MappingProxyType({("cvm.purchases", 2): 91, ("cvm.service-contacts", 0): 4}),
        event_ids=(1, 2**63, 2**64 - 1), sentiment_sum_m=-1300, sentiment_n=4,
    )
    r = _retention(rng, 5)
    old = _legacy(state, r, "36|437|20447|169|4:225:20222|5:1680", "1756306797497,")
    assert from_fields("C1", old) == state
    assert retention_of("C1", old) == unpack_retention("C1", pack_retention(r))
    book = book_of(old)
    assert (book.marker, book.label_due_at, book.rescore_at) == (
        "36|437|20447|169|4:225:20222|5:1680", 1756306797497, None)
    # Written in the new layout, the same state, churn memory and bookkeeping.
    new = {k: v for k, v in old.items() if k not in LEGACY_FIELDS}
    new[BOOK] = pack_book(book)
    assert from_fields("C1", new) == state
    assert retention_of("C1", new) == retention_of("C1", old)
    assert book_of(new) == book
    assert len(new[BOOK]) < sum(len(old[k]) for k in LEGACY_FIELDS if k in old) * 2 // 3


@given(
    days=st.lists(st.integers(min_value=-(2**40), max_value=2**40), max_size=300),
    ids=st.lists(st.integers(0, 2**64 - 1), max_size=5),
    marker=st.text(max_size=20),
)
def test_the_days_of_a_book_read_alone_are_its_days(days: list[int], ids: list[int],
                                                    marker: str) -> None:
    # Long lists and wide deltas need more than the first prefix the reader decodes.
    text = pack_book(Book(tuple(sorted(days)), event_ids=tuple(ids), marker=marker))
    assert book_days(text) == unpack_book(text).days == tuple(sorted(days))


def test_the_days_of_a_book_cut_short_or_of_another_format_are_refused() -> None:
    text = pack_book(Book(days=tuple(range(0, 40_000, 300))))
    with pytest.raises(BookError, match="cut short"):
        book_days(text[:100])
    raw = bytearray(from_ascii(text))
    raw[0] = BOOK_FORMAT + 1
    with pytest.raises(BookError, match="format"):
        book_days(to_ascii(bytes(raw)))
    assert book_days("") == ()


def test_a_valuation_reads_the_same_history_from_the_part_of_a_record_it_needs() -> None:
    day = 86_400_000
    state = CustomerState(
        "C1", orders=90, returns=1, revenue_c=952_345, returned_c=1_200, cogs_c=600_000,
        cogs_estimated=2, service_cost_c=4_500, marketing_cost_c=800, unresolved=1,
        sentiment_sum_m=-300, sentiment_n=2, contacts=MappingProxyType({"billing": 2}),
        touches=MappingProxyType({"open": 3}), first_purchase=20_000 * day,
        last_purchase=20_445 * day, first_event=20_000 * day - 5, last_event=20_446 * day,
        acquisition_channel="app", last_click_campaign="spring", last_click_at=20_440 * day,
        # 90 days: more than the first prefix `book_days` decodes.
        purchase_days=tuple(range(20_000, 20_450, 5)),
        recent=MappingProxyType({"orders": 1.25}), recent_at=20_446 * day,
        offsets=MappingProxyType({("cvm.purchases", 2): 91}), event_ids=(1, 2**63),
    )
    record = to_fields(state)
    assert from_fields("C1", record) == state
    bookkeeping = {"recent", "recent_at", "offsets", "legacy_offsets", "event_ids",
                   "sentiment_sum_m", "sentiment_n", "contacts", "touches"}
    for fields in (record, _legacy(state, Retention(), "m", ",")):
        part = valuation_state("C1", fields)
        for name in (f.name for f in dataclasses.fields(CustomerState)):
            if name not in bookkeeping:
                assert getattr(part, name) == getattr(state, name), name
        assert (part.event_ids, part.recent_at, dict(part.contacts)) == ((), None, {})
        for as_of in (20_446 * day, 20_500 * day + 1):
            assert history(part, as_of) == history(state, as_of)
        assert rfm_values(part) == rfm_values(state)
    assert valuation_state("C2", {}) == CustomerState("C2")
