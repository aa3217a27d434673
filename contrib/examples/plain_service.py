"""A plain asyncio service with tickkit and no bot: a short demo that stops by itself.

    python contrib/examples/plain_service.py            # runs 6 seconds, or until Ctrl-C
    python contrib/examples/plain_service.py --seconds 20

It runs an interval task every second and a dynamic job two seconds after start, then shuts the
kernel down gracefully. Any asyncio (or trio) program embeds tickkit the same way:
``async with Kernel(...)`` around the part of the program that runs tasks.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import timedelta

from tickkit import Clock, Kernel, TaskContext, TaskRegistry, task

tasks = TaskRegistry()


@task(name="tick", schedule={"type": "interval", "value": "1s"}, registry=tasks)
async def tick(ctx: TaskContext) -> None:
    print(f"tick at {ctx.scheduled_at:%H:%M:%S}", flush=True)


@task(name="say", registry=tasks)
async def say(ctx: TaskContext) -> None:
    print(f"say: {ctx.data['text']}", flush=True)


async def main(seconds: float = 6.0, *, clock: Clock | None = None) -> None:
    """Run the demo for ``seconds`` by the kernel's clock."""
    async with Kernel("memory://", tasks=tasks, clock=clock) as kernel:
        print(f"service started; stopping in {seconds:g}s (Ctrl-C stops it sooner)", flush=True)
        await kernel.create_task("say", {"text": "a dynamic job, 2s after start"}, "2s")
        await kernel.clock.sleep_until(kernel.clock.now() + timedelta(seconds=seconds))
    print("service stopped", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="how long the demo runs (6)")
    args = parser.parse_args()
    try:
        asyncio.run(main(args.seconds))
    except KeyboardInterrupt:
        print("interrupted: service stopped", flush=True)
