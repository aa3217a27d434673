"""The job API of a kernel (``create_task``, ``list_tasks``, ``pause_task``...) and the
store's static schedules: every value is checked before anything is stored."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import anyio

from .errors import (
    InvalidArgumentError,
    InvalidDataError,
    InvalidTaskError,
    JobNotFoundError,
    TickkitError,
    describe_error,
    short,
)
from .models import Claim, Job, JobState, Plan, check_time
from .registry import TaskDefinition, TaskRegistry, check_job_id, check_lookup
from .schedule import first_run

if TYPE_CHECKING:
    from .clock import Clock
    from .codec import Codec
    from .manager import Hooks
    from .state import Live

#: the largest ``list_tasks`` limit: a store's integer (SQLite's, Redis's) is signed 64-bit
_MAX_LIMIT = 2**63 - 1


class JobAPI:
    """The job API of :class:`tickkit.Kernel` (a base class of it)."""

    tasks: TaskRegistry
    clock: Clock
    _wakeup: anyio.Event

    def _require(self) -> Live:
        raise NotImplementedError

    def _resolve_tasks(self, hooks: Hooks, codec: Codec) -> None:
        raise NotImplementedError

    def static_job(self, definition: TaskDefinition, now: datetime) -> Job | None:
        """The stored form of a static task's schedule (None for tasks without one)."""
        if definition.schedule is None:
            return None
        schedule, first = first_run(definition.schedule.keyed(definition.name), now)
        job = Job(
            id=definition.name,
            name=definition.name,
            data=definition.data,
            schedule=schedule.to_spec(),
            next_run_at=first,
            scheduled_at=first,
            state=JobState.SCHEDULED if first is not None else JobState.COMPLETED,
            static=True,
            max_attempts=definition.max_attempts,
            backoff=definition.backoff,
            created_at=now,
        )
        job.meta.update(self._require().hooks.job_meta(job))
        return job

    async def sync_static(self) -> None:
        """Reconcile the store's static schedules with this kernel's tasks (checked first
        against this kernel's plugins: tasks added since it opened, by a plugin or a reload,
        may have pending schedules)."""
        live = self._require()
        self._resolve_tasks(live.hooks, live.codec)
        driver = live.driver
        now = self.clock.now()
        jobs = [j for d in self.tasks if (j := self.static_job(d, now)) is not None]
        for job in jobs:
            assert job.id is not None
            driver.check_id(job.id)
        await driver.sync_static(jobs, now)
        self._wakeup.set()

    def _run_immediate(self, submit: Callable[[Claim], None]) -> None:
        now = self.clock.now()
        for definition in self.tasks:
            if definition.immediate:
                job = Job(
                    id=definition.name,
                    name=definition.name,
                    data=definition.data,
                    next_run_at=now,
                    scheduled_at=now,
                    created_at=now,
                )
                claim = Claim(job=job, scheduled_at=now, attempt=1, local=True)
                claim.plan = Plan(True, now, 0, None)
                submit(claim)

    async def create_task(
        self,
        name: str,
        data: Any = None,
        schedule: object = None,
        *,
        id: str | None = None,
        replace: bool = False,
    ) -> str:
        """Create a dynamic job of task ``name`` and return its id.

        ``schedule``: None (run now), a cron string, a datetime, a timedelta (run after that
        long), or a schedule dict; see docs/schedules.md. Everything is checked before anything is
        stored.
        """
        live = self._require()
        driver, hooks, codec = live.driver, live.hooks, live.codec
        definition = self.tasks.require(name)
        if id is not None:
            check_job_id(id)
            driver.check_id(id)
        try:
            stored_data = codec.decode(codec.encode(data))
        except TickkitError:
            raise
        except Exception as exc:  # a codec plugin's own error
            raise InvalidDataError(
                f"task data {short(data)} cannot be encoded: {describe_error(exc)}"
            ) from exc
        now = self.clock.now()
        spec: dict[str, Any] | None = None
        if schedule is None:
            # whole milliseconds, as every driver stores times
            first: datetime | None = check_time(now, "the run time (now)")
        else:
            parsed = hooks.parse_schedule(schedule, definition.timezone)
            parsed, first = first_run(
                parsed.keyed(id if id is not None else name), now, required=True
            )
            # a one-off job's time is its next_run_at: only recurring schedules are stored
            spec = parsed.to_spec() if parsed.recurring else None
        job = Job(
            id=id,
            name=name,
            data=stored_data,
            schedule=spec,
            next_run_at=first,
            scheduled_at=first,
            max_attempts=definition.max_attempts,
            backoff=definition.backoff,
            created_at=now,
        )
        job.meta.update(hooks.job_meta(job))
        job_id = await driver.add_job(job, replace=replace)
        self._wakeup.set()
        return job_id

    async def delete_task(self, job_id: str) -> bool:
        """Delete a job (a missing id is not an error). Returns whether it existed."""
        driver = self._require().driver
        return await driver.remove_job(check_lookup(job_id))

    async def delete_tasks(self, *, name: str) -> int:
        """Delete every dynamic job of task ``name``; return how many."""
        driver = self._require().driver
        return await driver.remove_jobs(name=check_lookup(name, "task name", InvalidTaskError))

    async def get_task(self, job_id: str) -> Job | None:
        """The job with this id, or None."""
        driver = self._require().driver
        return await driver.get_job(check_lookup(job_id))

    async def list_tasks(
        self,
        name: str | None = None,
        *,
        state: JobState | str | None = None,
        static: bool | None = None,
        limit: int | None = None,
    ) -> list[Job]:
        """Jobs, filtered by task name, state and kind, ordered by next run time."""
        driver = self._require().driver
        if name is not None:
            check_lookup(name, "task name", InvalidTaskError)
        if state is not None and (
            not isinstance(state, str) or state not in JobState._value2member_map_
        ):
            raise InvalidArgumentError(
                f"state must be one of {', '.join(JobState._value2member_map_)}, got {short(state)}"
            )
        if static is not None and not isinstance(static, bool):
            raise InvalidArgumentError(f"static must be True, False or None, got {short(static)}")
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= _MAX_LIMIT
        ):
            raise InvalidArgumentError(
                f"limit must be an int from 0 to {_MAX_LIMIT} or None, got {short(limit)}"
            )
        st = JobState(state) if state is not None else None
        return await driver.list_jobs(name=name, state=st, static=static, limit=limit)

    async def pause_task(self, job_id: str) -> Job:
        """Pause a job; raises JobNotFoundError for an unknown id."""
        driver = self._require().driver
        job = await driver.set_paused(check_lookup(job_id), True)
        if job is None:
            raise JobNotFoundError(f"no job with id {short(job_id)}")
        return job

    async def resume_task(self, job_id: str) -> Job:
        """Resume a paused job; a run time that passed meanwhile follows the misfire policy."""
        driver = self._require().driver
        job = await driver.set_paused(check_lookup(job_id), False)
        if job is None:
            raise JobNotFoundError(f"no job with id {short(job_id)}")
        self._wakeup.set()
        return job

    async def run_task_now(self, job_id: str) -> str:
        """Run a job now. A scheduled one-off job moves to now; a recurring, paused, running or
        finished job (a dead letter, say) gets an extra one-off run with its task and data, and
        is itself left as it is. Returns the id of the job that runs."""
        driver = self._require().driver
        job = await driver.get_job(check_lookup(job_id))
        if job is None:
            raise JobNotFoundError(f"no job with id {short(job_id)}")
        now = check_time(self.clock.now(), "the run time (now)")
        if job.recurring or job.state is not JobState.SCHEDULED:
            # recurring, running, paused or finished (a dead letter): one extra run, leaving the
            # job itself as it is
            extra = Job(
                id=None,
                name=job.name,
                data=job.data,
                next_run_at=now,
                scheduled_at=now,
                max_attempts=job.max_attempts,
                backoff=job.backoff,
                created_at=now,
                meta={**job.meta, "run_now_of": job_id},
            )
            new_id = await driver.add_job(extra)
            self._wakeup.set()
            return new_id
        if not await driver.move_to(job_id, now):
            raise JobNotFoundError(f"job {job_id!r} cannot be run now (state {job.state})")
        self._wakeup.set()
        return job_id

    # --- dispatch -----------------------------------------------------------------------
