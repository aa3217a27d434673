"""BullMQ driver specifics on a real redis-server: URLs, the format written, static schedulers
shared by several kernels, queue and job pause."""

from __future__ import annotations

import json
import re
import uuid
from datetime import timedelta
from importlib import resources
from typing import Any

import pytest

from tickkit import DriverError, InvalidScheduleError, Kernel, TaskContext, TaskRegistry, task
from tickkit.drivers.bullmq import BullMQDriver, mapping
from tickkit.testing import VirtualClock
from tickkit.testing.contract import T0

pytestmark = [pytest.mark.redis, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def tasks(runs: list[Any]) -> TaskRegistry:
    reg = TaskRegistry()

    async def record(ctx: TaskContext) -> None:
        runs.append((ctx.task.name, ctx.data, ctx.scheduled_at))

    task(name="record", execute=record, registry=reg)
    task(
        name="minutely",
        schedule="* * * * *",
        timezone="Europe/Berlin",
        execute=record,
        registry=reg,
    )
    return reg


def test_url_and_options() -> None:
    d = BullMQDriver.from_url("redis://:secret@127.0.0.1:6390/3?queue=bots&prefix=acme")
    assert d.queue == "bots" and d.key == "acme:bots:"
    assert d._url == "redis://:secret@127.0.0.1:6390/3"
    assert BullMQDriver.from_url("rediss://h:6380/0").queue == "tickkit"
    with pytest.raises(DriverError, match="'a:b'"):
        BullMQDriver("redis://h", queue="a:b")
    with pytest.raises(DriverError, match="http://h"):
        BullMQDriver("http://h")
    with pytest.raises(DriverError, match="'lots'"):
        BullMQDriver("redis://h", remove_on_complete="lots")  # type: ignore[arg-type]


async def test_static_scheduler_format_and_once_across_kernels(redis_url: str) -> None:
    queue = f"static-{uuid.uuid4().hex[:8]}"
    runs: list[Any] = []
    clock = VirtualClock(T0)
    k1 = Kernel(
        BullMQDriver(redis_url, queue=queue, poll_interval=60), tasks=tasks(runs), clock=clock
    )
    k2 = Kernel(
        BullMQDriver(redis_url, queue=queue, poll_interval=60), tasks=tasks(runs), clock=clock
    )
    async with k1, k2:
        driver = k1.driver
        assert isinstance(driver, BullMQDriver)
        r = driver._redis
        scheduler = await r.hgetall(f"bull:{queue}:repeat:minutely")
        assert scheduler["pattern"] == "* * * * *" and scheduler["tz"] == "Europe/Berlin"
        assert scheduler["name"] == "minutely" and scheduler["tk.static"] == "1"
        first = int(await r.zscore(f"bull:{queue}:repeat", "minutely"))
        job = await r.hgetall(f"bull:{queue}:repeat:minutely:{first}")
        opts = json.loads(job["opts"])
        assert job["rjk"] == "minutely"
        assert opts["repeat"]["pattern"] == "* * * * *" and opts["repeat"]["tz"] == "Europe/Berlin"
        assert opts["prevMillis"] == first and opts["jobId"] == f"repeat:minutely:{first}"
        await clock.advance(timedelta(minutes=30))
    minutes = [r[2] for r in runs if r[0] == "minutely"]
    assert len(minutes) == 30 == len(set(minutes))  # two kernels, each occurrence once


async def test_queue_pause_is_bullmq_6s(redis_url: str) -> None:
    queue = f"qpause-{uuid.uuid4().hex[:8]}"
    runs: list[Any] = []
    clock = VirtualClock(T0)
    driver = BullMQDriver(redis_url, queue=queue)
    async with Kernel(driver, tasks=tasks(runs), clock=clock) as k:
        await driver.pause_queue()
        assert await driver.queue_paused()
        assert await driver._redis.hget(f"bull:{queue}:meta", "paused") == "1"
        job_id = await k.create_task("record", {"n": 1})
        await clock.advance(timedelta(seconds=5))
        assert runs == []
        assert await driver._redis.lrange(f"bull:{queue}:wait", 0, -1) == [job_id]
        await driver.resume_queue()
        await clock.advance(timedelta(seconds=1))
        assert [r[1] for r in runs] == [{"n": 1}]
        events = [e["event"] for _, e in await driver._redis.xrange(f"bull:{queue}:events")]
        assert "paused" in events and "resumed" in events


async def test_job_pause_moves_out_of_bullmq_states(redis_url: str) -> None:
    queue = f"jpause-{uuid.uuid4().hex[:8]}"
    runs: list[Any] = []
    clock = VirtualClock(T0)
    driver = BullMQDriver(redis_url, queue=queue)
    async with Kernel(driver, tasks=tasks(runs), clock=clock) as k:
        job_id = await k.create_task("record", {"n": 2}, timedelta(minutes=5))
        await k.pause_task(job_id)
        assert await driver._redis.zscore(f"bull:{queue}:delayed", job_id) is None
        assert await driver._redis.zscore(f"bull:{queue}:tk:paused", job_id) is not None
        counts = await driver.queue_counts()
        assert counts["delayed"] == 1 and counts["wait"] == 0  # only the static task's job
        await clock.advance(timedelta(minutes=10))
        assert [r for r in runs if r[0] == "record"] == []
        await k.resume_task(job_id)  # overdue now: it runs at once (the kernel may take it already)
        await clock.advance(timedelta(seconds=1))
        assert [r[1] for r in runs if r[0] == "record"] == [{"n": 2}]
        # a scheduler's pending job cannot be deleted on its own
        first = int(await driver._redis.zscore(f"bull:{queue}:repeat", "minutely"))
        with pytest.raises(DriverError, match="delete the scheduler"):
            await k.delete_task(f"repeat:minutely:{first}")


async def test_unstorable_schedule_refused(redis_url: str) -> None:
    from tickkit import Job

    driver = BullMQDriver(redis_url, queue=f"bad-{uuid.uuid4().hex[:8]}")
    kernel = Kernel(driver, tasks=tasks([]), clock=VirtualClock(T0))
    await kernel.open()
    try:
        with pytest.raises(InvalidScheduleError, match="solar"):
            await driver.add_job(
                Job(id=None, name="record", schedule={"type": "solar", "value": 1}, next_run_at=T0)
            )
    finally:
        await kernel.stop()


def test_claim_fields_agree_between_lua_and_python() -> None:
    """takeJobs (lua/common.lua) returns CLAIM_FIELDS' values by position; mapping.claimed_view
    reads them by the same positions: the two lists must be one."""
    lua = resources.files("tickkit.drivers.bullmq").joinpath("lua", "common.lua").read_text()
    found = re.search(r"local CLAIM_FIELDS = \{(.*?)\}", lua, re.S)
    assert found is not None
    assert tuple(re.findall(r'"([^"]+)"', found.group(1))) == mapping.CLAIM_FIELDS
