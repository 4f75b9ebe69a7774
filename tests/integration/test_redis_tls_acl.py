"""The worker and the lookups against a TLS-only, password-protected Redis with the documented ACLs.

The test starts its own ``redis-server`` on a free port: TLS only (``port 0``), client
certificates required, the default user off, and one user per documented ACL
(`stream_app.store.acl`). ``ACL LOG`` then shows any command an ACL refused.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis

from load.generator import publish as publish_events
from load.simulator import SimConfig, simulate
from stream_app import worker_process
from stream_app.connections import sync_redis
from stream_app.settings import RedisTLS, Settings
from stream_app.store.acl import LOOKUP_RULES, WORKER_RULES
from stream_app.store.keys import Keys
from stream_app.worker_process import free_port, wait_until
from tests.conftest import ROOT, WorkerProcess, devstack_module, settings_env
from tests.e2e.helpers import CUSTOMER_PATTERN, applied_count

pytestmark = [pytest.mark.integration, pytest.mark.secure]


@dataclasses.dataclass(frozen=True)
class TlsRedis:
    port: int
    ca: Path
    client_cert: Path
    client_key: Path
    passwords: dict[str, str]

    def url(self, user: str, password: str | None = None) -> str:
        secret = self.passwords[user] if password is None else password
        return f"rediss://{user}:{secret}@127.0.0.1:{self.port}/0"

    def tls(self) -> RedisTLS:
        return RedisTLS(ca_certs=str(self.ca), certfile=str(self.client_cert),
                        keyfile=str(self.client_key))

    def admin(self) -> redis.Redis:
        return redis.Redis.from_url(self.url("admin"), decode_responses=True,
                                    **self.tls().client_options())


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("redis-server is not installed (scripts/devstack up installs it)")
    d = tmp_path_factory.mktemp("tls-redis")
    devstack = devstack_module()
    cert, key = devstack.issue_certificate(d, "redis", ("localhost", "127.0.0.1"))
    client_cert, client_key = devstack.issue_certificate(d, "client", ("cvm-client",))
    passwords = {name: secrets.token_urlsafe(12) for name in ("admin", "cvm-worker", "cvm-lookup")}
    port = free_port()
    (d / "redis.conf").write_text("\n".join([
        "bind 127.0.0.1", "port 0", f"tls-port {port}",
        f"tls-cert-file {cert}", f"tls-key-file {key}", f"tls-ca-cert-file {d / 'ca.pem'}",
        "tls-auth-clients yes", 'save ""', "appendonly no", f"dir {d}",
        "user default off",
        f"user admin on >{passwords['admin']} ~* &* +@all",
        f"user cvm-worker reset on >{passwords['cvm-worker']} {WORKER_RULES}",
        f"user cvm-lookup reset on >{passwords['cvm-lookup']} {LOOKUP_RULES}",
    ]) + "\n")
    with open(d / "redis.out", "wb") as out:
        proc = subprocess.Popen([server, str(d / "redis.conf")], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=d)
    r = TlsRedis(port, d / "ca.pem", client_cert, client_key, passwords)
    try:
        admin = r.admin()

        def answers() -> bool:
            try:
                return bool(admin.ping())
            except redis.RedisError:
                return proc.poll() is not None  # stop waiting for a server that exited

        assert wait_until(answers, deadline_s=30) and proc.poll() is None, (
            (d / "redis.out").read_text())
        yield r
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _acl_denials(r: TlsRedis) -> list[dict[str, object]]:
    admin = r.admin()
    try:
        return [e for e in admin.acl_log() if e.get("reason") != "auth"]
    finally:
        admin.close()


def _cvm(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream_app.cli", *args], cwd=ROOT,
        env={**os.environ, **settings_env(settings)}, capture_output=True, text=True,
        timeout=120, stdin=subprocess.DEVNULL,
    )


def test_worker_and_lookups_with_their_acl_users(
    settings: Settings, tls_redis: TlsRedis, tmp_path: Path
) -> None:
    r = tls_redis
    r.admin().acl_log_reset()
    s = dataclasses.replace(settings, redis_url=r.url("cvm-worker"), redis_tls=r.tls())
    # Without the client certificate the server refuses the connection: the options matter.
    bare = redis.Redis.from_url(s.redis_url, ssl_ca_certs=str(r.ca), socket_timeout=5)
    with pytest.raises(redis.ConnectionError):
        bare.ping()

    worker = WorkerProcess(s, tmp_path / "worker.log")
    worker.start(deadline_s=120)
    try:
        events = list(simulate(SimConfig(n_customers=300, days=240, acquisition_days=120, seed=5)))
        assert publish_events(events, s).failed == 0
        client = sync_redis(s, decode_responses=True)
        applied = lambda: applied_count(client)  # noqa: E731
        assert wait_until(lambda: applied() >= len(events), deadline_s=180), worker.log_tail()
        # A model fit writes the model, its history and version; the rescore timer follows.
        url = f"http://{s.web_host}:{s.web_port}/model?as_of=2025-08-29T00:00:00Z"
        fit = urllib.request.Request(
            url, method="POST", data=b"{}", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(fit, timeout=120) as reply:
            assert reply.status == 200
        for path in ("/ops", "/customers/top?by=clv&n=5", "/winback/results"):
            with urllib.request.urlopen(f"http://{s.web_host}:{s.web_port}{path}",
                                        timeout=30) as reply:
                assert reply.status == 200, path
        cid = Keys().customer_id(next(client.scan_iter(CUSTOMER_PATTERN)))
        client.close()
    finally:
        worker.stop()
    assert "rediss://cvm-worker:***@" in (tmp_path / "worker.log").read_text()
    # The one refusal is CONFIG GET (it could read the server's secrets): the listpack
    # check at start reads it as "unknown" and the worker goes on.
    assert [e["object"] for e in _acl_denials(r)] == ["config|get"]
    r.admin().acl_log_reset()

    # The lookup services with the read-only user.
    ro = dataclasses.replace(s, redis_url=r.url("cvm-lookup"))
    out = _cvm(ro, "lookup", cid, "--json")
    assert out.returncode == 0, out.stderr
    view = orjson.loads(out.stdout)
    assert view["customer_id"] == cid and view["model_version"] == 1
    for args in (("top", "-n", "3"), ("rollups", "channel", "--json"), ("winback",)):
        out = _cvm(ro, *args)
        assert out.returncode == 0, (args, out.stderr)
    assert _acl_denials(r) == []
    # The read server, over TLS with the read-only user: /model finds the severity bands
    # with ZCOUNT over the value-at-risk rank sets.
    port = free_port()
    server = worker_process.WorkerProcess(
        dataclasses.replace(ro, web_port=port), tmp_path / "serve.log", settings_env(ro),
        cwd=ROOT, command=("serve", "--port", str(port)))
    server.start(deadline_s=60)
    try:
        docs = {}
        for path in (f"/customers/{cid}", "/model", "/customers/top?by=value_at_risk&n=3"):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as reply:
                assert reply.status == 200, path
                docs[path] = orjson.loads(reply.read())
        assert docs[f"/customers/{cid}"]["model_version"] == 1
        assert docs["/model"]["version"] == 1 and len(docs["/model"]["severity_bands"]) == 3
        assert len(docs["/customers/top?by=value_at_risk&n=3"]["customers"]) == 3
    finally:
        server.stop()
    assert _acl_denials(r) == [], server.log_tail()
    reader = sync_redis(ro)
    with pytest.raises(redis.exceptions.NoPermissionError):
        reader.hset(Keys().customer(cid), "clv", "0")
    with pytest.raises(redis.exceptions.NoPermissionError):
        reader.get("other:key")
    reader.close()


def test_refused_logins_are_one_line(settings: Settings, tls_redis: TlsRedis) -> None:
    r = tls_redis
    wrong = dataclasses.replace(settings, redis_url=r.url("cvm-lookup", "wrong-password"),
                                redis_tls=r.tls())
    out = _cvm(wrong, "lookup", "C1")
    assert out.returncode == 2
    lines = (out.stdout + out.stderr).splitlines()
    assert lines == [f"cvm lookup: Redis at rediss://cvm-lookup:***@127.0.0.1:{r.port}/0 "
                     "refused the login (wrong user name or password in REDIS_URL)"], lines

    worker = dataclasses.replace(wrong, redis_url=r.url("cvm-worker", "wrong-password"))
    out = _cvm(worker, "worker")
    assert out.returncode == 2
    lines = (out.stdout + out.stderr).splitlines()
    assert lines == [f"cvm worker: Redis at rediss://cvm-worker:***@127.0.0.1:{r.port}/0 "
                     "refused the login (wrong user name or password in REDIS_URL)"], lines
