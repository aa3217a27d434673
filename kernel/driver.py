"""The driver contract: what a store of jobs must do for the kernel.

A driver keeps jobs and hands due occurrences to the kernel as leased :class:`Claim` objects.
The kernel decides what a claimed occurrence means (misfire policy, retries, next occurrence)
and tells the driver the outcome with :meth:`Driver.complete`; the driver stores that outcome
atomically. ``tickkit.testing.contract`` is one test suite every driver must pass.

The contract is written so that these stores fit it without changes:

- memory: a heap of due jobs in this process;
- SQLite: one row per job, claims as leases (owner, token, expiry) taken in one transaction, the
  next occurrence written in the transaction that records the outcome;
- BullMQ: one-off jobs are BullMQ jobs, recurring static tasks are job schedulers whose next
  job is produced when the current one is claimed (fill ``Claim.plan`` with
  :meth:`DriverContext.plan` inside :meth:`Driver.acquire`), leases are BullMQ job locks.

This module is the driver SPI: ``__all__`` below is everything a driver needs from the kernel
besides ``tickkit``'s own public names (docs/writing-a-driver.md lists it). Drivers import
nothing else from the kernel.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, ClassVar

import attrs

from .clock import UTC, Clock
from .codec import Codec
from .errors import DriverError, short
from .manage import (
    DEFAULT_HISTORY_LIMIT,
    DEFAULT_HISTORY_MAX_AGE,
    check_history_options,
    check_index_keys,
)
from .models import (
    EARLIEST_TIME,
    LATEST_TIME,
    MAX_DURATION,
    UNSET,
    Acquired,
    Backoff,
    Claim,
    Cursor,
    Job,
    JobState,
    Outcome,
    Plan,
    RunRecord,
    RunResult,
    Where,
    _Unset,
    from_millis,
    to_millis,
)
from .query import (
    RUN_COUNTS_KEPT,
    list_order,
    matches_where,
    minute_of,
    select_jobs,
)
from .redact import redact, redact_url, scrub
from .schedule import Schedule

#: the type of :data:`UNSET` (a field ``update_job`` leaves as it is)
Unset = _Unset

__all__ = [
    "DEFAULT_HISTORY_LIMIT",
    "DEFAULT_HISTORY_MAX_AGE",
    "EARLIEST_TIME",
    "LATEST_TIME",
    "MAX_DURATION",
    "RUN_COUNTS_KEPT",
    "UNSET",
    "UTC",
    "Acquired",
    "Backoff",
    "Claim",
    "Codec",
    "Cursor",
    "Driver",
    "DriverContext",
    "Job",
    "JobState",
    "Outcome",
    "Plan",
    "RunRecord",
    "RunResult",
    "Schedule",
    "Unset",
    "Where",
    "check_history_options",
    "check_index_keys",
    "from_millis",
    "list_order",
    "matches_where",
    "minute_of",
    "redact_url",
    "scrub",
    "select_jobs",
    "short",
    "to_millis",
]


@attrs.define(eq=False)
class DriverContext:
    """What the kernel gives a driver when it starts it."""

    clock: Clock
    codec: Codec
    #: parse a stored schedule spec back into a Schedule (goes through the schedule hooks)
    parse_schedule: Callable[[dict[str, Any]], Schedule]
    #: decide what a claimed occurrence means: ``plan(job, scheduled_at, attempt, now)``
    plan: Callable[[Job, datetime, int, datetime], Plan]
    #: wake the kernel's dispatcher (call when another process made a job due sooner)
    notify: Callable[[], None]
    #: identifies this kernel (lease owner, BullMQ worker name)
    owner: str
    logger: logging.Logger = attrs.field(factory=lambda: logging.getLogger("tickkit.driver"))

    def encode_data(self, job: Job) -> str:
        """``job.data`` as the codec's text, to store. The kernel encodes (and checks) the data
        of ``create_task`` once and hands the text over in ``job.data_text``; this returns it
        as is, and runs the codec only for a job that has none (a static task's job, an extra
        run of a stored one), so the codec runs once per write."""
        return job.data_text if job.data_text is not None else self.codec.encode(job.data)


class Driver(abc.ABC):
    """Base class of every driver. Methods are coroutines unless said otherwise.

    Drivers are registered in the ``tickkit.drivers`` entry-point group, one entry per URL
    scheme, pointing at the class; the kernel calls :meth:`from_url`.
    """

    #: seconds between the dispatcher's re-reads of the store while it is idle, for changes made
    #: by other processes that the driver cannot announce; None: the driver always calls
    #: ``DriverContext.notify`` (or only this process writes)
    poll_interval: float | None = None
    #: lease length in seconds; the kernel renews the claims it holds every third of it.
    #: None: claims need no renewal (one process owns the store)
    lease_duration: float | None = None
    #: True when the driver supports trio as well as asyncio
    supports_trio: ClassVar[bool] = False
    #: True when :meth:`complete_and_acquire` records an outcome and claims the next jobs in
    #: one round trip (BullMQ's moveToFinished with fetchNext). The kernel then refills a
    #: worker's slot as its run finishes, without waking the dispatcher.
    fetches_on_complete: ClassVar[bool] = False

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Driver:
        """Create a driver from a store URL (``scheme://...``) and keyword options."""
        raise NotImplementedError(
            f"{cls.__name__} cannot be created from a URL ({redact_url(url)!r})"
        )

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self, ctx: DriverContext) -> None:
        """Open connections, create or migrate the schema. Called once before any other call."""
        self.ctx = ctx

    async def stop(self) -> None:
        """Close connections. Claims still held were already released or completed."""

    # --- managing jobs -------------------------------------------------------------------

    def check_id(self, job_id: str) -> None:
        """Refuse a job id (or static task name) this store cannot hold, before anything is
        stored: raise :class:`~tickkit.InvalidJobIdError` naming the id and why.

        The kernel calls it for every caller-given id in ``create_task`` and for every static
        task name when it syncs static schedules. Ids already pass the kernel's own rule (1 to
        200 characters, no ``:``, no control characters or lone surrogates, not only digits);
        a driver adds only what its store reserves (BullMQ: its key suffixes). Not a coroutine.
        """

    @abc.abstractmethod
    async def add_job(self, job: Job, *, replace: bool = False) -> str:
        """Store a new job and return its id.

        ``job.id`` None: the driver assigns a unique id. An existing id raises
        :class:`~tickkit.JobExistsError` unless ``replace``; then the old job is replaced (a
        running occurrence of it finishes, and its outcome no longer changes the new job).
        ``job.next_run_at`` is set; ``job.state`` is SCHEDULED or PAUSED.
        """

    @abc.abstractmethod
    async def sync_static(self, jobs: Sequence[Job], now: datetime) -> None:
        """Reconcile the stored schedules of static tasks with ``jobs`` (``static=True``).

        A stored static job whose schedule spec equals the new one keeps its ``next_run_at``,
        ``attempt`` and state (so missed runs while no kernel ran are caught up under the misfire
        policy); one whose spec changed takes the new job's ``next_run_at``; a new one is added;
        a stored static job not in ``jobs`` is removed. Dynamic jobs are untouched.
        """

    @abc.abstractmethod
    async def get_job(self, job_id: str) -> Job | None:
        """Return the job, or None."""

    @abc.abstractmethod
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
        """Return jobs matching every filter given, in the list order: ``next_run_at`` (None
        last), then ``id`` (string order) -- a total order (:func:`list_order`).

        ``where``: top-level data keys to JSON scalars, all of which must match
        (:func:`matches_where`; keys and values are checked by the kernel). A key recorded by
        :meth:`ensure_indexes` is looked up through the driver's index; any other key is a
        scan of the jobs the other filters leave. ``after``: only jobs strictly after that
        position (keyset paging, stable while jobs are added and removed). :func:`select_jobs`
        implements all of it for a driver that has its jobs in hand.
        """

    @abc.abstractmethod
    async def remove_job(self, job_id: str) -> bool:
        """Remove a job (a running occurrence finishes). Return False when it did not exist."""

    @abc.abstractmethod
    async def remove_jobs(self, *, name: str) -> int:
        """Remove every dynamic job of task ``name``; return how many."""

    @abc.abstractmethod
    async def set_paused(self, job_id: str, paused: bool) -> Job | None:
        """Pause or resume a job; return it as stored after the change, or None if missing.

        A paused job is not claimed. Resuming keeps ``next_run_at``: a time that passed while
        paused is handled by the misfire policy when the job is next claimed.
        """

    @abc.abstractmethod
    async def move_to(self, job_id: str, when: datetime) -> bool:
        """Set a scheduled job's ``next_run_at`` (and ``scheduled_at``) to ``when``.

        Used by ``run_task_now`` on one-off jobs. Return False when the job is missing or running.
        """

    async def count_jobs(
        self,
        *,
        name: str | None = None,
        state: JobState | None = None,
        static: bool | None = None,
        where: Where | None = None,
    ) -> dict[JobState, int]:
        """Return the number of jobs in each state among those matching every filter given
        (the filters of :meth:`list_jobs`; drivers may answer without listing)."""
        # only the filters given: a driver written before ``where`` still counts without them
        given: dict[str, Any] = {
            key: value
            for key, value in (("name", name), ("state", state), ("static", static))
            if value is not None
        }
        if where:
            given["where"] = where
        counts: dict[JobState, int] = {}
        for job in await self.list_jobs(**given):
            counts[job.state] = counts.get(job.state, 0) + 1
        return counts

    async def update_job(
        self,
        job_id: str,
        *,
        data: Any | _Unset = UNSET,
        schedule: dict[str, Any] | _Unset | None = UNSET,
        next_run_at: datetime | _Unset = UNSET,
    ) -> Job | None:
        """Atomically replace the fields given; return the job as stored, None when missing.

        ``data``: the new task data (already validated and encodable). ``schedule``: the new
        schedule spec (None: a one-off job); the kernel gives it with ``next_run_at``, the new
        first run it computed (``scheduled_at`` takes it too, and ``attempt`` resets to 0). A
        job that had finished (completed, failed, missed) and gets a ``next_run_at`` is
        scheduled again; a paused job stays paused. Indexes follow the new data.

        A RUNNING job keeps running with what it had. Its completion records the run (last
        outcome, runs, history) but, when ``next_run_at`` changed while it ran, keeps the stored
        ``next_run_at``/``scheduled_at``/schedule instead of the result's (the driver keeps a
        per-job revision carried in the claim). A data-only change does not alter what the
        completion decides (retry, next occurrence or end); the next run reads the new data.

        The base implementation refuses: a driver without atomic updates cannot offer them.
        """
        raise DriverError(f"{type(self).__name__} does not support updating a job in place")

    async def get_runs(self, job_id: str, *, limit: int = 20) -> list[RunRecord]:
        """The job's finished runs kept in the history, newest first (by ``finished_at``, then
        ``attempt``), at most ``limit``. Works after the job was removed or finished, for the
        retention period (driver options ``history_limit`` and ``history_max_age``). Every
        :meth:`complete` of a run that ran (outcome not MISSED) writes one record in the same
        transaction, with ``worker = ctx.owner``. The base implementation keeps no history."""
        return []

    async def count_by_name(self, *, state: JobState | None = None) -> dict[str, int]:
        """The number of jobs of each task name (names with none are left out), among the jobs
        in ``state`` when given. The base implementation lists every job; a driver answers
        from an index where it has one."""
        counts: dict[str, int] = {}
        for job in await self.list_jobs(state=state):
            counts[job.name] = counts.get(job.name, 0) + 1
        return counts

    async def count_runs(self, since: datetime) -> dict[Outcome, int] | None:
        """The runs completed at or after ``since``, per outcome (outcomes with none left out),
        from per-minute counters that every :meth:`complete` of a run that ran (outcome not
        MISSED) bumps in its own transaction, whatever the history retention removed. A bucket
        is a whole minute (:func:`minute_of`): the minute holding ``since`` counts whole.
        Buckets are kept at least :data:`RUN_COUNTS_KEPT`. None: the driver keeps no
        counters (the base implementation)."""
        return None

    def using(self, connection: Any) -> AbstractAsyncContextManager[None]:
        """A context in which :meth:`add_job` stores on ``connection``, the caller's own
        connection to the store, inside the transaction it has open (the job exists if and
        only if that transaction commits). The base implementation refuses: only a driver
        whose store has client transactions offers it."""
        raise DriverError(
            f"{type(self).__name__} cannot create a job on a connection of yours "
            f"({redact(short(connection))}): its store has no transactions shared with the caller"
        )

    async def ensure_indexes(self, keys: Iterable[str]) -> None:
        """Index the data ``keys`` for ``where`` (the kernel calls it at start with the union
        of every loaded task's ``indexes``). The driver records the keys in the store, so that
        every process sharing it indexes writes the same way, and indexes the jobs already
        stored. Idempotent; several processes may call it at once. The base implementation
        indexes nothing: ``where`` then always scans."""

    def io_pending(self) -> bool:
        """True while a call waits on a worker thread or socket that the event loop cannot see
        as blocked. A virtual clock waits until this is False before it moves time on."""
        return False

    # --- running jobs --------------------------------------------------------------------

    @abc.abstractmethod
    async def acquire(
        self, *, now: datetime, limit: int, exclude: frozenset[str] = frozenset()
    ) -> Acquired:
        """Claim up to ``limit`` due occurrences (``next_run_at <= now``, not paused).

        Each claim is exclusive across every process sharing the store until it is completed,
        released, or its lease expires (then another worker may claim it again with
        ``attempt`` counted). ``exclude``: task names the kernel cannot run now
        (``max_instances`` reached); a driver should leave their jobs unclaimed when it can.
        Claimed jobs show state RUNNING. Also return the earliest ``next_run_at`` among jobs
        not claimed, so the kernel sleeps exactly until then.
        """

    async def renew(self, claims: Sequence[Claim], now: datetime) -> list[Claim]:
        """Extend the leases of ``claims``; return those whose lease was lost (taken over).

        Only called when ``lease_duration`` is set.
        """
        return []

    @abc.abstractmethod
    async def complete(self, claim: Claim, result: RunResult) -> None:
        """Record how a claimed occurrence ended, atomically (see :class:`RunResult`).

        Updates ``last_run_at``, ``last_outcome``, ``last_error``, ``runs``; then a retry,
        the next occurrence, or the end of the job (retention decides whether a finished job is
        kept; failed jobs are kept as the dead-letter view unless configured otherwise). A claim
        whose lease was lost is ignored. A job paused while running stays paused.
        """

    async def complete_and_acquire(
        self,
        claim: Claim,
        result: RunResult,
        *,
        now: datetime,
        limit: int,
        exclude: frozenset[str] = frozenset(),
    ) -> Acquired:
        """:meth:`complete` ``claim``, then :meth:`acquire` up to ``limit`` claims.

        The kernel calls this instead of :meth:`complete` while it runs, when
        :attr:`fetches_on_complete` is True. A driver that sets that flag does both in one
        round trip; the outcome is recorded (or ignored, as :meth:`complete` says) whatever
        the claiming finds. Raising means neither part is known to have happened.
        """
        await self.complete(claim, result)
        return await self.acquire(now=now, limit=limit, exclude=exclude)

    @abc.abstractmethod
    async def release(self, claims: Sequence[Claim]) -> None:
        """Give claims back unrun (shutdown): they become due again at once for any worker,
        with their attempt not counted."""
