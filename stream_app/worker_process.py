"""A worker in a subprocess of its own session: start, wait until it answers, stop, read its log.

`cvm evaluate`, the benchmarks and the end-to-end tests all run real workers next to
themselves; this is the one way they do it, with the port and polling helpers they share.
The child gets a session of its own, so a signal reaches the whole process group and
nothing of it outlives `kill`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from stream_app.settings import Settings


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], bool], deadline_s: float = 120, every: float = 0.2) -> bool:
    """Poll `check` until it holds or the deadline passes; returns the last result."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(every)
    return check()


class WorkerError(RuntimeError):
    """The worker exited early or did not answer in time; the message ends with its log."""


class WorkerProcess:
    """``python -m <module> worker`` with `env` over this process's environment, run in `cwd`.

    `command` runs another server of the ``cvm`` command instead (``("serve", "--port",
    "6067")``: the read server), whose ``/healthz`` answers at `settings`' web host and port.
    """

    def __init__(
        self,
        settings: Settings,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        module: str = "stream_app.cli",
        append: bool = True,
        cwd: Path | None = None,
        command: Sequence[str] = ("worker",),
    ) -> None:
        self.settings = settings
        self.log_path = log_path
        self.env = dict(env or {})
        self.module = module
        self.append = append
        self.cwd = cwd
        self.command = tuple(command)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, wait: bool = True, deadline_s: float = 120) -> None:
        """Start the worker and, with `wait`, return once ``/healthz`` answers."""
        with open(self.log_path, "ab" if self.append else "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module, *self.command],
                env={**os.environ, **self.env}, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=self.cwd, start_new_session=True,
            )
        if wait:
            self.wait_healthy(deadline_s)

    def check(self) -> None:
        """Raise `WorkerError` if the worker has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise WorkerError(
                f"the worker exited with status {self.proc.returncode}; its log ends with:\n"
                + self.log_tail()
            )

    def wait_healthy(self, deadline_s: float = 120) -> None:
        """Wait until the worker's ``/healthz`` answers 200; `WorkerError` if it never does."""
        url = f"http://{self.settings.web_host}:{self.settings.web_port}/healthz"
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            self.check()
            try:
                with urllib.request.urlopen(url, timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise WorkerError(
            f"the worker did not answer {url} within {deadline_s:g} s; its log ends with:\n"
            + self.log_tail()
        )

    def kill(self, sig: int = signal.SIGKILL, timeout_s: float = 60) -> bool:
        """Send `sig` to the worker's group and wait; SIGKILL after `timeout_s`.

        Returns True if the worker had to be killed because it ignored `sig`.
        """
        proc, self.proc = self.proc, None
        if proc is None:
            return False
        forced = False
        try:
            if proc.poll() is None:
                os.killpg(proc.pid, sig)
                try:
                    proc.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    forced = True
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=30)
            # The group may hold children of the worker: none outlives it.
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.poll()
        return forced

    def stop(self, timeout_s: float = 60) -> bool:
        """SIGTERM, a clean stop; SIGKILL after `timeout_s`. True if it had to be killed."""
        return self.kill(signal.SIGTERM, timeout_s)

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"
