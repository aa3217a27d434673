"""The kernel: lifecycle (an anyio task group), dispatch of due jobs, and the run of one job."""

from __future__ import annotations

import inspect
import json
import logging
import os
import socket
import traceback
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from datetime import datetime, timedelta
from typing import Any

import anyio
import anyio.abc

from .clock import Clock, SystemClock
from .codec import Codec
from .context import TaskContext
from .driver import Driver, DriverContext
from .errors import (
    InvalidArgumentError,
    InvalidDataError,
    InvalidTaskError,
    JobNotFoundError,
    KernelNotRunningError,
    PrepareResultError,
    TickkitError,
    describe_error,
    short,
)
from .manager import Hooks, create_plugin_manager, load_driver_class
from .models import Claim, Job, JobState, Outcome, Plan, RunResult, check_time
from .registry import (
    TaskDefinition,
    TaskRegistry,
    check_job_id,
    check_lookup,
    default_registry,
)
from .schedule import Schedule, first_run, plan_occurrence

log = logging.getLogger("tickkit")

_default_driver: Driver | str | None = None
_running: list[Kernel] = []


def set_driver(driver: Driver | str | None) -> None:
    """Set the driver (object or URL) that a ``Kernel()`` created without one uses."""
    global _default_driver
    _default_driver = driver


def current_kernel() -> Kernel:
    """The kernel the module-level functions act on: the most recently started one."""
    if not _running:
        raise KernelNotRunningError(
            "no tickkit kernel is running: start one first, e.g. "
            "`async with tickkit.Kernel(driver=...) as kernel:`"
        )
    return _running[-1]


class Kernel:
    """Runs tasks from a driver.

    ``async with Kernel(...) as kernel:`` opens the driver, stores the static schedules, and
    runs due jobs until the block ends, then shuts down gracefully.

    Arguments:
        driver: a Driver object or a store URL (``memory://``, ``sqlite:///tasks.db``,
            ``redis://...``); default: the one given to :func:`set_driver`, else ``memory://``.
        tasks: task definitions to run (default: every task defined with ``tickkit.task``).
        plugins: extra plugin objects or ``"module:attr"`` names, on top of installed ones.
        context: objects every TaskContext exposes as attributes (``{"client": bot}``).
        clock: the time source (default :class:`SystemClock`; tests pass a VirtualClock).
        concurrency: runs at once in this kernel.
        shutdown_timeout: seconds running tasks get to finish at shutdown before cancellation.
        driver_options: keyword options for a driver given as a URL.
        entry_points: load plugins from the ``tickkit.plugins`` entry-point group.
        settings: settings for plugins, read as ``kernel.settings`` (for example
            ``{"tasks_dir": "app/tasks", "reload": True}``); each plugin documents its keys.
    """

    def __init__(
        self,
        driver: Driver | str | None = None,
        *,
        tasks: Iterable[TaskDefinition] | TaskRegistry | None = None,
        plugins: Iterable[object] = (),
        context: Mapping[str, Any] | None = None,
        clock: Clock | None = None,
        concurrency: int = 64,
        shutdown_timeout: float = 30.0,
        driver_options: Mapping[str, Any] | None = None,
        entry_points: bool = True,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency!r}")
        self._driver_spec = driver if driver is not None else (_default_driver or "memory://")
        self._driver_options = dict(driver_options or {})
        if tasks is None:
            self.tasks = default_registry
        elif isinstance(tasks, TaskRegistry):
            self.tasks = tasks
        else:
            self.tasks = TaskRegistry(tasks)
        self._plugins = list(plugins)
        self._entry_points = entry_points
        self.context: dict[str, Any] = dict(context or {})
        self.settings: dict[str, Any] = dict(settings or {})
        self.clock: Clock = clock or SystemClock()
        self.concurrency = concurrency
        self.shutdown_timeout = shutdown_timeout
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.hooks: Hooks | None = None
        self.driver: Driver | None = None
        self.codec: Codec | None = None
        self._state = "new"
        self._wakeup = anyio.Event()
        self._stop_requested = anyio.Event()
        self._inflight: set[Claim] = set()
        self._queue: deque[Claim] = deque()
        self._idle: list[anyio.Event] = []
        self._workers = 0
        self._running_by_name: dict[str, int] = {}
        self._limits: dict[str, tuple[int, anyio.Semaphore]] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self._exit: AsyncExitStack | None = None
        self._dispatch_scope: anyio.CancelScope | None = None
        self._drained: anyio.Event | None = None
        self._closed = anyio.Event()
        self._alive = 0
        self._scopes: set[anyio.CancelScope] = set()
        self._all_done: anyio.Event | None = None
        self._owner: int | None = None

    # --- lifecycle ----------------------------------------------------------------------

    @property
    def state(self) -> str:
        """One of ``new``, ``open`` (driver open, not dispatching), ``running``, ``stopping``,
        ``stopped``."""
        return self._state

    async def open(self) -> None:
        """Load plugins and open the driver, without running jobs (used by the CLI to manage a
        store). ``start`` calls it."""
        if self._state == "stopped":
            self._reset()
        if self._state != "new":
            return
        self.hooks = Hooks(create_plugin_manager(self._plugins, entry_points=self._entry_points))
        self.hooks.refresh()
        self.codec = self.hooks.data_codec()
        self.driver = self._resolve_driver(self._driver_spec)
        await self.driver.start(
            DriverContext(
                clock=self.clock,
                codec=self.codec,
                parse_schedule=self.hooks.parse_spec,
                plan=self._plan,
                notify=self.wakeup,
                owner=self.id,
            )
        )
        attach = getattr(self.clock, "attach", None)
        if attach is not None:
            attach(self)
        self._state = "open"

    def _reset(self) -> None:
        """Make a stopped kernel startable again (a fresh driver context, fresh events)."""
        self._state = "new"
        self._wakeup = anyio.Event()
        self._stop_requested = anyio.Event()
        self._closed = anyio.Event()
        self._drained = None
        self._all_done = None
        self._exit = None
        self._tg = None
        self._limits.clear()
        self._queue.clear()
        self._idle.clear()
        self._workers = 0

    def _resolve_driver(self, spec: Driver | str) -> Driver:
        if isinstance(spec, Driver):
            return spec
        if not isinstance(spec, str) or "://" not in spec:
            raise TickkitError(
                f"driver must be a Driver object or a URL like 'memory://', got {spec!r}"
            )
        assert self.hooks is not None
        driver = self.hooks.resolve_driver(spec, dict(self._driver_options))
        if driver is None:
            cls = load_driver_class(spec.split("://", 1)[0].lower())
            driver = cls.from_url(spec, **self._driver_options)
        return driver

    async def start(self) -> None:
        """Open, store static schedules, and start dispatching in a new task group."""
        if self._state in ("running", "stopping"):
            return
        await self.open()
        assert self.hooks is not None and self.driver is not None
        for definition in self.hooks.load_tasks(self):
            self.tasks.add(definition)
        await self.sync_static()
        self._exit = AsyncExitStack()
        self._tg = await self._exit.enter_async_context(anyio.create_task_group())
        self._owner = anyio.get_current_task().id
        self._state = "running"
        _running.append(self)
        self._spawn(self._dispatch)
        if self.driver.lease_duration:
            self._spawn(self._renew_leases, self.driver.lease_duration)
        for service in self.hooks.kernel_services(self):
            self._spawn(self._service, service)
        self._run_immediate()
        self.hooks.kernel_started(self)

    async def stop(self) -> None:
        """Stop taking jobs, wait ``shutdown_timeout`` (on the kernel's clock) for running ones,
        cancel the rest (their claims are released for another worker), and close the driver.

        Safe to call from any task (a signal handler's, say); the task that started the kernel
        finishes closing its task group when it leaves ``async with`` or calls ``stop`` itself.
        With a VirtualClock, advance the clock while stopping or pass ``shutdown_timeout=0``.
        """
        if self._state == "open":
            assert self.driver is not None
            await self.driver.stop()
            self._state = "stopped"
            return
        if self._state == "running":
            await self._shutdown()
        elif self._state == "stopping":
            await self._closed.wait()
        if self._exit is not None and anyio.get_current_task().id == self._owner:
            exit_stack, self._exit = self._exit, None
            await exit_stack.aclose()

    async def _shutdown(self) -> None:
        assert self.hooks is not None and self._tg is not None
        self._state = "stopping"
        self.hooks.kernel_stopping(self)
        if self._dispatch_scope is not None:
            self._dispatch_scope.cancel()
        self._wakeup.set()
        with anyio.CancelScope(shield=True):
            # the grace period is measured on the kernel's clock (virtual in tests)
            deadline = self.clock.now() + timedelta(seconds=self.shutdown_timeout)
            while self._inflight and self.clock.now() < deadline:
                done = anyio.Event()
                self._drained = done
                await self.clock.wait_until(deadline, done)
            for internal in list(self._scopes):
                internal.cancel()
            while self._alive:
                done = anyio.Event()
                self._all_done = done
                await done.wait()
            # claims handed to the pool that no worker had started yet go back to the store
            while self._queue:
                claim = self._queue.popleft()
                self._inflight.discard(claim)
                if not claim.local:
                    await self._release(claim)
            if self in _running:
                _running.remove(self)
            assert self.driver is not None
            try:
                await self.driver.stop()
            finally:
                self._state = "stopped"
                self._closed.set()

    def _spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Start a kernel-internal task, counted so that shutdown can wait for all of them.

        Its cancel scope is registered here, before the task first runs, so that a shutdown
        right after start cancels it too."""
        assert self._tg is not None
        self._alive += 1
        scope = anyio.CancelScope()
        self._scopes.add(scope)
        if self._state not in ("running",):
            scope.cancel()
        self._tg.start_soon(self._tracked, fn, args, scope)

    async def _tracked(
        self, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...], scope: anyio.CancelScope
    ) -> None:
        # each internal task has its own cancel scope: shutdown cancels these, never the task
        # group's scope, which would also cancel the body of the caller's `async with`
        try:
            with scope:
                await fn(*args)
        except Exception:
            log.exception("tickkit kernel task %s failed", getattr(fn, "__name__", fn))
        finally:
            self._scopes.discard(scope)
            self._alive -= 1
            if not self._alive and self._all_done is not None:
                self._all_done.set()

    async def __aenter__(self) -> Kernel:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def serve(self) -> None:
        """Start, run until :meth:`request_stop` is called (or the caller is cancelled), stop."""
        await self.start()
        try:
            await self._stop_requested.wait()
        finally:
            await self.stop()

    def request_stop(self) -> None:
        """Ask a :meth:`serve` loop to shut down (safe from a signal handler's task)."""
        self._stop_requested.set()

    def wakeup(self) -> None:
        """Wake the dispatcher: something may be due sooner than it thought."""
        self._wakeup.set()

    def _require(self) -> tuple[Driver, Hooks, Codec]:
        if (
            self.driver is None
            or self.hooks is None
            or self.codec is None
            or self._state
            in (
                "new",
                "stopped",
            )
        ):
            raise KernelNotRunningError(
                "this kernel is not open: use `async with kernel:` or `await kernel.open()` first"
            )
        return self.driver, self.hooks, self.codec

    def io_pending(self) -> bool:
        """True while the driver waits on a worker thread (lets a virtual clock settle)."""
        return self.driver is not None and self.driver.io_pending()

    # --- static schedules ---------------------------------------------------------------

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
        assert self.hooks is not None
        job.meta.update(self.hooks.job_meta(job))
        return job

    async def sync_static(self) -> None:
        """Reconcile the store's static schedules with this kernel's tasks."""
        driver, _hooks, _codec = self._require()
        now = self.clock.now()
        jobs = [j for d in self.tasks if (j := self.static_job(d, now)) is not None]
        for job in jobs:
            assert job.id is not None
            driver.check_id(job.id)
        await driver.sync_static(jobs, now)
        self._wakeup.set()

    def _run_immediate(self) -> None:
        assert self._tg is not None
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
                self._submit(claim)

    # --- the job API --------------------------------------------------------------------

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
        driver, hooks, codec = self._require()
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
        driver, _, _ = self._require()
        return await driver.remove_job(check_lookup(job_id))

    async def delete_tasks(self, *, name: str) -> int:
        """Delete every dynamic job of task ``name``; return how many."""
        driver, _, _ = self._require()
        return await driver.remove_jobs(name=check_lookup(name, "task name", InvalidTaskError))

    async def get_task(self, job_id: str) -> Job | None:
        """The job with this id, or None."""
        driver, _, _ = self._require()
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
        driver, _, _ = self._require()
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
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 0
        ):
            raise InvalidArgumentError(f"limit must be an int >= 0 or None, got {short(limit)}")
        st = JobState(state) if state is not None else None
        return await driver.list_jobs(name=name, state=st, static=static, limit=limit)

    async def pause_task(self, job_id: str) -> Job:
        """Pause a job; raises JobNotFoundError for an unknown id."""
        driver, _, _ = self._require()
        job = await driver.set_paused(check_lookup(job_id), True)
        if job is None:
            raise JobNotFoundError(f"no job with id {short(job_id)}")
        return job

    async def resume_task(self, job_id: str) -> Job:
        """Resume a paused job; a run time that passed meanwhile follows the misfire policy."""
        driver, _, _ = self._require()
        job = await driver.set_paused(check_lookup(job_id), False)
        if job is None:
            raise JobNotFoundError(f"no job with id {short(job_id)}")
        self._wakeup.set()
        return job

    async def run_task_now(self, job_id: str) -> str:
        """Run a job now. A scheduled one-off job moves to now; a recurring, paused, running or
        finished job (a dead letter, say) gets an extra one-off run with its task and data, and
        is itself left as it is. Returns the id of the job that runs."""
        driver, _, _ = self._require()
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

    def _plan(self, job: Job, scheduled_at: datetime, attempt: int, now: datetime) -> Plan:
        assert self.hooks is not None
        definition = self.tasks.get(job.name)
        schedule: Schedule | None = self.hooks.parse_spec(job.schedule) if job.schedule else None
        if definition is None:
            return Plan(True, scheduled_at, 0, None)
        return plan_occurrence(
            schedule,
            scheduled_at,
            now,
            misfire=definition.misfire,
            grace=definition.misfire_grace,
            retry=attempt > 1,
        )

    def _capped(self, finishing: str | None = None) -> frozenset[str]:
        """Task names at their ``max_instances`` (``finishing``: one run of that task is
        about to end and does not count)."""
        capped = []
        for name, running in self._running_by_name.items():
            definition = self.tasks.get(name)
            limit = definition.max_instances if definition is not None else None
            if name == finishing:
                running -= 1
            if limit is not None and running >= limit:
                capped.append(name)
        return frozenset(capped)

    async def _dispatch(self) -> None:
        assert self.driver is not None and self._tg is not None
        driver = self.driver
        failures = 0
        with anyio.CancelScope() as scope:
            self._dispatch_scope = scope
            while self._state == "running":
                self._wakeup = anyio.Event()
                now = self.clock.now()
                free = self.concurrency - len(self._inflight)
                deadline: datetime | None = None
                if free > 0:
                    try:
                        acquired = await driver.acquire(now=now, limit=free, exclude=self._capped())
                    except Exception as exc:
                        failures += 1
                        delay = min(0.5 * 2 ** min(failures, 6), 30.0)
                        log.warning("driver.acquire failed (%s); retrying in %.1fs", exc, delay)
                        await self.clock.wait_until(now + timedelta(seconds=delay), anyio.Event())
                        continue
                    failures = 0
                    for claim in acquired.claims:
                        self._submit(claim)
                    if len(acquired.claims) >= free:
                        continue
                    nd = acquired.next_due
                    if nd is not None:
                        if nd > now:
                            deadline = nd
                        elif acquired.claims:
                            continue
                        # else: due but not claimable now (max_instances): a finishing run
                        # wakes the dispatcher
                if driver.poll_interval is not None:
                    poll_at = now + timedelta(seconds=driver.poll_interval)
                    deadline = poll_at if deadline is None else min(deadline, poll_at)
                await self.clock.wait_until(deadline, self._wakeup)
        self._dispatch_scope = None

    async def _renew_leases(self, lease: float) -> None:
        assert self.driver is not None
        every = timedelta(seconds=lease / 3)
        while True:
            await self.clock.sleep_until(self.clock.now() + every)
            claims = [c for c in self._inflight if not c.local]
            if not claims:
                continue
            try:
                lost = await self.driver.renew(claims, self.clock.now())
            except Exception as exc:
                log.warning("renewing %d lease(s) failed: %s", len(claims), exc)
                continue
            for claim in lost:
                log.warning("lost the lease on job %s (another worker may run it)", claim.job.id)

    async def _service(self, service: Any) -> None:
        try:
            await service()
        except Exception:
            log.exception("kernel service %r failed", service)

    # --- one run ------------------------------------------------------------------------

    def _submit(self, claim: Claim) -> None:
        """Hand a claim to the worker pool: an idle worker takes it, or a new worker starts
        (at most ``concurrency`` of them). Workers are long-lived tasks, so a run costs no task
        creation and no cancel scope of its own."""
        self._inflight.add(claim)
        self._queue.append(claim)
        if self._idle:
            self._idle.pop().set()
        elif self._workers < self.concurrency:
            self._workers += 1
            self._spawn(self._worker)

    async def _worker(self) -> None:
        queue = self._queue
        try:
            while True:
                if not queue:
                    idle = anyio.Event()
                    self._idle.append(idle)
                    await idle.wait()
                    continue
                await self._run_claim(queue.popleft())
        finally:
            self._workers -= 1

    async def _run_claim(self, claim: Claim) -> None:
        name = claim.job.name
        self._running_by_name[name] = self._running_by_name.get(name, 0) + 1
        settled = False
        refilled = False
        try:
            try:
                refilled = await self._execute(claim)
            except Exception:
                # a bug in a plugin or driver: never let it stop the kernel; the claim is
                # released so that the job is not lost
                log.exception("internal error while running job %s", claim.job.id)
                if not claim.local:
                    await self._release(claim)
            settled = True
        finally:
            # cancelled (shutdown, past the grace period): release the claim for another worker
            if not settled and not claim.local:
                with anyio.CancelScope(shield=True):
                    await self._release(claim)
            self._inflight.discard(claim)
            left = self._running_by_name.get(name, 1) - 1
            if left:
                self._running_by_name[name] = left
            else:
                self._running_by_name.pop(name, None)
            if not refilled:
                # a slot is free, or a max_instances cap may have lifted
                self._wakeup.set()
            if self._drained is not None and not self._inflight:
                self._drained.set()

    async def _release(self, claim: Claim) -> None:
        assert self.driver is not None
        try:
            await self.driver.release([claim])
        except Exception:
            log.exception("could not release job %s; its lease will expire", claim.job.id)

    async def _complete(self, claim: Claim, result: RunResult) -> bool:
        """Record the outcome. Return True when the driver refilled this worker's slot with
        new claims in the same call (the dispatcher then has nothing to do)."""
        if claim.local:
            return False
        assert self.driver is not None
        driver = self.driver
        if driver.fetches_on_complete and self._state == "running":
            # the finishing claim's slot counts as free
            free = self.concurrency - len(self._inflight) + 1
            try:
                acquired = await driver.complete_and_acquire(
                    claim,
                    result,
                    now=self.clock.now(),
                    limit=free,
                    exclude=self._capped(finishing=claim.job.name),
                )
            except Exception:
                log.exception(
                    "could not record the outcome of job %s; its lease will expire and it runs "
                    "again",
                    claim.job.id,
                )
                return False
            for new in acquired.claims:
                self._submit(new)
            return len(acquired.claims) >= free
        try:
            if self._state == "stopping":
                with anyio.CancelScope(shield=True):
                    await self.driver.complete(claim, result)
            else:
                await self.driver.complete(claim, result)
        except Exception:
            log.exception(
                "could not record the outcome of job %s; its lease will expire and it runs again",
                claim.job.id,
            )
        return False

    async def _execute(self, claim: Claim) -> bool:
        """Run one claim; return what :meth:`_complete` returned."""
        assert self.hooks is not None
        hooks = self.hooks
        job = claim.job
        now = self.clock.now()
        if job.defect is not None:
            return await self._fail_unreadable(claim, job.defect, now)
        definition = self.tasks.get(job.name)
        if definition is None:
            refilled = await self._complete(
                claim,
                RunResult(
                    Outcome.FAILED,
                    now,
                    error=f"no task named {job.name!r} is loaded in worker {self.id}",
                ),
            )
            log.error("job %s: no task named %r is loaded", job.id, job.name)
            return refilled
        try:
            plan = claim.plan or self._plan(job, claim.scheduled_at, claim.attempt, now)
        except Exception as exc:
            # a stored schedule no plugin can read (a bad cron, an unknown zone, a schedule type
            # whose plugin was removed): fail this job once, never claim it in a loop
            return await self._fail_unreadable(
                claim, f"stored schedule {job.schedule!r} cannot be read: {exc}", now
            )
        if not plan.run:
            hooks.run_missed(job, plan.scheduled_at, plan.missed, now)
            return await self._complete(
                claim, RunResult(Outcome.MISSED, now, next_run_at=plan.next_run_at)
            )
        if plan.missed:
            hooks.run_missed(job, plan.scheduled_at, plan.missed, now)
        limit = self._limit(definition)
        if limit is not None:
            async with limit:
                result = await self._invoke(definition, claim, plan)
        else:
            result = await self._invoke(definition, claim, plan)
        return await self._complete(claim, result)

    async def _fail_unreadable(self, claim: Claim, reason: str, now: datetime) -> bool:
        """Complete a claim whose stored record cannot be read as FAILED, once, with no retry
        and no next occurrence: the job ends in the dead-letter view with ``reason``."""
        log.error("job %s cannot be run and is failed: %s", claim.job.id, reason)
        return await self._complete(claim, RunResult(Outcome.FAILED, now, error=reason))

    def _limit(self, definition: TaskDefinition) -> anyio.Semaphore | None:
        if definition.max_instances is None:
            return None
        entry = self._limits.get(definition.name)
        if entry is None or entry[0] != definition.max_instances:
            entry = self._limits[definition.name] = (
                definition.max_instances,
                anyio.Semaphore(definition.max_instances),
            )
        return entry[1]

    async def _invoke(self, definition: TaskDefinition, claim: Claim, plan: Plan) -> RunResult:
        assert self.hooks is not None
        hooks = self.hooks
        clock = self.clock
        started = clock.now()
        ctx = TaskContext(
            task=definition,
            job=claim.job,
            scheduled_at=plan.scheduled_at,
            started_at=started,
            attempt=claim.attempt,
            kernel=self,
            extras=self.context,
        )
        error: BaseException | None = None
        outcome = Outcome.SUCCEEDED
        value: Any = None
        try:
            wrappers = hooks.wrap_run(ctx)
            if wrappers:
                async with AsyncExitStack() as stack:
                    for cm in wrappers:
                        try:
                            await stack.enter_async_context(cm)
                        except Exception:
                            log.exception("a tickkit_wrap_run manager failed to enter")
                    hooks.run_started(ctx)
                    outcome, value = await self._call(definition, ctx)
            else:
                hooks.run_started(ctx)
                outcome, value = await self._call(definition, ctx)
        except Exception as exc:
            error = exc
            outcome = Outcome.FAILED
        finished = clock.now()
        duration = (finished - started).total_seconds()
        job = claim.job
        retry_at: datetime | None = None
        if error is not None or outcome is Outcome.TIMED_OUT:
            attempts = job.max_attempts or definition.max_attempts
            if claim.attempt < attempts and not isinstance(error, PrepareResultError):
                backoff = job.backoff or definition.backoff
                retry_at = finished + timedelta(seconds=backoff.delay_for(claim.attempt))
            if outcome is Outcome.TIMED_OUT:
                assert definition.timeout is not None
                ctx.logger.warning(
                    "task %s timed out after %ss (attempt %d)%s",
                    definition.name,
                    definition.timeout,
                    claim.attempt,
                    f"; retry at {retry_at.isoformat()}" if retry_at else "",
                )
                hooks.run_timed_out(ctx, definition.timeout, retry_at)
                message = f"timed out after {definition.timeout}s"
                tb = None
            else:
                assert error is not None
                ctx.logger.error(
                    "task %s failed (attempt %d)%s",
                    definition.name,
                    claim.attempt,
                    f"; retry at {retry_at.isoformat()}" if retry_at else "",
                    exc_info=error,
                )
                hooks.run_failed(ctx, error, retry_at, duration)
                message = f"{type(error).__name__}: {error}"
                tb = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            hooks.run_finished(ctx, outcome, duration)
            return RunResult(
                outcome,
                finished,
                retry_at=retry_at,
                next_run_at=None if retry_at else plan.next_run_at,
                error=message,
                traceback=tb,
                started_at=started,
            )
        if outcome is Outcome.SKIPPED:
            hooks.run_skipped(ctx)
        else:
            hooks.run_succeeded(ctx, value, duration)
        hooks.run_finished(ctx, outcome, duration)
        return RunResult(
            outcome,
            finished,
            next_run_at=plan.next_run_at,
            return_value=_jsonable(value),
            started_at=started,
        )

    async def _call(self, definition: TaskDefinition, ctx: TaskContext) -> tuple[Outcome, Any]:
        if definition.timeout is None:
            return await self._call_inner(definition, ctx)
        deadline = ctx.started_at + timedelta(seconds=definition.timeout)
        timed_out = False
        caught: Exception | None = None
        result: tuple[Outcome, Any] = (Outcome.SUCCEEDED, None)
        async with anyio.create_task_group() as tg:
            with anyio.CancelScope() as inner:

                async def watchdog() -> None:
                    nonlocal timed_out
                    await self.clock.sleep_until(deadline)
                    timed_out = True
                    inner.cancel()

                tg.start_soon(watchdog)
                try:
                    result = await self._call_inner(definition, ctx)
                except Exception as exc:
                    caught = exc
            tg.cancel_scope.cancel()
        if timed_out and inner.cancelled_caught:
            return Outcome.TIMED_OUT, None
        if caught is not None:
            raise caught
        return result

    @staticmethod
    async def _call_inner(definition: TaskDefinition, ctx: TaskContext) -> tuple[Outcome, Any]:
        if definition.prepare is not None:
            ok = definition.prepare(ctx)
            if inspect.isawaitable(ok):
                ok = await ok
            if not isinstance(ok, bool):
                raise PrepareResultError(
                    f"prepare of task {definition.name!r} returned {ok!r}; "
                    "it must return True or False"
                )
            if not ok:
                return Outcome.SKIPPED, None
        return Outcome.SUCCEEDED, await definition.execute(ctx)


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return None
    return value


def running_kernels() -> Sequence[Kernel]:
    """Kernels started in this process and not stopped yet."""
    return tuple(_running)
