"""``cvm`` as a person runs it: tables by default, ``--json`` for scripts, one error line.

The records are written by the real write path (`Ingestor.process` and its Lua commit)
into the real Redis of the dev stack; every command runs as a subprocess, so what is
checked is what a terminal would show (exit code, stdout, stderr).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from stream_app.pipeline import Ingestor, RawRecord
from stream_app.settings import Settings
from stream_app.store.customers import CustomerStore
from stream_app.worker_process import free_port
from tests.conftest import ROOT, settings_env
from tests.e2e.helpers import own_redis_db
from tests.private_redis import PrivateRedis

pytestmark = pytest.mark.integration


class _Letters:
    async def send(self, key: bytes | None, message: dict[str, Any]) -> None:
        raise AssertionError(f"unexpected dead letter {message}")


def _purchases() -> list[dict[str, Any]]:
    rows = []
    for i, (cid, amount, channel) in enumerate([
        ("C1", 1234.5, "web"), ("C1", 99.99, "web"), ("C2", 20.0, "store"),
        ("C3", 5.0, "web"), ("C3", 7.25, "store"),
    ]):
        rows.append({"event_id": f"e{i}", "customer_id": cid, "kind": "order",
                     "occurred_at": f"2026-03-{10 + i}T10:00:00Z", "amount": amount,
                     "currency": "USD", "channel": channel})
    return rows


async def _write(settings: Settings) -> None:
    redis = Redis.from_url(settings.redis_url)
    try:
        ingestor = Ingestor(settings, CustomerStore(redis), _Letters())
        records = [RawRecord(settings.topics.purchases, 0, n, m["customer_id"].encode(),
                             orjson.dumps(m)) for n, m in enumerate(_purchases())]
        await ingestor.process(records)
    finally:
        await redis.aclose()


@pytest.fixture(scope="module")
def populated() -> Iterator[Settings]:
    subprocess.run([str(ROOT / "scripts" / "devstack"), "up"], check=True, cwd=ROOT)
    with own_redis_db(Settings.from_env()) as s:
        asyncio.run(_write(s))
        yield s


def cvm(settings: Settings | None, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "CVM_DEBUG"}
    if settings is not None:
        base.update(settings_env(settings))
    return subprocess.run(
        [sys.executable, "-m", "stream_app.cli", *args], cwd=ROOT, env={**base, **env},
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )


def one_error_line(out: subprocess.CompletedProcess[str], code: int, prefix: str) -> str:
    """The command failed with `code` and said why in one line, with no traceback."""
    assert out.returncode == code, (out.returncode, out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(prefix), lines
    assert "Traceback" not in out.stderr + out.stdout
    return lines[0]


# ------------------------------------------------------------------------------- formats


def test_lookup_prints_a_table_with_readable_numbers_and_json_on_request(
    populated: Settings,
) -> None:
    out = cvm(populated, "lookup", "C1")
    assert out.returncode == 0, out.stderr
    assert "customer C1" in out.stdout
    assert "1,334.49" in out.stdout  # revenue: two decimals, thousands separator
    assert "{" not in out.stdout.split("\n", 1)[0]
    doc = orjson.loads(cvm(populated, "lookup", "C1", "--json").stdout)
    assert doc["customer_id"] == "C1" and doc["revenue"] == pytest.approx(1334.49)


def test_top_table_json_and_limit(populated: Settings) -> None:
    out = cvm(populated, "top", "--by", "net_contribution", "-n", "2")
    assert out.returncode == 0, out.stderr
    assert "Top 2 customers by net" in out.stdout
    assert "C1" in out.stdout and "C3" not in out.stdout  # C1 first, C2 second
    rows = orjson.loads(cvm(populated, "top", "--by", "net_contribution", "--json").stdout)
    assert [r["customer_id"] for r in rows] == ["C1", "C2", "C3"]
    assert isinstance(rows[0]["net_contribution"], float)


def test_rollups_limit_says_how_many_are_left_out(populated: Settings) -> None:
    out = cvm(populated, "rollups", "channel", "-n", "1")
    assert out.returncode == 0, out.stderr
    assert "web" in out.stdout and "store" not in out.stdout.split("1 of 2")[0]
    assert "1 of 2 shown" in out.stdout
    rows = orjson.loads(cvm(populated, "rollups", "channel", "--json", "-n", "0").stdout)
    assert sorted(r["channel"] for r in rows) == ["store", "web"]


def test_winback_reports_the_interval_or_why_there_is_none(populated: Settings) -> None:
    doc = orjson.loads(cvm(populated, "winback", "--json").stdout)
    assert doc["uplift_ci95"] is None and doc["significant"] is None
    out = cvm(populated, "winback")
    assert out.returncode == 0 and "No uplift yet" in out.stdout, out


# ------------------------------------------------------------------------------- errors


def test_unknown_customer_is_one_line_and_exit_1(populated: Settings) -> None:
    line = one_error_line(cvm(populated, "lookup", "NOBODY"), 1, "cvm lookup: ")
    assert "'NOBODY' is unknown" in line


def test_redis_down_is_one_line_saying_what_to_do(populated: Settings) -> None:
    down = f"redis://127.0.0.1:{free_port()}/0"
    for args in (("lookup", "C1"), ("top",), ("rollups", "campaign"), ("winback",)):
        line = one_error_line(cvm(populated, *args, REDIS_URL=down), 2, f"cvm {args[0]}: ")
        assert f"Redis at {down} is not reachable" in line and "REDIS_URL" in line, line


def test_wrong_redis_password_is_one_line(tmp_path: Path) -> None:
    server = PrivateRedis(tmp_path / "redis", password="the-right-password")
    server.start()
    try:
        url = f"redis://:not-the-password@127.0.0.1:{server.port}/0"
        line = one_error_line(cvm(None, "lookup", "C1", REDIS_URL=url), 2, "cvm lookup: ")
        assert "refused the login" in line and "not-the-password" not in line, line
    finally:
        server.stop()


@pytest.mark.parametrize(("variable", "value", "says"), [
    ("CVM_HORIZON_DAYS", "x", "CVM_HORIZON_DAYS='x' is not an integer"),
    ("CVM_PARTITIONS", "0", "CVM_PARTITIONS=0 must be at least 1"),
    ("CVM_FX_RATES", "EUR=abc", "CVM_FX_RATES"),
])
def test_a_bad_environment_variable_is_one_line(
    populated: Settings, variable: str, value: str, says: str
) -> None:
    line = one_error_line(cvm(populated, "lookup", "C1", **{variable: value}), 2, "cvm lookup: ")
    assert says in line, line


@pytest.mark.parametrize(("args", "says"), [
    (("lookup",), "Missing argument"),
    (("top", "-n", "0"), "--limit"),
    (("top", "--by", "luck"), "is not a ranking"),
    (("rollups", "region"), "is not a scope"),
    (("lookup", "C1", "--as-of", "yesterday"), "is not RFC 3339"),
    (("lookup", "C1", "--horizon-days", "-3"), "not within"),
    (("lookup", "C1", "--colour"), "No such option"),
])
def test_bad_arguments_are_one_line_and_exit_2(
    populated: Settings, args: tuple[str, ...], says: str
) -> None:
    line = one_error_line(cvm(populated, *args), 2, f"cvm {args[0]}: ")
    assert says in line, line


def test_debug_shows_the_traceback(populated: Settings) -> None:
    down = f"redis://127.0.0.1:{free_port()}/0"
    out = cvm(populated, "--debug", "lookup", "C1", REDIS_URL=down)
    assert out.returncode != 0 and "Traceback" in out.stderr


def test_alerts_follow_says_it_is_waiting(settings: Settings) -> None:
    import signal

    proc = subprocess.Popen(
        [sys.executable, "-m", "stream_app.cli", "alerts", "--follow"], cwd=ROOT,
        env={**os.environ, **settings_env(settings)}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
    )
    try:
        assert proc.stderr is not None
        import select

        ready, _, _ = select.select([proc.stderr], [], [], 60)  # no message will arrive
        line = proc.stderr.readline() if ready else ""
        assert line.startswith("cvm alerts: waiting for messages on "), line
        assert settings.topics.alerts in line and "Ctrl-C" in line, line
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert proc.returncode == 0
