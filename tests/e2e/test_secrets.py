"""No secret in a real worker's log or answers: API tokens, the Redis password, the signing key.

The worker runs against a password-protected private Redis, with tokens and a signing key;
it ingests a simulated stream, fits the value model, publishes and refuses churn snapshots,
serves every route (and refusals), and lives through a Redis outage. Its whole log and
every response body must hold none of the secrets.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest
import redis
from redis.asyncio import Redis

from load.generator import publish as publish_events
from load.simulator import SimConfig, simulate
from stream_app.domain import churn
from stream_app.settings import Settings
from stream_app.store import churn_models
from stream_app.store.keys import Keys
from stream_app.worker_process import wait_until
from tests.conftest import WorkerProcess
from tests.e2e.helpers import applied_count
from tests.e2e.test_api_auth import call
from tests.private_redis import PrivateRedis

pytestmark = pytest.mark.integration

REDIS_PASSWORD = "redis-pass-5f1e9c2b7a"
READ = "read-token-9d3e1f0a6b4c"
ADMIN = "admin-token-2b8c4e6d0f1a"
SIGNING_KEY = "signing-key-7e2a9c4f1b6d"
SECRETS = (REDIS_PASSWORD, READ, ADMIN, SIGNING_KEY)


async def _signed_snapshot(url: str) -> None:
    model = churn.make_model("logreg")
    model.learn_one({"recency_days": 3.0}, 0)
    client = Redis.from_url(url)
    try:
        await churn_models.save(client, Keys(), model, churn.ProgressiveMetrics(), "logreg",
                                0, 1, {}, SIGNING_KEY.encode())
    finally:
        await client.aclose()


def _applied(client: redis.Redis) -> int:
    return applied_count(client)


def test_no_secret_reaches_the_log_or_a_response(settings: Settings, tmp_path: Path) -> None:
    server = PrivateRedis(tmp_path / "redis", password=REDIS_PASSWORD)
    server.start()
    s = replace(settings, redis_url=server.url)
    asyncio.run(_signed_snapshot(s.redis_url))
    w = WorkerProcess(s, tmp_path / "worker.log")
    w.env.update({
        "CVM_API_TOKENS": f"dash:{READ}:read,ops:{ADMIN}:admin",
        "CVM_MODEL_SIGNING_KEY": SIGNING_KEY,
        "CVM_REFRESH_INTERVAL_S": "0.5",
        "CVM_LOG_LEVEL": "debug",
    })
    bodies: list[str] = []
    client = redis.Redis.from_url(s.redis_url)
    try:
        w.start()
        events = list(simulate(SimConfig(n_customers=60, days=200, acquisition_days=100, seed=3)))
        assert publish_events(events, s).failed == 0
        assert wait_until(lambda: _applied(client) >= len(events), 180), w.log_tail()

        json = {"Content-Type": "application/json"}
        requests = [
            ("GET", "/customers/top?n=5", READ, {}), ("GET", "/customers/nobody", READ, {}),
            ("GET", "/model", ADMIN, {}), ("GET", "/winback/results", READ, {}),
            ("GET", "/ops/feed.json", READ, {}), ("GET", "/ops", None, {}),
            ("GET", "/livez", None, {}), ("GET", "/readyz", None, {}),
            ("GET", "/model", None, {}), ("GET", "/model", READ[:-1], {}),
            ("POST", "/model", READ, json), ("POST", "/model", ADMIN, {}),
            ("POST", "/model?as_of=2025-07-01T00:00:00Z", ADMIN, json),
            ("POST", "/model?as_of=not-a-time", ADMIN, json),
        ]
        for method, path, token, headers in requests:
            status, _, body = call(s, method, path, token=token, headers=headers,
                                   data=b"{}" if method == "POST" else None)
            assert status < 500, (path, status, body)
            bodies.append(f"{path} {status} {body}")

        # A forged snapshot is refused under the key: the refusal names no key.
        client.hset(Keys().churn_model, mapping={"version": 99, "offset": 5})
        assert wait_until(lambda: "churn model v99" in w.log_tail(2000), 60), w.log_tail()

        # Redis goes away and comes back: the errors logged name no password.
        server.stop()
        assert wait_until(lambda: call(s, "GET", "/readyz")[0] == 503, 30)
        bodies.append(str(call(s, "GET", "/readyz")[2]))
        bodies.append(str(call(s, "GET", "/customers/top?n=1", token=READ)[2]))
        server.start()
        assert wait_until(lambda: call(s, "GET", "/readyz")[0] == 200, 60), w.log_tail()
        w.check()
    finally:
        w.stop()
        client.close()
        server.stop()

    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert "churn model v99" in log and "signature" in log
    assert len(log.splitlines()) > 20
    for secret in SECRETS:
        assert secret not in log, f"a secret is in the worker's log: {secret[:6]}..."
        for body in bodies:
            assert secret not in body, f"a secret is in a response: {body[:80]}"
