"""The engine of another revision and this one, on the same events: are the records the same?

``python -m load.equivalence --base REV`` checks REV out into a scratch git worktree, then runs,
for REV and for this tree in turn, a real worker (``python -m stream_app.cli worker`` started
in that tree, so it runs that tree's engine) in a namespace of its own (topics, consumer group,
Redis database), and feeds it the same events: a transaction log (`load.translog`) through this
tree's ``cvm replay`` (``--source translog``), or the simulator's purchases, service contacts and
campaign touches through the load generator's producer (``--source simulator``). The timers
that depend on the wall clock (the value model's fit and refresh, the churn model's
publishing, the rescoring) are held off, so a customer's final record is a function of their
own events in order, whatever the batching, and both workers value everyone with the prior
model. Once each worker has committed every offset, the customer hashes are
read and `compare`d: numbers to a relative tolerance (1e-9 by default), text exactly; a field
present in one revision's records only is a layout change, listed apart, not a difference.

The two fields the events do not determine are left out: ``updated_at`` (the wall-clock time
of the last write) and ``_v`` (the record's count of writes, which depends on the batching).
Two more follow the run rather than the events, so two runs of one revision differ there;
they are compared and their differences reported apart (``order_dependent``), not counted
against `Report.equal`. The bookkeeping ``_b``, always: its offsets name the run's own
topics, and a churn snapshot is taken when a batch decides the customer, so its time follows
the batching. The value history ``_vh``, with ``--source simulator``: a customer's events
come on three topics, read in an order that differs from run to run, and a period is closed
(and valued) when an event of a later period arrives first; a late event adds no earlier
points.
Customers are matched by id, whatever the key layout (``cvm:customer:{ID}`` or
``cvm:{p<n>}:customer:ID``).

Examples
--------
>>> r = compare({"C1": {"clv": "10.0", "rfm": "345", "_h": "x", "_v": "3"}},
...             {"C1": {"clv": "10.000000000001", "rfm": "345", "_b": "y", "_v": "2"}})
>>> r.values_compared, r.differences, r.only_base_fields, r.only_head_fields
(2, {}, {'_h': 1}, {'_b': 1})
>>> compare({"C1": {"clv": "10.0"}}, {"C1": {"clv": "10.1"}}).differences["clv"][0]
('C1', '10.0', '10.1')
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from load.bench_env import ROOT, Namespace, settings_env
from load.generator import publish
from load.simulator import SimConfig, simulate
from load.translog import TranslogConfig, write_log
from stream_app.settings import Settings
from stream_app.worker_process import WorkerProcess, wait_until

__all__ = ["ORDER_DEPENDENT", "Report", "compare", "customer_records", "main", "run_engine"]

#: Fields the events do not determine: the wall-clock time of the last write, and the
#: record's version (its count of writes, which depends on how the worker batched the events).
NOT_FROM_EVENTS = frozenset({"updated_at", "_v"})
#: Fields that follow the run rather than the events (see the module docstring), by source:
#: reported apart.
ORDER_DEPENDENT = {"translog": frozenset({"_b"}), "simulator": frozenset({"_vh", "_b"})}
#: The timers held off (seconds): fit, refresh, churn model publishing, rescoring.
HELD_OFF = "1000000"
_ID = re.compile(rb"customer:\{?([^{}]+)\}?$")


@dataclass
class Report:
    """What `compare` found; `differences` maps a field to (customer, base, head) examples."""

    customers: int = 0
    only_base_customers: list[str] = field(default_factory=list)
    only_head_customers: list[str] = field(default_factory=list)
    values_compared: int = 0
    differences: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)
    difference_counts: Counter[str] = field(default_factory=Counter)
    max_relative: dict[str, float] = field(default_factory=dict)
    only_base_fields: dict[str, int] = field(default_factory=dict)
    only_head_fields: dict[str, int] = field(default_factory=dict)
    #: Differences in fields compared `apart`: field -> how many customers differ.
    order_dependent: dict[str, int] = field(default_factory=dict)

    @property
    def equal(self) -> bool:
        """Same customers, and every value both layouts hold within the tolerance."""
        return not (self.only_base_customers or self.only_head_customers or self.differences)

    def as_dict(self) -> dict[str, Any]:
        return {
            "equal": self.equal, "customers": self.customers,
            "only_base_customers": self.only_base_customers[:20],
            "only_head_customers": self.only_head_customers[:20],
            "values_compared": self.values_compared,
            "differences": {k: {"count": self.difference_counts[k], "examples": v[:3]}
                            for k, v in sorted(self.differences.items())},
            "max_relative_difference": dict(sorted(self.max_relative.items())),
            "only_base_fields": dict(sorted(self.only_base_fields.items())),
            "only_head_fields": dict(sorted(self.only_head_fields.items())),
            "order_dependent": dict(sorted(self.order_dependent.items())),
        }


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def compare(
    base: Mapping[str, Mapping[str, str]],
    head: Mapping[str, Mapping[str, str]],
    rel: float = 1e-9,
    ignore: frozenset[str] = NOT_FROM_EVENTS,
    apart: frozenset[str] = frozenset(),
) -> Report:
    """Compare two sets of customer records, field by field (see the module docstring).

    Two numbers are equal when ``|a - b| <= rel * max(|a|, |b|)``; anything else is compared
    as text. Fields in `ignore` are skipped; differences in fields in `apart` are counted in
    `Report.order_dependent` only.
    """
    report = Report()
    report.only_base_customers = sorted(set(base) - set(head))
    report.only_head_customers = sorted(set(head) - set(base))
    only_base: Counter[str] = Counter()
    only_head: Counter[str] = Counter()
    for cid in sorted(set(base) & set(head)):
        report.customers += 1
        b, h = base[cid], head[cid]
        only_base.update(k for k in b if k not in h and k not in ignore)
        only_head.update(k for k in h if k not in b and k not in ignore)
        for name in b.keys() & h.keys():
            if name in ignore:
                continue
            report.values_compared += 1
            x, y = b[name], h[name]
            if x == y:
                continue
            nx, ny = _number(x), _number(y)
            if nx is not None and ny is not None:
                gap = abs(nx - ny) / max(abs(nx), abs(ny))
                report.max_relative[name] = max(report.max_relative.get(name, 0.0), gap)
                if gap <= rel:
                    continue
            if name in apart:
                report.order_dependent[name] = report.order_dependent.get(name, 0) + 1
                continue
            report.difference_counts[name] += 1
            report.differences.setdefault(name, []).append((cid, x, y))
    report.only_base_fields = dict(only_base)
    report.only_head_fields = dict(only_head)
    return report


def customer_records(client: redis.Redis) -> dict[str, dict[str, str]]:
    """Every customer hash of a database, by customer id, whatever the key layout."""
    out: dict[str, dict[str, str]] = {}
    for key in client.scan_iter(match=b"*customer:*", count=1000):
        match = _ID.search(key)
        if match is None or client.type(key) != b"hash":
            continue
        out[match.group(1).decode()] = {
            k.decode(): v.decode(errors="replace") for k, v in client.hgetall(key).items()
        }
    return out


def _committed_all(settings: Settings) -> bool:
    """Whether the worker's consumer group has committed the end of every input topic."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**settings.kafka_config(), "group.id": settings.app_id,
                         "enable.auto.commit": False})
    try:
        parts = []
        for topic in settings.topics.inputs:
            meta = consumer.list_topics(topic, timeout=10).topics[topic]
            parts += [TopicPartition(topic, p) for p in meta.partitions]
        committed = consumer.committed(parts, timeout=10)
        for tp in committed:
            _, high = consumer.get_watermark_offsets(tp, timeout=10)
            if high > 0 and tp.offset < high:
                return False
        return True
    finally:
        consumer.close()


def _replay(log_file: Path) -> Callable[[Settings], None]:
    def feed(settings: Settings) -> None:
        subprocess.run(
            [sys.executable, "-m", "stream_app.cli", "replay", str(log_file), "--no-progress"],
            env={**os.environ, **settings_env(settings)}, cwd=ROOT, check=True,
            stdout=subprocess.DEVNULL)
    return feed


def _simulated(config: SimConfig) -> Callable[[Settings], None]:
    def feed(settings: Settings) -> None:
        report = publish(simulate(config), settings)
        if report.failed:
            raise RuntimeError(f"{report.failed} simulated events were not delivered")
    return feed


def run_engine(tree: Path, stack: Settings, feed: Callable[[Settings], None], workdir: Path,
               label: str, deadline_s: float = 900) -> dict[str, dict[str, str]]:
    """The records a worker of `tree` keeps once `feed` has published into its topics."""
    ns = Namespace.create(stack, label)
    worker = WorkerProcess(
        ns.settings, workdir / f"worker-{label}.log",
        settings_env(ns.settings, CVM_FIT_INTERVAL_S=HELD_OFF, CVM_REFRESH_INTERVAL_S=HELD_OFF,
                     CVM_MODEL_PUBLISH_INTERVAL_S=HELD_OFF, CVM_RESCORE_INTERVAL_S=HELD_OFF),
        cwd=tree)
    try:
        worker.start()
        feed(ns.settings)
        if not wait_until(lambda: _committed_all(ns.settings), deadline_s, every=2.0):
            raise RuntimeError(f"worker of {tree} did not commit every offset in "
                               f"{deadline_s:g} s:\n{worker.log_tail()}")
        worker.stop()
        client = ns.redis()
        try:
            return customer_records(client)
        finally:
            client.close()
    finally:
        worker.stop()
        ns.cleanup()


@contextlib.contextmanager
def checkout(rev: str) -> Iterator[Path]:
    """A scratch git worktree of `rev`, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="cvm-equivalence-"))
    subprocess.run(["git", "worktree", "add", "--detach", "-q", str(path), rev], cwd=ROOT,
                   check=True)
    try:
        yield path
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT,
                       check=False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load.equivalence", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="the git revision to compare against")
    parser.add_argument("--source", choices=("translog", "simulator"), default="translog",
                        help="a transaction log through cvm replay, or the simulator's events")
    parser.add_argument("--customers", type=int, default=500)
    parser.add_argument("--days", type=int, default=540)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--rel", type=float, default=1e-9, help="relative tolerance")
    parser.add_argument("--out", type=Path, help="write the report as JSON here too")
    args = parser.parse_args(argv)
    stack = Settings.from_env()
    with tempfile.TemporaryDirectory(prefix="cvm-equivalence-run-") as tmp:
        workdir = Path(tmp)
        if args.source == "translog":
            log_file = workdir / "translog.txt"
            write_log(log_file, TranslogConfig(n_customers=args.customers, days=args.days,
                                               seed=args.seed))
            events = len(log_file.read_text().splitlines())
            feed = _replay(log_file)
        else:
            config = SimConfig(n_customers=args.customers, days=args.days, seed=args.seed)
            events = sum(1 for _ in simulate(config))
            feed = _simulated(config)
        started = time.monotonic()
        with checkout(args.base) as tree:
            base = run_engine(tree, stack, feed, workdir, "eqb")
        head = run_engine(ROOT, stack, feed, workdir, "eqh")
        report = compare(base, head, args.rel, apart=ORDER_DEPENDENT[args.source])
        out = {"base": args.base, "source": args.source, "events": events,
               "seconds": round(time.monotonic() - started, 1), **report.as_dict()}
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0 if report.equal else 1


if __name__ == "__main__":
    raise SystemExit(main())
