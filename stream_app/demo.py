"""``cvm demo``: a worker, a synthetic event stream and a live view of values.

Runs until Ctrl-C (or `duration` seconds), then stops the stream and the worker
it started and leaves no process behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import redis

from stream_app.connections import sync_redis
from stream_app.settings import Settings
from stream_app.store.keys import Keys

CLEAR = "\x1b[2J\x1b[H"


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


def render(client: redis.Redis, published: int, started: float, top: int = 12,
           keys: Keys | None = None) -> str:
    """One screen of the live view, from what is in Redis now."""
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
    lines = [
        f"cvm demo - {datetime.now(UTC):%H:%M:%S} UTC - up {time.monotonic() - started:5.0f}s",
        f"published {published:>9,}   applied (all time) {consumed:>9,}   "
        f"customers {client.zcard('cvm:rank:net_contribution'):>7,}",
        model_line,
        "",
        "Top customers by CLV (365 days), values as stored (as of the latest event or rescoring):",
        f"{'customer':<11}{'orders':>7}{'revenue':>10}{'net':>10}{'CLV':>9}{'P(alive)':>9}"
        f"{'tier':>5}  {'segment':<19}{'last event':<11}",
    ]
    for (member, _score), rec in zip(rows, records, strict=True):
        lines.append(
            f"{member:<11}{rec.get('orders', '0'):>7}{rec.get('revenue', '0'):>10}"
            f"{rec.get('net_contribution', '0'):>10}{rec.get('clv', '-'):>9}"
            f"{rec.get('p_alive', '-'):>9}{rec.get('value_tier', '-'):>5}  "
            f"{rec.get('rfm_segment', '-'):<19}{rec.get('last_event_at', '')[:10]:<11}"
        )
    lines += ["", "Latest alerts and win-back triggers (also on the ops page, /ops):"]
    entries = client.lrange("cvm:feed:recent", 0, 5)
    if not entries:
        lines.append("  none yet")
    for raw in entries:
        entry = orjson.loads(raw)
        m = entry.get("message", {})
        if entry.get("type") == "alert":
            why = ", ".join(r["code"] for r in m.get("reasons", [])[:3])
            lines.append(
                f"  {m.get('as_of', '')[:10]} {m.get('severity', ''):<8} {m.get('customer_id', '')}"
                f"  CLV {m.get('clv', 0):>8.2f}  churn {m.get('churn_probability', 0):.2f}  {why}"
            )
        else:
            group = "control" if m.get("control_group") else "treatment"
            lines.append(
                f"  {m.get('as_of', '')[:10]} win-back {m.get('customer_id', '')}"
                f"  lost {m.get('clv_lost', 0):>8.2f}  via {m.get('recommended_channel', '')}"
                f" ({group})"
            )
    lines += ["", "Ctrl-C stops the stream and the worker."]
    return "\n".join(lines)


def run(
    settings: Settings,
    customers: int = 2000,
    rate: float = 500.0,
    seed: int = 7,
    duration: float | None = None,
) -> int:
    """Run the demo; returns a process exit code."""
    from load.generator import publish
    from load.simulator import SimConfig, simulate

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
    try:
        while duration is None or time.monotonic() - started < duration:
            if worker.poll() is not None:
                print(f"worker exited with {worker.returncode}; see {log_path}", file=sys.stderr)
                return 1
            screen = render(client, published[0], started,
                            keys=Keys(partitions=settings.partitions))
            sys.stdout.write(CLEAR + screen + "\n")
            sys.stdout.flush()
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        feeder.join(timeout=10)
        _stop(worker)
    print("demo stopped")
    return 0
