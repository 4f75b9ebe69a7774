"""What the engine needs of the Redis server's own configuration.

Redis keeps a hash as a compact listpack only while every value is at most
``hash-max-listpack-value`` bytes (and it has at most ``hash-max-listpack-entries``
fields); one longer value turns it into a hashtable for good. A customer record
has about 50 fields, and its churn memory (``_ret``: pending snapshots with
their feature vectors) reaches 1-2.5 KB, so at Redis's default of 64 bytes
every record is a hashtable of about 4.9 KB; as a listpack it takes about
2.9 KB. The server therefore needs ``hash-max-listpack-value`` of at least
`LISTPACK_VALUE_BYTES` (``scripts/devstack`` and ``docker-compose.yml`` set it).
"""

from __future__ import annotations

import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

__all__ = ["LISTPACK_VALUE_BYTES", "check_listpack_value", "listpack_value"]

log = logging.getLogger(__name__)

#: The ``hash-max-listpack-value`` the customer records need to stay listpacks, with room
#: for the churn memory of shorter snapshot gaps than the default.
LISTPACK_VALUE_BYTES = 8192

# Redis before 7.0 names the same setting after the ziplist it replaced.
_NAMES = ("hash-max-listpack-value", "hash-max-ziplist-value")


async def listpack_value(redis: Redis) -> int | None:
    """The server's ``hash-max-listpack-value``; None where CONFIG GET is refused or unknown."""
    for name in _NAMES:
        try:
            reply = await redis.config_get(name)
        except RedisError:  # managed services often disable CONFIG
            return None
        for key, value in reply.items():
            if (key.decode() if isinstance(key, bytes) else key) == name:
                try:
                    return int(value)
                except (TypeError, ValueError):
                    return None
    return None


async def check_listpack_value(redis: Redis, needed: int = LISTPACK_VALUE_BYTES) -> int | None:
    """Log a warning if the server's value is below `needed`; returns the value read."""
    value = await listpack_value(redis)
    if value is not None and value < needed:
        log.warning(
            "Redis hash-max-listpack-value is %d; customer records need %d to stay compact "
            "listpacks (about 2.9 KB instead of 4.9 KB each): set it in redis.conf or with "
            "CONFIG SET hash-max-listpack-value %d (see schemas/README.md)",
            value, needed, needed,
        )
    return value
