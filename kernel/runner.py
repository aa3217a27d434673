"""The run of one planned claim, to a :class:`RunResult`: the task's context, the execution
hooks, ``prepare`` and ``execute``, the timeout and its watchdog.

The runner never calls the driver: the pool (:mod:`tickkit.dispatch`) records what it returns,
and records a run the watchdog abandoned through ``pool.record_abandoned``.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import math
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from .codec import MAX_DEPTH, check_json
from .context import TaskContext
from .errors import PrepareResultError, error_text, printable, short
from .models import Claim, Outcome, Plan, RunResult
from .schedule import plan_retry

if TYPE_CHECKING:
    from .dispatch import Dispatcher
    from .kernel import Kernel
    from .manager import Hooks
    from .registry import TaskDefinition

log = logging.getLogger("tickkit")

#: real seconds a virtual clock's settling waits for a plain ``def``'s worker thread to return
#: (:meth:`Runner.threads_pending`); a thread still running after that counts as blocked
THREAD_SETTLE_SECONDS = 0.5


class Worker:
    """One worker of the pool: a long-lived task that runs claims one after another.

    ``scope`` cancels it at shutdown. ``in_store`` is True while it records an outcome (a store
    call that shutdown never cuts short: ``retire`` asks it to end after the call).
    ``abandoned``: its run ignored its cancellation and the kernel stopped waiting for it.
    ``timed_out``: the current run passed its task's timeout. ``slot``: the ``max_instances``
    slot its run holds (see :class:`tickkit.dispatch.InstanceLimits`)."""

    __slots__ = ("abandoned", "claim", "in_store", "retire", "scope", "slot", "timed_out")

    def __init__(self) -> None:
        self.scope = anyio.CancelScope()
        self.claim: Claim | None = None
        self.in_store = False
        self.retire = False
        self.abandoned = False
        self.timed_out = False
        self.slot: anyio.Semaphore | None = None


class RunEnd:
    """Tells a watchdog that its run ended (a clock may set the event at its deadline)."""

    __slots__ = ("ended", "event")

    def __init__(self) -> None:
        self.ended = False
        self.event = anyio.Event()

    def set(self) -> None:
        self.ended = True
        self.event.set()


class Runner:
    """Runs one planned claim of a loaded task in a worker of ``pool``."""

    def __init__(self, kernel: Kernel, hooks: Hooks, pool: Dispatcher) -> None:
        self.kernel = kernel
        self.hooks = hooks
        self.pool = pool
        #: the worker threads of plain ``def`` functions (``Kernel(thread_limit=...)``); made
        #: in the event loop on first use
        self._threads: anyio.CapacityLimiter | None = None
        #: the worker threads this kernel waits for, by when (monotonic) they were started
        self._in_threads: dict[object, float] = {}

    def threads_pending(self) -> bool:
        """Whether a run waits for a worker thread started less than ``THREAD_SETTLE_SECONDS``
        ago (lets a virtual clock settle; real time, never the kernel's clock)."""
        horizon = time.monotonic() - THREAD_SETTLE_SECONDS
        return any(started > horizon for started in self._in_threads.values())

    async def run(
        self, definition: TaskDefinition, claim: Claim, plan: Plan, worker: Worker
    ) -> RunResult | None:
        """The result of the run, or None when it was abandoned (whoever abandoned it records
        it). A failing task never raises here; the kernel's own cancellation and Ctrl-C do."""
        clock = self.kernel.clock
        started = clock.now()
        ctx = TaskContext(
            task=definition,
            job=claim.job,
            scheduled_at=plan.scheduled_at,
            started_at=started,
            attempt=claim.attempt,
            kernel=self.kernel,
            extras=self.kernel.context,
        )
        outcome, value, error = await self._guarded(definition, ctx, claim, plan, worker)
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
        if error is not None or outcome is Outcome.TIMED_OUT:
            return self.failed(definition, ctx, claim, plan, error, started, finished)
        return self._succeeded(definition, ctx, plan, outcome, value, started, finished)

    async def _guarded(
        self, definition: TaskDefinition, ctx: TaskContext, claim: Claim, plan: Plan, worker: Worker
    ) -> tuple[Outcome, Any, BaseException | None]:
        """Run the wrappers and the task; whatever the task raises is a failed run."""
        try:
            outcome, value = await self._wrapped(definition, ctx, claim, plan, worker)
        except Exception as exc:
            return Outcome.FAILED, None, exc
        except BaseException as exc:
            # CancelledError, a BaseExceptionGroup, SystemExit, GeneratorExit...: a failure of
            # this run, unless it is the kernel's own cancellation or Ctrl-C
            if worker.abandoned:
                raise
            if isinstance(exc, KeyboardInterrupt) or contains(exc, KeyboardInterrupt):
                raise
            if only_cancellations(exc) and self._cancelled_by_kernel(worker):
                raise
            forget_own_cancel()
            if isinstance(exc, anyio.get_cancelled_exc_class()) and not self.pool.trio:
                # on Python 3.10 a cancellation of the host task looks like this too: the worker
                # retires after recording the run, so an event loop that is closing never waits
                # for it
                worker.retire = True
            return Outcome.FAILED, None, exc
        return outcome, value, None

    async def _wrapped(
        self, definition: TaskDefinition, ctx: TaskContext, claim: Claim, plan: Plan, worker: Worker
    ) -> tuple[Outcome, Any]:
        wrappers = self.hooks.wrap_run(ctx)
        if not wrappers:
            self.hooks.run_started(ctx)
            return await self._call(definition, ctx, claim, plan, worker)
        async with AsyncExitStack() as stack:
            for cm in wrappers:
                try:
                    await stack.enter_async_context(cm)
                except Exception:
                    log.exception("a tickkit_wrap_run manager failed to enter")
            self.hooks.run_started(ctx)
            return await self._call(definition, ctx, claim, plan, worker)

    def _succeeded(
        self,
        definition: TaskDefinition,
        ctx: TaskContext,
        plan: Plan,
        outcome: Outcome,
        value: Any,
        started: datetime,
        finished: datetime,
    ) -> RunResult:
        duration = (finished - started).total_seconds()
        if outcome is Outcome.SKIPPED:
            self.hooks.run_skipped(ctx)
        else:
            self.hooks.run_succeeded(ctx, value, duration)
        self.hooks.run_finished(ctx, outcome, duration)
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
            outcome, finished, next_run_at=plan.next_run_at, return_value=stored, started_at=started
        )

    def failed(
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
        a retry when attempts are left (:func:`tickkit.schedule.plan_retry`); reports it to the
        hooks."""
        hooks = self.hooks
        duration = (finished - started).total_seconds()
        outcome = Outcome.FAILED if error is not None else Outcome.TIMED_OUT
        retry_at = plan_retry(
            claim.job,
            definition,
            attempt=claim.attempt,
            outcome=outcome,
            now=finished,
            error=error,
        )
        retry_note = f"; retry at {retry_at.isoformat()}" if retry_at else ""
        tb: str | None = None
        if error is None:
            assert definition.timeout is not None  # only a task with a timeout times out
            ctx.logger.warning(
                "task %s timed out after %ss (attempt %d)%s",
                definition.name,
                definition.timeout,
                claim.attempt,
                retry_note,
            )
            hooks.run_timed_out(ctx, definition.timeout, retry_at)
            message = f"timed out after {definition.timeout}s"
        else:
            ctx.logger.error(
                "task %s failed (attempt %d)%s",
                definition.name,
                claim.attempt,
                retry_note,
                exc_info=error,
            )
            hooks.run_failed(ctx, error, retry_at, duration)
            message = error_text(error)
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

    def _cancelled_by_kernel(self, worker: Worker) -> bool:
        """Whether a cancellation that reached the run is the kernel's: decided only from
        facts the kernel set itself (the worker's cancel scope cancelled at shutdown, the
        kernel stopping, an enclosing cancel scope cancelled: trio's system nursery closing).
        A cancellation the task raised or leaked itself (``asyncio.current_task().cancel()``,
        say) is a failure of that run, never a reason to release its claim and run it again."""
        if worker.scope.cancel_called or not self.pool.running:
            return True
        return anyio.current_effective_deadline() == -math.inf

    async def _call(
        self, definition: TaskDefinition, ctx: TaskContext, claim: Claim, plan: Plan, worker: Worker
    ) -> tuple[Outcome, Any]:
        worker.timed_out = False
        limits = self.pool.limits
        if definition.timeout is None:
            await limits.take(definition, worker)
            return await self._prepare_and_execute(definition, ctx)
        deadline = ctx.started_at + timedelta(seconds=definition.timeout)
        done = RunEnd()
        with anyio.CancelScope() as inner:
            # the watchdog is a kernel task, not a child of this run: it can record the run and
            # stop waiting for it when the task ignores the timeout's cancellation
            self.pool.spawn(self._watchdog, worker, claim, inner, deadline, done, ctx, plan)
            try:
                # waiting for a max_instances slot counts against the timeout
                await limits.take(definition, worker)
                return await self._prepare_and_execute(definition, ctx)
            finally:
                done.set()
        return Outcome.TIMED_OUT, None  # the scope caught the watchdog's cancellation

    async def _prepare_and_execute(
        self, definition: TaskDefinition, ctx: TaskContext
    ) -> tuple[Outcome, Any]:
        if definition.prepare is not None:
            ok = await self._invoke(definition.prepare, definition.prepare_in_thread, ctx)
            if not isinstance(ok, bool):
                raise PrepareResultError(
                    f"prepare of task {definition.name!r} returned {short(ok)}; "
                    "it must return True or False"
                )
            if not ok:
                return Outcome.SKIPPED, None
        value = await self._invoke(definition.execute, definition.execute_in_thread, ctx)
        return Outcome.SUCCEEDED, value

    async def _invoke(self, fn: Callable[..., Any], in_thread: bool, ctx: TaskContext) -> Any:
        """``fn(ctx)``, a plain ``def`` in a worker thread; an awaitable it returns is awaited
        here, on the event loop. A cancellation (the timeout, shutdown) stops waiting for the
        thread at once (``abandon_on_cancel``, anyio 4.1+): it runs to its end in the
        background and what it returns or raises is dropped."""
        if in_thread:
            if self._threads is None:
                self._threads = anyio.CapacityLimiter(self.kernel.thread_limit)
            token = object()
            self._in_threads[token] = time.monotonic()
            try:
                # boxed: trio refuses a function that returns a coroutine
                (value,) = await anyio.to_thread.run_sync(
                    _boxed, fn, ctx, abandon_on_cancel=True, limiter=self._threads
                )
            finally:
                del self._in_threads[token]
        else:
            value = fn(ctx)
        if inspect.isawaitable(value):
            value = await value
        return value

    async def _watchdog(
        self,
        worker: Worker,
        claim: Claim,
        inner: anyio.CancelScope,
        deadline: datetime,
        done: RunEnd,
        ctx: TaskContext,
        plan: Plan,
    ) -> None:
        clock = self.kernel.clock
        grace = self.kernel.cancel_grace
        await clock.wait_until(deadline, done.event)
        if done.ended:
            return
        worker.timed_out = True
        inner.cancel()
        done.event = anyio.Event()
        await clock.wait_until(deadline + timedelta(seconds=grace), done.event)
        if done.ended or worker.claim is not claim:
            return
        # the task ignored the timeout's cancellation: record the run as timed out and stop
        # waiting for it (its worker leaves the pool; a new one takes its place)
        if self.pool.abandon(worker) is None:
            return
        log.error(
            "job %s (task %s) ignored its cancellation %ss after its timeout: abandoned; the run "
            "is recorded as timed out and left to end on its own",
            claim.job.id,
            ctx.task.name,
            grace,
        )
        result = self.failed(ctx.task, ctx, claim, plan, None, ctx.started_at, clock.now())
        await self.pool.record_abandoned(claim, result)


def _boxed(fn: Callable[..., Any], ctx: TaskContext) -> tuple[Any]:
    return (fn(ctx),)


def forget_own_cancel() -> None:
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


def leaves(exc: BaseException) -> Iterator[BaseException]:
    """The exceptions inside a (Base)ExceptionGroup, recursively (the builtin one on 3.11+,
    the backport anyio uses on 3.10), or ``exc`` itself."""
    inner = getattr(exc, "exceptions", None)
    if isinstance(inner, tuple) and any(
        c.__name__ == "BaseExceptionGroup" for c in type(exc).__mro__
    ):
        for sub in inner:
            yield from leaves(sub)
    else:
        yield exc


def contains(exc: BaseException, kind: type[BaseException]) -> bool:
    return any(isinstance(leaf, kind) for leaf in leaves(exc))


def only_cancellations(exc: BaseException) -> bool:
    cancelled = anyio.get_cancelled_exc_class()
    return all(isinstance(leaf, cancelled) for leaf in leaves(exc))


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


def _traceback_text(error: BaseException) -> str | None:
    try:
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    except Exception:
        return None
    return printable(text)
