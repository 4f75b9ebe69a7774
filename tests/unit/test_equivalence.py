"""`load.equivalence.compare`: what counts as the same record across two revisions."""

from __future__ import annotations

from load.equivalence import ORDER_DEPENDENT, compare


def test_numbers_within_the_relative_tolerance_are_equal_and_the_gap_is_reported() -> None:
    r = compare({"C1": {"clv": "1000.0"}}, {"C1": {"clv": "1000.00001"}}, rel=1e-9)
    assert r.equal is False and r.difference_counts["clv"] == 1
    r = compare({"C1": {"clv": "1000.0"}}, {"C1": {"clv": "1000.00001"}}, rel=1e-6)
    assert r.equal and 0.9e-8 < r.max_relative["clv"] < 1.1e-8
    assert compare({"C1": {"clv": "1000.0"}}, {"C1": {"clv": "1000.0000001"}}).equal


def test_text_must_match_exactly_and_numbers_written_differently_are_equal() -> None:
    r = compare({"C1": {"rfm_segment": "champions", "orders": "3", "p": "0.50"}},
                {"C1": {"rfm_segment": "Champions", "orders": "3.0", "p": "0.5"}})
    assert set(r.differences) == {"rfm_segment"}
    assert r.values_compared == 3


def test_non_finite_values_compare_as_text() -> None:
    same = compare({"C1": {"x": "nan", "y": "inf"}}, {"C1": {"x": "nan", "y": "inf"}})
    assert same.equal
    other = compare({"C1": {"x": "nan"}}, {"C1": {"x": "0"}})
    assert set(other.differences) == {"x"}


def test_a_zero_against_a_number_is_a_difference() -> None:
    r = compare({"C1": {"expected_spend": "16.67"}}, {"C1": {"expected_spend": "0.00"}})
    assert r.differences["expected_spend"] == [("C1", "16.67", "0.00")]
    assert r.max_relative["expected_spend"] == 1.0


def test_layout_fields_and_missing_customers_are_listed_apart() -> None:
    r = compare({"C1": {"a": "1", "_h": "x"}, "C2": {"a": "1"}},
                {"C1": {"a": "1", "_b": "y"}, "C3": {"a": "1"}})
    assert r.only_base_customers == ["C2"] and r.only_head_customers == ["C3"]
    assert r.only_base_fields == {"_h": 1} and r.only_head_fields == {"_b": 1}
    assert not r.differences and r.equal is False  # a customer on one side only


def test_fields_the_events_do_not_determine_are_skipped() -> None:
    r = compare({"C1": {"updated_at": "2026-01-01T00:00:00Z", "_v": "3", "a": "1"}},
                {"C1": {"updated_at": "2026-11-30T00:00:00Z", "_v": "9", "a": "1"}})
    assert r.equal and r.values_compared == 1
    assert r.as_dict()["equal"] is True


def test_fields_that_follow_the_reading_order_are_reported_apart() -> None:
    """The bookkeeping differs between two runs of one revision, and so does the value
    history on events of three topics; the public fields must not."""
    base = {"C1": {"_vh": "m|660,1,2,1,3,50", "_b": "x", "clv": "10.0"}}
    head = {"C1": {"_vh": "m|666,1,2,1,3,50", "_b": "y", "clv": "10.0"}}
    r = compare(base, head, apart=ORDER_DEPENDENT["simulator"])
    assert r.equal and r.order_dependent == {"_vh": 1, "_b": 1} and r.values_compared == 3
    assert not compare(base, head).equal
    assert not compare(base, {"C1": {**head["C1"], "clv": "11.0"}},
                       apart=ORDER_DEPENDENT["simulator"]).equal
    assert compare(base, head, apart=ORDER_DEPENDENT["translog"]).differences.keys() == {"_vh"}
