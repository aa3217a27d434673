"""Typed exceptions. Every message names the value that was refused."""

from __future__ import annotations


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
