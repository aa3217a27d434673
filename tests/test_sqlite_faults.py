"""Faults on real files: each gives a clear error naming the file and loses nothing stored.

- a file that is not a SQLite database, and a SQLite database of another program;
- a store written by a newer tickkit (a newer schema version);
- a read-only file;
- a store locked by another connection past the busy timeout;
- a full disk: a real tiny tmpfs when the tests run as root on Linux, else SQLite's own size
  limit (``PRAGMA max_page_count``), which fails writes with the same SQLITE_FULL error.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from pathlib import Path

import anyio
import pytest

from tickkit import DriverError, IncompatibleStoreError
from tickkit.drivers.sqlite import LATEST_VERSION, SQLiteDriver
from tickkit.testing import VirtualClock

from .sqlite_helpers.common import T0, one_off, opened

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(T0)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_file_that_is_not_a_database(tmp_path: Path, clock: VirtualClock) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are my notes, not a database\n" * 200)
    before = digest(path)
    with pytest.raises(IncompatibleStoreError, match="not a SQLite database") as info:
        async with opened(SQLiteDriver(path), clock):
            pass
    assert str(path) in str(info.value)
    assert digest(path) == before
    assert not await anyio.Path(f"{path}-wal").exists()


async def test_database_of_another_program(tmp_path: Path, clock: VirtualClock) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO users (name) VALUES ('ada')")
    conn.close()
    before = digest(path)
    with pytest.raises(IncompatibleStoreError, match="not a tickkit store") as info:
        async with opened(SQLiteDriver(path), clock):
            pass
    assert str(path) in str(info.value) and "users" in str(info.value)
    assert digest(path) == before


async def test_store_of_a_newer_schema_version(tmp_path: Path, clock: VirtualClock) -> None:
    path = tmp_path / "tasks.db"
    async with opened(SQLiteDriver(path), clock) as d:
        await d.add_job(one_off("kept", data={"n": 1}))
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO tickkit_version VALUES (99, 'from the future', 0)")
    conn.close()
    with pytest.raises(IncompatibleStoreError, match="schema version 99") as info:
        async with opened(SQLiteDriver(path), clock):
            pass
    message = str(info.value)
    assert str(path) in message and f"up to {LATEST_VERSION}" in message
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT id, data FROM tickkit_jobs").fetchall()
        assert conn.execute("SELECT MAX(version) FROM tickkit_version").fetchone() == (99,)
    conn.close()
    assert rows == [("kept", '{"n":1}')]


@contextmanager
def read_only(path: Path) -> Iterator[None]:
    """Make ``path`` read-only for this process: file mode 0444, or, for root (whom modes do not
    stop), the immutable attribute."""
    mode = path.stat().st_mode
    if os.geteuid() != 0:
        path.chmod(0o444)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(path)], check=False).returncode:
        pytest.fail("running as root: making a file read-only needs a working `chattr +i`")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(path)], check=True)


async def test_read_only_file(tmp_path: Path, clock: VirtualClock) -> None:
    path = tmp_path / "tasks.db"
    async with opened(SQLiteDriver(path), clock) as d:
        await d.add_job(one_off("kept"))
    with read_only(path):
        with pytest.raises(DriverError, match="read-only") as info:
            async with opened(SQLiteDriver(path), clock):
                pass
        assert str(path) in str(info.value)
    async with opened(SQLiteDriver(path), clock) as d:
        assert [j.id for j in await d.list_jobs()] == ["kept"]


async def test_locked_past_the_busy_timeout(tmp_path: Path, clock: VirtualClock) -> None:
    path = tmp_path / "tasks.db"
    async with opened(SQLiteDriver(path, busy_timeout=0.2), clock) as d:
        await d.add_job(one_off("before"))
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            started = time.monotonic()
            with pytest.raises(DriverError, match="locked") as info:
                await d.add_job(one_off("during"))
            assert time.monotonic() - started >= 0.15  # it waited for the lock first
            message = str(info.value)
            assert str(path) in message and "busy_timeout=0.2s" in message
            # readers are not blocked in WAL mode
            assert [j.id for j in await d.list_jobs()] == ["before"]
        finally:
            other.execute("ROLLBACK")
            other.close()
        await d.add_job(one_off("after"))
        assert sorted(j.id for j in await d.list_jobs() if j.id) == ["after", "before"]


@contextmanager
def tiny_filesystem(where: Path, size: str = "1m") -> Iterator[Path]:
    """A small tmpfs (1 MiB by default) mounted at ``where`` (needs root on Linux)."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root on Linux; the page-limit case covers SQLITE_FULL")
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        check=False,
        capture_output=True,
        text=True,
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


async def fill_until_full(d: SQLiteDriver) -> tuple[list[str], DriverError]:
    """Add jobs until a write fails; return the ids stored and the error."""
    stored: list[str] = []
    for i in range(100_000):
        try:
            stored.append(await d.add_job(one_off(f"job-{i}", data="x" * 2000)))
        except DriverError as exc:
            return stored, exc
    raise AssertionError("the store never filled up")


@pytest.mark.parametrize("limit", ["tmpfs", "page-limit"])
async def test_full_disk(tmp_path: Path, clock: VirtualClock, limit: str) -> None:
    with ExitStack() as stack:
        if limit == "tmpfs":
            where = stack.enter_context(tiny_filesystem(tmp_path / "small"))
        else:
            where = tmp_path
        path = where / "tasks.db"
        filler = where / "filler"
        async with opened(SQLiteDriver(path), clock) as d:
            if limit == "tmpfs":
                # leave about 400 KiB for the database and its write-ahead log
                free = shutil.disk_usage(where).free
                filler.write_bytes(b"\0" * max(free - 400 * 1024, 0))
            else:
                pages = (await d._all("PRAGMA page_count"))[0][0]
                await d._all(f"PRAGMA max_page_count = {pages + 40}")
            stored, error = await fill_until_full(d)
            assert "full" in str(error) and str(path) in str(error)
            assert "intact" in str(error)
            assert stored  # some fitted before the disk filled up
            # everything stored before the error is intact and readable
            assert sorted(j.id for j in await d.list_jobs() if j.id) == sorted(stored)
            # space comes back: writing works again
            if limit == "tmpfs":
                filler.unlink()
            else:
                await d._all("PRAGMA max_page_count = 1000000")
            await d.add_job(one_off("after"))
            assert len(await d.list_jobs()) == len(stored) + 1
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        conn.close()


def size(path: Path) -> int:
    return path.stat().st_size


def fill_disk(filler: Path) -> None:
    """Write ``filler`` until the file system has no byte left."""
    with filler.open("wb", buffering=0) as out:
        for chunk in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
            while True:
                try:
                    out.write(b"\0" * chunk)
                except OSError:
                    break


async def test_full_disk_checkpoints_the_wal_and_uses_its_space(
    tmp_path: Path, clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The write-ahead log grows until a checkpoint (SQLite's automatic one runs past 1,000
    pages, about 4 MB). On a full disk, a failed write checkpoints it into the database and
    truncates it, then runs again in the space that gave back."""
    with tiny_filesystem(tmp_path / "small", size="8m") as where:
        path = where / "tasks.db"
        async with opened(SQLiteDriver(path), clock) as d:
            await d.add_jobs([one_off(f"job-{i}", data="x" * 2000) for i in range(50)])
            await d._all("PRAGMA wal_checkpoint(TRUNCATE)")
            for i in range(200):  # about 600 pages of log, none checkpointed yet
                await d.move_to(f"job-{i % 50}", T0 + timedelta(seconds=i))
            wal = Path(f"{path}-wal")
            grown = size(wal)
            assert grown > 1_000_000
            fill_disk(where / "filler")
            assert shutil.disk_usage(where).free < 4096
            await d.add_job(one_off("after", data="y" * 2000))
            assert size(wal) < grown
            assert [j.data for j in await d.list_jobs() if j.id == "after"] == ["y" * 2000]
            # a transaction (a batch) likewise: rolled back, checkpoint, run again (the log
            # holds changes to pages the database already has: copying them needs no space)
            (where / "filler").unlink()
            await d._all("PRAGMA wal_checkpoint(TRUNCATE)")
            for i in range(200):
                await d.move_to(f"job-{i % 50}", T0 + timedelta(seconds=i))
            grown = size(wal)
            assert grown > 1_000_000
            fill_disk(where / "filler1")
            await d.add_jobs([one_off(f"more-{i}", data="m" * 2000) for i in range(10)])
            assert size(wal) < grown
            # when the checkpoint leaves nothing more to free, the error says the disk is full;
            # once space is freed, writing works again
            fill_disk(where / "filler2")
            with pytest.raises(DriverError, match="is full") as info:
                await d.add_jobs([one_off(f"batch-{i}", data="z" * 2000) for i in range(50)])
            assert "intact" in str(info.value) and "checkpoint" in str(info.value)
            (where / "filler2").unlink()
            await d.add_jobs([one_off(f"batch-{i}", data="z" * 2000) for i in range(50)])
            assert len(await d.list_jobs()) == 111
        assert any("checkpointed" in r.getMessage() for r in caplog.records)
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        conn.close()


async def test_a_lock_refused_at_once_is_not_called_a_timeout(
    tmp_path: Path, clock: VirtualClock
) -> None:
    """SQLite does not wait busy_timeout in every case: a write in a transaction whose
    snapshot another connection has since changed fails at once (SQLITE_BUSY_SNAPSHOT)."""
    path = tmp_path / "tasks.db"
    async with opened(SQLiteDriver(path, busy_timeout=5), clock) as d:
        await d.add_job(one_off("before"))
        await d._exec("BEGIN")
        await d._all("SELECT COUNT(*) FROM tickkit_jobs")  # this connection's snapshot
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("UPDATE tickkit_jobs SET runs = 1")
        other.close()
        started = time.monotonic()
        with pytest.raises(DriverError, match="refused the change at once") as info:
            await d.add_job(one_off("during"))
        assert time.monotonic() - started < 2
        message = str(info.value)
        assert "stayed locked" not in message and "refused the change at once" in message
        if sys.version_info >= (3, 11):  # sqlite3 errors carry their code name from 3.11 on
            assert "SQLITE_BUSY_SNAPSHOT" in message
        assert str(path) in message
        await d._exec("ROLLBACK")
        await d.add_job(one_off("after"))


async def test_store_files_are_private(tmp_path: Path, clock: VirtualClock) -> None:
    """A new store and its -wal and -shm files are 0600 whatever the umask; an existing file
    keeps its mode."""
    old_umask = os.umask(0o022)
    try:
        path = tmp_path / "tasks.db"
        async with opened(SQLiteDriver(path), clock) as d:
            await d.add_job(one_off("kept"))
            for name in ("tasks.db", "tasks.db-wal", "tasks.db-shm"):
                assert (tmp_path / name).stat().st_mode & 0o777 == 0o600, name
        assert os.umask(0o022) == 0o022  # the process umask is untouched
        shared = tmp_path / "shared.db"
        with sqlite3.connect(shared):
            pass  # created by another tool with the umask: 0644
        assert shared.stat().st_mode & 0o777 == 0o644
        async with opened(SQLiteDriver(shared), clock) as d:
            await d.add_job(one_off("kept"))
            for name in ("shared.db", "shared.db-wal", "shared.db-shm"):
                assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name
    finally:
        os.umask(old_umask)


async def test_missing_directory_and_directory_path(tmp_path: Path, clock: VirtualClock) -> None:
    with pytest.raises(DriverError, match="does not exist") as info:
        async with opened(SQLiteDriver(tmp_path / "nowhere" / "tasks.db"), clock):
            pass
    assert str(tmp_path / "nowhere") in str(info.value)
    with pytest.raises(DriverError, match="is a directory"):
        async with opened(SQLiteDriver(tmp_path), clock):
            pass
