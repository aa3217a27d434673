"""Plain ``def`` prepare and execute functions: run in a worker thread (anyio's thread pool,
``Kernel(thread_limit=...)``), with the timeout, retries and hooks of async tasks.

The threads block on ``threading.Event``s the tests control, and every test releases them in a
``finally`` (anyio's asyncio worker threads are not daemon threads: conftest.py fails the run
if one is left behind)."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime, timedelta
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import pytest

from tickkit import (
    UTC,
    InvalidArgumentError,
    Job,
    JobState,
    Kernel,
    Outcome,
    TaskContext,
    TaskRegistry,
    hookimpl,
    task,
)
from tickkit.drivers.memory import MemoryDriver
from tickkit.testing import VirtualClock

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Recorder:
    """Records the execution hooks, and the thread each hook runs in."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.wrapped: list[str] = []

    @hookimpl
    def tickkit_wrap_run(self, ctx: TaskContext) -> Any:
        @asynccontextmanager
        async def wrap() -> AsyncIterator[None]:
            self.wrapped.append("enter")
            yield
            self.wrapped.append("exit")

        return wrap()

    @hookimpl
    def tickkit_run_started(self, ctx: TaskContext) -> None:
        self.events.append(("started", ctx.task.name, ctx.attempt))

    @hookimpl
    def tickkit_run_succeeded(self, ctx: TaskContext, result: Any, duration: float) -> None:
        self.events.append(("succeeded", ctx.task.name, result))

    @hookimpl
    def tickkit_run_skipped(self, ctx: TaskContext) -> None:
        self.events.append(("skipped", ctx.task.name))

    @hookimpl
    def tickkit_run_failed(
        self, ctx: TaskContext, error: BaseException, retry_at: datetime | None, duration: float
    ) -> None:
        self.events.append(("failed", ctx.task.name, ctx.attempt, type(error).__name__))

    @hookimpl
    def tickkit_run_timed_out(
        self, ctx: TaskContext, timeout: float, retry_at: datetime | None
    ) -> None:
        self.events.append(("timed_out", ctx.task.name, ctx.attempt))

    @hookimpl
    def tickkit_run_finished(self, ctx: TaskContext, outcome: Outcome, duration: float) -> None:
        self.events.append(("finished", ctx.task.name, str(outcome)))

    def kinds(self) -> list[str]:
        return [e[0] for e in self.events]


@contextmanager
def gates(count: int = 1) -> Iterator[list[threading.Event]]:
    """Events the test's threads wait on; all set at the end, whatever happened."""
    made = [threading.Event() for _ in range(count)]
    try:
        yield made
    finally:
        for gate in made:
            gate.set()


async def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    """Wait (real time, any backend) for a worker thread to get somewhere."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds}s waiting for {what}")
        await anyio.sleep(0.01)


def _kernel(registry: TaskRegistry, clock: VirtualClock, recorder: Recorder, **kw: Any) -> Kernel:
    return Kernel(
        MemoryDriver(keep_completed=True),
        tasks=registry,
        clock=clock,
        plugins=[recorder],
        entry_points=False,
        **kw,
    )


async def _job(kernel: Kernel, job_id: str) -> Job:
    job = await kernel.get_task(job_id)
    assert job is not None
    return job


async def test_a_plain_def_runs_in_a_worker_thread_with_the_hooks() -> None:
    registry = TaskRegistry()
    seen: list[tuple[str, Any]] = []
    loop_thread = threading.get_ident()

    def gate(ctx: TaskContext) -> bool:
        seen.append(("prepare", threading.get_ident()))
        return bool(ctx.data["go"])

    def add(ctx: TaskContext) -> int:
        seen.append(("execute", threading.get_ident()))
        ctx.store["seen"] = True  # the run's store is shared with prepare
        return int(ctx.data["a"]) + int(ctx.data["b"])

    task(name="add", prepare=gate, execute=add, registry=registry)
    clock, recorder = VirtualClock(T0), Recorder()
    with anyio.fail_after(10):
        async with _kernel(registry, clock, recorder) as kernel:
            ran = await kernel.create_task("add", {"a": 2, "b": 3, "go": True})
            skipped = await kernel.create_task("add", {"a": 0, "b": 0, "go": False})
            await clock.advance(1)
            assert (await _job(kernel, ran)).last_outcome is Outcome.SUCCEEDED
            assert (await _job(kernel, skipped)).last_outcome is Outcome.SKIPPED
    assert sorted(what for what, _ in seen) == ["execute", "prepare", "prepare"]
    assert all(ident != loop_thread for _, ident in seen), "a plain def ran on the event loop"
    assert ("succeeded", "add", 5) in recorder.events
    assert ("skipped", "add") in recorder.events
    assert recorder.kinds().count("started") == 2
    assert recorder.kinds().count("finished") == 2
    assert sorted(recorder.wrapped) == ["enter", "enter", "exit", "exit"]


async def test_an_exception_in_the_thread_is_a_failed_run_then_retried() -> None:
    registry = TaskRegistry()

    def flaky(ctx: TaskContext) -> str:
        if ctx.attempt == 1:
            raise ValueError("no coffee in the thread")
        return "ok"

    task(name="flaky", execute=flaky, retries=1, backoff=5, registry=registry)
    clock, recorder = VirtualClock(T0), Recorder()
    with anyio.fail_after(10):
        async with _kernel(registry, clock, recorder) as kernel:
            job_id = await kernel.create_task("flaky")
            await clock.advance(1)
            job = await _job(kernel, job_id)
            assert job.state is JobState.SCHEDULED and job.last_outcome is Outcome.FAILED
            runs = await kernel.get_runs(job_id)
            assert runs[0].outcome is Outcome.FAILED
            assert runs[0].error is not None
            assert "Traceback" in runs[0].error and "no coffee in the thread" in runs[0].error
            assert "in flaky" in runs[0].error  # the thread's own frame
            await clock.advance(5)
            assert (await _job(kernel, job_id)).last_outcome is Outcome.SUCCEEDED
    assert ("failed", "flaky", 1, "ValueError") in recorder.events
    assert ("succeeded", "flaky", "ok") in recorder.events


async def test_a_timeout_is_recorded_at_the_deadline_and_the_thread_ends_later() -> None:
    registry = TaskRegistry()
    ended: list[int] = []

    with gates() as (gate,):

        def stuck(ctx: TaskContext) -> str:
            gate.wait(10)
            ended.append(ctx.attempt)
            return "too late"

        task(name="stuck", execute=stuck, timeout=2, retries=1, backoff=3, registry=registry)
        clock, recorder = VirtualClock(T0), Recorder()
        with anyio.fail_after(15):
            async with _kernel(registry, clock, recorder, cancel_grace=1) as kernel:
                job_id = await kernel.create_task("stuck")
                await clock.advance(2)
                job = await _job(kernel, job_id)
                # recorded at the deadline, with a retry, while the thread still waits
                assert job.last_outcome is Outcome.TIMED_OUT, job
                assert job.next_run_at == T0 + timedelta(seconds=5)
                assert ended == []
                assert ("timed_out", "stuck", 1) in recorder.events
                gate.set()  # the abandoned thread ends; what it returns is dropped
                await wait_for(lambda: ended == [1], 5, "the abandoned thread to end")
                await clock.advance(3)  # the retry runs (the gate is open now)
                await wait_for(lambda: ended == [1, 2], 5, "the retry's thread to end")
                await clock.advance(0)
                assert (await _job(kernel, job_id)).last_outcome is Outcome.SUCCEEDED
    succeeded = [e for e in recorder.events if e[0] == "succeeded"]
    assert succeeded == [("succeeded", "stuck", "too late")]  # the retry's, not attempt 1's


async def test_a_timed_out_thread_gives_its_max_instances_slot_back_when_recorded() -> None:
    registry = TaskRegistry()
    started: list[int] = []
    ended: list[int] = []

    with gates(2) as opened:

        def stuck(ctx: TaskContext) -> None:
            started.append(ctx.attempt)
            opened[ctx.attempt - 1].wait(10)
            ended.append(ctx.attempt)

        task(
            name="stuck",
            execute=stuck,
            timeout=2,
            retries=1,
            backoff=1,
            max_instances=1,
            registry=registry,
        )
        clock, recorder = VirtualClock(T0), Recorder()
        with anyio.fail_after(15):
            async with _kernel(
                registry, clock, recorder, cancel_grace=1, shutdown_timeout=0
            ) as kernel:
                await kernel.create_task("stuck")
                await clock.advance(2)  # attempt 1 times out; its thread still waits
                await clock.advance(1)  # the retry is due: it takes the slot at once
                await wait_for(lambda: started == [1, 2], 5, "the retry to start")
                assert ended == [], "the retry started while attempt 1's thread still runs"
                opened[1].set()
                await wait_for(lambda: "succeeded" in recorder.kinds(), 5, "the retry's record")
                assert ended == [2]
                opened[0].set()
                await wait_for(lambda: ended == [2, 1], 5, "attempt 1's thread to end")
    assert [e for e in recorder.events if e[0] in ("timed_out", "succeeded")] == [
        ("timed_out", "stuck", 1),
        ("succeeded", "stuck", None),
    ]


async def test_the_thread_limit_is_honoured() -> None:
    registry = TaskRegistry()
    lock = threading.Lock()
    running: list[int] = []
    most = [0]

    with gates() as (gate,):

        def wide(ctx: TaskContext) -> None:
            with lock:
                running.append(ctx.data["n"])
                most[0] = max(most[0], len(running))
            gate.wait(10)
            with lock:
                running.remove(ctx.data["n"])

        task(name="wide", execute=wide, registry=registry)
        clock, recorder = VirtualClock(T0), Recorder()
        with anyio.fail_after(15):
            async with _kernel(registry, clock, recorder, thread_limit=2) as kernel:
                ids = [await kernel.create_task("wide", {"n": n}) for n in range(3)]
                await clock.advance(1)
                await wait_for(lambda: len(running) == 2, 5, "two threads to start")
                await anyio.sleep(0.1)  # a third thread would have started by now
                assert len(running) == 2 and most[0] == 2
                gate.set()
                await wait_for(lambda: recorder.kinds().count("finished") == 3, 5, "3 runs")
                for job_id in ids:
                    assert (await _job(kernel, job_id)).last_outcome is Outcome.SUCCEEDED
    assert most[0] == 2


async def test_stop_never_waits_for_a_blocked_thread() -> None:
    registry = TaskRegistry()
    started = threading.Event()

    with gates() as (gate,):

        def blocked(ctx: TaskContext) -> None:
            started.set()
            gate.wait(10)

        task(name="blocked", execute=blocked, registry=registry)
        clock, recorder = VirtualClock(T0), Recorder()
        kernel = _kernel(registry, clock, recorder, shutdown_timeout=0, cancel_grace=0.2)
        with anyio.fail_after(10):
            async with kernel:
                job_id = await kernel.create_task("blocked")
                await clock.advance(1)
                await wait_for(started.is_set, 5, "the thread to start")
                began = time.monotonic()
            assert time.monotonic() - began < 2, "stop waited for the thread"
            # the claim went back to the store, not recorded: the job runs again later
            async with kernel:
                job = await _job(kernel, job_id)
                assert job.last_outcome is None and job.state is JobState.SCHEDULED


async def test_a_plain_def_returning_an_awaitable_is_awaited_on_the_loop() -> None:
    registry = TaskRegistry()

    async def later(value: int) -> int:
        await anyio.lowlevel.checkpoint()
        return value * 2

    def wrapper(ctx: TaskContext) -> Any:
        return later(21)  # a sync wrapper around an async function (a decorator, say)

    task(name="wrapped", execute=wrapper, registry=registry)
    clock, recorder = VirtualClock(T0), Recorder()
    with anyio.fail_after(10):
        async with _kernel(registry, clock, recorder) as kernel:
            await kernel.create_task("wrapped")
            await clock.advance(1)
    assert ("succeeded", "wrapped", 42) in recorder.events


async def test_the_thread_reaches_the_loop_through_anyio_from_thread() -> None:
    registry = TaskRegistry()
    made: list[str] = []

    def chain(ctx: TaskContext) -> None:
        # the documented way for a thread to call the kernel's async API
        made.append(anyio.from_thread.run(ctx.kernel.create_task, "noop"))

    def noop(ctx: TaskContext) -> None:
        pass

    task(name="chain", execute=chain, registry=registry)
    task(name="noop", execute=noop, registry=registry)
    clock, recorder = VirtualClock(T0), Recorder()
    with anyio.fail_after(10):
        async with _kernel(registry, clock, recorder) as kernel:
            await kernel.create_task("chain")
            await clock.advance(1)
            assert len(made) == 1
            assert (await _job(kernel, made[0])).last_outcome is Outcome.SUCCEEDED


@pytest.mark.parametrize("value", [0, -1, True, 2.5, "4", None, 10_001])
def test_a_bad_thread_limit_is_refused(value: object) -> None:
    with pytest.raises(InvalidArgumentError, match="thread_limit") as err:
        Kernel("memory://", thread_limit=value, entry_points=False)  # type: ignore[arg-type]
    assert repr(value) in str(err.value) or str(value) in str(err.value)
