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
    Cursor,
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
from ..driver import list_order, select_jobs
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
    #: the driver keeps per-minute run counters (``Driver.count_runs`` is not None)
    counts_runs: bool = True
    #: the run-history tests set the driver attribute ``history_limit`` (the driver option of
    #: that name) on a driver not yet started

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

    # --- managing jobs (issue 14): where, paging, counts, updates, run history ------------

    #: task data covering the where rules: numbers (1 == 1.0), bools (True != 1), strings,
    #: null, a missing key, nested values, data that is not an object
    WHERE_DATA: tuple[Any, ...] = (
        {"u": 1},
        {"u": 1.0},
        {"u": True},
        {"u": False},
        {"u": 0},
        {"u": "1"},
        {"u": None},
        {"u": 2, "v": "x"},
        {"u": 1, "v": "x"},
        {"u": {"n": 1}},
        {"u": [1]},
        {"v": 1},
        {},
        [1, "u"],
        "u",
        7,
        None,
        {'q"k': 5, "u": 2.5},
    )
    WHERE_QUERIES: tuple[dict[str, Any], ...] = (
        {"u": 1},
        {"u": 1.0},
        {"u": True},
        {"u": False},
        {"u": 0},
        {"u": "1"},
        {"u": None},
        {"u": 2.5},
        {"u": 1, "v": "x"},
        {"v": "x"},
        {"v": 1},
        {'q"k': 5},
        {"missing": None},
    )

    async def _where_fixture(self, d: Driver) -> dict[str, Any]:
        ids: dict[str, Any] = {}
        for i, data in enumerate(self.WHERE_DATA):
            job_id = await d.add_job(_job(at=T0 + timedelta(minutes=i), data=data))
            ids[job_id] = data
        return ids

    async def test_where_match_rules(self, open_kernel: Any) -> None:
        async with open_kernel() as k:
            d = k.driver
            await self._where_fixture(d)
            every = await d.list_jobs()
            expected = [[j.id for j in select_jobs(every, where=q)] for q in self.WHERE_QUERIES]
            # the rules themselves, on the reference
            by_data = {j.id: j.data for j in every}
            found = {
                repr(q): [by_data[i] for i in e]
                for q, e in zip(self.WHERE_QUERIES, expected, strict=True)
            }
            assert found["{'u': 1}"] == [{"u": 1}, {"u": 1.0}, {"u": 1, "v": "x"}]
            assert found["{'u': 1.0}"] == found["{'u': 1}"]
            assert found["{'u': True}"] == [{"u": True}]
            assert found["{'u': 0}"] == [{"u": 0}]
            assert found["{'u': False}"] == [{"u": False}]
            assert found["{'u': None}"] == [{"u": None}]
            assert found["{'u': '1'}"] == [{"u": "1"}]
            assert found["{'q\"k': 5}"] == [{'q"k': 5, "u": 2.5}]
            assert found["{'missing': None}"] == []
            for indexed in (False, True):
                if indexed:
                    await d.ensure_indexes(["u", "v"])
                for q, want in zip(self.WHERE_QUERIES, expected, strict=True):
                    got = [j.id for j in await d.list_jobs(where=q)]
                    assert got == want, (q, indexed)
                    counts = await d.count_jobs(where=q)
                    assert sum(counts.values()) == len(got), (q, indexed)
                # with the other filters
                got = await d.list_jobs(name="record", where={"u": 1}, limit=2)
                assert [j.data for j in got] == [{"u": 1}, {"u": 1.0}]
                assert await d.list_jobs(name="other", where={"u": 1}) == []

    async def test_ensure_indexes_idempotent_and_shared(
        self, open_kernel: Any, make_driver: Callable[[], Driver], clock: VirtualClock
    ) -> None:
        async with open_kernel() as k:
            d = k.driver
            await self._where_fixture(d)
            before = {
                str(q): [j.id for j in await d.list_jobs(where=q)] for q in self.WHERE_QUERIES
            }
            await d.ensure_indexes(["u"])
            await d.ensure_indexes(["u", "u", "v"])
            await d.ensure_indexes([])
            after = {str(q): [j.id for j in await d.list_jobs(where=q)] for q in self.WHERE_QUERIES}
            assert after == before
            # writes after indexing are indexed: add, update, remove
            new = await d.add_job(_job(at=T0 + timedelta(hours=5), data={"u": 99}))
            assert [j.id for j in await d.list_jobs(where={"u": 99})] == [new]
            await d.update_job(new, data={"u": 98})
            assert await d.list_jobs(where={"u": 99}) == []
            assert [j.id for j in await d.list_jobs(where={"u": 98})] == [new]
            await d.remove_job(new)
            assert await d.list_jobs(where={"u": 98}) == []
            if self.shared_store:
                # another process on the store, which loaded no task, indexes the same way
                other_driver = make_driver()
                async with Kernel(other_driver, tasks=TaskRegistry(), clock=clock):
                    await other_driver.ensure_indexes(["u"])
                    second = await other_driver.add_job(
                        _job(at=T0 + timedelta(hours=6), data={"u": 97})
                    )
                assert [j.id for j in await d.list_jobs(where={"u": 97})] == [second]

    async def test_paging_visits_every_job_once(self, open_kernel: Any) -> None:
        async with open_kernel() as k:
            d = k.driver
            # ties on next_run_at (every 10 jobs share a time): the id breaks them
            ids = [
                await d.add_job(_job(at=T0 + timedelta(minutes=i % 25), data={"i": i}))
                for i in range(250)
            ]
            # two failed jobs (next_run_at None) come last
            for failing in ids[:2]:
                await d.move_to(failing, T0 - timedelta(days=1))
            for claim in (await d.acquire(now=T0 - timedelta(hours=1), limit=10)).claims:
                await d.complete(claim, RunResult(Outcome.FAILED, T0, error="E: x"))
            every = await d.list_jobs()
            assert len(every) == 250
            assert [list_order(j) for j in every] == sorted(list_order(j) for j in every)
            assert [j.next_run_at for j in every[-2:]] == [None, None]
            seen: list[Job] = []
            cursor: Cursor | None = None
            while True:
                page = await d.list_jobs(limit=7, after=cursor)
                assert len(page) <= 7
                if not page:
                    break
                seen.extend(page)
                cursor = Cursor(page[-1].next_run_at, page[-1].id or "")
            assert [j.id for j in seen] == [j.id for j in every]

    async def test_paging_while_jobs_come_and_go(self, open_kernel: Any) -> None:
        async with open_kernel() as k:
            d = k.driver
            start = [
                await d.add_job(_job(at=T0 + timedelta(minutes=i % 40), data={"user": i % 3}))
                for i in range(250)
            ]
            removed: set[str] = set()
            added_later: set[str] = set()
            seen: list[Job] = []
            cursor: Cursor | None = None
            step = 0
            while True:
                page = await d.list_jobs(where={"user": 1}, limit=7, after=cursor)
                if not page:
                    break
                seen.extend(page)
                last = page[-1]
                cursor = Cursor(last.next_run_at, last.id or "")
                step += 1
                # between pages: remove the last job seen (the cursor still holds), remove one
                # not yet seen, add one before the cursor (not listed) and one after it (listed)
                await d.remove_job(last.id or "")
                ahead = [j.id for j in await d.list_jobs(where={"user": 1}, after=cursor, limit=3)]
                if len(ahead) == 3 and ahead[2] is not None:
                    await d.remove_job(ahead[2])
                    removed.add(ahead[2])
                if step > 8:
                    continue  # (adding one per page forever would never end the paging)
                await d.add_job(_job(at=T0 - timedelta(minutes=step), data={"user": 1}))
                added_later.add(
                    await d.add_job(
                        _job(at=T0 + timedelta(hours=5, minutes=step), data={"user": 1})
                    )
                )
            seen_ids = [j.id for j in seen]
            assert len(seen_ids) == len(set(seen_ids))  # each job at most once
            assert [list_order(j) for j in seen] == sorted(list_order(j) for j in seen)
            wanted = {i for n, i in enumerate(start) if n % 3 == 1} - removed
            assert wanted <= set(seen_ids)  # every job there all along, exactly once
            # jobs added after the cursor are reached (unless removed before their page)
            assert added_later - removed <= set(seen_ids)
            assert set(seen_ids) <= wanted | added_later

    async def test_count_jobs_with_filters(self, open_kernel: Any) -> None:
        async with open_kernel() as k:
            d = k.driver
            for i in range(6):
                await d.add_job(_job(at=T0 + timedelta(minutes=i), data={"user": i % 2}))
            other = await d.add_job(_job("other", at=T0, data={"user": 1}))
            await d.set_paused(other, True)
            assert await d.count_jobs() == {JobState.SCHEDULED: 6, JobState.PAUSED: 1}
            assert await d.count_jobs(name="record") == {JobState.SCHEDULED: 6}
            assert await d.count_jobs(where={"user": 1}) == {
                JobState.SCHEDULED: 3,
                JobState.PAUSED: 1,
            }
            assert await d.count_jobs(state=JobState.PAUSED) == {JobState.PAUSED: 1}
            assert await d.count_jobs(name="other", where={"user": 0}) == {}
            assert await d.count_jobs(static=True) == {}

    async def test_count_by_name(self, open_kernel: Any) -> None:
        async with open_kernel() as k:
            d = k.driver
            for i in range(5):
                await d.add_job(_job(at=T0 + timedelta(minutes=i)))
            other = await d.add_job(_job("other", at=T0))
            await d.add_job(_job("other", at=T0 + timedelta(hours=1)))
            await d.set_paused(other, True)
            assert await d.count_by_name() == {"record": 5, "other": 2}
            assert await d.count_by_name(state=JobState.PAUSED) == {"other": 1}
            assert await d.count_by_name(state=JobState.FAILED) == {}
            # through the kernel: in name order, every state in count_by_state
            assert list((await k.count_by_task()).items()) == [("other", 2), ("record", 5)]
            by_state = await k.count_by_state()
            assert set(by_state) == set(JobState)
            assert by_state[JobState.SCHEDULED] == 6 and by_state[JobState.PAUSED] == 1
            assert sum(by_state.values()) == 7
            assert (await k.count_by_state("other"))[JobState.PAUSED] == 1

    async def test_count_runs(self, make_driver: Callable[[], Driver], clock: VirtualClock) -> None:
        driver = make_driver()
        driver.history_limit = 1  # type: ignore[attr-defined]
        kernel = Kernel(driver, tasks=contract_tasks([]), clock=clock)
        await kernel.open()
        try:
            if not self.counts_runs:
                assert await kernel.count_runs(T0) is None
                return
            spec = {"type": "cron", "value": "* * * * *", "timezone": "UTC"}
            await driver.add_job(_job("every-minute", at=T0, schedule=spec))
            at = T0
            outcomes = [Outcome.SUCCEEDED, Outcome.FAILED, Outcome.TIMED_OUT, Outcome.SKIPPED]
            outcomes += [Outcome.MISSED, Outcome.SUCCEEDED]
            for outcome in outcomes:
                (claim,) = (await driver.acquire(now=at, limit=1)).claims
                nxt = at + timedelta(minutes=1)
                done = at + timedelta(seconds=30)
                await driver.complete(
                    claim, RunResult(outcome, done, next_run_at=nxt, started_at=at)
                )
                at = nxt
            counts = await kernel.count_runs(T0)
            assert counts == {
                Outcome.SUCCEEDED: 2,
                Outcome.FAILED: 1,
                Outcome.TIMED_OUT: 1,
                Outcome.SKIPPED: 1,
            }  # MISSED is not a run; history_limit=1 does not thin the counters
            # the minute holding ``since`` counts whole; later minutes only after it
            later = await kernel.count_runs(T0 + timedelta(minutes=2, seconds=59))
            assert later == {
                Outcome.SUCCEEDED: 1,
                Outcome.FAILED: 0,
                Outcome.TIMED_OUT: 1,
                Outcome.SKIPPED: 1,
            }
            none_yet = await kernel.count_runs(T0 + timedelta(hours=1))
            assert none_yet is not None and sum(none_yet.values()) == 0
        finally:
            await kernel.stop()

    async def test_update_job_data_schedule_both_missing(self, open_kernel: Any) -> None:
        async with open_kernel() as k:
            d = k.driver
            job_id = await d.add_job(_job(at=T0 + timedelta(hours=1), data={"user": 1}))
            updated = await d.update_job(job_id, data={"user": 2, "text": "new"})
            assert updated is not None and updated.data == {"user": 2, "text": "new"}
            assert updated.next_run_at == T0 + timedelta(hours=1)
            stored = await d.get_job(job_id)
            assert stored is not None and stored.data == {"user": 2, "text": "new"}
            spec = {"type": "cron", "value": "* * * * *", "timezone": "UTC"}
            later = T0 + timedelta(hours=3)
            updated = await d.update_job(job_id, schedule=spec, next_run_at=later)
            assert updated is not None
            assert updated.schedule == spec and updated.next_run_at == later
            assert updated.scheduled_at == later and updated.attempt == 0
            assert updated.data == {"user": 2, "text": "new"}
            # recurring is data: it follows the new schedule (a spec repeats, None runs once)
            assert updated.recurring
            stored = await d.get_job(job_id)
            assert stored is not None and stored.recurring and stored.schedule == spec
            assert (await d.acquire(now=T0 + timedelta(hours=2), limit=5)).claims == []
            sooner = T0 + timedelta(minutes=30)
            both = await d.update_job(job_id, data=[1], schedule=None, next_run_at=sooner)
            assert both is not None and both.data == [1] and both.schedule is None
            assert both.next_run_at == sooner and both.state is JobState.SCHEDULED
            assert not both.recurring
            stored = await d.get_job(job_id)
            assert stored is not None and not stored.recurring
            (claim,) = (await d.acquire(now=sooner, limit=5)).claims
            assert claim.job.id == job_id and claim.job.data == [1]
            assert claim.scheduled_at == sooner
            assert await d.update_job("no-such-job", data=1) is None
            assert await d.get_job("no-such-job") is None
            paused = await d.add_job(_job(at=T0 + timedelta(hours=1)))
            await d.set_paused(paused, True)
            still = await d.update_job(paused, next_run_at=T0 + timedelta(hours=2))
            assert still is not None and still.state is JobState.PAUSED

    async def test_update_running_job(self, open_kernel: Any) -> None:
        async with open_kernel() as k:
            d = k.driver
            spec = {"type": "cron", "value": "* * * * *", "timezone": "UTC"}
            job_id = await d.add_job(_job("every-minute", at=T0, schedule=spec, data={"v": 1}))
            (claim,) = (await d.acquire(now=T0, limit=1)).claims
            hourly = {"type": "cron", "value": "0 * * * *", "timezone": "UTC"}
            new_at = T0 + timedelta(hours=1)
            updated = await d.update_job(job_id, data={"v": 2}, schedule=hourly, next_run_at=new_at)
            assert updated is not None and updated.data == {"v": 2}
            assert claim.job.data == {"v": 1}  # the running occurrence keeps what it had
            # the running occurrence ends, planning its own next run: the update's stays
            await d.complete(
                claim,
                RunResult(
                    Outcome.SUCCEEDED,
                    T0,
                    next_run_at=T0 + timedelta(minutes=1),
                    started_at=T0,
                ),
            )
            job = await d.get_job(job_id)
            assert job is not None
            assert job.state is JobState.SCHEDULED and job.runs == 1
            assert job.next_run_at == new_at and job.schedule == hourly
            assert job.data == {"v": 2} and job.last_outcome is Outcome.SUCCEEDED
            assert (await d.acquire(now=new_at - timedelta(seconds=1), limit=1)).claims == []
            (nxt,) = (await d.acquire(now=new_at, limit=1)).claims
            assert nxt.job.data == {"v": 2} and nxt.scheduled_at == new_at
            # a data-only change while running: the completion plans the next run as usual
            await d.update_job(job_id, data={"v": 3})
            after = new_at + timedelta(hours=1)
            await d.complete(
                nxt, RunResult(Outcome.SUCCEEDED, new_at, next_run_at=after, started_at=new_at)
            )
            job = await d.get_job(job_id)
            assert job is not None and job.next_run_at == after and job.data == {"v": 3}
            # a one-off rescheduled while its last attempt fails: it runs again at the new time
            one = await d.add_job(_job(at=T0, data="x"))
            (claim,) = (await d.acquire(now=T0, limit=1)).claims
            again = T0 + timedelta(days=1)
            await d.update_job(one, next_run_at=again)
            await d.complete(claim, RunResult(Outcome.FAILED, T0, error="E: x"))
            job = await d.get_job(one)
            assert job is not None and job.state is JobState.SCHEDULED
            assert job.next_run_at == again and job.attempt == 0
            # a claim given back unrun (shutdown) after an update: the updated time stands
            assert await d.remove_job(job_id)
            (claim,) = (await d.acquire(now=again, limit=1)).claims
            assert claim.job.id == one
            last = again + timedelta(days=1)
            await d.update_job(one, data="y", next_run_at=last)
            await d.release([claim])
            job = await d.get_job(one)
            assert job is not None and job.state is JobState.SCHEDULED
            assert job.next_run_at == last and job.data == "y"
            assert (await d.acquire(now=last - timedelta(seconds=1), limit=1)).claims == []
            (claim,) = (await d.acquire(now=last, limit=1)).claims
            assert claim.job.data == "y"

    async def test_get_runs_history(self, open_kernel: Any) -> None:
        async with open_kernel() as k:
            d = k.driver
            job_id = await d.add_job(_job(at=T0, data={"n": 1}))
            (first,) = (await d.acquire(now=T0, limit=1)).claims
            t1 = T0 + timedelta(seconds=1)
            await d.complete(
                first,
                RunResult(
                    Outcome.FAILED,
                    t1,
                    retry_at=T0 + timedelta(seconds=10),
                    error="ValueError: boom",
                    traceback="Traceback (most recent call last):\nValueError: boom\n",
                    started_at=T0,
                ),
            )
            (second,) = (await d.acquire(now=T0 + timedelta(seconds=10), limit=1)).claims
            t2 = T0 + timedelta(seconds=11)
            await d.complete(
                second, RunResult(Outcome.SUCCEEDED, t2, started_at=T0 + timedelta(seconds=10))
            )
            runs = await d.get_runs(job_id)
            assert [(r.attempt, r.outcome) for r in runs] == [
                (2, Outcome.SUCCEEDED),
                (1, Outcome.FAILED),
            ]
            newest, oldest = runs
            assert newest.finished_at == t2 and newest.error is None
            assert newest.started_at == T0 + timedelta(seconds=10)
            assert oldest.error is not None and "Traceback" in oldest.error
            assert oldest.finished_at == t1 and oldest.started_at == T0
            assert {r.scheduled_at for r in runs} == {T0}
            assert {r.job_id for r in runs} == {job_id}
            assert {r.name for r in runs} == {"record"}
            assert {r.worker for r in runs} == {d.ctx.owner}
            # the job ended (removed or kept as completed): its history is still there
            assert [r.attempt for r in await d.get_runs(job_id)] == [2, 1]
            assert [r.attempt for r in await d.get_runs(job_id, limit=1)] == [2]
            await d.remove_job(job_id)
            assert len(await d.get_runs(job_id)) == 2
            assert await d.get_runs("no-such-job") == []

    async def test_get_runs_through_the_kernel(self, open_kernel: Any, clock: VirtualClock) -> None:
        async with open_kernel(start=True) as k:
            job_id = await k.create_task("flaky", "f")
            await clock.advance(timedelta(minutes=5))
            runs = await k.driver.get_runs(job_id)
            assert [(r.attempt, r.outcome) for r in runs] == [
                (3, Outcome.SUCCEEDED),
                (2, Outcome.FAILED),
                (1, Outcome.FAILED),
            ]
            assert runs[2].error is not None and "RuntimeError: attempt 1 fails" in runs[2].error
            assert "Traceback" in runs[2].error
            assert {r.worker for r in runs} == {k.driver.ctx.owner}

    async def test_history_limit_and_age(
        self, make_driver: Callable[[], Driver], clock: VirtualClock, runs: list[Any]
    ) -> None:
        driver = make_driver()
        driver.history_limit = 3  # type: ignore[attr-defined]
        kernel = Kernel(driver, tasks=contract_tasks(runs), clock=clock)
        await kernel.open()
        try:
            d = driver
            spec = {"type": "cron", "value": "* * * * *", "timezone": "UTC"}
            job_id = await d.add_job(_job("every-minute", at=T0, schedule=spec))
            at = T0
            for _ in range(5):
                (claim,) = (await d.acquire(now=at, limit=1)).claims
                nxt = at + timedelta(minutes=1)
                await d.complete(
                    claim, RunResult(Outcome.SUCCEEDED, at, next_run_at=nxt, started_at=at)
                )
                at = nxt
            kept = await d.get_runs(job_id, limit=10)
            assert [r.finished_at for r in kept] == [T0 + timedelta(minutes=m) for m in (4, 3, 2)]
            # runs older than history_max_age (7 days by default) are not kept
            old = await d.add_job(_job(at=T0))
            (claim,) = (await d.acquire(now=T0, limit=1)).claims
            assert claim.job.id == old
            await d.complete(
                claim,
                RunResult(
                    Outcome.FAILED, T0 - timedelta(days=8), started_at=T0 - timedelta(days=8)
                ),
            )
            assert await d.get_runs(old) == []
        finally:
            await kernel.stop()
