"""The value objects the kernel, the drivers and the plugins exchange (attrs classes).

Times are aware UTC datetimes everywhere. Durations given by users are seconds (float) or
:class:`datetime.timedelta`; they are converted to seconds (float) here.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs

from .errors import InvalidScheduleError, InvalidTaskError, TickkitError, short

UTC = timezone.utc


class JobState(str, enum.Enum):
    """Where a job stands."""

    #: waiting for its next run time (or for a retry)
    SCHEDULED = "scheduled"
    #: claimed by a worker and running
    RUNNING = "running"
    #: paused: not claimed until resumed
    PAUSED = "paused"
    #: a one-off job that finished (kept only when the driver's retention says so)
    COMPLETED = "completed"
    #: a job whose last attempt failed with no retry left (the dead-letter view)
    FAILED = "failed"
    #: a one-off job whose run time passed beyond its misfire grace: it was not run
    MISSED = "missed"

    def __str__(self) -> str:
        return self.value


class Outcome(str, enum.Enum):
    """How one run ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    #: ``prepare`` returned False
    SKIPPED = "skipped"
    #: the occurrence was missed (misfire policy) and not run
    MISSED = "missed"
    #: the run was cancelled by shutdown and released for another worker
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


class Misfire(str, enum.Enum):
    """What happens to runs whose time passed while they could not run."""

    #: drop missed runs; run at the next occurrence in the future
    SKIP = "skip"
    #: coalesce every missed run of a recurring job into one catch-up run (the default)
    ONCE = "once"
    #: run every missed occurrence, oldest first
    ALL = "all"

    def __str__(self) -> str:
        return self.value


# --- the limits every driver stores (docs/time.md, "Dates and durations") -----------------

#: the earliest time a job may run: 1e11 ms after the Unix epoch, 1973-03-03T09:46:40Z. Redis
#: cannot store a negative score (a date before 1970 never ran there, and ran at once on
#: SQLite), and a date given as a number below 1e11 ms is almost surely Unix seconds read as
#: milliseconds; one bound for both keeps every stored date spec readable back.
EARLIEST_TIME = datetime(1973, 3, 3, 9, 46, 40, tzinfo=UTC)
#: the latest time a job may run: 4999-12-31T23:59:59.999Z, epoch milliseconds 95,617,583,999,999.
#: Every driver stores it exactly: below 1e14 ms, Lua's ``tostring`` (``%.14g``) in the Redis
#: scripts still writes the integer (it switches to an exponent, and rounds, from year 5138);
#: BullMQ's delayed score ``ms * 4096 + seq`` still gives back the exact millisecond (``ms`` is
#: below 2**53 and 4096 a power of two); a JS Date goes to year 275760; and Python's datetime
#: can show it in any UTC offset.
LATEST_TIME = datetime(4999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)
#: the longest duration anywhere (interval, delay, timeout, backoff, misfire grace): 1000 years
#: of 365.25 days (a time plus a duration never leaves Python's datetime range)
MAX_DURATION = timedelta(days=365_250)
#: durations and times are whole milliseconds (what every driver stores)
RESOLUTION = timedelta(milliseconds=1)
#: the most attempts a job may have (retries + 1): a signed 32-bit integer in every store
MAX_ATTEMPTS = 2**31 - 1

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: EARLIEST_TIME in epoch milliseconds: a smaller number is not read as a date
MIN_EPOCH_MS = 100_000_000_000
_MS_US = 1000


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def round_ms(dt: datetime) -> datetime:
    """``dt`` (aware) in UTC, rounded to the nearest millisecond (half up)."""
    return from_millis(to_millis(dt))


_SAME: Any = object()


def check_time(
    value: datetime,
    what: str,
    error: type[TickkitError] = InvalidScheduleError,
    *,
    shown: object = _SAME,
) -> datetime:
    """An aware datetime as UTC rounded to whole milliseconds, refused outside
    ``EARLIEST_TIME``..``LATEST_TIME`` (naive datetimes are refused too). Errors name ``shown``
    (default: ``value``), the value as the caller gave it."""
    if shown is _SAME:
        shown = value
    if not isinstance(value, datetime):
        raise error(f"{what} must be a datetime, got {short(shown)}")
    try:
        offset = value.utcoffset()
    except Exception as exc:  # a tzinfo that fails
        raise error(f"{what} {short(shown)} has a time zone that fails: {short(exc)}") from None
    if offset is None:
        raise error(f"{what} {short(shown)} is naive: give an aware datetime (with a tzinfo)")
    try:
        at = round_ms(value.astimezone(UTC))
    except (OverflowError, ValueError):
        at = None
    if at is None or not EARLIEST_TIME <= at <= LATEST_TIME:
        raise error(
            f"{what} {short(shown)} is out of range: times run from "
            f"{EARLIEST_TIME.isoformat()} to {LATEST_TIME.isoformat()}"
        )
    return at


def check_duration(
    value: object,
    what: str,
    *,
    positive: bool = False,
    error: type[TickkitError] = InvalidScheduleError,
    shown: object = _SAME,
) -> timedelta:
    """A duration (seconds as int/float, or a timedelta) as a timedelta of whole milliseconds.

    Refused: bools, other types, NaN, infinities, negatives, more than ``MAX_DURATION``, and
    with ``positive`` a duration that rounds to 0 ms. Errors name ``shown`` (default:
    ``value``)."""
    if shown is _SAME:
        shown = value
    if isinstance(value, timedelta):
        delta = value
    elif _number(value):
        assert isinstance(value, (int, float))
        if (isinstance(value, float) and not math.isfinite(value)) or abs(
            value
        ) > MAX_DURATION.total_seconds() + 1:
            raise error(f"{what} {short(shown)} is out of range: {_duration_rule(positive)}")
        try:
            delta = timedelta(seconds=value)
        except (OverflowError, ValueError):
            raise error(
                f"{what} {short(shown)} is out of range: {_duration_rule(positive)}"
            ) from None
    else:
        raise error(f"{what} must be a number of seconds or a timedelta, got {short(shown)}")
    if not -MAX_DURATION <= delta <= MAX_DURATION:
        raise error(f"{what} {short(shown)} is out of range: {_duration_rule(positive)}")
    delta = _round_delta(delta)
    if delta < timedelta(0) or delta > MAX_DURATION or (positive and delta <= timedelta(0)):
        raise error(f"{what} {short(shown)} is out of range: {_duration_rule(positive)}")
    return delta


def _duration_rule(positive: bool) -> str:
    low = "at least 1 millisecond" if positive else "not negative"
    return f"it must be {low} and at most {MAX_DURATION.days} days (1000 years)"


def _round_delta(delta: timedelta) -> timedelta:
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    ms, rest = divmod(micros, _MS_US)
    if rest * 2 >= _MS_US:
        ms += 1
    return timedelta(milliseconds=ms)


def to_seconds(value: float | int | timedelta | None, what: str = "duration") -> float | None:
    """A duration (seconds or timedelta) as float seconds of whole milliseconds; None stays
    None. Refuses (InvalidTaskError, naming the value) what ``check_duration`` refuses."""
    if value is None:
        return None
    return check_duration(value, what, error=InvalidTaskError).total_seconds()


def _backoff_seconds(value: float | int | timedelta | None) -> float:
    seconds = to_seconds(value, "backoff delay")
    return 0.0 if seconds is None else seconds


def _backoff_max(value: float | int | timedelta | None) -> float | None:
    return to_seconds(value, "backoff max_delay")


@attrs.frozen
class Backoff:
    """How long to wait before a retry.

    ``fixed``: ``delay`` every time. ``exponential``: ``delay * 2 ** (attempt - 1)`` for the retry
    after attempt ``attempt`` (1, 2, 4, ... times ``delay``), capped at ``max_delay``. ``jitter``
    (0 to 1) takes up to that fraction off each delay at random, so retries of many jobs spread.
    Delays are whole milliseconds (rounded), at most ``MAX_DURATION``.
    """

    kind: str = attrs.field(default="fixed")
    delay: float = attrs.field(default=0.0, converter=_backoff_seconds)
    max_delay: float | None = attrs.field(default=None, converter=_backoff_max)
    jitter: float = attrs.field(default=0.0)

    @kind.validator
    def _check_kind(self, _attribute: attrs.Attribute[str], value: str) -> None:
        if not isinstance(value, str) or value not in ("fixed", "exponential"):
            raise InvalidTaskError(
                f"backoff type must be 'fixed' or 'exponential', got {short(value)}"
            )

    @jitter.validator
    def _check_jitter(self, _attribute: attrs.Attribute[float], value: float) -> None:
        if not _number(value) or not 0 <= value <= 1:
            raise InvalidTaskError(f"backoff jitter must be between 0 and 1, got {short(value)}")

    @classmethod
    def fixed(cls, delay: float | timedelta) -> Backoff:
        return cls("fixed", delay)

    @classmethod
    def exponential(
        cls,
        delay: float | timedelta,
        *,
        max_delay: float | timedelta | None = None,
        jitter: float = 0.0,
    ) -> Backoff:
        return cls("exponential", delay, max_delay, jitter)

    @classmethod
    def coerce(cls, value: Backoff | Mapping[str, Any] | float | timedelta | None) -> Backoff:
        """Accept a Backoff, seconds, a timedelta, or a dict with ``type``, ``delay``,
        ``max_delay`` and ``jitter``."""
        if value is None:
            return cls()
        if isinstance(value, Backoff):
            return value
        if isinstance(value, Mapping):
            unknown = [key for key in value if key not in _BACKOFF_KEYS]
            if unknown:
                raise InvalidTaskError(
                    f"unknown backoff option(s) {short(unknown)} in {short(value)} "
                    f"(known: {', '.join(_BACKOFF_KEYS)})"
                )
            if "type" in value and "kind" in value:
                raise InvalidTaskError(f"backoff {short(value)} gives both 'type' and 'kind'")
            jitter = value.get("jitter", 0.0)
            return cls(
                value.get("type", value.get("kind", "fixed")),
                value.get("delay", 0.0),
                value.get("max_delay"),
                0.0 if jitter is None else jitter,
            )
        return cls.fixed(value)

    def delay_for(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before the retry that follows failed attempt ``attempt`` (1-based);
        never more than ``MAX_DURATION``."""
        if self.kind == "fixed":
            delay = self.delay
        else:
            # 2 ** 64 times any delay is past MAX_DURATION already: no float overflow
            delay = self.delay * (2 ** min(max(attempt - 1, 0), 64))
        if self.max_delay is not None:
            delay = min(delay, self.max_delay)
        delay = min(delay, MAX_DURATION.total_seconds())
        if self.jitter:
            delay -= delay * self.jitter * (rng or random).random()
        return delay

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "delay": self.delay,
            "max_delay": self.max_delay,
            "jitter": self.jitter,
        }


_BACKOFF_KEYS = ("type", "kind", "delay", "max_delay", "jitter")


@attrs.define(slots=True, eq=True)
class Job:
    """One stored job: a dynamic task, or the stored schedule of a static task.

    A one-off job has ``schedule=None`` after its first run time is known, or a ``date``
    schedule; a recurring job keeps its schedule spec (a JSON dict, parsed back through the
    schedule hooks) and ``next_run_at`` moves forward after every occurrence.
    """

    #: the job id; ``None`` only before a driver assigns one in ``add_job``
    id: str | None
    #: the task name that runs this job
    name: str
    #: the task data (a JSON value), decoded
    data: Any = None
    #: the schedule as a JSON-able spec, or None for a one-off run at ``next_run_at``
    schedule: dict[str, Any] | None = None
    #: when the job may next be claimed (its next occurrence, or a retry time)
    next_run_at: datetime | None = None
    #: the nominal time of the current occurrence (differs from next_run_at during retries)
    scheduled_at: datetime | None = None
    state: JobState = JobState.SCHEDULED
    #: True for the stored schedule of a static task (id == task name)
    static: bool = False
    #: attempts already made at the current occurrence
    attempt: int = 0
    #: total attempts allowed per occurrence (None: the task's ``retries + 1``)
    max_attempts: int | None = None
    #: backoff between attempts (None: the task's)
    backoff: Backoff | None = None
    created_at: datetime | None = None
    last_run_at: datetime | None = None
    last_outcome: Outcome | None = None
    last_error: str | None = None
    #: finished runs of this job (all outcomes but cancelled)
    runs: int = 0
    #: small string metadata carried with the job (trace context, origin...)
    meta: dict[str, str] = attrs.field(factory=dict)
    #: set by a driver that could not read part of the stored record (a hand-edited row, a hash
    #: written by another tool or an older version): what it could not read, naming the field.
    #: The kernel never runs such a job: a claim of it is completed once as FAILED with this
    #: reason and no retry, and the job stays listable (fields it could not read are None).
    defect: str | None = None

    @property
    def recurring(self) -> bool:
        return self.schedule is not None and self.schedule.get("type") not in (None, "date")


@attrs.frozen
class Plan:
    """What the kernel decided for one claimed occurrence (see docs/time.md)."""

    #: False when the occurrence was missed (misfire policy): it is recorded, not run
    run: bool
    #: the nominal time this run stands for (a coalesced catch-up stands for the latest missed)
    scheduled_at: datetime
    #: how many occurrences were missed and will never run
    missed: int
    #: the next occurrence after this one (None: the job ends with this occurrence)
    next_run_at: datetime | None


@attrs.define(slots=True, eq=False)
class Claim:
    """A job a worker holds, with the lease that keeps other workers off it."""

    job: Job
    #: nominal time of the occurrence claimed
    scheduled_at: datetime
    #: 1-based number of this attempt at the occurrence
    attempt: int
    #: the lease token (None for drivers without leases)
    token: str | None = None
    lease_expires_at: datetime | None = None
    #: the kernel's plan for this occurrence; a driver that must know the next occurrence at
    #: claim time (BullMQ's job schedulers) fills it with ``DriverContext.plan``
    plan: Plan | None = None
    #: driver-private state
    handle: Any = None
    #: True for runs that live only in this kernel (``immediate`` runs at start)
    local: bool = False


@attrs.frozen
class Acquired:
    """What ``Driver.acquire`` returns."""

    claims: list[Claim]
    #: the earliest time another job becomes due (None: nothing scheduled that the driver knows)
    next_due: datetime | None = None


@attrs.frozen
class RunResult:
    """How a claimed occurrence ended, handed to ``Driver.complete``.

    - ``retry_at`` set: the same occurrence runs again then (attempt + 1).
    - else ``next_run_at`` set: the job's next occurrence (attempt resets to 0).
    - else the job is finished; the driver keeps or removes it under its retention settings.
    """

    outcome: Outcome
    finished_at: datetime
    retry_at: datetime | None = None
    next_run_at: datetime | None = None
    error: str | None = None
    traceback: str | None = None
    return_value: Any = None
    started_at: datetime | None = None

    @property
    def final_state(self) -> JobState:
        """The state a job ends in when this result finishes it."""
        if self.outcome in (Outcome.FAILED, Outcome.TIMED_OUT):
            return JobState.FAILED
        if self.outcome is Outcome.MISSED:
            return JobState.MISSED
        return JobState.COMPLETED


def utc(dt: datetime) -> datetime:
    """Return ``dt`` in UTC; a naive datetime is refused."""
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"naive datetime {dt!r}: give an aware datetime (with a tzinfo)")
    return dt.astimezone(UTC)


def to_millis(dt: datetime) -> int:
    """Epoch milliseconds of an aware datetime, rounded to the nearest (half up); exact
    integer arithmetic, so ``from_millis(to_millis(dt)) == dt`` for whole-millisecond times."""
    delta = dt - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    ms, rest = divmod(micros, _MS_US)
    return ms + 1 if rest * 2 >= _MS_US else ms


def from_millis(ms: int | float) -> datetime:
    """An aware UTC datetime from epoch milliseconds (exact for integers)."""
    if isinstance(ms, float) and ms.is_integer():
        ms = int(ms)
    return _EPOCH + timedelta(milliseconds=ms)


# --- issue 14: managing jobs (paging, run history, updates) ---------------------------------


@attrs.frozen
class Cursor:
    """A position in the list order: after the job with this (next_run_at, id)."""

    next_run_at: datetime | None
    id: str


@attrs.frozen
class RunRecord:
    """One finished run (attempt) of a job, as kept in the store's history."""

    job_id: str
    name: str
    scheduled_at: datetime | None
    started_at: datetime | None
    finished_at: datetime
    attempt: int  # 1-based attempt number of that occurrence
    outcome: Outcome  # completed / failed / timed_out / missed
    error: str | None  # the traceback text of a failure (else the error line), None on success
    worker: str | None  # DriverContext.owner of the kernel that ran it


class _Unset(enum.Enum):
    UNSET = "UNSET"


#: "not given" for :meth:`Driver.update_job`'s fields (None is a value there)
UNSET = _Unset.UNSET

#: a ``where`` filter: top-level data keys to JSON scalars, all of which must match
Where = Mapping[str, str | int | float | bool | None]
