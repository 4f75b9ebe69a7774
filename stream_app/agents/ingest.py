"""The agent over the three input topics: batches of raw records into the pipeline."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping

import faust
from aiokafka.errors import KafkaError
from faust.exceptions import ProducerSendError
from faust.types import TP

from stream_app import consumer_group, metrics
from stream_app.app import Channels
from stream_app.connections import first_readable_offset
from stream_app.fence import TRANSIENT_REDIS_ERRORS, backoff, run_id
from stream_app.logs import ALWAYS
from stream_app.pipeline import RawRecord
from stream_app.positions import Positions
from stream_app.runtime import Runtime
from stream_app.store import churn_models, layout, server

log = logging.getLogger(__name__)

#: A batch that fails with one of these is retried until it succeeds: Redis or
#: the broker is away for a while. Publishing again is safe (alert ids are
#: checked before they are sent; training examples are at least once).
RETRYABLE = (*TRANSIENT_REDIS_ERRORS, KafkaError, ProducerSendError)
#: How often the watchdog asks which Redis server answers.
WATCH_INTERVAL_S = 1.0
#: How often the worker looks for an error aiokafka's group coordinator waits to hand over.
GROUP_ERRORS_S = 1.0
#: How long a resume from Redis may wait for Redis inside a rebalance before the
#: watchdog takes over (it rejoins the group once Redis answers).
RESUME_PATIENCE_S = 5.0
#: How long to wait for a requested rebalance before asking again.
REJOIN_AGAIN_S = 30.0
#: Exit status of a worker stopped while a batch could not be written (EX_TEMPFAIL):
#: nothing of the batch was acknowledged, and the next worker reads it again.
EXIT_STOPPED_UNWRITTEN = 75


class Resync:
    """Whether input may be applied, and the Redis server generation it is applied to.

    After Redis restarted, the positions the consumer has (and the events it
    has buffered) may be past what the new server holds. `rewinding` is set
    before the new server is accepted, so the agent applies nothing until the
    rebalance that follows has resumed every partition from what that server
    holds; `epoch` counts restarts, so a batch read before one is dropped.
    """

    def __init__(self) -> None:
        self.epoch = 0
        self.rewinding = False
        self.needs_rejoin = False
        self.rejoin_requested_at: float | None = None
        self.dropped = 0
        # Held by the agent while it writes a batch, and by the watchdog while it
        # accepts a new server, so no batch is in flight when the server changes.
        self.lock = asyncio.Lock()

    def restarted(self) -> None:
        """Redis restarted: stop applying input until the next resume from Redis."""
        self.epoch += 1
        self.wait_for_rejoin()

    def wait_for_rejoin(self) -> None:
        """Apply nothing until the group is rejoined and every partition resumed from Redis."""
        self.rewinding = True
        self.needs_rejoin = True
        self.rejoin_requested_at = None

    def resumed(self, epoch: int) -> bool:
        """A resume from Redis read at `epoch` finished; True if input may flow again."""
        if epoch != self.epoch:
            return False
        if self.dropped:
            log.info("resumed from Redis; %d buffered records were dropped and are read "
                     "again", self.dropped)
        self.rewinding = False
        self.needs_rejoin = False
        self.dropped = 0
        return True


async def request_rejoin(app: faust.App) -> None:
    """Make the consumer rejoin its group: a rebalance, and a resume from Redis after it.

    Faust has no public call for this; aiokafka's group coordinator has
    ``request_rejoin``, which must run on the consumer's own thread. The
    rebalance discards what the consumer has buffered, and the assignment
    resumes each partition through `resume_from_redis`.
    """
    thread = app.consumer._thread  # type: ignore[attr-defined]  # noqa: SLF001

    async def rejoin() -> None:
        thread._ensure_consumer()._coordinator.request_rejoin()  # noqa: SLF001

    await thread.call_thread(rejoin)


async def applied_positions(runtime: Runtime) -> dict[tuple[str, int], int]:
    """The last offset Redis holds as applied per input partition, and the learner's position.

    The training topic's position is the offset of the newest churn model
    snapshot, so a restarted learner relearns what its snapshot lacks.
    """
    # Before any offset is read: a v1 layout is moved to v2, a partition count other
    # than the one the state was written with is refused (`stream_app.store.layout`).
    await layout.ensure(runtime.redis, runtime.keys)
    applied = await runtime.store.applied_offsets()
    applied[(runtime.settings.topics.training, 0)] = await churn_models.offset(
        runtime.redis, runtime.keys, runtime.settings.signing_key
    )
    return applied


def resume_points(
    inputs: Iterable[str],
    applied: Mapping[tuple[str, int], int],
    assigned: Iterable[TP],
    committed: Mapping[TP, int],
) -> dict[TP, int]:
    """Partitions of `inputs` whose group offset is ahead of what Redis holds, and where to resume.

    Redis records, atomically with each batch's writes, the last offset it
    applied per partition (`applied`, see `applied_positions`). If Redis lost
    recent writes (a machine crash under ``appendfsync everysec``) or lost
    everything, the group's committed offset is ahead of it and those events
    must be read again. The reverse (Redis ahead, after a worker crash) needs
    nothing: already applied events are skipped per customer.

    >>> from faust.types import TP
    >>> resume_points(["t"], {("t", 0): 41}, [TP("t", 0), TP("t", 1), TP("u", 0)],
    ...               {TP("t", 0): 50, TP("t", 1): 7, TP("u", 0): 9})
    {TP(topic='t', partition=0): 42, TP(topic='t', partition=1): 0}
    """
    topics = set(inputs)
    lower: dict[TP, int] = {}
    for tp in assigned:
        if tp.topic not in topics:
            continue
        group = committed.get(tp)
        if group is None or group <= 0:
            continue
        resume = applied.get((tp.topic, tp.partition), -1) + 1
        if resume < group:
            lower[tp] = resume
    return lower


async def unread_holes(
    positions: Positions,
    records: Iterable[RawRecord],
    probe: Callable[[str, int, int], Awaitable[int | None]],
) -> dict[str, tuple[int, int, int | None]]:
    """Partitions that applying `records` would leave unread offsets behind in.

    `Positions` names the partitions whose first record lies past the next
    offset to apply; `probe(topic, partition, offset)` gives the first record
    readable from there. Where that is the batch's first record, the gap holds
    only transaction markers or deleted segments: it is remembered as verified.
    Otherwise the hole is returned as ``{"topic/partition": (next to apply,
    first read, first readable)}``.
    """
    suspects = positions.holes((r.topic, r.partition, r.offset) for r in records)
    holes: dict[str, tuple[int, int, int | None]] = {}
    for (topic, partition), (expected, first) in suspects.items():
        readable = await probe(topic, partition, expected)
        if readable == first:
            positions.verified((topic, partition), expected, first)
        else:
            holes[f"{topic}/{partition}"] = (expected, first, readable)
    return holes


def register(app: faust.App, channels: Channels, runtime: Runtime) -> Resync:
    """Attach the ingest agent, its resume-from-Redis hook, the Redis watchdog and the
    taker of the consumer's group errors (`consumer_group.take_error`) to `app`."""
    settings = runtime.settings
    within = settings.batch_within_ms / 1000
    resync = Resync()
    positions = Positions()

    async def probe(topic: str, partition: int, start: int) -> int | None:
        return await asyncio.to_thread(first_readable_offset, settings, topic, partition, start)

    async def leaves_hole(records: list[RawRecord]) -> bool:
        holes = await unread_holes(positions, records, probe)
        if holes:
            log.warning("input would skip offsets Redis has not applied (partition: "
                        "(next to apply, first read, first readable)) %s; the worker "
                        "rejoins its group to resume from Redis", holes, extra=ALWAYS)
        return bool(holes)

    @app.task
    async def check_redis_config() -> None:
        # Customer records stay compact listpacks only if the server allows long values;
        # the commit is cheaper with its histograms and rank sets in their fast encodings.
        async def check() -> None:
            await server.check_listpack_value(runtime.redis)
            await server.check_commit_settings(runtime.redis)

        await runtime.timers.run("check_redis_config", check)

    async def adopt_restarted_server() -> None:
        # Which server answers, asked outside the fence: the first one seen is
        # accepted by the pool itself; a different one means Redis restarted.
        fence = runtime.fence
        try:
            current = await run_id(runtime.probe)
        except TRANSIENT_REDIS_ERRORS:
            return
        if fence.cluster and not fence.confirmed and current:
            # The primaries that answer as the worker starts, before anything is applied.
            async with resync.lock:
                fence.accept(current)
            return
        if fence.accepted is not None and current and current != fence.accepted:
            log.warning(
                "Redis restarted (run id %s, was %s); it may lack recent writes: input "
                "stops until every partition resumes from what Redis holds",
                current, fence.accepted, extra=ALWAYS,
            )
            resync.restarted()
            async with resync.lock:  # no batch is half-way through a write
                fence.accept(current)

    async def watch_redis() -> None:
        await adopt_restarted_server()
        if resync.needs_rejoin:
            now = time.monotonic()
            asked = resync.rejoin_requested_at
            if asked is None or now - asked >= REJOIN_AGAIN_S:
                resync.rejoin_requested_at = now
                log.info("rejoining the consumer group to resume from Redis")
                await request_rejoin(app)

    runtime.timers.register(app, watch_redis, WATCH_INTERVAL_S)

    async def take_group_error() -> None:
        taken = await consumer_group.take_error(app)
        if taken is not None:
            metrics.group_error_taken(taken)

    # From the start: a consumer whose first join is refused has no assignment yet.
    runtime.timers.register(app, take_group_error, GROUP_ERRORS_S, from_start=True)

    @app.on_rebalance_complete.connect
    async def resume_from_redis(sender: faust.App, **kwargs: object) -> None:
        # Faust sends this after assignment, while the partitions are still
        # paused and just before it seeks them to their committed offsets, so
        # lowering the committed offset here makes the stream start from the
        # last offset Redis really holds, before any message is fetched.
        assigned = sender.consumer.assignment()
        # No batch is applied until every partition is placed: a batch applied
        # past a partition's hole before the seek below would make per-customer
        # dedup skip the hole's events when they are read again. Wait for the
        # batch in flight, if any, to finish first.
        resync.rewinding = True
        async with resync.lock:
            pass
        committed = await sender.consumer.seek_to_committed()
        deadline = time.monotonic() + RESUME_PATIENCE_S
        attempt = 0
        while True:
            # The assignment is a safe point to accept a restarted server (the
            # watchdog may not run yet while the worker starts): what it holds is
            # what the partitions resume from.
            await adopt_restarted_server()
            epoch = resync.epoch
            try:
                applied = await applied_positions(runtime)
                break
            except TRANSIENT_REDIS_ERRORS as exc:
                if time.monotonic() >= deadline:
                    # Do not hold the rebalance up: apply nothing until Redis
                    # answers, then rejoin and resume (the watchdog does).
                    log.warning("cannot read the applied offsets from Redis (%r); input "
                                "waits for Redis", exc)
                    resync.wait_for_rejoin()
                    return
                await asyncio.sleep(backoff(attempt))
                attempt += 1
        inputs = settings.topics.inputs
        lower = resume_points([*inputs, settings.topics.training], applied, assigned, committed)
        positions.reset(applied, [(tp.topic, tp.partition) for tp in assigned
                                  if tp.topic in inputs])
        if lower:
            # What was read before these seeks is dropped by the agent and read again.
            resync.epoch += 1
            epoch = resync.epoch
            log.warning("Redis is behind the committed offsets; re-reading from %s", lower,
                        extra=ALWAYS)
            # Faust seeks every partition to the group's committed offset right after
            # this hook, so the lower offsets must be committed, not only sought.
            done = await sender.consumer._commit(lower)  # noqa: SLF001 - no public API
            if not done:
                log.warning("cannot commit the offsets to re-read from; input waits and "
                            "the worker rejoins its group to try again", extra=ALWAYS)
                resync.wait_for_rejoin()
                return
            # aiokafka's seek-to-committed leaves a partition alone when the
            # committed offset is 0, so seek explicitly as well. The seek runs on the
            # consumer's own thread: its fetcher may be handing out records right now,
            # and a seek from this thread races it (``Consumer.seek`` does not hop).
            await sender.consumer.seek_wait(lower)
        resync.resumed(epoch)

    @app.agent(channels.inputs, name="cvm.ingest")
    async def ingest(stream: faust.StreamT) -> None:  # noqa: F841 - registered by the decorator
        # take_events acknowledges a batch only after this loop body returns,
        # so no offset is committed before its effect is in Redis. It also
        # acknowledges a batch whose body raised, which is why an unexpected
        # error ends the process instead.
        async for batch in stream.take_events(settings.batch_size, within=within):
            epoch = resync.epoch
            records = [
                RawRecord(
                    topic=e.message.topic,
                    partition=e.message.partition,
                    offset=e.message.offset,
                    key=e.message.key,
                    value=e.message.value,
                )
                for e in batch
            ]
            attempt = 0
            while True:
                async with resync.lock:
                    if resync.rewinding or resync.epoch != epoch:
                        # Read before Redis restarted: applying it now could put an
                        # event past the hole Redis has, and per-customer dedup would
                        # then skip the hole's events. The resume reads it again.
                        resync.dropped += len(records)
                        break
                    try:
                        if await leaves_hole(records):
                            resync.wait_for_rejoin()
                            resync.dropped += len(records)
                            break
                        await runtime.ingestor.process(records)
                        positions.advance((r.topic, r.partition, r.offset) for r in records)
                        break
                    except RETRYABLE as exc:
                        error: BaseException = exc
                    except Exception:
                        # Fail-stop: an unexpected error must not skip the batch. The
                        # process exits without committing, and a restart re-reads it.
                        log.critical("cannot apply batch; stopping the worker", exc_info=True)
                        os._exit(70)
                if app.should_stop:
                    log.warning("stopping while a batch cannot be written (%r); it is not "
                                "acknowledged and will be read again", error)
                    logging.shutdown()
                    os._exit(EXIT_STOPPED_UNWRITTEN)
                delay = backoff(attempt)
                if attempt == 0 or delay >= 5.0 and attempt % 12 == 0:
                    log.warning("batch not written (%r); retrying every %.1fs at most",
                                error, 5.0)
                attempt += 1
                await asyncio.sleep(delay)
            if attempt:
                log.info("batch done after %d failed attempts", attempt)

    return resync
