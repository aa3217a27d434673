"""Cron expressions in a time zone, with cron's DST rules, on croniter.

croniter parses and validates the fields and iterates local wall-clock times; this module
translates the syntax of cron-parser 5 (what Node BullMQ 6.7 calls) into croniter's and keeps
tickkit's DST layer on top. The syntax and where it reads differently from classic cron are in
docs/time.md ("Cron syntax").

Fields: 5 (minute hour day-of-month month day-of-week) or 6 (second first). Lists, ranges,
steps, month and day names, ``?``, ``L`` (``L`` and ``1,L`` in day-of-month; ``5L`` in
day-of-week: the last Friday, ``1,5L``: every Monday and the last Friday), ``#`` (``1#2``: the
second Monday), ``W`` (``15W``, croniter's nearest weekday; Node cannot run it), Jenkins
``H`` (hashed from the job's key, see :meth:`CronSchedule.keyed`) and the macros ``@yearly``
(``@annually``), ``@monthly``, ``@weekly``, ``@daily`` (``@midnight``), ``@hourly``,
``@minutely``, ``@secondly``, ``@weekdays``, ``@weekends``.

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
import re
from datetime import date, datetime, time, timedelta
from datetime import timezone as dt_timezone
from functools import lru_cache
from typing import Any

from croniter import croniter
from croniter.croniter import CroniterBadDateError

from tickkit import InvalidCronError, Schedule
from tickkit.plugin_api import UTC, short

from .zones import get_zone, zone_name

_EPOCH = datetime(1970, 1, 1)
#: how many years ahead a search goes before it decides a cron never fires
_YEARS_AHEAD = 30
#: probe step when looking for a UTC-offset transition between two instants
_PROBE = 7 * 86400
#: the longest expression accepted (cron-parser's limit)
_MAX_LENGTH = 1024

#: cron-parser's macros (all seconds-first); matched case-insensitively
ALIASES = {
    "@yearly": "0 0 0 1 1 *",
    "@annually": "0 0 0 1 1 *",
    "@monthly": "0 0 0 1 * *",
    "@weekly": "0 0 0 * * 0",
    "@daily": "0 0 0 * * *",
    "@midnight": "0 0 0 * * *",
    "@hourly": "0 0 * * * *",
    "@minutely": "0 * * * * *",
    "@secondly": "* * * * * *",
    "@weekdays": "0 0 0 * * 1-5",
    "@weekends": "0 0 0 * * 0,6",
}
#: field names and highest values as cron-parser reads them (seconds first)
_NAMES = ("second", "minute", "hour", "day-of-month", "month", "day-of-week")
_HIGH = (59, 59, 23, 31, 12, 7)
_SEC, _MIN, _HOUR, _DOM, _MON, _DOW = range(6)
#: croniter's field order (seconds last) for each of ours
_CRONITER_ORDER = (_MIN, _HOUR, _DOM, _MON, _DOW, _SEC)
_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    )
}
_DAYS = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
_ALPHA = re.compile(r"[a-z]{3}")  # names, as cron-parser finds them
_ALLOWED = re.compile(r"^[0-9a-z*?,/#()-]+$")
_STEP_FROM = re.compile(r"^([0-9]+)/([0-9]+)$")
_EQUAL_RANGE = re.compile(r"^([0-9]+)-([0-9]+)(?:/([0-9]+))?$")
_LAST_WEEKDAY = re.compile(r"^([0-9]+)l$")


def _bad(field: int, expr: str, why: str) -> InvalidCronError:
    return InvalidCronError(f"invalid {_NAMES[field]} field in cron {short(expr)}: {why}")


def _translate(field: int, text: str, expr: str) -> str:
    """One field in cron-parser's syntax -> the same field in croniter's, same meaning."""
    if not text.isascii() or not _ALLOWED.match(text.lower()):
        raise _bad(field, expr, f"unexpected character in {short(text)}")
    low = text.lower()
    if field in (_MON, _DOW):
        names = _MONTHS if field == _MON else _DAYS

        def name(m: re.Match[str]) -> str:
            word = m.group(0)
            if word not in names:
                raise _bad(field, expr, f"unknown name {short(word)}")
            return str(names[word])

        low = _ALPHA.sub(name, low)
    if field == _DOW and "#" in low and re.search(r"[,/-]", low):
        raise _bad(field, expr, "'#' cannot be combined with ',', '-' or '/'")
    out = []
    for item in low.split(","):
        if not item:
            raise _bad(field, expr, "empty list item")
        if item == "?":
            if field not in (_DOM, _DOW):
                raise _bad(field, expr, "'?' is only allowed in the day fields")
            item = "*"
        elif "h" in item:
            pass  # Jenkins H: resolved by croniter with the key
        elif (m := _STEP_FROM.match(item)) is not None:
            # cron-parser: "a/n" is "a-<highest>/n" (day-of-week: up to 7, Sunday)
            item = f"{m.group(1)}-{_HIGH[field]}/{m.group(2)}"
        elif field == _DOW and (m := _LAST_WEEKDAY.match(item)) is not None:
            # "5L" (last Friday) is croniter's "L5". cron-parser reads only the first digit of
            # the number before L ("14L" is the last Monday, "05L" the last Sunday): so do we
            item = f"l{int(m.group(1)[0]) % 7}"
        if (m := _EQUAL_RANGE.match(item)) is not None and m.group(1) == m.group(2):
            item = m.group(1)  # "3-3" is 3 (croniter reads an equal range as the whole field)
        if (m := _EQUAL_RANGE.match(item)) is not None:
            if m.group(3) is not None and int(m.group(3)) == 0:
                raise _bad(field, expr, f"invalid step '0' in {short(item)}")
            if int(m.group(1)) > int(m.group(2)):
                raise _bad(field, expr, f"range {short(item)} runs backwards")
        if field == _DOW:
            # croniter takes 0-6 (and 7 alone): a range ending at 7 ends at Sunday
            m = _EQUAL_RANGE.match(item)
            if m is not None and int(m.group(2)) == 7 and int(m.group(1)) <= 7:
                lo, step = int(m.group(1)), int(m.group(3) or 1)
                days = sorted({d % 7 for d in range(lo, 8, step)})
                item = ",".join(str(d) for d in days)
        out.append(item)
    return ",".join(out)


def _fields_of(expression: str) -> list[str]:
    text = ALIASES.get(expression.lower(), expression)
    fields = text.split(" ")
    if len(fields) == 5:
        fields = ["0", *fields]
    elif len(fields) != 6:
        raise InvalidCronError(
            f"invalid cron {short(expression)}: expected 5 fields (minute hour day month weekday) "
            f"or 6 (second first), got {len(fields)}"
        )
    return fields


def _croniter_text(fields: list[str]) -> str:
    return " ".join(fields[i] for i in _CRONITER_ORDER)


@lru_cache(maxsize=1024)
def _dow_parts(dow: str) -> tuple[str, ...]:
    """A day-of-week field (croniter's syntax) as parts croniter reads alone, whose union it is.

    croniter refuses an ``L`` item in a list (``1,L5``); cron-parser reads such a list as the
    union of its items (``1,5L``: every Monday and the last Friday). The plain items stay one
    part, each ``L`` item is a part of its own.
    """
    items = dow.split(",")
    if len(items) < 2 or not any(item.startswith("l") for item in items):
        return (dow,)
    plain = [item for item in items if not item.startswith("l")]
    last = tuple(dict.fromkeys(item for item in items if item.startswith("l")))
    return ((",".join(plain),) if plain else ()) + last


def _expand(
    fields: list[str], raw: list[str], expression: str, key: bytes | None
) -> list[list[Any]]:
    """croniter's expansion of the translated fields (seconds first); errors name the field.

    A day-of-week list with ``L`` items is expanded part by part (:func:`_dow_parts`), its
    values the union of the parts'.
    """
    parts = _dow_parts(fields[_DOW])
    if len(parts) > 1:
        merged: list[Any] = []
        expanded: list[list[Any]] = []
        for part in parts:
            expanded = _expand([*fields[:_DOW], part], raw, expression, key)
            merged.extend(v for v in expanded[_DOW] if v not in merged)
        return [*expanded[:_DOW], ["*"] if "*" in merged else merged]
    try:
        expanded = croniter.expand(_croniter_text(fields), hash_id=key)[0]
    except Exception as exc:  # croniter raises ValueError and TypeError subclasses
        # name the field croniter refuses: each one alone among wildcards
        for i in range(6):
            probe = ["0" if j == _SEC else "*" for j in range(6)]
            probe[i] = fields[i]
            try:
                croniter.expand(_croniter_text(probe), hash_id=key or b"")
            except Exception as field_exc:
                reason = str(field_exc).replace(f"[{_croniter_text(probe)}] ", "")
                raise _bad(i, expression, f"{short(raw[i])} ({short(reason)[1:-1]})") from None
        raise InvalidCronError(f"invalid cron {short(expression)}: {short(str(exc))}") from None
    return [expanded[_CRONITER_ORDER.index(i)] for i in range(6)]


@lru_cache(maxsize=1024)
def _compile(expression: str, key: str | None) -> tuple[str, list[str], list[list[Any]]]:
    """(the pattern with H resolved, croniter's fields, croniter's expansion) for a pattern."""
    if len(expression) > _MAX_LENGTH:
        raise InvalidCronError(
            f"invalid cron {short(expression)}: longer than {_MAX_LENGTH} characters"
        )
    if not expression.isascii():
        bad = next(c for c in expression if not c.isascii())
        raise InvalidCronError(f"invalid cron {short(expression)}: unexpected character {bad!r}")
    raw = _fields_of(expression)
    fields = [_translate(i, text, expression) for i, text in enumerate(raw)]
    hashed = [i for i in range(6) if "h" in fields[i]]
    hash_id = (key or "").encode() if hashed else None
    expanded = _expand(fields, raw, expression, hash_id)
    if hashed:
        # store the resolved values, so that Node (which hashes at random) computes the same times
        for i in hashed:
            values = expanded[i]
            last: list[str] = []
            if i == _DOW and len(parts := _dow_parts(fields[i])) > 1:
                # a list with L items: resolve the plain part, keep the L items (as "5L")
                last = [f"{p[1:]}L" for p in parts if p.startswith("l")]
                values = (
                    []
                    if parts[0].startswith("l")
                    else _expand([*fields[:_DOW], parts[0]], raw, expression, hash_id)[_DOW]
                )
            plain = ["*"] if values == ["*"] else [str(v) for v in values]
            raw[i] = ",".join(plain + last)
            fields[i] = _translate(i, raw[i], expression) if last else raw[i]
        expanded = _expand(fields, raw, expression, None)
    resolved = expression
    if hashed:
        resolved = " ".join(raw[1:] if len(expression.split(" ")) == 5 else raw)
    # cron-parser's day rule: a day field is a wildcard only when written "*" or "?"; two
    # restricted fields match when either does. croniter folds a restricted field that covers
    # every day into "*" (and then only the other field counts): every day matches then.
    dom_raw, dow_raw = raw[_DOM], raw[_DOW]
    dom_star, dow_star = dom_raw in ("*", "?"), dow_raw in ("*", "?")
    dom_all = expanded[_DOM] == ["*"] or set(expanded[_DOM]) >= set(range(1, 32))
    dow_all = expanded[_DOW] == ["*"] or set(expanded[_DOW]) >= set(range(7))
    if (not dom_star and dom_all) or (not dow_star and dow_all and not re.search("[#lL]", dow_raw)):
        fields[_DOM] = fields[_DOW] = "*"
    return resolved, fields, expanded


_MIDNIGHT = time(0)


#: which days of a month croniter matches, by (day fields, month length, weekday of the 1st):
#: those decide every day-field form (L, W, #, steps), so a pattern needs at most 28 answers
_DAYS_CACHE: dict[tuple[str, str, int, int], tuple[int, ...] | None] = {}
_DAYS_CACHE_SIZE = 8192


@lru_cache(maxsize=1024)
def _plain_sets(dom: str, dow: str) -> tuple[frozenset[int] | None, frozenset[int] | None] | None:
    """croniter's values of day fields that hold only values (None: L, W or # in them)."""
    if any(c in dom or c in dow for c in "lw#"):
        return None
    expanded = croniter.expand(f"0 0 {dom} * {dow} 0")[0]
    by_dom = None if expanded[2] == ["*"] else frozenset(expanded[2])
    by_dow = None if expanded[4] == ["*"] else frozenset(expanded[4])
    return by_dom, by_dow


def _croniter_days(dom: str, dow: str, year: int, month: int) -> tuple[int, ...] | None:
    """The days of a month croniter matches for the day fields (None: no day ever)."""
    first_weekday, length = calendar.monthrange(year, month)
    key = (dom, dow, length, first_weekday)
    try:
        return _DAYS_CACHE[key]
    except KeyError:
        pass
    days: tuple[int, ...] | None
    plain = _plain_sets(dom, dow)
    if plain is not None:
        # values only (no L, W or #): croniter's expansion, and membership decides
        by_dom, by_dow = plain
        days = tuple(
            d
            for d in range(1, length + 1)
            if (by_dom is None or d in by_dom)
            and (by_dow is None or (first_weekday + d) % 7 in by_dow)
        )
    else:
        start = datetime(year, month, 1) - timedelta(seconds=1)
        it = croniter(f"0 0 {dom} * {dow} 0", start, ret_type=datetime)
        found_days: list[int] = []
        while True:
            try:
                found = it.get_next(datetime)
            except (CroniterBadDateError, OverflowError, ValueError):
                days = tuple(found_days) if found_days else None
                break
            if (found.year, found.month) != (year, month):
                days = tuple(found_days)
                break
            found_days.append(found.day)
    if len(_DAYS_CACHE) >= _DAYS_CACHE_SIZE:
        _DAYS_CACHE.clear()
    _DAYS_CACHE[key] = days
    return days


def clear_caches() -> None:
    """Forget cached croniter answers (benchmarks measure the cold path with it)."""
    _DAYS_CACHE.clear()
    _plain_sets.cache_clear()
    _compile.cache_clear()


def _month_days(dom: str, dow: str, year: int, month: int) -> tuple[int, ...] | None:
    """The days of a month that match (None: no day ever does).

    Both day fields restricted: a day matches when either does (cron-parser's rule), asked of
    croniter one field at a time.
    """
    parts = _dow_parts(dow)
    if len(parts) == 1 and (dom == "*" or dow == "*"):
        return _croniter_days(dom, dow, year, month)
    # the union of the day-of-month field's days and each day-of-week part's (a list with L)
    found = [_croniter_days("*", part, year, month) for part in parts]
    if dom != "*":
        found.append(_croniter_days(dom, "*", year, month))
    if all(days is None for days in found):
        return None
    return tuple(sorted(set().union(*(days or () for days in found))))


class CronSchedule(Schedule):
    """A cron expression evaluated in a time zone (default UTC).

    ``key`` is what a Jenkins ``H`` hashes (a task name or a job id; see :meth:`keyed`): the
    spec stores the resolved pattern.
    """

    kind = "cron"

    def __init__(
        self, expression: str, timezone: str | None = None, *, key: str | None = None
    ) -> None:
        if not isinstance(expression, str):
            raise InvalidCronError(f"a cron expression must be a string, got {short(expression)}")
        if not expression.isascii():  # before splitting: str.split() knows Unicode spaces
            bad = next(c for c in expression if not c.isascii())
            raise InvalidCronError(
                f"invalid cron {short(expression)}: unexpected character {bad!r}"
            )
        text = " ".join(expression.split())  # fields are separated by any ASCII whitespace
        if text.lower() in ALIASES:
            # cron-parser has no @midnight: store its twin, so that Node can run it
            text = "@daily" if text.lower() == "@midnight" else text.lower()
        self.zone = get_zone(timezone)
        self.timezone = zone_name(self.zone)
        self.source = text
        self.key = key
        try:
            self.expression, fields, expanded = _compile(text, key)
        except InvalidCronError as exc:
            if text == expression:
                raise
            # the message names what the caller wrote, not only its whitespace-folded form
            raise InvalidCronError(f"{exc} (given as {short(expression)})") from None
        self._cron_text = _croniter_text(fields)
        self._hours = sorted(expanded[_HOUR]) if expanded[_HOUR] != ["*"] else list(range(24))
        self._minutes = sorted(expanded[_MIN]) if expanded[_MIN] != ["*"] else list(range(60))
        self._seconds = sorted(expanded[_SEC]) if expanded[_SEC] != ["*"] else list(range(60))
        hour = _fields_of(self.expression)[_HOUR].lower()
        #: True when the hour field is a wildcard or a step: real-time spacing across DST
        self.real_time = hour.startswith(("*", "?")) or "/" in hour
        self._fixed_offset = self.zone is UTC or isinstance(self.zone, dt_timezone)
        months = expanded[_MON]
        self._months = frozenset(range(1, 13) if months == ["*"] else months)
        #: the day fields in croniter's syntax: which days match is croniter's answer
        self._days = (fields[_DOM], fields[_DOW])
        if self._next_wall(datetime(2000, 1, 1)) is None:
            raise InvalidCronError(f"cron {short(expression)} never fires")

    def keyed(self, key: str) -> CronSchedule:
        """This schedule with ``H`` hashed from ``key`` (the task name or the job id)."""
        if key == self.key or "h" not in self.source.lower() or self.source.startswith("@"):
            return self
        return CronSchedule(self.source, self.timezone, key=key)

    # --- identity ----------------------------------------------------------------------
    def to_spec(self) -> dict[str, Any]:
        return {"type": "cron", "value": self.expression, "timezone": self.timezone}

    def describe(self) -> str:
        if self.expression != self.source:
            return f"cron {self.expression!r} ({self.source!r}) ({self.timezone})"
        return f"cron {self.expression!r} ({self.timezone})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CronSchedule) and other.to_spec() == self.to_spec()

    def __hash__(self) -> int:
        return hash((self.expression, self.timezone))

    def __repr__(self) -> str:
        return f"CronSchedule({self.expression!r}, timezone={self.timezone!r})"

    # --- wall-clock matching (croniter) --------------------------------------------------
    def matches_wall(self, wall: datetime) -> bool:
        """Whether a local wall time matches the fields."""
        return self._next_wall(wall.replace(microsecond=0)) == wall

    def _time_on(self, day: date, start: time) -> datetime | None:
        """The first time of the fields at or after ``start`` on a day croniter matched."""
        hours, minutes, seconds = self._hours, self._minutes, self._seconds
        h, mi, s = start.hour, start.minute, start.second
        i = bisect.bisect_left(hours, h)
        while i < len(hours):
            if hours[i] != h:
                mi, s = 0, 0
            j = bisect.bisect_left(minutes, mi)
            while j < len(minutes):
                if minutes[j] != mi:
                    s = 0
                k = bisect.bisect_left(seconds, s)
                if k < len(seconds):
                    return datetime.combine(day, time(hours[i], minutes[j], seconds[k]))
                j, s = j + 1, 0
            i, mi, s = i + 1, 0, 0
        return None

    def _next_wall(self, start: datetime) -> datetime | None:
        """The first matching naive wall time at or after ``start`` (second resolution)."""
        y, mo, d = start.year, start.month, start.day
        at: time | None = start.time()
        last = y + _YEARS_AHEAD
        while y <= last:
            if mo in self._months:
                days = _month_days(*self._days, y, mo)
                if days is None:
                    return None  # croniter finds no day at all
                for day in days[bisect.bisect_left(days, d) :]:
                    found = self._time_on(date(y, mo, day), at if day == d else _MIDNIGHT)
                    if found is not None:
                        return found
            mo, d, at = mo + 1, 1, _MIDNIGHT
            if mo > 12:
                y, mo = y + 1, 1
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
