"""Dispatch: the acquire loop, leases and their renewal, recording outcomes (complete) and
giving claims back (release). The workers are :mod:`tickkit.workers`; one run is
:mod:`tickkit.runner`.

One claim goes: ``Dispatcher.dispatch`` (``driver.acquire``) -> ``submit`` (the pool's queue)
-> a worker -> ``Dispatcher._execute`` (plan, then ``Runner.run``) -> ``_complete``
(``driver.complete``), or ``release`` at shutdown.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import anyio

from .models import Claim, Job, Outcome, Plan, RunResult
from .runner import Runner, Worker
from .schedule import Schedule, plan_occurrence
from .workers import WorkerPool

if TYPE_CHECKING:
    from .driver import Driver
    from .kernel import Kernel
    from .manager import Hooks

log = logging.getLogger("tickkit")


class Dispatcher(WorkerPool):
    """The acquire loop, leases, and the record of each claim's outcome, for one started
    kernel; the pool it fills is :class:`tickkit.workers.WorkerPool`."""

    def __init__(self, kernel: Kernel, driver: Driver, hooks: Hooks, *, trio: bool) -> None:
        super().__init__(kernel, trio=trio)
        self.driver = driver
        self.hooks = hooks
        self.runner = Runner(kernel, hooks, self)
        self._dispatch_scope: anyio.CancelScope | None = None

    def spawn(self, fn: Callable[..., Awaitable[object]], *args: object) -> None:
        """Start a kernel-internal task (a run's watchdog)."""
        self.kernel._spawn(fn, *args)

    def plan(self, job: Job, scheduled_at: datetime, attempt: int, now: datetime) -> Plan:
        """What to do with an occurrence now (``DriverContext.plan``)."""
        definition = self.kernel.tasks.get(job.name)
        schedule: Schedule | None = self.hooks.parse_spec(job.schedule) if job.schedule else None
        if definition is None:
            return Plan(True, scheduled_at, 0, None)
        return plan_occurrence(
            schedule,
            scheduled_at,
            now,
            misfire=definition.misfire,
            grace=definition.misfire_grace,
            retry=attempt > 1,
        )

    # --- the acquire loop -----------------------------------------------------------------

    async def dispatch(self) -> None:
        """Claim due occurrences and hand them to the pool; otherwise wait on the clock for the
        next due time, a wake-up or the driver's poll interval."""
        failures = 0
        with anyio.CancelScope() as scope:
            self._dispatch_scope = scope
            while self.running:
                self.kernel._wakeup = anyio.Event()
                now = self.kernel.clock.now()
                try:
                    deadline = await self._take(now)
                except _Again:
                    continue
                except _Stopped:
                    break
                except Exception as exc:
                    failures += 1
                    delay = min(0.5 * 2 ** min(failures, 6), 30.0)
                    log.warning("driver.acquire failed (%s); retrying in %.1fs", exc, delay)
                    await self.kernel.clock.wait_until(
                        now + timedelta(seconds=delay), anyio.Event()
                    )
                    continue
                failures = 0
                if self.driver.poll_interval is not None:
                    poll_at = now + timedelta(seconds=self.driver.poll_interval)
                    deadline = poll_at if deadline is None else min(deadline, poll_at)
                await self.kernel.clock.wait_until(deadline, self.kernel._wakeup)
        self._dispatch_scope = None

    async def _take(self, now: datetime) -> datetime | None:
        """One ``acquire``: submit what it claimed; return when to look again (None: on a
        wake-up). Raises _Again to look again at once, _Stopped when the kernel stopped."""
        free = self.kernel.concurrency - len(self.inflight)
        if free <= 0:
            return None
        # never cut a claiming call short: the store would hold claims the kernel never saw
        # until their leases expire
        with anyio.CancelScope(shield=True):
            acquired = await self.driver.acquire(now=now, limit=free, exclude=self.limits.capped())
        if not self.running:
            await self.give_back(acquired.claims)
            raise _Stopped
        for claim in acquired.claims:
            self.submit(claim)
        if len(acquired.claims) >= free:
            raise _Again
        nd = acquired.next_due
        if nd is not None:
            if nd > now:
                return nd
            if acquired.claims:
                raise _Again
            # else: due but not claimable now (max_instances): a finishing run wakes the
            # dispatcher
        return None

    def stop_dispatch(self) -> None:
        if self._dispatch_scope is not None:
            self._dispatch_scope.cancel()

    async def give_back(self, claims: Sequence[Claim]) -> None:
        """Release claims taken after the kernel began stopping: another worker runs them."""
        held = [c for c in claims if not c.local]
        if not held:
            return
        with anyio.CancelScope(shield=True):
            try:
                await self.driver.release(held)
            except Exception:
                log.exception(
                    "could not release %d job(s) claimed while stopping; their leases will expire",
                    len(held),
                )

    async def renew_leases(self, lease: float) -> None:
        clock = self.kernel.clock
        every = timedelta(seconds=lease / 3)
        while True:
            await clock.sleep_until(clock.now() + every)
            claims = [c for c in self.inflight if not c.local]
            if not claims:
                continue
            try:
                with anyio.CancelScope(shield=True):
                    lost = await self.driver.renew(claims, clock.now())
            except Exception as exc:
                log.warning("renewing %d lease(s) failed: %s", len(claims), exc)
                continue
            # a run that finished while the renewal was in flight gave its claim up itself:
            # only a claim this kernel still holds, and is not recording, was taken over
            finishing = {w.claim for w in self.workers if w.in_store}
            for claim in lost:
                if claim in self.inflight and claim not in finishing:
                    log.warning(
                        "lost the lease on job %s (another worker may run it)", claim.job.id
                    )

    async def _run_claim(self, claim: Claim, worker: Worker) -> None:
        self.limits.claimed(claim.job.name)
        settled = False
        refilled = False
        try:
            try:
                refilled = await self._execute(claim, worker)
            except Exception:
                # a bug in a plugin or driver: never let it stop the kernel; the claim is
                # released so that the job is not lost
                log.exception("internal error while running job %s", claim.job.id)
                if not claim.local and not worker.abandoned:
                    await self.release(claim)
            settled = True
        finally:
            if not worker.abandoned:
                # cancelled (shutdown, past the grace period): release the claim for another
                # worker
                if not settled and not claim.local:
                    with anyio.CancelScope(shield=True):
                        await self.release(claim)
                self._run_ended(claim, refilled=refilled)

    # --- one claim: plan, run, record -----------------------------------------------------

    async def _execute(self, claim: Claim, worker: Worker) -> bool:
        """Run one claim; return what :meth:`_complete` returned."""
        job = claim.job
        now = self.kernel.clock.now()
        if job.defect is not None:
            return await self._fail_unreadable(claim, job.defect, now, worker)
        definition = self.kernel.tasks.get(job.name)
        if definition is None:
            error = f"no task named {job.name!r} is loaded in worker {self.kernel.id}"
            refilled = await self._complete(
                claim, RunResult(Outcome.FAILED, now, error=error), worker
            )
            log.error("job %s: no task named %r is loaded", job.id, job.name)
            return refilled
        try:
            plan = claim.plan or self.plan(job, claim.scheduled_at, claim.attempt, now)
        except Exception as exc:
            # a stored schedule no plugin can read (a bad cron, an unknown zone, a schedule type
            # whose plugin was removed): fail this job once, never claim it in a loop
            return await self._fail_unreadable(
                claim, f"stored schedule {job.schedule!r} cannot be read: {exc}", now, worker
            )
        if plan.missed or not plan.run:
            self.hooks.run_missed(job, plan.scheduled_at, plan.missed, now)
        if not plan.run:
            result = RunResult(Outcome.MISSED, now, next_run_at=plan.next_run_at)
            return await self._complete(claim, result, worker)
        # the max_instances slot is taken inside the run's timeout (see Runner._call) and held
        # by the worker, not by this task: an abandoned run gives it back when it is abandoned
        # (see abandon), so the task's later runs are never blocked by it
        try:
            ran = await self.runner.run(definition, claim, plan, worker)
        finally:
            if not worker.abandoned:
                self.limits.give_back(worker)
        if ran is None:  # abandoned: recorded by whoever abandoned it
            return False
        return await self._complete(claim, ran, worker)

    async def _fail_unreadable(
        self, claim: Claim, reason: str, now: datetime, worker: Worker
    ) -> bool:
        """Complete a claim whose stored record cannot be read as FAILED, once, with no retry
        and no next occurrence: the job ends in the dead-letter view with ``reason``."""
        log.error("job %s cannot be run and is failed: %s", claim.job.id, reason)
        return await self._complete(claim, RunResult(Outcome.FAILED, now, error=reason), worker)

    async def release(self, claim: Claim) -> None:
        try:
            with anyio.CancelScope(shield=True):
                await self.driver.release([claim])
        except Exception:
            log.exception("could not release job %s; its lease will expire", claim.job.id)

    async def _complete(self, claim: Claim, result: RunResult, worker: Worker) -> bool:
        """Record the outcome. Return True when the driver refilled this worker's slot with
        new claims in the same call (the dispatcher then has nothing to do).

        The worker is marked as inside a store call meanwhile: shutdown does not cancel it
        then (a claim taken by a cut-short call would stay claimed)."""
        if claim.local or worker.abandoned:
            return False
        worker.in_store = True
        try:
            if self.driver.fetches_on_complete and self.running:
                return await self._complete_and_acquire(claim, result)
            try:
                if not self.running or worker.scope.cancel_called:
                    with anyio.CancelScope(shield=True):
                        await self.driver.complete(claim, result)
                else:
                    await self.driver.complete(claim, result)
            except Exception:
                log.exception(
                    "could not record the outcome of job %s; its lease will expire and it runs "
                    "again",
                    claim.job.id,
                )
            return False
        finally:
            worker.in_store = False

    async def _complete_and_acquire(self, claim: Claim, result: RunResult) -> bool:
        # the finishing claim's slot counts as free
        free = self.kernel.concurrency - len(self.inflight) + 1
        try:
            acquired = await self.driver.complete_and_acquire(
                claim,
                result,
                now=self.kernel.clock.now(),
                limit=free,
                exclude=self.limits.capped(finishing=claim.job.name),
            )
        except Exception:
            log.exception(
                "could not record the outcome of job %s; its lease will expire and it runs again",
                claim.job.id,
            )
            return False
        if not self.running:
            # taken after stop began: back to the store for another worker
            await self.give_back(acquired.claims)
            return False
        for new in acquired.claims:
            self.submit(new)
        return len(acquired.claims) >= free

    async def record_abandoned(self, claim: Claim, result: RunResult) -> None:
        """Record the result of a run abandoned past its timeout (see Runner._watchdog)."""
        if claim.local:
            return
        with anyio.CancelScope(shield=True):
            try:
                await self.driver.complete(claim, result)
            except Exception:
                log.exception(
                    "could not record the outcome of job %s; its lease will expire",
                    claim.job.id,
                )
        # the retry (or next occurrence) is stored only now: the wake-up of abandon came
        # before it
        self.kernel._wakeup.set()


class _Again(Exception):
    """Look for due jobs again at once."""


class _Stopped(Exception):
    """The kernel stopped while claiming."""
