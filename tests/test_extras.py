"""A missing optional dependency names the extra to install, at the call."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import sys
sys.modules[{module!r}] = None  # as if the extra were not installed
import anyio, tickkit

async def main():
    try:
        await tickkit.Kernel(driver={url!r}).open()
    except tickkit.MissingExtraError as exc:
        print(type(exc).__name__, exc)

anyio.run(main)
"""


@pytest.mark.parametrize(
    ("module", "url", "extra"),
    [
        ("aiosqlite", "sqlite:///never-created.db", "sqlite"),
        ("redis", "redis://127.0.0.1:1/0", "redis"),
        ("redis", "rediss://127.0.0.1:1/0", "redis"),
        ("asyncpg", "postgresql://127.0.0.1:1/db", "postgres"),
        ("asyncpg", "postgres://127.0.0.1:1/db", "postgres"),
    ],
)
def test_missing_driver_extra(module: str, url: str, extra: str, tmp_path: object) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(module=module, url=url)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("MissingExtraError"), done.stdout + done.stderr
    assert f"pip install tickkit[{extra}]" in done.stdout


def test_unknown_scheme_lists_the_installed_ones() -> None:
    import anyio

    import tickkit

    async def main() -> None:
        with pytest.raises(tickkit.DriverNotFoundError, match="'mongodb'") as err:
            await tickkit.Kernel(driver="mongodb://localhost").open()
        assert "memory" in str(err.value) and "sqlite" in str(err.value)

    anyio.run(main)
