"""Checks and helpers behind the job-management calls (issue 14): ``list_tasks``'s ``where``,
``limit`` and ``after``, ``count_tasks``, ``update_task``'s "what changes", and the index keys of
``task(..., indexes=[...])``.

Pure logic, no Kernel: the Kernel methods call these and then the driver. Every refusal is a
:class:`~tickkit.TickkitError` subclass whose message names the bad value; nothing is stored.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

from .codec import MAX_INT, MIN_INT, find_surrogate
from .driver import Driver
from .errors import InvalidArgumentError, InvalidTaskError, JobNotFoundError, TickkitError, short
from .models import MAX_DURATION, UNSET, Cursor, Job, JobState, _Unset

__all__ = [
    "DEFAULT_HISTORY_LIMIT",
    "DEFAULT_HISTORY_MAX_AGE",
    "MAX_KEY_LENGTH",
    "MAX_LIMIT",
    "Scalar",
    "check_after",
    "check_history_options",
    "check_index_keys",
    "check_limit",
    "check_state",
    "check_static",
    "check_update_given",
    "check_where",
    "cursor_for",
]

#: a ``where`` value: a JSON scalar
Scalar = str | int | float | bool | None
#: the longest data key a ``where`` or an index names
MAX_KEY_LENGTH = 200
#: the largest ``limit``: a store's integer (SQLite's, Redis's) is signed 64-bit
MAX_LIMIT = 2**63 - 1
#: index keys: no control characters, no '"' or '\\' (a store builds a JSON path or a key
#: name from them), no lone surrogates
_INDEX_KEY = re.compile('[^"\\\\\x00-\x1f\x7f-\x9f\ud800-\udfff]{1,200}')


def _check_key(key: object, what: str, error: type[TickkitError]) -> str:
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_LENGTH:
        raise error(f"{what} key {short(key)} must be a string of 1 to {MAX_KEY_LENGTH} characters")
    at = find_surrogate(key)
    if at >= 0:
        raise error(f"{what} key {short(key)} holds a lone surrogate at index {at}")
    return key


def _check_scalar(key: str, value: object) -> Scalar:
    if value is None or isinstance(value, (bool, str)):
        if isinstance(value, str):
            at = find_surrogate(value)
            if at >= 0:
                raise InvalidArgumentError(
                    f"where[{short(key, 60)}] value {short(value)} holds a lone surrogate at "
                    f"index {at}"
                )
        return value
    if isinstance(value, int):
        if not MIN_INT <= value <= MAX_INT:
            raise InvalidArgumentError(
                f"where[{short(key, 60)}] value {short(value)} is outside the signed 64-bit range"
            )
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidArgumentError(
                f"where[{short(key, 60)}] value {short(value)} is not a finite number"
            )
        return value
    raise InvalidArgumentError(
        f"where[{short(key, 60)}] value {short(value)} is not a JSON scalar (a string, number, "
        "bool or None): where compares top-level data keys with scalars only"
    )


def check_where(value: object) -> dict[str, Scalar]:
    """A ``where`` filter as a dict of data keys to JSON scalars (``None``: no filter, ``{}``).

    Keys: strings of 1 to 200 characters without lone surrogates. Values: JSON scalars under
    the rules of task data (integers in the signed 64-bit range, finite floats, strings without
    lone surrogates). Anything else raises :class:`~tickkit.InvalidArgumentError` naming it.
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidArgumentError(
            f"where must be a mapping of data keys to JSON scalars, got {short(value)}"
        )
    checked: dict[str, Scalar] = {}
    for key, item in value.items():
        name = _check_key(key, "where", InvalidArgumentError)
        checked[name] = _check_scalar(name, item)
    return checked


def check_index_keys(value: object, task: str = "?") -> tuple[str, ...]:
    """The ``indexes`` of ``task(...)`` as a tuple of distinct keys (order kept).

    Each key: 1 to 200 characters, no control characters, no ``"`` or ``\\``, no lone
    surrogates (stores build a JSON path or a key name from it). Anything else raises
    :class:`~tickkit.InvalidTaskError` naming the task and the key.
    """
    if value is None:
        return ()
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise InvalidTaskError(
            f"task {short(task)}: indexes must be a list of data keys, got {short(value)}"
        )
    keys: list[str] = []
    for key in value:
        if not isinstance(key, str) or not _INDEX_KEY.fullmatch(key):
            raise InvalidTaskError(
                f"task {short(task)}: invalid index key {short(key)}: use 1 to "
                f"{MAX_KEY_LENGTH} characters, no control characters, '\"', '\\' or lone "
                "surrogates"
            )
        if key not in keys:
            keys.append(key)
    return tuple(keys)


def check_limit(value: object) -> int | None:
    """``limit``: None or an int from 0 to ``MAX_LIMIT``."""
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LIMIT
    ):
        raise InvalidArgumentError(
            f"limit must be an int from 0 to {MAX_LIMIT} or None, got {short(value)}"
        )
    return value


def check_state(value: object) -> JobState | None:
    """``state``: None, a JobState or its value."""
    if value is None:
        return None
    if not isinstance(value, str) or value not in JobState._value2member_map_:
        raise InvalidArgumentError(
            f"state must be one of {', '.join(JobState._value2member_map_)}, got {short(value)}"
        )
    return JobState(value)


def check_static(value: object) -> bool | None:
    """``static``: None, True or False."""
    if value is not None and not isinstance(value, bool):
        raise InvalidArgumentError(f"static must be True, False or None, got {short(value)}")
    return value


def check_after(value: object) -> str | Job | None:
    """``after``: None, the id of the last job of the previous page, or that Job itself."""
    if value is None:
        return None
    if isinstance(value, Job):
        if not isinstance(value.id, str):
            raise InvalidArgumentError(
                f"after must be a stored job (with an id), got a job with id {short(value.id)}"
            )
        return value
    if not isinstance(value, str) or not value or find_surrogate(value) >= 0:
        raise InvalidArgumentError(
            f"after must be a job id (a non-empty string without lone surrogates) or a Job, "
            f"got {short(value)}"
        )
    return value


async def cursor_for(driver: Driver, after: str | Job | None) -> Cursor | None:
    """The list position just past ``after`` (checked by :func:`check_after`).

    A Job gives its own (``next_run_at``, ``id``), which works even once the job is gone. An id
    is looked up through the driver; an id no job has any more raises
    :class:`~tickkit.JobNotFoundError` naming it.
    """
    if after is None:
        return None
    if isinstance(after, Job):
        assert after.id is not None
        return Cursor(after.next_run_at, after.id)
    job = await driver.get_job(after)
    if job is None:
        raise JobNotFoundError(
            f"after={short(after)}: no job has this id (it may have been removed since the page "
            "was read); pass the last Job object of the previous page as after= to page past "
            "a removed job"
        )
    return Cursor(job.next_run_at, after)


def check_update_given(data: Any | _Unset, schedule: Any | _Unset) -> None:
    """``update_task`` needs at least one of ``data`` and ``schedule``."""
    if data is UNSET and schedule is UNSET:
        raise InvalidArgumentError(
            "update_task needs data=..., schedule=... or both (nothing to change was given)"
        )


#: run history kept per job unless configured (driver option ``history_limit``)
DEFAULT_HISTORY_LIMIT = 100
#: how long run history is kept unless configured (driver option ``history_max_age``): 7 days
DEFAULT_HISTORY_MAX_AGE = 604_800.0


def check_history_options(limit: object, max_age: object) -> tuple[int, float | None]:
    """The driver options ``history_limit`` (runs kept per job: an int from 0; 0 keeps none)
    and ``history_max_age`` (seconds or a timedelta, more than 0 and at most
    ``MAX_DURATION``; None: no age limit), checked; InvalidArgumentError names a bad one."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= MAX_LIMIT:
        raise InvalidArgumentError(
            f"history_limit must be an int from 0 (keep no run history), got {short(limit)}"
        )
    if max_age is None:
        return limit, None
    if isinstance(max_age, timedelta):
        max_age = max_age.total_seconds()
    top = MAX_DURATION.total_seconds()
    if isinstance(max_age, bool) or not isinstance(max_age, (int, float)) or not 0 < max_age <= top:
        raise InvalidArgumentError(
            f"history_max_age must be a number of seconds (or a timedelta) above 0 and at most "
            f"{top:g}, or None, got {short(max_age)}"
        )
    return limit, float(max_age)
