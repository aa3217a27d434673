"""A bot shard for the SQLite multi-process tests: one kernel on a shared file, real clock.

    python worker.py DB OUT [--lease S] [--poll S] [--keep-completed]

Tasks:
- ``record``: appends ``"ran <job id> <attempt> <pid>"`` to OUT;
- ``slow``: appends ``"start <job id> <attempt> <pid>"``; on its first attempt it then waits
  for an hour (the test kills the process meanwhile), on later attempts it finishes and
  appends ``"done <job id> <attempt> <pid>"``.

When the kernel has started, the worker creates ``OUT + ".ready"``. SIGTERM stops it gracefully.
Each line of OUT is written with one ``os.write`` on a file opened with O_APPEND, so a line is
whole even when the process is killed.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

import anyio

from tickkit import Kernel, TaskContext, TaskRegistry, hookimpl, task
from tickkit.drivers.sqlite import SQLiteDriver


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("db")
    parser.add_argument("out")
    parser.add_argument("--lease", type=float, default=30.0)
    parser.add_argument("--poll", type=float, default=1.0)
    parser.add_argument("--keep-completed", action="store_true")
    args = parser.parse_args()
    anyio.run(run, args)


async def run(args: argparse.Namespace) -> None:
    out = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    pid = os.getpid()

    def note(*words: object) -> None:
        os.write(out, (" ".join(str(w) for w in (*words, pid)) + "\n").encode())

    registry = TaskRegistry()

    async def record(ctx: TaskContext) -> None:
        note("ran", ctx.job_id, ctx.attempt)

    async def slow(ctx: TaskContext) -> None:
        note("start", ctx.job_id, ctx.attempt)
        if ctx.attempt == 1:
            await anyio.sleep(3600)
        note("done", ctx.job_id, ctx.attempt)

    task(name="record", execute=record, registry=registry)
    task(name="slow", execute=slow, registry=registry)
    driver = SQLiteDriver(
        args.db,
        lease_duration=args.lease,
        poll_interval=args.poll,
        keep_completed=args.keep_completed,
    )
    ready = args.out + ".ready"

    class AnnounceReady:
        @hookimpl
        def tickkit_kernel_started(self, kernel: Kernel) -> None:
            with open(ready, "w"):
                pass

    kernel = Kernel(
        driver,
        tasks=registry,
        plugins=[AnnounceReady()],
        shutdown_timeout=5,
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


if __name__ == "__main__":
    sys.exit(main())
