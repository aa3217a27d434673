"""The built-in schedule types: cron, date, interval and delay.

Registered through the ``tickkit.plugins`` entry-point group like any third-party plugin.
Accepted values (docs/time.md):

- a cron string: ``"0 0 * * *"`` (5 fields) or ``"*/10 * * * * *"`` (6, seconds first), ``@daily``;
- a duration string ``"6h"``, ``"10m"``, ``"1d"``, ``"1h30m"``, ``"45s"``: run once after that long;
- an aware ``datetime`` (a naive one takes the task's time zone; without one it is refused);
- a ``timedelta``: run once after that long;
- dicts: ``{"type": "cron", "value": "0 0 * * *", "timezone": "Europe/Berlin"}``,
  ``{"type": "date", "value": <datetime, epoch milliseconds or ISO string>}``,
  ``{"type": "interval", "value": <timedelta or seconds>}``.

Times and durations follow the kernel's limits (``tickkit.models``, docs/input.md): whole
milliseconds, dates from ``EARLIEST_TIME`` (1e11 epoch ms: a smaller number is Unix seconds and
refused) to ``LATEST_TIME``, durations up to ``MAX_DURATION``; zones are IANA names (zones.py).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from tickkit import InvalidScheduleError, Schedule, hookimpl
from tickkit.plugin_api import (
    LATEST_TIME,
    MAX_DURATION,
    MIN_EPOCH_MS,
    check_duration,
    check_time,
    from_millis,
    short,
    to_millis,
)

from .cron import CronSchedule
from .zones import get_zone

_DURATION = re.compile(r"\s*(?:(\d+(?:\.\d+)?)\s*([wdhms]|ms)\s*)+", re.IGNORECASE | re.ASCII)
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|[wdhms])", re.IGNORECASE | re.ASCII)
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
#: a duration string longer than this is not one (it would only be a slow way to say "too long")
_DURATION_MAX_CHARS = 200

__all__ = [
    "CronSchedule",
    "DateSchedule",
    "DelaySchedule",
    "IntervalSchedule",
    "parse_duration",
]


def parse_duration(text: str) -> timedelta | None:
    """``"6h"``, ``"10m"``, ``"1d"``, ``"1h30m"``, ``"500ms"`` as a timedelta of whole
    milliseconds; None if ``text`` is not a duration string. A duration out of range (more than
    ``tickkit.models.MAX_DURATION``) raises InvalidScheduleError."""
    if not isinstance(text, str) or len(text) > _DURATION_MAX_CHARS:
        return None
    if not _DURATION.fullmatch(text):
        return None
    seconds = math.fsum(float(n) * _UNITS[u.lower()] for n, u in _PART.findall(text))
    if seconds > MAX_DURATION.total_seconds():
        raise InvalidScheduleError(
            f"duration {short(text)} is out of range: at most {MAX_DURATION.days} days (1000 years)"
        )
    return check_duration(seconds, f"duration {short(text)}")


class DateSchedule(Schedule):
    """Run once at an instant (UTC, whole milliseconds, between 1970 and
    ``tickkit.models.LATEST_TIME``)."""

    kind = "date"

    def __init__(self, at: datetime) -> None:
        self.at = check_time(at, "a date")

    @property
    def recurring(self) -> bool:
        return False

    def first_fire(self, now: datetime) -> datetime | None:
        return self.at

    def next_fire(self, after: datetime) -> datetime | None:
        return self.at if self.at > after else None

    def to_spec(self) -> dict[str, Any]:
        return {"type": "date", "value": to_millis(self.at)}

    def describe(self) -> str:
        return f"once at {self.at.isoformat()}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DateSchedule) and other.at == self.at

    def __hash__(self) -> int:
        return hash(self.at)

    def __repr__(self) -> str:
        return f"DateSchedule({self.at.isoformat()!r})"


class DelaySchedule(Schedule):
    """Run once, a fixed time after the job is created (becomes a DateSchedule when stored)."""

    kind = "delay"

    def __init__(self, delay: timedelta) -> None:
        self.delay = check_duration(delay, "a delay")

    @property
    def recurring(self) -> bool:
        return False

    def anchored(self, now: datetime) -> Schedule:
        if self.delay > LATEST_TIME - now:
            raise InvalidScheduleError(
                f"a delay of {self.delay} from {now.isoformat()} ends after the latest time a "
                f"job may run ({LATEST_TIME.isoformat()})"
            )
        return DateSchedule(now + self.delay)

    def first_fire(self, now: datetime) -> datetime | None:
        return self.anchored(now).first_fire(now)

    def next_fire(self, after: datetime) -> datetime | None:
        return None

    def to_spec(self) -> dict[str, Any]:
        return {"type": "delay", "value": self.delay.total_seconds()}

    def describe(self) -> str:
        return f"once, {self.delay} after creation"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DelaySchedule) and other.delay == self.delay

    def __hash__(self) -> int:
        return hash(self.delay)

    def __repr__(self) -> str:
        return f"DelaySchedule({self.delay!r})"


class IntervalSchedule(Schedule):
    """Run every ``every`` (whole milliseconds, at least 1 ms); the first run is one period after
    the job is created (or after the kernel starts, for a static task that has never run)."""

    kind = "interval"

    def __init__(self, every: timedelta) -> None:
        self.every = check_duration(every, "an interval", positive=True)

    def next_fire(self, after: datetime) -> datetime | None:
        # past the latest time a job may run, the schedule has no more runs
        if self.every > LATEST_TIME - after:
            return None
        return after + self.every

    def to_spec(self) -> dict[str, Any]:
        return {"type": "interval", "value": self.every.total_seconds()}

    def describe(self) -> str:
        return f"every {self.every}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IntervalSchedule) and other.every == self.every

    def __hash__(self) -> int:
        return hash(self.every)

    def __repr__(self) -> str:
        return f"IntervalSchedule({self.every!r})"


def _to_datetime(value: object, tz: str | None, shown: object = None) -> datetime:
    shown = value if shown is None else shown
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            if tz is None:
                raise InvalidScheduleError(
                    f"naive datetime {short(shown)}: give an aware datetime or a task timezone"
                )
            value = value.replace(tzinfo=get_zone(tz))
        return check_time(value, "a date", shown=shown)
    if isinstance(value, bool):
        raise InvalidScheduleError(f"not a date: {short(value)}")
    if isinstance(value, (int, float)):
        return _from_epoch_ms(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(_iso(value))
        except ValueError:
            raise InvalidScheduleError(f"not a date: {short(value)} (use ISO 8601)") from None
        return _to_datetime(parsed, tz, value)
    raise InvalidScheduleError(f"not a date: {short(value)}")


def _iso(text: str) -> str:
    # Python 3.10's fromisoformat does not read a trailing "Z"
    return text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text


def _from_epoch_ms(value: float) -> datetime:
    """A date given as epoch milliseconds (BullMQ's unit). A number below ``MIN_EPOCH_MS``
    (``EARLIEST_TIME``, 1973-03-03) is refused: it is almost always Unix seconds, which read as
    milliseconds would land in January 1970 and run at once."""
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidScheduleError(f"not a date (epoch milliseconds): {short(value)}")
    if value < MIN_EPOCH_MS:
        raise InvalidScheduleError(
            f"date value {short(value)} is not a plausible time in epoch milliseconds (it would "
            f"be before 1973-03-03): a date number is milliseconds since 1970, not seconds; "
            f"for a Unix time in seconds multiply by 1000, or give an aware datetime"
        )
    if value > to_millis(LATEST_TIME):
        raise InvalidScheduleError(
            f"date value {short(value)} (epoch milliseconds) is after the latest time a job may "
            f"run ({LATEST_TIME.isoformat()})"
        )
    return from_millis(round(value))


def _to_timedelta(value: object, what: str, *, positive: bool) -> timedelta:
    if isinstance(value, str):
        parsed = parse_duration(value)
        if parsed is None:
            raise InvalidScheduleError(
                f"not a duration for {what}: {short(value)} (seconds, timedelta or '10m')"
            )
        return check_duration(parsed, what, positive=positive, shown=value)
    return check_duration(value, what, positive=positive)


_SPEC_KEYS = ("type", "value", "timezone", "tz")


@hookimpl(trylast=True)
def tickkit_parse_schedule(value: object, timezone: str | None) -> Schedule | None:
    """Parse the built-in schedule forms (see the module docstring)."""
    if isinstance(value, str):
        delay = parse_duration(value)
        if delay is not None:
            return DelaySchedule(delay)
        return CronSchedule(value, timezone)
    if isinstance(value, datetime):
        return DateSchedule(_to_datetime(value, timezone))
    if isinstance(value, timedelta):
        return DelaySchedule(value)
    if isinstance(value, Mapping):
        kind = value.get("type")
        if not isinstance(kind, str) or kind not in ("cron", "date", "interval", "delay"):
            return None
        unknown = [key for key in value if key not in _SPEC_KEYS]
        if unknown:
            raise InvalidScheduleError(
                f"unknown schedule key(s) {short(unknown)} in {short(value)} "
                f"(known: {', '.join(_SPEC_KEYS)})"
            )
        if "value" not in value:
            raise InvalidScheduleError(f"schedule {short(value)} has no 'value'")
        if "timezone" in value and "tz" in value:
            raise InvalidScheduleError(f"schedule {short(value)} gives both 'timezone' and 'tz'")
        tz = value.get("timezone", value.get("tz", timezone))
        raw = value["value"]
        if kind == "cron":
            return CronSchedule(raw, tz)
        if kind == "date":
            return DateSchedule(_to_datetime(raw, tz))
        if kind == "delay":
            return DelaySchedule(_to_timedelta(raw, "a delay", positive=False))
        return IntervalSchedule(_to_timedelta(raw, "an interval", positive=True))
    return None
