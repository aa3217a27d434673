"""Issue 14 with real Node BullMQ 6: index backfill of Node's jobs, the run history Node sees,
an updated job read and run by Node. Wall clock (Node reads its own)."""

from __future__ import annotations

import os
import shutil
import uuid
from datetime import timedelta
from typing import Any

import pytest

from tickkit import Kernel, TaskContext, TaskRegistry, task
from tickkit.drivers.bullmq import BullMQDriver
from tickkit.models import Outcome

from . import test_bullmq_interop as interop
from .test_bullmq_interop import run_node
from .waiting import wait_for

pytestmark = [pytest.mark.interop, pytest.mark.redis, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary, with BullMQ installed (test_bullmq_interop's rules)."""
    found = shutil.which("node")
    if found is None or not (interop.INTEROP / "node_modules" / "bullmq").is_dir():
        message = "Node or contrib/bullmq-interop/node_modules is missing (run npm ci there)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}: CI needs them", pytrace=False)
        pytest.skip(message)
    return found


def registry(runs: list[Any]) -> TaskRegistry:
    reg = TaskRegistry()

    async def record(ctx: TaskContext) -> None:
        runs.append((ctx.task.name, ctx.data, ctx.attempt))

    async def boom(ctx: TaskContext) -> None:
        runs.append((ctx.task.name, ctx.data, ctx.attempt))
        raise RuntimeError(f"boom {ctx.attempt}")

    task(name="record", execute=record, registry=reg)
    task(name="boom", execute=boom, retries=2, backoff=0.05, registry=reg)
    return reg


async def test_node_jobs_are_indexed_by_a_backfill(node: str, redis_url: str) -> None:
    queue = f"idx-{uuid.uuid4().hex[:8]}"
    base = {"url": redis_url, "queue": queue, "prefix": "bull"}
    ids = run_node(
        node,
        "produce",
        {
            **base,
            "jobs": [
                {"key": "a", "name": "record", "data": {"user_id": 9}, "opts": {"delay": 3600000}},
                {"key": "b", "name": "record", "data": {"user_id": 8}, "opts": {"delay": 3600000}},
            ],
            "schedulers": [
                {
                    "id": "node-hourly",
                    "repeat": {"every": 3600000},
                    "template": {"name": "record", "data": {"user_id": 9}},
                }
            ],
        },
    )
    driver = BullMQDriver(redis_url, queue=queue)
    kernel = Kernel(driver, tasks=registry([]))
    await kernel.open()
    try:
        await driver.ensure_indexes(["user_id"])
        found = await driver.list_jobs(where={"user_id": 9})
        assert {j.id for j in found} == {ids["a"], "node-hourly"}
        assert await driver._indexed_ids({"user_id": 9}) == {ids["a"], "node-hourly"}
        # Node's scripts do not index: a job Node adds later is found once reindexed
        later = run_node(
            node,
            "produce",
            {**base, "jobs": [{"key": "c", "name": "record", "data": {"user_id": 9}}]},
        )
        assert later["c"] not in {j.id for j in await driver.list_jobs(where={"user_id": 9})}
        await driver.reindex()
        assert later["c"] in {j.id for j in await driver.list_jobs(where={"user_id": 9})}
    finally:
        await kernel.stop()


async def test_node_sees_the_history_tickkit_reports(node: str, redis_url: str) -> None:
    queue = f"hist-{uuid.uuid4().hex[:8]}"
    runs: list[Any] = []
    driver = BullMQDriver(redis_url, queue=queue)
    async with Kernel(driver, tasks=registry(runs)) as kernel:
        failing = await kernel.create_task("boom", {"n": 1})
        recurring = await kernel.create_task(
            "record", {"n": 2}, {"type": "interval", "value": 0.3}, id="every300"
        )
        await wait_for(
            lambda: (
                len([r for r in runs if r[0] == "boom"]) == 3
                and len([r for r in runs if r[0] == "record"]) >= 3
            ),
            20,
            "three attempts and three occurrences",
        )
        await kernel.delete_task(recurring)

        async def idle() -> bool:
            return (await driver.queue_counts())["active"] == 0

        await wait_for(idle, 10, "the last runs to finish")
        failed_runs = await driver.get_runs(failing)
        recurring_runs = await driver.get_runs(recurring, limit=100)
    seen = run_node(node, "jobs", {"url": redis_url, "queue": queue, "prefix": "bull"})
    by_id = {job["id"]: job for job in seen}
    # the one-off job: one BullMQ hash, its attempts, its reason and every traceback
    job = by_id[failing]
    assert job["attemptsMade"] == 3 == len(failed_runs)
    assert job["failedReason"] == "RuntimeError: boom 3"
    assert [r.attempt for r in failed_runs] == [3, 2, 1]
    assert len(job["stacktrace"]) == 3
    for trace, run in zip(job["stacktrace"], reversed(failed_runs), strict=True):
        assert trace == run.error and "Traceback" in trace
    assert job["processedBy"] == kernel.id == failed_runs[0].worker
    # (BullMQ's finishedOn is when the script ran, a moment after the run's own end)
    assert 0 <= job["finishedOn"] - failed_runs[0].finished_at.timestamp() * 1000 < 2000
    # the recurring job: one produced BullMQ job per occurrence, the same ones tickkit reports
    produced = {
        i: j for i, j in by_id.items() if j.get("repeatJobKey") == recurring and j["finishedOn"]
    }
    assert len(produced) == len(recurring_runs) >= 3
    assert all(r.outcome is Outcome.SUCCEEDED for r in recurring_runs)
    assert {int(r.scheduled_at.timestamp() * 1000) for r in recurring_runs if r.scheduled_at} == {
        int(i.rsplit(":", 1)[1]) for i in produced
    }


async def test_an_updated_job_round_trips_to_node(node: str, redis_url: str) -> None:
    queue = f"upd-{uuid.uuid4().hex[:8]}"
    base = {"url": redis_url, "queue": queue, "prefix": "bull"}
    driver = BullMQDriver(redis_url, queue=queue)
    kernel = Kernel(driver, tasks=registry([]))
    await kernel.open()  # managing only: Node's worker runs the job
    try:
        job_id = await kernel.create_task("record", {"v": "old"}, timedelta(hours=2))
        soon = kernel.clock.now() + timedelta(milliseconds=300)
        updated = await driver.update_job(job_id, data={"v": "new"}, next_run_at=soon)
        assert updated is not None and updated.data == {"v": "new"}
        before = run_node(node, "jobs", {**base, "ids": [job_id]})
        assert before[0]["data"] == {"v": "new"}
        out = run_node(node, "worker", {**base, "expectIds": [job_id], "timeoutMs": 15000})
        assert [p["data"] for p in out["processed"]] == [{"v": "new"}]
        done = await driver.get_job(job_id)
        assert done is not None and done.state.value == "completed"
        assert done.data == {"v": "new"}
    finally:
        await kernel.stop()
