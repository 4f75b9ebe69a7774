"""Notice that the Redis server restarted before the worker writes to it again.

Redis keeps, atomically with each batch, the last input offset it applied per
partition, and the worker resumes every partition it is assigned from there
(`stream_app.agents.ingest.resume_points`). A Redis server that restarts while
the worker runs may come back without its last writes (an AOF without the last
second under ``appendfsync everysec``) or empty. If the worker simply
reconnected and wrote its next batch, that batch would advance the applied
offsets over the hole and the lost events would never be read again.

So every connection of the worker's pool reads the server's ``run_id`` (new at
every start of ``redis-server``) as it connects. A connection to a server the
worker has not accepted yet is refused with `RedisRestarted`; the worker first
stops applying input, accepts the new server, and rejoins its consumer group so
that the assignment resumes each partition from what the new server holds.
"""

from __future__ import annotations

import logging
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection, Connection
from redis.exceptions import BusyLoadingError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from stream_app.logs import ALWAYS

__all__ = [
    "TRANSIENT_REDIS_ERRORS",
    "RedisRestarted",
    "ServerFence",
    "backoff",
    "run_id",
]

log = logging.getLogger(__name__)

#: What a Redis outage looks like to a client: the server is gone, slow, or still
#: loading its data after a restart. Retrying later is the answer to each.
TRANSIENT_REDIS_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError, RedisTimeoutError, BusyLoadingError, OSError,
)

_DELAYS = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


def backoff(attempt: int) -> float:
    """Seconds to wait before retry `attempt` (0-based): 0.1 s doubling to 5 s.

    >>> [backoff(n) for n in (0, 3, 99)]
    [0.1, 1.0, 5.0]
    """
    return _DELAYS[min(attempt, len(_DELAYS) - 1)]


class RedisRestarted(RedisConnectionError):
    """The connection reached a Redis server (run id) the worker has not accepted yet."""


def parse_run_id(info: Any) -> str:
    """The ``run_id`` of an ``INFO server`` reply (raw text or parsed mapping).

    >>> parse_run_id(b"# Server\\r\\nredis_version:7.0.15\\r\\nrun_id:abc123\\r\\n")
    'abc123'
    >>> parse_run_id({"run_id": "abc123"})
    'abc123'
    """
    if isinstance(info, dict):
        return str(info.get("run_id", ""))
    text = info.decode() if isinstance(info, bytes) else str(info)
    for line in text.splitlines():
        if line.startswith("run_id:"):
            return line.split(":", 1)[1].strip()
    return ""


async def run_id(redis: Redis) -> str:
    """The run id of the server `redis` talks to."""
    return parse_run_id(await redis.info("server"))


class ServerFence:
    """Which Redis server (run id) the worker writes to, and whether another one answered.

    The first server seen is accepted. A later one is refused on every new
    connection until `accept` is called with its run id; `restarted` tells the
    watchdog that this happened.
    """

    def __init__(self) -> None:
        self.accepted: str | None = None
        self.seen: str | None = None

    @property
    def restarted(self) -> bool:
        """A server other than the accepted one answered and is not accepted yet."""
        return self.seen is not None and self.seen != self.accepted

    def admit(self, server: str) -> None:
        """Let a connection to `server` be used, or raise `RedisRestarted`."""
        if not server:  # a server that hides its run id cannot be told apart
            return
        if self.accepted is None:
            self.accepted = server
        if server != self.accepted:
            if self.seen != server:
                log.warning("Redis answers with a new run id %s (was %s): it restarted",
                            server, self.accepted, extra=ALWAYS)
            self.seen = server
            raise RedisRestarted(f"Redis restarted (run id {server}); not accepted yet")

    def accept(self, server: str) -> None:
        """Use `server` from now on."""
        self.accepted = server
        self.seen = server

    def connection_class(self, base: type[AbstractConnection] = Connection) -> type[Any]:
        """`base` (TCP, TLS or Unix socket) with every new connection checked by `admit`."""
        fence = self

        class FencedConnection(base):  # type: ignore[valid-type,misc]
            async def on_connect_check_health(self, check_health: bool = True) -> None:
                await super().on_connect_check_health(check_health=check_health)
                await self.send_command("INFO", "server", check_health=False)
                reply = await self.read_response()
                if isinstance(reply, RedisError):
                    raise reply
                fence.admit(parse_run_id(reply))

        return FencedConnection


def fenced_client(url: str, fence: ServerFence, **kwargs: Any) -> Redis:
    """A client for `url` whose connections go through `fence`."""
    client = Redis.from_url(url, **kwargs)
    pool = client.connection_pool
    # The URL's scheme picked the class (TCP, TLS, Unix socket); fence that one.
    pool.connection_class = fence.connection_class(pool.connection_class)
    return client

