"""Dev stack without Docker: a real Kafka broker and a real Redis server.

    scripts/devstack up       start what is missing, wait until it answers, create topics
    scripts/devstack up --brokers 3
                              three KRaft brokers (each a controller too): topics get
                              replication factor 3 and min.insync.replicas=2
    scripts/devstack up --secure
                              the broker also gets a SASL_SSL listener (SCRAM-SHA-512, a
                              throwaway CA); client settings go to <cache>/kafka/secure/client.env
    scripts/devstack status   show each service, its address, whether it answers
    scripts/devstack down     stop only what `up` started

Kafka is Apache Kafka 3.9.1 (one KRaft node, broker and controller combined) run
from the official jars of Maven Central with the machine's Java 17+; Maven is run
once to copy the jars into the cache folder, later starts run no Maven at all.
Redis is Debian's ``redis-server`` (installed with apt-get when missing), started
as the current user with a generated configuration (append-only file on).

Addresses, topic names and the partition count come from the same environment
variables as the application (``stream_app/settings.py``).  Dev-stack knobs:

    CVM_DEVSTACK_DIR                    cache folder (default: <repo>/.devstack;
                                        a relative path is taken from the repo root)
    CVM_DEVSTACK_KAFKA_HEAP_OPTS        JVM heap (default: -Xms512m -Xmx1g)
    CVM_DEVSTACK_KAFKA_BROKERS          brokers of `up` without --brokers (default: 1)
    CVM_DEVSTACK_KAFKA_CLUSTER_HEAP_OPTS  JVM heap of each of them (-Xms128m -Xmx384m)
    CVM_DEVSTACK_KAFKA_CONTROLLER_PORT  KRaft controller port (default: Kafka port + 1)
    CVM_DEVSTACK_KAFKA_SECURE_PORT      SASL_SSL listener of `up --secure` (default: Kafka port + 2)
    CVM_DEVSTACK_KAFKA_LIB              folder of the Kafka jars (default: <cache>/kafka/lib)
    CVM_DEVSTACK_START_TIMEOUT          seconds to wait for a service to answer (120)
    CVM_DEVSTACK_STOP_TIMEOUT           seconds between SIGTERM and SIGKILL (30)

With KAFKA_SECURITY_PROTOCOL other than PLAINTEXT (e.g. client.env loaded), the
broker is only reused, through that listener, and never started.

A service already answering at its address is reused and never stopped by
`down`; only services whose pid file (``<cache>/{kafka,redis}/devstack.pid``)
names a live process that `up` started are stopped.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import fcntl
import importlib.util
import ipaddress
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parent.parent

KAFKA_VERSION = "3.9.1"
SCALA_VERSION = "2.13"
# kafka_2.13:3.9.1 depends on slf4j-api 1.7.36 and ships no logging backend; the
# binary distribution uses slf4j-reload4j 1.7.36 + reload4j 1.2.25 (log4j 1 API,
# which Kafka itself also calls), so we add exactly those.
SLF4J_VERSION = "1.7.36"
RELOAD4J_VERSION = "1.2.25"
DEPENDENCY_PLUGIN_VERSION = "3.8.1"
LIB_STAMP = (
    f"kafka_{SCALA_VERSION}-{KAFKA_VERSION} "
    f"slf4j-reload4j-{SLF4J_VERSION} reload4j-{RELOAD4J_VERSION}"
)
MIN_JAVA = 17
NODE_ID = 1

EXIT_DOWN = 3  # `status`: something does not answer (LSB "not running")


class DevstackError(RuntimeError):
    """A failure with a message that tells the user what to do."""


def say(msg: str) -> None:
    try:
        print(f"devstack: {msg}", flush=True)
    except BrokenPipeError:
        # the reader went away (`... | head`): keep working, silently
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


# --------------------------------------------------------------------------- config


def _load_settings() -> Any:
    """Read the application's settings without importing the whole package.

    ``stream_app/__init__`` may grow imports (Faust, ...); settings.py alone is
    dependency-free, so load that file directly.
    """
    path = ROOT / "stream_app" / "settings.py"
    spec = importlib.util.spec_from_file_location("_devstack_settings", path)
    if spec is None or spec.loader is None:
        raise DevstackError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up by name
    try:
        spec.loader.exec_module(module)
        return module.Settings.from_env()
    except ValueError as exc:  # SettingsError
        raise DevstackError(f"bad configuration: {exc}") from None


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    try:
        return float(raw) if raw else default
    except ValueError:
        raise DevstackError(f"{name}={raw!r} is not a number") from None


def _split_host_port(hostport: str, default_port: int) -> tuple[str, int]:
    hostport = hostport.strip()
    if "://" in hostport:  # PLAINTEXT://host:port
        hostport = hostport.split("://", 1)[1]
    if hostport.startswith("["):  # [::1]:9092
        host, _, rest = hostport[1:].partition("]")
        port = rest.lstrip(":")
    elif hostport.count(":") == 1:
        host, port = hostport.split(":")
    else:
        host, port = hostport, ""
    try:
        return host or "127.0.0.1", int(port) if port else default_port
    except ValueError:
        raise DevstackError(f"cannot read a port from {hostport!r}") from None


def _is_local(host: str) -> bool:
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    return bool(infos) and all(
        ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos
    )


@dataclass(frozen=True)
class Config:
    bootstrap: str
    kafka_host: str
    kafka_port: int
    controller_port: int
    secure_port: int
    kafka_protocol: str  # KAFKA_SECURITY_PROTOCOL: devstack starts brokers only for PLAINTEXT
    kafka_lib: Path
    kafka_client: dict[str, str]  # confluent-kafka settings of the application's clients
    redis_options: dict[str, str]  # TLS files for redis-py
    heap_opts: list[str]
    redis_url: str
    redis_host: str
    redis_port: int
    redis_password: str | None
    redis_startable: str | None  # None, or why devstack cannot start this Redis
    redis_cluster: bool  # CVM_REDIS_CLUSTER: REDIS_URL names a node of a Redis Cluster
    topics: dict[str, int]  # name -> partitions
    cache: Path
    start_timeout: float
    stop_timeout: float
    #: Brokers devstack starts for this configuration (``up --brokers N``); topics get the
    #: replication of this many even while some of them have not registered yet.
    brokers: int = 1

    @classmethod
    def load(cls) -> Config:
        s = _load_settings()
        host, port = _split_host_port(s.kafka_bootstrap_servers.split(",")[0], 9092)
        controller_port = int(_env_float("CVM_DEVSTACK_KAFKA_CONTROLLER_PORT", port + 1))
        secured = s.kafka_security.protocol != "PLAINTEXT"  # a client of a secured listener
        if controller_port == port and not secured:
            raise DevstackError(
                f"CVM_DEVSTACK_KAFKA_CONTROLLER_PORT={controller_port} equals the broker port"
            )
        secure_port = int(_env_float("CVM_DEVSTACK_KAFKA_SECURE_PORT", port + 2))
        if secure_port in (port, controller_port) and not secured:
            raise DevstackError(
                f"CVM_DEVSTACK_KAFKA_SECURE_PORT={secure_port} equals another Kafka port"
            )
        heap = os.environ.get("CVM_DEVSTACK_KAFKA_HEAP_OPTS") or "-Xms512m -Xmx1g"

        url = urlsplit(s.redis_url)
        startable = None
        if url.scheme != "redis":
            startable = f"REDIS_URL scheme {url.scheme!r} (devstack only starts redis://)"
        try:
            rport = url.port or 6379
        except ValueError:
            raise DevstackError(f"REDIS_URL={s.redis_url!r} has a bad port") from None
        password = unquote(url.password) if url.password else None

        cache_raw = os.environ.get("CVM_DEVSTACK_DIR") or ".devstack"
        cache = Path(cache_raw)
        if not cache.is_absolute():
            cache = ROOT / cache
        lib_raw = os.environ.get("CVM_DEVSTACK_KAFKA_LIB")
        lib = Path(lib_raw) if lib_raw else cache / "kafka" / "lib"
        if not lib.is_absolute():
            lib = ROOT / lib
        partitions = s.partitions
        topics = {
            name: partitions if count is None else count
            for name, count in s.topics.partition_counts.items()
        }
        return cls(
            bootstrap=s.kafka_bootstrap_servers,
            kafka_host=host,
            kafka_port=port,
            controller_port=controller_port,
            secure_port=secure_port,
            kafka_protocol=s.kafka_security.protocol,
            kafka_lib=lib.resolve(),
            kafka_client=s.kafka_config(),
            redis_options=s.redis_options(),
            heap_opts=heap.split(),
            redis_url=s.redis_url,
            redis_host=url.hostname or "127.0.0.1",
            redis_port=rport,
            redis_password=password,
            redis_startable=startable,
            redis_cluster=s.redis_cluster,
            topics=topics,
            cache=cache.resolve(),
            start_timeout=_env_float("CVM_DEVSTACK_START_TIMEOUT", 120.0),
            stop_timeout=_env_float("CVM_DEVSTACK_STOP_TIMEOUT", 30.0),
        )

    @property
    def kafka_dir(self) -> Path:
        return self.cache / "kafka"

    @property
    def redis_dir(self) -> Path:
        return self.cache / "redis"

    @property
    def secure_dir(self) -> Path:
        return self.kafka_dir / "secure"

    @property
    def kafka_log(self) -> Path:
        return self.kafka_dir / "logs" / "server.log"

    @property
    def redis_log(self) -> Path:
        return self.redis_dir / "redis.log"


# ------------------------------------------------------------------ process records


def _proc_start_ticks(pid: int) -> int | None:
    """Start time of a live (non-zombie) process, None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # gone (or not Linux)
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):  # zombie / dead: an orphan nobody reaped yet
        return None
    return int(fields[19])


def _pid_alive(pid: int, start_ticks: int | None) -> bool:
    if Path("/proc/self/stat").exists():
        ticks = _proc_start_ticks(pid)
        return ticks is not None and (start_ticks is None or ticks == start_ticks)
    try:  # no /proc (not Linux): best effort
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Record:
    """What `up` wrote when it started a service: the proof that devstack owns it."""

    path: Path
    pid: int
    start_ticks: int | None
    address: str

    @classmethod
    def read(cls, path: Path) -> Record | None:
        try:
            data = json.loads(path.read_text())
            return cls(path, int(data["pid"]), data.get("start_ticks"), data.get("address", "?"))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    @classmethod
    def write(cls, path: Path, pid: int, address: str) -> Record:
        rec = cls(path, pid, _proc_start_ticks(pid), address)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(
            json.dumps(
                {
                    "pid": pid,
                    "start_ticks": rec.start_ticks,
                    "address": address,
                    "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                }
            )
            + "\n"
        )
        tmp.replace(path)
        return rec

    def alive(self) -> bool:
        return _pid_alive(self.pid, self.start_ticks)

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def live_record(path: Path) -> Record | None:
    """The record at ``path`` if its process still runs; a stale file is removed."""
    rec = Record.read(path)
    if rec is None:
        if path.exists():
            path.unlink()
        return None
    if not rec.alive():
        rec.remove()
        return None
    return rec


def spawn(cmd: list[str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    """Start ``cmd`` fully detached: own session, no stdin, output to ``log`` (truncated)."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            cmd,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )


# size of each log file when this run started a service: error messages quote
# only what that run wrote, not an older run's lines
_LOG_START: dict[Path, int] = {}


def mark_log(path: Path) -> None:
    _LOG_START[path] = path.stat().st_size if path.exists() else 0


def tail(path: Path, lines: int = 15) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(_LOG_START.get(path, 0))
            text = fh.read().decode(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "".join(f"\n    | {line}" for line in text)


# ------------------------------------------------------------------------- probing


def tcp_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _quiet_logger() -> logging.Logger:
    log = logging.getLogger("devstack.librdkafka")
    log.addHandler(logging.NullHandler())
    log.propagate = False
    log.setLevel(logging.CRITICAL)
    return log


def admin_client(cfg: Config) -> Any:
    from confluent_kafka.admin import AdminClient

    return AdminClient(
        {
            **cfg.kafka_client,
            "socket.connection.setup.timeout.ms": 3000,
            "logger": _quiet_logger(),
        }
    )


def kafka_metadata(cfg: Config, timeout: float = 3.0) -> Any | None:
    """Cluster metadata if a broker answers at the bootstrap address, else None."""
    if not any(
        tcp_open(*_split_host_port(hp, 9092)) for hp in cfg.bootstrap.split(",") if hp.strip()
    ):
        return None  # nothing listens: skip librdkafka's connection-refused retries
    from confluent_kafka import KafkaException

    try:
        md = admin_client(cfg).list_topics(timeout=timeout)
    except KafkaException:
        return None
    return md if md.brokers else None


def redis_ping(cfg: Config) -> str | None:
    """None if Redis answers PING at REDIS_URL, else the reason it does not."""
    import redis

    client = redis.Redis.from_url(
        cfg.redis_url, socket_timeout=2, socket_connect_timeout=2, **cfg.redis_options
    )
    try:
        client.ping()
        return None
    except redis.RedisError as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        client.close()


# ---------------------------------------------------------------------- toolchain


def find_java() -> str:
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    fix = (
        f"install a Java {MIN_JAVA}+ runtime (Debian/Ubuntu: apt-get install -y "
        f"openjdk-{MIN_JAVA}-jre-headless; macOS: brew install openjdk@{MIN_JAVA}) "
        "or point JAVA_HOME at one"
    )
    if not java or not os.access(java, os.X_OK):
        where = f"JAVA_HOME={home} has no bin/java" if home else "no `java` on PATH"
        raise DevstackError(f"Kafka needs Java {MIN_JAVA}+, but {where}: {fix}")
    try:
        out = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DevstackError(f"cannot run {java} -version ({exc}): {fix}") from None
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not m:
        raise DevstackError(f"cannot read the version of {java}: {fix}")
    major = int(m.group(2)) if m.group(1) == "1" else int(m.group(1))  # "1.8.0" -> 8
    if major < MIN_JAVA:
        raise DevstackError(f"{java} is Java {major}; Kafka here needs Java {MIN_JAVA}+: {fix}")
    return java


POM = f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by scripts/devstack: the jars of one Kafka broker. -->
<project xmlns="http://maven.apache.org/POM/4.0.0"
         xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
         xsi:schemaLocation="http://maven.apache.org/POM/4.0.0 http://maven.apache.org/xsd/maven-4.0.0.xsd">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.cvm</groupId>
  <artifactId>devstack-kafka</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_{SCALA_VERSION}</artifactId>
      <version>{KAFKA_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-reload4j</artifactId>
      <version>{SLF4J_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>ch.qos.reload4j</groupId>
      <artifactId>reload4j</artifactId>
      <version>{RELOAD4J_VERSION}</version>
    </dependency>
  </dependencies>
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-dependency-plugin</artifactId>
        <version>{DEPENDENCY_PLUGIN_VERSION}</version>
      </plugin>
    </plugins>
  </build>
</project>
"""


def ensure_kafka_lib(cfg: Config) -> Path:
    """The folder of Kafka jars; Maven runs only when it is missing or incomplete."""
    lib = cfg.kafka_lib
    stamp = lib / ".devstack-complete"
    if stamp.is_file() and stamp.read_text().strip() == LIB_STAMP:
        return lib
    mvn = shutil.which("mvn")
    if not mvn:
        raise DevstackError(
            "the Kafka jars are not cached yet and fetching them needs Maven, but there is "
            "no `mvn` on PATH: install it (Debian/Ubuntu: apt-get install -y maven; "
            "macOS: brew install maven) and rerun `scripts/devstack up`"
        )
    lib.parent.mkdir(parents=True, exist_ok=True)
    pom = cfg.kafka_dir / "pom.xml"
    pom.write_text(POM)
    tmp = lib.parent / f"{lib.name}.partial.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    log = cfg.kafka_dir / "logs" / "maven.log"
    say(f"fetching Kafka {KAFKA_VERSION} jars with Maven (once; log: {log})")
    t0 = time.monotonic()
    with open(log, "wb") as out:
        rc = subprocess.run(
            [
                mvn,
                "-B",
                "-Dstyle.color=never",
                "-f",
                str(pom),
                f"org.apache.maven.plugins:maven-dependency-plugin:{DEPENDENCY_PLUGIN_VERSION}"
                ":copy-dependencies",
                f"-DoutputDirectory={tmp}",
                "-DincludeScope=runtime",
            ],
            cwd=cfg.kafka_dir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        ).returncode
    jars = sorted(tmp.glob("*.jar")) if tmp.is_dir() else []
    if rc != 0 or not any(j.name.startswith(f"kafka_{SCALA_VERSION}-") for j in jars):
        raise DevstackError(
            f"Maven could not fetch the Kafka jars (exit {rc}); see {log}{tail(log)}"
        )
    shutil.rmtree(lib, ignore_errors=True)
    tmp.rename(lib)
    stamp.write_text(LIB_STAMP + "\n")
    say(f"cached {len(jars)} jars in {lib} ({time.monotonic() - t0:.1f}s)")
    return lib


@contextlib.contextmanager
def services_not_started_by_apt() -> Iterator[None]:
    """Keep the package's own init script from starting a system Redis.

    Debian's policy-rc.d hook (exit 101 = "action forbidden") is the standard
    way; it is put in place only if the machine has none, and removed after.
    """
    policy = Path("/usr/sbin/policy-rc.d")
    if policy.exists():
        yield
        return
    policy.write_text("#!/bin/sh\n# temporary, from scripts/devstack\nexit 101\n")
    policy.chmod(0o755)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            policy.unlink()


def find_redis_server(cfg: Config) -> str:
    found = shutil.which("redis-server") or next(
        (p for p in ("/usr/bin/redis-server", "/usr/sbin/redis-server") if os.access(p, os.X_OK)),
        None,
    )
    if found:
        return found
    apt = shutil.which("apt-get")
    if not apt:
        raise DevstackError(
            "redis-server is not installed and there is no apt-get to install it: install "
            "Redis 6+ so that `redis-server` is on PATH (e.g. `dnf install redis`, "
            "`brew install redis`), or set REDIS_URL to a Redis that is already running"
        )
    if os.geteuid() != 0:
        raise DevstackError(
            "redis-server is not installed; install it with "
            "`sudo apt-get install -y redis-server` and rerun `scripts/devstack up`"
        )
    log = cfg.redis_dir / "apt.log"
    say(f"installing redis-server with apt-get (log: {log})")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [apt, "install", "-y", "--no-install-recommends", "redis-server"]

    def run(cmd: list[str]) -> int:
        with open(log, "ab") as out:
            return subprocess.run(
                cmd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            ).returncode

    with services_not_started_by_apt():
        rc = run(install)
        if rc != 0:  # most often: no package lists yet
            run([apt, "update"])
            rc = run(install)
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None
    )
    if rc != 0 or not found:
        raise DevstackError(
            f"`apt-get install -y redis-server` failed (exit {rc}); see {log}{tail(log)}"
        )
    return found


# -------------------------------------------------------------------------- Kafka


def kafka_record_path(cfg: Config) -> Path:
    return cfg.kafka_dir / "devstack.pid"


# ------------------------------------------------------------- secure listener

SCRAM_USER = "cvm"
SCRAM_MECHANISM = "SCRAM-SHA-512"
CERT_DAYS = 30


@dataclass(frozen=True)
class SecureMaterial:
    """The throwaway CA, the broker's keystore and the SCRAM user of `up --secure`."""

    folder: Path
    keystore_password: str
    scram_password: str

    @property
    def ca(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def keystore(self) -> Path:
        return self.folder / "broker.p12"

    @property
    def client_env(self) -> Path:
        return self.folder / "client.env"


def _openssl(args: list[str], cwd: Path) -> None:
    openssl = shutil.which("openssl")
    if not openssl:
        raise DevstackError(
            "`up --secure` makes its certificates with openssl, which is not on PATH "
            "(Debian/Ubuntu: apt-get install -y openssl)"
        )
    out = subprocess.run(
        [openssl, *args], cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    if out.returncode != 0:
        raise DevstackError(f"openssl {args[0]} failed: {out.stderr.strip()[-500:]}")


def issue_certificate(folder: Path, name: str, hosts: Sequence[str]) -> tuple[Path, Path]:
    """A server certificate ``<name>.pem`` and key for `hosts`, signed by the folder's CA.

    The CA (``ca.pem``, ``ca.key``) is made on first use and kept. The certificate names
    every host (DNS or IP subject alternative names), so clients verify the host name.
    Returns (certificate, key).
    """
    days = str(CERT_DAYS)
    if not (folder / "ca.pem").is_file() or not (folder / "ca.key").is_file():
        _openssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
                  "-out", "ca.pem", "-days", days, "-subj", "/CN=cvm devstack CA",
                  "-addext", "basicConstraints=critical,CA:TRUE",
                  "-addext", "keyUsage=critical,keyCertSign,cRLSign"], folder)
    names = set()
    for host in hosts:
        try:
            ipaddress.ip_address(host)
            names.add(f"IP:{host}")
        except ValueError:
            names.add(f"DNS:{host}")
    (folder / f"{name}.ext").write_text(
        f"subjectAltName={','.join(sorted(names))}\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    _openssl(["req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
              "-out", f"{name}.csr", "-subj", f"/CN={hosts[0]}"], folder)
    _openssl(["x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
              "-CAcreateserial", "-out", f"{name}.pem", "-days", days,
              "-extfile", f"{name}.ext"], folder)
    for private in ("ca.key", f"{name}.key"):
        (folder / private).chmod(0o600)
    return folder / f"{name}.pem", folder / f"{name}.key"


def existing_secure_material(cfg: Config) -> SecureMaterial | None:
    """What an earlier `up --secure` made in <cache>/kafka/secure, if it is complete."""
    d = cfg.secure_dir
    try:
        data = json.loads((d / "passwords.json").read_text())
        material = SecureMaterial(d, data["keystore"], data["scram"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return material if material.keystore.is_file() and material.ca.is_file() else None


def secure_material(cfg: Config) -> SecureMaterial:
    """The CA, broker certificate and passwords in <cache>/kafka/secure, made once and kept.

    The broker certificate names localhost, 127.0.0.1 and the configured Kafka host,
    so clients verify the host name as in production.
    """
    import secrets

    material = existing_secure_material(cfg)
    if material is not None:
        return material
    d = cfg.secure_dir
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o700)
    passwords = d / "passwords.json"
    material = SecureMaterial(d, secrets.token_urlsafe(18), secrets.token_urlsafe(18))
    issue_certificate(d, "broker", ("localhost", "127.0.0.1", cfg.kafka_host))
    _openssl(["pkcs12", "-export", "-in", "broker.pem", "-inkey", "broker.key",
              "-certfile", "ca.pem", "-name", "broker", "-out", "broker.p12",
              "-passout", f"pass:{material.keystore_password}"], d)
    passwords.write_text(json.dumps({
        "keystore": material.keystore_password, "scram": material.scram_password,
    }) + "\n")
    passwords.chmod(0o600)
    say(f"kafka: made a throwaway CA and broker certificate in {d}")
    return material


def secure_client_settings(cfg: Config, material: SecureMaterial) -> dict[str, str]:
    """The environment of a client of the SASL_SSL listener."""
    return {
        "KAFKA_BOOTSTRAP_SERVERS": f"{cfg.kafka_host}:{cfg.secure_port}",
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SSL_CAFILE": str(material.ca),
        "KAFKA_SASL_MECHANISM": SCRAM_MECHANISM,
        "KAFKA_SASL_USERNAME": SCRAM_USER,
        "KAFKA_SASL_PASSWORD": material.scram_password,
    }


def secure_listener_properties(cfg: Config, material: SecureMaterial) -> str:
    jaas = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    return f"""
# `up --secure`: SASL_SSL beside PLAINTEXT, SCRAM-SHA-512 users, throwaway CA
ssl.keystore.type=PKCS12
ssl.keystore.location={material.keystore}
ssl.keystore.password={material.keystore_password}
ssl.key.password={material.keystore_password}
listener.name.sasl_ssl.sasl.enabled.mechanisms={SCRAM_MECHANISM}
listener.name.sasl_ssl.{SCRAM_MECHANISM.lower()}.sasl.jaas.config={jaas}
"""


def create_scram_user(cfg: Config, material: SecureMaterial) -> None:
    """Create (or reset) the SCRAM user over the PLAINTEXT listener."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import (
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialUpsertion,
    )

    admin = admin_client(cfg)
    upsert = UserScramCredentialUpsertion(
        SCRAM_USER,
        ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192),
        material.scram_password.encode(),
    )
    deadline = time.monotonic() + cfg.start_timeout
    while True:
        try:
            admin.alter_user_scram_credentials([upsert])[SCRAM_USER].result(timeout=15)
            return
        except KafkaException as exc:
            err = exc.args[0]
            if not err.retriable() or time.monotonic() > deadline:
                raise DevstackError(
                    f"cannot create the SCRAM user {SCRAM_USER}: {err.str()}"
                ) from None
            time.sleep(0.5)


def secure_answers(cfg: Config, material: SecureMaterial, timeout: float = 5.0) -> str | None:
    """None if the SASL_SSL listener lets the SCRAM user read metadata, else why not."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    if not tcp_open(cfg.kafka_host, cfg.secure_port):
        return f"nothing listens on {cfg.kafka_host}:{cfg.secure_port}"
    env = secure_client_settings(cfg, material)
    errors: list[Any] = []
    admin = AdminClient({
        "bootstrap.servers": env["KAFKA_BOOTSTRAP_SERVERS"],
        "security.protocol": "SASL_SSL",
        "ssl.ca.location": env["KAFKA_SSL_CAFILE"],
        "sasl.mechanism": SCRAM_MECHANISM,
        "sasl.username": SCRAM_USER,
        "sasl.password": material.scram_password,
        "logger": _quiet_logger(),
        "error_cb": errors.append,
    })
    try:
        md = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        errors.append(exc.args[0])
        md = None
    if md is not None and md.brokers:
        return None
    return errors[0].str() if errors else "no metadata"


def finish_secure(cfg: Config, material: SecureMaterial) -> None:
    """Create the SCRAM user, wait until SASL_SSL answers, write client.env."""
    create_scram_user(cfg, material)
    deadline = time.monotonic() + cfg.start_timeout
    while (why := secure_answers(cfg, material)) is not None:
        if time.monotonic() > deadline:
            raise DevstackError(
                f"the SASL_SSL listener {cfg.kafka_host}:{cfg.secure_port} did not accept "
                f"{SCRAM_USER} within {cfg.start_timeout:.0f}s: {why}"
            )
        time.sleep(0.5)
    env = secure_client_settings(cfg, material)
    tmp = material.client_env.with_suffix(".tmp")
    tmp.write_text(
        "# Written by `scripts/devstack up --secure`: the settings of a client of the\n"
        "# SASL_SSL listener. Load with: set -a; . <this file>; set +a\n"
        + "".join(f"{k}={v}\n" for k, v in env.items())
    )
    tmp.chmod(0o600)
    tmp.replace(material.client_env)
    say(f"kafka: SASL_SSL ({SCRAM_MECHANISM}, user {SCRAM_USER}) at "
        f"{env['KAFKA_BOOTSTRAP_SERVERS']}; client settings in {material.client_env}")


def write_kafka_config(cfg: Config, secure: SecureMaterial | None = None) -> Path:
    d = cfg.kafka_dir
    h, p, c = cfg.kafka_host, cfg.kafka_port, cfg.controller_port
    listen_host = f"[{h}]" if ":" in h else h
    props = d / "server.properties"
    listeners = f"PLAINTEXT://{listen_host}:{p}"
    protocol_map = "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    if secure is not None:
        listeners += f",SASL_SSL://{listen_host}:{cfg.secure_port}"
        protocol_map += ",SASL_SSL:SASL_SSL"
    props.write_text(
        f"""# Generated by scripts/devstack on every start; edits are overwritten.
process.roles=broker,controller
node.id={NODE_ID}
controller.quorum.voters={NODE_ID}@{listen_host}:{c}
listeners={listeners},CONTROLLER://{listen_host}:{c}
advertised.listeners={listeners}
listener.security.protocol.map={protocol_map}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs={d / "data"}
metadata.log.dir={d / "data"}
num.partitions={max(cfg.topics.values())}
default.replication.factor=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
num.network.threads=3
num.io.threads=8
log.retention.hours=168
log.segment.bytes=1073741824
"""
        + (secure_listener_properties(cfg, secure) if secure is not None else "")
    )
    (d / "log4j.properties").write_text(
        """# Generated by scripts/devstack: everything to ${kafka.logs.dir}/server.log.
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.RollingFileAppender
log4j.appender.file.File=${kafka.logs.dir}/server.log
log4j.appender.file.MaxFileSize=50MB
log4j.appender.file.MaxBackupIndex=3
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka=INFO
log4j.logger.org.apache.kafka=INFO
log4j.logger.kafka.request.logger=WARN
log4j.logger.kafka.authorizer.logger=WARN
log4j.logger.state.change.logger=WARN
"""
    )
    return props


def cluster_id(cfg: Config) -> str:
    """The KRaft cluster id, generated once and kept (same format as Kafka's Uuid)."""
    path = cfg.kafka_dir / "cluster.id"
    if path.is_file():
        return path.read_text().strip()
    while True:
        cid = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
        if not cid.startswith("-"):  # Kafka's Uuid.randomUuid avoids these too
            break
    path.write_text(cid + "\n")
    return cid


def java_cmd(cfg: Config, java: str, lib: Path, *args: str, heap: bool = True) -> list[str]:
    d = cfg.kafka_dir
    return [
        java,
        *(cfg.heap_opts if heap else ["-Xmx256m"]),
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:InitiatingHeapOccupancyPercent=35",
        "-XX:+ExplicitGCInvokesConcurrent",
        "-Djava.awt.headless=true",
        f"-Dkafka.logs.dir={d / 'logs'}",
        f"-Dlog4j.configuration=file:{d / 'log4j.properties'}",
        "-cp",
        f"{lib}/*",
        *args,
    ]


def prepare_kafka(cfg: Config, secure: bool = False) -> tuple[str, Path]:
    """Check that a broker can be started here; return (java, lib folder)."""
    if not _is_local(cfg.kafka_host):
        raise DevstackError(
            f"no Kafka answers at KAFKA_BOOTSTRAP_SERVERS={cfg.bootstrap} and devstack only "
            "starts a broker on this machine (127.0.0.1/localhost)"
        )
    if tcp_open(cfg.kafka_host, cfg.controller_port):
        raise DevstackError(
            f"port {cfg.controller_port} (KRaft controller) is already in use; free it or set "
            "CVM_DEVSTACK_KAFKA_CONTROLLER_PORT"
        )
    if secure and tcp_open(cfg.kafka_host, cfg.secure_port):
        raise DevstackError(
            f"port {cfg.secure_port} (SASL_SSL listener) is already in use; free it or set "
            "CVM_DEVSTACK_KAFKA_SECURE_PORT"
        )
    if tcp_open(cfg.kafka_host, cfg.kafka_port):
        raise DevstackError(
            f"{cfg.kafka_host}:{cfg.kafka_port} accepts connections but no Kafka broker answers "
            f"there (KAFKA_BOOTSTRAP_SERVERS={cfg.bootstrap}); free the port or change the address"
        )
    java = find_java()
    return java, ensure_kafka_lib(cfg)


def start_kafka(
    cfg: Config, java: str, lib: Path, secure: SecureMaterial | None = None
) -> subprocess.Popen[bytes]:
    d = cfg.kafka_dir
    props = write_kafka_config(cfg, secure)
    data = d / "data"
    if not (data / "meta.properties").is_file():
        cid = cluster_id(cfg)
        log = d / "logs" / "format.log"
        say(f"formatting KRaft storage in {data} (cluster id {cid})")
        with open(log, "wb") as out:
            rc = subprocess.run(
                java_cmd(
                    cfg,
                    java,
                    lib,
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    cid,
                    "-c",
                    str(props),
                    "--ignore-formatted",
                    heap=False,
                ),
                cwd=d,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            ).returncode
        if rc != 0:
            raise DevstackError(f"formatting Kafka storage failed; see {log}{tail(log)}")
    mark_log(cfg.kafka_log)
    proc = spawn(java_cmd(cfg, java, lib, "kafka.Kafka", str(props)), d / "logs" / "kafka.out", d)
    Record.write(kafka_record_path(cfg), proc.pid, f"{cfg.kafka_host}:{cfg.kafka_port}")
    addr = f"{cfg.kafka_host}:{cfg.kafka_port}"
    say(f"kafka: started pid {proc.pid} on {addr} (log: {cfg.kafka_log})")
    return proc


def _exit_reason(proc: subprocess.Popen[bytes] | None, rec: Record | None) -> str | None:
    """Why the process we wait for is gone, or None while it runs (or is not ours)."""
    if proc is not None and proc.poll() is not None:
        return f"exited with code {proc.returncode}"
    if proc is None and rec is not None and not rec.alive():
        return "exited"
    return None


def wait_kafka(
    cfg: Config, proc: subprocess.Popen[bytes] | None, rec: Record | None, t0: float
) -> None:
    deadline = t0 + cfg.start_timeout
    while True:
        if kafka_metadata(cfg) is not None:
            say(f"kafka: answering at {cfg.bootstrap} ({time.monotonic() - t0:.1f}s)")
            return
        if gone := _exit_reason(proc, rec):
            kafka_record_path(cfg).unlink(missing_ok=True)
            out = cfg.kafka_dir / "logs" / "kafka.out"
            raise DevstackError(
                f"Kafka {gone} before answering; see {cfg.kafka_log} and {out}"
                f"{tail(out, 10)}{tail(cfg.kafka_log)}"
            )
        if time.monotonic() > deadline:
            raise DevstackError(
                f"Kafka did not answer at {cfg.bootstrap} within {cfg.start_timeout:.0f}s "
                f"(CVM_DEVSTACK_START_TIMEOUT); see {cfg.kafka_log}{tail(cfg.kafka_log)}"
            )
        time.sleep(0.5)


# -------------------------------------------------------------------------- Redis


def redis_record_path(cfg: Config) -> Path:
    return cfg.redis_dir / "devstack.pid"


def prepare_redis(cfg: Config) -> str:
    """Check that a Redis can be started here; return the redis-server binary."""
    if cfg.redis_startable:
        raise DevstackError(
            f"no Redis answers at REDIS_URL and devstack cannot start {cfg.redis_startable}"
        )
    if not _is_local(cfg.redis_host):
        raise DevstackError(
            f"no Redis answers at REDIS_URL={cfg.redis_url} and devstack only starts a Redis "
            "on this machine (127.0.0.1/localhost)"
        )
    if tcp_open(cfg.redis_host, cfg.redis_port):
        raise DevstackError(
            f"{cfg.redis_host}:{cfg.redis_port} accepts connections but does not answer a Redis "
            f"PING at REDIS_URL={cfg.redis_url} ({redis_ping(cfg)}); free the port or fix REDIS_URL"
        )
    return find_redis_server(cfg)


#: Persistence and encodings of every Redis the dev stack starts, single or cluster node.
#: Customer records (about 50 fields, values up to a few KB) stay compact listpacks only
#: below the value length; the histograms and roll-ups (hundreds of fields) are hashtables
#: and the rank sets skip lists, which the commit writes faster: see
#: stream_app/store/server.py (SERVER_SETTINGS, which the dev stack's tests compare).
REDIS_STORE_LINES = (
    "appendonly yes",
    "appendfsync everysec",
    'save ""',
    "hash-max-listpack-value 8192",
    "hash-max-listpack-entries 128",
    "zset-max-listpack-entries 0",
)


def start_redis(cfg: Config, server: str) -> subprocess.Popen[bytes]:
    d = cfg.redis_dir
    (d / "data").mkdir(parents=True, exist_ok=True)
    host = cfg.redis_host
    bind = "127.0.0.1" if host == "localhost" else host
    conf = d / "redis.conf"
    lines = [
        "# Generated by scripts/devstack on every start; edits are overwritten.",
        f"bind {bind}",
        f"port {cfg.redis_port}",
        "protected-mode yes",
        "daemonize no",
        "supervised no",
        f'pidfile "{d / "redis-server.pid"}"',
        f'logfile "{cfg.redis_log}"',
        "loglevel notice",
        f'dir "{d / "data"}"',
        *REDIS_STORE_LINES,
    ]
    if cfg.redis_password:
        lines.append(f'requirepass "{cfg.redis_password}"')
    conf.write_text("\n".join(lines) + "\n")
    mark_log(cfg.redis_log)
    proc = spawn([server, str(conf)], d / "redis.out", d)
    Record.write(redis_record_path(cfg), proc.pid, f"{cfg.redis_host}:{cfg.redis_port}")
    addr = f"{cfg.redis_host}:{cfg.redis_port}"
    say(f"redis: started pid {proc.pid} on {addr} (log: {cfg.redis_log})")
    return proc


def wait_redis(
    cfg: Config, proc: subprocess.Popen[bytes] | None, rec: Record | None, t0: float
) -> None:
    deadline = t0 + cfg.start_timeout
    while True:
        why = redis_ping(cfg)
        if why is None:
            say(f"redis: answering at {cfg.redis_url} ({time.monotonic() - t0:.1f}s)")
            return
        if gone := _exit_reason(proc, rec):
            redis_record_path(cfg).unlink(missing_ok=True)
            out = cfg.redis_dir / "redis.out"
            raise DevstackError(
                f"redis-server {gone} before answering; see {cfg.redis_log}"
                f"{tail(out, 10)}{tail(cfg.redis_log)}"
            )
        if time.monotonic() > deadline:
            raise DevstackError(
                f"Redis did not answer PING at {cfg.redis_url} within {cfg.start_timeout:.0f}s "
                f"({why}); see {cfg.redis_log}{tail(cfg.redis_log)}"
            )
        time.sleep(0.2)


# ------------------------------------------------------------------ Redis Cluster

REDIS_CLUSTER_MASTERS = 3


def redis_cluster_dir(cfg: Config) -> Path:
    return cfg.cache / "redis-cluster"


def redis_cluster_ports(cfg: Config) -> list[int]:
    """The masters' ports: from CVM_DEVSTACK_REDIS_CLUSTER_PORT, else REDIS_URL's port if
    CVM_REDIS_CLUSTER is set (REDIS_URL names the first master), else REDIS_URL's port + 100
    (so that the single Redis of `make demo` keeps its port)."""
    raw = os.environ.get("CVM_DEVSTACK_REDIS_CLUSTER_PORT")
    base = int(raw) if raw else cfg.redis_port + (0 if cfg.redis_cluster else 100)
    return [base + i for i in range(REDIS_CLUSTER_MASTERS)]


def redis_cluster_url(cfg: Config) -> str:
    return f"redis://{cfg.redis_host}:{redis_cluster_ports(cfg)[0]}/0"


def redis_cluster_env(cfg: Config) -> dict[str, str]:
    """The settings of a worker (or any client) of the dev stack's Redis Cluster."""
    return {"REDIS_URL": redis_cluster_url(cfg), "CVM_REDIS_CLUSTER": "true"}


def _cluster_node_client(cfg: Config, port: int) -> Any:
    import redis

    return redis.Redis(host=cfg.redis_host, port=port, socket_timeout=2,
                       socket_connect_timeout=2, decode_responses=True)


def redis_cluster_state(cfg: Config) -> str | None:
    """None if the cluster answers with ``cluster_state:ok``; else why not."""
    import redis

    client = _cluster_node_client(cfg, redis_cluster_ports(cfg)[0])
    try:
        state = client.cluster("info").get("cluster_state")
    except (redis.RedisError, OSError) as exc:
        return str(exc) or type(exc).__name__
    finally:
        client.close()
    return None if state == "ok" else f"cluster_state {state}"


def start_redis_cluster(cfg: Config) -> list[str]:
    """Start the masters that do not run yet and join them in a cluster; returns the names
    of the nodes started."""
    import redis

    ports = redis_cluster_ports(cfg)
    host = cfg.redis_host
    if not _is_local(host):
        raise DevstackError(f"--redis-cluster starts Redis only on this machine, not {host}")
    server = ""
    started: list[str] = []
    procs = []
    for i, port in enumerate(ports):
        folder = redis_cluster_dir(cfg) / f"node{i + 1}"
        (folder / "data").mkdir(parents=True, exist_ok=True)
        if live_record(folder / "devstack.pid") is not None:
            continue
        if tcp_open(host, port) or tcp_open(host, port + 10_000):
            raise DevstackError(
                f"--redis-cluster: port {port} or its cluster bus port {port + 10_000} is in "
                "use; set CVM_DEVSTACK_REDIS_CLUSTER_PORT to a base port with 3 free ports "
                "(and their +10000) after it")
        server = server or find_redis_server(cfg)
        conf = folder / "redis.conf"
        conf.write_text("\n".join([
            "# Generated by scripts/devstack on every start; edits are overwritten.",
            f"bind {'127.0.0.1' if host == 'localhost' else host}",
            f"port {port}",
            "protected-mode yes",
            "daemonize no",
            f'logfile "{folder / "redis.log"}"',
            f'dir "{folder / "data"}"',
            "cluster-enabled yes",
            "cluster-config-file nodes.conf",
            "cluster-node-timeout 5000",
            *REDIS_STORE_LINES,
        ]) + "\n")
        proc = spawn([server, str(conf)], folder / "redis.out", folder)
        Record.write(folder / "devstack.pid", proc.pid, f"{host}:{port}")
        say(f"redis cluster node {i + 1}: started pid {proc.pid} on {host}:{port}")
        started.append(f"redis-cluster-node{i + 1}")
        procs.append(proc)
    deadline = time.monotonic() + cfg.start_timeout
    known = []
    for port in ports:
        client = _cluster_node_client(cfg, port)
        try:
            while True:
                try:
                    client.ping()
                    break
                except (redis.RedisError, OSError) as exc:
                    if time.monotonic() > deadline:
                        raise DevstackError(f"redis cluster node on {port} did not answer: "
                                            f"{exc}") from None
                    time.sleep(0.2)
            known.append(int(client.cluster("info").get("cluster_known_nodes", 1)))
        finally:
            client.close()
    if redis_cluster_state(cfg) is not None and min(known) < len(ports):
        cli = shutil.which("redis-cli") or str(Path(server or find_redis_server(cfg)).parent
                                               / "redis-cli")
        done = subprocess.run(
            [cli, "--cluster", "create", *(f"{host}:{p}" for p in ports), "--cluster-yes"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise DevstackError(f"redis-cli --cluster create failed: {done.stdout[-800:]}"
                                f"{done.stderr[-800:]}")
        say(f"redis cluster: {len(ports)} masters joined, slots assigned")
    while (why := redis_cluster_state(cfg)) is not None:
        if time.monotonic() > deadline:
            raise DevstackError(f"the Redis Cluster is not ok: {why}; see "
                                f"{redis_cluster_dir(cfg)}/node*/redis.log")
        time.sleep(0.2)
    env_file = redis_cluster_dir(cfg) / "client.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in redis_cluster_env(cfg).items()))
    settings = " ".join(f"{k}={v}" for k, v in redis_cluster_env(cfg).items())
    say(f"redis cluster: answering; workers use {settings} (also in {env_file})")
    return started


def cmd_up_redis_cluster(cfg: Config, started_file: str | None, brokers: int) -> int:
    """`up --redis-cluster`: the Redis Cluster, then Kafka and the topics as `up` does."""
    with locked(cfg):
        started = start_redis_cluster(cfg)
    env = redis_cluster_env(cfg)
    ccfg = dataclasses.replace(cfg, redis_url=env["REDIS_URL"],
                               redis_port=redis_cluster_ports(cfg)[0], redis_cluster=True)
    inner = Path(started_file).with_suffix(".inner") if started_file else None
    if brokers > 1:
        rc = cmd_up_cluster(ccfg, brokers, str(inner) if inner else None, with_redis=False)
    else:
        rc = cmd_up(ccfg, str(inner) if inner else None, with_redis=False)
    if started_file:
        names = ["redis-cluster"] if started else []
        if inner and inner.exists():
            names += inner.read_text().split()
            inner.unlink()
        Path(started_file).write_text("".join(f"{name}\n" for name in names))
    return rc


def down_redis_cluster(cfg: Config) -> None:
    """Stop every node of the Redis Cluster that devstack started."""
    root = redis_cluster_dir(cfg)
    if not root.is_dir():
        return
    for node in sorted(root.glob("node*")):
        rec = live_record(node / "devstack.pid")
        if rec is not None:
            say(f"redis cluster {node.name}: stopping pid {rec.pid}")
            stop(rec, f"redis cluster {node.name}", cfg.stop_timeout)


# ------------------------------------------------------------------------- topics


# Dead letters carry the original payload base64-encoded, so they can be a third
# larger than the largest input the broker accepts; every topic takes 4 MiB.
TOPIC_CONFIG = {"max.message.bytes": str(4 * 1024 * 1024)}


def ensure_topics(cfg: Config) -> None:
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import NewTopic

    admin = admin_client(cfg)
    deadline = time.monotonic() + cfg.start_timeout
    reported: set[str] = set()
    while True:
        md = admin.list_topics(timeout=10)
        missing = [t for t in cfg.topics if t not in md.topics]
        for name, want in cfg.topics.items():
            if name in md.topics and name not in reported:
                reported.add(name)
                have = len(md.topics[name].partitions)
                replicas = min((len(p.replicas) for p in md.topics[name].partitions.values()),
                               default=0)
                wanted_replicas, _ = topic_replication(cfg, max(len(md.brokers), cfg.brokers))
                if replicas < wanted_replicas:
                    say(f"topic {name}: exists with {replicas} replicas, not "
                        f"{wanted_replicas}; left alone - delete it to recreate")
                if have == want:
                    say(f"topic {name}: exists ({have} partitions)")
                else:
                    say(
                        f"topic {name}: exists with {have} partitions, not {want} "
                        "(CVM_PARTITIONS); left alone - delete it to recreate"
                    )
        if not missing:
            break
        # Right after a cluster starts, the broker that answers may not list every broker
        # yet: the replication follows the brokers devstack started, and creating waits
        # (INVALID_REPLICATION_FACTOR, retried below) until enough have registered.
        replicas, extra = topic_replication(cfg, max(len(md.brokers), cfg.brokers))
        futures = admin.create_topics(
            [NewTopic(t, cfg.topics[t], replicas, config={**TOPIC_CONFIG, **extra})
             for t in missing],
            request_timeout=15,
        )
        retry = False
        for name, fut in futures.items():
            try:
                fut.result()
                reported.add(name)
                say(f"topic {name}: created ({cfg.topics[name]} partitions)")
            except KafkaException as exc:
                err = exc.args[0]
                if err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    continue
                # right after start the broker may not be registered yet; and a request
                # sent through a bootstrap address fails with _DESTROY_BROKER when the client
                # replaces that connection by the brokers the metadata names
                if err.retriable() or err.code() in (KafkaError.INVALID_REPLICATION_FACTOR,
                                                     KafkaError._DESTROY_BROKER):
                    retry = True
                    continue
                raise DevstackError(f"cannot create topic {name}: {err.str()}") from None
        if retry:
            if time.monotonic() > deadline:
                raise DevstackError(f"topics not created within {cfg.start_timeout:.0f}s")
            time.sleep(0.5)
    # wait until every partition has a leader, so producers work immediately
    while True:
        md = admin.list_topics(timeout=10)
        leaderless = [
            t
            for t in cfg.topics
            if t not in md.topics
            or md.topics[t].error is not None
            or any(p.leader < 0 for p in md.topics[t].partitions.values())
        ]
        if not leaderless:
            return
        if time.monotonic() > deadline:
            raise DevstackError(
                f"topics without leaders after {cfg.start_timeout:.0f}s: {leaderless}"
            )
        time.sleep(0.3)



# ------------------------------------------------------- replicated Kafka (--brokers N)
#
# `up --brokers 3`: three KRaft nodes, each a controller and a broker, on this machine:
# node i (1-based) serves clients on the Kafka port + 2(i-1) and its controller on the
# next port, under <cache>/kafka-cluster/node<i>. Topics get replication factor 3 and
# min.insync.replicas=2 (see `topic_replication`), so a producer with acks=all keeps
# writing with one broker down. Clients list every broker in KAFKA_BOOTSTRAP_SERVERS
# (`up` prints the list and writes it to <cache>/kafka-cluster/client.env).

CLUSTER_HEAP = "-Xms128m -Xmx384m"


def cluster_dir(cfg: Config) -> Path:
    return cfg.cache / "kafka-cluster"


def cluster_nodes(cfg: Config, n: int) -> list[Config]:
    """One Config per node: its ports, its folder (``kafka_dir``) and a small heap."""
    heap = (os.environ.get("CVM_DEVSTACK_KAFKA_CLUSTER_HEAP_OPTS") or CLUSTER_HEAP).split()
    return [
        dataclasses.replace(
            cfg,
            cache=cluster_dir(cfg) / f"node{i + 1}",
            kafka_port=cfg.kafka_port + 2 * i,
            controller_port=cfg.kafka_port + 2 * i + 1,
            heap_opts=heap,
        )
        for i in range(n)
    ]


def cluster_bootstrap(cfg: Config, n: int) -> str:
    return ",".join(f"{node.kafka_host}:{node.kafka_port}" for node in cluster_nodes(cfg, n))


def write_node_config(node: Config, index: int, nodes: Sequence[Config]) -> Path:
    """server.properties of node `index` (0-based) of a combined-mode KRaft cluster."""
    d = node.kafka_dir
    for sub in ("logs", "data"):
        (d / sub).mkdir(parents=True, exist_ok=True)

    def host(c: Config) -> str:
        return f"[{c.kafka_host}]" if ":" in c.kafka_host else c.kafka_host

    voters = ",".join(f"{i + 1}@{host(c)}:{c.controller_port}" for i, c in enumerate(nodes))
    h, n = host(node), len(nodes)
    props = d / "server.properties"
    props.write_text(
        f"""# Generated by scripts/devstack up --brokers {n} on every start; edits are overwritten.
process.roles=broker,controller
node.id={index + 1}
controller.quorum.voters={voters}
listeners=PLAINTEXT://{h}:{node.kafka_port},CONTROLLER://{h}:{node.controller_port}
advertised.listeners=PLAINTEXT://{h}:{node.kafka_port}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs={d / "data"}
metadata.log.dir={d / "data"}
num.partitions={max(node.topics.values())}
default.replication.factor={min(n, 3)}
min.insync.replicas={2 if n >= 3 else 1}
offsets.topic.replication.factor={min(n, 3)}
transaction.state.log.replication.factor={min(n, 3)}
transaction.state.log.min.isr={2 if n >= 3 else 1}
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
num.network.threads=2
num.io.threads=2
log.retention.hours=168
log.segment.bytes=1073741824
"""
    )
    (d / "log4j.properties").write_text(
        "log4j.rootLogger=INFO, file\n"
        "log4j.appender.file=org.apache.log4j.RollingFileAppender\n"
        "log4j.appender.file.File=${kafka.logs.dir}/server.log\n"
        "log4j.appender.file.MaxFileSize=20MB\n"
        "log4j.appender.file.MaxBackupIndex=2\n"
        "log4j.appender.file.layout=org.apache.log4j.PatternLayout\n"
        "log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
        "log4j.logger.kafka.request.logger=WARN\n"
        "log4j.logger.state.change.logger=WARN\n"
    )
    return props


def start_cluster(cfg: Config, n: int) -> list[str]:
    """Start the nodes of an `n`-node cluster that do not run yet; returns their names."""
    nodes = cluster_nodes(cfg, n)
    cluster_dir(cfg).mkdir(parents=True, exist_ok=True)
    started = []
    tools: tuple[str, Path] | None = None
    cid_path = cluster_dir(cfg) / "cluster.id"
    for i, node in enumerate(nodes):
        props = write_node_config(node, i, nodes)
        if live_record(kafka_record_path(node)) is not None:
            continue
        if tcp_open(node.kafka_host, node.kafka_port) or tcp_open(
            node.kafka_host, node.controller_port
        ):
            raise DevstackError(
                f"--brokers {n}: port {node.kafka_port} or {node.controller_port} of node "
                f"{i + 1} is in use; point KAFKA_BOOTSTRAP_SERVERS at a base port with "
                f"{2 * n} free ports after it"
            )
        if tools is None:
            tools = find_java(), ensure_kafka_lib(cfg)
        java, lib = tools
        if not cid_path.is_file():
            cid_path.write_text(_new_cluster_id() + "\n")
        cid = cid_path.read_text().strip()
        data = node.kafka_dir / "data"
        if not (data / "meta.properties").is_file():
            log = node.kafka_dir / "logs" / "format.log"
            with open(log, "wb") as out:
                rc = subprocess.run(
                    java_cmd(node, java, lib, "kafka.tools.StorageTool", "format", "-t", cid,
                             "-c", str(props), "--ignore-formatted", heap=False),
                    cwd=node.kafka_dir, stdin=subprocess.DEVNULL, stdout=out,
                    stderr=subprocess.STDOUT,
                ).returncode
            if rc != 0:
                raise DevstackError(f"formatting node {i + 1} failed; see {log}{tail(log)}")
        proc = spawn(java_cmd(node, java, lib, "kafka.Kafka", str(props)),
                     node.kafka_dir / "logs" / "kafka.out", node.kafka_dir)
        Record.write(kafka_record_path(node), proc.pid, f"{node.kafka_host}:{node.kafka_port}")
        say(f"kafka node {i + 1}: started pid {proc.pid} on {node.kafka_host}:{node.kafka_port}")
        started.append(f"kafka-node{i + 1}")
    return started


def _new_cluster_id() -> str:
    while True:
        cid = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def wait_cluster(cfg: Config, n: int) -> None:
    """Wait until all `n` brokers are registered in the cluster's metadata."""
    deadline = time.monotonic() + cfg.start_timeout
    t0 = time.monotonic()
    while True:
        md = kafka_metadata(cfg)
        if md is not None and len(md.brokers) >= n:
            say(f"kafka: {n} brokers answering at {cfg.bootstrap} ({time.monotonic() - t0:.1f}s)")
            return
        for i, node in enumerate(cluster_nodes(cfg, n)):
            if kafka_record_path(node).exists() and live_record(kafka_record_path(node)) is None:
                log = node.kafka_dir / "logs" / "kafka.out"
                raise DevstackError(f"kafka node {i + 1} exited; see {node.kafka_log}{tail(log)}")
        if time.monotonic() > deadline:
            raise DevstackError(
                f"{n} brokers did not register within {cfg.start_timeout:.0f}s; see "
                f"{cluster_dir(cfg)}/node*/kafka/logs/server.log"
            )
        time.sleep(0.5)


def cmd_up_cluster(
    cfg: Config, n: int, started_file: str | None, with_redis: bool = True
) -> int:
    """`up --brokers n`: the replicated Kafka, then Redis and the topics as `up` does."""
    bootstrap = cluster_bootstrap(cfg, n)
    ccfg = dataclasses.replace(cfg, bootstrap=bootstrap,
                               kafka_client={**cfg.kafka_client, "bootstrap.servers": bootstrap},
                               brokers=n)
    cfg.kafka_dir.mkdir(parents=True, exist_ok=True)  # Maven's folder if the jars are missing
    with locked(cfg):
        started = start_cluster(ccfg, n)
        wait_cluster(ccfg, n)
    inner = Path(started_file).with_suffix(".inner") if started_file else None
    rc = cmd_up(ccfg, str(inner) if inner else None, with_redis=with_redis)
    (cluster_dir(cfg) / "client.env").write_text(f"KAFKA_BOOTSTRAP_SERVERS={bootstrap}\n")
    say(f"kafka: clients use KAFKA_BOOTSTRAP_SERVERS={bootstrap} "
        f"(also in {cluster_dir(cfg) / 'client.env'})")
    if started_file:
        names = ["kafka-cluster"] if started else []
        if inner and inner.exists():
            names += inner.read_text().split()
            inner.unlink()
        Path(started_file).write_text("".join(f"{name}\n" for name in names))
    return rc


def down_cluster(cfg: Config) -> None:
    """Stop every node of the replicated Kafka that devstack started."""
    root = cluster_dir(cfg)
    if not root.is_dir():
        return
    records = [(node.name, rec) for node in sorted(root.glob("node*"))
               if (rec := live_record(node / "kafka" / "devstack.pid")) is not None]
    # All at once: a node stopped last waits for a controller quorum that is gone.
    for name, rec in records:
        say(f"kafka {name}: stopping pid {rec.pid}")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(rec.pid, signal.SIGTERM)
    for name, rec in records:
        stop(rec, f"kafka {name}", cfg.stop_timeout)


def topic_replication(cfg: Config, brokers: int) -> tuple[int, dict[str, str]]:
    """Replication factor and extra topic config for a cluster of `brokers` brokers."""
    if brokers >= 3:
        return 3, {"min.insync.replicas": "2"}
    return 1, {}


# ----------------------------------------------------------------------- commands


@contextlib.contextmanager
def locked(cfg: Config) -> Iterator[None]:
    """One `up`/`down` at a time per cache folder."""
    cfg.cache.mkdir(parents=True, exist_ok=True)
    with open(cfg.cache / "devstack.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _owner(rec: Record | None) -> str:
    return f"started by devstack, pid {rec.pid}" if rec else "not started by devstack"


def cmd_up(
    cfg: Config, started_file: str | None = None, secure: bool = False, with_redis: bool = True
) -> int:
    """Start what is missing; without `with_redis`, Kafka and the topics only (the Redis
    Cluster of `up --redis-cluster` is started apart)."""
    t0 = time.monotonic()
    for d in (cfg.kafka_dir / "logs", cfg.kafka_dir / "data", cfg.redis_dir / "data"):
        d.mkdir(parents=True, exist_ok=True)
    with locked(cfg):
        kafka_proc: subprocess.Popen[bytes] | None = None
        redis_proc: subprocess.Popen[bytes] | None = None
        kafka_rec = live_record(kafka_record_path(cfg))
        kafka_reused = kafka_metadata(cfg) is not None
        redis_rec = live_record(redis_record_path(cfg)) if with_redis else None
        redis_reused = not with_redis or redis_ping(cfg) is None
        if cfg.kafka_protocol != "PLAINTEXT":
            # KAFKA_* name a secured listener (e.g. from secure/client.env): use it as it is.
            if secure or not kafka_reused:
                raise DevstackError(
                    ("--secure starts a broker from plaintext settings, not from"
                     if secure else "no Kafka answers (or it refuses these credentials) at")
                    + f" KAFKA_BOOTSTRAP_SERVERS={cfg.bootstrap} with "
                    f"KAFKA_SECURITY_PROTOCOL={cfg.kafka_protocol}; devstack starts a broker "
                    "only from plaintext settings: run `scripts/devstack up --secure` without "
                    "the secure client settings to start one with a SASL_SSL listener"
                )
            kafka_rec = None  # reused; its record (if any) names the plaintext address
        for name, rec, addr in (
            ("kafka", kafka_rec, f"{cfg.kafka_host}:{cfg.kafka_port}"),
            ("redis", redis_rec, f"{cfg.redis_host}:{cfg.redis_port}"),
        ):
            if rec and rec.address != addr:
                raise DevstackError(
                    f"devstack's {name} (pid {rec.pid}) runs at {rec.address}, not at the "
                    f"configured {addr}; run `scripts/devstack down` first"
                )
        # Check every prerequisite (Java, jars, redis-server) before starting anything.
        kafka_tools = prepare_kafka(cfg, secure) if not (kafka_reused or kafka_rec) else None
        material = None
        if secure and (kafka_reused or kafka_rec):
            material = existing_secure_material(cfg)
            why = "no certificates made" if material is None else secure_answers(cfg, material)
            if why is not None:
                raise DevstackError(
                    f"--secure: the broker at {cfg.bootstrap} has no SASL_SSL listener of "
                    f"devstack's at {cfg.kafka_host}:{cfg.secure_port} ({why}); "
                    + ("stop it with `scripts/devstack down kafka` and rerun"
                       if kafka_rec else "it was not started by devstack: point "
                       "KAFKA_BOOTSTRAP_SERVERS at a free port to start one")
                )
        redis_server = prepare_redis(cfg) if not (redis_reused or redis_rec) else None

        if kafka_reused:
            say(f"kafka: already answering at {cfg.bootstrap} ({_owner(kafka_rec)}); reusing it")
        elif kafka_rec:
            say(f"kafka: devstack's broker (pid {kafka_rec.pid}) is starting; waiting for it")
        elif kafka_tools:
            material = secure_material(cfg) if secure else None
            kafka_proc = start_kafka(cfg, *kafka_tools, material)  # boots while Redis starts
        if not with_redis:
            pass
        elif redis_reused:
            say(f"redis: already answering at {cfg.redis_url} ({_owner(redis_rec)}); reusing it")
        elif redis_rec:
            say(f"redis: devstack's server (pid {redis_rec.pid}) is starting; waiting for it")
            wait_redis(cfg, None, redis_rec, time.monotonic())
        elif redis_server:
            redis_proc = start_redis(cfg, redis_server)
            wait_redis(cfg, redis_proc, None, time.monotonic())
        if not kafka_reused:
            wait_kafka(cfg, kafka_proc, kafka_rec, t0)
        ensure_topics(cfg)
        if material is not None:
            finish_secure(cfg, material)
    if started_file:
        started = [n for n, p in (("kafka", kafka_proc), ("redis", redis_proc)) if p is not None]
        Path(started_file).write_text("".join(f"{n}\n" for n in started))
    say(f"up in {time.monotonic() - t0:.1f}s")
    return 0


def stop(rec: Record, name: str, timeout: float) -> None:
    """SIGTERM the process group devstack started, SIGKILL it after ``timeout``."""

    def signal_it(sig: signal.Signals) -> None:
        try:
            if os.getpgid(rec.pid) == rec.pid:  # started with its own session
                os.killpg(rec.pid, sig)
            else:
                os.kill(rec.pid, sig)
        except ProcessLookupError:
            pass

    signal_it(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while rec.alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    if rec.alive():
        say(f"{name}: pid {rec.pid} still running after {timeout:.0f}s; sending SIGKILL")
        signal_it(signal.SIGKILL)
        deadline = time.monotonic() + 10
        while rec.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
    rec.remove()


def cmd_down(cfg: Config, only: Sequence[str] = ()) -> int:
    t0 = time.monotonic()
    with locked(cfg):
        owned: list[tuple[str, Record]] = []
        services = (
            ("kafka", kafka_record_path(cfg), cfg.bootstrap, lambda: bool(kafka_metadata(cfg))),
            ("redis", redis_record_path(cfg), cfg.redis_url, lambda: redis_ping(cfg) is None),
        )
        for name, path, address, answers in services:
            if only and name not in only or name == "redis" and cfg.redis_cluster:
                continue
            rec = live_record(path)
            if rec:
                owned.append((name, rec))
            elif answers():
                say(f"{name}: {address} answers but was not started by devstack; left running")
            else:
                say(f"{name}: not running")
        if not only or "kafka" in only or "kafka-cluster" in only:
            down_cluster(cfg)
        if not only or "redis" in only or "redis-cluster" in only:
            down_redis_cluster(cfg)
        # Redis first (instant), then Kafka (a controlled shutdown takes seconds).
        for name, rec in sorted(owned, key=lambda item: item[0] != "redis"):
            t1 = time.monotonic()
            say(f"{name}: stopping pid {rec.pid}")
            stop(rec, name, cfg.stop_timeout)
            if rec.alive():
                raise DevstackError(f"{name}: pid {rec.pid} survived SIGKILL")
            say(f"{name}: stopped ({time.monotonic() - t1:.1f}s)")
    say(f"down in {time.monotonic() - t0:.1f}s")
    return 0


def service_status(cfg: Config) -> dict[str, dict[str, Any]]:
    md = kafka_metadata(cfg)
    kafka_rec = live_record(kafka_record_path(cfg))
    redis_why = redis_ping(cfg)
    redis_rec = live_record(redis_record_path(cfg))
    topics: dict[str, int | None] = {
        t: (len(md.topics[t].partitions) if md is not None and t in md.topics else None)
        for t in cfg.topics
    }
    material = existing_secure_material(cfg) if cfg.kafka_protocol == "PLAINTEXT" else None
    secure = None
    if material is not None and material.client_env.is_file():
        why = secure_answers(cfg, material)
        secure = {
            "address": f"{cfg.kafka_host}:{cfg.secure_port}",
            "answering": why is None,
            "error": why,
            "client_env": str(material.client_env),
        }
    out: dict[str, dict[str, Any]] = {
        "kafka": {
            "address": cfg.bootstrap,
            "answering": md is not None,
            "started_by_devstack": kafka_rec is not None,
            "pid": kafka_rec.pid if kafka_rec else None,
            "log": str(cfg.kafka_log),
            "topics": topics,
            "expected_partitions": cfg.topics,
            "secure": secure,  # the SASL_SSL listener of `up --secure`, if one was made
        },
        "redis": {
            "address": cfg.redis_url,
            "answering": redis_why is None,
            "error": redis_why,
            "started_by_devstack": redis_rec is not None,
            "pid": redis_rec.pid if redis_rec else None,
            "log": str(cfg.redis_log),
        },
    }
    nodes = [rec for node in sorted(redis_cluster_dir(cfg).glob("node*"))
             if (rec := live_record(node / "devstack.pid")) is not None]
    if nodes or cfg.redis_cluster:
        why = redis_cluster_state(cfg)
        out["redis-cluster"] = {
            "address": redis_cluster_url(cfg),
            "answering": why is None,
            "error": why,
            "started_by_devstack": bool(nodes),
            "pid": nodes[0].pid if nodes else None,
            "pids": [rec.pid for rec in nodes],
            "log": str(redis_cluster_dir(cfg) / "node*" / "redis.log"),
            "settings": redis_cluster_env(cfg),
        }
        if cfg.redis_cluster:  # the worker uses the cluster, not a single Redis
            out.pop("redis")
    return out


def cmd_status(cfg: Config, as_json: bool) -> int:
    st = service_status(cfg)
    ok = all(s["answering"] for s in st.values())
    if as_json:
        print(json.dumps(st, indent=2))
        return 0 if ok else EXIT_DOWN
    for name, s in st.items():
        state = "answering" if s["answering"] else "NOT answering"
        owner = (
            f"started by devstack (pid {s['pid']})"
            if s["started_by_devstack"]
            else "not started by devstack"
        )
        print(f"{name:<6} {s['address']:<28} {state:<14} {owner}   log: {s['log']}")
        if name == "redis-cluster":
            print(f"{'':<6} workers use " + " ".join(f"{k}={v}" for k, v in s["settings"].items()))
        if name == "kafka" and s["secure"]:
            sec = s["secure"]
            state = "answering" if sec["answering"] else "NOT answering"
            print(f"{'':<6} {sec['address']:<28} {state:<14} SASL_SSL   "
                  f"client settings: {sec['client_env']}")
    if st["kafka"]["answering"]:
        topics = st["kafka"]["topics"]
        present = [t for t, n in topics.items() if n is not None]
        print(f"topics {len(present)}/{len(topics)} present", end="")
        odd = [f"{t}={n}" for t, n in topics.items() if n is not None and n != cfg.topics[t]]
        absent = [t for t, n in topics.items() if n is None]
        if absent:
            print(f"; missing: {', '.join(absent)} (run `scripts/devstack up`)", end="")
        if odd:
            print(f"; partition count differs from CVM_PARTITIONS: {', '.join(odd)}", end="")
        print()
    return 0 if ok else EXIT_DOWN


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/devstack",
        description="Local Kafka (KRaft) + Redis without Docker.",
        epilog="Cache folder: $CVM_DEVSTACK_DIR or <repo>/.devstack. "
        f"`status` exits {EXIT_DOWN} when a service does not answer.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser(
        "up", help="start what is missing, wait until it answers, create the topics"
    )
    up.add_argument(
        "--secure", action="store_true",
        help="give the broker a SASL_SSL listener (SCRAM-SHA-512) beside the plaintext one",
    )
    up.add_argument(
        "--brokers", type=int, default=int(os.environ.get("CVM_DEVSTACK_KAFKA_BROKERS") or 1),
        help="Kafka brokers to start: 1 (default) or 3 (KRaft, each a controller too; topics "
        "with replication factor 3 and min.insync.replicas=2)",
    )
    up.add_argument(
        "--redis-cluster", action="store_true",
        default=(os.environ.get("CVM_REDIS_CLUSTER") or "").lower() in ("1", "true", "yes"),
        help="start a 3-master Redis Cluster (instead of one Redis) and print the settings a "
        "worker needs (REDIS_URL, CVM_REDIS_CLUSTER=true); the default with CVM_REDIS_CLUSTER",
    )
    up.add_argument(
        "--started-file",
        help="write the names of the services this call started (one a line) to this file",
    )
    down = sub.add_parser("down", help="stop only the services devstack started")
    # No `choices` here: with nargs="*" argparse also checks the empty default against them.
    down.add_argument(
        "services", nargs="*", metavar="SERVICE",
        help="stop only these (kafka, redis; redis also stops the Redis Cluster); default: all",
    )
    status = sub.add_parser("status", help="show each service and whether it answers")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    try:
        cfg = Config.load()
        if args.command == "up":
            if args.brokers not in (1, 3):
                parser.error("--brokers: 1 or 3")
            if args.redis_cluster:
                if args.secure:
                    parser.error("--secure: not with --redis-cluster")
                return cmd_up_redis_cluster(cfg, args.started_file, args.brokers)
            if args.brokers > 1:
                if args.secure:
                    parser.error("--secure starts one broker; not with --brokers")
                return cmd_up_cluster(cfg, args.brokers, args.started_file)
            return cmd_up(cfg, args.started_file, args.secure)
        if args.command == "down":
            unknown = sorted(set(args.services) - {"kafka", "redis", "kafka-cluster",
                                                   "redis-cluster"})
            if unknown:
                parser.error(f"unknown service {', '.join(unknown)}; choose kafka or redis")
            return cmd_down(cfg, args.services)
        return cmd_status(cfg, args.json)
    except DevstackError as exc:
        print(f"devstack: error: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
