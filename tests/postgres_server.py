"""The PostgreSQL server the PostgreSQL driver's tests use: ``TICKKIT_PG_URL`` or
postgresql://postgres@127.0.0.1:5432 (trust auth). A session fixture creates a database of its
own (``tickkit_test_<random>``) and drops it at the end. Unreachable server: the tests fail
under ``CI=true`` and are skipped, with the reason, elsewhere."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

#: under CI a missing asyncpg or an unreachable server fails the tests instead of skipping them
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
asyncpg = __import__("asyncpg") if IN_CI else pytest.importorskip("asyncpg")

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
    with fresh_database() as url:
        yield url


@contextmanager
def fresh_database() -> Iterator[str]:
    """The URL of a new database (``tickkit_test_<random>``), dropped at the end."""
    name = f"tickkit_test_{uuid.uuid4().hex[:10]}"
    try:
        asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as exc:
        why = f"no PostgreSQL server at {SERVER_URL} ({type(exc).__name__}: {exc})"
        if IN_CI:
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


def _pg_bin() -> str | None:
    """The directory of pg_ctl and initdb, or None."""
    import glob
    import shutil

    found = shutil.which("pg_ctl")
    if found:
        return os.path.dirname(found)
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return os.path.dirname(versions[-1]) if versions else None


class PrivateServer:
    """A PostgreSQL server of one test (initdb in a temporary directory, a free port), for
    tests that restart or stop the server: never the shared one."""

    def __init__(self, bindir: str, data: str, port: int) -> None:
        self.bindir, self.data, self.port = bindir, data, port
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def _run(self, *args: str) -> None:
        import subprocess

        command = [os.path.join(self.bindir, args[0]), *args[1:]]
        if os.geteuid() == 0:  # the server refuses to run as root
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        self._run(
            "pg_ctl",
            "-D",
            self.data,
            "-l",
            os.path.join(self.data, "server.log"),
            "-w",
            "-o",
            f"-h 127.0.0.1 -p {self.port} -k /tmp",
            "start",
        )

    def stop(self) -> None:
        self._run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")


@pytest.fixture
def private_server(tmp_path: Any) -> Iterator[PrivateServer]:
    import shutil
    import socket
    import subprocess
    import tempfile

    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL binaries (pg_ctl, initdb) to start a server of the test's own")
    data = tempfile.mkdtemp(prefix="tickkit-pg-")
    if os.geteuid() == 0:
        shutil.chown(data, "postgres")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = PrivateServer(bindir, data, port)
    try:
        server._run("initdb", "-D", data, "-U", "postgres", "--auth=trust")
        server.start()
    except (subprocess.SubprocessError, OSError) as exc:
        shutil.rmtree(data, ignore_errors=True)
        pytest.skip(f"cannot start a PostgreSQL server of the test's own: {exc}")
    try:
        yield server
    finally:
        try:
            server.stop()
        except subprocess.SubprocessError:
            pass
        shutil.rmtree(data, ignore_errors=True)
