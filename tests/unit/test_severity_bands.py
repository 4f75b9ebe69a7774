"""Severity bands from the population's value at risk, and their configuration."""

from __future__ import annotations

from typing import Any

import pytest

from stream_app.domain.alerts import AlertPolicy
from stream_app.domain.severity import percentile_index, population_bands, severity
from stream_app.pipeline import Ingestor, LiveModel
from stream_app.settings import Settings, SettingsError

DEFAULT = AlertPolicy().severity_bands


def test_nearest_rank_index_stays_in_range() -> None:
    assert percentile_index(10, 0.01) == 0
    assert percentile_index(10, 80) == 7
    assert percentile_index(10, 99.99) == 9
    assert [percentile_index(3, p) for p in (33, 34, 67, 100)] == [0, 1, 2, 2]


def test_bands_are_made_ascending_and_fall_back_without_a_population() -> None:
    assert population_bands([500.0, 100.0, 900.0], 1000, DEFAULT) == (500.0, 500.0, 900.0)
    assert population_bands([-3.0, 0.0, 10.0], 1000, DEFAULT) == (0.0, 0.0, 10.0)
    assert population_bands([0.0, 0.0, 0.0], 1000, DEFAULT) == DEFAULT
    assert population_bands([1.0, 2.0, 3.0], 99, DEFAULT) == DEFAULT


def test_a_percentile_band_puts_the_top_share_above_it() -> None:
    amounts = [float(i) for i in range(1, 1001)]
    bands = population_bands(
        [amounts[percentile_index(1000, p)] for p in (80, 95, 99)], 1000, DEFAULT
    )
    levels = [severity(a, bands) for a in amounts]
    # At or above the nearest-rank value: 990..1000 are critical.
    assert levels.count("critical") == 11
    assert levels.count("high") == 40
    assert levels.count("medium") == 150


def test_settings_parse_percentiles_and_fixed_bands() -> None:
    s = Settings.from_env({})
    assert s.alert_severity_percentiles == (80.0, 95.0, 99.0)
    assert s.alert_severity_bands is None
    s = Settings.from_env({
        "CVM_ALERT_SEVERITY_PERCENTILES": "50, 90, 99.5",
        "CVM_ALERT_SEVERITY_BANDS": "100,1000,10000",
    })
    assert s.alert_severity_percentiles == (50.0, 90.0, 99.5)
    assert s.alert_severity_bands == (100.0, 1000.0, 10000.0)


@pytest.mark.parametrize("name, raw", [
    ("CVM_ALERT_SEVERITY_PERCENTILES", "80,95"),
    ("CVM_ALERT_SEVERITY_PERCENTILES", "95,80,99"),
    ("CVM_ALERT_SEVERITY_PERCENTILES", "80,95,100"),
    ("CVM_ALERT_SEVERITY_BANDS", "a,b,c"),
    ("CVM_ALERT_SEVERITY_BANDS", "-1,2,3"),
])
def test_bad_severity_settings_name_the_variable(name: str, raw: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: raw})


def _ingestor(settings: Settings, live: LiveModel) -> Ingestor:
    nothing: Any = None
    return Ingestor(settings, nothing, nothing, live=live)


def test_decisions_use_the_live_bands_unless_configuration_fixes_them() -> None:
    live = LiveModel()
    ingestor = _ingestor(Settings(), live)
    assert ingestor.decision_policy().alert.severity_bands == DEFAULT
    live.severity_bands = (10.0, 20.0, 30.0)
    policy = ingestor.decision_policy()
    assert policy.alert.severity_bands == (10.0, 20.0, 30.0)
    assert policy.alert.churn_threshold == ingestor.policy.alert.churn_threshold
    assert ingestor.decision_policy() is policy
    fixed = _ingestor(Settings(alert_severity_bands=(1.0, 2.0, 3.0)), live)
    assert fixed.decision_policy().alert.severity_bands == (1.0, 2.0, 3.0)
