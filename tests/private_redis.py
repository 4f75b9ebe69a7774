"""A Redis server of a test's own on a free port: to stop, restart, or protect with a password."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import redis

from stream_app.worker_process import free_port, wait_until


class PrivateRedis:
    """Debian's ``redis-server`` on a free loopback port, with no persistence."""

    def __init__(self, workdir: Path, password: str | None = None) -> None:
        self.workdir = workdir
        self.password = password
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.skip("redis-server is not installed")
        args = [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.workdir),
                "--hash-max-listpack-value", "8192"]
        if self.password:
            args += ["--requirepass", self.password]
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.workdir / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)
        try:
            assert wait_until(self._answers(client), 30), "the private redis-server did not start"
        finally:
            client.close()

    @staticmethod
    def _answers(client: redis.Redis):  # type: ignore[no-untyped-def]
        def check() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False
        return check

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
