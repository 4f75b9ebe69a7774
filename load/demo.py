"""``make demo``: a worker, a synthetic event stream and a live view of values.

A tool of the source checkout, like the simulator it feeds from: ``python -m load.demo``
(``--help`` for its options) with the dev stack up; ``make demo`` starts the stack too.

Runs until Ctrl-C (or `duration` seconds), then stops the stream and the worker
it started and leaves no process behind.
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import redis

from load.generator import publish
from load.simulator import SimConfig, simulate
from stream_app.connections import sync_redis
from stream_app.settings import Settings
from stream_app.store.keys import Keys

#: The demo refits the value model this often unless CVM_FIT_INTERVAL_S is set.
DEMO_FIT_INTERVAL_S = "30"


def _worker_env(settings: Settings) -> dict[str, str]:
    env = {**os.environ, "CVM_WEB_PORT": str(settings.web_port)}
    env.setdefault("CVM_FIT_INTERVAL_S", DEMO_FIT_INTERVAL_S)
    return env


def _start_worker(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "stream_app.cli", "worker"],
            env=_worker_env(settings),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def view(client: redis.Redis, published: int, started: float, top: int = 12,
         keys: Keys | None = None) -> Any:
    """One frame of the live view (a Rich renderable), from what is in Redis now."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from stream_app.cli import format_value

    keys = keys or Keys()
    consumed = sum(int(v) + 1 for s in keys.shards() for v in client.hgetall(s.applied).values())
    rows = sorted((row for s in keys.shards()
                   for row in client.zrevrange(s.rank("clv"), 0, top - 1, withscores=True)),
                  key=lambda row: -row[1])[:top]
    pipe = client.pipeline(transaction=False)
    for member, _ in rows:
        pipe.hgetall(keys.customer(member.decode() if isinstance(member, bytes) else member))
    records = pipe.execute() if rows else []
    model = client.get("cvm:model:current")
    model_line = "value model: prior parameters (first fit pending)"
    if model:
        doc = orjson.loads(model)
        bg = doc["bgnbd"]
        model_line = (
            f"value model v{doc['version']} fitted on {doc['bgnbd_n']:,.0f} customers as of "
            f"{doc['as_of'][:10]}: r={bg['r']:.3f} alpha={bg['alpha']:.1f}d "
            f"a={bg['a']:.3f} b={bg['b']:.3f}"
        )
    header = Text.assemble(
        ("cvm demo", "bold"),
        f"  {datetime.now(UTC):%H:%M:%S} UTC, up {time.monotonic() - started:,.0f} s\n",
        f"published {published:,}   applied (all time) {consumed:,}   "
        f"customers {sum(client.zcard(sh.rank('net_contribution')) for sh in keys.shards()):,}\n",
        (model_line, "dim"),
    )
    customers = Table(title="Top customers by CLV (365 days), as of their latest event",
                      title_justify="left", header_style="bold")
    for name, justify in (("customer", "left"), ("orders", "right"), ("revenue", "right"),
                          ("net", "right"), ("CLV", "right"), ("P(alive)", "right"),
                          ("tier", "right"), ("segment", "left"), ("last event", "left")):
        customers.add_column(name, justify=justify)  # type: ignore[arg-type]
    for (member, _score), rec in zip(rows, records, strict=True):
        customers.add_row(
            member, format_value("orders", int(rec.get("orders", 0))),
            format_value("revenue", rec.get("revenue")),
            format_value("net_contribution", rec.get("net_contribution")),
            format_value("clv", rec.get("clv")), format_value("p_alive", rec.get("p_alive")),
            rec.get("value_tier", "-"), rec.get("rfm_segment", "-"),
            rec.get("last_event_at", "")[:10],
        )
    feed = Table(header_style="bold", show_header=False, box=None)
    # The newest entries over every partition's feed (each entry carries its commit time).
    entries = sorted((e for sh in keys.shards() for e in client.lrange(sh.alert_feed, 0, 5)),
                     key=lambda e: -int(orjson.loads(e).get("at", 0)))[:6]
    if not entries:
        feed.add_row("none yet")
    for raw in entries:
        entry = orjson.loads(raw)
        m = entry.get("message", {})
        if entry.get("type") == "alert":
            why = ", ".join(r["code"] for r in m.get("reasons", [])[:3])
            severity = m.get("severity", "")
            feed.add_row(
                m.get("as_of", "")[:10], Text(severity, style=SEVERITY_STYLES.get(severity, "")),
                m.get("customer_id", ""), f"CLV {format_value('clv', m.get('clv'))}",
                f"churn {format_value('churn_probability', m.get('churn_probability'))}", why,
            )
        else:
            group = "control" if m.get("control_group") else "treatment"
            feed.add_row(
                m.get("as_of", "")[:10], Text("win-back", style="cyan"), m.get("customer_id", ""),
                f"lost {format_value('clv_lost', m.get('clv_lost'))}",
                f"via {m.get('recommended_channel', '')}", group,
            )
    feed_title = Text("Latest alerts and win-back triggers (also on the ops page, /ops)",
                      style="italic")
    return Group(header, Text(""), customers, Text(""), feed_title, feed,
                 Text("Ctrl-C stops the stream and the worker.", style="dim"))


SEVERITY_STYLES = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "dim"}


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run(
    settings: Settings,
    customers: int = 2000,
    rate: float = 500.0,
    seed: int = 7,
    duration: float | None = None,
    record: Path | None = None,
) -> int:
    """Run the demo (`record`: save the last frame there as SVG); returns a process exit code."""
    from rich.console import Console
    from rich.live import Live

    # A terminal closed or a `kill` stops the demo as Ctrl-C does: with its worker.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    client = sync_redis(settings, decode_responses=True)
    log_path = Path(settings.data_dir).parent / "logs" / "demo-worker.log"
    worker = _start_worker(settings, log_path)
    stop = threading.Event()
    published = [0]

    def feed() -> None:
        events = simulate(SimConfig(n_customers=customers, seed=seed))
        publish(events, settings, rate=rate, stop=stop,
                progress=lambda n: published.__setitem__(0, n))

    feeder = threading.Thread(target=feed, name="feed", daemon=True)
    feeder.start()
    started = time.monotonic()
    console = Console(highlight=False)
    # In place on a terminal; elsewhere (a pipe, a file) only the last frame is printed.
    keys = Keys(partitions=settings.partitions)
    last = [view(client, published[0], started, keys=keys)]
    live = Live(last[0], console=console, auto_refresh=False)
    try:
        with live:
            while duration is None or time.monotonic() - started < duration:
                if worker.poll() is not None:
                    print(f"demo: the worker exited with {worker.returncode}; see "
                          f"{log_path}", file=sys.stderr)
                    return 1
                last[0] = view(client, published[0], started, keys=keys)
                live.update(last[0], refresh=True)
                time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        feeder.join(timeout=10)
        _stop(worker)
    if record is not None:
        frame = Console(record=True, width=console.width, file=io.StringIO())
        frame.print(last[0])
        frame.save_svg(str(record), title="cvm demo")
    print("demo stopped", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m load.demo", description=__doc__.splitlines()[0])
    p.add_argument("--customers", type=int, default=2000, help="simulated customers")
    p.add_argument("--rate", type=float, default=500.0, help="events per second")
    p.add_argument("--seed", type=int, default=7,
                   help="seed of the simulation (same seed, same stream)")
    p.add_argument("--duration", type=float, default=None,
                   help="stop after this many seconds (default: Ctrl-C)")
    p.add_argument("--save-svg", type=Path, default=None,
                   help="save the last frame of the live view to this SVG file")
    args = p.parse_args(argv)
    from stream_app.cli import load_settings

    return run(load_settings(), customers=args.customers, rate=args.rate, seed=args.seed,
               duration=args.duration, record=args.save_svg)


if __name__ == "__main__":
    sys.exit(main())
