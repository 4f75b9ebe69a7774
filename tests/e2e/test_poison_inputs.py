"""Inputs the engine cannot apply, through the real broker and a real worker into real Redis.

Each of them once stopped the worker for good: an amount of 1e300 or 1e26 (an arithmetic
error), a 3.2 MB purchase (its dead letter was larger than the producer accepts), events
dated 2199 (they moved the engine's clock) or 1900. They must all become dead letters with a
reason while the valid events around them are applied and the worker keeps running. And when
a message does stop the worker, `cvm skip` must step over it for good.
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from confluent_kafka import Producer

from stream_app.settings import Settings
from stream_app.worker_process import wait_until
from tests.conftest import ROOT, WorkerProcess, consume_all, settings_env
from tests.e2e.helpers import applied_offsets, committed_offsets, watermarks
from tests.e2e.helpers import customer_ids as stored_ids

pytestmark = pytest.mark.integration

YEAR_2100_MS = int(datetime(2100, 1, 1, tzinfo=UTC).timestamp() * 1000)


def purchase(cid: str, when: str, amount: float = 10.0, **extra: Any) -> dict[str, Any]:
    return {"event_id": f"{cid}-{when}", "customer_id": cid, "occurred_at": when,
            "kind": "order", "amount": amount, "currency": "USD", "channel": "web", **extra}


def produce(settings: Settings, messages: list[tuple[int, dict[str, Any] | bytes]]) -> None:
    """Publish (partition, message) to the purchases topic, keyed by customer id, in order."""
    producer = Producer({
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "enable.idempotence": True,
        "message.max.bytes": 4 << 20,
    })
    failures: list[Any] = []
    for partition, message in messages:
        value = message if isinstance(message, bytes) else orjson.dumps(message)
        key = orjson.loads(value)["customer_id"].encode()
        producer.produce(settings.topics.purchases, key=key, value=value, partition=partition,
                         on_delivery=lambda err, _m: failures.append(err) if err else None)
        producer.poll(0)
    assert producer.flush(60) == 0 and not failures, failures


def customer_ids(client: redis.Redis) -> set[str]:
    return stored_ids(client)


HUGE = orjson.dumps(purchase("HUGE", "2026-01-05T10:00:00Z", note="x" * 3_200_000))

#: Each set once stopped the worker or its clock on the old code, so each is a test of its own.
POISON: dict[str, list[tuple[int, dict[str, Any] | bytes]]] = {
    "amounts": [
        (0, purchase("BIG300", "2026-01-05T10:00:00Z", amount=1e300)),
        (0, purchase("BIG26", "2026-01-05T11:00:00Z", amount=1e26)),
    ],
    "oversize": [(1, HUGE)],
    # One event dated 2199 on each partition (the attack that moved the clock), one in 1900.
    "dates": [
        *((p, purchase(f"FUTURE{p}", "2199-01-01T00:00:00Z")) for p in range(4)),
        (2, purchase("OLD", "1900-06-01T00:00:00Z")),
    ],
}


def check_letter(settings: Settings, cid: str, letter: dict[str, Any]) -> None:
    """The dead letter of each poison message says why it was rejected."""
    if cid.startswith("BIG"):
        assert letter["error_code"] == "schema_violation"
        assert letter["reason"].startswith("amount: ")
        assert "maximum of 1000000000000" in letter["reason"]
    elif cid == "HUGE":
        assert letter["error_code"] == "oversize" and letter["payload_truncated"] is True
        assert letter["payload_bytes"] == len(HUGE)
        assert letter["payload_sha256"] == hashlib.sha256(HUGE).hexdigest()
        assert HUGE.startswith(base64.b64decode(letter["payload_b64"]))
        assert (letter["source_topic"], letter["source_partition"]) == (
            settings.topics.purchases, 1)
    elif cid.startswith("FUTURE"):
        assert letter["error_code"] == "invalid_value", letter
        assert letter["reason"].startswith("occurred_at: 2199-01-01T00:00:00.000Z is after")
    else:
        assert letter["error_code"] == "invalid_value"
        assert letter["reason"].startswith("occurred_at: 1900-06-01T00:00:00.000Z is before")


@pytest.mark.parametrize("kind", sorted(POISON))
def test_values_the_engine_cannot_apply_are_dead_lettered_and_the_worker_runs_on(
    settings: Settings, worker: WorkerProcess, kind: str
) -> None:
    client = redis.Redis.from_url(settings.redis_url)
    # The engine's clock first starts, with valid events on every partition.
    produce(settings, [(p, purchase(f"V{p}", f"2026-01-0{p + 1}T10:00:00Z")) for p in range(4)])
    assert wait_until(lambda: customer_ids(client) >= {"V0", "V1", "V2", "V3"}), worker.log_tail()

    assert 3_200_000 < len(HUGE) < 4 << 20  # within the topic's limit; its dead letter is not
    poison = POISON[kind]
    after = [(p, purchase(f"A{p}", f"2026-01-1{p}T10:00:00Z", amount=20.0)) for p in range(4)]
    produce(settings, [*poison, *after])

    letters = consume_all(settings, settings.topics.dead_letter, expected=len(poison))
    assert len(letters) == len(poison), worker.log_tail()
    assert all(len(m.value()) <= settings.dead_letter_max_bytes for m in letters)
    by_key = {m.key().decode(): orjson.loads(m.value()) for m in letters}
    rejected = {orjson.loads(m if isinstance(m, bytes) else orjson.dumps(m))["customer_id"]
                for _, m in poison}
    assert set(by_key) == rejected
    for cid, letter in by_key.items():
        check_letter(settings, cid, letter)

    # The valid events after them are applied, and the worker is still running.
    assert wait_until(lambda: customer_ids(client) >= {f"A{p}" for p in range(4)}), \
        worker.log_tail()
    worker.check()
    assert not customer_ids(client) & rejected
    # No watermark moved to 2199: every partition's clock is where its valid events left it.
    marks = watermarks(client)
    assert marks and max(marks.values()) < YEAR_2100_MS, marks
    for p in range(4):
        want = int(datetime(2026, 1, 10 + p, 10, tzinfo=UTC).timestamp() * 1000)
        assert marks[f"{settings.topics.purchases}/{p}"] == want, marks
    client.close()


def cvm(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream_app.cli", *args],
        env={**os.environ, **settings_env(settings)},
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )


def test_skip_moves_the_group_offset_and_the_resume_point_past_a_message(
    settings: Settings, tmp_path: Path
) -> None:
    topic = settings.topics.purchases
    client = redis.Redis.from_url(settings.redis_url)
    produce(settings, [(1, purchase("SKIPPED", "2026-02-01T10:00:00Z"))])  # offset 0
    produce(settings, [(2, purchase("P2A", "2026-02-01T10:00:00Z")),
                       (2, purchase("P2B", "2026-02-01T11:00:00Z"))])

    # Skipping offset 1 of partition 2 would skip offset 0, never applied: refused.
    refused = cvm(settings, "skip", topic, "2", "1")
    assert refused.returncode == 2 and "have not been applied" in refused.stderr, refused

    done = cvm(settings, "skip", topic, "1", "0")
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout)
    assert report["dead_lettered"] == [0] and report["committed"] == 1 and report["applied"] == 0
    assert applied_offsets(client)[f"{topic}/1"] == 0
    assert committed_offsets(settings)[f"{topic}/1"] == 1

    (letter,) = consume_all(settings, settings.topics.dead_letter, expected=1)
    doc = orjson.loads(letter.value())
    assert doc["reason"] == "skipped by operator" and doc["operator_skip"] is True
    assert (doc["source_topic"], doc["source_partition"], doc["source_offset"]) == (topic, 1, 0)
    assert orjson.loads(base64.b64decode(doc["payload_b64"]))["customer_id"] == "SKIPPED"
    assert letter.key() == b"SKIPPED"

    # A worker started now reads on after the skipped message, never re-reading it.
    produce(settings, [(1, purchase("AFTER", "2026-02-02T10:00:00Z"))])  # offset 1
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()
    try:
        assert wait_until(lambda: customer_ids(client) >= {"AFTER", "P2A", "P2B"}), \
            worker.log_tail()
        assert "SKIPPED" not in customer_ids(client)
        # While the group has a member, Kafka would refuse the offset: so does the command.
        busy = cvm(settings, "skip", topic, "1", "1")
        assert busy.returncode == 2 and "active member" in busy.stderr, busy
    finally:
        worker.stop()
    assert "SKIPPED" not in customer_ids(client)
    client.close()
