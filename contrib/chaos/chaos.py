"""Chaos run: N worker processes on one store, SIGKILLed at random, and a count of every run.

    python contrib/chaos/chaos.py --driver sqlite|redis|postgres --workers N --jobs M \\
        --seconds S --seed K

What it does (see docs/reliability.md for what the figures mean):

1. Starts its own store in a temporary folder: a SQLite file, or its own ``redis-server`` on a
   free loopback port with ``appendonly yes`` and ``appendfsync always`` (the machine's Redis is
   never used); or, for ``postgres``, a database of its own (``tickkit_chaos_<random>``, dropped
   at the end) on the server at ``TICKKIT_PG_URL`` (default postgresql://postgres@127.0.0.1:5432).
2. Starts N workers (contrib/chaos/chaos_worker.py). Each records every run in a file of its own,
   with ``fdatasync``, before and after the run's work.
3. For S seconds: a producer creates M one-off jobs spread over the first 60% of that time (a
   third due at once, the rest delayed 1-5 s); every ``--kill-every`` seconds (a random time in
   the range) one random worker is SIGKILLed and a new one started in its place; on Redis, the
   server is restarted once half-way. Two static tasks run meanwhile: a 6-field cron every second
   and an interval (``misfire="all"``: every occurrence must run).
4. Then no more kills: waits until the store has no one-off job left to run and the static tasks
   caught up, stops the workers gracefully (SIGTERM), and prints a table: jobs created, run
   exactly once, run more than once (and of those, how many only because a SIGKILL interrupted a
   run), lost; and the cron and interval occurrences expected, run, doubled, missed.

Exit code: 0 when nothing was lost, missed or run twice outside killed runs; 1 otherwise; 2 when
the run could not be set up. Every wait has a time limit; every process and the temporary
folder are removed at the end, also on Ctrl-C or an error. Traffic goes only to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from chaos_worker import EVERY, JOB, TICK, driver_options, registry  # noqa: E402

#: the PostgreSQL server of ``--driver postgres`` (the run makes a database of its own there)
PG_URL = os.environ.get("TICKKIT_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _pg_url(database: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    return urlunsplit(urlsplit(PG_URL)._replace(path="/" + database))


def _pg_admin(sql: str) -> None:
    """Run one statement on the server's ``postgres`` database (in a thread of its own: the
    caller may be inside the run's event loop)."""
    import concurrent.futures

    async def run() -> None:
        import asyncpg

        conn = await asyncpg.connect(PG_URL, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, run()).result(timeout=60)
    except Exception as exc:
        raise SetupError(f"PostgreSQL at {PG_URL}: {type(exc).__name__}: {exc}") from None


from tickkit import JobExistsError, Kernel  # noqa: E402


class SetupError(Exception):
    """The run could not be set up (a store or a worker did not start)."""


class Interrupted(Exception):
    """SIGINT or SIGTERM: the run ends, and cleans up."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    if port == 6379:  # never the machine's Redis port, even if it happens to be free
        return free_port()
    return port


def wait_until(condition: Any, timeout: float, what: str, step: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SetupError(f"{what}: not within {timeout}s")
        time.sleep(step)


def stop_process(
    proc: subprocess.Popen[bytes], timeout: float, *, signalled: bool = False
) -> int | None:
    """SIGTERM (unless ``signalled``: sent already; a second one would kill a worker that is
    finishing its graceful stop), wait up to ``timeout``, then SIGKILL. Return the exit code of a
    graceful stop, None when it had to be killed."""
    if proc.poll() is not None:
        return proc.returncode
    if not signalled:
        proc.terminate()
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        return None


class RedisStore:
    """A private redis-server on a free loopback port, with AOF fsynced on every write."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = open(workdir / "redis.log", "ab")  # noqa: SIM115 - closed in close()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0?queue=chaos"

    def start(self) -> None:
        if shutil.which("redis-server") is None:
            raise SetupError("redis-server is not on PATH")
        for _ in range(5):  # a free port can be taken between the check and the bind
            if not self.port:
                self.port = free_port()
            if self._start_on(self.port):
                return
            self.port = 0
        raise SetupError("redis-server did not start on a free port")

    def _start_on(self, port: int) -> bool:
        # fmt: off
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port", str(port), "--bind", "127.0.0.1", "--protected-mode", "yes",
                "--dir", str(self.workdir), "--save", "",
                "--appendonly", "yes", "--appendfsync", "always",
                "--maxmemory-policy", "noeviction",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        # fmt: on
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return True
            except OSError:
                pass
            time.sleep(0.02)
        stop_process(self.proc, 5)
        return False

    def add_ballast(self, keys: int) -> None:
        """Write ``keys`` filler keys into database 1 (the queue uses 0) and compact the AOF, so
        that a restarted server spends a while answering LOADING while it reads them back."""
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, db=1)
        try:
            value = "x" * 64
            for start in range(0, keys, 1000):
                client.mset({f"ballast:{i}": value for i in range(start, min(start + 1000, keys))})
            client.bgrewriteaof()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                info = client.info("persistence")
                if not info.get("aof_rewrite_in_progress") and not info.get(
                    "aof_rewrite_scheduled"
                ):
                    return
                time.sleep(0.1)
            raise SetupError("the AOF rewrite of the ballast did not end within 60s")
        finally:
            client.close()

    def restart(self) -> None:
        """SIGTERM (Redis writes the AOF and exits), then start again on the same port."""
        self.stop()
        if not self._start_on(self.port):
            raise SetupError(f"redis-server did not restart on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 10)
            self.proc = None

    def close(self) -> None:
        self.stop()
        self.log.close()


@dataclass
class Worker:
    slot: int
    proc: subprocess.Popen[bytes]
    log: Path


@dataclass
class Chaos:
    args: argparse.Namespace
    tmp: Path
    rng: random.Random
    url: str = ""
    pg_database: str = ""
    redis: RedisStore | None = None
    workers: dict[int, Worker] = field(default_factory=dict)
    started: int = 0
    #: pid -> time (unix) of its SIGKILL
    kills: dict[int, float] = field(default_factory=dict)
    redis_restarts: list[float] = field(default_factory=list)
    #: job id -> time it was created
    created: dict[str, float] = field(default_factory=dict)
    create_errors: int = 0
    exit_codes: list[int | None] = field(default_factory=list)
    #: set by SIGINT or SIGTERM: every loop checks it and ends the run
    interrupted: bool = False

    def check(self) -> None:
        if self.interrupted:
            raise Interrupted

    # --- processes ------------------------------------------------------------------------

    @property
    def runs_dir(self) -> Path:
        return self.tmp / "runs"

    def start_store(self) -> None:
        self.runs_dir.mkdir()
        if self.args.driver == "sqlite":
            self.url = f"sqlite:///{self.tmp / 'chaos.db'}"
        elif self.args.driver == "postgres":
            self.pg_database = f"tickkit_chaos_{os.urandom(5).hex()}"
            _pg_admin(f'CREATE DATABASE "{self.pg_database}"')
            self.url = _pg_url(self.pg_database)
        else:
            self.redis = RedisStore(self.tmp)
            self.redis.start()
            self.url = self.redis.url
            if self.args.redis_ballast:
                self.redis.add_ballast(self.args.redis_ballast)

    def spawn(self, slot: int) -> Worker:
        self.started += 1
        log = self.tmp / f"worker-{slot}-{self.started}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    str(HERE / "chaos_worker.py"),
                    "--driver",
                    self.url,
                    "--runs",
                    str(self.runs_dir),
                    "--lease",
                    str(self.args.lease),
                    "--max-stalled-count",
                    str(self.args.max_stalled_count),
                    "--every",
                    str(self.args.every),
                    "--work",
                    str(self.args.work),
                    "--concurrency",
                    str(self.args.concurrency),
                ],
                cwd=self.tmp,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches this script only; it stops them in order
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        worker = Worker(slot, proc, log)
        self.workers[slot] = worker
        return worker

    def wait_ready(self, worker: Worker) -> None:
        ready = self.runs_dir / f"ready-{worker.proc.pid}"

        def up() -> bool:
            self.check()
            if worker.proc.poll() is not None:
                raise SetupError(f"worker {worker.slot} exited at start; see {worker.log}")
            return ready.exists()

        wait_until(up, 60, f"worker {worker.slot} ready")

    def kill_one(self) -> None:
        slot = self.rng.randrange(len(self.workers))
        worker = self.workers[slot]
        worker.proc.send_signal(signal.SIGKILL)
        worker.proc.wait(10)
        self.kills[worker.proc.pid] = time.time()
        self.spawn(slot)  # not waited for: it joins when it is ready

    def stop_workers(self) -> None:
        for worker in self.workers.values():
            if worker.proc.poll() is None:
                worker.proc.terminate()
        for worker in self.workers.values():
            self.exit_codes.append(stop_process(worker.proc, 30, signalled=True))
        self.workers.clear()

    def cleanup(self) -> None:
        for worker in self.workers.values():
            if worker.proc.poll() is None:
                worker.proc.kill()
                worker.proc.wait(10)
        self.workers.clear()
        if self.redis is not None:
            self.redis.close()
        if self.pg_database:
            _pg_admin(f'DROP DATABASE IF EXISTS "{self.pg_database}" WITH (FORCE)')
            self.pg_database = ""

    # --- the run --------------------------------------------------------------------------

    def kernel(self) -> Kernel:
        return Kernel(
            self.url,
            tasks=registry(None, every=self.args.every),
            driver_options=driver_options(self.url, self.args.lease, self.args.max_stalled_count),
        )

    async def produce(self, kernel: Kernel, t0: float) -> None:
        """Create the one-off jobs at planned times over the first 60% of the run."""
        span = self.args.seconds * 0.6
        plan = sorted(self.rng.uniform(0, span) for _ in range(self.args.jobs))
        for i, at in enumerate(plan):
            job_id = f"chaos-{self.args.seed}-{i:06d}"
            delay = None if self.rng.random() < 1 / 3 else self.rng.uniform(1, 5)
            wait = t0 + at - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
            self.check()
            schedule = None if delay is None else timedelta(seconds=delay)
            # a create can fail while Redis restarts: try again with the same id (idempotent:
            # JobExistsError means an earlier try was stored), for at most 60 s
            deadline = time.monotonic() + 60
            while True:
                try:
                    await kernel.create_task(JOB, {"i": i}, schedule, id=job_id)
                    break
                except JobExistsError:
                    break
                except Exception as exc:
                    self.create_errors += 1
                    if time.monotonic() > deadline:
                        raise SetupError(f"could not create job {job_id}: {exc}") from exc
                    await asyncio.sleep(0.2)
                    self.check()
            self.created[job_id] = time.time()

    async def disturb(self, t0: float) -> None:
        """SIGKILL a random worker every few seconds; restart Redis once half-way."""
        low, high = self.args.kill_every
        next_kill = t0 + self.rng.uniform(low, high)
        restart = self.redis is not None and self.args.redis_restart
        restart_at = t0 + self.args.seconds / 2 if restart else math.inf
        end = t0 + self.args.seconds
        for _ in range(100_000):  # bounded; the time limit ends it long before
            self.check()
            now = time.time()
            if now >= end:
                return
            if now >= restart_at:
                assert self.redis is not None
                await asyncio.to_thread(self.redis.restart)
                self.redis_restarts.append(time.time())
                restart_at = math.inf
            if now >= next_kill and self.args.kill_every[1] > 0:
                await asyncio.to_thread(self.kill_one)
                next_kill = time.time() + self.rng.uniform(low, high)
            await asyncio.sleep(0.05)

    async def drain(self, kernel: Kernel, w1: float) -> bool:
        """Wait until no one-off job is left to run and the static tasks caught up to ``w1``."""
        deadline = time.monotonic() + self.args.drain_timeout
        while time.monotonic() < deadline:
            await asyncio.sleep(1)
            self.check()
            try:
                pending = await kernel.list_tasks(JOB, state="scheduled")
                running = await kernel.list_tasks(JOB, state="running")
            except Exception:
                continue  # the store may be restarting
            if pending or running:
                continue
            runs = read_runs(self.runs_dir)
            last: dict[str, float] = defaultdict(float)
            for run in runs:
                if run.kind == "done":
                    last[run.task] = max(last[run.task], run.scheduled / 1000)
            if last[TICK] >= w1 - 1 and last[EVERY] >= w1 - self.args.every:
                return True
        return False

    def on_signal(self) -> None:
        self.interrupted = True

    async def run(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.on_signal)
        self.start_store()
        kernel = self.kernel()
        await kernel.open()
        try:
            for slot in range(self.args.workers):
                self.spawn(slot)
            for worker in list(self.workers.values()):
                await asyncio.to_thread(self.wait_ready, worker)
            t0 = time.time()
            tasks = [
                asyncio.ensure_future(self.produce(kernel, t0)),
                asyncio.ensure_future(self.disturb(t0)),
            ]
            try:
                await asyncio.gather(*tasks)
            finally:  # one failed: the other ends too
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            w1 = time.time()
            for worker in list(self.workers.values()):
                await asyncio.to_thread(self.wait_ready, worker)
            drained = await self.drain(kernel, w1)
            await asyncio.to_thread(self.stop_workers)
            failed = [j.id for j in await kernel.list_tasks(JOB, state="failed")]
            left = [j.id for j in await kernel.list_tasks(JOB, state="running")]
            left += [j.id for j in await kernel.list_tasks(JOB, state="scheduled")]
        finally:
            await kernel.stop()
        report = analyse(
            read_runs(self.runs_dir),
            self.created,
            self.kills,
            window=(t0 + 1, w1),
            every=self.args.every,
            kill_window=self.args.kill_window,
        )
        report["setup"] = {
            "driver": self.args.driver,
            "workers": self.args.workers,
            "jobs": self.args.jobs,
            "seconds": self.args.seconds,
            "seed": self.args.seed,
            "lease": self.args.lease,
            "max_stalled_count": self.args.max_stalled_count if self.redis else None,
            "kills": len(self.kills),
            "redis_restarts": len(self.redis_restarts),
            "redis_ballast": self.args.redis_ballast,
            "create_retries": self.create_errors,
            "drained": drained,
            "graceful_exit_codes": self.exit_codes,
            "failed_in_store": len(failed),
            "failed_ids": failed[:20],
            "left_in_store": left[:20],
            "kill_times": {str(pid): at for pid, at in self.kills.items()},
            "redis_restart_times": self.redis_restarts,
            "lost_lease_warnings": count_in_logs(self.tmp, "lost the lease"),
            "tracebacks_in_worker_logs": count_in_logs(self.tmp, "Traceback"),
            "outcome_write_errors": count_in_logs(self.tmp, "could not record the outcome"),
        }
        return report


# --- the count ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    kind: str
    task: str
    job_id: str
    scheduled: int
    attempt: int
    pid: int
    at: float


def read_runs(folder: Path) -> list[Run]:
    runs = []
    for path in sorted(folder.glob("runs-*.log")):
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) != 7:
                continue  # cannot happen with one write per line; counted as nothing
            kind, task, job_id, scheduled, attempt, pid, at = parts
            runs.append(Run(kind, task, job_id, int(scheduled), int(attempt), int(pid), float(at)))
    return runs


def count_in_logs(folder: Path, text: str) -> int:
    return sum(p.read_text(errors="replace").count(text) for p in folder.glob("worker-*.log"))


def only_kills(
    starts: list[Run],
    ends: dict[tuple[str, str, int, int], float],
    kills: dict[int, float],
    kill_window: float,
) -> bool:
    """Whether the runs of one occurrence (start lines, any order) ran more than once only
    because SIGKILLs interrupted them: every run but the last must be a killed run.

    A run is *killed* when its process was SIGKILLed before the next run of the occurrence
    started, and either during the run's work (the run has no ``done`` line) or at most
    ``kill_window`` seconds after the work ended (while its outcome was being written). A run
    whose process lived on longer than that should have recorded its outcome: running it again
    is a double outside killed runs."""
    ordered = sorted(starts, key=lambda r: r.at)
    for run, following in itertools.pairwise(ordered):
        killed_at = kills.get(run.pid)
        if killed_at is None or following.at < killed_at:
            return False
        ended = ends.get((run.task, run.job_id, run.scheduled, run.pid))
        if ended is not None and killed_at > ended + kill_window:
            return False
    return True


def count_occurrences(
    by_key: dict[Any, list[Run]],
    done: dict[tuple[str, str, int, int], float],
    kills: dict[int, float],
    kill_window: float,
) -> dict[str, int]:
    out = {
        "once": 0,
        "twice_or_more": 0,
        "twice_killed": 0,
        "twice_killed_work_done": 0,
        "twice_outside_killed": 0,
    }
    for starts in by_key.values():
        if len(starts) == 1:
            out["once"] += 1
        elif starts:
            out["twice_or_more"] += 1
            if only_kills(starts, done, kills, kill_window):
                out["twice_killed"] += 1
                first = min(starts, key=lambda r: r.at)
                if (first.task, first.job_id, first.scheduled, first.pid) in done:
                    out["twice_killed_work_done"] += 1
            else:
                out["twice_outside_killed"] += 1
    return out


def analyse(
    runs: list[Run],
    created: dict[str, float],
    kills: dict[int, float],
    *,
    window: tuple[float, float],
    every: float,
    kill_window: float,
) -> dict[str, Any]:
    starts = [r for r in runs if r.kind == "start"]
    done = {(r.task, r.job_id, r.scheduled, r.pid): r.at for r in runs if r.kind == "done"}

    jobs: dict[str, list[Run]] = {job_id: [] for job_id in created}
    unknown = 0
    for run in starts:
        if run.task == JOB:
            if run.job_id in jobs:
                jobs[run.job_id].append(run)
            else:
                unknown += 1
    one_off = count_occurrences(jobs, done, kills, kill_window)
    one_off["created"] = len(created)
    one_off["lost"] = sum(1 for r in jobs.values() if not r)
    one_off["ran_not_created"] = unknown
    one_off["lost_ids"] = [j for j, r in jobs.items() if not r][:20]  # type: ignore[assignment]
    one_off["doubled_outside_ids"] = [  # type: ignore[assignment]
        j for j, r in jobs.items() if len(r) > 1 and not only_kills(r, done, kills, kill_window)
    ][:20]

    w0, w1 = window
    static: dict[str, Any] = {}
    for name, period in ((TICK, 1.0), (EVERY, every)):
        mine = [r for r in starts if r.task == name]
        if name == TICK:
            anchor = 0.0
        else:
            anchor = min((r.scheduled / 1000 for r in mine), default=w0)
        first = anchor + math.ceil((w0 - anchor) / period) * period
        expected = []
        at = first
        while at < w1 and len(expected) < 1_000_000:
            expected.append(round(at * 1000))
            at += period
        occurrences: dict[int, list[Run]] = {ms: [] for ms in expected}
        off = 0
        for run in mine:
            if run.scheduled in occurrences:
                occurrences[run.scheduled].append(run)
            elif (run.scheduled - round(anchor * 1000)) % round(period * 1000):
                off += 1  # not one of the schedule's times at all
        counts = count_occurrences(occurrences, done, kills, kill_window)
        counts["expected"] = len(expected)
        counts["missed"] = sum(1 for r in occurrences.values() if not r)
        counts["off_schedule"] = off
        counts["missed_at"] = [ms for ms, r in occurrences.items() if not r][:20]  # type: ignore[assignment]
        static[name] = counts
    return {"one_off": one_off, "static": static}


def failures(report: dict[str, Any]) -> list[str]:
    out = []
    one = report["one_off"]
    if one["lost"]:
        out.append(f"{one['lost']} job(s) lost: {one['lost_ids']}")
    if one["twice_outside_killed"]:
        out.append(
            f"{one['twice_outside_killed']} job(s) ran twice outside killed runs: "
            f"{one['doubled_outside_ids']}"
        )
    if one["ran_not_created"]:
        out.append(f"{one['ran_not_created']} run(s) of jobs that were never created")
    for name, counts in report["static"].items():
        if counts["missed"]:
            out.append(f"{name}: {counts['missed']} occurrence(s) missed: {counts['missed_at']}")
        if counts["twice_outside_killed"]:
            out.append(f"{name}: {counts['twice_outside_killed']} doubled outside killed runs")
        if counts["off_schedule"]:
            out.append(f"{name}: {counts['off_schedule']} run(s) off the schedule")
    if not report["setup"]["drained"]:
        out.append("the store did not drain within --drain-timeout")
    return out


def table(report: dict[str, Any]) -> str:
    s = report["setup"]
    one = report["one_off"]
    tick, every = report["static"][TICK], report["static"][EVERY]
    lines = [
        f"driver {s['driver']}, {s['workers']} workers, {s['jobs']} jobs, {s['seconds']} s, "
        f"seed {s['seed']}, lease {s['lease']} s"
        + (f", max_stalled_count {s['max_stalled_count']}" if s["max_stalled_count"] else "")
        + f": {s['kills']} SIGKILLs, {s['redis_restarts']} Redis restart(s)",
        "",
        "| one-off jobs | count |",
        "|---|---:|",
        f"| created | {one['created']} |",
        f"| run exactly once | {one['once']} |",
        f"| run more than once | {one['twice_or_more']} |",
        f"| - of those, because a SIGKILL interrupted a run | {one['twice_killed']} |",
        f"|   (the interrupted run had finished its work) | {one['twice_killed_work_done']} |",
        f"| run more than once outside killed runs | {one['twice_outside_killed']} |",
        f"| lost (never ran) | {one['lost']} |",
        "",
        "| static occurrences | expected | ran | doubled (killed runs) | doubled (other) "
        "| missed |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, c in (("cron `* * * * * *`", tick), (f"interval {s.get('every', '')} s", every)):
        ran = c["once"] + c["twice_or_more"]
        lines.append(
            f"| {label} | {c['expected']} | {ran} | {c['twice_killed']} | "
            f"{c['twice_outside_killed']} | {c['missed']} |"
        )
    lines += [
        "",
        f"failed in the store: {s['failed_in_store']}; left in the store after the stop: "
        f"{len(s['left_in_store'])}; graceful exit codes: {s['graceful_exit_codes']}; "
        f"create retries: {s['create_retries']}; 'lost the lease' warnings: "
        f"{s['lost_lease_warnings']}; outcome writes that failed: {s['outcome_write_errors']}",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="N tickkit workers on one store, SIGKILLed at random; counts every run."
    )
    parser.add_argument("--driver", choices=["sqlite", "redis", "postgres"], required=True)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--kill-every",
        type=float,
        nargs=2,
        default=(3.0, 5.0),
        metavar=("MIN", "MAX"),
        help="seconds between SIGKILLs, a random time in [MIN, MAX] (0 0: no kills)",
    )
    parser.add_argument(
        "--no-redis-restart",
        dest="redis_restart",
        action="store_false",
        help="do not restart Redis half-way (to tell its effects from the kills')",
    )
    parser.add_argument(
        "--redis-ballast",
        type=int,
        default=0,
        metavar="KEYS",
        help="filler keys in Redis database 1, so that the restarted server answers LOADING "
        "for a while (300000: about 0.8 s)",
    )
    parser.add_argument("--lease", type=float, default=5.0, help="lease / lock duration (s)")
    parser.add_argument(
        "--max-stalled-count", type=int, default=1, help="BullMQ's maxStalledCount (redis)"
    )
    parser.add_argument(
        "--work", type=float, default=0.1, help="each run works a random 0 to WORK seconds"
    )
    parser.add_argument("--every", type=float, default=2.0, help="the interval task's period (s)")
    parser.add_argument("--concurrency", type=int, default=16, help="runs at once per worker")
    parser.add_argument(
        "--kill-window",
        type=float,
        default=2.0,
        help="a run whose work had ended counts as killed when its process was SIGKILLed "
        "within this many seconds after (while its outcome was being written)",
    )
    parser.add_argument("--drain-timeout", type=float, default=120.0)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    if not 1 <= args.workers <= 64:
        parser.error("--workers must be between 1 and 64")
    if not 0 <= args.redis_ballast <= 10_000_000:
        parser.error("--redis-ballast must be between 0 and 10000000")
    if not 0 <= args.jobs <= 1_000_000:
        parser.error("--jobs must be between 0 and 1000000")
    if not 5 <= args.seconds <= 3600:
        parser.error("--seconds must be between 5 and 3600")
    low, high = args.kill_every
    if not (low == high == 0 or 0.5 <= low <= high):
        parser.error("--kill-every needs 0.5 <= MIN <= MAX (or 0 0)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # outside the event loop (set-up, clean-up) a signal ends the run at once; inside it,
    # Chaos.on_signal sets a flag every loop checks
    signal.signal(signal.SIGTERM, interrupted)
    tmp = Path(tempfile.mkdtemp(prefix="tickkit-chaos-"))
    chaos = Chaos(args, tmp, random.Random(args.seed))
    try:
        report = asyncio.run(chaos.run())
    except (KeyboardInterrupt, Interrupted):
        print("chaos: interrupted; cleaning up", file=sys.stderr)
        return 130
    except SetupError as exc:
        print(f"chaos: {exc}", file=sys.stderr)
        return 2
    finally:
        chaos.cleanup()
        if args.keep:
            print(f"chaos: kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    report["setup"]["every"] = args.every
    print(table(report))
    found = failures(report)
    for line in found:
        print(f"FAIL: {line}")
    if args.json is not None:
        args.json.write_text(json.dumps({**report, "failures": found}, indent=2))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
