"""Job-management benchmark (issue 14): one user's page of jobs by ``where``, the rates of
``create_task``, ``update_task`` and ``get_runs``, and the memory an index costs, on the memory,
SQLite and BullMQ (Redis) drivers side by side.

Workloads:

1. lookup: N stored reminders (10,000, 100,000, 1,000,000) of N/10 users, data
   ``{"user_id": u, "text": "reminder of user u"}``, one-off jobs 30 days ahead (job i belongs to
   user i % (N/10), so a user's jobs are spread over the whole store), task declared with
   ``indexes=["user_id"]``. Timed: ``kernel.list_tasks("remind", where={"user_id": u},
   limit=10)`` for 200 random users (20 untimed first), median and p95 in ms; every page is
   checked to hold the user's 10 jobs. Then the same page by the key ``text``, which is not
   indexed (a scan), at 10,000 and 100,000 jobs only (fewer lookups: each reads every job).
   The store is filled without a running dispatcher (``kernel.open()`` then
   ``kernel.sync_static()``, which records the index, then the driver directly): memory and
   Redis by ``driver.add_job`` (Redis: 500 calls in flight at a time over the driver's one
   connection), SQLite by ``SQLiteDriver.add_jobs`` in batches of 20,000. Filling is not timed
   (its rate is printed).
2. rates: on a fresh store, ``create_task`` one at a time (a reminder 30 days ahead),
   ``update_task(id, data=...)`` one at a time on those jobs, and ``get_runs(id)`` on jobs with
   a history: 100 jobs of an interval task (every 0.2 s) run on a started kernel until each ran
   5 times, then deleted (their history stays: "why did my reminder not fire"), and
   ``get_runs(id, limit=20)`` is called 5 times per job. Calls per second.
3. memory: RSS growth per job after ``create_task`` of 1,000,000 reminders on ``memory://``,
   with and without ``indexes=["user_id"]``, each in a fresh subprocess (as bench_memory.py).

Run from the repository root::

    .venv/bin/python contrib/bench/bench_manage.py                   # 10k, 100k, 1M
    .venv/bin/python contrib/bench/bench_manage.py --quick           # 10k, 100k
    .venv/bin/python contrib/bench/bench_manage.py --only lookup --sizes 10000,1000000 \\
        --drivers sqlite,redis

Redis: a redis-server started on a free port (``--save ""``, no AOF), as bench_bullmq.py does.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from bench_bullmq import start_redis
from bench_memory import _rss_bytes
from common import Row, machine_summary, median, percentile, print_table, run_json_subprocess

import tickkit
from tickkit import Job, Kernel, TaskContext, TaskRegistry, task

UTC = timezone.utc
DRIVERS = ("memory", "sqlite", "redis")
LABELS = {"memory": "memory", "sqlite": "SQLite", "redis": "Redis (BullMQ)"}
LOOKUPS = 200
WARM_UP = 20
#: lookups by an unindexed key (each reads every stored job)
SCAN_LOOKUPS = {10_000: 20, 100_000: 3}
SQLITE_BATCH = 20_000
REDIS_IN_FLIGHT = 500
HISTORY_JOBS = 100
HISTORY_RUNS = 5
MEMORY_TIMEOUT = 1800.0


def _registry(indexes: Sequence[str]) -> TaskRegistry:
    async def remind(ctx: TaskContext) -> None:
        pass

    reg = TaskRegistry()
    task(name="remind", execute=remind, registry=reg, indexes=list(indexes))
    return reg


def _text(user: int) -> str:
    return f"reminder of user {user}"


class Store:
    """One store of a driver: its URL and what to close afterwards."""

    def __init__(self, kind: str, workdir: str) -> None:
        self.kind = kind
        self.workdir = workdir
        self.redis: Any = None
        self.count = 0

    def url(self) -> str:
        self.count += 1
        if self.kind == "memory":
            return "memory://"
        if self.kind == "sqlite":
            return f"sqlite:///{self.workdir}/bench-{uuid.uuid4().hex[:12]}.db"  # a new file
        if self.redis is None:
            self.redis_url, self.redis = start_redis(self.workdir)
        return self.redis_url.rsplit("/", 1)[0] + f"/{self.count % 16}"

    def kernel(self, reg: TaskRegistry, **options: Any) -> Kernel:
        url = self.url()
        if self.kind == "redis":
            from tickkit.drivers.bullmq import BullMQDriver

            return Kernel(BullMQDriver(url, queue=f"bench{self.count}"), tasks=reg, **options)
        return Kernel(driver=url, tasks=reg, **options)

    def close(self) -> None:
        if self.redis is not None:
            self.redis.terminate()
            self.redis.wait()
            self.redis = None


async def _flush_redis(kernel: Kernel) -> None:
    redis = getattr(kernel.driver, "_redis", None)
    if redis is not None:
        await redis.flushdb()


async def fill(kernel: Kernel, kind: str, jobs: int) -> float:
    """Store ``jobs`` reminders of ``jobs // 10`` users; return jobs stored per second."""
    users = max(1, jobs // 10)
    codec = kernel.codec
    driver = kernel.driver
    now = datetime.now(UTC).replace(microsecond=0)
    far = now + timedelta(days=30)

    def make(i: int) -> Job:
        user = i % users
        data = {"user_id": user, "text": _text(user)}
        text = codec.encode(data)
        return Job.one_off(
            "remind",
            codec.decode(text),
            at=far + timedelta(milliseconds=i),
            created_at=now,
            data_text=text,
        )

    started = time.perf_counter()
    if kind == "sqlite":
        for start in range(0, jobs, SQLITE_BATCH):
            batch = [make(i) for i in range(start, min(jobs, start + SQLITE_BATCH))]
            await driver.add_jobs(batch)  # type: ignore[attr-defined]
    elif kind == "redis":
        for start in range(0, jobs, REDIS_IN_FLIGHT):
            end = min(jobs, start + REDIS_IN_FLIGHT)
            await asyncio.gather(*(driver.add_job(make(i)) for i in range(start, end)))
    else:
        for i in range(jobs):
            await driver.add_job(make(i))
            if i % 10_000 == 0:
                await asyncio.sleep(0)
    rate = jobs / (time.perf_counter() - started)
    if kind == "redis":
        # count_tasks on the BullMQ driver reads every job in one pipeline: at 1,000,000 jobs
        # it fails (a socket write timeout), so the queue's own count checks the fill
        stored = (await driver.queue_counts())["delayed"]  # type: ignore[attr-defined]
    else:
        stored = await kernel.count_tasks("remind")
    if stored != jobs:
        raise RuntimeError(f"{kind}: {stored} jobs stored, expected {jobs}")
    return rate


async def _lookups(kernel: Kernel, users: list[int], key: str) -> list[float]:
    times = []
    for user in users:
        value: Any = user if key == "user_id" else _text(user)
        t = time.perf_counter()
        page = await kernel.list_tasks("remind", where={key: value}, limit=10)
        times.append((time.perf_counter() - t) * 1000)
        if len(page) != 10 or any(job.data["user_id"] != user for job in page):
            raise RuntimeError(f"user {user}: a wrong page of {len(page)} jobs")
    return times


async def lookup(kind: str, jobs: int, workdir: str, seed: int) -> dict[str, float | None]:
    store = Store(kind, workdir)
    try:
        kernel = store.kernel(_registry(["user_id"]))
        await kernel.open()
        try:
            await _flush_redis(kernel)
            await kernel.sync_static()  # records the index (start() does it); no dispatch
            rate = await fill(kernel, kind, jobs)
            gc.collect()
            rnd = random.Random(seed)
            users = jobs // 10
            await _lookups(kernel, [rnd.randrange(users) for _ in range(WARM_UP)], "user_id")
            times = await _lookups(
                kernel, [rnd.randrange(users) for _ in range(LOOKUPS)], "user_id"
            )
            result: dict[str, float | None] = {
                "fill_per_s": rate,
                "median_ms": median(times),
                "p95_ms": percentile(times, 95),
                "scan_median_ms": None,
            }
            scans = SCAN_LOOKUPS.get(jobs)
            if scans:
                scan = await _lookups(kernel, [rnd.randrange(users) for _ in range(scans)], "text")
                result["scan_median_ms"] = median(scan)
            await _flush_redis(kernel)
        finally:
            await kernel.stop()
    finally:
        store.close()
    return result


async def rates(kind: str, n: int, workdir: str) -> dict[str, float]:
    store = Store(kind, workdir)
    ran: dict[str, int] = {}
    enough = asyncio.Event()

    async def tick(ctx: TaskContext) -> None:
        ran[ctx.job_id] = ran.get(ctx.job_id, 0) + 1
        if len(ran) == HISTORY_JOBS and min(ran.values()) >= HISTORY_RUNS:
            enough.set()

    reg = _registry(["user_id"])
    task(name="tick", execute=tick, registry=reg)
    try:
        kernel = store.kernel(reg)
        await kernel.open()
        await _flush_redis(kernel)
        far = datetime.now(UTC) + timedelta(days=30)
        t = time.perf_counter()
        ids = [
            await kernel.create_task("remind", {"user_id": i, "text": _text(i)}, far)
            for i in range(n)
        ]
        creates = n / (time.perf_counter() - t)
        t = time.perf_counter()
        for i, job_id in enumerate(ids):
            await kernel.update_task(job_id, data={"user_id": i, "text": "changed"})
        updates = n / (time.perf_counter() - t)
        # history: interval jobs run on a started kernel until each ran HISTORY_RUNS times
        await kernel.start()
        try:
            every = {"type": "interval", "value": 0.2}
            ticks = [await kernel.create_task("tick", None, every) for _ in range(HISTORY_JOBS)]
            await asyncio.wait_for(enough.wait(), 120)
            for job_id in ticks:
                await kernel.delete_task(job_id)
            await asyncio.sleep(0.5)  # runs in flight finish and are recorded
            lengths = [len(await kernel.get_runs(job_id)) for job_id in ticks]
            calls = 0
            t = time.perf_counter()
            for _ in range(5):
                for job_id in ticks:
                    await kernel.get_runs(job_id, limit=20)
                    calls += 1
            runs = calls / (time.perf_counter() - t)
            await _flush_redis(kernel)
        finally:
            await kernel.stop()
    finally:
        store.close()
    return {
        "creates_per_s": creates,
        "updates_per_s": updates,
        "get_runs_per_s": runs,
        "history_median": median(lengths),
        "history_min": min(lengths),
    }


async def memory_child(indexed: bool, jobs: int) -> dict[str, float]:
    """Bytes per job (RSS growth) after ``create_task`` of ``jobs`` reminders on memory://."""
    kernel = Kernel(driver="memory://", tasks=_registry(["user_id"] if indexed else []))
    await kernel.open()
    await kernel.sync_static()
    far = datetime.now(UTC) + timedelta(days=30)
    users = max(1, jobs // 10)
    await kernel.create_task("remind", {"user_id": -1, "text": _text(-1)}, far)  # warm up
    gc.collect()
    before = _rss_bytes()
    t = time.perf_counter()
    for i in range(jobs):
        user = i % users
        await kernel.create_task(
            "remind", {"user_id": user, "text": _text(user)}, far + timedelta(milliseconds=i)
        )
        if i % 10_000 == 0:
            await asyncio.sleep(0)
    elapsed = time.perf_counter() - t
    gc.collect()
    after = _rss_bytes()
    stored = await kernel.count_tasks("remind")
    await kernel.stop()
    if stored != jobs + 1:
        raise RuntimeError(f"{stored} jobs stored, expected {jobs + 1}")
    return {"bytes_per_job": (after - before) / jobs, "jobs_per_second": jobs / elapsed}


def memory(indexed: bool, jobs: int) -> dict[str, float | None]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--child-memory"]
    argv += ["indexed" if indexed else "plain", "--jobs", str(jobs)]
    try:
        result: dict[str, float | None] = run_json_subprocess(argv, timeout=MEMORY_TIMEOUT)
        return result
    except Exception as exc:  # shown, then n/a in the table
        print(f"memory subprocess failed: {exc}", file=sys.stderr)
        return {"bytes_per_job": None, "jobs_per_second": None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="sizes 10k and 100k, fewer calls")
    parser.add_argument("--sizes", help="stored jobs for the lookup, comma separated")
    parser.add_argument("--drivers", default=",".join(DRIVERS), help="memory,sqlite,redis")
    parser.add_argument("--only", default="lookup,rates,memory", help="lookup,rates,memory")
    parser.add_argument("--rate-jobs", type=int, help="jobs created/updated for the rates")
    parser.add_argument("--memory-jobs", type=int, help="jobs for the memory measurement")
    parser.add_argument("--dir", help="directory for the SQLite files and Redis")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--child-memory", choices=["indexed", "plain"], help=argparse.SUPPRESS)
    parser.add_argument("--jobs", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_memory:
        import json

        print(json.dumps(asyncio.run(memory_child(args.child_memory == "indexed", args.jobs))))
        return 0
    if args.sizes:
        sizes = [int(s.replace("_", "")) for s in args.sizes.split(",")]
    else:
        sizes = [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000]
    kinds = [k.strip() for k in args.drivers.split(",") if k.strip()]
    only = {w.strip() for w in args.only.split(",")}
    rate_jobs = args.rate_jobs or (1000 if args.quick else 3000)
    memory_jobs = args.memory_jobs or (100_000 if args.quick else 1_000_000)
    labels = [LABELS[k] for k in kinds]
    print(f"tickkit {tickkit.__version__}; {machine_summary()}")
    with tempfile.TemporaryDirectory(dir=args.dir) as workdir:
        if "lookup" in only:
            rows = []
            fills = []
            for size in sizes:
                found = {}
                for kind in kinds:
                    found[kind] = asyncio.run(lookup(kind, size, workdir, args.seed))
                    print(f"  {kind} {size:,}: {found[kind]}", flush=True)
                    fills.append(f"{LABELS[kind]} {size:,}: {found[kind]['fill_per_s']:,.0f}/s")
                for key, what in (("median_ms", "median"), ("p95_ms", "p95")):
                    rows.append(
                        Row(
                            f"page of 10 by indexed where, {size:,} jobs, {what}",
                            "ms",
                            {LABELS[k]: found[k][key] for k in kinds},
                            higher_is_better=False,
                        )
                    )
                if size in SCAN_LOOKUPS:
                    rows.append(
                        Row(
                            f"page of 10 by UNindexed where (scan), {size:,} jobs, median",
                            "ms",
                            {LABELS[k]: found[k]["scan_median_ms"] for k in kinds},
                            higher_is_better=False,
                            note=f"{SCAN_LOOKUPS[size]} lookups",
                        )
                    )
            print_table(
                "one user's first page (limit 10), N/10 users",
                rows,
                labels=labels,
                notes=[
                    f"{LOOKUPS} random users each ({WARM_UP} untimed first); filled (untimed) at: "
                    + "; ".join(fills)
                ],
            )
        if "rates" in only:
            found_rates = {}
            for kind in kinds:
                found_rates[kind] = asyncio.run(rates(kind, rate_jobs, workdir))
                print(f"  {kind}: {found_rates[kind]}", flush=True)
            rows = [
                Row(
                    what,
                    "calls/s",
                    {LABELS[k]: found_rates[k][key] for k in kinds},
                    higher_is_better=True,
                )
                for key, what in (
                    ("creates_per_s", f"create_task, one at a time ({rate_jobs:,})"),
                    ("updates_per_s", f"update_task(data=...), one at a time ({rate_jobs:,})"),
                    ("get_runs_per_s", f"get_runs(limit=20), {HISTORY_JOBS} jobs x 5 calls"),
                )
            ]
            print_table(
                "rates",
                rows,
                labels=labels,
                notes=[
                    "history per job for get_runs (median/min): "
                    + "; ".join(
                        f"{LABELS[k]} {found_rates[k]['history_median']:.0f}/"
                        f"{found_rates[k]['history_min']:.0f}"
                        for k in kinds
                    )
                ],
            )
        if "memory" in only:
            plain = memory(False, memory_jobs)
            indexed = memory(True, memory_jobs)
            rows = [
                Row(
                    f"RSS growth per job, {memory_jobs:,} reminders, memory://",
                    "B",
                    {"indexed": indexed["bytes_per_job"], "no index": plain["bytes_per_job"]},
                    higher_is_better=False,
                ),
                Row(
                    "create_task rate while storing them",
                    "jobs/s",
                    {"indexed": indexed["jobs_per_second"], "no index": plain["jobs_per_second"]},
                    higher_is_better=True,
                ),
            ]
            print_table("memory per job with an index (user_id)", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
