"""``cvm serve``: the read API from Redis, without a worker, in processes of its own.

Records are written by the real write path (`Ingestor.process` and its Lua commit) into a
Redis database of the dev stack; the server runs as ``cvm serve`` in a subprocess and is
asked over HTTP, as a service would ask it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from stream_app import lookup
from stream_app.pipeline import Ingestor, RawRecord
from stream_app.settings import Settings
from stream_app.store.customers import CustomerStore
from stream_app.worker_process import free_port
from tests.conftest import ROOT, settings_env
from tests.e2e.helpers import NoDeadLetters, own_redis_db

pytestmark = pytest.mark.integration

TOKEN = "reader-0123456789abcdef"


def _order(n: int, cid: str, day: str, amount: float) -> RawRecord:
    message = {"event_id": f"o-{n}", "customer_id": cid, "occurred_at": f"2026-{day}T10:00:00Z",
               "kind": "order", "amount": amount, "cost": amount / 2, "currency": "USD",
               "channel": "web"}
    return RawRecord("cvm.purchases", n % 4, n, cid.encode(), orjson.dumps(message))


async def _write(settings: Settings) -> dict[str, Any]:
    redis = Redis.from_url(settings.redis_url)
    try:
        ingestor = Ingestor(settings, CustomerStore(redis), NoDeadLetters())
        orders = [("A1", "02-01", 80.0), ("B2", "02-03", 20.0), ("A1", "02-20", 90.0),
                  ("C3", "03-01", 300.0), ("B2", "03-02", 25.0), ("A1", "03-09", 85.0)]
        await ingestor.process([_order(n, *o) for n, o in enumerate(orders)])
        # What the library answers, read the same way the server reads.
        return {cid: await lookup.customer(redis, settings, cid) for cid in ("A1", "B2", "C3")}
    finally:
        await redis.aclose()


def _get(port: int, path: str, token: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, orjson.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


def _start(settings: Settings, *args: str, **env: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "stream_app.cli", "serve", "--port", str(port), *args],
        cwd=ROOT, env={**os.environ, **settings_env(settings), **env},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if _get(port, "/readyz")[0] == 200:
                return proc, port
        except OSError:
            pass
        if proc.poll() is not None:
            raise AssertionError(f"cvm serve exited: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("cvm serve did not become ready")


def _servers(proc: subprocess.Popen[bytes]) -> list[int]:
    """The server processes of a `cvm serve --processes` (not its resource tracker)."""
    found = subprocess.run(["pgrep", "-P", str(proc.pid), "-f", "spawn_main"],
                           capture_output=True, text=True)
    return [int(p) for p in found.stdout.split()]


def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=20)


@pytest.fixture(scope="module")
def written() -> Iterator[tuple[Settings, dict[str, Any]]]:
    with own_redis_db(Settings.from_env()) as s:
        yield s, asyncio.run(_write(s))


def test_the_server_answers_what_the_library_does(
    written: tuple[Settings, dict[str, Any]],
) -> None:
    settings, expected = written
    proc, port = _start(settings)
    try:
        for cid in ("A1", "B2", "C3"):
            status, doc = _get(port, f"/customers/{cid}")
            assert status == 200
            assert doc == orjson.loads(orjson.dumps(expected[cid]))
        status, doc = _get(port, "/customers/A1/offers?k=2")
        assert status == 200 and doc["customer_id"] == "A1" and len(doc["offers"]) <= 2
        status, doc = _get(port, "/customers/top?by=clv&n=2")
        assert status == 200 and [r["rank"] for r in doc["customers"]] == [1, 2]
        status, doc = _get(port, "/customers/A1/history")
        assert status == 200 and doc["customer_id"] == "A1"
        assert _get(port, "/model")[1]["version"] == 0
        assert _get(port, "/rollups/channels")[1]["rows"][0]["channel"] == "web"
        assert _get(port, "/trends")[0] == 200
        assert _get(port, "/winback/results")[1]["outcomes"] == 0
        assert _get(port, "/customers/unprofitable?n=5")[0] == 200
        assert _get(port, "/customers/nobody") == (
            404, {"error": "not_found", "detail": "customer 'nobody' is unknown"})
        assert _get(port, "/customers/A1?horizon_days=ten") == (
            400, {"error": "bad_request", "detail": "horizon_days: 'ten' is not a number"})
        assert _get(port, "/customers/top?by=height")[0] == 400
        assert _get(port, "/livez") == (200, {"live": True})
    finally:
        assert _stop(proc) == 0


def test_with_tokens_a_read_needs_one_and_probes_do_not(
    written: tuple[Settings, dict[str, Any]],
) -> None:
    settings, _ = written
    proc, port = _start(settings, CVM_API_TOKENS=f"svc:{TOKEN}:read")
    try:
        assert _get(port, "/customers/A1")[0] == 401
        assert _get(port, "/customers/A1", token="not-the-token-000000")[0] == 401
        assert _get(port, "/customers/A1", token=TOKEN)[0] == 200
        assert _get(port, "/readyz")[0] == 200
    finally:
        _stop(proc)


@pytest.fixture
def two_servers(
    written: tuple[Settings, dict[str, Any]],
) -> Iterator[tuple[subprocess.Popen[bytes], int, list[int]]]:
    """`cvm serve --processes 2`: the supervisor, its port and its two server processes."""
    proc, port = _start(written[0], "--processes", "2")
    try:
        pids = _servers(proc)
        assert len(pids) == 2
        yield proc, port, pids
    finally:
        if proc.poll() is None:
            proc.kill()


def test_several_processes_share_the_port_and_one_dying_stops_the_rest(
    two_servers: tuple[subprocess.Popen[bytes], int, list[int]],
) -> None:
    proc, port, pids = two_servers
    assert all(_get(port, "/customers/B2")[0] == 200 for _ in range(20))
    os.kill(pids[0], signal.SIGKILL)
    assert proc.wait(timeout=20) == 1  # for the supervisor above to restart it all
    for pid in pids[1:]:
        with pytest.raises(ProcessLookupError):
            for _ in range(50):  # stopped by the parent (reaped: gone)
                os.kill(pid, 0)
                time.sleep(0.1)


def test_the_processes_stop_when_their_supervisor_is_killed_outright(
    two_servers: tuple[subprocess.Popen[bytes], int, list[int]],
) -> None:
    proc, port, pids = two_servers
    proc.kill()  # SIGKILL: no chance to stop them
    proc.wait(timeout=10)
    deadline = time.monotonic() + 20
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in alive if _running(pid)]
        time.sleep(0.2)
    assert alive == [], "orphaned read server processes still run"
    with pytest.raises(OSError):
        _get(port, "/livez")


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited (init reaps it)
