"""Cron on croniter: cron-parser 5's syntax, its readings of the day fields, Jenkins H, errors
(docs/time.md, "Cron syntax"). The DST rules are in tests/test_schedules.py; the comparison with
Node's cron-parser in tests/test_cron_differential.py."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickkit import (
    UTC,
    InvalidCronError,
    Kernel,
    TaskRegistry,
    next_runs,
    parse_schedule,
    task,
)
from tickkit.plugins.schedules import CronSchedule
from tickkit.testing import VirtualClock

T = datetime(2026, 1, 1, tzinfo=UTC)  # a Thursday


def days(expr: str, n: int = 5, after: datetime = T, tz: str = "UTC") -> list[str]:
    return [
        d.strftime("%a %m-%d %H:%M") for d in next_runs(expr, after=after, count=n, timezone=tz)
    ]


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("0 9 * * 1#2", ["Mon 01-12 09:00", "Mon 02-09 09:00", "Mon 03-09 09:00"]),
        ("30 18 * * 5L", ["Fri 01-30 18:30", "Fri 02-27 18:30", "Fri 03-27 18:30"]),
        ("30 18 * * friL", ["Fri 01-30 18:30", "Fri 02-27 18:30", "Fri 03-27 18:30"]),
        ("0 0 * * 7L", ["Sun 01-25 00:00", "Sun 02-22 00:00", "Sun 03-29 00:00"]),
        ("0 0 1,L * *", ["Sat 01-31 00:00", "Sun 02-01 00:00", "Sat 02-28 00:00"]),
        ("0 0 15W * *", ["Thu 01-15 00:00", "Mon 02-16 00:00", "Mon 03-16 00:00"]),
        ("0 0 1 * ?", ["Sun 02-01 00:00", "Sun 03-01 00:00", "Wed 04-01 00:00"]),
        ("0 12 * JAN-MAR MON", ["Mon 01-05 12:00", "Mon 01-12 12:00", "Mon 01-19 12:00"]),
        ("5/20 10 1 1 *", ["Thu 01-01 10:05", "Thu 01-01 10:25", "Thu 01-01 10:45"]),
        ("@weekdays", ["Fri 01-02 00:00", "Mon 01-05 00:00", "Tue 01-06 00:00"]),
        ("@weekends", ["Sat 01-03 00:00", "Sun 01-04 00:00", "Sat 01-10 00:00"]),
        ("@minutely", ["Thu 01-01 00:01", "Thu 01-01 00:02", "Thu 01-01 00:03"]),
        ("@MIDNIGHT", ["Fri 01-02 00:00", "Sat 01-03 00:00", "Sun 01-04 00:00"]),
    ],
)
def test_cron_parser_syntax(expr: str, expected: list[str]) -> None:
    assert days(expr, 3) == expected


def test_fields_are_separated_by_ascii_whitespace() -> None:
    assert CronSchedule(" 0\t9  * *\n1 ") == CronSchedule("0 9 * * 1")


def test_secondly_and_six_fields() -> None:
    assert [d.second for d in next_runs("@secondly", after=T, count=3)] == [1, 2, 3]
    assert [d.second for d in next_runs("10/25 * * * * *", after=T, count=3)] == [10, 35, 10]


def test_day_field_readings_of_cron_parser() -> None:
    # a step in day-of-month restricts: odd days, not every day
    assert days("0 0 */2 * *", 3) == ["Sat 01-03 00:00", "Mon 01-05 00:00", "Wed 01-07 00:00"]
    # day-of-week "1/2" is 1-7/2: Monday, Wednesday, Friday and Sunday (7)
    assert days("0 0 * * 1/2", 4) == [
        "Fri 01-02 00:00",
        "Sun 01-04 00:00",
        "Mon 01-05 00:00",
        "Wed 01-07 00:00",
    ]
    # a step in one day field, the other restricted: either matches
    assert days("0 0 13 * */2", 4) == [
        "Sat 01-03 00:00",
        "Sun 01-04 00:00",
        "Tue 01-06 00:00",
        "Thu 01-08 00:00",
    ]
    assert "Tue 01-13 00:00" in days("0 0 13 * */2", 8)
    assert days("0 0 1/2 * mon", 3) == ["Sat 01-03 00:00", "Mon 01-05 00:00", "Wed 01-07 00:00"]
    assert "Mon 01-12 00:00" in days("0 0 1/2 * mon", 8)  # an even day, but a Monday
    # a restricted field covering every day (1-31) with the other restricted: every day
    assert days("0 0 1-31 * */3", 3) == ["Fri 01-02 00:00", "Sat 01-03 00:00", "Sun 01-04 00:00"]
    # an equal range is its one value (croniter alone reads "1-1" as the whole field)
    assert days("0 0 1-1 * *", 2) == ["Sun 02-01 00:00", "Sun 03-01 00:00"]


#: next fire times from 2026-01-01T00:00Z as Node BullMQ 6's getNextMillis (cron-parser 5.10.3,
#: contrib/bullmq-interop) computed them, run once; test_cron_differential.py checks them live
NODE_LAST_WEEKDAY_LISTS = [
    ("0 0 * * 1,5L", "UTC", ["01-05", "01-12", "01-19", "01-26", "01-30", "02-02"]),
    ("0 0 * * 5L,1", "UTC", ["01-05", "01-12", "01-19", "01-26", "01-30", "02-02"]),
    ("0 0 * * friL,mon", "UTC", ["01-05", "01-12", "01-19", "01-26", "01-30", "02-02"]),
    ("0 0 * * 1-3,5L", "UTC", ["01-05", "01-06", "01-07", "01-12", "01-13", "01-14"]),
    ("0 0 * * */3,5L", "UTC", ["01-03", "01-04", "01-07", "01-10", "01-11", "01-14"]),
    ("0 0 * * 5L,5", "UTC", ["01-02", "01-09", "01-16", "01-23", "01-30", "02-06"]),
    ("0 0 15 * 1,5L", "UTC", ["01-05", "01-12", "01-15", "01-19", "01-26", "01-30"]),
    ("0 0 L * 1,5L", "UTC", ["01-05", "01-12", "01-19", "01-26", "01-30", "01-31"]),
    # cron-parser reads only the first digit before L: 14L and 8L are the last Monday, 05L Sunday
    ("0 0 * * 14L", "UTC", ["01-26", "02-23", "03-30", "04-27", "05-25", "06-29"]),
    ("0 0 * * 8L", "UTC", ["01-26", "02-23", "03-30", "04-27", "05-25", "06-29"]),
    ("0 0 * * 05L", "UTC", ["01-25", "02-22", "03-29", "04-26", "05-31", "06-28"]),
    (
        "30 9 * * 0,6L",
        "Europe/Berlin",
        ["01-04T08:30", "01-11T08:30", "01-18T08:30", "01-25T08:30", "01-31T08:30", "02-01T08:30"],
    ),
    (
        "0 12 * * 5L,6L",
        "America/New_York",
        ["01-30T17:00", "01-31T17:00", "02-27T17:00", "02-28T17:00", "03-27T16:00", "03-28T16:00"],
    ),
]


@pytest.mark.parametrize(("expr", "zone", "node"), NODE_LAST_WEEKDAY_LISTS)
def test_last_weekday_in_a_day_of_week_list_matches_node(
    expr: str, zone: str, node: list[str]
) -> None:
    """A day-of-week list with L items is the union of its items, as in cron-parser."""
    expected = [f"2026-{t if 'T' in t else t + 'T00:00'}:00+00:00" for t in node]
    runs = next_runs(expr, after=T, count=len(node), timezone=zone)
    assert [r.astimezone(UTC).isoformat() for r in runs] == expected
    assert CronSchedule(expr, zone).to_spec()["value"] == expr  # stored as written, for Node


def test_h_in_a_day_of_week_list_with_l_keeps_the_l_item() -> None:
    stored = CronSchedule("0 0 * * H,5L", key="job").expression
    assert stored.startswith("0 0 * * ") and stored.endswith(",5L")
    plain = int(stored.split(" ")[4].split(",")[0])  # the hashed day, 0-6 from Sunday
    runs = next_runs(stored, after=T, count=40)
    assert {d.weekday() for d in runs} == {(plain - 1) % 7, 4}  # that day and Fridays
    assert any(d.weekday() == 4 and d.day > 24 for d in runs)  # a last Friday among them


@pytest.mark.parametrize(
    ("expr", "field"),
    [
        ("² * * * *", "'²'"),
        ("*/² * * * *", "'²'"),
        ("0 0 \u0661 * *", "'\u0661'"),
        ("0\u00a00 * * *", "'\\xa0'"),
        ("0 0 LW * *", "day-of-month field"),
        ("0 0 * * 1#6", "day-of-week field"),
        ("0 0 * * 1-2#2", "day-of-week field"),
        ("0 0 * * 1,2#2", "day-of-week field"),
        ("0 0 * * 1#2,5L", "day-of-week field"),  # cron-parser refuses it too
        ("0 0 * * 1,L", "day-of-week field"),  # a standalone L: cron-parser refuses it too
        ("5-1 * * * *", "minute field"),
        ("0 0 * * fri-mon", "day-of-week field"),
        ("0 0 * foo *", "month field"),
        ("0 0 * * 5X", "day-of-week field"),
        ("0 0 */0 * *", "day-of-month field"),
        ("0 0 0 0 0 0 0", "expected 5 fields"),
        ("H(5-1) * * * *", "minute field"),
        ("x" * 2000, "longer than 1024"),
    ],
)
def test_bad_patterns_raise_invalid_cron_error(expr: str, field: str) -> None:
    with pytest.raises(InvalidCronError) as err:
        parse_schedule(expr)
    assert field in str(err.value)
    assert "cron" in str(err.value)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.text(alphabet="0123456789*/,-?#LWHlwh()² \u0661", min_size=1, max_size=6),
        min_size=5,
        max_size=6,
    )
)
def test_any_text_parses_or_raises_invalid_cron_error(fields: list[str]) -> None:
    """Anything else (ValueError, TypeError, another TickkitError) escapes and fails."""
    try:
        CronSchedule(" ".join(fields), "Europe/Berlin", key="job")
    except InvalidCronError:
        pass


# --- Jenkins H ---------------------------------------------------------------------------


def test_h_is_hashed_from_the_key_and_stored_resolved() -> None:
    a = CronSchedule("H H * * *", "Europe/Berlin", key="daily-report")
    b = CronSchedule("H H * * *", "Europe/Berlin", key="weekly-digest")
    assert a.to_spec()["value"] != "H H * * *"
    assert a.to_spec() != b.to_spec()
    # the same key always gives the same values (crc32, not Python's salted hash())
    assert a == CronSchedule("H H * * *", "Europe/Berlin", key="daily-report")
    assert a.to_spec()["value"] == "58 5 * * *"
    # the stored spec parses back to the same schedule
    assert parse_schedule(a.to_spec()) == a
    steps = CronSchedule("H/15 H(9-17) * * 1-5", key="x").to_spec()["value"]
    minutes, hours = steps.split()[:2]
    assert len(minutes.split(",")) == 4 and 9 <= int(hours) <= 17
    assert CronSchedule("H * * * * *", key="s").to_spec()["value"].count(" ") == 5
    assert "H H * * *" in a.describe()


def test_h_is_stable_across_processes() -> None:
    code = (
        "from tickkit.plugins.schedules import CronSchedule;"
        "print(CronSchedule('H H H * *', key='reminder').to_spec()['value'])"
    )
    values = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": str(seed)},
        ).stdout.strip()
        for seed in (1, 2)
    }
    assert values == {CronSchedule("H H H * *", key="reminder").to_spec()["value"]}


@pytest.mark.anyio
async def test_the_kernel_keys_h_by_task_name_and_job_id() -> None:
    registry = TaskRegistry()

    async def noop(ctx: object) -> None:
        return None

    task(name="hourly-report", schedule="H * * * *", execute=noop, registry=registry)
    task(name="dynamic", execute=noop, registry=registry)
    clock = VirtualClock(T)
    async with Kernel("memory://", tasks=registry, clock=clock) as kernel:
        static = await kernel.get_task("hourly-report")
        assert static is not None and static.schedule is not None
        assert static.schedule["value"] == CronSchedule("H * * * *", key="hourly-report").expression
        job_id = await kernel.create_task("dynamic", schedule="H H * * *", id="user-42")
        job = await kernel.get_task(job_id)
        assert job is not None and job.schedule is not None
        assert job.schedule["value"] == CronSchedule("H H * * *", key="user-42").expression
        unnamed = await kernel.create_task("dynamic", schedule="H H * * *")
        job = await kernel.get_task(unnamed)
        assert job is not None and job.schedule is not None
        assert job.schedule["value"] == CronSchedule("H H * * *", key="dynamic").expression


def test_tickkit_next_shows_the_new_syntax_and_h_by_key() -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tickkit", "next", *args, "--after", "2026-01-01T00:00:00Z"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    done = run("30 18 * * 5L", "--tz", "Europe/Berlin", "-n", "2", "--json")
    assert done.returncode == 0, done.stderr
    runs = [r["at"] for r in json.loads(done.stdout)["runs"]]
    assert runs == ["2026-01-30T18:30:00+01:00", "2026-02-27T18:30:00+01:00"]
    done = run("H H * * 1#2", "--key", "daily-report", "-n", "1", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["schedule"] == "cron '58 5 * * 1#2' ('H H * * 1#2') (UTC)"
    assert [r["at"] for r in out["runs"]] == ["2026-01-12T05:58:00+00:00"]
    done = run("² * * * *")
    assert done.returncode != 0 and "unexpected character '²'" in done.stderr


def test_lord_howe_fall_back_goes_on() -> None:
    """cron-parser gives up here ("loop limit exceeded"), so a Node scheduler stops; tickkit
    goes on (tests/test_cron_differential.py checks the Node side)."""
    after = datetime.fromisoformat("2026-04-04T23:00+11:00")
    assert days("0 21 * * *", 2, after, "Australia/Lord_Howe") == [
        "Sun 04-05 21:00",
        "Mon 04-06 21:00",
    ]
    runs = next_runs("0 */3 * * *", after=after, count=3, timezone="Australia/Lord_Howe")
    assert [r.isoformat() for r in runs] == [
        "2026-04-05T00:00:00+11:00",
        "2026-04-05T03:00:00+10:30",
        "2026-04-05T06:00:00+10:30",
    ]
