"""Product profile, affinity and offers: known answers, computed by hand."""

from __future__ import annotations

from types import MappingProxyType as M

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream_app.domain import affinity, offers, products
from stream_app.domain.events import MS_PER_DAY, Line, Purchase
from stream_app.domain.products import CategoryStats, Profile
from stream_app.messages import offer_message
from stream_app.store import profiles as profile_codec

SEP = affinity.SEP


def order(day: int, *lines: Line, kind: str = "order", amount: int | None = None) -> Purchase:
    total = sum(x.quantity * (x.unit_price_c or 0) for x in lines)
    return Purchase(f"e{day}{kind}", "C1", day * MS_PER_DAY, kind,
                    total if amount is None else amount, None, "web", tuple(lines))


def test_profile_sums_intervals_and_returns() -> None:
    p = Profile()
    for day in (10, 17, 17, 31):  # two orders on day 17: one purchase day
        p = products.apply(p, order(day, Line("A1", "coffee", 2, 500)))
    c = p.categories["coffee"]
    assert (c.revenue_c, c.units, c.orders, c.first_day, c.last_day) == (4000, 8, 4, 10, 31)
    # Gaps 7 and 14 between the distinct purchase days: typical interval 10.5 days.
    assert products.interval(c) == 10.5
    p = products.apply(p, order(35, Line("A1", "coffee", 3, 500), kind="return"))
    c = p.categories["coffee"]
    assert (c.revenue_c, c.units, c.orders, c.last_day) == (2500, 5, 4, 31)
    assert p.skus["A1"].units == 5
    # A return of what was never bought changes nothing.
    assert products.apply(p, order(36, Line("Z", "tea", 1, 100), kind="return")) == p


def test_share_of_wallet_and_unpriced_lines() -> None:
    p = products.apply(Profile(), order(
        1, Line("A", "coffee", 1, 600), Line("B", "mugs", 3, None), amount=1200))
    # The unpriced mugs take what coffee leaves of the amount: 6.00.
    assert p.categories["mugs"].revenue_c == 600
    assert products.share_of_wallet(p) == {"coffee": 0.5, "mugs": 0.5}
    assert products.interval(p.categories["coffee"]) is None


def test_profile_is_bounded_and_round_trips() -> None:
    p = Profile()
    for i in range(40):
        p = products.apply(p, order(i, Line(f"S{i}", f"cat{i:02d}", 1, 100 + i)),
                           max_categories=5, max_skus=3)
    assert sorted(p.categories) == [f"cat{i}" for i in range(35, 40)]
    assert sorted(p.skus) == ["S37", "S38", "S39"]
    raw = profile_codec.encode(p)
    assert profile_codec.decode(raw) == p
    assert len(raw.encode()) < 400  # 5 categories and 3 skus in under 400 bytes
    assert profile_codec.encode(Profile()) == "" and profile_codec.decode("") == Profile()


def test_summary_of_a_profile() -> None:
    p = products.apply(Profile(), order(3, Line("A", "coffee", 1, 250)))
    doc = products.summary(p, day=10)
    assert doc["categories"] == [{
        "category": "coffee", "revenue": 2.5, "units": 1, "orders": 1, "share_of_wallet": 1.0,
        "last_purchase_day": 3, "repurchase_interval_days": None, "days_since_last": 7}]


def test_affinity_increments_count_first_purchases_pairs_and_repeats() -> None:
    a = products.apply(Profile(), order(1, Line("A", "coffee", 1, 100)))
    b = products.apply(a, order(2, Line("A", "coffee", 1, 100), Line("B", "mugs", 1, 200),
                                Line("C", "tea", 1, 300)))
    deltas = dict(affinity.increments(a, b, [("coffee", 100, 30), ("mugs", 200, 60),
                                             ("tea", 300, 90)], True))
    named = {k.replace(SEP, "|"): v for k, v in deltas.items()}
    assert named == {
        "n|mugs": 1, "n|tea": 1, "c|coffee|mugs": 1, "c|coffee|tea": 1, "c|mugs|tea": 1,
        # Coffee came first; mugs and tea came together: no direction between them.
        "a|coffee|mugs": 1, "a|coffee|tea": 1,
        "rep|coffee": 1,
        "r|coffee": 100, "m|coffee": 30, "o|coffee": 1, "r|mugs": 200, "m|mugs": 60,
        "o|mugs": 1, "r|tea": 300, "m|tea": 90, "o|tea": 1,
    }
    first = dict(affinity.increments(Profile(), a, [("coffee", 100, 30)], True))
    assert first["customers"] == 1 and first[f"n{SEP}coffee"] == 1
    back = dict(affinity.increments(b, b, [("tea", 300, 90)], False))
    assert back == {f"r{SEP}tea": -300, f"m{SEP}tea": -90}


def test_merge_decays_older_periods() -> None:
    rows = [(10, {f"n{SEP}X": 8, f"c{SEP}X{SEP}Y": 4, "customers": 8}),
            (8, {f"n{SEP}X": 8, f"c{SEP}X{SEP}Y": 0, "customers": 8})]
    # Period 8 is 60 days older: half weight with a 60-day half-life.
    t = affinity.merge(rows, 10, half_life_days=60, period_days=30)
    assert t.buyers["X"] == 12 and t.customers == 12
    assert t.confidence("X", "Y") == pytest.approx(4 / 12)
    assert t.confidence("Y", "X") == 0.0  # Y has no buyer count
    t2 = affinity.merge([(0, {f"n{SEP}X": 4, f"n{SEP}Y": 9, f"c{SEP}X{SEP}Y": 3})], 0, 90)
    assert t2.similarity("X", "Y") == pytest.approx(3 / 6)
    assert t2.similar("X") == [("Y", pytest.approx(0.5))]


def _table() -> affinity.Table:
    return affinity.merge([(0, {
        "customers": 100, f"n{SEP}coffee": 50, f"n{SEP}mugs": 40, f"n{SEP}tea": 30,
        f"n{SEP}cake": 60, f"c{SEP}coffee{SEP}mugs": 19, f"c{SEP}coffee{SEP}tea": 5,
        f"c{SEP}cake{SEP}coffee": 10, f"rep{SEP}coffee": 25,
        f"o{SEP}mugs": 40, f"m{SEP}mugs": 40_000, f"o{SEP}tea": 30, f"m{SEP}tea": 30_000,
        f"o{SEP}coffee": 100, f"m{SEP}coffee": 50_000, f"o{SEP}cake": 10, f"r{SEP}cake": 5_000,
    })], 0, 90)


def test_offers_rank_by_expected_margin_with_reasons() -> None:
    coffee = CategoryStats(revenue_c=900, orders=3, first_day=0, last_day=20, gap_days=20,
                           gaps=2)
    prof = Profile(M({"coffee": coffee}))
    # Coffee every 10 days, last bought 9 days before day 29: due (9 >= 0.8 x 10).
    best = offers.rank(prof, _table(), None, "", p_alive=0.5, day=29, k=4,
                       default_margin_rate=0.3)
    got = [(o.category, o.kind, o.probability, o.margin, o.expected_margin) for o in best]
    assert got == [
        ("mugs", "cross_sell", 0.38, 10.0, 1.9),
        ("coffee", "repurchase", 0.5, 5.0, 1.25),
        ("tea", "cross_sell", 0.1, 10.0, 0.5),
        # cake has no margin figure: 30 % of its revenue per line, 1.5.
        ("cake", "cross_sell", 0.2, 1.5, 0.15),
    ]
    assert best[1].reason == ("due: bought every 10 days, last 9 days ago; "
                              "50 % of its buyers buy it again")
    assert offer_message(best[0])["because_of"] == "coffee"
    # Not yet due on day 27 (7 days < 8): no repurchase offer.
    early = offers.rank(prof, _table(), None, "", 0.5, 27, k=4)
    assert "coffee" not in [o.category for o in early]
    assert offers.rank(prof, _table(), None, "", 0.5, 29, k=0) == []


def test_a_table_remembers_its_answers_by_their_arguments() -> None:
    table, fresh = _table(), _table()
    # cake has no margin figure: its margin per line follows the default rate asked for.
    assert table.margin_per_line("cake", 0.3) == pytest.approx(1.5)
    assert table.margin_per_line("cake", 0.5) == pytest.approx(2.5)
    assert table.margin_per_line("cake", 0.3) == pytest.approx(1.5)
    assert table.margin_per_line("nothing", 0.3) == 0.0
    assert table.conditional("coffee", "mugs") == pytest.approx(0.38)
    assert table.conditional("mugs", "coffee") == pytest.approx(19 / 40)
    assert table.conditional("coffee", "mugs") == pytest.approx(0.38)
    assert table == fresh  # what it remembered is not part of what it is
    prof = Profile(M({"coffee": CategoryStats(revenue_c=100, orders=2, last_day=5)}))
    again = [offers.rank(prof, table, None, "", 0.5, 29, k=4) for _ in range(2)]
    assert again[0] == again[1] == offers.rank(prof, fresh, None, "", 0.5, 29, k=4)


@given(st.lists(st.tuples(st.floats(-50, 50), st.floats(0, 1)), max_size=40),
       st.integers(0, 8))
def test_the_top_k_of_the_contenders_is_the_top_k_of_all(
        scored: list[tuple[float, float]], k: int) -> None:
    # Margins on and near cent boundaries, where rounding decides the order.
    rows = [(round(m, 3), f"c{i:02d}", p, 1.0, ("popular", p))
            for i, (m, p) in enumerate(scored)]

    def key(o: tuple) -> tuple:
        return (-round(o[0], 2), -round(o[2], 4), o[1])

    assert sorted(offers._contenders(rows, k), key=key)[:k] == sorted(rows, key=key)[:k]


def test_offers_use_the_segment_when_it_has_support() -> None:
    prof = Profile(M({"coffee": CategoryStats(revenue_c=100, orders=1, last_day=5)}))
    segment = affinity.merge([(0, {f"n{SEP}coffee": 20, f"c{SEP}coffee{SEP}tea": 15})], 0, 90)
    best = offers.rank(prof, _table(), segment, "champions", 1.0, 6, k=1, min_support=20)
    assert (best[0].category, best[0].probability) == ("tea", 0.75)
    assert best[0].reason == "bought by 75 % of champions customers who buy coffee"
    thin = offers.rank(prof, _table(), segment, "champions", 1.0, 6, k=1, min_support=21)
    assert thin[0].category == "mugs"
    assert thin[0].reason == "bought by 38 % of customers who buy coffee"


def test_a_customer_without_categories_gets_best_sellers() -> None:
    best = offers.rank(Profile(), _table(), None, "", 1.0, 0, k=2)
    assert [(o.category, o.kind, o.reason) for o in best] == [
        ("mugs", "popular", "bought by 40 % of all customers"),
        ("tea", "popular", "bought by 30 % of all customers"),  # 0.3 x 10 > 0.5 x 5
    ]


def test_cross_sell_weighs_confidences_by_orders_and_single_purchases_come_back() -> None:
    prof = Profile(M({
        "coffee": CategoryStats(revenue_c=100, orders=3, last_day=5),
        "cake": CategoryStats(revenue_c=100, orders=1, last_day=5),
    }))
    best = {o.category: o for o in offers.rank(prof, _table(), None, "", 1.0, 6, k=10)}
    # tea: (3 x 5/50 + 1 x 0/60) / 4; the reason names coffee, the best single confidence.
    assert best["tea"].probability == 0.075
    assert best["tea"].reason == "bought by 10 % of customers who buy coffee"
    # Coffee and cake bought on one day only: offered again at their repeat rates.
    assert (best["coffee"].kind, best["coffee"].probability) == ("repurchase", 0.5)
    assert best["coffee"].reason == "50 % of its buyers buy it again; last bought 1 days ago"
    assert (best["cake"].kind, best["cake"].probability) == ("repurchase", 0.0)


def test_cross_sell_leaves_out_the_buyers_who_had_it_before() -> None:
    # 100 coffee buyers: 60 bought mugs too, but 50 of them had mugs before their first coffee;
    # 30 bought tea, none before coffee. Confidence says mugs (0.6 > 0.3); of the 50 who came
    # to coffee without mugs, 10 bought mugs: 0.2 < 30 / 100 for tea.
    table = affinity.merge([(0, {
        "customers": 200, f"n{SEP}coffee": 100, f"n{SEP}mugs": 120, f"n{SEP}tea": 30,
        f"c{SEP}coffee{SEP}mugs": 60, f"a{SEP}mugs{SEP}coffee": 50, f"a{SEP}coffee{SEP}mugs": 4,
        f"c{SEP}coffee{SEP}tea": 30, f"a{SEP}coffee{SEP}tea": 30,
        f"o{SEP}mugs": 10, f"m{SEP}mugs": 10_000, f"o{SEP}tea": 10, f"m{SEP}tea": 10_000,
    })], 0, 90)
    assert table.confidence("coffee", "mugs") == 0.6
    assert table.conditional("coffee", "mugs") == pytest.approx(0.2)
    assert table.conditional("coffee", "tea") == pytest.approx(0.3)
    # The other way round: 120 mug buyers, 4 had coffee before their first mugs.
    assert table.conditional("mugs", "coffee") == pytest.approx(56 / 116)
    prof = Profile(M({"coffee": CategoryStats(revenue_c=100, orders=2, last_day=5)}))
    best = offers.rank(prof, table, None, "", 1.0, 6, k=2)
    assert [(o.category, o.probability) for o in best] == [("tea", 0.3), ("mugs", 0.2)]
    assert best[1].reason == "bought by 20 % of customers who buy coffee"
    # Without directed counts (an older store) it is the confidence.
    plain = affinity.merge([(0, {f"n{SEP}coffee": 100, f"c{SEP}coffee{SEP}mugs": 60})], 0, 90)
    assert plain.conditional("coffee", "mugs") == plain.confidence("coffee", "mugs") == 0.6


def test_huge_lines_are_bounded() -> None:
    # The schema allows 10^6 units at 10^12 each: a line is never worth more than its order.
    huge = Purchase("e", "C1", 0, "order", 10**14, None, "web",
                    (Line("A", "gold", 10**6, 10**14), Line("B", "gold", 1, None)))
    assert products.line_revenues(huge) == [10**14, 0]
    p = Profile()
    for _ in range(100):
        p = products.apply(p, huge)
    assert p.categories["gold"].revenue_c == products.LIMIT
    assert profile_codec.decode(profile_codec.encode(p)) == p
    deltas = dict(affinity.increments(Profile(), p, [("gold", 10**14, -(10**14))], True))
    assert deltas[f"r{SEP}gold"] == affinity.LINE_CAP_C
    assert deltas[f"m{SEP}gold"] == -affinity.LINE_CAP_C


def test_an_unknown_p_alive_expects_nothing() -> None:
    prof = Profile(M({"coffee": CategoryStats(revenue_c=100, orders=1, last_day=5)}))
    best = offers.rank(prof, _table(), None, "", float("nan"), 6, k=1)
    # All at 0: the most probable first (coffee again, 0.5 > mugs 0.38).
    assert best[0].expected_margin == 0.0 and best[0].category == "coffee"
