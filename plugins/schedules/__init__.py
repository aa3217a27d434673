"""The built-in schedule types: cron, date, interval and delay.

Registered through the ``tickkit.plugins`` entry-point group like any third-party plugin.
Accepted values (docs/schedules.md):

- a cron string: ``"0 0 * * *"`` (5 fields) or ``"*/10 * * * * *"`` (6, seconds first), ``@daily``;
- a duration string ``"6h"``, ``"10m"``, ``"1d"``, ``"1h30m"``, ``"45s"``: run once after that long;
- an aware ``datetime`` (a naive one takes the task's time zone; without one it is refused);
- a ``timedelta``: run once after that long;
- dicts: ``{"type": "cron", "value": "0 0 * * *", "timezone": "Europe/Berlin"}``,
  ``{"type": "date", "value": <datetime, epoch milliseconds or ISO string>}``,
  ``{"type": "interval", "value": <timedelta or seconds>}``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from tickkit import InvalidScheduleError, Schedule, hookimpl

from .cron import CronSchedule, get_zone

UTC = timezone.utc
_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)\s*([wdhms]|ms)\s*)+$", re.IGNORECASE)
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|[wdhms])", re.IGNORECASE)
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

__all__ = [
    "CronSchedule",
    "DateSchedule",
    "DelaySchedule",
    "IntervalSchedule",
    "parse_duration",
]


def parse_duration(text: str) -> timedelta | None:
    """``"6h"``, ``"10m"``, ``"1d"``, ``"1h30m"``, ``"500ms"`` as a timedelta; None if not one."""
    if not isinstance(text, str) or not _DURATION.match(text):
        return None
    seconds = sum(float(n) * _UNITS[u.lower()] for n, u in _PART.findall(text))
    return timedelta(seconds=seconds)


class DateSchedule(Schedule):
    """Run once at an instant."""

    kind = "date"

    def __init__(self, at: datetime) -> None:
        self.at = at.astimezone(UTC)

    @property
    def recurring(self) -> bool:
        return False

    def first_fire(self, now: datetime) -> datetime | None:
        return self.at

    def next_fire(self, after: datetime) -> datetime | None:
        return self.at if self.at > after else None

    def to_spec(self) -> dict[str, Any]:
        return {"type": "date", "value": round(self.at.timestamp() * 1000)}

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
        if delay < timedelta(0):
            raise InvalidScheduleError(f"a delay must not be negative, got {delay!r}")
        self.delay = delay

    @property
    def recurring(self) -> bool:
        return False

    def anchored(self, now: datetime) -> Schedule:
        return DateSchedule(now + self.delay)

    def first_fire(self, now: datetime) -> datetime | None:
        return now + self.delay

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


class IntervalSchedule(Schedule):
    """Run every ``every``; the first run is one period after the job is created (or after the
    kernel starts, for a static task that has never run)."""

    kind = "interval"

    def __init__(self, every: timedelta) -> None:
        if every <= timedelta(0):
            raise InvalidScheduleError(f"an interval must be positive, got {every!r}")
        self.every = every

    def next_fire(self, after: datetime) -> datetime | None:
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


def _to_datetime(value: object, tz: str | None) -> datetime:
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            if tz is None:
                raise InvalidScheduleError(
                    f"naive datetime {value!r}: give an aware datetime or a task timezone"
                )
            return value.replace(tzinfo=get_zone(tz)).astimezone(UTC)
        return value.astimezone(UTC)
    if isinstance(value, bool):
        raise InvalidScheduleError(f"not a date: {value!r}")
    if isinstance(value, (int, float)):
        try:
            return datetime.fromtimestamp(value / 1000, UTC)
        except (OverflowError, OSError, ValueError):
            raise InvalidScheduleError(f"not a date (epoch milliseconds): {value!r}") from None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidScheduleError(f"not a date: {value!r} (use ISO 8601)") from None
        return _to_datetime(parsed, tz)
    raise InvalidScheduleError(f"not a date: {value!r}")


def _to_timedelta(value: object, what: str) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise InvalidScheduleError(f"not a duration for {what}: {value!r}")
    if isinstance(value, (int, float)):
        return timedelta(seconds=value)
    if isinstance(value, str):
        parsed = parse_duration(value)
        if parsed is not None:
            return parsed
    raise InvalidScheduleError(
        f"not a duration for {what}: {value!r} (seconds, timedelta or '10m')"
    )


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
        if kind not in ("cron", "date", "interval", "delay"):
            return None
        unknown = set(value) - {"type", "value", "timezone", "tz"}
        if unknown:
            raise InvalidScheduleError(
                f"unknown schedule key(s) {sorted(unknown)} in {dict(value)!r}"
            )
        if "value" not in value:
            raise InvalidScheduleError(f"schedule {dict(value)!r} has no 'value'")
        tz = value.get("timezone", value.get("tz", timezone))
        raw = value["value"]
        if kind == "cron":
            return CronSchedule(raw, tz)
        if kind == "date":
            return DateSchedule(_to_datetime(raw, tz))
        if kind == "delay":
            return DelaySchedule(_to_timedelta(raw, "a delay"))
        return IntervalSchedule(_to_timedelta(raw, "an interval"))
    return None
