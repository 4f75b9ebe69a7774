"""Commands packed by hiredis are byte for byte what redis-py's asyncio packer writes."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import DataError

from stream_app.fence import ServerFence, fenced_client
from stream_app.resp import PackedConnection, packed_cluster, packed_pool

argument = st.one_of(
    st.text(max_size=40),
    st.binary(max_size=40),
    st.integers(-(2**80), 2**80),
    st.floats(allow_nan=False),
    st.binary(min_size=7000, max_size=9000),  # beyond redis-py's buffer cutoff
)
command = st.sampled_from(["EVALSHA", "CONFIG GET", b"HSET", b"CLIENT SETNAME", "hmget"])


def _redis_py(*args: Any) -> bytes:
    return b"".join(bytes(chunk) for chunk in Connection().pack_command(*args))


def _packed(*args: Any) -> bytes:
    return b"".join(PackedConnection().pack_command(*args))


@settings(max_examples=300, deadline=None)
@given(command, st.lists(argument, max_size=60))
def test_the_same_bytes_as_redis_py(name: str | bytes, args: list[Any]) -> None:
    assert _packed(name, *args) == _redis_py(name, *args)


def test_what_hiredis_does_not_take_is_packed_or_refused_as_redis_py_does() -> None:
    assert _packed("SET", "k", bytearray(b"v")) == _redis_py("SET", "k", bytearray(b"v"))
    assert _packed("SET", "k", memoryview(b"v")) == _redis_py("SET", "k", memoryview(b"v"))
    for bad in (None, True):
        with pytest.raises(DataError):
            PackedConnection().pack_command("SET", "k", bad)


@pytest.mark.parametrize(("url", "base"), [
    ("redis://127.0.0.1:6379/0", Connection),
    ("rediss://127.0.0.1:6380/0", SSLConnection),
    ("unix:///tmp/redis.sock", UnixDomainSocketConnection),
])
def test_every_url_scheme_gets_its_packed_twin(url: str, base: type) -> None:
    pool = packed_pool(url, max_connections=3)
    assert issubclass(pool.connection_class, base)
    assert pool.connection_class.pack_command is not base.pack_command
    assert pool.max_connections == 3


@pytest.mark.parametrize(("url", "base"), [
    ("redis://127.0.0.1:6379/0", Connection),
    ("rediss://127.0.0.1:6380/0", SSLConnection),
    ("unix:///tmp/redis.sock", UnixDomainSocketConnection),
])
def test_the_workers_fenced_client_packs_with_hiredis_too(url: str, base: type) -> None:
    # The worker's own client (Runtime.redis) is the fenced one: its connections are
    # checked by the fence and pack every command, the commit's thousands of arguments
    # included, with hiredis.
    client = fenced_client(url, ServerFence(), health_check_interval=30)
    cls = client.connection_pool.connection_class
    assert issubclass(cls, base) and issubclass(cls, PackedConnection.__mro__[1])
    assert cls.on_connect_check_health is not base.on_connect_check_health  # fenced
    packed = b"".join(cls.pack_command(cls.__new__(cls), "SET", "k", 1.5))
    assert packed == _redis_py("SET", "k", 1.5)
    assert client.auto_close_connection_pool


@pytest.mark.parametrize(("url", "base"), [
    ("redis://127.0.0.1:7000/0", Connection),
    ("rediss://127.0.0.1:7000/0", SSLConnection),
])
def test_a_cluster_client_makes_every_node_with_the_packed_twin(url: str, base: type) -> None:
    cluster = packed_cluster(url)  # no connection yet: the nodes it learns are made later
    cls = cluster.connection_kwargs["connection_class"]
    assert issubclass(cls, base) and cls.pack_command is not base.pack_command
    assert all(node.connection_class is cls
               for node in cluster.nodes_manager.startup_nodes.values())


def test_the_workers_fenced_cluster_client_packs_with_hiredis_too() -> None:
    cluster = fenced_client("redis://127.0.0.1:7000/0", ServerFence(cluster=True))
    cls = cluster.connection_kwargs["connection_class"]  # type: ignore[attr-defined]
    assert issubclass(cls, PackedConnection)
    assert cls.on_connect_check_health is not Connection.on_connect_check_health  # fenced
