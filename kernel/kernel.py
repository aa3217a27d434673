"""The kernel: lifecycle (an anyio task group), dispatch of due jobs, and the run of one job."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import json
import logging
import math
import os
import re
import socket
import traceback
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

import anyio
import anyio.abc

from .clock import Clock, SystemClock
from .codec import MAX_DEPTH, Codec, check_json
from .context import TaskContext
from .driver import Driver, DriverContext
from .errors import (
    DriverError,
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
from .models import UNSET, Claim, Job, JobState, Outcome, Plan, RunRecord, RunResult, check_time
from .redact import redact, redact_url, scrub
from .registry import (
    TaskDefinition,
    TaskRegistry,
    check_job_id,
    check_lookup,
    default_registry,
)
from .schedule import Schedule, first_run, plan_occurrence

log = logging.getLogger("tickkit")
_T = TypeVar("_T")

_default_driver: Driver | str | None = None
#: the kernel worker (see _Worker) the current task is, if any
_current_worker: contextvars.ContextVar[_Worker | None] = contextvars.ContextVar(
    "tickkit_worker", default=None
)
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
        cancel_grace: seconds a cancelled run (at shutdown, or past its task's ``timeout``) gets
            to end; one that ignores its cancellation longer is abandoned: its claim is released
            (shutdown) or recorded as timed out, and the kernel stops waiting for it.
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
        cancel_grace: float = 5.0,
        driver_options: Mapping[str, Any] | None = None,
        entry_points: bool = True,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        _check_options(
            tasks=tasks,
            plugins=plugins,
            context=context,
            clock=clock,
            concurrency=concurrency,
            shutdown_timeout=shutdown_timeout,
            cancel_grace=cancel_grace,
            driver_options=driver_options,
            entry_points=entry_points,
            settings=settings,
        )
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
        self.cancel_grace = cancel_grace
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.hooks: Hooks | None = None
        self.driver: Driver | None = None
        self.codec: Codec | None = None
        self._state = "new"
        self._plugin_state: dict[object, Any] = {}
        self._wakeup = anyio.Event()
        self._stop_requested = anyio.Event()
        self._inflight: set[Claim] = set()
        self._queue: deque[Claim] = deque()
        self._idle: list[anyio.Event] = []
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
        #: the worker tasks that run tasks (see _Worker); abandoned ones are not in it
        self._pool: set[_Worker] = set()
        self._pool_changed: anyio.Event | None = None
        #: strong references to detached asyncio tasks (the event loop keeps weak ones)
        self._detached: set[asyncio.Task[None]] = set()
        self._trio = False
        #: set while start() runs (a stop meanwhile waits for it), and the task running it
        self._starting: anyio.Event | None = None
        self._starter: int | None = None

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
        driver = self.driver = self._resolve_driver(self._driver_spec)
        self._trio = _running_trio()
        if self._trio and not driver.supports_trio:
            self._state = "stopped"
            raise DriverError(
                f"the {type(driver).__name__} driver ({_describe(self._driver_spec)}) does not "
                "support trio (it runs on asyncio only): run this kernel on asyncio, or use a "
                "driver that supports trio (memory://)"
            )
        ctx = DriverContext(
            clock=self.clock,
            codec=self.codec,
            parse_schedule=self.hooks.parse_spec,
            plan=self._plan,
            notify=self.wakeup,
            owner=self.id,
        )
        try:
            await self._to_the_end(lambda: driver.start(ctx))
        except BaseException:
            # a driver that failed half way may hold a connection (a thread, a socket)
            with anyio.CancelScope(shield=True):
                try:
                    await driver.stop()
                except Exception:
                    log.debug("closing driver %s after its failed start", driver, exc_info=True)
            self._state = "stopped"
            raise
        attach = getattr(self.clock, "attach", None)
        if attach is not None:
            attach(self)
        self._state = "open"

    async def _to_the_end(self, call: Callable[[], Awaitable[None]]) -> None:
        """Await a store call to its end even when this task is cancelled meanwhile, then
        raise the cancellation: a driver's start cut short (``asyncio.run`` cancels every task
        as it exits) can leave a connection thread that nothing closes."""
        if self._trio:
            with anyio.CancelScope(shield=True):  # trio cancels only through scopes
                await call()
            return
        inner = asyncio.get_running_loop().create_task(_awaited(call))
        try:
            await asyncio.shield(inner)
        except asyncio.CancelledError:
            with anyio.CancelScope(shield=True):
                while not inner.done():
                    try:
                        await asyncio.wait([inner])
                    except asyncio.CancelledError:
                        continue
            if not inner.cancelled():
                inner.exception()  # retrieved: the cancellation is what the caller sees
            raise

    def _reset(self) -> None:
        """Make a stopped kernel startable again (a fresh driver context, fresh events)."""
        self._state = "new"
        self._plugin_state.clear()
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
        self._pool.clear()
        self._pool_changed = None
        self._inflight.clear()
        self._running_by_name.clear()
        self._scopes.clear()
        self._alive = 0

    def _resolve_driver(self, spec: Driver | str) -> Driver:
        if isinstance(spec, Driver):
            return spec
        if not isinstance(spec, str) or "://" not in spec:
            raise TickkitError(
                "driver must be a Driver object or a URL like 'memory://', "
                f"got {_describe(short(spec))}"
            )
        shown = redact_url(spec)
        if _UNSAFE_URL_CHARS.search(spec):
            raise DriverError(
                f"driver URL {short(shown)} holds a NUL or a lone surrogate character; "
                "percent-encode it"
            )
        assert self.hooks is not None
        try:
            driver = self.hooks.resolve_driver(spec, dict(self._driver_options))
            if driver is None:
                cls = load_driver_class(spec.split("://", 1)[0].lower())
                driver = cls.from_url(spec, **self._driver_options)
        except TickkitError:
            raise
        except Exception as exc:
            # a driver's parser or constructor failing on a hostile URL or option: one typed
            # error, the URL masked (the parser's text may quote a piece of the password)
            detail = scrub(_error_text(exc, 500), spec)
            if shown != spec:
                detail = type(exc).__name__
            given = f" or its options {short(list(self._driver_options))}"
            raise DriverError(
                f"the driver for {short(shown)} refused the URL"
                f"{given if self._driver_options else ''}: {detail}"
            ) from None
        return driver

    async def start(self) -> None:
        """Open, store static schedules, and start dispatching in a new task group."""
        if self._state in ("running", "stopping"):
            return
        if self._starting is not None:  # another task is starting it: wait for that start
            await self._starting.wait()
            return
        starting = self._starting = anyio.Event()
        self._starter = anyio.get_current_task().id
        try:
            await self._start()
        finally:
            self._starting = None
            self._starter = None
            starting.set()

    async def _start(self) -> None:
        await self.open()
        assert self.hooks is not None and self.driver is not None
        try:
            for definition in self.hooks.load_tasks(self):
                self.tasks.add(definition)
            await self.driver.ensure_indexes(sorted({k for d in self.tasks for k in d.indexes}))
            await self.sync_static()
            self._owner = anyio.get_current_task().id
            self._exit = AsyncExitStack()
            self._tg = await self._exit.enter_async_context(anyio.create_task_group())
            self._state = "running"
            _running.append(self)
            self._spawn(self._dispatch)
            if self.driver.lease_duration:
                self._spawn(self._renew_leases, self.driver.lease_duration)
            for service in self.hooks.kernel_services(self):
                self._spawn(self._service, service)
            self._run_immediate()
            self.hooks.kernel_started(self)
        except BaseException:
            # close whatever this start opened (task group, services, driver), then re-raise
            await self._close(grace=0.0, notify=False)
            raise

    async def stop(self) -> None:
        """Stop taking jobs, wait ``shutdown_timeout`` (on the kernel's clock) for running ones,
        cancel the rest (their claims are released for another worker), and close the driver.

        Safe to call from any task (a signal handler's, say); the task that started the kernel
        finishes closing its task group when it leaves ``async with`` or calls ``stop`` itself.
        With a VirtualClock, advance the clock while stopping or pass ``shutdown_timeout=0``.

        A stop during ``start()`` waits for the start to end, then stops. Called by a task this
        kernel runs (``await ctx.kernel.stop()``), it begins the shutdown and returns at once:
        the kernel closes in a task of its own once that run has ended and been recorded.
        ``stop`` also ends :meth:`serve`.
        """
        if self._starting is not None and anyio.get_current_task().id != self._starter:
            # a stop that lands while start() is in progress waits for it, then stops
            await self._starting.wait()
        worker = _current_worker.get()
        if worker is not None and worker in self._pool:
            # called by a task this kernel runs: waiting here would wait for the caller's own
            # run; the close runs in a kernel task instead and waits for this run to end (it
            # is recorded when the task returns)
            if self._state == "running" and self._tg is not None:
                self._begin_stop(notify=True)
                self._tg.start_soon(
                    functools.partial(self._close, grace=self.shutdown_timeout, notify=True)
                )
            return
        if self._state == "open":
            assert self.driver is not None
            self._state = "stopped"
            self._plugin_state.clear()
            with anyio.CancelScope(shield=True):
                await self.driver.stop()
            return
        if self._state == "running":
            await self._close(grace=self.shutdown_timeout, notify=True)
        elif self._state == "stopping":
            await self._closed.wait()
        if self._exit is not None and anyio.get_current_task().id == self._owner:
            await self._exit_task_group()

    async def _exit_task_group(self) -> None:
        exit_stack, self._exit = self._exit, None
        if exit_stack is not None:
            await exit_stack.aclose()

    def _begin_stop(self, *, notify: bool) -> None:
        """Stop taking jobs (the first step of _close; idempotent)."""
        assert self.hooks is not None and self.driver is not None
        if self._state == "running" and notify:
            self._state = "stopping"
            self.hooks.kernel_stopping(self)
        self._state = "stopping"
        self._stop_requested.set()
        if self._dispatch_scope is not None:
            self._dispatch_scope.cancel()
        self._wakeup.set()

    async def _close(self, *, grace: float, notify: bool) -> None:
        """Shut down: stop taking jobs, give running tasks ``grace`` seconds, cancel them,
        abandon those that ignore it, release every claim not finished, close the driver.

        Also undoes a start that failed half way (``notify`` False: no stopping hook)."""
        self._begin_stop(notify=notify)
        try:
            with anyio.CancelScope(shield=True):
                # the grace period is measured on the kernel's clock (virtual in tests)
                try:
                    deadline = self.clock.now() + timedelta(seconds=grace)
                    while self._inflight and self.clock.now() < deadline:
                        done = anyio.Event()
                        self._drained = done
                        await self.clock.wait_until(deadline, done)
                    await self._stop_workers()
                finally:
                    # whatever failed above, the internal tasks end: stop never hangs on them
                    for internal in list(self._scopes):
                        internal.cancel()
                if anyio.get_current_task().id != self._owner:
                    while self._alive:
                        done = anyio.Event()
                        self._all_done = done
                        await done.wait()
        finally:
            try:
                if anyio.get_current_task().id == self._owner:
                    # the task that opened the task group closes it: this also waits for
                    # internal tasks that were cancelled before they first ran (asyncio.run
                    # cancelling every task at exit), which no counter can see
                    await self._exit_task_group()
            finally:
                with anyio.CancelScope(shield=True):
                    await self._close_store()

    async def _close_store(self) -> None:
        # claims handed to the pool that no worker had started yet go back to the store
        try:
            while self._queue:
                claim = self._queue.popleft()
                self._inflight.discard(claim)
                if not claim.local:
                    await self._release(claim)
            if self in _running:
                _running.remove(self)
            assert self.driver is not None
            await self.driver.stop()
        finally:
            self._state = "stopped"
            self._plugin_state.clear()
            self._closed.set()

    async def _stop_workers(self) -> None:
        """Cancel the workers; abandon those whose run ignores it for ``cancel_grace``.

        A worker inside a store call is not cancelled (a claim taken by a call cut short would
        stay claimed until its lease expires): it ends when the call returns."""
        for worker in list(self._pool):
            if worker.in_store:
                worker.retire = True
            else:
                worker.scope.cancel()
        deadline = self.clock.now() + timedelta(seconds=self.cancel_grace)
        while self._pool and self.clock.now() < deadline:
            changed = anyio.Event()
            self._pool_changed = changed
            await self.clock.wait_until(deadline, changed)
        for worker in list(self._pool):
            claim = self._abandon(worker)
            if claim is None:
                continue
            log.error(
                "job %s (task %s) ignored its cancellation at shutdown for %ss: abandoned; its "
                "claim is released for another worker and the run is left to end on its own",
                claim.job.id,
                claim.job.name,
                self.cancel_grace,
            )
            if not claim.local:
                await self._release(claim)

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

    async def serve(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Start, run until :meth:`request_stop` is called (or the caller is cancelled), stop.

        ``await task_group.start(kernel.serve)`` returns once the kernel runs (static schedules
        stored, ``create_task`` works); a failed start raises there."""
        await self.start()
        try:
            task_status.started()
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

    def plugin_state(self, key: object, factory: Callable[[], _T]) -> _T:
        """A plugin's state for this kernel: the object kept under ``key`` (a key object of the
        plugin's own), made with ``factory()`` on first use and dropped when the kernel closes
        (the next start begins afresh)."""
        try:
            return cast(_T, self._plugin_state[key])
        except KeyError:
            state = self._plugin_state[key] = factory()
            return state

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
            # encoded once: the driver stores this text (Job.data_text), the job holds the
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
            data_text=data_text,
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
        where: Mapping[str, Any] | None = None,
        state: JobState | str | None = None,
        static: bool | None = None,
        limit: int | None = None,
        after: str | Job | None = None,
    ) -> list[Job]:
        """Jobs, filtered by task name, data (``where``), state and kind, ordered by next run
        time then id; ``after`` (an id or the Job) gives the page after that job.
        (TEMP kernel wiring: the merger's version replaces this.)"""
        from . import manage

        driver, _, _ = self._require()
        if name is not None:
            check_lookup(name, "task name", InvalidTaskError)
        checked = manage.check_where(where)
        st = manage.check_state(state)
        kind = manage.check_static(static)
        lim = manage.check_limit(limit)
        cursor = await manage.cursor_for(driver, manage.check_after(after))
        extra: dict[str, Any] = {}  # only when given: a driver may not know them yet
        if checked:
            extra["where"] = checked
        if cursor is not None:
            extra["after"] = cursor
        return await driver.list_jobs(name=name, state=st, static=kind, limit=lim, **extra)

    async def count_tasks(
        self,
        name: str | None = None,
        *,
        where: Mapping[str, Any] | None = None,
        state: JobState | str | None = None,
    ) -> int:
        """How many jobs match (TEMP kernel wiring)."""
        from . import manage

        driver, _, _ = self._require()
        if name is not None:
            check_lookup(name, "task name", InvalidTaskError)
        checked = manage.check_where(where)
        st = manage.check_state(state)
        extra: dict[str, Any] = {"where": checked} if checked else {}
        counts = await driver.count_jobs(name=name, state=st, **extra)
        return sum(counts.values())

    async def update_task(self, job_id: str, *, data: Any = UNSET, schedule: object = UNSET) -> Job:
        """Change a job's data and/or schedule (TEMP kernel wiring)."""
        from . import manage

        driver, hooks, codec = self._require()
        check_lookup(job_id)
        manage.check_update_given(data, schedule)
        job = await driver.get_job(job_id)
        if job is None:
            raise JobNotFoundError(f"no job with id {short(job_id)}")
        changes: dict[str, Any] = {}
        if data is not UNSET:
            try:
                changes["data"] = codec.decode(codec.encode(data))
            except TickkitError:
                raise
            except Exception as exc:
                raise InvalidDataError(
                    f"task data {short(data)} cannot be encoded: {describe_error(exc)}"
                ) from exc
        if schedule is not UNSET:
            now = self.clock.now()
            definition = self.tasks.get(job.name)
            if schedule is None:
                changes["schedule"] = None
                changes["next_run_at"] = check_time(now, "the run time (now)")
            else:
                parsed = hooks.parse_schedule(
                    schedule, definition.timezone if definition is not None else None
                )
                parsed, first = first_run(parsed.keyed(job_id), now, required=True)
                changes["schedule"] = parsed.to_spec() if parsed.recurring else None
                changes["next_run_at"] = first
        updated = await driver.update_job(job_id, **changes)
        if updated is None:
            raise JobNotFoundError(f"no job with id {short(job_id)}")
        self._wakeup.set()
        return updated

    async def get_runs(self, job_id: str, *, limit: int = 20) -> list[RunRecord]:
        """The job's past runs, newest first (TEMP kernel wiring)."""
        from . import manage

        driver, _, _ = self._require()
        check_lookup(job_id)
        return await driver.get_runs(job_id, limit=manage.check_limit(limit) or 0)

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
                        # never cut a claiming call short: the store would hold claims the
                        # kernel never saw until their leases expire
                        with anyio.CancelScope(shield=True):
                            acquired = await driver.acquire(
                                now=now, limit=free, exclude=self._capped()
                            )
                    except Exception as exc:
                        failures += 1
                        delay = min(0.5 * 2 ** min(failures, 6), 30.0)
                        log.warning("driver.acquire failed (%s); retrying in %.1fs", exc, delay)
                        await self.clock.wait_until(now + timedelta(seconds=delay), anyio.Event())
                        continue
                    failures = 0
                    if self._state != "running":
                        await self._give_back(acquired.claims)
                        break
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

    async def _give_back(self, claims: Sequence[Claim]) -> None:
        """Release claims taken after the kernel began stopping: another worker runs them."""
        held = [c for c in claims if not c.local]
        if not held:
            return
        assert self.driver is not None
        with anyio.CancelScope(shield=True):
            try:
                await self.driver.release(held)
            except Exception:
                log.exception(
                    "could not release %d job(s) claimed while stopping; their leases will expire",
                    len(held),
                )

    async def _renew_leases(self, lease: float) -> None:
        assert self.driver is not None
        every = timedelta(seconds=lease / 3)
        while True:
            await self.clock.sleep_until(self.clock.now() + every)
            claims = [c for c in self._inflight if not c.local]
            if not claims:
                continue
            try:
                with anyio.CancelScope(shield=True):
                    lost = await self.driver.renew(claims, self.clock.now())
            except Exception as exc:
                log.warning("renewing %d lease(s) failed: %s", len(claims), exc)
                continue
            if not lost:
                continue
            # a run that finished while the renewal was in flight gave its claim up itself:
            # only a claim this kernel still holds, and is not recording, was taken over
            finishing = {w.claim for w in self._pool if w.in_store}
            for claim in lost:
                if claim in self._inflight and claim not in finishing:
                    log.warning(
                        "lost the lease on job %s (another worker may run it)", claim.job.id
                    )

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
        elif len(self._pool) < self.concurrency:
            self._start_worker()

    def _start_worker(self) -> None:
        """Start a worker in a task of its own that the kernel does not have to await.

        Structured concurrency forbids leaving a child behind, and a task that ignores its
        cancellation must not keep the kernel from stopping: workers run in a plain asyncio
        task (trio: a system task), and the kernel tracks them itself (see _Worker)."""
        worker = _Worker()
        self._pool.add(worker)
        if self._trio:
            import trio

            trio.lowlevel.spawn_system_task(
                self._worker_trio, worker, name="tickkit worker", context=contextvars.copy_context()
            )
        else:
            task = asyncio.get_running_loop().create_task(self._worker(worker))
            self._detached.add(task)
            # a done callback, not a finally: it also runs for a task cancelled before it ran
            task.add_done_callback(lambda t: self._worker_done(worker, t))

    def _worker_done(self, worker: _Worker, task: asyncio.Task[None]) -> None:
        self._detached.discard(task)
        self._worker_ended(worker)
        if not task.cancelled():
            exc = task.exception()
            if exc is not None:
                log.error("tickkit worker failed", exc_info=exc)

    async def _worker_trio(self, worker: _Worker) -> None:
        # a system task must never raise: trio would end the whole run
        try:
            await self._worker(worker)
        except BaseException as exc:
            if not isinstance(exc, anyio.get_cancelled_exc_class()):
                log.error("tickkit worker failed", exc_info=exc)
        finally:
            self._worker_ended(worker)

    def _worker_ended(self, worker: _Worker) -> None:
        if worker in self._pool:
            self._pool.discard(worker)
            if self._pool_changed is not None:
                self._pool_changed.set()
            if (
                self._state == "running"
                and self._queue
                and not self._idle
                and len(self._pool) < self.concurrency
            ):
                self._start_worker()  # claims still queued: a worker takes its place

    async def _worker(self, worker: _Worker) -> None:
        _current_worker.set(worker)
        queue = self._queue
        try:
            with worker.scope:
                while True:
                    if not queue:
                        idle = anyio.Event()
                        self._idle.append(idle)
                        try:
                            await idle.wait()
                        finally:
                            if not idle.is_set():
                                self._idle.remove(idle)
                        continue
                    claim = queue.popleft()
                    worker.claim = claim
                    await self._run_claim(claim, worker)
                    if worker.abandoned:
                        return
                    worker.claim = None
                    if worker.retire or worker.scope.cancel_called:
                        return
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt) or _contains(exc, KeyboardInterrupt):
                self._raise_in_kernel(exc)
                return
            raise
        finally:
            if not worker.abandoned:
                self._worker_ended(worker)

    def _raise_in_kernel(self, exc: BaseException) -> None:
        """Ctrl-C (KeyboardInterrupt) raised in a task stops the program, as it would without
        tickkit: it is raised again in the kernel's task group, which ends the ``async with``
        (or ``serve``) around the kernel; on asyncio it also stops the event loop."""
        tg = self._tg
        if tg is None:
            return

        async def reraise() -> None:
            raise exc

        tg.start_soon(reraise)

    def _abandon(self, worker: _Worker) -> Claim | None:
        """Stop waiting for a worker whose run ignores its cancellation: it leaves the pool
        and the run's bookkeeping ends now. Return the claim it held (None if it held none or
        was abandoned already); the caller records or releases it."""
        if worker.abandoned:
            return None
        worker.abandoned = True
        self._free_slot(worker)
        self._worker_ended(worker)
        claim = worker.claim
        if claim is None:
            return None
        self._run_ended(claim, refilled=False)
        return claim

    def _run_ended(self, claim: Claim, *, refilled: bool) -> None:
        name = claim.job.name
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

    async def _run_claim(self, claim: Claim, worker: _Worker) -> None:
        name = claim.job.name
        self._running_by_name[name] = self._running_by_name.get(name, 0) + 1
        settled = False
        refilled = False
        try:
            try:
                refilled = await self._execute(claim, worker)
            except Exception:
                # a bug in a plugin or driver: never let it stop the kernel; the claim is
                # released so that the job is not lost
                log.exception("internal error while running job %s", claim.job.id)
                if not claim.local and not worker.abandoned:
                    await self._release(claim)
            settled = True
        finally:
            if not worker.abandoned:
                # cancelled (shutdown, past the grace period): release the claim for another
                # worker
                if not settled and not claim.local:
                    with anyio.CancelScope(shield=True):
                        await self._release(claim)
                self._run_ended(claim, refilled=refilled)

    async def _release(self, claim: Claim) -> None:
        assert self.driver is not None
        try:
            with anyio.CancelScope(shield=True):
                await self.driver.release([claim])
        except Exception:
            log.exception("could not release job %s; its lease will expire", claim.job.id)

    async def _complete(self, claim: Claim, result: RunResult, worker: _Worker) -> bool:
        """Record the outcome. Return True when the driver refilled this worker's slot with
        new claims in the same call (the dispatcher then has nothing to do).

        The worker is marked as inside a store call meanwhile: shutdown does not cancel it
        then (a claim taken by a cut-short call would stay claimed)."""
        if claim.local or worker.abandoned:
            return False
        assert self.driver is not None
        driver = self.driver
        worker.in_store = True
        try:
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
                        "could not record the outcome of job %s; its lease will expire and it "
                        "runs again",
                        claim.job.id,
                    )
                    return False
                if self._state != "running":
                    # taken after stop began: back to the store for another worker
                    await self._give_back(acquired.claims)
                    return False
                for new in acquired.claims:
                    self._submit(new)
                return len(acquired.claims) >= free
            try:
                if self._state != "running" or worker.scope.cancel_called:
                    with anyio.CancelScope(shield=True):
                        await driver.complete(claim, result)
                else:
                    await driver.complete(claim, result)
            except Exception:
                log.exception(
                    "could not record the outcome of job %s; its lease will expire and it runs "
                    "again",
                    claim.job.id,
                )
            return False
        finally:
            worker.in_store = False

    async def _execute(self, claim: Claim, worker: _Worker) -> bool:
        """Run one claim; return what :meth:`_complete` returned."""
        assert self.hooks is not None
        hooks = self.hooks
        job = claim.job
        now = self.clock.now()
        if job.defect is not None:
            return await self._fail_unreadable(claim, job.defect, now, worker)
        definition = self.tasks.get(job.name)
        if definition is None:
            refilled = await self._complete(
                claim,
                RunResult(
                    Outcome.FAILED,
                    now,
                    error=f"no task named {job.name!r} is loaded in worker {self.id}",
                ),
                worker,
            )
            log.error("job %s: no task named %r is loaded", job.id, job.name)
            return refilled
        try:
            plan = claim.plan or self._plan(job, claim.scheduled_at, claim.attempt, now)
        except Exception as exc:
            # a stored schedule no plugin can read (a bad cron, an unknown zone, a schedule type
            # whose plugin was removed): fail this job once, never claim it in a loop
            return await self._fail_unreadable(
                claim, f"stored schedule {job.schedule!r} cannot be read: {exc}", now, worker
            )
        if not plan.run:
            hooks.run_missed(job, plan.scheduled_at, plan.missed, now)
            return await self._complete(
                claim, RunResult(Outcome.MISSED, now, next_run_at=plan.next_run_at), worker
            )
        if plan.missed:
            hooks.run_missed(job, plan.scheduled_at, plan.missed, now)
        # the max_instances slot is taken inside the run's timeout (see _call) and held by the
        # worker, not by this task: an abandoned run gives it back when it is abandoned (see
        # _abandon), so the task's later runs are never blocked by it
        try:
            result = await self._invoke(definition, claim, plan, worker)
        finally:
            if not worker.abandoned:
                self._free_slot(worker)
        if result is None:  # abandoned: recorded by whoever abandoned it
            return False
        return await self._complete(claim, result, worker)

    async def _fail_unreadable(
        self, claim: Claim, reason: str, now: datetime, worker: _Worker
    ) -> bool:
        """Complete a claim whose stored record cannot be read as FAILED, once, with no retry
        and no next occurrence: the job ends in the dead-letter view with ``reason``."""
        log.error("job %s cannot be run and is failed: %s", claim.job.id, reason)
        return await self._complete(claim, RunResult(Outcome.FAILED, now, error=reason), worker)

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

    async def _take_slot(self, definition: TaskDefinition, worker: _Worker) -> None:
        """Wait for a ``max_instances`` slot of the task, held by the worker until the run
        ends or is abandoned."""
        limit = self._limit(definition)
        if limit is not None:
            await limit.acquire()
            worker.slot = limit

    @staticmethod
    def _free_slot(worker: _Worker) -> None:
        """Give back the ``max_instances`` slot the worker's run holds (once)."""
        slot, worker.slot = worker.slot, None
        if slot is not None:
            slot.release()

    def _cancelled_by_kernel(self, worker: _Worker) -> bool:
        """Whether a cancellation that reached the run is the kernel's: decided only from
        facts the kernel set itself (the worker's cancel scope cancelled at shutdown, the
        kernel stopping, an enclosing cancel scope cancelled: trio's system nursery closing).
        A cancellation the task raised or leaked itself (``asyncio.current_task().cancel()``,
        say) is a failure of that run, never a reason to release its claim and run it again."""
        if worker.scope.cancel_called or self._state != "running":
            return True
        return anyio.current_effective_deadline() == -math.inf

    async def _invoke(
        self, definition: TaskDefinition, claim: Claim, plan: Plan, worker: _Worker
    ) -> RunResult | None:
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
                    outcome, value = await self._call(definition, ctx, claim, plan, worker)
            else:
                hooks.run_started(ctx)
                outcome, value = await self._call(definition, ctx, claim, plan, worker)
        except Exception as exc:
            error = exc
            outcome = Outcome.FAILED
        except BaseException as exc:
            # CancelledError, a BaseExceptionGroup, SystemExit, GeneratorExit...: a failure of
            # this run, unless it is the kernel's own cancellation or Ctrl-C
            if worker.abandoned:
                raise
            if isinstance(exc, KeyboardInterrupt) or _contains(exc, KeyboardInterrupt):
                raise
            if _only_cancellations(exc) and self._cancelled_by_kernel(worker):
                raise
            error = exc
            outcome = Outcome.FAILED
            _forget_own_cancel()
            if isinstance(exc, anyio.get_cancelled_exc_class()) and not self._trio:
                # on Python 3.10 a cancellation of the host task looks like this too: the worker
                # retires after recording the run, so an event loop that is closing never waits
                # for it
                worker.retire = True
        if worker.abandoned:
            log.warning(
                "the abandoned run of job %s (task %s) ended after %.1fs",
                claim.job.id,
                definition.name,
                (clock.now() - started).total_seconds(),
            )
            return None
        if worker.timed_out and outcome is not Outcome.SKIPPED:
            outcome, error = Outcome.TIMED_OUT, None
        finished = clock.now()
        duration = (finished - started).total_seconds()
        if error is not None or outcome is Outcome.TIMED_OUT:
            return self._failed(definition, ctx, claim, plan, error, started, finished)
        if outcome is Outcome.SKIPPED:
            hooks.run_skipped(ctx)
        else:
            hooks.run_succeeded(ctx, value, duration)
        hooks.run_finished(ctx, outcome, duration)
        stored = None
        if value is not None:
            stored, problem = portable_value(value)
            if problem is not None:
                ctx.logger.warning(
                    "task %s returned %s, which is not portable JSON (%s): stored as None",
                    definition.name,
                    _type_name(value),
                    problem,
                )
        return RunResult(
            outcome,
            finished,
            next_run_at=plan.next_run_at,
            return_value=stored,
            started_at=started,
        )

    def _failed(
        self,
        definition: TaskDefinition,
        ctx: TaskContext,
        claim: Claim,
        plan: Plan,
        error: BaseException | None,
        started: datetime,
        finished: datetime,
    ) -> RunResult:
        """The result of a failed run (``error``) or of a timed-out one (``error`` None), with
        a retry when attempts are left; reports it to the hooks."""
        assert self.hooks is not None
        hooks = self.hooks
        job = claim.job
        duration = (finished - started).total_seconds()
        outcome = Outcome.FAILED if error is not None else Outcome.TIMED_OUT
        retry_at: datetime | None = None
        attempts = job.max_attempts or definition.max_attempts
        if claim.attempt < attempts and not isinstance(error, PrepareResultError):
            backoff = job.backoff or definition.backoff
            retry_at = finished + timedelta(seconds=backoff.delay_for(claim.attempt))
        retry_note = f"; retry at {retry_at.isoformat()}" if retry_at else ""
        if error is None:
            assert definition.timeout is not None
            ctx.logger.warning(
                "task %s timed out after %ss (attempt %d)%s",
                definition.name,
                definition.timeout,
                claim.attempt,
                retry_note,
            )
            hooks.run_timed_out(ctx, definition.timeout, retry_at)
            message = f"timed out after {definition.timeout}s"
            tb = None
        else:
            ctx.logger.error(
                "task %s failed (attempt %d)%s",
                definition.name,
                claim.attempt,
                retry_note,
                exc_info=error,
            )
            hooks.run_failed(ctx, error, retry_at, duration)
            message = _error_text(error)
            tb = _traceback_text(error)
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

    async def _call(
        self,
        definition: TaskDefinition,
        ctx: TaskContext,
        claim: Claim,
        plan: Plan,
        worker: _Worker,
    ) -> tuple[Outcome, Any]:
        worker.timed_out = False
        if definition.timeout is None:
            await self._take_slot(definition, worker)
            return await self._call_inner(definition, ctx)
        deadline = ctx.started_at + timedelta(seconds=definition.timeout)
        done = _RunEnd()
        with anyio.CancelScope() as inner:
            # the watchdog is a kernel task, not a child of this run: it can record the run and
            # stop waiting for it when the task ignores the timeout's cancellation
            self._spawn(self._watchdog, worker, claim, inner, deadline, done, definition, ctx, plan)
            try:
                # waiting for a max_instances slot counts against the timeout
                await self._take_slot(definition, worker)
                return await self._call_inner(definition, ctx)
            finally:
                done.set()
        return Outcome.TIMED_OUT, None  # the scope caught the watchdog's cancellation

    async def _watchdog(
        self,
        worker: _Worker,
        claim: Claim,
        inner: anyio.CancelScope,
        deadline: datetime,
        done: _RunEnd,
        definition: TaskDefinition,
        ctx: TaskContext,
        plan: Plan,
    ) -> None:
        await self.clock.wait_until(deadline, done.event)
        if done.ended:
            return
        worker.timed_out = True
        inner.cancel()
        done.event = anyio.Event()
        await self.clock.wait_until(deadline + timedelta(seconds=self.cancel_grace), done.event)
        if done.ended or worker.claim is not claim:
            return
        # the task ignored the timeout's cancellation: record the run as timed out and stop
        # waiting for it (its worker leaves the pool; a new one takes its place)
        if self._abandon(worker) is None:
            return
        log.error(
            "job %s (task %s) ignored its cancellation %ss after its timeout: abandoned; the run "
            "is recorded as timed out and left to end on its own",
            claim.job.id,
            definition.name,
            self.cancel_grace,
        )
        result = self._failed(definition, ctx, claim, plan, None, ctx.started_at, self.clock.now())
        if claim.local:
            return
        assert self.driver is not None
        with anyio.CancelScope(shield=True):
            try:
                await self.driver.complete(claim, result)
            except Exception:
                log.exception(
                    "could not record the outcome of job %s; its lease will expire",
                    claim.job.id,
                )
        # the retry (or next occurrence) is stored only now: the wake-up of _abandon came
        # before it
        self._wakeup.set()

    @staticmethod
    async def _call_inner(definition: TaskDefinition, ctx: TaskContext) -> tuple[Outcome, Any]:
        if definition.prepare is not None:
            ok = definition.prepare(ctx)
            if inspect.isawaitable(ok):
                ok = await ok
            if not isinstance(ok, bool):
                raise PrepareResultError(
                    f"prepare of task {definition.name!r} returned {short(ok)}; "
                    "it must return True or False"
                )
            if not ok:
                return Outcome.SKIPPED, None
        return Outcome.SUCCEEDED, await definition.execute(ctx)


#: the longest ``shutdown_timeout`` / ``cancel_grace`` (seconds): one year
MAX_WAIT_SECONDS = 365 * 24 * 3600.0
#: the most runs at once one kernel allows
MAX_CONCURRENCY = 1_000_000


def _check_options(
    *,
    tasks: object,
    plugins: object,
    context: object,
    clock: object,
    concurrency: object,
    shutdown_timeout: object,
    cancel_grace: object,
    driver_options: object,
    entry_points: object,
    settings: object,
) -> None:
    """Refuse a bad Kernel(...) option with InvalidArgumentError naming it and its value."""

    def bad(name: str, value: object, rule: str) -> InvalidArgumentError:
        return InvalidArgumentError(f"Kernel option {name} must be {rule}, got {short(value)}")

    if (
        isinstance(concurrency, bool)
        or not isinstance(concurrency, int)
        or not 1 <= concurrency <= MAX_CONCURRENCY
    ):
        raise bad("concurrency", concurrency, f"an int from 1 to {MAX_CONCURRENCY}")
    for name, value in (("shutdown_timeout", shutdown_timeout), ("cancel_grace", cancel_grace)):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not (0 <= value <= MAX_WAIT_SECONDS)  # also refuses nan
        ):
            raise bad(name, value, f"a number of seconds from 0 to {MAX_WAIT_SECONDS:.0f}")
    for name, value in (
        ("context", context),
        ("driver_options", driver_options),
        ("settings", settings),
    ):
        if value is not None and not isinstance(value, Mapping):
            raise bad(name, value, "a mapping or None")
        if isinstance(value, Mapping) and not all(isinstance(k, str) for k in value):
            raise bad(name, value, "a mapping with str keys")
    if not isinstance(entry_points, bool):
        raise bad("entry_points", entry_points, "True or False")
    if tasks is not None and (
        isinstance(tasks, (str, bytes, Mapping)) or not isinstance(tasks, (TaskRegistry, Iterable))
    ):
        raise bad("tasks", tasks, "a TaskRegistry, an iterable of task definitions or None")
    if isinstance(plugins, (str, bytes, Mapping)) or not isinstance(plugins, Iterable):
        raise bad("plugins", plugins, "an iterable of plugin objects or 'module:attr' names")
    if clock is not None and not all(
        callable(getattr(clock, attr, None)) for attr in ("now", "wait_until", "sleep_until")
    ):
        raise bad("clock", clock, "a Clock (with now, wait_until and sleep_until) or None")


class _RunEnd:
    """Tells a watchdog that its run ended (a clock may set the event at its deadline)."""

    __slots__ = ("ended", "event")

    def __init__(self) -> None:
        self.ended = False
        self.event = anyio.Event()

    def set(self) -> None:
        self.ended = True
        self.event.set()


class _Worker:
    """One worker of the pool: a long-lived task that runs claims one after another.

    ``scope`` cancels it at shutdown. ``in_store`` is True while it records an outcome (a store
    call that shutdown never cuts short: ``retire`` asks it to end after the call).
    ``abandoned``: its run ignored its cancellation and the kernel stopped waiting for it.
    ``timed_out``: the current run passed its task's timeout."""

    __slots__ = ("abandoned", "claim", "in_store", "retire", "scope", "slot", "timed_out")

    def __init__(self) -> None:
        self.scope = anyio.CancelScope()
        self.claim: Claim | None = None
        self.in_store = False
        self.retire = False
        self.abandoned = False
        self.timed_out = False
        #: the ``max_instances`` slot its run holds (given back when the run ends or is
        #: abandoned)
        self.slot: anyio.Semaphore | None = None


async def _awaited(call: Callable[[], Awaitable[None]]) -> None:
    await call()


def _forget_own_cancel() -> None:
    """Undo the cancel requests a task made on its own asyncio task (``current_task().cancel()``)
    after its run was recorded as failed, so that they do not cancel the worker's next await."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # trio
        return
    uncancel = getattr(task, "uncancel", None)  # Python 3.11+
    cancelling = getattr(task, "cancelling", None)
    if uncancel is None or cancelling is None:
        return
    while cancelling():
        uncancel()


def _running_trio() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return True
    return False


#: refused in a driver URL: no store, file system or socket takes them (and they are easy to
#: pass by accident: a NUL from C, a lone surrogate from a badly decoded byte)
_UNSAFE_URL_CHARS = re.compile("[\x00\ud800-\udfff]")
#: the largest ``list_tasks`` limit: a store's integer (SQLite's, Redis's) is signed 64-bit
_MAX_LIMIT = 2**63 - 1


def _describe(spec: object) -> str:
    """A driver URL or object for a message, without credentials."""
    return redact(spec if isinstance(spec, str) else short(spec))


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    """The exceptions inside a (Base)ExceptionGroup, recursively (the builtin one on 3.11+,
    the backport anyio uses on 3.10), or ``exc`` itself."""
    inner = getattr(exc, "exceptions", None)
    if isinstance(inner, tuple) and any(
        c.__name__ == "BaseExceptionGroup" for c in type(exc).__mro__
    ):
        for sub in inner:
            yield from _leaves(sub)
    else:
        yield exc


def _contains(exc: BaseException, kind: type[BaseException]) -> bool:
    return any(isinstance(leaf, kind) for leaf in _leaves(exc))


def _only_cancellations(exc: BaseException) -> bool:
    cancelled = anyio.get_cancelled_exc_class()
    return all(isinstance(leaf, cancelled) for leaf in _leaves(exc))


#: the deepest nesting of lists and objects a stored return value may have (task data's)
MAX_RESULT_DEPTH = MAX_DEPTH


def portable_value(value: Any) -> tuple[Any, str | None]:
    """The return value a driver stores for ``value``: strict JSON that every store and every
    JSON reader (Node's ``JSON.parse``, Lua's cjson, SQLite) reads back alike, or None.

    Portable means what task data may be (:func:`tickkit.codec.check_json`: finite floats, ints
    within signed 64 bits, no lone surrogates, str keys, at most ``MAX_DEPTH`` deep). Returns
    ``(value, None)`` (tuples as lists) or ``(None, why)``."""
    problem = check_json(value)
    if problem is not None:
        where, why = problem
        return None, f"{why}{f' at {where}' if where else ''}"
    if value is None or type(value) in (bool, str, int, float):
        return value, None
    # containers come back as plain JSON (tuples as lists, subclasses as their base)
    return json.loads(json.dumps(value, allow_nan=False)), None


def _type_name(value: object) -> str:
    kind = type(value)
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


def _printable(text: str) -> str:
    """``text`` with lone surrogates escaped, so every store can hold it."""
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _error_text(error: BaseException, limit: int = 2000) -> str:
    try:
        detail = str(error)
    except Exception:
        detail = "<str() of the exception failed>"
    text = _printable(f"{type(error).__name__}: {detail}")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _traceback_text(error: BaseException) -> str | None:
    try:
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    except Exception:
        return None
    return _printable(text)


def running_kernels() -> Sequence[Kernel]:
    """Kernels started in this process and not stopped yet."""
    return tuple(_running)
