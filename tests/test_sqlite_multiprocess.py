"""Several real processes on one SQLite file: each due job runs once; a SIGKILL mid-run.

The workers (tests/shard_worker.py, shared with the PostgreSQL tests) run a kernel on the real
clock and record every run in a file of their own. The tests wait on conditions with bounded
timeouts.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import anyio
import pytest

from tickkit import Job, Kernel, TaskRegistry, task
from tickkit.drivers.sqlite import MIGRATIONS, SQLiteDriver

from .shard_worker import Workers, lines

pytestmark = [pytest.mark.slow, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FileWorkers(Workers):
    """Workers on one SQLite file, ``db``."""

    def __init__(self, db: Path, tmp: Path) -> None:
        super().__init__(f"sqlite:///{db}", tmp)
        self.db = db


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[FileWorkers]:
    group = FileWorkers(tmp_path / "shared.db", tmp_path)
    try:
        yield group
    finally:
        group.stop_all()


def wait_for(condition: Callable[[], bool], timeout: float) -> None:
    """Check ``condition`` every 20 ms until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.02)


def registry() -> TaskRegistry:
    reg = TaskRegistry()

    async def noop(ctx: object) -> None:
        return None

    task(name="record", execute=noop, registry=reg)
    task(name="slow", execute=noop, registry=reg)
    return reg


async def test_three_processes_run_each_of_1000_jobs_once(workers: FileWorkers) -> None:
    # the store exists before the workers start; jobs are added afterwards, as another process
    # would, so that the workers see them through their poll (default interval, 1 s)
    admin = Kernel(SQLiteDriver(workers.db), tasks=registry())
    await admin.open()
    outs = [workers.start(f"w{i}") for i in range(3)]
    now = admin.clock.now()
    due = now + timedelta(seconds=2)
    driver = admin.driver
    assert isinstance(driver, SQLiteDriver)
    ids = await driver.add_jobs(
        [
            Job(id=f"job-{i}", name="record", next_run_at=due, scheduled_at=due, created_at=now)
            for i in range(1000)
        ]
    )

    def finished() -> bool:
        return len(lines(*outs)) >= 1000

    await anyio.to_thread.run_sync(wait_for, finished, 25)
    # nothing is left in the store once every run completed (finished one-offs are removed)
    for _ in range(250):
        if not await driver.count_jobs():
            break
        await anyio.sleep(0.02)
    assert await driver.count_jobs() == {}
    await admin.stop()
    assert set(workers.stop_all().values()) == {0}

    runs = lines(*outs)
    per_job = Counter(run[1] for run in runs)
    assert sorted(per_job) == sorted(ids)
    assert set(per_job.values()) == {1}, [j for j, n in per_job.items() if n > 1][:10]
    assert all(run[0] == "ran" and run[2] == "1" for run in runs)
    # the work was shared: more than one process ran jobs
    per_process = Counter(run[3] for run in runs)
    assert len(per_process) >= 2, per_process


async def test_sigkill_mid_run_runs_again_and_store_is_intact(workers: FileWorkers) -> None:
    admin = Kernel(SQLiteDriver(workers.db, keep_completed=True), tasks=registry())
    await admin.open()
    try:
        driver = admin.driver
        assert isinstance(driver, SQLiteDriver)
        first = workers.start("first", "--lease", "1.5", "--poll", "0.2", "--keep-completed")
        now = admin.clock.now()
        # many quick jobs keep the first worker writing while it is killed
        await driver.add_jobs(
            [Job(id="slow-1", name="slow", next_run_at=now, scheduled_at=now, created_at=now)]
            + [
                Job(
                    id=f"quick-{i}",
                    name="record",
                    next_run_at=now,
                    scheduled_at=now,
                    created_at=now,
                )
                for i in range(300)
            ]
        )
        await anyio.to_thread.run_sync(
            wait_for, lambda: ["start", "slow-1", "1"] in [ln[:3] for ln in lines(first)], 15
        )
        workers.kill("first")
        killed_at = time.monotonic()
        stored = await driver.get_job("slow-1")
        assert stored is not None and stored.state.value == "running"

        second = workers.start("second", "--lease", "1.5", "--poll", "0.2", "--keep-completed")

        def slow_done() -> bool:
            return ["done", "slow-1", "2"] in [ln[:3] for ln in lines(second)]

        await anyio.to_thread.run_sync(wait_for, slow_done, 20)
        # it ran again only once the killed worker's lease (1.5 s) had expired
        assert time.monotonic() - killed_at >= 1.0
        ran = {ln[1] for ln in lines(first, second) if ln[0] == "ran"}
        for _ in range(500):
            if len(ran) == 300:
                break
            await anyio.sleep(0.02)
            ran = {ln[1] for ln in lines(first, second) if ln[0] == "ran"}
        assert ran == {f"quick-{i}" for i in range(300)}  # at least once each
        # the task writes its "done" line before the kernel records the outcome (the driver
        # batches outcome writes): wait for the record, not only for the line
        job = await driver.get_job("slow-1")
        for _ in range(500):
            if job is not None and job.state.value != "running":
                break
            await anyio.sleep(0.02)
            job = await driver.get_job("slow-1")
        assert job is not None
        assert job.state.value == "completed"
        assert job.attempt == 2  # the killed attempt counted
        assert job.runs == 1
    finally:
        await admin.stop()  # a failed assertion must not leave the store's thread running
    assert set(workers.stop_all().values()) == {0}

    with sqlite3.connect(workers.db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        states = dict(conn.execute("SELECT state, COUNT(*) FROM tickkit_jobs GROUP BY state"))
    assert states == {"completed": 301}


OPEN_AND_ADD = """
import asyncio, sys
from tickkit import Kernel, TaskRegistry, task
from tickkit.drivers.sqlite import MIGRATIONS, SQLiteDriver

async def main():
    reg = TaskRegistry()

    async def noop(ctx):
        pass

    task(name="noop", execute=noop, registry=reg)
    kernel = Kernel(SQLiteDriver(sys.argv[1]), tasks=reg)
    await kernel.open()
    await kernel.create_task("noop", None, id=sys.argv[2])
    await kernel.stop()

asyncio.run(main())
"""


def test_processes_opening_a_new_store_together_all_succeed(tmp_path: Path) -> None:
    """Each process switches a new file to WAL; SQLite refuses that switch at once (without
    waiting busy_timeout) while another process is at the same step, so the driver retries
    it. Several rounds of four processes starting together on a new file: every one opens
    the store and adds its job."""
    script = tmp_path / "open_and_add.py"
    script.write_text(OPEN_AND_ADD)
    for round_ in range(5):
        db = tmp_path / f"new-{round_}.db"
        procs = [
            subprocess.Popen(
                [sys.executable, str(script), str(db), f"job{i}"],
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(4)
        ]
        errors = [p.communicate(timeout=60)[1] for p in procs]
        assert [p.returncode for p in procs] == [0] * 4, errors
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            ids = sorted(row[0] for row in conn.execute("SELECT id FROM tickkit_jobs"))
        assert ids == [f"job{i}" for i in range(4)]


_INDEXER = """
import sys, anyio
from tickkit import Kernel, TaskRegistry
from tickkit.drivers.sqlite import MIGRATIONS, SQLiteDriver

async def main() -> None:
    driver = SQLiteDriver(sys.argv[1], busy_timeout=20)
    async with Kernel(driver, tasks=TaskRegistry()):
        await driver.ensure_indexes(["user_id", "guild"])
        await driver.ensure_indexes(["user_id"])

anyio.run(main)
"""


def test_processes_starting_together_index_once(tmp_path: Path) -> None:
    """Four processes open a new store at once and each ensures the same indexes: every one
    succeeds, the schema is migrated once, and each key has one recorded row and one index."""
    db = tmp_path / "together.db"
    procs = [
        subprocess.Popen([sys.executable, "-c", _INDEXER, str(db)], stderr=subprocess.PIPE)
        for _ in range(4)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode(errors="replace")
    with sqlite3.connect(db) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM tickkit_version")]
        keys = sorted(r[0] for r in conn.execute("SELECT key FROM tickkit_indexes"))
        indexes = conn.execute(
            "SELECT COUNT(*) FROM sqlite_master "
            "WHERE type = 'index' AND name LIKE 'tickkit_where_%'"
        ).fetchone()
    assert versions == [m.version for m in MIGRATIONS]
    assert keys == ["guild", "user_id"] and indexes == (2,)
