"""The rooms keep their import rules (docs/architecture.md)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).parent.parent


def source_tree(root: Path) -> Path:
    """The three rooms laid out as the installed package (tickkit/, tickkit/drivers/,
    tickkit/plugins/) under ``root``: import-linter reads a package from one folder, and an
    editable install maps the rooms with an import hook it cannot see."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "node_modules")
    shutil.copytree(ROOT / "kernel", root / "tickkit", ignore=ignore)
    shutil.copytree(ROOT / "drivers", root / "tickkit" / "drivers", ignore=ignore)
    shutil.copytree(ROOT / "plugins", root / "tickkit" / "plugins", ignore=ignore)
    return root


def test_import_contracts_hold(tmp_path: Path) -> None:
    """pyproject.toml's [tool.importlinter] contracts (kernel alone, drivers below plugins, the
    kernel's value modules below its machinery, the machinery's layers, the run of one job
    without the store) hold; the same check as `lint-imports`."""
    tree = source_tree(tmp_path / "src")
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, "-c", LINT, str(ROOT / "pyproject.toml")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # every contract pyproject.toml declares ran (tomllib is 3.11+: count the tables)
    declared = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    contracts = declared.count("[[tool.importlinter.contracts]]")
    assert contracts >= 5
    assert f"Contracts: {contracts} kept, 0 broken." in done.stdout, done.stdout


#: runs lint-imports with a given config file, the package found on PYTHONPATH
LINT = """
import sys
from importlinter.cli import lint_imports
sys.exit(lint_imports(config_filename=sys.argv[1], no_cache=True))
"""


def test_import_contracts_cover_every_kernel_module() -> None:
    """The kernel contract's sources match every kernel module (new modules included): the
    wildcards name the top level and the testing package."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = {c["id"]: c for c in config["tool"]["importlinter"]["contracts"]}
    assert contracts["kernel-alone"]["source_modules"] == [
        "tickkit",
        "tickkit.*",
        "tickkit.testing.**",
    ]
    assert contracts["kernel-alone"]["as_packages"] is False
    nested = {p.parent.name for p in (ROOT / "kernel").glob("*/__init__.py")}
    assert nested == {"testing"}, "a new kernel sub-package needs its own source pattern"


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
