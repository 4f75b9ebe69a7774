"""Readiness from the consumer group's state and the agents; liveness from the heartbeat.

The Redis part is covered against real servers in ``tests/e2e/test_probes.py``; here a
server that always answers stands in for it, so that only the group and agents vary.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from stream_app import probes


class _Answers:
    async def ping(self) -> bool:
        return True


def _app(rebalancing: bool = False, crashed: bool = False) -> Any:
    actor = SimpleNamespace(crashed=crashed)
    return SimpleNamespace(rebalancing=rebalancing,
                           agents={"cvm.ingest": SimpleNamespace(_actors=[actor])})


def _ready(health: probes.Health, app: Any) -> tuple[bool, dict[str, Any]]:
    return asyncio.run(health.readiness(app, _Answers()))  # type: ignore[arg-type]


def test_not_ready_outside_the_group() -> None:
    health = probes.Health()
    ok, doc = _ready(health, _app())
    assert not ok and doc["consumer"]["state"] == "starting"
    health.on_assigned({("t", 0), ("t", 1)})
    ok, doc = _ready(health, _app())
    assert ok and doc["consumer"] == {"ok": True, "state": "assigned", "partitions": 2}
    health.on_revoked()  # the group took the partitions back and never gave them again
    ok, doc = _ready(health, _app())
    assert not ok and doc["consumer"]["state"] == "rebalancing"
    health.on_assigned(set())  # more workers than partitions: idle is ready
    assert _ready(health, _app())[0]
    assert not _ready(health, _app(rebalancing=True))[0]


def test_not_ready_with_a_crashed_agent_or_a_stale_heartbeat() -> None:
    health = probes.Health()
    health.on_assigned({("t", 0)})
    ok, doc = _ready(health, _app(crashed=True))
    assert not ok and doc["agents"] == {"ok": False, "crashed": ["cvm.ingest"]}
    health.beat -= probes.STALE_S + 1
    assert not health.liveness()[0]
    ok, doc = _ready(health, _app())
    assert not ok and doc["live"] is False
