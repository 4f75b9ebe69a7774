"""Liveness and readiness of a real worker whose Redis (a private server) goes away and returns."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from stream_app.settings import Settings
from stream_app.worker_process import wait_until
from tests.conftest import WorkerProcess, http_json
from tests.private_redis import PrivateRedis

pytestmark = pytest.mark.integration


def test_readyz_follows_redis_while_livez_stays_up(settings: Settings, tmp_path: Path) -> None:
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    s = replace(settings, redis_url=server.url)
    w = WorkerProcess(s, tmp_path / "worker.log")
    try:
        w.start()  # waits for /healthz, that is /readyz
        status, doc = http_json(s, "/readyz")
        assert status == 200 and doc["ready"] is True, doc
        assert doc["consumer"]["state"] in ("assigned", "idle"), doc
        assert http_json(s, "/healthz")[0] == 200

        server.stop()
        assert wait_until(lambda: http_json(s, "/readyz")[0] == 503, 30), w.log_tail()
        status, doc = http_json(s, "/readyz")
        assert doc["redis"]["ok"] is False and doc["ready"] is False, doc
        assert http_json(s, "/healthz")[0] == 503
        live_status, live = http_json(s, "/livez")
        assert live_status == 200 and live["live"] is True, live

        server.start()  # the same port
        assert wait_until(lambda: http_json(s, "/readyz")[0] == 200, 60), w.log_tail()
        w.check()  # the worker rode it out
        assert http_json(s, "/livez")[0] == 200
    finally:
        w.stop()
        server.stop()
