"""The schedule contract. Schedule types themselves are plugins (``tickkit.plugins.schedules``
ships cron, date, interval and delay); the kernel knows only this interface and the
``tickkit_parse_schedule`` hook that turns user input or a stored spec into one.
"""

from __future__ import annotations

import abc
import random
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from .errors import (
    InvalidScheduleError,
    PrepareResultError,
    TickkitError,
    UnknownTimezoneError,
    describe_error,
    short,
)
from .models import LATEST_TIME, RESOLUTION, Job, Misfire, Outcome, Plan, check_time, round_ms

if TYPE_CHECKING:
    from .registry import TaskDefinition

#: how many missed occurrences the ONCE policy walks through to find the latest one
_COALESCE_WALK_LIMIT = 10_000
#: lateness tolerated by the SKIP policy when the task sets no misfire_grace (seconds)
DEFAULT_SKIP_GRACE = 1.0


class Schedule(abc.ABC):
    """When a job runs. Subclasses are immutable and compare equal by value."""

    #: the ``type`` written in the spec (``"cron"``, ``"date"``, ``"interval"``, ...)
    kind: str = ""

    @property
    def recurring(self) -> bool:
        """True when the schedule fires more than once."""
        return True

    def keyed(self, key: str) -> Schedule:
        """Fix whatever depends on the job's identity (a cron ``H``): ``key`` is the job id, or
        the task name when the job has no id yet. Called once when a job is created."""
        return self

    def anchored(self, now: datetime) -> Schedule:
        """Fix whatever depends on the creation time (an interval's start, a delay's date).

        Called once when a job is created; the result is what is stored.
        """
        return self

    def first_fire(self, now: datetime) -> datetime | None:
        """The first run time of a job created at ``now`` (after :meth:`anchored`)."""
        return self.next_fire(now)

    @abc.abstractmethod
    def next_fire(self, after: datetime) -> datetime | None:
        """The first fire time strictly after ``after`` (aware UTC), or None when none is left."""

    @abc.abstractmethod
    def to_spec(self) -> dict[str, Any]:
        """A JSON-able dict that ``tickkit_parse_schedule`` turns back into an equal schedule."""

    def describe(self) -> str:
        """A short human description (used by the CLI and error messages)."""
        return repr(self.to_spec())


def next_run(schedule: Schedule, after: datetime) -> datetime | None:
    """``schedule.next_fire(after)`` as the kernel stores it: whole milliseconds (still after
    ``after``), and None past ``LATEST_TIME``, where every schedule ends."""
    at = schedule.next_fire(after)
    if at is None:
        return None
    if at > LATEST_TIME:
        return None
    rounded = round_ms(at)
    if rounded <= after:
        rounded = round_ms(after) + RESOLUTION
    return rounded if rounded <= LATEST_TIME else None


def plan_occurrence(
    schedule: Schedule | None,
    scheduled_at: datetime,
    now: datetime,
    *,
    misfire: Misfire,
    grace: float | None,
    retry: bool = False,
) -> Plan:
    """Decide what happens to an occurrence claimed at ``now`` (docs/time.md, "Missed runs").

    - A retry always runs (it is not a missed run).
    - ``skip``: an occurrence later than ``grace`` (default 1 s) is not run; the next
      occurrence is the first one after ``now``.
    - ``once``: every overdue occurrence of a recurring job coalesces into one run that stands for
      the latest of them; with ``grace`` set, that run is dropped when it is later than ``grace``.
    - ``all``: each overdue occurrence runs in turn, oldest first; those later than ``grace``
      (when set) are dropped one by one.
    """
    if grace is None and misfire is Misfire.SKIP:
        grace = DEFAULT_SKIP_GRACE
    recurring = schedule is not None and schedule.recurring

    def late(at: datetime) -> bool:
        return grace is not None and (now - at).total_seconds() > grace

    if retry:
        nxt = next_run(schedule, scheduled_at) if recurring and schedule else None
        return Plan(True, scheduled_at, 0, nxt)
    if not recurring or schedule is None:
        if late(scheduled_at):
            return Plan(False, scheduled_at, 1, None)
        return Plan(True, scheduled_at, 0, None)

    if misfire is Misfire.ALL:
        nxt = next_run(schedule, scheduled_at)
        if late(scheduled_at):
            return Plan(False, scheduled_at, 1, nxt)
        return Plan(True, scheduled_at, 0, nxt)

    if misfire is Misfire.SKIP:
        if late(scheduled_at):
            return Plan(False, scheduled_at, 1, next_run(schedule, now))
        return _skip_between(schedule, scheduled_at, now)

    latest, missed, nxt = _latest_overdue(schedule, scheduled_at, now)
    if late(latest):
        return Plan(False, latest, missed + 1, nxt)
    return Plan(True, latest, missed, nxt)


def _skip_between(schedule: Schedule, scheduled_at: datetime, now: datetime) -> Plan:
    """SKIP, an occurrence in time: it runs; those that fell between it and now are dropped."""
    nxt = next_run(schedule, scheduled_at)
    skipped = 0
    if nxt is not None and nxt <= now:
        after_now = next_run(schedule, now)
        skipped = _count_between(schedule, nxt, now)
        nxt = after_now
    return Plan(True, scheduled_at, skipped, nxt)


def _latest_overdue(
    schedule: Schedule, scheduled_at: datetime, now: datetime
) -> tuple[datetime, int, datetime | None]:
    """ONCE: walk to the latest overdue occurrence; return it, how many overdue ones came
    before it, and the next occurrence after it."""
    latest = scheduled_at
    missed = 0
    nxt = next_run(schedule, latest)
    walked = 0
    while nxt is not None and nxt <= now and walked < _COALESCE_WALK_LIMIT:
        latest = nxt
        missed += 1
        walked += 1
        nxt = next_run(schedule, latest)
    if nxt is not None and nxt <= now:
        # too many to walk: jump past now; the latest overdue one is not known exactly
        nxt = next_run(schedule, now)
        latest = now
    return latest, missed, nxt


def plan_retry(
    job: Job,
    definition: TaskDefinition,
    *,
    attempt: int,
    outcome: Outcome,
    now: datetime,
    rng: random.Random | None = None,
    error: BaseException | None = None,
) -> datetime | None:
    """When a finished run is tried again: a time, or None (no retry).

    Only a FAILED or TIMED_OUT run is retried, and only while ``attempt`` (1-based) is below
    the job's ``max_attempts`` (else the task's); a ``PrepareResultError`` (a bug in the task,
    the same on every attempt) is never retried. The delay is the job's backoff (else the
    task's) for ``attempt``, counted from ``now`` (when the run ended); ``rng`` draws the
    jitter (default: the ``random`` module). A pure function: no clock, no store.
    """
    if outcome not in (Outcome.FAILED, Outcome.TIMED_OUT):
        return None
    if isinstance(error, PrepareResultError):
        return None
    if attempt >= (job.max_attempts or definition.max_attempts):
        return None
    backoff = job.backoff or definition.backoff
    return now + timedelta(seconds=backoff.delay_for(attempt, rng))


def _count_between(schedule: Schedule, first: datetime, now: datetime, limit: int = 10_000) -> int:
    count = 0
    at: datetime | None = first
    while at is not None and at <= now and count < limit:
        count += 1
        at = next_run(schedule, at)
    return count


def require_schedule(value: object, result: Schedule | None) -> Schedule:
    """Raise the standard error when no plugin understood ``value``."""
    if result is None:
        raise InvalidScheduleError(
            f"no schedule plugin understands {short(value)}: give a cron string, a datetime, "
            "a timedelta, or a dict with type 'cron', 'date' or 'interval'"
        )
    if not isinstance(result, Schedule):
        raise InvalidScheduleError(
            f"a schedule plugin returned {short(result)} for {short(value)}, not a Schedule"
        )
    return result


def parse_with(
    parse: Callable[[object, str | None], Schedule | None],
    value: object,
    timezone: str | None = None,
) -> Schedule:
    """Run the schedule hooks (``parse``) on user input or a stored spec: the one boundary
    between the kernel and schedule plugins.

    Whatever a plugin raises that is not a TickkitError (a ValueError from a parser, an
    OverflowError from date arithmetic, ...) becomes an InvalidScheduleError naming the value,
    so no other exception reaches the caller. A time zone that is not a string is refused here,
    before any plugin sees it.
    """
    if timezone is not None and not isinstance(timezone, str):
        raise UnknownTimezoneError(
            f"a time zone must be an IANA name (a string such as 'Europe/Berlin'), "
            f"got {short(timezone)}"
        )
    try:
        return require_schedule(value, parse(value, timezone))
    except TickkitError:
        raise
    except Exception as exc:
        zone = f" in time zone {short(timezone)}" if timezone is not None else ""
        raise InvalidScheduleError(
            f"invalid schedule {short(value)}{zone}: {describe_error(exc)}"
        ) from exc


def first_run(
    schedule: Schedule, now: datetime, *, required: bool = False
) -> tuple[Schedule, datetime | None]:
    """Anchor ``schedule`` at ``now`` and compute its first run: the stored schedule and the
    first run time as UTC whole milliseconds (None: it never runs; with ``required``, that is
    refused too).

    A first run outside ``EARLIEST_TIME``..``LATEST_TIME`` (tickkit.models) is refused, and so
    is any non-tickkit error of the plugin's code (as in :func:`parse_with`).
    """
    try:
        anchored = schedule.anchored(now)
        first = anchored.first_fire(now)
    except TickkitError:
        raise
    except Exception as exc:
        raise InvalidScheduleError(
            f"schedule {describe(schedule)} has no first run after {now.isoformat()}: "
            f"{describe_error(exc)}"
        ) from exc
    if first is None:
        if required:
            raise InvalidScheduleError(
                f"schedule {describe(anchored)} has no run time between {now.isoformat()} and "
                f"the latest time a job may run ({LATEST_TIME.isoformat()})"
            )
        return anchored, None
    return anchored, check_time(first, f"the first run of schedule {describe(anchored)}")


def describe(schedule: Schedule) -> str:
    """``schedule.describe()`` for a message: short, and never raising."""
    try:
        text = schedule.describe()
    except Exception:
        return short(schedule)
    return text if len(text) <= 200 else text[:197] + "..."
