"""Histograms, roll-ups and valuations stay exactly consistent with the records."""

from __future__ import annotations

import random
from collections import Counter, defaultdict

import pytest

from stream_app.domain import clv
from stream_app.domain.events import MS_PER_DAY, CampaignTouch, Purchase, ServiceContact, Source
from stream_app.domain.ledger import CustomerState, apply_event
from stream_app.domain.rfm import (
    RfmCuts,
    percentile,
    percentile_cuts,
    quintile_cuts,
    rfm_score,
    rfm_values,
    score,
)
from stream_app.domain.rollups import campaign_increments, channel_totals
from stream_app.domain.tiers import Cuts
from stream_app.domain.valuation import ValueModel, history, value_many, value_one
from stream_app.planner import HISTOGRAMS, plan
from stream_app.store.customers import Loaded
from stream_app.store.keys import Keys
from stream_app.store.records import VERSION, book_of, from_fields

KEYS = Keys()


class FakeHashes:
    """Applies a Change the way commit.lua does, to plain dicts (no Redis here)."""

    def __init__(self) -> None:
        self.hashes: dict[str, dict[str, str]] = defaultdict(dict)
        self.counters: dict[str, Counter[str]] = defaultdict(Counter)

    def load(self, cid: str) -> Loaded:
        fields = dict(self.hashes.get(KEYS.customer(cid), {}))
        return Loaded(from_fields(cid, fields), fields.get(VERSION, ""), fields)

    def write(self, change) -> None:  # type: ignore[no-untyped-def]
        key = KEYS.customer(change.customer_id)
        self.hashes[key].update(change.fields)
        self.hashes[key][VERSION] = str(int(change.version or "0") + 1)
        for hkey, field, delta in change.increments:
            self.counters[hkey][field] += delta

    def merged(self, key) -> Counter[str]:  # type: ignore[no-untyped-def]
        """One hash's shares of every partition added up, as readers do."""
        total: Counter[str] = Counter()
        for shard in KEYS.shards():
            for field, n in self.counters[key(shard)].items():
                total[field] += n
        return total


def _random_events(rng: random.Random, customers: int, n: int):  # type: ignore[no-untyped-def]
    offsets: Counter[str] = Counter()
    for _ in range(n):
        cid = f"C{rng.randrange(customers)}"
        when = rng.randrange(19_000, 19_400) * MS_PER_DAY + rng.randrange(MS_PER_DAY)
        pick = rng.random()
        if pick < 0.6:
            ev = Purchase("e", cid, when, "order" if rng.random() < 0.9 else "return",
                          rng.randrange(100, 20_000), None, rng.choice(["web", "store", "app"]))
            topic = "p"
        elif pick < 0.8:
            ev = ServiceContact("e", cid, when, "phone", "complaint", rng.randrange(0, 900),
                                rng.random() < 0.5, None)
            topic = "c"
        else:
            ev = CampaignTouch("e", cid, when, rng.choice(["K1", "K2"]), "email",
                               rng.choice(["sent", "clicked", "converted"]), rng.randrange(1, 40))
            topic = "t"
        yield ev, Source(topic, 0, offsets[topic])
        offsets[topic] += 1


def test_histograms_and_rollups_equal_a_recount_of_the_final_records() -> None:
    rng = random.Random(3)
    store = FakeHashes()
    model = ValueModel()
    cuts = Cuts()
    for ev, src in _random_events(rng, 60, 800):
        loaded = store.load(ev.customer_id)
        after = apply_event(loaded.state, ev, src, 0.3)
        incs = campaign_increments(loaded.state, ev, 0.3)
        valuation = value_one(model, after, after.last_event or 0, 365)
        store.write(plan(KEYS, loaded, after, valuation, cuts, incs, {}))

    finals = [store.load(f"C{i}") for i in range(60)]
    finals = [f for f in finals if f.version]
    for position, name in enumerate(HISTOGRAMS):
        recount: Counter[str] = Counter()
        for f in finals:
            mark = book_of(f.fields).marker.split("|")[position]
            if mark:
                recount[mark] += 1
        live = Counter({k: v for k, v in store.merged(lambda s, n=name: s.histogram(n)).items()
                        if v})
        assert live == recount, name

    by_channel: dict[str, Counter[str]] = defaultdict(Counter)
    for f in finals:
        by_channel[f.state.acquisition_channel or "unattributed"].update(channel_totals(f.state))
    for channel, totals in by_channel.items():
        merged = store.merged(lambda s, c=channel: s.rollup("channel", c))
        live = Counter({k: v for k, v in merged.items() if v})
        assert live == Counter({k: v for k, v in totals.items() if v}), channel


def test_quintiles_split_a_uniform_population_evenly() -> None:
    hist = {b: 10 for b in range(100)}
    cuts = quintile_cuts(hist)
    scores = Counter(score(b, cuts) for b in range(100))
    assert scores == {1: 20, 2: 20, 3: 20, 4: 20, 5: 20}
    assert [percentile(b, percentile_cuts(hist)) for b in (0, 49, 99)] == [0, 49, 99]


def test_recent_frequent_customers_are_champions_and_silent_ones_lost() -> None:
    days = list(range(0, 100))
    cuts = RfmCuts(
        recency_day=quintile_cuts(Counter(days)),
        frequency=quintile_cuts({14: 50, 22: 20, 30: 10, 40: 10, 60: 10}),
        monetary=(),
    )
    busy = CustomerState("A", orders=30, revenue_c=90_000, purchase_days=tuple(range(70, 100)))
    gone = CustomerState("B", orders=1, revenue_c=1_000, purchase_days=(1,))
    as_of = 100 * MS_PER_DAY
    a, b = rfm_values(busy), rfm_values(gone)
    assert a is not None and b is not None
    assert rfm_score(a, cuts, as_of).segment == "champions"
    assert rfm_score(b, cuts, as_of).segment == "lost"
    assert rfm_score(b, cuts, as_of).recency_days == 99


def test_batch_valuation_equals_the_closed_forms_customer_by_customer() -> None:
    model = ValueModel(bg=clv.BgNbdParams(0.3, 20.0, 0.8, 2.5),
                       gg=clv.GammaGammaParams(6.0, 4.0, 20.0))
    states = [
        CustomerState("A", orders=4, revenue_c=40_000, cogs_c=30_000, service_cost_c=3_000,
                      purchase_days=(100, 110, 140, 200), first_event=100 * MS_PER_DAY),
        CustomerState("B", orders=1, revenue_c=5_000, cogs_c=2_000,
                      purchase_days=(150,), first_event=150 * MS_PER_DAY),
    ]
    as_of = 260 * MS_PER_DAY
    hs = [history(s, as_of) for s in states]
    assert all(h is not None for h in hs)
    got = value_many(model, hs, 365, [as_of, as_of])  # type: ignore[arg-type]
    for h, v in zip(hs, got, strict=True):
        assert h is not None
        want = clv.clv(model.bg, model.gg, h.x, h.t_x, h.T, h.mean_spend, 365, h.margin_rate,
                       model.annual_discount_rate, h.cost_per_day, spend_basis="all")
        assert v.clv == pytest.approx(float(want), rel=1e-9, abs=1e-9)
        assert v.p_alive == pytest.approx(float(clv.p_alive(model.bg, h.x, h.t_x, h.T)))
    assert hs[0] is not None and (hs[0].x, hs[0].t_x, hs[0].T) == (3.0, 100.0, 160.0)
    assert hs[0].margin_rate == pytest.approx(0.25)
    assert got[0].value_at_risk >= 0


def test_a_customer_with_no_order_has_no_valuation() -> None:
    assert value_one(ValueModel(), CustomerState("X", first_event=0), 10, 365) is None
