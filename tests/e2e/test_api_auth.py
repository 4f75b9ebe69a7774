"""The HTTP API of a real worker: bearer tokens, scopes, open probes, no cross-site changes."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream_app.settings import Settings
from tests.conftest import ROOT, WorkerProcess

pytestmark = pytest.mark.integration

READ = "read-token-0123456789abcdef"
ADMIN = "admin-token-fedcba9876543210"
TOKENS = f"dashboard:{READ}:read, operator:{ADMIN}:admin"
READS = ["/customers/top?n=1", "/customers/c-1", "/model", "/winback/results",
         "/rollups/channels", "/ops/feed.json", "/customers/c-1/history", "/trends",
         "/customers/unprofitable"]
PROBES = ["/livez", "/readyz", "/healthz"]


def call(
    settings: Settings, method: str, path: str, token: str | None = None,
    headers: dict[str, str] | None = None, data: bytes | None = None,
) -> tuple[int, dict[str, str], Any]:
    """(status, headers, body as JSON or text) of one request to the worker."""
    url = f"http://{settings.web_host}:{settings.web_port}{path}"
    h = dict(headers or {})
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, method=method, data=data, headers=h)
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            status, got, body = r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as err:
        status, got, body = err.code, dict(err.headers), err.read()
    try:
        return status, got, orjson.loads(body)
    except orjson.JSONDecodeError:
        return status, got, body.decode(errors="replace")


def _started(settings: Settings, log: Path, env: dict[str, str]) -> WorkerProcess:
    w = WorkerProcess(settings, log)
    w.env.update(env)
    w.start()
    return w


@pytest.fixture
def guarded(settings: Settings, tmp_path: Path) -> Iterator[WorkerProcess]:
    w = _started(settings, tmp_path / "worker.log", {"CVM_API_TOKENS": TOKENS})
    yield w
    w.stop()


def test_reads_need_a_token_and_probes_do_not(settings: Settings, guarded: WorkerProcess) -> None:
    for path in READS:
        status, headers, body = call(settings, "GET", path)
        assert status == 401, (path, status, body)
        assert headers.get("WWW-Authenticate", "").startswith("Bearer"), path
        assert call(settings, "GET", path, token="not-a-token-of-this-worker")[0] == 401, path
        assert call(settings, "GET", path, token=READ + "x")[0] == 401, path
        assert call(settings, "GET", path, token=READ)[0] in (200, 404), path
        assert call(settings, "GET", path, token=ADMIN)[0] in (200, 404), path
    for path in PROBES:
        assert call(settings, "GET", path)[0] == 200, path
    status, _, page = call(settings, "GET", "/ops")  # HTML without data; its JSON is guarded
    assert status == 200 and "<html" in page.lower()
    status, _, page = call(settings, "GET", "/ops/trends")
    assert status == 200 and "<html" in page.lower()
    # A token in another scheme, or the scheme without a token, is not accepted.
    assert call(settings, "GET", "/model", headers={"Authorization": f"Basic {READ}"})[0] == 401
    assert call(settings, "GET", "/model", headers={"Authorization": "Bearer "})[0] == 401


def test_changes_need_admin_json_and_the_same_origin(
    settings: Settings, guarded: WorkerProcess
) -> None:
    json = {"Content-Type": "application/json"}
    base = f"http://{settings.web_host}:{settings.web_port}"
    # No body at all, as a browser form or an <img> cannot send JSON: refused before any fit.
    assert call(settings, "POST", "/model")[0] == 401
    assert call(settings, "POST", "/model", token=READ, headers=json, data=b"{}")[0] == 403
    status, _, body = call(settings, "POST", "/model", token=ADMIN, data=b"a=1",
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert (status, body["error"]) == (415, "unsupported_media_type")
    for cross in ({"Origin": "http://evil.example"}, {"Origin": "null"},
                  {"Sec-Fetch-Site": "cross-site"}):
        status, _, body = call(settings, "POST", "/model", token=ADMIN, data=b"{}",
                               headers={**json, **cross})
        assert (status, body["error"]) == (403, "cross_origin"), cross
    # The admin token with JSON from the page's own origin reaches the fit (nothing to fit yet).
    status, _, body = call(settings, "POST", "/model", token=ADMIN, data=b"{}",
                           headers={**json, "Origin": base})
    assert (status, body["error"]) == (409, "not_fitted")


def test_a_loopback_worker_without_tokens_refuses_cross_site_changes(
    settings: Settings, worker: WorkerProcess
) -> None:
    assert call(settings, "GET", "/model")[0] == 200
    # A page on another site can make the browser post a form to 127.0.0.1: refused.
    status, _, body = call(settings, "POST", "/model", data=b"",
                           headers={"Content-Type": "text/plain"})
    assert (status, body["error"]) == (415, "unsupported_media_type")
    status, _, body = call(settings, "POST", "/model", data=b"{}", headers={
        "Content-Type": "application/json", "Origin": "http://evil.example"})
    assert (status, body["error"]) == (403, "cross_origin")
    # A name rebound to 127.0.0.1 still arrives with its own Host: refused.
    status, _, body = call(settings, "GET", "/model", headers={"Host": "evil.example:80"})
    assert (status, body["error"]) == (421, "misdirected")


def test_a_worker_bound_beyond_loopback_needs_tokens(settings: Settings) -> None:
    env = {**os.environ, "CVM_WEB_HOST": "0.0.0.0", "CVM_API_TOKENS": "",
           "REDIS_URL": settings.redis_url}
    result = subprocess.run([sys.executable, "-m", "stream_app.cli", "worker"], env=env,
                            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "CVM_API_TOKENS" in lines[0] and "0.0.0.0" in lines[0], lines
    bad = {**env, "CVM_API_TOKENS": "ops:tiny-secret-x:admin"}
    result = subprocess.run([sys.executable, "-m", "stream_app.cli", "worker"], env=bad,
                            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2 and "shorter than" in result.stderr
    assert "tiny-secret-x" not in result.stderr
