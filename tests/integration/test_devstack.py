"""The dev stack that `scripts/devstack up` gives: a real Kafka broker and a real Redis.

These tests do not start anything: the test runner runs `scripts/devstack up` first.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from stream_app.settings import Settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DEVSTACK = ROOT / "scripts" / "devstack"


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings.from_env()


@pytest.fixture(scope="module")
def status() -> dict:
    proc = subprocess.run(
        [str(DEVSTACK), "status", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, (
        f"`scripts/devstack status` exited {proc.returncode} (is the stack up? run "
        f"`scripts/devstack up`)\n{proc.stdout}\n{proc.stderr}"
    )
    return json.loads(proc.stdout)


def test_status_reports_both_services_answering(settings: Settings) -> None:
    proc = subprocess.run(
        [str(DEVSTACK), "status"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    sys.stdout.write(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = {line.split()[0]: line for line in proc.stdout.splitlines() if line.strip()}
    for service in ("kafka", "redis"):
        assert service in lines, proc.stdout
        assert " answering " in lines[service], lines[service]
        assert "NOT answering" not in lines[service], lines[service]
    assert f"{len(settings.topics.partition_counts)}/" in lines["topics"]


def test_status_json_matches_configuration(status: dict, settings: Settings) -> None:
    assert status["kafka"]["answering"] is True
    assert status["redis"]["answering"] is True
    assert status["kafka"]["address"] == settings.kafka_bootstrap_servers
    assert status["redis"]["address"] == settings.redis_url


def test_topics_exist_with_configured_partitions(settings: Settings) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    metadata = admin.list_topics(timeout=15)
    wanted = settings.topics.partition_counts
    expected = tuple(wanted)
    assert len(set(expected)) == 7
    missing = [t for t in expected if t not in metadata.topics]
    assert not missing, f"topics missing (run `scripts/devstack up`): {missing}"
    counts = {t: len(metadata.topics[t].partitions) for t in expected}
    assert counts == {t: wanted[t] or settings.partitions for t in expected}
    for topic in expected:
        for partition in metadata.topics[topic].partitions.values():
            assert partition.leader >= 0, f"{topic}[{partition.id}] has no leader"
            assert len(partition.replicas) == 1


def test_redis_appendonly_when_devstack_started_it(status: dict, settings: Settings) -> None:
    import redis

    if not status["redis"]["started_by_devstack"]:
        pytest.skip("Redis was already running; devstack reused it and does not own its config")
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5, decode_responses=True)
    try:
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
    finally:
        client.close()


def test_redis_runs_with_the_engine_settings_when_devstack_started_it(
        status: dict, settings: Settings) -> None:
    import redis

    from stream_app.store.server import SERVER_SETTINGS

    if not status["redis"]["started_by_devstack"]:
        pytest.skip("Redis was already running; devstack reused it and does not own its config")
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5, decode_responses=True)
    try:
        found = {name: client.config_get(name)[name] for name in SERVER_SETTINGS}
    finally:
        client.close()
    assert found == {name: str(value) for name, value in SERVER_SETTINGS.items()}
