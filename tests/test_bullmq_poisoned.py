"""Poisoned BullMQ records on a real redis-server (issue 11): job hashes written by hand, by an
older version or by another tool. Each record the driver cannot read is failed alone, once,
with a reason naming the field, and stays listable; every other job of the same take runs."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest

from tickkit import JobState, Kernel, TaskContext, TaskRegistry, task
from tickkit.drivers.bullmq import BullMQDriver

from .waiting import wait_for

pytestmark = [pytest.mark.redis, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def good_hash(name: str = "record", **fields: Any) -> dict[str, Any]:
    h: dict[str, Any] = {
        "name": name,
        "data": json.dumps({"ok": True}),
        "opts": json.dumps({"attempts": 0}),
        "timestamp": 1_700_000_000_000,
        "delay": 0,
        "priority": 0,
        "atm": 0,
    }
    h.update(fields)
    return {k: v for k, v in h.items() if v is not None}


#: job id -> (the hash to write, or a raw Redis type; the field the reason names)
POISONED: dict[str, tuple[Any, str]] = {
    "opts-not-json": (good_hash(opts="{not json"), "'opts'"),
    "opts-a-list": (good_hash(opts="[1, 2]"), "'opts'"),
    "atm-not-int": (good_hash(atm="three"), "'atm'"),
    "ats-float": (good_hash(ats="1.5"), "'ats'"),
    "stc-huge": (good_hash(stc="9" * 40), "'stc'"),
    "timestamp-missing": (good_hash(timestamp=None), "'timestamp'"),
    "timestamp-garbage": (good_hash(timestamp="yesterday"), "'timestamp'"),
    "delay-garbage": (good_hash(delay="soon"), "'delay'"),
    "name-missing": (good_hash(name=None), "'name'"),
    "data-missing": (good_hash(data=None), "'data'"),
    "data-garbage": (good_hash(data="{oops"), "not JSON"),
    "priority-garbage": (good_hash(priority="high"), "'priority'"),
    "tk-at-garbage": (good_hash(**{"tk.at": "later"}), "'tk.at'"),
    "a-string": ("string", "not a hash"),
    "a-list": ("list", "not a hash"),
}


async def poison(raw: Any, queue: str) -> None:
    prefix = f"bull:{queue}:"
    for job_id, (h, _) in POISONED.items():
        if h == "string":
            await raw.set(prefix + job_id, "just a string")
        elif h == "list":
            await raw.rpush(prefix + job_id, "a", "list")
        else:
            await raw.hset(prefix + job_id, mapping=h)
        await raw.lpush(prefix + "wait", job_id)
    await raw.zadd(prefix + "marker", {"0": 0})


async def test_unreadable_jobs_fail_alone_once_and_stay_listable(redis_url: str) -> None:
    queue = f"poison-{uuid.uuid4().hex[:8]}"
    ran: list[str] = []
    reg = TaskRegistry()

    async def record(ctx: TaskContext) -> None:
        ran.append(ctx.job_id)

    task(name="record", execute=record, registry=reg)
    driver = BullMQDriver(redis_url, queue=queue, poll_interval=0.2)
    admin = BullMQDriver(redis_url, queue=queue)
    opener = Kernel(admin, tasks=reg)
    await opener.open()
    try:
        raw = admin._redis
        # good jobs before and after the poisoned ones, all in one take
        good = [await opener.create_task("record", {"i": i}) for i in range(3)]
        await poison(raw, queue)
        good += [await opener.create_task("record", {"i": i}) for i in range(3, 6)]
        async with Kernel(driver, tasks=reg, concurrency=64):
            await wait_for(lambda: set(ran) >= set(good), 15, "the good jobs")

            async def settled() -> bool:
                counts = await admin.queue_counts()
                return counts["wait"] == 0 and counts["active"] == 0

            await wait_for(settled, 15, "every job to leave wait and active")
            await asyncio.sleep(0.6)  # a few more dispatcher rounds: nothing is retaken
        assert sorted(ran) == sorted(good)  # the good ones once each, no poisoned one ran
        failed = set(await raw.zrange(f"bull:{queue}:failed", 0, -1))
        assert failed == set(POISONED)
        events = [e for _, e in await raw.xrange(f"bull:{queue}:events")]
        for job_id, (_, field) in POISONED.items():
            fails = [e for e in events if e.get("event") == "failed" and e["jobId"] == job_id]
            assert len(fails) == 1, (job_id, fails)  # failed once
            assert field in fails[0]["failedReason"], (job_id, fails[0])
            view = await opener.get_task(job_id)
            assert view is not None, job_id
            assert view.state is JobState.FAILED, (job_id, view)
            assert view.defect is not None and field in view.defect, (job_id, view.defect)
        listed = {j.id: j for j in await opener.list_tasks()}
        assert set(POISONED) | set(good) <= set(listed)
        assert all(listed[j].defect for j in POISONED)
        assert not any(listed[j].defect for j in good)
        # the unreadable ones can be deleted like any job
        for job_id in POISONED:
            assert await opener.delete_task(job_id)
        assert await raw.zcard(f"bull:{queue}:failed") == 0
    finally:
        await opener.stop()


async def test_a_scheduler_that_cannot_be_read(redis_url: str) -> None:
    """Job schedulers written badly (a garbage `every`, a pattern no cron parser reads, opts
    that are not JSON): their job is failed once, the listing shows the defect, the other
    jobs run and nothing loops."""
    queue = f"poison-sched-{uuid.uuid4().hex[:8]}"
    prefix = f"bull:{queue}:"
    ran: list[str] = []
    reg = TaskRegistry()

    async def record(ctx: TaskContext) -> None:
        ran.append(ctx.job_id)

    task(name="record", execute=record, registry=reg)
    admin = BullMQDriver(redis_url, queue=queue)
    opener = Kernel(admin, tasks=reg)
    await opener.open()
    try:
        raw = admin._redis
        millis = 1_700_000_000_000
        schedulers = {
            "every-garbage": ({"every": "often"}, {"name": "record", "every": "often"}),
            "bad-pattern": (
                {"pattern": "not a cron", "tz": "UTC"},
                {"name": "record", "pattern": "not a cron", "tz": "UTC"},
            ),
            "bad-opts": ({"every": 1000}, {"name": "record", "every": "1000", "opts": "{x"}),
        }
        for sid, (repeat, fields) in schedulers.items():
            await raw.hset(f"{prefix}repeat:{sid}", mapping={"data": "{}", "ic": 1, **fields})
            await raw.zadd(f"{prefix}repeat", {sid: millis})
            job_id = f"repeat:{sid}:{millis}"
            await raw.hset(
                prefix + job_id,
                mapping=good_hash(
                    rjk=sid,
                    opts=json.dumps({"attempts": 0, "repeat": repeat, "prevMillis": millis}),
                ),
            )
            await raw.lpush(prefix + "wait", job_id)
        # a scheduler whose opts cannot be read produces a job marked unreadable
        listed = {j.id: j for j in await opener.list_tasks()}
        assert "often" in (listed["every-garbage"].defect or "")
        assert "'opts'" in (listed["bad-opts"].defect or "")
        good = [await opener.create_task("record", {"i": i}) for i in range(3)]
        driver = BullMQDriver(redis_url, queue=queue, poll_interval=0.2)
        async with Kernel(driver, tasks=reg, concurrency=16):
            await wait_for(lambda: set(ran) >= set(good), 15, "the good jobs")

            async def settled() -> bool:
                return int(await raw.zcard(prefix + "failed")) >= 3

            await wait_for(settled, 15, "the scheduler jobs to be failed")
            await asyncio.sleep(0.6)
        # the current job of `bad-opts` was written readable: it runs; the next one, made
        # from the unreadable template, is failed with the reason
        assert sorted(ran) == sorted([*good, "bad-opts"])
        failed = await raw.zrange(prefix + "failed", 0, -1)
        assert len(failed) == 3
        reasons = {
            job_id.split(":")[1]: await raw.hget(prefix + job_id, "failedReason")
            for job_id in failed
        }
        assert set(reasons) == set(schedulers)
        assert "often" in reasons["every-garbage"]
        assert "not a cron" in reasons["bad-pattern"]
        assert "'opts'" in reasons["bad-opts"]
        events = [e for _, e in await raw.xrange(prefix + "events")]
        assert sum(1 for e in events if e.get("event") == "failed") == 3  # once each
        listed = {j.id: j for j in await opener.list_tasks()}
        assert set(schedulers) <= set(listed)
    finally:
        await opener.stop()
