"""Hostile input (issue 11, "Input"): every bad value raises a TickkitError subclass whose message
names it, and nothing is stored; accepted times and durations are whole milliseconds within one
range for every driver (docs/time.md, "Dates and durations")."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from tickkit import (
    EARLIEST_TIME,
    LATEST_TIME,
    MAX_DURATION,
    UTC,
    Backoff,
    Driver,
    InvalidDataError,
    InvalidJobIdError,
    InvalidScheduleError,
    InvalidTaskError,
    Kernel,
    Schedule,
    TaskContext,
    TaskRegistry,
    TickkitError,
    UnknownTaskError,
    UnknownTimezoneError,
    define_task,
    hookimpl,
    next_runs,
    parse_schedule,
    task,
)
from tickkit.codec import MAX_DEPTH, JSONCodec
from tickkit.drivers.memory import MemoryDriver
from tickkit.errors import short
from tickkit.manager import Hooks, create_plugin_manager
from tickkit.models import from_millis, to_millis
from tickkit.plugins.schedules import DateSchedule, DelaySchedule, IntervalSchedule
from tickkit.plugins.schedules.zones import available_zones, get_zone
from tickkit.testing import VirtualClock

T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def run(ctx: TaskContext) -> None:
    pass


def _deep(depth: int) -> Any:
    """A list nested ``depth`` levels deep (``[]`` is depth 1)."""
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


def names_value(err: pytest.ExceptionInfo[BaseException], value: object) -> None:
    """The error names the refused value (through its safe repr)."""
    text = short(value)
    if text.endswith("..."):
        text = text[:-3]
    assert text in str(err.value), (text, str(err.value))


# --- error messages never fail -------------------------------------------------------------


def test_short_repr_never_raises_and_is_short() -> None:
    class Hostile:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    nested = _deep(5000)
    for value in [10**4300, -(10**5000), nested, Hostile(), "x" * 100_000, {"k": 10**4300}]:
        text = short(value)
        assert len(text) <= 200
    assert short(10**4300) == "<int of 14285 bits>"
    assert short(2**63 - 1) == "9223372036854775807"
    assert short("\ud800") == "'\\ud800'"


def test_huge_int_data_is_refused_with_a_message() -> None:
    # before: ValueError from the message's own repr (int max str digits)
    with pytest.raises(InvalidDataError, match="int of 14285 bits"):
        JSONCodec().encode({"n": 10**4300})


def test_unknown_task_name_of_any_type() -> None:
    registry = TaskRegistry()
    for name in [10**4300, ["list"], None, "nope\n"]:
        with pytest.raises(UnknownTaskError) as err:
            registry.require(name)  # type: ignore[arg-type]
        names_value(err, name)


# --- the schedule hook boundary ------------------------------------------------------------


class Broken:
    """A third-party schedule plugin whose parser fails with a plain exception."""

    @hookimpl(tryfirst=True)
    def tickkit_parse_schedule(self, value: object, timezone: str | None) -> Schedule | None:
        if value == "explode":
            raise ZeroDivisionError("division by zero in a plugin")
        if value == "overflow":
            raise OverflowError("too big")
        return None


@pytest.mark.parametrize("value", ["explode", "overflow"])
def test_plugin_errors_become_invalid_schedule(value: str) -> None:
    hooks = Hooks(create_plugin_manager([Broken()]))
    with pytest.raises(InvalidScheduleError, match=f"'{value}'") as err:
        hooks.parse_schedule(value)
    assert not isinstance(err.value, (ZeroDivisionError, OverflowError))


@pytest.mark.parametrize("expr", ["² * * * *", "*/² * * * *", "*/²", "0 ² * * *"])
def test_unicode_digits_in_cron(expr: str) -> None:
    with pytest.raises(InvalidScheduleError) as err:
        parse_schedule(expr)
    names_value(err, expr)
    with pytest.raises(InvalidScheduleError):
        task(name="uni", schedule=expr, execute=run, registry=TaskRegistry())


# --- time zones ----------------------------------------------------------------------------


BAD_ZONES: list[object] = [
    5,
    [],
    ["Europe/Berlin"],
    b"UTC",
    "",
    "localtime",
    "posixrules",
    "Factory",
    "right/UTC",
    "right/Europe/Berlin",
    "posix/Europe/Berlin",
    "Europe/Berlin\n",
    " Europe/Berlin",
    "/etc/localtime",
    "../etc",
    "Mars/Olympus",
    "\ud800",
    "utc",
    "Z",
]


@pytest.mark.parametrize("zone", BAD_ZONES)
def test_bad_zones_are_refused(zone: object) -> None:
    forms: list[Callable[[], object]] = [
        lambda: parse_schedule("0 0 * * *", zone),  # type: ignore[arg-type]
        lambda: parse_schedule({"type": "cron", "value": "0 0 * * *", "timezone": zone}),
        lambda: parse_schedule({"type": "date", "value": "2030-01-01T00:00", "tz": zone}),
        lambda: parse_schedule(datetime(2030, 1, 1), zone),  # type: ignore[arg-type]
        lambda: get_zone(zone),  # type: ignore[arg-type]
        # a task without a schedule: the zone its naive dates would take is checked too
        lambda: task(name="z", timezone=zone, execute=run, registry=TaskRegistry()),  # type: ignore[arg-type]
        lambda: task(
            name="z",
            schedule="0 0 * * *",
            timezone=zone,  # type: ignore[arg-type]
            execute=run,
            registry=TaskRegistry(),
        ),
    ]
    for form in forms:
        with pytest.raises((UnknownTimezoneError, InvalidTaskError)) as err:
            form()
        names_value(err, zone)


@pytest.mark.parametrize("zone", ["UTC", "Etc/UTC", "Europe/Berlin", "America/New_York", "GMT"])
def test_iana_zones_are_accepted(zone: str) -> None:
    schedule = parse_schedule("0 0 * * *", zone)
    assert schedule.to_spec()["timezone"] in (zone, "UTC")
    assert zone in available_zones()
    assert not any(name.startswith(("right/", "posix/")) for name in available_zones())
    assert "localtime" not in available_zones()


# --- durations -----------------------------------------------------------------------------


BAD_INTERVALS: list[object] = [
    1e20,
    math.inf,
    -math.inf,
    math.nan,
    0,
    0.0,
    -1,
    0.0004,  # rounds to 0 ms
    True,
    False,
    10**4300,
    timedelta(0),
    timedelta(microseconds=400),
    timedelta(seconds=-1),
    timedelta.max,
    MAX_DURATION + timedelta(milliseconds=1),
    "99999999999999d",
    "0s",
    "soon",
    "6h\n7",
    None,
    [60],
]


@pytest.mark.parametrize("every", BAD_INTERVALS, ids=lambda v: short(v, 40))
def test_bad_intervals_are_refused(every: object) -> None:
    with pytest.raises(InvalidScheduleError) as err:
        parse_schedule({"type": "interval", "value": every})
    if every is not None:
        names_value(err, every)


@pytest.mark.parametrize(
    "delay",
    ["99999999999999d", "1e400s", timedelta.max, timedelta(days=-1), "9" * 300 + "s"],
    ids=lambda v: short(v, 40),
)
def test_bad_delays_are_refused(delay: object) -> None:
    with pytest.raises(InvalidScheduleError):
        parse_schedule(delay)
    with pytest.raises(InvalidScheduleError):
        parse_schedule({"type": "delay", "value": delay})


def test_durations_are_whole_milliseconds() -> None:
    assert parse_schedule({"type": "interval", "value": 1.0004}) == IntervalSchedule(
        timedelta(seconds=1)
    )
    assert parse_schedule({"type": "interval", "value": 0.0015}).to_spec()["value"] == 0.002
    assert parse_schedule(timedelta(microseconds=1_500)) == DelaySchedule(timedelta(milliseconds=2))
    assert parse_schedule("1.0006s") == DelaySchedule(timedelta(milliseconds=1001))
    assert parse_schedule({"type": "interval", "value": MAX_DURATION}).to_spec()["value"] == (
        MAX_DURATION.total_seconds()
    )


# --- dates ---------------------------------------------------------------------------------


def test_epoch_seconds_are_refused_with_a_hint() -> None:
    # before: read as milliseconds, the job landed in January 1970 and ran at once
    seconds = time.time() + 3600
    with pytest.raises(InvalidScheduleError, match="milliseconds") as err:
        parse_schedule({"type": "date", "value": seconds})
    assert "datetime" in str(err.value)
    names_value(err, seconds)
    for value in [0, 1, -5000, 99_999_999_999, int(seconds)]:
        with pytest.raises(InvalidScheduleError, match="milliseconds"):
            parse_schedule({"type": "date", "value": value})
    ms = int(seconds * 1000)
    assert parse_schedule({"type": "date", "value": ms}) == DateSchedule(from_millis(ms))


@pytest.mark.parametrize(
    "value",
    [
        datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),
        datetime(1900, 1, 1, tzinfo=UTC),
        datetime.min.replace(tzinfo=UTC),
        datetime(1970, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1))),  # 23:30 UTC in 1969
        datetime(1972, 6, 1, tzinfo=UTC),  # before EARLIEST_TIME: its spec would not read back
        EARLIEST_TIME - timedelta(milliseconds=1),
        "1969-07-20T20:17:40Z",
        "0001-01-01T00:00:00+00:00",
        LATEST_TIME + timedelta(milliseconds=1),
        datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))),  # OverflowError before
        datetime.max.replace(tzinfo=UTC),
        "9999-12-31T23:59:59Z",
        to_millis(LATEST_TIME) + 1,
        1e300,
        math.inf,
        math.nan,
        10**4300,
    ],
    ids=lambda v: short(v, 40),
)
def test_dates_out_of_range_are_refused(value: object) -> None:
    with pytest.raises(InvalidScheduleError) as err:
        parse_schedule({"type": "date", "value": value})
    names_value(err, value)
    if isinstance(value, datetime):
        with pytest.raises(InvalidScheduleError):
            parse_schedule(value)


def test_the_range_ends_are_accepted_and_exact() -> None:
    assert parse_schedule({"type": "date", "value": LATEST_TIME}) == DateSchedule(LATEST_TIME)
    assert parse_schedule(EARLIEST_TIME) == DateSchedule(EARLIEST_TIME)
    assert to_millis(EARLIEST_TIME) == 100_000_000_000
    # every accepted date's spec reads back (a number below 1e11 ms is refused as seconds)
    spec = DateSchedule(EARLIEST_TIME).to_spec()
    assert parse_schedule(spec) == DateSchedule(EARLIEST_TIME)
    assert to_millis(LATEST_TIME) == 95_617_583_999_999
    # Lua's tostring (%.14g) in the Redis scripts writes it as an integer
    assert f"{to_millis(LATEST_TIME):.14g}" == str(to_millis(LATEST_TIME))
    # BullMQ's delayed score ms * 4096 + seq gives the millisecond back; a JS Date holds it
    score = float(to_millis(LATEST_TIME) * 4096 + 4000)
    assert int(score) // 4096 == to_millis(LATEST_TIME)
    assert to_millis(LATEST_TIME) <= 8.64e15
    assert from_millis(to_millis(LATEST_TIME)) == LATEST_TIME
    # any UTC offset can still show it as a local time
    LATEST_TIME.astimezone(timezone(timedelta(hours=14)))


def test_dates_are_whole_milliseconds() -> None:
    at = datetime(2030, 1, 1, 12, 0, 0, 123_456, tzinfo=UTC)
    parsed = parse_schedule(at)
    assert isinstance(parsed, DateSchedule)
    assert parsed.at == datetime(2030, 1, 1, 12, 0, 0, 123_000, tzinfo=UTC)
    assert parse_schedule(at.replace(microsecond=123_500)) == DateSchedule(
        at.replace(microsecond=124_000)
    )
    assert parse_schedule({"type": "date", "value": 1_900_000_000_000.7}).to_spec() == {
        "type": "date",
        "value": 1_900_000_000_001,
    }


def test_millis_conversions_are_exact() -> None:
    for ms in [0, 1, 1_777_636_800_123, to_millis(LATEST_TIME), -1, to_millis(EARLIEST_TIME)]:
        assert to_millis(from_millis(ms)) == ms
    # float arithmetic lost microseconds near the end of the range before
    assert from_millis(253_370_764_799_999).microsecond == 999_000


# --- task data -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        10**4300,
        2**63,
        -(2**63) - 1,
        {"id": 2**64},
        math.nan,
        [math.inf],
        {"x": -math.inf},
        "\ud800",
        ["ok", "a\udfffb"],
        {"\udc80": 1},
        {"ok": {"k\ud800": 1}},
        _deep(1000),
        _deep(MAX_DEPTH + 1),
        {1: "a"},
        {"a": object()},
        b"bytes",
        {1, 2},
    ],
    ids=lambda v: short(v, 40),
)
def test_bad_data_is_refused(data: object) -> None:
    with pytest.raises(InvalidDataError) as err:
        JSONCodec().encode(data)
    assert len(str(err.value)) < 1000
    with pytest.raises(InvalidDataError):
        define_task(name="d", data=data, execute=run)


def test_good_data_edges_are_kept() -> None:
    codec = JSONCodec()
    snowflake = 1_234_567_890_123_456_789
    for data in [
        2**63 - 1,
        -(2**63),
        {"user": snowflake},
        _deep(MAX_DEPTH),
        "😀 é \u2028",
        1.7976931348623157e308,
        -0.0,
        {"": None},
    ]:
        assert codec.decode(codec.encode(data)) == data


# --- names and ids -------------------------------------------------------------------------


BAD_NAMES: list[object] = [
    "abc\n",
    "abc\r\n",
    "\nabc",
    "a\x00b",
    "a\x85b",
    "a\x9f",
    "\ud800",
    "ok\udfff",
    "",
    "a" * 201,
    "123",
    "a:b",
    5,
    10**4300,
    ["x"],
]


@pytest.mark.parametrize("name", BAD_NAMES, ids=lambda v: short(v, 40))
def test_bad_task_names_are_refused(name: object) -> None:
    with pytest.raises(InvalidTaskError) as err:
        task(name=name, execute=run, registry=TaskRegistry())  # type: ignore[arg-type]
    names_value(err, name)


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(T0)


@pytest.fixture
def registry() -> TaskRegistry:
    reg = TaskRegistry()
    task(name="known", execute=run, registry=reg)
    task(name="berlin", execute=run, timezone="Europe/Berlin", registry=reg)
    return reg


@pytest.fixture(params=["memory", "sqlite", "bullmq"])
def make_driver(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Driver]:
    if request.param == "memory":
        return lambda: MemoryDriver(keep_completed=False)
    if request.param == "sqlite":
        from tickkit.drivers.sqlite import SQLiteDriver

        return lambda: SQLiteDriver(tmp_path / "jobs.db", poll_interval=60.0)
    from tickkit.drivers.bullmq import BullMQDriver

    url = request.getfixturevalue("redis_url")
    queue = f"input-{uuid.uuid4().hex[:12]}"
    return lambda: BullMQDriver(url, queue=queue, poll_interval=60.0)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # SQLite and Redis drivers run on asyncio


@pytest.fixture
def open_kernel(
    make_driver: Callable[[], Driver], clock: VirtualClock, registry: TaskRegistry
) -> Callable[[], Any]:
    @asynccontextmanager
    async def opener() -> AsyncIterator[Kernel]:
        kernel = Kernel(make_driver(), tasks=registry, clock=clock)
        await kernel.open()
        try:
            yield kernel
        finally:
            await kernel.stop()

    return opener


async def _stored(kernel: Kernel) -> list[tuple[str | None, Any]]:
    return sorted((j.id, j.data) for j in await kernel.list_tasks())


@pytest.mark.anyio
async def test_bad_ids_are_invalid_job_ids_and_store_nothing(open_kernel: Any) -> None:
    async with open_kernel() as k:
        for job_id in BAD_NAMES:
            with pytest.raises(InvalidJobIdError) as err:
                await k.create_task("known", {"n": 1}, id=job_id)
            names_value(err, job_id)
        assert await _stored(k) == []


@pytest.mark.anyio
async def test_bad_input_at_create_stores_nothing(open_kernel: Any, clock: VirtualClock) -> None:
    bad: list[tuple[type[TickkitError], dict[str, Any]]] = [
        (InvalidDataError, {"data": {"n": 10**4300}}),
        (InvalidDataError, {"data": _deep(1000)}),
        (InvalidDataError, {"data": {"s": "\ud800"}}),
        (InvalidDataError, {"data": {"\ud800": 1}}),
        (InvalidDataError, {"data": 2**63}),
        (InvalidScheduleError, {"schedule": "² * * * *"}),
        (InvalidScheduleError, {"schedule": {"type": "interval", "value": math.nan}}),
        (InvalidScheduleError, {"schedule": {"type": "interval", "value": 1e20}}),
        (InvalidScheduleError, {"schedule": "99999999999999d"}),
        (InvalidScheduleError, {"schedule": {"type": "date", "value": time.time() + 3600}}),
        (InvalidScheduleError, {"schedule": datetime(1969, 12, 31, tzinfo=UTC)}),
        (InvalidScheduleError, {"schedule": datetime(1971, 1, 1, tzinfo=UTC)}),
        (InvalidScheduleError, {"schedule": "1969-12-31T23:59:59Z"}),
        (InvalidScheduleError, {"schedule": datetime(9999, 6, 1, tzinfo=UTC)}),
        (UnknownTimezoneError, {"schedule": "0 0 * * *", "timezone": 5}),
        (UnknownTimezoneError, {"schedule": "0 0 * * *", "timezone": "localtime"}),
        (UnknownTaskError, {"name": 10**4300}),
        (UnknownTaskError, {"name": ["known"]}),
    ]
    async with open_kernel() as k:
        for error, case in bad:
            schedule = case.get("schedule")
            if "timezone" in case:
                schedule = {"type": "cron", "value": schedule, "timezone": case["timezone"]}
            with pytest.raises(error):
                await k.create_task(case.get("name", "known"), case.get("data"), schedule)
        assert await _stored(k) == []


@pytest.mark.anyio
async def test_times_read_back_as_parsed(open_kernel: Any, clock: VirtualClock) -> None:
    """Sub-millisecond times are rounded when parsed, so every driver reads back what the
    parsed schedule says (SQLite and Redis store milliseconds)."""
    await clock.advance(timedelta(microseconds=123_456))
    at = datetime(2030, 5, 1, 12, 0, 0, 987_654, tzinfo=UTC)
    async with open_kernel() as k:
        cases: list[tuple[object, datetime, dict[str, Any] | None]] = [
            (at, datetime(2030, 5, 1, 12, 0, 0, 988_000, tzinfo=UTC), None),
            (None, clock.now().replace(microsecond=123_000), None),
            (timedelta(microseconds=2_500), clock.now().replace(microsecond=126_000), None),
            (
                {"type": "interval", "value": 1.0004},
                clock.now().replace(second=1, microsecond=123_000),
                {"type": "interval", "value": 1.0},
            ),
            ({"type": "date", "value": LATEST_TIME}, LATEST_TIME, None),
            (EARLIEST_TIME, EARLIEST_TIME, None),
        ]
        for index, (schedule, first, spec) in enumerate(cases):
            job_id = await k.create_task("known", {"i": index}, schedule, id=f"t{index}")
            job = await k.get_task(job_id)
            assert job is not None
            assert (job.next_run_at, job.scheduled_at, job.schedule) == (first, first, spec), index


@pytest.mark.anyio
async def test_first_runs_past_the_range_are_refused(open_kernel: Any, clock: VirtualClock) -> None:
    await clock.advance_to(LATEST_TIME - timedelta(days=10), max_steps=10)
    async with open_kernel() as k:
        for schedule in [
            {"type": "interval", "value": timedelta(days=11)},
            timedelta(days=11),
            "11d",
        ]:
            with pytest.raises(InvalidScheduleError, match="4999-12-31"):
                await k.create_task("known", None, schedule)
        assert await _stored(k) == []
        job_id = await k.create_task("known", None, {"type": "interval", "value": "9d"})
        job = await k.get_task(job_id)
        assert job is not None and job.next_run_at == LATEST_TIME - timedelta(days=1)
    # the schedule ends at the range's end
    assert IntervalSchedule(timedelta(days=9)).next_fire(LATEST_TIME - timedelta(days=1)) is None


@pytest.mark.anyio
async def test_a_naive_date_takes_the_task_zone(open_kernel: Any) -> None:
    async with open_kernel() as k:
        job_id = await k.create_task("berlin", None, datetime(2030, 1, 1, 12))
        job = await k.get_task(job_id)
        assert job is not None and job.next_run_at == datetime(2030, 1, 1, 11, tzinfo=UTC)


# --- task definitions ----------------------------------------------------------------------


BAD_OPTIONS: list[tuple[str, object]] = [
    ("timeout", math.inf),
    ("timeout", math.nan),
    ("timeout", 1e300),
    ("timeout", 10**4300),
    ("timeout", 0),
    ("timeout", -1),
    ("timeout", 0.0001),
    ("timeout", True),
    ("timeout", "10"),
    ("timeout", timedelta(seconds=-1)),
    ("misfire_grace", math.nan),
    ("misfire_grace", math.inf),
    ("misfire_grace", -1),
    ("misfire_grace", False),
    ("misfire_grace", "1s"),
    ("misfire", "sometimes"),
    ("misfire", ["once"]),
    ("misfire", None),
    ("retries", -1),
    ("retries", True),
    ("retries", 1.5),
    ("retries", 2**31),
    ("retries", 10**4300),
    ("retries", "3"),
    ("max_instances", 0),
    ("max_instances", True),
    ("max_instances", 1.5),
    ("max_instances", "2"),
    ("max_instances", -1),
    ("immediate", 1),
    ("immediate", "yes"),
    ("immediate", None),
    ("backoff", math.nan),
    ("backoff", math.inf),
    ("backoff", -1),
    ("backoff", "fast"),
    ("backoff", True),
    ("backoff", {"type": "linear"}),
    ("backoff", {"type": ["fixed"]}),
    ("backoff", {"delay": math.inf}),
    ("backoff", {"delay": "1"}),
    ("backoff", {"max_delay": -1}),
    ("backoff", {"jitter": 2}),
    ("backoff", {"jitter": math.nan}),
    ("backoff", {"jitter": "0.5"}),
    ("backoff", {"jitter": True}),
    ("backoff", {"bogus": 1}),
    ("backoff", {1: 2, "a": 3}),
    ("backoff", {"type": "fixed", "kind": "exponential"}),
    ("prepare", "not callable"),
    ("prepare", 5),
    ("timezone", 5),
    ("timezone", "localtime"),
    ("schedule", "² * * * *"),
    ("schedule", {"type": "interval", "value": math.nan}),
    ("schedule", 42),
    ("data", {"n": 10**4300}),
]


@pytest.mark.parametrize(("option", "value"), BAD_OPTIONS, ids=lambda v: short(v, 30))
def test_bad_task_options_are_refused(option: str, value: object) -> None:
    registry = TaskRegistry()
    with pytest.raises((InvalidTaskError, InvalidScheduleError, InvalidDataError)) as err:
        task(name="t", execute=run, registry=registry, **{option: value})  # type: ignore[call-overload]
    if isinstance(value, dict):
        # the message names the refused part of the dict
        assert any(short(part) in str(err.value) for part in [*value.values(), *value])
    else:
        names_value(err, value)
    assert len(registry) == 0


@pytest.mark.parametrize("execute", [None, 5, "run"])
def test_bad_execute_is_refused(execute: object) -> None:
    with pytest.raises(InvalidTaskError, match="execute must be callable"):
        define_task(name="t", execute=execute)  # type: ignore[arg-type]


@pytest.mark.parametrize("execute", [lambda ctx: None, print])
def test_a_plain_callable_is_a_task_run_in_a_thread(execute: object) -> None:
    # refused before plain def tasks (issue 14); now run in a worker thread
    definition = define_task(name="t", execute=execute)  # type: ignore[arg-type]
    assert definition.execute_in_thread


def test_good_task_options_are_kept() -> None:
    definition = task(
        name="opts",
        execute=run,
        registry=TaskRegistry(),
        timeout=timedelta(milliseconds=1500),
        misfire_grace=0,
        retries=2**31 - 2,
        backoff={"type": "exponential", "delay": 0.0015, "max_delay": 60, "jitter": 0.5},
        max_instances=3,
        timezone="Europe/Berlin",
        immediate=True,
    )
    assert definition.timeout == 1.5
    assert definition.misfire_grace == 0
    assert definition.backoff == Backoff("exponential", 0.002, 60.0, 0.5)


def test_backoff_never_overflows() -> None:
    backoff = Backoff.exponential(1.0)
    assert backoff.delay_for(5000) == MAX_DURATION.total_seconds()
    assert Backoff.exponential(1.0, max_delay=60).delay_for(10**6) == 60


# --- next_runs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"count": 10**9}, "count"),
        ({"count": 0}, "count"),
        ({"count": True}, "count"),
        ({"after": "2030-01-01"}, "after"),
        ({"after": datetime(2030, 1, 1)}, "after"),
        ({"after": datetime(1960, 1, 1, tzinfo=UTC)}, "1960"),
    ],
    ids=lambda v: short(v, 40),
)
def test_next_runs_refuses_bad_arguments(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidScheduleError, match=fragment):
        next_runs("* * * * * *", **kwargs)


def test_next_runs_stops_at_the_end_of_the_range() -> None:
    runs = next_runs("1d", after=LATEST_TIME - timedelta(days=2), count=3)
    assert runs == [LATEST_TIME - timedelta(days=1)]
    every = next_runs(
        {"type": "interval", "value": "1d"}, after=LATEST_TIME - timedelta(days=3), count=5
    )
    assert every == [LATEST_TIME - timedelta(days=2), LATEST_TIME - timedelta(days=1), LATEST_TIME]


@pytest.mark.anyio
async def test_lookups_refuse_ids_no_store_can_hold(open_kernel: Any, clock: VirtualClock) -> None:
    # before: UnicodeEncodeError from SQLite and Redis, None from the memory driver
    async with open_kernel() as k:
        await k.create_task("known", None, "1h", id="kept")
        before = await _stored(k)
        for job_id in ["\ud800", "a\udfffb", 5, None, ["kept"]]:
            for call in (k.get_task, k.pause_task, k.resume_task, k.run_task_now, k.delete_task):
                with pytest.raises(InvalidJobIdError) as err:
                    await call(job_id)
                names_value(err, job_id)
        with pytest.raises(InvalidTaskError):
            await k.delete_tasks(name="\ud800")
        with pytest.raises(InvalidTaskError):
            await k.list_tasks("\ud800")
        assert await _stored(k) == before
        # ids other stores made (a Node producer's integer ids) can still be looked up
        assert await k.get_task("17") is None


@pytest.mark.anyio
async def test_run_now_is_whole_milliseconds(open_kernel: Any, clock: VirtualClock) -> None:
    await clock.jump(timedelta(microseconds=400_600))
    async with open_kernel() as k:
        job_id = await k.create_task("known", None, "1h")
        assert await k.run_task_now(job_id) == job_id
        job = await k.get_task(job_id)
        assert job is not None and job.next_run_at == T0 + timedelta(milliseconds=401)


@pytest.mark.parametrize(
    "query",
    ["busy_timeout=inf", "busy_timeout=nan", "lease_duration=inf", "poll_interval=1e300"],
)
def test_sqlite_url_durations_are_finite(tmp_path: Path, query: str) -> None:
    # before: busy_timeout=inf raised OverflowError at open; inf leases overflowed at a claim
    from tickkit import DriverError
    from tickkit.drivers.sqlite import SQLiteDriver

    with pytest.raises(DriverError, match=query.split("=")[0]):
        SQLiteDriver.from_url(f"sqlite:///{tmp_path / 'x.db'}?{query}")


class _Micro(Schedule):
    """A third-party schedule firing every 1.5004 s, at microsecond times."""

    def next_fire(self, after: datetime) -> datetime | None:
        return after + timedelta(microseconds=1_500_400)

    def to_spec(self) -> dict[str, Any]:
        return {"type": "micro"}


def test_next_occurrences_are_whole_ms_and_end_at_the_latest_time() -> None:
    from tickkit import Misfire, plan_occurrence

    at = T0
    plan = plan_occurrence(_Micro(), at, at, misfire=Misfire.ONCE, grace=None)
    assert plan.next_run_at == T0 + timedelta(milliseconds=1500)
    # a cron or interval occurrence past the latest time ends the schedule
    cron = parse_schedule("0 0 * * *")
    last = datetime(4999, 12, 31, tzinfo=UTC)
    assert plan_occurrence(cron, last, last, misfire=Misfire.ONCE, grace=None).next_run_at is None
    assert next_runs("0 0 * * *", after=last - timedelta(days=1), count=5) == [last]


def test_unreadable_stored_specs_are_invalid_schedules() -> None:
    hooks = Hooks(create_plugin_manager())
    for spec in [{"type": "cron", 1: 2}, {"type": "date", "value": 5}, {"type": "nope"}]:
        with pytest.raises(InvalidScheduleError):
            hooks.parse_spec(spec)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_list_filters_are_checked(open_kernel: Any) -> None:
    from tickkit import InvalidArgumentError

    async with open_kernel() as k:
        await k.create_task("known", None, "1h", id="kept")
        # before: ValueError, TypeError; limit=-1 gave [] on memory and everything on SQLite
        for kwargs in [
            {"state": "bogus"},
            {"state": 5},
            {"state": []},
            {"limit": "x"},
            {"limit": -1},
            {"limit": True},
            {"limit": 2**63},  # OverflowError from SQLite (Python int too large)
            {"limit": 10**30},
            {"static": "yes"},
        ]:
            with pytest.raises(InvalidArgumentError) as err:
                await k.list_tasks(**kwargs)
            names_value(err, next(iter(kwargs.values())))
        assert [j.id for j in await k.list_tasks(state="scheduled", limit=5)] == ["kept"]
        assert await k.list_tasks(limit=0) == []
        assert [j.id for j in await k.list_tasks(limit=2**63 - 1)] == ["kept"]
