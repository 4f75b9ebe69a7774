"""Every Redis key the engine writes, in one place (see schemas/README.md, layout v2).

The state is sharded the way Kafka shards it: the unit of state is an input
partition. A customer belongs to the partition Kafka's default partitioner
gives its id (murmur2 of the UTF-8 id, modulo the partition count,
`partition_of`), and every key one commit writes for that partition's
customers (their records, the partition's share of the roll-ups, histograms and
rank sets, its applied offsets and watermarks, its outbox, feed and published
ids) carries the hash tag ``{p<partition>}``. One commit therefore touches one
Redis Cluster slot, and a batch commits once per partition it touched. Readers
find a customer in one step with `customer_key`, and merge the per-partition
roll-ups, histograms and rank sets (`stream_app.store.shards`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

#: The version of the key layout described here (v1: one global key per roll-up,
#: histogram, rank set and bookkeeping structure, ``cvm:customer:{<id>}`` per customer).
LAYOUT_VERSION = 2

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash (``org.apache.kafka.common.utils.Utils.murmur2``), unsigned.

    >>> murmur2(b"21"), murmur2(b"foobar"), murmur2(b"")
    (3321034988, 3504634814, 275646681)
    """
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    end = length - length % 4
    for i in range(0, end, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = (h * _M) & _MASK
        h ^= k
    rest = length % 4
    if rest == 3:
        h ^= data[end + 2] << 16
    if rest >= 2:
        h ^= data[end + 1] << 8
    if rest >= 1:
        h ^= data[end]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


@lru_cache(maxsize=1 << 14)
def _positive_hash(customer_id: str) -> int:
    # A batch names each customer several times (its commit, its shard's keys, its trends);
    # murmur2 in Python costs a few microseconds each time. Ids are at most 128 characters
    # (the input contract), so the cache stays within a few megabytes.
    return murmur2(customer_id.encode()) & 0x7FFFFFFF


def partition_of(customer_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives a record keyed by `customer_id`.

    >>> partition_of("C1", 4), partition_of("C1", 1)
    (1, 0)
    """
    return _positive_hash(customer_id) % partitions


def customer_key(customer_id: str, partitions: int, prefix: str = "cvm") -> str:
    """The Redis key of a customer's record: all a reader needs (layout v2).

    `partitions` is the input topics' partition count (CVM_PARTITIONS).

    >>> customer_key("C1", 4)
    'cvm:{p1}:customer:C1'
    """
    return f"{prefix}:{{p{partition_of(customer_id, partitions)}}}:customer:{customer_id}"


@dataclass(frozen=True, slots=True)
class Shard:
    """The keys of one input partition's state; all share the hash tag ``{p<n>}``."""

    prefix: str
    partition: int

    @property
    def tag(self) -> str:
        return f"{self.prefix}:{{p{self.partition}}}"

    def customer(self, customer_id: str) -> str:
        return f"{self.tag}:customer:{customer_id}"

    @property
    def customer_pattern(self) -> str:
        return f"{self.tag}:customer:*"

    @property
    def applied(self) -> str:
        """Input offsets applied: ``topic/partition`` -> offset (partitions of this shard)."""
        return f"{self.tag}:applied"

    @property
    def watermarks(self) -> str:
        """Event-time watermarks: ``topic/partition`` -> ms (partitions of this shard)."""
        return f"{self.tag}:watermarks"

    def rank(self, name: str) -> str:
        """Sorted set of this partition's customer ids by `name` (clv, net_contribution,
        value_at_risk)."""
        return f"{self.tag}:rank:{name}"

    def histogram(self, name: str) -> str:
        """Bucket -> count hash of one population statistic, this partition's share."""
        return f"{self.tag}:hist:{name}"

    def rollup(self, scope: str, name: str) -> str:
        """Roll-up hash of one channel or campaign, this partition's share."""
        return f"{self.tag}:rollup:{scope}:{name}"

    def rollup_index(self, scope: str) -> str:
        """Hash of every channel or campaign name with a roll-up in this partition."""
        return f"{self.tag}:rollup:{scope}s"

    @property
    def alert_feed(self) -> str:
        """The latest alerts and win-back triggers of this partition, newest first (JSON)."""
        return f"{self.tag}:feed:recent"

    @property
    def published(self) -> str:
        """Ids of this partition's alerts and triggers already published (sorted by time)."""
        return f"{self.tag}:feed:published"

    @property
    def outbox(self) -> str:
        """Messages committed but not yet acknowledged by Kafka: ``kind:id`` -> JSON."""
        return f"{self.tag}:outbox"

    @property
    def outbox_queue(self) -> str:
        """The outbox's fields by the wall-clock time they were committed (ms)."""
        return f"{self.tag}:outbox:queue"

    @property
    def churn_deadlines(self) -> str:
        """Customers by the event time their oldest pending snapshot is due a label."""
        return f"{self.tag}:churn:deadlines"

    @property
    def rescore_due(self) -> str:
        """Customers with value at stake by the event time they are due a rescore."""
        return f"{self.tag}:churn:rescore"

    @property
    def winback_outcomes(self) -> str:
        """Closed win-back outcomes: trigger id -> JSON."""
        return f"{self.tag}:winback:outcomes"

    @property
    def trends(self) -> str:
        """Population trend sums (`domain.trends`) of this partition's customers."""
        return f"{self.tag}:trends"

    def affinity(self, scope: str, period: int) -> str:
        """Product affinity counters of one scope and decay period, this partition's share."""
        return f"{self.tag}:affinity:{scope}:{period}"

    @property
    def affinity_index(self) -> str:
        """Hash of every product affinity key of this partition written (key -> writes)."""
        return f"{self.tag}:affinity:index"


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names under a prefix (default ``cvm``) for `partitions` input partitions.

    `partitions` must be the input topics' partition count (CVM_PARTITIONS, default 4):
    it decides which partition, and so which keys, hold a customer.
    """

    prefix: str = "cvm"
    partitions: int = 4

    def partition_of(self, customer_id: str) -> int:
        return partition_of(customer_id, self.partitions)

    def shard(self, partition: int) -> Shard:
        """The keys of input partition `partition` (a partition beyond the configured
        count, of a topic created with more, shares the shard ``partition % count``)."""
        return Shard(self.prefix, partition % self.partitions)

    def shard_of(self, customer_id: str) -> Shard:
        return self.shard(self.partition_of(customer_id))

    def shards(self) -> Iterator[Shard]:
        return (Shard(self.prefix, p) for p in range(self.partitions))

    def customer(self, customer_id: str) -> str:
        """A customer's hash, in its partition's shard (`customer_key`)."""
        return customer_key(customer_id, self.partitions, self.prefix)

    @property
    def customer_pattern(self) -> str:
        return f"{self.prefix}:{{p*}}:customer:*"

    def customer_id(self, key: str | bytes) -> str:
        """The customer id of a key `customer` made."""
        name = key.decode() if isinstance(key, bytes) else key
        return name.split(":customer:", 1)[1]

    @property
    def layout(self) -> str:
        """The layout version and partition count the data was written with (hash)."""
        return f"{self.prefix}:layout"

    def trends(self, partition: int) -> str:
        """Population trend sums (`domain.trends`) of the customers of one partition."""
        return self.shard(partition).trends

    def affinity(self, scope: str, period: int, partition: int) -> str:
        """Product affinity counters of one scope (``all`` or a segment), decay period and
        partition: field -> integer count or cents (`stream_app.domain.affinity`)."""
        return self.shard(partition).affinity(scope, period)

    @property
    def affinity_index(self) -> str:
        """The one global index of affinity keys that data written before the per-partition
        indexes (`Shard.affinity_index`) has: read and emptied, never written."""
        return f"{self.prefix}:affinity:index"

    @property
    def model(self) -> str:
        """The current value model (fitted parameters), as JSON."""
        return f"{self.prefix}:model:current"

    @property
    def model_history(self) -> str:
        """Every fitted model, newest first, as JSON."""
        return f"{self.prefix}:model:history"

    @property
    def model_version(self) -> str:
        return f"{self.prefix}:model:version"

    @property
    def churn_model(self) -> str:
        """The newest churn model snapshot (hash: version, format, model, progress, sha256, mac)."""
        return f"{self.prefix}:churn:model"

    @property
    def churn_metrics(self) -> str:
        """Progressive-validation metrics of the churn model (JSON)."""
        return f"{self.prefix}:churn:metrics"

    @property
    def cuts(self) -> str:
        """Population cut points (RFM quintiles, CLV percentiles), as JSON."""
        return f"{self.prefix}:cuts"
