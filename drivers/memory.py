"""The memory driver (default, ``memory://``): jobs live in this process and end with it.

A binary heap orders due times: adding a job is O(log n); removing one is O(1) (its heap entry
is dropped lazily when it reaches the top); the dispatcher sleeps exactly until the top entry is
due, so an idle kernel does no work.
"""

from __future__ import annotations

import heapq
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import attrs

from tickkit import (
    Acquired,
    Claim,
    Driver,
    Job,
    JobExistsError,
    JobState,
    Outcome,
    RunResult,
)
from tickkit.driver import select_jobs

#: how many due jobs of capped tasks (``exclude``) one acquire steps over before it gives up
_MAX_HELD = 1024


class MemoryDriver(Driver):
    """Jobs in a dict, due times in a heap.

    Options: ``keep_completed`` keeps finished one-off jobs (state ``completed`` or ``missed``)
    so they can be listed; ``keep_failed`` (default True) keeps one-off jobs whose last attempt
    failed, as the dead-letter view. Static jobs are always kept.
    """

    supports_trio = True

    def __init__(self, *, keep_completed: bool = False, keep_failed: bool = True) -> None:
        self.keep_completed = keep_completed
        self.keep_failed = keep_failed
        self._jobs: dict[str, Job] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._due: dict[str, int] = {}
        self._seq = 0
        self._pause_after: set[str] = set()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> MemoryDriver:
        return cls(**options)

    # --- heap ---------------------------------------------------------------------------
    def _push(self, job: Job) -> None:
        assert job.id is not None and job.next_run_at is not None
        self._seq += 1
        self._due[job.id] = self._seq
        heapq.heappush(self._heap, (job.next_run_at.timestamp(), self._seq, job.id))

    def _unqueue(self, job_id: str) -> None:
        self._due.pop(job_id, None)

    def _top(self) -> tuple[float, int, str] | None:
        heap, due = self._heap, self._due
        while heap:
            entry = heap[0]
            if due.get(entry[2]) == entry[1]:
                return entry
            heapq.heappop(heap)
        return None

    # --- managing jobs ------------------------------------------------------------------
    def _store(self, job: Job) -> None:
        assert job.id is not None
        self._jobs[job.id] = job
        if job.state is JobState.SCHEDULED and job.next_run_at is not None:
            self._push(job)

    def _drop(self, job_id: str) -> Job | None:
        job = self._jobs.pop(job_id, None)
        self._unqueue(job_id)
        self._pause_after.discard(job_id)
        return job

    async def add_job(self, job: Job, *, replace: bool = False) -> str:
        # the objects are the store: the encoded text (Job.data_text) is not kept
        job = attrs.evolve(job, meta=dict(job.meta), data_text=None)
        if job.id is None:
            job.id = uuid.uuid4().hex
        elif job.id in self._jobs:
            if not replace:
                raise JobExistsError(
                    f"a job with id {job.id!r} exists; pass replace=True to replace it"
                )
            self._drop(job.id)
        self._store(job)
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
                old.data = new.data
                old.max_attempts = new.max_attempts
                old.backoff = new.backoff
                continue
            if old is not None:
                self._drop(job_id)
            self._store(attrs.evolve(new, meta=dict(new.meta)))

    async def get_job(self, job_id: str) -> Job | None:
        job = self._jobs.get(job_id)
        return _copy(job) if job is not None else None

    async def list_jobs(
        self,
        *,
        name: str | None = None,
        state: JobState | None = None,
        static: bool | None = None,
        limit: int | None = None,
    ) -> list[Job]:
        found = select_jobs(self._jobs.values(), name=name, state=state, static=static, limit=limit)
        return [_copy(job) for job in found]

    async def remove_job(self, job_id: str) -> bool:
        return self._drop(job_id) is not None

    async def remove_jobs(self, *, name: str) -> int:
        ids = [i for i, job in self._jobs.items() if job.name == name and not job.static]
        for job_id in ids:
            self._drop(job_id)
        return len(ids)

    async def set_paused(self, job_id: str, paused: bool) -> Job | None:
        job = self._jobs.get(job_id)
        if job is None:
            return None
        if job.state is JobState.RUNNING:
            if paused:
                self._pause_after.add(job_id)
            else:
                self._pause_after.discard(job_id)
        elif paused and job.state is JobState.SCHEDULED:
            job.state = JobState.PAUSED
            self._unqueue(job_id)
        elif not paused and job.state is JobState.PAUSED:
            job.state = JobState.SCHEDULED
            if job.next_run_at is not None:
                self._push(job)
        return _copy(job)

    async def move_to(self, job_id: str, when: datetime) -> bool:
        job = self._jobs.get(job_id)
        if job is None or job.state is not JobState.SCHEDULED:
            return False
        job.next_run_at = job.scheduled_at = when
        self._push(job)
        return True

    async def count_jobs(self) -> dict[JobState, int]:
        counts: dict[JobState, int] = {}
        for job in self._jobs.values():
            counts[job.state] = counts.get(job.state, 0) + 1
        return counts

    # --- running jobs -------------------------------------------------------------------
    async def acquire(
        self, *, now: datetime, limit: int, exclude: frozenset[str] = frozenset()
    ) -> Acquired:
        now_ts = now.timestamp()
        heap, due, jobs = self._heap, self._due, self._jobs
        claims: list[Claim] = []
        held: list[tuple[float, int, str]] = []
        while heap and len(claims) < limit:
            entry = heap[0]
            ts, seq, job_id = entry
            if due.get(job_id) != seq:
                heapq.heappop(heap)
                continue
            if ts > now_ts:
                break
            heapq.heappop(heap)
            job = jobs[job_id]
            if exclude and job.name in exclude:
                held.append(entry)
                if len(held) >= _MAX_HELD:
                    break  # many due jobs of capped tasks: look again after a run finishes
                continue
            del due[job_id]
            job.state = JobState.RUNNING
            assert job.scheduled_at is not None
            claims.append(
                Claim(job=job, scheduled_at=job.scheduled_at, attempt=job.attempt + 1, handle=job)
            )
        for entry in held:
            heapq.heappush(heap, entry)
        top = self._top()
        next_due = jobs[top[2]].next_run_at if top is not None and top[2] in jobs else None
        return Acquired(claims, next_due)

    async def complete(self, claim: Claim, result: RunResult) -> None:
        job_id = claim.job.id
        assert job_id is not None
        job = self._jobs.get(job_id)
        if job is None or job is not claim.handle:
            return  # removed or replaced while it ran
        job.last_run_at = result.started_at or result.finished_at
        job.last_outcome = result.outcome
        job.last_error = result.error
        job.runs += 1
        paused = job_id in self._pause_after
        self._pause_after.discard(job_id)
        if result.retry_at is not None:
            job.attempt = claim.attempt
            job.next_run_at = result.retry_at
        elif result.next_run_at is not None:
            job.attempt = 0
            job.next_run_at = job.scheduled_at = result.next_run_at
        else:
            job.attempt = claim.attempt if result.outcome is not Outcome.MISSED else job.attempt
            job.next_run_at = None
            job.state = result.final_state
            keep = job.static or (
                self.keep_failed if job.state is JobState.FAILED else self.keep_completed
            )
            if not keep:
                self._drop(job_id)
            return
        job.state = JobState.PAUSED if paused else JobState.SCHEDULED
        if not paused:
            self._push(job)

    async def release(self, claims: Sequence[Claim]) -> None:
        for claim in claims:
            job_id = claim.job.id
            assert job_id is not None
            job = self._jobs.get(job_id)
            if job is None or job is not claim.handle or job.state is not JobState.RUNNING:
                continue
            paused = job_id in self._pause_after
            self._pause_after.discard(job_id)
            job.state = JobState.PAUSED if paused else JobState.SCHEDULED
            if not paused:
                self._push(job)


def _copy(job: Job) -> Job:
    return attrs.evolve(job, meta=dict(job.meta))
