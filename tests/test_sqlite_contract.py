"""The driver contract suite on the SQLite driver, every driver of a test on one real file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tickkit.drivers.sqlite import SQLiteDriver
from tickkit.testing.contract import DriverContract

#: The kernel re-reads the store every ``poll_interval`` of (virtual) time. With the default of
#: 1 s, the contract's day of cron runs under the VirtualClock takes 86,400 dispatcher steps
#: (about 15 s); polling only matters for changes made by other processes, which
#: test_sqlite_multiprocess.py and test_sqlite_driver.py::test_other_connection_seen_within_poll
#: check with the default.
POLL = 30.0


class TestSQLiteDriver(DriverContract):
    shared_store = True

    @pytest.fixture
    def anyio_backend(self) -> str:
        # aiosqlite runs on asyncio only (SQLiteDriver.supports_trio is False)
        return "asyncio"

    @pytest.fixture
    def make_driver(self, tmp_path: Path) -> Callable[[], SQLiteDriver]:
        return lambda: SQLiteDriver(tmp_path / "jobs.db", poll_interval=POLL)
