"""README "Development" names every module of the shipped package, one line each."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _tree() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Development"):]
    return section[section.index("```\n") + 4: section.index("\n```", section.index("```\n") + 4)]


def _listed() -> set[str]:
    """The module paths the tree names, relative to `stream_app/`."""
    listed: set[str] = set()
    folder = ""
    for line in _tree().splitlines():
        m = re.match(r"^( +)(\S+)", line)
        if not m or len(m.group(1)) not in (2, 4):  # the top level, continuation lines
            continue
        indent, name = len(m.group(1)), m.group(2)
        if indent == 2 and name.endswith("/"):
            folder = name
        elif indent == 4:
            listed.add(folder + name)
        else:
            listed.add(name)
    return listed


def test_the_development_tree_lists_every_module_and_no_other() -> None:
    package = ROOT / "stream_app"
    modules = {
        str(p.relative_to(package)) for p in package.rglob("*")
        if p.suffix in (".py", ".lua") and p.name != "__init__.py"
    }
    listed = _listed()
    assert modules - listed == set(), "modules missing from README 'Development'"
    assert listed - modules == set(), "README 'Development' names modules that do not exist"
