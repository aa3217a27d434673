"""Typed exceptions. Every message names the value that was refused."""

from __future__ import annotations

import reprlib
from typing import Any

#: how many characters of a value an error message shows
SHORT_LIMIT = 200


def short(value: Any, limit: int = SHORT_LIMIT) -> str:
    """A repr of ``value`` for an error message: at most ``limit`` characters, and never raising.

    ``repr`` itself can fail on hostile input: an int of more than 4,300 digits (ValueError),
    a structure nested thousands deep (RecursionError), an object whose ``__repr__`` raises.
    Those are described by their type instead.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        text = f"<int of {value.bit_length()} bits>"
    elif isinstance(value, str) and len(value) > limit:
        text = repr(value[:limit])
    else:
        try:
            text = _REPR.repr(value)
        except Exception as exc:  # any hostile __repr__; RecursionError included
            text = f"<{type(value).__name__} object (repr failed: {type(exc).__name__})>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_error(exc: BaseException, limit: int = SHORT_LIMIT) -> str:
    """``"TypeName: message"`` for an exception, short and never raising."""
    try:
        text = str(exc)
    except Exception:
        text = short(exc, limit)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


def printable(text: str) -> str:
    """``text`` with lone surrogates escaped, so every store can hold it."""
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def error_text(error: BaseException, limit: int = 2000) -> str:
    """``"TypeName: message"`` of a task's exception as a store records it: printable, at most
    ``limit`` characters, never raising (:func:`describe_error` is the short form for
    messages)."""
    try:
        detail = str(error)
    except Exception:
        detail = "<str() of the exception failed>"
    text = printable(f"{type(error).__name__}: {detail}")
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _SafeRepr(reprlib.Repr):
    """reprlib with larger limits and ints and strings kept short."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 4
        self.maxdict = self.maxlist = self.maxtuple = self.maxset = 8
        self.maxstring = self.maxother = SHORT_LIMIT
        self.maxlong = 60

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 256:
            return f"<int of {x.bit_length()} bits>"
        return super().repr_int(x, level)


_REPR = _SafeRepr()


class TickkitError(Exception):
    """Base class of every error tickkit raises on purpose."""


class InvalidScheduleError(TickkitError, ValueError):
    """A schedule that cannot be parsed (bad cron, bad date, unknown type...)."""


class InvalidCronError(InvalidScheduleError):
    """A cron expression that is not valid."""


class UnknownTimezoneError(InvalidScheduleError):
    """A time zone name that the IANA database does not know."""


class InvalidDataError(TickkitError, ValueError):
    """Task data that is not JSON."""


class InvalidJobIdError(TickkitError, ValueError):
    """A caller-given job id that tickkit cannot store."""


class InvalidTaskError(TickkitError, ValueError):
    """A task definition with a bad option."""


class InvalidArgumentError(TickkitError, ValueError):
    """Another argument of a tickkit call that is not valid (a list filter, say)."""


class UnknownTaskError(TickkitError, LookupError):
    """A task name that no loaded task has."""


class DuplicateTaskError(TickkitError, ValueError):
    """Two static tasks share one name."""


class JobExistsError(TickkitError, ValueError):
    """A job with this id exists and ``replace=True`` was not given."""


class JobNotFoundError(TickkitError, LookupError):
    """No job has this id (raised only where a missing job cannot be ignored)."""


class PrepareResultError(TickkitError, TypeError):
    """A task's ``prepare`` returned something other than a bool."""


class DriverError(TickkitError):
    """A driver failed; the message says what, and nothing stored was lost."""


class DriverNotFoundError(DriverError, LookupError):
    """No installed driver handles this URL scheme."""


class MissingExtraError(DriverError, ImportError):
    """A driver or plugin needs an optional dependency that is not installed."""

    def __init__(self, what: str, extra: str, missing: str) -> None:
        self.what = what
        self.extra = extra
        self.missing = missing
        super().__init__(
            f"{what} needs the {missing!r} package, which is not installed: "
            f"run `pip install tickkit[{extra}]`"
        )


class IncompatibleStoreError(DriverError):
    """The store is not a tickkit store, or was written by a newer tickkit."""


class KernelNotRunningError(TickkitError, RuntimeError):
    """A module-level function was called with no running kernel."""


class PluginError(TickkitError):
    """A plugin failed to load or implements a hook that does not exist."""
