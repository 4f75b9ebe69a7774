"""The real worker over Kafka SASL_SSL (SCRAM-SHA-512) on a private broker of devstack's."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from load.generator import publish as publish_events
from load.simulator import SimConfig, simulate
from stream_app.connections import quiet_logger, sync_redis
from stream_app.settings import Settings, Topics
from stream_app.worker_process import free_port, wait_until
from tests.conftest import ROOT, TEST_REDIS_DB, WorkerProcess, settings_env
from tests.e2e.helpers import CUSTOMER_PATTERN

pytestmark = [pytest.mark.integration, pytest.mark.secure]


@pytest.fixture
def secure_settings(
    stack: Settings, secure_kafka: dict[str, str], tmp_path: Path
) -> Iterator[Settings]:
    """Test settings whose every Kafka client goes through the SASL_SSL listener."""
    run = uuid.uuid4().hex[:8]
    base = stack.redis_url.rsplit("/", 1)[0]
    s = dataclasses.replace(
        Settings.from_env({**secure_kafka, "REDIS_URL": f"{base}/{TEST_REDIS_DB}"}),
        app_id=f"cvm-secure-{run}",
        topics=Topics.namespaced(f"s{run}"),
        web_port=free_port(),
        data_dir=str(tmp_path / "faust"),
    )
    admin = AdminClient({**s.kafka_config(), "logger": quiet_logger()})
    counts = s.topics.partition_counts
    futures = admin.create_topics([NewTopic(n, c or s.partitions, 1) for n, c in counts.items()])
    for future in futures.values():
        future.result(timeout=30)
    client = sync_redis(s)
    client.flushdb()
    yield s
    client.flushdb()
    client.close()


def test_worker_applies_events_over_sasl_ssl(secure_settings: Settings, tmp_path: Path) -> None:
    s = secure_settings
    assert s.kafka_security.protocol == "SASL_SSL"
    assert s.kafka_security.sasl_mechanism == "SCRAM-SHA-512"
    # The listener really demands TLS and a login: a plaintext client gets nothing from it.
    plain = AdminClient({"bootstrap.servers": s.kafka_bootstrap_servers,
                         "logger": quiet_logger()})
    with pytest.raises(KafkaException):
        plain.list_topics(timeout=3)

    worker = WorkerProcess(s, tmp_path / "worker.log")
    worker.start(deadline_s=120)
    try:
        events = list(simulate(SimConfig(n_customers=40, days=60, acquisition_days=30, seed=3)))
        report = publish_events(events, s)
        assert report.failed == 0 and report.sent == len(events)
        client = sync_redis(s, decode_responses=True)
        customers = {e.customer_id for e in events}

        def applied() -> bool:
            return sum(1 for _ in client.scan_iter(CUSTOMER_PATTERN)) == len(customers)

        assert wait_until(applied, deadline_s=120), worker.log_tail()
        client.close()
        # The worker's consumer group lives on the secure broker: it joined through SASL_SSL.
        admin = AdminClient({**s.kafka_config(), "logger": quiet_logger()})
        group = admin.describe_consumer_groups([s.app_id])[s.app_id].result(timeout=30)
        assert group.members, group
        log = (tmp_path / "worker.log").read_text()
        assert f"via SASL_SSL (SCRAM-SHA-512, user {s.kafka_security.sasl_username})" in log
        assert s.kafka_security.sasl_password.reveal() not in log
    finally:
        worker.stop()


def test_wrong_password_is_one_line(secure_settings: Settings) -> None:
    env = {**os.environ, **settings_env(secure_settings),
           "KAFKA_SASL_PASSWORD": "not-the-password"}
    out = subprocess.run(
        [sys.executable, "-m", "stream_app.cli", "worker"], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    lines = (out.stdout + out.stderr).splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("cvm worker: Kafka at ")
    assert "SASL_SSL (SCRAM-SHA-512, user cvm)" in lines[0]
    assert "authentication" in lines[0].lower(), lines[0]
    assert "not-the-password" not in lines[0]
