"""Checking task definitions against plugins: at definition time against the installed ones,
and again against a kernel's own (``Kernel(plugins=[...])`` included) when it opens."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import attrs

from .errors import InvalidDataError, InvalidTaskError, TickkitError, describe_error, short

if TYPE_CHECKING:
    from .codec import Codec
    from .manager import Hooks
    from .registry import TaskDefinition
    from .schedule import Schedule


def parse_given(name: str, schedule: object, timezone: str | None, hooks: Hooks) -> Schedule | None:
    """The schedule of task ``name`` parsed by ``hooks``. None for a dict with a ``"type"`` none
    of them understands (pending: see ``Hooks.parse_known``); any other value no plugin
    understands is refused."""
    if timezone is not None:
        if not isinstance(timezone, str):
            raise InvalidTaskError(
                f"task {short(name)}: timezone must be an IANA name (a string) or None, "
                f"got {short(timezone)}"
            )
        # the zone a naive datetime given to create_task takes: checked now, by the plugins
        # that will read it
        hooks.parse_schedule(datetime(2000, 1, 1), timezone)
    if schedule is None:
        return None
    if isinstance(schedule, Mapping) and isinstance(schedule.get("type"), str):
        # a schedule type of its own (a Schedule's spec is a dict with its "type"): it may be
        # a type of a plugin given to a kernel, which parses it when it opens
        return hooks.parse_known(schedule, timezone)
    return hooks.parse_schedule(schedule, timezone)


def check_data(name: str, data: Any, codec: Codec) -> None:
    """Refuse task ``name``'s default data that ``codec`` cannot encode (InvalidDataError)."""
    try:
        codec.encode(data)
    except TickkitError:
        raise
    except Exception as exc:  # a codec plugin's own error
        raise InvalidDataError(
            f"task {short(name)}: data {short(data)} cannot be encoded: {describe_error(exc)}"
        ) from exc


def resolve_definition(definition: TaskDefinition, hooks: Hooks, codec: Codec) -> TaskDefinition:
    """``definition`` checked against a kernel's plugins: its data encoded with the kernel's
    codec, a pending schedule parsed with the kernel's hooks (then a new definition, with the
    default ``max_instances`` of that schedule). Refusals are the typed errors of
    :func:`define_task`, naming the task and the value."""
    try:
        if definition.data is not None:
            check_data(definition.name, definition.data, codec)
        if not definition.pending:
            return definition
        parsed = hooks.parse_schedule(definition.schedule_spec, definition.timezone)
    except TickkitError as exc:
        if str(exc).startswith("task "):
            raise
        try:
            named = type(exc)(f"task {short(definition.name)}: {exc}")
        except Exception:
            raise exc from None
        raise named from exc
    limit = definition.max_instances
    if not definition.max_instances_given:
        limit = 1 if parsed.recurring else None
    return attrs.evolve(definition, schedule=parsed, max_instances=limit)


def runs_in_thread(fn: object) -> bool:
    """Whether the kernel calls ``fn`` in a worker thread: a plain (sync) callable. An async
    function, a ``functools.partial`` of one, or an object whose ``__call__`` is async runs on
    the event loop."""
    if inspect.iscoroutinefunction(fn):
        return False
    if inspect.isfunction(fn) or inspect.ismethod(fn):
        return True
    return not inspect.iscoroutinefunction(type(fn).__call__)
