"""The worker pool: long-lived worker tasks that run claims one after another, and
``max_instances`` (:class:`InstanceLimits`, its one owner).

Workers are not children of a task group: a run that ignores its cancellation must not keep
the kernel from stopping, and anyio's task groups wait for every child. A worker is a plain
asyncio task (on trio a system task) tracked in ``WorkerPool.workers``; shutdown cancels the
workers and abandons (:meth:`WorkerPool.abandon`) those still running after ``cancel_grace``:
their claims are released and their ``max_instances`` slots given back.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import deque
from datetime import timedelta
from typing import TYPE_CHECKING

import anyio

from .models import Claim
from .runner import Worker, contains

if TYPE_CHECKING:
    from .kernel import Kernel
    from .registry import TaskDefinition, TaskRegistry

log = logging.getLogger("tickkit")

#: the kernel worker the current task is, if any
_current_worker: contextvars.ContextVar[Worker | None] = contextvars.ContextVar(
    "tickkit_worker", default=None
)


def current_worker() -> Worker | None:
    """The worker of the pool the current task runs in (None outside a run)."""
    return _current_worker.get()


class InstanceLimits:
    """``max_instances``, enforced here only.

    ``held`` counts the claims of each task this kernel's workers hold: the tasks at
    their limit are left out of ``driver.acquire`` (:meth:`capped`). A store may still hand out
    more (one that ignores ``exclude``, a run started at kernel start): the run then waits for a
    slot of the task's semaphore (:meth:`take`), which its worker holds until the run ends or
    is abandoned (:meth:`give_back`)."""

    def __init__(self, tasks: TaskRegistry) -> None:
        self._tasks = tasks
        self._held: dict[str, int] = {}
        self._slots: dict[str, tuple[int, anyio.Semaphore]] = {}

    def claimed(self, name: str) -> None:
        self._held[name] = self._held.get(name, 0) + 1

    def ended(self, name: str) -> None:
        left = self._held.get(name, 1) - 1
        if left:
            self._held[name] = left
        else:
            self._held.pop(name, None)

    def capped(self, finishing: str | None = None) -> frozenset[str]:
        """Task names at their ``max_instances`` (``finishing``: one run of that task is
        about to end and does not count)."""
        capped = []
        for name, held in self._held.items():
            definition = self._tasks.get(name)
            limit = definition.max_instances if definition is not None else None
            if name == finishing:
                held -= 1
            if limit is not None and held >= limit:
                capped.append(name)
        return frozenset(capped)

    def semaphore(self, definition: TaskDefinition) -> anyio.Semaphore | None:
        if definition.max_instances is None:
            return None
        entry = self._slots.get(definition.name)
        if entry is None or entry[0] != definition.max_instances:
            entry = self._slots[definition.name] = (
                definition.max_instances,
                anyio.Semaphore(definition.max_instances),
            )
        return entry[1]

    async def take(self, definition: TaskDefinition, worker: Worker) -> None:
        """Wait for a slot of the task, held by ``worker`` until the run ends or is abandoned."""
        slot = self.semaphore(definition)
        if slot is not None:
            await slot.acquire()
            worker.slot = slot

    @staticmethod
    def give_back(worker: Worker) -> None:
        """Give back the slot the worker's run holds (once)."""
        slot, worker.slot = worker.slot, None
        if slot is not None:
            slot.release()


class WorkerPool:
    """The workers of one started kernel and the claims they hold (``inflight``).

    Subclassed by :class:`tickkit.dispatch.Dispatcher`, which runs a claim (``_run_claim``)
    and gives one back to the store (``release``).

    The queue is a deque with one wake-up event per idle worker, not a memory object stream:
    a claim handed to a worker whose wait is cancelled at that moment (shutdown) could be lost
    with a stream, while one left in the deque is released to the store at shutdown."""

    def __init__(self, kernel: Kernel, *, trio: bool) -> None:
        self.kernel = kernel
        self.trio = trio
        self.limits = InstanceLimits(kernel.tasks)
        #: claims this kernel holds: queued for a worker or running
        self.inflight: set[Claim] = set()
        self._queue: deque[Claim] = deque()
        self._idle: list[anyio.Event] = []
        #: the worker tasks (see _start_worker); abandoned ones are not in it
        self.workers: set[Worker] = set()
        self._workers_changed: anyio.Event | None = None
        #: strong references to detached asyncio tasks (the event loop keeps weak ones)
        self._detached: set[asyncio.Task[None]] = set()
        #: set when the last claim in flight ends (shutdown waits for it)
        self._drained: anyio.Event | None = None

    @property
    def running(self) -> bool:
        return self.kernel.running

    async def _run_claim(self, claim: Claim, worker: Worker) -> None:
        raise NotImplementedError

    async def release(self, claim: Claim) -> None:
        raise NotImplementedError

    # --- the worker pool ------------------------------------------------------------------

    def submit(self, claim: Claim) -> None:
        """Hand a claim to the worker pool: an idle worker takes it, or a new worker starts
        (at most ``concurrency`` of them). Workers are long-lived tasks, so a run costs no task
        creation and no cancel scope of its own."""
        self.inflight.add(claim)
        self._queue.append(claim)
        if self._idle:
            self._idle.pop().set()
        elif len(self.workers) < self.kernel.concurrency:
            self._start_worker()

    def _start_worker(self) -> None:
        """Start a worker in a task of its own that the kernel does not have to await.

        Structured concurrency forbids leaving a child behind, and a task that ignores its
        cancellation must not keep the kernel from stopping (anyio's task groups wait for every
        child): workers run in a plain asyncio task (trio: a system task), tracked here in
        ``workers``; :meth:`stop_workers` abandons those that outlive ``cancel_grace``."""
        worker = Worker()
        self.workers.add(worker)
        if self.trio:
            import trio

            trio.lowlevel.spawn_system_task(
                self._worker_trio, worker, name="tickkit worker", context=contextvars.copy_context()
            )
        else:
            task = asyncio.get_running_loop().create_task(self._worker(worker))
            self._detached.add(task)
            # a done callback, not a finally: it also runs for a task cancelled before it ran
            task.add_done_callback(lambda t: self._worker_done(worker, t))

    def _worker_done(self, worker: Worker, task: asyncio.Task[None]) -> None:
        self._detached.discard(task)
        self._worker_ended(worker)
        if not task.cancelled():
            exc = task.exception()
            if exc is not None:
                log.error("tickkit worker failed", exc_info=exc)

    async def _worker_trio(self, worker: Worker) -> None:
        # a system task must never raise: trio would end the whole run
        try:
            await self._worker(worker)
        except BaseException as exc:
            if not isinstance(exc, anyio.get_cancelled_exc_class()):
                log.error("tickkit worker failed", exc_info=exc)
        finally:
            self._worker_ended(worker)

    def _worker_ended(self, worker: Worker) -> None:
        if worker in self.workers:
            self.workers.discard(worker)
            if self._workers_changed is not None:
                self._workers_changed.set()
            if (
                self.running
                and self._queue
                and not self._idle
                and len(self.workers) < self.kernel.concurrency
            ):
                self._start_worker()  # claims still queued: a worker takes its place

    async def _worker(self, worker: Worker) -> None:
        _current_worker.set(worker)
        queue = self._queue
        try:
            with worker.scope:
                while True:
                    if not queue:
                        idle = anyio.Event()
                        self._idle.append(idle)
                        try:
                            await idle.wait()
                        finally:
                            if not idle.is_set():
                                self._idle.remove(idle)
                        continue
                    claim = queue.popleft()
                    worker.claim = claim
                    await self._run_claim(claim, worker)
                    if worker.abandoned:
                        return
                    worker.claim = None
                    if worker.retire or worker.scope.cancel_called:
                        return
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt) or contains(exc, KeyboardInterrupt):
                self.kernel._raise_in_kernel(exc)
                return
            raise
        finally:
            if not worker.abandoned:
                self._worker_ended(worker)

    def abandon(self, worker: Worker) -> Claim | None:
        """Stop waiting for a worker whose run ignores its cancellation: it leaves the pool
        and the run's bookkeeping ends now. Return the claim it held (None if it held none or
        was abandoned already); the caller records or releases it."""
        if worker.abandoned:
            return None
        worker.abandoned = True
        self.limits.give_back(worker)
        self._worker_ended(worker)
        claim = worker.claim
        if claim is None:
            return None
        self._run_ended(claim, refilled=False)
        return claim

    def _run_ended(self, claim: Claim, *, refilled: bool) -> None:
        self.inflight.discard(claim)
        self.limits.ended(claim.job.name)
        if not refilled:
            # a slot is free, or a max_instances cap may have lifted
            self.kernel._wakeup.set()
        if self._drained is not None and not self.inflight:
            self._drained.set()

    # --- shutdown -------------------------------------------------------------------------

    async def drain(self, grace: float) -> None:
        """Wait up to ``grace`` seconds (kernel clock) for the claims in flight to end."""
        clock = self.kernel.clock
        deadline = clock.now() + timedelta(seconds=grace)
        while self.inflight and clock.now() < deadline:
            done = anyio.Event()
            self._drained = done
            await clock.wait_until(deadline, done)

    async def stop_workers(self) -> None:
        """Cancel the workers; abandon those whose run ignores it for ``cancel_grace``.

        A worker inside a store call is not cancelled (a claim taken by a call cut short would
        stay claimed until its lease expires): it ends when the call returns."""
        for worker in list(self.workers):
            if worker.in_store:
                worker.retire = True
            else:
                worker.scope.cancel()
        clock = self.kernel.clock
        deadline = clock.now() + timedelta(seconds=self.kernel.cancel_grace)
        while self.workers and clock.now() < deadline:
            changed = anyio.Event()
            self._workers_changed = changed
            await clock.wait_until(deadline, changed)
        for worker in list(self.workers):
            claim = self.abandon(worker)
            if claim is None:
                continue
            log.error(
                "job %s (task %s) ignored its cancellation at shutdown for %ss: abandoned; its "
                "claim is released for another worker and the run is left to end on its own",
                claim.job.id,
                claim.job.name,
                self.kernel.cancel_grace,
            )
            if not claim.local:
                await self.release(claim)

    async def release_queued(self) -> None:
        """Claims handed to the pool that no worker started yet go back to the store."""
        while self._queue:
            claim = self._queue.popleft()
            self.inflight.discard(claim)
            if not claim.local:
                await self.release(claim)
