"""The driver contract suite on the PostgreSQL driver, against a real server: every driver of
a test shares one store (a schema of its own in the session's database)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from tickkit.testing.contract import DriverContract

from .postgres_server import pg_database, pg_schema

PostgresDriver = pytest.importorskip("tickkit.drivers.postgres").PostgresDriver

__all__ = ["pg_database", "pg_schema"]

#: the safety-net poll: wake-ups come through LISTEN/NOTIFY; a long poll keeps the virtual
#: cron span cheap
POLL = 300.0


class TestPostgresDriver(DriverContract):
    shared_store = True
    #: a day of minutely runs is 1,440 round trips to a real server; six hours show the same
    cron_span = timedelta(hours=6)

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"  # asyncpg is asyncio-only (PostgresDriver.supports_trio is False)

    @pytest.fixture
    def make_driver(self, pg_database: str, pg_schema: str) -> Callable[[], object]:
        return lambda: PostgresDriver(pg_database, schema=pg_schema, poll_interval=POLL)
