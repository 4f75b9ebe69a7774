"""`load.bench_client` against a real Redis: every row it reports, for both clients."""

from __future__ import annotations

import pytest

from load.bench_client import commit_split, measure_client
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


def test_the_commit_split_times_each_step_inside_the_call_and_restores_redis_py(
        stack: Settings) -> None:
    from redis.asyncio.connection import AbstractConnection

    from stream_app.store.customers import CustomerStore

    before = (CustomerStore.__init__, AbstractConnection.read_response)
    with flushed_db(stack, TEST_REDIS_DB) as url:
        split = commit_split(url, batch_size=12, events=60)
    assert (CustomerStore.__init__, AbstractConnection.read_response) == before
    assert split["events"] == 60 and split["commit_calls"] >= 60 // 12
    per_call = split["client_cpu_us_per_call"]
    assert set(per_call) == {"pack", "send", "read", "pool", "call"}
    # The steps are parts of the call: together they cannot exceed it.
    assert sum(v for k, v in per_call.items() if k != "call") <= per_call["call"] + 1.0
