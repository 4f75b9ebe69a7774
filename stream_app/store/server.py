"""What the engine needs of the Redis server's own configuration.

Redis keeps a hash as a compact listpack only while every value is at most
``hash-max-listpack-value`` bytes (and it has at most ``hash-max-listpack-entries``
fields); one longer value turns it into a hashtable for good. A customer record
has about 50 fields, and its churn memory (``_ret``: pending snapshots with
their feature vectors) reaches 1-2.5 KB, so at Redis's default of 64 bytes
every record is a hashtable of about 4.9 KB; as a listpack it takes about
2.9 KB. The server therefore needs ``hash-max-listpack-value`` of at least
`LISTPACK_VALUE_BYTES` (``scripts/devstack`` and ``docker-compose.yml`` set it).

Two more settings make the commit cheaper (`COMMIT_SETTINGS`). Every commit adds to the
population histograms, roll-ups and trends of its partitions, hashes of hundreds of fields
each, and moves customers in the rank sets. Below ``hash-max-listpack-entries`` fields (512 by
default) such a hash is a listpack, which Redis scans field by field on every HMGET and HSET;
below ``zset-max-listpack-entries`` members (128) a rank set is a listpack whose every score is
parsed from text on each move. With 128 and 0 the histograms are hashtables and the rank sets
skip lists, while the records (about 50 fields) stay listpacks.
"""

from __future__ import annotations

import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

__all__ = [
    "COMMIT_SETTINGS",
    "LISTPACK_VALUE_BYTES",
    "SERVER_SETTINGS",
    "check_commit_settings",
    "check_listpack_value",
    "listpack_value",
]

log = logging.getLogger(__name__)

#: The ``hash-max-listpack-value`` the customer records need to stay listpacks, with room
#: for the churn memory of shorter snapshot gaps than the default.
LISTPACK_VALUE_BYTES = 8192

# Redis before 7.0 names the same setting after the ziplist it replaced.
_NAMES = ("hash-max-listpack-value", "hash-max-ziplist-value")


async def listpack_value(redis: Redis) -> int | None:
    """The server's ``hash-max-listpack-value``; None where CONFIG GET is refused or unknown."""
    return await _config_int(redis, _NAMES)


async def _config_int(redis: Redis, names: tuple[str, ...]) -> int | None:
    """The first of `names` the server knows, as an integer; None if refused or unknown."""
    for name in names:
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


#: Setting (and its name before Redis 7.0) -> (lowest, highest) value the commit wants, and
#: why: see the module docstring. `scripts/devstack` and ``docker-compose.yml`` set both.
COMMIT_SETTINGS: dict[tuple[str, str], tuple[int, int, str]] = {
    ("hash-max-listpack-entries", "hash-max-ziplist-entries"): (
        64, 128, "records stay listpacks at 64 or more fields, the histograms and roll-ups "
        "each commit adds to are hashtables (no scan per field) at 128 or fewer"),
    ("zset-max-listpack-entries", "zset-max-ziplist-entries"): (
        0, 0, "rank sets are skip lists, where a commit moves a customer without parsing "
        "every score of the set"),
}


#: The server settings `scripts/devstack`, ``docker-compose.yml`` and the benchmarks' own
#: servers run with: what the records need, and what makes the commit cheaper.
SERVER_SETTINGS: dict[str, int] = {
    "hash-max-listpack-value": LISTPACK_VALUE_BYTES,
    **{names[0]: high for names, (_, high, _) in COMMIT_SETTINGS.items()},
}


async def check_commit_settings(redis: Redis) -> dict[str, int | None]:
    """Log a warning for each of `COMMIT_SETTINGS` outside its range; returns those read."""
    found: dict[str, int | None] = {}
    for names, (low, high, why) in COMMIT_SETTINGS.items():
        value = found[names[0]] = await _config_int(redis, names)
        if value is not None and not low <= value <= high:
            wanted = f"{low}" if low == high else f"{low} to {high}"
            log.warning("Redis %s is %d; the commit is cheaper at %s (%s): set it in "
                        "redis.conf or with CONFIG SET %s %d", names[0], value, wanted, why,
                        names[0], high)
    return found


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
