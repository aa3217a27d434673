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
import signal
from datetime import timedelta

import anyio

from tickkit import Clock, Kernel, TaskContext, TaskRegistry, task

tasks = TaskRegistry()


@task(name="tick", schedule={"type": "interval", "value": "1s"}, registry=tasks)
async def tick(ctx: TaskContext) -> None:
    print(f"tick at {ctx.scheduled_at:%H:%M:%S}", flush=True)


@task(name="say", registry=tasks)
async def say(ctx: TaskContext) -> None:
    print(f"say: {ctx.data['text']}", flush=True)


async def main(seconds: float = 6.0, *, clock: Clock | None = None) -> bool:
    """Run the demo for ``seconds`` by the kernel's clock, or until SIGINT/SIGTERM.

    Returns True when a signal stopped it. The signals are handled here (not left to raise
    KeyboardInterrupt at some arbitrary await), so shutdown is always the kernel's graceful one.
    """
    interrupted = False
    async with Kernel("memory://", tasks=tasks, clock=clock) as kernel:
        print(f"service started; stopping in {seconds:g}s (Ctrl-C stops it sooner)", flush=True)
        await kernel.create_task("say", {"text": "a dynamic job, 2s after start"}, "2s")
        async with anyio.create_task_group() as tg:

            async def on_signal() -> None:
                nonlocal interrupted
                try:
                    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                        async for _ in signals:
                            interrupted = True
                            tg.cancel_scope.cancel()
                except NotImplementedError:  # Windows: Ctrl-C raises KeyboardInterrupt instead
                    await anyio.sleep_forever()

            tg.start_soon(on_signal)
            await kernel.clock.sleep_until(kernel.clock.now() + timedelta(seconds=seconds))
            tg.cancel_scope.cancel()
    print("interrupted: service stopped" if interrupted else "service stopped", flush=True)
    return interrupted


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="how long the demo runs (6)")
    args = parser.parse_args()
    try:
        asyncio.run(main(args.seconds))
    except KeyboardInterrupt:
        print("interrupted: service stopped", flush=True)
