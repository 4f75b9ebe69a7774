"""The exactly-once effect survives crashes: kill the worker mid-stream, then check every record.

A simulated population is published to the real broker in a background thread while a
real ``cvm worker`` runs; the worker is stopped at random moments (seeded) and restarted.
Once it has caught up, every customer's Redis hash must equal totals computed straight
from the published messages (`tests.e2e.helpers.ground_truth`), the applied offsets must
reach the last offset of every input partition, and no offset may ever have been
committed to Kafka before its effect was in Redis.
"""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from load.simulator import SimConfig, SimEvent, simulate
from stream_app.connections import sync_redis
from stream_app.settings import Settings
from stream_app.worker_process import wait_until
from tests.conftest import WorkerProcess
from tests.e2e.helpers import (
    BackgroundPublisher,
    LateStats,
    Truth,
    applied_count,
    applied_offsets,
    committed_offsets,
    count_customers,
    delete_worker_topics,
    describe_mismatches,
    ground_truth,
    last_offsets,
    log_problems,
    mismatches,
    own_redis_db,
    partition_ends,
    with_late_purchases,
)

pytestmark = pytest.mark.integration

SEED = 20_260_611
# A SIGKILLed consumer stays in the group until its session times out, and the restarted
# worker's join waits for that: about 58 s per kill with Faust's default of 60 s, about 9 s
# with 10 s (measured on the dev stack). Only the failure detection changes, not processing.
SESSION_TIMEOUT_S = 10
# When to stop a (re)started worker: (wait for its first new batch in Redis?, then a random
# delay in this range). startup lands during the group join, before any batch; first-batch
# before Faust's first offset commit of the run (every 2.8 s), so everything the run applied
# is read again; mid after 0.5-4 s of work on a backlog.
MOMENTS = {
    "startup": (False, (0.0, 1.0)),
    "first-batch": (True, (0.0, 0.3)),
    "early": (True, (0.2, 0.8)),
    "mid": (True, (0.5, 4.0)),
}
KILL_PLAN = ("startup", "first-batch", "first-batch", "mid", "mid", "mid", "mid")
# Below the worker's throughput on two cores (about 1,250 events/s), so publishing goes on
# through all the kills and every restart finds a backlog.
PUBLISH_RATE = 800.0
CATCH_UP_DEADLINE_S = 300


@dataclass
class Stop:
    """One stop of the worker and what Redis and the consumer group held right after it."""

    moment: str
    signal: str
    ran_s: float  # from /healthz answering to the signal
    progress_s: float | None  # from /healthz answering to the first new batch in Redis
    stop_s: float  # from the signal to the process having exited
    returncode: int | None
    idle: bool  # everything was published and applied already when the signal went out
    applied: dict[str, int]
    committed: dict[str, int]

    @property
    def replayed(self) -> int:
        """Records whose effect is in Redis but whose offset was not committed: read again."""
        return sum(max(n, 0) for n in self.uncommitted().values())

    def uncommitted(self) -> dict[str, int]:
        """Per partition: applied records minus committed ones (negative: committed too early)."""
        return {tp: off + 1 - self.committed.get(tp, 0) for tp, off in self.applied.items()} | {
            tp: -n for tp, n in self.committed.items() if tp not in self.applied and n > 0
        }

    def line(self) -> str:
        progress = "-" if self.progress_s is None else f"{self.progress_s:.1f}s"
        return (
            f"{self.signal:7} {self.moment:11} ran {self.ran_s:5.1f}s (first batch {progress}) "
            f"stopped in {self.stop_s:.1f}s rc={self.returncode} "
            f"applied {sum(o + 1 for o in self.applied.values()):6} "
            f"committed {sum(self.committed.values()):6} re-read {self.replayed}"
            + (" (idle: all applied already)" if self.idle else "")
        )


def population(config: SimConfig, seed: int) -> tuple[list[SimEvent], LateStats]:
    """The simulated events with some purchases held back so they arrive days late."""
    stats = LateStats()
    events = list(with_late_purchases(simulate(config), random.Random(seed), stats=stats))
    return events, stats


def run_then_stop(
    worker: WorkerProcess,
    client: redis.Redis,
    settings: Settings,
    moment: str,
    rng: random.Random,
    sig: int,
    all_applied: Callable[[], bool],
) -> Stop:
    """Let the started worker run until `moment` (see KILL_PLAN), send `sig`, read the state."""
    began = time.monotonic()
    before = applied_count(client)
    progress_s = None
    wait_for_batch, (low, high) = MOMENTS[moment]
    if wait_for_batch:
        progressed = wait_until(
            lambda: applied_count(client) > before or all_applied(), deadline_s=180, every=0.05
        )
        assert progressed, f"no progress after a restart:\n{worker.log_tail()}"
        progress_s = time.monotonic() - began
    time.sleep(rng.uniform(low, high))
    proc = worker.proc
    assert proc is not None
    idle = all_applied()
    signalled = time.monotonic()
    worker.kill(sig)
    stopped = time.monotonic()
    return Stop(
        moment=moment,
        signal=signal.Signals(sig).name,
        ran_s=signalled - began,
        progress_s=progress_s,
        stop_s=stopped - signalled,
        returncode=proc.returncode,
        idle=idle,
        applied=applied_offsets(client),
        committed=committed_offsets(settings),
    )


def assert_exact(
    client: redis.Redis,
    settings: Settings,
    truth: dict[str, Truth],
    worker: WorkerProcess,
    stops: list[Stop],
    log_path: Path,
) -> None:
    """Every record equals the ground truth; offsets reached the end and were never early."""
    history = "\n".join(s.line() for s in stops)
    log = log_path.read_text(errors="replace")
    context = (
        f"stops:\n{history}\nworker warnings and errors:\n{log_problems(log)}\n"
        f"worker log tail:\n{worker.log_tail(40)}"
    )
    for stop in stops:
        early = {tp: n for tp, n in stop.uncommitted().items() if n < 0}
        assert not early, (
            f"offsets committed before their effect reached Redis after a {stop.signal} "
            f"({stop.moment}): {early}\n{context}"
        )
    dead = {tp: n for tp, n in partition_ends(settings, [settings.topics.dead_letter]).items() if n}
    assert not dead, f"valid events were dead-lettered: {dead}\n{context}"
    bad = mismatches(client, truth)
    assert not bad, f"{describe_mismatches(bad)}\n{context}"
    stored = count_customers(client)
    assert stored == len(truth), f"{stored} customers in Redis, {len(truth)} in the events"


def wait_caught_up(
    client: redis.Redis, settings: Settings, worker: WorkerProcess
) -> tuple[dict[str, int], float, int]:
    """Wait until the applied offsets reach every partition's last offset.

    Returns the last offsets, the seconds from the first new batch to caught up and the
    records applied in that time (for the throughput).
    """
    ends = last_offsets(settings)
    start = applied_count(client)
    began = time.monotonic()
    first: list[tuple[float, int]] = []

    def caught_up() -> bool:
        n = applied_count(client)
        if not first and n > start:
            first.append((time.monotonic(), n))
        return applied_offsets(client) == ends

    done = wait_until(caught_up, deadline_s=CATCH_UP_DEADLINE_S, every=0.1)
    assert done, (
        f"not caught up after {CATCH_UP_DEADLINE_S}s: applied {applied_offsets(client)}, "
        f"last offsets {ends}\n{worker.log_tail()}"
    )
    t0, n0 = first[0] if first else (began, start)
    return ends, time.monotonic() - t0, sum(o + 1 for o in ends.values()) - n0


@pytest.mark.slow
def test_sigkill_at_random_moments_leaves_every_record_exact(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CVM_SESSION_TIMEOUT_S", str(SESSION_TIMEOUT_S))
    began = time.monotonic()
    events, late = population(SimConfig(n_customers=3000, seed=SEED, days=180), SEED)
    kinds = Counter(e.topic_kind for e in events)
    assert len(events) >= 50_000 and len(kinds) == 3, kinds
    assert late.late >= 200 and late.first_orders_late >= 100, late
    truth = ground_truth(events, settings.default_margin_rate)
    rng = random.Random(SEED + 1)
    plan = list(KILL_PLAN)
    rng.shuffle(plan)
    log_path = tmp_path / "worker.log"

    with own_redis_db(settings) as s:
        client = sync_redis(s, decode_responses=True)
        worker = WorkerProcess(s, log_path)
        publisher = BackgroundPublisher(events, s, rate=PUBLISH_RATE)
        stops: list[Stop] = []

        def all_applied() -> bool:
            return publisher.done and applied_offsets(client) == last_offsets(s)

        try:
            worker.start()
            publisher.start()
            for moment in plan:
                stop = run_then_stop(worker, client, s, moment, rng, signal.SIGKILL, all_applied)
                stops.append(stop)
                worker.start()
            report = publisher.join()
            ends, seconds, applied = wait_caught_up(client, s, worker)
            assert_exact(client, s, truth, worker, stops, log_path)
        finally:
            publisher.stop.set()
            worker.stop()
            client.close()
            delete_worker_topics(s)

    replayed = sum(stop.replayed for stop in stops)
    print(
        f"\n{len(events)} events ({dict(kinds)}), {len(truth)} customers, {late.late} late "
        f"purchases ({late.first_orders_late} first orders, up to {late.max_days:.0f} days), "
        f"{len(ends)} partitions\npublished in {report.seconds:.1f}s; "
        f"{len(stops)} SIGKILLs, {replayed} records re-read after restarts:\n"
        + "\n".join(stop.line() for stop in stops)
        + f"\ncatch-up once publishing ended: {applied} records in {seconds:.1f}s = "
        f"{applied / max(seconds, 1e-9):.0f} records/s; test took {time.monotonic() - began:.0f}s"
    )
    assert sum(not stop.idle for stop in stops) >= 5, "fewer than five kills mid-stream"
    assert replayed > 0, "no kill left applied but uncommitted records: dedup never exercised"


def test_sigterm_mid_stream_then_restart_leaves_every_record_exact(
    settings: Settings, tmp_path: Path
) -> None:
    began = time.monotonic()
    events, late = population(SimConfig(n_customers=600, seed=SEED + 2, days=100), SEED + 2)
    kinds = Counter(e.topic_kind for e in events)
    assert len(events) >= 5_000 and len(kinds) == 3, kinds
    assert late.late >= 20, late
    truth = ground_truth(events, settings.default_margin_rate)
    rng = random.Random(SEED + 3)
    log_path = tmp_path / "worker.log"

    with own_redis_db(settings) as s:
        client = sync_redis(s, decode_responses=True)
        worker = WorkerProcess(s, log_path)
        publisher = BackgroundPublisher(events, s, rate=2_500.0)
        stops: list[Stop] = []

        def all_applied() -> bool:
            return publisher.done and applied_offsets(client) == last_offsets(s)

        try:
            worker.start()
            publisher.start()
            for moment in ("early", "first-batch"):
                stop = run_then_stop(worker, client, s, moment, rng, signal.SIGTERM, all_applied)
                stops.append(stop)
                assert stop.returncode != -signal.SIGKILL, (
                    f"the worker ignored SIGTERM for 60 s and was killed:\n{worker.log_tail()}"
                )
                worker.start()
            publisher.join()
            ends, seconds, applied = wait_caught_up(client, s, worker)
            assert_exact(client, s, truth, worker, stops, log_path)
        finally:
            publisher.stop.set()
            worker.stop()
            client.close()
            delete_worker_topics(s)

    assert not any(stop.idle for stop in stops), "a SIGTERM came after the stream was done"
    print(
        f"\n{len(events)} events, {len(truth)} customers, {late.late} late purchases\n"
        + "\n".join(stop.line() for stop in stops)
        + f"\ncatch-up once publishing ended: {applied} records in {seconds:.1f}s; "
        f"test took {time.monotonic() - began:.0f}s"
    )
