"""PostgreSQL driver benchmark: creates per second and fires per second (tickkit only for now).

    .venv/bin/python contrib/bench/bench_postgres.py            # about a minute
    .venv/bin/python contrib/bench/bench_postgres.py --quick

Runs on the server at ``TICKKIT_PG_URL`` (default postgresql://postgres@127.0.0.1:5432/postgres)
in a database of its own (``tickkit_bench_<random>``, dropped at the end); each measurement
uses a new schema. Median of ``--runs`` runs:

- creates/s one at a time: ``kernel.create_task`` in a loop (one transaction and one NOTIFY
  each);
- creates/s batched: ``PostgresDriver.add_jobs`` in batches of 1,000;
- fires/s at concurrency 1 and 16: N no-op one-off jobs due at once, from ``Kernel.start()``
  until the last task body ran, one worker process.

Not measured yet (issue 16): several worker processes, ``where`` at 1,000,000 jobs, and the
side-by-side comparison with APScheduler 4's SQLAlchemy store and procrastinate.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).parent))

from common import machine_summary, median

SERVER = os.environ.get("TICKKIT_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BATCH = 1000


def _url(database: str) -> str:
    return urlunsplit(urlsplit(SERVER)._replace(path="/" + database))


async def _admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(SERVER)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _registry(done: list[int], total: int, finished: asyncio.Event) -> Any:
    from tickkit import TaskRegistry, task

    registry = TaskRegistry()

    async def noop(ctx: Any) -> None:
        done[0] += 1
        if done[0] >= total:
            finished.set()

    task(name="noop", execute=noop, registry=registry)
    return registry


async def creates_one_at_a_time(url: str, schema: str, n: int) -> float:
    from tickkit import Kernel
    from tickkit.drivers.postgres import PostgresDriver

    done: list[int] = [0]
    kernel = Kernel(PostgresDriver(url, schema=schema), tasks=_registry(done, n, asyncio.Event()))
    await kernel.open()
    try:
        later = timedelta(days=1)
        started = time.perf_counter()
        for i in range(n):
            await kernel.create_task("noop", {"i": i}, later)
        return n / (time.perf_counter() - started)
    finally:
        await kernel.stop()


async def creates_batched(url: str, schema: str, n: int) -> float:
    from tickkit import Job, Kernel
    from tickkit.drivers.postgres import PostgresDriver

    driver = PostgresDriver(url, schema=schema)
    kernel = Kernel(driver, tasks=_registry([0], n, asyncio.Event()))
    await kernel.open()
    try:
        at = kernel.clock.now() + timedelta(days=1)
        jobs = [Job.one_off("noop", {"i": i}, at=at) for i in range(n)]
        started = time.perf_counter()
        for first in range(0, n, BATCH):
            await driver.add_jobs(jobs[first : first + BATCH])
        return n / (time.perf_counter() - started)
    finally:
        await kernel.stop()


async def fires(url: str, schema: str, n: int, concurrency: int) -> float:
    from tickkit import Job, Kernel
    from tickkit.drivers.postgres import PostgresDriver

    driver = PostgresDriver(url, schema=schema)
    done = [0]
    finished = asyncio.Event()
    kernel = Kernel(driver, tasks=_registry(done, n, finished), concurrency=concurrency)
    await kernel.open()
    now = kernel.clock.now()
    for first in range(0, n, BATCH):
        await driver.add_jobs(
            [Job.one_off("noop", None, at=now) for _ in range(first, min(n, first + BATCH))]
        )
    await kernel.stop()
    kernel = Kernel(
        PostgresDriver(url, schema=schema),
        tasks=_registry(done, n, finished),
        concurrency=concurrency,
    )
    started = time.perf_counter()
    async with kernel:
        await asyncio.wait_for(finished.wait(), timeout=600)
        elapsed = time.perf_counter() - started
    return n / elapsed


async def main_async(args: argparse.Namespace) -> None:
    database = f"tickkit_bench_{os.urandom(5).hex()}"
    await _admin(f'CREATE DATABASE "{database}"')
    url = _url(database)
    counter = iter(range(1_000_000))
    results: dict[str, list[float]] = {}
    try:
        for _ in range(args.runs):
            for label, make in (
                ("creates/s, one at a time", lambda s: creates_one_at_a_time(url, s, args.n)),
                ("creates/s, batched", lambda s: creates_batched(url, s, args.batch_n)),
                ("fires/s, concurrency 1", lambda s: fires(url, s, args.fire_n, 1)),
                ("fires/s, concurrency 16", lambda s: fires(url, s, args.fire_n, 16)),
            ):
                schema = f"b{next(counter)}"
                results.setdefault(label, []).append(await make(schema))
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    print(machine_summary())
    print(f"PostgreSQL at {urlsplit(SERVER).hostname}, median of {args.runs} run(s)\n")
    print("| workload | tickkit |")
    print("|---|---:|")
    for label, values in results.items():
        print(f"| {label} | {median(values):,.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller workloads, one run")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    args.n, args.batch_n, args.fire_n = (
        (300, 5_000, 1_000) if args.quick else (1_000, 20_000, 3_000)
    )
    if args.quick:
        args.runs = 1
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
