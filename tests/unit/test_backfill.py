"""The backfill's columnar aggregation against the engine's own per-event step.

The reference applies every simulated event with `ledger.ingest` and sums
`rollups.campaign_increments`, in the application order the backfill defines (event
time, then touches, contacts, purchases at the same millisecond); the backfill reads
the same events back from CSV and Parquet files. Floats (the decayed counters) agree
to 1e-9 relative; everything else is equal.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import fields, replace
from pathlib import Path
from types import MappingProxyType

import polars as pl
import pytest

from load.history_files import write_files
from load.simulator import SimConfig, SimEvent, simulate
from stream_app.backfill import (
    KINDS,
    BackfillError,
    Report,
    aggregate,
    campaign_sums,
    read_events,
    states,
)
from stream_app.domain.events import Source, from_message, parse_time
from stream_app.domain.ledger import CustomerState, ingest
from stream_app.domain.rollups import campaign_increments
from stream_app.settings import Settings

SETTINGS = Settings()
MARGIN = SETTINGS.default_margin_rate
WINDOW = SETTINGS.event_id_window


def application_order(events: list[SimEvent]) -> list[SimEvent]:
    """The backfill's order of a customer's events (stable: file order breaks ties)."""
    return sorted(events, key=lambda e: (parse_time(e.payload["occurred_at"]),
                                         KINDS.index(e.topic_kind)))


def reference(events: list[SimEvent]) -> tuple[dict[str, CustomerState], Counter]:
    """Every customer's state and the campaign sums, one `ingest` per event."""
    found: dict[str, CustomerState] = {}
    sums: Counter = Counter()
    for offset, e in enumerate(application_order(events)):
        event = from_message(e.topic_kind, e.payload)
        before = found.get(event.customer_id, CustomerState(event.customer_id))
        after, outcome = ingest(before, event, Source("t", 0, offset), MARGIN, WINDOW)
        assert outcome == "applied"
        for _, name, fld, delta in campaign_increments(before, event, MARGIN):
            sums[(name, fld)] += delta
        found[event.customer_id] = after
    return found, sums


def assert_same_state(got: CustomerState, want: CustomerState) -> None:
    for f in fields(CustomerState):
        a, b = getattr(got, f.name), getattr(want, f.name)
        if f.name == "offsets":
            continue  # files have no Kafka offsets
        if f.name == "recent":
            assert a.keys() == b.keys(), got.customer_id
            for k in a:
                assert math.isclose(a[k], b[k], rel_tol=1e-9, abs_tol=1e-12), (k, a[k], b[k])
            continue
        assert a == b, (got.customer_id, f.name, a, b)


@pytest.fixture(scope="module")
def population() -> list[SimEvent]:
    return list(simulate(SimConfig(n_customers=150, days=240, seed=11)))


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_backfilled_states_equal_the_domain_step(
    population: list[SimEvent], tmp_path: Path, fmt: str
) -> None:
    paths = write_files(population, tmp_path, fmt)
    report = Report()
    events = read_events(paths, SETTINGS, None, report)
    assert report.events == len(population) and not report.rejected
    got = {s.customer_id: s for s in states(aggregate(events, MARGIN, WINDOW))}
    want, want_sums = reference(population)
    assert got.keys() == want.keys()
    for cid, state in want.items():
        assert_same_state(got[cid], state)
    got_sums = Counter({(n, f): d for n, f, d in campaign_sums(events, MARGIN) if d})
    assert got_sums == Counter({k: v for k, v in want_sums.items() if v})
    assert any(f == "attributed_orders" for _, f in got_sums)  # attribution was exercised


def test_the_cut_off_splits_the_files(population: list[SimEvent], tmp_path: Path) -> None:
    paths = write_files(population, tmp_path, "parquet")
    times = sorted(parse_time(e.payload["occurred_at"]) for e in population)
    until = times[len(times) // 2]
    report = Report()
    events = read_events(paths, SETTINGS, until, report)
    assert report.events + report.after_seam == len(population)
    assert int(events["t"].max()) < until  # type: ignore[arg-type]
    before = [e for e in population if parse_time(e.payload["occurred_at"]) < until]
    want, _ = reference(before)
    got = {s.customer_id: s for s in states(aggregate(events, MARGIN, WINDOW))}
    for cid, state in want.items():
        assert_same_state(got[cid], state)


def test_bad_rows_and_duplicates_are_left_out(tmp_path: Path) -> None:
    good = {"event_id": "e1", "customer_id": "C1", "occurred_at": "2025-03-01T10:00:00Z",
            "kind": "order", "amount": 10.005, "currency": "USD", "cost": None,
            "channel": "web"}
    rows = [
        good,
        {**good},  # a producer's retry: same id
        {**good, "event_id": "e2", "amount": -1.0},
        {**good, "event_id": "e3", "kind": "refund"},
        {**good, "event_id": "e4", "customer_id": "{C1}"},
        {**good, "event_id": "e5", "occurred_at": "yesterday"},
        {**good, "event_id": "e6", "currency": "XXX"},
    ]
    path = tmp_path / "p.csv"
    pl.DataFrame(rows).write_csv(path)
    report = Report()
    events = read_events([path], SETTINGS, None, report)
    assert report.events == 1 and report.duplicates == 1
    assert sum(report.rejected.values()) == 5
    (state,) = states(aggregate(events, MARGIN, WINDOW))
    want = from_message("purchase", good)
    assert state.revenue_c == want.amount_c == 1000  # 10.005 -> half to even, as to_cents
    ref, _ = ingest(CustomerState("C1"), want, Source("t", 0, 0), MARGIN, WINDOW)
    assert_same_state(state, replace(ref, offsets=MappingProxyType({})))


def test_a_file_of_no_known_kind_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    pl.DataFrame({"customer_id": ["C1"]}).write_csv(path)
    with pytest.raises(BackfillError):
        read_events([path], SETTINGS, None, Report())
