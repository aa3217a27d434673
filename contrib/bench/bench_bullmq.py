"""BullMQ driver benchmark: tickkit's worker against Node BullMQ 6's and the official Python
``bullmq`` package's, on the same Redis in one run.

For each implementation and each concurrency (1 and 16): ``n`` no-op jobs are created one at a
time (creates/s), then one worker processes them (jobs/s, from the worker's start until the last
job is recorded as completed). Every run uses a new queue; medians over the runs are printed
with the ratios tickkit / other.

- tickkit: ``Kernel(BullMQDriver(...), concurrency=c)`` in this process, jobs made with
  ``kernel.create_task``.
- Node: contrib/bench/bench_bullmq_node.js, with BullMQ from contrib/bullmq-interop
  (``npm ci`` there first).
- Python ``bullmq``: contrib/bench/bench_bullmq_python.py in ``contrib/bench/.venv-bullmq``,
  created here on first use (``--no-python-bullmq`` leaves it out). It is never installed in
  tickkit's environment: its exact pins conflict with tickkit's.

All use ``removeOnComplete: 1000`` (tickkit's default retention). Redis: a redis-server started
on a free port (or ``--redis-url``). Run from the repository root::

    .venv/bin/python contrib/bench/bench_bullmq.py            # n=2000, 3 runs (about 1-2 min)
    .venv/bin/python contrib/bench/bench_bullmq.py --quick    # n=500, 1 run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Row, machine_summary, median, print_table, run_json_subprocess

from tickkit import Kernel, TaskContext, TaskRegistry, task
from tickkit.drivers.bullmq import BullMQDriver

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-bullmq"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(workdir: str) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
            "--maxmemory-policy",
            "noeviction",
        ],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return f"redis://127.0.0.1:{port}/0", proc
        except OSError:
            time.sleep(0.02)
    proc.terminate()
    raise RuntimeError(f"redis-server did not start on port {port}")


async def tickkit_run(url: str, n: int, concurrency: int) -> dict[str, float]:
    done = 0
    finished = asyncio.Event()
    reg = TaskRegistry()

    async def noop(ctx: TaskContext) -> None:
        nonlocal done
        done += 1
        if done == n:
            finished.set()

    task(name="noop", execute=noop, registry=reg)
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    kernel = Kernel(BullMQDriver(url, queue=queue), tasks=reg, concurrency=concurrency)
    await kernel.open()
    t = time.perf_counter()
    for i in range(n):
        await kernel.create_task("noop", {"i": i})
    creates = n / (time.perf_counter() - t)
    t = time.perf_counter()
    await kernel.start()
    await finished.wait()
    driver = kernel.driver
    assert isinstance(driver, BullMQDriver)
    # the run counts once the last outcome is recorded, as for the others
    while True:  # Redis offers no event for this: poll it, like the Python bullmq side
        counts = await driver.queue_counts()
        if not counts["active"] and not counts["wait"]:
            break
        await asyncio.sleep(0.001)
    jobs = n / (time.perf_counter() - t)
    await kernel.stop()
    return {"creates_per_s": creates, "jobs_per_s": jobs}


def ensure_python_bullmq() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "bullmq"], check=True)
    return python


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="jobs per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="n=500, one run")
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--no-python-bullmq", action="store_true")
    args = parser.parse_args()
    n, runs = (500, 1) if args.quick else (args.n, args.runs)
    node = shutil.which("node")
    node_ok = node is not None and (HERE.parent / "bullmq-interop" / "node_modules").is_dir()
    if not node_ok:
        print("Node or contrib/bullmq-interop/node_modules missing: Node column left out")
    python = None if args.no_python_bullmq else ensure_python_bullmq()
    with tempfile.TemporaryDirectory() as workdir:
        proc = None
        url = args.redis_url
        if url is None:
            url, proc = start_redis(workdir)
        try:
            labels = ["tickkit", "Node BullMQ", "Python bullmq"]
            results: dict[tuple[str, int], dict[str, list[float]]] = {}
            for concurrency in (1, 16):
                for _ in range(runs):
                    measured: dict[str, Any] = {
                        "tickkit": asyncio.run(tickkit_run(url, n, concurrency))
                    }
                    opts = {"url": url, "n": n, "concurrency": concurrency}
                    if node_ok:
                        opts["queue"] = f"bench-{uuid.uuid4().hex[:8]}"
                        measured["Node BullMQ"] = run_json_subprocess(
                            [str(node), str(HERE / "bench_bullmq_node.js"), json.dumps(opts)]
                        )
                    if python is not None:
                        opts["queue"] = f"bench-{uuid.uuid4().hex[:8]}"
                        try:
                            measured["Python bullmq"] = run_json_subprocess(
                                [
                                    str(python),
                                    str(HERE / "bench_bullmq_python.py"),
                                    json.dumps(opts),
                                ],
                                timeout=180,
                            )
                        except (RuntimeError, subprocess.TimeoutExpired) as exc:
                            print(f"Python bullmq run left out: {exc}", file=sys.stderr)
                    for label, values in measured.items():
                        slot = results.setdefault((label, concurrency), {})
                        for key, value in values.items():
                            slot.setdefault(key, []).append(float(value))
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(10)

    def value(label: str, concurrency: int, key: str) -> float | None:
        found = results.get((label, concurrency), {}).get(key)
        return median(found) if found else None

    rows = [
        Row(
            f"jobs/s, no-op, concurrency {c}",
            "jobs/s",
            {label: value(label, c, "jobs_per_s") for label in labels},
            higher_is_better=True,
        )
        for c in (1, 16)
    ]
    rows.append(
        Row(
            "creates/s, one at a time",
            "jobs/s",
            {
                label: median(
                    [
                        *results.get((label, 1), {}).get("creates_per_s", []),
                        *results.get((label, 16), {}).get("creates_per_s", []),
                    ]
                )
                if (label, 1) in results
                else None
                for label in labels
            },
            higher_is_better=True,
        )
    )
    print_table(
        f"BullMQ driver: {n} jobs per run, median of {runs} run(s) per concurrency",
        rows,
        labels=labels,
        notes=[machine_summary(), "same Redis for all; removeOnComplete 1000 for all"],
    )


if __name__ == "__main__":
    main()
