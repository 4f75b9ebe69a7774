"""What the benchmark runs on: isolated namespaces, worker processes, CPU accounting.

Every measurement gets a `Namespace` of its own on the dev stack: topics ``b<run>.*``, a
consumer group and app id ``cvm-bench-<run>``, and a Redis database of its own (one of
`BENCH_DBS`, claimed with a key so two benchmarks never share one), all removed afterwards.
Memory is measured on a `PrivateRedis`: a ``redis-server`` of our own without persistence, so
``INFO memory`` counts nothing but the benchmark's keys.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from stream_app import worker_process
from stream_app.connections import sync_redis
from stream_app.settings import Settings, Topics
from stream_app.store.server import SERVER_SETTINGS
from stream_app.worker_process import free_port, wait_until

ROOT = Path(__file__).resolve().parents[1]
#: Redis databases of the dev server the benchmark may claim (tests use 9, the demo 0).
BENCH_DBS = (10, 11, 12, 13, 14, 15)
CLAIM_KEY = "bench:claim"
_CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- machine


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _mem_total_gib() -> float:
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    return float("nan")


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def machine_info(stack: Settings) -> dict[str, Any]:
    """Date, machine and versions, for the head of the report."""
    redis_version = "unknown"
    server_settings = dict.fromkeys(SERVER_SETTINGS, "unknown")
    with contextlib.suppress(Exception):
        client = sync_redis(stack)
        redis_version = str(client.info("server")["redis_version"])
        for name in SERVER_SETTINGS:
            reply = client.config_get(name)
            server_settings[name] = str(next(iter(reply.values()), "unknown"))
        client.close()
    kafka_jar = sorted((ROOT / ".devstack" / "kafka" / "lib").glob("kafka_2.13-*.jar"))
    kafka_version = kafka_jar[-1].stem.split("-", 1)[1] if kafka_jar else "unknown"
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "nproc": os.cpu_count(),
        "memory_gib": _mem_total_gib(),
        "cpu_model": _cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "kafka": kafka_version,
        "redis_server": redis_version,
        **{f"redis {name}": value for name, value in server_settings.items()},
        "faust-streaming": _version("faust-streaming"),
        "aiokafka": _version("aiokafka"),
        "confluent-kafka": _version("confluent-kafka"),
        "redis-py": _version("redis"),
        "hiredis": _version("hiredis"),
        "orjson": _version("orjson"),
        "jsonschema-rs": _version("jsonschema-rs"),
        "numpy": _version("numpy"),
        "scipy": _version("scipy"),
        "py-spy": _version("py-spy"),
        "load_average_at_start": load_average(),
    }


# --------------------------------------------------------------------------- namespaces


@dataclass
class Namespace:
    """Topics, consumer group, app id and Redis database of one measurement."""

    settings: Settings
    run: str
    created_topics: list[str] = field(default_factory=list)

    @classmethod
    def create(cls, stack: Settings, label: str, partitions: int = 4) -> Namespace:
        run = f"{label}{uuid.uuid4().hex[:6]}"
        base = stack.redis_url.rsplit("/", 1)[0]
        # A Redis Cluster has only database 0: the benchmark's cluster is its own.
        db = 0 if stack.redis_cluster else _claim_db(base, run)
        settings = replace(
            stack,
            redis_url=f"{base}/{db}",
            app_id=f"cvm-bench-{run}",
            topics=Topics.namespaced(f"b{run}"),
            partitions=partitions,
            web_port=free_port(),
            data_dir=tempfile.mkdtemp(prefix=f"cvm-bench-{run}-"),
        )
        ns = cls(settings, run)
        try:
            ns._create_topics()
        except Exception:
            ns.cleanup()
            raise
        return ns

    def _admin(self) -> Any:
        from confluent_kafka.admin import AdminClient

        return AdminClient(self.settings.kafka_config())

    def _create_topics(self) -> None:
        from confluent_kafka.admin import NewTopic

        s = self.settings
        counts = s.topics.partition_counts
        names = list(counts)
        admin = self._admin()  # keep the client alive until the futures resolve
        futures = admin.create_topics([
            NewTopic(n, counts[n] or s.partitions, 1, config={"max.message.bytes": str(4 << 20)})
            for n in names
        ])
        for future in futures.values():
            future.result(timeout=30)
        self.created_topics = names

    def redis(self) -> redis.Redis:
        return sync_redis(self.settings)

    def cleanup(self) -> None:
        """Delete the topics (also Faust's own), the consumer groups and the Redis data."""
        admin = self._admin()
        with contextlib.suppress(Exception):
            existing = admin.list_topics(timeout=10).topics
            names = set(self.created_topics) | {
                t for t in existing if t.startswith(self.settings.app_id) or
                t.startswith(f"b{self.run}.")
            }
            for future in admin.delete_topics(sorted(names)).values():
                with contextlib.suppress(Exception):
                    future.result(timeout=30)
        with contextlib.suppress(Exception):
            groups = [self.settings.app_id, f"{self.settings.app_id}-raw",
                      f"{self.settings.app_id}-faust-read"]
            for future in admin.delete_consumer_groups(groups).values():
                with contextlib.suppress(Exception):
                    future.result(timeout=30)
        with contextlib.suppress(Exception):
            client = self.redis()
            client.flushdb()
            client.close()
        shutil.rmtree(self.settings.data_dir, ignore_errors=True)


def _claim_db(base_url: str, run: str) -> int:
    for db in BENCH_DBS:
        client = redis.Redis.from_url(f"{base_url}/{db}")
        try:
            if client.dbsize() == 0 and client.set(CLAIM_KEY, run, nx=True, ex=7200):
                return db
        finally:
            client.close()
    raise RuntimeError(f"no free Redis database among {BENCH_DBS} (is another benchmark running?)")


# --------------------------------------------------------------------------- processes


def settings_env(settings: Settings, **extra: str) -> dict[str, str]:
    """Environment variables that reproduce `settings` in a worker subprocess."""
    env = {
        **settings.namespace_env(),
        "CVM_BATCH_SIZE": str(settings.batch_size),
        "CVM_BATCH_WITHIN_MS": str(settings.batch_within_ms),
        "CVM_LOG_LEVEL": "warning",
    }
    env.update(extra)
    return env


class WorkerProcess(worker_process.WorkerProcess):
    """A real ``python -m stream_app.cli worker`` (or `module`), `env` over `settings_env`."""

    def __init__(self, settings: Settings, log_path: Path, module: str = "stream_app.cli",
                 **env: str) -> None:
        super().__init__(settings, log_path, settings_env(settings, **env), module, cwd=ROOT)


class ReadServerProcess(worker_process.WorkerProcess):
    """``cvm serve`` (the read server, one process) on a free port, for `settings`' Redis."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        port = free_port()
        super().__init__(replace(settings, web_port=port), log_path, settings_env(settings),
                         cwd=ROOT, command=("serve", "--port", str(port)))


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of a process (all its threads); NaN once it is gone."""
    try:
        parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return float("nan")
    return (int(parts[11]) + int(parts[12])) / _CLK_TCK


def total_cpu_seconds() -> float:
    """CPU seconds spent by the whole machine, all cores, outside idle and iowait."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in fields]
    return (sum(values[:8]) - values[3] - values[4]) / _CLK_TCK


def find_server_pids(stack: Settings) -> dict[str, int]:
    """Pids of the dev stack's Kafka broker and Redis server, found through /proc."""
    port = stack.redis_url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[-1]
    out: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "kafka.Kafka" in cmd and "kafka" not in out:
            out["kafka"] = int(entry.name)
        elif cmd.startswith("/usr/bin/redis-server") and f":{port}" in cmd:
            out["redis"] = int(entry.name)
    return out


class CpuMeter:
    """CPU seconds of named processes, and of the whole machine, between two readings."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = dict(pids)
        self.start: dict[str, float] = {}
        self.t0 = 0.0

    def reading(self) -> dict[str, float]:
        out = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        out["machine"] = total_cpu_seconds()
        return out

    def begin(self) -> None:
        self.t0 = time.monotonic()
        self.start = self.reading()

    def end(self) -> dict[str, float]:
        """CPU utilisation (cores) per process and for the machine since `begin`."""
        elapsed = time.monotonic() - self.t0
        now = self.reading()
        return {
            name: round((now[name] - self.start[name]) / elapsed, 3) if elapsed > 0 else 0.0
            for name in now
        }


# --------------------------------------------------------------------------- private Redis


class PrivateRedis:
    """A ``redis-server`` of the benchmark's own (no persistence) on a free port.

    Configured like the dev stack's (`stream_app.store.server.SERVER_SETTINGS`).
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="cvm-bench-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> PrivateRedis:
        server = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen(
            [server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--logfile", f"{self.dir}/redis.log",
             *(arg for name, value in SERVER_SETTINGS.items() for arg in (f"--{name}",
                                                                         str(value)))],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        client = redis.Redis(port=self.port)

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        if not wait_until(up, 20, every=0.1):
            raise RuntimeError(f"private redis-server on port {self.port} did not start")
        client.close()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def background(target: Callable[[threading.Event], None]) -> Iterator[threading.Event]:
    """Run ``target(stop)`` in a daemon thread; set ``stop`` and join on exit."""
    stop = threading.Event()
    thread = threading.Thread(target=target, args=(stop,), daemon=True)
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(timeout=30)
