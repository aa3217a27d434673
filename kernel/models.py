"""The value objects the kernel, the drivers and the plugins exchange (attrs classes).

Times are aware UTC datetimes everywhere. Durations given by users are seconds (float) or
:class:`datetime.timedelta`; they are converted to seconds (float) here.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs

from .backoff import Backoff
from .times import (
    EARLIEST_TIME,
    LATEST_TIME,
    MAX_ATTEMPTS,
    MAX_DURATION,
    MIN_EPOCH_MS,
    RESOLUTION,
    check_duration,
    check_time,
    from_millis,
    round_ms,
    to_millis,
    to_seconds,
    utc,
)

__all__ = [
    "EARLIEST_TIME",
    "LATEST_TIME",
    "MAX_ATTEMPTS",
    "MAX_DURATION",
    "MIN_EPOCH_MS",
    "RESOLUTION",
    "UNSET",
    "Acquired",
    "Backoff",
    "Claim",
    "Cursor",
    "Job",
    "JobState",
    "Misfire",
    "Outcome",
    "Plan",
    "RunRecord",
    "RunResult",
    "Where",
    "check_duration",
    "check_time",
    "from_millis",
    "round_ms",
    "to_millis",
    "to_seconds",
    "utc",
]


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
    #: never in a :class:`RunResult` (a run cancelled by shutdown is released, not completed,
    #: so drivers never see it): observer plugins (OpenTelemetry, Prometheus) report a run
    #: that shutdown cancelled with it
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
    #: finished runs of this job (every completed claim counts)
    runs: int = 0
    #: small string metadata carried with the job (trace context, origin...)
    meta: dict[str, str] = attrs.field(factory=dict)
    #: set by a driver that could not read part of the stored record (a hand-edited row, a hash
    #: written by another tool or an older version): what it could not read, naming the field.
    #: The kernel never runs such a job: a claim of it is completed once as FAILED with this
    #: reason and no retry, and the job stays listable (fields it could not read are None).
    defect: str | None = None
    #: True when the job has further occurrences after this one (its schedule is a recurring
    #: one): set by the constructors below and kept by drivers. A Job built without it (a record
    #: stored before it was data, a hand-built Job) reads it from the schedule spec once, here:
    #: recurring unless there is none or it is a ``date``.
    recurring: bool = attrs.field(
        default=attrs.Factory(lambda job: _legacy_recurring(job.schedule), takes_self=True)
    )
    #: the task data as the codec's text, when the kernel encoded it already (``create_task``):
    #: a driver stores this text (:meth:`tickkit.DriverContext.encode_data`) instead of encoding
    #: ``data`` again, so the codec runs once per write. Not stored, not compared.
    data_text: str | None = attrs.field(default=None, eq=False, repr=False)

    @classmethod
    def one_off(
        cls,
        name: str,
        data: Any = None,
        *,
        at: datetime,
        id: str | None = None,
        created_at: datetime | None = None,
        max_attempts: int | None = None,
        backoff: Backoff | None = None,
        meta: Mapping[str, str] | None = None,
        data_text: str | None = None,
    ) -> Job:
        """A dynamic job that runs once, at ``at`` (no schedule is stored: its time is its
        ``next_run_at``)."""
        return cls(
            id=id,
            name=name,
            data=data,
            next_run_at=at,
            scheduled_at=at,
            max_attempts=max_attempts,
            backoff=backoff,
            created_at=created_at,
            meta=dict(meta or {}),
            recurring=False,
            data_text=data_text,
        )

    @classmethod
    def repeating(
        cls,
        name: str,
        data: Any = None,
        *,
        schedule: dict[str, Any],
        first: datetime,
        id: str | None = None,
        created_at: datetime | None = None,
        max_attempts: int | None = None,
        backoff: Backoff | None = None,
        meta: Mapping[str, str] | None = None,
        data_text: str | None = None,
    ) -> Job:
        """A dynamic job on a recurring ``schedule`` (its spec), first due at ``first``."""
        return cls(
            id=id,
            name=name,
            data=data,
            schedule=schedule,
            next_run_at=first,
            scheduled_at=first,
            max_attempts=max_attempts,
            backoff=backoff,
            created_at=created_at,
            meta=dict(meta or {}),
            recurring=True,
            data_text=data_text,
        )

    @classmethod
    def static_task(
        cls,
        name: str,
        data: Any = None,
        *,
        schedule: dict[str, Any],
        recurring: bool,
        first: datetime | None,
        created_at: datetime | None = None,
        max_attempts: int | None = None,
        backoff: Backoff | None = None,
        meta: Mapping[str, str] | None = None,
    ) -> Job:
        """The stored schedule of static task ``name`` (its id is the name; ``Job.static`` is
        the field that marks such jobs, so this constructor has the longer name): its spec is
        always stored (``sync_static`` compares specs), ``recurring`` says whether it repeats;
        ``first`` None (a date in the past, say) makes it COMPLETED."""
        return cls(
            id=name,
            name=name,
            data=data,
            schedule=schedule,
            next_run_at=first,
            scheduled_at=first,
            state=JobState.SCHEDULED if first is not None else JobState.COMPLETED,
            static=True,
            max_attempts=max_attempts,
            backoff=backoff,
            created_at=created_at,
            meta=dict(meta or {}),
            recurring=recurring,
        )

    @classmethod
    def extra_run(cls, of: Job, now: datetime) -> Job:
        """One extra run of job ``of`` at ``now`` (``run_task_now`` on a recurring, paused,
        running or finished job): its task, data, retry policy and meta, with
        ``meta["run_now_of"]`` naming ``of``; ``of`` itself is left as it is."""
        meta = dict(of.meta)
        if of.id is not None:
            meta["run_now_of"] = of.id
        return cls.one_off(
            of.name,
            of.data,
            at=now,
            created_at=now,
            max_attempts=of.max_attempts,
            backoff=of.backoff,
            meta=meta,
        )


def _legacy_recurring(schedule: dict[str, Any] | None) -> bool:
    """Whether a job stored before ``Job.recurring`` was data repeats: what the kernel stored
    then (a spec for recurring dynamic jobs; any spec for static tasks, ``date`` for one-off
    ones)."""
    return schedule is not None and schedule.get("type") not in (None, "date")


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
