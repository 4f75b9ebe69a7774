"""Hostile input mixed into valid traffic: the worker survives and every record stays exact.

Thousands of hostile messages of every kind in `tests.e2e.hostile` are mixed into a
simulated population's recent valid events on all three input topics, for a worker in
live mode (``CVM_WALL_CLOCK_WATERMARK=1``, where the wall clock bounds event time), while
some customers' events come from two producers with different partitioners (so one customer's events
land on different partitions; the second producer's share comes last, when one busy
customer has pushed its partition's offsets ahead), and a real ``cvm worker`` reads them
all. Then:

- the worker never exited;
- every message that must be rejected has exactly one dead letter, found by the source
  topic, partition and offset its producer's delivery report gave, with a known error
  code, a non-empty reason, its original key, and its payload (or, when the dead letter
  had to be truncated, a prefix and the payload's SHA-256);
- no valid message, and nothing else, is dead-lettered;
- every customer's record equals the totals computed from the valid events alone
  (`tests.e2e.helpers.ground_truth`), and no other customer has a record;
- no event-time watermark lies beyond the wall clock plus the accepted future tolerance.
"""

from __future__ import annotations

import base64
import hashlib
import random
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition

from load.simulator import SimConfig, SimEvent, simulate
from stream_app.connections import sync_redis
from stream_app.contract import ERROR_CODES, Contract, InvalidEvent, load_schema
from stream_app.settings import Settings
from tests.conftest import WorkerProcess
from tests.e2e.helpers import (
    applied_offsets,
    committed_offsets,
    customer_ids,
    delete_worker_topics,
    describe_mismatches,
    ground_truth,
    log_problems,
    mismatches,
    own_redis_db,
    partition_ends,
    watermarks,
)
from tests.e2e.hostile import APPLY, DEAD, KINDS, Context, Hostile, Maker, generate

pytestmark = pytest.mark.integration

SEED = 20_261_129
SIM_DAYS = 180
# Customers whose valid events are spread over two producers with different partitioners.
MIXED_CUSTOMERS = 60
PARTITIONERS = ("murmur2_random", "consistent_random")
# Events in each mixed customer's burst (see `bursts`).
BURST = 8
# A customer far busier than the rest, whose partition runs ahead of the others.
HOT_CUSTOMER = "HOT-ACCOUNT-1"
HOT_EVENTS = 2400
CATCH_UP_DEADLINE_S = 300
# Stop waiting when neither the applied nor the committed offsets moved for this long.
STALL_S = 60
VALID = "valid"
VALID_MIXED = "valid_mixed_partitioner"


@dataclass
class Sent:
    """One produced message: what it is, what must become of it, where it landed."""

    kind: str
    expect: str
    topic: str
    key: bytes | None
    value: bytes | None
    producer: int
    event_id: str | None = None
    customer: str | None = None
    partition: int = -1
    offset: int = -1
    error: str | None = None

    @property
    def where(self) -> tuple[str, int, int]:
        return (self.topic, self.partition, self.offset)


@dataclass
class Outcome:
    """What went wrong, by kind and overall; empty when the engine did everything right."""

    by_kind: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    examples: dict[tuple[str, str], str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    #: Customers of messages that had to be rejected but have no dead letter.
    not_rejected: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))

    def bad(self, kind: str, what: str, example: str) -> None:
        self.by_kind[kind][what] += 1
        self.examples.setdefault((kind, what), example[:300])

    def ok(self, kind: str) -> None:
        self.by_kind[kind]["ok"] += 1

    @property
    def failed(self) -> bool:
        return bool(self.problems) or any(
            n for c in self.by_kind.values() for what, n in c.items() if what != "ok"
        )


def topic_of(settings: Settings, topic_kind: str) -> str:
    t = settings.topics
    return {
        "purchase": t.purchases, "service_contact": t.service_contacts,
        "campaign_touch": t.campaign_touches,
    }[topic_kind]


def customer_of(h: Hostile) -> str | None:
    """The customer a hostile message names, if it names one."""
    if h.event is not None:
        return h.event.customer_id
    try:
        cid = orjson.loads(h.value or b"").get("customer_id")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return cid if isinstance(cid, str) else None


def bursts(
    valid: Sequence[SimEvent], mixed: frozenset[str], ctx: Context, rng: random.Random
) -> dict[int, list[SimEvent]]:
    """For each of the `mixed` customers, a burst of events minutes apart, at a random place.

    A campaign's touches and the purchase they lead to come close together; sent through
    two producers that partition differently, they land on two partitions at once, which is
    where an engine that keeps one applied offset per customer and topic loses events.
    """
    maker = Maker(ctx, rng, valid)
    out: dict[int, list[SimEvent]] = defaultdict(list)
    for cid in sorted(mixed):
        at = rng.randrange(len(valid))
        start = valid[at].occurred_at
        for n in range(BURST):
            when = start + timedelta(minutes=3 * n, milliseconds=rng.randrange(1000))
            kind = "purchase" if n % 4 == 3 else "campaign_touch"
            payload = maker.payload(kind, "burst", customer_id=cid, when=when)
            out[at].append(SimEvent(kind, cid, when, payload))
    return out


def hot_customer(
    valid: Sequence[SimEvent], ctx: Context, rng: random.Random
) -> dict[int, list[SimEvent]]:
    """`HOT_EVENTS` events of one very busy customer, spread over the valid stream.

    Its partition's offsets run well ahead of the others', so a customer sharing it whose
    events also arrive on another partition (the second producer's) finds those at lower
    offsets than the ones already applied.
    """
    maker = Maker(ctx, rng, valid)
    out: dict[int, list[SimEvent]] = defaultdict(list)
    for at in sorted(rng.randrange(len(valid)) for _ in range(HOT_EVENTS)):
        kind = rng.choices(("campaign_touch", "purchase", "service_contact"), (6, 3, 2))[0]
        when = valid[at].occurred_at
        payload = maker.payload(kind, "hot", customer_id=HOT_CUSTOMER, when=when)
        out[at].append(SimEvent(kind, HOT_CUSTOMER, when, payload))
    return out


def plan(
    settings: Settings,
    valid: Sequence[SimEvent],
    hostile: Sequence[Hostile],
    mixed: frozenset[str],
    extra: dict[int, list[SimEvent]],
    rng: random.Random,
) -> tuple[list[Sent], list[SimEvent]]:
    """The messages in sending order, and the events the ground truth counts.

    Hostile messages go to random places in the valid stream; a duplicate goes right
    after the event it repeats; each list of `extra` valid events goes after the valid
    event at its index. Valid events of `mixed` customers go through either producer at random;
    everything else through the first.
    """
    before: dict[int, list[Hostile]] = defaultdict(list)
    after: dict[int, list[Hostile]] = defaultdict(list)
    for h in hostile:
        if h.after is not None:
            after[h.after].append(h)
        else:
            before[rng.randrange(len(valid) + 1)].append(h)

    def hostile_sent(h: Hostile) -> Sent:
        return Sent(h.kind, h.expect, topic_of(settings, h.topic_kind), h.key, h.value, 0,
                    event_id=h.event_id, customer=customer_of(h))

    def valid_sent(e: SimEvent) -> Sent:
        cid = e.customer_id
        producer = rng.randrange(len(PARTITIONERS)) if cid in mixed else 0
        return Sent(VALID_MIXED if cid in mixed else VALID, APPLY,
                    topic_of(settings, e.topic_kind), cid.encode(), orjson.dumps(e.payload),
                    producer, event_id=e.payload["event_id"], customer=cid)

    out: list[Sent] = []
    for i, e in enumerate(valid):
        out.extend(hostile_sent(h) for h in before[i])
        out.append(valid_sent(e))
        out.extend(hostile_sent(h) for h in after[i])
        out.extend(valid_sent(x) for x in extra.get(i, ()))
    out.extend(hostile_sent(h) for h in before[len(valid)])
    applied = [
        *valid, *(x for xs in extra.values() for x in xs),
        *(h.event for h in hostile if h.expect == APPLY and h.event is not None),
    ]
    return out, applied


def send_all(settings: Settings, messages: Sequence[Sent]) -> float:
    """Produce every message through its producer; record partitions and offsets."""
    producers = [
        Producer({
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "client.id": f"{settings.app_id}-hostile-{n}",
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 10,
            "message.max.bytes": 8 << 20,
            "queue.buffering.max.kbytes": 256 * 1024,
            "partitioner": partitioner,
        })
        for n, partitioner in enumerate(PARTITIONERS)
    ]
    began = time.monotonic()

    def report(sent: Sent) -> Any:
        def on_delivery(err: Any, msg: Any) -> None:
            if err is not None:
                sent.error = str(err)
            else:
                sent.partition, sent.offset = msg.partition(), msg.offset()
        return on_delivery

    for sent in messages:
        producer = producers[sent.producer]
        while True:
            try:
                producer.produce(sent.topic, key=sent.key, value=sent.value,
                                 on_delivery=report(sent))
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    for producer in producers:
        assert producer.flush(120) == 0, "messages still queued after 120 s"
    failed = [s for s in messages if s.error or s.offset < 0]
    assert not failed, f"{len(failed)} deliveries failed, e.g. {failed[0].kind}: {failed[0].error}"
    return time.monotonic() - began


def wait_processed(
    client: redis.Redis, settings: Settings, worker: WorkerProcess
) -> tuple[bool, dict[str, int]]:
    """Wait until every input partition is applied or committed to its end.

    Gives up when the worker exits, nothing moves for `STALL_S` or after the deadline.
    Returns whether it finished and the partitions still behind (name -> records left).
    """
    ends = {tp: high for tp, high in partition_ends(settings, settings.topics.inputs).items()
            if high > 0}
    end = time.monotonic() + CATCH_UP_DEADLINE_S
    last: dict[str, int] = {}
    moved = time.monotonic()
    behind = dict(ends)
    while time.monotonic() < end:
        applied = applied_offsets(client)
        committed = committed_offsets(settings)
        reached = {tp: max(applied.get(tp, -1) + 1, committed.get(tp, 0)) for tp in ends}
        behind = {tp: ends[tp] - n for tp, n in reached.items() if n < ends[tp]}
        if not behind:
            return True, {}
        if reached != last:
            last, moved = reached, time.monotonic()
        if time.monotonic() - moved > STALL_S:
            break
        if worker.proc is None or worker.proc.poll() is not None:
            time.sleep(3)  # let a last commit land, then report
            break
        time.sleep(0.5)
    return False, behind


def read_dead_letters(settings: Settings) -> list[Any]:
    """Every message of the dead-letter topic, up to its end."""
    topic = settings.topics.dead_letter
    ends = partition_ends(settings, [topic])
    consumer = Consumer({
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "group.id": f"{settings.app_id}-dead-letter-reader",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "fetch.message.max.bytes": 8 << 20,
    })
    out: list[Any] = []
    try:
        todo = {int(tp.rsplit("/", 1)[1]): high for tp, high in ends.items() if high > 0}
        consumer.assign([TopicPartition(topic, p, 0) for p in todo])
        position = dict.fromkeys(todo, 0)
        deadline = time.monotonic() + 120
        while any(position[p] < todo[p] for p in todo) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            out.append(msg)
            position[msg.partition()] = msg.offset() + 1
    finally:
        consumer.close()
    return out


def check_letter(
    sent: Sent, msg: Any, letter: dict[str, Any], known: frozenset[str], contract: Contract,
    outcome: Outcome,
) -> None:
    """One dead letter of a message that had to be rejected."""
    kind = KINDS.get(sent.kind)
    code = letter.get("error_code")
    reason = letter.get("reason")
    where = f"{sent.where} {code}: {str(reason)[:160]}"
    good = True
    if not isinstance(reason, str) or not reason.strip():
        outcome.bad(sent.kind, "no reason", where)
        good = False
    duplicate = sent.event_id is not None and kind is not None and kind.name.startswith(
        "duplicate_"
    )
    if duplicate:
        text = str(reason).lower()
        if not code or (str(sent.event_id).lower() not in text and "duplicate" not in text):
            outcome.bad(sent.kind, "reason names neither the event id nor a duplicate", where)
            good = False
    elif code not in known or (kind is not None and kind.codes and code not in kind.codes):
        want = sorted(kind.codes) if kind is not None and kind.codes else sorted(known)
        outcome.bad(sent.kind, "unexpected error_code", f"{where} (want one of {want})")
        good = False
    if msg.key() != sent.key:
        outcome.bad(sent.kind, "dead letter key differs from the message key",
                    f"{sent.where} key {sent.key!r} -> {msg.key()!r}")
        good = False
    value = sent.value or b""
    try:
        kept = base64.b64decode(letter.get("payload_b64") or "", validate=True)
    except (ValueError, TypeError):
        kept = None
    if kept != value:
        raw_digest = hashlib.sha256(value).digest()
        digests = (raw_digest.hex(), base64.b64encode(raw_digest).decode())
        strings = [v for v in letter.values() if isinstance(v, str)]
        prefix_ok = kept is not None and len(kept) < len(value) and value.startswith(kept)
        if not prefix_ok or not any(d in text for d in digests for text in strings):
            outcome.bad(sent.kind, "payload neither kept nor truncated with its SHA-256",
                        f"{sent.where} {len(value)} bytes, kept "
                        f"{None if kept is None else len(kept)}")
            good = False
    try:
        contract.validate_output("dead_letter", letter)
    except InvalidEvent as exc:
        outcome.bad(sent.kind, "dead letter breaks its schema", f"{sent.where} {exc.reason}")
        good = False
    if good:
        outcome.ok(sent.kind)


def evaluate(
    messages: Sequence[Sent], letters: Sequence[Any], known: frozenset[str], outcome: Outcome
) -> None:
    """Match every dead letter to the message it names; check one per rejected message."""
    contract = Contract()
    by_where: dict[tuple[str, int, int], list[tuple[Any, dict[str, Any]]]] = defaultdict(list)
    for msg in letters:
        try:
            letter = orjson.loads(msg.value())
            where = (letter["source_topic"], letter["source_partition"], letter["source_offset"])
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            outcome.problems.append(f"unreadable dead letter at offset {msg.offset()}: {exc}")
            continue
        by_where[where].append((msg, letter))
    sent_at = {s.where: s for s in messages}
    strays = [w for w in by_where if w not in sent_at]
    if strays:
        outcome.problems.append(
            f"{len(strays)} dead letters name no message that was sent, e.g. {strays[:3]}"
        )
    for sent in messages:
        found = by_where.get(sent.where, [])
        if sent.expect == APPLY:
            if found:
                _, letter = found[0]
                outcome.bad(sent.kind, "dead-lettered but valid",
                            f"{sent.where} {letter.get('error_code')}: "
                            f"{str(letter.get('reason'))[:160]}")
            else:
                outcome.ok(sent.kind)
            continue
        if not found:
            outcome.bad(sent.kind, "no dead letter",
                        f"{sent.where} {(sent.value or b'')[:120]!r}")
            if sent.customer is not None:
                outcome.not_rejected[sent.customer].add(sent.kind)
            continue
        if len(found) > 1:
            outcome.bad(sent.kind, "more than one dead letter", f"{sent.where} x{len(found)}")
            continue
        msg, letter = found[0]
        check_letter(sent, msg, letter, known, contract, outcome)


def explain(
    bad: dict[str, Any], messages: Sequence[Sent], mixed: frozenset[str], outcome: Outcome
) -> str:
    """Which suspects touched the customers whose records differ."""
    null_keyed = {m.customer for m in messages if m.key is None and m.expect == APPLY}
    causes: Counter[str] = Counter()
    for cid in bad:
        found = sorted(outcome.not_rejected.get(cid, ()))
        if cid in mixed:
            found.append(VALID_MIXED)
        if cid in null_keyed:
            found.append("null_key")
        causes.update(found or ["(none of these: unexplained)"])
    return "customers among them touched by messages not dead-lettered, two partitioners " \
        "or null keys:\n" + "\n".join(f"  {what}: {n}" for what, n in causes.most_common())


def last_traceback(log_path: Path, n: int = 30) -> str:
    """The last traceback of a worker log (its first `n` lines), else the log's last lines."""
    lines = log_path.read_text(errors="replace").splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback")]
    picked = lines[starts[-1] : starts[-1] + n] if starts else lines[-n:]
    return "\n".join(picked)


def summary(messages: Sequence[Sent], outcome: Outcome) -> str:
    """Counts per kind: sent, what it must do, how many came out right, what went wrong."""
    sent = Counter(s.kind for s in messages)
    lines = [
        "per kind (ok: one sound dead letter, or for apply none; records are checked above):",
        f"{'kind':34} {'expect':6} {'stage':8} {'sent':>5} {'ok':>5}  problems",
    ]
    for name in sorted(sent, key=lambda n: (n not in (VALID, VALID_MIXED), n)):
        k = KINDS.get(name)
        counts = outcome.by_kind.get(name, Counter())
        wrong = ", ".join(f"{what} {n}" for what, n in sorted(counts.items()) if what != "ok")
        lines.append(
            f"{name:34} {(k.expect if k else APPLY):6} {(k.stage if k else '-'):8} "
            f"{sent[name]:5} {counts['ok']:5}  {wrong}"
        )
    if outcome.examples:
        lines.append("first example of each problem:")
        lines.extend(f"  {kind} / {what}: {ex}" for (kind, what), ex in outcome.examples.items())
    return "\n".join(lines)


def test_hostile_messages_are_dead_lettered_and_records_stay_exact(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    began = time.monotonic()
    # A live deployment: the wall clock bounds event time, and the valid traffic is the
    # last six months up to ten days ago.
    monkeypatch.setenv("CVM_WALL_CLOCK_WATERMARK", "1")
    now = datetime.now(UTC)
    start = (now - timedelta(days=SIM_DAYS + 10)).replace(hour=0, minute=0, second=0,
                                                          microsecond=0)
    rng = random.Random(SEED)
    valid = list(simulate(SimConfig(
        n_customers=300, days=SIM_DAYS, acquisition_days=SIM_DAYS // 2, seed=SEED, start=start
    )))
    customers = sorted({e.customer_id for e in valid})
    mixed = frozenset(rng.sample(customers, MIXED_CUSTOMERS))
    ctx = Context.from_settings(settings, now)
    hostile = generate(valid, ctx, seed=SEED, avoid=mixed)
    kinds = Counter(h.kind for h in hostile)
    assert len(kinds) >= 50 and len(hostile) >= 5000, kinds
    assert {h.topic_kind for h in hostile} == {"purchase", "service_contact", "campaign_touch"}
    extra = bursts(valid, mixed, ctx, rng)
    for at, events in hot_customer(valid, ctx, rng).items():
        extra[at].extend(events)
    messages, applied = plan(settings, valid, hostile, mixed, extra, rng)
    truth = ground_truth(applied, settings.default_margin_rate)
    known = frozenset(ERROR_CODES) | frozenset(
        load_schema("dead_letter")["properties"]["error_code"].get("enum", ())
    )
    outcome = Outcome()
    log_path = tmp_path / "worker.log"

    with own_redis_db(settings) as s:
        client = sync_redis(s, decode_responses=True)
        worker = WorkerProcess(s, log_path)
        try:
            worker.start()
            # The second producer's share comes once the first's is applied (a service
            # that sends later, e.g. after an outage), so a customer's events on a topic
            # sit at high offsets of a busy partition and at low offsets of another.
            send_s = send_all(s, [m for m in messages if m.producer == 0])
            ready, behind = wait_processed(client, s, worker)
            if not ready:
                outcome.problems.append(f"the first producer's events not processed: {behind}")
            send_s += send_all(s, [m for m in messages if m.producer == 1])
            landed: dict[tuple[bytes | None, str], set[int]] = defaultdict(set)
            for m in messages:
                if m.kind == VALID_MIXED:
                    landed[(m.key, m.topic)].add(m.partition)
            spread = {key for (key, _), parts in landed.items() if len(parts) > 1}
            assert len(spread) >= MIXED_CUSTOMERS // 2, "the two partitioners agreed too often"
            finished, behind = wait_processed(client, s, worker)
            exited = worker.proc is None or worker.proc.poll() is not None
            if exited:
                code = None if worker.proc is None else worker.proc.returncode
                outcome.problems.append(
                    f"the worker exited (status {code}):\n" + last_traceback(log_path)
                )
            if not finished:
                outcome.problems.append(
                    f"input not fully processed: records left per partition {behind}"
                )
            letters = read_dead_letters(s)
            evaluate(messages, letters, known, outcome)
            bad = mismatches(client, truth)
            if bad:
                why = explain(bad, messages, mixed, outcome) if finished else ""
                outcome.problems.append(describe_mismatches(bad) + "\n" + why)
            stored = customer_ids(client)
            strangers = sorted(stored - set(truth))
            if strangers:
                outcome.problems.append(
                    f"{len(strangers)} records of customers with no valid event, "
                    f"e.g. {strangers[:5]}"
                )
            limit_ms = (datetime.now(UTC) + ctx.future_tolerance).timestamp() * 1000
            marks = watermarks(client)
            ahead = {tp: v for tp, v in marks.items() if float(v) > limit_ms}
            if ahead:
                outcome.problems.append(
                    "watermarks beyond the clock plus the future tolerance: "
                    + ", ".join(
                        f"{tp}={datetime.fromtimestamp(float(v) / 1000, UTC):%Y-%m-%d}"
                        for tp, v in sorted(ahead.items())
                    )
                )
            alive_at_end = worker.proc is not None and worker.proc.poll() is None
            if not exited and not alive_at_end:
                outcome.problems.append("the worker exited while the results were checked")
            log = log_problems(log_path.read_text(errors="replace"))
        finally:
            worker.stop()
            client.close()
            delete_worker_topics(s)

    dead = [m for m in messages if m.expect == DEAD]
    n_valid = len(valid) + sum(len(xs) for xs in extra.values())
    header = (
        f"{len(messages)} messages: {n_valid} valid ({MIXED_CUSTOMERS} customers over two "
        f"partitioners), {len(hostile)} hostile of {len(kinds)} kinds "
        f"({len(dead)} to dead-letter); {len(letters)} dead letters; {len(truth)} customers; "
        f"sent in {send_s:.0f} s; test took {time.monotonic() - began:.0f} s"
    )
    report = "\n".join([header, *outcome.problems, summary(messages, outcome)])
    if log:
        report += "\nworker log problems:\n" + log
    print("\n" + header)
    assert not outcome.failed, report
