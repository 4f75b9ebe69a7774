"""`lookup.Kept`: what a reader keeps per client, and one read for the lookups that miss it."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from stream_app.lookup import Kept
from stream_app.settings import Settings
from stream_app.store.keys import Keys


class Reads:
    """A slow read that counts its calls; with `failing`, the first one fails."""

    def __init__(self, failing: bool = False) -> None:
        self.calls = 0
        self.failing = failing

    async def __call__(self) -> int:
        self.calls += 1
        await asyncio.sleep(0.01)
        if self.failing and self.calls == 1:
            raise ConnectionError("down")
        return self.calls


def test_lookups_that_miss_at_once_share_one_read() -> None:
    kept: Kept[int] = Kept(lambda s: s.refresh_interval_s)
    settings, keys, load = Settings(), Keys(), Reads()

    async def main() -> tuple[list[int], int, int]:
        client, other = Redis(), Redis()  # never connected: only the cache's keys
        got = await asyncio.gather(*(kept.get(client, keys, settings, load) for _ in range(16)))
        again = await kept.get(client, keys, settings, load)
        elsewhere = await kept.get(other, keys, settings, load)
        return got, again, elsewhere

    got, again, elsewhere = asyncio.run(main())
    assert got == [1] * 16 and again == 1  # one read, then kept
    assert elsewhere == 2  # kept per client


def test_a_failed_read_reaches_every_waiter_and_the_next_lookup_reads_again() -> None:
    kept: Kept[int] = Kept(lambda s: s.refresh_interval_s)
    settings, keys, load = Settings(), Keys(), Reads(failing=True)

    async def main() -> tuple[list[object], int]:
        client = Redis()
        first = await asyncio.gather(*(kept.get(client, keys, settings, load)
                                       for _ in range(4)), return_exceptions=True)
        return first, await kept.get(client, keys, settings, load)

    first, then = asyncio.run(main())
    assert all(isinstance(e, ConnectionError) for e in first)
    assert then == 2 and load.calls == 2


def test_a_cancelled_lookup_does_not_cancel_the_read_others_wait_for() -> None:
    kept: Kept[int] = Kept(lambda s: s.refresh_interval_s)
    settings, keys = Settings(), Keys()

    async def load() -> int:
        await asyncio.sleep(0.02)
        return 42

    async def main() -> int:
        client = Redis()
        first = asyncio.ensure_future(kept.get(client, keys, settings, load))
        second = asyncio.ensure_future(kept.get(client, keys, settings, load))
        await asyncio.sleep(0)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        return await second

    assert asyncio.run(main()) == 42


def test_time_to_live_zero_reads_every_time_and_other_keys_do_not_share() -> None:
    kept: Kept[int] = Kept(lambda s: s.refresh_interval_s)
    fresh, keys = Settings(refresh_interval_s=0.0), Keys()
    reads = 0

    async def load() -> int:
        nonlocal reads
        reads += 1
        return reads

    async def main() -> list[int]:
        client = Redis()
        return [await kept.get(client, keys, fresh, load),
                await kept.get(client, keys, fresh, load),
                await kept.get(client, Keys(prefix="other"), Settings(), load)]

    assert asyncio.run(main()) == [1, 2, 3]
