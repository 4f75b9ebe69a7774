"""One frozen settings object, read once from the environment.

Every variable is listed in the README's configuration table; `Settings.from_env`
is the only place that reads the environment, through the grouped pydantic models of
`stream_app.settings_env` (a new variable: a field here and one line there).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from urllib.parse import urlsplit

from stream_app.domain.rules import ALERT_CODES
from stream_app.loops import LOOPS


class SettingsError(ValueError):
    """A configuration variable holds a value that cannot be used."""


def _triple(
    env: Mapping[str, str], name: str, default: tuple[float, float, float] | None
) -> tuple[float, float, float] | None:
    """Three ascending numbers >= 0, comma-separated (``80,95,99``)."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        values = tuple(float(p) for p in raw.split(","))
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not three comma-separated numbers") from None
    if len(values) != 3 or not 0 <= values[0] <= values[1] <= values[2]:
        raise SettingsError(f"{name}={raw!r} must be three ascending numbers >= 0")
    return values[0], values[1], values[2]


def _time_ms(env: Mapping[str, str], name: str, default: int) -> int:
    """An RFC 3339 time with an offset (``1970-01-01T00:00:00Z``) as epoch milliseconds."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        moment = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an RFC 3339 time") from None
    if moment.tzinfo is None:
        raise SettingsError(f"{name}={raw!r} has no UTC offset (add Z or +00:00)")
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


#: Exchange rates must lie within these bounds (units of base currency per unit).
MIN_FX_RATE = Decimal("1e-9")
MAX_FX_RATE = Decimal("1e9")
#: What a dead letter's record needs besides its JSON value: key (at most 1 KiB after
#: truncation), headers and the record batch framing.
DEAD_LETTER_OVERHEAD_BYTES = 16 * 1024


def _fx_rates(raw: str) -> dict[str, Decimal]:
    """Parse ``EUR=1.08,GBP=1.27`` (units of base currency per unit of the other)."""
    rates: dict[str, Decimal] = {}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        code, _, value = part.partition("=")
        code = code.strip().upper()
        try:
            rate = Decimal(value.strip())
        except ArithmeticError:
            raise SettingsError(f"CVM_FX_RATES: {part!r} is not CODE=RATE") from None
        if len(code) != 3 or not code.isalpha() or not rate.is_finite() or rate <= 0:
            raise SettingsError(f"CVM_FX_RATES: {part!r} is not CODE=RATE with RATE > 0")
        if not MIN_FX_RATE <= rate <= MAX_FX_RATE:
            raise SettingsError(
                f"CVM_FX_RATES: {part!r} has a rate outside {MIN_FX_RATE}..{MAX_FX_RATE}"
            )
        rates[code] = rate
    return rates


def _alert_weights(raw: str) -> dict[str, float]:
    """Parse ``p_alive_drop=0.7,complaints=2``: alert signal weights that replace the defaults
    (`stream_app.domain.rules.DEFAULT_WEIGHTS`); 0 takes a signal out of the rule score.

    >>> _alert_weights("p_alive_drop=0.7, complaints=2")
    {'p_alive_drop': 0.7, 'complaints': 2.0}
    """
    weights: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        code, _, value = part.partition("=")
        try:
            weights[code.strip()] = float(value)
        except ValueError:
            raise SettingsError(f"CVM_ALERT_WEIGHTS: {part!r} is not SIGNAL=WEIGHT") from None
    return weights


class Secret:
    """A string that never shows in a repr, a log line or a traceback's locals.

    >>> Secret("hunter2")
    Secret('**********')
    >>> Secret("hunter2").reveal()
    'hunter2'
    """

    __slots__ = ("_value",)

    def __init__(self, value: str = "") -> None:
        object.__setattr__(self, "_value", value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Secret is immutable")

    def reveal(self) -> str:
        """The plain value, for the one call that hands it to a client library."""
        return str(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self.reveal().encode(), other.reveal().encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __repr__(self) -> str:
        return "Secret('**********')" if self._value else "Secret('')"

    __str__ = __repr__

    def __reduce__(self) -> tuple[type[Secret], tuple[str]]:
        return (Secret, (self.reveal(),))


def redis_address(url: str) -> str:
    """REDIS_URL without its password, for messages and reprs.

    >>> redis_address("rediss://worker:s3cret@cache:6380/0")
    'rediss://worker:***@cache:6380/0'
    """
    scheme, sep, rest = url.partition("://")
    auth, at, host = rest.rpartition("@")
    if not at or ":" not in auth:
        return url
    user = auth.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"


KAFKA_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True, kw_only=True)
class KafkaSecurity:
    """How every Kafka client (worker, CLI, load tools, dev stack) talks to the brokers.

    The names follow the Kafka clients' own settings: ``security.protocol``, a CA file
    that verifies the brokers, an optional client certificate and key (mutual TLS), and
    the SASL mechanism with a user name and password.
    """

    protocol: str = "PLAINTEXT"
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    sasl_mechanism: str = "PLAIN"
    sasl_username: str = ""
    sasl_password: Secret = Secret()

    @property
    def uses_tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def describe(self) -> str:
        """One line for logs and errors, without the password.

        >>> KafkaSecurity(protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
        ...               sasl_username="cvm", sasl_password=Secret("x")).describe()
        'SASL_SSL (SCRAM-SHA-512, user cvm)'
        """
        if self.uses_sasl:
            return f"{self.protocol} ({self.sasl_mechanism}, user {self.sasl_username})"
        if self.ssl_certfile:
            return f"{self.protocol} (client certificate {self.ssl_certfile})"
        return self.protocol

    def client_config(self) -> dict[str, str]:
        """The librdkafka (confluent-kafka) properties; empty for PLAINTEXT.

        >>> KafkaSecurity(protocol="SSL", ssl_cafile="ca.pem").client_config()
        {'security.protocol': 'SSL', 'ssl.ca.location': 'ca.pem'}
        """
        if self.protocol == "PLAINTEXT":
            return {}
        config = {"security.protocol": self.protocol}
        if self.uses_tls:
            for key, value in (
                ("ssl.ca.location", self.ssl_cafile),
                ("ssl.certificate.location", self.ssl_certfile),
                ("ssl.key.location", self.ssl_keyfile),
            ):
                if value:
                    config[key] = value
        if self.uses_sasl:
            config["sasl.mechanism"] = self.sasl_mechanism
            config["sasl.username"] = self.sasl_username
            config["sasl.password"] = self.sasl_password.reveal()
        return config

    @property
    def env(self) -> dict[str, str]:
        """The KAFKA_* variables that reproduce this configuration."""
        return {
            "KAFKA_SECURITY_PROTOCOL": self.protocol,
            "KAFKA_SSL_CAFILE": self.ssl_cafile,
            "KAFKA_SSL_CERTFILE": self.ssl_certfile,
            "KAFKA_SSL_KEYFILE": self.ssl_keyfile,
            "KAFKA_SASL_MECHANISM": self.sasl_mechanism,
            "KAFKA_SASL_USERNAME": self.sasl_username,
            "KAFKA_SASL_PASSWORD": self.sasl_password.reveal(),
        }

    @classmethod
    def from_env(cls, e: Mapping[str, str]) -> KafkaSecurity:
        return cls(
            protocol=(e.get("KAFKA_SECURITY_PROTOCOL") or cls.protocol).strip().upper(),
            ssl_cafile=e.get("KAFKA_SSL_CAFILE", ""),
            ssl_certfile=e.get("KAFKA_SSL_CERTFILE", ""),
            ssl_keyfile=e.get("KAFKA_SSL_KEYFILE", ""),
            sasl_mechanism=(e.get("KAFKA_SASL_MECHANISM") or cls.sasl_mechanism).strip().upper(),
            sasl_username=e.get("KAFKA_SASL_USERNAME", ""),
            sasl_password=Secret(e.get("KAFKA_SASL_PASSWORD", "")),
        )

    def check(self) -> None:
        """Raise `SettingsError` naming the first unusable value."""
        if self.protocol not in KAFKA_PROTOCOLS:
            raise SettingsError(
                f"KAFKA_SECURITY_PROTOCOL={self.protocol!r} is not one of "
                f"{', '.join(KAFKA_PROTOCOLS)}"
            )
        if self.uses_sasl:
            if self.sasl_mechanism not in SASL_MECHANISMS:
                raise SettingsError(
                    f"KAFKA_SASL_MECHANISM={self.sasl_mechanism!r} is not one of "
                    f"{', '.join(SASL_MECHANISMS)}"
                )
            if not self.sasl_username or not self.sasl_password:
                raise SettingsError(
                    f"KAFKA_SECURITY_PROTOCOL={self.protocol} needs KAFKA_SASL_USERNAME "
                    "and KAFKA_SASL_PASSWORD"
                )
        tls_files = (self.ssl_cafile, self.ssl_certfile, self.ssl_keyfile)
        if not self.uses_tls and any(tls_files):
            raise SettingsError(
                f"KAFKA_SSL_* files are set but KAFKA_SECURITY_PROTOCOL={self.protocol} "
                "does not use TLS (SSL or SASL_SSL)"
            )
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise SettingsError("KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE go together")


@dataclass(frozen=True, kw_only=True)
class RedisTLS:
    """Files for a ``rediss://`` connection (redis-py's ``ssl_*`` arguments).

    The same arguments may instead be given in REDIS_URL's query string
    (``rediss://host:6380/0?ssl_ca_certs=/etc/cvm/ca.pem``), which redis-py reads itself.
    """

    ca_certs: str = ""
    certfile: str = ""
    keyfile: str = ""

    def client_options(self) -> dict[str, str]:
        """Keyword arguments for ``Redis.from_url``; only the options that are set.

        >>> RedisTLS(ca_certs="ca.pem").client_options()
        {'ssl_ca_certs': 'ca.pem'}
        """
        options = {
            "ssl_ca_certs": self.ca_certs,
            "ssl_certfile": self.certfile,
            "ssl_keyfile": self.keyfile,
        }
        return {k: v for k, v in options.items() if v}

    @property
    def env(self) -> dict[str, str]:
        """The REDIS_SSL_* variables that reproduce these options."""
        return {
            "REDIS_SSL_CA_CERTS": self.ca_certs,
            "REDIS_SSL_CERTFILE": self.certfile,
            "REDIS_SSL_KEYFILE": self.keyfile,
        }
#: Scopes an API token can carry: ``read`` reads, ``admin`` also changes (``POST /model``).
API_SCOPES = ("read", "admin")
#: The least length of ``CVM_MODEL_SIGNING_KEY`` and of an API token.
MIN_SECRET_LENGTH = 16


@dataclass(frozen=True)
class ApiToken:
    """A bearer token of the HTTP API; its secret never appears in a repr or a log."""

    name: str
    secret: str = field(repr=False)
    scope: str = "read"


def _api_tokens(raw: str) -> tuple[ApiToken, ...]:
    """Parse ``name:token:scope`` entries separated by commas or whitespace.

    >>> _api_tokens("ops:0123456789abcdef0123:admin, dash:fedcba9876543210fedc:read")[0]
    ApiToken(name='ops', scope='admin')
    """
    tokens: list[ApiToken] = []
    for n, entry in enumerate(raw.replace(",", " ").split(), start=1):
        parts = entry.split(":")
        # The message names the entry by position and name, never by its secret.
        where = f"CVM_API_TOKENS entry {n} ({parts[0]!r})"
        if len(parts) != 3 or not all(parts):
            raise SettingsError(f"{where} is not name:token:scope")
        name, secret, scope = parts
        if scope not in API_SCOPES:
            raise SettingsError(f"{where}: scope {scope!r} is not one of {', '.join(API_SCOPES)}")
        if len(secret) < MIN_SECRET_LENGTH:
            raise SettingsError(f"{where}: the token is shorter than {MIN_SECRET_LENGTH} chars")
        if any(t.name == name for t in tokens):
            raise SettingsError(f"{where}: the name is used twice")
        tokens.append(ApiToken(name, secret, scope))
    return tuple(tokens)


def is_loopback(host: str) -> bool:
    """True if binding `host` listens on this machine only.

    >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("0.0.0.0"), is_loopback("")
    (True, True, False, False)
    """
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, kw_only=True)
class Topics:
    """Kafka topic names; every one can be renamed through the environment."""

    purchases: str = "cvm.purchases"
    service_contacts: str = "cvm.service-contacts"
    campaign_touches: str = "cvm.campaign-touches"
    alerts: str = "cvm.alerts"
    winback: str = "cvm.winback"
    dead_letter: str = "cvm.dead-letter"
    training: str = "cvm.churn-training"

    @property
    def inputs(self) -> tuple[str, str, str]:
        return (self.purchases, self.service_contacts, self.campaign_touches)

    @property
    def outputs(self) -> tuple[str, str, str]:
        return (self.alerts, self.winback, self.dead_letter)

    @property
    def partition_counts(self) -> dict[str, int | None]:
        """Topics the stack creates; None means CVM_PARTITIONS, the training topic has one."""
        counts: dict[str, int | None] = dict.fromkeys((*self.inputs, *self.outputs))
        counts[self.training] = 1
        return counts

    @classmethod
    def namespaced(cls, prefix: str) -> Topics:
        """Every topic renamed under `prefix`: ``prefix.purchases``, ``prefix.dead-letter``, ...

        >>> Topics.namespaced("t1").training
        't1.churn-training'
        """
        return cls(**{
            f.name: f"{prefix}.{getattr(cls, f.name).removeprefix('cvm.')}" for f in fields(cls)
        })

    @property
    def env(self) -> dict[str, str]:
        """The CVM_TOPIC_* variables that reproduce these names."""
        return {f"CVM_TOPIC_{f.name.upper()}": getattr(self, f.name) for f in fields(self)}

    def kind_of(self, topic: str) -> str:
        """Return the event kind carried by an input topic."""
        kinds = {
            self.purchases: "purchase",
            self.service_contacts: "service_contact",
            self.campaign_touches: "campaign_touch",
        }
        try:
            return kinds[topic]
        except KeyError:
            raise SettingsError(f"{topic!r} is not an input topic") from None


@dataclass(frozen=True)
class Settings:
    """Everything the worker, the CLI and the dev stack are configured with."""

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_security: KafkaSecurity = field(default_factory=KafkaSecurity)
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_tls: RedisTLS = field(default_factory=RedisTLS)
    #: REDIS_URL names one node of a Redis Cluster (CVM_REDIS_CLUSTER): every client is a
    #: cluster client that learns the other nodes from it.
    redis_cluster: bool = False
    app_id: str = "cvm"
    topics: Topics = field(default_factory=Topics)
    partitions: int = 4
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    #: Serve the web views from their own thread and event loop (Faust's ``web_in_thread``),
    #: so a lookup does not wait for a batch or a timer that holds the worker's loop.
    web_in_thread: bool = True
    #: Once started, a worker freezes the objects of its start and collects young objects
    #: every 20,000 new ones (`stream_app.worker.tune_gc`); False keeps Python's defaults.
    gc_freeze: bool = True
    #: The event loop of the worker and the read server (`stream_app.loops`): "asyncio"
    #: (Python's own) or "uvloop".
    event_loop: str = "asyncio"
    #: Seconds a worker may take to stop after SIGTERM or SIGINT. A stop waits for Kafka to
    #: take the last commits, so with the broker (or Redis) unreachable it would wait for
    #: ever; past this the process exits (status 75) without them, and what it had not
    #: acknowledged is read again by the next worker, counted once.
    stop_timeout_s: float = 30.0
    #: Seconds a worker's consumer may stay out of its consumer group (evicted by the
    #: broker and not joined again) before ``/livez`` fails (`stream_app.probes`). Twice
    #: Faust's rebalance timeout (60 s), so a join that waits for the slowest member of a
    #: rebalance never counts.
    out_of_group_s: float = 120.0
    data_dir: str = ".devstack/faust"
    max_event_bytes: int = 65536
    # The producer's max.request.size; the dead-letter limit must fit under it.
    producer_max_request_bytes: int = 4 * 1024 * 1024
    # A dead letter whose JSON would be larger keeps only a prefix of the payload and its
    # SHA-256. 1,000,000 also fits a topic left at the broker's default max.message.bytes.
    dead_letter_max_bytes: int = 1_000_000
    # Event-time bounds: events outside them are dead-lettered as invalid_value and never
    # move a watermark. Earliest: 1970-01-01T00:00:00Z.
    earliest_event_ms: int = 0
    # The tolerated lead of event time over the wall clock (live mode: the only bound).
    max_clock_skew_s: float = 86_400.0
    # Event-time mode: events may also lead the highest input watermark by this much.
    max_event_lead_days: float = 30.0
    base_currency: str = "USD"
    fx_rates: Mapping[str, Decimal] = field(default_factory=dict)
    batch_size: int = 500
    # 5 ms: at low rates a batch closes soon after its first event (load.bench freshness).
    batch_within_ms: int = 5
    default_margin_rate: float = 0.30
    # Event ids remembered per customer to drop producer retries (12 bytes each in the record).
    event_id_window: int = 16
    annual_discount_rate: float = 0.10
    horizon_days: int = 365
    fit_interval_s: float = 300.0
    refresh_interval_s: float = 5.0
    # A lookup client keeps the watermarks it read for this long (0: reads them every lookup).
    lookup_watermark_s: float = 0.1
    wall_clock_watermark: bool = False
    session_timeout_s: float = 10.0
    group_instance_id: str = ""
    churn_horizon_days: int = 90
    # The churn label's lead window (`churn.label_on_purchase`): 0 asks "no order within the
    # horizon"; D > 0 asks "drops out within the next D days" (at most the horizon).
    churn_lead_days: int = 0
    snapshot_gap_days: float = 30.0
    churn_model: str = "logreg"
    model_publish_interval_s: float = 30.0
    rescore_interval_s: float = 2.0
    # Seconds of work one rescoring run may start chunks for; the rest waits for the next run,
    # so a fast-moving watermark (catching up, replays) never crowds out the ingest agent.
    rescore_budget_s: float = 0.25
    alert_min_value_tier: float = 80.0
    # The tier for the floor above: the higher of now and at the last order (False: now).
    alert_value_at_last_order: bool = True
    alert_churn_threshold: float = 0.5
    alert_cooldown_days: float = 14.0
    alert_min_signals: int = 1
    alert_min_score: float = 2.5
    # No defection alert after this many days without an order (the churn horizon: lapsed
    # customers are win-back's case); 0: no limit.
    alert_max_silence_days: float = 90.0
    alert_severity_percentiles: tuple[float, float, float] = (80.0, 95.0, 99.0)
    alert_severity_bands: tuple[float, float, float] | None = None
    # Signal weights of the rule score that replace the defaults (rules.DEFAULT_WEIGHTS).
    alert_weights: Mapping[str, float] = field(default_factory=dict)
    winback_p_alive_threshold: float = 0.25
    winback_control_share: float = 0.10
    winback_seed: int = 0
    # Value history and trends: period unit (month, week or day of event time, UTC) and
    # the points kept per customer (each at most 54 bytes in the record).
    history_period: str = "month"
    history_max_points: int = 24
    # Product profile and offers (stream_app/domain/products.py, affinity.py, offers.py).
    profile_max_categories: int = 24
    profile_max_skus: int = 8
    affinity_period_days: int = 30
    affinity_half_life_days: float = 180.0
    affinity_periods: int = 12
    affinity_min_support: float = 20.0
    offers_k: int = 5
    log_level: str = "info"
    # "text" or "json" (one JSON object per line); see stream_app/logs.py.
    log_format: str = "text"
    # A repeated warning or error (same logger and template) is printed once per window.
    log_repeat_window_s: float = 60.0
    log_summary_interval_s: float = 60.0
    # Secrets: kept out of repr (and so out of any log of the settings).
    api_tokens: tuple[ApiToken, ...] = field(default=(), repr=False)
    model_signing_key: str = field(default="", repr=False)

    def __repr__(self) -> str:
        # The generated repr, with REDIS_URL's password hidden (the Kafka one is a Secret)
        # and the fields marked repr=False (tokens, the signing key) left out.
        shown = ", ".join(
            f"{f.name}={redis_address(self.redis_url)!r}" if f.name == "redis_url"
            else f"{f.name}={getattr(self, f.name)!r}"
            for f in fields(self)
            if f.repr
        )
        return f"{type(self).__name__}({shown})"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``env`` (default: ``os.environ``).

        The variables are read and validated by the grouped pydantic models of
        `stream_app.settings_env`; every unusable one is reported, one line each, in
        the `SettingsError`.
        """
        from stream_app.settings_env import read_env

        settings = cls(**read_env(os.environ if env is None else env))
        settings.check()
        return settings

    def namespace_env(self) -> dict[str, str]:
        """The variables that put a worker subprocess in these settings' namespace.

        Connections (with their TLS and SASL settings), identity (app id, web address,
        data folder), partitions and topic names; tunables such as timers are left to
        the caller's environment.
        """
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap_servers,
            **self.kafka_security.env,
            "REDIS_URL": self.redis_url,
            **self.redis_tls.env,
            "CVM_REDIS_CLUSTER": "true" if self.redis_cluster else "false",
            "CVM_APP_ID": self.app_id,
            "CVM_PARTITIONS": str(self.partitions),
            "CVM_WEB_HOST": self.web_host,
            "CVM_WEB_PORT": str(self.web_port),
            "CVM_DATA_DIR": self.data_dir,
            **self.topics.env,
        }

    def kafka_config(self) -> dict[str, str]:
        """The confluent-kafka (librdkafka) configuration every client starts from.

        Bootstrap servers plus the security settings; callers add their own
        properties (``group.id``, ``linger.ms``, ...) to a copy.

        >>> Settings(kafka_bootstrap_servers="k:9093").kafka_config()
        {'bootstrap.servers': 'k:9093'}
        """
        return {
            "bootstrap.servers": self.kafka_bootstrap_servers,
            **self.kafka_security.client_config(),
        }

    def redis_options(self) -> dict[str, str]:
        """Keyword arguments for ``Redis.from_url(settings.redis_url, ...)``: the TLS files."""
        return self.redis_tls.client_options()

    @property
    def signing_key(self) -> bytes | None:
        """``CVM_MODEL_SIGNING_KEY`` as bytes, None if unset."""
        return self.model_signing_key.encode() if self.model_signing_key else None

    def check_web_auth(self) -> None:
        """Raise `SettingsError` if the web server would listen beyond loopback without tokens."""
        if not self.api_tokens and not is_loopback(self.web_host):
            raise SettingsError(
                f"CVM_WEB_HOST={self.web_host} listens beyond loopback and CVM_API_TOKENS is "
                "empty: set tokens (name:token:scope) or bind to 127.0.0.1"
            )

    def check(self) -> None:
        """Raise `SettingsError` naming the first unusable value."""
        self.kafka_security.check()
        if any(self.redis_tls.client_options().values()) and not self.redis_url.startswith(
            "rediss://"
        ):
            raise SettingsError("REDIS_SSL_* files are set but REDIS_URL is not rediss://")
        if self.redis_cluster and urlsplit(self.redis_url).path.strip("/") not in ("", "0"):
            raise SettingsError("CVM_REDIS_CLUSTER is true but REDIS_URL names a database "
                                "other than 0 (a Redis Cluster has only database 0)")
        if self.model_signing_key and len(self.model_signing_key) < MIN_SECRET_LENGTH:
            raise SettingsError(
                f"CVM_MODEL_SIGNING_KEY is shorter than {MIN_SECRET_LENGTH} characters"
            )
        if self.churn_model != "logreg":
            raise SettingsError(
                f"CVM_CHURN_MODEL={self.churn_model} has no data form, and workers share only "
                "models stored as data (never a pickle): use logreg; the tree models are "
                "compared offline by python -m load.churn_study"
            )
        if self.partitions < 1:
            raise SettingsError(f"CVM_PARTITIONS={self.partitions} must be at least 1")
        if self.history_period not in ("month", "week", "day"):
            raise SettingsError(
                f"CVM_HISTORY_PERIOD={self.history_period!r} is not month, week or day")
        # 120 points of at most 55 bytes keep the record a listpack (LISTPACK_VALUE_BYTES).
        if not 2 <= self.history_max_points <= 120:
            raise SettingsError(
                f"CVM_HISTORY_MAX_POINTS={self.history_max_points} is not within 2..120")
        if not 0 <= self.default_margin_rate <= 1:
            raise SettingsError(
                f"CVM_DEFAULT_MARGIN_RATE={self.default_margin_rate} must be within 0..1"
            )
        for name, low, high in (("profile_max_categories", 1, 1000),
                                ("profile_max_skus", 0, 1000),
                                ("affinity_period_days", 1, 3650),
                                ("affinity_periods", 1, 1000),
                                ("offers_k", 1, 100)):
            if not low <= getattr(self, name) <= high:
                raise SettingsError(
                    f"CVM_{name.upper()}={getattr(self, name)} must be within {low}..{high}"
                )
        if not self.affinity_half_life_days > 0 or not self.affinity_min_support >= 0:
            raise SettingsError(
                f"CVM_AFFINITY_HALF_LIFE_DAYS={self.affinity_half_life_days} must be positive "
                f"and CVM_AFFINITY_MIN_SUPPORT={self.affinity_min_support} not negative"
            )
        if not 0 <= self.event_id_window <= 1024:
            raise SettingsError(
                f"CVM_EVENT_ID_WINDOW={self.event_id_window} must be within 0..1024"
            )
        if not 0 <= self.churn_lead_days <= self.churn_horizon_days:
            raise SettingsError(
                f"CVM_CHURN_LEAD_DAYS={self.churn_lead_days} must be within 0.."
                f"CVM_CHURN_HORIZON_DAYS ({self.churn_horizon_days})")
        if self.alert_min_signals < 1:
            raise SettingsError(f"CVM_ALERT_MIN_SIGNALS={self.alert_min_signals} must be >= 1")
        if not 0 <= self.alert_min_score < float("inf"):
            raise SettingsError(f"CVM_ALERT_MIN_SCORE={self.alert_min_score} must be >= 0")
        if not 0 <= self.alert_max_silence_days < float("inf"):
            raise SettingsError(
                f"CVM_ALERT_MAX_SILENCE_DAYS={self.alert_max_silence_days} must be >= 0")
        for code, weight in self.alert_weights.items():
            if code not in ALERT_CODES:
                raise SettingsError(
                    f"CVM_ALERT_WEIGHTS: {code!r} is not a signal of {', '.join(ALERT_CODES)}")
            if not 0 <= weight <= 100:
                raise SettingsError(
                    f"CVM_ALERT_WEIGHTS: {code}={weight} must have a weight within 0..100")
        if not all(0 < p < 100 for p in self.alert_severity_percentiles):
            raise SettingsError(
                f"CVM_ALERT_SEVERITY_PERCENTILES={self.alert_severity_percentiles} "
                "must lie strictly between 0 and 100"
            )
        if self.event_loop not in LOOPS:
            raise SettingsError(
                f"CVM_EVENT_LOOP={self.event_loop!r} must be one of {', '.join(LOOPS)}")
        if self.log_format not in ("text", "json"):
            raise SettingsError(f"CVM_LOG_FORMAT={self.log_format!r} must be text or json")
        if self.log_summary_interval_s <= 0:
            raise SettingsError(
                f"CVM_LOG_SUMMARY_INTERVAL_S={self.log_summary_interval_s} must be positive"
            )
        if not 0 <= self.lookup_watermark_s < float("inf"):
            raise SettingsError(
                f"CVM_LOOKUP_WATERMARK_S={self.lookup_watermark_s} must be >= 0 and finite")
        if not 0 < self.stop_timeout_s < float("inf"):
            raise SettingsError(
                f"CVM_STOP_TIMEOUT_S={self.stop_timeout_s} must be positive and finite")
        if not 0 < self.out_of_group_s < float("inf"):
            raise SettingsError(
                f"CVM_OUT_OF_GROUP_S={self.out_of_group_s} must be positive and finite")
        if not 0 < self.rescore_budget_s < float("inf"):
            raise SettingsError(
                f"CVM_RESCORE_BUDGET_S={self.rescore_budget_s} must be positive and finite")
        if self.batch_size < 1:
            raise SettingsError(f"CVM_BATCH_SIZE={self.batch_size} must be at least 1")
        if self.max_event_bytes < 256:
            raise SettingsError(f"CVM_MAX_EVENT_BYTES={self.max_event_bytes} is below 256")
        if self.dead_letter_max_bytes < 4096:
            raise SettingsError(
                f"CVM_DEAD_LETTER_MAX_BYTES={self.dead_letter_max_bytes} is below 4096"
            )
        room = self.producer_max_request_bytes - DEAD_LETTER_OVERHEAD_BYTES
        if self.dead_letter_max_bytes > room:
            raise SettingsError(
                f"CVM_DEAD_LETTER_MAX_BYTES={self.dead_letter_max_bytes} must be at most "
                f"CVM_PRODUCER_MAX_REQUEST_BYTES - {DEAD_LETTER_OVERHEAD_BYTES} = {room}"
            )
        if not 0 <= self.max_clock_skew_s < float("inf"):
            raise SettingsError(f"CVM_MAX_CLOCK_SKEW_S={self.max_clock_skew_s} must be >= 0")
        if not 0 <= self.max_event_lead_days < float("inf"):
            raise SettingsError(
                f"CVM_MAX_EVENT_LEAD_DAYS={self.max_event_lead_days} must be >= 0"
            )
        if len(self.base_currency) != 3 or not self.base_currency.isalpha():
            raise SettingsError(f"CVM_BASE_CURRENCY={self.base_currency!r} is not ISO 4217")

