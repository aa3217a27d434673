"""Schedule parsing and cron's time semantics, DST included (docs/time.md)."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tickkit import (
    UTC,
    InvalidCronError,
    InvalidScheduleError,
    UnknownTimezoneError,
    next_runs,
    parse_schedule,
)
from tickkit.plugins.schedules import (
    CronSchedule,
    DateSchedule,
    DelaySchedule,
    IntervalSchedule,
    parse_duration,
)

NY = ZoneInfo("America/New_York")


def local(*args: int, tz: ZoneInfo = NY, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=tz, fold=fold)  # type: ignore[misc]


def fires(expr: str, after: datetime, n: int, tz: str = "America/New_York") -> list[datetime]:
    return [d.astimezone(UTC) for d in next_runs(expr, after=after, count=n, timezone=tz)]


# --- parsing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "fragment"),
    [
        ("* * * *", "expected 5 fields"),
        ("61 * * * *", "invalid minute field in cron '61 * * * *': '61'"),
        ("* 24 * * *", "invalid hour field in cron '* 24 * * *': '24'"),
        ("* * 0 * *", "invalid day-of-month field in cron '* * 0 * *': '0'"),
        ("* * * 13 *", "invalid month field in cron '* * * 13 *': '13'"),
        ("* * * * 8", "invalid day-of-week field in cron '* * * * 8': '8'"),
        ("*/0 * * * *", "invalid minute field in cron '*/0 * * * *': '*/0'"),
        ("5-1 * * * *", "runs backwards"),
        ("a * * * *", "invalid minute field in cron 'a * * * *': 'a'"),
        ("0 0 30 2 *", "never fires"),
        ("1,,2 * * * *", "empty list item"),
        ("? * * * *", "only allowed in the day fields"),
    ],
)
def test_invalid_cron_names_the_value(expr: str, fragment: str) -> None:
    with pytest.raises(InvalidCronError, match="cron") as err:
        parse_schedule(expr)
    assert fragment in str(err.value)
    assert repr(expr) in str(err.value) or expr in str(err.value)


def test_unknown_timezone() -> None:
    with pytest.raises(UnknownTimezoneError, match="'Mars/Olympus'"):
        parse_schedule("0 0 * * *", "Mars/Olympus")
    with pytest.raises(UnknownTimezoneError, match=r"'\.\./etc'"):
        parse_schedule({"type": "cron", "value": "0 0 * * *", "timezone": "../etc"})


def test_forms_of_schedules() -> None:
    assert parse_schedule("0 0 * * *") == CronSchedule("0 0 * * *", "UTC")
    assert parse_schedule({"type": "cron", "value": "0 0 * * *", "timezone": "Europe/Berlin"}) == (
        CronSchedule("0 0 * * *", "Europe/Berlin")
    )
    at = datetime(2026, 5, 1, 12, tzinfo=UTC)
    assert parse_schedule(at) == DateSchedule(at)
    assert parse_schedule({"type": "date", "value": at}) == DateSchedule(at)
    assert parse_schedule({"type": "date", "value": 1777636800000}) == DateSchedule(at)
    assert parse_schedule({"type": "date", "value": "2026-05-01T12:00:00Z"}) == DateSchedule(at)
    assert parse_schedule(timedelta(hours=6)) == DelaySchedule(timedelta(hours=6))
    assert parse_schedule("6h") == DelaySchedule(timedelta(hours=6))
    assert parse_schedule({"type": "interval", "value": 90}) == IntervalSchedule(
        timedelta(seconds=90)
    )
    assert parse_schedule({"type": "interval", "value": timedelta(minutes=5)}) == IntervalSchedule(
        timedelta(minutes=5)
    )
    assert parse_schedule({"type": "interval", "value": "10m"}) == IntervalSchedule(
        timedelta(minutes=10)
    )


def test_naive_datetime_needs_a_zone() -> None:
    naive = datetime(2026, 5, 1, 12)
    with pytest.raises(InvalidScheduleError, match="naive datetime"):
        parse_schedule(naive)
    berlin = parse_schedule(naive, "Europe/Berlin")
    assert isinstance(berlin, DateSchedule)
    assert berlin.at == datetime(2026, 5, 1, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "date", "value": "tomorrow"},
        {"type": "date", "value": True},
        {"type": "date", "value": [1]},
        {"type": "interval", "value": 0},
        {"type": "interval", "value": -5},
        {"type": "interval", "value": "soon"},
        {"type": "cron"},
        {"type": "cron", "value": "* * * * *", "every": 3},
        {"type": "weekly", "value": 1},
        42,
        object,
    ],
)
def test_bad_schedules_are_refused(bad: object) -> None:
    with pytest.raises(InvalidScheduleError):
        parse_schedule(bad)


def test_durations() -> None:
    assert parse_duration("6h") == timedelta(hours=6)
    assert parse_duration("10m") == timedelta(minutes=10)
    assert parse_duration("1d") == timedelta(days=1)
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("2w") == timedelta(weeks=2)
    assert parse_duration("500ms") == timedelta(milliseconds=500)
    assert parse_duration("1.5h") == timedelta(minutes=90)
    assert parse_duration("h") is None
    assert parse_duration("0 0 * * *") is None


def test_spec_roundtrip() -> None:
    for value in [
        "*/5 * * * *",
        {"type": "cron", "value": "0 9 * * 1-5", "timezone": "Asia/Tokyo"},
        {"type": "interval", "value": 30},
        datetime(2027, 1, 1, tzinfo=UTC),
    ]:
        schedule = parse_schedule(value)
        assert parse_schedule(schedule.to_spec()) == schedule


# --- cron fields ----------------------------------------------------------------------------


T = datetime(2026, 1, 1, tzinfo=UTC)  # a Thursday


def test_basic_fields_in_utc() -> None:
    assert next_runs("*/15 * * * *", after=T, count=3) == [
        T + timedelta(minutes=15),
        T + timedelta(minutes=30),
        T + timedelta(minutes=45),
    ]
    assert next_runs("0 9 * * mon-fri", after=T, count=3) == [
        datetime(2026, 1, 1, 9, tzinfo=UTC),
        datetime(2026, 1, 2, 9, tzinfo=UTC),
        datetime(2026, 1, 5, 9, tzinfo=UTC),
    ]
    # six fields: seconds first
    assert next_runs("*/20 * * * * *", after=T, count=3) == [
        T + timedelta(seconds=20),
        T + timedelta(seconds=40),
        T + timedelta(seconds=60),
    ]
    assert next_runs("@monthly", after=T, count=2) == [
        datetime(2026, 2, 1, tzinfo=UTC),
        datetime(2026, 3, 1, tzinfo=UTC),
    ]
    # L: the last day of the month, leap year included
    assert next_runs("0 0 L * *", after=datetime(2028, 1, 31, 1, tzinfo=UTC), count=2) == [
        datetime(2028, 2, 29, tzinfo=UTC),
        datetime(2028, 3, 31, tzinfo=UTC),
    ]
    # day 7 is Sunday, names are case-insensitive
    assert next_runs("0 12 * JAN 7", after=T, count=1) == [datetime(2026, 1, 4, 12, tzinfo=UTC)]


def test_day_of_month_or_day_of_week() -> None:
    # both restricted: either matches (classic cron)
    runs = next_runs("0 0 13 * fri", after=T, count=4)
    assert runs == [
        datetime(2026, 1, 2, tzinfo=UTC),  # Friday
        datetime(2026, 1, 9, tzinfo=UTC),  # Friday
        datetime(2026, 1, 13, tzinfo=UTC),  # the 13th
        datetime(2026, 1, 16, tzinfo=UTC),
    ]
    # day-of-month wildcard: only the weekday counts
    assert next_runs("0 0 * * fri", after=T, count=1) == [datetime(2026, 1, 2, tzinfo=UTC)]


def test_strictly_after_and_fractional_seconds() -> None:
    at = datetime(2026, 1, 1, 0, 15, tzinfo=UTC)
    assert next_runs("*/15 * * * *", after=at, count=1) == [at + timedelta(minutes=15)]
    assert next_runs("*/15 * * * *", after=at - timedelta(microseconds=1), count=1) == [at]


def test_feb_29_only_in_leap_years() -> None:
    assert next_runs("0 0 29 2 *", after=T, count=2) == [
        datetime(2028, 2, 29, tzinfo=UTC),
        datetime(2032, 2, 29, tzinfo=UTC),
    ]


# --- DST: cron's rules ----------------------------------------------------------------------


def test_fall_back_fixed_time_runs_once() -> None:
    # 2026-11-01: New York repeats 01:00-01:59. croniter fires at both 01:30s; cron runs once.
    runs = fires("30 1 * * *", datetime(2026, 10, 31, 12, tzinfo=UTC), 3)
    assert runs == [
        local(2026, 11, 1, 1, 30).astimezone(UTC),  # 01:30 EDT (first pass)
        local(2026, 11, 2, 1, 30).astimezone(UTC),
        local(2026, 11, 3, 1, 30).astimezone(UTC),
    ]
    assert runs[0] == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)


def test_fall_back_from_inside_the_second_pass() -> None:
    # a fixed job asked for its next run during the repeated hour's second pass does not run
    # again that night
    during = local(2026, 11, 1, 1, 10, fold=1)  # 01:10 EST
    assert fires("45 1 * * *", during, 1) == [local(2026, 11, 2, 1, 45).astimezone(UTC)]


def test_fall_back_wildcard_hour_keeps_real_time() -> None:
    runs = fires("*/30 * * * *", datetime(2026, 11, 1, 4, 45, tzinfo=UTC), 5)
    assert [r.strftime("%H:%M") for r in runs] == ["05:00", "05:30", "06:00", "06:30", "07:00"]
    # 05:00Z = 01:00 EDT, 05:30Z = 01:30 EDT, 06:00Z = 01:00 EST, 06:30Z = 01:30 EST
    hourly = fires("30 * * * *", datetime(2026, 11, 1, 4, tzinfo=UTC), 4)
    # 00:30 EDT, 01:30 EDT, 01:30 EST, 02:30 EST: an hourly job runs every real hour
    assert [r.strftime("%H:%M") for r in hourly] == ["04:30", "05:30", "06:30", "07:30"]


def test_spring_forward_fixed_time_runs_after_the_jump() -> None:
    # 2026-03-08: New York skips 02:00-02:59
    runs = fires("30 2 * * *", datetime(2026, 3, 7, 12, tzinfo=UTC), 2)
    assert runs[0] == datetime(2026, 3, 8, 7, tzinfo=UTC)  # 03:00 EDT, the first instant after
    assert runs[1] == local(2026, 3, 9, 2, 30).astimezone(UTC)
    # several skipped times coalesce into one run at the jump
    runs = fires("0,15,30 2 * * *", datetime(2026, 3, 7, 12, tzinfo=UTC), 2)
    assert runs == [datetime(2026, 3, 8, 7, tzinfo=UTC), local(2026, 3, 9, 2).astimezone(UTC)]


def test_spring_forward_wildcard_hour_skips_the_missing_hour() -> None:
    runs = fires("*/30 * * * *", datetime(2026, 3, 8, 6, tzinfo=UTC), 3)
    # 06:30Z = 01:30 EST, then 07:00Z = 03:00 EDT: real time keeps 30 minute spacing
    assert [r.strftime("%H:%M") for r in runs] == ["06:30", "07:00", "07:30"]


def test_dst_notes() -> None:
    cron = CronSchedule("30 2 * * *", "America/New_York")
    moved = cron.next_fire(datetime(2026, 3, 7, 12, tzinfo=UTC))
    assert moved is not None
    assert cron.dst_note(moved) is not None
    assert "moved" in (cron.dst_note(moved) or "")
    merged = CronSchedule("30 1 * * *", "America/New_York")
    at = merged.next_fire(datetime(2026, 10, 31, 12, tzinfo=UTC))
    assert at is not None
    assert "merged" in (merged.dst_note(at) or "")
    assert merged.dst_note(datetime(2026, 6, 1, 5, 30, tzinfo=UTC)) is None


def test_other_zones_half_hour_dst() -> None:
    # Lord Howe Island shifts by 30 minutes; Berlin by an hour at 02:00 local
    runs = fires("30 2 * * *", datetime(2026, 3, 28, 12, tzinfo=UTC), 2, tz="Europe/Berlin")
    assert runs[0] == datetime(2026, 3, 29, 1, tzinfo=UTC)  # 03:00 CEST
    lh = fires("45 1 * * *", datetime(2026, 4, 4, 0, tzinfo=UTC), 2, tz="Australia/Lord_Howe")
    # 2026-04-05 02:00 LHDT (+11) falls back to 01:30 LHST (+10:30): 01:45 happens twice and
    # runs once, in the first pass
    assert lh == [
        datetime(2026, 4, 4, 14, 45, tzinfo=UTC),  # 01:45 LHDT
        datetime(2026, 4, 5, 15, 15, tzinfo=UTC),  # 01:45 LHST the next day
    ]


def test_next_runs_are_strictly_increasing_over_a_year() -> None:
    for expr in ["*/7 * * * *", "30 1 * * *", "0 2 * * *", "15 */2 * * *"]:
        runs = fires(expr, datetime(2026, 1, 1, tzinfo=UTC), 2000)
        assert all(b > a for a, b in itertools.pairwise(runs))


def test_interval_and_date() -> None:
    assert next_runs({"type": "interval", "value": 60}, after=T, count=2) == [
        T + timedelta(minutes=1),
        T + timedelta(minutes=2),
    ]
    at = T + timedelta(days=3)
    assert next_runs(at, after=T, count=5) == [at]
