"""The kernel: its lifecycle (an anyio task group, a :class:`KernelState`) and the module-level
kernel registry. The job API is :mod:`tickkit.jobs`, dispatch :mod:`tickkit.dispatch`, the
worker pool :mod:`tickkit.workers`, the run of one job :mod:`tickkit.runner`."""

from __future__ import annotations

import functools
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any, TypeVar

import anyio
import anyio.abc

from .checks import resolve_definition
from .clock import Clock, SystemClock
from .codec import Codec
from .dispatch import Dispatcher
from .driver import Driver, DriverContext
from .errors import DriverError, KernelNotRunningError
from .internal import InternalTasks, to_the_end
from .jobs import JobAPI
from .manager import Hooks, create_plugin_manager
from .options import check_options, describe_driver, resolve_driver, running_trio
from .registry import TaskDefinition, TaskRegistry, default_registry
from .state import KernelState, Live
from .workers import current_worker

log = logging.getLogger("tickkit")
T = TypeVar("T")

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


def running_kernels() -> Sequence[Kernel]:
    """Kernels started in this process and not stopped yet."""
    return tuple(_running)


class Kernel(JobAPI):
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
        thread_limit: worker threads at once for plain ``def`` prepare and execute functions
            (anyio's thread pool; default 40). A timeout or shutdown stops waiting for a
            thread but cannot stop it (docs/tasks.md).
        shutdown_timeout: seconds running tasks get to finish at shutdown before cancellation.
        cancel_grace: seconds a cancelled run (at shutdown, or past its task's ``timeout``) gets
            to end; one that ignores its cancellation longer is abandoned: its claim is released
            (shutdown) or recorded as timed out, and the kernel stops waiting for it.
        driver_options: keyword options for a driver given as a URL.
        entry_points: load plugins from the ``tickkit.plugins`` entry-point group.
        settings: settings for plugins, read as ``kernel.settings`` (for example
            ``{"tasks_dir": "app/tasks", "reload": True}``); each plugin documents its keys.
    """

    _state: KernelState
    _live: Live | None
    _exit: AsyncExitStack | None
    _tg: anyio.abc.TaskGroup | None

    def __init__(
        self,
        driver: Driver | str | None = None,
        *,
        tasks: Iterable[TaskDefinition] | TaskRegistry | None = None,
        plugins: Iterable[object] = (),
        context: Mapping[str, Any] | None = None,
        clock: Clock | None = None,
        concurrency: int = 64,
        thread_limit: int = 40,
        shutdown_timeout: float = 30.0,
        cancel_grace: float = 5.0,
        driver_options: Mapping[str, Any] | None = None,
        entry_points: bool = True,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        check_options(
            tasks=tasks,
            plugins=plugins,
            context=context,
            clock=clock,
            concurrency=concurrency,
            thread_limit=thread_limit,
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
        self.thread_limit = thread_limit
        self.shutdown_timeout = shutdown_timeout
        self.cancel_grace = cancel_grace
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        #: the open kernel's hooks, driver and codec (None before the first open)
        self.hooks: Hooks | None = None
        self.driver: Driver | None = None
        self.codec: Codec | None = None
        self._plugin_state: dict[object, Any] = {}
        self._owner: int | None = None
        #: set while start() runs (a stop meanwhile waits for it), and the task running it
        self._starting: anyio.Event | None = None
        self._starter: int | None = None
        self._reset()

    # --- lifecycle ----------------------------------------------------------------------

    @property
    def state(self) -> KernelState:
        """A :class:`KernelState` (a str): ``new``, ``open`` (driver open, not dispatching),
        ``running``, ``stopping``, ``stopped``."""
        return self._state

    @property
    def running(self) -> bool:
        """True while the kernel takes jobs (state ``running``)."""
        return self._state is KernelState.RUNNING

    def plugin_state(self, key: object, factory: Callable[[], T]) -> T:
        """A plugin's per-kernel object under ``key``: made by ``factory()`` on first use,
        the same object afterwards, dropped when the kernel stops (a restart makes a new one).

        Use a key the plugin owns (its class or a module-level ``object()``)."""
        try:
            return self._plugin_state[key]  # type: ignore[no-any-return]
        except KeyError:
            made = self._plugin_state[key] = factory()
            return made

    async def open(self) -> None:
        """Load plugins and open the driver, without running jobs (used by the CLI to manage a
        store). ``start`` calls it."""
        if self._state is KernelState.STOPPED:
            self._reset()
        if self._state is not KernelState.NEW:
            return
        hooks = self.hooks = Hooks(
            create_plugin_manager(self._plugins, entry_points=self._entry_points)
        )
        hooks.refresh()
        codec = self.codec = hooks.data_codec()
        self._resolve_tasks(hooks, codec)
        driver = self.driver = resolve_driver(self._driver_spec, hooks, self._driver_options)
        trio = running_trio()
        if trio and not driver.supports_trio:
            self._state = KernelState.STOPPED
            raise DriverError(
                f"the {type(driver).__name__} driver ({describe_driver(self._driver_spec)}) does "
                "not support trio (it runs on asyncio only): run this kernel on asyncio, or use "
                "a driver that supports trio (memory://)"
            )
        pool = Dispatcher(self, driver, hooks, trio=trio)
        ctx = DriverContext(
            clock=self.clock,
            codec=codec,
            parse_schedule=hooks.parse_spec,
            plan=pool.plan,
            notify=self.wakeup,
            owner=self.id,
        )
        try:
            await to_the_end(lambda: driver.start(ctx), trio=trio)
        except BaseException:
            # a driver that failed half way may hold a connection (a thread, a socket)
            with anyio.CancelScope(shield=True):
                try:
                    await driver.stop()
                except Exception:
                    log.debug("closing driver %s after its failed start", driver, exc_info=True)
            self._state = KernelState.STOPPED
            raise
        self._live = Live(driver, hooks, codec, pool)
        attach = getattr(self.clock, "attach", None)
        if attach is not None:
            attach(self)
        self._state = KernelState.OPEN

    def _reset(self) -> None:
        """The state of a new kernel; makes a stopped kernel startable again (a fresh driver
        context, fresh events)."""
        self._state = KernelState.NEW
        self._live = None
        self._wakeup = anyio.Event()
        self._stop_requested = anyio.Event()
        self._closed = anyio.Event()
        self._exit = None
        self._tg = None
        self._internal = InternalTasks()

    def _resolve_tasks(self, hooks: Hooks, codec: Codec) -> None:
        """Check the tasks against this kernel's plugins (see ``resolve_definition``)."""
        for definition in self.tasks:
            resolved = resolve_definition(definition, hooks, codec)
            if resolved is not definition:
                self.tasks.add(resolved, replace=True)

    def _opened(self) -> Live:
        """What the open kernel holds (internal paths that run only once it is open)."""
        if self._live is None:
            raise KernelNotRunningError("this kernel is not open")
        return self._live

    async def start(self) -> None:
        """Open, store static schedules, and start dispatching in a new task group."""
        if self._state in (KernelState.RUNNING, KernelState.STOPPING):
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
        live = self._opened()
        try:
            for definition in live.hooks.load_tasks(self):
                self.tasks.add(definition)
            await self.sync_static()
            self._owner = anyio.get_current_task().id
            self._exit = AsyncExitStack()
            self._tg = await self._exit.enter_async_context(anyio.create_task_group())
            self._state = KernelState.RUNNING
            _running.append(self)
            self._spawn(live.pool.dispatch)
            if live.driver.lease_duration:
                self._spawn(live.pool.renew_leases, live.driver.lease_duration)
            for service in live.hooks.kernel_services(self):
                self._spawn(_service, service)
            self._run_immediate(live.pool.submit)
            live.hooks.kernel_started(self)
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
        live = self._live
        worker = current_worker()
        if live is not None and worker is not None and worker in live.pool.workers:
            # called by a task this kernel runs: waiting here would wait for the caller's own
            # run; the close runs in a kernel task instead and waits for this run to end (it
            # is recorded when the task returns)
            if self._state is KernelState.RUNNING and self._tg is not None:
                self._begin_stop(live, notify=True)
                self._tg.start_soon(
                    functools.partial(self._close, grace=self.shutdown_timeout, notify=True)
                )
            return
        if self._state is KernelState.OPEN and live is not None:
            self._state = KernelState.STOPPED
            with anyio.CancelScope(shield=True):
                await live.driver.stop()
            return
        if self._state is KernelState.RUNNING:
            await self._close(grace=self.shutdown_timeout, notify=True)
        elif self._state is KernelState.STOPPING:
            await self._closed.wait()
        if self._exit is not None and anyio.get_current_task().id == self._owner:
            await self._exit_task_group()

    async def _exit_task_group(self) -> None:
        exit_stack, self._exit = self._exit, None
        if exit_stack is not None:
            await exit_stack.aclose()

    def _begin_stop(self, live: Live, *, notify: bool) -> None:
        """Stop taking jobs (the first step of _close; idempotent)."""
        if self._state is KernelState.RUNNING and notify:
            self._state = KernelState.STOPPING
            live.hooks.kernel_stopping(self)
        self._state = KernelState.STOPPING
        self._stop_requested.set()
        live.pool.stop_dispatch()
        self._wakeup.set()

    async def _close(self, *, grace: float, notify: bool) -> None:
        """Shut down: stop taking jobs, give running tasks ``grace`` seconds, cancel them,
        abandon those that ignore it, release every claim not finished, close the driver.

        Also undoes a start that failed half way (``notify`` False: no stopping hook)."""
        live = self._opened()
        self._begin_stop(live, notify=notify)
        try:
            with anyio.CancelScope(shield=True):
                # the grace period is measured on the kernel's clock (virtual in tests)
                try:
                    await live.pool.drain(grace)
                    await live.pool.stop_workers()
                finally:
                    # whatever failed above, the internal tasks end: stop never hangs on them
                    self._internal.cancel_all()
                if anyio.get_current_task().id != self._owner:
                    await self._internal.wait_all()
        finally:
            try:
                if anyio.get_current_task().id == self._owner:
                    # the task that opened the task group closes it: this also waits for
                    # internal tasks that were cancelled before they first ran (asyncio.run
                    # cancelling every task at exit), which no counter can see
                    await self._exit_task_group()
            finally:
                with anyio.CancelScope(shield=True):
                    await self._close_store(live)

    async def _close_store(self, live: Live) -> None:
        try:
            await live.pool.release_queued()
            if self in _running:
                _running.remove(self)
            await live.driver.stop()
        finally:
            self._state = KernelState.STOPPED
            self._plugin_state.clear()
            self._closed.set()

    def _spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Start a kernel-internal task (see :class:`tickkit.internal.InternalTasks`)."""
        if self._tg is None:
            raise KernelNotRunningError("this kernel is not running")
        self._internal.spawn(self._tg, fn, args, cancelled=not self.running)

    def _raise_in_kernel(self, exc: BaseException) -> None:
        """Ctrl-C (KeyboardInterrupt) raised in a task stops the program, as it would without
        tickkit: it is raised again in the kernel's task group, which ends the ``async with``
        (or ``serve``) around the kernel; on asyncio it also stops the event loop."""
        if self._tg is not None:
            self._tg.start_soon(_raise, exc)

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

    def _require(self) -> Live:
        if self._live is None or self._state in (KernelState.NEW, KernelState.STOPPED):
            raise KernelNotRunningError(
                "this kernel is not open: use `async with kernel:` or `await kernel.open()` first"
            )
        return self._live

    def io_pending(self) -> bool:
        """True while the driver or a plain ``def`` task waits on a worker thread (lets a
        virtual clock settle)."""
        if self._live is not None and self._live.pool.runner.threads_pending():
            return True
        return self.driver is not None and self.driver.io_pending()


async def _service(service: Callable[[], Awaitable[object]]) -> None:
    try:
        await service()
    except Exception:
        log.exception("kernel service %r failed", service)


async def _raise(exc: BaseException) -> None:
    raise exc
