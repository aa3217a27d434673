"""A bot shard for the multi-process tests of the SQLite and PostgreSQL drivers: one kernel on a
shared store, real clock. One script for every driver: the store is a URL.

    python shard_worker.py URL OUT [--lease S] [--poll S] [--keep-completed] [--tick]
                                   [--open-only]

Tasks:
- ``record``: appends ``"ran <job id> <attempt> <pid> <time>"`` to OUT;
- ``slow``: appends ``"start <job id> <attempt> ..."``; on its first attempt it then waits
  for an hour (the test kills the process meanwhile), on later attempts it finishes and
  appends ``"done <job id> <attempt> ..."``;
- with ``--tick``, ``tick``: static, cron ``* * * * * *`` (every second), misfire ``all``;
  appends ``"tick <scheduled unix ms> <attempt> ..."``.

When the kernel has started, the worker creates ``OUT + ".ready"``. SIGTERM stops it gracefully.
``--open-only``: open the store (create or migrate it), append ``"opened <pid>"`` and exit.
Every line ends with the pid and the unix time (as in ``ran <job id> <attempt> <pid> <time>``).
Each line of OUT is written with one ``os.write`` on a file opened with O_APPEND, so a line is
whole even when the process is killed.

The tests start and stop these processes through ``Workers`` (below) and read OUT with ``lines``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio

from tickkit import Kernel, TaskContext, TaskRegistry, hookimpl, task


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("out")
    parser.add_argument("--lease", type=float, default=30.0)
    parser.add_argument("--poll", type=float, default=1.0)
    parser.add_argument("--keep-completed", action="store_true")
    parser.add_argument("--tick", action="store_true")
    parser.add_argument("--open-only", action="store_true")
    args = parser.parse_args()
    anyio.run(run, args)


async def run(args: argparse.Namespace) -> None:
    out = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    pid = os.getpid()

    def note(*words: object) -> None:
        words = (*words, pid, f"{time.time():.3f}")
        os.write(out, (" ".join(str(w) for w in words) + "\n").encode())

    registry = TaskRegistry()

    async def record(ctx: TaskContext) -> None:
        note("ran", ctx.job_id, ctx.attempt)

    async def slow(ctx: TaskContext) -> None:
        note("start", ctx.job_id, ctx.attempt)
        if ctx.attempt == 1:
            await anyio.sleep(3600)
        note("done", ctx.job_id, ctx.attempt)

    async def tick(ctx: TaskContext) -> None:
        note("tick", round(ctx.scheduled_at.timestamp() * 1000), ctx.attempt)

    task(name="record", execute=record, registry=registry)
    task(name="slow", execute=slow, registry=registry)
    if args.tick:
        task(name="tick", schedule="* * * * * *", misfire="all", execute=tick, registry=registry)
    options: dict[str, Any] = {"lease_duration": args.lease, "poll_interval": args.poll}
    if args.keep_completed:
        options["keep_completed"] = True
    if args.open_only:
        kernel = Kernel(args.url, tasks=registry, driver_options=options)
        await kernel.open()
        await kernel.stop()
        note("opened")
        os.close(out)
        return
    ready = args.out + ".ready"

    class AnnounceReady:
        @hookimpl
        def tickkit_kernel_started(self, kernel: Kernel) -> None:
            with open(ready, "w"):
                pass

    kernel = Kernel(
        args.url,
        tasks=registry,
        plugins=[AnnounceReady()],
        shutdown_timeout=5,
        driver_options=options,
    )
    async with anyio.create_task_group() as tg:

        async def stop_on_sigterm() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM) as signals:
                async for _ in signals:
                    kernel.request_stop()
                    return

        tg.start_soon(stop_on_sigterm)
        await kernel.serve()
        tg.cancel_scope.cancel()
    os.close(out)


# --- the test side ----------------------------------------------------------------------------


class Workers:
    """Worker processes on one store URL; stopped (SIGTERM, then SIGKILL) by ``stop_all``."""

    def __init__(self, url: str, tmp: Path) -> None:
        self.url = url
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, label: str, *args: str) -> Path:
        """Start worker ``label``; return its OUT file once it is ready."""
        out = self.tmp / f"{label}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.procs[label] = subprocess.Popen(
            [sys.executable, __file__, self.url, str(out), *args], env=env
        )
        deadline = time.monotonic() + 20
        while not Path(f"{out}.ready").exists():
            assert self.procs[label].poll() is None, f"worker {label} exited at start"
            assert time.monotonic() < deadline, f"worker {label} not ready within 20 s"
            time.sleep(0.02)
        return out

    def kill(self, label: str) -> None:
        proc = self.procs.pop(label)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop_all(self) -> dict[str, int]:
        codes = {}
        for proc in self.procs.values():
            proc.send_signal(signal.SIGTERM)
        for label, proc in self.procs.items():
            try:
                codes[label] = proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[label] = proc.wait(5)
        self.procs.clear()
        return codes


def lines(*paths: Path) -> list[list[str]]:
    """The words of every line of the OUT files (those that exist)."""
    found = []
    for path in paths:
        if path.exists():
            found += [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    return found


if __name__ == "__main__":
    sys.exit(main())
