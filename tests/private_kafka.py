"""A replicated Kafka of the tests' own: three KRaft brokers started by ``devstack up --brokers 3``.

The brokers run on free ports from a folder of their own (the shared broker is not touched);
topics get replication factor 3 and ``min.insync.replicas=2``. A test may SIGKILL one
broker (`kill`); the next `ensure_up` starts it again and waits until every replica is back
in sync, so the tests that share the brokers each find all three serving.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

ROOT = Path(__file__).resolve().parents[1]
DEVSTACK = str(ROOT / "scripts" / "devstack")
BROKERS = 3


def free_base_port(span: int = 6) -> int:
    """A port with `span` free ports from it on."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + span >= 65535:
            continue
        busy = False
        for port in range(base, base + span):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    busy = True
                    break
        if not busy:
            return base
    raise RuntimeError("no run of free ports")


class ReplicatedKafka:
    """Three brokers (each a controller too) under `folder`; see the module docstring."""

    def __init__(self, folder: Path, redis_url: str) -> None:
        self.folder = folder
        base = free_base_port(2 * BROKERS)
        lib = os.environ.get("CVM_DEVSTACK_KAFKA_LIB") or str(ROOT / ".devstack" / "kafka" / "lib")
        self.env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{base}",
            "CVM_DEVSTACK_DIR": str(folder),
            "CVM_DEVSTACK_KAFKA_LIB": lib,
            "CVM_DEVSTACK_STOP_TIMEOUT": "15",
            "REDIS_URL": redis_url,  # answering already: reused, not started
        }
        self.ports = [base + 2 * i for i in range(BROKERS)]
        self.bootstrap = ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def start(self) -> None:
        """Start the brokers (or the ones not running) and wait until all replicas are in sync."""
        subprocess.run([DEVSTACK, "up", "--brokers", str(BROKERS)], check=True, cwd=ROOT,
                       env=self.env, timeout=300)
        client_env = self.folder / "kafka-cluster" / "client.env"
        assert client_env.read_text().strip().split("=", 1)[1] == self.bootstrap
        self.wait_in_sync()

    ensure_up = start

    def stop(self) -> None:
        """SIGKILL every broker (their data is thrown away), then let devstack tidy up."""
        for broker_id in range(1, BROKERS + 1):
            with contextlib.suppress(OSError, ValueError):
                os.killpg(self.pid(broker_id), signal.SIGKILL)
        subprocess.run([DEVSTACK, "down"], cwd=ROOT, env=self.env, timeout=120)

    def admin(self, bootstrap: str | None = None) -> AdminClient:
        return AdminClient({"bootstrap.servers": bootstrap or self.bootstrap, "log_level": 4})

    def pid(self, broker_id: int) -> int:
        """The process of broker `broker_id` (1-based, devstack's node number)."""
        record = self.folder / "kafka-cluster" / f"node{broker_id}" / "kafka" / "devstack.pid"
        return int(json.loads(record.read_text())["pid"])

    def kill(self, broker_id: int) -> None:
        """SIGKILL broker `broker_id`: no controlled shutdown, leadership moves on its loss."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid(broker_id), signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(self.pid(broker_id), 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        raise AssertionError(f"broker {broker_id} still runs after SIGKILL")

    def wait_in_sync(self, timeout_s: float = 120) -> None:
        """Wait until three brokers answer and every partition has all replicas in sync."""
        admin = self.admin()
        deadline = time.monotonic() + timeout_s
        while True:
            md = admin.list_topics(timeout=15)
            lagging = [f"{t}/{p}" for t, topic in md.topics.items()
                       for p, part in topic.partitions.items()
                       if part.leader < 0 or sorted(part.isrs) != sorted(part.replicas)]
            if len(md.brokers) == BROKERS and not lagging:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"brokers {sorted(md.brokers)}; out of sync: {lagging[:10]}")
            time.sleep(0.5)

    def wait_known(self, topics: Iterable[str], timeout_s: float = 60) -> None:
        """Wait until each broker's own metadata lists `topics`, each partition with a leader.

        A topic just created reaches the brokers' metadata one after another; a client that
        asks a broker that does not know it yet is told it does not exist. Each broker is
        asked through a client that knows only that broker.
        """
        wanted = set(topics)
        admins = [self.admin(f"127.0.0.1:{port}") for port in self.ports]
        deadline = time.monotonic() + timeout_s
        while True:
            missing: list[Any] = []
            for port, admin in zip(self.ports, admins, strict=True):
                md = admin.list_topics(timeout=15)
                missing += [(port, t) for t in wanted
                            if t not in md.topics or md.topics[t].error is not None
                            or any(p.leader < 0 for p in md.topics[t].partitions.values())]
            if not missing:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"topics unknown to brokers: {missing[:10]}")
            time.sleep(0.3)
