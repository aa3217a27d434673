"""tickkit's driver contract suite, run against the JSON file driver, on asyncio and trio."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from tickkit_driver_example import JSONFileDriver

from tickkit.testing.contract import DriverContract


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class TestJSONFileDriver(DriverContract):
    # no per-minute run counters: the suite checks that count_runs says so (None)
    counts_runs = False

    @pytest.fixture
    def make_driver(self, tmp_path: Path) -> Callable[[], JSONFileDriver]:
        counter = iter(range(1_000_000))
        # each driver gets its own file: one process owns a file
        return lambda: JSONFileDriver(tmp_path / f"jobs-{next(counter)}.json")
