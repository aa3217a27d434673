"""The memory driver (default, ``memory://``): jobs live in this process and end with it.

A binary heap orders due times: adding a job is O(log n); removing one is O(1) (its heap entry
is dropped lazily when it reaches the top); the dispatcher sleeps exactly until the top entry is
due, so an idle kernel does no work.
"""

from __future__ import annotations

import heapq
import uuid
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import attrs

from tickkit import (
    UNSET,
    Acquired,
    Claim,
    Cursor,
    Driver,
    DriverContext,
    InvalidArgumentError,
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
    RUN_COUNTS_KEPT,
    Unset,
    check_history_options,
    minute_of,
    select_jobs,
)

#: how many due jobs of capped tasks (``exclude``) one acquire steps over before it gives up
_MAX_HELD = 1024


class MemoryDriver(Driver):
    """Jobs in a dict, due times in a heap.

    Options: ``keep_completed`` keeps finished one-off jobs (state ``completed`` or ``missed``)
    so they can be listed; ``keep_failed`` (default True) keeps one-off jobs whose last attempt
    failed, as the dead-letter view. Static jobs are always kept. ``history_limit`` (default
    100; 0 keeps none) and ``history_max_age`` (seconds or a timedelta, default 7 days; None:
    no age limit): the run history kept per job (:meth:`get_runs`), also after the job ended.

    ``where`` on a key given to :meth:`ensure_indexes` reads a dict index (key -> value -> job
    ids); on any other key it scans every job.
    """

    supports_trio = True

    def __init__(
        self,
        *,
        keep_completed: bool = False,
        keep_failed: bool = True,
        history_limit: int = DEFAULT_HISTORY_LIMIT,
        history_max_age: float | timedelta | None = DEFAULT_HISTORY_MAX_AGE,
    ) -> None:
        self.keep_completed = keep_completed
        self.keep_failed = keep_failed
        self.history_limit, self.history_max_age = check_history_options(
            history_limit, history_max_age
        )
        self._max_age = timedelta(seconds=self.history_max_age or 0)
        #: indexed data key -> normalized value -> ids of the jobs holding it
        self._index: dict[str, dict[tuple[str, Any], set[str]]] = {}
        #: job id -> revision (bumped when update_job changes its timing)
        self._revision: dict[str, int] = {}
        #: the claims running now, by job id: update_job gives a claim a snapshot of its job
        #: before it changes the stored one (copy on write: no copy per claim)
        self._claimed: dict[str, Claim] = {}
        #: job id -> its finished runs, oldest first
        self._runs: dict[str, deque[RunRecord]] = {}
        #: job id -> finish time of its last run written, oldest write first (age retention:
        #: one entry per job, so memory stays bounded by history_limit per job)
        self._run_order: OrderedDict[str, datetime] = OrderedDict()
        self._jobs: dict[str, Job] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._due: dict[str, int] = {}
        self._seq = 0
        self._pause_after: set[str] = set()
        #: the owner of this driver's claims (``ctx.owner``), the ``worker`` of its run records
        self._owner: str | None = None
        #: run counters: minute bucket -> outcome -> runs, oldest bucket first
        self._run_counts: OrderedDict[int, dict[Outcome, int]] = OrderedDict()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> MemoryDriver:
        return cls(**options)

    async def start(self, ctx: DriverContext) -> None:
        await super().start(ctx)
        self._owner = ctx.owner

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
        self._index_add(job)
        if job.state is JobState.SCHEDULED and job.next_run_at is not None:
            self._push(job)

    def _drop(self, job_id: str) -> Job | None:
        job = self._jobs.pop(job_id, None)
        self._unqueue(job_id)
        self._pause_after.discard(job_id)
        self._revision.pop(job_id, None)
        if job is not None:
            self._index_remove(job)
        return job

    # --- where index ----------------------------------------------------------------------
    def _index_add(self, job: Job) -> None:
        if not self._index or not isinstance(job.data, dict):
            return
        assert job.id is not None
        for key, values in self._index.items():
            if key in job.data:
                found = _index_value(job.data[key])
                if found is not None:
                    values.setdefault(found, set()).add(job.id)

    def _index_remove(self, job: Job) -> None:
        if not self._index or not isinstance(job.data, dict):
            return
        for key, values in self._index.items():
            if key in job.data:
                found = _index_value(job.data[key])
                if found is None:
                    continue
                ids = values.get(found)
                if ids is not None:
                    ids.discard(job.id or "")
                    if not ids:
                        del values[found]

    async def ensure_indexes(self, keys: Iterable[str]) -> None:
        for key in keys:
            if key in self._index:
                continue
            values: dict[tuple[str, Any], set[str]] = {}
            self._index[key] = values
            for job_id, job in self._jobs.items():
                if isinstance(job.data, dict) and key in job.data:
                    found = _index_value(job.data[key])
                    if found is not None:
                        values.setdefault(found, set()).add(job_id)

    def _candidates(self, where: Where | None) -> Iterable[Job]:
        """The jobs a ``where`` may match: through the index when it names an indexed key
        (the smallest set of those), else all of them (a scan)."""
        best: set[str] | None = None
        for key, value in (where or {}).items():
            values = self._index.get(key)
            if values is None:
                continue
            found = _index_value(value)
            ids = values.get(found, set()) if found is not None else set()
            if best is None or len(ids) < len(best):
                best = ids
        if best is None:
            return self._jobs.values()
        return [self._jobs[job_id] for job_id in best if job_id in self._jobs]

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
                self._index_remove(old)
                old.data = new.data
                self._index_add(old)
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
        where: Where | None = None,
        limit: int | None = None,
        after: Cursor | None = None,
    ) -> list[Job]:
        found = select_jobs(
            self._candidates(where),
            name=name,
            state=state,
            static=static,
            where=where,
            limit=limit,
            after=after,
        )
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

    async def count_jobs(
        self,
        *,
        name: str | None = None,
        state: JobState | None = None,
        static: bool | None = None,
        where: Where | None = None,
    ) -> dict[JobState, int]:
        jobs: Iterable[Job] = self._candidates(where)
        if name is not None or state is not None or static is not None or where:
            jobs = select_jobs(jobs, name=name, state=state, static=static, where=where)
        counts: dict[JobState, int] = {}
        for job in jobs:
            counts[job.state] = counts.get(job.state, 0) + 1
        return counts

    async def update_job(
        self,
        job_id: str,
        *,
        data: Any | Unset = UNSET,
        schedule: dict[str, Any] | Unset | None = UNSET,
        next_run_at: datetime | Unset = UNSET,
    ) -> Job | None:
        if next_run_at is None:
            raise InvalidArgumentError(
                f"update_job of {job_id!r}: next_run_at must be a datetime, got None"
            )
        job = self._jobs.get(job_id)
        if job is None:
            return None
        running = self._claimed.get(job_id)
        if running is not None and running.job is job:
            # the running occurrence finishes with what it had: it gets a snapshot
            running.job = _copy(job)
        if data is not UNSET:
            # the stored copy is the data as the codec reads it back (refused: nothing changes)
            data = self.ctx.codec.decode(self.ctx.codec.encode(data))
            self._index_remove(job)
            job.data = data
            self._index_add(job)
        if schedule is not UNSET:
            job.schedule = schedule
            # the kernel passes a spec only for a schedule that repeats (None: one-off)
            job.recurring = schedule is not None
        if not isinstance(next_run_at, Unset):
            self._revision[job_id] = self._revision.get(job_id, 0) + 1
            job.next_run_at = job.scheduled_at = next_run_at
            if job.state is not JobState.RUNNING:
                job.attempt = 0
                if job.state in (JobState.COMPLETED, JobState.FAILED, JobState.MISSED):
                    job.state = JobState.SCHEDULED
                if job.state is JobState.SCHEDULED:
                    self._push(job)
        return _copy(job)

    async def get_runs(self, job_id: str, *, limit: int = 20) -> list[RunRecord]:
        self._expire_runs()
        runs = sorted(
            self._runs.get(job_id, ()),
            key=lambda r: (r.finished_at, r.attempt),
            reverse=True,
        )
        if self.history_max_age is not None and runs:
            # a run written with an older finish time than those before it is still dropped
            cutoff = self.ctx.clock.now() - timedelta(seconds=self.history_max_age)
            runs = [r for r in runs if r.finished_at >= cutoff]
        return runs[: max(limit, 0)]

    def _count_run(self, result: RunResult) -> None:
        if result.outcome is Outcome.MISSED:
            return
        minute = minute_of(result.finished_at)
        bucket = self._run_counts.get(minute)
        if bucket is None:
            bucket = self._run_counts[minute] = {}
            # buckets arrive in time order but for the odd late finish: keep the order sorted
            if len(self._run_counts) > 1 and next(reversed(self._run_counts)) != minute:
                self._run_counts = OrderedDict(sorted(self._run_counts.items()))
            oldest = minute - int(RUN_COUNTS_KEPT.total_seconds() // 60)
            while next(iter(self._run_counts)) < oldest:
                self._run_counts.popitem(last=False)
        bucket[result.outcome] = bucket.get(result.outcome, 0) + 1

    async def count_runs(self, since: datetime) -> dict[Outcome, int] | None:
        first = minute_of(since)
        counts: dict[Outcome, int] = {}
        for minute, bucket in reversed(self._run_counts.items()):
            if minute < first:
                break
            for outcome, n in bucket.items():
                counts[outcome] = counts.get(outcome, 0) + n
        return counts

    async def count_by_name(self, *, state: JobState | None = None) -> dict[str, int]:
        counts: dict[str, int] = {}
        for job in self._jobs.values():
            if state is None or job.state is state:
                counts[job.name] = counts.get(job.name, 0) + 1
        return counts

    def _record_run(self, claim: Claim, result: RunResult) -> None:
        self._count_run(result)
        if self.history_limit == 0 or result.outcome is Outcome.MISSED:
            return
        job = claim.job
        assert job.id is not None
        record = RunRecord(
            job_id=job.id,
            name=job.name,
            scheduled_at=claim.scheduled_at,
            started_at=result.started_at,
            finished_at=result.finished_at,
            attempt=claim.attempt,
            outcome=result.outcome,
            error=result.traceback or result.error,
            worker=self._owner,
        )
        runs = self._runs.setdefault(job.id, deque())
        runs.append(record)
        while len(runs) > self.history_limit:
            runs.popleft()
        if self.history_max_age is not None:
            self._run_order[job.id] = max(
                self._run_order.get(job.id, record.finished_at), record.finished_at
            )
            self._run_order.move_to_end(job.id)
            # the finish time is the kernel clock's now: no clock call per run
            self._expire_runs(record.finished_at)

    def _expire_runs(self, now: datetime | None = None) -> None:
        """Drop runs older than ``history_max_age`` (by the kernel's clock)."""
        if self.history_max_age is None or not self._run_order:
            return
        if now is None:
            if not hasattr(self, "ctx"):
                return  # not started: no clock yet
            now = self.ctx.clock.now()
        cutoff = now - self._max_age
        order = self._run_order
        first = next(iter(order.values()))
        if first >= cutoff:
            return
        # jobs whose newest run is older than the age: their whole history goes
        while order:
            job_id, last = next(iter(order.items()))
            if last >= cutoff:
                break
            del order[job_id]
            self._runs.pop(job_id, None)

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
            claim = Claim(
                job=job,
                scheduled_at=job.scheduled_at,
                attempt=job.attempt + 1,
                handle=(job, self._revision.get(job_id, 0)),
            )
            self._claimed[job_id] = claim
            claims.append(claim)
        for entry in held:
            heapq.heappush(heap, entry)
        top = self._top()
        next_due = jobs[top[2]].next_run_at if top is not None and top[2] in jobs else None
        return Acquired(claims, next_due)

    async def complete(self, claim: Claim, result: RunResult) -> None:
        job_id = claim.job.id
        assert job_id is not None
        job = self._jobs.get(job_id)
        if not isinstance(claim.handle, tuple):
            return  # not a claim of this driver
        if self._claimed.get(job_id) is claim:
            del self._claimed[job_id]
        held, revision = claim.handle
        if job is None or job is not held:
            return  # removed or replaced while it ran
        self._record_run(claim, result)
        job.last_run_at = result.started_at or result.finished_at
        job.last_outcome = result.outcome
        job.last_error = result.error
        job.runs += 1
        paused = job_id in self._pause_after
        self._pause_after.discard(job_id)
        if self._revision.get(job_id, 0) != revision:
            # updated while it ran: the stored next run (and schedule) stay
            job.attempt = 0
        elif result.retry_at is not None:
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
            held = claim.handle[0] if isinstance(claim.handle, tuple) else None
            if held is not None and self._claimed.get(job_id) is claim:
                del self._claimed[job_id]
            if job is None or job is not held or job.state is not JobState.RUNNING:
                continue
            paused = job_id in self._pause_after
            self._pause_after.discard(job_id)
            job.state = JobState.PAUSED if paused else JobState.SCHEDULED
            if not paused:
                self._push(job)


def _copy(job: Job) -> Job:
    return attrs.evolve(job, meta=dict(job.meta))


def _index_value(value: Any) -> tuple[str, Any] | None:
    """The key of a data value in the where index: JSON-equal scalars share one (1 and 1.0 do,
    True and 1 do not); objects and arrays are not indexed (a where never matches them)."""
    if value is None:
        return ("null", None)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, str):
        return ("str", value)
    if isinstance(value, (int, float)):
        return ("num", value)
    return None
