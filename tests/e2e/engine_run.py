"""A real worker run on a simulated stream until its churn model has published metrics.

The ops page and metrics tests both look at what a real engine wrote: nothing
here writes Redis or fakes a message in the consumer's format.
"""

from __future__ import annotations

from typing import Any

import orjson
import redis

from load.generator import publish as publish_events
from load.simulator import SimConfig, simulate
from stream_app.settings import Settings
from stream_app.worker_process import wait_until
from tests.conftest import WorkerProcess, publish
from tests.e2e.helpers import applied_count

#: Long enough in event time for churn labels (90-day horizon) and a value model fit.
CONFIG = SimConfig(n_customers=250, days=240, acquisition_days=60, seed=7)
#: Short timers, so models are fitted and published within the test.
FAST_TIMERS = {
    "CVM_FIT_INTERVAL_S": "5",
    "CVM_MODEL_PUBLISH_INTERVAL_S": "2",
    "CVM_RESCORE_INTERVAL_S": "1",
    "CVM_LOG_SUMMARY_INTERVAL_S": "2",
}
#: Records that break the contract, per input, so dead letters show up by topic and reason.
BROKEN = {"purchases": [b"{not json", b"{\"event_id\": 1}"], "service_contacts": [b""]}


def applied_total(client: redis.Redis) -> int:
    return applied_count(client)


def churn_metrics(client: redis.Redis) -> dict[str, Any] | None:
    raw = client.get("cvm:churn:metrics")
    return None if raw is None else orjson.loads(raw)


def feed_stream(settings: Settings) -> int:
    """Publish the simulated stream and the broken records; returns the valid events sent."""
    events = list(simulate(CONFIG))
    report = publish_events(events, settings)
    assert report.failed == 0, report.errors
    publish(settings, [
        (getattr(settings.topics, topic), b"c-broken", value)
        for topic, values in BROKEN.items() for value in values
    ])
    return len(events)


def wait_for_churn_metrics(settings: Settings, worker: WorkerProcess, n_events: int) -> dict[
        str, Any]:
    """Wait until every record is applied and the learner published metrics with an AUC."""
    client = redis.Redis.from_url(settings.redis_url)
    try:
        total = n_events + sum(len(v) for v in BROKEN.values())
        assert wait_until(lambda: applied_total(client) >= total, deadline_s=300), (
            worker.log_tail())

        def ready() -> bool:
            worker.check()
            doc = churn_metrics(client)
            return bool(doc and doc.get("auc") is not None and doc.get("n", 0) >= 50)

        assert wait_until(ready, deadline_s=180, every=0.5), worker.log_tail()
        doc = churn_metrics(client)
        assert doc is not None
        return doc
    finally:
        client.close()
