"""``cvm skip TOPIC PARTITION OFFSET``: step the engine over one input message, on record.

The worker stops (fail-stop) on an error it cannot turn into a dead letter, and a restart
reads the same message again. Skipping it needs two positions moved together, because the
worker resumes from the lower of them: the consumer group's committed offset (to OFFSET+1)
and the engine's resume point in Redis (``cvm:applied``, field ``topic/partition``, to at
least OFFSET; see `stream_app.agents.ingest.resume_points`). The message itself goes to the
dead-letter topic first, with ``operator_skip: true`` and the reason "skipped by operator",
so nothing is dropped without a trace.

Safety:

* Kafka changes a group's offsets only while the group has no members, so the command refuses
  while workers of the group (``CVM_APP_ID``, Faust's group id) run; ``--wait`` waits for a
  stopped worker's membership to expire.
* It refuses to skip past messages that were not applied yet (between the position the worker
  would resume from and OFFSET), which a skip would lose: run one worker with
  ``CVM_BATCH_SIZE=1`` until it stops on OFFSET, or pass ``--force`` to dead-letter them as
  skipped too.
* Run again after a failure, it completes what is left (each step is idempotent).
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from stream_app.connections import sync_redis
from stream_app.pipeline import RawRecord, dead_letter_key, dead_letter_message, utc_now_iso
from stream_app.settings import Settings
from stream_app.store.keys import Keys

__all__ = ["DESCRIPTION", "SKIP_REASON", "SkipError", "SkipResult", "add_arguments", "run",
           "skip"]

DESCRIPTION = (
    "Skip one input message that the worker cannot get past: publish it to the dead-letter "
    "topic as skipped by operator, then move the consumer group's committed offset to "
    "OFFSET+1 and Redis's resume point (cvm:applied) to OFFSET, so a restarted worker starts "
    "after it. Stop the workers first: Kafka only changes the offsets of a group without "
    "members."
)
SKIP_REASON = "skipped by operator"

# Moves a partition's resume point forward, never back: a worker may have applied more.
_RAISE_APPLIED = """
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '-1')
local wanted = tonumber(ARGV[2])
if current < wanted then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return wanted
end
return current
"""


class SkipError(RuntimeError):
    """The skip was refused or could not be completed; the message says why and what to do."""


@dataclass
class SkipResult:
    """What `skip` did."""

    topic: str
    partition: int
    offset: int
    group: str
    dead_lettered: list[int] = field(default_factory=list)
    committed_before: int | None = None
    applied_before: int | None = None
    committed: int | None = None
    applied: int | None = None
    already_past: bool = False


def _group_members(admin: AdminClient, group: str, timeout: float) -> int:
    future = admin.describe_consumer_groups([group], request_timeout=timeout)[group]
    try:
        description = future.result()
    except KafkaException:
        return 0  # a group that does not exist has no members
    return len(description.members)


def _committed(admin: AdminClient, group: str, topic: str, partition: int,
               timeout: float) -> int | None:
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, partition)])
    future = admin.list_consumer_group_offsets([request], request_timeout=timeout)[group]
    try:
        result = future.result()
    except KafkaException:
        return None
    for tp in result.topic_partitions:
        if tp.topic == topic and tp.partition == partition and tp.offset >= 0:
            return int(tp.offset)
    return None


def _read(settings: Settings, topic: str, partition: int, first: int, last: int,
          timeout: float) -> dict[int, RawRecord]:
    """The messages first..last of a partition that can still be read (by offset)."""
    consumer = Consumer({
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "group.id": f"cvm-skip-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "fetch.message.max.bytes": settings.producer_max_request_bytes,
    })
    found: dict[int, RawRecord] = {}
    try:
        consumer.assign([TopicPartition(topic, partition, first)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                continue
            offset = msg.offset()
            if offset > last:
                break
            found[offset] = RawRecord(topic, partition, offset, msg.key(), msg.value())
            if offset == last:
                break
    finally:
        consumer.close()
    return found


def _dead_letter(settings: Settings, topic: str, partition: int, first: int, last: int,
                 now: str, timeout: float) -> list[int]:
    """Publish offsets first..last as skipped by operator; returns the offsets published."""
    records = _read(settings, topic, partition, first, last, timeout)
    producer = Producer({
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "enable.idempotence": True,
        "acks": "all",
        "message.max.bytes": settings.producer_max_request_bytes,
    })
    failures: list[Any] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(err)

    done = []
    for n in range(first, last + 1):
        record = records.get(n) or RawRecord(topic, partition, n, None, None)
        reason = SKIP_REASON if n in records else (
            f"{SKIP_REASON} (the message could no longer be read)"
        )
        letter = dead_letter_message(record, "invalid_value", reason, now,
                                     settings.dead_letter_max_bytes)
        letter["operator_skip"] = True
        producer.produce(settings.topics.dead_letter, key=dead_letter_key(record),
                         value=orjson.dumps(letter), on_delivery=on_delivery)
        producer.poll(0)
        done.append(n)
    left = producer.flush(timeout)
    if failures or left:
        raise SkipError(f"the dead letters were not all delivered ({failures or left}); "
                        "nothing was moved, run the command again")
    return done


def skip(
    settings: Settings,
    topic: str,
    partition: int,
    offset: int,
    *,
    force: bool = False,
    wait_s: float = 0.0,
    timeout_s: float = 30.0,
    clock: Callable[[], str] = utc_now_iso,
) -> SkipResult:
    """Skip the message at ``topic/partition/offset`` for the worker's consumer group."""
    if topic not in settings.topics.inputs:
        raise SkipError(f"{topic!r} is not an input topic ({', '.join(settings.topics.inputs)})")
    if partition < 0 or offset < 0:
        raise SkipError("PARTITION and OFFSET must be >= 0")
    group = settings.app_id
    result = SkipResult(topic, partition, offset, group)
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    members = _group_members(admin, group, timeout_s)
    deadline = time.monotonic() + wait_s
    while members and time.monotonic() < deadline:
        time.sleep(1.0)
        members = _group_members(admin, group, timeout_s)
    if members:
        raise SkipError(
            f"consumer group {group!r} has {members} active member(s): stop every worker of "
            f"CVM_APP_ID={group} first (Kafka changes the offsets of a group only while it "
            "has no members), or pass --wait SECONDS to wait for a stopped worker's session "
            "to expire"
        )

    probe = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers,
                      "group.id": f"cvm-skip-{uuid.uuid4().hex[:8]}"})
    try:
        low, high = probe.get_watermark_offsets(TopicPartition(topic, partition),
                                                timeout=timeout_s)
    finally:
        probe.close()
    if offset >= high:
        raise SkipError(f"{topic}/{partition} has no offset {offset} (its end is {high})")

    redis = sync_redis(settings)
    applied_key = Keys(partitions=settings.partitions).shard(partition).applied
    field_name = f"{topic}/{partition}"
    try:
        raw = redis.hget(applied_key, field_name)
        applied = None if raw is None else int(raw)
        committed = _committed(admin, group, topic, partition, timeout_s)
        result.applied_before, result.committed_before = applied, committed
        if applied is not None and applied >= offset:
            # Redis already holds the message as applied (or skipped by an earlier run that
            # could not move the group): only the group's offset may be left to move.
            result.applied = applied
            if committed is not None and committed > offset:
                result.already_past = True
                result.committed = committed
                return result
        else:
            # Redis's resume point is the truth about what was applied: a restarted worker
            # reads again from there (see resume_points), whatever the group committed.
            resume = max(low, -1 if applied is None else applied + 1)
            if resume < offset and not force:
                raise SkipError(
                    f"offsets {resume}..{offset - 1} of {topic}/{partition} have not been "
                    f"applied yet, and skipping {offset} now would skip them too. Run one "
                    f"worker with CVM_BATCH_SIZE=1 until it stops on offset {offset}, then "
                    "skip again; or pass --force to skip them as well (each goes to the "
                    "dead-letter topic)"
                )
            first = min(resume, offset)
            # 1. The dead letters first: nothing is skipped without a record of it.
            result.dead_lettered = _dead_letter(settings, topic, partition, first, offset,
                                                clock(), timeout_s)
            # 2. Redis's resume point, never backwards.
            result.applied = int(redis.eval(_RAISE_APPLIED, 1, applied_key, field_name,
                                            offset))
    finally:
        redis.close()
    # 3. The group's committed offset: the worker reads on from OFFSET+1.
    target = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, partition, offset + 1)])
    future = admin.alter_consumer_group_offsets([target], request_timeout=timeout_s)[group]
    try:
        altered = future.result()
    except KafkaException as exc:
        raise SkipError(
            f"Redis's resume point moved, but Kafka refused the group offset ({exc}); "
            "stop the workers and run the command again"
        ) from None
    for tp in altered.topic_partitions:
        if tp.error is not None:
            raise SkipError(f"Kafka refused the group offset of {topic}/{partition}: {tp.error}")
    result.committed = offset + 1
    return result


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Every argument of ``cvm skip``."""
    p.add_argument("topic", help="input topic, e.g. cvm.purchases")
    p.add_argument("partition", type=int, help="partition of the message")
    p.add_argument("offset", type=int, help="offset of the message to skip")
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="wait up to this long for the group to have no members")
    p.add_argument("--force", action="store_true",
                   help="also skip the earlier messages not applied yet (each is "
                        "dead-lettered as skipped by operator)")


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Handler of ``cvm skip``: prints what was done as JSON; 2 when refused."""
    try:
        result = skip(settings, args.topic, args.partition, args.offset,
                      force=args.force, wait_s=args.wait)
    except (SkipError, KafkaException) as exc:
        print(f"cvm skip: {exc}", file=sys.stderr)
        return 2
    doc = {
        "topic": result.topic, "partition": result.partition, "offset": result.offset,
        "group": result.group, "already_past": result.already_past,
        "dead_lettered": result.dead_lettered,
        "committed_before": result.committed_before, "applied_before": result.applied_before,
        "committed": result.committed, "applied": result.applied,
    }
    sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0
