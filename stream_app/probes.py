"""Liveness and readiness of a worker: what ``/livez`` and ``/readyz`` answer.

* **Live**: the event loop turns. A heartbeat timer stamps `Health.beat` every
  `HEARTBEAT_S`; the worker is live while the stamp is younger than `STALE_S`. The probes
  are answered on the web server's own thread (CVM_WEB_IN_THREAD), so a worker loop
  blocked for good is reported not live once its stamp is stale (with the setting off
  the probe cannot answer at all and times out: not live either).
  Restart a worker that is not live.
* **Ready**: the worker does its work. Redis answers a PING within `REDIS_TIMEOUT_S`;
  the consumer is in its group, with partitions assigned or legitimately idle (the
  group's last rebalance gave it none: more workers than partitions), not between a
  revocation and the next assignment; and no agent is crashed. Take a worker that is
  not ready out of rotation; it may come back by itself (Redis returns, the group
  settles).

``/healthz`` is an alias of ``/readyz``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import faust
from redis.asyncio import Redis

__all__ = ["HEARTBEAT_S", "REDIS_TIMEOUT_S", "STALE_S", "Health", "redis_answers"]

#: How often the heartbeat timer stamps the clock.
HEARTBEAT_S = 1.0
#: A heartbeat older than this means the event loop no longer turns.
STALE_S = 15.0
#: How long readiness waits for Redis to answer a PING.
REDIS_TIMEOUT_S = 2.0


class Health:
    """The heartbeat and the consumer group state of one worker."""

    def __init__(self) -> None:
        self.beat = time.monotonic()
        # "starting" until the first assignment, "rebalancing" between a revocation
        # and the next assignment, then "assigned" or "idle" (assigned nothing).
        self.group = "starting"
        self.partitions = 0

    def register(self, app: faust.App) -> None:
        """Attach the heartbeat timer and the group callbacks to `app`."""

        @app.timer(interval=HEARTBEAT_S)
        async def heartbeat() -> None:
            self.beat = time.monotonic()

        @app.on_partitions_revoked.connect
        async def revoked(sender: faust.App, revoked: set[Any], **_: Any) -> None:
            self.on_revoked()

        @app.on_partitions_assigned.connect
        async def assigned(sender: faust.App, assigned: set[Any], **_: Any) -> None:
            self.on_assigned(assigned)

    def on_revoked(self) -> None:
        """The group took this worker's partitions back: not ready until the next assignment."""
        self.group = "rebalancing"

    def on_assigned(self, assigned: set[Any]) -> None:
        """The group's rebalance ended with `assigned` (perhaps nothing) for this worker."""
        self.partitions = len(assigned)
        self.group = "assigned" if assigned else "idle"

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        """(live, document): the heartbeat's age against `STALE_S`."""
        age = time.monotonic() - self.beat
        return age < STALE_S, {"heartbeat_age_s": round(age, 3), "stale_after_s": STALE_S}

    async def readiness(self, app: faust.App, redis: Redis) -> tuple[bool, dict[str, Any]]:
        """(ready, document): Redis, the consumer group and the agents, each with its verdict."""
        redis_ok, redis_detail = await redis_answers(redis)
        group_ok = self.group in ("assigned", "idle") and not app.rebalancing
        crashed = sorted(
            name for name, agent in app.agents.items()
            if any(actor.crashed for actor in list(agent._actors))  # noqa: SLF001
        )
        live, _ = self.liveness()
        ok = redis_ok and group_ok and not crashed and live
        return ok, {
            "ready": ok,
            "redis": {"ok": redis_ok, "detail": redis_detail},
            "consumer": {"ok": group_ok, "state": "rebalancing" if app.rebalancing
                         and self.group != "starting" else self.group,
                         "partitions": self.partitions},
            "agents": {"ok": not crashed, "crashed": crashed},
            "live": live,
        }


async def redis_answers(redis: Redis) -> tuple[bool, str]:
    """(ok, detail): Redis answers a PING within `REDIS_TIMEOUT_S`; else the error's type."""
    try:
        return bool(await asyncio.wait_for(redis.ping(), REDIS_TIMEOUT_S)), "ok"
    except Exception as exc:  # refused, timed out, reset: not ready
        return False, type(exc).__name__
