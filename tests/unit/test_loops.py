"""`stream_app.loops`: which event loop the servers run on."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from stream_app import loops
from stream_app.settings import Settings, SettingsError


@pytest.fixture(autouse=True)
def _default_policy() -> Iterator[None]:
    yield
    asyncio.set_event_loop_policy(None)


@pytest.mark.parametrize("name", loops.LOOPS)
def test_new_loops_are_of_the_kind_installed(name: str) -> None:
    assert loops.install(name) == name

    async def kind() -> str:
        return loops.running()

    assert asyncio.run(kind()) == name


def test_an_unknown_loop_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown event loop 'trio'"):
        loops.install("trio")
    with pytest.raises(SettingsError, match="CVM_EVENT_LOOP='trio'"):
        Settings.from_env({"CVM_EVENT_LOOP": "trio"})


def test_asyncio_is_the_default_and_uvloop_can_be_asked_for() -> None:
    assert Settings.from_env({}).event_loop == "asyncio"
    assert Settings.from_env({"CVM_EVENT_LOOP": "UVLoop"}).event_loop == "uvloop"
