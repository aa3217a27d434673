"""Interop with real Node BullMQ 6 (contrib/bullmq-interop), both directions.

These run on the wall clock (Node reads its own clock), so they wait on conditions with
bounded timeouts. Run as a module (``python -m tests.test_bullmq_interop worker ...`` from the
repository root) this module is also the tickkit worker process of the multi-process test.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import shutil
import subprocess
import sys
import uuid
from collections.abc import Awaitable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from opentelemetry import trace

from tickkit import Kernel, TaskContext, TaskRegistry, task
from tickkit.drivers.bullmq import BullMQDriver

from .waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent
INTEROP = ROOT / "contrib" / "bullmq-interop"

pytestmark = [pytest.mark.interop, pytest.mark.redis, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary, with BullMQ installed in contrib/bullmq-interop."""
    found = shutil.which("node")
    if found is None or not (INTEROP / "node_modules" / "bullmq").is_dir():
        message = "Node or contrib/bullmq-interop/node_modules is missing (run npm ci there)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}: CI needs them", pytrace=False)
        pytest.skip(message)
    return found


def run_node(node: str, command: str, options: dict[str, Any], timeout: float = 60) -> Any:
    done = subprocess.run(
        [node, "bullmq.js", command, json.dumps(options)],
        cwd=INTEROP,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"node {command} failed: {done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def registry(runs: list[tuple[str, Any, int, str]]) -> TaskRegistry:
    reg = TaskRegistry()

    async def record(ctx: TaskContext) -> None:
        runs.append((ctx.task.name, ctx.data, ctx.attempt, ctx.job.meta.get("bullmq_job_id", "")))

    task(name="record", execute=record, registry=reg)
    task(name="flaky", execute=record, retries=2, backoff=0.1, registry=reg)
    task(name="tick", execute=record, registry=reg)
    return reg


def comparable(counts: dict[str, int]) -> dict[str, int]:
    keys = ("wait", "active", "paused", "delayed", "prioritized", "completed", "failed")
    return {k: int(counts.get(k, 0)) for k in keys}


@pytest.mark.slow
async def test_tickkit_creates_node_processes(node: str, redis_url: str) -> None:
    queue = f"interop-{uuid.uuid4().hex[:8]}"
    runs: list[Any] = []
    driver = BullMQDriver(redis_url, queue=queue)
    kernel = Kernel(driver, tasks=registry(runs))
    await kernel.open()  # tickkit only creates here: Node's worker runs everything
    try:
        now_id = await kernel.create_task("record", {"n": 1})
        later_id = await kernel.create_task("record", {"n": 2}, timedelta(seconds=1))
        flaky_id = await kernel.create_task("flaky", {"failTimes": 2})
        cron_id = await kernel.create_task("tick", {"k": 1}, "* * * * * *")
        out = await asyncio.to_thread(
            run_node,
            node,
            "worker",
            {
                "url": redis_url,
                "queue": queue,
                "prefix": "bull",
                "expectIds": [now_id, later_id, flaky_id],
                "expectPrefixes": {f"repeat:{cron_id}:": 2},
                "timeoutMs": 20000,
            },
        )
        by_id: dict[str, list[dict[str, Any]]] = {}
        for p in out["processed"]:
            by_id.setdefault(p["id"], []).append(p)
        assert by_id[now_id] == [
            {"id": now_id, "name": "record", "data": {"n": 1}, "attemptsMade": 0}
        ]
        assert by_id[later_id][0]["data"] == {"n": 2}
        assert [p["attemptsMade"] for p in by_id[flaky_id]] == [0, 1, 2]
        ticks = [p for p in out["processed"] if p["id"].startswith(f"repeat:{cron_id}:")]
        assert len(ticks) >= 2
        assert all(p["name"] == "tick" and p["data"] == {"k": 1} for p in ticks)
        assert {now_id, later_id, flaky_id} <= set(out["completed"])
        # tickkit's view of what Node did
        flaky = await kernel.get_task(flaky_id)
        assert flaky is not None and flaky.state.value == "completed" and flaky.runs == 3
        assert await kernel.delete_task(cron_id)
        node_counts = run_node(node, "counts", {"url": redis_url, "queue": queue, "prefix": "bull"})
        assert comparable(node_counts) == comparable(await driver.queue_counts())
        assert node_counts["completed"] >= 5
    finally:
        await kernel.stop()


async def test_node_creates_tickkit_runs(node: str, redis_url: str) -> None:
    queue = f"interop-{uuid.uuid4().hex[:8]}"
    runs: list[Any] = []
    ids = run_node(
        node,
        "produce",
        {
            "url": redis_url,
            "queue": queue,
            "prefix": "bull",
            "jobs": [
                {"key": "now", "name": "record", "data": {"n": 1}},
                {"key": "delayed", "name": "record", "data": {"n": 2}, "opts": {"delay": 800}},
                {"key": "prio", "name": "record", "data": {"n": 3}, "opts": {"priority": 5}},
                {"key": "nobody", "name": "no-such-task", "data": {"n": 5}},
            ],
            "schedulers": [
                {
                    "id": "node-every",
                    "repeat": {"every": 700},
                    "template": {"name": "record", "data": {"n": 4}},
                },
                {
                    "id": "node-cron",
                    "repeat": {"pattern": "* * * * * *", "tz": "Europe/Paris"},
                    "template": {"name": "record", "data": {"n": 6}},
                },
            ],
        },
    )
    driver = BullMQDriver(redis_url, queue=queue)
    async with Kernel(driver, tasks=registry(runs)) as kernel:
        data = lambda: [r[1] for r in runs]  # noqa: E731
        await wait_for(
            lambda: (
                all({"n": n} in data() for n in (1, 2, 3))
                and data().count({"n": 4}) >= 2
                and data().count({"n": 6}) >= 2
            ),
            20,
            "tickkit to run Node's jobs",
        )
        scheduler = await kernel.get_task("node-every")
        assert scheduler is not None
        assert scheduler.schedule == {"type": "interval", "value": 0.7}
        assert scheduler.static is False
        cron = await kernel.get_task("node-cron")
        assert cron is not None
        assert cron.schedule == {"type": "cron", "value": "* * * * * *", "timezone": "Europe/Paris"}
        assert await kernel.delete_task("node-every")
        assert await kernel.delete_task("node-cron")
        counts = await driver.queue_counts()
        while counts["failed"] < 1 and counts["wait"] + counts["active"] > 0:
            await asyncio.sleep(0.02)
            counts = await driver.queue_counts()
        nobody = await kernel.get_task(ids["nobody"])
        assert nobody is not None and nobody.state.value == "failed"
        assert "no task named 'no-such-task'" in (nobody.last_error or "")
    once = [r for r in runs if r[1] in ({"n": 1}, {"n": 2}, {"n": 3})]
    assert sorted(r[1]["n"] for r in once) == [1, 2, 3]
    assert {r[3] for r in once} == {ids["now"], ids["delayed"], ids["prio"]}
    node_counts = run_node(node, "counts", {"url": redis_url, "queue": queue, "prefix": "bull"})
    async with Kernel(BullMQDriver(redis_url, queue=queue), tasks=TaskRegistry()) as viewer:
        assert isinstance(viewer.driver, BullMQDriver)
        assert comparable(node_counts) == comparable(await viewer.driver.queue_counts())
    assert node_counts["failed"] == 1 and node_counts["active"] == 0


async def test_bad_data_fails_clearly_and_worker_goes_on(node: str, redis_url: str) -> None:
    queue = f"interop-{uuid.uuid4().hex[:8]}"
    runs: list[Any] = []
    driver = BullMQDriver(redis_url, queue=queue)
    async with Kernel(driver, tasks=registry(runs)) as kernel:
        # a producer that wrote data that is not JSON
        raw = driver._redis  # the driver's own client: write the job as a careless producer
        await raw.hset(
            f"bull:{queue}:bad",
            mapping={"name": "record", "data": "{not json", "opts": "{}", "timestamp": 0},
        )
        await raw.lpush(f"bull:{queue}:wait", "bad")
        good = await kernel.create_task("record", {"n": 1})
        await wait_for(lambda: any(r[3] == good for r in runs), 10, "the good job")
        bad = await kernel.get_task("bad")
        assert bad is not None and bad.state.value == "failed"
        assert "job data is not JSON" in (bad.last_error or "")
    assert [r[3] for r in runs] == [good]


async def test_a_job_promoted_from_node_runs_now_with_a_sane_scheduled_at(
    node: str, redis_url: str
) -> None:
    """Node's ``job.promote()`` (what dashboards call) clears only the hash's ``delay``: the
    job runs now, and its scheduled time is now, not an hour ahead."""
    queue = f"interop-{uuid.uuid4().hex[:8]}"
    seen: dict[str, tuple[datetime, datetime]] = {}
    reg = TaskRegistry()

    async def record(ctx: TaskContext) -> None:
        seen[ctx.job_id] = (ctx.scheduled_at, datetime.now(timezone.utc))

    task(name="record", execute=record, registry=reg)
    ids = run_node(
        node,
        "produce",
        {
            "url": redis_url,
            "queue": queue,
            "prefix": "bull",
            "jobs": [
                {"key": "node", "name": "record", "data": {"n": 1}, "opts": {"delay": 3600000}}
            ],
        },
    )
    async with Kernel(BullMQDriver(redis_url, queue=queue), tasks=reg) as kernel:
        mine = await kernel.create_task("record", {"n": 2}, timedelta(hours=1))
        await asyncio.sleep(0.3)
        assert seen == {}  # both wait an hour
        promoted = [ids["node"], mine]
        await asyncio.to_thread(
            run_node,
            node,
            "promote",
            {"url": redis_url, "queue": queue, "prefix": "bull", "ids": promoted},
        )
        await wait_for(lambda: set(seen) == set(promoted), 10, "the promoted jobs to run")
    for job_id, (scheduled_at, ran_at) in seen.items():
        lateness = (ran_at - scheduled_at).total_seconds()
        assert 0 <= lateness < 5, (job_id, scheduled_at, ran_at)


def _telemetry() -> tuple[Any, Any, Any]:
    """(plugin, tracer, exporter): tickkit's OpenTelemetry plugin on an SDK tracer provider
    that keeps spans in memory; a run continues its creator's trace (relation "child")."""
    pytest.importorskip("opentelemetry.sdk", reason="the otel extra and opentelemetry-sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from tickkit.plugins.otel import OpenTelemetryPlugin

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    plugin = OpenTelemetryPlugin(tracer_provider=provider, relation="child")
    return plugin, provider.get_tracer("interop-test"), exporter


async def test_a_trace_from_a_node_producer_continues_in_tickkit(node: str, redis_url: str) -> None:
    """Node adds a job with BullMQ's telemetry (bullmq-otel): the job's
    ``opts.telemetry.metadata`` holds the producer span's context; tickkit's run span is its
    child (same trace, parent span id = Node's producer span)."""
    queue = f"interop-{uuid.uuid4().hex[:8]}"
    plugin, _tracer, exporter = _telemetry()
    out = run_node(
        node,
        "otel-produce",
        {
            "url": redis_url,
            "queue": queue,
            "prefix": "bull",
            "jobs": [{"key": "a", "name": "record", "data": {"n": 1}}],
        },
    )
    job_id = out["ids"]["a"]
    root = next(s for s in out["spans"] if s["name"] == "node-root")
    producer = next(s for s in out["spans"] if s["name"].startswith("add "))
    assert producer["traceId"] == root["traceId"] and producer["parentSpanId"] == root["spanId"]
    runs: list[Any] = []
    async with Kernel(
        BullMQDriver(redis_url, queue=queue), tasks=registry(runs), plugins=[plugin]
    ) as kernel:
        await wait_for(lambda: len(runs) == 1, 10, "the Node job to run")
        view = await kernel.get_task(job_id)
    assert view is not None and view.meta["traceparent"].split("-")[2] == producer["spanId"]
    # the run's CONSUMER span ("process <queue>", messaging conventions) for this job
    (span,) = [
        s
        for s in exporter.get_finished_spans()
        if s.name == f"process {queue}" and s.attributes.get("messaging.message.id") == job_id
    ]
    assert span.parent is not None
    assert format(span.parent.span_id, "016x") == producer["spanId"]
    assert format(span.context.trace_id, "032x") == root["traceId"]


async def test_a_trace_from_tickkit_continues_in_a_node_worker(node: str, redis_url: str) -> None:
    """tickkit creates a job inside a span: the job's PRODUCER span ("create <queue>", a child
    of the caller's span) goes into BullMQ's trace-context option, and Node's worker
    (bullmq-otel) processes the job as that span's child, in the caller's trace."""
    queue = f"interop-{uuid.uuid4().hex[:8]}"
    plugin, tracer, exporter = _telemetry()
    driver = BullMQDriver(redis_url, queue=queue)
    kernel = Kernel(driver, tasks=registry([]), plugins=[plugin])
    await kernel.open()  # tickkit only creates here: Node's worker runs the job
    try:
        with tracer.start_as_current_span("py-root") as root:
            job_id = await kernel.create_task("record", {"n": 1})
            cron_id = await kernel.create_task("tick", {"k": 1}, "* * * * * *")
        # the first PRODUCER span is the one-off job's (the cron job's comes second); a
        # driver-assigned id is not known yet when the span is made, so it carries none
        create, create_cron = (
            s for s in exporter.get_finished_spans() if s.kind is trace.SpanKind.PRODUCER
        )
        assert create.parent is not None
        assert create.parent.span_id == root.get_span_context().span_id
        opts = json.loads(await driver._redis.hget(f"bull:{queue}:{job_id}", "opts"))
        assert json.loads(opts["tm"])["traceparent"].split("-")[2] == format(
            create.context.span_id, "016x"
        )
        out = await asyncio.to_thread(
            run_node,
            node,
            "otel-worker",
            {
                "url": redis_url,
                "queue": queue,
                "prefix": "bull",
                "expectIds": [job_id],
                "timeoutMs": 15000,
            },
        )
        await kernel.delete_task(cron_id)
    finally:
        await kernel.stop()
    assert job_id in out["completed"]
    trace_id = format(root.get_span_context().trace_id, "032x")
    span_id = format(create.context.span_id, "016x")
    process = [s for s in out["spans"] if s["name"].startswith("process ")]
    mine = [s for s in process if s["traceId"] == trace_id]
    assert mine, out["spans"]
    # the one-off job's run is a child of its create span; runs of the scheduler's jobs (if a
    # tick came while Node's worker ran) are children of the cron job's create span
    cron_span_id = format(create_cron.context.span_id, "016x")
    assert [s for s in mine if s["parentSpanId"] == span_id], out["spans"]
    assert all(s["parentSpanId"] in (span_id, cron_span_id) for s in mine), out["spans"]
    # inside the processor, the active span is BullMQ's consumer span of that trace
    assert out["seen"][job_id]["traceId"] == trace_id
    # the scheduler's jobs carry the context too (from the template written by tickkit)
    ticks = [s for s in process if s["spanId"] != mine[0]["spanId"]]
    assert all(s["traceId"] == trace_id for s in ticks)


def _worker_main(url: str, queue: str, out: str, seconds: float) -> None:
    """A tickkit worker process: run `record` jobs for a while, then write the job ids it ran."""
    ran: list[str] = []

    async def main() -> None:
        reg = TaskRegistry()

        async def record(ctx: TaskContext) -> None:
            ran.append(ctx.job_id)
            await asyncio.sleep(0.01)  # a little work, so that no one worker takes everything

        task(name="record", execute=record, registry=reg)
        async with Kernel(BullMQDriver(url, queue=queue), tasks=reg, concurrency=8):
            await asyncio.sleep(seconds)

    asyncio.run(main())
    Path(out).write_text("\n".join(ran), encoding="utf-8")


async def count_workers(url: str, queue: str) -> int:
    """Connections named like BullMQ's workers on ``queue`` (what Queue.getWorkers() lists)."""
    name = f"bull:{base64.b64encode(queue.encode()).decode()}"
    client = aioredis.from_url(url, decode_responses=True)
    try:
        return sum(1 for c in await client.client_list() if c.get("name") == name)
    finally:
        await client.aclose()


async def _at_least(count: Awaitable[int], n: int) -> bool:
    return (await count) >= n


def spawn_workers(url: str, queue: str, logs: list[Path], seconds: float) -> list[Any]:
    """tickkit worker processes: this module run with ``-m`` from the repository root, so that
    its relative imports resolve."""
    module = [sys.executable, "-m", "tests.test_bullmq_interop", "worker"]
    return [
        subprocess.Popen([*module, url, queue, str(log), str(seconds)], cwd=ROOT) for log in logs
    ]


@pytest.mark.slow
async def test_many_tickkit_processes_and_a_node_worker_run_each_job_once(
    node: str, redis_url: str, tmp_path: Path
) -> None:
    queue = f"interop-{uuid.uuid4().hex[:8]}"
    total = 300
    logs = [tmp_path / f"w{i}.log" for i in range(3)]
    procs = spawn_workers(redis_url, queue, logs, 12)
    driver = BullMQDriver(redis_url, queue=queue)
    kernel = Kernel(driver, tasks=registry([]))
    await kernel.open()
    try:
        # the queue is paused until every worker waits on it, so that each can take part
        await driver.pause_queue()
        ids = [await kernel.create_task("record", {"i": i}) for i in range(total)]
        node_run = asyncio.create_task(
            asyncio.to_thread(
                run_node,
                node,
                "worker",
                {
                    "url": redis_url,
                    "queue": queue,
                    "prefix": "bull",
                    "expectIds": ids,
                    "timeoutMs": 25000,
                },
            )
        )
        # every BullMQ worker (Node's and the 3 processes') names its blocking connection
        # after the queue, as Queue.getWorkers() expects; this kernel only manages jobs
        await wait_for(lambda: _at_least(count_workers(redis_url, queue), 4), 20, "the workers")
        await driver.resume_queue()
        out = await node_run
    finally:
        await kernel.stop()
        for p in procs:
            p.wait(30)
    ran = [p["id"] for p in out["processed"]]
    for log in logs:
        ran += log.read_text().split()
    assert sorted(ran, key=int) == sorted(ids, key=int)  # every job once, none twice
    assert out["processed"], "the Node worker took part"


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    _worker_main(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]))


async def test_counts_and_pages_of_node_jobs_are_the_scan(node: str, redis_url: str) -> None:
    """Jobs Node BullMQ added and ran (wait, delayed, prioritized, completed, failed, a job
    scheduler's occurrences): count_jobs, count_by_name and list_jobs pages, read without the
    scan, answer what the scan answers."""
    from .test_bullmq_counts import assert_counts_as_the_scan, assert_pages_as_the_scan

    queue = f"census-{uuid.uuid4().hex[:8]}"
    base = {"url": redis_url, "queue": queue, "prefix": "bull"}
    ran = [
        {"key": f"ok{i}", "name": "record", "data": {"n": i}, "opts": {"attempts": 1}}
        for i in range(4)
    ] + [
        {"key": "bad", "name": "flaky", "data": {"failTimes": 5}, "opts": {"attempts": 1}},
        {"key": "prio", "name": "record", "data": {"n": 9}, "opts": {"priority": 3}},
    ]
    produced = run_node(
        node,
        "produce",
        {
            **base,
            "jobs": ran,
            "schedulers": [
                {
                    "id": "node-every",
                    "repeat": {"every": 400},
                    "template": {"name": "tick", "data": {"s": 1}},
                }
            ],
        },
    )
    run_node(
        node,
        "worker",
        {**base, "expectIds": [produced[j["key"]] for j in ran[:4]], "timeoutMs": 15000},
    )
    # then jobs nobody has run yet: in wait, delayed, prioritized
    run_node(
        node,
        "produce",
        {
            **base,
            "jobs": [
                {"key": "later", "name": "record", "data": {"n": 20}, "opts": {"delay": 3600000}},
                {"key": "now", "name": "tick", "data": {"n": 21}},
                {"key": "prio2", "name": "record", "data": {"n": 22}, "opts": {"priority": 2}},
            ],
        },
    )
    driver = BullMQDriver(redis_url, queue=queue)
    kernel = Kernel(driver, tasks=registry([]))
    await kernel.open()
    try:
        states = {job.state.value for job in await driver._all_jobs()}
        assert {"completed", "failed", "scheduled"} <= states, states
        await assert_counts_as_the_scan(driver)
        await assert_pages_as_the_scan(driver, random.Random(7))
    finally:
        await kernel.stop()
