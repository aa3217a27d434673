"""The PostgreSQL server the PostgreSQL driver's tests use: ``TICKKIT_PG_URL`` or
postgresql://postgres@127.0.0.1:5432 (trust auth). A session fixture creates a database of its
own (``tickkit_test_<random>``) and drops it at the end. Unreachable server: the tests fail
under ``CI=true`` and are skipped, with the reason, elsewhere."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

asyncpg = pytest.importorskip("asyncpg") if not os.environ.get("CI") else __import__("asyncpg")

SERVER_URL = os.environ.get("TICKKIT_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(SERVER_URL, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """The URL of a fresh database for this test session."""
    name = f"tickkit_test_{uuid.uuid4().hex[:10]}"
    try:
        asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as exc:
        why = f"no PostgreSQL server at {SERVER_URL} ({type(exc).__name__}: {exc})"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(why + "; CI must run one (.ci/run starts it)")
        pytest.skip(why)
    try:
        yield with_database(SERVER_URL, name)
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def pg_schema() -> str:
    """A schema name of its own for one test (a fresh store in the session's database)."""
    return f"t_{uuid.uuid4().hex[:12]}"
