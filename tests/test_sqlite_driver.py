"""The SQLite driver beyond the contract: URLs and options, schema and migrations, leases,
wake-ups and polling, pause and replace while running, retention and the dead-letter view.

Every test uses a real file and the virtual clock.
"""

from __future__ import annotations

import re
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from tickkit import (
    DriverError,
    InvalidArgumentError,
    Job,
    JobExistsError,
    JobState,
    Kernel,
    Outcome,
    RunResult,
    manage,
)
from tickkit.drivers.sqlite import (
    LATEST_VERSION,
    MIGRATIONS,
    SQLiteDriver,
    claim_read_params,
    claim_read_sql,
)
from tickkit.models import Backoff
from tickkit.testing import VirtualClock

from .sqlite_helpers.common import T0, one_off, opened, recording_tasks

pytestmark = pytest.mark.anyio

CRON = {"type": "cron", "value": "*/10 * * * *", "timezone": "UTC"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "tasks.db"


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(T0)


# --- URL and options -----------------------------------------------------------------------


def test_from_url_paths_and_query_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert SQLiteDriver.from_url("sqlite:///data/tasks.db").path == tmp_path / "data" / "tasks.db"
    absolute = SQLiteDriver.from_url(f"sqlite:///{tmp_path}/abs.db")
    assert absolute.path == tmp_path / "abs.db"
    assert str(absolute.path).startswith("/")
    d = SQLiteDriver.from_url(
        "sqlite:////var/lib/bot/t.db?poll_interval=0.25&lease_duration=10&busy_timeout=2"
        "&synchronous=FULL&keep_failed=false"
    )
    assert d.path == Path("/var/lib/bot/t.db")
    assert (d.poll_interval, d.lease_duration, d.busy_timeout) == (0.25, 10.0, 2.0)
    assert d.synchronous == "full"
    assert not d.keep_failed.keeps_any
    # keyword options win over the query string
    assert (
        SQLiteDriver.from_url("sqlite:///t.db?poll_interval=5", poll_interval=3).poll_interval == 3
    )
    # defaults
    plain = SQLiteDriver("t.db")
    assert (plain.poll_interval, plain.lease_duration, plain.busy_timeout) == (1.0, 30.0, 5.0)


@pytest.mark.parametrize(
    ("url", "names"),
    [
        ("sqlite://db-host/tasks.db", "db-host"),
        ("sqlite://", "no file path"),
        ("sqlite:///t.db?polling=2", "polling"),
        ("sqlite:///t.db?poll_interval=soon", "soon"),
        ("sqlite:///t.db?keep_failed=maybe", "keep_failed"),
        ("sqlite:///:memory:", ":memory:"),
    ],
)
def test_bad_urls_are_refused_by_name(url: str, names: str) -> None:
    with pytest.raises(DriverError, match=names):
        SQLiteDriver.from_url(url)


@pytest.mark.parametrize(
    ("options", "names"),
    [
        ({"keep_completed": -1}, "-1"),
        ({"keep_completed": "5"}, "'5'"),
        ({"keep_failed": timedelta(0)}, "keep_failed"),
        ({"poll_interval": 0}, "poll_interval"),
        ({"lease_duration": "long"}, "long"),
        ({"busy_timeout": -1}, "busy_timeout"),
        ({"synchronous": "sometimes"}, "sometimes"),
    ],
)
def test_bad_options_are_refused_by_name(options: dict[str, Any], names: str) -> None:
    with pytest.raises(DriverError, match=names):
        SQLiteDriver("t.db", **options)


async def test_kernel_resolves_sqlite_urls_through_the_entry_point(
    db: Path, clock: VirtualClock
) -> None:
    kernel = Kernel(f"sqlite:///{db}", clock=clock, driver_options={"poll_interval": 2})
    await kernel.open()
    try:
        assert isinstance(kernel.driver, SQLiteDriver)
        assert kernel.driver.path == db
        assert kernel.driver.poll_interval == 2
    finally:
        await kernel.stop()
    assert await anyio.Path(db).exists()


async def test_calls_before_start_or_after_stop_say_so(db: Path, clock: VirtualClock) -> None:
    driver = SQLiteDriver(db)
    with pytest.raises(DriverError, match="not started"):
        await driver.get_job("x")
    async with opened(driver, clock):
        pass
    with pytest.raises(DriverError, match=str(db)):
        await driver.list_jobs()


# --- schema --------------------------------------------------------------------------------


async def test_schema_versions_wal_and_busy_timeout(db: Path, clock: VirtualClock) -> None:
    async with opened(SQLiteDriver(db, busy_timeout=2.5, synchronous="full"), clock) as d:
        assert await d._all("PRAGMA busy_timeout") == [(2500,)]
        assert await d._all("PRAGMA synchronous") == [(2,)]
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        versions = conn.execute("SELECT version, description FROM tickkit_version").fetchall()
    assert versions == [(m.version, m.description) for m in MIGRATIONS]
    assert versions[-1][0] == LATEST_VERSION


async def test_next_due_job_is_a_seek_not_a_scan(db: Path, clock: VirtualClock) -> None:
    async with opened(SQLiteDriver(db), clock) as d:
        await d.add_jobs([one_off(f"j{i}", T0 + timedelta(seconds=i)) for i in range(2000)])
    with sqlite3.connect(db) as conn:
        conn.execute("ANALYZE")  # statistics must not change the plan either
        for excluded in (0, 2):
            params = claim_read_params(0, 64, ["a", "b"][:excluded])
            plan = [
                row[3]
                for row in conn.execute(f"EXPLAIN QUERY PLAN {claim_read_sql(excluded)}", params)
            ]
            assert not [step for step in plan if step.startswith("SCAN tickkit_jobs")], plan
            assert (
                "SEARCH tickkit_jobs USING INDEX tickkit_jobs_due (state=? AND next_run_at<?)"
                in (plan)
            )
            assert not [step for step in plan if "TEMP B-TREE" in step], plan


async def test_version_1_store_is_migrated_forward(db: Path, clock: VirtualClock) -> None:
    failed_at = 1_767_225_600_000  # T0 in epoch ms
    with sqlite3.connect(db) as conn:
        for statement in MIGRATIONS[0].statements:
            conn.execute(statement)
        conn.execute("INSERT INTO tickkit_version VALUES (1, 'v1', 0)")
        conn.execute(
            "INSERT INTO tickkit_jobs (id, name, data, next_run_at, scheduled_at, state, attempt, "
            "last_run_at, last_outcome, last_error) VALUES "
            "('old-fail', 'record', '{\"n\": 1}', NULL, ?, 'failed', 1, ?, 'failed', 'E: x'), "
            "('old-due', 'record', '2', ?, ?, 'scheduled', 0, NULL, NULL, NULL)",
            (failed_at, failed_at, failed_at, failed_at),
        )
    runs: list[Any] = []
    async with Kernel(SQLiteDriver(db), tasks=recording_tasks(runs), clock=clock) as kernel:
        await clock.advance(1)
        driver = kernel.driver
        assert isinstance(driver, SQLiteDriver)
        (dead,) = await driver.dead_letters()
        assert dead.job.id == "old-fail" and dead.job.data == {"n": 1}
        assert dead.failed_at == T0  # the migration took the finish time from last_run_at
    assert [(r[0], r[1]) for r in runs] == [("record", 2)]
    with sqlite3.connect(db) as conn:
        assert [r[0] for r in conn.execute("SELECT version FROM tickkit_version")] == [
            m.version for m in MIGRATIONS
        ]
    # opening again migrates nothing more
    async with opened(SQLiteDriver(db), clock):
        pass
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM tickkit_version").fetchone() == (len(MIGRATIONS),)


# --- storing -------------------------------------------------------------------------------


async def test_every_job_field_round_trips(db: Path, clock: VirtualClock) -> None:
    job = Job(
        id="full",
        name="record",
        data={"text": "rappel ✓", "list": [1, 2.5, None]},
        schedule=CRON,
        next_run_at=T0 + timedelta(minutes=10),
        scheduled_at=T0 + timedelta(minutes=10),
        state=JobState.PAUSED,
        static=False,
        attempt=0,
        max_attempts=4,
        backoff=Backoff.exponential(2, max_delay=60, jitter=0.5),
        created_at=T0,
        meta={"origin": "test", "trace": "abc"},
    )
    async with opened(SQLiteDriver(db), clock) as d:
        await d.add_job(job)
        assert await d.get_job("full") == job
    async with opened(SQLiteDriver(db), clock) as d:
        assert await d.list_jobs() == [job]


async def test_add_jobs_is_all_or_nothing(db: Path, clock: VirtualClock) -> None:
    async with opened(SQLiteDriver(db), clock) as d:
        ids = await d.add_jobs([one_off("a"), one_off(), one_off()])
        assert ids[0] == "a" and len(set(ids)) == 3
        with pytest.raises(JobExistsError, match="'a'"):
            await d.add_jobs([one_off("b"), one_off("a")])
        with pytest.raises(JobExistsError, match="'c'"):
            await d.add_jobs([one_off("c"), one_off("c")])
        assert await d.get_job("b") is None and await d.get_job("c") is None
        assert len(await d.list_jobs()) == 3
        await d.add_jobs([one_off("a", name="other")], replace=True)
        job = await d.get_job("a")
        assert job is not None and job.name == "other"


async def test_count_jobs_by_state(db: Path, clock: VirtualClock) -> None:
    async with opened(SQLiteDriver(db, keep_completed=True), clock) as d:
        await d.add_jobs([one_off(f"s{i}", T0 + timedelta(hours=1)) for i in range(3)])
        await d.add_jobs([one_off(f"r{i}") for i in range(2)])
        await d.add_job(one_off("p", T0 + timedelta(hours=1), state=JobState.PAUSED))
        claims = (await d.acquire(now=T0, limit=10)).claims
        await d.complete(claims[0], RunResult(Outcome.SUCCEEDED, T0))
        assert await d.count_jobs() == {
            JobState.SCHEDULED: 3,
            JobState.RUNNING: 1,
            JobState.PAUSED: 1,
            JobState.COMPLETED: 1,
        }


# --- claims and leases ---------------------------------------------------------------------


async def test_expired_lease_is_taken_over_with_the_attempt_counted(
    db: Path, clock: VirtualClock
) -> None:
    async with (
        opened(SQLiteDriver(db, lease_duration=30), clock) as a,
        opened(SQLiteDriver(db, lease_duration=30), clock) as b,
    ):
        assert a.ctx.owner != b.ctx.owner
        await a.add_job(one_off("j"))
        (first,) = (await a.acquire(now=T0, limit=5)).claims
        assert first.attempt == 1 and first.lease_expires_at == T0 + timedelta(seconds=30)
        # the lease holds: nobody else gets the job
        assert (await b.acquire(now=T0 + timedelta(seconds=29), limit=5)).claims == []
        # a dies without a word; its lease expires, and b runs the job again
        (second,) = (await b.acquire(now=T0 + timedelta(seconds=30), limit=5)).claims
        assert second.job.id == "j"
        assert second.attempt == 2
        assert second.scheduled_at == T0
        stored = await b.get_job("j")
        assert stored is not None and stored.state is JobState.RUNNING and stored.attempt == 1
        # a comes back: its lease is lost, and what it reports is ignored
        assert await a.renew([first], T0 + timedelta(seconds=31)) == [first]
        await a.complete(first, RunResult(Outcome.SUCCEEDED, T0 + timedelta(seconds=31)))
        await a.release([first])
        still = await b.get_job("j")
        assert still is not None and still.state is JobState.RUNNING and still.runs == 0
        await b.complete(second, RunResult(Outcome.FAILED, T0 + timedelta(seconds=32), error="E"))
        (dead,) = await b.dead_letters()
        assert dead.job.attempt == 2 and dead.job.runs == 1 and dead.job.last_error == "E"


async def test_renewed_lease_is_not_taken_over(db: Path, clock: VirtualClock) -> None:
    async with (
        opened(SQLiteDriver(db, lease_duration=30), clock) as a,
        opened(SQLiteDriver(db, lease_duration=30), clock) as b,
    ):
        await a.add_job(one_off("j"))
        (claim,) = (await a.acquire(now=T0, limit=5)).claims
        assert await a.renew([claim], T0 + timedelta(seconds=20)) == []
        assert claim.lease_expires_at == T0 + timedelta(seconds=50)
        assert (await b.acquire(now=T0 + timedelta(seconds=49), limit=5)).claims == []
        assert len((await b.acquire(now=T0 + timedelta(seconds=50), limit=5)).claims) == 1


async def test_two_drivers_racing_claim_each_job_once(db: Path, clock: VirtualClock) -> None:
    async with opened(SQLiteDriver(db), clock) as a, opened(SQLiteDriver(db), clock) as b:
        await a.add_jobs([one_off(f"j{i}") for i in range(300)])
        got: dict[str, list[str]] = {"a": [], "b": []}

        async def drain(label: str, driver: SQLiteDriver) -> None:
            while True:
                claims = (await driver.acquire(now=T0, limit=16)).claims
                if not claims:
                    return
                got[label] += [c.job.id for c in claims if c.job.id]

        async with anyio.create_task_group() as tg:
            tg.start_soon(drain, "a", a)
            tg.start_soon(drain, "b", b)
        both = got["a"] + got["b"]
        assert sorted(both) == sorted(f"j{i}" for i in range(300))
        assert got["a"] and got["b"]


async def test_exclude_leaves_jobs_and_reports_their_due_time(
    db: Path, clock: VirtualClock
) -> None:
    async with opened(SQLiteDriver(db), clock) as d:
        await d.add_job(one_off("r", T0 - timedelta(seconds=1)))
        await d.add_job(one_off("o", T0 + timedelta(seconds=10), name="other"))
        got = await d.acquire(now=T0, limit=5, exclude=frozenset({"record"}))
        assert got.claims == []
        assert got.next_due == T0 - timedelta(seconds=1)
        (claim,) = (await d.acquire(now=T0, limit=5)).claims
        assert claim.job.id == "r"


async def test_paused_while_running_stays_paused(db: Path, clock: VirtualClock) -> None:
    async with opened(SQLiteDriver(db), clock) as d:
        await d.add_job(one_off("cron", schedule=CRON, name="record"))
        await d.add_job(one_off("once"))
        claims = {c.job.id: c for c in (await d.acquire(now=T0, limit=5)).claims}
        paused = await d.set_paused("cron", True)
        assert paused is not None and paused.state is JobState.RUNNING
        await d.set_paused("once", True)
        nxt = T0 + timedelta(minutes=10)
        await d.complete(claims["cron"], RunResult(Outcome.SUCCEEDED, T0, next_run_at=nxt))
        await d.release([claims["once"]])
        cron, once = await d.get_job("cron"), await d.get_job("once")
        assert cron is not None and cron.state is JobState.PAUSED and cron.next_run_at == nxt
        assert once is not None and once.state is JobState.PAUSED and once.attempt == 0
        assert (await d.acquire(now=nxt, limit=5)).claims == []
        resumed = await d.set_paused("cron", False)
        assert resumed is not None and resumed.state is JobState.SCHEDULED


async def test_replaced_while_running_keeps_the_new_job(db: Path, clock: VirtualClock) -> None:
    async with opened(SQLiteDriver(db), clock) as d:
        await d.add_job(one_off("j", data=1))
        (claim,) = (await d.acquire(now=T0, limit=5)).claims
        await d.add_job(one_off("j", T0 + timedelta(hours=1), data=2), replace=True)
        await d.complete(claim, RunResult(Outcome.FAILED, T0, error="old run"))
        job = await d.get_job("j")
        assert job is not None
        assert (job.data, job.state, job.runs, job.last_error) == (2, JobState.SCHEDULED, 0, None)
        assert job.next_run_at == T0 + timedelta(hours=1)


# --- waking up -----------------------------------------------------------------------------


async def test_create_in_this_process_runs_without_time_passing(
    db: Path, clock: VirtualClock
) -> None:
    runs: list[Any] = []
    async with Kernel(SQLiteDriver(db), tasks=recording_tasks(runs), clock=clock) as kernel:
        await clock.settle()
        await kernel.create_task("record", "now")
        await clock.settle()
        assert [r[1] for r in runs] == ["now"]
        assert clock.now() == T0


@pytest.mark.parametrize("poll", [None, 0.25])
async def test_changes_by_another_process_are_seen_within_a_poll(
    db: Path, clock: VirtualClock, poll: float | None
) -> None:
    runs: list[Any] = []
    options = {} if poll is None else {"poll_interval": poll}
    interval = poll or 1.0
    kernel = Kernel(SQLiteDriver(db, **options), tasks=recording_tasks(runs), clock=clock)
    async with kernel, opened(SQLiteDriver(db), clock) as other:
        await clock.settle()
        await other.add_job(one_off("now", T0))
        await other.add_job(one_off("later", T0 + timedelta(minutes=5)))
        await clock.settle()
        assert runs == []  # nobody told this kernel: it learns at its next poll
        await clock.advance(interval)
        assert [r[3] for r in runs] == [T0]
        await clock.advance(timedelta(minutes=5) - timedelta(seconds=interval))
        assert [r[3] for r in runs] == [T0, T0 + timedelta(minutes=5)]


async def test_an_idle_kernel_does_not_query_the_store(db: Path, clock: VirtualClock) -> None:
    runs: list[Any] = []
    driver = SQLiteDriver(db)
    async with (
        Kernel(driver, tasks=recording_tasks(runs), clock=clock) as kernel,
        opened(SQLiteDriver(db), clock) as other,
    ):
        await kernel.create_task("record", "tomorrow", T0 + timedelta(days=1))
        await clock.advance(1)
        calls = driver.io_calls
        await clock.advance(timedelta(hours=1))  # 3,600 polls
        assert driver.io_calls == calls
        # a change by another connection is read at the next poll
        await other.add_job(one_off("soon", T0 + timedelta(hours=2)))
        await clock.advance(1)
        assert driver.io_calls > calls
        await clock.advance(timedelta(hours=1))
        assert [r[1] for r in runs] == [None]


# --- retention and dead letters ------------------------------------------------------------


async def _finish(
    d: SQLiteDriver, job_id: str, at: Any, outcome: Outcome = Outcome.SUCCEEDED
) -> None:
    await d.add_job(one_off(job_id, at))
    (claim,) = (await d.acquire(now=at, limit=1)).claims
    await d.complete(
        claim, RunResult(outcome, at, error="E" if outcome is Outcome.FAILED else None)
    )


@pytest.mark.parametrize(
    ("keep", "kept"),
    [
        (False, []),
        (True, ["j0", "j1", "j2", "j3"]),
        (2, ["j2", "j3"]),
        (0, []),
        (timedelta(minutes=90), ["j2", "j3"]),
    ],
)
async def test_keep_completed(db: Path, clock: VirtualClock, keep: Any, kept: list[str]) -> None:
    async with opened(SQLiteDriver(db, keep_completed=keep), clock) as d:
        for i in range(4):
            outcome = Outcome.MISSED if i == 1 else Outcome.SUCCEEDED
            await _finish(d, f"j{i}", T0 + timedelta(hours=i), outcome)
        # the age counts from the last finish (T0 + 3 h): j0 and j1 are older than 90 minutes
        assert sorted(j.id for j in await d.list_jobs() if j.id) == kept
        states = {j.id: j.state for j in await d.list_jobs()}
        assert all(s in (JobState.COMPLETED, JobState.MISSED) for s in states.values())


@pytest.mark.parametrize(("keep", "kept"), [(True, ["f0", "f1"]), (False, []), (1, ["f1"])])
async def test_keep_failed(db: Path, clock: VirtualClock, keep: Any, kept: list[str]) -> None:
    async with opened(SQLiteDriver(db, keep_failed=keep), clock) as d:
        await _finish(d, "f0", T0, Outcome.FAILED)
        await _finish(d, "f1", T0 + timedelta(minutes=1), Outcome.FAILED)
        await _finish(d, "ok", T0 + timedelta(minutes=2))
        assert sorted(j.id for j in await d.list_jobs(state=JobState.FAILED) if j.id) == kept
        assert [x.job.id for x in await d.dead_letters()] == kept[::-1]


async def test_static_jobs_are_kept_when_they_finish(db: Path, clock: VirtualClock) -> None:
    async with opened(SQLiteDriver(db, keep_completed=False), clock) as d:
        await d.add_job(one_off("static-once", static=True))
        (claim,) = (await d.acquire(now=T0, limit=1)).claims
        await d.complete(claim, RunResult(Outcome.SUCCEEDED, T0))
        job = await d.get_job("static-once")
        assert job is not None and job.state is JobState.COMPLETED and job.runs == 1


async def test_retention_is_applied_when_the_store_opens(db: Path, clock: VirtualClock) -> None:
    async with opened(SQLiteDriver(db, keep_completed=True), clock) as d:
        for i in range(3):
            await _finish(d, f"j{i}", T0)
        await _finish(d, "f", T0, Outcome.FAILED)
    async with opened(SQLiteDriver(db, keep_completed=1), clock) as d:
        assert sorted(j.id for j in await d.list_jobs() if j.id) == ["f", "j2"]


async def test_dead_letter_view_keeps_error_attempts_and_traceback(
    db: Path, clock: VirtualClock
) -> None:
    runs: list[Any] = []
    driver = SQLiteDriver(db)
    async with Kernel(driver, tasks=recording_tasks(runs), clock=clock) as kernel:
        job_id = await kernel.create_task("boom", 7)
        await kernel.create_task("record", 1)
        await clock.advance(10)  # attempt 1 at T0, its retry after 5 s fails too
        assert [r[2] for r in runs if r[0] == "boom"] == [1, 2]
        (dead,) = await driver.dead_letters()
        assert dead.job.id == job_id and dead.job.data == 7
        assert dead.job.state is JobState.FAILED
        assert dead.job.last_outcome is Outcome.FAILED
        assert dead.job.last_error == "ValueError: boom 7"
        assert dead.job.attempt == 2 and dead.job.runs == 2
        assert dead.failed_at == T0 + timedelta(seconds=5)
        assert dead.traceback is not None and "ValueError: boom 7" in dead.traceback
        assert [j.id for j in await kernel.list_tasks(state="failed")] == [job_id]
        assert await driver.dead_letters(name="record") == []
        assert len(await driver.dead_letters(limit=1)) == 1


# --- robustness ----------------------------------------------------------------------------


async def test_a_row_that_cannot_be_read_fails_alone(db: Path, clock: VirtualClock) -> None:
    runs: list[Any] = []
    driver = SQLiteDriver(db)
    async with Kernel(driver, tasks=recording_tasks(runs), clock=clock) as kernel:
        bad = await kernel.create_task("record", "bad", T0 + timedelta(seconds=5))
        await kernel.create_task("record", "good", T0 + timedelta(seconds=5))
        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE tickkit_jobs SET data = 'not json{' WHERE id = ?", (bad,))
        conn.close()
        await clock.advance(10)
        assert [r[1] for r in runs] == ["good"]
        with sqlite3.connect(db) as conn:
            state, error = conn.execute(
                "SELECT state, last_error FROM tickkit_jobs WHERE id = ?", (bad,)
            ).fetchone()
        conn.close()
        assert state == "failed"
        # the reason names the field and what is in it
        assert "data" in error and "cannot be read" in error and "not json{" in error


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_trio_is_refused_clearly(db: Path) -> None:
    kernel = Kernel(SQLiteDriver(db), clock=VirtualClock(T0))
    with pytest.raises(DriverError, match="asyncio only"):
        await kernel.open()


# --- managing jobs (issue 14) -----------------------------------------------------------------


async def test_version_2_store_is_migrated_to_history_and_revisions(
    db: Path, clock: VirtualClock
) -> None:
    """A store written by the previous schema (version 2) opens: its jobs keep running, and
    updates, run history and indexes work on it."""
    with sqlite3.connect(db) as conn:
        for migration in MIGRATIONS[:2]:
            for statement in migration.statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO tickkit_version VALUES (?, ?, 0)",
                (migration.version, migration.description),
            )
        conn.execute(
            "INSERT INTO tickkit_jobs (id, name, data, next_run_at, scheduled_at, state) "
            "VALUES ('old', 'record', '{\"user\": 7}', ?, ?, 'scheduled')",
            (1_767_225_600_000, 1_767_225_600_000),
        )
    async with opened(SQLiteDriver(db), clock) as d:
        await d.ensure_indexes(["user"])
        (job,) = await d.list_jobs(where={"user": 7})
        assert job.id == "old"
        updated = await d.update_job("old", data={"user": 8})
        assert updated is not None and updated.data == {"user": 8}
        (claim,) = (await d.acquire(now=T0, limit=1)).claims
        await d.complete(claim, RunResult(Outcome.SUCCEEDED, T0, started_at=T0))
        (run,) = await d.get_runs("old")
        assert run.outcome is Outcome.SUCCEEDED and run.worker == d.ctx.owner
    with sqlite3.connect(db) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM tickkit_version")]
        assert versions == [m.version for m in MIGRATIONS] == [1, 2, 3, 4]
        assert conn.execute("SELECT revision FROM tickkit_jobs").fetchall() == []  # removed


async def test_version_3_store_is_migrated_to_run_counters(db: Path, clock: VirtualClock) -> None:
    """A store written by the previous schema (version 3) opens in place: its jobs and run
    history are found, and the run counters start counting (issue 15)."""
    with sqlite3.connect(db) as conn:
        for migration in MIGRATIONS[:3]:
            for statement in migration.statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO tickkit_version VALUES (?, ?, 0)",
                (migration.version, migration.description),
            )
        conn.executemany(
            "INSERT INTO tickkit_jobs (id, name, data, next_run_at, scheduled_at, state) "
            "VALUES (?, ?, '{\"user\": 7}', ?, ?, ?)",
            [
                ("due", "record", 1_767_225_600_000, 1_767_225_600_000, "scheduled"),
                ("later", "record", 1_767_312_000_000, 1_767_312_000_000, "scheduled"),
                ("held", "other", 1_767_312_000_000, 1_767_312_000_000, "paused"),
            ],
        )
        conn.execute(
            "INSERT INTO tickkit_runs (job_id, name, finished_at, attempt, outcome) "
            "VALUES ('later', 'record', 1767225000000, 1, 'failed')"
        )
    async with opened(SQLiteDriver(db), clock) as d:
        assert [j.id for j in await d.list_jobs()] == ["due", "held", "later"]
        assert await d.count_by_name() == {"record": 2, "other": 1}
        assert await d.count_by_name(state=JobState.PAUSED) == {"other": 1}
        (old_run,) = await d.get_runs("later")
        assert old_run.outcome is Outcome.FAILED
        # the runs before the migration were not counted; those after it are
        assert await d.count_runs(T0 - timedelta(days=1)) == {}
        (claim,) = (await d.acquire(now=T0, limit=1)).claims
        await d.complete(claim, RunResult(Outcome.FAILED, T0, started_at=T0))
        assert await d.count_runs(T0) == {Outcome.FAILED: 1}
    with sqlite3.connect(db) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM tickkit_version")]
        assert versions == [m.version for m in MIGRATIONS] == [1, 2, 3, 4]
        assert conn.execute("SELECT minute, outcome, runs FROM tickkit_run_counts").fetchall() == [
            (int(T0.timestamp()) // 60, "failed", 1)
        ]


async def test_run_counters_count_held_leases_only_and_old_buckets_go(
    db: Path, clock: VirtualClock
) -> None:
    """A run whose lease was lost is not counted (as its history row is not written); runs
    finishing together are counted together; buckets older than RUN_COUNTS_KEPT go when a run
    lands in a later minute."""
    async with opened(SQLiteDriver(db, lease_duration=10), clock) as d:
        await d.add_jobs([one_off(f"j{i}", T0) for i in range(5)])
        claims = (await d.acquire(now=T0, limit=5)).claims
        assert len(claims) == 5
        # the leases expire and j0's is taken over (a new claim): its first run is not counted
        later = T0 + timedelta(seconds=11)
        await d.renew(claims[1:], later - timedelta(seconds=2))
        (taken,) = (await d.acquire(now=later, limit=5)).claims
        assert taken.job.id == claims[0].job.id
        done = T0 + timedelta(seconds=12)
        ran = RunResult(Outcome.SUCCEEDED, done, started_at=T0)
        async with anyio.create_task_group() as tg:
            for claim in claims:
                tg.start_soon(d.complete, claim, ran)
        assert await d.count_runs(T0) == {Outcome.SUCCEEDED: 4}
        await d.complete(taken, RunResult(Outcome.TIMED_OUT, later, started_at=later))
        assert await d.count_runs(T0) == {Outcome.SUCCEEDED: 4, Outcome.TIMED_OUT: 1}
        # three days later: the old buckets are pruned when the next run is counted
        far = T0 + timedelta(days=3)
        await d.add_job(one_off("late", far))
        (claim,) = (await d.acquire(now=far, limit=1)).claims
        await d.complete(claim, RunResult(Outcome.SKIPPED, far, started_at=far))
        assert await d.count_runs(T0) == {Outcome.SKIPPED: 1}
        rows = await d._all("SELECT COUNT(*) FROM tickkit_run_counts")
        assert rows[0][0] == 1


async def test_run_counters_pair_each_claim_with_its_own_token(
    db: Path, clock: VirtualClock
) -> None:
    """One acquire gives all its claims one lease token: a stale complete of A (old token)
    batched with the complete of B (new token, which A holds again too) must not count A's
    run, which only pairing each id with its own token tells."""
    async with opened(SQLiteDriver(db, lease_duration=10), clock) as d:
        await d.add_job(one_off("a", T0))
        (stale,) = (await d.acquire(now=T0, limit=1)).claims
        later = T0 + timedelta(seconds=11)  # the lease expired
        await d.add_jobs([one_off("b", later), one_off("c", later)])
        again = (await d.acquire(now=later, limit=3)).claims
        fresh = {c.job.id: c for c in again}
        assert sorted(fresh) == ["a", "b", "c"]
        ran = RunResult(Outcome.SUCCEEDED, later, started_at=T0)
        async with anyio.create_task_group() as tg:
            # c's write starts alone; the two that arrive meanwhile go in one batch
            tg.start_soon(d.complete, fresh["c"], ran)
            await anyio.lowlevel.checkpoint()
            tg.start_soon(d.complete, stale, ran)
            tg.start_soon(d.complete, fresh["b"], ran)
        assert await d.count_runs(T0) == {Outcome.SUCCEEDED: 2}
        await d.complete(fresh["a"], ran)
        assert await d.count_runs(T0) == {Outcome.SUCCEEDED: 3}


async def test_a_page_reads_one_state_of_the_store(db: Path, clock: VirtualClock) -> None:
    """A page is two reads (jobs with a next run, then those without): another process that
    finishes a job between them must not make the page list it twice (or miss it)."""
    async with opened(SQLiteDriver(db, keep_completed=True), clock) as d:
        await d.add_jobs([one_off("j", T0), one_off("k", T0 + timedelta(minutes=1))])
        reads = 0
        real_all = d._all

        async def all_then_commit_elsewhere(sql: str, params: Any = ()) -> Any:
            nonlocal reads
            rows = await real_all(sql, params)
            reads += 1
            if reads == 1:  # another process finishes j between the page's two reads
                other = sqlite3.connect(db, timeout=5)
                with other:
                    other.execute(
                        "UPDATE tickkit_jobs SET state = 'completed', next_run_at = NULL "
                        "WHERE id = 'j'"
                    )
                other.close()
            return rows

        d._all = all_then_commit_elsewhere  # type: ignore[method-assign]
        page = await d.list_jobs(limit=10)
        d._all = real_all  # type: ignore[method-assign]
        assert reads == 2
        assert [(j.id, j.state) for j in page] == [
            ("j", JobState.SCHEDULED),
            ("k", JobState.SCHEDULED),
        ]
        # the next read sees the other process's commit
        assert [j.id for j in await d.list_jobs(limit=10)] == ["k", "j"]


async def test_list_pages_are_index_walks(db: Path, clock: VirtualClock) -> None:
    """A page of the list (every job, one task's, one state's; the first or after a cursor)
    walks indexes in the list order and stops at the page's end: no sort of every matching
    row (the dashboard at 1,000,000 jobs, issue 15)."""
    async with opened(SQLiteDriver(db), clock) as d:
        jobs = [
            one_off(f"j{i:03d}", T0 + timedelta(minutes=i % 7), name=f"t{i % 3}") for i in range(60)
        ]
        await d.add_jobs(jobs)
        await d.set_paused("j001", True)
        statements: list[str] = []
        await d._db().set_trace_callback(statements.append)
        pages = [
            await d.list_jobs(limit=5),
            await d.list_jobs(name="t1", limit=5),
            await d.list_jobs(state=JobState.SCHEDULED, limit=5),
        ]
        pages.append(await d.list_jobs(limit=5, after=pages[0][-1]))
        await d._db().set_trace_callback(None)
        assert [j.id for j in pages[3]] == [j.id for j in (await d.list_jobs(limit=10))[5:]]
        selects = [sql for sql in statements if sql.startswith("SELECT") and "LIMIT" in sql]
        assert len(selects) == 4  # each page filled from the jobs with a next run
        for sql in selects:
            steps = [(row[1], row[3]) for row in await d._all(f"EXPLAIN QUERY PLAN {sql}")]
            assert not [step for _p, step in steps if step.startswith("SCAN tickkit_jobs")], steps
            # a walk of the table's rows is never followed by a sort of all it found (a page of
            # rows merged from several walks is sorted: a few rows)
            walks = {p for p, step in steps if step.startswith("SEARCH tickkit_jobs")}
            assert walks, steps
            sorts = {p for p, step in steps if step == "USE TEMP B-TREE FOR ORDER BY"}
            assert not walks & sorts, steps


async def test_indexed_where_is_a_seek_and_the_key_is_recorded(
    db: Path, clock: VirtualClock
) -> None:
    async with opened(SQLiteDriver(db), clock) as d:
        await d.add_jobs(
            [one_off(f"j{i}", T0, data={"user_id": i % 50, "n": i}) for i in range(500)]
        )
        await d.ensure_indexes(["user_id", "it's"])
        conds, params = d._filters(name=None, state=None, static=None, where={"user_id": 3, "n": 3})
        sql = f"SELECT id FROM tickkit_jobs WHERE {' AND '.join(conds)}"
        plan = [row[3] for row in await d._all(f"EXPLAIN QUERY PLAN {sql}", params)]
        assert any("USING INDEX tickkit_where_" in step for step in plan), plan
        assert not [step for step in plan if step.startswith("SCAN tickkit_jobs")], plan
        assert [j.id for j in await d.list_jobs(where={"user_id": 3})] == [
            f"j{i}" for i in sorted(range(3, 500, 50), key=lambda i: f"j{i}")
        ]
        # a key with a quote is indexed and looked up too
        quoted = await d.add_job(one_off("q", T0, data={"it's": "x"}))
        assert [j.id for j in await d.list_jobs(where={"it's": "x"})] == [quoted]
    # another process, which loaded no task, sees the recorded keys
    async with opened(SQLiteDriver(db), clock) as d2:
        assert d2._indexed == {"user_id", "it's"}
    with sqlite3.connect(db) as conn:
        keys = {r[0] for r in conn.execute("SELECT key FROM tickkit_indexes")}
        names = {
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master "
                "WHERE type = 'index' AND name LIKE 'tickkit_where_%'"
            )
        }
    assert keys == {"user_id", "it's"} and len(names) == 2


async def test_ensure_indexes_from_many_drivers_at_once(db: Path, clock: VirtualClock) -> None:
    async with opened(SQLiteDriver(db), clock) as a, opened(SQLiteDriver(db), clock) as b:
        await a.add_job(one_off("x", T0, data={"k": 1}))
        async with anyio.create_task_group() as tg:
            for d in (a, b, a, b):
                tg.start_soon(d.ensure_indexes, ["k", "m"])
        assert [j.id for j in await b.list_jobs(where={"k": 1})] == ["x"]


@pytest.mark.parametrize(
    "where",
    [
        {"x'); DROP TABLE tickkit_jobs; --": 1},
        {"user": "1' OR '1'='1"},
        {"user": 'x" OR 1=1 --'},
        {'"': None, "\\": "'"},
    ],
)
async def test_where_values_and_keys_are_never_sql(
    db: Path, clock: VirtualClock, where: dict[str, Any]
) -> None:
    async with opened(SQLiteDriver(db), clock) as d:
        await d.add_job(one_off("a", T0, data={"user": 1}))
        for indexed in (False, True):
            if indexed:
                await d.ensure_indexes(["user"])
            assert await d.list_jobs(where=where) == []
            assert await d.count_jobs(where=where) == {}
        assert [j.id for j in await d.list_jobs()] == ["a"]


def test_history_options_are_checked() -> None:
    plain = SQLiteDriver("t.db")
    assert (plain.history_limit, plain.history_max_age) == (100, 604_800.0)
    d = SQLiteDriver.from_url("sqlite:///t.db?history_limit=5&history_max_age=60")
    assert (d.history_limit, d.history_max_age) == (5, 60.0)
    assert SQLiteDriver("t.db", history_max_age=timedelta(hours=1)).history_max_age == 3600.0
    assert SQLiteDriver("t.db", history_max_age=None).history_max_age is None
    for bad in (-1, 1.5, "10", True):
        with pytest.raises(InvalidArgumentError, match=re.escape(repr(bad))):
            SQLiteDriver("t.db", history_limit=bad)
    for bad in (0, -5, float("inf"), float("nan"), "1d", 10**12):
        with pytest.raises(InvalidArgumentError, match="history_max_age"):
            SQLiteDriver("t.db", history_max_age=bad)
    with pytest.raises(InvalidArgumentError, match="'many'"):
        SQLiteDriver.from_url("sqlite:///t.db?history_limit=many")
    with pytest.raises(InvalidArgumentError, match=r"history_max_age.*-3"):
        SQLiteDriver.from_url("sqlite:///t.db?history_max_age=-3")


async def test_history_is_pruned_in_the_store(db: Path, clock: VirtualClock) -> None:
    async with opened(SQLiteDriver(db, history_limit=2, history_max_age=3600), clock) as d:
        spec = {"type": "interval", "seconds": 60}
        await d.add_job(one_off("r", T0, schedule=spec))
        at = T0
        for _ in range(4):
            (claim,) = (await d.acquire(now=at, limit=1)).claims
            nxt = at + timedelta(minutes=1)
            await d.complete(claim, RunResult(Outcome.SUCCEEDED, at, next_run_at=nxt))
            at = nxt
        # a run that finishes two hours later drops the ones older than an hour
        later = T0 + timedelta(hours=2)
        await d.move_to("r", later)
        (claim,) = (await d.acquire(now=later, limit=1)).claims
        await d.complete(claim, RunResult(Outcome.SUCCEEDED, later, next_run_at=later))
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT finished_at FROM tickkit_runs").fetchall()
    assert rows == [(1_767_225_600_000 + 2 * 3_600_000,)]


async def test_history_limit_zero_keeps_none(db: Path, clock: VirtualClock) -> None:
    async with opened(SQLiteDriver(db, history_limit=0), clock) as d:
        await d.add_job(one_off("z", T0))
        (claim,) = (await d.acquire(now=T0, limit=1)).claims
        await d.complete(claim, RunResult(Outcome.FAILED, T0, error="E: x"))
        assert await d.get_runs("z") == []
        job = await d.get_job("z")
        assert job is not None and job.state is JobState.FAILED


async def test_run_counters_edited_by_hand(db: Path, clock: VirtualClock) -> None:
    """Counter rows written by another tool (an unknown outcome, text, a negative count) never
    break count_runs: what cannot be read counts nothing."""
    async with opened(SQLiteDriver(db), clock) as d:
        minute = int(T0.timestamp()) // 60
        other = sqlite3.connect(db, timeout=5)
        with other:
            other.executemany(
                "INSERT INTO tickkit_run_counts (minute, outcome, runs) VALUES (?, ?, ?)",
                [
                    (minute, "bogus", 5),
                    (minute, "failed", "many"),
                    (minute, "skipped", -7),
                    (minute, "succeeded", 2),
                ],
            )
        other.close()
        stored = await d.count_runs(T0)
        assert stored is not None and stored[Outcome.SUCCEEDED] == 2
        # what Kernel.count_runs answers: every outcome, none below zero
        assert await manage.count_runs(d, T0) == {
            Outcome.SUCCEEDED: 2,
            Outcome.FAILED: 0,
            Outcome.TIMED_OUT: 0,
            Outcome.SKIPPED: 0,
        }
