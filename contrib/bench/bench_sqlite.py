"""SQLite driver benchmark: tickkit (``SQLiteDriver``) against APScheduler 3 (AsyncIOScheduler with
its SQLAlchemyJobStore over SQLite), side by side in one run, each measurement on a new file.

Workloads (issue 3):

1. creates/s, one at a time: jobs far in the future, created one call at a time through the
   public API (``kernel.create_task`` on an open kernel / ``scheduler.add_job`` on a paused
   scheduler); every create is its own transaction in both.
2. creates/s, batched: tickkit's ``SQLiteDriver.add_jobs`` (one transaction per 1,000 jobs).
   APScheduler 3 has no batch create: its closest is adding the jobs before ``start()``, which
   then writes them (one transaction each); that is what its column measures.
3. fires/s: no-op jobs all due when dispatch starts, from the start of dispatch
   (``kernel.start()`` / ``scheduler.resume()``) until the last task body ran.
4. start-up with 100,000 stored jobs (far in the future) plus one due job: from ``start()`` until
   that due job's body ran, on a copy of a store built beforehand (APScheduler's store is
   filled with the pickled states of jobs made by its own ``add_job`` on a memory store, in one
   transaction; tickkit's with ``add_jobs``).

tickkit runs with its defaults (WAL, ``synchronous=normal``, concurrency 64); the one-at-a-time
creates are also measured with ``synchronous="full"`` (an fsync per commit). APScheduler runs
with SQLAlchemy's defaults for SQLite (rollback journal, ``synchronous=full``) and the
AsyncIOExecutor, job defaults ``misfire_grace_time=None, coalesce=False, max_instances=1``.

Run from the repository root::

    .venv/bin/python contrib/bench/bench_sqlite.py           # full run (about 2-3 minutes)
    .venv/bin/python contrib/bench/bench_sqlite.py --quick   # smaller, about 30 s
    .venv/bin/python contrib/bench/bench_sqlite.py --only fires

Medians over the runs are printed, with the ratio tickkit / APScheduler and which way is better.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import pickle
import shutil
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from common import Row, machine_summary, median, print_table

UTC = timezone.utc
TK = "tickkit"
AP = "APScheduler 3"
#: seconds a workload may take before the benchmark gives up on it
TIMEOUT = 300.0
BATCH = 1000


@dataclass
class Config:
    runs: int
    creates_single: int
    creates_batched: int
    fires: int
    stored: int


FULL = Config(runs=3, creates_single=1000, creates_batched=2000, fires=3000, stored=100_000)
QUICK = Config(runs=3, creates_single=300, creates_batched=500, fires=1000, stored=20_000)


def _versions() -> str:
    import aiosqlite
    import apscheduler
    import sqlalchemy

    import tickkit

    return (
        f"tickkit {tickkit.__version__} (aiosqlite {aiosqlite.__version__}), "
        f"APScheduler {apscheduler.__version__} (SQLAlchemy {sqlalchemy.__version__}), "
        f"SQLite {__import__('sqlite3').sqlite_version}"
    )


# --- tickkit -------------------------------------------------------------------------------

_done: dict[str, Any] = {}


async def tk_noop(ctx: Any) -> None:
    _count()


def _count() -> None:
    _done["left"] -= 1
    if _done["left"] == 0:
        _done["end"] = time.perf_counter()
        _done["event"].set()


def _expect(n: int) -> asyncio.Event:
    event = asyncio.Event()
    _done.update(left=n, end=0.0, event=event)
    return event


def _tk_kernel(path: Path, **options: Any) -> Any:
    import tickkit
    from tickkit.drivers.sqlite import SQLiteDriver

    registry = tickkit.TaskRegistry()
    tickkit.task(name="bench", execute=tk_noop, registry=registry)
    return tickkit.Kernel(SQLiteDriver(path, **options), tasks=registry)


def _tk_jobs(n: int, at: datetime) -> list[Any]:
    from tickkit import Job

    return [Job(id=None, name="bench", next_run_at=at, scheduled_at=at, created_at=at)] * n


async def tk_creates_single(path: Path, n: int, **options: Any) -> float:
    kernel = _tk_kernel(path, **options)
    await kernel.open()
    far = datetime.now(UTC) + timedelta(days=30)
    try:
        start = time.perf_counter()
        for _ in range(n):
            await kernel.create_task("bench", None, far)
        elapsed = time.perf_counter() - start
        assert sum((await kernel.driver.count_jobs()).values()) == n
    finally:
        await kernel.stop()
    return n / elapsed


async def tk_creates_batched(path: Path, n: int) -> float:
    kernel = _tk_kernel(path)
    await kernel.open()
    far = datetime.now(UTC) + timedelta(days=30)
    try:
        start = time.perf_counter()
        for i in range(0, n, BATCH):
            await kernel.driver.add_jobs(_tk_jobs(min(BATCH, n - i), far))
        elapsed = time.perf_counter() - start
        assert sum((await kernel.driver.count_jobs()).values()) == n
    finally:
        await kernel.stop()
    return n / elapsed


async def tk_fires(path: Path, n: int) -> float:
    kernel = _tk_kernel(path)
    await kernel.open()
    now = datetime.now(UTC)
    for i in range(0, n, BATCH):
        await kernel.driver.add_jobs(_tk_jobs(min(BATCH, n - i), now))
    finished = _expect(n)
    gc.collect()
    start = time.perf_counter()
    await kernel.start()
    try:
        await asyncio.wait_for(finished.wait(), TIMEOUT)
    finally:
        await kernel.stop()
    return n / (_done["end"] - start)


async def tk_build_store(path: Path, n: int) -> None:
    kernel = _tk_kernel(path)
    await kernel.open()
    far = datetime.now(UTC) + timedelta(days=30)
    for i in range(0, n, 10_000):
        await kernel.driver.add_jobs(_tk_jobs(min(10_000, n - i), far))
    await kernel.driver.add_jobs(_tk_jobs(1, datetime.now(UTC)))
    await kernel.stop()


async def tk_startup(path: Path) -> float:
    kernel = _tk_kernel(path)
    finished = _expect(1)
    gc.collect()
    start = time.perf_counter()
    await kernel.start()
    try:
        await asyncio.wait_for(finished.wait(), TIMEOUT)
    finally:
        await kernel.stop()
    return _done["end"] - start


# --- APScheduler 3 -------------------------------------------------------------------------


async def ap_noop() -> None:
    _count()


def _ap_scheduler(path: Path | None) -> Any:
    from apscheduler.jobstores.memory import MemoryJobStore
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    store = SQLAlchemyJobStore(url=f"sqlite:///{path}") if path else MemoryJobStore()
    return AsyncIOScheduler(
        jobstores={"default": store},
        timezone=UTC,
        job_defaults={"misfire_grace_time": None, "coalesce": False, "max_instances": 1},
    )


async def _ap_shutdown(scheduler: Any) -> None:
    scheduler.shutdown(wait=False)
    await asyncio.sleep(0)  # AsyncIOScheduler shuts down in a loop callback


async def ap_creates_single(path: Path, n: int) -> float:
    scheduler = _ap_scheduler(path)
    scheduler.start(paused=True)
    far = datetime.now(UTC) + timedelta(days=30)
    try:
        start = time.perf_counter()
        for _ in range(n):
            scheduler.add_job(ap_noop, "date", run_date=far)
        elapsed = time.perf_counter() - start
        assert len(scheduler.get_jobs()) == n
    finally:
        await _ap_shutdown(scheduler)
    return n / elapsed


async def ap_creates_batched(path: Path, n: int) -> float:
    scheduler = _ap_scheduler(path)
    far = datetime.now(UTC) + timedelta(days=30)
    start = time.perf_counter()
    for _ in range(n):
        scheduler.add_job(ap_noop, "date", run_date=far)  # pending until start()
    scheduler.start(paused=True)
    elapsed = time.perf_counter() - start
    try:
        assert len(scheduler.get_jobs()) == n
    finally:
        await _ap_shutdown(scheduler)
    return n / elapsed


async def ap_fires(path: Path, n: int) -> float:
    scheduler = _ap_scheduler(path)
    scheduler.start(paused=True)
    now = datetime.now(UTC)
    _ap_bulk_insert(scheduler, n, now)
    finished = _expect(n)
    gc.collect()
    start = time.perf_counter()
    scheduler.resume()
    try:
        await asyncio.wait_for(finished.wait(), TIMEOUT)
    finally:
        await _ap_shutdown(scheduler)
    return n / (_done["end"] - start)


def _ap_bulk_insert(scheduler: Any, n: int, at: datetime) -> None:
    """Store ``n`` jobs made by APScheduler's own add_job (on a memory store), in one
    transaction, exactly as SQLAlchemyJobStore.add_job writes each one."""
    from apscheduler.util import datetime_to_utc_timestamp

    maker = _ap_scheduler(None)
    maker.start(paused=True)  # started, add_job computes each job's next run time
    store = scheduler._lookup_jobstore("default")
    for i in range(0, n, 10_000):
        jobs = [maker.add_job(ap_noop, "date", run_date=at) for _ in range(min(10_000, n - i))]
        for job in jobs:
            job._scheduler = scheduler
        rows = [
            {
                "id": job.id,
                "next_run_time": datetime_to_utc_timestamp(at),
                "job_state": pickle.dumps(job.__getstate__(), store.pickle_protocol),
            }
            for job in jobs
        ]
        with store.engine.begin() as conn:
            conn.execute(store.jobs_t.insert(), rows)
        maker.remove_all_jobs()
    maker.shutdown(wait=False)


async def ap_build_store(path: Path, n: int) -> None:
    scheduler = _ap_scheduler(path)
    scheduler.start(paused=True)
    _ap_bulk_insert(scheduler, n, datetime.now(UTC) + timedelta(days=30))
    _ap_bulk_insert(scheduler, 1, datetime.now(UTC))
    await _ap_shutdown(scheduler)


async def ap_startup(path: Path) -> float:
    scheduler = _ap_scheduler(path)
    finished = _expect(1)
    gc.collect()
    start = time.perf_counter()
    scheduler.start()
    try:
        await asyncio.wait_for(finished.wait(), TIMEOUT)
    finally:
        await _ap_shutdown(scheduler)
    return _done["end"] - start


# --- the run -------------------------------------------------------------------------------


def _fresh(tmp: Path, label: str) -> Path:
    path = tmp / f"{label}-{time.monotonic_ns()}.db"
    return path


def _measure(
    tmp: Path,
    runs: int,
    contenders: dict[str, Callable[[Path], Coroutine[Any, Any, float]]],
    what: str,
    unit: str,
    prepare: Callable[[str, Path], None] | None = None,
) -> dict[str, float]:
    """Run every contender ``runs`` times, alternating the order, each on a new file."""
    results: dict[str, list[float]] = {who: [] for who in contenders}
    for run in range(runs):
        order = list(contenders)
        if run % 2:
            order.reverse()
        for who in order:
            path = _fresh(tmp, who.replace(" ", "_").replace("/", "_"))
            if prepare is not None:
                prepare(who, path)
            gc.collect()
            value = asyncio.run(contenders[who](path))
            results[who].append(value)
            print(f"  {what} run {run + 1}: {who}: {value:,.4g} {unit}", flush=True)
            for leftover in tmp.glob(f"{path.name}*"):
                leftover.unlink()
    return {who: median(values) for who, values in results.items()}


def run_creates(cfg: Config, tmp: Path) -> list[Row]:
    single = _measure(
        tmp,
        cfg.runs,
        {
            TK: lambda p: tk_creates_single(p, cfg.creates_single),
            f"{TK} sync=full": lambda p: tk_creates_single(
                p, cfg.creates_single, synchronous="full"
            ),
            AP: lambda p: ap_creates_single(p, cfg.creates_single),
        },
        "creates one at a time",
        "jobs/s",
    )
    batched = _measure(
        tmp,
        cfg.runs,
        {
            TK: lambda p: tk_creates_batched(p, cfg.creates_batched),
            AP: lambda p: ap_creates_batched(p, cfg.creates_batched),
        },
        "creates batched",
        "jobs/s",
    )
    note = f"median of {cfg.runs} runs"
    return [
        Row(
            f"creates/s, one at a time ({cfg.creates_single:,} jobs)",
            "jobs/s",
            {TK: single[TK], AP: single[AP]},
            higher_is_better=True,
            note=note,
        ),
        Row(
            "creates/s, one at a time, tickkit synchronous=full",
            "jobs/s",
            {TK: single[f"{TK} sync=full"], AP: single[AP]},
            higher_is_better=True,
            note="an fsync per commit, like APScheduler's rollback journal",
        ),
        Row(
            f"creates/s, batched ({cfg.creates_batched:,} jobs)",
            "jobs/s",
            {TK: batched[TK], AP: batched[AP]},
            higher_is_better=True,
            note=f"tickkit: add_jobs of {BATCH:,}; APScheduler: added before start()",
        ),
    ]


def run_fires(cfg: Config, tmp: Path) -> list[Row]:
    fires = _measure(
        tmp,
        cfg.runs,
        {TK: lambda p: tk_fires(p, cfg.fires), AP: lambda p: ap_fires(p, cfg.fires)},
        "fires",
        "jobs/s",
    )
    return [
        Row(
            f"fires/s, {cfg.fires:,} no-op jobs due at once",
            "jobs/s",
            fires,
            higher_is_better=True,
            note=f"median of {cfg.runs} runs",
        )
    ]


def run_startup(cfg: Config, tmp: Path) -> list[Row]:
    built: dict[str, Path] = {}
    for who, build in ((TK, tk_build_store), (AP, ap_build_store)):
        path = tmp / f"built-{who.replace(' ', '_')}.db"
        started = time.perf_counter()
        asyncio.run(build(path, cfg.stored))
        print(
            f"  built a {who} store of {cfg.stored:,} jobs in "
            f"{time.perf_counter() - started:.1f} s ({path.stat().st_size / 1e6:.1f} MB)",
            flush=True,
        )
        built[who] = path

    def prepare(who: str, path: Path) -> None:
        shutil.copyfile(built[who], path)

    startup = _measure(
        tmp,
        cfg.runs,
        {TK: tk_startup, AP: ap_startup},
        "start-up",
        "s",
        prepare=prepare,
    )
    return [
        Row(
            f"start-up to first fire, {cfg.stored:,} stored jobs",
            "ms",
            {who: value * 1000 for who, value in startup.items()},
            higher_is_better=False,
            note=f"median of {cfg.runs} runs, each on a fresh copy of the store",
        )
    ]


WORKLOADS = {"creates": run_creates, "fires": run_fires, "startup": run_startup}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller workloads, fewer runs")
    parser.add_argument("--only", choices=sorted(WORKLOADS), action="append")
    parser.add_argument("--dir", help="where to put the database files (default: a temp dir)")
    args = parser.parse_args()
    cfg = QUICK if args.quick else FULL
    print(_versions())
    print(machine_summary(), flush=True)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="tickkit-bench-") as tmp:
        for name in args.only or list(WORKLOADS):
            print(f"\n{name}:", flush=True)
            rows += WORKLOADS[name](cfg, Path(tmp))
    print_table(
        "SQLite driver: tickkit vs APScheduler 3 (SQLAlchemyJobStore on SQLite)",
        rows,
        labels=[TK, AP],
        notes=[
            "ratio = tickkit / APScheduler 3; 'better' says which side of 1 favours tickkit.",
            f"{_versions()}; {machine_summary()}",
        ],
    )


if __name__ == "__main__":
    main()
