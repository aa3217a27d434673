"""The kernel's behaviour on the memory driver, with the virtual clock (asyncio and trio)."""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import anyio
import pytest

import tickkit
from tickkit import (
    UTC,
    Backoff,
    DuplicateTaskError,
    InvalidCronError,
    InvalidDataError,
    InvalidJobIdError,
    InvalidScheduleError,
    InvalidTaskError,
    Job,
    JobExistsError,
    JobNotFoundError,
    JobState,
    Kernel,
    KernelNotRunningError,
    Outcome,
    TaskContext,
    TaskRegistry,
    UnknownTaskError,
    UnknownTimezoneError,
    hookimpl,
    task,
)
from tickkit.drivers.memory import MemoryDriver
from tickkit.testing import VirtualClock

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Recorder:
    """A plugin that records every execution hook call."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    @hookimpl
    def tickkit_run_missed(
        self, job: Job, scheduled_at: datetime, count: int, now: datetime
    ) -> None:
        self.events.append(("missed", job.name, scheduled_at, count))

    @hookimpl
    def tickkit_run_skipped(self, ctx: TaskContext) -> None:
        self.events.append(("skipped", ctx.task.name))

    @hookimpl
    def tickkit_run_failed(
        self, ctx: TaskContext, error: BaseException, retry_at: datetime | None, duration: float
    ) -> None:
        self.events.append(("failed", ctx.task.name, ctx.attempt, retry_at))

    @hookimpl
    def tickkit_run_timed_out(
        self, ctx: TaskContext, timeout: float, retry_at: datetime | None
    ) -> None:
        self.events.append(("timed_out", ctx.task.name, ctx.attempt, retry_at))

    @hookimpl
    def tickkit_run_finished(self, ctx: TaskContext, outcome: Outcome, duration: float) -> None:
        self.events.append(("finished", ctx.task.name, str(outcome)))

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        return [e for e in self.events if e[0] == kind]


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(T0)


@pytest.fixture
def registry() -> TaskRegistry:
    return TaskRegistry()


@pytest.fixture
def runs() -> list[TaskContext]:
    return []


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def make_kernel(
    clock: VirtualClock, registry: TaskRegistry, recorder: Recorder
) -> Callable[..., Any]:
    @asynccontextmanager
    async def make(driver: MemoryDriver | None = None, **kw: Any) -> AsyncIterator[Kernel]:
        kernel = Kernel(
            driver or MemoryDriver(keep_completed=True),
            tasks=registry,
            clock=clock,
            plugins=[recorder, *kw.pop("plugins", [])],
            **kw,
        )
        async with kernel:
            yield kernel

    return make


def recording(runs: list[TaskContext], **options: Any) -> Callable[[TaskContext], Any]:
    async def execute(ctx: TaskContext) -> None:
        runs.append(ctx)

    return execute


# --- the API and bad input ------------------------------------------------------------------


async def test_dynamic_task_runs_with_full_context(
    make_kernel: Any, registry: TaskRegistry, clock: VirtualClock
) -> None:
    seen: list[tuple[Any, ...]] = []

    async def prepare(ctx: TaskContext) -> bool:
        ctx.store["prepared"] = True
        return True

    async def execute(ctx: TaskContext) -> str:
        seen.append(
            (
                ctx.data,
                ctx.job_id,
                ctx.scheduled_at,
                ctx.started_at,
                ctx.attempt,
                ctx.store["prepared"],
                ctx.client,
                ctx.kernel,
                ctx.task.name,
            )
        )
        ctx.logger.info("hello")
        return "done"

    task(name="remind", prepare=prepare, execute=execute, registry=registry)
    async with make_kernel(context={"client": "the-bot"}) as k:
        job_id = await k.create_task("remind", {"text": "drink water"}, timedelta(hours=6))
        await clock.advance(timedelta(hours=6))
        assert len(seen) == 1
        data, jid, scheduled, started, attempt, prepared, client, kernel, name = seen[0]
        assert data == {"text": "drink water"}
        assert jid == job_id
        assert scheduled == T0 + timedelta(hours=6)
        assert started == T0 + timedelta(hours=6)
        assert (attempt, prepared, client, kernel, name) == (1, True, "the-bot", k, "remind")
        job = await k.get_task(job_id)
        assert job is not None
        assert job.state is JobState.COMPLETED
        assert job.last_outcome is Outcome.SUCCEEDED


async def test_bad_input_is_refused_before_storing(
    make_kernel: Any, registry: TaskRegistry
) -> None:
    task(name="known", execute=recording([]), registry=registry)
    async with make_kernel() as k:
        with pytest.raises(UnknownTaskError, match="'nope'"):
            await k.create_task("nope")
        with pytest.raises(InvalidCronError, match="'61 \\* \\* \\* \\*'"):
            await k.create_task("known", None, "61 * * * *")
        with pytest.raises(UnknownTimezoneError, match="'Nowhere/City'"):
            await k.create_task(
                "known", None, {"type": "cron", "value": "0 0 * * *", "timezone": "Nowhere/City"}
            )
        with pytest.raises(InvalidDataError, match="set"):
            await k.create_task("known", {1, 2})
        with pytest.raises(InvalidDataError, match="nan"):
            await k.create_task("known", {"x": math.nan})
        with pytest.raises(InvalidDataError, match="object"):
            await k.create_task("known", object())
        # keys json.dumps would turn into strings silently
        with pytest.raises(InvalidDataError, match="got key 1 in"):
            await k.create_task("known", {1: "a"})
        with pytest.raises(InvalidDataError, match="got key None in"):
            await k.create_task("known", {"ok": [{"deep": {None: 1}}]})
        with pytest.raises(InvalidScheduleError, match="'next tuesday'"):
            await k.create_task("known", None, {"type": "date", "value": "next tuesday"})
        with pytest.raises(InvalidJobIdError, match="'a:b'"):
            await k.create_task("known", None, id="a:b")
        await k.create_task("known", 1, T0 + timedelta(days=1), id="mine")
        with pytest.raises(JobExistsError, match="'mine'"):
            await k.create_task("known", 2, id="mine")
        jobs = await k.list_tasks()
        assert [(j.id, j.data) for j in jobs] == [("mine", 1)]
        with pytest.raises(JobNotFoundError, match="'ghost'"):
            await k.pause_task("ghost")
        assert await k.delete_task("ghost") is False


def test_task_definition_errors() -> None:
    registry = TaskRegistry()

    async def run(ctx: TaskContext) -> None:
        pass

    task(name="dup", execute=run, registry=registry)
    with pytest.raises(DuplicateTaskError, match="'dup'"):
        task(name="dup", execute=run, registry=registry)
    with pytest.raises(InvalidCronError):
        task(name="bad-cron", schedule="* * *", execute=run, registry=registry)
    with pytest.raises(InvalidDataError):
        task(name="bad-data", data={"when": datetime.now()}, execute=run, registry=registry)
    with pytest.raises(InvalidTaskError, match="misfire"):
        task(name="bad-misfire", misfire="sometimes", execute=run, registry=registry)
    # a plain def is a task now (run in a worker thread: tests/test_sync_tasks.py); what is
    # not callable is still refused
    with pytest.raises(InvalidTaskError, match="execute must be callable"):
        task(name="not-callable", execute=42, registry=registry)  # type: ignore[arg-type]
    with pytest.raises(InvalidTaskError, match="retries"):
        task(name="neg", retries=-1, execute=run, registry=registry)
    assert registry.names() == ["dup"]


def test_decorator_and_call_forms() -> None:
    registry = TaskRegistry()

    @task(name="refresh-rates", schedule="0 0 * * *", registry=registry)
    async def refresh(ctx: TaskContext) -> None:
        pass

    async def cleanup(ctx: TaskContext) -> None:
        pass

    defined = task(name="cleanup", schedule="*/5 * * * *", execute=cleanup, registry=registry)
    assert refresh.name == "refresh-rates"
    assert defined.schedule is not None and defined.max_instances == 1  # cron default
    dyn = task(name="dyn", execute=cleanup, registry=registry)
    assert dyn.max_instances is None
    assert registry.names() == ["cleanup", "dyn", "refresh-rates"]


async def test_module_level_functions(
    registry: TaskRegistry, clock: VirtualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # module-level functions act on the kernels started in this process: start from none
    monkeypatch.setattr("tickkit.kernel._running", [])
    with pytest.raises(KernelNotRunningError):
        await tickkit.create_task("x")
    ran: list[Any] = []
    task(name="hello", execute=recording(ran), registry=registry)
    tickkit.set_driver(MemoryDriver(keep_completed=True))
    try:
        async with Kernel(tasks=registry, clock=clock):
            job_id = await tickkit.create_task("hello", [1, 2], timedelta(minutes=1))
            assert (await tickkit.get_task(job_id)) is not None
            assert [j.id for j in await tickkit.list_tasks("hello")] == [job_id]
            await tickkit.pause_task(job_id)
            await tickkit.resume_task(job_id)
            await tickkit.run_task_now(job_id)
            await clock.advance(1)
            assert len(ran) == 1
            assert await tickkit.delete_task(job_id) is True
            other = await tickkit.create_task("hello", None, timedelta(hours=1))
            assert await tickkit.delete_tasks(name="hello") == 1
            assert await tickkit.get_task(other) is None
    finally:
        tickkit.set_driver(None)
    with pytest.raises(KernelNotRunningError):
        await tickkit.list_tasks()


# --- static schedules -----------------------------------------------------------------------


async def test_static_cron_in_a_time_zone_for_a_month(
    make_kernel: Any, registry: TaskRegistry, clock: VirtualClock, runs: list[TaskContext]
) -> None:
    task(
        name="morning",
        schedule="0 9 * * *",
        timezone="Europe/Berlin",
        data={"greeting": "moin"},
        execute=recording(runs),
        registry=registry,
    )
    async with make_kernel():
        await clock.advance(timedelta(days=31))
    assert len(runs) == 31
    assert all(r.scheduled_at.astimezone(UTC).hour == 8 for r in runs)  # 09:00 CET
    assert all(r.data == {"greeting": "moin"} for r in runs)
    assert all(r.started_at == r.scheduled_at for r in runs)


async def test_interval_task(
    make_kernel: Any, registry: TaskRegistry, clock: VirtualClock, runs: list[TaskContext]
) -> None:
    task(
        name="tick",
        schedule={"type": "interval", "value": 10},
        execute=recording(runs),
        registry=registry,
    )
    async with make_kernel():
        await clock.advance(timedelta(minutes=1))
    assert [r.scheduled_at - T0 for r in runs] == [timedelta(seconds=10 * i) for i in range(1, 7)]


async def test_immediate_runs_once_at_start(
    make_kernel: Any, registry: TaskRegistry, clock: VirtualClock, runs: list[TaskContext]
) -> None:
    task(
        name="warm",
        schedule="0 * * * *",
        immediate=True,
        execute=recording(runs),
        registry=registry,
    )
    async with make_kernel():
        await clock.advance(timedelta(minutes=30))
        assert [r.scheduled_at for r in runs] == [T0]
        await clock.advance(timedelta(minutes=30))
    assert [r.scheduled_at for r in runs] == [T0, T0 + timedelta(hours=1)]


# --- missed runs --------------------------------------------------------------------------


async def _down_for(
    make_kernel: Any, clock: VirtualClock, hours: float, driver: MemoryDriver
) -> None:
    async with make_kernel(driver):
        await clock.advance(timedelta(minutes=61))  # one run at 01:00
    await clock.advance(timedelta(hours=hours))  # no kernel runs meanwhile


@pytest.mark.parametrize(
    ("misfire", "grace", "expected", "missed"),
    [
        # down from 01:01 to 06:31: 02:00-06:00 were missed (5 occurrences)
        ("once", None, ["01:00", "06:00", "07:00"], [("06:00", 4)]),
        ("all", None, ["01:00", "02:00", "03:00", "04:00", "05:00", "06:00", "07:00"], []),
        ("skip", None, ["01:00", "07:00"], [("02:00", 1)]),
        ("once", 600, ["01:00", "07:00"], [("06:00", 5)]),
        (
            "all",
            3 * 3600,
            ["01:00", "04:00", "05:00", "06:00", "07:00"],
            [("02:00", 1), ("03:00", 1)],
        ),
    ],
)
async def test_restart_catch_up_under_each_misfire_policy(
    make_kernel: Any,
    registry: TaskRegistry,
    clock: VirtualClock,
    runs: list[TaskContext],
    recorder: Recorder,
    misfire: str,
    grace: float | None,
    expected: list[str],
    missed: list[tuple[str, int]],
) -> None:
    task(
        name="hourly",
        schedule="0 * * * *",
        misfire=misfire,
        misfire_grace=grace,
        execute=recording(runs),
        registry=registry,
    )
    driver = MemoryDriver()
    await _down_for(make_kernel, clock, 5.5, driver)
    async with make_kernel(driver):
        await clock.advance(timedelta(minutes=30))  # until 07:01
    assert [r.scheduled_at.strftime("%H:%M") for r in runs] == expected
    assert [(m[2].strftime("%H:%M"), m[3]) for m in recorder.of("missed")] == missed


async def test_clock_jump_while_running_coalesces(
    make_kernel: Any, registry: TaskRegistry, clock: VirtualClock, runs: list[TaskContext]
) -> None:
    task(name="every-10m", schedule="*/10 * * * *", execute=recording(runs), registry=registry)
    async with make_kernel():
        await clock.advance(timedelta(minutes=10))
        await clock.jump(timedelta(hours=2))  # the machine slept
        await clock.advance(timedelta(minutes=10))
    assert [r.scheduled_at - T0 for r in runs] == [
        timedelta(minutes=10),
        timedelta(hours=2, minutes=10),  # one catch-up standing for the latest missed
        timedelta(hours=2, minutes=20),
    ]


async def test_one_off_missed_beyond_grace(
    make_kernel: Any,
    registry: TaskRegistry,
    clock: VirtualClock,
    runs: list[TaskContext],
    recorder: Recorder,
) -> None:
    task(name="strict", misfire_grace=60, execute=recording(runs), registry=registry)
    task(name="lenient", execute=recording(runs), registry=registry)
    driver = MemoryDriver(keep_completed=True)
    async with make_kernel(driver) as k:
        strict = await k.create_task("strict", None, timedelta(minutes=5))
        lenient = await k.create_task("lenient", None, timedelta(minutes=5))
    await clock.advance(timedelta(hours=1))
    async with make_kernel(driver) as k:
        await clock.advance(1)
        assert [r.task.name for r in runs] == ["lenient"]
        strict_job = await k.get_task(strict)
        assert strict_job is not None and strict_job.state is JobState.MISSED
        lenient_job = await k.get_task(lenient)
        assert lenient_job is not None and lenient_job.state is JobState.COMPLETED
    assert recorder.of("missed")[0][1] == "strict"


# --- retries, backoff, timeouts, prepare ---------------------------------------------------


async def test_retries_with_exponential_backoff(
    make_kernel: Any, registry: TaskRegistry, clock: VirtualClock, recorder: Recorder
) -> None:
    starts: list[tuple[int, datetime]] = []

    async def fails(ctx: TaskContext) -> None:
        starts.append((ctx.attempt, ctx.started_at))
        raise ValueError(f"boom {ctx.attempt}")

    task(
        name="fragile",
        retries=3,
        backoff=Backoff.exponential(10, max_delay=25),
        execute=fails,
        registry=registry,
    )
    async with make_kernel() as k:
        job_id = await k.create_task("fragile", {"n": 1})
        await clock.advance(timedelta(minutes=5))
        job = await k.get_task(job_id)
    assert [(a, (t - T0).total_seconds()) for a, t in starts] == [
        (1, 0.0),
        (2, 10.0),
        (3, 30.0),
        (4, 55.0),  # 40 capped at 25
    ]
    assert job is not None
    assert job.state is JobState.FAILED
    assert job.last_error == "ValueError: boom 4"
    assert job.attempt == 4
    assert [e[3] is None for e in recorder.of("failed")] == [False, False, False, True]


def test_backoff_shapes() -> None:
    import random

    fixed = Backoff.coerce(5)
    assert [fixed.delay_for(n) for n in (1, 2, 3)] == [5, 5, 5]
    exp = Backoff.coerce({"type": "exponential", "delay": 2})
    assert [exp.delay_for(n) for n in (1, 2, 3, 4)] == [2, 4, 8, 16]
    jittered = Backoff.exponential(8, jitter=0.5)
    rng = random.Random(7)
    delays = [jittered.delay_for(2, rng) for _ in range(200)]
    assert all(8 <= d <= 16 for d in delays)
    assert len(set(delays)) > 100
    with pytest.raises(InvalidTaskError, match="'sometimes'"):
        Backoff.coerce({"type": "sometimes"})
    with pytest.raises(InvalidTaskError, match="jitter"):
        Backoff.exponential(1, jitter=2)


async def test_timeout_cancels_and_retries(
    make_kernel: Any, registry: TaskRegistry, clock: VirtualClock, recorder: Recorder
) -> None:
    finished: list[int] = []

    async def slow(ctx: TaskContext) -> None:
        await ctx.kernel.clock.sleep(60 if ctx.attempt == 1 else 1)
        finished.append(ctx.attempt)

    task(name="slow", timeout=5, retries=1, backoff=2, execute=slow, registry=registry)
    async with make_kernel() as k:
        job_id = await k.create_task("slow")
        await clock.advance(timedelta(minutes=2))
        job = await k.get_task(job_id)
    assert finished == [2]
    assert recorder.of("timed_out") == [("timed_out", "slow", 1, T0 + timedelta(seconds=7))]
    assert job is not None and job.last_outcome is Outcome.SUCCEEDED


async def test_final_timeout_is_recorded(
    make_kernel: Any, registry: TaskRegistry, clock: VirtualClock
) -> None:
    async def hangs(ctx: TaskContext) -> None:
        await ctx.kernel.clock.sleep(3600)

    task(name="hangs", timeout=timedelta(seconds=30), execute=hangs, registry=registry)
    async with make_kernel() as k:
        job_id = await k.create_task("hangs")
        await clock.advance(timedelta(minutes=1))
        job = await k.get_task(job_id)
    assert job is not None
    assert job.state is JobState.FAILED
    assert job.last_outcome is Outcome.TIMED_OUT
    assert job.last_error == "timed out after 30.0s"


async def test_prepare_false_skips_and_non_bool_is_an_error(
    make_kernel: Any, registry: TaskRegistry, clock: VirtualClock, recorder: Recorder
) -> None:
    executed: list[str] = []

    async def execute(ctx: TaskContext) -> None:
        executed.append(ctx.task.name)

    task(name="gated", prepare=lambda ctx: ctx.data["go"], execute=execute, registry=registry)
    task(name="sloppy", prepare=lambda ctx: "yes", retries=3, execute=execute, registry=registry)
    async with make_kernel() as k:
        skipped = await k.create_task("gated", {"go": False})
        await k.create_task("gated", {"go": True})
        sloppy = await k.create_task("sloppy")
        await clock.advance(timedelta(minutes=5))
        skipped_job = await k.get_task(skipped)
        sloppy_job = await k.get_task(sloppy)
    assert executed == ["gated"]
    assert skipped_job is not None and skipped_job.last_outcome is Outcome.SKIPPED
    assert recorder.of("skipped") == [("skipped", "gated")]
    assert sloppy_job is not None and sloppy_job.state is JobState.FAILED
    assert "returned 'yes'" in (sloppy_job.last_error or "")
    assert [e[2] for e in recorder.of("failed")] == [1]  # a programming error is not retried


async def test_a_failing_task_or_plugin_never_stops_the_kernel(
    make_kernel: Any, registry: TaskRegistry, clock: VirtualClock, runs: list[TaskContext]
) -> None:
    class BrokenPlugin:
        @hookimpl
        def tickkit_run_started(self, ctx: TaskContext) -> None:
            raise RuntimeError("plugin bug")

    exploded: list[int] = []

    async def explode(ctx: TaskContext) -> None:
        exploded.append(ctx.attempt)
        raise KeyError("nope")

    task(name="explode", execute=explode, registry=registry)
    task(name="fine", schedule="* * * * *", execute=recording(runs), registry=registry)
    async with make_kernel(plugins=[BrokenPlugin()]) as k:
        ids = [await k.create_task("explode") for _ in range(5)]
        await clock.advance(timedelta(minutes=3))
        failed = [await k.get_task(job_id) for job_id in ids]
    assert len(runs) == 3
    # every failing run ran once (no retries configured) and is recorded as failed
    assert exploded == [1] * 5
    assert [(j.state, j.last_outcome) for j in failed if j is not None] == [
        (JobState.FAILED, Outcome.FAILED)
    ] * 5
    assert all("KeyError" in (j.last_error or "") for j in failed if j is not None)


async def test_unknown_task_name_fails_clearly(
    make_kernel: Any, registry: TaskRegistry, clock: VirtualClock
) -> None:
    driver = MemoryDriver(keep_completed=True)
    async with make_kernel(driver) as k:
        await driver.add_job(Job(id="orphan", name="gone-task", next_run_at=T0, scheduled_at=T0))
        k.wakeup()
        await clock.advance(1)
        job = await k.get_task("orphan")
    assert job is not None and job.state is JobState.FAILED
    assert "no task named 'gone-task'" in (job.last_error or "")


# --- concurrency, pause, run now, shutdown ------------------------------------------------------


def overlap_recording_tasks(registry: TaskRegistry) -> tuple[dict[str, int], list[str]]:
    """Tasks "a" (max_instances 2) and "b", each run taking 10 s on the clock; returns the peak
    number of overlapping runs (per task and "all") and the names of the finished runs."""
    running: dict[str, int] = {"a": 0, "b": 0, "all": 0}
    peak: dict[str, int] = {"a": 0, "b": 0, "all": 0}
    done: list[str] = []

    def make(name: str) -> Callable[[TaskContext], Any]:
        async def work(ctx: TaskContext) -> None:
            running[name] += 1
            running["all"] += 1
            peak[name] = max(peak[name], running[name])
            peak["all"] = max(peak["all"], running["all"])
            await ctx.kernel.clock.sleep(10)
            running[name] -= 1
            running["all"] -= 1
            done.append(name)

        return work

    task(name="a", max_instances=2, execute=make("a"), registry=registry)
    task(name="b", execute=make("b"), registry=registry)
    return peak, done


async def test_max_instances_and_concurrency(
    make_kernel: Any, registry: TaskRegistry, clock: VirtualClock
) -> None:
    peak, done = overlap_recording_tasks(registry)
    async with make_kernel(concurrency=4) as k:
        for _ in range(6):
            await k.create_task("a")
        for _ in range(6):
            await k.create_task("b")
        await clock.advance(timedelta(minutes=2))
    assert sorted(done) == ["a"] * 6 + ["b"] * 6
    assert peak["a"] == 2
    assert peak["all"] == 4


async def test_cron_runs_never_overlap(
    make_kernel: Any, registry: TaskRegistry, clock: VirtualClock
) -> None:
    spans: list[tuple[datetime, datetime]] = []

    async def long(ctx: TaskContext) -> None:
        start = ctx.kernel.clock.now()
        await ctx.kernel.clock.sleep(150)  # longer than the period
        spans.append((start, ctx.kernel.clock.now()))

    task(name="long", schedule="* * * * *", execute=long, registry=registry)
    # a run is always in flight here: leave without a grace period (it would wait on the clock)
    async with make_kernel(shutdown_timeout=0):
        await clock.advance(timedelta(minutes=10))
    assert len(spans) >= 3
    assert all(b[0] >= a[1] for a, b in itertools.pairwise(spans))


async def test_pause_resume_and_run_now(
    make_kernel: Any, registry: TaskRegistry, clock: VirtualClock, runs: list[TaskContext]
) -> None:
    task(name="hourly", schedule="0 * * * *", execute=recording(runs), registry=registry)
    task(name="later", execute=recording(runs), registry=registry)
    async with make_kernel() as k:
        await k.pause_task("hourly")
        await clock.advance(timedelta(hours=3))
        assert runs == []
        extra = await k.run_task_now("hourly")  # a paused recurring job: one extra run
        await clock.advance(1)
        assert [r.job_id for r in runs] == [extra]
        job = await k.resume_task("hourly")
        assert job.state is JobState.SCHEDULED
        await clock.advance(1)  # the 01:00 occurrence that passed while paused: coalesced
        assert len(runs) == 2
        later = await k.create_task("later", None, timedelta(days=7))
        assert await k.run_task_now(later) == later
        await clock.advance(1)
        assert runs[-1].job_id == later


async def test_shutdown_waits_then_cancels_and_releases(
    registry: TaskRegistry, clock: VirtualClock
) -> None:
    finished: list[str] = []

    async def work(ctx: TaskContext) -> None:
        await ctx.kernel.clock.sleep(ctx.data)
        finished.append(ctx.job_id)

    task(name="work", execute=work, registry=registry)
    driver = MemoryDriver(keep_completed=True)
    kernel = Kernel(driver, tasks=registry, clock=clock, shutdown_timeout=30)
    await kernel.start()
    quick = await kernel.create_task("work", 10, id="quick")
    slow = await kernel.create_task("work", 600, id="slow")
    await clock.advance(1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(kernel.stop)
        await clock.settle()
        assert kernel.state == "stopping"
        await clock.advance(timedelta(seconds=60))
    assert kernel.state == "stopped"
    assert finished == [quick]
    job = await driver.get_job(slow)
    assert job is not None
    assert job.state is JobState.SCHEDULED  # released for another worker
    assert job.attempt == 0  # the cancelled attempt is not counted
    # a new kernel on the same store picks it up
    async with Kernel(driver, tasks=registry, clock=clock):
        await clock.advance(timedelta(minutes=11))
    assert finished == [quick, slow]


async def test_context_logger_carries_run_fields(
    make_kernel: Any, registry: TaskRegistry, clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    async def speak(ctx: TaskContext) -> None:
        ctx.logger.warning("speaking")

    task(name="speak", execute=speak, registry=registry)
    with caplog.at_level(logging.INFO, logger="tickkit"):
        async with make_kernel() as k:
            job_id = await k.create_task("speak")
            await clock.advance(1)
    (record,) = [r for r in caplog.records if r.getMessage() == "speaking"]
    assert (record.task, record.job_id, record.attempt) == ("speak", job_id, 1)  # type: ignore[attr-defined]


async def test_a_stopped_kernel_starts_again(
    registry: TaskRegistry, clock: VirtualClock, runs: list[TaskContext]
) -> None:
    task(name="again", schedule="*/10 * * * *", execute=recording(runs), registry=registry)
    kernel = Kernel(MemoryDriver(), tasks=registry, clock=clock)
    async with kernel:
        await clock.advance(timedelta(minutes=10))
    assert kernel.state == "stopped"
    async with kernel:
        job_id = await kernel.create_task("again")
        await clock.advance(timedelta(minutes=10))
    assert len(runs) == 3
    assert runs[1].job_id == job_id


async def test_run_now_reruns_a_dead_letter(
    make_kernel: Any, registry: TaskRegistry, clock: VirtualClock
) -> None:
    outcomes: list[str] = []

    async def flaky(ctx: TaskContext) -> None:
        outcomes.append(ctx.data["n"])
        if len(outcomes) == 1:
            raise RuntimeError("first run fails")

    task(name="flaky-once", execute=flaky, registry=registry)
    async with make_kernel() as k:
        dead = await k.create_task("flaky-once", {"n": 7})
        await clock.advance(1)
        assert (await k.list_tasks(state="failed"))[0].id == dead
        rerun = await k.run_task_now(dead)
        assert rerun != dead
        await clock.advance(1)
        assert outcomes == [7, 7]
        rerun_job = await k.get_task(rerun)
        assert rerun_job is not None and rerun_job.last_outcome is Outcome.SUCCEEDED
        assert rerun_job.meta["run_now_of"] == dead


async def test_stop_right_after_start_with_a_leasing_driver(
    registry: TaskRegistry, clock: VirtualClock
) -> None:
    class LeasingMemoryDriver(MemoryDriver):
        lease_duration = 30.0

    with anyio.fail_after(10):  # a hang here is the bug: internal tasks not yet started
        async with Kernel(LeasingMemoryDriver(), tasks=registry, clock=clock) as kernel:
            pass
    assert kernel.state == "stopped"


class FetchingMemoryDriver(MemoryDriver):
    """The memory driver, claiming the next jobs as each run is recorded (as BullMQ does),
    counting the calls the kernel makes."""

    fetches_on_complete = True

    def __init__(self) -> None:
        super().__init__(keep_completed=True)
        self.calls = {"acquire": 0, "complete_and_acquire": 0}

    async def acquire(self, **kw: Any) -> Any:
        self.calls["acquire"] += 1
        return await super().acquire(**kw)

    async def complete_and_acquire(self, claim: Any, result: Any, **kw: Any) -> Any:
        self.calls["complete_and_acquire"] += 1
        await self.complete(claim, result)
        return await super().acquire(**kw)


async def test_a_driver_that_fetches_on_complete_refills_slots_without_the_dispatcher(
    make_kernel: Any, registry: TaskRegistry, clock: VirtualClock
) -> None:
    peak, done = overlap_recording_tasks(registry)
    driver = FetchingMemoryDriver()
    async with make_kernel(driver, concurrency=4) as k:
        for _ in range(20):
            await k.create_task("a")
            await k.create_task("b")
        await clock.advance(timedelta(minutes=10))
    assert sorted(done) == ["a"] * 20 + ["b"] * 20
    assert peak["a"] == 2 and peak["all"] == 4  # the caps hold on the refill path too
    assert driver.calls["complete_and_acquire"] == 40  # every outcome went the fused way
    # the dispatcher claimed only when a refill came back short (a capped task, the end)
    assert driver.calls["acquire"] < 40
