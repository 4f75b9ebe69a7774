"""An empty environment gives `Settings()`: the variables take their defaults from it."""

from __future__ import annotations

import dataclasses

from stream_app.settings import Settings


def test_an_empty_environment_gives_the_default_settings() -> None:
    from_env, default = Settings.from_env({}), Settings()
    differ = [f.name for f in dataclasses.fields(Settings)
              if getattr(from_env, f.name) != getattr(default, f.name)]
    assert differ == []


def test_alert_weights_from_the_environment_replace_the_named_defaults() -> None:
    from stream_app.domain.rules import DEFAULT_WEIGHTS
    from stream_app.pipeline import retention_policy

    s = Settings.from_env({"CVM_ALERT_WEIGHTS": "p_alive_drop=0.5, complaints=0"})
    weights = retention_policy(s).alert.weights
    assert weights == {**DEFAULT_WEIGHTS, "p_alive_drop": 0.5, "complaints": 0.0}
    assert retention_policy(Settings.from_env({})).alert.weights == DEFAULT_WEIGHTS
