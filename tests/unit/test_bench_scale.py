"""The per-CPU scaling table and the backfill table of the bench report."""

from __future__ import annotations

from typing import Any

from load import bench_backfill, bench_scale


def fake_ingest(stack: Any, cfg: Any, events: list[Any], n: int, outdir: Any,
                extras: bool) -> dict[str, Any]:
    # n workers spend 5 % more CPU per event each time the count doubles.
    us = 500.0 * (1.05 ** (n.bit_length() - 1))
    return {"rate": 400.0 * min(n, 2), "load_average": [1.0, 1.0],
            "cpu": {"events": 10_000, "window_s": 10.0, "redis_cores": 0.05,
                    "workers_cpu_us_per_event": us, "events_per_worker_cpu_s": 1e6 / us}}


def test_efficiency_is_per_worker_cpu_second_relative_to_one_worker() -> None:
    result = bench_scale.measure(None, [None] * 10, fake_ingest, None, None)  # type: ignore[arg-type]
    rows = {r["workers"]: r for r in result["rows"]}
    assert rows[1]["efficiency"] == 1.0
    assert rows[2]["efficiency"] == round(1 / 1.05, 3)
    assert rows[4]["efficiency"] == round(1 / 1.05**2, 3)
    assert rows[4]["redis_us_per_event"] == 50.0  # 0.05 cores x 10 s / 10,000 events
    text = "\n".join(bench_scale.section(result))
    assert "| 4 | 800 | 1,814 | 0.907 |" in text


def test_backfill_table_shows_both_ratios() -> None:
    result = {
        "events": 5_000_000, "customers": 100_000, "days": 730,
        "one_worker": {"events_per_s": 400.0, "source": "measured here"},
        "csv": {"read_only": {"events_per_s": 1e6}, "vs_read_only": 0.05,
                "vs_one_worker": 125.0, "cpu_vs_read_only": 0.04, "cpu_vs_one_worker": 90.0,
                "backfill": {"events_per_s": 50_000.0, "read_s": 5, "aggregate_s": 6,
                             "value_s": 7, "seconds": 100}},
    }
    text = bench_backfill.table(result)
    assert "| csv | 1,000,000 | 50,000 | 0.05x | 125.0x | 0.04x | 90.0x |" in text


def fake_cluster_ingest(stack: Any, cfg: Any, events: list[Any], n: int, outdir: Any,
                        extras: bool) -> dict[str, Any]:
    out = fake_ingest(stack, cfg, events, n, outdir, extras)
    out["cpu"] = {**out["cpu"], "redis_node1_cores": 0.02, "redis_node2_cores": 0.04,
                  "redis_node3_cores": 0.0}
    return out


def test_cluster_rows_give_redis_cpu_per_event_of_every_shard() -> None:
    names = ("redis_node1", "redis_node2", "redis_node3")
    single = bench_scale.measure(None, [None] * 10, fake_ingest, None, None)  # type: ignore[arg-type]
    cluster = bench_scale.measure(None, [None] * 10, fake_cluster_ingest, None, None,  # type: ignore[arg-type]
                                  label="Redis Cluster, 3 masters", redis_names=names)
    cluster["partitions_by_node"] = {"redis_node1": [0], "redis_node2": [1, 3],
                                     "redis_node3": []}
    rows = {r["workers"]: r for r in cluster["rows"]}
    assert [rows[2][f"{n}_us_per_event"] for n in names] == [20.0, 40.0, 0.0]
    text = "\n".join(bench_scale.section({**single, "cluster": cluster}))
    assert "## Scaling per CPU (single node;" in text
    assert "## Scaling per CPU (Redis Cluster, 3 masters;" in text
    assert "| node1 Redis CPU per event (µs) | node2 Redis CPU per event (µs) |" in text
    assert "| 4 | 800 | 1,814 | 0.907 | 551.2 | 20.0 | 40.0 | 0.0 |" in text
    assert "node2 [1, 3], node3 none" in text
