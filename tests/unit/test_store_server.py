"""The start-up check of the Redis server's hash-max-listpack-value (no server needed)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from redis.exceptions import ResponseError

from stream_app.store.server import LISTPACK_VALUE_BYTES, check_listpack_value


class FakeRedis:
    """Answers CONFIG GET from a dict, or refuses it like a managed service."""

    def __init__(self, config: dict[str, str] | None) -> None:
        self.config = config

    async def config_get(self, pattern: str) -> dict[Any, Any]:
        if self.config is None:
            raise ResponseError("unknown command 'CONFIG'")
        return {k: v for k, v in self.config.items() if k == pattern}


async def test_a_low_value_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        value = await check_listpack_value(FakeRedis({"hash-max-listpack-value": "64"}))
    assert value == 64
    assert f"CONFIG SET hash-max-listpack-value {LISTPACK_VALUE_BYTES}" in caplog.text


async def test_enough_is_silent(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        value = await check_listpack_value(FakeRedis({"hash-max-listpack-value": "8192"}))
    assert value == 8192
    assert caplog.text == ""


async def test_redis_6_answers_under_the_ziplist_name(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        value = await check_listpack_value(FakeRedis({"hash-max-ziplist-value": "64"}))
    assert value == 64
    assert "hash-max-listpack-value is 64" in caplog.text


async def test_a_refused_config_get_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert await check_listpack_value(FakeRedis(None)) is None
        assert await check_listpack_value(FakeRedis({})) is None
    assert caplog.text == ""
