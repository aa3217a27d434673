"""Memory driver benchmark: tickkit (``memory://``) against APScheduler 3 (AsyncIOScheduler,
MemoryJobStore), side by side in one run, on one asyncio event loop per measurement.

Workloads (issue 2):

1. throughput: N no-op jobs (100,000) all due when dispatch starts; fires per second from the
   start of dispatch (``Kernel.start()`` / ``scheduler.resume()``) until the last task body ran.
   Jobs are created through the public API before dispatch starts (``kernel.create_task(name)``
   on an open kernel / ``scheduler.add_job(fn)`` on a paused scheduler), so creating them is
   not timed.
2. lateness: 1,000 jobs at random instants over 5 s (the same instants for both), created on a
   running scheduler 1 s ahead; the task body records ``time.time()`` minus the intended instant.
   tickkit's own record (``ctx.started_at - ctx.scheduled_at``) is printed as well.
3. memory per scheduled job: 1,000,000 one-off jobs far in the future, each library in a fresh
   subprocess; RSS growth / jobs, and (in another subprocess) tracemalloc's traced growth / jobs.
   The rate at which jobs were created is printed too.
4. next_runs: microseconds per cron fire time (``tickkit.next_runs`` / APScheduler's
   ``CronTrigger.get_next_fire_time``), 1,000 times each of four crons (two in DST zones); tickkit
   cold (croniter's per-month day cache emptied) and warm.

Run from the repository root::

    .venv/bin/python contrib/bench/bench_memory.py            # full run (about 5 minutes)
    .venv/bin/python contrib/bench/bench_memory.py --quick    # smaller, about 1 minute
    .venv/bin/python contrib/bench/bench_memory.py --only throughput --profile

Settings: tickkit ``concurrency`` 64 (the default) and 1,000; APScheduler 3 with its default
AsyncIOExecutor (runs every coroutine job as an asyncio task, no pool limit) and job defaults
``misfire_grace_time=None, coalesce=False, max_instances=1`` (each job is its own job, so
``max_instances`` never holds one back). Medians over the runs are printed, with the ratio
tickkit / APScheduler and which direction is better.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import json
import os
import pstats
import random
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from common import Row, machine_summary, median, percentile, print_table, run_json_subprocess

UTC = timezone.utc
HERE = Path(__file__).resolve().parent
TK = "tickkit"
AP = "APScheduler 3"
#: seconds a workload may take before the benchmark gives up on it
TIMEOUT = 300.0
#: seconds a memory subprocess may take (APScheduler needs about 100 s for 1,000,000 jobs on an
#: idle machine, several times that on a busy one)
MEMORY_TIMEOUT = 1200.0
#: jobs created between two yields to the event loop while filling a store
BATCH = 10_000
#: seconds between creating the lateness jobs and the start of their window
LATENESS_LEAD = 0.5


@dataclass
class Config:
    throughput_jobs: int
    throughput_runs: int
    concurrencies: tuple[int, ...]
    lateness_jobs: int
    lateness_window: float
    lateness_runs: int
    memory_jobs: int
    #: jobs stored for the tracemalloc cross-check (0: skip it); tracemalloc slows creation
    #: down several times, so it uses fewer jobs than the RSS measurement
    tracemalloc_jobs: int


FULL = Config(100_000, 3, (64, 1000), 1000, 5.0, 5, 1_000_000, 50_000)
QUICK = Config(10_000, 3, (64, 1000), 1000, 5.0, 1, 100_000, 20_000)


def _versions() -> str:
    import apscheduler

    import tickkit

    return f"tickkit {tickkit.__version__}, APScheduler {apscheduler.__version__}"


# --- tickkit -------------------------------------------------------------------------------


def _tickkit_kernel(execute: Callable[[Any], Awaitable[None]], concurrency: int) -> Any:
    import tickkit

    registry = tickkit.TaskRegistry()
    tickkit.task(name="bench", execute=execute, registry=registry)
    return tickkit.Kernel(driver="memory://", tasks=registry, concurrency=concurrency)


async def tickkit_throughput(
    jobs: int, concurrency: int, profiler: cProfile.Profile | None = None
) -> float:
    """Fires per second for ``jobs`` no-op jobs all due when dispatch starts.

    ``profiler``: enabled from the start of dispatch to the last completion only.
    """
    left = jobs
    finished = asyncio.Event()
    end = 0.0

    async def noop(ctx: Any) -> None:
        nonlocal left, end
        left -= 1
        if left == 0:
            end = time.perf_counter()
            finished.set()

    kernel = _tickkit_kernel(noop, concurrency)
    await kernel.open()
    for i in range(jobs):
        await kernel.create_task("bench")
        if i % BATCH == 0:
            await asyncio.sleep(0)
    gc.collect()
    if profiler is not None:
        profiler.enable()
    start = time.perf_counter()
    await kernel.start()
    try:
        await asyncio.wait_for(finished.wait(), TIMEOUT)
    finally:
        if profiler is not None:
            profiler.disable()
        await kernel.stop()
    return jobs / (end - start)


async def tickkit_lateness(instants: list[datetime]) -> tuple[list[float], list[float]]:
    """Lateness in ms of jobs due at ``instants``: (wall clock at task entry, kernel record)."""
    targets = [at.timestamp() for at in instants]
    wall: list[float] = []
    kernel_view: list[float] = []
    finished = asyncio.Event()

    async def record(ctx: Any) -> None:
        wall.append((time.time() - targets[ctx.data]) * 1000.0)
        kernel_view.append((ctx.started_at - ctx.scheduled_at).total_seconds() * 1000.0)
        if len(wall) == len(targets):
            finished.set()

    kernel = _tickkit_kernel(record, 64)
    async with kernel:
        for i, at in enumerate(instants):
            await kernel.create_task("bench", i, at)
        await asyncio.wait_for(finished.wait(), TIMEOUT)
    return wall, kernel_view


# --- APScheduler 3 -------------------------------------------------------------------------


def _apscheduler() -> Any:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    return AsyncIOScheduler(
        timezone=UTC,
        job_defaults={"misfire_grace_time": None, "coalesce": False, "max_instances": 1},
    )


async def _shutdown(scheduler: Any) -> None:
    scheduler.shutdown(wait=False)
    await asyncio.sleep(0)  # AsyncIOScheduler shuts down in a loop callback


async def apscheduler_throughput(jobs: int) -> float:
    left = jobs
    finished = asyncio.Event()
    end = 0.0

    async def noop() -> None:
        nonlocal left, end
        left -= 1
        if left == 0:
            end = time.perf_counter()
            finished.set()

    scheduler = _apscheduler()
    scheduler.start(paused=True)
    for i in range(jobs):
        scheduler.add_job(noop)  # no trigger: a date trigger at "now", like create_task(name)
        if i % BATCH == 0:
            await asyncio.sleep(0)
    await asyncio.sleep(0)
    gc.collect()
    start = time.perf_counter()
    scheduler.resume()
    try:
        await asyncio.wait_for(finished.wait(), TIMEOUT)
    finally:
        await _shutdown(scheduler)
    return jobs / (end - start)


async def apscheduler_lateness(instants: list[datetime]) -> list[float]:
    targets = [at.timestamp() for at in instants]
    wall: list[float] = []
    finished = asyncio.Event()

    async def record(i: int) -> None:
        wall.append((time.time() - targets[i]) * 1000.0)
        if len(wall) == len(targets):
            finished.set()

    scheduler = _apscheduler()
    scheduler.start()
    try:
        for i, at in enumerate(instants):
            scheduler.add_job(record, "date", run_date=at, args=[i])
        await asyncio.wait_for(finished.wait(), TIMEOUT)
    finally:
        await _shutdown(scheduler)
    return wall


# --- memory (run in a fresh subprocess per library and method) -----------------------------


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def _fill_tickkit(jobs: int, far: datetime) -> Callable[[], Awaitable[None]]:
    async def noop(ctx: Any) -> None:
        pass

    kernel = _tickkit_kernel(noop, 64)
    await kernel.open()  # the store without dispatch, like a paused APScheduler
    for i in range(jobs):
        await kernel.create_task("bench", None, far + timedelta(milliseconds=i))
        if i % BATCH == 0:
            await asyncio.sleep(0)
    await asyncio.sleep(0)
    count = sum((await kernel.driver.count_jobs()).values())
    if count != jobs:
        raise RuntimeError(f"tickkit stored {count} jobs, expected {jobs}")
    return kernel.stop


async def _fill_apscheduler(jobs: int, far: datetime) -> Callable[[], Awaitable[None]]:
    async def noop() -> None:
        pass

    scheduler = _apscheduler()
    scheduler.start(paused=True)  # running, it looks for due jobs after every add_job
    for i in range(jobs):
        scheduler.add_job(noop, "date", run_date=far + timedelta(milliseconds=i))
        if i % BATCH == 0:
            await asyncio.sleep(0)
    await asyncio.sleep(0)
    count = len(scheduler.get_jobs())
    if count != jobs:
        raise RuntimeError(f"APScheduler stored {count} jobs, expected {jobs}")

    async def stop() -> None:
        await _shutdown(scheduler)

    return stop


async def memory_child(library: str, jobs: int, method: str) -> dict[str, float]:
    """Bytes per job after storing ``jobs`` jobs (RSS growth, or tracemalloc's traced growth)."""
    fill = _fill_tickkit if library == TK else _fill_apscheduler
    far = datetime.now(UTC) + timedelta(days=30)
    warm_up = await fill(1, far - timedelta(days=1))  # import and warm up everything first
    await warm_up()
    gc.collect()
    if method == "tracemalloc":
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
    else:
        before = _rss_bytes()
    started = time.perf_counter()
    stop = await fill(jobs, far)
    elapsed = time.perf_counter() - started
    gc.collect()
    after = tracemalloc.get_traced_memory()[0] if method == "tracemalloc" else _rss_bytes()
    await stop()
    return {"bytes_per_job": (after - before) / jobs, "jobs_per_second": jobs / elapsed}


def measure_memory(library: str, jobs: int, method: str) -> dict[str, float | None]:
    """Run :func:`memory_child` in a fresh interpreter; a failure gives None values (n/a)."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--child-memory", library]
    argv += ["--jobs", str(jobs), "--method", method]
    try:
        result: dict[str, float | None] = run_json_subprocess(argv, timeout=MEMORY_TIMEOUT)
    except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
        print(f"  memory ({method}) of {library} failed: {exc}", flush=True)
        return {"bytes_per_job": None, "jobs_per_second": None}
    return result


# --- the run -------------------------------------------------------------------------------


def _lateness_instants(jobs: int, window: float, seed: int) -> list[datetime]:
    rng = random.Random(seed)
    base = datetime.now(UTC) + timedelta(seconds=LATENESS_LEAD)
    return [base + timedelta(seconds=rng.uniform(0, window)) for _ in range(jobs)]


def run_throughput(cfg: Config) -> list[Row]:
    results: dict[str, list[float]] = {AP: []}
    for c in cfg.concurrencies:
        results[f"{TK} c={c}"] = []
    for run in range(cfg.throughput_runs):
        order = [AP, *[f"{TK} c={c}" for c in cfg.concurrencies]]
        if run % 2:
            order.reverse()
        for who in order:
            gc.collect()
            if who == AP:
                value = asyncio.run(apscheduler_throughput(cfg.throughput_jobs))
            else:
                c = int(who.split("c=")[1])
                value = asyncio.run(tickkit_throughput(cfg.throughput_jobs, c))
            results[who].append(value)
            print(f"  throughput run {run + 1}: {who}: {value:,.0f} jobs/s", flush=True)
    ap = median(results[AP])
    return [
        Row(
            f"fires/s, {cfg.throughput_jobs:,} due at once, concurrency={c}",
            "jobs/s",
            {TK: median(results[f"{TK} c={c}"]), AP: ap},
            higher_is_better=True,
            note=f"median of {cfg.throughput_runs} runs",
        )
        for c in cfg.concurrencies
    ]


def run_lateness(cfg: Config) -> list[Row]:
    tk_p50: list[float] = []
    tk_p99: list[float] = []
    own_p50: list[float] = []
    own_p99: list[float] = []
    ap_p50: list[float] = []
    ap_p99: list[float] = []
    for run in range(cfg.lateness_runs):
        for who in [TK, AP] if run % 2 == 0 else [AP, TK]:
            gc.collect()
            instants = _lateness_instants(cfg.lateness_jobs, cfg.lateness_window, seed=run)
            if who == TK:
                wall, own = asyncio.run(tickkit_lateness(instants))
                tk_p50.append(percentile(wall, 50))
                tk_p99.append(percentile(wall, 99))
                own_p50.append(percentile(own, 50))
                own_p99.append(percentile(own, 99))
            else:
                wall = asyncio.run(apscheduler_lateness(instants))
                ap_p50.append(percentile(wall, 50))
                ap_p99.append(percentile(wall, 99))
            print(
                f"  lateness run {run + 1}: {who}: p50 {percentile(wall, 50):.2f} ms, "
                f"p99 {percentile(wall, 99):.2f} ms",
                flush=True,
            )
    spread = f"{cfg.lateness_jobs:,} jobs over {cfg.lateness_window:g} s"
    note = f"median of {cfg.lateness_runs} runs; time.time() at task entry - intended instant"
    own_note = f"median of {cfg.lateness_runs} runs; ctx.started_at - ctx.scheduled_at"
    return [
        Row(f"lateness p50, {spread}", "ms", {TK: median(tk_p50), AP: median(ap_p50)}, False, note),
        Row(f"lateness p99, {spread}", "ms", {TK: median(tk_p99), AP: median(ap_p99)}, False),
        Row(
            "lateness p50, kernel's own record",
            "ms",
            {TK: median(own_p50), AP: None},
            False,
            own_note,
        ),
        Row("lateness p99, kernel's own record", "ms", {TK: median(own_p99), AP: None}, False),
    ]


#: patterns and zones of the next_runs workload (fixed-time, step, weekday and DST zones)
NEXT_RUNS_CASES = [
    ("*/15 * * * *", "UTC"),
    ("30 2 * * *", "America/New_York"),
    ("0 9 * * 1-5", "Europe/Berlin"),
    ("*/7 * * * *", "Australia/Lord_Howe"),
]
NEXT_RUNS_COUNT = 1000


def tickkit_next_runs(cold: bool) -> float:
    """Microseconds per fire time of ``next_runs`` over NEXT_RUNS_CASES (1,000 each, from
    2026-01-01). ``cold``: croniter's per-month day cache is emptied first."""
    import tickkit
    from tickkit.plugins.schedules import cron

    start = datetime(2026, 1, 1, tzinfo=UTC)
    if cold:
        cron.clear_caches()
    began = time.perf_counter()
    for expr, zone in NEXT_RUNS_CASES:
        tickkit.next_runs(expr, after=start, count=NEXT_RUNS_COUNT, timezone=zone)
    return (time.perf_counter() - began) / (len(NEXT_RUNS_CASES) * NEXT_RUNS_COUNT) * 1e6


def apscheduler_next_runs() -> float:
    """The same with APScheduler 3's CronTrigger.get_next_fire_time."""
    from apscheduler.triggers.cron import CronTrigger

    start = datetime(2026, 1, 1, tzinfo=UTC)
    began = time.perf_counter()
    for expr, zone in NEXT_RUNS_CASES:
        trigger = CronTrigger.from_crontab(expr, timezone=zone)
        at = trigger.get_next_fire_time(None, start)
        for _ in range(NEXT_RUNS_COUNT - 1):
            at = trigger.get_next_fire_time(at, at + timedelta(microseconds=1))
    return (time.perf_counter() - began) / (len(NEXT_RUNS_CASES) * NEXT_RUNS_COUNT) * 1e6


def run_next_runs(cfg: Config) -> list[Row]:
    cold: list[float] = []
    warm: list[float] = []
    ap: list[float] = []
    for _ in range(max(cfg.throughput_runs, 5)):
        gc.collect()
        cold.append(tickkit_next_runs(cold=True))
        warm.append(tickkit_next_runs(cold=False))
        ap.append(apscheduler_next_runs())
    note = f"{len(NEXT_RUNS_CASES)} crons x {NEXT_RUNS_COUNT} fire times"
    return [
        Row(
            "cron next_runs, cold day cache",
            "us/run",
            {TK: median(cold), AP: median(ap)},
            False,
            note,
        ),
        Row("cron next_runs, warm day cache", "us/run", {TK: median(warm), AP: median(ap)}, False),
    ]


def run_memory(cfg: Config) -> list[Row]:
    """Both libraries' subprocesses run at once (one per core): memory does not depend on it,
    and a 1,000,000-job store takes APScheduler about a minute and a half to build."""
    measures = [("rss", cfg.memory_jobs)]
    if cfg.tracemalloc_jobs:
        measures.append(("tracemalloc", cfg.tracemalloc_jobs))
    found: dict[tuple[str, str], dict[str, float | None]] = {}
    for method, n in measures:
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = {who: pool.submit(measure_memory, who, n, method) for who in (TK, AP)}
            for who, future in futures.items():
                found[who, method] = future.result()
                per_job = found[who, method]["bytes_per_job"]
                if per_job is not None:
                    print(
                        f"  memory ({method}, {n:,} jobs): {who}: {per_job:.0f} bytes/job",
                        flush=True,
                    )
    rows = [
        Row(
            f"memory per job at {n:,} jobs ({method})",
            "bytes",
            {TK: found[TK, method]["bytes_per_job"], AP: found[AP, method]["bytes_per_job"]},
            higher_is_better=False,
            note="fresh subprocess per library; "
            + ("RSS growth / jobs" if method == "rss" else "traced allocations growth / jobs"),
        )
        for method, n in measures
    ]
    rows.append(
        Row(
            f"jobs created per second while storing {cfg.memory_jobs:,}",
            "jobs/s",
            {TK: found[TK, "rss"]["jobs_per_second"], AP: found[AP, "rss"]["jobs_per_second"]},
            higher_is_better=True,
            note="opened kernel / paused scheduler; both subprocesses at once, one per core",
        )
    )
    return rows


def profile_throughput(cfg: Config) -> None:
    """Print where tickkit spends its time in the throughput workload (cProfile)."""
    profiler = cProfile.Profile()
    concurrency = cfg.concurrencies[0]

    rate = asyncio.run(tickkit_throughput(cfg.throughput_jobs, concurrency, profiler))
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumulative").print_stats(30)
    print(
        f"cProfile of tickkit dispatch, {cfg.throughput_jobs:,} jobs due at once, "
        f"concurrency={concurrency} ({rate:,.0f} jobs/s under the profiler):"
    )
    print(out.getvalue())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller workloads (about 1 min)")
    parser.add_argument(
        "--only",
        default="throughput,lateness,memory,next_runs",
        help="comma-separated workloads to run (throughput, lateness, memory, next_runs)",
    )
    parser.add_argument("--runs", type=int, help="repetitions of throughput and lateness")
    parser.add_argument("--no-tracemalloc", action="store_true", help="RSS measurement only")
    parser.add_argument("--profile", action="store_true", help="cProfile tickkit's throughput")
    parser.add_argument("--child-memory", choices=[TK, AP], help=argparse.SUPPRESS)
    parser.add_argument("--jobs", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--method", choices=["rss", "tracemalloc"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child_memory:
        result = asyncio.run(memory_child(args.child_memory, args.jobs, args.method))
        print(json.dumps(result))
        return 0

    cfg = QUICK if args.quick else FULL
    if args.runs:
        cfg.throughput_runs = cfg.lateness_runs = args.runs
    if args.no_tracemalloc:
        cfg.tracemalloc_jobs = 0
    wanted = {w.strip() for w in args.only.split(",") if w.strip()}
    unknown = wanted - {"throughput", "lateness", "memory", "next_runs"}
    if unknown:
        parser.error(f"unknown workload(s) {sorted(unknown)!r}")

    if args.profile:
        profile_throughput(cfg)
        return 0

    began = time.perf_counter()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    rows: list[Row] = []
    if "throughput" in wanted:
        rows += run_throughput(cfg)
    if "lateness" in wanted:
        rows += run_lateness(cfg)
    if "memory" in wanted:
        rows += run_memory(cfg)
    if "next_runs" in wanted:
        rows += run_next_runs(cfg)
    print_table(
        f"memory driver: tickkit vs APScheduler 3 ({'quick' if args.quick else 'full'} run)",
        rows,
        labels=[TK, AP],
        notes=[
            "tickkit: Kernel(driver='memory://'), SystemClock, asyncio; APScheduler: "
            "AsyncIOScheduler + MemoryJobStore + AsyncIOExecutor (no pool limit),",
            "  job_defaults misfire_grace_time=None, coalesce=False, max_instances=1.",
            "ratio = tickkit / APScheduler 3; 'better' says which side of 1 favours tickkit.",
            f"{_versions()}; {machine_summary()}",
            f"load average at start {load}; took {time.perf_counter() - began:.0f} s",
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
