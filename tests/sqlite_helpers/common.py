"""Helpers shared by the SQLite driver's in-process tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from tickkit import UTC, Job, Kernel, TaskContext, TaskRegistry, task
from tickkit.drivers.sqlite import SQLiteDriver
from tickkit.testing import VirtualClock

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def recording_tasks(runs: list[tuple[str, Any, int, datetime]], **options: Any) -> TaskRegistry:
    """``record`` appends (name, data, attempt, scheduled_at); ``boom`` always fails; extra
    tasks: ``options`` maps a name to the keyword options of a recording task."""
    registry = TaskRegistry()

    async def record(ctx: TaskContext) -> None:
        runs.append((ctx.task.name, ctx.data, ctx.attempt, ctx.scheduled_at))

    async def boom(ctx: TaskContext) -> None:
        runs.append((ctx.task.name, ctx.data, ctx.attempt, ctx.scheduled_at))
        raise ValueError(f"boom {ctx.data}")

    task(name="record", execute=record, registry=registry)
    task(name="boom", execute=boom, retries=1, backoff=5, registry=registry)
    for name, kw in options.items():
        task(name=name, execute=record, registry=registry, **kw)
    return registry


@asynccontextmanager
async def opened(
    driver: SQLiteDriver, clock: VirtualClock | None = None, tasks: TaskRegistry | None = None
) -> AsyncIterator[SQLiteDriver]:
    """The driver started by an opened (not dispatching) kernel, then stopped."""
    kernel = Kernel(driver, tasks=tasks or TaskRegistry(), clock=clock or VirtualClock(T0))
    await kernel.open()
    try:
        yield driver
    finally:
        await kernel.stop()


def one_off(job_id: str | None = None, at: datetime = T0, name: str = "record", **kw: Any) -> Job:
    return Job(id=job_id, name=name, next_run_at=at, scheduled_at=at, created_at=T0, **kw)
