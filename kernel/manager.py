"""The plugin manager: entry-point discovery and a typed facade over ``pm.hook``."""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Callable, Coroutine, Iterable
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from functools import lru_cache
from importlib import metadata
from typing import TYPE_CHECKING, Any

import attrs
import pluggy

from . import hookspecs
from .codec import Codec, JSONCodec
from .errors import (
    DriverError,
    DriverNotFoundError,
    InvalidScheduleError,
    MissingExtraError,
    PluginError,
    describe_error,
    short,
)
from .schedule import Schedule, parse_with

if TYPE_CHECKING:
    from .context import TaskContext
    from .driver import Driver
    from .kernel import Kernel
    from .models import Job, Outcome
    from .registry import TaskDefinition

log = logging.getLogger("tickkit.plugins")

PLUGIN_GROUP = "tickkit.plugins"
#: the extra that brings each built-in driver's dependency
_EXTRAS = {"sqlite": "sqlite", "redis": "redis", "rediss": "redis"}
DRIVER_GROUP = "tickkit.drivers"


@attrs.frozen
class EntryPointInfo:
    """One entry point found in a group, loaded or not (shown by ``tickkit plugins``)."""

    name: str
    value: str
    distribution: str | None
    version: str | None
    error: str | None = None


def _entry_points(group: str) -> list[metadata.EntryPoint]:
    return sorted(metadata.entry_points(group=group), key=lambda ep: ep.name)


def _dist_of(ep: metadata.EntryPoint) -> tuple[str | None, str | None]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return None, None
    return dist.metadata["Name"], dist.version


def create_plugin_manager(
    plugins: Iterable[object] = (), *, entry_points: bool = True
) -> pluggy.PluginManager:
    """Create a plugin manager with the hookspecs, the installed plugins and ``plugins``.

    Installed plugins come from the ``tickkit.plugins`` entry-point group (tickkit's own built-in
    plugins are registered there too). Unknown hook implementations fail at once
    (``check_pending``).
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    if entry_points:
        for ep in _entry_points(PLUGIN_GROUP):
            if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken third-party plugin must not stop the kernel
                log.error("plugin %s (%s) failed to load: %s", ep.name, ep.value, exc)
                continue
            pm.register(plugin, name=ep.name)
    for plugin in plugins:
        if isinstance(plugin, str):
            name = plugin
            try:
                plugin = _import(name)
            except Exception as exc:  # ImportError, AttributeError, or the module's own error
                raise PluginError(
                    f"plugin {short(name)} failed to import: {describe_error(exc)}"
                ) from exc
        if not pm.is_registered(plugin):
            pm.register(plugin)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(str(exc)) from exc
    return pm


def _import(dotted: str) -> object:
    module, _, attr = dotted.partition(":")
    __import__(module)
    obj: object = sys.modules[module]
    for part in filter(None, attr.split(".")):
        obj = getattr(obj, part)
    return obj


def list_plugins() -> list[EntryPointInfo]:
    """Every entry point of ``tickkit.plugins``, with the error of those that fail to load."""
    return _describe(PLUGIN_GROUP)


def list_drivers() -> list[EntryPointInfo]:
    """Every entry point of ``tickkit.drivers``, with the error of those that fail to load."""
    return _describe(DRIVER_GROUP)


def _describe(group: str) -> list[EntryPointInfo]:
    found = []
    for ep in _entry_points(group):
        dist, version = _dist_of(ep)
        error = None
        try:
            ep.load()
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        found.append(EntryPointInfo(ep.name, ep.value, dist, version, error))
    return found


def load_driver_class(scheme: str) -> type[Driver]:
    """The driver class registered for a URL scheme in ``tickkit.drivers``."""
    for ep in _entry_points(DRIVER_GROUP):
        if ep.name == scheme:
            try:
                cls: type[Driver] = ep.load()
            except MissingExtraError:
                raise
            except ImportError as exc:
                dist, _version = _dist_of(ep)
                if dist == "tickkit":
                    raise MissingExtraError(
                        f"the {scheme!r} driver ({ep.value})",
                        _EXTRAS.get(scheme, scheme),
                        exc.name or str(exc),
                    ) from exc
                raise DriverError(
                    f"the {scheme!r} driver ({ep.value}, from {dist or 'an unknown package'}) "
                    f"failed to import: {exc}"
                ) from exc
            return cls
    known = ", ".join(ep.name for ep in _entry_points(DRIVER_GROUP)) or "none"
    raise DriverNotFoundError(
        f"no driver handles the URL scheme {scheme!r} (installed driver schemes: {known})"
    )


class Hooks:
    """A typed facade over ``pm.hook``: the kernel calls hooks only through these methods."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self._hook = pm.hook
        self._parse_cached = lru_cache(maxsize=4096)(self._parse_spec)

    def _has(self, name: str) -> bool:
        return bool(getattr(self._hook, name).get_hookimpls())

    # schedule parsing
    def parse_schedule(self, value: object, timezone: str | None = None) -> Schedule:
        if isinstance(value, Schedule):
            return value
        return parse_with(self._parse_hook, value, timezone)

    def parse_known(self, value: object, timezone: str | None = None) -> Schedule | None:
        """Like :meth:`parse_schedule`, but None when no plugin understands ``value`` (it may
        be a schedule type of a plugin these hooks lack); a plugin that recognized it and found
        it bad raises as there."""
        if isinstance(value, Schedule):
            return value
        seen: list[Schedule | None] = []

        def parse(v: object, tz: str | None) -> Schedule | None:
            result = self._parse_hook(v, tz)
            seen.append(result)
            return result

        try:
            return parse_with(parse, value, timezone)
        except InvalidScheduleError:
            if seen == [None]:
                return None
            raise

    def _parse_hook(self, value: object, timezone: str | None) -> Schedule | None:
        result: Schedule | None = self._hook.tickkit_parse_schedule(value=value, timezone=timezone)
        return result

    def parse_spec(self, spec: dict[str, Any]) -> Schedule:
        """Parse a stored spec, cached (stored specs repeat on every occurrence)."""
        try:
            key = json.dumps(spec, sort_keys=True, default=str)
        except Exception as exc:  # a stored spec that is not JSON (mixed key types, too deep)
            raise InvalidScheduleError(
                f"stored schedule {short(spec)} cannot be read: {describe_error(exc)}"
            ) from None
        return self._parse_cached(key)

    def _parse_spec(self, text: str) -> Schedule:
        return self.parse_schedule(json.loads(text))

    # persistence
    def resolve_driver(self, url: str, options: dict[str, Any]) -> Driver | None:
        result: Driver | None = self._hook.tickkit_resolve_driver(url=url, options=options)
        return result

    def data_codec(self) -> Codec:
        codec: Codec | None = self._hook.tickkit_data_codec()
        return codec if codec is not None else JSONCodec()

    def job_meta(self, job: Job, kernel: Kernel) -> dict[str, str]:
        merged: dict[str, str] = {}
        for part in self._hook.tickkit_job_meta(job=job, kernel=kernel):
            if part:
                merged.update(part)
        return merged

    # execution (called on every run: skipped cheaply when nothing implements them)
    def refresh(self) -> None:
        """Re-read which execution hooks have implementations (after registering plugins)."""
        self.active = {
            name
            for name in (
                "tickkit_wrap_run",
                "tickkit_run_started",
                "tickkit_run_succeeded",
                "tickkit_run_failed",
                "tickkit_run_timed_out",
                "tickkit_run_skipped",
                "tickkit_run_missed",
                "tickkit_run_finished",
            )
            if self._has(name)
        }

    def wrap_run(self, ctx: TaskContext) -> list[AbstractAsyncContextManager[Any]]:
        if "tickkit_wrap_run" not in self.active:
            return []
        return [cm for cm in self._hook.tickkit_wrap_run(ctx=ctx) if cm is not None]

    def run_started(self, ctx: TaskContext) -> None:
        if "tickkit_run_started" in self.active:
            self._safe(self._hook.tickkit_run_started, ctx=ctx)

    def run_succeeded(self, ctx: TaskContext, result: Any, duration: float) -> None:
        if "tickkit_run_succeeded" in self.active:
            self._safe(self._hook.tickkit_run_succeeded, ctx=ctx, result=result, duration=duration)

    def run_failed(
        self, ctx: TaskContext, error: BaseException, retry_at: datetime | None, duration: float
    ) -> None:
        if "tickkit_run_failed" in self.active:
            self._safe(
                self._hook.tickkit_run_failed,
                ctx=ctx,
                error=error,
                retry_at=retry_at,
                duration=duration,
            )

    def run_timed_out(self, ctx: TaskContext, timeout: float, retry_at: datetime | None) -> None:
        if "tickkit_run_timed_out" in self.active:
            self._safe(
                self._hook.tickkit_run_timed_out, ctx=ctx, timeout=timeout, retry_at=retry_at
            )

    def run_skipped(self, ctx: TaskContext) -> None:
        if "tickkit_run_skipped" in self.active:
            self._safe(self._hook.tickkit_run_skipped, ctx=ctx)

    def run_missed(self, job: Job, scheduled_at: datetime, count: int, now: datetime) -> None:
        if "tickkit_run_missed" in self.active:
            self._safe(
                self._hook.tickkit_run_missed,
                job=job,
                scheduled_at=scheduled_at,
                count=count,
                now=now,
            )

    def run_finished(self, ctx: TaskContext, outcome: Outcome, duration: float) -> None:
        if "tickkit_run_finished" in self.active:
            self._safe(self._hook.tickkit_run_finished, ctx=ctx, outcome=outcome, duration=duration)

    # lifecycle
    def load_tasks(self, kernel: Kernel) -> list[TaskDefinition]:
        found: list[TaskDefinition] = []
        for part in self._hook.tickkit_load_tasks(kernel=kernel):
            if part:
                found.extend(part)
        return found

    def kernel_services(self, kernel: Kernel) -> list[Callable[[], Coroutine[Any, Any, None]]]:
        found: list[Callable[[], Coroutine[Any, Any, None]]] = []
        for part in self._hook.tickkit_kernel_services(kernel=kernel):
            if part:
                found.extend(part)
        return found

    def kernel_started(self, kernel: Kernel) -> None:
        self._safe(self._hook.tickkit_kernel_started, kernel=kernel)

    def kernel_stopping(self, kernel: Kernel) -> None:
        self._safe(self._hook.tickkit_kernel_stopping, kernel=kernel)

    @staticmethod
    def _safe(caller: Callable[..., Any], **kwargs: Any) -> None:
        """Observer hooks never break a run or the kernel: their errors are logged."""
        try:
            caller(**kwargs)
        except Exception:
            log.exception("a plugin's %s hook raised", getattr(caller, "name", "?"))


_default_lock = threading.Lock()
_default_hooks: Hooks | None = None


def default_hooks() -> Hooks:
    """The process-wide hooks from installed plugins (used to validate task definitions)."""
    global _default_hooks
    with _default_lock:
        if _default_hooks is None:
            _default_hooks = Hooks(create_plugin_manager())
            _default_hooks.refresh()
        return _default_hooks
