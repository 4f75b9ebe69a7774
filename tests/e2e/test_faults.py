"""Servers fail under a running engine; the workers recover by themselves and stay exact.

While a simulated population is published, two real workers run against a Kafka broker
and a Redis server of this test's own (started on free ports in a temporary directory,
since the test kills them):

a. Redis is SIGKILLed and restarted twice: once from its own AOF, once from an older copy
   of its data, so it comes back without writes the workers made and they must rewind;
b. the broker is SIGTERMed and kept down for 20 s, then SIGKILLed, restarted each time;
c. one of the two workers is SIGKILLed and restarted.

Also: a worker told to stop while both servers are down exits by its deadline
(`CVM_STOP_TIMEOUT_S`), and the next one applies everything exactly once.

Only the killed worker of (c) is restarted by the test. Afterwards every customer record must
equal totals computed straight from the published messages (`tests.e2e.helpers`).
"""

from __future__ import annotations

import dataclasses
import shutil
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from confluent_kafka import ConsumerGroupState, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from load.generator import publish as publish_events
from load.simulator import SimConfig, simulate
from stream_app.agents.ingest import EXIT_STOPPED_UNWRITTEN
from stream_app.settings import Settings, Topics
from stream_app.store.keys import customer_key
from stream_app.worker_process import WorkerProcess, free_port, wait_until
from tests.conftest import ROOT, devstack_module, settings_env
from tests.e2e.helpers import (
    BackgroundPublisher,
    applied_count,
    applied_offsets,
    count_customers,
    describe_mismatches,
    event_coordinates,
    ground_truth,
    group_state,
    last_offsets,
    log_problems,
    mismatches,
)

pytestmark = pytest.mark.integration

SEED = 20_261_129
# A SIGKILLed worker's membership lingers until its session times out; a short one keeps
# phase (c) short. Only failure detection changes, not processing.
SESSION_TIMEOUT_S = 6
PUBLISH_RATE = 250.0
KAFKA_DOWN_S = 20
CATCH_UP_DEADLINE_S = 240


class PrivateStack:
    """A Kafka broker and a Redis server of this test's own, started with devstack's code."""

    def __init__(self, base: Path) -> None:
        self.ds = devstack_module()
        kafka_port, redis_port = free_port(), free_port()
        controller = free_port()
        shared = self.ds.Config.load()
        bootstrap = f"127.0.0.1:{kafka_port}"
        self.cfg: Any = dataclasses.replace(
            shared,
            bootstrap=bootstrap,
            # The clients that check the broker answers must ask this broker, not the
            # shared stack's: else a start returns as soon as the port opens.
            kafka_client={**shared.kafka_client, "bootstrap.servers": bootstrap},
            kafka_host="127.0.0.1",
            kafka_port=kafka_port,
            controller_port=controller,
            heap_opts=["-Xms256m", "-Xmx512m"],
            redis_url=f"redis://127.0.0.1:{redis_port}/0",
            redis_host="127.0.0.1",
            redis_port=redis_port,
            redis_password=None,
            redis_startable=None,
            cache=base,
            start_timeout=120.0,
        )
        (self.cfg.kafka_dir / "logs").mkdir(parents=True, exist_ok=True)
        self.cfg.redis_dir.mkdir(parents=True, exist_ok=True)
        self.kafka: subprocess.Popen[bytes] | None = None
        self.redis: subprocess.Popen[bytes] | None = None
        self._java: tuple[str, Path] | None = None
        self._redis_server: str | None = None

    @property
    def redis_data(self) -> Path:
        return self.cfg.redis_dir / "data"

    def start_kafka(self) -> None:
        if self._java is None:
            self._java = self.ds.prepare_kafka(self.cfg)
        t0 = time.monotonic()
        self.kafka = self.ds.start_kafka(self.cfg, *self._java)
        self.ds.wait_kafka(self.cfg, self.kafka, None, t0)

    def start_redis(self) -> None:
        if self._redis_server is None:
            self._redis_server = self.ds.prepare_redis(self.cfg)
        t0 = time.monotonic()
        self.redis = self.ds.start_redis(self.cfg, self._redis_server)
        self.ds.wait_redis(self.cfg, self.redis, None, t0)

    @staticmethod
    def _signal(proc: subprocess.Popen[bytes] | None, sig: int) -> None:
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)

    def kill_kafka(self, sig: int = signal.SIGKILL) -> None:
        self._signal(self.kafka, sig)

    def kill_redis(self, sig: int = signal.SIGKILL) -> None:
        self._signal(self.redis, sig)

    def stop(self) -> None:
        self.kill_redis(signal.SIGKILL)
        self.kill_kafka(signal.SIGKILL)


@pytest.fixture
def private_stack(tmp_path: Path) -> Iterator[PrivateStack]:
    stack = PrivateStack(tmp_path / "stack")
    try:
        stack.start_kafka()
        stack.start_redis()
        yield stack
    finally:
        stack.stop()


def _create_topics(settings: Settings) -> None:
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    counts = settings.topics.partition_counts
    futures = admin.create_topics([
        NewTopic(n, counts[n] or settings.partitions, 1,
                 config={"max.message.bytes": str(4 << 20)})
        for n in counts
    ])
    for future in futures.values():
        future.result(timeout=60)


def _private_settings(stack: PrivateStack, tmp_path: Path, name: str) -> Settings:
    """Settings of a run on `stack`: its own app id and topics (created here), 4 partitions."""
    run = uuid.uuid4().hex[:8]
    settings = Settings(
        kafka_bootstrap_servers=stack.cfg.bootstrap,
        redis_url=stack.cfg.redis_url,
        app_id=f"cvm-{name}-{run}",
        topics=Topics.namespaced(f"{name[0]}{run}"),
        partitions=4,
        data_dir=str(tmp_path / "faust"),
    )
    _create_topics(settings)
    return settings


def _worker(settings: Settings, log: Path) -> WorkerProcess:
    env = {**settings_env(settings), "CVM_SESSION_TIMEOUT_S": str(SESSION_TIMEOUT_S)}
    return WorkerProcess(settings, log, env, cwd=ROOT)


@pytest.mark.slow
def test_workers_recover_from_redis_kafka_and_worker_failures_by_themselves(
    private_stack: PrivateStack, tmp_path: Path
) -> None:
    began = time.monotonic()
    stack = private_stack
    base = _private_settings(stack, tmp_path, "faults")
    events = list(simulate(SimConfig(n_customers=1200, seed=SEED, days=150)))
    kinds = Counter(e.topic_kind for e in events)
    assert len(events) >= 15_000 and len(kinds) == 3, kinds
    truth = ground_truth(events, base.default_margin_rate)

    settings = [dataclasses.replace(base, web_port=free_port(), data_dir=str(tmp_path / f"w{i}"))
                for i in (1, 2)]
    logs = [tmp_path / "worker1.log", tmp_path / "worker2.log"]
    workers = [_worker(s, log) for s, log in zip(settings, logs, strict=True)]
    client = redis.Redis.from_url(base.redis_url, decode_responses=True)
    publisher = BackgroundPublisher(events, base, rate=PUBLISH_RATE)
    steps: list[str] = []

    def applied() -> int:
        try:
            return applied_count(client)
        except redis.RedisError:
            return -1

    def progress(what: str, deadline_s: float = 120) -> None:
        """Wait until the workers apply new records or hold all the broker has (they
        recovered from `what`). The publisher is a client of the broker as well and may
        take longer to deliver again; the end of the test waits for all it sent."""
        before = applied()
        t0 = time.monotonic()
        ok = wait_until(lambda: applied() > before or before > 0 and caught_up(),
                        deadline_s=deadline_s, every=0.2)
        for w in workers:
            w.check()
        assert ok, f"no progress after {what}:\n{context()}"
        steps.append(f"{what}: progress after {time.monotonic() - t0:.1f}s, "
                     f"{applied()} records applied, {publisher.status()}")

    def caught_up() -> bool:
        # Asked while the servers restart: a broker that is not the leader yet answers
        # NOT_LEADER_FOR_PARTITION for the partition ends.
        try:
            return applied_offsets(client) == last_offsets(base)
        except (redis.RedisError, KafkaException):
            return False

    def rewinds() -> int:
        """How often a worker resumed partitions from below the committed offsets."""
        return sum(log.read_text(errors="replace").count("Redis is behind the committed")
                   for log in logs if log.exists())

    def where(customers: list[str]) -> str:
        """The Kafka coordinates of `customers`' events and the offsets their records hold."""
        lines = []
        for cid, coords in event_coordinates(base, customers).items():
            held = client.hget(customer_key(cid, base.partitions), "_a")
            lines.append(f"  {cid}: record holds {held}; events at {coords}")
        return "\n".join(lines)

    def context() -> str:
        parts = ["steps:", *steps]
        for w, log in zip(workers, logs, strict=True):
            text = log.read_text(errors="replace") if log.exists() else ""
            parts += [f"{log.name} warnings and errors:", log_problems(text),
                      f"{log.name} tail:", w.log_tail(30)]
        return "\n".join(parts)

    try:
        for w in workers:
            w.start(deadline_s=120)
        publisher.start()
        progress("start")

        # (a1) Redis killed, restarted from its own AOF.
        stack.kill_redis(signal.SIGKILL)
        time.sleep(2)
        stack.start_redis()
        progress("Redis SIGKILL, restart from its AOF")

        # (a2) Redis killed, restarted from an older copy of its data: it lacks the
        # workers' last seconds of writes while Kafka has committed past them.
        older = tmp_path / "redis-older"
        shutil.copytree(stack.redis_data, older)
        time.sleep(6)  # the workers commit offsets to Kafka every 2.8 s
        before_kill = applied()
        rewinds_before = rewinds()
        stack.kill_redis(signal.SIGKILL)
        shutil.rmtree(stack.redis_data)
        shutil.copytree(older, stack.redis_data)
        stack.start_redis()
        restored = applied()
        assert restored < before_kill, "precondition: the older copy lacks recent writes"
        steps.append(f"Redis restored from a copy with {restored} records applied "
                     f"(it had {before_kill})")
        progress("Redis SIGKILL, restart from an older copy")
        assert rewinds() > rewinds_before, (
            f"no partition was rewound to what the older copy holds:\n{context()}")

        # (b1) the broker stopped cleanly and kept down; (b2) killed.
        stack.kill_kafka(signal.SIGTERM)
        time.sleep(KAFKA_DOWN_S)
        stack.start_kafka()
        progress("Kafka SIGTERM, 20 s down, restart", deadline_s=180)
        stack.kill_kafka(signal.SIGKILL)
        stack.start_kafka()
        progress("Kafka SIGKILL, restart", deadline_s=180)

        # (c) one of the two workers killed and restarted.
        workers[1].kill(signal.SIGKILL)
        workers[1].start(deadline_s=120)
        progress("worker SIGKILL, restart")

        publisher.join(timeout=600)
        done = wait_until(caught_up, deadline_s=CATCH_UP_DEADLINE_S, every=0.5)
        assert done, f"not caught up:\n{context()}"
        for w in workers:
            w.check()
        bad = mismatches(client, truth)
        assert not bad, f"{describe_mismatches(bad)}\n{where(list(bad)[:8])}\n{context()}"
        assert count_customers(client) == len(truth)
        text = logs[0].read_text(errors="replace") + logs[1].read_text(errors="replace")
        assert "Redis restarted" in text, context()
        # And a clean stop is clean after all that, for a worker stopped in a settled group.
        # One stopped while its group rebalances (the other worker just left it) rejoins
        # as it stops and may pass CVM_STOP_TIMEOUT_S: it then exits 75 with nothing lost,
        # the case `test_a_worker_stopped_while_kafka_and_redis_are_down...` covers.
        for w in workers:
            settled = wait_until(lambda: group_state(base) == ConsumerGroupState.STABLE,
                                 deadline_s=120, every=0.5)
            assert settled, (
                f"the consumer group did not settle:\n{context()}")
            proc = w.proc
            assert proc is not None
            assert not w.stop(timeout_s=60), f"a worker ignored SIGTERM:\n{context()}"
            assert proc.returncode == 0, f"exit status {proc.returncode}:\n{context()}"
        text = logs[0].read_text(errors="replace") + logs[1].read_text(errors="replace")
        assert "ProducerSendError" not in text and "Crashed reason" not in text, context()
        print("\n" + "\n".join(steps) + f"\n{len(events)} events, {len(truth)} customers; "
              f"test took {time.monotonic() - began:.0f}s")
    finally:
        publisher.stop.set()
        for w in workers:
            w.stop(timeout_s=30)
        client.close()


def test_sigterm_right_after_applying_everything_stops_cleanly(
    settings: Settings, tmp_path: Path
) -> None:
    # Event time runs through months in seconds here, so customers fall due for rescoring
    # (and their churn snapshots for labels) faster than the rescoring timer's 200 per run
    # can revisit them: right after the last batch it is still at work, publishing labelled
    # examples and alerts run after run, and the SIGTERM finds it publishing.
    events = list(simulate(SimConfig(n_customers=1000, seed=SEED + 1, days=180)))
    log = tmp_path / "worker.log"
    env = {**settings_env(settings), "CVM_RESCORE_INTERVAL_S": "0.2"}
    worker = WorkerProcess(settings, log, env, cwd=ROOT)
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        worker.start()
        report = publish_events(events, settings)
        assert report.sent == len(events) and not report.failed, report.summary()
        ends = last_offsets(settings)
        assert wait_until(lambda: applied_offsets(client) == ends, deadline_s=180, every=0.05), (
            worker.log_tail())
        proc = worker.proc
        assert proc is not None
        forced = worker.stop(timeout_s=60)
    finally:
        worker.stop()
        client.close()
    text = log.read_text(errors="replace")
    assert not forced, f"the worker ignored SIGTERM for 60 s:\n{worker.log_tail()}"
    assert "ProducerSendError" not in text and "Crashed reason" not in text, (
        log_problems(text) + "\n" + worker.log_tail(40))
    assert proc.returncode == 0, f"exit status {proc.returncode}:\n{worker.log_tail(40)}"


@pytest.mark.slow
def test_a_worker_stopped_while_kafka_and_redis_are_down_exits_and_the_next_loses_nothing(
    private_stack: PrivateStack, tmp_path: Path
) -> None:
    # Stopping commits offsets, and aiokafka retries a commit for as long as the group's
    # coordinator is unreachable: without a deadline this worker would never exit.
    stack = private_stack
    settings = _private_settings(stack, tmp_path, "stop")
    events = list(simulate(SimConfig(n_customers=300, seed=SEED + 2, days=120)))
    truth = ground_truth(events, settings.default_margin_rate)
    half = len(events) // 2
    log = tmp_path / "worker.log"
    env = {**settings_env(settings), "CVM_STOP_TIMEOUT_S": "5"}
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    worker = WorkerProcess(settings, log, env, cwd=ROOT)
    try:
        worker.start()
        report = publish_events(events[:half], settings)
        assert report.sent == half and not report.failed, report.summary()
        # Idle, with every event applied: no batch is waiting for Redis (that path exits
        # on its own), only the stop's offset commit waits for the broker.
        first = last_offsets(settings)
        assert wait_until(lambda: applied_offsets(client) == first, deadline_s=120,
                          every=0.1), worker.log_tail()
        time.sleep(1)
        client.close()

        stack.kill_kafka(signal.SIGKILL)
        stack.kill_redis(signal.SIGKILL)
        proc = worker.proc
        assert proc is not None
        proc.send_signal(signal.SIGTERM)
        # A bound on the test's patience, not a performance target.
        assert wait_until(lambda: proc.poll() is not None, deadline_s=120, every=0.2), (
            f"the worker did not exit with Kafka and Redis down:\n{worker.log_tail(40)}")
        text = log.read_text(errors="replace")
        assert proc.returncode == EXIT_STOPPED_UNWRITTEN, (
            f"exit status {proc.returncode}:\n{worker.log_tail(40)}")
        assert "did not stop within 5s of SIGTERM" in text, worker.log_tail(40)

        # The servers come back (Redis from its AOF); a new worker takes the rest.
        stack.start_kafka()
        stack.start_redis()
        client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
        worker.start()
        report = publish_events(events[half:], settings, flush_timeout=300.0)
        assert report.sent == len(events) - half and not report.failed, report.summary()
        ends = last_offsets(settings)
        assert wait_until(lambda: applied_offsets(client) == ends, deadline_s=240, every=0.2), (
            worker.log_tail(40))
        bad = mismatches(client, truth)
        assert not bad, f"{describe_mismatches(bad)}\n{worker.log_tail(40)}"
    finally:
        worker.stop(timeout_s=30)
        client.close()
