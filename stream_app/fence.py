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

On a Redis Cluster (CVM_REDIS_CLUSTER) the server is the set of primaries: its
identity is their run ids, sorted and joined by commas. A primary that restarts,
or a replica promoted when its primary fails (it may lack the writes it had not
received yet), has a run id outside the accepted set and is refused the same way,
until the worker has accepted the new set and resumed every partition from it.
"""

from __future__ import annotations

import logging
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection, Connection
from redis.exceptions import BusyLoadingError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from stream_app.logs import ALWAYS
from stream_app.resp import packed_client, packed_cluster

__all__ = [
    "TRANSIENT_REDIS_ERRORS",
    "RedisRestarted",
    "ServerFence",
    "backoff",
    "cluster_id",
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


def cluster_id(run_ids: Any) -> str:
    """The identity of a cluster: its primaries' run ids, sorted, joined by commas.

    >>> cluster_id(["b2", "a1", "c3"])
    'a1,b2,c3'
    """
    return ",".join(sorted(str(r) for r in run_ids if r))


async def run_id(redis: Redis) -> str:
    """The run id of the server `redis` talks to (of a cluster client: `cluster_id`)."""
    if isinstance(redis, RedisCluster):
        replies = await redis.info("server", target_nodes=RedisCluster.PRIMARIES)
        if len(redis.get_primaries()) == 1:  # a single node's reply is not keyed by node
            replies = {"": replies}
        return cluster_id(parse_run_id(reply) for reply in replies.values())
    return parse_run_id(await redis.info("server"))


class ServerFence:
    """Which Redis server (run id) the worker writes to, and whether another one answered.

    The first server seen is accepted. A later one is refused on every new
    connection until `accept` is called with its run id; `restarted` tells the
    watchdog that this happened.

    For a cluster (`cluster`), the accepted server is a `cluster_id`: every primary
    seen is added to it until the first `accept` confirms the set the worker resumes
    from (`confirmed`); after that a node outside the set is refused.
    """

    def __init__(self, cluster: bool = False) -> None:
        self.accepted: str | None = None
        self.seen: str | None = None
        self.cluster = cluster
        self.confirmed = False

    def _known(self, server: str | None) -> bool:
        if self.cluster:
            return server is not None and set(server.split(",")) <= set(
                (self.accepted or "").split(","))
        return server == self.accepted

    @property
    def restarted(self) -> bool:
        """A server other than the accepted one answered and is not accepted yet."""
        return self.seen is not None and not self._known(self.seen)

    def admit(self, server: str) -> None:
        """Let a connection to `server` be used, or raise `RedisRestarted`."""
        if not server:  # a server that hides its run id cannot be told apart
            return
        if self.accepted is None:
            self.accepted = server
        if self.cluster and not self.confirmed and not self._known(server):
            self.accepted = cluster_id([*self.accepted.split(","), server])
        if not self._known(server):
            if self.seen != server:
                log.warning("Redis answers with a new run id %s (was %s): it restarted",
                            server, self.accepted, extra=ALWAYS)
            self.seen = server
            raise RedisRestarted(f"Redis restarted (run id {server}); not accepted yet")

    def accept(self, server: str) -> None:
        """Use `server` from now on."""
        self.accepted = server
        self.seen = server
        self.confirmed = True

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
    """A client for `url` whose connections go through `fence` (a cluster client, whose
    connections to every node do, if the fence is a cluster's)."""
    if fence.cluster:
        cluster = packed_cluster(url, **kwargs)  # packed by hiredis on every node
        # Every node the client learns of is made with these arguments.
        fenced = fence.connection_class(cluster.connection_kwargs["connection_class"])
        cluster.connection_kwargs["connection_class"] = fenced
        for node in cluster.nodes_manager.startup_nodes.values():
            node.connection_class = fenced
        return cluster  # type: ignore[return-value]
    client = packed_client(url, **kwargs)  # commands packed by hiredis, as async_redis's
    pool = client.connection_pool
    # The URL's scheme picked the class (TCP, TLS, Unix socket); fence that one.
    pool.connection_class = fence.connection_class(pool.connection_class)
    return client

