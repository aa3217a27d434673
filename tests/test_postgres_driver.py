"""The PostgreSQL driver against a real server: URLs and options, concurrent migrations,
poisoned rows, LISTEN/NOTIFY wake-ups, a connection cut mid-run, several processes, and
transactional create on the caller's own connection."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from tickkit import (
    UTC,
    DriverError,
    IncompatibleStoreError,
    InvalidArgumentError,
    Job,
    JobExistsError,
    JobState,
    Kernel,
    TaskContext,
    TaskRegistry,
    task,
)
from tickkit.testing import VirtualClock

from .postgres_server import SERVER_URL, pg_database, pg_schema, private_server
from .waiting import wait_for

postgres = pytest.importorskip("tickkit.drivers.postgres")
asyncpg = pytest.importorskip("asyncpg")
PostgresDriver = postgres.PostgresDriver

__all__ = ["pg_database", "pg_schema", "private_server"]

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=UTC)
WORKER = Path(__file__).parent / "postgres_helpers" / "worker.py"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def recording(runs: list[Any]) -> TaskRegistry:
    registry = TaskRegistry()

    async def record(ctx: TaskContext) -> None:
        runs.append((ctx.job_id, ctx.data, ctx.attempt))

    task(name="record", execute=record, registry=registry)
    return registry


def job(at: datetime = T0, **kw: Any) -> Job:
    return Job(
        id=kw.pop("id", None),
        name=kw.pop("name", "record"),
        next_run_at=at,
        scheduled_at=at,
        created_at=T0,
        **kw,
    )


# --- URLs and options --------------------------------------------------------------------


def test_url_options_and_refusals() -> None:
    d = PostgresDriver.from_url(
        "postgresql://bot:s3cret@db.example:5433/app?schema=jobs&poll_interval=5"
        "&lease_duration=12&keep_failed=false&history_limit=7&pool_size=3&sslmode=disable"
    )
    assert d.schema == "jobs" and d.poll_interval == 5 and d.lease_duration == 12
    assert d.keep_failed.keep_all is False and d.history_limit == 7 and d.pool_size == 3
    assert "sslmode=disable" in d.dsn and "schema" not in d.dsn
    assert "s3cret" not in repr(d)
    for url, named in (
        ("postgresql://bot:s3cret@h/db?colour=red", "'colour'"),
        ("postgresql://bot:s3cret@h/db?poll_interval=soon", "poll_interval"),
        ("postgresql://bot:s3cret@h/db?schema=Bad-Name", "'Bad-Name'"),
        ("postgresql://bot:s3cret@h/db?keep_failed=maybe", "keep_failed"),
        ("postgresql://bot:s3cret@h/db?pool_size=0", "pool_size"),
        ("postgresql://bot:s3cret@h:notaport/db", "postgresql URL"),
    ):
        with pytest.raises(DriverError) as info:
            PostgresDriver.from_url(url)
        assert named in str(info.value), (url, str(info.value))
        assert "s3cret" not in str(info.value)


async def test_entry_points_and_unreachable_server_keeps_the_password() -> None:
    for scheme in ("postgresql", "postgres"):
        kernel = Kernel(
            f"{scheme}://bot:s3cret@127.0.0.1:1/nodb?reconnect_timeout=0", tasks=TaskRegistry()
        )
        with pytest.raises(DriverError) as info:
            await kernel.open()
        assert isinstance(kernel.driver, PostgresDriver)
        assert "s3cret" not in str(info.value) and "127.0.0.1" in str(info.value)


# --- schema --------------------------------------------------------------------------------


async def test_foreign_schema_is_refused_untouched(pg_database: str, pg_schema: str) -> None:
    conn = await asyncpg.connect(pg_database)
    try:
        await conn.execute(f"CREATE SCHEMA {pg_schema}; CREATE TABLE {pg_schema}.users (x int)")
        kernel = Kernel(PostgresDriver(pg_database, schema=pg_schema), tasks=TaskRegistry())
        with pytest.raises(IncompatibleStoreError, match="users"):
            await kernel.open()
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = $1", pg_schema
        )
        assert [r[0] for r in tables] == ["users"]
        # a store written by a newer tickkit is refused
        other = pg_schema + "_new"
        k2 = Kernel(PostgresDriver(pg_database, schema=other), tasks=TaskRegistry())
        await k2.open()
        await k2.stop()
        await conn.execute(f"INSERT INTO {other}.version VALUES (99, 'future', 0)")
        k3 = Kernel(PostgresDriver(pg_database, schema=other), tasks=TaskRegistry())
        with pytest.raises(IncompatibleStoreError, match="99"):
            await k3.open()
    finally:
        await conn.close()


@pytest.mark.slow
def test_many_processes_create_the_schema_at_once(
    pg_database: str, pg_schema: str, tmp_path: Path
) -> None:
    out = tmp_path / "opened.log"
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), pg_database, pg_schema, str(out), "--open-only"]
        )
        for _ in range(6)
    ]
    codes = [p.wait(60) for p in procs]
    assert codes == [0] * 6
    assert len(out.read_text().splitlines()) == 6

    async def versions() -> list[Any]:
        conn = await asyncpg.connect(pg_database)
        try:
            return list(await conn.fetch(f"SELECT version FROM {pg_schema}.version"))
        finally:
            await conn.close()

    assert [r[0] for r in asyncio.run(versions())] == [m.version for m in postgres.MIGRATIONS]


# --- poisoned rows -------------------------------------------------------------------------


async def test_poisoned_rows_fail_alone_once_and_stay_listable(
    pg_database: str, pg_schema: str
) -> None:
    runs: list[Any] = []
    clock = VirtualClock(T0)
    driver = PostgresDriver(pg_database, schema=pg_schema, poll_interval=300)
    kernel = Kernel(driver, tasks=recording(runs), clock=clock)
    await kernel.open()
    good = await kernel.create_task("record", {"ok": 1}, T0)
    bad = {
        "bad-data": ("data = 'not json {'", "data"),
        "bad-state": ("state = 'exploded'", "state"),
        "bad-schedule": ("schedule = '[1, 2'", "schedule"),
        "bad-time": ("scheduled_at = 999999999999999999", "scheduled_at"),
        "no-due-time": ("next_run_at = NULL", "next_run_at"),
        "bad-meta": ("meta = '[]'", "meta"),
    }
    for job_id, (change, _column) in bad.items():
        await driver.add_job(job(id=job_id, data={"n": job_id}))
        conn = await asyncpg.connect(pg_database)
        try:
            await conn.execute(f"UPDATE {pg_schema}.jobs SET {change} WHERE id = $1", job_id)
        finally:
            await conn.close()
    listed = {j.id: j for j in await driver.list_jobs()}
    for job_id, (_change, column) in bad.items():
        assert listed[job_id].defect is not None and column in listed[job_id].defect, job_id
    assert listed[good].defect is None
    await kernel.stop()
    async with Kernel(driver, tasks=recording(runs), clock=clock):
        await clock.advance(timedelta(seconds=5))
        await clock.advance(timedelta(seconds=5))
    assert [r[0] for r in runs] == [good]
    for job_id, (_change, column) in bad.items():
        stored = await _get(driver, job_id, clock)
        assert stored is not None, job_id  # kept in the dead-letter view
        assert stored.state is JobState.FAILED, (job_id, stored.state)
        assert stored.runs == 1, job_id  # failed once, not in a loop
        assert stored.last_error is not None and column in stored.last_error, job_id


async def _get(driver: Any, job_id: str, clock: VirtualClock) -> Job | None:
    async with Kernel(driver, tasks=TaskRegistry(), clock=clock):
        result: Job | None = await driver.get_job(job_id)
    return result


async def test_bad_input_stores_nothing(pg_database: str, pg_schema: str) -> None:
    driver = PostgresDriver(pg_database, schema=pg_schema)
    async with Kernel(driver, tasks=recording([]), clock=VirtualClock(T0)) as kernel:
        with pytest.raises(Exception, match="no-such-task"):
            await kernel.create_task("no-such-task", 1, T0)
        first = await kernel.create_task("record", 1, T0, id="mine")
        with pytest.raises(Exception, match="'mine'"):
            await kernel.create_task("record", 2, T0, id="mine")
        assert [j.id for j in await driver.list_jobs()] == [first]
        with pytest.raises(Exception, match="invalid index key"):
            await driver.ensure_indexes(['bad"key'])


# --- wake-ups, connection cuts, processes -------------------------------------------------


async def test_notify_wakes_another_process_without_polling(
    pg_database: str, pg_schema: str
) -> None:
    runs: list[Any] = []
    # an hour between polls: only the notification can wake the runner
    runner = PostgresDriver(pg_database, schema=pg_schema, poll_interval=3600)
    other = PostgresDriver(pg_database, schema=pg_schema, poll_interval=3600)
    # the other process only opens its kernel (it does not dispatch): only the runner runs
    opened = Kernel(other, tasks=recording([]))
    await opened.open()
    try:
        async with Kernel(runner, tasks=recording(runs)):
            await asyncio.sleep(0.3)  # idle, nothing due: sleeping for an hour
            await other.add_job(job(opened.clock.now(), data="wake"))
            started = time.monotonic()
            await wait_for(lambda: bool(runs), 5, "the runner to be woken by NOTIFY")
            assert time.monotonic() - started < 3
    finally:
        await opened.stop()
    assert runner.notifications >= 1


async def test_connection_cut_mid_run_loses_nothing(pg_database: str, pg_schema: str) -> None:
    runs: list[Any] = []
    registry = TaskRegistry()

    async def record(ctx: TaskContext) -> None:
        await asyncio.sleep(0.01)
        runs.append(ctx.job_id)

    task(name="record", execute=record, registry=registry)
    driver = PostgresDriver(pg_database, schema=pg_schema, poll_interval=1, lease_duration=2)
    with anyio.fail_after(90):  # a hang (in the run or the shutdown) fails, with its stack
        async with Kernel(driver, tasks=registry, concurrency=8) as kernel:
            now = kernel.clock.now()
            ids = await driver.add_jobs([job(now, id=f"j{i}") for i in range(300)])
            cuts = 0
            for _ in range(5):
                await asyncio.sleep(0.15)
                cuts += await _terminate_backends(pg_database)
            assert cuts > 0

            async def drained() -> bool:
                return await driver.count_jobs() == {} and set(runs) == set(ids)

            await wait_for(drained, 30, "every job to run once the connections came back")
    assert set(runs) == set(ids)


async def _terminate_backends(url: str) -> int:
    """Terminate every backend of the database but the caller's own; return how many."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return sum(1 for r in rows if r[0])
    finally:
        await conn.close()


class Workers:
    def __init__(self, url: str, schema: str, tmp: Path) -> None:
        self.url, self.schema, self.tmp = url, schema, tmp
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, label: str, *args: str) -> Path:
        out = self.tmp / f"{label}.log"
        self.procs[label] = subprocess.Popen(
            [sys.executable, str(WORKER), self.url, self.schema, str(out), *args]
        )
        deadline = time.monotonic() + 20
        while not Path(f"{out}.ready").exists():
            assert self.procs[label].poll() is None, f"worker {label} exited at start"
            assert time.monotonic() < deadline, f"worker {label} not ready"
            time.sleep(0.02)
        return out

    def kill(self, label: str) -> None:
        proc = self.procs.pop(label)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop_all(self) -> dict[str, int]:
        codes = {}
        for proc in self.procs.values():
            proc.send_signal(signal.SIGTERM)
        for label, proc in self.procs.items():
            try:
                codes[label] = proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[label] = proc.wait(5)
        self.procs.clear()
        return codes


@pytest.fixture
def workers(pg_database: str, pg_schema: str, tmp_path: Path) -> Iterator[Workers]:
    group = Workers(pg_database, pg_schema, tmp_path)
    try:
        yield group
    finally:
        group.stop_all()


def lines(*paths: Path) -> list[list[str]]:
    found = []
    for path in paths:
        if path.exists():
            found += [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    return found


@pytest.mark.slow
async def test_three_processes_run_each_of_1000_jobs_once(workers: Workers) -> None:
    admin = Kernel(PostgresDriver(workers.url, schema=workers.schema), tasks=recording([]))
    await admin.open()
    try:
        outs = [workers.start(f"w{i}") for i in range(3)]
        now = admin.clock.now()
        due = now + timedelta(seconds=1)
        driver = admin.driver
        ids = await driver.add_jobs([job(due, id=f"job-{i}") for i in range(1000)])
        await wait_for(lambda: len(lines(*outs)) >= 1000, 40, "1000 runs")

        async def empty() -> bool:
            return await driver.count_jobs() == {}

        await wait_for(empty, 10, "the store to empty")
    finally:
        await admin.stop()
    assert set(workers.stop_all().values()) == {0}
    runs = lines(*outs)
    per_job = Counter(run[1] for run in runs)
    assert sorted(per_job) == sorted(ids)
    assert set(per_job.values()) == {1}, [j for j, n in per_job.items() if n > 1][:10]
    assert all(run[0] == "ran" and run[2] == "1" for run in runs)
    assert len(Counter(run[3] for run in runs)) >= 2  # the work was shared


@pytest.mark.slow
async def test_sigkill_mid_run_runs_again_after_the_lease(workers: Workers) -> None:
    admin = Kernel(PostgresDriver(workers.url, schema=workers.schema), tasks=recording([]))
    await admin.open()
    try:
        driver = admin.driver
        first = workers.start("first", "--lease", "1.5", "--poll", "0.5")
        now = admin.clock.now()
        await driver.add_job(job(now, id="slow-1", name="slow"))
        await wait_for(
            lambda: ["start", "slow-1", "1"] in [ln[:3] for ln in lines(first)], 15, "start"
        )
        workers.kill("first")
        killed = time.monotonic()
        second = workers.start("second", "--lease", "1.5", "--poll", "0.5")
        await wait_for(
            lambda: ["done", "slow-1", "2"] in [ln[:3] for ln in lines(second)], 20, "re-run"
        )
        assert time.monotonic() - killed >= 1.0

        async def gone() -> bool:
            return await driver.get_job("slow-1") is None

        await wait_for(gone, 10, "the outcome to be recorded")
    finally:
        await admin.stop()


# --- transactional create ------------------------------------------------------------------


async def test_create_in_the_callers_transaction(pg_database: str, pg_schema: str) -> None:
    runs: list[Any] = []
    runner = PostgresDriver(pg_database, schema=pg_schema, poll_interval=3600)
    creator = PostgresDriver(pg_database, schema=pg_schema, poll_interval=3600)
    pool = await asyncpg.create_pool(pg_database, min_size=1, max_size=2)
    try:
        await pool.execute("CREATE TABLE IF NOT EXISTS public.reminders_t (id text)")
        # the creating process only opens its kernel (a bot's command handler): the runner
        # runs the job, woken by the NOTIFY sent on commit
        k = Kernel(creator, tasks=recording([]))
        await k.open()
        async with Kernel(runner, tasks=recording(runs)):
            later = k.clock.now() + timedelta(days=1)
            # rolled back: neither the row nor the job exists
            async with pool.acquire() as conn:
                tx = conn.transaction()
                await tx.start()
                await conn.execute("INSERT INTO public.reminders_t VALUES ('r1')")
                async with creator.using(conn):
                    gone = await k.create_task("record", "r1", later)
                await tx.rollback()
            assert await creator.get_job(gone) is None
            assert await pool.fetchval("SELECT count(*) FROM public.reminders_t") == 0
            # committed: visible only from the commit on, and its NOTIFY wakes the runner
            async with pool.acquire() as conn:
                tx = conn.transaction()
                await tx.start()
                await conn.execute("INSERT INTO public.reminders_t VALUES ('r2')")
                async with creator.using(conn):
                    kept = await k.create_task("record", "r2", k.clock.now())
                assert await creator.get_job(kept) is None  # not committed yet
                await asyncio.sleep(0.3)
                assert runs == []
                await tx.commit()
            await wait_for(lambda: bool(runs), 5, "the committed job to run")
            assert runs[0][:2] == (kept, "r2")
            # an id that exists: JobExistsError, and the caller's transaction goes on
            fixed = await k.create_task("record", "fixed", later, id="fixed")
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("INSERT INTO public.reminders_t VALUES ('r4')")
                async with creator.using(conn):
                    with pytest.raises(JobExistsError, match="'fixed'"):
                        await k.create_task("record", "again", later, id=fixed)
                await conn.execute("INSERT INTO public.reminders_t VALUES ('r5')")
            assert await pool.fetchval("SELECT count(*) FROM public.reminders_t") == 3
            # outside the block the driver's own connections are used again
            own = await k.create_task("record", "r3", later)
            assert await creator.get_job(own) is not None
            with pytest.raises(Exception, match="asyncpg connection"):
                async with creator.using("not a connection"):
                    pass
        await k.stop()
    finally:
        await pool.execute("DROP TABLE IF EXISTS public.reminders_t")
        await pool.close()


async def test_create_task_connection_keyword(pg_database: str, pg_schema: str) -> None:
    """``create_task(..., connection=conn)``: the kernel's spelling of ``driver.using``."""
    driver = PostgresDriver(pg_database, schema=pg_schema, poll_interval=3600)
    k = Kernel(driver, tasks=recording([]))
    await k.open()
    conn = await asyncpg.connect(pg_database)
    try:
        later = k.clock.now() + timedelta(days=1)
        tx = conn.transaction()
        await tx.start()
        gone = await k.create_task("record", "r1", later, connection=conn)
        assert await driver.get_job(gone) is None  # not committed yet
        await tx.rollback()
        assert await driver.get_job(gone) is None
        async with conn.transaction():
            kept = await k.create_task("record", "r2", later, connection=conn)
        job = await driver.get_job(kept)
        assert job is not None and job.data == "r2"
        # a wrong connection is refused at the call, naming it, and nothing is stored
        with pytest.raises(InvalidArgumentError, match="'not a connection'"):
            await k.create_task("record", "r3", later, connection="not a connection")
        assert await k.count_tasks() == 1
    finally:
        await conn.close()
        await k.stop()


async def test_create_task_connection_refused_without_transactions() -> None:
    async with Kernel("memory://", tasks=recording([])) as k:
        with pytest.raises(DriverError, match="MemoryDriver cannot create a job on a connection"):
            await k.create_task("record", "x", connection=object())
        assert await k.count_tasks() == 0


def test_server_url_default() -> None:
    assert SERVER_URL.startswith("postgresql://")


@pytest.mark.slow
async def test_server_restart_mid_run_loses_nothing(private_server: Any) -> None:
    runs: list[Any] = []
    registry = TaskRegistry()

    async def record(ctx: TaskContext) -> None:
        await asyncio.sleep(0.005)
        runs.append(ctx.job_id)

    task(name="record", execute=record, registry=registry)
    driver = PostgresDriver(
        private_server.url, poll_interval=1, lease_duration=3, reconnect_timeout=30
    )
    async with Kernel(driver, tasks=registry, concurrency=4) as kernel:
        now = kernel.clock.now()
        ids = await driver.add_jobs([job(now, id=f"r{i}") for i in range(400)])
        await wait_for(lambda: len(runs) >= 20, 10, "the first runs")
        await anyio.to_thread.run_sync(private_server.stop)
        stopped_with = len(set(runs))
        await anyio.to_thread.run_sync(private_server.start)
        # jobs created while the server was coming back are kept too
        late = await kernel.create_task("record", "late")

        async def drained() -> bool:
            return await driver.count_jobs() == {} and set(runs) >= {*ids, late}

        await wait_for(drained, 60, "every job to run after the restart")
    assert stopped_with < len(ids)  # the restart happened mid-run
    assert set(runs) == {*ids, late}


async def test_notifications_only_when_a_job_is_due_sooner(
    pg_database: str, pg_schema: str
) -> None:
    runs: list[Any] = []
    runner = PostgresDriver(pg_database, schema=pg_schema, poll_interval=3600)
    other = PostgresDriver(pg_database, schema=pg_schema, poll_interval=3600)
    opened = Kernel(other, tasks=recording([]))
    await opened.open()
    try:
        async with Kernel(runner, tasks=recording(runs)) as kernel:
            now = kernel.clock.now()
            await other.add_job(job(now + timedelta(hours=2), id="in-2h"))
            await wait_for(lambda: runner.notifications == 1, 5, "the first notification")
            await asyncio.sleep(0.3)  # the runner re-read the store: it sleeps 2 hours
            # later than what the runner sleeps until: no wake-up
            await other.add_job(job(now + timedelta(hours=3), id="in-3h"))
            await other.add_jobs([job(now + timedelta(hours=4), id=f"b{i}") for i in range(3)])
            await asyncio.sleep(0.5)
            assert runner.notifications == 1
            # sooner: a wake-up, and it runs
            await other.add_job(job(now, id="now"))
            await wait_for(lambda: bool(runs), 5, "the due job to run")
            assert runner.notifications == 2
            assert [r[0] for r in runs] == ["now"]
    finally:
        await opened.stop()


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_trio_is_refused_clearly(anyio_backend: str, pg_database: str) -> None:
    kernel = Kernel(pg_database)
    with pytest.raises(DriverError, match=r"PostgresDriver.*does not support trio"):
        await kernel.start()
    assert kernel.state == "stopped"
