"""Value history, population trends and loss-making customers, from a real worker.

A simulated stream plus three customers who cost more than they bring go through
Kafka to a real worker; what the worker's HTTP API says is checked against a
ground truth computed from the published messages alone (`tests.e2e.helpers`).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest
import redis

from load.generator import publish as publish_events
from load.simulator import SimConfig, SimEvent, simulate
from stream_app import cli
from stream_app.settings import Settings
from stream_app.store.keys import Keys
from stream_app.worker_process import wait_until
from tests.conftest import WorkerProcess, http_json, settings_env
from tests.e2e.helpers import applied_count, ground_truth, moment, money

pytestmark = pytest.mark.integration

CONFIG = SimConfig(n_customers=120, days=150, acquisition_days=60, seed=11)


def _at(day: str) -> str:
    return f"2025-{day}T10:00:00Z"


def _order(cid: str, n: int, day: str, amount: float, cost: float,
           kind: str = "order") -> SimEvent:
    payload = {"event_id": f"{cid}-p{n}", "customer_id": cid, "occurred_at": _at(day),
               "kind": kind, "amount": amount, "currency": "USD", "cost": cost,
               "channel": "web"}
    return SimEvent("purchase", cid, moment(payload["occurred_at"]), payload)


def _contact(cid: str, n: int, day: str, cost: float) -> SimEvent:
    payload = {"event_id": f"{cid}-s{n}", "customer_id": cid, "occurred_at": _at(day),
               "channel": "phone", "reason": "complaint", "cost": cost, "resolved": False}
    return SimEvent("service_contact", cid, moment(payload["occurred_at"]), payload)


def _touch(cid: str, n: int, day: str, cost: float) -> SimEvent:
    payload = {"event_id": f"{cid}-t{n}", "customer_id": cid, "occurred_at": _at(day),
               "campaign_id": "paid-social", "channel": "ad", "action": "delivered",
               "cost": cost}
    return SimEvent("campaign_touch", cid, moment(payload["occurred_at"]), payload)


def loss_makers() -> dict[str, tuple[str, list[SimEvent]]]:
    """Three customers who cost more than they bring, each for another reason."""
    serve = [_order("L-serve", 0, "02-03", 30.0, 18.0)] + [
        _contact("L-serve", i, f"02-{4 + 3 * i:02d}", 12.0) for i in range(6)]
    returns = [
        _order("L-returns", 0, "02-05", 200.0, 120.0),
        _order("L-returns", 1, "02-12", 200.0, 120.0, kind="return"),
        _order("L-returns", 2, "03-01", 100.0, 60.0),
        _order("L-returns", 3, "03-09", 100.0, 60.0, kind="return"),
        _contact("L-returns", 0, "03-10", 5.0),
    ]
    marketing = [_order("L-mktg", 0, "02-07", 20.0, 12.0)] + [
        _contact("L-mktg", i, f"02-{10 + i:02d}", 8.0) for i in range(3)] + [
        _touch("L-mktg", i, f"{2 + i // 28:02d}-{1 + i % 28:02d}", 0.5) for i in range(80)]
    return {"L-serve": ("cost_to_serve", serve), "L-returns": ("returns", returns),
            "L-mktg": ("marketing_cost", marketing)}


def month_end(label: str) -> datetime:
    year, month = map(int, label.split("-"))
    return datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)


def net_before(events: list[SimEvent], end: datetime | None, margin_rate: float) -> Decimal:
    """Net contribution of the events before `end` (all if None), from the ground truth."""
    kept = [e for e in events if end is None or moment(e.payload["occurred_at"]) < end]
    truth = ground_truth(kept, margin_rate)
    return sum((t.money["net_contribution"] for t in truth.values()), Decimal(0))


def _get(settings: Settings, path: str) -> Any:
    status, doc = http_json(settings, path)
    assert status == 200, (path, status, doc)
    return doc


def test_history_trends_and_loss_makers_of_a_real_stream(
    settings: Settings, worker: WorkerProcess, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    makers = loss_makers()
    events = sorted(
        [*simulate(CONFIG), *(e for _, evs in makers.values() for e in evs)],
        key=lambda e: e.occurred_at,
    )
    report = publish_events(events, settings)
    assert report.failed == 0, report.errors
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    assert wait_until(lambda: applied_count(client) >= len(events), deadline_s=240), (
        worker.log_tail())
    margin = settings.default_margin_rate
    truth = ground_truth(events, margin)
    by_customer: dict[str, list[SimEvent]] = defaultdict(list)
    for e in events:
        by_customer[e.payload["customer_id"]].append(e)
    buyers = {cid for cid, t in truth.items() if t.counts["orders"] > 0}

    # -- value history: every closed period's net contribution is the truth at its end ------
    # L-serve's events all fall in February: its later points come from the rescoring
    # timer's revisits as the watermark moves on, which may trail the last batch.
    assert wait_until(
        lambda: len(_get(settings, "/customers/L-serve/history")["points"]) >= 2,
        deadline_s=120, every=0.5,
    ), worker.log_tail()
    histories = {cid: _get(settings, f"/customers/{cid}/history") for cid in sorted(buyers)}
    for cid, doc in histories.items():
        points = doc["points"]
        assert doc["period_unit"] == "month" and points, (cid, doc)
        labels = [p["period"] for p in points]
        assert labels == sorted(labels) and len(set(labels)) == len(labels)
        months = [int(y) * 12 + int(m) for y, m in (label.split("-") for label in labels)]
        assert months == list(range(months[0], months[0] + len(months))), (cid, labels)
        assert not any(p["open"] for p in points[:-1])
        for p in points[:-1]:
            want = net_before(by_customer[cid], month_end(p["period"]), margin)
            assert money(p["net_contribution"]) == want, (cid, p, want)
        assert money(points[-1]["net_contribution"]) == truth[cid].money["net_contribution"]
    assert len(histories["L-serve"]["points"]) >= 2  # February closed, and a later one
    assert http_json(settings, "/customers/nobody/history")[0] == 404

    # -- trends: stocks agree with the histories, flows with the truth ------------------------
    doc = _get(settings, "/trends")
    rows = {r["period"]: r for r in doc["periods"]}
    assert doc["period_unit"] == "month" and rows
    for label, row in rows.items():
        carried = [next((p for p in reversed(h["points"]) if p["period"] <= label), None)
                   for h in histories.values()]
        known = [p for p in carried if p is not None]
        assert row["customers"] == len(known), label
        assert money(row["net_contribution"]) == sum(
            (money(p["net_contribution"]) for p in known), Decimal(0)), label
        assert sum(row["segments"].values()) == row["customers"]
        assert sum(row["tiers"].values()) == row["customers"]
        # What the period's events brought and cost, whatever the channel.
        in_period = [e for e in events if e.payload["occurred_at"].startswith(label)]
        assert money(row["net_contribution_in_period"]) == sum(
            (t.money["net_contribution"] for t in ground_truth(in_period, margin).values()),
            Decimal(0)), label
        costs: dict[str, Decimal] = defaultdict(Decimal)
        for e in in_period:
            if e.topic_kind == "campaign_touch":
                costs[e.payload["campaign_id"]] += money(e.payload["cost"])
        shown = {c["campaign"]: money(c["cost"]) for c in row["campaigns"]}
        for name in shown.keys() | costs.keys():
            assert shown.get(name, 0) == costs.get(name, 0), (label, name)
    assert sum(r["new"] for r in rows.values()) == len(buyers)
    last = doc["periods"][-1]
    assert last["customers"] == len(buyers)
    assert last["period"] == doc["watermark_period"]
    paid_social = [c for c in rows["2025-02"]["campaigns"] if c["campaign"] == "paid-social"]
    assert paid_social and paid_social[0]["cost"] == 14.0  # L-mktg's 28 touches in February

    # -- loss-making customers: exactly those with negative net and negative CLV -------------
    keys = Keys()

    def oracle() -> set[str]:
        return {
            cid for cid in truth
            if truth[cid].money["net_contribution"] < 0
            and (clv := client.hget(keys.customer(cid), "clv")) is not None and float(clv) < 0
        }

    listed: dict[str, Any] = {}

    def same() -> bool:
        listed.clear()
        listed.update(_get(settings, "/customers/unprofitable?n=10000"))
        return {m["customer_id"] for m in listed["top"]} == oracle()

    assert wait_until(same, deadline_s=30, every=0.5), (listed, oracle())
    top = {m["customer_id"]: m for m in listed["top"]}
    for cid, (cause, _) in makers.items():
        assert cid in top, (cid, sorted(top))
        assert top[cid]["primary_cause"] == cause, top[cid]
        assert money(top[cid]["net_contribution"]) == truth[cid].money["net_contribution"]
    assert top["L-returns"]["causes"]["returns"] == 90.0  # 300 returned at the 30 % reference
    assert top["L-serve"]["causes"]["cost_to_serve"] == 72.0
    assert top["L-mktg"]["causes"]["marketing_cost"] == 40.0
    assert listed["customers"] == len(top)
    assert money(listed["total_loss"]) == -sum(
        (truth[c].money["net_contribution"] for c in top), Decimal(0))
    by_channel: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    for cid in top:
        first = min((e for e in by_customer[cid] if e.topic_kind == "purchase"
                     and e.payload["kind"] == "order"), key=lambda e: e.occurred_at)
        by_channel[first.payload["channel"]][0] += 1
        by_channel[first.payload["channel"]][1] -= truth[cid].money["net_contribution"]
    assert {r["channel"]: [Decimal(r["customers"]), money(r["loss"])]
            for r in listed["by_channel"]} == by_channel
    assert sum(r["customers"] for r in listed["by_segment"]) == len(top)
    client.close()

    # -- the same through the command line ----------------------------------------------------
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    assert cli.main(["history", "L-serve", "--json"]) == 0
    shown = orjson.loads(capsys.readouterr().out)
    # The closed points; a rescore at the watermark may have revalued the open one since.
    closed = histories["L-serve"]["points"][:-1]
    assert shown["points"][:len(closed)] == closed
    assert shown["points"][-1]["net_contribution"] == -60.0
    assert cli.main(["history", "nobody"]) == 1
    assert cli.main(["trends", "--periods", "2", "--json"]) == 0
    shown = orjson.loads(capsys.readouterr().out)
    assert [p["period"] for p in shown["periods"]] == [p["period"] for p in doc["periods"][-2:]]
    assert cli.main(["unprofitable", "-n", "3", "--json"]) == 0
    shown = orjson.loads(capsys.readouterr().out)
    assert len(shown["top"]) == 3 and shown["customers"] >= 3
    assert shown["top"][0]["customer_id"] == listed["top"][0]["customer_id"]  # the worst loss
