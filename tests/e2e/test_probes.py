"""Liveness and readiness of a real worker: its Redis (a private server) goes away and
returns; the broker forgets its consumer and refuses it back for a while."""

from __future__ import annotations

import os
import signal
from dataclasses import replace
from pathlib import Path

import pytest
from confluent_kafka import Consumer, ConsumerGroupState

from stream_app.agents.ingest import EXIT_STOPPED_UNWRITTEN
from stream_app.settings import Settings
from stream_app.worker_process import wait_until
from tests.conftest import WorkerProcess, http_json
from tests.e2e.helpers import group_state
from tests.e2e.test_pipeline import make_events, publish_and_wait_for_totals
from tests.private_redis import PrivateRedis

pytestmark = pytest.mark.integration


def test_readyz_follows_redis_while_livez_stays_up(settings: Settings, tmp_path: Path) -> None:
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    s = replace(settings, redis_url=server.url)
    w = WorkerProcess(s, tmp_path / "worker.log")
    try:
        w.start()  # waits for /healthz, that is /readyz
        status, doc = http_json(s, "/readyz")
        assert status == 200 and doc["ready"] is True, doc
        assert doc["consumer"]["state"] in ("assigned", "idle"), doc
        assert http_json(s, "/healthz")[0] == 200

        server.stop()
        assert wait_until(lambda: http_json(s, "/readyz")[0] == 503, 30), w.log_tail()
        status, doc = http_json(s, "/readyz")
        assert doc["redis"]["ok"] is False and doc["ready"] is False, doc
        assert http_json(s, "/healthz")[0] == 503
        live_status, live = http_json(s, "/livez")
        assert live_status == 200 and live["live"] is True, live

        server.start()  # the same port
        assert wait_until(lambda: http_json(s, "/readyz")[0] == 200, 60), w.log_tail()
        w.check()  # the worker rode it out
        assert http_json(s, "/livez")[0] == 200
    finally:
        w.stop()
        server.stop()


def test_a_consumer_the_group_refuses_is_never_silent_and_joins_again_once_it_may(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker forgets the worker's consumer and, while another client holds the group
    with another assignor, refuses it back (InconsistentGroupProtocol). aiokafka hands the
    error to whatever waits on the consumer and to its user. If Faust's fetcher was waiting
    for records, it crashes and the worker exits with an error. If not, the error waits for
    its user, which Faust never is: the worker takes it (`consumer_group.take_error`), so
    that the consumer tries again, and past CVM_OUT_OF_GROUP_S out of its group it reports
    not live and ends itself (`consumer_group.OutOfGroup`). Either way it exits with an
    error, and once the group is free the worker, restarted as a supervisor would, joins
    again: live, ready, and reading."""
    monkeypatch.setenv("CVM_SESSION_TIMEOUT_S", "6")  # the broker's minimum
    monkeypatch.setenv("CVM_OUT_OF_GROUP_S", "4")
    w = WorkerProcess(settings, tmp_path / "worker.log")
    other = Consumer({**settings.kafka_config(), "group.id": settings.app_id,
                      "partition.assignment.strategy": "roundrobin",
                      "enable.auto.commit": False, "session.timeout.ms": 6000})
    closed = False
    try:
        w.start()
        # The timer reads the coordinator every second: the generation comes with it.
        assert wait_until(lambda: http_json(settings, "/livez")[1]["group"]["generation"] >= 1,
                          10)
        generation = http_json(settings, "/livez")[1]["group"]["generation"]

        os.kill(w.pid, signal.SIGSTOP)  # no heartbeat: the broker drops the member
        try:
            assert wait_until(lambda: group_state(settings) == ConsumerGroupState.EMPTY, 60)
            other.subscribe([settings.topics.purchases])

            def holds() -> bool:
                other.poll(0.2)
                return bool(other.assignment())

            assert wait_until(holds, 60), "the other client got no assignment"
        finally:
            os.kill(w.pid, signal.SIGCONT)

        def exited() -> bool:
            return w.proc is not None and w.proc.poll() is not None

        def ended() -> bool:
            other.poll(0.1)  # keep holding the group
            return exited()

        assert wait_until(ended, 60), w.log_tail()
        assert w.proc is not None and w.proc.returncode != 0, w.log_tail()
        log = w.log_path.read_text(errors="replace")
        assert "InconsistentGroupProtocolError" in log, w.log_tail()
        if "Crashed reason=OutOfGroup" in log:  # the worker's own watch ended it
            assert "taken, so that it tries again" in log, w.log_tail()
            assert "out of its group for" in log and "/livez fails" in log, w.log_tail()
        else:  # Faust's fetcher was waiting and met the error first
            assert "Crashed reason=InconsistentGroupProtocolError" in log, w.log_tail()

        other.close()  # the group is free again
        closed = True
        w.start()  # as a supervisor would
        assert wait_until(lambda: http_json(settings, "/livez")[0] == 200, 60), w.log_tail()
        assert wait_until(
            lambda: http_json(settings, "/livez")[1]["group"]["generation"] > generation, 10)
        assert wait_until(lambda: http_json(settings, "/readyz")[0] == 200, 60), w.log_tail()
        publish_and_wait_for_totals(settings, w, make_events(60, customers=6, seed=5))
    finally:
        if not closed:
            other.close()
        w.stop()


def test_a_worker_the_group_never_lets_in_ends_itself_and_starts_again_once_it_may(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that starts while another client holds its group with another assignor is
    refused at every join. With no partition, Faust's fetcher waits for nothing and never
    meets the error: the worker takes it again and again (`consumer_group.take_error`), and
    past CVM_OUT_OF_GROUP_S its own watch ends it with an error status, which any supervisor
    acts on. Started again once the group is free, it joins and reads."""
    monkeypatch.setenv("CVM_OUT_OF_GROUP_S", "10")
    other = Consumer({**settings.kafka_config(), "group.id": settings.app_id,
                      "partition.assignment.strategy": "roundrobin",
                      "enable.auto.commit": False, "session.timeout.ms": 6000})
    w = WorkerProcess(settings, tmp_path / "worker.log")
    closed = False
    try:
        other.subscribe([settings.topics.purchases])

        def holds() -> bool:
            other.poll(0.2)
            return bool(other.assignment())

        assert wait_until(holds, 60), "the other client got no assignment"
        w.start(wait=False)

        def exited() -> bool:
            other.poll(0.1)  # keep holding the group
            return w.proc is not None and w.proc.poll() is not None

        assert wait_until(exited, 90), w.log_tail()
        # 1: Faust's crash; 75 if its stop outlasted CVM_STOP_TIMEOUT_S (the log says so).
        assert w.proc is not None and w.proc.returncode in (1, EXIT_STOPPED_UNWRITTEN), (
            w.log_tail())
        log = w.log_path.read_text(errors="replace")
        assert "InconsistentGroupProtocolError" in log, w.log_tail()
        assert "taken, so that it tries again" in log, w.log_tail()
        assert "Crashed reason=OutOfGroup" in log and "/livez fails" in log, w.log_tail()

        other.close()
        closed = True
        w.start()  # as a supervisor would; waits for /readyz
        publish_and_wait_for_totals(settings, w, make_events(30, customers=3, seed=6))
    finally:
        if not closed:
            other.close()
        w.stop()
