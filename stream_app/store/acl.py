"""The Redis ACL rules of the engine's two kinds of client (README, "Transport and credentials").

The worker reads and writes the ``cvm:*`` keys with the commands below and runs the
commit script by its SHA; lookup services (``cvm lookup``, ``cvm top``, ``cvm rollups``,
``cvm winback``, ``cvm serve``, a dashboard) only read them: ZCOUNT finds the severity bands
that the read server's ``/model`` shows. Neither may touch other keys, publish,
or run administrative commands. INFO is granted to the worker: it reads the server's
``run_id`` to notice a restarted Redis (`stream_app.fence`). CONFIG GET is left out on
purpose: the worker's start check of ``hash-max-listpack-value`` treats a refusal as
"unknown".

>>> worker_user("cvm-worker", "s3cret").split()[:4]
['ACL', 'SETUSER', 'cvm-worker', 'reset']
"""

from __future__ import annotations

__all__ = ["CLUSTER_RULES", "LOOKUP_RULES", "WORKER_RULES", "lookup_user", "worker_user"]

#: What the worker needs: the keys under ``cvm:``, the commands of the store, the
#: timers and the ops page, and the Lua commit (EVALSHA, SCRIPT LOAD after a restart);
#: RENAME and DEL move a key layout v1 to v2 once (`stream_app.store.layout`), ZCOUNT merges
#: the partitions' rank sets (`stream_app.store.shards.ranks_at`).
WORKER_RULES = (
    "resetkeys ~cvm:* resetchannels -@all "
    "+ping +info +exists +get +set +incr +incrby "
    "+hget +hgetall +hmget +hset +hincrby +hexists +hdel "
    "+zadd +zrem +zcard +zcount +zscore +zmscore +zrange +zrevrange +zrangebyscore "
    "+zremrangebyscore +lpush +ltrim +lrange +scan +multi +exec +discard +rename +del "
    "+evalsha +script|load +script|exists"
)

#: A lookup service: read-only commands on read-only keys (``%R~``), so even a write
#: command added by mistake is refused.
LOOKUP_RULES = (
    "resetkeys %R~cvm:* resetchannels -@all "
    "+ping +exists +get +hget +hgetall +hmget +zcard +zcount +zrange +zrevrange "
    "+zrangebyscore +lrange +scan"
)


#: What a cluster client (CVM_REDIS_CLUSTER) adds, for both kinds of user: the slot map
#: (CLUSTER SLOTS) and the command table it routes by (COMMAND). Set the users on every node.
CLUSTER_RULES = "+cluster|slots +cluster|shards +command"


def _setuser(name: str, password: str, rules: str, cluster: bool) -> str:
    return f"ACL SETUSER {name} reset on >{password} {rules}" + (
        f" {CLUSTER_RULES}" if cluster else "")


def worker_user(name: str, password: str, cluster: bool = False) -> str:
    """The ``ACL SETUSER`` command of a worker user (redis.conf: ``user <name> <the rest>``);
    with `cluster`, for the nodes of a Redis Cluster."""
    return _setuser(name, password, WORKER_RULES, cluster)


def lookup_user(name: str, password: str, cluster: bool = False) -> str:
    """The ``ACL SETUSER`` command of a read-only lookup user."""
    return _setuser(name, password, LOOKUP_RULES, cluster)
