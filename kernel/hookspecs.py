"""Hook specifications: every way a plugin can extend tickkit.

All hooks are synchronous: they return values or register things. Async work lives in the
objects they return (a driver, an async context manager, a coroutine function the kernel runs).
Plugins implement hooks with ``@tickkit.hookimpl``; the hook names all start with ``tickkit_``.
Every hook here must have a docstring with its arguments, return value and where it applies
(``tests/test_hookspecs.py`` fails otherwise). docs/writing-a-plugin.md has examples.

Groups: schedule parsing, persistence, execution, lifecycle.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .codec import Codec
    from .context import TaskContext
    from .driver import Driver
    from .kernel import Kernel
    from .models import Job, Outcome
    from .registry import TaskDefinition
    from .schedule import Schedule

PROJECT = "tickkit"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --- schedule parsing -------------------------------------------------------------------------


@hookspec(firstresult=True)
def tickkit_parse_schedule(value: object, timezone: str | None) -> Schedule | None:
    """Turn a user's schedule, or a stored spec, into a :class:`~tickkit.Schedule`.

    Arguments: ``value``, what the user passed as ``schedule`` (a cron string, a ``datetime``,
    a ``timedelta``, a dict such as ``{"type": "cron", "value": "0 0 * * *"}``, or anything a
    plugin understands), or a spec written by ``Schedule.to_spec()`` and read back from a store;
    ``timezone``, the task's default time zone name (None: UTC) for values that carry none.

    Return: a Schedule, or None when this plugin does not handle ``value``. First result wins;
    raise :class:`~tickkit.InvalidScheduleError` (or a subclass) for a value the plugin owns but
    cannot accept. Applies when a task is defined, a job is created, ``next_runs`` is called and
    whenever a stored job's schedule is read back.
    """


# --- persistence ------------------------------------------------------------------------------


@hookspec(firstresult=True)
def tickkit_resolve_driver(url: str, options: dict[str, Any]) -> Driver | None:
    """Create the driver for a store URL.

    Arguments: ``url``, what was passed as ``Kernel(driver=...)`` or ``--driver``
    (``memory://``, ``sqlite:///tasks.db``, ``redis://host/0``...); ``options``, keyword options
    for the driver.

    Return: a (not yet started) :class:`~tickkit.Driver`, or None to let other plugins try. First
    result wins. The kernel's own fallback looks the URL scheme up in the ``tickkit.drivers``
    entry-point group, so most drivers need no plugin at all. Applies once, when a kernel opens.
    """


@hookspec(firstresult=True)
def tickkit_data_codec() -> Codec | None:
    """Supply the codec that turns task data into the text a driver stores, and back.

    Arguments: none.

    Return: a :class:`~tickkit.Codec` (for example one that encrypts data at rest), or None for
    the default JSON codec. First result wins. Applies once, when a kernel opens; the codec then
    encodes every job's data before a driver stores it and decodes it when read back. A codec's
    output must be JSON text for stores that other programs read (BullMQ).
    """


@hookspec
def tickkit_job_meta(job: Job, kernel: Kernel) -> dict[str, str] | None:
    """Attach metadata to a job when it is created.

    Arguments: ``job``, the job about to be stored (``job.id`` may still be None); ``kernel``,
    the kernel storing it (its ``driver`` says where). An implementation may take ``job`` alone.

    Return: a dict of strings merged into ``job.meta`` (for example a trace context), or None.
    Applies to every job created with ``create_task`` and every static schedule stored at start.
    """


# --- execution --------------------------------------------------------------------------------


@hookspec
def tickkit_wrap_run(ctx: TaskContext) -> AbstractAsyncContextManager[Any] | None:
    """Wrap one run (``prepare`` and ``execute``) in an async context manager.

    Arguments: ``ctx``, the run's :class:`~tickkit.TaskContext`.

    Return: an async context manager the kernel enters before ``prepare`` and exits after the run
    ends (with the exception, if the run failed), or None. Managers are entered in the order the
    results come back. Applies to every run, for tracing, metrics or per-run resources. An
    exception raised by a wrapper is logged and does not stop the run.
    """


@hookspec
def tickkit_run_started(ctx: TaskContext) -> None:
    """A run is about to call ``prepare`` (or ``execute`` when the task has no prepare).

    Arguments: ``ctx``, the run's context (``ctx.attempt`` is 1 for a first attempt).

    Return: nothing. Applies to every run, inside the ``tickkit_wrap_run`` managers.
    """


@hookspec
def tickkit_run_succeeded(ctx: TaskContext, result: Any, duration: float) -> None:
    """A run's ``execute`` returned.

    Arguments: ``ctx``, the run's context; ``result``, what ``execute`` returned; ``duration``,
    seconds from start to end by the kernel's clock.

    Return: nothing. Applies after ``execute`` returns, before the driver records the outcome.
    """


@hookspec
def tickkit_run_failed(
    ctx: TaskContext, error: BaseException, retry_at: datetime | None, duration: float
) -> None:
    """A run raised (or ``prepare`` returned a non-bool).

    Arguments: ``ctx``, the run's context; ``error``, the exception; ``retry_at``, when the next
    attempt runs, or None when this failure is final (no attempts left); ``duration``, seconds.

    Return: nothing. Applies to every failed attempt. Timeouts call ``tickkit_run_timed_out``
    instead.
    """


@hookspec
def tickkit_run_timed_out(ctx: TaskContext, timeout: float, retry_at: datetime | None) -> None:
    """A run was cancelled because it ran past the task's ``timeout``.

    Arguments: ``ctx``, the run's context; ``timeout``, the limit in seconds; ``retry_at``, when
    the next attempt runs, or None when no attempt is left.

    Return: nothing. Applies to tasks with a ``timeout``.
    """


@hookspec
def tickkit_run_skipped(ctx: TaskContext) -> None:
    """A run was skipped because the task's ``prepare`` returned False.

    Arguments: ``ctx``, the run's context.

    Return: nothing. Applies to tasks with a ``prepare``; the skip is recorded on the job.
    """


@hookspec
def tickkit_run_missed(job: Job, scheduled_at: datetime, count: int, now: datetime) -> None:
    """Occurrences of a job were missed under its misfire policy and will not run.

    Arguments: ``job``, the job; ``scheduled_at``, the nominal time of the (latest) missed
    occurrence; ``count``, how many occurrences were missed in this step; ``now``, the time the
    kernel noticed.

    Return: nothing. Applies when a kernel was down, the clock jumped, or a run took longer than
    the schedule's period (see docs/time.md).
    """


@hookspec
def tickkit_run_finished(ctx: TaskContext, outcome: Outcome, duration: float) -> None:
    """A run ended, whatever its outcome, and the outcome is about to be recorded.

    Arguments: ``ctx``, the run's context; ``outcome``, the :class:`~tickkit.Outcome`;
    ``duration``, seconds from start to end by the kernel's clock.

    Return: nothing. Applies to every run that started (not to missed occurrences).
    """


# --- lifecycle --------------------------------------------------------------------------------


@hookspec
def tickkit_load_tasks(kernel: Kernel) -> list[TaskDefinition] | None:
    """Contribute static tasks when a kernel starts.

    Arguments: ``kernel``, the kernel that is starting (its driver is open).

    Return: a list of task definitions to add to the kernel's tasks, or None. Applies once per
    start, before static schedules are reconciled with the store. A name that is already taken
    raises :class:`~tickkit.DuplicateTaskError`.
    """


@hookspec
def tickkit_kernel_services(
    kernel: Kernel,
) -> list[Callable[[], Coroutine[Any, Any, None]]] | None:
    """Contribute background services that run as long as the kernel runs.

    Arguments: ``kernel``, the kernel that is starting.

    Return: a list of coroutine functions (no arguments) the kernel starts in its task group, or
    None. They are cancelled at shutdown; an exception in one is logged and does not stop the
    kernel. Applies once per start, after the dispatcher starts (file watchers, metrics servers).
    """


@hookspec
def tickkit_kernel_started(kernel: Kernel) -> None:
    """A kernel started: its driver is open and its dispatcher runs.

    Arguments: ``kernel``, the kernel.

    Return: nothing. Applies once per start.
    """


@hookspec
def tickkit_kernel_stopping(kernel: Kernel) -> None:
    """A kernel is shutting down: it takes no new jobs from now on.

    Arguments: ``kernel``, the kernel.

    Return: nothing. Applies once per stop, before running tasks are awaited.
    """
