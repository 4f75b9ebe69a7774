"""What the wheel ships: the engine only, without the repository's tools, built without warnings."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _imports_of(path: Path) -> list[tuple[str, int, bool]]:
    """(module, line, at top level) of every import in a file."""
    tree = ast.parse(path.read_text(), str(path))
    top = {id(n) for n in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno, id(node) in top))
    return found


def test_the_engine_never_imports_the_load_tools() -> None:
    offenders = []
    for path in sorted((ROOT / "stream_app").rglob("*.py")):
        for module, line, _top in _imports_of(path):
            if module == "load" or module.startswith("load."):
                offenders.append(f"{path.relative_to(ROOT)}:{line}: {module}")
    assert offenders == [], offenders


def test_the_wheel_ships_stream_app_only_and_builds_without_warnings(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
         "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=600, check=True,
    )
    log = out.stdout + out.stderr
    assert "Warning" not in log and "warning:" not in log.lower(), log
    (wheel,) = tmp_path.glob("cvm_stream-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names if not n.startswith("cvm_stream-")} == {"stream_app"}
    for data in ("stream_app/store/commit.lua", "stream_app/static/ops.html",
                 "stream_app/_schemas/purchase.v1.json", "stream_app/py.typed"):
        assert data in names, data
