"""Faults on a real redis-server: Redis restarted mid-run, a worker killed mid-job.

Both need real time (Redis expires locks on its own clock), so they wait on conditions with
bounded timeouts. Run as a script (``python tests/test_bullmq_faults.py hang ...``) this
module is the worker process that gets killed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tickkit import Kernel, TaskContext, TaskRegistry, task
from tickkit.drivers.bullmq import BullMQDriver

from .waiting import wait_for

if TYPE_CHECKING:  # this module also runs as a script (the killed worker)
    from .redis_server import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.slow
async def test_redis_restart_mid_run_loses_no_job(
    redis_server: tuple[str, RedisServer | None],
) -> None:
    url, server = redis_server
    if server is None:
        pytest.skip("REDIS_URL is an external server: this test must restart its own")
    queue = f"restart-{uuid.uuid4().hex[:8]}"
    ran: list[str] = []
    reg = TaskRegistry()

    async def record(ctx: TaskContext) -> None:
        await asyncio.sleep(0.002)
        ran.append(ctx.job_id)

    task(name="record", execute=record, registry=reg)
    driver = BullMQDriver(url, queue=queue, lock_duration=2.0, stalled_interval=0.5)
    admin = BullMQDriver(url, queue=queue)
    # the test server runs without persistence: save a snapshot at shutdown for this restart
    opener = Kernel(admin, tasks=reg)
    await opener.open()
    try:
        await admin._redis.config_set("save", "3600 1")
    finally:
        await opener.stop()
    try:
        async with Kernel(driver, tasks=reg, concurrency=16) as kernel:
            ids = [await kernel.create_task("record", {"i": i}) for i in range(1000)]
            await wait_for(lambda: len(ran) >= 200, 30, "the first 200 runs")
            assert len(set(ran)) < 1000, "the restart must happen mid-run"
            await asyncio.to_thread(server.restart)
            await wait_for(lambda: set(ran) >= set(ids), 60, "every job to run")
    finally:
        check = BullMQDriver(url, queue=queue)
        opener = Kernel(check, tasks=reg)
        await opener.open()
        try:
            await check._redis.config_set("save", "")
        finally:
            await opener.stop()
    assert set(ran) == set(ids)  # at-least-once: a run cut by the restart may repeat


def _hang_main(url: str, queue: str, started: str) -> None:
    """A worker whose job never ends (it is killed with SIGKILL)."""

    async def main() -> None:
        reg = TaskRegistry()

        async def stuck(ctx: TaskContext) -> None:
            await asyncio.to_thread(Path(started).write_text, ctx.job_id, encoding="utf-8")
            await asyncio.sleep(3600)

        task(name="stuck", execute=stuck, registry=reg)
        # workers of one queue share the stalled-check mutex: give them the same interval
        driver = BullMQDriver(url, queue=queue, lock_duration=1.0, stalled_interval=0.3)
        async with Kernel(driver, tasks=reg):
            await asyncio.sleep(3600)

    asyncio.run(main())


def spawn_hanging_worker(url: str, queue: str, started: Path) -> Any:
    # as a module from the repository root, so that its relative imports resolve
    return subprocess.Popen(
        [sys.executable, "-m", "tests.test_bullmq_faults", "hang", url, queue, str(started)],
        cwd=Path(__file__).resolve().parent.parent,
    )


async def test_killed_worker_job_runs_again(redis_url: str, tmp_path: Path) -> None:
    queue = f"stall-{uuid.uuid4().hex[:8]}"
    reruns: list[tuple[str, int]] = []
    reg = TaskRegistry()

    async def stuck(ctx: TaskContext) -> None:
        reruns.append((ctx.job_id, ctx.attempt))

    task(name="stuck", execute=stuck, registry=reg)
    driver = BullMQDriver(redis_url, queue=queue, lock_duration=1.0, stalled_interval=0.3)
    kernel = Kernel(driver, tasks=reg)
    await kernel.open()
    job_id = await kernel.create_task("stuck", {"x": 1})
    await kernel.stop()
    started = tmp_path / "started"
    proc = spawn_hanging_worker(redis_url, queue, started)
    try:
        # the file is created before its content is written: wait for the content
        await wait_for(
            lambda: started.exists() and started.read_text() != "",
            20,
            "the worker to start the job",
        )
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        await asyncio.to_thread(proc.wait, 10)
    assert started.read_text() == job_id
    async with Kernel(driver, tasks=reg) as k2:
        await wait_for(lambda: bool(reruns), 15, "the stalled job to run again")
        view = await k2.get_task(job_id)
        stalled_count = await driver._redis.hget(f"bull:{queue}:{job_id}", "stc")
        events = await driver._redis.xrange(f"bull:{queue}:events")
    assert reruns == [(job_id, 1)]  # a stall is not a failed attempt (BullMQ's rule)
    assert stalled_count == "1"
    assert {"event": "stalled", "jobId": job_id} in [e for _, e in events]
    assert view is not None


if __name__ == "__main__" and sys.argv[1:2] == ["hang"]:
    _hang_main(sys.argv[2], sys.argv[3], sys.argv[4])
