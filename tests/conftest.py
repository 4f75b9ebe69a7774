"""Fixtures over the real Kafka broker and Redis server of the dev stack.

The stack is started once per session by ``scripts/devstack up`` (which reuses
servers that already answer). Each test gets its own topics, consumer group and
Redis database contents, so tests do not see each other's data.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest
import redis
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from stream_app import worker_process
from stream_app.connections import sync_redis
from stream_app.settings import Settings, Topics
from stream_app.worker_process import free_port

ROOT = Path(__file__).resolve().parents[1]


def devstack_module() -> ModuleType:
    """``scripts/devstack.py`` as a module (it is a script, not part of the package)."""
    if "devstack" in sys.modules:
        return sys.modules["devstack"]
    spec = importlib.util.spec_from_file_location("devstack", ROOT / "scripts" / "devstack.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["devstack"] = module  # its dataclasses look their module up while defined
    spec.loader.exec_module(module)
    return module
TEST_REDIS_DB = 9


@pytest.fixture(scope="session")
def stack() -> Settings:
    """Start (or reuse) the dev stack once per session."""
    subprocess.run([str(ROOT / "scripts" / "devstack"), "up"], check=True, cwd=ROOT)
    return Settings.from_env()


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment variables that reproduce `settings` in a subprocess."""
    return {
        **settings.namespace_env(),
        "CVM_BATCH_SIZE": str(settings.batch_size),
        "CVM_LOG_LEVEL": "info",
    }


def read_env_file(path: Path) -> dict[str, str]:
    """``NAME=value`` lines of a file such as devstack's secure/client.env."""
    lines = path.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


@pytest.fixture(scope="session")
def secure_kafka(
    stack: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """A private broker with a SASL_SSL listener, started by ``scripts/devstack up --secure``.

    It runs on free ports from a cache folder of its own (the shared broker is not
    touched) and is stopped at the end of the session. Yields the client settings
    devstack wrote (KAFKA_BOOTSTRAP_SERVERS of the SASL_SSL listener, CA, user, password).
    """
    cache = tmp_path_factory.mktemp("secure-kafka")
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "CVM_DEVSTACK_KAFKA_CONTROLLER_PORT": str(free_port()),
        "CVM_DEVSTACK_KAFKA_SECURE_PORT": str(free_port()),
        "CVM_DEVSTACK_DIR": str(cache),
        "CVM_DEVSTACK_KAFKA_LIB": str(ROOT / ".devstack" / "kafka" / "lib"),
        "CVM_DEVSTACK_KAFKA_HEAP_OPTS": "-Xms128m -Xmx384m",
        "REDIS_URL": stack.redis_url,  # answering already: reused, not started
    }
    for name in ("KAFKA_SECURITY_PROTOCOL", "KAFKA_SSL_CAFILE", "KAFKA_SASL_MECHANISM",
                 "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"):
        env.pop(name, None)
    devstack = str(ROOT / "scripts" / "devstack")
    try:
        subprocess.run([devstack, "up", "--secure"], check=True, cwd=ROOT, env=env)
        yield read_env_file(cache / "kafka" / "secure" / "client.env")
    finally:
        subprocess.run([devstack, "down", "kafka"], check=True, cwd=ROOT, env=env)


@contextmanager
def flushed_db(stack: Settings, db: int) -> Iterator[str]:
    """The URL of database `db` of the stack's Redis, emptied before and after use."""
    url = f"{stack.redis_url.rsplit('/', 1)[0]}/{db}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
        client.close()


@pytest.fixture
def settings(stack: Settings, tmp_path: Path) -> Iterator[Settings]:
    """Fresh topics, consumer group and Redis database for one test."""
    base = stack.redis_url.rsplit("/", 1)[0]
    with fresh_settings(stack, tmp_path, f"{base}/{TEST_REDIS_DB}") as s:
        yield s


@contextmanager
def fresh_settings(
    stack: Settings, tmp_path: Path, redis_url: str, redis_cluster: bool = False,
    replicas: int = 1,
) -> Iterator[Settings]:
    """Settings with fresh topics and consumer group, on `redis_url` emptied before and after.

    The topics get `replicas` replicas, and with 3 ``min.insync.replicas=2`` as
    ``scripts/devstack up --brokers 3`` creates them.
    """
    run = uuid.uuid4().hex[:8]
    s = Settings(
        kafka_bootstrap_servers=stack.kafka_bootstrap_servers,
        kafka_security=stack.kafka_security,
        redis_url=redis_url,
        redis_tls=stack.redis_tls,
        redis_cluster=redis_cluster,
        app_id=f"cvm-test-{run}",
        topics=Topics.namespaced(f"t{run}"),
        partitions=4,
        web_port=free_port(),
        data_dir=str(tmp_path / "faust"),
    )
    admin = AdminClient(s.kafka_config())
    counts = s.topics.partition_counts
    names = list(counts)
    config = {"max.message.bytes": str(4 << 20)}
    if replicas >= 3:
        config["min.insync.replicas"] = "2"
    create_topics(admin, [
        NewTopic(n, counts[n] or s.partitions, replicas, config=config) for n in names
    ])
    client = sync_redis(s)
    client.flushdb()
    yield s
    client.flushdb()
    client.close()
    leader = f"{s.app_id}-__assignor-__leader"
    existing = admin.list_topics(timeout=10).topics
    doomed = [n for n in [*names, leader] if n in existing]
    for future in admin.delete_topics(doomed, operation_timeout=30).values():
        try:
            future.result(timeout=30)
        except KafkaException as exc:
            # With several brokers, the one that answered the listing may not know yet
            # that a topic (the worker's leader topic, deleted by the test) is gone.
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise


def create_topics(admin: AdminClient, topics: list[NewTopic]) -> None:
    """Create `topics`, none of which exists yet.

    With several brokers, a request that went out through a bootstrap connection which the
    client replaces by the brokers the metadata names fails with _DESTROY_BROKER: it is
    sent again (a topic it did create then exists already).
    """
    pending = {t.topic: t for t in topics}
    for attempt in range(10):
        for name, future in admin.create_topics(list(pending.values())).items():
            try:
                future.result(timeout=30)
            except KafkaException as exc:
                code = exc.args[0].code()
                if code == KafkaError._DESTROY_BROKER:
                    continue
                if not (attempt and code == KafkaError.TOPIC_ALREADY_EXISTS):
                    raise
            del pending[name]
        if not pending:
            return
        time.sleep(0.2)
    raise AssertionError(f"topics not created: {sorted(pending)}")


def publish(settings: Settings, messages: Iterable[tuple[str, bytes | None, bytes]]) -> int:
    """Publish (topic, key, value) triples and wait for every delivery."""
    producer = Producer({
        **settings.kafka_config(),
        "enable.idempotence": True,
        "linger.ms": 5,
    })
    failures: list[Any] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(err)

    n = 0
    for topic, key, value in messages:
        producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
        producer.poll(0)
        n += 1
    producer.flush(60)
    assert not failures, failures
    return n


def consume_all(settings: Settings, topic: str, expected: int, deadline_s: float = 90) -> list[Any]:
    """Read `topic` from the start until `expected` messages arrived or the deadline."""
    consumer = Consumer({
        **settings.kafka_config(),
        "group.id": f"reader-{uuid.uuid4().hex[:8]}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.subscribe([topic])
    out: list[Any] = []
    end = time.monotonic() + deadline_s
    try:
        while len(out) < expected and time.monotonic() < end:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            out.append(msg)
    finally:
        consumer.close()
    return out


class WorkerProcess(worker_process.WorkerProcess):
    """A real ``cvm worker`` in a subprocess, with the test's settings."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        super().__init__(settings, log_path, settings_env(settings), cwd=ROOT)

    def start(self, wait: bool = True, deadline_s: float = 90) -> None:
        super().start(wait, deadline_s)


@pytest.fixture
def worker(settings: Settings, tmp_path: Path) -> Iterator[WorkerProcess]:
    """A started worker for the test's settings, stopped afterwards."""
    w = WorkerProcess(settings, tmp_path / "worker.log")
    w.start()
    yield w
    w.stop()


def http_json(settings: Settings, path: str) -> tuple[int, Any]:
    """GET a path of the worker's web server; returns (status, decoded JSON)."""
    url = f"http://{settings.web_host}:{settings.web_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, orjson.loads(err.read())
