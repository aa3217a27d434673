"""The PostgreSQL driver against a real server: URLs and options, concurrent migrations,
poisoned rows, LISTEN/NOTIFY wake-ups, a connection cut mid-run, several processes, and
transactional create on the caller's own connection."""

from __future__ import annotations

import asyncio
import json
import logging
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
    Outcome,
    RunResult,
    TaskContext,
    TaskRegistry,
    task,
)
from tickkit.testing import VirtualClock

from .postgres_server import SERVER_URL, pg_database, pg_schema, private_server
from .shard_worker import Workers, lines
from .test_cli import one_error_line, tickkit
from .waiting import wait_for

postgres = pytest.importorskip("tickkit.drivers.postgres")
asyncpg = pytest.importorskip("asyncpg")
PostgresDriver = postgres.PostgresDriver

__all__ = ["pg_database", "pg_schema", "private_server"]

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=UTC)


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
            [
                sys.executable,
                str(Path(__file__).parent / "shard_worker.py"),
                f"{pg_database}?schema={pg_schema}",
                str(out),
                "--open-only",
            ]
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


_INDEXER = """
import sys, anyio
from tickkit import Kernel, TaskRegistry

async def main() -> None:
    kernel = Kernel(sys.argv[1], tasks=TaskRegistry())
    await kernel.open()
    try:
        await kernel.driver.ensure_indexes(["user_id", "guild"])
        await kernel.driver.ensure_indexes(["user_id"])
    finally:
        await kernel.stop()

anyio.run(main)
"""


@pytest.mark.slow
def test_processes_starting_together_index_once(pg_database: str, pg_schema: str) -> None:
    """Four processes open a new schema at once and each ensures the same indexes: every one
    succeeds, the schema is migrated once, and each key has one recorded row and one index."""
    url = f"{pg_database}?schema={pg_schema}"
    procs = [
        subprocess.Popen([sys.executable, "-c", _INDEXER, url], stderr=subprocess.PIPE)
        for _ in range(4)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode(errors="replace")

    async def read() -> tuple[list[Any], list[Any], int]:
        conn = await asyncpg.connect(pg_database)
        try:
            versions = [r[0] for r in await conn.fetch(f"SELECT version FROM {pg_schema}.version")]
            keys = sorted(r[0] for r in await conn.fetch(f"SELECT key FROM {pg_schema}.indexes"))
            indexes = await conn.fetchval(
                "SELECT COUNT(*) FROM pg_indexes WHERE schemaname = $1 "
                "AND indexname LIKE 'jobs_where_%'",
                pg_schema,
            )
            return versions, keys, indexes
        finally:
            await conn.close()

    versions, keys, indexes = asyncio.run(read())
    # each migration applied once: one row per version, 1 to the latest
    assert sorted(versions) == list(range(1, postgres.LATEST_VERSION + 1))
    assert keys == ["guild", "user_id"] and indexes == 2


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


async def test_connection_cut_mid_run_loses_nothing(
    pg_database: str, pg_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
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
    # every call went on at once on a new connection: none waited for command_timeout on a
    # connection the cut left broken (asyncpg 0.29 handed such connections out again)
    assert "TimeoutError" not in caplog.text
    assert "could not record the outcome" not in caplog.text


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


async def test_a_claim_in_flight_elsewhere_does_not_hide_the_next_due_time(
    pg_database: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another worker's claim holds the due job "t" for a moment: ``acquire`` skips it (SKIP
    LOCKED), and once that claim committed it reports the next due time ("j"), not t's. A due
    time in the past with nothing claimed makes the kernel wait for a wake-up or the poll:
    of four processes on one store, those that lost the race for a job slept while others
    came due (one process ran all 1000 jobs of the multi-process test)."""
    # pauses long enough that the other claim commits (after 0.1 s) during them under load
    monkeypatch.setattr(postgres, "_CLAIMED_ELSEWHERE", (0.3, 0.6, 1.0, None))
    driver = PostgresDriver(pg_database, schema=pg_schema, poll_interval=3600)
    kernel = Kernel(driver, tasks=recording([]), clock=VirtualClock(T0))
    await kernel.open()
    try:
        await driver.add_jobs([job(T0, id="t"), job(T0 + timedelta(seconds=1), id="j")])
        other = await asyncpg.connect(pg_database)
        try:
            tx = other.transaction()
            await tx.start()
            await other.execute(f"SELECT 1 FROM {pg_schema}.jobs WHERE id = 't' FOR UPDATE")

            async def commit_the_other_claim() -> None:
                await asyncio.sleep(0.1)
                expires = int(T0.timestamp() * 1000) + 60_000
                await other.execute(
                    f"UPDATE {pg_schema}.jobs SET state = 'running', attempt = attempt + 1, "
                    "lease_owner = 'other', lease_token = 'x', lease_expires_at = $1 "
                    "WHERE id = 't'",
                    expires,
                )
                await tx.commit()

            committer = asyncio.create_task(commit_the_other_claim())
            acquired = await driver.acquire(now=T0, limit=4)
            await committer
        finally:
            await other.close()
        assert acquired.claims == []
        assert acquired.next_due == T0 + timedelta(seconds=1)
    finally:
        await kernel.stop()


async def test_a_claim_whose_answer_was_lost_is_taken_back(
    pg_database: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection is cut (the backend terminated on the real server) after the claim
    statement committed and before acquire's next statement: the try on a new connection takes
    back the jobs the first try leased. They used to wait for their lease to expire (30 s by
    default): the stall seen in the connection-cut tests, mostly on asyncpg 0.29."""
    driver = PostgresDriver(pg_database, schema=pg_schema, poll_interval=3600)
    kernel = Kernel(driver, tasks=recording([]), clock=VirtualClock(T0))
    await kernel.open()
    try:
        ids = await driver.add_jobs([job(T0, id=f"c{i}") for i in range(5)])
        fetchval = asyncpg.connection.Connection.fetchval
        cut: list[int] = []

        async def cut_before_the_next_statement(self: Any, query: str, *args: Any) -> Any:
            if "MIN(next_run_at)" in query and not cut:
                cut.append(self.get_server_pid())
                admin = await asyncpg.connect(pg_database)
                try:
                    await admin.fetchval("SELECT pg_terminate_backend($1)", cut[0])
                finally:
                    await admin.close()
            return await fetchval(self, query, *args)

        monkeypatch.setattr(
            asyncpg.connection.Connection, "fetchval", cut_before_the_next_statement
        )
        acquired = await driver.acquire(now=T0, limit=10)
        monkeypatch.undo()
        assert cut  # the cut happened where it should
        assert sorted(c.job.id for c in acquired.claims) == sorted(ids)
        assert all(c.attempt == 1 for c in acquired.claims)
        # the claims are whole: each completes (its lease and revision match)
        for claim in acquired.claims:
            await driver.complete(claim, RunResult(Outcome.SUCCEEDED, T0, started_at=T0))
        assert await driver.count_jobs() == {}
    finally:
        await kernel.stop()


@pytest.fixture
def workers(pg_database: str, pg_schema: str, tmp_path: Path) -> Iterator[Workers]:
    """Worker processes (tests/shard_worker.py) on the test's own schema."""
    group = Workers(f"{pg_database}?schema={pg_schema}", tmp_path)
    try:
        yield group
    finally:
        group.stop_all()


@pytest.mark.slow
async def test_four_processes_run_each_job_and_each_cron_occurrence_once(
    workers: Workers,
) -> None:
    """Four shards on one schema, woken through NOTIFY (a 30 s poll): each of 1000 one-offs
    runs once, the work is shared, and the every-second static cron all four declare runs
    each of its occurrences once, with no gap."""
    admin = Kernel(workers.url, tasks=recording([]))
    await admin.open()
    try:
        outs = [workers.start(f"w{i}", "--poll", "30", "--tick") for i in range(4)]
        now = admin.clock.now()
        due = now + timedelta(seconds=1)
        driver = admin.driver
        ids = await driver.add_jobs([job(due, id=f"job-{i}") for i in range(1000)])

        def ran() -> list[list[str]]:
            return [ln for ln in lines(*outs) if ln[0] == "ran"]

        await wait_for(lambda: len(ran()) >= 1000, 40, "1000 runs")

        async def one_offs_gone() -> bool:
            return await driver.count_jobs(static=False) == {}

        await wait_for(one_offs_gone, 10, "the finished one-offs to leave the store")
        # at least 8 s of ticks while the four are running
        await wait_for(
            lambda: sum(ln[0] == "tick" for ln in lines(*outs)) >= 8, 20, "8 cron occurrences"
        )
        assert [j.name for j in await driver.list_jobs(static=True)] == ["tick"]
    finally:
        await admin.stop()
    assert workers.stop_all() == {f"w{i}": 0 for i in range(4)}
    runs = ran()
    per_job = Counter(run[1] for run in runs)
    assert sorted(per_job) == sorted(ids)
    assert set(per_job.values()) == {1}, [j for j, n in per_job.items() if n > 1][:10]
    assert all(run[2] == "1" for run in runs)
    assert len(Counter(run[3] for run in runs)) >= 2  # the work was shared
    ticks = [ln for ln in lines(*outs) if ln[0] == "tick"]
    seconds = sorted(int(t[1]) for t in ticks)
    assert len(seconds) == len(set(seconds)), Counter(seconds).most_common(3)  # none doubled
    assert seconds == list(range(seconds[0], seconds[-1] + 1, 1000))  # none missed
    assert all(t[2] == "1" for t in ticks)


@pytest.mark.slow
async def test_sigkill_mid_run_runs_again_after_the_lease_and_loses_nothing(
    workers: Workers,
) -> None:
    """A worker is SIGKILLed while it runs a slow job and 300 quick ones: a second worker runs
    the slow one again once the lease expired, every quick one runs, and the store ends with
    every job completed once (the killed attempt counted)."""
    admin = Kernel(workers.url, tasks=recording([]), driver_options={"keep_completed": True})
    await admin.open()
    try:
        driver = admin.driver
        options = ("--lease", "1.5", "--poll", "0.5", "--keep-completed")
        first = workers.start("first", *options)
        now = admin.clock.now()
        # many quick jobs keep the first worker writing while it is killed
        await driver.add_jobs(
            [job(now, id="slow-1", name="slow")] + [job(now, id=f"quick-{i}") for i in range(300)]
        )
        await wait_for(
            lambda: ["start", "slow-1", "1"] in [ln[:3] for ln in lines(first)], 15, "start"
        )
        workers.kill("first")
        killed = time.monotonic()
        stored = await driver.get_job("slow-1")
        assert stored is not None and stored.state is JobState.RUNNING
        second = workers.start("second", *options)
        await wait_for(
            lambda: ["done", "slow-1", "2"] in [ln[:3] for ln in lines(second)], 20, "re-run"
        )
        assert time.monotonic() - killed >= 1.0  # only once the killed worker's lease expired
        quick = {f"quick-{i}" for i in range(300)}
        await wait_for(
            lambda: {ln[1] for ln in lines(first, second) if ln[0] == "ran"} == quick,
            20,
            "every quick job to run (at least once)",
        )

        async def all_completed() -> bool:
            return await driver.count_jobs() == {JobState.COMPLETED: 301}

        await wait_for(all_completed, 20, "every outcome to be recorded")
        slow = await driver.get_job("slow-1")
        assert slow is not None and slow.attempt == 2 and slow.runs == 1
        # a quick job ran twice only if the killed worker had claimed it
        twice = [
            j for j, n in Counter(ln[1] for ln in lines(second) if ln[0] == "ran").items() if n > 1
        ]
        assert twice == []
    finally:
        await admin.stop()
    assert workers.stop_all() == {"second": 0}


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
        # a database URL given by mistake: refused, its password masked
        with pytest.raises(InvalidArgumentError) as info:
            await k.create_task("record", "r3", later, connection="postgresql://app:s3cret@h/db")
        assert "s3cret" not in str(info.value) and "postgresql://app:" in str(info.value)
        # a connection with no transaction open would store at once: refused
        with pytest.raises(InvalidArgumentError, match="no open transaction"):
            await k.create_task("record", "r4", later, connection=conn)
        assert await k.count_tasks() == 1
    finally:
        await conn.close()
        await k.stop()


async def test_create_task_connection_refused_without_transactions() -> None:
    async with Kernel("memory://", tasks=recording([])) as k:
        with pytest.raises(DriverError, match="MemoryDriver cannot create a job on a connection"):
            await k.create_task("record", "x", connection=object())
        with pytest.raises(DriverError) as info:
            await k.create_task("record", "x", connection="postgresql://app:s3cret@h/db")
        assert "s3cret" not in str(info.value)
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


# --- credentials ---------------------------------------------------------------------------

#: the server trusts 127.0.0.1, so any password is accepted: it must still never be shown
PASSWORD = "Pg-s3cretPW-x9"


def with_password(url: str) -> str:
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{PASSWORD}@", 1)


async def test_the_password_is_in_no_log_error_or_repr_through_a_connection_cut(
    pg_database: str, pg_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A password in the URL: the warnings of a connection cut and of the reconnects, the
    errors of an unreachable server and of a foreign schema, and every repr show the URL
    with the password masked."""
    caplog.set_level(logging.DEBUG)
    url = with_password(pg_database)
    assert PASSWORD in url
    runs: list[Any] = []
    kernel = Kernel(f"{url}?schema={pg_schema}&poll_interval=1", tasks=recording(runs))
    with anyio.fail_after(60):
        async with kernel:
            driver = kernel.driver
            ids = await driver.add_jobs([job(kernel.clock.now(), id=f"p{i}") for i in range(50)])
            assert await _terminate_backends(pg_database) > 0
            await driver.add_job(job(kernel.clock.now(), id="after-the-cut"))
            await wait_for(lambda: len({r[0] for r in runs}) == 51, 30, "every job to run")
    assert {r[0] for r in runs} == {*ids, "after-the-cut"}
    assert "connection" in caplog.text  # the cut was logged ...
    shown = [caplog.text, repr(driver), driver._where(), repr(kernel)]
    # ... as were the errors of a server that does not answer and of a foreign schema
    for bad, error in (
        (f"{url.rsplit('@', 1)[0]}@127.0.0.1:1/nodb?reconnect_timeout=0", DriverError),
        (f"{url}?schema=information_schema", IncompatibleStoreError),
    ):
        other = Kernel(bad, tasks=TaskRegistry())
        with pytest.raises(error) as info:
            await other.open()
        shown += [str(info.value), repr(info.value), repr(other.driver)]
    for text in shown:
        assert PASSWORD[:8] not in text, text
    assert "postgres:***@" in caplog.text or "postgres:***@" in repr(driver)


def test_cli_on_postgres_shows_no_password(pg_database: str, pg_schema: str) -> None:
    """``tickkit list`` and ``tickkit run`` with ``--driver postgres://user:password@...``: the
    output, the log lines and the errors (with --debug's traceback) never show the password."""
    good = with_password(pg_database).replace("postgresql://", "postgres://", 1)
    good += f"?schema={pg_schema}"
    listed = tickkit("list", "--driver", good, "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []
    ran = tickkit("run", "--for", "2", "--driver", good, "--log-level", "debug")
    closed = good.rsplit("@", 1)[0] + "@127.0.0.1:1/nodb?reconnect_timeout=0"
    failed = tickkit("list", "--driver", closed)
    debug = tickkit("list", "--driver", closed, "--debug")
    assert failed.returncode == 1 and debug.returncode == 1
    assert "127.0.0.1:1" in one_error_line(failed)
    assert "Traceback" in debug.stderr
    for proc in (listed, ran, failed, debug):
        for text in (proc.stdout, proc.stderr):
            assert PASSWORD[:8] not in text, (proc.args, text)


# --- planner statistics ----------------------------------------------------------------------


async def test_big_batches_and_new_indexes_are_analyzed(pg_database: str, pg_schema: str) -> None:
    """A server without autovacuum (or before its round) has no statistics for a table just
    filled or an expression index just made, and plans a `where` page as a walk of every row:
    the driver ANALYZEs after an ``add_jobs`` of ANALYZE_AFTER_ROWS jobs and after creating an
    index."""
    driver = PostgresDriver(pg_database, schema=pg_schema, poll_interval=3600)
    k = Kernel(driver, tasks=recording([]))
    await k.open()
    conn = await asyncpg.connect(pg_database)
    try:

        async def stats(table: str) -> int:
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM pg_stats WHERE schemaname = $1 AND tablename = $2",
                    pg_schema,
                    table,
                )
            )

        n = postgres.ANALYZE_AFTER_ROWS
        big = [job(T0 + timedelta(seconds=i), data={"user": i % 50}) for i in range(n)]
        await driver.add_jobs(big)
        assert await stats("jobs") > 0
        index = postgres._index_name("user")
        assert await stats(index) == 0
        await driver.ensure_indexes(["user"])
        assert await stats(index) > 0  # the expression's statistics, for the planner
        page = await k.list_tasks(where={"user": 7}, limit=25)
        assert len(page) == 25 and {j.data["user"] for j in page} == {7}
    finally:
        await conn.close()
        await k.stop()
