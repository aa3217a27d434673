"""One plugin manager per kernel: a schedule type from ``Kernel(plugins=[...])`` works in
``@task(schedule=...)``, bad specs still fail with typed errors naming the task; per-kernel
plugin state (``Kernel.plugin_state``)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import anyio
import pytest

from tickkit import (
    InvalidCronError,
    InvalidScheduleError,
    Kernel,
    Schedule,
    TaskContext,
    TaskRegistry,
    hookimpl,
    task,
)
from tickkit.drivers.memory import MemoryDriver
from tickkit.testing import VirtualClock

pytestmark = pytest.mark.anyio

UTC = timezone.utc
T0 = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday


class EveryWeekday(Schedule):
    """Noon UTC on Monday to Friday (the example of docs/writing-a-plugin.md)."""

    def next_fire(self, after: datetime) -> datetime | None:
        day = after.replace(hour=12, minute=0, second=0, microsecond=0)
        if day <= after:
            day += timedelta(days=1)
        while day.weekday() >= 5:
            day += timedelta(days=1)
        return day

    def to_spec(self) -> dict[str, Any]:
        return {"type": "weekdays"}


class Weekdays:
    @hookimpl
    def tickkit_parse_schedule(self, value: object, timezone: str | None) -> Schedule | None:
        if isinstance(value, dict) and value.get("type") == "weekdays":
            if set(value) != {"type"}:
                raise InvalidScheduleError(f"weekdays takes no options, got {value!r}")
            return EveryWeekday()
        return None


async def test_a_schedule_type_of_a_kernel_plugin_works_in_task() -> None:
    registry = TaskRegistry()
    runs: list[datetime] = []

    async def report(ctx: TaskContext) -> None:
        runs.append(ctx.scheduled_at)

    # no installed plugin understands it: accepted now, parsed by the kernel when it opens
    definition = task(
        name="report", schedule={"type": "weekdays"}, execute=report, registry=registry
    )
    assert definition.pending and definition.schedule is None
    assert definition.schedule_spec == {"type": "weekdays"}
    clock = VirtualClock(T0)
    async with Kernel(MemoryDriver(), tasks=registry, clock=clock, plugins=[Weekdays()]) as k:
        resolved = k.tasks.require("report")
        assert isinstance(resolved.schedule, EveryWeekday) and not resolved.pending
        assert resolved.max_instances == 1  # the default of a recurring schedule
        job = await k.get_task("report")
        assert job is not None and job.schedule == {"type": "weekdays"}
        for _ in range(7 * 24):
            await clock.advance(timedelta(hours=1))
    # Monday 5 to Friday 9 January; Saturday and Sunday have no run
    assert [r.day for r in runs] == [5, 6, 7, 8, 9]


async def test_a_spec_no_plugin_of_the_kernel_understands_fails_at_start() -> None:
    registry = TaskRegistry()

    async def noop(ctx: TaskContext) -> None:
        pass

    task(name="odd", schedule={"type": "fortnightly"}, execute=noop, registry=registry)
    kernel = Kernel(MemoryDriver(), tasks=registry, clock=VirtualClock(T0), plugins=[Weekdays()])
    with pytest.raises(InvalidScheduleError, match=r"task 'odd'.*fortnightly"):
        await kernel.start()
    assert kernel.state in ("new", "stopped")


async def test_a_bad_spec_of_a_kernel_plugin_fails_at_start_naming_the_task() -> None:
    registry = TaskRegistry()

    async def noop(ctx: TaskContext) -> None:
        pass

    task(name="wd", schedule={"type": "weekdays", "at": 3}, execute=noop, registry=registry)
    kernel = Kernel(MemoryDriver(), tasks=registry, clock=VirtualClock(T0), plugins=[Weekdays()])
    with pytest.raises(InvalidScheduleError, match=r"task 'wd'.*no options"):
        async with kernel:
            pass


def test_a_spec_an_installed_plugin_finds_bad_is_refused_at_the_call() -> None:
    async def noop(ctx: TaskContext) -> None:
        pass

    registry = TaskRegistry()
    with pytest.raises(InvalidCronError, match="61"):
        task(name="bad", schedule="61 * * * *", execute=noop, registry=registry)
    with pytest.raises(InvalidScheduleError):
        task(
            name="bad", schedule={"type": "interval", "every": -5}, execute=noop, registry=registry
        )
    assert len(registry) == 0


async def test_plugin_state_is_per_kernel_and_dropped_at_stop() -> None:
    key = object()
    made: list[dict[str, int]] = []

    def factory() -> dict[str, int]:
        made.append({})
        return made[-1]

    one = Kernel(MemoryDriver(), tasks=TaskRegistry(), clock=VirtualClock(T0))
    two = Kernel(MemoryDriver(), tasks=TaskRegistry(), clock=VirtualClock(T0))
    first = one.plugin_state(key, factory)
    assert one.plugin_state(key, factory) is first
    assert two.plugin_state(key, factory) is not first
    assert one.plugin_state("other", dict) is not first
    assert len(made) == 2
    async with one:
        during = one.plugin_state(key, factory)
        assert during is first
    # dropped when the kernel closes: a restart gets a new one
    assert one.plugin_state(key, factory) is not first
    assert len(made) == 3


async def test_a_task_reaches_its_kernels_plugin_state() -> None:
    registry = TaskRegistry()
    seen: list[object] = []
    key = object()
    ran = anyio.Event()

    async def look(ctx: TaskContext) -> None:
        seen.append(ctx.kernel.plugin_state(key, list))
        ran.set()

    task(name="look", execute=look, registry=registry)
    async with Kernel(MemoryDriver(), tasks=registry) as kernel:
        await kernel.create_task("look")
        with anyio.fail_after(5):
            await ran.wait()
        assert seen == [kernel.plugin_state(key, list)]


async def test_a_pending_task_added_while_running_is_parsed_by_sync_static() -> None:
    # what a reload does: add definitions, then sync_static
    registry = TaskRegistry()

    async def noop(ctx: TaskContext) -> None:
        pass

    clock = VirtualClock(T0)
    async with Kernel(MemoryDriver(), tasks=registry, clock=clock, plugins=[Weekdays()]) as k:
        task(name="late", schedule={"type": "weekdays"}, execute=noop, registry=registry)
        assert k.tasks.require("late").pending
        await k.sync_static()
        assert isinstance(k.tasks.require("late").schedule, EveryWeekday)
        job = await k.get_task("late")
        assert job is not None and job.next_run_at == T0.replace(hour=12)
