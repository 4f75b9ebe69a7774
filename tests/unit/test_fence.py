"""The fence that keeps a worker from writing to a restarted Redis before it resumed from it."""

from __future__ import annotations

import pytest

from stream_app.fence import RedisRestarted, ServerFence


def test_the_first_server_is_accepted_and_a_new_one_is_refused_until_accepted() -> None:
    fence = ServerFence()
    fence.admit("a")
    fence.admit("a")
    assert fence.accepted == "a" and not fence.restarted
    with pytest.raises(RedisRestarted):
        fence.admit("b")
    assert fence.restarted and fence.seen == "b"
    with pytest.raises(RedisRestarted):  # every new connection, until accepted
        fence.admit("b")
    fence.accept("b")
    fence.admit("b")
    assert not fence.restarted
    with pytest.raises(RedisRestarted):  # the old server is not the accepted one any more
        fence.admit("a")


def test_a_server_without_a_run_id_is_let_through() -> None:
    fence = ServerFence()
    fence.admit("")
    assert fence.accepted is None
