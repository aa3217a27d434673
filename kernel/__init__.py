"""tickkit: schedule and run tasks for chat bots and async services.

Static tasks are defined with :func:`task`; dynamic jobs are created at run time with
:func:`create_task`; a :class:`Kernel` runs them from a driver (memory, SQLite, Redis/BullMQ).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ._version import __version__
from .clock import UTC, Clock, SystemClock
from .codec import Codec, JSONCodec
from .context import TaskContext
from .driver import Driver, DriverContext
from .errors import (
    DriverError,
    DriverNotFoundError,
    DuplicateTaskError,
    IncompatibleStoreError,
    InvalidArgumentError,
    InvalidCronError,
    InvalidDataError,
    InvalidJobIdError,
    InvalidScheduleError,
    InvalidTaskError,
    JobExistsError,
    JobNotFoundError,
    KernelNotRunningError,
    MissingExtraError,
    PluginError,
    PrepareResultError,
    TickkitError,
    UnknownTaskError,
    UnknownTimezoneError,
    short,
)
from .hookspecs import hookimpl, hookspec
from .kernel import Kernel, current_kernel, running_kernels, set_driver
from .manager import default_hooks
from .models import (
    EARLIEST_TIME,
    LATEST_TIME,
    MAX_DURATION,
    UNSET,
    Acquired,
    Backoff,
    Claim,
    Cursor,
    Job,
    JobState,
    Misfire,
    Outcome,
    Plan,
    RunRecord,
    RunResult,
    Where,
)
from .redact import redact, redact_url
from .registry import TaskDefinition, TaskRegistry, default_registry, define_task, task
from .schedule import Schedule, first_run, next_run, plan_occurrence

__all__ = [
    "EARLIEST_TIME",
    "LATEST_TIME",
    "MAX_DURATION",
    "UNSET",
    "UTC",
    "Acquired",
    "Backoff",
    "Claim",
    "Clock",
    "Codec",
    "Cursor",
    "Driver",
    "DriverContext",
    "DriverError",
    "DriverNotFoundError",
    "DuplicateTaskError",
    "IncompatibleStoreError",
    "InvalidArgumentError",
    "InvalidCronError",
    "InvalidDataError",
    "InvalidJobIdError",
    "InvalidScheduleError",
    "InvalidTaskError",
    "JSONCodec",
    "Job",
    "JobExistsError",
    "JobNotFoundError",
    "JobState",
    "Kernel",
    "KernelNotRunningError",
    "Misfire",
    "MissingExtraError",
    "Outcome",
    "Plan",
    "PluginError",
    "PrepareResultError",
    "RunRecord",
    "RunResult",
    "Schedule",
    "SystemClock",
    "TaskContext",
    "TaskDefinition",
    "TaskRegistry",
    "TickkitError",
    "UnknownTaskError",
    "UnknownTimezoneError",
    "Where",
    "__version__",
    "count_by_state",
    "count_by_task",
    "count_runs",
    "count_tasks",
    "create_task",
    "current_kernel",
    "default_registry",
    "define_task",
    "delete_task",
    "delete_tasks",
    "get_runs",
    "get_task",
    "hookimpl",
    "hookspec",
    "list_tasks",
    "next_runs",
    "parse_schedule",
    "pause_task",
    "plan_occurrence",
    "redact",
    "redact_url",
    "resume_task",
    "run_task_now",
    "running_kernels",
    "set_driver",
    "task",
    "update_task",
]


def parse_schedule(value: object, timezone: str | None = None) -> Schedule:
    """Parse a schedule the way ``task`` and ``create_task`` do (errors name the value)."""
    return default_hooks().parse_schedule(value, timezone)


#: the most fire times one ``next_runs`` call returns
MAX_NEXT_RUNS = 10_000


def next_runs(
    schedule: object,
    *,
    after: datetime | None = None,
    count: int = 5,
    timezone: str | None = None,
) -> list[datetime]:
    """The next ``count`` fire times of ``schedule`` after ``after`` (default: now), as aware
    datetimes (in the schedule's time zone when it has one, else UTC). ``count`` is 1 to
    ``MAX_NEXT_RUNS``; the times are the ones a job created at ``after`` would get (whole
    milliseconds, within ``EARLIEST_TIME``..``LATEST_TIME``)."""
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_NEXT_RUNS:
        raise InvalidScheduleError(
            f"count must be an int from 1 to {MAX_NEXT_RUNS}, got {short(count)}"
        )
    now = after if after is not None else datetime.now(UTC)
    if not isinstance(now, datetime) or now.tzinfo is None or now.utcoffset() is None:
        raise InvalidScheduleError(f"after must be an aware datetime, got {short(now)}")
    parsed, at = first_run(parse_schedule(schedule, timezone), now)
    zone = getattr(parsed, "zone", None)
    out: list[datetime] = []
    while at is not None and len(out) < count:
        out.append(at.astimezone(zone) if zone is not None else at)
        if not parsed.recurring:
            break
        at = next_run(parsed, at)
    return out


async def create_task(
    name: str,
    data: Any = None,
    schedule: object = None,
    *,
    id: str | None = None,
    replace: bool = False,
    connection: object = None,
) -> str:
    """Create a dynamic job on the running kernel; see :meth:`Kernel.create_task`."""
    return await current_kernel().create_task(
        name, data, schedule, id=id, replace=replace, connection=connection
    )


async def delete_task(job_id: str) -> bool:
    """Delete a job (a missing id is not an error)."""
    return await current_kernel().delete_task(job_id)


async def delete_tasks(*, name: str) -> int:
    """Delete every dynamic job of task ``name``."""
    return await current_kernel().delete_tasks(name=name)


async def get_task(job_id: str) -> Job | None:
    """The job with this id, or None."""
    return await current_kernel().get_task(job_id)


async def list_tasks(
    name: str | None = None,
    *,
    where: Mapping[str, Any] | None = None,
    state: JobState | str | None = None,
    static: bool | None = None,
    limit: int | None = None,
    after: str | Job | None = None,
) -> list[Job]:
    """:meth:`Kernel.list_tasks` on the current kernel (paging with ``after``, ``where``)."""
    return await current_kernel().list_tasks(
        name, where=where, state=state, static=static, limit=limit, after=after
    )


async def count_tasks(
    name: str | None = None,
    *,
    where: Mapping[str, Any] | None = None,
    state: JobState | str | None = None,
) -> int:
    """:meth:`Kernel.count_tasks` on the current kernel."""
    return await current_kernel().count_tasks(name, where=where, state=state)


async def count_by_state(
    name: str | None = None, *, where: Mapping[str, Any] | None = None
) -> dict[JobState, int]:
    """:meth:`Kernel.count_by_state` on the current kernel."""
    return await current_kernel().count_by_state(name, where=where)


async def count_by_task(*, state: JobState | str | None = None) -> dict[str, int]:
    """:meth:`Kernel.count_by_task` on the current kernel."""
    return await current_kernel().count_by_task(state=state)


async def count_runs(since: datetime) -> dict[Outcome, int] | None:
    """:meth:`Kernel.count_runs` on the current kernel."""
    return await current_kernel().count_runs(since)


async def update_task(job_id: str, *, data: Any = UNSET, schedule: object = UNSET) -> Job:
    """:meth:`Kernel.update_task` on the current kernel."""
    return await current_kernel().update_task(job_id, data=data, schedule=schedule)


async def get_runs(job_id: str, *, limit: int = 20) -> list[RunRecord]:
    """:meth:`Kernel.get_runs` on the current kernel (newest first)."""
    return await current_kernel().get_runs(job_id, limit=limit)


async def pause_task(job_id: str) -> Job:
    """Pause a job."""
    return await current_kernel().pause_task(job_id)


async def resume_task(job_id: str) -> Job:
    """Resume a paused job."""
    return await current_kernel().resume_task(job_id)


async def run_task_now(job_id: str) -> str:
    """Run a job now; returns the id of the job that runs."""
    return await current_kernel().run_task_now(job_id)
