"""The kernel's options: checking ``Kernel(...)`` arguments and resolving its driver."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .driver import Driver
from .errors import DriverError, InvalidArgumentError, TickkitError, error_text, short
from .manager import load_driver_class
from .redact import redact, redact_url, scrub
from .registry import TaskRegistry

if TYPE_CHECKING:
    from .manager import Hooks


#: the longest ``shutdown_timeout`` / ``cancel_grace`` (seconds): one year
MAX_WAIT_SECONDS = 365 * 24 * 3600.0
#: the most runs at once one kernel allows
MAX_CONCURRENCY = 1_000_000
#: the most worker threads one kernel runs plain ``def`` functions in at once
MAX_THREADS = 10_000


def check_options(
    *,
    tasks: object,
    plugins: object,
    context: object,
    clock: object,
    concurrency: object,
    thread_limit: object,
    shutdown_timeout: object,
    cancel_grace: object,
    driver_options: object,
    entry_points: object,
    settings: object,
) -> None:
    """Refuse a bad Kernel(...) option with InvalidArgumentError naming it and its value."""

    def bad(name: str, value: object, rule: str) -> InvalidArgumentError:
        return InvalidArgumentError(f"Kernel option {name} must be {rule}, got {short(value)}")

    if (
        isinstance(concurrency, bool)
        or not isinstance(concurrency, int)
        or not 1 <= concurrency <= MAX_CONCURRENCY
    ):
        raise bad("concurrency", concurrency, f"an int from 1 to {MAX_CONCURRENCY}")
    if (
        isinstance(thread_limit, bool)
        or not isinstance(thread_limit, int)
        or not 1 <= thread_limit <= MAX_THREADS
    ):
        raise bad("thread_limit", thread_limit, f"an int from 1 to {MAX_THREADS}")
    for name, value in (("shutdown_timeout", shutdown_timeout), ("cancel_grace", cancel_grace)):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not (0 <= value <= MAX_WAIT_SECONDS)  # also refuses nan
        ):
            raise bad(name, value, f"a number of seconds from 0 to {MAX_WAIT_SECONDS:.0f}")
    for name, value in (
        ("context", context),
        ("driver_options", driver_options),
        ("settings", settings),
    ):
        if value is not None and not isinstance(value, Mapping):
            raise bad(name, value, "a mapping or None")
        if isinstance(value, Mapping) and not all(isinstance(k, str) for k in value):
            raise bad(name, value, "a mapping with str keys")
    if not isinstance(entry_points, bool):
        raise bad("entry_points", entry_points, "True or False")
    if tasks is not None and (
        isinstance(tasks, (str, bytes, Mapping)) or not isinstance(tasks, (TaskRegistry, Iterable))
    ):
        raise bad("tasks", tasks, "a TaskRegistry, an iterable of task definitions or None")
    if isinstance(plugins, (str, bytes, Mapping)) or not isinstance(plugins, Iterable):
        raise bad("plugins", plugins, "an iterable of plugin objects or 'module:attr' names")
    if clock is not None and not all(
        callable(getattr(clock, attr, None)) for attr in ("now", "wait_until", "sleep_until")
    ):
        raise bad("clock", clock, "a Clock (with now, wait_until and sleep_until) or None")


def running_trio() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return True
    return False


#: refused in a driver URL: no store, file system or socket takes them (and they are easy to
#: pass by accident: a NUL from C, a lone surrogate from a badly decoded byte)
UNSAFE_URL_CHARS = re.compile("[\x00\ud800-\udfff]")


def describe_driver(spec: object) -> str:
    """A driver URL or object for a message, without credentials."""
    return redact(spec if isinstance(spec, str) else short(spec))


def resolve_driver(spec: Driver | str, hooks: Hooks, options: Mapping[str, Any]) -> Driver:
    """The driver object for a Driver or a URL (the ``tickkit_resolve_driver`` hook first,
    then the ``tickkit.drivers`` entry point of its scheme); DriverError for a bad URL."""
    if isinstance(spec, Driver):
        return spec
    if not isinstance(spec, str) or "://" not in spec:
        raise TickkitError(
            "driver must be a Driver object or a URL like 'memory://', "
            f"got {describe_driver(short(spec))}"
        )
    shown = redact_url(spec)
    if UNSAFE_URL_CHARS.search(spec):
        raise DriverError(
            f"driver URL {short(shown)} holds a NUL or a lone surrogate character; "
            "percent-encode it"
        )
    try:
        driver = hooks.resolve_driver(spec, dict(options))
        if driver is None:
            cls = load_driver_class(spec.split("://", 1)[0].lower())
            driver = cls.from_url(spec, **options)
    except TickkitError:
        raise
    except Exception as exc:
        # a driver's parser or constructor failing on a hostile URL or option: one typed
        # error, the URL masked (the parser's text may quote a piece of the password)
        detail = scrub(error_text(exc, 500), spec)
        if shown != spec:
            detail = type(exc).__name__
        given = f" or its options {short(list(options))}"
        raise DriverError(
            f"the driver for {short(shown)} refused the URL{given if options else ''}: {detail}"
        ) from None
    return driver
