"""One frozen settings object, read once from the environment.

Every variable is listed in the README's configuration table; `Settings.from_env`
is the only place that reads the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from decimal import Decimal


class SettingsError(ValueError):
    """A configuration variable holds a value that cannot be used."""


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer") from None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None


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
        if len(code) != 3 or not code.isalpha() or rate <= 0:
            raise SettingsError(f"CVM_FX_RATES: {part!r} is not CODE=RATE with RATE > 0")
        rates[code] = rate
    return rates


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
    redis_url: str = "redis://127.0.0.1:6379/0"
    app_id: str = "cvm"
    topics: Topics = field(default_factory=Topics)
    partitions: int = 4
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    data_dir: str = ".devstack/faust"
    max_event_bytes: int = 65536
    base_currency: str = "USD"
    fx_rates: Mapping[str, Decimal] = field(default_factory=dict)
    batch_size: int = 500
    # 5 ms: at low rates a batch closes soon after its first event (load.bench freshness).
    batch_within_ms: int = 5
    default_margin_rate: float = 0.30
    annual_discount_rate: float = 0.10
    horizon_days: int = 365
    fit_interval_s: float = 300.0
    refresh_interval_s: float = 5.0
    wall_clock_watermark: bool = False
    session_timeout_s: float = 10.0
    group_instance_id: str = ""
    churn_horizon_days: int = 90
    snapshot_gap_days: float = 30.0
    churn_model: str = "logreg"
    model_publish_interval_s: float = 30.0
    rescore_interval_s: float = 2.0
    alert_min_value_tier: float = 80.0
    alert_churn_threshold: float = 0.5
    alert_cooldown_days: float = 14.0
    alert_min_signals: int = 1
    alert_min_score: float = 5.0
    alert_severity_percentiles: tuple[float, float, float] = (80.0, 95.0, 99.0)
    alert_severity_bands: tuple[float, float, float] | None = None
    winback_p_alive_threshold: float = 0.25
    winback_control_share: float = 0.10
    winback_seed: int = 0
    log_level: str = "info"
    # "text" or "json" (one JSON object per line); see stream_app/logs.py.
    log_format: str = "text"
    # A repeated warning or error (same logger and template) is printed once per window.
    log_repeat_window_s: float = 60.0
    log_summary_interval_s: float = 60.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``env`` (default: ``os.environ``)."""
        e = os.environ if env is None else env
        topics = Topics(**{
            f.name: e.get(f"CVM_TOPIC_{f.name.upper()}", getattr(Topics, f.name))
            for f in fields(Topics)
        })
        settings = cls(
            kafka_bootstrap_servers=e.get("KAFKA_BOOTSTRAP_SERVERS", cls.kafka_bootstrap_servers),
            redis_url=e.get("REDIS_URL", cls.redis_url),
            app_id=e.get("CVM_APP_ID", cls.app_id),
            topics=topics,
            partitions=_int(e, "CVM_PARTITIONS", cls.partitions),
            web_host=e.get("CVM_WEB_HOST", cls.web_host),
            web_port=_int(e, "CVM_WEB_PORT", cls.web_port),
            data_dir=e.get("CVM_DATA_DIR", cls.data_dir),
            max_event_bytes=_int(e, "CVM_MAX_EVENT_BYTES", cls.max_event_bytes),
            base_currency=e.get("CVM_BASE_CURRENCY", cls.base_currency).upper(),
            fx_rates=_fx_rates(e.get("CVM_FX_RATES", "")),
            batch_size=_int(e, "CVM_BATCH_SIZE", cls.batch_size),
            batch_within_ms=_int(e, "CVM_BATCH_WITHIN_MS", cls.batch_within_ms),
            default_margin_rate=_float(e, "CVM_DEFAULT_MARGIN_RATE", cls.default_margin_rate),
            annual_discount_rate=_float(e, "CVM_ANNUAL_DISCOUNT_RATE", cls.annual_discount_rate),
            horizon_days=_int(e, "CVM_HORIZON_DAYS", cls.horizon_days),
            fit_interval_s=_float(e, "CVM_FIT_INTERVAL_S", cls.fit_interval_s),
            refresh_interval_s=_float(e, "CVM_REFRESH_INTERVAL_S", cls.refresh_interval_s),
            wall_clock_watermark=e.get("CVM_WALL_CLOCK_WATERMARK", "0").lower()
            in ("1", "true", "yes"),
            session_timeout_s=_float(e, "CVM_SESSION_TIMEOUT_S", cls.session_timeout_s),
            group_instance_id=e.get("CVM_GROUP_INSTANCE_ID", cls.group_instance_id),
            churn_horizon_days=_int(e, "CVM_CHURN_HORIZON_DAYS", cls.churn_horizon_days),
            snapshot_gap_days=_float(e, "CVM_SNAPSHOT_GAP_DAYS", cls.snapshot_gap_days),
            churn_model=e.get("CVM_CHURN_MODEL", cls.churn_model),
            model_publish_interval_s=_float(
                e, "CVM_MODEL_PUBLISH_INTERVAL_S", cls.model_publish_interval_s
            ),
            rescore_interval_s=_float(e, "CVM_RESCORE_INTERVAL_S", cls.rescore_interval_s),
            alert_min_value_tier=_float(e, "CVM_ALERT_MIN_VALUE_TIER", cls.alert_min_value_tier),
            alert_churn_threshold=_float(
                e, "CVM_ALERT_CHURN_THRESHOLD", cls.alert_churn_threshold
            ),
            alert_cooldown_days=_float(e, "CVM_ALERT_COOLDOWN_DAYS", cls.alert_cooldown_days),
            alert_min_signals=_int(e, "CVM_ALERT_MIN_SIGNALS", cls.alert_min_signals),
            alert_min_score=_float(e, "CVM_ALERT_MIN_SCORE", cls.alert_min_score),
            alert_severity_percentiles=_triple(
                e, "CVM_ALERT_SEVERITY_PERCENTILES", cls.alert_severity_percentiles
            ),
            alert_severity_bands=_triple(e, "CVM_ALERT_SEVERITY_BANDS", None),
            winback_p_alive_threshold=_float(
                e, "CVM_WINBACK_P_ALIVE_THRESHOLD", cls.winback_p_alive_threshold
            ),
            winback_control_share=_float(
                e, "CVM_WINBACK_CONTROL_SHARE", cls.winback_control_share
            ),
            winback_seed=_int(e, "CVM_WINBACK_SEED", cls.winback_seed),
            log_level=e.get("CVM_LOG_LEVEL", cls.log_level),
            log_format=e.get("CVM_LOG_FORMAT", cls.log_format).lower(),
            log_repeat_window_s=_float(e, "CVM_LOG_REPEAT_WINDOW_S", cls.log_repeat_window_s),
            log_summary_interval_s=_float(
                e, "CVM_LOG_SUMMARY_INTERVAL_S", cls.log_summary_interval_s
            ),
        )
        settings.check()
        return settings

    def namespace_env(self) -> dict[str, str]:
        """The variables that put a worker subprocess in these settings' namespace.

        Connections, identity (app id, web address, data folder), partitions and
        topic names; tunables such as timers are left to the caller's environment.
        """
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap_servers,
            "REDIS_URL": self.redis_url,
            "CVM_APP_ID": self.app_id,
            "CVM_PARTITIONS": str(self.partitions),
            "CVM_WEB_HOST": self.web_host,
            "CVM_WEB_PORT": str(self.web_port),
            "CVM_DATA_DIR": self.data_dir,
            **self.topics.env,
        }

    def check(self) -> None:
        """Raise `SettingsError` naming the first unusable value."""
        if self.partitions < 1:
            raise SettingsError(f"CVM_PARTITIONS={self.partitions} must be at least 1")
        if not 0 <= self.default_margin_rate <= 1:
            raise SettingsError(
                f"CVM_DEFAULT_MARGIN_RATE={self.default_margin_rate} must be within 0..1"
            )
        if self.alert_min_signals < 1:
            raise SettingsError(f"CVM_ALERT_MIN_SIGNALS={self.alert_min_signals} must be >= 1")
        if not 0 <= self.alert_min_score < float("inf"):
            raise SettingsError(f"CVM_ALERT_MIN_SCORE={self.alert_min_score} must be >= 0")
        if not all(0 < p < 100 for p in self.alert_severity_percentiles):
            raise SettingsError(
                f"CVM_ALERT_SEVERITY_PERCENTILES={self.alert_severity_percentiles} "
                "must lie strictly between 0 and 100"
            )
        if self.log_format not in ("text", "json"):
            raise SettingsError(f"CVM_LOG_FORMAT={self.log_format!r} must be text or json")
        if self.log_summary_interval_s <= 0:
            raise SettingsError(
                f"CVM_LOG_SUMMARY_INTERVAL_S={self.log_summary_interval_s} must be positive"
            )
        if self.batch_size < 1:
            raise SettingsError(f"CVM_BATCH_SIZE={self.batch_size} must be at least 1")
        if self.max_event_bytes < 256:
            raise SettingsError(f"CVM_MAX_EVENT_BYTES={self.max_event_bytes} is below 256")
        if len(self.base_currency) != 3 or not self.base_currency.isalpha():
            raise SettingsError(f"CVM_BASE_CURRENCY={self.base_currency!r} is not ISO 4217")
