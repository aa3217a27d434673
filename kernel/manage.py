"""Checks and helpers behind the job-management calls (issue 14): ``list_tasks``'s ``where``,
``limit`` and ``after``, ``count_tasks``, ``update_task``'s "what changes", and the index keys of
``task(..., indexes=[...])``.

Pure logic, no Kernel: the Kernel methods call these and then the driver. Every refusal is a
:class:`~tickkit.TickkitError` subclass whose message names the bad value; nothing is stored.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from .codec import MAX_INT, MIN_INT, find_surrogate
from .errors import (
    InvalidArgumentError,
    InvalidJobIdError,
    InvalidTaskError,
    JobNotFoundError,
    TickkitError,
    short,
)
from .models import (
    MAX_DURATION,
    UNSET,
    Cursor,
    Job,
    JobState,
    Outcome,
    RunRecord,
    _Unset,
    check_time,
)

if TYPE_CHECKING:
    from .driver import Driver

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
    "count_jobs",
    "cursor_for",
    "get_runs",
    "list_jobs",
    "update_job",
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


# --- the Kernel methods' bodies (the Kernel checks it runs, then delegates here) ------------


def _check_name_filter(name: object) -> str | None:
    if name is None:
        return None
    if not isinstance(name, str) or find_surrogate(name) >= 0:
        raise InvalidTaskError(
            f"invalid task name {short(name)}: a string without lone surrogates is needed"
        )
    return name


def _check_job_id(job_id: object) -> str:
    if not isinstance(job_id, str) or find_surrogate(job_id) >= 0:
        raise InvalidJobIdError(
            f"invalid job id {short(job_id)}: a string without lone surrogates is needed"
        )
    return job_id


async def list_jobs(
    driver: Driver,
    name: object = None,
    *,
    where: object = None,
    state: object = None,
    static: object = None,
    limit: object = None,
    after: object = None,
) -> list[Job]:
    """``Kernel.list_tasks``: every argument checked (naming a bad one, nothing read), the
    user's ``after`` turned into a Cursor, then ``driver.list_jobs``."""
    name_ = _check_name_filter(name)
    where_ = check_where(where)
    state_ = check_state(state)
    static_ = check_static(static)
    limit_ = check_limit(limit)
    cursor = await cursor_for(driver, check_after(after))
    return await driver.list_jobs(
        name=name_,
        state=state_,
        static=static_,
        where=where_ or None,
        limit=limit_,
        after=cursor,
    )


async def count_jobs(
    driver: Driver,
    name: object = None,
    *,
    where: object = None,
    state: object = None,
    static: object = None,
) -> int:
    """``Kernel.count_tasks``: the number of jobs matching every filter given."""
    counts = await driver.count_jobs(
        name=_check_name_filter(name),
        state=check_state(state),
        static=check_static(static),
        where=check_where(where) or None,
    )
    return sum(counts.values())


async def count_by_state(
    driver: Driver, name: object = None, *, where: object = None
) -> dict[JobState, int]:
    """``Kernel.count_by_state``: every state with its number of matching jobs (0 included)."""
    counts = await driver.count_jobs(
        name=_check_name_filter(name), where=check_where(where) or None
    )
    return {state: counts.get(state, 0) for state in JobState}


async def count_by_task(driver: Driver, *, state: object = None) -> dict[str, int]:
    """``Kernel.count_by_task``: task name to its number of jobs (in ``state`` when given),
    in name order; names with no job are left out."""
    counts = await driver.count_by_name(state=check_state(state))
    return {name: counts[name] for name in sorted(counts) if counts[name]}


#: the outcomes of runs that ran: what ``Kernel.count_runs`` reports
RAN_OUTCOMES = (Outcome.SUCCEEDED, Outcome.FAILED, Outcome.TIMED_OUT, Outcome.SKIPPED)


async def count_runs(driver: Driver, since: object) -> dict[Outcome, int] | None:
    """``Kernel.count_runs``: runs completed since ``since`` per outcome (0 included), or None
    when the driver keeps no run counters."""
    if not isinstance(since, datetime):
        raise InvalidArgumentError(f"since must be an aware datetime, got {short(since)}")
    checked = check_time(since, "since", InvalidArgumentError)
    counts = await driver.count_runs(checked)
    if counts is None:
        return None
    # (a counter edited by hand below zero counts nothing)
    return {outcome: max(0, int(counts.get(outcome, 0))) for outcome in RAN_OUTCOMES}


async def get_runs(driver: Driver, job_id: object, *, limit: object = 20) -> list[RunRecord]:
    """``Kernel.get_runs``: the job's kept runs, newest first (``[]`` for an id with none)."""
    checked = check_limit(limit)
    if checked is None:
        raise InvalidArgumentError("limit must be an int from 0, got None")
    return await driver.get_runs(_check_job_id(job_id), limit=checked)


async def update_job(
    driver: Driver,
    job_id: object,
    *,
    data: Any | _Unset = UNSET,
    schedule: Any | _Unset = UNSET,
    check_data: Callable[[Any], Any],
    plan_schedule: Callable[[Job, Any], tuple[dict[str, Any] | None, datetime]],
) -> Job:
    """``Kernel.update_task``: check everything first, then one atomic ``driver.update_job``.

    ``check_data(data)`` returns the data as stored (the kernel: its codec's round trip,
    raising InvalidDataError naming the value). ``plan_schedule(job, schedule)`` returns the
    stored spec (None for a one-off) and the first run, as ``create_task`` computes them for
    that job's task (raising a TickkitError naming the schedule). A missing job raises
    :class:`~tickkit.JobNotFoundError` naming it, before and after the checks (it may be
    removed meanwhile).
    """
    job_id_ = _check_job_id(job_id)
    check_update_given(data, schedule)
    job = await driver.get_job(job_id_)
    if job is None:
        raise JobNotFoundError(f"no job with id {short(job_id_)}")
    new_data: Any | _Unset = UNSET if isinstance(data, _Unset) else check_data(data)
    if isinstance(schedule, _Unset):
        updated = await driver.update_job(job_id_, data=new_data)
    else:
        spec, first = plan_schedule(job, schedule)
        updated = await driver.update_job(job_id_, data=new_data, schedule=spec, next_run_at=first)
    if updated is None:
        raise JobNotFoundError(f"no job with id {short(job_id_)} (it was removed meanwhile)")
    return updated
