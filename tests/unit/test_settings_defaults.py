"""An empty environment gives `Settings()`: the variables take their defaults from it."""

from __future__ import annotations

import dataclasses

from stream_app.settings import Settings


def test_an_empty_environment_gives_the_default_settings() -> None:
    from_env, default = Settings.from_env({}), Settings()
    differ = [f.name for f in dataclasses.fields(Settings)
              if getattr(from_env, f.name) != getattr(default, f.name)]
    assert differ == []
