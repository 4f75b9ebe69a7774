"""Kafka and Redis clients built from settings, with their TLS and SASL options.

Every client of the project is made here or from `Settings.kafka_config` (for
confluent-kafka), so a secured deployment needs its settings in one place only.
A login or certificate the servers refuse is reported as one `ConnectionRefused`
line that names the address and the user, never the password.
"""

from __future__ import annotations

import logging
import ssl
import time
from typing import TYPE_CHECKING, Any

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster

from stream_app.resp import packed_client, packed_cluster
from stream_app.settings import KafkaSecurity, Settings, redis_address

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT

__all__ = [
    "ConnectionRefused",
    "async_redis",
    "broker_credentials",
    "check_kafka",
    "check_redis",
    "first_readable_offset",
    "is_cluster",
    "quiet_logger",
    "redis_address",
    "redis_refusal",
    "sync_redis",
    "tls_context",
]


class ConnectionRefused(RuntimeError):
    """Kafka or Redis cannot be reached or refuses the configured credentials."""


def tls_context(security: KafkaSecurity) -> ssl.SSLContext:
    """The TLS context of the Faust worker (aiokafka): CA file, optional client pair."""
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=security.ssl_cafile or None
    )
    if security.ssl_certfile:
        context.load_cert_chain(security.ssl_certfile, security.ssl_keyfile or None)
    return context


def broker_credentials(security: KafkaSecurity) -> CredentialsT | None:
    """Faust's ``broker_credentials`` for these settings; None for PLAINTEXT.

    Faust hands them to aiokafka as ``security_protocol``, ``ssl_context``,
    ``sasl_mechanism`` and ``sasl_plain_username``/``sasl_plain_password``
    (the latter two serve SCRAM as well as PLAIN).
    """
    import faust

    if security.protocol == "PLAINTEXT":
        return None
    context = tls_context(security) if security.uses_tls else None
    if security.uses_sasl:
        return faust.SASLCredentials(
            username=security.sasl_username,
            password=security.sasl_password.reveal(),
            ssl_context=context,
            mechanism=security.sasl_mechanism,
        )
    return faust.SSLCredentials(context)


def sync_redis(settings: Settings, **kwargs: Any) -> redis.Redis:
    """A blocking redis-py client for REDIS_URL and the REDIS_SSL_* files.

    With CVM_REDIS_CLUSTER it is a `redis.cluster.RedisCluster` that learns every node
    from the one REDIS_URL names (it has the same commands; each is sent to the node
    that owns its keys' slot).
    """
    options = {**settings.redis_options(), **kwargs}
    if settings.redis_cluster:
        return redis.cluster.RedisCluster.from_url(settings.redis_url, **options)  # type: ignore[return-value]
    return redis.Redis.from_url(settings.redis_url, **options)


def async_redis(settings: Settings, **kwargs: Any) -> redis.asyncio.Redis:
    """An asyncio redis-py client for REDIS_URL and the REDIS_SSL_* files.

    With CVM_REDIS_CLUSTER it is a `redis.asyncio.cluster.RedisCluster`.
    """
    options = {**settings.redis_options(), **kwargs}
    if settings.redis_cluster:
        return packed_cluster(settings.redis_url, **options)  # type: ignore[return-value]
    return packed_client(settings.redis_url, **options)  # commands packed by hiredis


def is_cluster(client: Any) -> bool:
    """Whether `client` (blocking or asyncio) talks to a Redis Cluster."""
    return isinstance(client, (redis.cluster.RedisCluster, redis.asyncio.cluster.RedisCluster))


def redis_refusal(settings: Settings, exc: BaseException) -> ConnectionRefused | None:
    """The one-line error for a refused login, command or certificate; None for other errors.

    Other errors (a server that is down, a timeout) are left to the caller's retries.
    """
    if isinstance(exc, redis.AuthenticationError):
        why = "refused the login (wrong user name or password in REDIS_URL)"
    elif isinstance(exc, redis.ResponseError) and str(exc).startswith(("NOPERM", "WRONGPASS")):
        why = f"refused a command to this ACL user: {exc}"
    elif isinstance(exc, redis.ConnectionError) and any(
        word in str(exc) for word in ("SSL", "certificate", "TLS")
    ):
        why = f"refused the TLS connection: {exc}"
    else:
        return None
    return ConnectionRefused(f"Redis at {redis_address(settings.redis_url)} {why}")


def check_redis(settings: Settings, timeout_s: float = 5.0) -> None:
    """Log in to Redis once and PING; raise `ConnectionRefused` if the login is refused.

    A server that is down is not an error here: the worker waits for it.
    """
    client = sync_redis(settings, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        refused = redis_refusal(settings, exc)
        if refused is not None:
            raise refused from None
    finally:
        client.close()


def quiet_logger(name: str = "cvm.librdkafka") -> logging.Logger:
    """A logger that swallows librdkafka's own log lines (its errors reach us as exceptions)."""
    log = logging.getLogger(name)
    if not log.handlers:
        log.addHandler(logging.NullHandler())
    log.propagate = False
    return log


def check_kafka(settings: Settings, timeout_s: float = 15.0) -> None:
    """Connect to Kafka once; raise `ConnectionRefused` if it refuses the login or the TLS.

    librdkafka (and aiokafka) retry a refused login forever, logging every attempt;
    this turns the first refusal into one line. A broker that does not answer is not
    an error here: the worker waits for it.
    """
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient

    refusals = (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED,
                KafkaError._SSL)
    errors: list[KafkaError] = []
    admin = AdminClient({
        **settings.kafka_config(),
        "logger": quiet_logger(),
        "error_cb": errors.append,
    })
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=1.0)
            return
        except KafkaException as exc:
            errors.append(exc.args[0])
        admin.poll(0.1)  # serves error_cb, where a refused login is reported
        refused = [e for e in errors if e.code() in refusals]
        if refused:
            where = (f"Kafka at {settings.kafka_bootstrap_servers} via "
                     f"{settings.kafka_security.describe()}")
            raise ConnectionRefused(f"{where} refused the connection: {refused[0].str()}")


def first_readable_offset(
    settings: Settings, topic: str, partition: int, start: int, timeout_s: float = 10.0
) -> int | None:
    """The offset of the first record of a partition readable at or after `start`.

    Answers whether a gap in offsets holds records (it does if the answer is below
    the gap's end) or only transaction markers and deleted segments. A group id is
    given only because librdkafka asks for one; nothing is committed. None: no
    record arrived within `timeout_s` (the broker is away, or the partition ends).
    Blocking: call it from a thread.
    """
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({
        **settings.kafka_config(),
        "group.id": f"{settings.app_id}-position-check",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "logger": quiet_logger(),
    })
    try:
        consumer.assign([TopicPartition(topic, partition, start)])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                return int(msg.offset())
        return None
    finally:
        consumer.close()
