"""Cron expressions in a time zone, with cron's DST rules.

Fields: 5 (minute hour day-of-month month day-of-week) or 6 (second first). Each field takes
``*``, ``?`` (day fields), numbers, ranges ``a-b``, steps ``*/n``, ``a-b/n`` and ``a/n``, lists
``a,b``, month names (``jan``) and day names (``mon``); day-of-week 0 and 7 are Sunday; ``L`` in
the day-of-month field is the last day of the month. Aliases: ``@yearly`` (``@annually``),
``@monthly``, ``@weekly``, ``@daily`` (``@midnight``), ``@hourly``. When both day fields are
restricted, a day matches either (classic cron).

DST (docs/time.md): a *fixed-time* job (hour field neither ``*`` nor a step) whose local time is
skipped by a spring-forward jump runs once at the first instant after the jump, and a local
time inside a repeated fall-back hour runs once, in its first pass. A job whose hour field is a
wildcard or a step keeps real-time spacing: it does not run in a skipped hour and runs in both
passes of a repeated hour.
"""

from __future__ import annotations

import bisect
import calendar
import math
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from typing import Any

from tickkit import InvalidCronError, Schedule

from .zones import get_zone, zone_name

UTC = dt_timezone.utc
_EPOCH = datetime(1970, 1, 1)
#: how many years ahead a search goes before it decides a cron never fires
_YEARS_AHEAD = 30
#: probe step when looking for a UTC-offset transition between two instants
_PROBE = 7 * 86400

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = {m.lower(): i for i, m in enumerate(calendar.month_abbr) if m}
_DAYS = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}


class _Field:
    __slots__ = ("hi", "lo", "name", "names")

    def __init__(self, name: str, lo: int, hi: int, names: dict[str, int] | None = None) -> None:
        self.name, self.lo, self.hi, self.names = name, lo, hi, names or {}

    def value(self, text: str, expr: str) -> int:
        low = text.lower()
        if low in self.names:
            return self.names[low]
        if not text.isdigit():
            raise InvalidCronError(f"invalid {self.name} value {text!r} in cron {expr!r}")
        number = int(text)
        hi = 7 if self.name == "day-of-week" else self.hi
        if not self.lo <= number <= hi:
            raise InvalidCronError(
                f"{self.name} value {number} is out of range {self.lo}-{hi} in cron {expr!r}"
            )
        return 0 if self.name == "day-of-week" and number == 7 else number

    def parse(self, text: str, expr: str) -> tuple[frozenset[int], bool]:
        """Return the allowed values and whether the field is unrestricted (``*``/``?``)."""
        if not text:
            raise InvalidCronError(f"empty {self.name} field in cron {expr!r}")
        values: set[int] = set()
        for part in text.split(","):
            if not part:
                raise InvalidCronError(f"empty list item in the {self.name} field of cron {expr!r}")
            rng, _, step_text = part.partition("/")
            step = 1
            if _:
                if not step_text.isdigit() or int(step_text) == 0:
                    raise InvalidCronError(
                        f"invalid step {step_text!r} in the {self.name} field of cron {expr!r}"
                    )
                step = int(step_text)
            if rng in ("*", "?"):
                if rng == "?" and self.name not in ("day-of-month", "day-of-week"):
                    raise InvalidCronError(f"'?' is only allowed in day fields, cron {expr!r}")
                start, end = self.lo, self.hi
            elif "-" in rng:
                a, _, b = rng.partition("-")
                start, end = self.value(a, expr), self.value(b, expr)
                if self.name == "day-of-week" and end == 0 and b != "0":
                    end = 7  # "5-7" or "fri-sun"
                if end < start:
                    raise InvalidCronError(
                        f"range {rng!r} runs backwards in the {self.name} field of cron {expr!r}"
                    )
            else:
                start = self.value(rng, expr)
                end = self.hi if _ else start
            for v in range(start, end + 1, step):
                values.add(0 if self.name == "day-of-week" and v == 7 else v)
        star = text.split("/")[0] in ("*", "?") and "," not in text
        return frozenset(values), star


_SECOND = _Field("second", 0, 59)
_MINUTE = _Field("minute", 0, 59)
_HOUR = _Field("hour", 0, 23)
_DOM = _Field("day-of-month", 1, 31)
_MONTH = _Field("month", 1, 12, _MONTHS)
_DOW = _Field("day-of-week", 0, 6, _DAYS)


class CronSchedule(Schedule):
    """A cron expression evaluated in a time zone (default UTC)."""

    kind = "cron"

    def __init__(self, expression: str, timezone: str | None = None) -> None:
        if not isinstance(expression, str):
            raise InvalidCronError(f"a cron expression must be a string, got {expression!r}")
        self.expression = " ".join(expression.split())
        self.zone = get_zone(timezone)
        self.timezone = zone_name(self.zone)
        text = ALIASES.get(self.expression.lower(), self.expression)
        fields = text.split()
        if len(fields) == 5:
            fields = ["0", *fields]
        elif len(fields) != 6:
            raise InvalidCronError(
                f"invalid cron {expression!r}: expected 5 fields (minute hour day month weekday) "
                f"or 6 (second first), got {len(fields)}"
            )
        sec, minute, hour, dom, month, dow = fields
        last_day = False
        if dom.upper() == "L":
            last_day, dom = True, "*"
            dom_set, dom_star = frozenset(), False
        else:
            dom_set, dom_star = _DOM.parse(dom, expression)
        self._seconds = sorted(_SECOND.parse(sec, expression)[0])
        self._minutes = sorted(_MINUTE.parse(minute, expression)[0])
        self._hours = sorted(_HOUR.parse(hour, expression)[0])
        self._months = sorted(_MONTH.parse(month, expression)[0])
        self._doms = dom_set
        self._last_day = last_day
        self._dows, dow_star = _DOW.parse(dow, expression)
        self._dom_star = dom_star
        self._dow_star = dow_star
        #: True when the hour field is a wildcard or a step: real-time spacing across DST
        self.real_time = hour.startswith(("*", "?")) or "/" in hour
        self._fixed_offset = self.zone is UTC or isinstance(self.zone, dt_timezone)
        if self._next_wall(datetime(2000, 1, 1)) is None:
            raise InvalidCronError(f"cron {expression!r} never fires")

    # --- identity ----------------------------------------------------------------------
    def to_spec(self) -> dict[str, Any]:
        return {"type": "cron", "value": self.expression, "timezone": self.timezone}

    def describe(self) -> str:
        return f"cron {self.expression!r} ({self.timezone})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CronSchedule) and other.to_spec() == self.to_spec()

    def __hash__(self) -> int:
        return hash((self.expression, self.timezone))

    def __repr__(self) -> str:
        return f"CronSchedule({self.expression!r}, timezone={self.timezone!r})"

    # --- wall-clock matching -----------------------------------------------------------
    def _day_ok(self, y: int, mo: int, d: int) -> bool:
        dom_ok = d in self._doms or (self._last_day and d == calendar.monthrange(y, mo)[1])
        dom_restricted = not self._dom_star
        dow_restricted = not self._dow_star
        if dom_restricted and dow_restricted:
            return dom_ok or ((calendar.weekday(y, mo, d) + 1) % 7) in self._dows
        if dom_restricted:
            return dom_ok
        if dow_restricted:
            return ((calendar.weekday(y, mo, d) + 1) % 7) in self._dows
        return True

    def matches_wall(self, wall: datetime) -> bool:
        """Whether a local wall time matches the fields."""
        return (
            wall.month in self._months
            and self._day_ok(wall.year, wall.month, wall.day)
            and wall.hour in self._hours
            and wall.minute in self._minutes
            and wall.second in self._seconds
        )

    def _next_wall(self, start: datetime) -> datetime | None:
        """The first matching naive wall time at or after ``start`` (second resolution)."""
        y, mo, d = start.year, start.month, start.day
        h, mi, s = start.hour, start.minute, start.second
        limit = y + _YEARS_AHEAD
        months, hours, minutes, seconds = self._months, self._hours, self._minutes, self._seconds
        while y <= limit:
            i = bisect.bisect_left(months, mo)
            if i == len(months):
                y, mo, d, h, mi, s = y + 1, months[0], 1, 0, 0, 0
                continue
            if months[i] != mo:
                mo, d, h, mi, s = months[i], 1, 0, 0, 0
            ndays = calendar.monthrange(y, mo)[1]
            while d <= ndays and not self._day_ok(y, mo, d):
                d, h, mi, s = d + 1, 0, 0, 0
            if d > ndays:
                mo, d, h, mi, s = mo + 1, 1, 0, 0, 0
                if mo > 12:
                    y, mo = y + 1, 1
                continue
            i = bisect.bisect_left(hours, h)
            if i == len(hours):
                d, h, mi, s = d + 1, 0, 0, 0
                if d > ndays:
                    mo, d = mo + 1, 1
                    if mo > 12:
                        y, mo = y + 1, 1
                continue
            if hours[i] != h:
                h, mi, s = hours[i], 0, 0
            i = bisect.bisect_left(minutes, mi)
            if i == len(minutes):
                h, mi, s = h + 1, 0, 0
                if h > 23:
                    d, h = d + 1, 0
                    if d > ndays:
                        mo, d = mo + 1, 1
                        if mo > 12:
                            y, mo = y + 1, 1
                continue
            if minutes[i] != mi:
                mi, s = minutes[i], 0
            i = bisect.bisect_left(seconds, s)
            if i == len(seconds):
                mi, s = mi + 1, 0
                if mi > 59:
                    h, mi = h + 1, 0
                    if h > 23:
                        d, h = d + 1, 0
                        if d > ndays:
                            mo, d = mo + 1, 1
                            if mo > 12:
                                y, mo = y + 1, 1
                continue
            return datetime(y, mo, d, h, mi, seconds[i])
        return None

    # --- instants ----------------------------------------------------------------------
    def _offset(self, t: int) -> int:
        off = datetime.fromtimestamp(t, self.zone).utcoffset()
        assert off is not None
        return int(off.total_seconds())

    def _transition(self, lo: int, hi: int, off: int) -> int | None:
        """The first instant in (lo, hi] whose UTC offset differs from ``off``, or None."""
        prev = lo
        probe = lo
        while probe < hi:
            probe = min(probe + _PROBE, hi)
            if self._offset(probe) != off:
                a, b = prev, probe  # offset(a) == off, offset(b) != off
                while b - a > 1:
                    mid = (a + b) // 2
                    if self._offset(mid) == off:
                        a = mid
                    else:
                        b = mid
                return b
            prev = probe
        return None

    def _skip_second_pass(self, t: int) -> int:
        """For fixed-time jobs: move an instant inside a repeated hour's second pass to its end."""
        local = datetime.fromtimestamp(t, self.zone)
        if not local.fold:
            return t
        off_now = self._offset(t)
        first = local.replace(fold=0).utcoffset()
        assert first is not None
        delta = int(first.total_seconds()) - off_now
        if delta <= 0:
            return t
        # the transition T lies in (t - delta, t]: the first instant with the new offset
        a, b = t - delta - 1, t
        while b - a > 1:
            mid = (a + b) // 2
            if self._offset(mid) == off_now:
                b = mid
            else:
                a = mid
        return b + delta

    def next_fire(self, after: datetime) -> datetime | None:
        t = math.floor(after.timestamp()) + 1
        if self._fixed_offset:
            off = self._offset(t)
            wall = self._next_wall(_EPOCH + timedelta(seconds=t + off))
            if wall is None:
                return None
            return datetime.fromtimestamp(_wall_secs(wall) - off, UTC)
        if not self.real_time:
            t = self._skip_second_pass(t)
        for _ in range(1000):
            off = self._offset(t)
            wall = self._next_wall(_EPOCH + timedelta(seconds=t + off))
            if wall is None:
                return None
            c = _wall_secs(wall)
            u = c - off
            jump = self._transition(t, u, off)
            if jump is None:
                return datetime.fromtimestamp(u, UTC)
            off2 = self._offset(jump)
            if off2 > off:  # spring forward: walls [jump+off, jump+off2) do not exist
                if not self.real_time and c < jump + off2:
                    return datetime.fromtimestamp(jump, UTC)
                t = jump
            else:  # fall back: walls [jump+off2, jump+off) happen twice
                t = jump if self.real_time else jump + (off - off2)
        return None  # pragma: no cover - a zone with a thousand transitions in a row

    def dst_note(self, at: datetime) -> str | None:
        """Explain how DST moved or merged the run at ``at`` (a time from next_fire), if it did."""
        if self._fixed_offset:
            return None
        local = at.astimezone(self.zone)
        wall = local.replace(tzinfo=None)
        if not self.matches_wall(wall):
            return (
                f"moved: the local time was skipped by the DST change; runs at the first instant "
                f"after the jump ({local.strftime('%H:%M %Z')})"
            )
        a = local.replace(fold=0).utcoffset()
        b = local.replace(fold=1).utcoffset()
        if a != b:
            if self.real_time:
                return "repeated hour: this local time happens twice and runs in both passes"
            return (
                "merged: this local time happens twice (DST ends); it runs once, in the first pass"
            )
        return None


def _wall_secs(wall: datetime) -> int:
    return int((wall - _EPOCH).total_seconds())
