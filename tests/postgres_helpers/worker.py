"""A bot shard for the PostgreSQL multi-process tests: one kernel on a shared store, real clock.

    python worker.py URL SCHEMA OUT [--lease S] [--poll S] [--open-only]

Tasks: ``record`` appends ``"ran <job id> <attempt> <pid>"`` to OUT; ``slow`` appends
``"start ..."``, waits an hour on its first attempt (the test kills the process), and appends
``"done ..."`` on later ones. When the kernel has started, the worker creates
``OUT + ".ready"``. SIGTERM stops it gracefully. ``--open-only``: start the driver (create or
migrate the schema), write ``"opened <pid>"`` and exit.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

import anyio

from tickkit import Kernel, TaskContext, TaskRegistry, hookimpl, task
from tickkit.drivers.postgres import PostgresDriver


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("schema")
    parser.add_argument("out")
    parser.add_argument("--lease", type=float, default=30.0)
    parser.add_argument("--poll", type=float, default=30.0)
    parser.add_argument("--open-only", action="store_true")
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
    driver = PostgresDriver(
        args.url, schema=args.schema, lease_duration=args.lease, poll_interval=args.poll
    )
    if args.open_only:
        kernel = Kernel(driver, tasks=registry)
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

    kernel = Kernel(driver, tasks=registry, plugins=[AnnounceReady()], shutdown_timeout=5)
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
