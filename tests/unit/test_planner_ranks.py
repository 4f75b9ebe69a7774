"""The sorted-set writes a change asks for: each set only when its own score moved."""

from __future__ import annotations

import random
from collections import defaultdict

from stream_app.domain.events import MS_PER_DAY, Purchase, Source
from stream_app.domain.ledger import apply_event
from stream_app.domain.valuation import ValueModel, value_one
from stream_app.planner import Cuts, plan
from stream_app.store.customers import Change, Loaded
from stream_app.store.keys import Keys
from stream_app.store.records import VERSION, book_of, from_fields

KEYS = Keys()
CID = "C1"
SHARD = KEYS.shard_of(CID)


class Store:
    """Applies a change's fields and sorted-set writes the way commit.lua does."""

    def __init__(self) -> None:
        self.fields: dict[str, str] = {}
        self.sets: dict[str, dict[str, float]] = defaultdict(dict)

    def load(self) -> Loaded:
        return Loaded(from_fields(CID, self.fields), self.fields.get(VERSION, ""),
                      dict(self.fields))

    def write(self, change: Change) -> None:
        self.fields.update(change.fields)
        self.fields[VERSION] = str(int(change.version or "0") + 1)
        for key, score in change.ranks.items():
            if score is None:
                self.sets[key].pop(change.customer_id, None)
            else:
                self.sets[key][change.customer_id] = score


def _step(store: Store, day: int, label_due_at: int | None,
          rescore_at: int | None) -> Change:
    loaded = store.load()
    event = Purchase(f"e{day}", CID, day * MS_PER_DAY, "order", 1_000 + day, None, "web")
    after = apply_event(loaded.state, event, Source("p", 0, day), 0.3)
    valuation = value_one(ValueModel(), after, day * MS_PER_DAY, 365)
    change = plan(KEYS, loaded, after, valuation, Cuts(), (), {},
                  label_due_at=label_due_at, rescore_at=rescore_at)
    store.write(change)
    return change


def test_a_moved_rescore_time_leaves_the_label_deadlines_alone() -> None:
    store = Store()
    first = _step(store, 19_000, 500, 700)
    assert first.ranks[SHARD.churn_deadlines] == 500 and first.ranks[SHARD.rescore_due] == 700
    moved = _step(store, 19_001, 500, 900)
    assert moved.ranks[SHARD.rescore_due] == 900
    assert SHARD.churn_deadlines not in moved.ranks
    labelled = _step(store, 19_002, None, 900)
    assert labelled.ranks[SHARD.churn_deadlines] is None
    assert SHARD.rescore_due not in labelled.ranks


def test_the_timer_sets_hold_what_the_record_says_after_any_sequence() -> None:
    rng = random.Random(5)
    store = Store()
    for day in range(19_000, 19_120):
        label = rng.choice([None, 100, 200])
        rescore = rng.choice([None, 300, 400])
        _step(store, day, label, rescore)
        book = book_of(store.fields)
        for key, due in ((SHARD.churn_deadlines, book.label_due_at),
                         (SHARD.rescore_due, book.rescore_at)):
            assert store.sets[key].get(CID) == due, (day, key)
        assert store.sets[SHARD.rank("clv")][CID] == float(store.fields["clv"])
        assert store.sets[SHARD.rank("net_contribution")][CID] == float(
            store.fields["net_contribution"])


def test_a_new_customer_writes_both_timer_sets() -> None:
    change = _step(Store(), 19_000, None, None)
    assert change.ranks[SHARD.churn_deadlines] is None
    assert change.ranks[SHARD.rescore_due] is None
