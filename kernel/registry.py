"""Task definitions, the registry that holds them, and the ``task`` decorator."""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import timedelta
from typing import TYPE_CHECKING, Any, overload

import attrs

from .checks import check_data, parse_given, runs_in_thread
from .codec import find_surrogate
from .errors import (
    DuplicateTaskError,
    InvalidJobIdError,
    InvalidTaskError,
    TickkitError,
    UnknownTaskError,
    short,
)
from .manage import check_index_keys
from .manager import default_hooks
from .models import MAX_ATTEMPTS, Backoff, Misfire, check_duration, to_seconds
from .schedule import Schedule

if TYPE_CHECKING:
    from .context import TaskContext

#: an async function or a plain ``def`` (run in a worker thread), of a (parameterized) context
ExecuteFn = Callable[["TaskContext[Any, Any]"], Any]
PrepareFn = Callable[["TaskContext[Any, Any]"], "Awaitable[bool] | bool"]


#: task names and custom job ids: no ``:`` (BullMQ uses it in keys), not all digits (BullMQ's own
#: ids are integers), 1 to 200 characters, no control characters (C0, DEL, C1) and no lone
#: surrogates (they cannot be encoded to UTF-8, so no store can hold them). The whole value
#: must match (``fullmatch``: a final newline is refused too).
_NAME_RE = re.compile("[^:\x00-\x1f\x7f-\x9f\ud800-\udfff]{1,200}")


def check_name(
    value: object, what: str = "task name", error: type[TickkitError] = InvalidTaskError
) -> str:
    """``value`` if it is a valid task name (or, with ``what``/``error``, id); else raise
    ``error`` naming it."""
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value) or value.isdigit():
        raise error(
            f"invalid {what} {short(value)}: use 1 to 200 characters, no ':', control "
            "characters or lone surrogates, not only digits"
        )
    return value


def check_job_id(value: object) -> str:
    """``value`` if it is a valid caller-given job id, else InvalidJobIdError naming it (the
    rule of task names, which are the ids of static tasks' jobs)."""
    return check_name(value, "job id", InvalidJobIdError)


def check_lookup(
    value: object, what: str = "job id", error: type[TickkitError] = InvalidJobIdError
) -> str:
    """``value`` if it can name a stored job (or task) in a lookup, else ``error`` naming it.

    Looser than :func:`check_name`: a job created by another BullMQ client may have an integer
    id. Refused: non-strings, and lone surrogates (no store can encode them, so a lookup would
    fail inside the driver)."""
    if not isinstance(value, str) or find_surrogate(value) >= 0:
        raise error(f"invalid {what} {short(value)}: a string without lone surrogates is needed")
    return value


def _source_of(fn: Callable[..., Any] | None) -> str | None:
    if fn is None:
        return None
    try:
        file = inspect.getsourcefile(fn)
        line = inspect.getsourcelines(fn)[1]
    except (TypeError, OSError):
        return getattr(fn, "__module__", None)
    return f"{file}:{line}"


def _backoff(value: Backoff | Mapping[str, Any] | float | timedelta | None) -> Backoff:
    return Backoff.coerce(value)


def _misfire(value: Misfire | str) -> Misfire:
    if isinstance(value, Misfire):
        return value
    if isinstance(value, str) and value in Misfire._value2member_map_:
        return Misfire(value)
    raise InvalidTaskError(f"misfire must be 'skip', 'once' or 'all', got {short(value)}")


def _timeout(value: float | timedelta | None) -> float | None:
    if value is None:
        return None
    return check_duration(value, "timeout", positive=True, error=InvalidTaskError).total_seconds()


def _grace(value: float | timedelta | None) -> float | None:
    return to_seconds(value, "misfire_grace")


def _check_name(_inst: object, _attr: attrs.Attribute[str], value: str) -> None:
    check_name(value)


@attrs.frozen(eq=False)
class TaskDefinition:
    """A task: what runs (``execute``), whether it runs (``prepare``), and when (``schedule``).

    Every option is checked here; a bad one raises InvalidTaskError naming the value.
    """

    name: str = attrs.field(validator=_check_name)
    execute: ExecuteFn
    prepare: PrepareFn | None = None
    #: the parsed static schedule (None: the task runs only through ``create_task``)
    schedule: Schedule | None = None
    #: default data for scheduled runs
    data: Any = None
    timezone: str | None = None
    #: cron and interval: one extra run when the kernel starts
    immediate: bool = False
    retries: int = 0
    backoff: Backoff = attrs.field(factory=Backoff, converter=_backoff)
    timeout: float | None = attrs.field(default=None, converter=_timeout)
    misfire: Misfire = attrs.field(default=Misfire.ONCE, converter=_misfire)
    misfire_grace: float | None = attrs.field(default=None, converter=_grace)
    #: concurrent runs of this task in one kernel (None: no limit)
    max_instances: int | None = None
    #: where the task was defined (``file:line``), for error messages and reload
    source: str | None = None
    #: data keys that ``where`` looks up through the store's index (``task(indexes=[...])``)
    indexes: tuple[str, ...] = ()
    #: the schedule as it was given (``schedule`` is it parsed, or None while pending: no
    #: installed plugin understood it when the task was defined; a kernel parses it with its
    #: own plugins, ``Kernel(plugins=[...])`` included, when it opens)
    schedule_spec: object = None
    #: whether ``max_instances`` was given (else 1 for a recurring schedule, no limit otherwise)
    max_instances_given: bool = True
    #: ``execute`` / ``prepare`` is a plain ``def``, run in a worker thread (:func:`runs_in_thread`)
    execute_in_thread: bool = attrs.field(init=False, default=False)
    prepare_in_thread: bool = attrs.field(init=False, default=False)

    def __attrs_post_init__(self) -> None:
        task = short(self.name)
        if not callable(self.execute):
            raise InvalidTaskError(
                f"task {task}: execute must be callable, got {short(self.execute)}"
            )
        if self.prepare is not None and not callable(self.prepare):
            raise InvalidTaskError(
                f"task {task}: prepare must be callable or None, got {short(self.prepare)}"
            )
        if self.schedule is not None and not isinstance(self.schedule, Schedule):
            raise InvalidTaskError(
                f"task {task}: schedule must be a parsed Schedule or None, got "
                f"{short(self.schedule)} (define_task and task parse schedules)"
            )
        if self.timezone is not None and not isinstance(self.timezone, str):
            raise InvalidTaskError(
                f"task {task}: timezone must be an IANA name (a string) or None, "
                f"got {short(self.timezone)}"
            )
        if not isinstance(self.immediate, bool):
            raise InvalidTaskError(
                f"task {task}: immediate must be True or False, got {short(self.immediate)}"
            )
        if (
            isinstance(self.retries, bool)
            or not isinstance(self.retries, int)
            or not 0 <= self.retries < MAX_ATTEMPTS
        ):
            raise InvalidTaskError(
                f"task {task}: retries must be an int from 0 to {MAX_ATTEMPTS - 1}, "
                f"got {short(self.retries)}"
            )
        if self.max_instances is not None and (
            isinstance(self.max_instances, bool)
            or not isinstance(self.max_instances, int)
            or self.max_instances < 1
        ):
            raise InvalidTaskError(
                f"task {task}: max_instances must be an int >= 1 or None, "
                f"got {short(self.max_instances)}"
            )

        object.__setattr__(self, "execute_in_thread", runs_in_thread(self.execute))
        object.__setattr__(
            self, "prepare_in_thread", self.prepare is not None and runs_in_thread(self.prepare)
        )
        # a list given here is kept as the checked tuple (a str is refused, not split)
        object.__setattr__(self, "indexes", check_index_keys(self.indexes, self.name))

    @property
    def max_attempts(self) -> int:
        return self.retries + 1

    @property
    def pending(self) -> bool:
        """True when the schedule waits for a kernel's plugins to be parsed."""
        return self.schedule is None and self.schedule_spec is not None

    def __call__(self, ctx: TaskContext[Any, Any]) -> Any:
        """Calling a task definition calls its ``execute`` (handy in tests), in this thread."""
        return self.execute(ctx)


class _Default:
    """Marker: ``max_instances`` not given (1 for recurring schedules, else no limit)."""


def define_task(
    *,
    name: str | None = None,
    execute: ExecuteFn,
    schedule: object = None,
    prepare: PrepareFn | None = None,
    data: Any = None,
    timezone: str | None = None,
    immediate: bool = False,
    retries: int = 0,
    backoff: Backoff | Mapping[str, Any] | float | timedelta | None = None,
    timeout: float | timedelta | None = None,
    misfire: Misfire | str = Misfire.ONCE,
    misfire_grace: float | timedelta | None = None,
    max_instances: int | type[_Default] | None = _Default,
    indexes: Iterable[str] = (),
) -> TaskDefinition:
    """Build a validated TaskDefinition: the schedule and the data are checked now, against the
    installed plugins. A schedule none of them understands is kept as given (``pending``) and
    parsed by the kernel, with its own plugins too, when it opens; a schedule a plugin
    recognized and found bad is refused here."""
    task_name = _task_name(name, execute)
    hooks = default_hooks()
    parsed = parse_given(task_name, schedule, timezone, hooks)
    if data is not None:
        check_data(task_name, data, hooks.data_codec())
    limit: int | None
    if max_instances is _Default:
        limit = 1 if parsed is not None and parsed.recurring else None
    else:
        limit = max_instances  # type: ignore[assignment]
    return TaskDefinition(
        name=task_name,
        execute=execute,
        prepare=prepare,
        schedule=parsed,
        data=data,
        timezone=timezone,
        immediate=immediate,
        retries=retries,
        backoff=backoff,
        timeout=timeout,
        misfire=misfire,
        misfire_grace=misfire_grace,
        max_instances=limit,
        source=_source_of(execute),
        indexes=check_index_keys(indexes, task_name),
        schedule_spec=schedule,
        max_instances_given=max_instances is not _Default,
    )


def _task_name(name: str | None, execute: object) -> str:
    if name is None:
        name = getattr(execute, "__name__", None)
        if not isinstance(name, str):
            raise InvalidTaskError(
                f"a task needs a name: give name=..., or an execute function that has a "
                f"__name__ (got execute={short(execute)})"
            )
    return check_name(name)


class TaskRegistry:
    """Task definitions by name. ``task()`` adds to the default registry."""

    def __init__(self, tasks: Iterable[TaskDefinition] = ()) -> None:
        self._tasks: dict[str, TaskDefinition] = {}
        for t in tasks:
            self.add(t)

    def add(self, definition: TaskDefinition, *, replace: bool = False) -> TaskDefinition:
        old = self._tasks.get(definition.name)
        if old is not None and old is not definition and not replace:
            raise DuplicateTaskError(
                f"two tasks are named {definition.name!r}: one defined at {old.source or '?'}, "
                f"the other at {definition.source or '?'}"
            )
        self._tasks[definition.name] = definition
        return definition

    def remove(self, name: str) -> TaskDefinition | None:
        return self._tasks.pop(name, None)

    def get(self, name: str) -> TaskDefinition | None:
        return self._tasks.get(name)

    def require(self, name: str) -> TaskDefinition:
        found = self._tasks.get(name) if isinstance(name, str) else None
        if found is None:
            known = ", ".join(sorted(self._tasks)) or "none"
            if len(known) > 500:
                known = known[:497] + "..."
            raise UnknownTaskError(f"unknown task name {short(name)} (loaded tasks: {known})")
        return found

    def clear(self) -> None:
        self._tasks.clear()

    def names(self) -> list[str]:
        return sorted(self._tasks)

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def __iter__(self) -> Iterator[TaskDefinition]:
        return iter(list(self._tasks.values()))

    def __len__(self) -> int:
        return len(self._tasks)


#: tasks defined with ``tickkit.task`` land here; a Kernel without ``tasks=`` runs these
default_registry = TaskRegistry()

_collector: ContextVar[TaskRegistry | None] = ContextVar("tickkit_task_collector", default=None)


@contextmanager
def collecting(registry: TaskRegistry) -> Iterator[TaskRegistry]:
    """Inside the block, ``task()`` calls without ``registry=`` add to ``registry`` instead of
    the default registry (in this context only). The folder plugin imports each task file in one,
    so it knows which tasks a file defines and the default registry stays untouched."""
    token = _collector.set(registry)
    try:
        yield registry
    finally:
        _collector.reset(token)


@overload
def task(
    *,
    name: str | None = ...,
    schedule: object = ...,
    prepare: PrepareFn | None = ...,
    execute: None = ...,
    data: Any = ...,
    timezone: str | None = ...,
    immediate: bool = ...,
    retries: int = ...,
    backoff: Backoff | Mapping[str, Any] | float | timedelta | None = ...,
    timeout: float | timedelta | None = ...,
    misfire: Misfire | str = ...,
    misfire_grace: float | timedelta | None = ...,
    max_instances: int | type[_Default] | None = ...,
    indexes: Iterable[str] = ...,
    registry: TaskRegistry | None = ...,
) -> Callable[[ExecuteFn], TaskDefinition]: ...


@overload
def task(
    *,
    name: str | None = ...,
    schedule: object = ...,
    prepare: PrepareFn | None = ...,
    execute: ExecuteFn,
    data: Any = ...,
    timezone: str | None = ...,
    immediate: bool = ...,
    retries: int = ...,
    backoff: Backoff | Mapping[str, Any] | float | timedelta | None = ...,
    timeout: float | timedelta | None = ...,
    misfire: Misfire | str = ...,
    misfire_grace: float | timedelta | None = ...,
    max_instances: int | type[_Default] | None = ...,
    indexes: Iterable[str] = ...,
    registry: TaskRegistry | None = ...,
) -> TaskDefinition: ...


def task(
    *,
    name: str | None = None,
    schedule: object = None,
    prepare: PrepareFn | None = None,
    execute: ExecuteFn | None = None,
    data: Any = None,
    timezone: str | None = None,
    immediate: bool = False,
    retries: int = 0,
    backoff: Backoff | Mapping[str, Any] | float | timedelta | None = None,
    timeout: float | timedelta | None = None,
    misfire: Misfire | str = Misfire.ONCE,
    misfire_grace: float | timedelta | None = None,
    max_instances: int | type[_Default] | None = _Default,
    indexes: Iterable[str] = (),
    registry: TaskRegistry | None = None,
) -> TaskDefinition | Callable[[ExecuteFn], TaskDefinition]:
    """Define a static task and register it in the default registry (or ``registry``, or the
    registry of an enclosing :func:`collecting` block).

    Decorator form::

        @task(name="refresh-rates", schedule="0 0 * * *", timezone="Europe/Berlin")
        async def refresh(ctx): ...

    Call form (the shape of ``@commandkit/tasks``)::

        task(name="cleanup", schedule="*/5 * * * *", prepare=is_enabled, execute=cleanup)

    Everything is checked here: a bad schedule, time zone, option or non-JSON data raises at
    definition time, naming the value.
    """

    def build(fn: ExecuteFn) -> TaskDefinition:
        definition = define_task(
            name=name,
            execute=fn,
            schedule=schedule,
            prepare=prepare,
            data=data,
            timezone=timezone,
            immediate=immediate,
            retries=retries,
            backoff=backoff,
            timeout=timeout,
            misfire=misfire,
            misfire_grace=misfire_grace,
            max_instances=max_instances,
            indexes=indexes,
        )
        target = registry if registry is not None else _collector.get()
        (target if target is not None else default_registry).add(definition)
        return definition

    if execute is not None:
        return build(execute)
    return build
