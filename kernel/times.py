"""Times and durations: the range every driver stores exactly, the one rule that checks a
time or a duration a user gives (docs/input.md), and epoch-millisecond conversions."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from .clock import UTC
from .errors import InvalidScheduleError, InvalidTaskError, TickkitError, short

# --- the limits every driver stores (docs/time.md, "Dates and durations") -----------------

#: the earliest time a job may run: 1e11 ms after the Unix epoch, 1973-03-03T09:46:40Z. Redis
#: cannot store a negative score (a date before 1970 never ran there, and ran at once on
#: SQLite), and a date given as a number below 1e11 ms is almost surely Unix seconds read as
#: milliseconds; one bound for both keeps every stored date spec readable back.
EARLIEST_TIME = datetime(1973, 3, 3, 9, 46, 40, tzinfo=UTC)
#: the latest time a job may run: 4999-12-31T23:59:59.999Z, epoch milliseconds 95,617,583,999,999.
#: Every driver stores it exactly: below 1e14 ms, Lua's ``tostring`` (``%.14g``) in the Redis
#: scripts still writes the integer (it switches to an exponent, and rounds, from year 5138);
#: BullMQ's delayed score ``ms * 4096 + seq`` still gives back the exact millisecond (``ms`` is
#: below 2**53 and 4096 a power of two); a JS Date goes to year 275760; and Python's datetime
#: can show it in any UTC offset.
LATEST_TIME = datetime(4999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)
#: the longest duration anywhere (interval, delay, timeout, backoff, misfire grace): 1000 years
#: of 365.25 days (a time plus a duration never leaves Python's datetime range)
MAX_DURATION = timedelta(days=365_250)
#: durations and times are whole milliseconds (what every driver stores)
RESOLUTION = timedelta(milliseconds=1)
#: the most attempts a job may have (retries + 1): a signed 32-bit integer in every store
MAX_ATTEMPTS = 2**31 - 1

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: EARLIEST_TIME in epoch milliseconds: a smaller number is not read as a date
MIN_EPOCH_MS = 100_000_000_000
_MS_US = 1000


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def round_ms(dt: datetime) -> datetime:
    """``dt`` (aware) in UTC, rounded to the nearest millisecond (half up)."""
    return from_millis(to_millis(dt))


_SAME: Any = object()


def check_time(
    value: datetime,
    what: str,
    error: type[TickkitError] = InvalidScheduleError,
    *,
    shown: object = _SAME,
) -> datetime:
    """An aware datetime as UTC rounded to whole milliseconds, refused outside
    ``EARLIEST_TIME``..``LATEST_TIME`` (naive datetimes are refused too). Errors name ``shown``
    (default: ``value``), the value as the caller gave it."""
    if shown is _SAME:
        shown = value
    if not isinstance(value, datetime):
        raise error(f"{what} must be a datetime, got {short(shown)}")
    try:
        offset = value.utcoffset()
    except Exception as exc:  # a tzinfo that fails
        raise error(f"{what} {short(shown)} has a time zone that fails: {short(exc)}") from None
    if offset is None:
        raise error(f"{what} {short(shown)} is naive: give an aware datetime (with a tzinfo)")
    try:
        at = round_ms(value.astimezone(UTC))
    except (OverflowError, ValueError):
        at = None
    if at is None or not EARLIEST_TIME <= at <= LATEST_TIME:
        raise error(
            f"{what} {short(shown)} is out of range: times run from "
            f"{EARLIEST_TIME.isoformat()} to {LATEST_TIME.isoformat()}"
        )
    return at


def check_duration(
    value: object,
    what: str,
    *,
    positive: bool = False,
    error: type[TickkitError] = InvalidScheduleError,
    shown: object = _SAME,
) -> timedelta:
    """A duration (seconds as int/float, or a timedelta) as a timedelta of whole milliseconds.

    Refused: bools, other types, NaN, infinities, negatives, more than ``MAX_DURATION``, and
    with ``positive`` a duration that rounds to 0 ms. Errors name ``shown`` (default:
    ``value``)."""
    if shown is _SAME:
        shown = value
    if isinstance(value, timedelta):
        delta = value
    elif _number(value):
        assert isinstance(value, (int, float))
        if (isinstance(value, float) and not math.isfinite(value)) or abs(
            value
        ) > MAX_DURATION.total_seconds() + 1:
            raise error(f"{what} {short(shown)} is out of range: {_duration_rule(positive)}")
        try:
            delta = timedelta(seconds=value)
        except (OverflowError, ValueError):
            raise error(
                f"{what} {short(shown)} is out of range: {_duration_rule(positive)}"
            ) from None
    else:
        raise error(f"{what} must be a number of seconds or a timedelta, got {short(shown)}")
    if not -MAX_DURATION <= delta <= MAX_DURATION:
        raise error(f"{what} {short(shown)} is out of range: {_duration_rule(positive)}")
    delta = _round_delta(delta)
    if delta < timedelta(0) or delta > MAX_DURATION or (positive and delta <= timedelta(0)):
        raise error(f"{what} {short(shown)} is out of range: {_duration_rule(positive)}")
    return delta


def _duration_rule(positive: bool) -> str:
    low = "at least 1 millisecond" if positive else "not negative"
    return f"it must be {low} and at most {MAX_DURATION.days} days (1000 years)"


def _round_delta(delta: timedelta) -> timedelta:
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    ms, rest = divmod(micros, _MS_US)
    if rest * 2 >= _MS_US:
        ms += 1
    return timedelta(milliseconds=ms)


def to_seconds(value: float | int | timedelta | None, what: str = "duration") -> float | None:
    """A duration (seconds or timedelta) as float seconds of whole milliseconds; None stays
    None. Refuses (InvalidTaskError, naming the value) what ``check_duration`` refuses."""
    if value is None:
        return None
    return check_duration(value, what, error=InvalidTaskError).total_seconds()


def utc(dt: datetime) -> datetime:
    """Return ``dt`` in UTC; a naive datetime is refused."""
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"naive datetime {dt!r}: give an aware datetime (with a tzinfo)")
    return dt.astimezone(UTC)


def to_millis(dt: datetime) -> int:
    """Epoch milliseconds of an aware datetime, rounded to the nearest (half up); exact
    integer arithmetic, so ``from_millis(to_millis(dt)) == dt`` for whole-millisecond times."""
    delta = dt - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    ms, rest = divmod(micros, _MS_US)
    return ms + 1 if rest * 2 >= _MS_US else ms


def from_millis(ms: int | float) -> datetime:
    """An aware UTC datetime from epoch milliseconds (exact for integers)."""
    if isinstance(ms, float) and ms.is_integer():
        ms = int(ms)
    return _EPOCH + timedelta(milliseconds=ms)


# --- issue 14: managing jobs (paging, run history, updates) ---------------------------------
