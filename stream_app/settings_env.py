"""The environment variables, grouped and validated by pydantic; `read_env` feeds `Settings`.

One model per group (Kafka, Redis, web, input, value model, alerts, win-back, logging);
each field's alias is its variable. An empty variable counts as unset. Every unusable
variable is reported on a line of its own, naming the variable and its value:

>>> read_env({"CVM_HORIZON_DAYS": "x", "CVM_BATCH_SIZE": "1.5"})
Traceback (most recent call last):
...
stream_app.settings.SettingsError: CVM_BATCH_SIZE='1.5' is not an integer
CVM_HORIZON_DAYS='x' is not an integer

A new setting is one line in its group (``name: type = Field(default, alias="CVM_...")``)
plus the field of the same name on `Settings`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from stream_app.settings import (
    ApiToken,
    KafkaSecurity,
    RedisTLS,
    Secret,
    Settings,
    SettingsError,
    Topics,
    _alert_weights,
    _api_tokens,
    _fx_rates,
    _time_ms,
    _triple,
    redis_address,
)

__all__ = ["GROUPS", "describe", "read_env"]

#: The defaults of every group come from `Settings`, so the two cannot drift apart.
_DEFAULTS = Settings()


def _with(parse: Callable[[Mapping[str, str], str, Any], Any], name: str) -> BeforeValidator:
    """A validator that hands a raw string to one of the parsers of `stream_app.settings`."""
    def check(raw: Any) -> Any:
        return parse({name: raw}, name, None) if isinstance(raw, str) else raw
    return BeforeValidator(check)


def _upper(raw: Any) -> Any:
    return raw.strip().upper() if isinstance(raw, str) else raw


def _lower(raw: Any) -> Any:
    return raw.strip().lower() if isinstance(raw, str) else raw


class _Group(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=False)


class KafkaEnv(_Group):
    """Brokers, security, identity and topics."""

    kafka_bootstrap_servers: str = Field(
        _DEFAULTS.kafka_bootstrap_servers, alias="KAFKA_BOOTSTRAP_SERVERS")
    protocol: Annotated[str, BeforeValidator(_upper)] = Field(
        "PLAINTEXT", alias="KAFKA_SECURITY_PROTOCOL")
    ssl_cafile: str = Field("", alias="KAFKA_SSL_CAFILE")
    ssl_certfile: str = Field("", alias="KAFKA_SSL_CERTFILE")
    ssl_keyfile: str = Field("", alias="KAFKA_SSL_KEYFILE")
    sasl_mechanism: Annotated[str, BeforeValidator(_upper)] = Field(
        "PLAIN", alias="KAFKA_SASL_MECHANISM")
    sasl_username: str = Field("", alias="KAFKA_SASL_USERNAME")
    sasl_password: str = Field("", alias="KAFKA_SASL_PASSWORD", repr=False)
    app_id: str = Field(_DEFAULTS.app_id, alias="CVM_APP_ID")
    partitions: int = Field(_DEFAULTS.partitions, alias="CVM_PARTITIONS")
    session_timeout_s: float = Field(_DEFAULTS.session_timeout_s, alias="CVM_SESSION_TIMEOUT_S")
    group_instance_id: str = Field(_DEFAULTS.group_instance_id, alias="CVM_GROUP_INSTANCE_ID")
    producer_max_request_bytes: int = Field(_DEFAULTS.producer_max_request_bytes,
                                            alias="CVM_PRODUCER_MAX_REQUEST_BYTES")
    dead_letter_max_bytes: int = Field(
        _DEFAULTS.dead_letter_max_bytes, alias="CVM_DEAD_LETTER_MAX_BYTES")
    topic_purchases: str = Field(Topics.purchases, alias="CVM_TOPIC_PURCHASES")
    topic_service_contacts: str = Field(Topics.service_contacts,
                                        alias="CVM_TOPIC_SERVICE_CONTACTS")
    topic_campaign_touches: str = Field(Topics.campaign_touches,
                                        alias="CVM_TOPIC_CAMPAIGN_TOUCHES")
    topic_alerts: str = Field(Topics.alerts, alias="CVM_TOPIC_ALERTS")
    topic_winback: str = Field(Topics.winback, alias="CVM_TOPIC_WINBACK")
    topic_dead_letter: str = Field(Topics.dead_letter, alias="CVM_TOPIC_DEAD_LETTER")
    topic_training: str = Field(Topics.training, alias="CVM_TOPIC_TRAINING")


class RedisEnv(_Group):
    """Where the state lives, and the TLS files of a ``rediss://`` connection."""

    redis_url: str = Field(_DEFAULTS.redis_url, alias="REDIS_URL", repr=False)
    ca_certs: str = Field("", alias="REDIS_SSL_CA_CERTS")
    certfile: str = Field("", alias="REDIS_SSL_CERTFILE")
    keyfile: str = Field("", alias="REDIS_SSL_KEYFILE")
    redis_cluster: bool = Field(_DEFAULTS.redis_cluster, alias="CVM_REDIS_CLUSTER")


class WebEnv(_Group):
    """The worker's HTTP server and its bearer tokens."""

    web_host: str = Field(_DEFAULTS.web_host, alias="CVM_WEB_HOST")
    web_port: int = Field(_DEFAULTS.web_port, alias="CVM_WEB_PORT")
    web_in_thread: bool = Field(_DEFAULTS.web_in_thread, alias="CVM_WEB_IN_THREAD")
    api_tokens: Annotated[tuple[ApiToken, ...], _with(
        lambda e, n, _d: _api_tokens(e[n]), "CVM_API_TOKENS")] = Field(
        (), alias="CVM_API_TOKENS", repr=False)


class InputEnv(_Group):
    """How events are read, bounded, converted and batched."""

    data_dir: str = Field(_DEFAULTS.data_dir, alias="CVM_DATA_DIR")
    max_event_bytes: int = Field(_DEFAULTS.max_event_bytes, alias="CVM_MAX_EVENT_BYTES")
    earliest_event_ms: Annotated[int, _with(_time_ms, "CVM_EARLIEST_EVENT_TIME")] = Field(
        _DEFAULTS.earliest_event_ms, alias="CVM_EARLIEST_EVENT_TIME")
    max_clock_skew_s: float = Field(_DEFAULTS.max_clock_skew_s, alias="CVM_MAX_CLOCK_SKEW_S")
    max_event_lead_days: float = Field(
        _DEFAULTS.max_event_lead_days, alias="CVM_MAX_EVENT_LEAD_DAYS")
    base_currency: Annotated[str, BeforeValidator(_upper)] = Field(
        _DEFAULTS.base_currency, alias="CVM_BASE_CURRENCY")
    fx_rates: Annotated[dict[str, Decimal], _with(
        lambda e, n, _d: _fx_rates(e[n]), "CVM_FX_RATES")] = Field({}, alias="CVM_FX_RATES")
    batch_size: int = Field(_DEFAULTS.batch_size, alias="CVM_BATCH_SIZE")
    batch_within_ms: int = Field(_DEFAULTS.batch_within_ms, alias="CVM_BATCH_WITHIN_MS")
    stop_timeout_s: float = Field(_DEFAULTS.stop_timeout_s, alias="CVM_STOP_TIMEOUT_S")
    out_of_group_s: float = Field(_DEFAULTS.out_of_group_s, alias="CVM_OUT_OF_GROUP_S")
    gc_freeze: bool = Field(_DEFAULTS.gc_freeze, alias="CVM_GC_FREEZE")
    event_loop: Annotated[str, BeforeValidator(_lower)] = Field(
        _DEFAULTS.event_loop, alias="CVM_EVENT_LOOP")
    event_id_window: int = Field(_DEFAULTS.event_id_window, alias="CVM_EVENT_ID_WINDOW")
    wall_clock_watermark: bool = Field(
        _DEFAULTS.wall_clock_watermark, alias="CVM_WALL_CLOCK_WATERMARK")
    refresh_interval_s: float = Field(_DEFAULTS.refresh_interval_s, alias="CVM_REFRESH_INTERVAL_S")
    lookup_watermark_s: float = Field(_DEFAULTS.lookup_watermark_s, alias="CVM_LOOKUP_WATERMARK_S")


class ValueModelEnv(_Group):
    """CLV, churn and the models' timers."""

    default_margin_rate: float = Field(
        _DEFAULTS.default_margin_rate, alias="CVM_DEFAULT_MARGIN_RATE")
    annual_discount_rate: float = Field(
        _DEFAULTS.annual_discount_rate, alias="CVM_ANNUAL_DISCOUNT_RATE")
    horizon_days: int = Field(_DEFAULTS.horizon_days, alias="CVM_HORIZON_DAYS")
    fit_interval_s: float = Field(_DEFAULTS.fit_interval_s, alias="CVM_FIT_INTERVAL_S")
    churn_horizon_days: int = Field(_DEFAULTS.churn_horizon_days, alias="CVM_CHURN_HORIZON_DAYS")
    churn_lead_days: int = Field(_DEFAULTS.churn_lead_days, alias="CVM_CHURN_LEAD_DAYS")
    snapshot_gap_days: float = Field(_DEFAULTS.snapshot_gap_days, alias="CVM_SNAPSHOT_GAP_DAYS")
    churn_model: str = Field(_DEFAULTS.churn_model, alias="CVM_CHURN_MODEL")
    model_publish_interval_s: float = Field(
        _DEFAULTS.model_publish_interval_s, alias="CVM_MODEL_PUBLISH_INTERVAL_S")
    rescore_interval_s: float = Field(_DEFAULTS.rescore_interval_s, alias="CVM_RESCORE_INTERVAL_S")
    rescore_budget_s: float = Field(_DEFAULTS.rescore_budget_s, alias="CVM_RESCORE_BUDGET_S")
    model_signing_key: str = Field(
        _DEFAULTS.model_signing_key, alias="CVM_MODEL_SIGNING_KEY", repr=False)


class AlertsEnv(_Group):
    """Which customers raise a defection alert, and how severe it is."""

    alert_min_value_tier: float = Field(
        _DEFAULTS.alert_min_value_tier, alias="CVM_ALERT_MIN_VALUE_TIER")
    alert_value_at_last_order: bool = Field(
        _DEFAULTS.alert_value_at_last_order, alias="CVM_ALERT_VALUE_AT_LAST_ORDER")
    alert_churn_threshold: float = Field(
        _DEFAULTS.alert_churn_threshold, alias="CVM_ALERT_CHURN_THRESHOLD")
    alert_cooldown_days: float = Field(
        _DEFAULTS.alert_cooldown_days, alias="CVM_ALERT_COOLDOWN_DAYS")
    alert_min_signals: int = Field(_DEFAULTS.alert_min_signals, alias="CVM_ALERT_MIN_SIGNALS")
    alert_min_score: float = Field(_DEFAULTS.alert_min_score, alias="CVM_ALERT_MIN_SCORE")
    alert_max_silence_days: float = Field(
        _DEFAULTS.alert_max_silence_days, alias="CVM_ALERT_MAX_SILENCE_DAYS")
    alert_severity_percentiles: Annotated[
        tuple[float, float, float], _with(_triple, "CVM_ALERT_SEVERITY_PERCENTILES")
    ] = Field((80.0, 95.0, 99.0), alias="CVM_ALERT_SEVERITY_PERCENTILES")
    alert_severity_bands: Annotated[
        tuple[float, float, float] | None, _with(_triple, "CVM_ALERT_SEVERITY_BANDS")
    ] = Field(None, alias="CVM_ALERT_SEVERITY_BANDS")
    alert_weights: Annotated[dict[str, float], _with(
        lambda e, n, _d: _alert_weights(e[n]), "CVM_ALERT_WEIGHTS")] = Field(
        {}, alias="CVM_ALERT_WEIGHTS")


class WinbackEnv(_Group):
    """Who gets a win-back trigger, and the control group held out."""

    winback_p_alive_threshold: float = Field(
        _DEFAULTS.winback_p_alive_threshold, alias="CVM_WINBACK_P_ALIVE_THRESHOLD")
    winback_control_share: float = Field(
        _DEFAULTS.winback_control_share, alias="CVM_WINBACK_CONTROL_SHARE")
    winback_seed: int = Field(_DEFAULTS.winback_seed, alias="CVM_WINBACK_SEED")


class HistoryEnv(_Group):
    """The value history's period and length."""

    history_period: Annotated[str, BeforeValidator(_lower)] = Field(
        _DEFAULTS.history_period, alias="CVM_HISTORY_PERIOD")
    history_max_points: int = Field(_DEFAULTS.history_max_points, alias="CVM_HISTORY_MAX_POINTS")


class ProductsEnv(_Group):
    """The product profile, affinity and next best offers."""

    profile_max_categories: int = Field(
        _DEFAULTS.profile_max_categories, alias="CVM_PROFILE_MAX_CATEGORIES")
    profile_max_skus: int = Field(_DEFAULTS.profile_max_skus, alias="CVM_PROFILE_MAX_SKUS")
    affinity_period_days: int = Field(
        _DEFAULTS.affinity_period_days, alias="CVM_AFFINITY_PERIOD_DAYS")
    affinity_half_life_days: float = Field(
        _DEFAULTS.affinity_half_life_days, alias="CVM_AFFINITY_HALF_LIFE_DAYS")
    affinity_periods: int = Field(_DEFAULTS.affinity_periods, alias="CVM_AFFINITY_PERIODS")
    affinity_min_support: float = Field(
        _DEFAULTS.affinity_min_support, alias="CVM_AFFINITY_MIN_SUPPORT")
    offers_k: int = Field(_DEFAULTS.offers_k, alias="CVM_OFFERS_K")


class LoggingEnv(_Group):
    """What the worker logs, and how."""

    log_level: str = Field(_DEFAULTS.log_level, alias="CVM_LOG_LEVEL")
    log_format: Annotated[str, BeforeValidator(_lower)] = Field(
        _DEFAULTS.log_format, alias="CVM_LOG_FORMAT")
    log_repeat_window_s: float = Field(
        _DEFAULTS.log_repeat_window_s, alias="CVM_LOG_REPEAT_WINDOW_S")
    log_summary_interval_s: float = Field(
        _DEFAULTS.log_summary_interval_s, alias="CVM_LOG_SUMMARY_INTERVAL_S")


#: The groups in the order ``cvm config`` shows them.
GROUPS: dict[str, type[_Group]] = {
    "Kafka": KafkaEnv, "Redis": RedisEnv, "Web": WebEnv, "Input": InputEnv,
    "Value model": ValueModelEnv, "Alerts": AlertsEnv, "Win-back": WinbackEnv,
    "Value history": HistoryEnv, "Products and offers": ProductsEnv, "Logging": LoggingEnv,
}

_KINDS = {"int_parsing": "an integer", "int_from_float": "an integer",
          "float_parsing": "a number", "bool_parsing": "a boolean (1/0, true/false, yes/no)"}


def _line(error: Mapping[str, Any], env: Mapping[str, str]) -> str:
    name = str(error["loc"][0]) if error["loc"] else "?"
    raw = env.get(name, "")
    ctx = error.get("ctx") or {}
    if isinstance(ctx.get("error"), SettingsError):
        return str(ctx["error"])
    if error["type"] in _KINDS:
        return f"{name}={raw!r} is not {_KINDS[error['type']]}"
    return f"{name}={raw!r}: {error['msg']}"


def read_env(env: Mapping[str, str]) -> dict[str, Any]:
    """The keyword arguments of `Settings` from `env`; `SettingsError` lists every bad one."""
    given = {k: v for k, v in env.items() if v.strip() != ""}
    groups: dict[str, Any] = {}
    errors: list[str] = []
    for name, model in GROUPS.items():
        try:
            groups[name] = model.model_validate(given)
        except ValidationError as exc:
            errors += [_line(e, env) for e in exc.errors()]
    if errors:
        raise SettingsError("\n".join(sorted(errors)))
    kafka, redis, input_ = groups["Kafka"], groups["Redis"], groups["Input"]
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": kafka.kafka_bootstrap_servers,
        "kafka_security": KafkaSecurity(
            protocol=kafka.protocol, ssl_cafile=kafka.ssl_cafile,
            ssl_certfile=kafka.ssl_certfile, ssl_keyfile=kafka.ssl_keyfile,
            sasl_mechanism=kafka.sasl_mechanism, sasl_username=kafka.sasl_username,
            sasl_password=Secret(kafka.sasl_password),
        ),
        "app_id": kafka.app_id,
        "topics": Topics(**{f: getattr(kafka, f"topic_{f}") for f in (
            "purchases", "service_contacts", "campaign_touches", "alerts", "winback",
            "dead_letter", "training")}),
        "redis_url": redis.redis_url,
        "redis_tls": RedisTLS(ca_certs=redis.ca_certs, certfile=redis.certfile,
                              keyfile=redis.keyfile),
        "fx_rates": dict(input_.fx_rates),
    }
    done = {"protocol", "ssl_cafile", "ssl_certfile", "ssl_keyfile", "sasl_mechanism",
            "sasl_username", "sasl_password", "ca_certs", "certfile", "keyfile", "fx_rates"}
    for group in groups.values():
        for field in type(group).model_fields:
            if field not in done and not field.startswith("topic_") and field not in values:
                values[field] = getattr(group, field)
    return values


#: Fields of the groups that live in a part of `Settings` rather than on it.
_PARTS = {
    **{f: ("kafka_security", f) for f in (
        "protocol", "ssl_cafile", "ssl_certfile", "ssl_keyfile", "sasl_mechanism",
        "sasl_username", "sasl_password")},
    **{f: ("redis_tls", f) for f in ("ca_certs", "certfile", "keyfile")},
}
_SECRETS = frozenset({"sasl_password", "api_tokens", "model_signing_key"})


def _shown(field: str, value: Any) -> str:
    if field == "redis_url":
        return redis_address(value)
    if field == "api_tokens":
        return ", ".join(f"{t.name}:***:{t.scope}" for t in value)
    if field in _SECRETS:
        return "***" if value else ""
    if field == "earliest_event_ms":
        moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=value)
        return moment.isoformat().replace("+00:00", "Z")
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, tuple):
        return ",".join(f"{v:g}" for v in value)
    if isinstance(value, Mapping):
        return ",".join(f"{k}={v}" for k, v in value.items())
    return "" if value is None else str(value)


def describe(settings: Settings) -> list[dict[str, str]]:
    """Every setting as ``{group, variable, value}``, secrets masked (``cvm config``).

    >>> rows = describe(Settings(redis_url="redis://u:pw@h:6379/0", model_signing_key="k" * 16))
    >>> [r["value"] for r in rows if r["variable"] in ("REDIS_URL", "CVM_MODEL_SIGNING_KEY")]
    ['redis://u:***@h:6379/0', '***']
    """
    rows = []
    for group, model in GROUPS.items():
        for field, info in model.model_fields.items():
            if field.startswith("topic_"):
                value: Any = getattr(settings.topics, field.removeprefix("topic_"))
            elif field in _PARTS:
                part, name = _PARTS[field]
                value = getattr(getattr(settings, part), name)
                value = value.reveal() if isinstance(value, Secret) else value
            else:
                value = getattr(settings, field)
            rows.append({"group": group, "variable": str(info.alias),
                         "value": _shown(field, value)})
    return rows
