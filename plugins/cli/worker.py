"""``tickkit run``: a worker process that runs static tasks and the store's dynamic jobs until
SIGINT or SIGTERM (or ``--for SECONDS``), then shuts down gracefully."""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import anyio
import anyio.abc

from tickkit import Kernel, Outcome, TaskContext, TickkitError, hookimpl, redact_url

log = logging.getLogger("tickkit.worker")

PROMETHEUS_PLUGIN = "tickkit.plugins.prometheus"
#: the metrics server's address without --metrics-addr (the prometheus plugin's default)
DEFAULT_METRICS_ADDR = "127.0.0.1"


class WorkerLog:
    """A plugin that logs the worker's life and every run (records carry task, job id and
    attempt)."""

    def __init__(self, driver_url: str) -> None:
        #: the store URL as logged: its password masked
        self.driver_url = redact_url(driver_url)

    @staticmethod
    def _extra(ctx: TaskContext) -> dict[str, Any]:
        return {"task": ctx.task.name, "job_id": ctx.job_id, "attempt": ctx.attempt}

    @hookimpl
    def tickkit_kernel_started(self, kernel: Kernel) -> None:
        names = kernel.tasks.names()
        log.info(
            "worker %s running: driver %s, %d task(s)%s, concurrency %d (stop with Ctrl-C or "
            "SIGTERM)",
            kernel.id,
            self.driver_url,
            len(names),
            f" ({', '.join(names)})" if names else "",
            kernel.concurrency,
        )

    @hookimpl
    def tickkit_kernel_stopping(self, kernel: Kernel) -> None:
        log.info(
            "worker %s shutting down: taking no new jobs; running tasks get up to %ss to finish",
            kernel.id,
            kernel.shutdown_timeout,
        )

    @hookimpl
    def tickkit_run_started(self, ctx: TaskContext) -> None:
        log.info(
            "run of %s started (scheduled %s)",
            ctx.task.name,
            ctx.scheduled_at.isoformat(),
            extra=self._extra(ctx),
        )

    @hookimpl
    def tickkit_run_finished(self, ctx: TaskContext, outcome: Outcome, duration: float) -> None:
        level = logging.INFO if outcome in (Outcome.SUCCEEDED, Outcome.SKIPPED) else logging.WARNING
        log.log(
            level,
            "run of %s %s in %.3fs",
            ctx.task.name,
            outcome,
            duration,
            extra=self._extra(ctx),
        )


def build_kernel(
    *,
    driver: str,
    tasks_dir: str | None,
    reload: bool,
    concurrency: int,
    shutdown_timeout: float,
    metrics_port: int | None,
    metrics_addr: str | None = None,
) -> Kernel:
    """The worker's kernel, with the settings the folder, reload and Prometheus plugins read."""
    settings: dict[str, Any] = {"reload": reload}
    if tasks_dir is not None:
        settings["tasks_dir"] = tasks_dir
    plugins: list[object] = [WorkerLog(driver)]
    if metrics_port is not None:
        if importlib.util.find_spec(PROMETHEUS_PLUGIN) is None:
            raise TickkitError(
                f"--metrics-port needs the Prometheus plugin ({PROMETHEUS_PLUGIN}), which is not "
                "installed with this tickkit"
            )
        settings["metrics_port"] = metrics_port
        if metrics_addr is not None:
            settings["metrics_addr"] = metrics_addr
        plugins.append(PROMETHEUS_PLUGIN)
    return Kernel(
        driver,
        plugins=plugins,
        concurrency=concurrency,
        shutdown_timeout=shutdown_timeout,
        settings=settings,
    )


def check_metrics_address(addr: str | None, port: int) -> None:
    """Raise a :class:`~tickkit.TickkitError` naming ``addr`` and ``port`` when the metrics server
    could not listen there (a host that does not resolve, an address of no interface here, a port
    in use), so that ``tickkit run`` fails at once instead of running without its metrics."""
    host = addr if addr is not None else DEFAULT_METRICS_ADDR
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        family, kind, proto, _name, sockaddr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM
        )[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(sockaddr)
    except (OSError, UnicodeError, ValueError) as exc:
        raise TickkitError(
            f"cannot serve metrics on {shown}: {exc} (check --metrics-addr and --metrics-port)"
        ) from None


@contextmanager
def _signals() -> Iterator[Any]:
    """A receiver of SIGINT and SIGTERM, or None where the platform has no signal handlers."""
    with ExitStack() as stack:
        try:
            receiver = stack.enter_context(
                anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM)
            )
        except NotImplementedError:  # Windows' asyncio loop: Ctrl-C raises KeyboardInterrupt
            receiver = None
        yield receiver


async def serve(kernel: Kernel, run_for: float | None) -> None:
    """Run ``kernel`` until a signal (or ``run_for`` seconds), then stop it gracefully.

    A second signal during shutdown exits at once: claims still held are not released then,
    so their leases expire before another worker takes them.
    """

    async def on_signals(receiver: Any) -> None:
        stopping = False
        async for signum in receiver:
            name = signal.Signals(signum).name
            if not stopping:
                stopping = True
                log.info("received %s: shutting down", name)
                kernel.request_stop()
            else:
                log.warning(
                    "received %s again: exiting now; unfinished jobs are picked up again when "
                    "their leases expire",
                    name,
                )
                logging.shutdown()
                os._exit(1)

    async def stop_later(seconds: float) -> None:
        await anyio.sleep(seconds)
        log.info("--for %ss elapsed: shutting down", seconds)
        kernel.request_stop()

    with _signals() as receiver:
        async with anyio.create_task_group() as tg:
            if receiver is not None:
                tg.start_soon(on_signals, receiver)
            if run_for is not None:
                tg.start_soon(stop_later, run_for)
            try:
                await kernel.serve()
            except BaseException:
                # a start that failed half way (a task file that does not import...) leaves the
                # driver open: close it so that no connection thread outlives the command
                with anyio.CancelScope(shield=True):
                    await kernel.stop()
                raise
            tg.cancel_scope.cancel()
    log.info("worker %s stopped", kernel.id)
