"""PostgreSQL: tickkit's PostgresDriver vs APScheduler 4 (SQLAlchemy store) and procrastinate.

    .venv/bin/python contrib/bench/bench_postgres.py --alt-python /work/benchvenv/bin/python
    .venv/bin/python contrib/bench/bench_postgres.py --quick --alt-python /work/benchvenv/bin/python
    .venv/bin/python contrib/bench/bench_postgres.py --systems tickkit --only creates,fires

Side by side in one run, on the server at ``TICKKIT_PG_URL`` (default
postgresql://postgres@127.0.0.1:5432/postgres): every measurement gets a fresh database
(``tickkit_bench_<random>``, dropped with ``WITH (FORCE)`` right after), and every system's
measurement runs in a subprocess: tickkit's in this interpreter, the alternatives' in
``--alt-python`` (APScheduler 4 and tickkit's ``apscheduler<4`` cannot share a venv; see
contrib/bench/README.md for the install line). A library missing there gives "not installed".
Median of ``--runs`` runs:

- creates/s one at a time: a one-off job a day ahead. tickkit ``kernel.create_task``;
  APScheduler 4 ``scheduler.add_schedule(f, DateTrigger(...))``; procrastinate
  ``configure_task(name, schedule_in=...).defer_async()``.
- creates/s batched, 1,000 per call: tickkit ``PostgresDriver.add_jobs``; procrastinate
  ``batch_defer_async``; APScheduler 4 has no batch create (n/a).
- fires/s: N no-op one-off jobs all due at once (stored beforehand, untimed; APScheduler:
  ``DateTrigger(now)`` schedules, so its scheduler turns schedules into jobs as tickkit claims
  due jobs), concurrency 1 and 16 per process, in 1 and in 4 worker processes sharing the store.
  Each worker process imports and builds its scheduler, says it is ready, and starts (connects,
  claims, runs) on a signal on stdin; every task body writes one byte to a pipe. Timed from
  the signal until the parent has counted N bytes.
- where: one user's page, ``kernel.list_tasks(where={"user": u}, limit=25)`` with
  ``indexes=["user"]``, at ``--where-jobs`` stored jobs (1,000,000; ``--quick`` 100,000) of
  ``--where-jobs / 25`` users, filled by ``add_jobs`` in batches of 10,000 (untimed, rate
  printed); 3 lookups timed right after the fill (no statistics yet: the planner may read the
  whole table), then ``ANALYZE``, then median and p95 of 200 random users after 20 untimed.
  tickkit only: APScheduler 4's ``get_jobs`` / ``get_schedules`` take no filter and
  procrastinate has no public query on job arguments.

Sizes: ``--n``, ``--batch-n``, ``--fire-n``, ``--where-jobs`` (full run 300 / 10,000 / 500 /
1,000,000, about 9 minutes on a busy 2-core machine; ``--quick`` 200 / 5,000 / 300 / 100,000 and
one run, about 80 seconds); ``--only creates,fires,where``; ``--systems``; ``--fire-timeout``
(a fires measurement not done by then is n/a with the reason).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from common import (
    Row,
    format_value,
    machine_summary,
    median,
    percentile,
    print_table,
    run_json_subprocess,
)

HERE = Path(__file__).resolve().parent

SERVER = os.environ.get("TICKKIT_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BATCH = 1000
WHERE_BATCH = 10_000
WHERE_PAGE = 25
WHERE_LOOKUPS = 200
WHERE_WARM_UP = 20
#: lookups timed before ANALYZE (each may read the whole table)
WHERE_COLD = 3
SYSTEMS = {"tickkit": "tickkit", "apscheduler": "APScheduler 4", "procrastinate": "procrastinate"}
#: the child process: this file imported as a module, so that APScheduler 4 can store a
#: reference to its task function (``bench_postgres:_aps_noop``) and find it in a worker
BOOT = "import sys; sys.path.insert(0, sys.argv[1]); import bench_postgres; bench_postgres.child()"
#: why a system has no figure for a workload
NA = {
    ("apscheduler", "batch"): "APScheduler 4 has no batch create",
    ("apscheduler", "where"): "APScheduler 4: get_jobs/get_schedules take no filter",
    ("procrastinate", "where"): "procrastinate: no public query on job arguments",
}


def _url(database: str) -> str:
    return urlunsplit(urlsplit(SERVER)._replace(path="/" + database))


def _noop_byte() -> None:
    os.write(1, b".")


# ---------------------------------------------------------------- tickkit (child side)


def _tk_registry(indexes: Sequence[str] = ()) -> Any:
    from tickkit import TaskRegistry, task

    registry = TaskRegistry()

    async def noop(ctx: Any) -> None:
        _noop_byte()

    task(name="noop", execute=noop, registry=registry, indexes=list(indexes))
    return registry


def _tk_kernel(url: str, concurrency: int = 16, indexes: Sequence[str] = ()) -> Any:
    from tickkit import Kernel
    from tickkit.drivers.postgres import PostgresDriver

    return Kernel(
        PostgresDriver(url, schema="bench"), tasks=_tk_registry(indexes), concurrency=concurrency
    )


async def _tk_creates(url: str, n: int, batched: bool) -> float:
    from tickkit import Job

    kernel = _tk_kernel(url)
    await kernel.open()
    try:
        later = timedelta(days=1)
        if not batched:
            started = time.perf_counter()
            for i in range(n):
                await kernel.create_task("noop", {"i": i}, later)
            return n / (time.perf_counter() - started)
        at = kernel.clock.now() + later
        jobs = [Job.one_off("noop", {"i": i}, at=at) for i in range(n)]
        started = time.perf_counter()
        for first in range(0, n, BATCH):
            await kernel.driver.add_jobs(jobs[first : first + BATCH])
        return n / (time.perf_counter() - started)
    finally:
        await kernel.stop()


async def _tk_fill(url: str, n: int) -> None:
    from tickkit import Job

    kernel = _tk_kernel(url)
    await kernel.open()
    try:
        now = kernel.clock.now()
        for first in range(0, n, BATCH):
            await kernel.driver.add_jobs(
                [Job.one_off("noop", None, at=now) for _ in range(first, min(n, first + BATCH))]
            )
    finally:
        await kernel.stop()


async def _tk_worker(url: str, concurrency: int) -> None:
    kernel = _tk_kernel(url, concurrency)
    await _ready_and_go()
    async with kernel:
        await _stop_signal()


async def _tk_where(url: str, jobs: int, seed: int) -> dict[str, float]:
    import asyncpg

    from tickkit import Job

    kernel = _tk_kernel(url, indexes=["user"])
    await kernel.open()
    try:
        await kernel.sync_static()  # records the index, as start() does; no dispatch
        users = max(1, jobs // WHERE_PAGE)
        at = kernel.clock.now() + timedelta(days=30)
        started = time.perf_counter()
        for first in range(0, jobs, WHERE_BATCH):
            await kernel.driver.add_jobs(
                [
                    Job.one_off("noop", {"user": i % users, "i": i}, at=at)
                    for i in range(first, min(jobs, first + WHERE_BATCH))
                ]
            )
        fill_rate = jobs / (time.perf_counter() - started)
        rnd = random.Random(seed)

        async def lookup() -> float:
            user = rnd.randrange(users)
            t = time.perf_counter()
            page = await kernel.list_tasks(where={"user": user}, limit=WHERE_PAGE)
            elapsed = time.perf_counter() - t
            expected = min(WHERE_PAGE, len(range(user, jobs, users)))
            if len(page) != expected or any(j.data["user"] != user for j in page):
                raise RuntimeError(f"user {user}: page of {len(page)} jobs, expected {expected}")
            return elapsed * 1000

        # right after a bulk insert the table has no statistics (until autovacuum analyzes
        # it, if it runs): the planner may walk the (next_run_at, id) index instead
        cold = [await lookup() for _ in range(WHERE_COLD)]
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("ANALYZE bench.jobs")
        finally:
            await conn.close()
        for _ in range(WHERE_WARM_UP):
            await lookup()
        times = [await lookup() for _ in range(WHERE_LOOKUPS)]
        return {
            "median": median(times),
            "p95": percentile(times, 95),
            "cold": median(cold),
            "fill_rate": fill_rate,
        }
    finally:
        await kernel.stop()


# ---------------------------------------------------------------- APScheduler 4 (child side)


async def _aps_noop() -> None:
    _noop_byte()


def _aps_scheduler(url: str, concurrency: int = 16) -> Any:
    from apscheduler import AsyncScheduler, TaskDefaults
    from apscheduler.datastores.sqlalchemy import SQLAlchemyDataStore
    from apscheduler.eventbrokers.asyncpg import AsyncpgEventBroker

    parts = urlsplit(url)
    store = SQLAlchemyDataStore(urlunsplit(parts._replace(scheme="postgresql+asyncpg")))
    return AsyncScheduler(
        store,
        AsyncpgEventBroker(url),
        max_concurrent_jobs=concurrency,
        # the default allows one running job per task in the whole cluster
        task_defaults=TaskDefaults(max_running_jobs=None, misfire_grace_time=None),
    )


async def _aps_creates(url: str, n: int) -> float:
    from apscheduler.triggers.date import DateTrigger

    async with _aps_scheduler(url) as scheduler:
        at = datetime.now(timezone.utc) + timedelta(days=1)
        started = time.perf_counter()
        for i in range(n):
            await scheduler.add_schedule(_aps_noop_kw, DateTrigger(at), kwargs={"i": i})
        return n / (time.perf_counter() - started)


async def _aps_noop_kw(**_: Any) -> None:
    _noop_byte()


async def _aps_fill(url: str, n: int) -> None:
    from apscheduler.triggers.date import DateTrigger

    async with _aps_scheduler(url) as scheduler:
        now = datetime.now(timezone.utc)
        for _ in range(n):
            await scheduler.add_schedule(_aps_noop, DateTrigger(now))


async def _aps_worker(url: str, concurrency: int) -> None:
    scheduler = _aps_scheduler(url, concurrency)
    await _ready_and_go()
    async with scheduler:
        await scheduler.start_in_background()
        await _stop_signal()


# ---------------------------------------------------------------- procrastinate (child side)


async def _pro_noop(**_: Any) -> None:
    _noop_byte()


def _pro_app(url: str) -> Any:
    from procrastinate import App, PsycopgConnector

    app = App(connector=PsycopgConnector(conninfo=url))
    app.task(name="noop")(_pro_noop)
    return app


async def _pro_creates(url: str, n: int, batched: bool, setup: bool = True) -> float:
    app = _pro_app(url)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        deferrer = app.configure_task("noop", schedule_in={"days": 1})
        started = time.perf_counter()
        if batched:
            for first in range(0, n, BATCH):
                await deferrer.batch_defer_async(
                    *({"i": i} for i in range(first, min(n, first + BATCH)))
                )
        else:
            for i in range(n):
                await deferrer.defer_async(i=i)
        return n / (time.perf_counter() - started)


async def _pro_fill(url: str, n: int) -> None:
    app = _pro_app(url)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        deferrer = app.configure_task("noop")
        for first in range(0, n, BATCH):
            await deferrer.batch_defer_async(*({} for _ in range(first, min(n, first + BATCH))))


async def _pro_worker(url: str, concurrency: int) -> None:
    app = _pro_app(url)
    await _ready_and_go()
    async with app.open_async():
        worker = asyncio.create_task(
            app.run_worker_async(concurrency=concurrency, wait=True, install_signal_handlers=False)
        )
        await _stop_signal()
        worker.cancel()
        try:
            await asyncio.wait_for(worker, timeout=30)
        except (asyncio.CancelledError, asyncio.TimeoutError):
            pass


# ---------------------------------------------------------------- child process


async def _ready_and_go() -> None:
    os.write(1, b"ready\n")
    line = await asyncio.to_thread(sys.stdin.readline)
    if line.strip() != "go":
        raise SystemExit(0)


async def _stop_signal() -> None:
    await asyncio.to_thread(sys.stdin.readline)


def _version(system: str) -> str:
    from importlib.metadata import version

    return version({"apscheduler": "APScheduler"}.get(system, system))


def child() -> None:
    """Entry point of a measurement subprocess: ``SYSTEM OP URL N [CONCURRENCY|SEED]``."""
    system, op, url, n, extra = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), 0
    if len(sys.argv) > 6:
        extra = int(sys.argv[6])
    if op == "probe":
        try:
            {"tickkit": _tk_registry, "apscheduler": _aps_scheduler, "procrastinate": _pro_app}[
                system
            ](*(() if system == "tickkit" else (url,)))
            print(json.dumps({"version": _version(system)}))
        except ImportError as exc:
            try:  # APScheduler 3 in tickkit's own venv, say
                found = f", {_version(system)} found"
            except Exception:
                found = ""
            print(json.dumps({"missing": f"{exc.name or exc}{found}"}))
        return
    runs: dict[tuple[str, str], Any] = {
        ("tickkit", "creates"): lambda: _tk_creates(url, n, False),
        ("tickkit", "batch"): lambda: _tk_creates(url, n, True),
        ("tickkit", "fill"): lambda: _tk_fill(url, n),
        ("tickkit", "worker"): lambda: _tk_worker(url, extra),
        ("tickkit", "where"): lambda: _tk_where(url, n, extra),
        ("apscheduler", "creates"): lambda: _aps_creates(url, n),
        ("apscheduler", "fill"): lambda: _aps_fill(url, n),
        ("apscheduler", "worker"): lambda: _aps_worker(url, extra),
        ("procrastinate", "creates"): lambda: _pro_creates(url, n, False),
        ("procrastinate", "batch"): lambda: _pro_creates(url, n, True),
        ("procrastinate", "fill"): lambda: _pro_fill(url, n),
        ("procrastinate", "worker"): lambda: _pro_worker(url, extra),
    }
    result = asyncio.run(runs[system, op]())
    if op != "worker":
        print(json.dumps({"value": result}))


# ---------------------------------------------------------------- parent process


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.python = {"tickkit": sys.executable}
        for system in ("apscheduler", "procrastinate"):
            self.python[system] = args.alt_python

    def argv(self, system: str, op: str, url: str, n: int, extra: int = 0) -> list[str]:
        return [self.python[system], "-c", BOOT, str(HERE), system, op, url, str(n), str(extra)]

    async def admin(self, sql: str) -> None:
        import asyncpg

        conn = await asyncpg.connect(SERVER)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def database(self) -> tuple[str, str]:
        name = f"tickkit_bench_{os.urandom(5).hex()}"
        await self.admin(f'CREATE DATABASE "{name}"')
        return name, _url(name)

    async def once(self, system: str, op: str, n: int, extra: int = 0) -> Any:
        name, url = await self.database()
        try:
            out = await asyncio.to_thread(
                run_json_subprocess, self.argv(system, op, url, n, extra), timeout=1800
            )
            return out["value"]
        finally:
            await self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    async def fires(self, system: str, n: int, concurrency: int, processes: int) -> float | None:
        name, url = await self.database()
        procs: list[asyncio.subprocess.Process] = []
        try:
            await asyncio.to_thread(run_json_subprocess, self.argv(system, "fill", url, n))
            for _ in range(processes):
                procs.append(
                    await asyncio.create_subprocess_exec(
                        *self.argv(system, "worker", url, n, concurrency),
                        stdin=asyncio.subprocess.PIPE,
                        stdout=asyncio.subprocess.PIPE,
                    )
                )
            for proc in procs:
                assert proc.stdout is not None
                line = await asyncio.wait_for(proc.stdout.readline(), timeout=120)
                if line != b"ready\n":
                    raise RuntimeError(f"{system} worker did not start: {line!r}")
            counted = [0]
            done = asyncio.Event()

            async def count(proc: asyncio.subprocess.Process) -> None:
                assert proc.stdout is not None
                while chunk := await proc.stdout.read(65536):
                    counted[0] += chunk.count(b".")
                    if counted[0] >= n:
                        done.set()

            readers = [asyncio.create_task(count(p)) for p in procs]
            started = time.perf_counter()
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write(b"go\n")
                await proc.stdin.drain()
            try:
                await asyncio.wait_for(done.wait(), timeout=self.args.fire_timeout)
                elapsed: float | None = time.perf_counter() - started
            except asyncio.TimeoutError:
                print(
                    f"  {system}: {counted[0]} of {n} jobs ran in {self.args.fire_timeout} s",
                    file=sys.stderr,
                )
                elapsed = None
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write(b"stop\n")
                proc.stdin.close()
            await asyncio.wait(readers, timeout=60)
            return None if elapsed is None else n / elapsed
        finally:
            for proc in procs:
                try:
                    await asyncio.wait_for(proc.wait(), timeout=60)
                except asyncio.TimeoutError:
                    proc.kill()
                    await proc.wait()
            await self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _fire_label(concurrency: int, processes: int) -> str:
    workers = "1 worker process" if processes == 1 else f"{processes} worker processes"
    return f"fires/s, concurrency {concurrency}, {workers}"


async def main_async(args: argparse.Namespace) -> None:
    bench = Bench(args)
    systems = [s for s in SYSTEMS if s in args.systems]
    status: dict[str, str] = {}
    for system in systems:
        probe = run_json_subprocess(bench.argv(system, "probe", SERVER, 0))
        status[system] = probe.get("version") or f"not installed ({probe['missing']})"
    present = [s for s in systems if not status[s].startswith("not installed")]
    load_before = os.getloadavg()
    results: dict[tuple[str, str], list[float | None]] = {}

    def add(system: str, label: str, value: float | None) -> None:
        results.setdefault((system, label), []).append(value)

    fire_grid = [(c, p) for p in (1, 4) for c in (1, 16)]
    for run in range(args.runs):
        for system in present:
            print(f"run {run + 1}/{args.runs}: {SYSTEMS[system]}", file=sys.stderr, flush=True)
            if "creates" in args.only:
                add(system, "creates/s, one at a time", await bench.once(system, "creates", args.n))
                if (system, "batch") not in NA:
                    add(
                        system,
                        "creates/s, batched (1,000 per call)",
                        await bench.once(system, "batch", args.batch_n),
                    )
            if "fires" in args.only:
                for concurrency, processes in fire_grid:
                    add(
                        system,
                        _fire_label(concurrency, processes),
                        await bench.fires(system, args.fire_n, concurrency, processes),
                    )
    where: dict[str, float] | None = None
    if "where" in args.only and "tickkit" in present:
        print(f"where: {args.where_jobs:,} jobs (tickkit)", file=sys.stderr, flush=True)
        where = await bench.once("tickkit", "where", args.where_jobs, args.seed)
    load_after = os.getloadavg()

    labels = [SYSTEMS[s] for s in systems]
    rows: list[Row] = []
    for metric, workload in _metrics(args, fire_grid):
        values: dict[str, float | None] = {}
        why: list[str] = []
        for system in systems:
            got = [v for v in results.get((system, metric), []) if v is not None]
            values[SYSTEMS[system]] = median(got) if got else None
            if got:
                continue
            if status[system].startswith("not installed"):
                why.append(f"{SYSTEMS[system]} {status[system]}")
            elif (system, workload) in NA:
                why.append(NA[system, workload])
            elif (system, metric) in results:
                why.append(f"{SYSTEMS[system]}: not done within --fire-timeout")
        if metric.startswith("where") and where is not None:
            values["tickkit"] = where["median"]
            why.insert(
                0,
                f"tickkit: after ANALYZE; p95 {format_value(where['p95'])} ms; before ANALYZE "
                f"{format_value(where['cold'])} ms (median of {WHERE_COLD}); filled at "
                f"{where['fill_rate']:,.0f} jobs/s",
            )
        rows.append(
            Row(
                metric,
                "ms" if workload == "where" else "jobs/s",
                values,
                higher_is_better=workload != "where",
                note="; ".join(why),
            )
        )
    notes = [machine_summary()]
    notes += [f"{SYSTEMS[s]}: {status[s]}" for s in systems]
    notes.append(
        f"PostgreSQL at {urlsplit(SERVER).hostname}, a fresh database per measurement; median "
        f"of {args.runs} run(s); creates {args.n:,} one at a time, {args.batch_n:,} batched; "
        f"fires {args.fire_n:,} jobs; load average {load_before[0]:.1f} before, "
        f"{load_after[0]:.1f} after"
    )
    print_table(
        "PostgreSQL: tickkit vs APScheduler 4 vs procrastinate", rows, labels=labels, notes=notes
    )


def _metrics(args: argparse.Namespace, fire_grid: list[tuple[int, int]]) -> list[tuple[str, str]]:
    """(row label, workload) of the rows this run prints, in order."""
    out: list[tuple[str, str]] = []
    if "creates" in args.only:
        out += [
            ("creates/s, one at a time", "creates"),
            ("creates/s, batched (1,000 per call)", "batch"),
        ]
    if "fires" in args.only:
        out += [(_fire_label(c, p), "fires") for c, p in fire_grid]
    if "where" in args.only:
        out.append(
            (f"where, one user's page of {WHERE_PAGE}, {args.where_jobs:,} jobs, median", "where")
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller workloads, one run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--alt-python",
        default=sys.executable,
        help="interpreter with APScheduler 4 and procrastinate installed",
    )
    parser.add_argument(
        "--systems", default=",".join(SYSTEMS), help="tickkit,apscheduler,procrastinate"
    )
    parser.add_argument("--only", default="creates,fires,where", help="creates,fires,where")
    parser.add_argument("--n", type=int, help="creates one at a time")
    parser.add_argument("--batch-n", type=int, help="creates batched")
    parser.add_argument("--fire-n", type=int, help="jobs due at once per fires measurement")
    parser.add_argument(
        "--fire-timeout",
        type=float,
        default=120.0,
        help="seconds a fires measurement may take (else n/a)",
    )
    parser.add_argument("--where-jobs", type=int, help="stored jobs for where (1,000,000)")
    parser.add_argument("--seed", type=int, default=16)
    args = parser.parse_args()
    quick = args.quick
    defaults = (200, 5_000, 300, 100_000) if quick else (300, 10_000, 500, 1_000_000)
    for name, value in zip(("n", "batch_n", "fire_n", "where_jobs"), defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, value)
    if quick:
        args.runs = 1
    args.systems = {s.strip() for s in args.systems.split(",") if s.strip()}
    args.only = {s.strip() for s in args.only.split(",") if s.strip()}
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
