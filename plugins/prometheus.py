"""Prometheus metrics for tickkit: runs by outcome, run duration, lateness, jobs by state.

Needs the ``prometheus`` extra (``prometheus-client``). Enable it with
``Kernel(plugins=["tickkit.plugins.prometheus"])`` (metrics on prometheus_client's default
``REGISTRY``) or ``Kernel(plugins=[PrometheusPlugin(registry=my_registry)])``. With
``Kernel(settings={"metrics_port": 9464})`` (``tickkit run --metrics-port 9464``) the kernel
also serves the registry over HTTP. See docs/observability.md for every metric.

Settings read from ``kernel.settings``:

- ``metrics_port``: serve ``/metrics`` on this TCP port while the kernel runs (0: any free port,
  see :meth:`PrometheusPlugin.server_address`); unset: no server (the application exposes the
  registry itself).
- ``metrics_addr``: the address to bind (default ``127.0.0.1``: only this machine can scrape;
  ``0.0.0.0`` or ``::`` for every interface, an IPv6 address such as ``::1`` works too).
- ``metrics_jobs_interval``: seconds of the kernel's clock between two reads of the job counts
  for ``tickkit_jobs`` (default: the plugin's ``jobs_interval``, 15).
- ``metrics_driver_label``: the ``driver`` label of ``tickkit_jobs`` (default: the driver's class
  name without ``Driver``, lower case: ``memory``, ``sqlite``, ``bullmq``).
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import anyio

from tickkit import JobState, MissingExtraError, Outcome, PluginError, hookimpl, redact

from ._observe import RunScope

try:
    from prometheus_client import (
        REGISTRY,
        CollectorRegistry,
        Counter,
        Gauge,
        Histogram,
        make_wsgi_app,
    )
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError(
        "the Prometheus plugin (tickkit.plugins.prometheus)",
        "prometheus",
        exc.name or "prometheus-client",
    ) from exc

if TYPE_CHECKING:
    from tickkit import Driver, Job, Kernel, TaskContext, TaskDefinition

__all__ = [
    "DURATION_BUCKETS",
    "LATENESS_BUCKETS",
    "PrometheusPlugin",
    "default_plugin",
]

log = logging.getLogger("tickkit.plugins.prometheus")

#: histogram buckets (seconds): runs from milliseconds to an hour
DURATION_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600,
)  # fmt: skip
#: histogram buckets (seconds): a healthy kernel starts runs within milliseconds; minutes and
#: more mean it was down, overloaded, or waiting on ``max_instances``
LATENESS_BUCKETS: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600,
)  # fmt: skip

_OUTCOMES = tuple(o.value for o in Outcome)
_STATES = tuple(s.value for s in JobState)
#: where the metrics server listens unless ``metrics_addr`` says otherwise: this machine only
DEFAULT_ADDR = "127.0.0.1"


def url_host(addr: str) -> str:
    """``addr`` as the host part of a URL: an IPv6 address goes in brackets."""
    return f"[{addr}]" if ":" in addr else addr


def driver_label(driver: Driver) -> str:
    """The default ``driver`` label: ``MemoryDriver`` -> ``memory``."""
    name = type(driver).__name__
    if name.lower().endswith("driver") and len(name) > len("driver"):
        name = name[: -len("driver")]
    return name.lower()


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged."""


class PrometheusPlugin:
    """The Prometheus plugin object: tickkit's metrics on ``registry``.

    Arguments:
        registry: the ``CollectorRegistry`` to register the metrics on (default: the
            prometheus_client default ``REGISTRY``). One plugin per registry: a second one on the
            same registry raises :class:`~tickkit.PluginError`.
        duration_buckets, lateness_buckets: histogram buckets in seconds.
        jobs_interval: seconds (of the kernel's clock) between two refreshes of ``tickkit_jobs``.

    Metrics change on the kernel's event loop; a scrape (from another thread) reads them under
    prometheus_client's locks. ``tickkit_jobs`` is refreshed by a kernel service every
    ``jobs_interval`` with ``Driver.count_jobs()``, not on scrape, so a scrape never waits on the
    store and never runs store I/O off the event loop.
    """

    def __init__(
        self,
        registry: CollectorRegistry = REGISTRY,
        *,
        duration_buckets: Sequence[float] = DURATION_BUCKETS,
        lateness_buckets: Sequence[float] = LATENESS_BUCKETS,
        jobs_interval: float = 15.0,
    ) -> None:
        if not isinstance(registry, CollectorRegistry):
            raise PluginError(
                f"PrometheusPlugin registry must be a prometheus_client CollectorRegistry, "
                f"got {registry!r}"
            )
        self.registry = registry
        self.jobs_interval = _interval(jobs_interval, "jobs_interval")
        self._servers: dict[str, tuple[str, int]] = {}
        #: the tasks whose per-task series exist (created at 0, see :meth:`ensure_task`)
        self._known: set[str] = set()
        made: list[Any] = []

        def make(factory: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            try:
                metric = factory(*args, registry=registry, **kwargs)
            except ValueError as exc:
                for earlier in made:
                    registry.unregister(earlier)
                if "Duplicated timeseries" in str(exc):
                    raise PluginError(
                        f"tickkit's metrics ({args[0]}...) are already registered on {registry!r}: "
                        "use one PrometheusPlugin per registry (the module-level plugin uses "
                        "tickkit.plugins.prometheus.default_plugin() on the default REGISTRY)"
                    ) from exc
                raise PluginError(f"bad option for metric {args[0]}: {exc}") from exc
            made.append(metric)
            return metric

        self.runs: Counter = make(
            Counter,
            "tickkit_runs",
            "Finished runs by task and outcome (missed occurrences count with outcome 'missed').",
            ["task", "outcome"],
        )
        self.retries: Counter = make(
            Counter,
            "tickkit_retries",
            "Failed or timed-out attempts that were scheduled to run again.",
            ["task"],
        )
        self.duration: Histogram = make(
            Histogram,
            "tickkit_run_duration_seconds",
            "How long runs took (prepare and execute), by task and outcome.",
            ["task", "outcome"],
            buckets=tuple(duration_buckets),
        )
        self.lateness: Histogram = make(
            Histogram,
            "tickkit_run_lateness_seconds",
            "Actual minus scheduled start of first attempts, by task.",
            ["task"],
            buckets=tuple(lateness_buckets),
        )
        self.jobs: Gauge = make(
            Gauge,
            "tickkit_jobs",
            "Jobs in the store by state, per driver (refreshed every jobs_interval).",
            ["driver", "state"],
        )

    # --- runs ---------------------------------------------------------------------------

    def ensure_task(self, task: str) -> None:
        """Create every per-task counter series of ``task`` at 0 (once): ``tickkit_runs_total``
        for each outcome and ``tickkit_retries_total``. A series that first appears at 1 is
        invisible to ``increase()`` and ``rate()``: the first run, failure or retry of a task
        would not count."""
        if task in self._known:
            return
        self._known.add(task)
        for outcome in _OUTCOMES:
            self.runs.labels(task, outcome)
        self.retries.labels(task)

    def ensure_tasks(self, kernel: Kernel) -> None:
        """:meth:`ensure_task` for every task ``kernel`` knows now."""
        for name in kernel.tasks.names():
            self.ensure_task(name)

    def _finished(self, task: str, outcome: Outcome, duration: float) -> None:
        self.ensure_task(task)
        self.runs.labels(task, outcome.value).inc()
        self.duration.labels(task, outcome.value).observe(max(duration, 0.0))

    @hookimpl
    def tickkit_wrap_run(self, ctx: TaskContext) -> RunScope:
        """Counts runs cancelled by shutdown (they get no ``tickkit_run_finished``)."""
        return RunScope(ctx, cancelled=self._cancelled)

    def _cancelled(self, ctx: TaskContext, duration: float) -> None:
        self._finished(ctx.task.name, Outcome.CANCELLED, duration)

    @hookimpl
    def tickkit_run_started(self, ctx: TaskContext) -> None:
        # a task added after the start (reload) gets its series at its first run at the latest
        self.ensure_task(ctx.task.name)
        if ctx.attempt == 1:
            self.lateness.labels(ctx.task.name).observe(max(ctx.lateness, 0.0))

    @hookimpl
    def tickkit_run_failed(self, ctx: TaskContext, retry_at: datetime | None) -> None:
        self.ensure_task(ctx.task.name)
        if retry_at is not None:
            self.retries.labels(ctx.task.name).inc()

    @hookimpl
    def tickkit_run_timed_out(self, ctx: TaskContext, retry_at: datetime | None) -> None:
        self.ensure_task(ctx.task.name)
        if retry_at is not None:
            self.retries.labels(ctx.task.name).inc()

    @hookimpl
    def tickkit_run_missed(self, job: Job, count: int) -> None:
        self.ensure_task(job.name)
        self.runs.labels(job.name, Outcome.MISSED.value).inc(count)

    @hookimpl
    def tickkit_run_finished(self, ctx: TaskContext, outcome: Outcome, duration: float) -> None:
        self._finished(ctx.task.name, outcome, duration)

    # --- lifecycle ----------------------------------------------------------------------

    @hookimpl
    def tickkit_load_tasks(self, kernel: Kernel) -> list[TaskDefinition] | None:
        # the earliest hook that sees the kernel's settings: bad settings fail the start here,
        # before the kernel's task group runs
        self._settings(kernel)
        return None

    @hookimpl
    def tickkit_kernel_started(self, kernel: Kernel) -> None:
        # every task's counter series exist from the start, so rate() and increase() see the
        # first run or retry instead of a series appearing out of nowhere; tasks added later
        # (reload) are picked up by the jobs refresh and at their first run
        self.ensure_tasks(kernel)

    @hookimpl
    def tickkit_kernel_services(
        self, kernel: Kernel
    ) -> list[Callable[[], Coroutine[Any, Any, None]]]:
        port, addr, interval, label = self._settings(kernel)
        services: list[Callable[[], Coroutine[Any, Any, None]]] = [
            lambda: self._refresh_jobs(kernel, label, interval)
        ]
        if port is not None:
            services.append(lambda: self._serve(kernel, addr, port))
        return services

    def _settings(self, kernel: Kernel) -> tuple[int | None, str, float, str]:
        settings = kernel.settings
        port = settings.get("metrics_port")
        if port is not None and (
            isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535
        ):
            raise PluginError(f"metrics_port must be an int from 0 to 65535, got {port!r}")
        addr = settings.get("metrics_addr", DEFAULT_ADDR)
        if isinstance(addr, str) and addr.startswith("[") and addr.endswith("]"):
            addr = addr[1:-1]  # [::1], as written in a URL
        if not isinstance(addr, str) or not addr or any(c.isspace() for c in addr):
            raise PluginError(f"metrics_addr must be a host name or IP address, got {addr!r}")
        interval = _interval(
            settings.get("metrics_jobs_interval", self.jobs_interval), "metrics_jobs_interval"
        )
        label = settings.get("metrics_driver_label")
        if label is None:
            label = driver_label(kernel.driver) if kernel.driver is not None else "unknown"
        elif not isinstance(label, str) or not label:
            raise PluginError(f"metrics_driver_label must be a non-empty string, got {label!r}")
        # a metric label never carries a credential (a label made from a store URL)
        return port, addr, interval, redact(label)

    # --- jobs by state ------------------------------------------------------------------

    async def refresh_jobs(self, kernel: Kernel, label: str | None = None) -> None:
        """Read the job counts of ``kernel``'s driver now and set ``tickkit_jobs``."""
        driver = kernel.driver
        if driver is None:
            return
        counts = await driver.count_jobs()
        label = label if label is not None else driver_label(driver)
        for state in JobState:
            self.jobs.labels(label, state.value).set(counts.get(state, 0))

    async def _refresh_jobs(self, kernel: Kernel, label: str, interval: float) -> None:
        try:
            while True:
                # tasks added since the last round (reload) get their series at 0 now
                self.ensure_tasks(kernel)
                try:
                    await self.refresh_jobs(kernel, label)
                except Exception as exc:
                    log.warning(
                        "counting jobs for tickkit_jobs{driver=%r} failed: %s",
                        label,
                        redact(str(exc)),
                    )
                await kernel.clock.sleep(interval)
        finally:
            # a stopped kernel's counts would be stale: drop them
            for state in _STATES:
                try:
                    self.jobs.remove(label, state)
                except KeyError:
                    pass

    # --- HTTP ---------------------------------------------------------------------------

    def server_address(self, kernel: Kernel) -> tuple[str, int] | None:
        """``(host, port)`` the metrics server of ``kernel`` listens on, or None."""
        return self._servers.get(kernel.id)

    async def _serve(self, kernel: Kernel, addr: str, port: int) -> None:
        app = make_wsgi_app(self.registry)

        bound: list[WSGIServer] = []

        def bind() -> WSGIServer:
            # in a worker thread: resolving a host name may block
            family = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM)[0][0]

            class Server(_ThreadingWSGIServer):
                address_family = family

            server = make_server(addr, port, app, server_class=Server, handler_class=_QuietHandler)
            bound.append(server)
            return server

        try:
            server = await anyio.to_thread.run_sync(bind)
        except OSError as exc:
            raise PluginError(
                f"cannot serve metrics on {url_host(addr)}:{port}: {exc}"
                " (check --metrics-addr / metrics_addr and --metrics-port / metrics_port)"
            ) from exc
        except BaseException:
            for early in bound:  # the kernel stopped while the socket was being bound
                early.server_close()
            raise
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"tickkit-metrics-{server.server_port}",
            daemon=True,
        )
        thread.start()
        self._servers[kernel.id] = (addr, server.server_port)
        log.info("serving metrics on http://%s:%d/metrics", url_host(addr), server.server_port)
        try:
            await anyio.sleep_forever()
        finally:
            self._servers.pop(kernel.id, None)
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(server.shutdown)
            server.server_close()


def _interval(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise PluginError(f"{what} must be a number of seconds > 0, got {value!r}")
    return float(value)


_default_lock = threading.Lock()
_default: PrometheusPlugin | None = None


def default_plugin() -> PrometheusPlugin:
    """The instance behind the module-level hooks
    (``Kernel(plugins=["tickkit.plugins.prometheus"])``): metrics on the default ``REGISTRY``,
    created on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = PrometheusPlugin()
        return _default


# --- module-level hooks: the module itself is a plugin using the default instance ---------


@hookimpl
def tickkit_wrap_run(ctx: TaskContext) -> RunScope:
    return default_plugin().tickkit_wrap_run(ctx)


@hookimpl
def tickkit_run_started(ctx: TaskContext) -> None:
    default_plugin().tickkit_run_started(ctx)


@hookimpl
def tickkit_run_failed(ctx: TaskContext, retry_at: datetime | None) -> None:
    default_plugin().tickkit_run_failed(ctx, retry_at)


@hookimpl
def tickkit_run_timed_out(ctx: TaskContext, retry_at: datetime | None) -> None:
    default_plugin().tickkit_run_timed_out(ctx, retry_at)


@hookimpl
def tickkit_run_missed(job: Job, count: int) -> None:
    default_plugin().tickkit_run_missed(job, count)


@hookimpl
def tickkit_run_finished(ctx: TaskContext, outcome: Outcome, duration: float) -> None:
    default_plugin().tickkit_run_finished(ctx, outcome, duration)


@hookimpl
def tickkit_load_tasks(kernel: Kernel) -> list[TaskDefinition] | None:
    return default_plugin().tickkit_load_tasks(kernel)


@hookimpl
def tickkit_kernel_started(kernel: Kernel) -> None:
    default_plugin().tickkit_kernel_started(kernel)


@hookimpl
def tickkit_kernel_services(kernel: Kernel) -> list[Callable[[], Coroutine[Any, Any, None]]]:
    return default_plugin().tickkit_kernel_services(kernel)
