"""`cvm backfill` of the first part of a history, then the real worker on the rest, equals
the real worker on all of it.

One simulated population is published to the input topics with its event times as
message timestamps. Engine A, a real worker, applies all of it. Engine B (its own
consumer group and Redis database, the same topics) is built by ``cvm backfill`` from
CSV and Parquet files of the events before a cut-off time T, and its real worker then
applies what Kafka holds from T on. Events are published in rounds in which a customer
has at most one event, and each round is applied by the running workers before the
next, so every customer's events are applied in event-time order, the order the
backfill defines. One round after T is already in Kafka when the backfill looks up the
seam, so the offsets-for-times lookup finds real positions.

Compared: every ledger field of every record (the decayed counters to 1e-9 relative),
the remembered event ids, the applied offsets B's worker wrote, the channel and
campaign roll-ups, the histograms the value model is fitted on and the cut points come
from, and the net-contribution ranking. Not compared: what depends on the model in use
when a customer was last written (A values with the prior, B with the model fitted by
the backfill) and the churn memory, which a backfill leaves empty (README, "Loading
history").
"""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from load.generator import producer_config
from load.history_files import write_files
from load.simulator import SimConfig, SimEvent, simulate
from stream_app.connections import sync_redis
from stream_app.domain.events import parse_time
from stream_app.settings import Settings
from stream_app.store.customers import text
from stream_app.store.keys import Keys
from stream_app.store.records import book_of, from_fields
from stream_app.worker_process import free_port, wait_until
from tests.conftest import ROOT, WorkerProcess, settings_env
from tests.e2e.helpers import delete_worker_topics, own_redis_db

pytestmark = pytest.mark.integration

KEYS = Keys()
#: Fields that depend on the value model in use or on wall-clock time, and the churn memory.
MODEL_FIELDS = {
    "as_of", "horizon_days", "p_alive", "expected_purchases", "expected_spend", "clv",
    "value_at_risk", "value_tier", "model_version", "churn_probability", "recency_days",
    "rfm", "rfm_segment", "updated_at", "_v", "_ret", "_z", "_h", "_recent", "_a", "_vh",
    "_b",
}
#: What a backfill does not build yet (the README's "Loading history" says so): the product
#: profile, from order lines the history files do not carry.
NOT_BACKFILLED = {"products"}
#: Histograms of purchase history only (not of the CLV, which depends on the model).
HISTORY_HISTOGRAMS = ("frequency", "monetary", "last_purchase_day", "bgnbd", "spend")
QUIET = {"CVM_FIT_INTERVAL_S": "100000", "CVM_MODEL_PUBLISH_INTERVAL_S": "100000"}


def rounds(events: list[SimEvent]) -> list[list[SimEvent]]:
    """Consecutive runs of events (in time order) in which no customer appears twice."""
    out: list[list[SimEvent]] = [[]]
    seen: set[str] = set()
    for e in events:
        if e.customer_id in seen:
            out.append([])
            seen = set()
        out[-1].append(e)
        seen.add(e.customer_id)
    return [r for r in out if r]


class Publisher:
    """Publishes rounds with event times as message timestamps; remembers the last offsets."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = {"purchase": settings.topics.purchases,
                       "service_contact": settings.topics.service_contacts,
                       "campaign_touch": settings.topics.campaign_touches}
        self.producer = Producer(producer_config(
            settings, linger_ms=1, delivery_report_only_error=False))
        self.last: dict[str, int] = {}
        self.errors: list[Any] = []

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.errors.append(err)
            return
        tp = f"{msg.topic()}/{msg.partition()}"
        self.last[tp] = max(self.last.get(tp, -1), msg.offset())

    def send(self, events: list[SimEvent]) -> None:
        for e in events:
            self.producer.produce(
                self.topics[e.topic_kind], key=e.customer_id.encode(),
                value=orjson.dumps(e.payload), timestamp=parse_time(e.payload["occurred_at"]),
                on_delivery=self._delivered,
            )
        self.producer.flush(30)
        assert not self.errors, self.errors
        assert self.last


def applied(client: redis.Redis) -> dict[str, int]:
    return {k: int(v) for shard in KEYS.shards()
            for k, v in text(client.hgetall(shard.applied)).items()}


def caught_up(client: redis.Redis, last: dict[str, int]) -> bool:
    done = applied(client)
    return all(done.get(tp, -1) >= offset for tp, offset in last.items())


def records(client: redis.Redis) -> dict[str, dict[str, str]]:
    return {KEYS.customer_id(key): text(client.hgetall(key))
            for key in client.scan_iter(match=KEYS.customer_pattern, count=1000)}


def merged(client: redis.Redis, keys: list[str]) -> dict[str, int]:
    """The field-wise sum of integer hashes (every partition's share), zeros left out."""
    out: dict[str, int] = {}
    for key in keys:
        for k, v in text(client.hgetall(key)).items():
            out[k] = out.get(k, 0) + int(v)
    return {k: v for k, v in out.items() if v}


def rollups(client: redis.Redis) -> dict[str, dict[str, int]]:
    """Every roll-up, the partitions' shares added up: ``scope:name`` -> fields."""
    names: dict[str, list[str]] = {}
    for key in client.scan_iter(match=f"{KEYS.prefix}:{{p*}}:rollup:*", count=1000):
        name = key.decode().split(":rollup:", 1)[1]
        names.setdefault(name, []).append(key.decode())
    return {name: merged(client, keys) for name, keys in sorted(names.items())}


def ranking(client: redis.Redis, name: str) -> list[tuple[bytes, float]]:
    return sorted(row for shard in KEYS.shards()
                  for row in client.zrange(shard.rank(name), 0, -1, withscores=True))


def close_recent(a: dict[str, str], b: dict[str, str], cid: str, at: int) -> None:
    """Decayed counters seen from the same time agree to 1e-9 relative."""
    sa = from_fields(cid, a).recent_at_time(at)
    sb = from_fields(cid, b).recent_at_time(at)
    for k in sa:
        assert math.isclose(sa[k], sb[k], rel_tol=1e-9, abs_tol=1e-12), (cid, k, sa[k], sb[k])


@pytest.fixture
def engine_b(settings: Settings) -> Iterator[Settings]:
    """Engine B: the same topics, its own consumer group, Redis database and web port."""
    with own_redis_db(settings) as own:
        s = dataclasses.replace(
            own, app_id=f"{settings.app_id}-b", web_port=free_port(),
            data_dir=settings.data_dir + "-b",
        )
        yield s
        delete_worker_topics(s)


def keep_forever(settings: Settings) -> None:
    """Message timestamps are event times long past: switch off time retention."""
    admin = AdminClient(settings.kafka_config())
    resources = [
        ConfigResource("topic", t, incremental_configs=[
            ConfigEntry("retention.ms", "-1",
                        incremental_operation=AlterConfigOpType.SET)])
        for t in settings.topics.inputs
    ]
    for future in admin.incremental_alter_configs(resources).values():
        future.result(timeout=30)


def test_backfill_then_stream_equals_streaming_everything(
    settings: Settings, engine_b: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in QUIET.items():
        monkeypatch.setenv(name, value)
    keep_forever(settings)
    events = list(simulate(SimConfig(n_customers=30, days=120, acquisition_days=30, seed=5)))
    times = [parse_time(e.payload["occurred_at"]) for e in events]
    cut = len(events) * 3 // 5
    until = times[cut]
    before = [e for e, t in zip(events, times, strict=True) if t < until]
    after = [e for e, t in zip(events, times, strict=True) if t >= until]
    assert before and after
    # CSV for purchases, Parquet for the rest: both readers are used.
    csv = write_files(before, tmp_path / "csv", "csv")
    parquet = write_files(before, tmp_path / "parquet", "parquet")
    files = [p for p in csv if p.stem == "purchases"] + [
        p for p in parquet if p.stem != "purchases"]

    a_client, b_client = sync_redis(settings), sync_redis(engine_b)
    publisher = Publisher(settings)
    worker_a = WorkerProcess(settings, tmp_path / "worker-a.log")
    worker_b = WorkerProcess(engine_b, tmp_path / "worker-b.log")
    worker_a.start()
    try:
        for batch in rounds(before):
            publisher.send(batch)
            assert wait_until(lambda: caught_up(a_client, publisher.last), 60, 0.01), batch
        later = rounds(after)
        ends_before = dict(publisher.last)
        publisher.send(later[0])  # already in Kafka when the seam is looked up
        assert wait_until(lambda: caught_up(a_client, publisher.last), 60, 0.01)

        env = {**os.environ, **settings_env(engine_b), "REDIS_URL": engine_b.redis_url}
        done = subprocess.run(
            [sys.executable, "-m", "stream_app.cli", "backfill", *map(str, files),
             "--until", payload_time(until)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )
        assert done.returncode == 0, done.stderr
        report = orjson.loads(done.stdout)
        assert report["events"] == len(before) and report["after_seam"] == 0
        assert report["model_version"] >= 1
        # The seam: every partition resumes right after its last message before T (at the
        # first message of the round after T, or at the end where that round put none).
        assert len(report["seam_offsets"]) == 3 * settings.partitions
        assert report["seam_offsets"] == {
            tp: ends_before.get(tp, -1) + 1 for tp in report["seam_offsets"]}
        assert any(publisher.last[tp] > ends_before.get(tp, -1) >= 0 for tp in publisher.last)

        worker_b.start()
        assert wait_until(lambda: caught_up(b_client, publisher.last), 60, 0.01)
        for batch in later[1:]:
            publisher.send(batch)
            assert wait_until(lambda: caught_up(a_client, publisher.last)
                              and caught_up(b_client, publisher.last), 60, 0.01), batch
    finally:
        worker_b.stop()
        worker_a.stop()

    a, b = records(a_client), records(b_client)
    assert a.keys() == b.keys() and len(a) == 30
    latest = max(times)
    for cid, ra in a.items():
        rb = b[cid]
        public_a = {k: v for k, v in ra.items() if k not in MODEL_FIELDS | NOT_BACKFILLED}
        public_b = {k: v for k, v in rb.items() if k not in MODEL_FIELDS | NOT_BACKFILLED}
        assert public_a == public_b, (cid, set(public_a.items()) ^ set(public_b.items()))
        # The bookkeeping that is not the model's: purchase days, event ids, sentiment.
        book_a, book_b = book_of(ra), book_of(rb)
        assert (book_a.days, book_a.event_ids, book_a.sentiment_sum_m, book_a.sentiment_n) == (
            book_b.days, book_b.event_ids, book_b.sentiment_sum_m, book_b.sentiment_n), cid
        close_recent(ra, rb, cid, latest)
        # B's worker recorded exactly the offsets it applied after the seam, as A did.
        offsets_a = from_fields(cid, ra).offsets
        offsets_b = from_fields(cid, rb).offsets
        assert all(offsets_a[tp] == o for tp, o in offsets_b.items()), cid
    for name in HISTORY_HISTOGRAMS:
        shares = [shard.histogram(name) for shard in KEYS.shards()]
        assert merged(a_client, shares) == merged(b_client, shares), name
    assert rollups(a_client) == rollups(b_client)
    assert ranking(a_client, "net_contribution") == ranking(b_client, "net_contribution")
    # Nothing of B's input was rejected: no duplicate, no lost event, no dead letter.
    assert "dead-lettering" not in (tmp_path / "worker-b.log").read_text()


def payload_time(ms: int) -> str:
    from stream_app.domain.events import format_time

    return format_time(ms)


def test_rounds_keep_each_customer_in_order() -> None:
    events = list(simulate(SimConfig(n_customers=5, days=30, seed=1)))
    flat = [e for r in rounds(events) for e in r]
    assert flat == events
    assert all(len({e.customer_id for e in r}) == len(r) for r in rounds(events))


