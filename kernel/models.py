"""The value objects the kernel, the drivers and the plugins exchange (attrs classes).

Times are aware UTC datetimes everywhere. Durations given by users are seconds (float) or
:class:`datetime.timedelta`; they are converted to seconds (float) here.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs

from .errors import InvalidTaskError

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


def to_seconds(value: float | int | timedelta | None) -> float | None:
    """Convert a duration (seconds or timedelta) to float seconds; None stays None."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidTaskError(f"expected a duration in seconds or a timedelta, got {value!r}")
    return float(value)


def _non_negative(_inst: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and value < 0:
        raise InvalidTaskError(f"{attribute.name} must not be negative, got {value!r}")


@attrs.frozen
class Backoff:
    """How long to wait before a retry.

    ``fixed``: ``delay`` every time. ``exponential``: ``delay * 2 ** (attempt - 1)`` for the retry
    after attempt ``attempt`` (1, 2, 4, ... times ``delay``), capped at ``max_delay``. ``jitter``
    (0 to 1) takes up to that fraction off each delay at random, so retries of many jobs spread.
    """

    kind: str = attrs.field(default="fixed")
    delay: float = attrs.field(default=0.0, converter=to_seconds, validator=_non_negative)
    max_delay: float | None = attrs.field(
        default=None,
        converter=to_seconds,
        validator=_non_negative,
    )
    jitter: float = attrs.field(default=0.0)

    @kind.validator
    def _check_kind(self, _attribute: attrs.Attribute[str], value: str) -> None:
        if value not in ("fixed", "exponential"):
            raise InvalidTaskError(f"backoff type must be 'fixed' or 'exponential', got {value!r}")

    @jitter.validator
    def _check_jitter(self, _attribute: attrs.Attribute[float], value: float) -> None:
        if not 0 <= value <= 1:
            raise InvalidTaskError(f"backoff jitter must be between 0 and 1, got {value!r}")

    @classmethod
    def fixed(cls, delay: float | timedelta) -> Backoff:
        return cls("fixed", to_seconds(delay) or 0.0)

    @classmethod
    def exponential(
        cls,
        delay: float | timedelta,
        *,
        max_delay: float | timedelta | None = None,
        jitter: float = 0.0,
    ) -> Backoff:
        return cls("exponential", to_seconds(delay) or 0.0, to_seconds(max_delay), jitter)

    @classmethod
    def coerce(cls, value: Backoff | Mapping[str, Any] | float | timedelta | None) -> Backoff:
        """Accept a Backoff, seconds, a timedelta, or a dict with ``type``, ``delay``,
        ``max_delay`` and ``jitter``."""
        if value is None:
            return cls()
        if isinstance(value, Backoff):
            return value
        if isinstance(value, Mapping):
            unknown = set(value) - {"type", "kind", "delay", "max_delay", "jitter"}
            if unknown:
                raise InvalidTaskError(f"unknown backoff option(s) {sorted(unknown)!r}")
            return cls(
                str(value.get("type", value.get("kind", "fixed"))),
                value.get("delay", 0.0),
                value.get("max_delay"),
                float(value.get("jitter", 0.0)),
            )
        return cls.fixed(value)

    def delay_for(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before the retry that follows failed attempt ``attempt`` (1-based)."""
        if self.kind == "fixed":
            delay = self.delay
        else:
            delay = self.delay * (2 ** max(attempt - 1, 0))
        if self.max_delay is not None:
            delay = min(delay, self.max_delay)
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
    """Epoch milliseconds of an aware datetime."""
    return round(dt.timestamp() * 1000)


def from_millis(ms: int | float) -> datetime:
    """An aware UTC datetime from epoch milliseconds."""
    return datetime.fromtimestamp(ms / 1000, UTC)
