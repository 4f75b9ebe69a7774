"""Write simulated events to history files (CSV or Parquet), as `cvm backfill` reads them.

One file per event kind, named after its input topic's kind (``purchases``,
``service_contacts``, ``campaign_touches``), with the contract's fields as columns
(a purchase's optional ``items`` and every ``schema_version`` are left out).

>>> import tempfile
>>> from load.simulator import SimConfig, simulate
>>> with tempfile.TemporaryDirectory() as d:
...     paths = write_files(simulate(SimConfig(n_customers=5, days=30)), d, "csv")
...     sorted(p.name for p in paths)
['campaign_touches.csv', 'purchases.csv', 'service_contacts.csv']
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import polars as pl

from load.simulator import SimEvent

#: Per kind: file stem and the contract's columns, in the schema's order.
COLUMNS = {
    "purchase": ("purchases", ("event_id", "customer_id", "occurred_at", "kind", "amount",
                               "currency", "cost", "channel")),
    "service_contact": ("service_contacts", ("event_id", "customer_id", "occurred_at",
                                             "channel", "reason", "cost", "resolved",
                                             "sentiment")),
    "campaign_touch": ("campaign_touches", ("event_id", "customer_id", "occurred_at",
                                            "campaign_id", "channel", "action", "cost")),
}
_FLOATS = ("amount", "cost", "sentiment")


def write_files(events: Iterable[SimEvent], directory: str | Path, fmt: str = "parquet",
                ) -> list[Path]:
    """Write `events` to one file per kind in `directory`; returns the paths written."""
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"format {fmt!r}: csv or parquet")
    columns = {kind: {name: [] for name in names} for kind, (_, names) in COLUMNS.items()}
    for event in events:
        table = columns[event.topic_kind]
        payload = event.payload
        for name, values in table.items():
            values.append(payload.get(name))
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind, table in columns.items():
        schema = {name: (pl.Float64 if name in _FLOATS else
                         pl.Boolean if name == "resolved" else pl.String) for name in table}
        frame = pl.DataFrame(table, schema=schema)
        path = out / f"{COLUMNS[kind][0]}.{fmt}"
        if fmt == "csv":
            frame.write_csv(path)
        else:
            frame.write_parquet(path)
        paths.append(path)
    return paths
