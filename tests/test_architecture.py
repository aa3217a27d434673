"""The rooms keep their import rules (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            prefix = "." * node.level
            found.add(prefix + node.module)
    return found


@pytest.mark.parametrize("path", sorted((ROOT / "kernel").rglob("*.py")), ids=str)
def test_kernel_imports_no_driver_or_plugin(path: Path) -> None:
    bad = {
        name
        for name in imports_of(path)
        if name.startswith(("tickkit.drivers", "tickkit.plugins", "drivers", "plugins"))
        or name.lstrip(".").startswith(("drivers", "plugins"))
    }
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", sorted((ROOT / "drivers").rglob("*.py")), ids=str)
def test_drivers_import_no_plugin(path: Path) -> None:
    bad = {n for n in imports_of(path) if n.startswith("tickkit.plugins")}
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_every_module_uses_postponed_annotations() -> None:
    missing = []
    for room in ("kernel", "drivers", "plugins"):
        for path in (ROOT / room).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            code = any(
                line.startswith(("def ", "class ", "async def ")) for line in text.splitlines()
            )
            if code and "from __future__ import annotations" not in text:
                missing.append(str(path.relative_to(ROOT)))
    assert missing == []
