"""Restarts on one SQLite file with the virtual clock: dynamic jobs survive, and a static cron
task keeps its last fire time, so its misfire policy applies to the time the bot was down
(``@commandkit/tasks`` re-created static cron rows at every start and never caught up)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tickkit import JobState, Kernel, Outcome
from tickkit.drivers.sqlite import SQLiteDriver
from tickkit.testing import VirtualClock

from .sqlite_helpers.common import T0, opened, recording_tasks

pytestmark = pytest.mark.anyio

HOUR = timedelta(hours=1)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def at(hour: int) -> datetime:
    return T0 + hour * HOUR


async def test_dynamic_jobs_survive_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "bot.db"
    clock = VirtualClock(T0)
    runs: list[Any] = []
    async with Kernel(SQLiteDriver(db), tasks=recording_tasks(runs), clock=clock) as kernel:
        await kernel.create_task("record", {"remind": "tea"}, T0 + timedelta(minutes=30), id="tea")
        await kernel.create_task("record", "tick", "*/20 * * * *", id="tick")
        await kernel.create_task("record", "held", T0 + timedelta(minutes=5), id="held")
        await kernel.pause_task("held")
        await clock.advance(timedelta(minutes=25))  # tick ran at :20
        before = {job.id: job for job in await kernel.list_tasks()}
    assert [r[1] for r in runs] == ["tick"]
    assert set(before) == {"tea", "tick", "held"}

    async with Kernel(SQLiteDriver(db), tasks=recording_tasks(runs), clock=clock) as kernel:
        after = {job.id: job for job in await kernel.list_tasks()}
        assert after == before
        await clock.advance(timedelta(minutes=20))
        assert runs[1:] == [
            ("record", {"remind": "tea"}, 1, T0 + timedelta(minutes=30)),
            ("record", "tick", 1, T0 + timedelta(minutes=40)),
        ]
        held = await kernel.get_task("held")
        assert held is not None and held.state is JobState.PAUSED
        tea = await kernel.get_task("tea")
        assert tea is None  # finished one-off jobs are removed by default


@pytest.mark.parametrize(
    ("misfire", "catch_up"),
    [
        ("skip", []),
        ("once", [at(7)]),
        ("all", [at(3), at(4), at(5), at(6), at(7)]),
    ],
)
async def test_static_cron_catches_up_after_downtime(
    tmp_path: Path, misfire: str, catch_up: list[datetime]
) -> None:
    db = tmp_path / "bot.db"
    clock = VirtualClock(T0)
    runs: list[Any] = []

    def tasks() -> Any:
        return recording_tasks(runs, hourly={"schedule": "0 * * * *", "misfire": misfire})

    async with Kernel(SQLiteDriver(db), tasks=tasks(), clock=clock):
        await clock.advance(2 * HOUR + timedelta(minutes=10))
    assert [r[3] for r in runs] == [at(1), at(2)]

    # the bot is down from 02:10 to 07:10: the runs of 03:00 to 07:00 are missed
    await clock.advance(5 * HOUR)
    async with opened(SQLiteDriver(db), clock) as store:
        stored = await store.get_job("hourly")
        assert stored is not None and stored.static
        assert stored.next_run_at == at(3)  # the stored schedule remembers where it stopped
    async with Kernel(SQLiteDriver(db), tasks=tasks(), clock=clock) as kernel:
        await clock.settle()
        assert [r[3] for r in runs] == [at(1), at(2), *catch_up]
        await clock.advance(HOUR)  # then the schedule goes on: 08:00
        assert [r[3] for r in runs] == [at(1), at(2), *catch_up, at(8)]
        job = await kernel.get_task("hourly")
        assert job is not None and job.next_run_at == at(9)
        # skip records the missed occurrence (outcome "missed") without running it
        recorded_missed = 1 if misfire == "skip" else 0
        assert job.runs == 2 + len(catch_up) + recorded_missed + 1


async def test_static_cron_with_a_changed_schedule_starts_afresh(tmp_path: Path) -> None:
    db = tmp_path / "bot.db"
    clock = VirtualClock(T0)
    runs: list[Any] = []
    async with Kernel(
        SQLiteDriver(db), tasks=recording_tasks(runs, job={"schedule": "0 * * * *"}), clock=clock
    ):
        await clock.advance(HOUR + timedelta(minutes=10))
    await clock.advance(5 * HOUR)
    # the code now says every day at noon: the old hourly occurrences are not caught up
    async with Kernel(
        SQLiteDriver(db), tasks=recording_tasks(runs, job={"schedule": "0 12 * * *"}), clock=clock
    ) as kernel:
        await clock.settle()
        job = await kernel.get_task("job")
        assert job is not None and job.next_run_at == at(12)
        assert job.last_outcome is None  # a new job
    assert [r[3] for r in runs] == [at(1)]


async def test_missed_one_off_reminder_runs_after_restart(tmp_path: Path) -> None:
    db = tmp_path / "bot.db"
    clock = VirtualClock(T0)
    runs: list[Any] = []
    tasks = recording_tasks(runs, strict={"misfire_grace": 60})
    async with Kernel(SQLiteDriver(db), tasks=tasks, clock=clock) as kernel:
        await kernel.create_task("record", "late", T0 + timedelta(minutes=10))
        await kernel.create_task("strict", "dropped", T0 + timedelta(minutes=10))
    await clock.advance(HOUR)  # down while both were due
    async with Kernel(SQLiteDriver(db, keep_completed=True), tasks=tasks, clock=clock) as kernel:
        await clock.settle()
        assert [(r[1], r[3]) for r in runs] == [("late", T0 + timedelta(minutes=10))]
        (dropped,) = await kernel.list_tasks("strict")
        assert dropped.state is JobState.MISSED and dropped.last_outcome is Outcome.MISSED
