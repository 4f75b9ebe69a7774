"""Redis commands packed by hiredis's C packer in the asyncio client.

redis-py's blocking client packs commands with ``hiredis.pack_command`` when hiredis is
installed; its asyncio client packs them in Python, argument by argument. The worker's
commit sends one script call per partition carrying every changed customer's fields
(thousands of arguments per batch), and that packing cost more CPU than anything else the
worker does per event. These connection classes pack with hiredis, byte for byte what
redis-py's own packer writes (`tests/unit/test_resp.py`), and `packed_pool` builds a
connection pool that uses them for ``redis://``, ``rediss://`` and ``unix://`` URLs alike;
`packed_cluster` makes a Redis Cluster client whose connections to every node use them.

>>> conn = PackedConnection()
>>> conn.pack_command("SET", "k", 1.5)
[b'*3\\r\\n$3\\r\\nSET\\r\\n$1\\r\\nk\\r\\n$3\\r\\n1.5\\r\\n']
"""

from __future__ import annotations

from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    ConnectionPool,
    SSLConnection,
    UnixDomainSocketConnection,
)

__all__ = ["PackedConnection", "packed_client", "packed_cluster", "packed_pool"]


class _HiredisPacking:
    """`pack_command` by ``hiredis.pack_command``; everything else as redis-py's."""

    def pack_command(self, *args: Any) -> list[bytes]:
        # As redis-py does: a command name with spaces ("CONFIG GET") is several arguments.
        first = args[0]
        if isinstance(first, str):
            parts = (*first.encode().split(), *args[1:])
        elif isinstance(first, bytes) and b" " in first:
            parts = (*first.split(), *args[1:])
        else:
            parts = args
        try:
            return [hiredis.pack_command(parts)]
        except TypeError:
            # What hiredis does not take (None, a bool, a bytearray): redis-py's own
            # packer accepts it or raises its DataError.
            packed: list[bytes] = super().pack_command(*args)  # type: ignore[misc]
            return packed


class PackedConnection(_HiredisPacking, Connection):
    """A TCP connection whose commands hiredis packs."""


class PackedSSLConnection(_HiredisPacking, SSLConnection):
    """A TLS connection whose commands hiredis packs."""


class PackedUnixConnection(_HiredisPacking, UnixDomainSocketConnection):
    """A Unix socket connection whose commands hiredis packs."""


_PACKED: dict[type[AbstractConnection], type[AbstractConnection]] = {
    Connection: PackedConnection,
    SSLConnection: PackedSSLConnection,
    UnixDomainSocketConnection: PackedUnixConnection,
}


def packed_pool(url: str, **options: Any) -> ConnectionPool:
    """`ConnectionPool.from_url` with the packed twin of the connection class it picks."""
    pool = ConnectionPool.from_url(url, **options)
    pool.connection_class = _PACKED.get(pool.connection_class, pool.connection_class)
    return pool


def packed_client(url: str, **options: Any) -> Redis:
    """`Redis.from_url` whose commands hiredis packs (`packed_pool`); it closes its pool
    with it, as one made by `Redis.from_url` does."""
    client = Redis(connection_pool=packed_pool(url, **options))
    client.auto_close_connection_pool = True
    return client


def packed_cluster(url: str, **options: Any) -> RedisCluster:
    """`RedisCluster.from_url` whose connections to every node hiredis packs.

    redis-py's cluster client picks its connection class itself (TCP or TLS) and makes every
    node it learns of, at start or from a redirection, with one set of arguments: the
    packed twin goes into those, and into the nodes of the URL it already made.
    """
    cluster = RedisCluster.from_url(url, **options)
    chosen = cluster.connection_kwargs.get("connection_class", Connection)
    packed = _PACKED.get(chosen, chosen)
    cluster.connection_kwargs["connection_class"] = packed
    for node in cluster.nodes_manager.startup_nodes.values():
        node.connection_class = packed
    return cluster
