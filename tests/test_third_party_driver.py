"""The example third-party driver package in contrib/tickkit-driver-example.

In this process: its driver passes the driver contract suite (asyncio). Slow: the package is
installed into a fresh virtual environment (no access to the development environment), where
``Kernel(driver="example://...")`` finds it through the ``tickkit.drivers`` entry point and the
package's own contract test run passes, on asyncio and trio.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tickkit import DriverError
from tickkit.testing.contract import DriverContract

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "contrib" / "tickkit-driver-example"


def _load_example() -> ModuleType:
    init = EXAMPLE / "src" / "tickkit_driver_example" / "__init__.py"
    spec = importlib.util.spec_from_file_location("tickkit_driver_example", init)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


example = _load_example()


class TestExampleDriverContract(DriverContract):
    # the example keeps no run counters: the suite checks that count_runs says so (None)
    counts_runs = False

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"  # the package's own test run, in the slow test, covers trio too

    @pytest.fixture
    def make_driver(self, tmp_path: Path) -> Callable[[], Any]:
        counter = iter(range(1_000_000))
        return lambda: example.JSONFileDriver(tmp_path / f"jobs-{next(counter)}.json")


def test_from_url_needs_a_file() -> None:
    driver = example.JSONFileDriver.from_url("example:///var/tmp/jobs.json")
    assert driver.path == Path("/var/tmp/jobs.json")
    with pytest.raises(DriverError, match="'example://'"):
        example.JSONFileDriver.from_url("example://")


CHECK = """\
import sys
import anyio
import tickkit
from tickkit import Kernel, TaskRegistry, task

runs = []
registry = TaskRegistry()


async def note(ctx):
    runs.append(ctx.data)


task(name="note", execute=note, registry=registry)


async def main(path):
    async with Kernel(driver="example://" + path, tasks=registry) as kernel:
        print("driver", type(kernel.driver).__module__, type(kernel.driver).__name__)
        await kernel.create_task("note", {"n": 1})
        with anyio.fail_after(20):
            while not runs:
                await anyio.sleep(0.01)
    print("ran", runs)
    print("tickkit from", tickkit.__file__)
    try:
        import discord  # noqa: F401  (installed in the development environment only)
    except ImportError:
        print("isolated")


anyio.run(main, sys.argv[1])
"""


def _copy_sources(dest: Path) -> tuple[Path, Path]:
    """Copies of tickkit and of the example package: pip builds in the source folder, and the
    builds must not leave files in the repository."""
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist", "node_modules")
    tickkit_src = dest / "tickkit"
    for name in ("kernel", "drivers", "plugins"):
        shutil.copytree(ROOT / name, tickkit_src / name, ignore=skip)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, tickkit_src / name)
    example_src = dest / "tickkit-driver-example"
    shutil.copytree(EXAMPLE, example_src, ignore=skip)
    return tickkit_src, example_src


def _clean_env() -> dict[str, str]:
    drop = ("PYTHONPATH", "VIRTUAL_ENV", "PYTEST_ADDOPTS")  # options meant for tickkit's suite
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(args: list[str], timeout: float, **kw: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, env=_clean_env(), check=False, **kw
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.mark.slow
def test_installed_in_a_fresh_venv_it_is_found_by_scheme_and_passes_the_contract(
    tmp_path: Path,
) -> None:
    venv = tmp_path / "venv"
    # no pip inside, and no system or development site-packages: only what is installed here
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], timeout=60)
    python = venv / ("Scripts" if os.name == "nt" else "bin") / "python"
    tickkit_src, example_src = _copy_sources(tmp_path / "src")
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q"]
    _run([*pip, str(tickkit_src), str(example_src), "pytest", "trio"], timeout=300)

    store = tmp_path / "jobs.json"
    (tmp_path / "check.py").write_text(CHECK)
    out = _run([str(python), str(tmp_path / "check.py"), str(store)], timeout=60).stdout
    assert "driver tickkit_driver_example JSONFileDriver" in out
    assert "ran [{'n': 1}]" in out
    assert f"tickkit from {venv}" in out
    assert "isolated" in out
    assert store.exists()

    tests = _run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        timeout=300,
        cwd=example_src,
    ).stdout
    summary = tests.strip().splitlines()[-1]
    assert "failed" not in summary and "error" not in summary, tests
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (passed|skipped)", summary)}
    # the whole contract, on asyncio and trio
    contract = [name for name in dir(DriverContract) if name.startswith("test_")]
    assert counts.get("passed", 0) + counts.get("skipped", 0) == 2 * len(contract), tests
    assert counts.get("passed", 0) >= 2 * (len(contract) - 1), tests
