"""Every Redis key the engine writes, in one place (see schemas/README.md)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names under a prefix (default ``cvm``)."""

    prefix: str = "cvm"

    def customer(self, customer_id: str) -> str:
        """A customer's hash; the braces make the id a Redis Cluster hash tag."""
        return f"{self.prefix}:customer:{{{customer_id}}}"

    @property
    def customer_pattern(self) -> str:
        return f"{self.prefix}:customer:*"

    @property
    def applied(self) -> str:
        return f"{self.prefix}:applied"

    @property
    def watermarks(self) -> str:
        return f"{self.prefix}:watermarks"

    def rank(self, name: str) -> str:
        """Sorted set of customer ids by `name` (clv, net_contribution, value_at_risk)."""
        return f"{self.prefix}:rank:{name}"

    def histogram(self, name: str) -> str:
        """Bucket -> count hash of one population statistic."""
        return f"{self.prefix}:hist:{name}"

    def rollup(self, scope: str, name: str) -> str:
        """Roll-up hash of one channel or campaign."""
        return f"{self.prefix}:rollup:{scope}:{name}"

    def trends(self, partition: int) -> str:
        """Population trend sums (`domain.trends`) of the customers of one Kafka partition."""
        return f"{self.prefix}:trends:{partition}"

    def rollup_index(self, scope: str) -> str:
        """Hash of every channel or campaign name that has a roll-up."""
        return f"{self.prefix}:rollup:{scope}s"

    def affinity(self, scope: str, period: int, partition: int) -> str:
        """Product affinity counters of one scope (``all`` or a segment), decay period and
        input partition: field -> integer count or cents (`stream_app.domain.affinity`)."""
        return f"{self.prefix}:affinity:{scope}:{period}:{partition}"

    @property
    def affinity_index(self) -> str:
        """Hash of every product affinity key written (key -> writes)."""
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
    def alert_feed(self) -> str:
        """The latest alerts and win-back triggers published, newest first (JSON)."""
        return f"{self.prefix}:feed:recent"

    @property
    def published(self) -> str:
        """Ids of alerts and win-back triggers already published (sorted by time)."""
        return f"{self.prefix}:feed:published"

    @property
    def outbox(self) -> str:
        """Messages committed but not yet acknowledged by Kafka: ``kind:id`` -> JSON."""
        return f"{self.prefix}:outbox"

    @property
    def outbox_queue(self) -> str:
        """The outbox's fields by the wall-clock time they were committed (ms)."""
        return f"{self.prefix}:outbox:queue"

    @property
    def churn_model(self) -> str:
        """The newest churn model snapshot (hash: version, format, model, progress, sha256, mac)."""
        return f"{self.prefix}:churn:model"

    @property
    def churn_metrics(self) -> str:
        """Progressive-validation metrics of the churn model (JSON)."""
        return f"{self.prefix}:churn:metrics"

    @property
    def churn_deadlines(self) -> str:
        """Customers by the event time their oldest pending snapshot is due a label."""
        return f"{self.prefix}:churn:deadlines"

    @property
    def rescore_due(self) -> str:
        """Customers with value at stake by the event time they are due a rescore."""
        return f"{self.prefix}:churn:rescore"

    @property
    def winback_outcomes(self) -> str:
        """Closed win-back outcomes: trigger id -> JSON."""
        return f"{self.prefix}:winback:outcomes"

    @property
    def cuts(self) -> str:
        """Population cut points (RFM quintiles, CLV percentiles), as JSON."""
        return f"{self.prefix}:cuts"
