"""One worker of the chaos run (contrib/chaos/chaos.py starts several and SIGKILLs them).

    python contrib/chaos/chaos_worker.py --driver URL --runs DIR [options]

A kernel on the real clock, with three tasks:

- ``chaos_job``: the one-off jobs the producer creates;
- ``chaos_tick``: static, 6-field cron ``* * * * * *`` (every second), misfire ``all``;
- ``chaos_every``: static, an interval of ``--every`` seconds, misfire ``all``.

Every run appends ``start <task> <job id> <scheduled ms> <attempt> <pid> <unix time>`` to
``DIR/runs-<pid>.log`` before its work (a short random sleep) and ``done ...`` after it. Each line
is one ``os.write`` on a file opened with O_APPEND, followed by ``os.fdatasync``: the line is whole
and stored when the task goes on, so a run counts even when the process is killed right after.

When the kernel has started, ``DIR/ready-<pid>`` is created. SIGTERM or SIGINT stops the worker
gracefully; it also stops when its parent (the chaos script) goes away.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

import anyio

from tickkit import Kernel, TaskContext, TaskRegistry, hookimpl, task

#: the names of the tasks; chaos.py reads them from here
JOB = "chaos_job"
TICK = "chaos_tick"
EVERY = "chaos_every"


def registry(record: Any = None, *, work: float = 0.0, every: float = 2.0) -> TaskRegistry:
    """The chaos tasks. ``record(kind, ctx)`` is called before and after a run's work; the
    producer passes None (it only needs the names to create jobs)."""
    reg = TaskRegistry()

    async def run(ctx: TaskContext) -> None:
        if record is None:
            return
        record("start", ctx)
        if work > 0:
            await anyio.sleep(random.uniform(0, work))
        record("done", ctx)

    task(name=JOB, execute=run, registry=reg)
    task(name=TICK, schedule="* * * * * *", misfire="all", execute=run, registry=reg)
    task(
        name=EVERY,
        schedule={"type": "interval", "value": every},
        misfire="all",
        execute=run,
        registry=reg,
    )
    return reg


def driver_options(url: str, lease: float, max_stalled_count: int) -> dict[str, Any]:
    """The driver options of the chaos run: short leases so that killed runs come back soon."""
    if url.startswith("sqlite:"):
        return {"lease_duration": lease, "poll_interval": 0.5}
    if url.startswith(("postgresql:", "postgres:")):
        # wake-ups come through LISTEN/NOTIFY; the poll is a safety net
        return {"lease_duration": lease, "poll_interval": 5.0}
    return {
        "lock_duration": lease,
        "stalled_interval": lease,
        "max_stalled_count": max_stalled_count,
        "poll_interval": 1.0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--driver", required=True, help="store URL (sqlite:///..., redis://... or postgresql://...)"
    )
    parser.add_argument("--runs", required=True, type=Path, help="folder of the run records")
    parser.add_argument("--lease", type=float, default=5.0, help="lease / lock duration (s)")
    parser.add_argument("--max-stalled-count", type=int, default=1)
    parser.add_argument("--work", type=float, default=0.1, help="max random work per run (s)")
    parser.add_argument("--every", type=float, default=2.0, help="interval of chaos_every (s)")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    anyio.run(serve, args)
    return 0


async def serve(args: argparse.Namespace) -> None:
    pid = os.getpid()
    parent = os.getppid()
    fd = os.open(args.runs / f"runs-{pid}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def record(kind: str, ctx: TaskContext) -> None:
        scheduled = round(ctx.scheduled_at.timestamp() * 1000)
        words = (kind, ctx.task.name, ctx.job_id, scheduled, ctx.attempt, pid, f"{time.time():.6f}")
        line = " ".join(str(w) for w in words) + "\n"
        os.write(fd, line.encode())
        os.fdatasync(fd)

    ready = args.runs / f"ready-{pid}"

    class AnnounceReady:
        @hookimpl
        def tickkit_kernel_started(self, kernel: Kernel) -> None:
            ready.touch()

    kernel = Kernel(
        args.driver,
        tasks=registry(record, work=args.work, every=args.every),
        plugins=[AnnounceReady()],
        concurrency=args.concurrency,
        shutdown_timeout=5,
        driver_options=driver_options(args.driver, args.lease, args.max_stalled_count),
    )
    try:
        async with anyio.create_task_group() as tg:

            async def stop_on_signal() -> None:
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for _ in signals:
                        kernel.request_stop()
                        return

            async def stop_without_parent() -> None:
                # bounded by the parent's life: an orphaned worker stops by itself
                for _ in range(10**7):  # a time limit of its own: about 58 days
                    if os.getppid() != parent:
                        kernel.request_stop()
                        return
                    await anyio.sleep(0.5)

            tg.start_soon(stop_on_signal)
            tg.start_soon(stop_without_parent)
            await kernel.serve()
            tg.cancel_scope.cancel()
    finally:
        os.close(fd)


if __name__ == "__main__":
    sys.exit(main())
