"""The driver contract suite: one set of tests every driver must pass.

Use it by subclassing :class:`DriverContract` in a test module and providing a ``make_driver``
fixture that returns a factory: each call returns a new, not yet started driver object. When
``shared_store`` is True, drivers made in one test share one store (several processes on one
database); otherwise each call makes a fresh store::

    from tickkit.testing.contract import DriverContract

    class TestMyDriver(DriverContract):
        shared_store = True

        @pytest.fixture
        def make_driver(self, tmp_path):
            return lambda: MyDriver(tmp_path / "jobs.db")

The tests are ``@pytest.mark.anyio`` tests; they run on every backend in the ``anyio_backend``
fixture (override it in the subclass to pick asyncio only, for example).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import pytest

from .. import (
    UTC,
    Driver,
    Job,
    JobExistsError,
    JobState,
    Kernel,
    Outcome,
    RunResult,
    TaskContext,
    TaskRegistry,
    task,
)
from . import VirtualClock

T0 = datetime(2026, 1, 1, tzinfo=UTC)

pytestmark = pytest.mark.anyio


def contract_tasks(log: list[tuple[str, Any, int]]) -> TaskRegistry:
    """The tasks the contract's kernels run; every run is appended to ``log``."""
    registry = TaskRegistry()

    async def record(ctx: TaskContext) -> None:
        log.append((ctx.task.name, ctx.data, ctx.attempt))

    async def flaky(ctx: TaskContext) -> None:
        log.append((ctx.task.name, ctx.data, ctx.attempt))
        if ctx.attempt < 3:
            raise RuntimeError(f"attempt {ctx.attempt} fails")

    task(name="record", execute=record, registry=registry)
    task(name="other", execute=record, registry=registry)
    task(name="flaky", execute=flaky, retries=2, backoff=10, registry=registry)
    task(name="every-minute", schedule="* * * * *", execute=record, registry=registry)
    return registry


def _job(name: str = "record", at: datetime = T0, **kw: Any) -> Job:
    return Job(
        id=kw.pop("id", None), name=name, next_run_at=at, scheduled_at=at, created_at=T0, **kw
    )


class DriverContract:
    """Subclass and provide ``make_driver``. See the module docstring."""

    pytestmark = [pytest.mark.anyio]

    #: drivers from one ``make_driver`` share one store within a test
    shared_store: bool = False
    #: the driver leaves jobs of ``exclude``-d task names unclaimed
    honours_exclude: bool = True
    #: due jobs are claimed oldest ``next_run_at`` first (False: in the order they became ready,
    #: as BullMQ's FIFO wait list does)
    orders_by_due_time: bool = True
    #: how long the static-cron test runs a minutely task (a network store may shorten it)
    cron_span: timedelta = timedelta(days=1)

    @pytest.fixture
    def make_driver(self) -> Callable[[], Driver]:
        raise NotImplementedError("a DriverContract subclass must provide make_driver")

    @pytest.fixture
    def clock(self) -> VirtualClock:
        return VirtualClock(T0)

    @pytest.fixture
    def runs(self) -> list[tuple[str, Any, int]]:
        return []

    @pytest.fixture
    def open_kernel(
        self,
        make_driver: Callable[[], Driver],
        clock: VirtualClock,
        runs: list[tuple[str, Any, int]],
    ) -> Callable[..., Any]:
        @asynccontextmanager
        async def opener(start: bool = False, **kw: Any) -> AsyncIterator[Kernel]:
            kernel = Kernel(
                make_driver(), tasks=contract_tasks(runs), clock=clock, entry_points=True, **kw
            )
            if start:
                async with kernel:
                    yield kernel
            else:
                await kernel.open()
                try:
                    yield kernel
                finally:
                    await kernel.stop()

        return opener

    # --- storing jobs -------------------------------------------------------------------

    async def test_add_get_roundtrip(self, open_kernel: Any) -> None:
        async with open_kernel() as k:
            data = {"text": "héllo ✓", "n": [1, 2.5, None, True], "nested": {"a": {"b": []}}}
            job_id = await k.create_task("record", data, T0 + timedelta(hours=1))
            job = await k.get_task(job_id)
            assert job is not None
            assert job.id == job_id
            assert job.name == "record"
            assert job.data == data
            assert job.state is JobState.SCHEDULED
            assert job.next_run_at == T0 + timedelta(hours=1)
            assert job.static is False
            assert await k.get_task("no-such-id") is None

    async def test_ids_unique_and_custom(self, open_kernel: Any) -> None:
        async with open_kernel() as k:
            ids = {await k.create_task("record", i) for i in range(20)}
            assert len(ids) == 20
            assert await k.create_task("record", 1, id="mine") == "mine"
            with pytest.raises(JobExistsError, match="mine"):
                await k.create_task("record", 2, id="mine")
            mine = await k.get_task("mine")
            assert mine is not None and mine.data == 1
            await k.create_task("other", 3, id="mine", replace=True)
            job = await k.get_task("mine")
            assert job is not None and job.name == "other" and job.data == 3

    async def test_list_filters_and_order(self, open_kernel: Any) -> None:
        async with open_kernel() as k:
            a = await k.create_task("record", None, T0 + timedelta(hours=3))
            b = await k.create_task("record", None, T0 + timedelta(hours=1))
            c = await k.create_task("other", None, T0 + timedelta(hours=2))
            assert [j.id for j in await k.list_tasks()] == [b, c, a]
            assert [j.id for j in await k.list_tasks("record")] == [b, a]
            assert [j.id for j in await k.list_tasks(limit=2)] == [b, c]
            await k.pause_task(c)
            assert [j.id for j in await k.list_tasks(state="paused")] == [c]

    async def test_remove(self, open_kernel: Any) -> None:
        async with open_kernel() as k:
            a = await k.create_task("record", None, T0 + timedelta(hours=1))
            await k.create_task("record", None, T0 + timedelta(hours=1))
            c = await k.create_task("other", None, T0 + timedelta(hours=1))
            assert await k.delete_task(a) is True
            assert await k.delete_task(a) is False
            assert await k.delete_tasks(name="record") == 1
            assert [j.id for j in await k.list_tasks()] == [c]

    # --- claiming -----------------------------------------------------------------------

    async def test_acquire_due_only_with_next_due(self, open_kernel: Any) -> None:
        async with open_kernel() as k:
            d = k.driver
            due = await d.add_job(_job(at=T0 - timedelta(seconds=1)))
            await d.add_job(_job(at=T0 + timedelta(minutes=5)))
            got = await d.acquire(now=T0, limit=10)
            assert [c.job.id for c in got.claims] == [due]
            assert got.claims[0].attempt == 1
            assert got.next_due == T0 + timedelta(minutes=5)
            again = await d.acquire(now=T0, limit=10)
            assert again.claims == []
            running = await d.get_job(due)
            assert running is not None and running.state is JobState.RUNNING

    async def test_acquire_limit(self, open_kernel: Any) -> None:
        async with open_kernel() as k:
            d = k.driver
            for i in range(7):
                await d.add_job(_job(at=T0 - timedelta(seconds=i)))
            first = await d.acquire(now=T0, limit=3)
            second = await d.acquire(now=T0, limit=10)
            assert len(first.claims) == 3 and len(second.claims) == 4
            ids = [c.job.id for c in first.claims + second.claims]
            assert len(set(ids)) == 7
            if self.orders_by_due_time:
                assert first.claims[0].scheduled_at == T0 - timedelta(seconds=6)

    async def test_exclude(self, open_kernel: Any) -> None:
        async with open_kernel() as k:
            d = k.driver
            record = await d.add_job(_job("record", at=T0 - timedelta(seconds=2)))
            other = await d.add_job(_job("other", at=T0 - timedelta(seconds=1)))
            got = await d.acquire(now=T0, limit=10, exclude=frozenset({"record"}))
            claimed = {c.job.id for c in got.claims}
            if self.honours_exclude:
                assert claimed == {other}
                later = await d.acquire(now=T0, limit=10)
                assert {c.job.id for c in later.claims} == {record}
            else:  # the kernel holds such claims until a slot frees; nothing may be lost
                assert claimed == {record, other}

    async def test_complete_one_off_success_removes_or_completes(self, open_kernel: Any) -> None:
        async with open_kernel() as k:
            d = k.driver
            job_id = await d.add_job(_job(at=T0))
            (claim,) = (await d.acquire(now=T0, limit=1)).claims
            await d.complete(claim, RunResult(Outcome.SUCCEEDED, T0, started_at=T0))
            job = await d.get_job(job_id)
            assert job is None or job.state is JobState.COMPLETED
            assert (await d.acquire(now=T0 + timedelta(days=1), limit=10)).claims == []

    async def test_complete_failure_kept_as_dead_letter(self, open_kernel: Any) -> None:
        async with open_kernel() as k:
            d = k.driver
            job_id = await d.add_job(_job(at=T0))
            (claim,) = (await d.acquire(now=T0, limit=1)).claims
            await d.complete(claim, RunResult(Outcome.FAILED, T0, error="ValueError: boom"))
            job = await d.get_job(job_id)
            assert job is not None
            assert job.state is JobState.FAILED
            assert job.last_error == "ValueError: boom"
            assert job.last_outcome is Outcome.FAILED
            assert [j.id for j in await d.list_jobs(state=JobState.FAILED)] == [job_id]

    async def test_complete_retry(self, open_kernel: Any) -> None:
        async with open_kernel() as k:
            d = k.driver
            job_id = await d.add_job(_job(at=T0))
            (claim,) = (await d.acquire(now=T0, limit=1)).claims
            retry_at = T0 + timedelta(seconds=30)
            await d.complete(claim, RunResult(Outcome.FAILED, T0, retry_at=retry_at, error="x"))
            assert (await d.acquire(now=T0 + timedelta(seconds=29), limit=1)).claims == []
            (again,) = (await d.acquire(now=retry_at, limit=1)).claims
            assert again.job.id == job_id
            assert again.attempt == 2
            assert again.scheduled_at == T0  # the occurrence keeps its nominal time

    async def test_complete_recurring_moves_to_next(self, open_kernel: Any) -> None:
        async with open_kernel() as k:
            d = k.driver
            spec = {"type": "cron", "value": "* * * * *", "timezone": "UTC"}
            job_id = await d.add_job(_job("every-minute", at=T0, schedule=spec))
            (claim,) = (await d.acquire(now=T0, limit=1)).claims
            nxt = T0 + timedelta(minutes=1)
            await d.complete(
                claim, RunResult(Outcome.SUCCEEDED, T0, next_run_at=nxt, started_at=T0)
            )
            job = await d.get_job(job_id)
            assert job is not None
            assert job.state is JobState.SCHEDULED
            assert job.next_run_at == nxt and job.scheduled_at == nxt
            assert job.runs == 1 and job.last_outcome is Outcome.SUCCEEDED
            (claim2,) = (await d.acquire(now=nxt, limit=1)).claims
            assert claim2.scheduled_at == nxt and claim2.attempt == 1

    async def test_complete_and_acquire(self, open_kernel: Any) -> None:
        async with open_kernel() as k:
            d = k.driver
            first = await d.add_job(_job(at=T0 - timedelta(seconds=3)))
            more = [await d.add_job(_job(at=T0 - timedelta(seconds=i))) for i in (2, 1)]
            later = T0 + timedelta(minutes=5)
            await d.add_job(_job(at=later))
            (claim,) = (await d.acquire(now=T0, limit=1)).claims
            got = await d.complete_and_acquire(
                claim, RunResult(Outcome.SUCCEEDED, T0, started_at=T0), now=T0, limit=1
            )
            job = await d.get_job(claim.job.id)
            assert job is None or job.state is JobState.COMPLETED  # the outcome is recorded
            assert len(got.claims) == 1 and got.claims[0].attempt == 1
            rest = await d.complete_and_acquire(
                got.claims[0], RunResult(Outcome.FAILED, T0, error="boom"), now=T0, limit=5
            )
            failed = await d.get_job(got.claims[0].job.id)
            assert failed is not None and failed.state is JobState.FAILED
            claimed = [claim.job.id, got.claims[0].job.id, *(c.job.id for c in rest.claims)]
            assert sorted(claimed) == sorted([first, *more])  # each due job once, in all
            assert rest.next_due == later
            if self.orders_by_due_time:
                assert claimed == [first, *more]

    async def test_complete_and_acquire_ignores_a_lost_claim(self, open_kernel: Any) -> None:
        async with open_kernel() as k:
            d = k.driver
            job_id = await d.add_job(_job(at=T0))
            other = await d.add_job(_job(at=T0))
            (claim,) = (await d.acquire(now=T0, limit=1)).claims
            assert await d.remove_job(claim.job.id)
            got = await d.complete_and_acquire(
                claim, RunResult(Outcome.SUCCEEDED, T0), now=T0, limit=1
            )
            assert await d.get_job(claim.job.id) is None  # removed stays removed
            assert [c.job.id for c in got.claims] == [other if claim.job.id == job_id else job_id]

    async def test_release(self, open_kernel: Any) -> None:
        async with open_kernel() as k:
            d = k.driver
            job_id = await d.add_job(_job(at=T0))
            (claim,) = (await d.acquire(now=T0, limit=1)).claims
            await d.release([claim])
            (again,) = (await d.acquire(now=T0, limit=1)).claims
            assert again.job.id == job_id and again.attempt == 1

    async def test_removed_while_running_stays_removed(self, open_kernel: Any) -> None:
        async with open_kernel() as k:
            d = k.driver
            spec = {"type": "cron", "value": "* * * * *", "timezone": "UTC"}
            job_id = await d.add_job(_job("every-minute", at=T0, schedule=spec))
            (claim,) = (await d.acquire(now=T0, limit=1)).claims
            assert await d.remove_job(job_id)
            await d.complete(
                claim, RunResult(Outcome.SUCCEEDED, T0, next_run_at=T0 + timedelta(minutes=1))
            )
            assert await d.get_job(job_id) is None

    async def test_pause_resume(self, open_kernel: Any) -> None:
        async with open_kernel() as k:
            d = k.driver
            job_id = await d.add_job(_job(at=T0))
            paused = await d.set_paused(job_id, True)
            assert paused is not None and paused.state is JobState.PAUSED
            assert (await d.acquire(now=T0 + timedelta(hours=1), limit=5)).claims == []
            resumed = await d.set_paused(job_id, False)
            assert resumed is not None and resumed.state is JobState.SCHEDULED
            (claim,) = (await d.acquire(now=T0 + timedelta(hours=1), limit=5)).claims
            assert claim.job.id == job_id
            assert await d.set_paused("missing", True) is None

    async def test_move_to(self, open_kernel: Any) -> None:
        async with open_kernel() as k:
            d = k.driver
            job_id = await d.add_job(_job(at=T0 + timedelta(days=3)))
            assert await d.move_to(job_id, T0)
            (claim,) = (await d.acquire(now=T0, limit=5)).claims
            assert claim.job.id == job_id
            assert not await d.move_to("missing", T0)

    async def test_sync_static(self, open_kernel: Any) -> None:
        async with open_kernel() as k:
            d = k.driver
            cron = {"type": "cron", "value": "0 * * * *", "timezone": "UTC"}
            dyn = await d.add_job(_job(at=T0 + timedelta(days=1)))

            def static(name: str, spec: dict[str, Any], at: datetime) -> Job:
                return Job.static_task(name, schedule=spec, recurring=True, first=at, created_at=T0)

            await d.sync_static([static("a", cron, T0), static("b", cron, T0)], T0)
            assert {j.id for j in await d.list_jobs(static=True)} == {"a", "b"}
            # same spec: keeps the stored next run (catch-up); changed spec: takes the new one
            later = T0 + timedelta(hours=5)
            daily = {"type": "cron", "value": "0 0 * * *", "timezone": "UTC"}
            await d.sync_static([static("a", cron, later), static("b", daily, later)], later)
            a, b = await d.get_job("a"), await d.get_job("b")
            assert a is not None and a.next_run_at == T0
            assert b is not None and b.next_run_at == later and b.schedule == daily
            # gone from the code: removed; dynamic jobs untouched
            await d.sync_static([static("a", cron, later)], later)
            assert await d.get_job("b") is None
            assert await d.get_job(dyn) is not None

    # --- through the kernel ---------------------------------------------------------------

    async def test_kernel_runs_dynamic_and_retries(
        self, open_kernel: Any, clock: VirtualClock, runs: list[tuple[str, Any, int]]
    ) -> None:
        async with open_kernel(start=True) as k:
            await k.create_task("record", {"n": 1})
            await k.create_task("record", {"n": 2}, timedelta(minutes=10))
            await k.create_task("flaky", "f")
            await clock.advance(timedelta(seconds=1))
            assert ("record", {"n": 1}, 1) in runs
            assert ("flaky", "f", 1) in runs
            await clock.advance(timedelta(minutes=11))
            assert ("record", {"n": 2}, 1) in runs
            assert [r for r in runs if r[0] == "flaky"] == [
                ("flaky", "f", 1),
                ("flaky", "f", 2),
                ("flaky", "f", 3),
            ]

    async def test_kernel_static_cron_for_a_day(
        self, open_kernel: Any, clock: VirtualClock, runs: list[tuple[str, Any, int]]
    ) -> None:
        async with open_kernel(start=True):
            await clock.advance(self.cron_span)
        minutes = int(self.cron_span.total_seconds() // 60)
        assert len([r for r in runs if r[0] == "every-minute"]) == minutes

    async def test_shared_store_runs_each_job_once(
        self, make_driver: Callable[[], Driver], clock: VirtualClock, runs: list[Any]
    ) -> None:
        # two kernels on one store; a driver whose store cannot be shared across driver objects
        # is shared as one object by both kernels
        first = make_driver()
        second = make_driver() if self.shared_store else first
        k1 = Kernel(first, tasks=contract_tasks(runs), clock=clock)
        k2 = Kernel(second, tasks=contract_tasks(runs), clock=clock)
        async with k1, k2:
            for i in range(200):
                await k1.create_task("record", i)
            await clock.advance(timedelta(seconds=5))
        numbers = sorted(r[1] for r in runs if r[0] == "record")
        assert numbers == list(range(200))
