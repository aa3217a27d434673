"""The kernel under misbehaving tasks and odd start-ups and shutdowns, on every driver (issue 11).

Misbehaving tasks (raise CancelledError, a BaseExceptionGroup, SystemExit; ignore cancellation;
return NaN, huge ints, lone surrogates, non-JSON objects) never stop or hang a kernel: the run
is recorded and the other jobs run. Start and stop never hang, a failed start closes what it
opened, no claim leaks at a graceful stop. These tests run on the wall clock (the stores are
real: a memory driver, a SQLite file, a private redis-server for BullMQ).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from tickkit import (
    Driver,
    DriverError,
    DuplicateTaskError,
    InvalidArgumentError,
    Job,
    JobState,
    Kernel,
    Outcome,
    TaskContext,
    TaskRegistry,
    TickkitError,
    hookimpl,
    running_kernels,
    task,
)
from tickkit.drivers.memory import MemoryDriver
from tickkit.errors import short
from tickkit.testing import VirtualClock

from .waiting import wait_for

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent
DRIVERS = ["memory", "sqlite", "bullmq"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # SQLite and BullMQ run on asyncio; trio has tests of its own below


def driver_factory(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., Any]:
    """Drivers of one store (every call a new driver object on the same store)."""
    if kind == "memory":
        shared = MemoryDriver(keep_completed=True)
        return lambda cls=None: shared
    if kind == "sqlite":
        from tickkit.drivers.sqlite import SQLiteDriver

        path = tmp_path / "jobs.db"
        return lambda cls=SQLiteDriver, **kw: (cls or SQLiteDriver)(
            path, poll_interval=0.05, keep_completed=True, **kw
        )
    from tickkit.drivers.bullmq import BullMQDriver

    url = request.getfixturevalue("redis_url")
    queue = f"hard-{uuid.uuid4().hex[:12]}"
    return lambda cls=BullMQDriver, **kw: (cls or BullMQDriver)(
        url, queue=queue, poll_interval=0.2, **kw
    )


@pytest.fixture(params=DRIVERS)
def kind(request: pytest.FixtureRequest) -> str:
    if request.param == "bullmq":
        request.applymarker(pytest.mark.redis)
    return str(request.param)


@pytest.fixture
def make_driver(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., Any]:
    return driver_factory(kind, request, tmp_path)


@asynccontextmanager
async def managing(driver: Driver, registry: TaskRegistry) -> AsyncIterator[Kernel]:
    """A kernel that only manages the store (open, not running)."""
    kernel = Kernel(driver, tasks=registry)
    await kernel.open()
    try:
        yield kernel
    finally:
        await kernel.stop()


async def job_of(make_driver: Callable[..., Any], registry: TaskRegistry, job_id: str) -> Job:
    async with managing(make_driver(), registry) as manager:
        job = await manager.get_task(job_id)
    assert job is not None, job_id
    return job


async def stop_within(kernel: Kernel, seconds: float) -> None:
    """Stop the kernel (from the task that started it) and check that it took < seconds."""
    began = time.monotonic()
    await kernel.stop()
    took = time.monotonic() - began
    assert took < seconds, f"stop() took {took:.1f}s"


# --- misbehaving tasks -------------------------------------------------------------------------


async def _cancelled() -> BaseException:
    """A cancellation exception that is not the kernel's: asyncio's CancelledError made by the
    task (trio has no public constructor: one leaked out of the task's own cancel scope)."""
    if anyio.get_cancelled_exc_class() is asyncio.CancelledError:
        return asyncio.CancelledError()
    with anyio.CancelScope() as scope:
        scope.cancel()
        try:
            await anyio.sleep(1)
        except anyio.get_cancelled_exc_class() as exc:
            return exc
    raise AssertionError("not cancelled")


async def _group(message: str, *others: BaseException) -> BaseException:
    return BaseExceptionGroup(message, [await _cancelled(), *others])


async def _made(exc: BaseException) -> BaseException:
    return exc


class BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ is broken")


RAISES: dict[str, tuple[Callable[[], Awaitable[BaseException]], str]] = {
    "CancelledError": (_cancelled, "Cancel"),
    "BaseExceptionGroup": (lambda: _group("several", ValueError("v")), "several"),
    "cancellations only, grouped": (lambda: _group("grouped"), "grouped"),
    "SystemExit": (lambda: _made(SystemExit(3)), "SystemExit: 3"),
    "GeneratorExit": (lambda: _made(GeneratorExit("gen")), "GeneratorExit: gen"),
    "surrogate message": (lambda: _made(ValueError("bad \ud800 text")), "bad \\ud800 text"),
    "broken __str__": (lambda: _made(BadStr()), "BadStr"),
}


class Runs(list[str]):
    """Job ids of finished runs; ``await runs.reach(n)`` waits (on any backend) for n."""

    def __init__(self) -> None:
        super().__init__()
        self._waiters: list[tuple[int, anyio.Event]] = []

    def add(self, job_id: str) -> None:
        self.append(job_id)
        for n, event in self._waiters:
            if len(self) >= n:
                event.set()

    async def reach(self, n: int) -> None:
        if len(self) < n:
            event = anyio.Event()
            self._waiters.append((n, event))
            with anyio.fail_after(10):
                await event.wait()


def good_tasks(registry: TaskRegistry, ran: list[str]) -> None:
    async def good(ctx: TaskContext) -> None:
        if isinstance(ran, Runs):
            ran.add(ctx.job_id)
        else:
            ran.append(ctx.job_id)

    task(name="good", execute=good, registry=registry)


async def create_good(kernel: Kernel, n: int = 5) -> None:
    for _ in range(n):
        await kernel.create_task("good")


@pytest.mark.parametrize("case", list(RAISES))
async def test_a_task_raising_any_base_exception_is_a_failed_run(
    case: str, make_driver: Callable[..., Any]
) -> None:
    make_exc, expected = RAISES[case]
    registry = TaskRegistry()
    ran: list[str] = []
    calls: list[int] = []
    good_tasks(registry, ran)

    async def bad(ctx: TaskContext) -> None:
        calls.append(ctx.attempt)
        await anyio.lowlevel.checkpoint()
        raise await make_exc()

    task(name="bad", execute=bad, retries=1, backoff=0.05, registry=registry)
    kernel = Kernel(make_driver(), tasks=registry, shutdown_timeout=1)
    async with kernel:
        bad_id = await kernel.create_task("bad")
        await create_good(kernel)

        async def settled() -> bool:
            job = await kernel.get_task(bad_id)
            return len(ran) == 5 and job is not None and job.state is JobState.FAILED

        await wait_for(settled, 15, f"5 good runs and the failure of {case}")
        job = await kernel.get_task(bad_id)
        assert kernel.state == "running"
        await stop_within(kernel, 10)
    assert job is not None
    assert calls == [1, 2]  # retried as usual
    assert job.last_outcome is Outcome.FAILED
    assert expected in (job.last_error or "")
    assert kernel.state == "stopped"


@pytest.mark.parametrize("how", ["shield", "swallow"])
async def test_a_task_ignoring_the_timeout_is_recorded_timed_out_and_abandoned(
    how: str, make_driver: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    registry = TaskRegistry()
    ran: list[str] = []
    ended: list[str] = []
    good_tasks(registry, ran)

    async def stubborn(ctx: TaskContext) -> None:
        until = time.monotonic() + 2.5
        if how == "shield":
            with anyio.CancelScope(shield=True):
                await anyio.sleep(2.5)
        else:
            while time.monotonic() < until:
                try:
                    await asyncio.sleep(0.05)
                except asyncio.CancelledError:
                    pass
        ended.append(ctx.job_id)

    task(name="stubborn", execute=stubborn, timeout=0.3, registry=registry)
    kernel = Kernel(make_driver(), tasks=registry, cancel_grace=0.3, shutdown_timeout=1)
    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="tickkit"):
        async with kernel:
            job_id = await kernel.create_task("stubborn")

            async def recorded() -> bool:
                job = await kernel.get_task(job_id)
                return job is not None and job.state is JobState.FAILED

            await wait_for(recorded, 10, "the timed-out run to be recorded")
            assert time.monotonic() - started < 2.4  # recorded before the run itself ended
            await create_good(kernel)  # the kernel keeps running jobs meanwhile
            await wait_for(lambda: len(ran) == 5, 10, "5 good runs")
            job = await kernel.get_task(job_id)
            assert job is not None and job.last_outcome is Outcome.TIMED_OUT
            await stop_within(kernel, 5)
    assert any("ignored its cancellation" in r.getMessage() for r in caplog.records)
    await wait_for(lambda: ended == [job_id], 10, "the abandoned run to end on its own")
    job = await job_of(make_driver, registry, job_id)
    assert job.runs == 1  # the late end of the abandoned run records nothing


async def test_stop_abandons_a_run_that_ignores_its_cancellation(
    make_driver: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    registry = TaskRegistry()
    ended: list[str] = []
    entered = anyio.Event()

    async def stubborn(ctx: TaskContext) -> None:
        entered.set()
        with anyio.CancelScope(shield=True):
            await anyio.sleep(3)
        ended.append(ctx.job_id)

    task(name="stubborn", execute=stubborn, registry=registry)
    kernel = Kernel(make_driver(), tasks=registry, shutdown_timeout=0.3, cancel_grace=0.3)
    with caplog.at_level(logging.ERROR, logger="tickkit"):
        async with kernel:
            job_id = await kernel.create_task("stubborn")
            with anyio.fail_after(10):
                await entered.wait()
            await stop_within(kernel, 2.5)
    assert any("ignored its cancellation at shutdown" in r.getMessage() for r in caplog.records)
    job = await job_of(make_driver, registry, job_id)
    # the claim was released: the job is due again for another worker, attempt not counted
    assert job.state is JobState.SCHEDULED
    assert job.runs == 0
    await wait_for(lambda: ended == [job_id], 10, "the abandoned run to end on its own")


NAN_LIKE: dict[str, Callable[[], Any]] = {
    "nan": lambda: math.nan,
    "inf": lambda: {"x": [math.inf]},
    "huge int": lambda: 10**400,
    "int past 64 bits": lambda: 2**63,
    "lone surrogate": lambda: "a\ud800b",
    "surrogate key": lambda: {"\udc00": 1},
    "non-JSON object": lambda: object(),
    "set": lambda: {1, 2},
    "int key": lambda: {1: 2},
    "1,000 deep": lambda: _nested(1000),
}


def _nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("case", list(NAN_LIKE))
async def test_a_return_value_that_is_not_portable_json_is_stored_as_none(
    case: str,
    kind: str,
    make_driver: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
) -> None:
    registry = TaskRegistry()
    ran: list[str] = []
    calls: list[str] = []
    good_tasks(registry, ran)

    async def odd(ctx: TaskContext) -> Any:
        calls.append(ctx.job_id)
        return NAN_LIKE[case]()

    task(name="odd", execute=odd, registry=registry)
    driver = make_driver()
    with caplog.at_level(logging.WARNING, logger="tickkit"):
        async with Kernel(driver, tasks=registry) as kernel:
            job_id = await kernel.create_task("odd")
            await create_good(kernel)

            async def done() -> bool:
                job = await kernel.get_task(job_id)
                return len(ran) == 5 and job is not None and job.state is JobState.COMPLETED

            await wait_for(done, 15, f"the run returning {case} to complete")
            job = await kernel.get_task(job_id)
    assert job is not None and job.last_outcome is Outcome.SUCCEEDED
    assert calls == [job_id]  # ran once: its outcome was recorded
    assert any("not portable JSON" in r.getMessage() for r in caplog.records)
    if kind == "bullmq":
        import redis.asyncio as aioredis

        client = aioredis.from_url(request.getfixturevalue("redis_url"), decode_responses=True)
        try:
            stored = await client.hget(f"{driver.key}{job_id}", "returnvalue")
        finally:
            await client.aclose()
        assert stored == "null"


async def test_a_portable_return_value_is_stored_as_it_is(
    kind: str, make_driver: Callable[..., Any], request: pytest.FixtureRequest
) -> None:
    registry = TaskRegistry()
    value = {"a": [1, -(2**63), 2.5, "é", None, True], "b": {"c": "d"}}

    async def fine(ctx: TaskContext) -> Any:
        return value

    task(name="fine", execute=fine, registry=registry)
    driver = make_driver()
    async with Kernel(driver, tasks=registry) as kernel:
        job_id = await kernel.create_task("fine")

        async def done() -> bool:
            job = await kernel.get_task(job_id)
            return job is not None and job.state is JobState.COMPLETED

        await wait_for(done, 15, "the run to complete")
    if kind == "bullmq":
        import json

        import redis.asyncio as aioredis

        client = aioredis.from_url(request.getfixturevalue("redis_url"), decode_responses=True)
        try:
            stored = await client.hget(f"{driver.key}{job_id}", "returnvalue")
        finally:
            await client.aclose()
        assert json.loads(stored) == value


def test_portable_value() -> None:
    from tickkit.runner import MAX_RESULT_DEPTH, portable_value

    assert portable_value(None) == (None, None)
    assert portable_value((1, "x", [2.0])) == ([1, "x", [2.0]], None)
    assert portable_value(_nested(MAX_RESULT_DEPTH - 1))[1] is None
    for case, make in NAN_LIKE.items():
        stored, why = portable_value(make())
        assert stored is None and why, case
    assert "lone surrogate" in (portable_value("\ud800")[1] or "")
    assert "int" in (portable_value(10**5000)[1] or "")
    assert "object" in (portable_value(object())[1] or "")


# --- KeyboardInterrupt ---------------------------------------------------------------------------

KI_SCRIPT = """
import sys, anyio
from tickkit import Kernel, TaskRegistry, task
registry = TaskRegistry()

async def interrupt(ctx):
    raise KeyboardInterrupt

task(name="interrupt", execute=interrupt, registry=registry)

async def main():
    driver = sys.argv[1]
    async with Kernel(driver, tasks=registry, shutdown_timeout=1) as kernel:
        await kernel.create_task("interrupt", id="ki")
        await anyio.sleep(30)

anyio.run(main, backend=sys.argv[2])
"""


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_keyboard_interrupt_in_a_task_stops_the_program_and_releases_the_claim(
    backend: str, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}" if backend == "asyncio" else "memory://"
    proc = run_script(KI_SCRIPT, url, backend, timeout=20)
    assert proc.returncode != 0
    assert "KeyboardInterrupt" in proc.stderr
    if backend == "asyncio":
        from tickkit.drivers.sqlite import SQLiteDriver

        async def read() -> Job | None:
            async with managing(SQLiteDriver(tmp_path / "jobs.db"), TaskRegistry()) as manager:
                return await manager.get_task("ki")

        job = anyio.run(read)
        assert job is not None and job.state is JobState.SCHEDULED  # given back, not stuck


def run_script(source: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``source`` in a fresh interpreter; fail if it does not exit within ``timeout``."""
    try:
        return subprocess.run(
            [sys.executable, "-c", textwrap.dedent(source), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the process did not exit within {timeout}s: {exc.stderr!r}") from exc


# --- start and stop ------------------------------------------------------------------------------


class Failing:
    """A plugin that breaks one step of Kernel.start."""

    def __init__(self, step: str) -> None:
        self.step = step

    @hookimpl
    def tickkit_load_tasks(self, kernel: Kernel) -> Any:
        if self.step == "duplicate task":
            return [task(name="dup", execute=_noop, registry=TaskRegistry())]
        return None

    @hookimpl
    def tickkit_kernel_services(self, kernel: Kernel) -> Any:
        if self.step == "services":
            raise RuntimeError("services hook broke")
        return []

    @hookimpl
    def tickkit_kernel_started(self, kernel: Kernel) -> None:
        if self.step == "kernel_started":
            # an Exception from an observer hook is logged; anything else ends the start
            raise SystemExit("kernel_started broke")


async def _noop(ctx: TaskContext) -> None:
    return None


START_STEPS = ["missing folder", "duplicate task", "sync_static", "services", "kernel_started"]


def failing_kernel(step: str, driver: Driver, tmp_path: Path) -> Kernel:
    registry = TaskRegistry()
    task(name="dup", execute=_noop, registry=registry)
    task(name="tick", schedule="* * * * *", execute=_noop, registry=registry)
    settings = {"tasks_dir": str(tmp_path / "no-such-folder")} if step == "missing folder" else {}
    plugins = [Failing(step)]
    if step == "missing folder":
        plugins.append("tickkit.plugins.folder")  # type: ignore[arg-type]
    return Kernel(driver, tasks=registry, plugins=plugins, settings=settings)


def broken_sync(cls: type[Driver]) -> type[Driver]:
    class BrokenSync(cls):  # type: ignore[misc,valid-type]
        async def sync_static(self, jobs: Any, now: Any) -> None:
            raise DriverError("sync_static broke")

    return BrokenSync


@pytest.mark.parametrize("step", START_STEPS)
async def test_a_failed_start_closes_what_it_opened(
    step: str, kind: str, make_driver: Callable[..., Any], tmp_path: Path
) -> None:
    if step == "sync_static":
        base = type(make_driver())
        driver = make_driver(broken_sync(base)) if kind != "memory" else broken_sync(base)()
    else:
        driver = make_driver()
    kernel = failing_kernel(step, driver, tmp_path)
    with anyio.fail_after(10):
        with pytest.raises((TickkitError, RuntimeError, SystemExit)) as raised:
            await kernel.start()
    if step == "duplicate task":
        assert raised.type is DuplicateTaskError
    assert kernel.state == "stopped"
    assert kernel not in running_kernels()
    if kind == "sqlite":
        assert driver._conn is None  # the connection (and aiosqlite's thread) is closed
    if kind == "bullmq":
        assert driver._redis is None and driver._link is None
    # nothing is left running in this task: a new start works once the fault is gone
    with anyio.fail_after(10):
        async with Kernel(make_driver(), tasks=TaskRegistry()) as again:
            assert again.state == "running"


START_FAIL_SCRIPT = """
import sys, anyio
from tickkit import Kernel
async def main():
    kernel = Kernel(sys.argv[1], settings={"tasks_dir": sys.argv[2]},
                    plugins=["tickkit.plugins.folder"])
    await kernel.start()
anyio.run(main)
"""


@pytest.mark.parametrize("scheme", ["memory", "sqlite"])
def test_a_process_whose_start_fails_exits(scheme: str, tmp_path: Path) -> None:
    url = "memory://" if scheme == "memory" else f"sqlite:///{tmp_path / 'jobs.db'}"
    proc = run_script(START_FAIL_SCRIPT, url, str(tmp_path / "missing"), timeout=15)
    assert proc.returncode == 1
    assert "does not exist" in proc.stderr


SERVE_THEN_FAIL = """
import asyncio, sys
from tickkit import Kernel
async def main():
    kernel = Kernel(sys.argv[1])
    asyncio.create_task(kernel.serve())
    raise RuntimeError("the caller failed before its first await")
asyncio.run(main())
"""


@pytest.mark.parametrize("scheme", ["memory", "sqlite"])
def test_serve_in_a_task_then_an_error_in_the_caller_exits_cleanly(
    scheme: str, tmp_path: Path
) -> None:
    url = "memory://" if scheme == "memory" else f"sqlite:///{tmp_path / 'jobs.db'}"
    proc = run_script(SERVE_THEN_FAIL, url, timeout=15)
    assert proc.returncode == 1
    assert "the caller failed before its first await" in proc.stderr
    assert "Event loop is closed" not in proc.stderr
    assert "Task exception was never retrieved" not in proc.stderr


async def test_task_group_start_serve_returns_once_running(
    make_driver: Callable[..., Any],
) -> None:
    registry = TaskRegistry()
    ran: list[str] = []
    good_tasks(registry, ran)
    kernel = Kernel(make_driver(), tasks=registry)
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(10):
            await tg.start(kernel.serve)
        assert kernel.state == "running"
        await create_good(kernel, 1)  # works right away
        await wait_for(lambda: len(ran) == 1, 10, "the run")
        kernel.request_stop()
    assert kernel.state == "stopped"


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_task_group_start_serve_on_each_backend(anyio_backend: str) -> None:
    registry = TaskRegistry()
    ran = Runs()
    good_tasks(registry, ran)
    kernel = Kernel(MemoryDriver(), tasks=registry)
    async with anyio.create_task_group() as tg:
        await tg.start(kernel.serve)
        await create_good(kernel, 2)
        await ran.reach(2)
        kernel.request_stop()
    assert kernel.state == "stopped"
    # a failed start raises from tg.start
    registry = TaskRegistry()
    task(name="dup", execute=_noop, registry=registry)
    broken = Kernel(MemoryDriver(), tasks=registry, plugins=[Failing("duplicate task")])
    with pytest.raises(BaseException) as raised:  # a group on some backends
        async with anyio.create_task_group() as tg:
            await tg.start(broken.serve)
    assert "DuplicateTaskError" in repr(raised.value)
    assert broken.state == "stopped"


@pytest.mark.parametrize("anyio_backend", ["trio"])
@pytest.mark.parametrize("scheme", ["sqlite", "bullmq"])
async def test_a_driver_without_trio_support_fails_clearly_at_start(
    anyio_backend: str, scheme: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    if scheme == "sqlite":
        url, name = f"sqlite:///{tmp_path / 'jobs.db'}", "SQLiteDriver"
    else:
        request.applymarker(pytest.mark.redis)
        url, name = request.getfixturevalue("redis_url"), "BullMQDriver"
    kernel = Kernel(url)
    with pytest.raises(DriverError, match=f"{name}.*does not support trio"):
        await kernel.start()
    assert kernel.state == "stopped"


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
@pytest.mark.parametrize("case", ["CancelledError", "BaseExceptionGroup", "SystemExit"])
async def test_misbehaving_tasks_on_the_memory_driver_on_each_backend(
    anyio_backend: str, case: str
) -> None:
    make_exc, expected = RAISES[case]
    registry = TaskRegistry()
    ran = Runs()
    good_tasks(registry, ran)

    async def bad(ctx: TaskContext) -> None:
        raise await make_exc()

    task(name="bad", execute=bad, registry=registry)
    async with Kernel(MemoryDriver(), tasks=registry) as kernel:
        bad_id = await kernel.create_task("bad")
        await create_good(kernel)
        await ran.reach(5)
        for _ in range(1000):  # on any backend (tests/waiting.py is asyncio's)
            job = await kernel.get_task(bad_id)
            if job is not None and job.state is JobState.FAILED:
                break
            await anyio.sleep(0.01)
    assert job is not None and job.state is JobState.FAILED
    assert expected in (job.last_error or "")


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_trio_abandons_a_run_that_ignores_shutdown(anyio_backend: str) -> None:
    registry = TaskRegistry()
    entered = anyio.Event()

    async def stubborn(ctx: TaskContext) -> None:
        entered.set()
        with anyio.CancelScope(shield=True):
            await anyio.sleep(1.5)

    task(name="stubborn", execute=stubborn, registry=registry)
    driver = MemoryDriver()
    kernel = Kernel(driver, tasks=registry, shutdown_timeout=0.2, cancel_grace=0.2)
    async with kernel:
        job_id = await kernel.create_task("stubborn")
        await entered.wait()
        await stop_within(kernel, 1.2)
    job = await driver.get_job(job_id)
    assert job is not None and job.state is JobState.SCHEDULED


# --- no claim leaks at a graceful stop -----------------------------------------------------------

LEASING = ["sqlite", "bullmq"]


@pytest.fixture(params=LEASING)
def leasing(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Callable[..., Any]]:
    if request.param == "bullmq":
        request.applymarker(pytest.mark.redis)
    return str(request.param), driver_factory(str(request.param), request, tmp_path)


def slow_replies(base: type[Driver]) -> type[Driver]:
    """The driver, with the reply of a claiming call delayed once it is armed: the store has
    claimed, the kernel has not seen the claims yet (an instrument; the store is real)."""

    class SlowReplies(base):  # type: ignore[misc,valid-type]
        armed = False
        took: anyio.Event

        async def _slow(self, acquired: Any) -> Any:
            if self.armed and acquired.claims:
                self.armed = False
                self.took.set()
                await anyio.sleep(0.3)
            return acquired

        async def acquire(self, **kw: Any) -> Any:
            return await self._slow(await super().acquire(**kw))

        async def complete_and_acquire(self, claim: Any, result: Any, **kw: Any) -> Any:
            return await self._slow(await super().complete_and_acquire(claim, result, **kw))

    return SlowReplies


async def test_a_job_claimed_as_stop_begins_is_given_back(
    leasing: tuple[str, Callable[..., Any]],
) -> None:
    _store, make_driver = leasing
    registry = TaskRegistry()
    ran: list[str] = []
    good_tasks(registry, ran)
    base = type(make_driver())
    driver = make_driver(slow_replies(base))
    driver.took = anyio.Event()
    async with Kernel(driver, tasks=registry, shutdown_timeout=0) as kernel:
        driver.armed = True
        job_id = await kernel.create_task("good")
        with anyio.fail_after(10):
            await driver.took.wait()  # claimed in the store, the reply not yet read
        await stop_within(kernel, 5)
    assert ran == []
    job = await job_of(make_driver, registry, job_id)
    assert job.state is JobState.SCHEDULED  # released, not left claimed until its lease ends
    assert job.runs == 0
    # and another worker runs it at once
    async with Kernel(make_driver(), tasks=registry):
        await wait_for(lambda: ran == [job_id], 10, "the released job to run")


@pytest.mark.redis
async def test_a_job_claimed_by_a_finishing_run_as_stop_begins_is_given_back(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    make_driver = driver_factory("bullmq", request, tmp_path)
    registry = TaskRegistry()
    ran: list[str] = []
    good_tasks(registry, ran)
    gate = anyio.Event()
    started = anyio.Event()

    async def first(ctx: TaskContext) -> None:
        started.set()
        await gate.wait()

    task(name="first", execute=first, registry=registry)
    base = type(make_driver())
    driver = make_driver(slow_replies(base))
    driver.took = anyio.Event()
    # one slot: while "first" runs only its completion can claim "second" (BullMQ's
    # moveToFinished with fetchNext)
    async with Kernel(driver, tasks=registry, shutdown_timeout=0, concurrency=1) as kernel:
        await kernel.create_task("first")
        with anyio.fail_after(10):
            await started.wait()
        second = await kernel.create_task("good")
        driver.armed = True
        gate.set()
        with anyio.fail_after(10):
            await driver.took.wait()
        await stop_within(kernel, 5)
    assert ran == []
    job = await job_of(make_driver, registry, second)
    assert job.state is JobState.SCHEDULED
    assert job.runs == 0


@pytest.mark.redis
async def test_start_stop_rounds_with_a_producer_leak_no_claim(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    import random

    import redis.asyncio as aioredis

    make_driver = driver_factory("bullmq", request, tmp_path)
    registry = TaskRegistry()
    ran: list[str] = []
    good_tasks(registry, ran)
    created: list[str] = []
    rng = random.Random(11)

    async with managing(make_driver(), registry) as producer:

        async def produce() -> None:
            while True:
                created.append(await producer.create_task("good"))
                await anyio.sleep(0.005)

        async with anyio.create_task_group() as tg:
            tg.start_soon(produce)
            for _ in range(25):
                async with Kernel(make_driver(), tasks=registry, shutdown_timeout=0.2):
                    await anyio.sleep(rng.uniform(0.0, 0.08))
            tg.cancel_scope.cancel()
        driver = make_driver()
        client = aioredis.from_url(request.getfixturevalue("redis_url"), decode_responses=True)
        try:
            active = await client.lrange(f"{driver.key}active", 0, -1)
            locks = await client.keys(f"{driver.key}*:lock")
        finally:
            await client.aclose()
    assert len(created) > 100
    assert active == [] and locks == []  # no claim outlived its worker
    # every job runs once when a worker comes back (none waits for a stalled check)
    async with Kernel(make_driver(), tasks=registry):
        await wait_for(lambda: len(ran) >= len(created), 30, "every created job to run")
    assert sorted(ran) == sorted(created)


# --- lease renewal -------------------------------------------------------------------------------


def late_renewal(base: type[Driver]) -> type[Driver]:
    """The driver, with each renewal's reply held until a run's outcome was recorded: the
    renewal meets a claim that its run gave up meanwhile (an instrument; the store is real)."""

    class LateRenewal(base):  # type: ignore[misc,valid-type]
        recorded: anyio.Event
        renewals = 0

        async def renew(self, claims: Any, now: Any) -> Any:
            self.renewals += 1
            await self.recorded.wait()
            return await super().renew(claims, now)

        async def complete(self, claim: Any, result: Any) -> None:
            await super().complete(claim, result)
            self.recorded.set()

        async def complete_and_acquire(self, claim: Any, result: Any, **kw: Any) -> Any:
            acquired = await super().complete_and_acquire(claim, result, **kw)
            self.recorded.set()
            return acquired

    return LateRenewal


async def test_no_lost_lease_warning_for_a_run_that_completed_during_renewal(
    leasing: tuple[str, Callable[..., Any]], caplog: pytest.LogCaptureFixture
) -> None:
    store, make_driver = leasing
    registry = TaskRegistry()

    async def work(ctx: TaskContext) -> None:
        await anyio.sleep(0.8)  # one renewal (every 0.5 s) is sent while it runs

    task(name="work", execute=work, registry=registry)
    base = type(make_driver())
    lease = {"lease_duration": 1.5} if store == "sqlite" else {"lock_duration": 1.5}
    driver = make_driver(late_renewal(base), **lease)
    driver.recorded = anyio.Event()
    with caplog.at_level(logging.WARNING, logger="tickkit"):
        async with Kernel(driver, tasks=registry) as kernel:
            job_id = await kernel.create_task("work")

            async def done() -> bool:
                job = await kernel.get_task(job_id)
                return job is not None and job.state is JobState.COMPLETED

            await wait_for(done, 10, "the run to complete")
            await anyio.sleep(0.3)  # the held renewal's reply arrives
    assert driver.renewals >= 1
    assert not [r for r in caplog.records if "lost the lease" in r.getMessage()]


async def test_a_lease_taken_over_is_still_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import sqlite3

    from tickkit.drivers.sqlite import SQLiteDriver

    registry = TaskRegistry()
    path = tmp_path / "jobs.db"
    stolen = anyio.Event()

    async def work(ctx: TaskContext) -> None:
        with sqlite3.connect(path) as db:  # another worker takes the claim over
            db.execute("UPDATE tickkit_jobs SET lease_token = 'someone-else'")
        stolen.set()
        await anyio.sleep(0.5)

    task(name="work", execute=work, registry=registry)
    with caplog.at_level(logging.WARNING, logger="tickkit"):
        async with Kernel(
            SQLiteDriver(path, lease_duration=0.3, poll_interval=0.05), tasks=registry
        ) as kernel:
            await kernel.create_task("work")
            with anyio.fail_after(10):
                await stolen.wait()
            await anyio.sleep(0.6)
    assert [r for r in caplog.records if "lost the lease" in r.getMessage()]


# --- the default tasks folder --------------------------------------------------------------------


async def test_the_default_tasks_folder_is_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "app" / "tasks"
    folder.mkdir(parents=True)
    (folder / "hello.py").write_text(
        "import tickkit\n\n@tickkit.task(name='hello-from-folder')\nasync def hello(ctx):\n"
        "    pass\n"
    )
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.INFO, logger="tickkit"):
        async with Kernel(MemoryDriver(), tasks=TaskRegistry()) as kernel:
            assert kernel.tasks.get("hello-from-folder") is not None
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any(
        "default tasks folder" in m and m.endswith(str(folder.resolve())) for m in messages
    ), messages


# --- kernel review fixes (slots, self-cancellation, stop from anywhere, options) ---------------

LOCAL = ["memory", "sqlite"]
T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)


@pytest.fixture(params=LOCAL)
def local_driver(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., Any]:
    return driver_factory(str(request.param), request, tmp_path)


async def _stubborn_until(release: anyio.Event) -> None:
    """Ignore every cancellation until ``release`` is set."""
    with anyio.CancelScope(shield=True):
        await release.wait()


async def test_an_abandoned_run_gives_back_its_max_instances_slot(
    local_driver: Callable[..., Any],
) -> None:
    # a recurring static task (max_instances 1): its first run ignores its timeout; the later
    # occurrences run while the abandoned coroutine is still running on its own
    registry = TaskRegistry()
    release = anyio.Event()
    runs: list[datetime] = []

    async def tick(ctx: TaskContext) -> None:
        runs.append(ctx.scheduled_at)
        if len(runs) == 1:
            await _stubborn_until(release)

    task(name="tick", execute=tick, schedule="* * * * * *", timeout=1, registry=registry)
    clock = VirtualClock(T0)
    kernel = Kernel(local_driver(), tasks=registry, clock=clock, shutdown_timeout=0, cancel_grace=1)
    try:
        async with kernel:
            for _ in range(80):
                await clock.advance(0.1)
                await anyio.sleep(0.005)
            assert len(runs) >= 4, runs  # before the fix: 1 (the slot stayed held)
            assert not release.is_set()
            assert len(kernel._opened().pool.inflight) <= 1
    finally:
        release.set()


@pytest.fixture(params=["memory", "sqlite", "sqlite-slow-poll"])
def retry_driver(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., Any]:
    if request.param == "sqlite-slow-poll":
        # no poll to hide a late wake-up: the dispatcher must be woken when the retry is stored
        from tickkit.drivers.sqlite import SQLiteDriver

        return lambda: SQLiteDriver(tmp_path / "jobs.db", poll_interval=30, keep_completed=True)
    return driver_factory(str(request.param), request, tmp_path)


async def test_a_retry_after_an_abandoned_timeout_starts_on_time(
    retry_driver: Callable[..., Any],
) -> None:
    local_driver = retry_driver
    registry = TaskRegistry()
    release = anyio.Event()
    attempts: list[tuple[int, datetime]] = []

    async def stubborn(ctx: TaskContext) -> None:
        attempts.append((ctx.attempt, ctx.started_at))
        if ctx.attempt == 1:
            await _stubborn_until(release)

    task(
        name="stubborn",
        execute=stubborn,
        timeout=1,
        retries=1,
        backoff=2,
        registry=registry,
    )
    clock = VirtualClock(T0)
    kernel = Kernel(local_driver(), tasks=registry, clock=clock, shutdown_timeout=0, cancel_grace=1)
    try:
        async with kernel:
            await kernel.create_task("stubborn")
            for _ in range(60):
                await clock.advance(0.1)
                await anyio.sleep(0.005)
            assert [a for a, _ in attempts] == [1, 2], attempts
            # timeout at +1, abandoned at +2, retry 2 s later: +4 (plus the SQLite poll)
            assert attempts[1][1] - T0 <= timedelta(seconds=4.5), attempts
    finally:
        release.set()


async def test_a_task_cancelling_its_own_asyncio_task_is_a_failed_run(
    local_driver: Callable[..., Any],
) -> None:
    registry = TaskRegistry()
    runs: list[int] = []

    async def selfcancel(ctx: TaskContext) -> None:
        runs.append(ctx.attempt)
        current = asyncio.current_task()
        assert current is not None
        current.cancel()
        await asyncio.sleep(0)

    async def after(ctx: TaskContext) -> str:
        await asyncio.sleep(0)  # the worker's own awaits are not cancelled afterwards
        return "ok"

    task(name="selfcancel", execute=selfcancel, registry=registry)
    task(name="after", execute=after, registry=registry)
    clock = VirtualClock(T0)
    with anyio.fail_after(10):  # before the fix: a hot loop
        await _selfcancel_scenario(local_driver, registry, clock, runs)


async def _selfcancel_scenario(
    local_driver: Callable[..., Any], registry: TaskRegistry, clock: VirtualClock, runs: list[int]
) -> None:
    async with Kernel(local_driver(), tasks=registry, clock=clock, shutdown_timeout=0) as kernel:
        job_id = await kernel.create_task("selfcancel")
        for _ in range(20):
            await clock.advance(0.1)
            await anyio.sleep(0.005)
        assert runs == [1]  # before the fix: re-run in a hot loop
        job = await kernel.get_task(job_id)
        assert job is not None and job.state is JobState.FAILED
        assert job.last_error is not None and "CancelledError" in job.last_error
        other = await kernel.create_task("after")
        for _ in range(10):
            await clock.advance(0.1)
            await anyio.sleep(0.005)
        done = await kernel.get_task(other)
        assert done is not None and done.last_outcome is Outcome.SUCCEEDED


async def test_stop_from_another_task_ends_serve() -> None:
    kernel = Kernel("memory://", tasks=TaskRegistry(), shutdown_timeout=1, cancel_grace=1)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(kernel.serve)
            await kernel.stop()
    assert kernel.state == "stopped"


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("shutdown_timeout", math.inf),
        ("shutdown_timeout", math.nan),
        ("shutdown_timeout", 1e300),
        ("shutdown_timeout", -1),
        ("shutdown_timeout", None),
        ("shutdown_timeout", "4"),
        ("cancel_grace", math.inf),
        ("cancel_grace", True),
        ("concurrency", 0),
        ("concurrency", 2.5),
        pytest.param("concurrency", 10**5000, id="concurrency-huge-int"),
        ("context", [1]),
        ("settings", {1: 2}),
        ("entry_points", "yes"),
        ("tasks", "t"),
        ("plugins", 3),
        ("clock", object()),
    ],
)
def test_kernel_options_are_validated(option: str, value: Any) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        Kernel("memory://", **{option: value})
    message = str(info.value)
    assert option in message
    assert short(value) in message


async def test_stop_never_hangs_when_closing_fails(tmp_path: Path) -> None:
    # an option changed after __init__ makes the grace deadline overflow: the internal tasks
    # are cancelled anyway and the store is closed
    kernel = Kernel(f"sqlite:///{tmp_path / 'jobs.db'}", tasks=TaskRegistry())
    with anyio.fail_after(5):
        await kernel.start()
        kernel.shutdown_timeout = math.inf
        with pytest.raises(OverflowError):
            await kernel.stop()
    assert kernel.state == "stopped"


async def test_stop_called_by_a_running_task(
    local_driver: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    registry = TaskRegistry()
    runs: list[int] = []

    async def stopper(ctx: TaskContext) -> str:
        runs.append(ctx.attempt)
        await ctx.kernel.stop()
        return "done"

    task(name="stopper", execute=stopper, registry=registry)
    kernel = Kernel(local_driver(), tasks=registry, shutdown_timeout=30, cancel_grace=30)
    began = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="tickkit"), anyio.fail_after(10):
        async with kernel:
            job_id = await kernel.create_task("stopper")
            await kernel._closed.wait()
    assert time.monotonic() - began < 3  # before the fix: shutdown_timeout + cancel_grace
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert runs == [1]
    job = await job_of(local_driver, registry, job_id)
    assert job.state is JobState.COMPLETED and job.runs == 1  # recorded, not run again


async def test_stop_while_start_is_in_progress_stops_the_kernel(tmp_path: Path) -> None:
    registry = TaskRegistry()
    task(name="t", execute=_noop, schedule="* * * * * *", registry=registry)
    kernel = Kernel(f"sqlite:///{tmp_path / 'jobs.db'}", tasks=registry, shutdown_timeout=0)
    seen: list[str] = []

    async def stopper() -> None:
        await anyio.lowlevel.checkpoint()
        assert kernel.state in ("new", "open")  # start is under way
        await kernel.stop()
        seen.append(kernel.state)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(stopper)
            await kernel.start()
            await kernel.stop()
    assert seen == ["stopped"]  # before the fix: "new" (a silent no-op) and left running
    assert kernel.state == "stopped"


async def test_waiting_for_a_max_instances_slot_counts_against_the_timeout(
    local_driver: Callable[..., Any],
) -> None:
    registry = TaskRegistry()
    runs: list[int] = []

    async def limited(ctx: TaskContext) -> None:
        runs.append(ctx.attempt)

    definition = task(
        name="limited", execute=limited, timeout=1, max_instances=1, registry=registry
    )
    clock = VirtualClock(T0)
    with anyio.fail_after(10):
        async with Kernel(
            local_driver(), tasks=registry, clock=clock, shutdown_timeout=0, cancel_grace=1
        ) as kernel:
            # a run elsewhere holds the only slot
            slot = kernel._opened().pool.limits.semaphore(definition)
            assert slot is not None
            await slot.acquire()
            job_id = await kernel.create_task("limited")
            for _ in range(30):
                await clock.advance(0.1)
                await anyio.sleep(0.005)
            job = await kernel.get_task(job_id)
            # before the fix: the run waited for the slot forever, with no timeout
            assert job is not None and job.last_outcome is Outcome.TIMED_OUT, job
            assert runs == []
            slot.release()
