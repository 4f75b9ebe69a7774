"""A Redis Cluster of a test's own (`load.redis_cluster`); skips where Redis is not installed."""

from __future__ import annotations

import pytest

from load import redis_cluster
from load.redis_cluster import free

__all__ = ["PrivateCluster", "free"]


class PrivateCluster(redis_cluster.PrivateCluster):
    """`masters` masters (and `replicas` replicas each), no persistence, loopback only."""

    def start(self) -> None:
        try:
            super().start()
        except redis_cluster.RedisMissing as exc:
            pytest.skip(str(exc))
