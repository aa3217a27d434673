"""Poisoned stores: rows written by an older version, another tool or by hand, on real files.

The rule (docs/drivers/sqlite.md, "Rows tickkit cannot read"): a row the driver cannot read is
failed once, with a reason naming the column, and stays listable; every other job keeps being
served; nothing loops. Each bad row here is written with the ``sqlite3`` module, as another
tool would.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from tickkit import Acquired, JobState, Kernel, Outcome, RunResult
from tickkit.drivers.sqlite import SQLiteDriver, claim_read_params, claim_read_sql
from tickkit.models import to_millis
from tickkit.testing import VirtualClock

from .sqlite_helpers.common import T0, one_off, opened, recording_tasks
from .test_cli import tickkit
from .waiting import wait_for

pytestmark = pytest.mark.anyio

T0_MS = to_millis(T0)
CRON = '{"timezone": "UTC", "type": "cron", "value": "*/10 * * * *"}'

#: id -> (column named in the reason, SQL fragment for ``UPDATE tickkit_jobs SET ...``)
BAD_ROWS: dict[str, tuple[str, str]] = {
    "bad-cron": ("schedule", """schedule = '{"type": "cron", "value": "61 * * * *"}'"""),
    "bad-zone": (
        "schedule",
        """schedule = '{"type": "cron", "value": "*/10 * * * *", "timezone": "Mars/Base"}'""",
    ),
    "unknown-type": ("schedule", """schedule = '{"type": "lunar", "value": "full"}'"""),
    "schedule-not-json": ("schedule", "schedule = 'cron{'"),
    "schedule-not-object": ("schedule", "schedule = '[1, 2]'"),
    "next-run-text": ("next_run_at", "next_run_at = 'tomorrow'"),
    "next-run-null": ("next_run_at", "next_run_at = NULL, scheduled_at = NULL"),
    "next-run-huge": ("next_run_at", "next_run_at = 1e300"),
    "next-run-blob": ("next_run_at", "next_run_at = X'00ff'"),
    "scheduled-at-null": ("scheduled_at", "scheduled_at = NULL"),
    "scheduled-at-text": ("scheduled_at", "scheduled_at = 'noon'"),
    "data-not-json": ("data", "data = 'not json{'"),
    "data-blob": ("data", "data = X'00ff'"),
    "meta-not-json": ("meta", "meta = 'meta{'"),
    "meta-not-object": ("meta", "meta = '[1]'"),
    "backoff-not-json": ("backoff", "backoff = 'slow'"),
    "backoff-bad": ("backoff", """backoff = '{"type": "sideways", "delay": 1}'"""),
    "bogus-state": ("state", "state = 'bogus'"),
    "state-number": ("state", "state = 7"),
    "attempt-text": ("attempt", "attempt = 'two'"),
    "max-attempts-text": ("max_attempts", "max_attempts = 'many'"),
    "runs-text": ("runs", "runs = 'lots'"),
    "static-text": ("static", "static = 'yes'"),
    "created-at-text": ("created_at", "created_at = 'yesterday'"),
    "last-outcome-bogus": ("last_outcome", "last_outcome = 'exploded'"),
    "last-error-blob": ("last_error", "last_error = X'00'"),
    "name-blob": ("name", "name = X'00'"),
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "tasks.db"


def poison(db: Path, job_id: str, assignment: str) -> None:
    conn = sqlite3.connect(db)
    try:
        with conn:
            changed = conn.execute(
                f"UPDATE tickkit_jobs SET {assignment} WHERE id = ?", (job_id,)
            ).rowcount
        assert changed == 1
    finally:
        conn.close()


class CountingDriver(SQLiteDriver):
    """Counts the claims it hands out, per job id."""

    claims: dict[Any, int]

    async def acquire(self, **kw: Any) -> Acquired:
        got = await super().acquire(**kw)
        counts = self.__dict__.setdefault("claims", {})
        for claim in got.claims:
            counts[claim.job.id] = counts.get(claim.job.id, 0) + 1
        return got


def failure_lines(caplog: pytest.LogCaptureFixture, job_id: str) -> int:
    return sum(
        1 for r in caplog.records if r.levelno >= logging.WARNING and str(job_id) in r.getMessage()
    )


async def test_every_kind_of_bad_row_fails_once_and_stays_listable(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    clock = VirtualClock(T0)
    runs: list[Any] = []
    async with opened(SQLiteDriver(db), clock) as d:
        for job_id in BAD_ROWS:
            await d.add_job(one_off(job_id, T0 + timedelta(seconds=1), data=job_id))
        for i in range(5):
            await d.add_job(one_off(f"good-{i}", T0 + timedelta(seconds=2), data=f"good-{i}"))
    for job_id, (_column, assignment) in BAD_ROWS.items():
        if job_id.startswith(("bad-", "unknown-")):
            poison(db, job_id, f"schedule = '{CRON}'")  # a recurring job first
        poison(db, job_id, assignment)
    driver = CountingDriver(db, keep_completed=True)
    started = time.process_time()
    async with Kernel(driver, tasks=recording_tasks(runs), clock=clock) as kernel:
        # before any worker touched them, every row is listable, the bad ones with a defect
        listed = {j.id: j for j in await kernel.list_tasks()}
        assert len(listed) == len(BAD_ROWS) + 5
        for job_id, (column, _assignment) in BAD_ROWS.items():
            if job_id in ("bad-cron", "bad-zone", "unknown-type"):
                continue  # readable rows: only planning them fails
            key: Any = job_id
            job = listed[key]
            assert job.defect is not None and column in job.defect, (job_id, job.defect)
        await clock.advance(5)
        await clock.advance(timedelta(minutes=30))  # past any next occurrence: nothing reruns
        cpu = time.process_time() - started
        assert sorted(r[1] for r in runs) == [f"good-{i}" for i in range(5)]
        for job_id, (column, _assignment) in BAD_ROWS.items():
            assert driver.claims.get(job_id) == 1, (job_id, driver.claims.get(job_id))
            job = await kernel.get_task(job_id)
            assert job is not None, job_id
            assert job.state is JobState.FAILED, (job_id, job.state, job.defect)
            assert job.last_outcome is Outcome.FAILED, job_id
            assert job.last_error is not None and column in job.last_error, (
                job_id,
                job.last_error,
            )
            assert failure_lines(caplog, job_id) <= 2, job_id  # the failure, said once
        # listable forever, by every listing
        everything = await kernel.list_tasks()
        assert len(everything) == len(BAD_ROWS) + 5
        failed = await kernel.list_tasks(state="failed")
        assert {j.id for j in failed} == set(BAD_ROWS)
        assert len(await driver.dead_letters()) == len(BAD_ROWS)
        assert sum(driver.claims.values()) == len(BAD_ROWS) + 5
    assert cpu < 10  # no hot loop (a loop burnt 5 s of CPU in 6 s)
    # and after a restart, still listable (the completed good jobs are pruned by retention)
    async with opened(SQLiteDriver(db), clock) as d:
        assert {j.id for j in await d.list_jobs()} == set(BAD_ROWS)


async def test_bad_stored_schedules_make_no_hot_loop_in_real_time(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A real clock and a fast poll: the loop of claim, fail to plan, release showed as 5 s of
    CPU in 6 s and thousands of log lines."""
    caplog.set_level(logging.INFO)
    runs: list[Any] = []
    names = ("bad-cron", "bad-zone", "unknown-type", "next-run-text", "scheduled-at-null")
    async with opened(SQLiteDriver(db)) as d:
        now = to_millis(d.ctx.clock.now())
        for job_id in names:
            await d.add_job(one_off(job_id, T0))
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE tickkit_jobs SET next_run_at = ?, scheduled_at = ?", (now, now))
    conn.close()
    for job_id in names:
        if job_id.startswith(("bad-", "unknown-")):
            poison(db, job_id, f"schedule = '{CRON}'")
        poison(db, job_id, BAD_ROWS[job_id][1])
    driver = CountingDriver(db, poll_interval=0.02)
    started = time.process_time()
    async with Kernel(driver, tasks=recording_tasks(runs)) as kernel:
        await kernel.create_task("record", "good-1")
        await anyio.sleep(1.5)
        await kernel.create_task("record", "good-2")
        await wait_for(lambda: len(runs) >= 2, 5, "the good jobs to run")
    cpu = time.process_time() - started
    assert sorted(r[1] for r in runs) == ["good-1", "good-2"]
    assert {job_id: driver.claims.get(job_id) for job_id in names} == dict.fromkeys(names, 1)
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) <= 2 * len(names)
    assert cpu < 1.0, cpu


async def test_claim_read_skips_rows_of_the_wrong_type_and_keeps_its_index(db: Path) -> None:
    """A text next_run_at used to come back as "the next due time" and break every acquire."""
    clock = VirtualClock(T0)
    async with opened(SQLiteDriver(db), clock) as d:
        await d.add_jobs([one_off(f"j{i}", T0 + timedelta(seconds=i)) for i in range(2000)])
        await d.add_job(one_off("text", T0 + timedelta(days=1)))
        await d.add_job(one_off("lease-text", T0 + timedelta(days=1)))
    poison(db, "text", "next_run_at = 'soon'")
    poison(db, "lease-text", "state = 'running', lease_expires_at = 'never'")
    with sqlite3.connect(db) as conn:
        conn.execute("ANALYZE")
        for excluded in (0, 2):
            params = claim_read_params(0, 64, ["a", "b"][:excluded])
            sql = claim_read_sql(excluded)
            plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
            assert not [step for step in plan if step.startswith("SCAN tickkit_jobs")], plan
            assert not [step for step in plan if "TEMP B-TREE" in step], plan
    conn.close()
    async with opened(SQLiteDriver(db), clock) as d:
        got = await d.acquire(now=T0 + timedelta(seconds=10), limit=100)
        ids = {c.job.id for c in got.claims}
        # the due jobs, the unreadable next_run_at (failed by the kernel) and the lease taken over
        assert {f"j{i}" for i in range(11)} | {"text", "lease-text"} == ids
        assert got.next_due == T0 + timedelta(seconds=11)
        text = next(c for c in got.claims if c.job.id == "text")
        assert text.job.defect is not None and "next_run_at" in text.job.defect
        lease = next(c for c in got.claims if c.job.id == "lease-text")
        assert lease.job.defect is None  # the lease is the driver's: it is simply taken over


async def test_to_job_never_raises(db: Path) -> None:
    """Every listing reads every row: a defect, never an exception."""
    clock = VirtualClock(T0)
    async with opened(SQLiteDriver(db), clock) as d:
        for job_id in BAD_ROWS:
            await d.add_job(one_off(job_id))
        for job_id, (_column, assignment) in BAD_ROWS.items():
            poison(db, job_id, assignment)
        for job_id, (column, _assignment) in BAD_ROWS.items():
            if job_id in ("bad-cron", "bad-zone", "unknown-type"):
                continue
            job = await d.get_job(job_id)
            assert job is not None and job.defect is not None, job_id
            assert column in job.defect, (job_id, job.defect)
        assert len(await d.list_jobs()) == len(BAD_ROWS)
        assert len(await d.list_jobs(state=JobState.SCHEDULED)) >= 1
        await d.count_jobs()


async def test_poisoned_history_rows_never_break_get_runs(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Hand-edited rows of ``tickkit_runs``: returned with what can be read (an unreadable
    optional column is None); one without a readable finish time, attempt or outcome is left
    out and logged, naming it. The listing never raises."""
    clock = VirtualClock(T0)
    async with opened(SQLiteDriver(db), clock) as d:
        await d.add_job(one_off("h"))
        (claim,) = (await d.acquire(now=T0, limit=1)).claims
        await d.complete(claim, RunResult(Outcome.SUCCEEDED, T0, started_at=T0))
        rows = [
            # (name, scheduled_at, started_at, finished_at, attempt, outcome, error, worker)
            (b"\x00", "noon", 1.5e300, T0_MS + 1, 2, "failed", b"\xff", b"\x01"),  # junk
            ("record", None, None, "yesterday", 3, "failed", "E", "w"),  # finished_at text
            ("record", None, None, T0_MS + 2, -1, "failed", "E", "w"),  # attempt negative
            ("record", None, None, T0_MS + 3, 4, "exploded", "E", "w"),  # unknown outcome
            ("record", None, None, None, None, None, None, None),  # all NULL: no finish, no age
        ]
        with sqlite3.connect(db) as conn:
            conn.executemany(
                "INSERT INTO tickkit_runs (job_id, name, scheduled_at, started_at, finished_at, "
                "attempt, outcome, error, worker) VALUES ('h', ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        with caplog.at_level(logging.WARNING, logger="tickkit"):
            runs = await d.get_runs("h", limit=50)
        assert [(r.attempt, r.outcome) for r in runs] == [
            (2, Outcome.FAILED),
            (1, Outcome.SUCCEEDED),
        ]
        junk = runs[0]
        assert junk.finished_at == T0 + timedelta(milliseconds=1)
        assert (junk.name, junk.scheduled_at, junk.started_at, junk.error, junk.worker) == (
            "",
            None,
            None,
            None,
            None,
        )
        assert "'yesterday'" in caplog.text and "'exploded'" in caplog.text
        assert "attempt = -1" in caplog.text


def test_cli_lists_and_shows_a_poisoned_store(db: Path) -> None:
    """``tickkit list`` and ``tickkit show`` read every row, the unreadable ones too."""

    async def build() -> None:
        async with opened(SQLiteDriver(db), VirtualClock(T0)) as d:
            for job_id in ("name-blob", "bogus-state", "good"):
                await d.add_job(one_off(job_id))

    anyio.run(build)
    for job_id in ("name-blob", "bogus-state"):
        poison(db, job_id, BAD_ROWS[job_id][1])
    url = f"sqlite:///{db}"
    listed = tickkit("list", "--driver", url)
    assert listed.returncode == 0, listed.stderr
    for job_id in ("name-blob", "bogus-state", "good"):
        assert job_id in listed.stdout
    as_json = tickkit("list", "--driver", url, "--json")
    assert as_json.returncode == 0, as_json.stderr
    listed_jobs = {job["id"]: job for job in json.loads(as_json.stdout)}
    assert len(listed_jobs) == 3
    # jobs due at the same time are listed by id (the list order is total)
    assert list(listed_jobs) == ["bogus-state", "good", "name-blob"]
    assert "name" in listed_jobs["name-blob"]["defect"]
    shown = tickkit("show", "name-blob", "--driver", url)
    assert shown.returncode == 0, shown.stderr
    assert "defect:" in shown.stdout and "name = X'00'" in shown.stdout
