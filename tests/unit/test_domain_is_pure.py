"""The domain imports neither Kafka, Redis nor Faust, and reads no clock."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

DOMAIN = Path(__file__).resolve().parents[2] / "stream_app" / "domain"
FORBIDDEN_MODULES = {"faust", "aiokafka", "confluent_kafka", "redis", "mode", "os", "time"}
FORBIDDEN_CALLS = {"now", "utcnow", "today", "time", "monotonic"}


def _modules() -> list[Path]:
    return sorted(DOMAIN.rglob("*.py"))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.relative_to(DOMAIN).as_posix())
def test_domain_module_is_pure(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        else:
            names = []
        for name in names:
            assert name.split(".")[0] not in FORBIDDEN_MODULES, f"{path.name} imports {name}"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            assert node.func.attr not in FORBIDDEN_CALLS, (
                f"{path.name}:{node.lineno} calls .{node.func.attr}()"
            )


def test_the_check_sees_every_domain_module() -> None:
    names = {p.relative_to(DOMAIN).as_posix() for p in _modules()}
    assert {"ledger.py", "clv/bgnbd.py", "clv/lifetime.py", "rfm.py", "events.py"} <= names
