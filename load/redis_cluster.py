"""A Redis Cluster of one's own: Debian's ``redis-server`` in cluster mode on free ports.

Used by the tests (`tests.private_cluster`) and the scaling benchmark (`load.bench_scale`):
`masters` masters and `replicas` replicas each, no persistence, loopback only.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
from pathlib import Path

import redis

from stream_app.store.server import LISTPACK_VALUE_BYTES
from stream_app.worker_process import wait_until

__all__ = ["PrivateCluster", "RedisMissing", "cluster_ports", "free"]


class RedisMissing(RuntimeError):
    """``redis-server`` or ``redis-cli`` is not installed."""


class PrivateCluster:
    """`masters` masters (and `replicas` replicas each), no persistence, loopback only."""

    def __init__(self, workdir: Path, masters: int = 3, replicas: int = 0) -> None:
        self.workdir = workdir
        self.ports = cluster_ports(masters * (1 + replicas))
        self.replicas = replicas
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def pids(self) -> dict[int, int]:
        """Port -> pid of every node still running."""
        return {port: proc.pid for port, proc in zip(self.ports, self.procs, strict=True)
                if proc.poll() is None}

    def start(self) -> None:
        exe, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if exe is None or cli is None:
            raise RedisMissing("redis-server and redis-cli are not installed")
        for port in self.ports:
            folder = self.workdir / str(port)
            folder.mkdir(parents=True, exist_ok=True)
            with open(folder / "redis.log", "ab") as log:
                self.procs.append(subprocess.Popen(
                    [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "no", "--dir", str(folder), "--cluster-enabled", "yes",
                     "--cluster-config-file", str(folder / "nodes.conf"),
                     "--cluster-node-timeout", "2000",
                     "--hash-max-listpack-value", str(LISTPACK_VALUE_BYTES)],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        for port in self.ports:
            client = redis.Redis(port=port)
            try:
                if not wait_until(lambda c=client: _pings(c), 30):
                    raise RuntimeError(f"no redis-server on {port}")
            finally:
                client.close()
        subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            check=True, capture_output=True, timeout=60)
        client = redis.Redis(port=self.ports[0])
        try:
            if not wait_until(lambda: client.cluster("info").get("cluster_state") == "ok"
                              and self._replicas_linked(), 60, every=0.2):
                raise RuntimeError("the cluster did not come up")
        finally:
            client.close()

    def _replicas_linked(self) -> bool:
        """Every node sees every replica as one, and each replica's link is up."""
        want = len(self.ports) - len(self.ports) // (1 + self.replicas)
        for port in self.ports:
            node = redis.Redis(port=port, decode_responses=True)
            try:
                nodes = node.cluster("nodes")
                if sum("slave" in info["flags"] for info in nodes.values()) != want:
                    return False
                info = node.info("replication")
                if info["role"] == "slave" and info.get("master_link_status") != "up":
                    return False
            except redis.RedisError:
                return False
            finally:
                node.close()
        return True

    def stop(self) -> None:
        procs, self.procs = self.procs, []
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def free(port: int) -> bool:
    """Whether `port` can be bound on the loopback address."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_ports(n: int) -> list[int]:
    """`n` free ports whose cluster bus ports (+10000) are free too (both below 65536)."""
    rng = random.Random()
    ports: list[int] = []
    while len(ports) < n:
        port = rng.randrange(20_000, 30_000)
        if port not in ports and free(port) and free(port + 10_000):
            ports.append(port)
    return ports
