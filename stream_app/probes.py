"""Liveness and readiness of a worker: what ``/livez`` and ``/readyz`` answer.

* **Live**: the event loop turns and the consumer is in its group. A heartbeat timer
  stamps `Health.beat` every `HEARTBEAT_S`; the worker is live while the stamp is younger
  than `STALE_S`. The probes are answered on the web server's own thread
  (CVM_WEB_IN_THREAD), so a worker loop blocked for good is reported not live once its
  stamp is stale (with the setting off the probe cannot answer at all and times out: not
  live either). A watch that runs from the app's start (`runtime.FromStart`: Faust's
  own timers begin only after the first assignment) reads the consumer's group membership
  every `HEARTBEAT_S` (`stream_app.consumer_group.membership`): a consumer the broker
  no longer knows (evicted, its member id reset) or never let in, that has not joined
  within CVM_OUT_OF_GROUP_S, or
  whose group coordination has ended, reads nothing while the loop turns, so the worker
  is then not live either, and it ends itself (`consumer_group.OutOfGroup`: Faust's crash,
  exit status 1), as it does when Faust's fetcher meets the group's error, so that any
  supervisor restarts it, not only one that watches ``/livez``. A broker outage alone does
  not count: the consumer keeps its member id until the broker answers again. Restart a
  worker that is not live: it resumes from Redis and loses nothing.
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
import logging
import time
from typing import Any

import faust
from redis.asyncio import Redis

from stream_app.consumer_group import Membership, OutOfGroup, membership
from stream_app.runtime import FromStart
from stream_app.settings import Settings

__all__ = ["HEARTBEAT_S", "OUT_OF_GROUP_S", "REDIS_TIMEOUT_S", "STALE_S", "Health",
           "redis_answers"]

log = logging.getLogger(__name__)

#: How often the heartbeat timer stamps the clock.
HEARTBEAT_S = 1.0
#: A heartbeat older than this means the event loop no longer turns.
STALE_S = 15.0
#: How long readiness waits for Redis to answer a PING.
REDIS_TIMEOUT_S = 2.0
#: Seconds a consumer may stay out of its group before the worker is not live.
OUT_OF_GROUP_S = Settings.out_of_group_s


class Health:
    """The heartbeat, the group membership and the consumer group state of one worker."""

    def __init__(self, out_of_group_s: float = OUT_OF_GROUP_S) -> None:
        self.beat = time.monotonic()
        # "starting" until the first assignment, "rebalancing" between a revocation
        # and the next assignment, then "assigned" or "idle" (assigned nothing).
        self.group = "starting"
        self.partitions = 0
        self.out_of_group_s = out_of_group_s
        # Since when the consumer has had no member id (from the start until its first
        # join); None while it is a member.
        self.out_since: float | None = self.beat
        self.generation = -1
        self.coordinating = True
        self._reported = False

    def register(self, app: faust.App) -> None:
        """Attach the heartbeat timer, the group watch and the group callbacks to `app`.

        The watch runs from the app's start (`runtime.FromStart`): Faust's timers begin
        only after the first assignment, which a consumer refused by its group never gets.
        """

        @app.timer(interval=HEARTBEAT_S)
        async def heartbeat() -> None:
            self.beat = time.monotonic()

        async def watch() -> None:
            await self.watch_group(app, time.monotonic())

        app.add_dependency(FromStart(watch, HEARTBEAT_S))

        @app.on_partitions_revoked.connect
        async def revoked(sender: faust.App, revoked: set[Any], **_: Any) -> None:
            self.on_revoked()

        @app.on_partitions_assigned.connect
        async def assigned(sender: faust.App, assigned: set[Any], **_: Any) -> None:
            self.on_assigned(assigned)

    async def watch_group(self, app: faust.App, now: float) -> None:
        """Observe `app`'s consumer at `now`; end the worker when its group is lost."""
        lost = self.observe(membership(app), now)
        if lost is not None and not app.should_stop:
            # The whole worker stops, with every service, as on any crash: what it
            # applied is in Redis, and its successor reads the rest again.
            await app.crash(OutOfGroup(lost))

    def on_revoked(self) -> None:
        """The group took this worker's partitions back: not ready until the next assignment."""
        self.group = "rebalancing"

    def on_assigned(self, assigned: set[Any]) -> None:
        """The group's rebalance ended with `assigned` (perhaps nothing) for this worker."""
        self.partitions = len(assigned)
        self.group = "assigned" if assigned else "idle"
        self.out_since = None  # an assignment comes only to a member

    def observe(self, seen: Membership | None, now: float) -> str | None:
        """Take in the coordinator's state at `now` (monotonic seconds); log the changes.

        Returns why the group is lost when this observation is the one that finds it lost
        (once per episode; `watch_group` then ends the worker), else None.
        """
        if seen is None:  # no consumer yet: still starting
            return None
        self.coordinating = seen.coordinating
        if seen.member and seen.coordinating:
            if self.out_since is not None and self._reported:
                log.warning("the consumer is back in its group (generation %d) after %.0f s "
                            "out of it", seen.generation, now - self.out_since)
            self.out_since, self.generation, self._reported = None, seen.generation, False
            return None
        if seen.member:  # a member id, but the routine that keeps it has ended
            self.out_since, self.generation = None, seen.generation
        elif self.out_since is None:
            self.out_since = now
        if self._reported or self._group_live(now):
            return None
        self._reported = True
        if not seen.coordinating:
            lost = "the consumer's group coordination has ended; it will read nothing more"
        else:
            lost = (f"the consumer has been out of its group for {now - self.out_since:.0f} s "
                    f"(CVM_OUT_OF_GROUP_S={self.out_of_group_s:g}) and reads nothing")
        log.error("%s: /livez fails and the worker stops, so that it is restarted", lost)
        return lost

    def _out_s(self, now: float) -> float:
        return 0.0 if self.out_since is None else now - self.out_since

    def _group_live(self, now: float) -> bool:
        return self.coordinating and self._out_s(now) < self.out_of_group_s

    def liveness(self, now: float | None = None) -> tuple[bool, dict[str, Any]]:
        """(live, document) at `now` (monotonic seconds, default the clock's): the
        heartbeat's age against `STALE_S`, and the group membership."""
        now = time.monotonic() if now is None else now
        age = now - self.beat
        group_live = self._group_live(now)
        return age < STALE_S and group_live, {
            "heartbeat_age_s": round(age, 3), "stale_after_s": STALE_S,
            "group": {"ok": group_live, "member": self.out_since is None,
                      "out_of_group_s": round(self._out_s(now), 1),
                      "limit_s": self.out_of_group_s, "generation": self.generation,
                      "coordinating": self.coordinating},
        }

    async def readiness(self, app: faust.App, redis: Redis) -> tuple[bool, dict[str, Any]]:
        """(ready, document): Redis, the consumer group and the agents, each with its verdict."""
        redis_ok, redis_detail = await redis_answers(redis)
        group_ok = (self.group in ("assigned", "idle") and not app.rebalancing
                    and self.out_since is None)
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
