"""Redis time of the commit per event: ``INFO commandstats`` of EVALSHA over a simulated year.

Applies the simulated events of `customers` customers with `Ingestor.process` (batches of
`batch_size`, records on their key's partition) to a private ``redis-server`` and divides the
server's ``usec`` of EVALSHA (the Lua commit) and of HGETALL (the loads) by the events, and
the time of each command the script ran (EVALSHA's time less theirs is the Lua work). Time
depends on how busy the machine is; the commands the script runs per event (counted by
``commandstats`` too) do not, and say the same more steadily.
The server runs with the engine's settings (`stream_app.store.server.SERVER_SETTINGS`);
``--config NAME=VALUE`` (repeatable) sets another before the run, e.g.
``hash-max-listpack-entries=512`` and ``zset-max-listpack-entries=128`` (Redis's defaults):
the population histograms grow to hundreds of fields, and in a listpack every sum the commit
reads or writes there is found by a linear scan (as is every rank set member in a sorted set
of at most ``zset-max-listpack-entries``).
Run: ``python -m load.bench_commit [--customers 2000] [--days 365]
[--config hash-max-listpack-entries=512]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Mapping
from typing import Any

import redis

from load.bench_env import PrivateRedis
from load.bench_profile import profile_pipeline, raw_records
from load.simulator import SimConfig, simulate
from stream_app.settings import Settings

__all__ = ["measure_commit"]


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def measure_commit(url: str, customers: int = 2000, days: int = 365, batch_size: int = 500,
                   seed: int = 11, config: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Server time per event of the commit script and of the loads.

    `config`: server settings (``CONFIG SET``) for the run.
    """
    settings = Settings(redis_url=url)
    events = list(simulate(SimConfig(n_customers=customers, days=days, seed=seed)))
    records = raw_records(events, settings, settings.partitions)
    client = redis.Redis.from_url(url)
    for name, value in (config or {}).items():
        client.config_set(name, value)
    server_config = {name: _text(client.config_get(name)[name])
                     for name in ("hash-max-listpack-entries", "zset-max-listpack-entries",
                                  *(config or {}))}
    client.config_resetstat()
    prof = asyncio.run(profile_pipeline(settings, records, batch_size=batch_size, timers=False))
    stats = client.info("commandstats")
    client.close()
    called = {name.removeprefix("cmdstat_"): v for name, v in stats.items()
              if name.removeprefix("cmdstat_") not in ("evalsha", "hgetall", "flushdb", "info",
                                                       "config|resetstat", "script|load",
                                                       "ping", "hello")}
    inner = {name: round(int(v["calls"]) / len(records), 2) for name, v in called.items()}
    # Server time of the commands the script ran, per event: the rest of EVALSHA's time
    # is the script's own (Lua) work.
    inner_us = {name: round(int(v["usec"]) / len(records), 2) for name, v in called.items()}
    return {"events": len(records), "customers": customers, "batch_size": batch_size,
            "partitions": settings.partitions,
            "server_config": server_config, **prof.server,
            "script_commands_per_event": round(sum(inner.values()), 2),
            "per_event": inner,
            "script_commands_us_per_event": round(sum(inner_us.values()), 1),
            "us_per_event": inner_us}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--config", action="append", default=[], metavar="NAME=VALUE",
                        help="a server setting for the run (repeatable)")
    cli = parser.parse_args()
    settings = dict(item.split("=", 1) for item in cli.config)
    with PrivateRedis() as server:
        print(json.dumps(measure_commit(server.url, cli.customers, cli.days, cli.batch_size,
                                        config=settings),
                         indent=2))
