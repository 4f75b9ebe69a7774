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


def test_a_cluster_fence_takes_the_primaries_seen_until_the_set_is_confirmed() -> None:
    fence = ServerFence(cluster=True)
    for node in ("m2", "m1", "m3", "m1"):  # the worker connects to each primary as it starts
        fence.admit(node)
    assert fence.accepted == "m1,m2,m3" and not fence.restarted
    fence.accept("m1,m2,m3")  # the resume from Redis confirms the set
    fence.admit("m2")
    with pytest.raises(RedisRestarted):  # a replica promoted in m3's place
        fence.admit("r3")
    assert fence.restarted and fence.seen == "r3"
    fence.accept("m1,m2,r3")
    fence.admit("r3")
    assert not fence.restarted
    with pytest.raises(RedisRestarted):  # the failed master, back: not a primary accepted
        fence.admit("m3")
