"""A Quix Streams job that keeps a per-customer ledger: the peer the engine is measured against.

``make bench`` runs it on the same pre-published events as the raw consumer, the bare Faust
reader and the worker. It reads the three input topics (librdkafka underneath), parses each
value with orjson, keeps each customer's ledger (orders, returns, revenue, refunds, contacts,
touches and their costs, in cents) in Quix's RocksDB state, and writes the changed ledgers to
Redis as hashes from a batching sink at each checkpoint. It has none of the engine's models,
validation, dead letters or outbox: it is what a minimal stateful job costs on the same
framework-free read path.

Quix Streams is an optional benchmark dependency (the ``bench`` extra): without it the row is
left out. ``python -m load.bench_quix --events N`` runs the job until it has processed N
events and prints its rate and CPU as JSON.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

import orjson

from stream_app.connections import sync_redis
from stream_app.settings import Settings

#: Suffix of the job's consumer group.
GROUP_SUFFIX = "-quix-ledger"
#: Prefix of the Redis hashes the sink writes, one per customer.
LEDGER_PREFIX = "quix:ledger:"


def available() -> bool:
    """True if Quix Streams is installed (``pip install -e '.[bench]'``)."""
    try:
        import quixstreams  # noqa: F401
    except ImportError:
        return False
    return True


def _cents(value: Any) -> int:
    return round(float(value or 0) * 100)


def apply_event(ledger: dict[str, int] | None, message: dict[str, Any]) -> dict[str, int]:
    """The customer's ledger after one input message (any of the three kinds).

    >>> ledger = apply_event(None, {"kind": "order", "amount": 12.5, "cost": 4.0})
    >>> ledger = apply_event(ledger, {"reason": "billing", "cost": 1.2})
    >>> ledger = apply_event(ledger, {"campaign_id": "K1", "action": "opened", "cost": 0.1})
    >>> sorted(ledger.items())  # doctest: +NORMALIZE_WHITESPACE
    [('cogs_c', 400), ('contacts', 1), ('marketing_cost_c', 10), ('orders', 1),
     ('revenue_c', 1250), ('service_cost_c', 120), ('touches', 1)]
    """
    out = dict(ledger or {})

    def add(name: str, delta: int) -> None:
        out[name] = out.get(name, 0) + delta

    if "campaign_id" in message:
        add("touches", 1)
        add("marketing_cost_c", _cents(message.get("cost")))
    elif "reason" in message:
        add("contacts", 1)
        add("service_cost_c", _cents(message.get("cost")))
    elif message.get("kind") == "return":
        add("returns", 1)
        add("returned_c", _cents(message.get("amount")))
    else:
        add("orders", 1)
        add("revenue_c", _cents(message.get("amount")))
        add("cogs_c", _cents(message.get("cost")))
    return out


def run(settings: Settings, events: int, timeout_s: float = 30.0) -> dict[str, Any]:
    """Run the job until it has processed `events` messages (or none came for `timeout_s`).

    The rate is that of the steady part, between 5 % and 95 % of the events, as for the
    other read paths.
    """
    from quixstreams import Application
    from quixstreams.sinks import BatchingSink, SinkBatch

    redis = sync_redis(settings)

    class RedisLedgerSink(BatchingSink):
        """Writes the latest ledger of each customer of a checkpoint as one hash."""

        def write(self, batch: SinkBatch) -> None:
            latest: dict[str, dict[str, int]] = {}
            for item in batch:
                key = item.key.decode() if isinstance(item.key, bytes) else str(item.key)
                latest[key] = item.value
            with redis.pipeline(transaction=False) as pipe:
                for key, ledger in latest.items():
                    pipe.hset(LEDGER_PREFIX + key, mapping=ledger)
                pipe.execute()

    # (time, CPU) when the 5 % and the 95 % marks of the events were processed: the steady
    # part, without the group join, the state recovery or the last checkpoint.
    lo, hi = max(1, events // 20), max(2, events - events // 20)
    seen = [0]
    marks: list[tuple[float, float]] = []

    def processed(*_: Any) -> None:
        seen[0] += 1
        if seen[0] in (lo, hi):
            marks.append((time.perf_counter(), time.process_time()))

    app = Application(
        on_message_processed=processed,
        broker_address=settings.kafka_bootstrap_servers,
        consumer_group=settings.app_id + GROUP_SUFFIX,
        auto_offset_reset="earliest",
        state_dir=settings.data_dir + GROUP_SUFFIX,
        commit_interval=1.0,
        loglevel="WARNING",
        # The inputs exist already; the changelog topics are Quix's own.
        auto_create_topics=True,
    )
    frames = [app.dataframe(app.topic(name, key_deserializer="bytes", value_deserializer="bytes"))
              for name in settings.topics.inputs]
    sdf = frames[0]
    for other in frames[1:]:
        sdf = sdf.concat(other)

    def ledger(value: bytes, state: Any) -> dict[str, int]:
        new = apply_event(state.get("ledger"), orjson.loads(value))
        state.set("ledger", new)
        return new

    sdf = sdf.apply(ledger, stateful=True)
    sdf.sink(RedisLedgerSink())
    began = time.perf_counter()
    app.run(count=events, timeout=timeout_s, collect=False)
    redis.close()
    if len(marks) < 2:
        return {"events": seen[0], "events_per_s": float("nan")}
    (t0, cpu0), (t1, cpu1) = marks
    n, seconds = hi - lo, t1 - t0
    return {
        "events": seen[0],
        "startup_s": round(t0 - began, 2),
        "window_s": round(seconds, 3),
        "events_per_s": round(n / seconds, 1) if seconds > 0 else float("nan"),
        "cpu_cores": round((cpu1 - cpu0) / seconds, 3) if seconds > 0 else float("nan"),
        "cpu_us_per_event": round((cpu1 - cpu0) * 1e6 / n, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ledger job on the environment's topics; print its rate as JSON."""
    parser = argparse.ArgumentParser(prog="python -m load.bench_quix", description=main.__doc__)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--timeout-s", type=float, default=30.0,
                        help="stop when no message came for this long")
    args = parser.parse_args(argv)
    if not available():
        print("quixstreams is not installed (pip install -e '.[bench]')", file=sys.stderr)
        return 2
    print(orjson.dumps(run(Settings.from_env(), args.events, args.timeout_s)).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
