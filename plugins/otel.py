"""OpenTelemetry for tickkit: a span per run, trace context carried in jobs, run metrics.

Needs the ``otel`` extra (``opentelemetry-api`` only); the application brings the SDK and its
exporters. Enable it with ``Kernel(plugins=["tickkit.plugins.otel"])`` (global tracer and meter
providers) or ``Kernel(plugins=[OpenTelemetryPlugin(tracer_provider=..., meter_provider=...)])``.
See docs/observability.md for every span attribute and instrument.

How a run relates to the code that created its job: when a job is created (``create_task``,
static schedules at start) the current trace context is injected into ``job.meta`` with the
propagator (W3C ``traceparent`` / ``tracestate``, plus ``baggage`` with the default global
propagator). Drivers store ``job.meta``, so the context survives restarts, other processes and
the Redis driver. The run's span then *links* to that context and starts a trace of its own
(``relation="link"``, the default: a recurring job's runs would otherwise pile up in one trace
for months), or becomes its child (``relation="child"``).

Spans follow OpenTelemetry's messaging semantic conventions: creating a dynamic job is a
``PRODUCER`` span ``create <destination>`` (``messaging.operation.type`` ``create``), whose context
is the one stored in the job; a run is a ``CONSUMER`` span ``process <destination>``
(``process``). ``messaging.system`` is ``bullmq`` on the BullMQ driver and ``tickkit`` on the
others; the destination is the BullMQ queue, or the task name where the store has no queues.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from tickkit import UTC, MissingExtraError, Outcome, PluginError, hookimpl, redact
from tickkit import __version__ as tickkit_version

from ._observe import RunScope, RunStates

try:
    from opentelemetry import context as otel_context
    from opentelemetry import metrics, propagate, trace
    from opentelemetry.propagators.textmap import TextMapPropagator
    from opentelemetry.trace import Link, SpanKind, Status, StatusCode
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError(
        "the OpenTelemetry plugin (tickkit.plugins.otel)", "otel", exc.name or "opentelemetry-api"
    ) from exc

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import Span, TracerProvider

    from tickkit import Driver, Job, Kernel, TaskContext

__all__ = [
    "DURATION_BUCKETS",
    "LATENESS_BUCKETS",
    "OpenTelemetryPlugin",
    "default_plugin",
]

log = logging.getLogger("tickkit.plugins.otel")

#: the instrumentation scope of every span and instrument
SCOPE = "tickkit"
#: histogram bucket boundaries (seconds), given to the SDK as advice
DURATION_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600,
)  # fmt: skip
LATENESS_BUCKETS: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600,
)  # fmt: skip

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_RELATIONS = ("link", "child")

# OpenTelemetry messaging semantic conventions (the names of opentelemetry-semantic-conventions'
# ``messaging_attributes``; written out because the ``otel`` extra needs the API only)
MESSAGING_SYSTEM = "messaging.system"
MESSAGING_OPERATION_TYPE = "messaging.operation.type"
MESSAGING_OPERATION_NAME = "messaging.operation.name"
MESSAGING_DESTINATION_NAME = "messaging.destination.name"
MESSAGING_MESSAGE_ID = "messaging.message.id"
#: ``messaging.operation.type`` of creating a job and of running one
CREATE = "create"
PROCESS = "process"
#: ``messaging.system`` of tickkit's own stores (memory, SQLite, third-party drivers)
SYSTEM = "tickkit"
#: ``messaging.system`` of the BullMQ driver: the jobs are BullMQ jobs in a BullMQ queue, which
#: Node BullMQ producers and consumers (and their instrumentations) share
BULLMQ_SYSTEM = "bullmq"


def messaging_system(driver: Driver | None) -> tuple[str, str | None]:
    """``(messaging.system, queue)`` of ``driver``: ``("bullmq", queue name)`` for the BullMQ
    driver, ``("tickkit", None)`` otherwise (then each task is the destination of its jobs).

    A driver can say otherwise with a ``messaging_system`` attribute (and ``queue``).
    """
    if driver is None:
        return SYSTEM, None
    queue = getattr(driver, "queue", None)
    queue = queue if isinstance(queue, str) and queue else None
    system = getattr(driver, "messaging_system", None)
    if isinstance(system, str) and system:
        return system, queue
    if type(driver).__module__.startswith("tickkit.drivers.bullmq"):
        return BULLMQ_SYSTEM, queue
    return SYSTEM, None


def _ns(dt: datetime) -> int:
    """Nanoseconds since the epoch of an aware datetime (exact to the microsecond)."""
    return (dt - _EPOCH) // timedelta(microseconds=1) * 1000


def _histogram(
    meter: metrics.Meter, name: str, description: str, buckets: tuple[float, ...]
) -> metrics.Histogram:
    """A histogram in seconds with bucket advice (the API takes advice from 1.23 on)."""
    try:
        return meter.create_histogram(
            name, unit="s", description=description, explicit_bucket_boundaries_advisory=buckets
        )
    except TypeError:  # an older opentelemetry-api
        return meter.create_histogram(name, unit="s", description=description)


def _text(error: BaseException) -> str:
    """``str(error)``, never failing (a broken ``__str__`` gives an empty text)."""
    try:
        return str(error)
    except Exception:
        return ""


class _Run:
    """The span of one run, between ``tickkit_wrap_run`` and ``tickkit_run_finished``."""

    __slots__ = ("ctx", "span", "token")

    def __init__(self, ctx: TaskContext, span: Span) -> None:
        self.ctx = ctx
        self.span = span
        self.token: object | None = None


class OpenTelemetryPlugin:
    """The OpenTelemetry plugin object.

    Arguments:
        tracer_provider: where spans go (default: the global one, ``trace.get_tracer_provider()``).
        meter_provider: where metrics go (default: the global one).
        propagator: injects and extracts the trace context in ``job.meta`` (default: the global
            text-map propagator, W3C trace context and baggage unless configured otherwise).
        relation: ``"link"`` (default): each run starts a new trace whose span links to the
            span that created the job; ``"child"``: the run's span is a child of that span.

    Spans and metrics use the kernel's clock, so they agree with ``scheduled_at`` and with a
    virtual clock in tests.
    """

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        propagator: TextMapPropagator | None = None,
        relation: str = "link",
    ) -> None:
        if relation not in _RELATIONS:
            raise PluginError(
                f"OpenTelemetryPlugin relation must be 'link' or 'child', got {relation!r}"
            )
        self.relation = relation
        self._propagator = propagator
        if tracer_provider is not None:
            self.tracer = tracer_provider.get_tracer(SCOPE, tickkit_version)
        else:
            self.tracer = trace.get_tracer(SCOPE, tickkit_version)
        if meter_provider is not None:
            meter = meter_provider.get_meter(SCOPE, tickkit_version)
        else:
            meter = metrics.get_meter(SCOPE, tickkit_version)
        self.runs = meter.create_counter(
            "tickkit.runs",
            unit="{run}",
            description="Finished runs by task and outcome (missed occurrences count as runs "
            "with outcome 'missed').",
        )
        self.retries = meter.create_counter(
            "tickkit.retries",
            unit="{run}",
            description="Failed or timed-out attempts that were scheduled to run again.",
        )
        self.duration = _histogram(
            meter,
            "tickkit.run.duration",
            "How long runs took (prepare and execute), by task and outcome.",
            DURATION_BUCKETS,
        )
        self.lateness = _histogram(
            meter,
            "tickkit.run.lateness",
            "Actual minus scheduled start of first attempts, by task.",
            LATENESS_BUCKETS,
        )
        self._runs: RunStates[_Run] = RunStates()

    # --- messaging attributes -----------------------------------------------------------

    def _messaging(
        self, driver: Driver | None, task: str, operation: str
    ) -> tuple[str, dict[str, str | int | float | bool]]:
        """The span name and messaging attributes of ``operation`` on a job of ``task``."""
        system, queue = messaging_system(driver)
        destination = queue if queue is not None else task
        return f"{operation} {destination}", {
            MESSAGING_SYSTEM: system,
            MESSAGING_OPERATION_TYPE: operation,
            MESSAGING_OPERATION_NAME: operation,
            MESSAGING_DESTINATION_NAME: destination,
        }

    @hookimpl
    def tickkit_kernel_started(self, kernel: Kernel) -> None:
        # every task's counter points exist at 0 from the start, so an exporter to Prometheus
        # (or any rate over cumulative sums) sees the first run and the first retry
        for name in kernel.tasks.names():
            for outcome in Outcome:
                self.runs.add(0, {"tickkit.task": name, "tickkit.outcome": outcome.value})
            self.retries.add(0, {"tickkit.task": name})

    # --- trace context in jobs ----------------------------------------------------------

    @property
    def propagator(self) -> TextMapPropagator:
        return self._propagator if self._propagator is not None else propagate.get_global_textmap()

    @hookimpl
    def tickkit_job_meta(self, job: Job, kernel: Kernel) -> dict[str, str] | None:
        """Start and end the ``create`` span of a new dynamic job (a child of the current span)
        and inject its context (``traceparent``...) into the job's meta. A static schedule,
        stored again at every start, gets the current context (if any) and no span."""
        carrier: dict[str, str] = {}
        if job.static:
            self.propagator.inject(carrier)
            return carrier or None
        name, attributes = self._messaging(kernel.driver, job.name, CREATE)
        if job.id is not None:
            attributes[MESSAGING_MESSAGE_ID] = job.id
            attributes["tickkit.job.id"] = job.id
        attributes["tickkit.task"] = job.name
        if job.scheduled_at is not None:
            attributes["tickkit.scheduled_at"] = job.scheduled_at.isoformat()
        created = job.created_at
        start = _ns(created) if created is not None else None
        span = self.tracer.start_span(
            name, kind=SpanKind.PRODUCER, attributes=attributes, start_time=start
        )
        try:
            self.propagator.inject(carrier, context=trace.set_span_in_context(span))
        finally:
            span.end(end_time=start)
        return carrier or None

    def _creator(self, meta: Mapping[str, str]) -> Any:
        """The context extracted from a job's meta (None when it carries no valid span)."""
        if not meta:
            return None
        extracted = self.propagator.extract(carrier=dict(meta))
        if not trace.get_current_span(extracted).get_span_context().is_valid:
            return None
        return extracted

    # --- spans --------------------------------------------------------------------------

    @hookimpl
    def tickkit_wrap_run(self, ctx: TaskContext) -> RunScope:
        """Entering starts the run's span and makes it current (so spans and jobs created by
        the task are its children); exiting only detaches it: the outcome is known in
        ``tickkit_run_finished``, which ends the span. A run cancelled by shutdown gets no
        ``run_finished``: its span ends when the scope exits."""
        return RunScope(ctx, enter=self._enter, exit=self._exit, cancelled=self._cancelled)

    def _enter(self, ctx: TaskContext) -> None:
        run = self._start(ctx)
        run.token = otel_context.attach(trace.set_span_in_context(run.span))

    def _exit(self, ctx: TaskContext) -> None:
        run = self._runs.get(ctx)
        if run is not None and run.token is not None:
            otel_context.detach(run.token)  # type: ignore[arg-type]
            run.token = None

    def _cancelled(self, ctx: TaskContext, duration: float) -> None:
        if self._runs.get(ctx) is not None:  # not finished already
            self._finish(ctx, Outcome.CANCELLED, duration)

    def _start(self, ctx: TaskContext) -> _Run:
        creator = self._creator(ctx.job.meta)
        links: list[Link] = []
        if creator is not None and self.relation == "child":
            parent = creator
        else:
            # a root span: not a child of whatever was current when the kernel started
            parent = otel_context.Context()
            if creator is not None:
                creator_span = trace.get_current_span(creator).get_span_context()
                links.append(Link(creator_span, {"tickkit.link": "created_by"}))
        name, attributes = self._messaging(ctx.kernel.driver, ctx.task.name, PROCESS)
        attributes[MESSAGING_MESSAGE_ID] = ctx.job_id
        attributes |= {
            "tickkit.task": ctx.task.name,
            "tickkit.job.id": ctx.job_id,
            "tickkit.attempt": ctx.attempt,
            "tickkit.scheduled_at": ctx.scheduled_at.isoformat(),
            "tickkit.lateness": ctx.lateness,
            "tickkit.kernel.id": ctx.kernel.id,
        }
        span = self.tracer.start_span(
            name,
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            links=links,
            start_time=_ns(ctx.started_at),
            record_exception=False,
            set_status_on_exception=False,
        )
        run = _Run(ctx, span)
        return self._runs.put(ctx, run)

    def _finish(self, ctx: TaskContext, outcome: Outcome, duration: float) -> None:
        labels = {"tickkit.task": ctx.task.name, "tickkit.outcome": outcome.value}
        self.runs.add(1, labels)
        self.duration.record(max(duration, 0.0), labels)
        run = self._runs.pop(ctx)
        if run is None:
            return
        run.span.set_attribute("tickkit.outcome", outcome.value)
        run.span.end(end_time=_ns(ctx.started_at) + round(max(duration, 0.0) * 1e9))

    # --- run outcomes -------------------------------------------------------------------

    @hookimpl
    def tickkit_run_started(self, ctx: TaskContext) -> None:
        if ctx.attempt == 1:
            self.lateness.record(max(ctx.lateness, 0.0), {"tickkit.task": ctx.task.name})

    @hookimpl
    def tickkit_run_failed(
        self, ctx: TaskContext, error: BaseException, retry_at: datetime | None
    ) -> None:
        if retry_at is not None:
            self.retries.add(1, {"tickkit.task": ctx.task.name})
        run = self._runs.get(ctx)
        if run is None:
            return
        span = run.span
        # the error's text and traceback may hold a URL with its password: masked
        message = redact(_text(error))
        stack = redact("".join(traceback.format_exception(error)))
        span.record_exception(
            error,
            attributes={"exception.message": message, "exception.stacktrace": stack},
            timestamp=_ns(ctx.kernel.clock.now()),
        )
        span.set_attribute("error.type", type(error).__qualname__)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {message}"))
        if retry_at is not None:
            span.set_attribute("tickkit.retry_at", retry_at.isoformat())

    @hookimpl
    def tickkit_run_timed_out(
        self, ctx: TaskContext, timeout: float, retry_at: datetime | None
    ) -> None:
        if retry_at is not None:
            self.retries.add(1, {"tickkit.task": ctx.task.name})
        run = self._runs.get(ctx)
        if run is None:
            return
        span = run.span
        span.set_attribute("error.type", "timeout")
        span.set_attribute("tickkit.timeout", timeout)
        span.set_status(Status(StatusCode.ERROR, f"timed out after {timeout}s"))
        if retry_at is not None:
            span.set_attribute("tickkit.retry_at", retry_at.isoformat())

    @hookimpl
    def tickkit_run_missed(self, job: Job, scheduled_at: datetime, count: int) -> None:
        self.runs.add(count, {"tickkit.task": job.name, "tickkit.outcome": Outcome.MISSED.value})

    @hookimpl
    def tickkit_run_finished(self, ctx: TaskContext, outcome: Outcome, duration: float) -> None:
        self._finish(ctx, outcome, duration)


_default_lock = threading.Lock()
_default: OpenTelemetryPlugin | None = None


def default_plugin() -> OpenTelemetryPlugin:
    """The instance behind the module-level hooks (``Kernel(plugins=["tickkit.plugins.otel"])``):
    global tracer provider, meter provider and propagator, created on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = OpenTelemetryPlugin()
        return _default


# --- module-level hooks: the module itself is a plugin using the default instance ---------


@hookimpl
def tickkit_job_meta(job: Job, kernel: Kernel) -> dict[str, str] | None:
    return default_plugin().tickkit_job_meta(job, kernel)


@hookimpl
def tickkit_kernel_started(kernel: Kernel) -> None:
    default_plugin().tickkit_kernel_started(kernel)


@hookimpl
def tickkit_wrap_run(ctx: TaskContext) -> RunScope:
    return default_plugin().tickkit_wrap_run(ctx)


@hookimpl
def tickkit_run_started(ctx: TaskContext) -> None:
    default_plugin().tickkit_run_started(ctx)


@hookimpl
def tickkit_run_failed(ctx: TaskContext, error: BaseException, retry_at: datetime | None) -> None:
    default_plugin().tickkit_run_failed(ctx, error, retry_at)


@hookimpl
def tickkit_run_timed_out(ctx: TaskContext, timeout: float, retry_at: datetime | None) -> None:
    default_plugin().tickkit_run_timed_out(ctx, timeout, retry_at)


@hookimpl
def tickkit_run_missed(job: Job, scheduled_at: datetime, count: int) -> None:
    default_plugin().tickkit_run_missed(job, scheduled_at, count)


@hookimpl
def tickkit_run_finished(ctx: TaskContext, outcome: Outcome, duration: float) -> None:
    default_plugin().tickkit_run_finished(ctx, outcome, duration)
