"""Kafka and Redis transport settings: parsing, checks, client configurations, secrecy."""

from __future__ import annotations

import pickle

import pytest
from faust.auth import SASLCredentials, SSLCredentials
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from stream_app.connections import broker_credentials
from stream_app.settings import Secret, Settings, SettingsError, redis_address

SASL_SSL = {
    "KAFKA_BOOTSTRAP_SERVERS": "k1:9094,k2:9094",
    "KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
    "KAFKA_SASL_MECHANISM": "scram-sha-512",
    "KAFKA_SASL_USERNAME": "cvm",
    "KAFKA_SASL_PASSWORD": "pa55-word",
}


def test_plaintext_is_the_default_and_adds_nothing() -> None:
    s = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "k:9092"})
    assert s.kafka_config() == {"bootstrap.servers": "k:9092"}
    assert broker_credentials(s.kafka_security) is None
    assert s.redis_options() == {}


def test_sasl_ssl_gives_every_librdkafka_property() -> None:
    s = Settings.from_env({**SASL_SSL, "KAFKA_SSL_CAFILE": "/etc/cvm/ca.pem"})
    assert s.kafka_config() == {
        "bootstrap.servers": "k1:9094,k2:9094",
        "security.protocol": "SASL_SSL",
        "ssl.ca.location": "/etc/cvm/ca.pem",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "cvm",
        "sasl.password": "pa55-word",
    }


def test_mutual_tls_without_sasl() -> None:
    s = Settings.from_env({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": "ca.pem",
                           "KAFKA_SSL_CERTFILE": "c.pem", "KAFKA_SSL_KEYFILE": "c.key"})
    assert s.kafka_config() == {
        "bootstrap.servers": "127.0.0.1:9092", "security.protocol": "SSL",
        "ssl.ca.location": "ca.pem", "ssl.certificate.location": "c.pem",
        "ssl.key.location": "c.key",
    }


def test_the_password_never_shows() -> None:
    s = Settings.from_env(SASL_SSL)
    assert "pa55-word" not in repr(s) and "pa55-word" not in str(s.kafka_security)
    with_url = Settings.from_env({"REDIS_URL": "rediss://w:r3dis-pw@r:6380/0"})
    assert "r3dis-pw" not in repr(with_url) and "rediss://w:***@r:6380/0" in repr(with_url)
    assert "pa55-word" not in s.kafka_security.describe()
    assert repr(Secret("x")) == "Secret('**********')" and repr(Secret()) == "Secret('')"
    assert pickle.loads(pickle.dumps(s)) == s
    assert repr(Settings()).startswith("Settings(kafka_bootstrap_servers='127.0.0.1:9092', ")
    with pytest.raises(AttributeError):
        s.kafka_security.sasl_password._value = "other"  # type: ignore[misc]


def test_worker_environment_reproduces_the_security_settings() -> None:
    s = Settings.from_env({**SASL_SSL, "KAFKA_SSL_CAFILE": "ca.pem",
                           "REDIS_URL": "rediss://w:pw@r:6380/0", "REDIS_SSL_CA_CERTS": "r.pem"})
    again = Settings.from_env(s.namespace_env())
    assert again.kafka_security == s.kafka_security and again.redis_tls == s.redis_tls
    assert again.kafka_config() == s.kafka_config()
    assert again.redis_options() == {"ssl_ca_certs": "r.pem"}


@pytest.mark.parametrize(("env", "message"), [
    ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL='TLS'"),
    ({**SASL_SSL, "KAFKA_SASL_MECHANISM": "GSSAPI"}, "KAFKA_SASL_MECHANISM='GSSAPI'"),
    ({**SASL_SSL, "KAFKA_SASL_PASSWORD": ""}, "needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"),
    ({"KAFKA_SSL_CAFILE": "ca.pem"}, "does not use TLS"),
    ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CERTFILE": "c.pem"}, "go together"),
    ({"REDIS_SSL_CA_CERTS": "ca.pem"}, "REDIS_URL is not rediss://"),
])
def test_unusable_combinations_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(")):
        Settings.from_env(env)


def test_faust_hands_aiokafka_the_sasl_ssl_settings() -> None:
    security = Settings.from_env(SASL_SSL).kafka_security
    credentials = broker_credentials(security)
    assert isinstance(credentials, SASLCredentials)
    auth = credentials_to_aiokafka_auth(credentials)
    assert auth["security_protocol"] == "SASL_SSL"
    assert auth["sasl_mechanism"] == "SCRAM-SHA-512"
    assert auth["sasl_plain_username"] == "cvm" and auth["sasl_plain_password"] == "pa55-word"
    assert auth["ssl_context"] is not None and auth["ssl_context"].check_hostname
    assert "pa55-word" not in repr(credentials)


def test_faust_credentials_for_sasl_plaintext_and_ssl() -> None:
    plain = Settings.from_env({**SASL_SSL, "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                               "KAFKA_SASL_MECHANISM": "PLAIN"}).kafka_security
    auth = credentials_to_aiokafka_auth(broker_credentials(plain))
    assert auth["security_protocol"] == "SASL_PLAINTEXT" and auth["ssl_context"] is None
    assert auth["sasl_mechanism"] == "PLAIN"
    tls = Settings.from_env({"KAFKA_SECURITY_PROTOCOL": "SSL"}).kafka_security
    credentials = broker_credentials(tls)
    assert isinstance(credentials, SSLCredentials)
    assert credentials_to_aiokafka_auth(credentials)["security_protocol"] == "SSL"


def test_redis_address_hides_the_password() -> None:
    assert redis_address("rediss://cvm-worker:s3cret@r:6380/0") == "rediss://cvm-worker:***@r:6380/0"
    assert redis_address("redis://:s3cret@r/0") == "redis://:***@r/0"
    assert redis_address("redis://r:6379/0") == "redis://r:6379/0"


def test_readme_quotes_the_acls_of_the_code() -> None:
    from pathlib import Path

    from stream_app.store.acl import LOOKUP_RULES, WORKER_RULES

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("ACL SETUSER cvm-worker", 1)[1].split("```", 1)[0]
    worker, lookup = block.split("ACL SETUSER cvm-lookup")
    assert " ".join(worker.split("#")[0].split()[3:]) == WORKER_RULES
    assert " ".join(lookup.split()[3:]) == LOOKUP_RULES


def test_the_settings_repr_shows_no_api_token_nor_signing_key() -> None:
    from stream_app.settings import Settings

    key = "signing-key-0123456789abcdef"
    token = "tok0123456789abcdef0123"
    settings = Settings.from_env({
        "CVM_MODEL_SIGNING_KEY": key, "CVM_API_TOKENS": f"ops:{token}:admin",
    })
    shown = repr(settings)
    assert key not in shown and token not in shown
