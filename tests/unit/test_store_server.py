"""The start-up checks of the Redis server's settings (no server needed)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from redis.exceptions import ResponseError

from stream_app.store.server import (
    LISTPACK_VALUE_BYTES,
    SERVER_SETTINGS,
    check_commit_settings,
    check_listpack_value,
)


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


async def test_redis_defaults_are_warned_about_for_the_commit(
        caplog: pytest.LogCaptureFixture) -> None:
    defaults = {"hash-max-listpack-entries": "512", "zset-max-listpack-entries": "128"}
    with caplog.at_level(logging.WARNING):
        found = await check_commit_settings(FakeRedis(defaults))
    assert found == {"hash-max-listpack-entries": 512, "zset-max-listpack-entries": 128}
    assert "CONFIG SET hash-max-listpack-entries 128" in caplog.text
    assert "CONFIG SET zset-max-listpack-entries 0" in caplog.text


async def test_the_engine_settings_are_silent_and_too_few_entries_are_not(
        caplog: pytest.LogCaptureFixture) -> None:
    ours = {name: str(value) for name, value in SERVER_SETTINGS.items()}
    with caplog.at_level(logging.WARNING):
        assert await check_commit_settings(FakeRedis(ours)) == {
            "hash-max-listpack-entries": 128, "zset-max-listpack-entries": 0}
    assert caplog.text == ""
    with caplog.at_level(logging.WARNING):  # records of about 50 fields would be hashtables
        await check_commit_settings(FakeRedis({**ours, "hash-max-listpack-entries": "32"}))
    assert "hash-max-listpack-entries is 32" in caplog.text


async def test_redis_6_names_and_a_refused_config_get_for_the_commit(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        found = await check_commit_settings(FakeRedis({"zset-max-ziplist-entries": "128"}))
        assert await check_commit_settings(FakeRedis(None)) == {
            "hash-max-listpack-entries": None, "zset-max-listpack-entries": None}
    assert found["zset-max-listpack-entries"] == 128
    assert caplog.text.count("WARNING") == 1 and "zset-max-listpack-entries is 128" in caplog.text
