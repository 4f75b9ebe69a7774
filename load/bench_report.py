"""The benchmark's report: targets met or what bounds them, every measurement, and a chart."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from load.bench_stats import STREAM_SPAN, Target, markdown_table, text_table
from stream_app.store.server import SERVER_SETTINGS

__all__ = ["targets", "write_report"]

TARGET_HEADER = ["target", "goal", "measured", "met", "what bounds it (if missed)"]


def _f(value: Any, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


def _lookup(results: dict[str, Any], kind: str, state: str, c: int,
            prefix: bool = False) -> dict[str, Any] | None:
    """The lookup row of `kind`, `c` clients and `state` (with `prefix`: a state that starts
    with it)."""
    rows = results.get("freshness", {}).get("lookups", [])
    rows = rows + results.get("throughput", {}).get("lookups_max_ingest", [])
    for row in rows:
        found = str(row.get("state", ""))
        if (row.get("kind") == kind and row.get("concurrency") == c
                and (found.startswith(state) if prefix else found == state)):
            return dict(row)
    return None


def _within(results: dict[str, Any]) -> str:
    """The workers' CVM_BATCH_WITHIN_MS (runs before it was recorded used 50 ms)."""
    return _f(results.get("batch_within_ms", 50))


def _phase(results: dict[str, Any], label: str) -> dict[str, Any]:
    for phase in results.get("freshness", {}).get("phases", []):
        if phase["label"] == label:
            return dict(phase)
    return {}


def _profile_top(results: dict[str, Any], n: int = 4) -> str:
    rows = results.get("profile", {}).get("timed", {}).get("rows", [])
    rows = [r for r in rows if "waiting" not in r[0]]
    return ", ".join(f"{name} {us:.0f} µs" for name, us, _ in rows[:n])


def _worker_spans(tp: dict[str, Any], us: float, reader: dict[str, Any]) -> str:
    """Where py-spy on the worker in the throughput stage found its CPU, per event."""
    spans = tp.get("pyspy", {}).get("spans") or {}
    total = sum(spans.values())
    if not total or not isinstance(us, (int, float)) or math.isnan(us):
        return ""
    parts = []
    for name, n in spans.items():
        part = f"{name} {n / total:.0%} (about {_f(us * n / total)} µs)"
        if name == STREAM_SPAN and reader.get("cpu_us_per_event") is not None:
            part += f" against the bare Faust reader's {_f(reader['cpu_us_per_event'], 1)} µs"
        parts.append(part)
    return f"; py-spy on the worker in the same stage ({total:,} samples): " + ", ".join(parts)


def _framework_share(reader: dict[str, Any], worker_us: float) -> str:
    """What a Faust agent that only reads and parses costs, against the whole worker."""
    rate, us = reader.get("events_per_s"), reader.get("cpu_us_per_event")
    if not rate or us is None or (isinstance(us, float) and math.isnan(us)):
        return ""
    return (f"; a Faust agent that only reads and parses in the same batches does "
            f"{_f(rate)} events/s at {_f(us)} µs CPU/event, so the framework alone holds "
            f"one worker to that rate and takes about {_f(us)} of the worker's {_f(worker_us)} µs")


#: The state label of the HTTP lookups measured while the worker ingests at half capacity.
HALF_CAPACITY_LOOKUPS = "worker ingesting at half capacity"
#: Lookup rows over HTTP to the read server (`cvm serve`) rather than the worker.
SERVE = "serve"


def _ms(seconds: Any) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:g} ms"


def _loop_held(loop: dict[str, Any]) -> str:
    """What held the worker's event loop in a phase (`load.bench.phase_loop`), as a clause."""
    if not loop:
        return ""
    batches, records = loop.get("batch_seconds", {}), loop.get("batch_records", {})
    lag = loop.get("loop_lag_seconds", {})
    text = (f"; in the phase {batches.get('count', 0)} batches of {_f(records.get('mean'), 1)} "
            f"records on average took {_f((batches.get('mean') or 0) * 1000, 1)} ms on average "
            f"(p99 <= {_ms(batches.get('p99_le'))}, longest <= {_ms(batches.get('max_le'))}); "
            f"the loop woke a 0.1 s sleeper late by p50 <= {_ms(lag.get('p50_le'))}, p99 <= "
            f"{_ms(lag.get('p99_le'))}, at most <= {_ms(lag.get('max_le'))}")
    collections = [(g, c) for g, c in (loop.get("gc_seconds") or {}).items() if c.get("count")]
    if collections:
        text += "; garbage collections: " + ", ".join(
            f"generation {g} {c['count']} taking {_f(c['sum'] * 1000, 1)} ms in all, longest "
            f"<= {_ms(c.get('max_le'))}" for g, c in collections)
    timers = [(name, t) for name, t in (loop.get("timer_seconds") or {}).items()
              if t.get("count")]
    if timers:
        text += "; timers: " + ", ".join(
            f"{name} {t['count']} runs, {_f((t.get('mean') or 0) * 1000, 1)} ms on average, "
            f"longest <= {_ms(t.get('max_le'))}" for name, t in timers)
    return text


def _collections(gc_seconds: dict[str, Any] | None) -> str:
    """The worker's garbage collection time (`load.bench.run_ingest`), as a cell."""
    if not gc_seconds:
        return "n/a"
    full = gc_seconds.get("2", {})
    total = sum(c.get("sum", 0.0) for c in gc_seconds.values())
    return (f"{_f(total, 2)} s; {full.get('count', 0)}, longest <= "
            f"{_ms(full.get('max_le'))}")


def _p99_target(row: dict[str, Any], name: str, goal_ms: float, bound: str) -> Target:
    """A latency target on a lookup row's p99; `bound` is shown only when it is missed."""
    met = row["p99_ms"] <= goal_ms
    return Target(name, f"<= {goal_ms:g} ms",
                  f"p50 {_f(row['p50_ms'], 1)} / p99 {_f(row['p99_ms'], 1)} ms", met,
                  "" if met else bound)


def targets(results: dict[str, Any]) -> list[Target]:
    """Each target with its measurement and, if missed, what bounds it.

    The rows of the core's targets (worker against a bare Faust reader and a Quix Streams
    ledger job, CPU per event, Redis bytes and Lua time per event, lookups, freshness at half
    capacity) and of scaling out (per-CPU efficiency with more workers, the backfill against
    reading), each with its ratio from this one run.
    """
    out: list[Target] = []
    tp = results.get("throughput", {})
    rate = tp.get("rate", math.nan)
    cpu = tp.get("cpu", {})
    us = cpu.get("workers_cpu_us_per_event", math.nan)
    reader = tp.get("faust_reader", {})
    quix = tp.get("quix_ledger", {})
    prof = results.get("profile", {})
    direct_us = prof.get("untimed", {}).get("cpu_us_per_event", math.nan)
    lua_us = prof.get("timed", {}).get("server", {}).get("evalsha_us_per_event", math.nan)
    worker_bound = (
        f"the worker's own CPU: {_f(us)} µs per event{_worker_spans(tp, us, reader)}; "
        f"Ingestor.process driven alone (no Kafka, no Faust, the profile stage) "
        f"{_f(direct_us)} µs ({_profile_top(results)})"
    )
    other = cpu.get("other_processes_cores")
    if other is not None and other > 0.2:
        worker_bound += (f"; other processes took {_f(other, 2)} of the machine's cores during "
                         "the run")
    if tp:
        ratio = _ratio(rate, reader.get("events_per_s"))
        out.append(Target(
            "one worker end to end / bare Faust reader", ">= 0.6",
            f"{_f(ratio, 3)} ({_f(rate)} / {_f(reader.get('events_per_s'))} events/s)",
            ratio >= 0.6, "" if ratio >= 0.6 else worker_bound))
        ratio = _ratio(rate, quix.get("events_per_s"))
        out.append(Target(
            "one worker end to end / Quix Streams ledger job", ">= 0.5",
            f"{_f(ratio, 3)} ({_f(rate)} / {_f(quix.get('events_per_s'))} events/s)",
            ratio >= 0.5, "" if ratio >= 0.5 else worker_bound))
        ratio = _ratio(cpu.get("worker0_cpu_us_per_event"), reader.get("cpu_us_per_event"))
        out.append(Target(
            "worker CPU per event / Faust reader CPU per event", "<= 1.7",
            f"{_f(ratio, 1)} ({_f(cpu.get('worker0_cpu_us_per_event'))} / "
            f"{_f(reader.get('cpu_us_per_event'), 1)} µs)",
            ratio <= 1.7, "" if ratio <= 1.7 else worker_bound))
    mem = results.get("memory")
    for scale in (mem or {}).get("scales", []):
        per = scale["bytes_per_customer"]
        ranks = scale["rank_bytes_per_member"]
        largest = ", ".join(f"{k} {v:.0f} B" for k, v in
                            (mem.get("template_largest_fields") or [])[:3])
        bound = (f"record {_f(scale['record_bytes_avg'])} B (largest values {largest}), "
                 f"{len(ranks)} rank sets {_f(sum(ranks.values()))} B, keyspace and "
                 f"allocator {_f(scale['keyspace_and_other'])} B")
        out.append(Target(f"Redis bytes per customer at {scale['customers']:,} customers",
                          "<= 600 B", f"{_f(per)} B", per <= 600, "" if per <= 600 else bound))
    if not math.isnan(lua_us):
        server = prof.get("timed", {}).get("server", {})
        out.append(Target(
            "Lua (EVALSHA) time per event", "<= 15 µs",
            f"{_f(lua_us, 1)} µs (one Redis at most {_f(1e6 / lua_us if lua_us else math.nan)}"
            " events/s)", lua_us <= 15,
            "" if lua_us <= 15 else
            f"{_f(server.get('evalsha_us_per_call'))} µs per call of a batch's partition: the "
            "HSETs of the changed fields (the packed bookkeeping among them), the sums' HMGET "
            "and HINCRBY, rank sets that are listpacks under 128 members, and Lua turning the "
            "call's arguments into strings (README \"Redis per partition\")"))
    c = results.get("config", {}).get("headline_concurrency", 16)
    idle = _lookup(results, "http", "worker idle", c)
    if idle is not None and "p99_ms" in idle:
        out.append(_p99_target(
            idle, f"HTTP lookup p99, {c} clients, worker idle", 5.0,
            f"the worker answers {_f(idle['requests_per_s'])} requests/s and spends "
            f"{_f(idle.get('worker_cpu_us_per_request'))} µs of its CPU per lookup on the web "
            f"server's one event loop (most lookups revalue: the stored values are as of the "
            f"customer's last event, the lookup as of the watermark), so {c} clients queue "
            f"(Little's law)"))
    busy = _lookup(results, "http", HALF_CAPACITY_LOOKUPS, c, prefix=True)
    if busy is not None and "p99_ms" in busy:
        out.append(_p99_target(
            busy, f"HTTP lookup p99, {c} clients, {busy['state']}", 10.0,
            "the lookups share the worker's interpreter lock with the batches: on the web "
            "server's own thread (CVM_WEB_IN_THREAD, the default) a lookup no longer waits for "
            "a whole batch, but the batches keep the lock for most of each switch interval, "
            "and 16 clients in a closed loop queue behind one another; on the worker's loop "
            "(CVM_WEB_IN_THREAD=false) a lookup waits for the batch it arrives during"))
    served = _lookup(results, SERVE, "worker idle", c)
    if served is not None and "p99_ms" in served:
        out.append(_p99_target(
            served, f"the same from the read server (`cvm serve`), {c} clients, worker idle",
            5.0,
            f"{_f(served.get('worker_cpu_us_per_request'))} µs of the read server's CPU per "
            f"lookup on its one event loop, so {c} clients queue (Little's law); "
            "`--processes N` spreads them over N"))
    served = _lookup(results, SERVE, HALF_CAPACITY_LOOKUPS, c, prefix=True)
    if served is not None and "p99_ms" in served:
        out.append(_p99_target(
            served, f"the same from the read server, {c} clients, {served['state']}", 10.0,
            "the read server shares no interpreter with the batches, only the machine's two "
            "cores with the worker, Kafka, Redis and the load client; its own CPU per lookup, "
            f"as above, with {c} clients queueing"))
    direct = _lookup(results, "lookup", "worker idle", c)
    if direct is not None and direct.get("client_cpu_us_per_request") is not None:
        lk = direct["client_cpu_us_per_request"]
        http_us = (idle or {}).get("worker_cpu_us_per_request")
        values = (_lookup(results, "values", "worker idle", c) or {}).get(
            "client_cpu_us_per_request")
        bare = (_lookup(results, "hgetall", "worker idle", c) or {}).get(
            "client_cpu_us_per_request")
        out.append(Target(
            f"lookup.customer CPU per request ({c} at once)", "<= 300 µs",
            f"{_f(lk)} µs (over HTTP: {_f(http_us)} µs of the worker's CPU)", lk <= 300,
            "" if lk <= 300 else
            f"a bare HGETALL by the same client costs {_f(bare)} µs and the lookup without "
            f"the product profile and offers {_f(values)} µs (so those cost "
            f"{_f(None if values is None else lk - values)}); the rest: the revaluation of "
            "the customers one pass of the loop batches (BG/NBD terms at every weekly step of "
            "the horizon, Gamma-Gamma), decoding and typing the record, asyncio"))
    half = _phase(results, "half capacity")
    half_lat = half.get("half capacity", {})
    if half_lat:
        p99 = half_lat.get("p99_ms", math.nan)
        met = p99 is not None and p99 <= 100 and half_lat.get("unseen", 0) == 0
        low = _phase(results, "low rate")
        trickle = low.get("low rate", {})
        held = _loop_held(half.get("worker_loop") or {})
        out.append(Target(
            f"freshness p99 at half capacity ({_f(half['rate'])} events/s)", "<= 100 ms",
            f"p50 {_f(half_lat.get('p50_ms'), 1)} / p99 {_f(p99, 1)} ms", bool(met),
            "" if met else
            f"per batch: the producer's linger (20 ms), the batch window (CVM_BATCH_WITHIN_MS "
            f"{_within(results)} ms) and the time to process a batch, with the timers "
            f"(rescoring, refresh) on the same loop; at {_f(low.get('rate'))} events/s "
            f"p50/p99 are {_f(trickle.get('p50_ms'), 1)}/"
            f"{_f(trickle.get('p99_ms'), 1)} ms; the worker got "
            f"{_f(half.get('cpu_cores', {}).get('worker'), 2)} cores, the machine "
            f"{_f(half.get('cpu_cores', {}).get('machine'), 2)} busy{held}"))
    scale = results.get("scale_cpu")
    for run in ([scale, scale.get("cluster")] if scale else []):
        if not run or not run.get("rows"):
            continue
        # A run too short for a steady window (a quick run on a fast machine) has no rate.
        measured = [r["efficiency"] for r in run["rows"] if r.get("efficiency") is not None]
        complete = len(measured) == len(run["rows"])
        met = complete and min(measured) >= 0.9
        if met:
            bound = ""
        elif complete:
            bound = "coordination: rebalances, the leader's timers and the commit's fence"
        else:
            bound = ("n/a: the workers applied the events before a steady window of their rate "
                     "(a run longer than --quick)")
        shown = " / ".join(f"{r['workers']}: {_f(r.get('efficiency'), 2)}" for r in run["rows"])
        out.append(Target(
            f"events per worker CPU-second vs one worker ({run['label']})", ">= 0.9",
            shown, met, bound))
    bf = results.get("backfill")
    for fmt in ("csv", "parquet"):
        if not bf or fmt not in bf:
            continue
        r = bf[fmt]
        floor = r.get("floor_vs_read_only")
        out.append(Target(
            f"backfill vs reading the same files ({fmt})", ">= 0.5x",
            f"{r['vs_read_only']}x", r["vs_read_only"] >= 0.5,
            "" if r["vs_read_only"] >= 0.5 else
            f"storing the result alone (the store floor: the same keys written again with "
            f"nothing computed) reaches {'n/a' if floor is None else floor}x of reading"
            f"; the rest is Python per customer (planning the record as the worker does)"))
        vs = r.get("vs_one_worker")
        if vs is not None:
            out.append(Target(f"backfill vs one streaming worker ({fmt})", ">= 20x",
                              f"{vs}x", vs >= 20, ""))
    return out


def _machine(results: dict[str, Any]) -> list[str]:
    m = results["machine"]
    versions = ", ".join(f"{k} {m[k]}" for k in (
        "python", "kafka", "redis_server", "faust-streaming", "aiokafka", "confluent-kafka",
        "redis-py", "hiredis", "orjson", "jsonschema-rs", "numpy", "scipy", "py-spy"))
    la0 = ", ".join(f"{v:.2f}" for v in m["load_average_at_start"])
    la1 = ", ".join(f"{v:.2f}" for v in results.get("load_average_at_end", ()))
    return [
        f"- Date: {m['date']}",
        f"- Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, "
        f"Linux {m['kernel']}",
        f"- Versions: {versions}",
        "- Dev stack Redis settings: " + ", ".join(
            f"{name} {m.get(f'redis {name}', 'unknown')}" for name in SERVER_SETTINGS)
        + f" (the engine's: {', '.join(f'{k} {v}' for k, v in SERVER_SETTINGS.items())})",
        f"- Command: `{results['command']}` (from `make bench`), "
        f"{_f(results.get('elapsed_s'))} s",
        f"- Load average (1/5/15 min) at start: {la0}; at end: {la1}. The dev stack (Kafka, "
        "Redis) runs on the same cores as the worker and the load client, and the machine may be "
        "shared with other work: rates are wall-clock and CPU-normalised figures (µs of CPU per "
        "event, events per CPU-second) are given next to them.",
    ]


def _ratio(num: Any, den: Any) -> float:
    """num / den of two measured numbers; NaN where either is missing.

    >>> _ratio(767, 3536) < 0.22, math.isnan(_ratio(1.0, None))
    (True, True)
    """
    try:
        return float(num) / float(den) if den else math.nan
    except (TypeError, ValueError):
        return math.nan


def _throughput_section(results: dict[str, Any]) -> list[str]:
    tp = results.get("throughput")
    if not tp:
        return []
    cpu = tp.get("cpu", {})
    raw = tp.get("raw_consumer", {})
    pub = tp.get("publish", {})
    lines = [
        "## 1. Throughput of one worker, end to end",
        "",
        f"{tp['events']:,} simulated events ({results.get('throughput_customers', 0):,} "
        f"customers) were published first ({_f(pub.get('events_per_s'))} events/s), then one "
        "`python -m stream_app.cli worker` started (CVM_BATCH_SIZE "
        f"{results['config']['batch_size']}, CVM_FIT_INTERVAL_S 3600 so no refit runs inside "
        "the window). Applied events are the sum over input partitions of the offsets in "
        "`cvm:applied`, sampled every 0.5 s; the rate is the least-squares slope from "
        f"{results['config']['warmup_s']:g} s after the first applied event until 95 % of the "
        f"events or {results['config']['measure_s']:g} s.",
        "",
        markdown_table(["measure", "value"], [
            ["first event applied after worker start (s)", tp.get("startup_s")],
            ["steady rate (events/s)", tp.get("rate")],
            ["window (s)", cpu.get("window_s")],
            ["worker CPU (cores)", cpu.get("worker0_cores")],
            ["worker CPU per event (µs)", cpu.get("worker0_cpu_us_per_event")],
            ["events per worker CPU-second", cpu.get("events_per_worker_cpu_s")],
            ["Redis server CPU (cores)", cpu.get("redis_cores")],
            ["garbage collection while ingesting (s; full collections, longest)",
             _collections(tp.get("gc_seconds"))],
            ["Kafka broker CPU (cores)", cpu.get("kafka_cores")],
            ["benchmark process CPU (cores)", cpu.get("bench_cores")],
            ["whole machine CPU (cores busy)", cpu.get("machine_cores")],
            ["other processes on the machine (cores)", cpu.get("other_processes_cores")],
            ["raw consumer rate (events/s)", raw.get("events_per_s")],
            ["raw consumer CPU (cores)", raw.get("cpu_cores")],
            ["raw consumer events per CPU-second", raw.get("events_per_cpu_s")],
            ["worker / raw consumer", (tp.get("rate", math.nan) / raw["events_per_s"])
             if raw.get("events_per_s") else math.nan],
            ["Faust agent that only reads and parses (events/s)",
             tp.get("faust_reader", {}).get("events_per_s")],
            ["Faust reader CPU per event (µs)", tp.get("faust_reader", {}).get("cpu_us_per_event")],
            ["Quix Streams ledger job, RocksDB state and Redis sink (events/s)",
             tp.get("quix_ledger", {}).get("events_per_s")],
            ["Quix ledger job CPU per event (µs)",
             tp.get("quix_ledger", {}).get("cpu_us_per_event")],
            ["worker / bare Faust reader", _ratio(tp.get("rate"),
                                                  tp.get("faust_reader", {}).get("events_per_s"))],
            ["worker / Quix ledger job", _ratio(tp.get("rate"),
                                                tp.get("quix_ledger", {}).get("events_per_s"))],
            ["worker CPU per event / Faust reader CPU per event",
             _ratio(cpu.get("worker0_cpu_us_per_event"),
                    tp.get("faust_reader", {}).get("cpu_us_per_event"))],
        ]),
        "",
    ]
    return lines


def _freshness_section(results: dict[str, Any]) -> list[str]:
    fr = results.get("freshness")
    if not fr:
        return []
    cyc = fr.get("poll_cycle_ms", {})
    rows = []
    for phase in fr["phases"]:
        for name in (phase["label"], f"{phase['label']} + lookups"):
            lat = phase.get(name)
            if lat:
                rows.append([name, phase["rate"], lat["n"], lat["p50_ms"], lat["p95_ms"],
                             lat["p99_ms"], lat["max_ms"], lat["unseen"],
                             phase["cpu_cores"].get("worker"), phase["caught_up"]])
    return [
        "## 2. Freshness: produce to visible in Redis",
        "",
        "A fresh worker first applies a 200-event probe (so the group has formed); then the "
        "phases below run back to back on it, each after a warm-up whose samples are left out, "
        "and the worker is given time to catch up after each (the idle lookups of section 3 "
        "run between the half-capacity phase and the target rate). The load generator "
        "(`load.generator.publish`) publishes at a fixed rate through a "
        f"producer wrapper that samples every {results['config']['fresh_sample_every']}th "
        "message: it notes `time.monotonic()` just before `produce` and asks for the delivery "
        "report (partition, offset). A poller thread reads, in one pipelined round trip per "
        "cycle, `HGET cvm:customer:{id} _o:<topic>` of every sampled event not yet seen: the "
        "engine writes that applied offset in the same Lua call as the rest of the update, so "
        "the first read at or above the event's offset is the moment the update is visible. "
        "Values read before the delivery report arrives are kept with their time, so no sample "
        "waits for its report. Resolution: one poll cycle (the poller sleeps 1 ms between "
        f"cycles), p50 {_f(cyc.get('p50_ms'), 2)} ms, p99 {_f(cyc.get('p99_ms'), 2)} ms; a "
        "latency is over-stated by at most one cycle. The time includes the producer's "
        "`linger.ms` (20 ms) and the worker's batch window "
        f"(CVM_BATCH_WITHIN_MS {_within(results)} ms).",
        "",
        markdown_table(["phase", "events/s", "samples", "p50 ms", "p95 ms", "p99 ms", "max ms",
                        "not seen", "worker cores", "caught up"], rows),
        "",
    ]


def _lookup_section(results: dict[str, Any]) -> list[str]:
    rows = []
    for row in (results.get("freshness", {}).get("lookups", [])
                + results.get("throughput", {}).get("lookups_max_ingest", [])):
        if "p99_ms" in row:
            rows.append([row["kind"], row["state"], row["concurrency"], row["n"],
                         row["p50_ms"], row["p95_ms"], row["p99_ms"], row["max_ms"],
                         row["requests_per_s"], row.get("client_cores"),
                         row.get("client_cpu_us_per_request"),
                         row.get("worker_cpu_us_per_request", ""), row["errors"]])
    if not rows:
        return []
    server = results.get("profile", {}).get("timed", {}).get("server", {})
    return [
        "## 3. Lookup latency",
        "",
        "Closed loop from a separate process (`load.bench_lookup`): each of `c` asyncio clients "
        "sends its next request when the previous answer arrived, for random known customers. "
        "`hgetall` is one `HGETALL` with redis-py's asyncio client; `lookup` is "
        "`stream_app.lookup.customer` (hash, watermark, model and cut points from Redis, then "
        "the revaluation); `values` the same without the product profile and the offers; "
        "`http` is `GET /customers/{id}` on the worker with aiohttp; "
        "`serve` the same request to the read server (`cvm serve`, one process; its CPU in "
        "the worker CPU column); "
        "`hgetall-c` is the same `HGETALL` of one median-size record by `redis-benchmark`, a C "
        "client, for what Redis answers when the client is not the bottleneck.",
        "",
        markdown_table(["kind", "worker", "clients", "requests", "p50 ms", "p95 ms", "p99 ms",
                        "max ms", "requests/s", "client cores", "client CPU µs/request",
                        "worker CPU µs/request", "errors"], rows),
        "",
        f"Redis itself spends {server.get('hgetall_us_per_call', 'n/a')} µs per HGETALL of a "
        "customer hash (INFO commandstats of the profile run): the rest of a direct lookup's "
        "time is the client (redis-py, its RESP parser, asyncio) and the loopback round trip.",
        "",
    ]


def _memory_section(results: dict[str, Any]) -> list[str]:
    mem = results.get("memory")
    if not mem:
        return []
    rows = []
    for s in mem["scales"]:
        ranks = s["rank_bytes_per_member"]
        rows.append([s["customers"], s["bytes_per_customer"], s["record_bytes_avg"],
                     str(s["record_encodings"]), s["fields_avg"],
                     " + ".join(f"{v:.0f}" for v in ranks.values()),
                     s["keyspace_and_other"]])
    alt = [[a["layout"], a["customers"], a["bytes_per_customer"], a["record_bytes_avg"],
            str(a["record_encodings"]), a["fields_avg"], len(a["rank_sets"]),
            sum(a["rank_bytes_per_member"].values())] for a in mem["alternatives"]]
    pop = mem.get("population_keys_bytes", 0)
    return [
        "## 4. Redis memory per customer",
        "",
        f"A full simulated year of {mem['template_customers']} customers "
        f"({mem['template_events']:,} events) went through `Ingestor.process` into a private "
        "redis-server (no persistence, `hash-max-listpack-value "
        f"{mem.get('hash_max_listpack_value', 64)}`); those records are the templates. A Lua "
        "script clones "
        "them server side (`COPY` of the hash, `HSET` of a new customer_id of the same length, "
        "`ZADD` of the template's scores under the new id in each rank set) up to each size. "
        "Bytes per customer = `used_memory` delta / clones; the record is `MEMORY USAGE "
        "... SAMPLES 0` of 300 random clones, the rank sets are `MEMORY USAGE` / `ZCARD`, and "
        "the rest (key, dict entry, expiry-free robj, rehash tables) is the difference.",
        "",
        f"Templates: {mem['template_fields_avg']} fields per record on average, "
        f"{mem['template_name_bytes_avg']} B of field names and {mem['template_value_bytes_avg']}"
        f" B of values, encodings {mem['template_encodings']}; largest values (field, mean "
        f"bytes): {mem.get('template_largest_fields')}. Population-level keys "
        f"(histograms, roll-ups) take {pop:,} B in all; histogram fields: "
        f"{mem['hist_fields']} (they grow with the diversity of histories, not the count).",
        "",
        markdown_table(["customers", "B/customer", "record B", "record encodings",
                        "fields", "rank sets B/member", "keyspace + other B"], rows),
        "",
        "Alternative layouts, from the same templates, at "
        f"{mem['alternatives'][0]['customers'] if mem['alternatives'] else 0:,} customers "
        "(short names: 1-2 character codes; packed bookkeeping: `_v`, `_h`, `_days` and the "
        "`_o:*` offsets in one field; derivable fields dropped: gross_margin, net_contribution, "
        "repeat_purchases, contacts, horizon_days, recency_days, model_version, value_at_risk, "
        "customer_id; churn fields: `_ret` and `_recent`, the churn model's memory, which would "
        "then live elsewhere; listpack N: `hash-max-listpack-value N` on the server):",
        "",
        markdown_table(["layout", "customers", "B/customer", "record B", "encodings", "fields",
                        "rank sets", "rank B/member"], alt),
        "",
    ]


def _scaling_section(results: dict[str, Any]) -> list[str]:
    sc, tp = results.get("scaling"), results.get("throughput")
    if not sc:
        return []
    one = tp.get("rate", math.nan) if tp else math.nan
    cpu = sc.get("cpu", {})
    return [
        "## 5. Scaling from one to two workers (same group, 4 partitions)",
        "",
        markdown_table(["measure", "1 worker", f"{sc['workers']} workers"], [
            ["steady rate (events/s)", one, sc.get("rate")],
            ["speed-up", 1.0, sc.get("rate", math.nan) / one if one else math.nan],
            ["worker CPU (cores)", tp.get("cpu", {}).get("worker0_cores") if tp else None,
             " + ".join(_f(cpu.get(f"worker{i}_cores"), 2) for i in range(sc["workers"]))],
            ["Redis CPU (cores)", tp.get("cpu", {}).get("redis_cores") if tp else None,
             cpu.get("redis_cores")],
            ["Kafka CPU (cores)", tp.get("cpu", {}).get("kafka_cores") if tp else None,
             cpu.get("kafka_cores")],
            ["worker CPU per event (µs)",
             tp.get("cpu", {}).get("workers_cpu_us_per_event") if tp else None,
             cpu.get("workers_cpu_us_per_event")],
            ["load average (1 min) at start / end of the run", _la(tp), _la(sc)],
        ]),
        "",
    ]


def _la(run: dict[str, Any] | None) -> str:
    la = (run or {}).get("load_average") or []
    return " / ".join(f"{v[0]:.2f}" for v in la)


def _profile_section(results: dict[str, Any]) -> list[str]:
    prof = results.get("profile")
    lines: list[str] = []
    if prof:
        timed, plain = prof["timed"], prof["untimed"]
        rows = [[name, us, share] for name, us, share in timed["rows"]]
        server = timed.get("server", {})
        lines += [
            "## Profile: where the worker's time goes",
            "",
            f"`Ingestor.process` driven directly (no Faust, no Kafka) on the first "
            f"{timed['events']:,} events of the throughput stream, batches of "
            f"{results['config']['batch_size']}, against a private redis-server. Without timers:"
            f" {plain['cpu_us_per_event']} µs of CPU per event ({plain['events_per_cpu_s']:,} "
            f"events per CPU-second; {plain['events_per_s_wall']:,} events/s wall). With the "
            f"phase timers (CPU time; waits are wall minus CPU): {timed['cpu_us_per_event']} "
            "µs/event.",
            "",
            markdown_table(["phase (CPU of the process)", "µs per event", "share of CPU"], rows),
            "",
            "Waits (wall time minus CPU inside the awaited calls: Redis server, loopback "
            "network, and the run queue when other processes hold the cores): "
            + ", ".join(f"{k} {v} µs/event" for k, v in timed.get("waits_us_per_event",
                                                                     {}).items()) + ".",
            "",
            f"Redis server side (INFO commandstats): the commit Lua script "
            f"{server.get('evalsha_us_per_event', 'n/a')} µs per event "
            f"({server.get('evalsha_us_per_call', 'n/a')} µs per batch call), HGETALL "
            f"{server.get('hgetall_us_per_event', 'n/a')} µs per event.",
            "",
        ]
        tp = results.get("throughput", {})
        worker_us = tp.get("cpu", {}).get("workers_cpu_us_per_event")
        spans = _worker_spans(tp, worker_us, tp.get("faust_reader", {}))
        if worker_us and spans:
            lines += [
                f"The worker itself spent {worker_us} µs of CPU per event in the throughput "
                f"run{spans}. The two workloads differ: this stage starts from an empty store, so "
                f"most of its customers are new, while the worker reads and rewrites records "
                f"that have grown with each of their events.",
                "",
            ]
        elif worker_us:
            faust_us = worker_us - plain["cpu_us_per_event"]
            lines += [
                f"Faust/aiokafka overhead, by difference: the worker spent {worker_us} µs of "
                f"CPU per event in the throughput run, `Ingestor.process` alone "
                f"{plain['cpu_us_per_event']} µs, so the stream machinery (fetch, decompress, "
                f"events, take_events, acks, commits) costs about {faust_us:.0f} µs per event "
                f"({faust_us / worker_us:.0%}) if the two cost the same per event.",
                "",
            ]
    spy = results.get("throughput", {}).get("pyspy", {})
    if spy.get("categories"):
        total = sum(spy["categories"].values())
        rows = [[name, n, n / total] for name, n in spy["categories"].items()]
        lines += [
            "py-spy (`record --nonblocking`, 100 Hz, busy samples only) on the worker while it "
            f"ingested flat out ({total:,} samples):",
            "",
            markdown_table(["category (leaf-most matching frame)", "samples", "share"], rows),
            "",
            "Top leaf functions:",
            "",
            markdown_table(["function", "samples"], spy["top_leaf_functions"][:15]),
            "",
        ]
    elif spy.get("skipped"):
        lines += [f"py-spy: {spy['skipped']}", ""]
    return lines


def _chart(results: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    ax = axes[0][0]
    for key, label in (("throughput", "1 worker"), ("scaling", "2 workers")):
        run = results.get(key)
        if run and run.get("series"):
            t, n = zip(*run["series"], strict=True)
            ax.plot(t, n, label=f"{label}: {_f(run.get('rate'))} events/s")
    raw = results.get("throughput", {}).get("raw_consumer", {})
    ax.set_title("events applied (raw consumer: " + _f(raw.get("events_per_s")) + " events/s)")
    ax.set_xlabel("s since worker start")
    ax.set_ylabel("events")
    ax.legend()
    ax = axes[0][1]
    samples = results.get("freshness", {}).get("samples", [])
    phases = sorted({p for p, _ in samples if p not in ("warmup", "drain")})
    for phase in phases:
        lat = sorted(v * 1000 for p, v in samples if p == phase)
        if lat:
            ax.plot(lat, [i / len(lat) for i in range(1, len(lat) + 1)], label=phase)
    ax.axvline(100, color="grey", linestyle="--", label="target p99 100 ms")
    ax.set_xscale("log")
    ax.set_title("freshness: produce to visible (CDF)")
    ax.set_xlabel("ms")
    ax.legend(fontsize=8)
    ax = axes[1][0]
    rows = [r for r in results.get("freshness", {}).get("lookups", []) if "p99_ms" in r]
    rows += [r for r in results.get("throughput", {}).get("lookups_max_ingest", [])
             if "p99_ms" in r]
    labels = [f"{r['kind']} c{r['concurrency']}\n{r['state'][:18]}" for r in rows]
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [r["p50_ms"] for r in rows], width=0.4, label="p50")
    ax.bar([x + 0.2 for x in xs], [r["p99_ms"] for r in rows], width=0.4, label="p99")
    ax.set_xticks(list(xs))
    ax.set_xticklabels(labels, rotation=70, fontsize=6)
    ax.set_yscale("log")
    ax.set_ylabel("ms")
    ax.set_title("lookup latency")
    ax.legend()
    ax = axes[1][1]
    mem = results.get("memory", {})
    bars = [(f"{s['customers']:,}", s["bytes_per_customer"]) for s in mem.get("scales", [])]
    bars += [(a["layout"][:34], a["bytes_per_customer"]) for a in mem.get("alternatives", [])]
    if bars:
        ax.barh([b[0] for b in bars], [b[1] for b in bars])
        ax.axvline(400, color="grey", linestyle="--", label="target 400 B")
        ax.tick_params(axis="y", labelsize=7)
        ax.invert_yaxis()
        ax.legend()
    ax.set_title("Redis bytes per customer")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _products_section(results: dict[str, Any]) -> list[str]:
    pr = results.get("products")
    if not pr:
        return []
    return [
        "## Product profile, affinity and offers",
        "",
        f"The {pr['purchases_with_items']:,} purchases with order lines of the throughput "
        f"events ({pr['customers']:,} customers, {pr['categories']} categories) through the "
        "pure steps of the worker (`load/bench_products.py`): "
        f"{pr['us_per_purchase']} us per purchase for the profile, the affinity counters and "
        f"the encoding; {pr['us_per_offer_ranking']} us per customer to rank the offers. The "
        f"record's `products` field: {pr['profile_bytes_mean']} B per customer on average, "
        f"{pr['profile_bytes_p99']} B at the 99th percentile, {pr['profile_bytes_max']} B at "
        f"most (included in the memory per customer above); {pr['affinity_fields']} affinity "
        "counters per scope, period and partition.",
        "",
    ]


def write_report(results: dict[str, Any], outdir: Path) -> str:
    """Write report.md and bench.png into `outdir`; return the table for the terminal."""
    rows = [t.row() for t in targets(results)]
    chart = _chart(results, outdir / "bench.png")
    lines: list[str] = [
        "# Benchmark of the customer value engine",
        "",
        *_machine(results),
        "",
        "## Targets",
        "",
        markdown_table(TARGET_HEADER, rows),
        "",
    ]
    for section in (_throughput_section, _freshness_section, _lookup_section,
                    _memory_section, _scaling_section, _profile_section,
                    _products_section):
        lines += section(results)
    from load import bench_backfill, bench_scale, bench_valuation

    lines += bench_valuation.section(results.get("valuation"))
    lines += bench_scale.section(results.get("scale_cpu"))
    if results.get("backfill"):
        lines += ["## Backfill", "", bench_backfill.table(results["backfill"]), ""]
    if chart:
        lines += ["## Chart", "", "![benchmark](bench.png)", ""]
    else:
        lines += ["(matplotlib is not installed: no chart)", ""]
    (outdir / "report.md").write_text("\n".join(lines))
    table = text_table(TARGET_HEADER[:4], [r[:4] for r in rows], width=70)
    extra: Sequence[str] = []
    sc, tp = results.get("scaling"), results.get("throughput")
    if sc and tp and tp.get("rate"):
        extra = [f"\nscaling: {sc['workers']} workers {_f(sc.get('rate'))} events/s = "
                 f"{sc.get('rate', math.nan) / tp['rate']:.2f}x one worker"]
    sc4 = results.get("scale_cpu")
    if sc4:
        extra = [*extra, "\nper CPU: " + ", ".join(
            f"{r['workers']} workers {_f(r['events_per_worker_cpu_s'])} events/worker-CPU-s "
            f"({_f(r['efficiency'], 2)}x), Redis {_f(r.get('redis_us_per_event'), 1)} µs/event"
            for r in sc4["rows"])]
    bf = results.get("backfill")
    if bf:
        extra = [*extra, *(
            f"\nbackfill {fmt}: {_f(bf[fmt]['backfill']['events_per_s'])} events/s = "
            f"{bf[fmt]['vs_read_only']}x read only, {bf[fmt]['vs_one_worker']}x one worker"
            for fmt in ("csv", "parquet") if fmt in bf)]
    return table + "".join(extra)
