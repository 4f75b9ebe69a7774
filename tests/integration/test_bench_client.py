"""`load.bench_client` against a real Redis: every row it reports, for both clients."""

from __future__ import annotations

import pytest

from load.bench_client import measure_client
from stream_app.settings import Settings
from tests.conftest import TEST_REDIS_DB, flushed_db

pytestmark = pytest.mark.integration


def test_every_operation_is_measured_per_call(stack: Settings) -> None:
    with flushed_db(stack, TEST_REDIS_DB) as url:
        report = measure_client(url, calls=8, args=12)
    assert (report["calls"], report["args"]) == (8, 12)
    assert set(report["asyncio"]) == {"ping", "evalsha_0", "evalsha_12", "four_calls",
                                      "one_pipeline"}
    assert set(report["blocking"]) == {"ping", "evalsha_12"}
    for rows in (report["asyncio"], report["blocking"]):
        for row in rows.values():
            assert row["wall_us"] > 0 and row["cpu_us"] >= 0
