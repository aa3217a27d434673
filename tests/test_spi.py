"""Drivers and plugins use only the kernel's public names (the driver SPI ``tickkit.driver``,
the plugin SPI ``tickkit.plugin_api``, ``tickkit`` itself), and the per-kernel plugin state."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from tickkit import Kernel, TaskRegistry
from tickkit.testing import VirtualClock

ROOT = Path(__file__).parent.parent
#: the kernel modules a driver or plugin may import from, with the names they offer
PUBLIC = ("tickkit", "tickkit.driver", "tickkit.plugin_api")


def kernel_imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) of every ``from tickkit[.x] import name`` of a kernel module in ``path``
    (imports of tickkit.drivers and tickkit.plugins are the rooms' own)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            module = node.module
            if module.startswith(("tickkit.drivers", "tickkit.plugins")):
                continue
            if module == "tickkit" or module.startswith("tickkit."):
                found.extend((module, alias.name) for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("tickkit.") and not alias.name.startswith(
                    ("tickkit.drivers", "tickkit.plugins")
                ):
                    found.append((alias.name, "*"))
    return found


FILES = sorted([*(ROOT / "drivers").rglob("*.py"), *(ROOT / "plugins").rglob("*.py")])


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_rooms_import_only_public_kernel_names(path: Path) -> None:
    bad = []
    for module, name in kernel_imports(path):
        public = set(importlib.import_module(module).__all__) if module in PUBLIC else set()
        if name not in public and name != "__version__":
            bad.append(f"{module}.{name}")
    assert bad == [], f"{path.relative_to(ROOT)} imports non-public kernel names"


@pytest.mark.parametrize("module", PUBLIC[1:])
def test_spi_names_exist(module: str) -> None:
    loaded = importlib.import_module(module)
    assert loaded.__all__ and all(hasattr(loaded, name) for name in loaded.__all__)


def test_spi_is_documented() -> None:
    driver_doc = (ROOT / "docs" / "writing-a-driver.md").read_text(encoding="utf-8")
    plugin_doc = (ROOT / "docs" / "writing-a-plugin.md").read_text(encoding="utf-8")
    missing = [n for n in importlib.import_module("tickkit.driver").__all__ if n not in driver_doc]
    missing += [
        n for n in importlib.import_module("tickkit.plugin_api").__all__ if n not in plugin_doc
    ]
    assert missing == []


@pytest.mark.anyio
async def test_plugin_state_lives_as_long_as_the_kernel_runs() -> None:
    kernel = Kernel(tasks=TaskRegistry(), clock=VirtualClock())
    key = object()
    async with kernel:
        first = kernel.plugin_state(key, list)
        first.append(1)
        assert kernel.plugin_state(key, list) is first
        assert kernel.plugin_state(object(), list) == []
    again = None
    async with kernel:
        again = kernel.plugin_state(key, list)
    assert again == [] and again is not first
