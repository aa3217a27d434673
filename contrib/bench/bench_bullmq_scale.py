"""The dashboard's calls on the BullMQ (Redis) driver at 1,000,000 stored jobs (issue 15):
count_jobs, count_jobs(state=...), count_by_name, list_jobs(limit=25) with and without
``state``, ``after`` and ``name``, against the scan every one of them did before
(``_all_jobs``: every job's hash read).

The store: a redis-server started on a free port (``--save ""``, no AOF) as bench_bullmq.py
does, filled by a Lua bulk loader (this script only) with hashes as the driver's add.lua writes
them, of 10 task names: 70% delayed (due over the next days), 10% in wait, 10% completed (a
tenth of them MISSED), 10% failed; plus 100 job schedulers added through the driver. Each call
is timed 3 times (median); the scan once (it is what every call did before).

Run from the repository root::

    .venv/bin/python contrib/bench/bench_bullmq_scale.py              # 1,000,000 jobs
    .venv/bin/python contrib/bench/bench_bullmq_scale.py --jobs 100000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from bench_bullmq import start_redis
from common import machine_summary

from tickkit import Job, JobState, Kernel, TaskContext, TaskRegistry, task
from tickkit.drivers.bullmq import BullMQDriver
from tickkit.models import Cursor
from tickkit.testing import VirtualClock

UTC = timezone.utc
NOW = datetime(2026, 1, 1, tzinfo=UTC)
NAMES = [f"task{i}" for i in range(10)]

LOADER = """
local P = ARGV[1]
local first, last, now = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local opts = '{"attempts":0,"removeOnComplete":1000,"removeOnFail":false}'
for i = first, last do
  local id = tostring(redis.call("INCR", P .. "id"))
  local key = P .. id
  local name = "task" .. (math.floor(i / 10) % 10)
  local data = '{"user_id":' .. i .. '}'
  local kind = i % 10
  if kind < 7 then
    local at = now + i * 500
    redis.call("HSET", key, "name", name, "data", data, "opts", opts, "timestamp", now,
      "delay", at - now, "priority", 0, "atm", 0, "tk.at", at)
    redis.call("ZADD", P .. "delayed", at * 4096, id)
  elseif kind == 7 then
    redis.call("HSET", key, "name", name, "data", data, "opts", opts, "timestamp", now,
      "delay", 0, "priority", 0, "atm", 0, "tk.at", now)
    redis.call("LPUSH", P .. "wait", id)
  elseif kind == 8 then
    local outcome = "succeeded"
    if i % 100 == 8 then outcome = "missed" end
    redis.call("HSET", key, "name", name, "data", data, "opts", opts, "timestamp", now,
      "delay", 0, "priority", 0, "atm", 1, "tk.at", now, "processedOn", now,
      "finishedOn", now + i, "returnvalue", "null", "tk.outcome", outcome)
    redis.call("ZADD", P .. "completed", now + i, id)
  else
    redis.call("HSET", key, "name", name, "data", data, "opts", opts, "timestamp", now,
      "delay", 0, "priority", 0, "atm", 1, "tk.at", now, "processedOn", now,
      "finishedOn", now + i, "failedReason", "boom", "stacktrace", '["Traceback: boom"]',
      "tk.outcome", "failed")
    redis.call("ZADD", P .. "failed", now + i, id)
  end
end
return last - first + 1
"""


def registry() -> TaskRegistry:
    reg = TaskRegistry()

    async def nothing(ctx: TaskContext) -> None:
        return None

    for name in NAMES:
        task(name=name, execute=nothing, registry=reg)
    return reg


async def timed(call: Callable[[], Awaitable[Any]], times: int = 3) -> tuple[float, Any]:
    spent = []
    result = None
    for _ in range(times):
        start = time.perf_counter()
        result = await call()
        spent.append(time.perf_counter() - start)
    return statistics.median(spent), result


async def main(jobs: int, scan: bool) -> None:
    with tempfile.TemporaryDirectory() as workdir:
        url, proc = start_redis(workdir)
        try:
            await measure(url, jobs, scan)
        finally:
            proc.terminate()
            proc.wait()


async def measure(url: str, jobs: int, scan: bool) -> None:
    driver = BullMQDriver(url, queue="scale", poll_interval=None)
    kernel = Kernel(driver, tasks=registry(), clock=VirtualClock(NOW))
    await kernel.open()
    try:
        redis = driver._redis
        start = time.perf_counter()
        now_ms = int(NOW.timestamp() * 1000)
        for first in range(0, jobs, 10_000):
            last = min(first + 10_000, jobs) - 1
            await redis.eval(LOADER, 0, driver.key, first, last, now_ms)
        for i in range(100):
            await driver.add_job(
                Job(
                    id=f"sched{i}",
                    name=NAMES[i % 10],
                    data={"s": i},
                    schedule={"type": "interval", "value": 3600},
                    next_run_at=NOW + timedelta(minutes=i),
                )
            )
        print(f"filled {jobs:,} jobs + 100 schedulers in {time.perf_counter() - start:.1f} s")
        print(machine_summary())
        memory = (await redis.info("memory"))["used_memory_human"]
        print(f"Redis used_memory: {memory}")

        page = await driver.list_jobs(limit=25)
        cursor = Cursor(page[-1].next_run_at, page[-1].id or "")
        rows: list[tuple[str, float, str]] = []

        async def row(label: str, call: Callable[[], Awaitable[Any]]) -> Any:
            seconds, result = await timed(call)
            shown = result if isinstance(result, (dict, int)) else f"{len(result)} jobs"
            rows.append((label, seconds, str(shown)[:70]))
            print(f"{label:48} {seconds * 1000:10.1f} ms   {str(shown)[:70]}", flush=True)
            return result

        counts = await row("count_jobs()", driver.count_jobs)
        await row(
            "count_jobs(state=SCHEDULED)", lambda: driver.count_jobs(state=JobState.SCHEDULED)
        )
        await row("count_jobs(state=FAILED)", lambda: driver.count_jobs(state=JobState.FAILED))
        await row("count_jobs(name='task3')", lambda: driver.count_jobs(name="task3"))
        await row("count_by_name()", driver.count_by_name)
        await row(
            "count_by_name(state=FAILED)", lambda: driver.count_by_name(state=JobState.FAILED)
        )
        await row("list_jobs(limit=25)", lambda: driver.list_jobs(limit=25))
        await row(
            "list_jobs(state=FAILED, limit=25)",
            lambda: driver.list_jobs(state=JobState.FAILED, limit=25),
        )
        await row(
            "list_jobs(limit=25, after=25th)", lambda: driver.list_jobs(limit=25, after=cursor)
        )
        await row(
            "list_jobs(name='task3', limit=25)", lambda: driver.list_jobs(name="task3", limit=25)
        )
        if scan:
            seconds, everything = await timed(driver._all_jobs, times=1)
            print(f"{'the scan (_all_jobs), every call before':48} {seconds * 1000:10.1f} ms")
            by_state: dict[JobState, int] = {}
            for job in everything:
                by_state[job.state] = by_state.get(job.state, 0) + 1
            assert by_state == counts, (by_state, counts)
            print("count_jobs() equals the scan's count")
    finally:
        await kernel.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--no-scan", action="store_true", help="skip timing the old scan")
    args = parser.parse_args()
    asyncio.run(main(args.jobs, not args.no_scan))
