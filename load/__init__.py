"""Synthetic customers with known ground truth, and a Kafka load generator that publishes them.

`load.simulator` draws the population and streams its events in event-time order;
`load.generator` publishes such a stream to the input topics (``python -m load.generator``).

The names below are imported on first use (PEP 562): importing the submodules here would make
``python -m load.simulator`` and ``python -m load.generator`` warn that the module was imported
twice.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DEFAULT_CHANNELS": "load.simulator",
    "Channel": "load.simulator",
    "SimConfig": "load.simulator",
    "SimEvent": "load.simulator",
    "SimulationError": "load.simulator",
    "customer_id": "load.simulator",
    "ground_truth": "load.simulator",
    "simulate": "load.simulator",
    "write_events": "load.simulator",
    "write_ground_truth": "load.simulator",
    "MALFORMED_KINDS": "load.generator",
    "PublishReport": "load.generator",
    "malformed_message": "load.generator",
    "publish": "load.generator",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'load' has no attribute {name!r}") from None
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
