"""The job API of a kernel (``create_task``, ``list_tasks``, ``pause_task``...) and the
store's static schedules: every value is checked before anything is stored."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

import anyio

from . import manage
from .errors import (
    InvalidDataError,
    InvalidTaskError,
    JobNotFoundError,
    TickkitError,
    describe_error,
    short,
)
from .models import UNSET, Claim, Job, JobState, Outcome, Plan, RunRecord, check_time
from .registry import TaskDefinition, TaskRegistry, check_job_id, check_lookup
from .schedule import first_run

if TYPE_CHECKING:
    from .clock import Clock
    from .codec import Codec
    from .kernel import Kernel
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
        job = Job.static_task(
            definition.name,
            definition.data,
            schedule=schedule.to_spec(),
            recurring=schedule.recurring,
            first=first,
            created_at=now,
            max_attempts=definition.max_attempts,
            backoff=definition.backoff,
        )
        job.meta.update(self._require().hooks.job_meta(job, cast("Kernel", self)))
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
        # the data keys tasks look jobs up by (``task(indexes=...)``): the store records them,
        # so every process indexes its writes the same way
        await driver.ensure_indexes(sorted({key for d in self.tasks for key in d.indexes}))
        await driver.sync_static(jobs, now)
        self._wakeup.set()

    def _run_immediate(self, submit: Callable[[Claim], None]) -> None:
        now = self.clock.now()
        for definition in self.tasks:
            if definition.immediate:
                job = Job.one_off(
                    definition.name, definition.data, at=now, id=definition.name, created_at=now
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
        connection: object = None,
    ) -> str:
        """Create a dynamic job of task ``name`` and return its id.

        ``schedule``: None (run now), a cron string, a datetime, a timedelta (run after that
        long), or a schedule dict; see docs/schedules.md. Everything is checked before anything is
        stored. ``connection``: your own open connection to the store, with a transaction open
        (PostgreSQL: an asyncpg connection); the job then exists if and only if that
        transaction commits (``Driver.using``; a driver without it refuses).
        """
        live = self._require()
        driver, hooks, codec = live.driver, live.hooks, live.codec
        definition = self.tasks.require(name)
        if id is not None:
            check_job_id(id)
            driver.check_id(id)
        try:
            # encoded once: the driver stores this text (Job.data_text); the job holds the
            # data as a reader will get it back
            data_text = codec.encode(data)
            stored_data = codec.decode(data_text)
        except TickkitError:
            raise
        except Exception as exc:  # a codec plugin's own error
            raise InvalidDataError(
                f"task data {short(data)} cannot be encoded: {describe_error(exc)}"
            ) from exc
        now = self.clock.now()
        spec, first = self._plan_schedule(definition, schedule, id if id is not None else name)
        common: dict[str, Any] = {
            "id": id,
            "created_at": now,
            "max_attempts": definition.max_attempts,
            "backoff": definition.backoff,
            "data_text": data_text,
        }
        if spec is None:
            job = Job.one_off(name, stored_data, at=first, **common)
        else:
            job = Job.repeating(name, stored_data, schedule=spec, first=first, **common)
        # a driver refuses a connection before any hook sees the job (no create span for a
        # job that is never stored)
        scope = driver.using(connection) if connection is not None else None
        job.meta.update(hooks.job_meta(job, cast("Kernel", self)))
        if scope is None:
            job_id = await driver.add_job(job, replace=replace)
        else:
            async with scope:
                job_id = await driver.add_job(job, replace=replace)
        self._wakeup.set()
        return job_id

    def _plan_schedule(
        self, definition: TaskDefinition | None, schedule: object, key: str
    ) -> tuple[dict[str, Any] | None, datetime]:
        """A job's stored schedule spec (None: one-off; only recurring schedules are stored) and
        its first run, from what the caller gave (None: now), anchored at the clock's now."""
        now = self.clock.now()
        if schedule is None:
            # whole milliseconds, as every driver stores times
            return None, check_time(now, "the run time (now)")
        zone = definition.timezone if definition is not None else None
        parsed = self._require().hooks.parse_schedule(schedule, zone)
        parsed, first = first_run(parsed.keyed(key), now, required=True)
        assert first is not None  # required=True: a schedule with no run is refused
        return (parsed.to_spec() if parsed.recurring else None), first

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
        where: Mapping[str, Any] | None = None,
        state: JobState | str | None = None,
        static: bool | None = None,
        limit: int | None = None,
        after: str | Job | None = None,
    ) -> list[Job]:
        """Jobs matching every filter given (task name, top-level data keys in ``where``, state,
        kind), ordered by next run time then id, at most ``limit``; ``after`` (the id of the last
        job of the previous page, or that Job) gives the next page (docs/managing-jobs.md)."""
        driver = self._require().driver
        if name is not None:
            check_lookup(name, "task name", InvalidTaskError)
        return await manage.list_jobs(
            driver, name, where=where, state=state, static=static, limit=limit, after=after
        )

    async def count_tasks(
        self,
        name: str | None = None,
        *,
        where: Mapping[str, Any] | None = None,
        state: JobState | str | None = None,
    ) -> int:
        """How many jobs match every filter given (as :meth:`list_tasks` filters)."""
        driver = self._require().driver
        if name is not None:
            check_lookup(name, "task name", InvalidTaskError)
        return await manage.count_jobs(driver, name, where=where, state=state)

    async def count_by_state(
        self, name: str | None = None, *, where: Mapping[str, Any] | None = None
    ) -> dict[JobState, int]:
        """Every state with its number of jobs matching the filters (0 included), in one call
        (a driver answers from its indexes or set sizes, not by listing)."""
        driver = self._require().driver
        if name is not None:
            check_lookup(name, "task name", InvalidTaskError)
        return await manage.count_by_state(driver, name, where=where)

    async def count_by_task(self, *, state: JobState | str | None = None) -> dict[str, int]:
        """Task name to its number of jobs (in ``state`` when given), in name order."""
        return await manage.count_by_task(self._require().driver, state=state)

    async def count_runs(self, since: datetime) -> dict[Outcome, int] | None:
        """Runs completed at or after ``since`` per outcome (0 included; MISSED occurrences are
        not runs), counted per minute by the store whatever the history retention removed; the
        minute holding ``since`` counts whole. None: the driver keeps no run counters."""
        return await manage.count_runs(self._require().driver, since)

    async def update_task(self, job_id: str, *, data: Any = UNSET, schedule: object = UNSET) -> Job:
        """Change a job's data, its schedule (as ``create_task`` takes it; None: run now), or
        both, atomically; checked like ``create_task``. A running occurrence finishes with what
        it had; the next one uses the new values. Raises JobNotFoundError for an unknown id."""
        live = self._require()
        check_lookup(job_id)

        def check_data(value: Any) -> Any:
            try:
                return live.codec.decode(live.codec.encode(value))
            except TickkitError:
                raise
            except Exception as exc:  # a codec plugin's own error
                raise InvalidDataError(
                    f"task data {short(value)} cannot be encoded: {describe_error(exc)}"
                ) from exc

        def plan(job: Job, given: object) -> tuple[dict[str, Any] | None, datetime]:
            return self._plan_schedule(self.tasks.get(job.name), given, job_id)

        updated = await manage.update_job(
            live.driver,
            job_id,
            data=data,
            schedule=schedule,
            check_data=check_data,
            plan_schedule=plan,
        )
        self._wakeup.set()
        return updated

    async def get_runs(self, job_id: str, *, limit: int = 20) -> list[RunRecord]:
        """The job's kept runs, newest first (its history outlives it for the store's
        retention; docs/managing-jobs.md)."""
        driver = self._require().driver
        check_lookup(job_id)
        return await manage.get_runs(driver, job_id, limit=limit)

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
            extra = Job.extra_run(job, now)
            new_id = await driver.add_job(extra)
            self._wakeup.set()
            return new_id
        if not await driver.move_to(job_id, now):
            raise JobNotFoundError(f"job {job_id!r} cannot be run now (state {job.state})")
        self._wakeup.set()
        return job_id

    # --- dispatch -----------------------------------------------------------------------
