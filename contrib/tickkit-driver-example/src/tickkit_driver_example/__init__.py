"""An example third-party tickkit driver: all jobs in one JSON file.

``Kernel(driver="example:///var/lib/app/jobs.json")`` (an absolute path after ``example://``;
``example://jobs.json`` is relative to the working directory). The file is read at start and
rewritten atomically (a temporary file, then ``os.replace``) after every change. One process
owns the file: there are no leases, so do not share a file between workers.

Kept simple on purpose: the jobs live in a dict and the whole (small) file is written from the
event loop after each change, which blocks it for well under a millisecond for a few hundred
jobs. A driver for a real database does its I/O without blocking the loop (an async client, or a
worker thread whose calls ``Driver.io_pending`` reports so a VirtualClock waits for them). Claims
are not written: a job found ``running`` in the file at start belonged to a process that is gone,
and is scheduled again. It follows the contract in ``tickkit.driver`` method by method, and passes
``tickkit.testing.contract.DriverContract`` (see ``tests/test_contract.py``).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import attrs

from tickkit import (
    UNSET,
    Acquired,
    Backoff,
    Claim,
    Cursor,
    Driver,
    DriverContext,
    DriverError,
    IncompatibleStoreError,
    Job,
    JobExistsError,
    JobState,
    Outcome,
    RunRecord,
    RunResult,
    Where,
)
from tickkit.driver import (
    DEFAULT_HISTORY_LIMIT,
    DEFAULT_HISTORY_MAX_AGE,
    Unset,
    check_history_options,
    from_millis,
    select_jobs,
    to_millis,
)

__all__ = ["FORMAT_VERSION", "JSONFileDriver"]

#: the version of the file's layout, written in the file
FORMAT_VERSION = 1


class JSONFileDriver(Driver):
    """Jobs in a JSON file. Options: ``keep_completed`` (keep finished one-off jobs, default
    False); failed one-off jobs are always kept (the dead-letter view). ``history_limit`` and
    ``history_max_age``: the run history kept per job (in this process only; ``where`` always
    scans: this driver keeps no index)."""

    supports_trio = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        keep_completed: bool = False,
        history_limit: int = DEFAULT_HISTORY_LIMIT,
        history_max_age: float | timedelta | None = DEFAULT_HISTORY_MAX_AGE,
    ) -> None:
        self.path = Path(path)
        self.keep_completed = keep_completed
        self.history_limit, self.history_max_age = check_history_options(
            history_limit, history_max_age
        )
        #: job id -> revision, bumped when update_job changes the job's timing
        self._revision: dict[str, int] = {}
        #: job id -> finished runs, oldest first
        self._runs: dict[str, list[RunRecord]] = {}
        self._jobs: dict[str, Job] = {}
        #: job id -> token of the claim that holds it (RUNNING jobs only)
        self._tokens: dict[str, str] = {}
        self._pause_after: set[str] = set()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> JSONFileDriver:
        path = url.split("://", 1)[1]
        if not path:
            raise DriverError(f"give a file in the URL, like example:///tmp/jobs.json: got {url!r}")
        return cls(path, **options)

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self, ctx: DriverContext) -> None:
        await super().start(ctx)
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        try:
            stored = json.loads(text)
            version = stored["version"]
        except (ValueError, KeyError, TypeError):
            raise IncompatibleStoreError(f"{self.path} is not a tickkit example store") from None
        if version != FORMAT_VERSION:
            raise IncompatibleStoreError(
                f"{self.path} has format version {version!r}; this driver reads {FORMAT_VERSION}"
            )
        for row in stored["jobs"]:
            job = self._from_row(row)
            assert job.id is not None
            if job.state is JobState.RUNNING:  # the process that ran it is gone: run it again
                job.state = JobState.SCHEDULED
            self._jobs[job.id] = job

    async def stop(self) -> None:
        self._save()

    # --- the file -----------------------------------------------------------------------

    def _save(self) -> None:
        """Write every job: to a temporary file, then renamed over the store (atomic)."""
        rows = [self._to_row(job) for job in self._jobs.values()]
        text = json.dumps({"version": FORMAT_VERSION, "jobs": rows}, ensure_ascii=False)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, self.path)

    def _to_row(self, job: Job) -> dict[str, Any]:
        def ms(value: datetime | None) -> int | None:
            return to_millis(value) if value is not None else None

        return {
            "id": job.id,
            "name": job.name,
            "data": self.ctx.codec.encode(job.data),
            "schedule": job.schedule,
            "next_run_at": ms(job.next_run_at),
            "scheduled_at": ms(job.scheduled_at),
            "state": job.state.value,
            "static": job.static,
            "attempt": job.attempt,
            "max_attempts": job.max_attempts,
            "backoff": job.backoff.to_dict() if job.backoff is not None else None,
            "created_at": ms(job.created_at),
            "last_run_at": ms(job.last_run_at),
            "last_outcome": job.last_outcome.value if job.last_outcome is not None else None,
            "last_error": job.last_error,
            "runs": job.runs,
            "meta": job.meta,
        }

    def _from_row(self, row: dict[str, Any]) -> Job:
        def dt(value: int | None) -> datetime | None:
            return from_millis(value) if value is not None else None

        return Job(
            id=row["id"],
            name=row["name"],
            data=self.ctx.codec.decode(row["data"]),
            schedule=row["schedule"],
            next_run_at=dt(row["next_run_at"]),
            scheduled_at=dt(row["scheduled_at"]),
            state=JobState(row["state"]),
            static=row["static"],
            attempt=row["attempt"],
            max_attempts=row["max_attempts"],
            backoff=Backoff.coerce(row["backoff"]) if row["backoff"] is not None else None,
            created_at=dt(row["created_at"]),
            last_run_at=dt(row["last_run_at"]),
            last_outcome=Outcome(row["last_outcome"]) if row["last_outcome"] else None,
            last_error=row["last_error"],
            runs=row["runs"],
            meta=dict(row["meta"]),
        )

    def _drop(self, job_id: str) -> Job | None:
        self._tokens.pop(job_id, None)  # a running claim of it no longer counts
        self._revision.pop(job_id, None)
        self._pause_after.discard(job_id)
        return self._jobs.pop(job_id, None)

    # --- managing jobs ------------------------------------------------------------------

    async def add_job(self, job: Job, *, replace: bool = False) -> str:
        job = _copy(job)
        if job.id is None:
            job.id = uuid.uuid4().hex
        elif job.id in self._jobs:
            if not replace:
                raise JobExistsError(
                    f"a job with id {job.id!r} exists; pass replace=True to replace it"
                )
            self._drop(job.id)
        self._jobs[job.id] = job
        self._save()
        return job.id

    async def sync_static(self, jobs: Sequence[Job], now: datetime) -> None:
        wanted = {job.id: job for job in jobs}
        for job_id, old in list(self._jobs.items()):
            if old.static and job_id not in wanted:
                self._drop(job_id)
        for job_id, new in wanted.items():
            assert job_id is not None
            old = self._jobs.get(job_id)
            if old is not None and old.static and old.schedule == new.schedule:
                # same schedule: keep the stored next run (missed runs are caught up)
                old.data, old.max_attempts, old.backoff = new.data, new.max_attempts, new.backoff
                continue
            self._drop(job_id)
            self._jobs[job_id] = _copy(new)
        self._save()

    async def get_job(self, job_id: str) -> Job | None:
        job = self._jobs.get(job_id)
        return _copy(job) if job is not None else None

    async def list_jobs(
        self,
        *,
        name: str | None = None,
        state: JobState | None = None,
        static: bool | None = None,
        where: Where | None = None,
        limit: int | None = None,
        after: Cursor | None = None,
    ) -> list[Job]:
        found = select_jobs(
            self._jobs.values(),
            name=name,
            state=state,
            static=static,
            where=where,
            limit=limit,
            after=after,
        )
        return [_copy(job) for job in found]

    async def update_job(
        self,
        job_id: str,
        *,
        data: Any | Unset = UNSET,
        schedule: dict[str, Any] | Unset | None = UNSET,
        next_run_at: datetime | Unset = UNSET,
    ) -> Job | None:
        job = self._jobs.get(job_id)
        if job is None:
            return None
        if not isinstance(data, Unset):
            job.data = self.ctx.codec.decode(self.ctx.codec.encode(data))
        if not isinstance(schedule, Unset):
            job.schedule = schedule
            # the kernel passes a spec only for a schedule that repeats (None: one-off)
            job.recurring = schedule is not None
        if isinstance(next_run_at, datetime):
            self._revision[job_id] = self._revision.get(job_id, 0) + 1
            job.next_run_at = job.scheduled_at = next_run_at
            if job.state is not JobState.RUNNING:
                job.attempt = 0
                if job.state in (JobState.COMPLETED, JobState.FAILED, JobState.MISSED):
                    job.state = JobState.SCHEDULED
        self._save()
        return _copy(job)

    async def get_runs(self, job_id: str, *, limit: int = 20) -> list[RunRecord]:
        runs = sorted(
            self._runs.get(job_id, ()), key=lambda r: (r.finished_at, r.attempt), reverse=True
        )
        if self.history_max_age is not None:
            cutoff = self.ctx.clock.now() - timedelta(seconds=self.history_max_age)
            runs = [r for r in runs if r.finished_at >= cutoff]
        return runs[: max(limit, 0)]

    def _record_run(self, claim: Claim, result: RunResult) -> None:
        if self.history_limit == 0 or result.outcome is Outcome.MISSED:
            return
        assert claim.job.id is not None
        runs = self._runs.setdefault(claim.job.id, [])
        runs.append(
            RunRecord(
                job_id=claim.job.id,
                name=claim.job.name,
                scheduled_at=claim.scheduled_at,
                started_at=result.started_at,
                finished_at=result.finished_at,
                attempt=claim.attempt,
                outcome=result.outcome,
                error=result.traceback or result.error,
                worker=self.ctx.owner,
            )
        )
        del runs[: max(len(runs) - self.history_limit, 0)]

    async def remove_job(self, job_id: str) -> bool:
        if self._drop(job_id) is None:
            return False
        self._save()
        return True

    async def remove_jobs(self, *, name: str) -> int:
        ids = [i for i, job in self._jobs.items() if job.name == name and not job.static]
        for job_id in ids:
            self._drop(job_id)
        if ids:
            self._save()
        return len(ids)

    async def set_paused(self, job_id: str, paused: bool) -> Job | None:
        job = self._jobs.get(job_id)
        if job is None:
            return None
        if job.state is JobState.RUNNING:  # takes effect when the run ends
            if paused:
                self._pause_after.add(job_id)
            else:
                self._pause_after.discard(job_id)
        elif paused and job.state is JobState.SCHEDULED:
            job.state = JobState.PAUSED
        elif not paused and job.state is JobState.PAUSED:
            job.state = JobState.SCHEDULED
        self._save()
        return _copy(job)

    async def move_to(self, job_id: str, when: datetime) -> bool:
        job = self._jobs.get(job_id)
        if job is None or job.state is not JobState.SCHEDULED:
            return False
        job.next_run_at = job.scheduled_at = when
        self._save()
        return True

    # --- running jobs -------------------------------------------------------------------

    async def acquire(
        self, *, now: datetime, limit: int, exclude: frozenset[str] = frozenset()
    ) -> Acquired:
        due = sorted(
            (
                job
                for job in self._jobs.values()
                if job.state is JobState.SCHEDULED and job.next_run_at is not None
            ),
            key=_order,
        )
        claims: list[Claim] = []
        next_due: datetime | None = None
        for job in due:
            assert job.id is not None and job.next_run_at is not None
            if len(claims) >= limit or job.next_run_at > now or job.name in exclude:
                if next_due is None or job.next_run_at < next_due:
                    next_due = job.next_run_at
                continue
            token = uuid.uuid4().hex
            self._tokens[job.id] = token
            job.state = JobState.RUNNING
            assert job.scheduled_at is not None
            claims.append(
                Claim(
                    job=_copy(job),
                    scheduled_at=job.scheduled_at,
                    attempt=job.attempt + 1,
                    token=token,
                    handle=self._revision.get(job.id, 0),
                )
            )
        return Acquired(claims, next_due)

    def _held(self, claim: Claim) -> Job | None:
        """The stored job if ``claim`` still holds it (not removed or replaced meanwhile)."""
        job_id = claim.job.id
        if job_id is None or self._tokens.get(job_id) != claim.token:
            return None
        return self._jobs.get(job_id)

    async def complete(self, claim: Claim, result: RunResult) -> None:
        job = self._held(claim)
        if job is None:
            return
        assert job.id is not None
        del self._tokens[job.id]
        self._record_run(claim, result)
        job.last_run_at = result.started_at or result.finished_at
        job.last_outcome = result.outcome
        job.last_error = result.error
        if result.outcome is not Outcome.CANCELLED:
            job.runs += 1
        paused = job.id in self._pause_after
        self._pause_after.discard(job.id)
        if self._revision.get(job.id, 0) != claim.handle:
            job.attempt = 0  # updated while it ran: the stored next run stays
        elif result.retry_at is not None:
            job.attempt = claim.attempt
            job.next_run_at = result.retry_at
        elif result.next_run_at is not None:
            job.attempt = 0
            job.next_run_at = job.scheduled_at = result.next_run_at
        else:
            if result.outcome is not Outcome.MISSED:
                job.attempt = claim.attempt
            job.next_run_at = None
            job.state = result.final_state
            keep = job.static or job.state is JobState.FAILED or self.keep_completed
            if not keep:
                self._drop(job.id)
            self._save()
            return
        job.state = JobState.PAUSED if paused else JobState.SCHEDULED
        self._save()

    async def release(self, claims: Sequence[Claim]) -> None:
        for claim in claims:
            job = self._held(claim)
            if job is None:
                continue
            assert job.id is not None
            del self._tokens[job.id]
            paused = job.id in self._pause_after
            self._pause_after.discard(job.id)
            job.state = JobState.PAUSED if paused else JobState.SCHEDULED
        self._save()


def _order(job: Job) -> tuple[bool, float, str]:
    at = job.next_run_at
    return (at is None, at.timestamp() if at else 0.0, job.id or "")


def _copy(job: Job) -> Job:
    return attrs.evolve(job, meta=dict(job.meta))
