"""The OpenTelemetry plugin, on a real kernel with the memory driver and a virtual clock, read
through the SDK's in-memory span exporter and metric reader."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tickkit import UTC, Kernel, PluginError, TaskContext, TaskRegistry, task
from tickkit.drivers.memory import MemoryDriver
from tickkit.plugins.otel import OpenTelemetryPlugin
from tickkit.testing import VirtualClock

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=UTC)
#: the SDK applies a histogram's bucket advice from 1.30 on (older ones use their defaults)
SDK_TAKES_ADVICE = tuple(
    int(part) for part in importlib.metadata.version("opentelemetry-sdk").split(".")[:2]
) >= (1, 30)


class Telemetry:
    """An SDK tracer provider and meter provider writing to memory, and the plugin on them."""

    def __init__(self, relation: str = "link") -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.plugin = OpenTelemetryPlugin(
            tracer_provider=self.tracer_provider,
            meter_provider=self.meter_provider,
            relation=relation,
        )
        self.tracer = self.tracer_provider.get_tracer("tests")

    def finished(self, name: str | None = None) -> list[ReadableSpan]:
        spans = list(self.spans.get_finished_spans())
        return [s for s in spans if name is None or s.name == name]

    def points(self, metric: str) -> dict[frozenset[tuple[str, Any]], Any]:
        """The data points of ``metric`` by attribute set."""
        found: dict[frozenset[tuple[str, Any]], Any] = {}
        data = self.reader.get_metrics_data()
        if data is None:
            return found
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name == metric:
                        for p in m.data.data_points:
                            found[frozenset((p.attributes or {}).items())] = p
        return found

    def point(self, metric: str, **attributes: str) -> Any:
        key = frozenset((f"tickkit.{k}", v) for k, v in attributes.items())
        return self.points(metric).get(key)


def make_tasks() -> TaskRegistry:
    registry = TaskRegistry()

    async def ok(ctx: TaskContext) -> str:
        await ctx.kernel.clock.sleep(2)
        return "done"

    async def flaky(ctx: TaskContext) -> None:
        await ctx.kernel.clock.sleep(1)
        if ctx.attempt == 1:
            raise RuntimeError("boom on attempt 1")

    async def slow(ctx: TaskContext) -> None:
        await ctx.kernel.clock.sleep(10)

    async def never(ctx: TaskContext) -> None:
        raise AssertionError("prepare returned False: execute must not run")

    async def spawner(ctx: TaskContext) -> str:
        return await ctx.kernel.create_task("ok", None, timedelta(seconds=30))

    task(name="ok", execute=ok, registry=registry)
    task(name="flaky", execute=flaky, retries=1, backoff=5, registry=registry)
    task(name="slow", execute=slow, timeout=3, registry=registry)
    task(name="skipper", execute=never, prepare=lambda ctx: False, registry=registry)
    task(name="punctual", execute=ok, misfire="skip", registry=registry)
    task(name="spawner", execute=spawner, registry=registry)
    return registry


@pytest.fixture
def tel() -> Telemetry:
    return Telemetry()


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(T0)


@pytest.fixture
def kernel_for(clock: VirtualClock) -> Callable[..., Any]:
    @asynccontextmanager
    async def opener(plugin: object, **kw: Any) -> AsyncIterator[Kernel]:
        kernel = Kernel(
            kw.pop("driver", None) or MemoryDriver(keep_completed=True),
            tasks=make_tasks(),
            clock=clock,
            plugins=[plugin],
            entry_points=True,
            **kw,
        )
        async with kernel:
            yield kernel

    return opener


def _ns(dt: datetime) -> int:
    return int((dt - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()) * 10**9


async def test_success_span_and_metrics(
    tel: Telemetry, clock: VirtualClock, kernel_for: Any
) -> None:
    async with kernel_for(tel.plugin) as k:
        job_id = await k.create_task("ok", None, T0 + timedelta(seconds=10))
        # the kernel was suspended: the run starts 15 s after its time
        await clock.jump(25)
        await clock.advance(2)
    [span] = tel.finished("process ok")
    assert span.kind is SpanKind.CONSUMER
    # its trace starts at the job's creation: a root PRODUCER span the run links to
    [create] = tel.finished("create ok")
    assert span.parent is None
    assert [link.context.span_id for link in span.links] == [create.context.span_id]
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == "tickkit"
    attrs = dict(span.attributes or {})
    assert attrs["tickkit.task"] == "ok"
    assert attrs["tickkit.job.id"] == job_id
    assert attrs["tickkit.attempt"] == 1
    assert attrs["tickkit.scheduled_at"] == (T0 + timedelta(seconds=10)).isoformat()
    assert attrs["tickkit.lateness"] == 15.0
    assert attrs["tickkit.outcome"] == "succeeded"
    assert attrs["tickkit.kernel.id"] == k.id
    # OpenTelemetry messaging semantic conventions
    assert attrs["messaging.system"] == "tickkit"
    assert attrs["messaging.operation.type"] == "process"
    assert attrs["messaging.operation.name"] == "process"
    assert attrs["messaging.destination.name"] == "ok"
    assert attrs["messaging.message.id"] == job_id
    assert span.status.status_code is StatusCode.UNSET
    # span times come from the kernel's clock
    assert span.start_time == _ns(T0 + timedelta(seconds=25))
    assert span.end_time == _ns(T0 + timedelta(seconds=27))

    runs = tel.point("tickkit.runs", task="ok", outcome="succeeded")
    assert runs is not None and runs.value == 1
    duration = tel.point("tickkit.run.duration", task="ok", outcome="succeeded")
    assert duration.count == 1 and duration.sum == 2.0
    lateness = tel.point("tickkit.run.lateness", task="ok")
    assert lateness.count == 1 and lateness.sum == 15.0
    if SDK_TAKES_ADVICE:
        # the advised buckets: 15 s lands in the (10, 30] bucket
        bounds = list(lateness.explicit_bounds)
        assert bounds[:3] == [0.001, 0.005, 0.01]
        assert lateness.bucket_counts[bounds.index(30)] == 1
    # created at 0 when the kernel started: a first retry is an increase from 0
    assert tel.point("tickkit.retries", task="ok").value == 0


async def test_failure_then_retry(tel: Telemetry, clock: VirtualClock, kernel_for: Any) -> None:
    async with kernel_for(tel.plugin) as k:
        job_id = await k.create_task("flaky", {"n": 1})
        await clock.advance(1)  # attempt 1 fails after 1 s
        await clock.advance(5)  # backoff
        await clock.advance(1)  # attempt 2 succeeds
        job = await k.get_task(job_id)
        assert job is not None and job.runs == 2
    first, second = sorted(tel.finished("process flaky"), key=lambda s: s.start_time or 0)
    a1 = dict(first.attributes or {})
    assert a1["tickkit.attempt"] == 1
    assert a1["tickkit.outcome"] == "failed"
    assert a1["error.type"] == "RuntimeError"
    assert a1["tickkit.retry_at"] == (T0 + timedelta(seconds=6)).isoformat()
    assert first.status.status_code is StatusCode.ERROR
    assert first.status.description == "RuntimeError: boom on attempt 1"
    [event] = first.events
    assert event.name == "exception"
    assert event.attributes is not None
    assert event.attributes["exception.type"] == "RuntimeError"
    assert event.attributes["exception.message"] == "boom on attempt 1"
    a2 = dict(second.attributes or {})
    assert a2["tickkit.attempt"] == 2
    assert a2["tickkit.outcome"] == "succeeded"
    assert second.status.status_code is StatusCode.UNSET

    assert tel.point("tickkit.runs", task="flaky", outcome="failed").value == 1
    assert tel.point("tickkit.runs", task="flaky", outcome="succeeded").value == 1
    assert tel.point("tickkit.retries", task="flaky").value == 1
    assert tel.point("tickkit.run.duration", task="flaky", outcome="failed").sum == 1.0
    # lateness counts first attempts only: a retry's start is set by the backoff
    lateness = tel.point("tickkit.run.lateness", task="flaky")
    assert lateness.count == 1 and lateness.sum == 0.0


async def test_skip(tel: Telemetry, clock: VirtualClock, kernel_for: Any) -> None:
    async with kernel_for(tel.plugin) as k:
        await k.create_task("skipper")
        await clock.advance(1)
    [span] = tel.finished("process skipper")
    assert dict(span.attributes or {})["tickkit.outcome"] == "skipped"
    assert span.status.status_code is StatusCode.UNSET
    assert tel.point("tickkit.runs", task="skipper", outcome="skipped").value == 1
    assert tel.point("tickkit.run.duration", task="skipper", outcome="skipped").count == 1
    assert tel.point("tickkit.run.lateness", task="skipper").count == 1


async def test_missed(tel: Telemetry, clock: VirtualClock, kernel_for: Any) -> None:
    async with kernel_for(tel.plugin) as k:
        job_id = await k.create_task("punctual", None, T0 + timedelta(seconds=10))
        await clock.jump(60)  # far past the 1 s grace of misfire="skip"
        job = await k.get_task(job_id)
        assert job is not None and job.last_outcome is not None
        assert job.last_outcome.value == "missed"
    # a missed occurrence does not run: no process span (only the job's create span)
    assert [s.name for s in tel.finished()] == ["create punctual"]
    assert tel.point("tickkit.runs", task="punctual", outcome="missed").value == 1
    assert tel.point("tickkit.run.duration", task="punctual", outcome="missed") is None
    assert tel.point("tickkit.run.lateness", task="punctual") is None


async def test_timeout(tel: Telemetry, clock: VirtualClock, kernel_for: Any) -> None:
    async with kernel_for(tel.plugin) as k:
        await k.create_task("slow")
        await clock.advance(10)
    [span] = tel.finished("process slow")
    attrs = dict(span.attributes or {})
    assert attrs["tickkit.outcome"] == "timed_out"
    assert attrs["error.type"] == "timeout"
    assert attrs["tickkit.timeout"] == 3.0
    assert "tickkit.retry_at" not in attrs  # no retries left
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "timed out after 3.0s"
    assert span.end_time == _ns(T0 + timedelta(seconds=3))
    assert tel.point("tickkit.runs", task="slow", outcome="timed_out").value == 1
    duration = tel.point("tickkit.run.duration", task="slow", outcome="timed_out")
    assert duration.count == 1 and duration.sum == 3.0
    assert tel.point("tickkit.retries", task="slow").value == 0  # no retries left


async def test_cancelled_by_shutdown(tel: Telemetry, clock: VirtualClock, kernel_for: Any) -> None:
    async with kernel_for(tel.plugin, shutdown_timeout=0) as k:
        await k.create_task("ok")
        await clock.advance(1)  # running, 1 s of its 2 s sleep left
    [span] = tel.finished("process ok")
    assert dict(span.attributes or {})["tickkit.outcome"] == "cancelled"
    assert span.end_time == _ns(T0 + timedelta(seconds=1))
    assert tel.point("tickkit.runs", task="ok", outcome="cancelled").value == 1


async def test_run_links_to_the_span_that_created_the_job(
    tel: Telemetry, clock: VirtualClock, kernel_for: Any
) -> None:
    with tel.tracer.start_as_current_span("worker process"):
        # a kernel started inside a span does not make every run a child of it
        async with kernel_for(tel.plugin) as k:
            with tel.tracer.start_as_current_span("reminder command") as creator:
                job_id = await k.create_task("spawner", None, T0 + timedelta(seconds=5))
            stored = await k.get_task(job_id)
            assert stored is not None
            # creating the job is a PRODUCER span, a child of the caller's span; its context
            # is the one stored in the job
            [create] = tel.finished("create spawner")
            created = create.get_span_context()
            assert create.parent is not None
            assert create.parent.span_id == creator.get_span_context().span_id
            assert stored.meta["traceparent"] == (
                f"00-{created.trace_id:032x}-{created.span_id:016x}-{created.trace_flags:02x}"
            )
            await clock.advance(5)  # spawner runs and creates an "ok" job for +30 s
            await clock.advance(32)
    assert create.kind is SpanKind.PRODUCER
    attrs = dict(create.attributes or {})
    assert attrs["messaging.system"] == "tickkit"
    assert attrs["messaging.operation.type"] == "create"
    assert attrs["messaging.operation.name"] == "create"
    assert attrs["messaging.destination.name"] == "spawner"
    assert attrs["tickkit.task"] == "spawner"
    # the id is the driver's, generated after the span: a caller-given id is on it (below)
    assert "messaging.message.id" not in attrs
    [spawner] = tel.finished("process spawner")
    assert spawner.parent is None
    assert spawner.context is not None
    assert spawner.context.trace_id != created.trace_id  # a trace of its own...
    [link] = spawner.links
    assert link.context.trace_id == created.trace_id  # ...linked to the job's creation
    assert link.context.span_id == created.span_id
    assert dict(link.attributes or {}) == {"tickkit.link": "created_by"}
    # a job created by a run is created inside that run's span
    [child_create] = tel.finished("create ok")
    assert child_create.parent is not None
    assert child_create.parent.span_id == spawner.context.span_id
    [child] = tel.finished("process ok")
    [child_link] = child.links
    assert child_link.context.span_id == child_create.context.span_id
    assert child_link.context.trace_id == spawner.context.trace_id


async def test_create_span_names_a_caller_given_id(
    tel: Telemetry, clock: VirtualClock, kernel_for: Any
) -> None:
    async with kernel_for(tel.plugin) as k:
        await k.create_task("ok", None, T0 + timedelta(seconds=5), id="reminder-42")
    [create] = tel.finished("create ok")
    attrs = dict(create.attributes or {})
    assert attrs["messaging.message.id"] == "reminder-42"
    assert attrs["tickkit.job.id"] == "reminder-42"
    assert attrs["tickkit.scheduled_at"] == (T0 + timedelta(seconds=5)).isoformat()
    # a zero-length span at the kernel's time of creation
    assert create.start_time == create.end_time == _ns(T0)


def test_semantic_convention_names_match_the_installed_package() -> None:
    """The attribute names and values tickkit writes out are the semantic conventions' own."""
    from opentelemetry.semconv._incubating.attributes import messaging_attributes as m

    from tickkit.plugins import otel

    assert otel.MESSAGING_SYSTEM == m.MESSAGING_SYSTEM
    assert otel.MESSAGING_OPERATION_TYPE == m.MESSAGING_OPERATION_TYPE
    assert otel.MESSAGING_OPERATION_NAME == m.MESSAGING_OPERATION_NAME
    assert otel.MESSAGING_DESTINATION_NAME == m.MESSAGING_DESTINATION_NAME
    assert otel.MESSAGING_MESSAGE_ID == m.MESSAGING_MESSAGE_ID
    assert m.MessagingOperationTypeValues.CREATE.value == otel.CREATE
    assert m.MessagingOperationTypeValues.PROCESS.value == otel.PROCESS


async def test_counters_exist_at_zero_from_the_start(
    tel: Telemetry, clock: VirtualClock, kernel_for: Any
) -> None:
    async with kernel_for(tel.plugin):
        for name in make_tasks().names():
            assert tel.point("tickkit.retries", task=name).value == 0
            for outcome in ("succeeded", "failed", "timed_out", "skipped", "missed", "cancelled"):
                assert tel.point("tickkit.runs", task=name, outcome=outcome).value == 0


async def test_error_text_is_redacted_in_spans(clock: VirtualClock) -> None:
    """A task error that shows a store URL with its password: the span's status, exception
    message and stack trace carry it masked."""
    tel = Telemetry()
    registry = TaskRegistry()

    async def leaky(ctx: TaskContext) -> None:
        raise ConnectionError("cannot reach redis://:S3cretPW@db.internal:6379/0")

    task(name="leaky", execute=leaky, registry=registry)
    async with Kernel(
        MemoryDriver(), tasks=registry, clock=clock, plugins=[tel.plugin], entry_points=True
    ) as k:
        await k.create_task("leaky")
        await clock.advance(1)
    [span] = tel.finished("process leaky")
    assert span.status.description == (
        "ConnectionError: cannot reach redis://:***@db.internal:6379/0"
    )
    [event] = span.events
    assert event.attributes is not None
    assert event.attributes["exception.message"] == "cannot reach redis://:***@db.internal:6379/0"
    assert "S3cretPW" not in str(event.attributes["exception.stacktrace"])
    assert "redis://:***@db.internal" in str(event.attributes["exception.stacktrace"])


async def test_child_relation(clock: VirtualClock, kernel_for: Any) -> None:
    tel = Telemetry(relation="child")
    async with kernel_for(tel.plugin) as k:
        with tel.tracer.start_as_current_span("reminder command") as creator:
            await k.create_task("ok", None, T0 + timedelta(seconds=5))
        await clock.advance(7)
    [span] = tel.finished("process ok")
    [create] = tel.finished("create ok")
    created = creator.get_span_context()
    assert create.parent is not None and create.parent.span_id == created.span_id
    assert span.parent is not None
    assert span.parent.span_id == create.context.span_id
    assert span.context is not None and span.context.trace_id == created.trace_id
    assert span.links == ()


async def test_without_a_current_span_the_create_span_is_a_root(
    tel: Telemetry, clock: VirtualClock, kernel_for: Any
) -> None:
    async with kernel_for(tel.plugin) as k:
        job_id = await k.create_task("ok", None, T0 + timedelta(seconds=5))
        stored = await k.get_task(job_id)
        await clock.advance(7)
    [create] = tel.finished("create ok")
    assert create.parent is None
    assert stored is not None
    assert stored.meta["traceparent"].startswith(f"00-{create.context.trace_id:032x}-")
    [span] = tel.finished("process ok")
    assert span.parent is None
    assert [link.context.span_id for link in span.links] == [create.context.span_id]


async def test_static_schedules_get_no_create_span(
    tel: Telemetry, clock: VirtualClock, kernel_for: Any
) -> None:
    """A static schedule is stored again at every start: no create span each time."""
    registry = TaskRegistry()

    async def tick(ctx: TaskContext) -> None:
        return None

    task(name="tick", execute=tick, schedule="* * * * *", registry=registry)
    async with Kernel(
        MemoryDriver(), tasks=registry, clock=clock, plugins=[tel.plugin], entry_points=True
    ):
        await clock.advance(61)
    assert not [s for s in tel.finished() if s.kind is SpanKind.PRODUCER]
    [span] = tel.finished("process tick")
    assert dict(span.attributes or {})["messaging.message.id"] == "tick"


def test_bad_relation_names_the_value() -> None:
    with pytest.raises(PluginError, match="'sibling'"):
        OpenTelemetryPlugin(relation="sibling")


# --- across processes ------------------------------------------------------------------------

CREATOR = textwrap.dedent(
    """
    # another process: a kernel on a SQLite file with the module-level plugin
    # (plugins=["tickkit.plugins.otel"]) on the global SDK providers runs one job, then
    # creates another, due later, inside a span, and prints what it recorded
    import json
    import sys
    from datetime import datetime, timedelta, timezone

    import anyio
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from tickkit import Kernel, TaskRegistry, task
    from tickkit.drivers.sqlite import SQLiteDriver
    from tickkit.testing import VirtualClock

    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    trace.set_tracer_provider(provider)
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))

    async def main() -> None:
        registry = TaskRegistry()

        async def ok(ctx):
            return None

        task(name="ok", execute=ok, registry=registry)
        t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
        clock = VirtualClock(t0)
        kernel = Kernel(
            SQLiteDriver(sys.argv[1]),
            tasks=registry,
            clock=clock,
            plugins=["tickkit.plugins.otel"],
        )
        async with kernel:
            await kernel.create_task("ok")
            await clock.advance(1)
            tracer = trace.get_tracer("creator")
            with tracer.start_as_current_span("create in another process") as span:
                job_id = await kernel.create_task("ok", {"x": 1}, t0 + timedelta(seconds=5))
            ctx = span.get_span_context()
        runs = [
            (dict(p.attributes), p.value)
            for rm in reader.get_metrics_data().resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
            if m.name == "tickkit.runs"
            for p in m.data.data_points
        ]
        print(json.dumps({
            "job_id": job_id,
            "trace_id": ctx.trace_id,
            "span_id": ctx.span_id,
            "spans": [
                [s.name, dict(s.attributes)["tickkit.outcome"]]
                for s in spans.get_finished_spans() if s.name.startswith("process ")
            ],
            "create_span_id": [
                s.context.span_id for s in spans.get_finished_spans()
                if s.name == "create ok" and s.parent is not None
            ][0],
            "runs": runs,
        }))

    anyio.run(main)
    """
)


@pytest.fixture(scope="module")
def other_process(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run CREATOR in a new Python process on a new SQLite file; its output and the file."""
    db = tmp_path_factory.mktemp("otel") / "shared.db"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-c", CREATOR, str(db)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["db"] = db
    return result


def test_module_is_a_plugin_on_the_global_providers(other_process: dict[str, Any]) -> None:
    """``Kernel(plugins=["tickkit.plugins.otel"])``: the module's hooks use one default instance
    on the global tracer and meter providers the application set."""
    assert other_process["spans"] == [["process ok", "succeeded"]]
    runs = {(p["tickkit.outcome"], v) for p, v in other_process["runs"]}
    # every outcome at 0 from the start, one success
    assert runs == {
        ("succeeded", 1),
        *((o, 0) for o in ("failed", "timed_out", "skipped", "missed", "cancelled")),
    }


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the SQLite driver runs on asyncio
async def test_trace_context_crosses_processes_through_sqlite(
    other_process: dict[str, Any], tel: Telemetry, clock: VirtualClock, kernel_for: Any
) -> None:
    """A job created inside a span by a kernel in another process, stored in a SQLite file, runs
    in this process's kernel on the same file: its span links to the creating span."""
    from tickkit.drivers.sqlite import SQLiteDriver

    driver = SQLiteDriver(other_process["db"], keep_completed=True)
    async with kernel_for(tel.plugin, driver=driver) as k:
        stored = await k.get_task(other_process["job_id"])
        assert stored is not None
        assert set(stored.meta) == {"traceparent"}
        assert stored.meta["traceparent"].startswith(
            f"00-{other_process['trace_id']:032x}-{other_process['create_span_id']:016x}-"
        )
        await clock.advance(7)
        job = await k.get_task(other_process["job_id"])
        assert job is not None and job.runs == 1
    [span] = tel.finished("process ok")
    assert dict(span.attributes or {})["tickkit.job.id"] == other_process["job_id"]
    [link] = span.links
    assert link.context.trace_id == other_process["trace_id"]
    assert link.context.span_id == other_process["create_span_id"]
    assert link.context.is_remote
    assert span.context is not None and span.context.trace_id != other_process["trace_id"]


@pytest.mark.redis
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # redis-py's client runs on asyncio
async def test_trace_context_through_the_redis_driver(
    tel: Telemetry, clock: VirtualClock, kernel_for: Any, redis_url: str
) -> None:
    """One kernel creates a job inside a span on a real Redis (the BullMQ driver keeps
    ``job.meta``); another kernel on the same queue runs it: the run links to that span."""
    import uuid

    url = f"{redis_url}{'&' if '?' in redis_url else '?'}queue=otel-{uuid.uuid4().hex[:12]}"
    creating = Kernel(url, tasks=make_tasks(), clock=clock, plugins=[tel.plugin])
    await creating.open()
    try:
        with tel.tracer.start_as_current_span("reminder command") as creator:
            job_id = await creating.create_task("ok", None, T0 + timedelta(seconds=5))
    finally:
        await creating.stop()
    # the creating kernel was only opened (a bot's command handler): the span still names
    # the BullMQ system and queue it stores on (the hook gets the kernel)
    [create] = tel.finished(f"create {creating.driver.queue}")  # type: ignore[union-attr]
    assert dict(create.attributes or {})["messaging.system"] == "bullmq"
    assert create.kind is SpanKind.PRODUCER
    assert create.parent is not None
    assert create.parent.span_id == creator.get_span_context().span_id
    created = create.get_span_context()
    async with kernel_for(tel.plugin, driver=url) as k:
        stored = await k.get_task(job_id)
        assert stored is not None
        assert stored.meta["traceparent"].startswith(
            f"00-{created.trace_id:032x}-{created.span_id:016x}-"
        )
        await clock.advance(7)
    queue = k.driver.queue  # type: ignore[union-attr]
    # on the BullMQ driver the system is BullMQ and the destination its queue
    [span] = tel.finished(f"process {queue}")
    attrs = dict(span.attributes or {})
    assert attrs["tickkit.outcome"] == "succeeded"
    assert attrs["messaging.system"] == "bullmq"
    assert attrs["messaging.destination.name"] == queue
    assert attrs["messaging.message.id"] == job_id
    assert attrs["tickkit.task"] == "ok"
    [link] = span.links
    assert link.context.trace_id == created.trace_id
    assert link.context.span_id == created.span_id
