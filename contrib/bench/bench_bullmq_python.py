"""The official Python ``bullmq`` package's side of bench_bullmq.py.

Runs only in ``contrib/bench/.venv-bullmq`` (bench_bullmq.py creates it): that package pins
exact versions that conflict with tickkit's. ``python bench_bullmq_python.py '<json>'`` adds
``n`` no-op jobs one at a time, then processes them with one Worker at ``concurrency``, and
prints JSON like the Node script.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any


async def main(o: dict[str, Any]) -> dict[str, float]:
    from bullmq import Queue, Worker

    opts = {"connection": o["url"]}
    queue = Queue(o["queue"], opts)
    t = time.perf_counter()
    for i in range(o["n"]):
        await queue.add("noop", {"i": i}, {"removeOnComplete": 1000})
    create_seconds = time.perf_counter() - t
    done = 0
    finished = asyncio.Event()

    async def process(job: Any, token: Any) -> None:
        nonlocal done
        done += 1
        if done == o["n"]:
            finished.set()

    t = time.perf_counter()
    worker = Worker(o["queue"], process, {**opts, "concurrency": o["concurrency"]})
    try:
        await asyncio.wait_for(finished.wait(), 60)
    except asyncio.TimeoutError:
        sys.exit(f"Python bullmq ran {done} of {o['n']} jobs in 60 s")
    # the last job's completion is recorded after the processor returns
    while True:  # Redis offers no event for this: poll it
        counts = await queue.getJobCounts("completed", "active", "wait")
        if not counts["active"] and not counts["wait"]:
            break
        await asyncio.sleep(0.001)
    run_seconds = time.perf_counter() - t
    try:  # its close() can hang on the blocking connection: do not let it stall the benchmark
        await asyncio.wait_for(worker.close(), 10)
        await asyncio.wait_for(queue.close(), 10)
    except asyncio.TimeoutError:
        print("warning: Python bullmq did not close in 10 s", file=sys.stderr)
    return {"creates_per_s": o["n"] / create_seconds, "jobs_per_s": o["n"] / run_seconds}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(json.loads(sys.argv[1])))))
