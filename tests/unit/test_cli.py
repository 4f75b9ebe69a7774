"""The ``cvm`` command without servers: start-up cost, help, version, config, formats."""

from __future__ import annotations

import doctest
import os
import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from stream_app import cli

ROOT = Path(__file__).resolve().parents[2]
#: The bound of the issue: `cvm --help` and `cvm lookup` start in well under a second.
MAX_IMPORT_S = 1.0
#: Never imported by `cvm --help`: the heavy libraries of the engine.
HEAVY = ("numpy", "scipy", "faust", "matplotlib", "river", "redis", "aiokafka",
         "confluent_kafka", "pydantic", "rich")


def run_cvm(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "CVM_DEBUG"}
    return subprocess.run([sys.executable, "-m", "stream_app.cli", *args], cwd=ROOT,
                          env={**base, **env}, capture_output=True, text=True, timeout=60)


def import_cost(modules: str) -> tuple[float, set[str]]:
    """CPU seconds spent importing `modules`, and every module ``-X importtime`` lists.

    CPU time of the process, the least of three runs: the cost of the imports, not the
    load of a machine shared with other work (``-X importtime`` counts wall time).
    """
    code = ("import time; t = time.process_time(); import " + modules
            + "; print(time.process_time() - t)")
    best = float("inf")
    names: set[str] = set()
    for _ in range(3):
        out = subprocess.run([sys.executable, "-X", "importtime", "-c", code], cwd=ROOT,
                             capture_output=True, text=True, timeout=60, check=True)
        best = min(best, float(out.stdout))
        names = {m.group(1) for m in re.finditer(r"^import time:.*\|\s*(\S+)$",
                                                 out.stderr, re.M)}
    return best, names


def test_help_imports_nothing_heavy_and_starts_fast() -> None:
    seconds, modules = import_cost("stream_app.cli")
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    assert heavy == [], heavy
    assert seconds < MAX_IMPORT_S, seconds


def test_lookup_imports_no_fitting_library_and_starts_fast() -> None:
    # What `cvm lookup` imports before it talks to Redis.
    seconds, modules = import_cost(
        "stream_app.cli, stream_app.lookup, stream_app.settings, redis.asyncio"
    )
    # scipy is imported at the first revaluation only (`clv.special`), not to answer from
    # the stored record.
    slow = sorted(m for m in modules
                  if m.split(".")[0] in ("faust", "matplotlib", "river", "aiokafka", "scipy"))
    assert slow == [], slow
    assert seconds < MAX_IMPORT_S, seconds


def test_help_lists_every_command_and_the_readme_names_the_same() -> None:
    out = run_cvm("--help")
    assert out.returncode == 0, out.stderr
    listed = re.findall(r"^│ (\w[\w-]*)\s{2,}", out.stdout, re.M)
    assert listed == list(cli.COMMANDS), listed
    readme = (ROOT / "README.md").read_text()
    section = readme.split("<!-- cvm-commands -->")[1]
    assert re.findall(r"^\| `cvm (\w[\w-]*)", section, re.M) == list(cli.COMMANDS)
    assert "Exit codes" in out.stdout


def test_every_option_has_help_and_every_command_names_its_variables() -> None:
    import typer.main

    group = typer.main.get_command(cli.app)
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        assert command.help, name
        if name in cli.PASSTHROUGH:
            continue
        assert "Reads" in (command.epilog or "") or name == "config", name
        for param in command.params:
            assert getattr(param, "help", None) or param.param_type_name == "argument", (
                name, param.name)


def test_version() -> None:
    out = run_cvm("--version")
    assert out.returncode == 0 and re.fullmatch(r"cvm \S+\n", out.stdout), out


def test_config_masks_secrets_and_names_the_variables() -> None:
    secrets = {"REDIS_URL": "redis://worker:hunter2hunter2@127.0.0.1:6379/0",
               "CVM_API_TOKENS": "ops:0123456789abcdef0123:admin",
               "CVM_MODEL_SIGNING_KEY": "k" * 24,
               "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_USERNAME": "cvm",
               "KAFKA_SASL_PASSWORD": "kafka-pass-word"}
    out = run_cvm("config", "--json", **secrets)
    assert out.returncode == 0, out.stderr
    for value in ("hunter2hunter2", "0123456789abcdef0123", "k" * 24, "kafka-pass-word"):
        assert value not in out.stdout
    rows = {r["variable"]: r for r in orjson.loads(out.stdout)}
    assert rows["REDIS_URL"]["value"] == "redis://worker:***@127.0.0.1:6379/0"
    assert rows["CVM_API_TOKENS"]["value"] == "ops:***:admin"
    assert rows["KAFKA_SASL_PASSWORD"]["value"] == "***"
    assert rows["CVM_HORIZON_DAYS"]["value"] == "365"
    assert {r["group"] for r in rows.values()} >= {"Kafka", "Redis", "Web", "Value model",
                                                   "Alerts", "Win-back"}
    table = run_cvm("config", **secrets)
    assert table.returncode == 0 and "hunter2hunter2" not in table.stdout
    assert "CVM_WINBACK_CONTROL_SHARE" in table.stdout


def test_a_bad_variable_is_one_line_without_traceback() -> None:
    out = run_cvm("config", CVM_HORIZON_DAYS="x", CVM_BATCH_SIZE="many")
    assert out.returncode == 2, out
    assert out.stderr.strip().splitlines() == [
        "cvm config: CVM_BATCH_SIZE='many' is not an integer",
        "cvm config: CVM_HORIZON_DAYS='x' is not an integer",
    ], out.stderr


def test_no_color_leaves_out_escape_codes() -> None:
    out = run_cvm("config", NO_COLOR="1", FORCE_COLOR="", TERM="xterm-256color")
    assert out.returncode == 0 and "\x1b[" not in out.stdout


@pytest.mark.parametrize(("name", "value", "shown"), [
    ("clv", 1234567.891, "1,234,567.89"),
    ("revenue", "175.4", "175.40"),
    ("net_contribution", 0.0, "0.00"),
    ("p_alive", 0.25, "25.0%"),
    ("return_rate", 0.16279069767441862, "16.3%"),
    ("orders", 12000, "12,000"),
    ("clv", None, "-"),
])
def test_numbers_a_marketer_can_read(name: str, value: object, shown: str) -> None:
    assert cli.format_value(name, value) == shown


def test_docstring_examples() -> None:
    from stream_app import settings_env

    for module in (cli, settings_env):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module


@pytest.mark.parametrize("args", [("skip",), ("alerts", "--severity", "urgent"),
                                  ("replay",), ("nosuch",), ("top", "--limit", "many")])
def test_bad_arguments_of_every_kind_of_command_are_one_line(args: tuple[str, ...]) -> None:
    out = run_cvm(*args)
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cvm"), lines
    assert "--help" in lines[0] or "-h" in lines[0], lines
