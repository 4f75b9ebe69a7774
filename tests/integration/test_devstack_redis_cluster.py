"""`scripts/devstack up --redis-cluster`: three masters in cluster mode, the worker's settings.

It runs from a cache folder and ports of its own (the session's Redis and Kafka are reused,
not touched) and is stopped at the end with `down redis-cluster`.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream_app.connections import sync_redis
from stream_app.settings import Settings
from stream_app.store.server import SERVER_SETTINGS
from tests.conftest import ROOT, read_env_file
from tests.private_cluster import free

pytestmark = pytest.mark.integration

DEVSTACK = ROOT / "scripts" / "devstack"


def _base_port() -> int:
    rng = random.Random()
    while True:
        base = rng.randrange(21_000, 29_000)
        if all(free(p) and free(p + 10_000) for p in range(base, base + 3)):
            return base


@pytest.fixture
def env(stack: Settings, tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {
        **os.environ,
        "CVM_DEVSTACK_DIR": str(tmp_path / "devstack"),
        "CVM_DEVSTACK_KAFKA_LIB": str(ROOT / ".devstack" / "kafka" / "lib"),
        "CVM_DEVSTACK_REDIS_CLUSTER_PORT": str(_base_port()),
        "KAFKA_BOOTSTRAP_SERVERS": stack.kafka_bootstrap_servers,  # answering: reused
        "REDIS_URL": stack.redis_url,
    }
    env.pop("CVM_REDIS_CLUSTER", None)
    try:
        yield env
    finally:
        subprocess.run([str(DEVSTACK), "down", "redis-cluster"], env=env, cwd=ROOT,
                       capture_output=True, timeout=120)


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(DEVSTACK), *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=180, stdin=subprocess.DEVNULL)


def test_up_redis_cluster_starts_three_masters_and_prints_the_settings(
    env: dict[str, str], tmp_path: Path
) -> None:
    up = _run(env, "up", "--redis-cluster")
    assert up.returncode == 0, up.stdout + up.stderr
    base = int(env["CVM_DEVSTACK_REDIS_CLUSTER_PORT"])
    url = f"redis://127.0.0.1:{base}/0"
    assert f"workers use REDIS_URL={url} CVM_REDIS_CLUSTER=true" in up.stdout, up.stdout
    client_env = read_env_file(tmp_path / "devstack" / "redis-cluster" / "client.env")
    assert client_env == {"REDIS_URL": url, "CVM_REDIS_CLUSTER": "true"}

    settings = Settings.from_env({**env, **client_env})
    assert settings.redis_cluster
    client = sync_redis(settings)
    try:
        masters = {node.port for node in client.get_primaries()}
        assert masters == {base, base + 1, base + 2}
        assert client.cluster_info()["cluster_state"] == "ok"
        for key in ("cvm:{p0}:applied", "cvm:{p1}:applied", "cvm:{p2}:applied"):
            client.hset(key, "t/0", 1)
        owners = {client.get_node_from_key(k).port for k in
                  ("cvm:{p0}:applied", "cvm:{p1}:applied", "cvm:{p2}:applied")}
        assert len(owners) > 1  # the partitions' keys are spread over the masters
        for name, value in SERVER_SETTINGS.items():  # every master as the dev stack's Redis
            config = client.config_get(name, target_nodes=client.PRIMARIES)
            assert {v[name] for v in config.values()} == {str(value)}, name
    finally:
        client.close()

    again = _run(env, "up", "--redis-cluster")  # idempotent: reuses the running masters
    assert again.returncode == 0 and "started pid" not in again.stdout, again.stdout

    status = _run(env, "status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    cluster = json.loads(status.stdout)["redis-cluster"]
    assert cluster["answering"] and cluster["started_by_devstack"], cluster
    assert len(cluster["pids"]) == 3

    down = _run(env, "down", "redis-cluster")
    assert down.returncode == 0, down.stdout + down.stderr
    assert down.stdout.count("stopping pid") == 3, down.stdout
    gone = json.loads(_run(env, "status", "--json").stdout)
    assert "redis-cluster" not in gone  # no node left, and the worker is not on a cluster
