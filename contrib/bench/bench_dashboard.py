"""Dashboard benchmark (issue 15): how long each dashboard page takes with N stored jobs.

Fills a store with ``--jobs`` jobs (default 1,000,000) through ``driver.add_jobs`` in batches,
then asks every page of the real ASGI application (``tickkit.plugins.dashboard.create_app``,
through ``httpx.AsyncClient`` with ``ASGITransport``) ``--runs`` times (default 5) and prints
the median time of each, in milliseconds. Stores: SQLite (a temporary file), PostgreSQL (a
database of its own on ``--postgres`` / ``TICKKIT_PG_URL``, dropped at the end; ``--no-postgres``
skips it) and, with ``--redis URL``, Redis (the BullMQ driver; the bench uses the queue prefix
``tickkit-bench-<random>`` and removes its keys at the end).

The mix, close to a bot's store: 8 task names (one of them 40% of the jobs, the others fewer),
96% scheduled over the next 30 days (a fifth of them recurring daily), 2% paused, 1% failed
(with an error), 1% completed; each job's data is ``{"user": i % 20,000, "text": ...}`` with
``user`` indexed (every task declares ``indexes=["user"]``). Then 2,000 due jobs are claimed
and completed (one in ten failing), so that the run history and the run counters hold runs of
the last minutes.

Run from the repository root::

    .venv/bin/python contrib/bench/bench_dashboard.py                    # 1M jobs, SQLite + PG
    .venv/bin/python contrib/bench/bench_dashboard.py --jobs 100000 --no-postgres
    .venv/bin/python contrib/bench/bench_dashboard.py --no-postgres --sqlite-file /tmp/1m.db
    .venv/bin/python contrib/bench/bench_dashboard.py --redis redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).parent))

from common import machine_summary, median

SERVER = os.environ.get("TICKKIT_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BATCH = 10_000
NAMES = ["remind", "digest", "cleanup", "report", "sync", "notify", "backup", "poll"]
#: the share of jobs of each name (remind 40%, then fewer)
WEIGHTS = [40, 20, 12, 10, 8, 5, 3, 2]
USERS = 20_000
#: due jobs claimed and completed after the fill (run history and counters)
RAN = 2_000


def registry() -> Any:
    from tickkit import TaskRegistry, define_task

    async def noop(ctx: Any) -> None:
        return None

    return TaskRegistry([define_task(name=name, execute=noop, indexes=["user"]) for name in NAMES])


def name_of(i: int) -> str:
    slot = i % 100
    for name, weight in zip(NAMES, WEIGHTS, strict=True):
        if slot < weight:
            return name
        slot -= weight
    return NAMES[-1]


def make_job(i: int, now: datetime) -> Any:
    from tickkit import Job, JobState, Outcome

    data = {"user": i % USERS, "text": f"job {i}: remember the thing number {i}"}
    kind = i % 100
    if kind == 0:  # failed with no retry left
        return Job(
            id=None,
            name=name_of(i),
            data=data,
            state=JobState.FAILED,
            created_at=now - timedelta(days=1),
            last_run_at=now - timedelta(minutes=i % 1440),
            last_outcome=Outcome.FAILED,
            last_error="RuntimeError: the printer is on fire",
            attempt=3,
            runs=3,
        )
    if kind == 1:  # completed (kept)
        return Job(
            id=None,
            name=name_of(i),
            data=data,
            state=JobState.COMPLETED,
            created_at=now - timedelta(days=1),
            last_run_at=now - timedelta(minutes=i % 1440),
            last_outcome=Outcome.SUCCEEDED,
            runs=1,
        )
    at = now + timedelta(seconds=60 + (i * 2_591) % (30 * 86_400))
    state = JobState.PAUSED if kind in (2, 3) else JobState.SCHEDULED
    schedule = None
    if kind % 5 == 4:
        minute, hour = i % 60, (i // 60) % 24
        schedule = {"type": "cron", "value": f"{minute} {hour} * * *", "timezone": "UTC"}
    return Job(
        id=None,
        name=name_of(i),
        data=data,
        schedule=schedule,
        next_run_at=at,
        scheduled_at=at,
        state=state,
        created_at=now,
    )


async def add_jobs(driver: Any, jobs: list[Any]) -> None:
    """``driver.add_jobs`` (SQLite, PostgreSQL); a driver without it gets the jobs one
    ``add_job`` at a time, 100 under way at once."""
    if hasattr(driver, "add_jobs"):
        await driver.add_jobs(jobs)
        return
    for first in range(0, len(jobs), 100):
        await asyncio.gather(*(driver.add_job(job) for job in jobs[first : first + 100]))


async def fill(kernel: Any, n: int, log: Callable[[str], None]) -> None:
    """``n`` jobs through ``add_jobs`` in batches, then RAN due jobs run (some failing)."""
    from tickkit import Job, Outcome, RunResult

    driver = kernel.driver
    now = kernel.clock.now()
    started = time.perf_counter()
    for first in range(0, n, BATCH):
        await add_jobs(driver, [make_job(i, now) for i in range(first, min(n, first + BATCH))])
        if (first // BATCH) % 20 == 19:
            log(f"  {first + BATCH:,} jobs stored ({time.perf_counter() - started:.0f} s)")
    log(f"  {n:,} jobs stored in {time.perf_counter() - started:.0f} s")
    # what a worker's start does for tasks declaring indexes=["user"] (the store records it)
    started = time.perf_counter()
    await driver.ensure_indexes(["user"])
    log(f"  'user' indexed in {time.perf_counter() - started:.0f} s")
    due = now - timedelta(minutes=5)
    await add_jobs(
        driver,
        [
            Job(id=None, name=name_of(i), data={"user": i % USERS}, next_run_at=due)
            for i in range(RAN)
        ],
    )
    done = 0
    while done < RAN:
        claims = (await driver.acquire(now=now, limit=100)).claims
        if not claims:
            break
        for k, claim in enumerate(claims):
            outcome = Outcome.FAILED if (done + k) % 10 == 0 else Outcome.SUCCEEDED
            error = "RuntimeError: boom" if outcome is Outcome.FAILED else None
            await driver.complete(
                claim, RunResult(outcome, now, error=error, traceback=error, started_at=due)
            )
        done += len(claims)
    log(f"  {done:,} runs completed")


async def pages(client: Any, kernel: Any) -> dict[str, str]:
    """The pages to time: label -> path (a job page and the second jobs page need ids)."""
    first = await kernel.list_tasks(limit=50)
    some = await kernel.list_tasks("digest", limit=1)
    return {
        "overview /": "/",
        "jobs, page 1": "/jobs",
        "jobs, next page (after=)": "/jobs?" + urlencode({"after": first[-1].id}),
        "jobs, task=remind": "/jobs?task=remind",
        "jobs, state=paused": "/jobs?state=paused",
        "jobs, where user=1234": "/jobs?" + urlencode({"where": "user=1234"}),
        "job page": "/job?" + urlencode({"id": some[0].id}),
        "timeline": "/timeline",
        "failures": "/failures",
        "/api/summary": "/api/summary",
    }


async def time_pages(kernel: Any, runs: int, log: Callable[[str], None]) -> dict[str, float]:
    import httpx

    from tickkit.plugins.dashboard import create_app

    app = create_app(kernel, refresh=0)
    transport = httpx.ASGITransport(app=app)
    times: dict[str, float] = {}
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        for label, path in (await pages(client, kernel)).items():
            took = []
            for _ in range(runs):
                started = time.perf_counter()
                response = await client.get(path)
                took.append(time.perf_counter() - started)
                if response.status_code != 200:
                    raise RuntimeError(f"{path}: HTTP {response.status_code}")
            times[label] = median(took) * 1000
            log(f"  {label}: {times[label]:.0f} ms (median of {runs})")
    return times


@asynccontextmanager
async def sqlite_store(
    n: int, log: Callable[[str], None], keep: Path | None = None
) -> AsyncIterator[Any]:
    """A filled store in a temporary file; with ``keep``, that file, filled only when new
    (to time the pages again on the same store)."""
    from tickkit import Kernel
    from tickkit.drivers.sqlite import SQLiteDriver

    with tempfile.TemporaryDirectory() as tmp:
        path = keep or Path(tmp) / "tasks.db"
        new = not path.exists()
        kernel = Kernel(SQLiteDriver(path), tasks=registry())
        await kernel.open()
        try:
            if new:
                await fill(kernel, n, log)
            yield kernel
        finally:
            await kernel.stop()


@asynccontextmanager
async def postgres_store(server: str, n: int, log: Callable[[str], None]) -> AsyncIterator[Any]:
    import asyncpg

    from tickkit import Kernel
    from tickkit.drivers.postgres import PostgresDriver

    database = f"tickkit_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(server)
    try:
        await admin.execute(f"CREATE DATABASE {database}")
        url = urlunsplit(urlsplit(server)._replace(path="/" + database))
        kernel = Kernel(PostgresDriver(url), tasks=registry())
        await kernel.open()
        try:
            await fill(kernel, n, log)
            conn = await asyncpg.connect(url)
            try:
                await conn.execute("VACUUM ANALYZE")  # what autovacuum does soon after a fill
            finally:
                await conn.close()
            yield kernel
        finally:
            await kernel.stop()
            await admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    finally:
        await admin.close()


@asynccontextmanager
async def redis_store(url: str, n: int, log: Callable[[str], None]) -> AsyncIterator[Any]:
    from tickkit import Kernel
    from tickkit.drivers.bullmq import BullMQDriver

    prefix = f"tickkit-bench-{secrets.token_hex(4)}"
    kernel = Kernel(BullMQDriver.from_url(url, prefix=prefix), tasks=registry())
    await kernel.open()
    try:
        await fill(kernel, n, log)
        yield kernel
    finally:
        await kernel.stop()
        import redis.asyncio as aioredis

        client = aioredis.from_url(url)
        try:
            async for key in client.scan_iter(match=f"{prefix}:*", count=10_000):
                await client.delete(key)
        finally:
            await client.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--postgres", default=SERVER, help="server URL (a database is created)")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument(
        "--sqlite-file", type=Path, default=None, help="keep the SQLite store there (reused)"
    )
    parser.add_argument("--redis", default=None, help="a Redis URL: include the BullMQ driver")
    args = parser.parse_args()

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    stores: list[tuple[str, Callable[[], Any]]] = []
    if not args.no_sqlite:
        stores.append(("SQLite", lambda: sqlite_store(args.jobs, log, args.sqlite_file)))
    if not args.no_postgres:
        stores.append(("PostgreSQL", lambda: postgres_store(args.postgres, args.jobs, log)))
    if args.redis:
        stores.append(("Redis (BullMQ)", lambda: redis_store(args.redis, args.jobs, log)))
    results: dict[str, dict[str, float]] = {}
    for label, store in stores:
        log(f"{label}: filling {args.jobs:,} jobs")
        async with store() as kernel:
            log(f"{label}: timing the pages")
            results[label] = await time_pages(kernel, args.runs, log)
    labels = list(results)
    print(f"\nDashboard pages at {args.jobs:,} stored jobs, ms (median of {args.runs})\n")
    print("| page | " + " | ".join(labels) + " |")
    print("|---|" + "---:|" * len(labels))
    for page in next(iter(results.values()), {}):
        cells = " | ".join(f"{results[s][page]:,.0f}" for s in labels)
        print(f"| {page} | {cells} |")
    print(f"\n{machine_summary()}")


if __name__ == "__main__":
    asyncio.run(main())
