"""Property tests over every public entry point, on every driver (issue 11, "The adversarial
suite").

The property: a call either is accepted and reads back equal (``get_task`` returns the data,
schedule spec and times the parsed input says), or is refused with a TickkitError subclass whose
message names a part of the input, with nothing stored (the store's jobs are unchanged). Never
another exception, never a hang (each call runs under a time limit).

Profiles (tests/conftest.py): ``dev`` (default), ``ci`` (CI=true: more examples, derandomized,
a deadline per example) and ``long`` (HYPOTHESIS_PROFILE=long: thousands of examples, for local
runs). The kernels run on a VirtualClock in a blocking portal: one kernel per test and driver,
shared by its examples.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlencode, urlsplit
from zoneinfo import ZoneInfo

import anyio
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from tickkit import (
    UNSET,
    UTC,
    DriverError,
    InvalidArgumentError,
    Job,
    JobExistsError,
    JobNotFoundError,
    JobState,
    Kernel,
    Outcome,
    PluginError,
    Schedule,
    TaskContext,
    TaskDefinition,
    TaskRegistry,
    TickkitError,
    UnknownTaskError,
    define_task,
    next_runs,
    parse_schedule,
    task,
)
from tickkit.drivers.bullmq.driver import URL_OPTIONS
from tickkit.errors import short
from tickkit.models import EARLIEST_TIME, LATEST_TIME, round_ms
from tickkit.schedule import first_run
from tickkit.testing import VirtualClock

T0 = datetime(2026, 1, 1, tzinfo=UTC)
#: seconds one call may take before it counts as a hang
CALL_LIMIT = 10.0
T = TypeVar("T")

#: the property tests share one kernel between the examples of a test on purpose
SHARED = settings(
    suppress_health_check=[
        *settings.default.suppress_health_check,
        HealthCheck.function_scoped_fixture,
    ]
)
#: pure tests (no store) are cheap: three times the profile's examples
MANY = settings(max_examples=settings.default.max_examples * 3)


async def run(ctx: TaskContext) -> None:
    pass


# --- strategies ------------------------------------------------------------------------------

#: ids BullMQ reserves as key suffixes, and other ids on the edge of the rules
EDGE_IDS = [
    "wait",
    "active",
    "delayed",
    "paused",
    "completed",
    "failed",
    "prioritized",
    "waiting-children",
    "events",
    "meta",
    "id",
    "marker",
    "stalled",
    "stalled-check",
    "limiter",
    "repeat",
    "pc",
    "de",
    "metrics",
    "abc\n",
    "123",
    "²",
    "a:b",
    "",
    " ",
    "x" * 200,
    "x" * 201,
    "known",
]


class _Huge(int):
    """An int too large for ``repr`` (ValueError past 4,300 digits), with a repr that works so
    that Hypothesis can print an example holding it; tickkit sees an int all the same."""

    def __repr__(self) -> str:
        return f"<int of {self.bit_length()} bits>"


EDGE_INTS = [0, -1, 2**53, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, _Huge(10**4300)]
ZONES = [
    "UTC",
    "Etc/UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kolkata",
    "Australia/Lord_Howe",
    "Pacific/Kiritimati",
    "localtime",
    "posixrules",
    "Factory",
    "right/UTC",
    "posix/Europe/Berlin",
    "utc",
    "Z",
    "../etc",
    "",
]


def _with_surrogate(text: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.builds(
        lambda a, s, b: a + s + b,
        text,
        st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
        text,
    )


short_text = st.text(max_size=12)
texts = st.one_of(short_text, _with_surrogate(short_text), st.text(max_size=300))


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of ``choices``, each drawn with its weight (Hypothesis' one_of draws evenly)."""
    table = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.integers(0, len(table) - 1).flatmap(lambda index: table[index])


ids = st.one_of(st.sampled_from(EDGE_IDS), texts, st.uuids().map(str))
#: task names for create_task: mostly loaded ones, so that the other inputs are reached
names = weighted((9, st.sampled_from(["known", "berlin"])), (1, ids))
job_ids = weighted((4, st.none()), (3, st.uuids().map(lambda u: f"job-{u}")), (3, ids))
zones = st.one_of(
    st.none(),
    st.sampled_from(ZONES),
    st.text(max_size=20),
    st.integers(),
    st.lists(st.text(max_size=3), max_size=2),
)

json_scalars = weighted(
    (
        12,
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(min_value=-(2**63), max_value=2**63 - 1),
            st.floats(allow_nan=False, allow_infinity=False),
            st.text(max_size=20),
        ),
    ),
    (
        1,
        st.one_of(
            st.sampled_from(EDGE_INTS),
            st.integers(min_value=-(2**70), max_value=2**70),
            st.floats(),  # NaN and infinities included
            _with_surrogate(short_text),
        ),
    ),
)
json_data = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(
            weighted((12, st.text(max_size=12)), (1, st.one_of(texts, st.integers(), st.none()))),
            inner,
            max_size=4,
        ),
    ),
    max_leaves=12,
)


def _nested(depth: int) -> Any:
    value: Any = []
    for index in range(depth):
        value = [value] if index % 2 else {"k": value}
    return value


data_values = weighted(
    (8, json_data),
    (1, st.integers(1, 1500).map(_nested)),
    (1, st.sampled_from([object(), {1, 2}, b"bytes", {"k": object()}])),
)

# cron from a grammar: valid, nearly valid and hostile fields
_numbers = st.one_of(
    st.integers(0, 70).map(str),
    st.sampled_from(["²", "٣", "0x1", "-1", "1.5", "07", " 5", "jan", "MON", "L", "?", "W"]),
)
_atom = st.one_of(
    st.just("*"),
    _numbers,
    st.builds(lambda a, b: f"{a}-{b}", _numbers, _numbers),
)
_field = st.one_of(
    _atom,
    st.builds(lambda a, n: f"{a}/{n}", _atom, _numbers),
    st.lists(_atom, min_size=2, max_size=3).map(",".join),
)
# cron that parses: every field within its range
_valid = {
    "minute": (0, 59),
    "hour": (0, 23),
    "dom": (1, 28),
    "month": (1, 12),
    "dow": (0, 6),
}


def _valid_field(lo: int, hi: int) -> st.SearchStrategy[str]:
    number = st.integers(lo, hi)
    return st.one_of(
        st.just("*"),
        number.map(str),
        st.integers(1, hi - lo).map(lambda n: f"*/{n}"),
        st.tuples(number, number).map(lambda ab: f"{min(ab)}-{max(ab)}"),
        st.lists(number, min_size=2, max_size=3, unique=True).map(
            lambda xs: ",".join(map(str, xs))
        ),
    )


valid_cron = st.tuples(*(_valid_field(lo, hi) for lo, hi in _valid.values())).map(" ".join)
cron_strings = st.one_of(
    valid_cron,
    st.lists(_field, min_size=5, max_size=6).map(" ".join),
    st.lists(_field, min_size=1, max_size=8).map(" ".join),
    st.sampled_from(["@daily", "@hourly", "@weekly", "@monthly", "@yearly", "@reboot", "@"]),
)
duration_strings = st.one_of(
    st.from_regex(r"\A[0-9]{1,16}(\.[0-9]{1,4})?(ms|[wdhms])\Z"),
    st.from_regex(r"\A([0-9]{1,3}[wdhms] ?){1,4}\Z"),
    st.sampled_from(["0s", "0ms", "1ms", "0.0001s", "99999999999999d", "1e3s", "6h\n", "-5m"]),
)
_tzinfos = st.sampled_from(
    [
        None,
        UTC,
        timezone(timedelta(hours=14)),
        timezone(timedelta(hours=-12)),
        ZoneInfo("Europe/Berlin"),
        ZoneInfo("America/New_York"),
    ]
)
datetimes = st.one_of(
    st.datetimes(timezones=_tzinfos),  # year 1 to 9999, naive or aware
    st.datetimes(
        min_value=datetime(1969, 12, 31), max_value=datetime(1973, 3, 4), timezones=_tzinfos
    ),
    st.datetimes(
        min_value=datetime(4999, 12, 30), max_value=datetime(5000, 1, 2), timezones=_tzinfos
    ),
    st.datetimes(
        min_value=datetime(2025, 1, 1), max_value=datetime(2100, 1, 1), timezones=_tzinfos
    ),
)
timedeltas = st.one_of(
    st.timedeltas(),  # the whole range, negative included
    st.timedeltas(min_value=timedelta(0), max_value=timedelta(milliseconds=3)),
    st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=400_000)),
)
numbers = st.one_of(
    st.floats(),
    st.integers(),
    st.sampled_from(EDGE_INTS),
    st.floats(min_value=0, max_value=1e16),
    st.integers(min_value=10**11, max_value=10**14),
)
raw_values = st.one_of(
    cron_strings, duration_strings, datetimes, timedeltas, numbers, st.text(max_size=40)
)
schedule_dicts = st.builds(
    lambda kind, value, zone, extra: {
        "type": kind,
        "value": value,
        **({} if zone is None else {zone[0]: zone[1]}),
        **extra,
    },
    st.sampled_from(["cron", "date", "interval", "delay", "weekly", None, 5]),
    raw_values,
    st.one_of(st.none(), st.tuples(st.sampled_from(["timezone", "tz"]), zones)),
    st.one_of(st.just({}), st.dictionaries(st.one_of(texts, st.integers()), texts, max_size=2)),
)
valid_dicts = st.one_of(
    st.builds(
        lambda cron, zone: {"type": "cron", "value": cron, "timezone": zone},
        valid_cron,
        st.sampled_from(ZONES[:7]),
    ),
    st.builds(
        lambda every: {"type": "interval", "value": every},
        st.one_of(
            st.floats(min_value=0.001, max_value=1e9),
            st.integers(1, 10**9),
            st.timedeltas(min_value=timedelta(milliseconds=1), max_value=timedelta(days=10**5)),
            st.from_regex(r"\A[1-9][0-9]{0,4}(ms|[wdhms])\Z"),
        ),
    ),
    st.builds(
        lambda at: {"type": "date", "value": at},
        st.one_of(
            st.integers(10**11, 95_617_583_999_999),
            st.datetimes(
                min_value=datetime(2020, 1, 1),
                max_value=datetime(2200, 1, 1),
                timezones=st.just(UTC),
            ).map(lambda d: d.isoformat()),
        ),
    ),
)
schedules = weighted(
    (2, st.none()),
    (3, valid_cron),
    (2, valid_dicts),
    (2, duration_strings),
    (
        2,
        st.datetimes(
            min_value=datetime(2020, 1, 1), max_value=datetime(4999, 1, 1), timezones=_tzinfos
        ),
    ),
    (1, st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=10**5))),
    (1, cron_strings),
    (1, datetimes),
    (1, timedeltas),
    (2, schedule_dicts),
    (1, st.text(max_size=40)),
    (1, numbers),
)


# --- what the property checks ----------------------------------------------------------------


def atoms(value: Any, limit: int = 200) -> Iterator[Any]:
    """``value`` and everything inside it (keys too), breadth first, at most ``limit``."""
    queue = [value]
    count = 0
    while queue and count < limit:
        item = queue.pop(0)
        count += 1
        yield item
        if isinstance(item, dict):
            queue.extend(item.keys())
            queue.extend(item.values())
        elif isinstance(item, (list, tuple)):
            queue.extend(item)


def check_refusal(err: TickkitError, *inputs: Any) -> None:
    """A refusal names a part of the input, in a message that is short and printable."""
    event(f"refused: {type(err).__name__}")
    message = str(err)
    assert message and len(message) < 3000, message
    named = any(
        short(part, 60).removesuffix("...")[:40] in message
        or (isinstance(part, str) and len(part) >= 3 and part[:40] in message)
        for value in inputs
        for part in atoms(value)
    )
    assert named, f"{type(err).__name__} names no part of {short(inputs)}: {message}"


def expected_times(schedule: object, zone: str | None, now: datetime) -> tuple[Any, datetime]:
    """The spec and first run ``create_task`` stores for ``schedule``, from the public
    parser; checks that the parsed schedule survives its own spec."""
    if schedule is None:
        return None, round_ms(now)
    parsed = parse_schedule(schedule, zone)
    anchored, first = first_run(parsed, now, required=True)
    assert first is not None
    assert EARLIEST_TIME <= first <= LATEST_TIME and first.microsecond % 1000 == 0
    spec = anchored.to_spec() if anchored.recurring else None
    if spec is not None:
        assert json.loads(json.dumps(spec)) == spec
        assert parse_schedule(spec) == anchored
    return spec, first


def jsonable(data: Any) -> Any:
    return json.loads(json.dumps(data))


# --- drivers and kernels ---------------------------------------------------------------------


@pytest.fixture(params=["memory", "sqlite", "bullmq", "postgres"])
def driver_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def driver_url(driver_name: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if driver_name == "memory":
        return "memory://"
    if driver_name == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}?poll_interval=60"
    if driver_name == "postgres":
        return postgres_url(request)
    base: str = request.getfixturevalue("redis_url")
    return f"{base}?queue=props-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A database of this session on the test PostgreSQL server (imported here, when a
    PostgreSQL test needs it: without asyncpg only those tests are skipped)."""
    pytest.importorskip("tickkit.drivers.postgres")
    from .postgres_server import fresh_database

    with fresh_database() as url:
        yield url


def postgres_url(request: pytest.FixtureRequest) -> str:
    """A schema of its own in the session's database on the test PostgreSQL server."""
    database: str = request.getfixturevalue("pg_database")
    return f"{database}?schema=props_{uuid.uuid4().hex[:12]}&poll_interval=60"


def registry() -> TaskRegistry:
    reg = TaskRegistry()
    task(name="known", execute=run, registry=reg)
    task(name="berlin", execute=run, timezone="Europe/Berlin", registry=reg)
    return reg


class Harness:
    """A kernel opened (not dispatching) on a VirtualClock in a blocking portal."""

    def __init__(self, portal: BlockingPortal, kernel: Kernel, clock: VirtualClock) -> None:
        self.portal = portal
        self.kernel = kernel
        self.clock = clock

    def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        async def limited() -> T:
            with anyio.fail_after(CALL_LIMIT):
                return await fn()

        return self.portal.call(limited)

    def snapshot(self) -> list[tuple[Any, ...]]:
        jobs = self.call(lambda: self.kernel.list_tasks())
        return sorted(_key(job) for job in jobs)


def _key(job: Job) -> tuple[Any, ...]:
    return (
        job.id,
        job.name,
        json.dumps(job.data, sort_keys=True),
        json.dumps(job.schedule, sort_keys=True),
        job.next_run_at,
        job.scheduled_at,
        str(job.state),
    )


@pytest.fixture
def harness(driver_url: str) -> Iterator[Harness]:
    clock = VirtualClock(T0)
    kernel = Kernel(driver_url, tasks=registry(), clock=clock)
    with start_blocking_portal("asyncio") as portal:
        portal.call(kernel.open)
        try:
            yield Harness(portal, kernel, clock)
        finally:
            portal.call(kernel.stop)


# --- schedules, task definitions, next_runs (no store) ---------------------------------------


@MANY
@given(value=schedules, zone=zones)
def test_parse_schedule_accepts_or_names(value: object, zone: Any) -> None:
    try:
        parsed = parse_schedule(value, zone)
    except TickkitError as err:
        check_refusal(err, value, zone)
        return
    assert isinstance(parsed, Schedule)
    spec = parsed.to_spec()
    assert json.loads(json.dumps(spec)) == spec
    assert parse_schedule(spec) == parsed
    try:
        runs = next_runs(value, after=T0, count=3, timezone=zone)
    except TickkitError as err:  # a run past the latest time, say
        check_refusal(err, value, zone, "4999-12-31")
        return
    for at in runs:
        assert EARLIEST_TIME <= at <= LATEST_TIME and at.microsecond % 1000 == 0


_options = st.fixed_dictionaries(
    {},
    optional={
        "name": names,
        "schedule": schedules,
        "timezone": zones,
        "data": data_values,
        "retries": st.one_of(st.integers(), st.sampled_from(EDGE_INTS), st.booleans(), numbers),
        "backoff": st.one_of(
            numbers,
            timedeltas,
            st.none(),
            st.text(max_size=5),
            st.dictionaries(
                st.sampled_from(["type", "kind", "delay", "max_delay", "jitter", "bogus"]),
                st.one_of(numbers, st.sampled_from(["fixed", "exponential", "linear"]), st.none()),
                max_size=4,
            ),
        ),
        "timeout": st.one_of(numbers, timedeltas, st.none(), st.text(max_size=3)),
        "misfire": st.one_of(st.sampled_from(["skip", "once", "all", "never"]), zones),
        "misfire_grace": st.one_of(numbers, timedeltas, st.none(), st.booleans()),
        "max_instances": st.one_of(st.integers(), st.booleans(), st.none(), numbers),
        "immediate": st.one_of(st.booleans(), st.integers(0, 2), st.none(), st.text(max_size=2)),
        "prepare": st.sampled_from([None, run, 5, "prepare"]),
    },
)


@MANY
@given(options=_options, execute=st.sampled_from([run, run, run, print, 5, lambda ctx: None]))
def test_task_definitions_accept_or_name(options: dict[str, Any], execute: Any) -> None:
    reg = TaskRegistry()
    try:
        definition = task(execute=execute, registry=reg, **options)
    except TickkitError as err:
        check_refusal(err, *options.values(), execute)
        assert len(reg) == 0
        return
    assert isinstance(definition, TaskDefinition)
    assert reg.names() == [definition.name]
    if "schedule" in options and options["schedule"] is not None:
        assert definition.schedule == parse_schedule(options["schedule"], options.get("timezone"))
    if definition.timeout is not None:
        assert 0 < definition.timeout <= 365_250 * 86400
    if definition.misfire_grace is not None:
        assert 0 <= definition.misfire_grace <= 365_250 * 86400
    assert isinstance(definition.immediate, bool)
    assert 0 <= definition.retries < 2**31 - 1
    assert definition.backoff.delay_for(10**6) <= 365_250 * 86400
    if "data" in options:
        assert jsonable(definition.data) == jsonable(options["data"])


@MANY
@given(execute=st.sampled_from([run, 5, None]), name=names)
def test_define_task_directly(execute: Any, name: Any) -> None:
    try:
        definition = define_task(name=name, execute=execute)
    except TickkitError as err:
        check_refusal(err, name, execute)
        return
    assert definition.name == name


# --- create_task and the job API on every driver ---------------------------------------------


@SHARED
@given(
    name=names,
    data=data_values,
    schedule=schedules,
    job_id=job_ids,
    tick=st.integers(0, 10**6),
)
# ids a store reserves (BullMQ's key suffixes) and ids no store can encode, in every profile
@example(name="known", data=1, schedule=None, job_id="wait", tick=0)
@example(name="known", data=1, schedule="1h", job_id="meta", tick=0)
@example(name="known", data=1, schedule="* * * * *", job_id="events", tick=0)
@example(name="known", data=1, schedule=None, job_id="\ud800", tick=0)
@example(name="known", data={"k": "\udfff"}, schedule=None, job_id=None, tick=0)
def test_create_task_reads_back_or_stores_nothing(
    harness: Harness, name: Any, data: Any, schedule: Any, job_id: Any, tick: int
) -> None:
    kernel = harness.kernel
    harness.call(lambda: harness.clock.jump(timedelta(microseconds=tick)))
    before = harness.snapshot()
    try:
        created = harness.call(lambda: kernel.create_task(name, data, schedule, id=job_id))
    except TickkitError as err:
        check_refusal(err, name, data, schedule, job_id)
        assert harness.snapshot() == before
        return
    event(f"accepted: {type(schedule).__name__}")
    now = harness.clock.now()
    zone = "Europe/Berlin" if name == "berlin" else None
    spec, first = expected_times(schedule, zone, now)
    job = harness.call(lambda: kernel.get_task(created))
    try:
        assert job is not None
        assert job_id is None or created == job_id
        assert (job.id, job.name, job.data) == (created, name, jsonable(data))
        assert job.schedule == spec
        assert (job.next_run_at, job.scheduled_at) == (first, first)
        assert job.state is JobState.SCHEDULED
        assert len(harness.snapshot()) == len(before) + 1
    finally:
        assert harness.call(lambda: kernel.delete_task(created)) is True
    assert harness.snapshot() == before


@SHARED
@given(
    job_id=st.one_of(ids, st.sampled_from(["mine"])),
    action=st.sampled_from(["get", "pause", "resume", "run_now", "delete"]),
    exists=st.booleans(),
    tick=st.integers(0, 10**6),
)
@example(job_id="meta", action="get", exists=True, tick=0)
@example(job_id="delayed", action="pause", exists=True, tick=0)
@example(job_id="\ud800", action="delete", exists=False, tick=0)
@example(job_id="\x00", action="get", exists=False, tick=0)  # no PostgreSQL text holds NUL
def test_job_calls_with_any_id(
    harness: Harness, job_id: Any, action: str, exists: bool, tick: int
) -> None:
    kernel = harness.kernel
    harness.call(lambda: harness.clock.jump(timedelta(microseconds=tick)))
    created: str | None = None
    if exists:
        # a job under this id when it is a valid one (else the create is refused)
        try:
            created = harness.call(
                lambda: kernel.create_task("known", {"x": 1}, "1h", id=job_id, replace=True)
            )
        except TickkitError as err:
            check_refusal(err, job_id)
    before = harness.snapshot()
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "get": lambda: kernel.get_task(job_id),
        "pause": lambda: kernel.pause_task(job_id),
        "resume": lambda: kernel.resume_task(job_id),
        "run_now": lambda: kernel.run_task_now(job_id),
        "delete": lambda: kernel.delete_task(job_id),
    }
    try:
        try:
            result = harness.call(calls[action])
        except JobNotFoundError as err:
            assert created is None or action == "resume", (action, job_id)
            check_refusal(err, job_id)
            assert harness.snapshot() == before
            return
        except TickkitError as err:
            check_refusal(err, job_id)
            assert harness.snapshot() == before
            return
        after = harness.snapshot()
        if created is None:
            # nothing under this id: a lookup finds nothing and changes nothing
            assert action in ("get", "delete"), (action, job_id, result)
            assert result in (None, False)
            assert after == before
        elif action == "get":
            assert isinstance(result, Job) and result.id == created and after == before
        elif action == "delete":
            assert result is True
            assert [k for k in after if k[0] == created] == []
            created = None
        elif action == "pause":
            assert isinstance(result, Job) and result.state is JobState.PAUSED
        elif action == "resume":
            assert isinstance(result, Job) and result.state is JobState.SCHEDULED
        else:
            assert result == created
            moved = harness.call(lambda: kernel.get_task(created))
            assert moved is not None and moved.next_run_at == round_ms(harness.clock.now())
    finally:
        if created is not None:
            harness.call(lambda: kernel.delete_task(created))


@SHARED
@given(schedule=st.one_of(cron_strings, schedule_dicts, duration_strings), replace=st.booleans())
def test_replace_and_recreate_keep_one_job(harness: Harness, schedule: Any, replace: bool) -> None:
    kernel = harness.kernel
    before = harness.snapshot()
    try:
        first = harness.call(lambda: kernel.create_task("known", 1, "1h", id="twice"))
    except JobExistsError:  # left by nothing: every example deletes its job
        pytest.fail("a job 'twice' was left behind")
    try:
        refused: TickkitError | None = None
        try:
            harness.call(
                lambda: kernel.create_task("known", 2, schedule, id="twice", replace=replace)
            )
        except TickkitError as err:
            refused = err
        if refused is not None:
            assert not replace or not isinstance(refused, JobExistsError)
            check_refusal(refused, schedule, "twice")
            job = harness.call(lambda: kernel.get_task(first))
            assert job is not None and job.data == 1
            return
        assert replace
        job = harness.call(lambda: kernel.get_task(first))
        spec, at = expected_times(schedule, None, harness.clock.now())
        assert job is not None and (job.data, job.schedule, job.next_run_at) == (2, spec, at)
        assert len(harness.snapshot()) == len(before) + 1
    finally:
        harness.call(lambda: kernel.delete_task(first))


@SHARED
@given(
    name=st.one_of(st.none(), names),
    state=st.one_of(st.none(), st.sampled_from([*JobState, *map(str, JobState)]), zones),
    static=st.one_of(st.none(), st.booleans(), st.integers(0, 1), st.text(max_size=2)),
    limit=st.one_of(st.none(), st.integers(-2, 5), st.booleans(), st.floats(0, 3)),
)
def test_list_filters(harness: Harness, name: Any, state: Any, static: Any, limit: Any) -> None:
    kernel = harness.kernel
    created = harness.call(lambda: kernel.create_task("known", None, "1h"))
    try:
        try:
            jobs = harness.call(
                lambda: kernel.list_tasks(name, state=state, static=static, limit=limit)
            )
        except TickkitError as err:
            check_refusal(err, name, state, static, limit)
            return
        assert all(isinstance(job, Job) for job in jobs)
        assert limit is None or len(jobs) <= limit
        assert all(job.name == name for job in jobs) if name is not None else True
        if state is not None:
            assert all(job.state is JobState(state) for job in jobs)
        wanted = (
            (name in (None, "known"))
            and (state is None or JobState(state) is JobState.SCHEDULED)
            and not static
            and (limit is None or limit > 0)
        )
        assert (created in [job.id for job in jobs]) == wanted or limit == 1
    finally:
        harness.call(lambda: kernel.delete_task(created))


def test_unknown_task_names_store_nothing(harness: Harness) -> None:
    before = harness.snapshot()
    for name in [10**4300, ["known"], None, "known\n", "\ud800"]:
        with pytest.raises(UnknownTaskError):
            harness.call(lambda: harness.kernel.create_task(name))  # noqa: B023
    assert harness.snapshot() == before


# --- update_task, where, get_runs through the kernel, on every driver (issue 14) ------------

#: hostile `where` mappings: any key and any value the data strategies make (lists, objects,
#: NaN, 10**400, lone surrogates, deep nesting), plus non-mappings
wheres = st.one_of(
    st.dictionaries(
        st.one_of(_with_surrogate(st.text(max_size=6)), st.integers()), data_values, max_size=3
    ),
    data_values,
)


@SHARED
@given(data=st.one_of(st.just(UNSET), data_values), schedule=st.one_of(st.just(UNSET), schedules))
@example(data={"k": "\ud800"}, schedule=UNSET)
@example(data=10**400, schedule=UNSET)
@example(data=float("nan"), schedule=UNSET)
@example(data=_nested(200), schedule=UNSET)
@example(data=UNSET, schedule="* * * * * * * *")
@example(data=UNSET, schedule=UNSET)
def test_update_task_reads_back_or_stores_nothing(
    harness: Harness, data: Any, schedule: Any
) -> None:
    kernel = harness.kernel
    created = harness.call(lambda: kernel.create_task("known", {"user_id": 1}, "1h"))
    try:
        before = harness.snapshot()
        if data is UNSET and schedule is UNSET:
            with pytest.raises(InvalidArgumentError, match="nothing to change"):
                harness.call(lambda: kernel.update_task(created))
            assert harness.snapshot() == before
            return
        try:
            updated = harness.call(
                lambda: kernel.update_task(created, data=data, schedule=schedule)
            )
        except TickkitError as err:
            check_refusal(err, data, schedule)
            assert harness.snapshot() == before
            return
        stored = harness.call(lambda: kernel.get_task(created))
        assert stored is not None and _key(stored) == _key(updated)
        if data is not UNSET:
            assert stored.data == jsonable(data)
        else:
            assert stored.data == {"user_id": 1}
        if schedule is not UNSET:
            spec, _ = expected_times(schedule, None, harness.clock.now())
            assert (stored.schedule is None) == (spec is None)
            assert stored.recurring == (spec is not None)
        assert stored.next_run_at is not None
        assert len(harness.snapshot()) == len(before)
    finally:
        harness.call(lambda: kernel.delete_task(created))


@SHARED
@given(where=wheres, limit=st.one_of(st.none(), st.integers(-1, 3)))
@example(where={"user_id": 10**400}, limit=None)
@example(where={"user_id": float("nan")}, limit=None)
@example(where={"\ud800": 1}, limit=None)
@example(where={"user_id": [1]}, limit=None)
@example(where={"user_id": 1}, limit=None)
def test_where_answers_or_names_the_value(harness: Harness, where: Any, limit: Any) -> None:
    kernel = harness.kernel
    created = harness.call(lambda: kernel.create_task("known", {"user_id": 1}, "1h"))
    try:
        before = harness.snapshot()
        try:
            jobs = harness.call(lambda: kernel.list_tasks(where=where, limit=limit))
            count = harness.call(lambda: kernel.count_tasks(where=where))
        except TickkitError as err:
            check_refusal(err, where, limit)
            assert harness.snapshot() == before
            return
        assert all(isinstance(job, Job) for job in jobs)
        assert limit is None or len(jobs) <= limit
        matched = where in ({}, None) or where == {"user_id": 1} or where == {"user_id": 1.0}
        if limit is None:
            assert (created in [job.id for job in jobs]) == matched
            assert count == len(jobs)
    finally:
        harness.call(lambda: kernel.delete_task(created))


@SHARED
@given(job_id=job_ids, limit=st.one_of(st.integers(-2, 3), st.floats(), st.booleans(), st.none()))
@example(job_id="\ud800", limit=1)
@example(job_id="meta", limit=10**400)
def test_get_runs_answers_or_names_the_value(harness: Harness, job_id: Any, limit: Any) -> None:
    try:
        runs = harness.call(lambda: harness.kernel.get_runs(job_id, limit=limit))
    except TickkitError as err:
        check_refusal(err, job_id, limit)
        return
    assert runs == []  # no job ran in this store


@SHARED
@given(
    name=st.one_of(st.none(), names),
    where=st.one_of(st.none(), wheres),
    state=st.one_of(st.none(), st.sampled_from([*JobState, *map(str, JobState)]), zones),
    since=st.one_of(datetimes, numbers, st.text(max_size=5), st.none(), json_data),
)
@example(name=None, where=None, state=None, since=datetime(2030, 1, 1))  # naive
@example(name="\ud800", where={"user_id": float("nan")}, state="\ud800", since=float("nan"))
@example(name=None, where={"user_id": 1}, state="scheduled", since=datetime(1, 1, 1, tzinfo=UTC))
def test_summary_counts_answer_or_name_the_value(
    harness: Harness, name: Any, where: Any, state: Any, since: Any
) -> None:
    """count_by_state, count_by_task and count_runs (the dashboard's counts, issue 15): an
    answer of the documented shape, or a TickkitError naming the value; nothing stored."""
    kernel = harness.kernel
    created = harness.call(lambda: kernel.create_task("known", {"user_id": 1}, "1h"))
    try:
        before = harness.snapshot()
        calls: list[tuple[Callable[[], Any], tuple[Any, ...]]] = [
            (lambda: kernel.count_by_state(name, where=where), (name, where)),
            (lambda: kernel.count_by_task(state=state), (state,)),
            (lambda: kernel.count_runs(since), (since,)),
        ]
        answers: list[Any] = []
        for call, inputs in calls:
            try:
                answers.append(harness.call(call))
            except TickkitError as err:
                check_refusal(err, *inputs)
                answers.append(err)
            assert harness.snapshot() == before
        by_state, by_task, runs = answers
        if not isinstance(by_state, TickkitError):
            assert set(by_state) == set(JobState)
            assert all(isinstance(n, int) and n >= 0 for n in by_state.values())
            matched = name in (None, "known") and where in (None, {}, {"user_id": 1})
            assert by_state[JobState.SCHEDULED] >= (1 if matched else 0)
            total = harness.call(lambda: kernel.count_tasks(name, where=where))
            assert sum(by_state.values()) == total
        if not isinstance(by_task, TickkitError):
            assert all(isinstance(k, str) and v > 0 for k, v in by_task.items())
            assert list(by_task) == sorted(by_task)
            if state is None or JobState(state) is JobState.SCHEDULED:
                assert by_task.get("known", 0) >= 1
        if runs is not None and not isinstance(runs, TickkitError):
            assert set(runs) == {
                Outcome.SUCCEEDED,
                Outcome.FAILED,
                Outcome.TIMED_OUT,
                Outcome.SKIPPED,
            }
            assert all(isinstance(n, int) and n >= 0 for n in runs.values())
    finally:
        harness.call(lambda: kernel.delete_task(created))


# --- driver URLs -----------------------------------------------------------------------------

SQLITE_OPTIONS = ["poll_interval", "lease_duration", "busy_timeout", "synchronous", "keep_failed"]
#: the driver's own list: the test follows it when an option is added
REDIS_OPTIONS = list(URL_OPTIONS)
option_values = st.one_of(
    st.sampled_from(["", "0", "1", "-1", "nan", "inf", "1e400", "true", "false", "x", "10"]),
    st.text(max_size=10),
)


def _query(known: list[str]) -> st.SearchStrategy[list[tuple[str, str]]]:
    key = st.one_of(st.sampled_from([*known, "bogus"]), st.text(min_size=1, max_size=8))
    return st.lists(st.tuples(key, option_values), max_size=3)


def _open_and_close(url: str, *, unknown: bool, known: list[str]) -> None:
    async def attempt() -> None:
        kernel = Kernel(url, tasks=TaskRegistry(), clock=VirtualClock(T0))
        try:
            with anyio.fail_after(CALL_LIMIT):
                await kernel.open()
        finally:
            with anyio.fail_after(CALL_LIMIT):
                await kernel.stop()

    refused: TickkitError | None = None
    try:
        anyio.run(attempt)
    except TickkitError as err:
        refused = err
    if refused is None:
        assert not unknown, f"{url} has an unknown option but opened"
        return
    if unknown:
        assert isinstance(refused, DriverError), f"unknown option, not a DriverError: {refused!r}"
    check_refusal(refused, url, *known, *urlsplit(url).query.split("&"))


@SHARED
@given(query=_query(SQLITE_OPTIONS))
@example(query=[("bogus", "1")])
@example(query=[("busy_timeout", "inf")])  # OverflowError at open
def test_sqlite_urls(tmp_path: Path, query: list[tuple[str, str]]) -> None:
    path = tmp_path / f"{uuid.uuid4().hex[:8]}.db"
    url = f"sqlite:///{quote(str(path))}?{urlencode(query)}"
    unknown = any(key not in SQLITE_OPTIONS for key, _ in query)
    _open_and_close(url, unknown=unknown, known=SQLITE_OPTIONS)


@SHARED
@given(query=_query(REDIS_OPTIONS))
@example(query=[("bogus", "1")])  # an unknown option raised TypeError
@example(query=[("socket_timeout", "0.001")])  # retried for half a minute
def test_redis_urls(redis_url: str, query: list[tuple[str, str]]) -> None:
    url = f"{redis_url}?{urlencode([('queue', 'urls-' + uuid.uuid4().hex[:8]), *query])}"
    unknown = any(key not in REDIS_OPTIONS for key, _ in query)
    _open_and_close(url, unknown=unknown, known=REDIS_OPTIONS)


# hostile URL text: lone surrogates and NUL included (st.characters() leaves out category Cs)
url_chars = st.one_of(
    st.characters(),
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
    st.sampled_from("\x00/?#@&=:%"),
)
url_text = st.lists(
    st.one_of(url_chars, st.sampled_from(["%00", "%ED%A0%80", "%zz"])), max_size=12
).map("".join)


def _open_or_refuse(url: str, **kwargs: Any) -> TickkitError | None:
    """Open and stop a kernel on ``url``: it opens, or refuses with a TickkitError (anything
    else escapes and fails the test) whose message is short and names no raw surrogate."""

    async def attempt() -> None:
        kernel = Kernel(url, tasks=TaskRegistry(), clock=VirtualClock(T0), **kwargs)
        try:
            with anyio.fail_after(CALL_LIMIT):
                await kernel.open()
        finally:
            with anyio.fail_after(CALL_LIMIT):
                await kernel.stop()

    try:
        anyio.run(attempt)
    except TickkitError as err:
        message = str(err)
        event(f"refused: {type(err).__name__}")
        assert message and len(message) < 3000, message
        message.encode("utf-8")  # printable: no lone surrogate reaches a log line
        return err
    return None


@SHARED
@given(name=url_text, query=url_text)
@example(name="\ud800", query="")  # UnicodeEncodeError at open
@example(name="x%00", query="")  # ValueError: embedded null byte
@example(name="x\x00", query="")
def test_sqlite_hostile_urls(tmp_path: Path, name: str, query: str) -> None:
    # the path stays inside tmp_path: no '..' climbs out of it
    url = f"sqlite:///{tmp_path}/d{name.replace('..', '__')}.db?{query}"
    _open_or_refuse(url)


@SHARED
@given(queue=url_text, query=url_text)
@example(queue="\ud800", query="")  # UnicodeEncodeError
@example(queue="x%00y", query="")
def test_redis_hostile_urls(redis_url: str, queue: str, query: str) -> None:
    _open_or_refuse(f"{redis_url}?queue=h{uuid.uuid4().hex[:6]}{queue}&{query}")


driver_option_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(alphabet=url_chars, max_size=8),
    st.lists(st.integers(), max_size=2),
)


@SHARED
@given(
    options=st.dictionaries(
        st.one_of(st.sampled_from([*SQLITE_OPTIONS, "bogus", "path"]), url_text),
        driver_option_values,
        max_size=3,
    )
)
@example(options={"bogus": 1})  # TypeError: unexpected keyword argument
@example(options={"poll_interval": "x"})
def test_sqlite_driver_options(tmp_path: Path, options: dict[str, Any]) -> None:
    url = f"sqlite:///{tmp_path}/opts-{uuid.uuid4().hex[:8]}.db"
    refused = _open_or_refuse(url, driver_options=options)
    if refused is not None:
        assert isinstance(refused, DriverError), repr(refused)


@SHARED
@given(
    plugin=st.one_of(
        st.sampled_from(
            ["nope:x", "os:nope", "", ":", "tickkit:nope", "tickkit.kernel:Kernel.nope", "a..b"]
        ),
        url_text.map(lambda text: f"tickkit_no_such_{text}"),
    )
)
@example(plugin="nope:x")  # ModuleNotFoundError at open
def test_plugins_that_do_not_import(plugin: str) -> None:
    refused = _open_or_refuse("memory://", plugins=[plugin])
    assert isinstance(refused, PluginError), repr(refused)
    assert "plugin" in str(refused)


def test_profiles_are_registered() -> None:
    for name in ("dev", "ci", "long"):
        profile = settings.get_profile(name)
        assert profile.max_examples >= 10
    assert settings.get_profile("ci").deadline is not None
    assert settings.get_profile("ci").derandomize


# --- managing jobs (issue 14): where, paging, update_job at the driver ----------------------
# (memory and SQLite here; the BullMQ driver joins when it implements the same SPI)

_where_values = st.one_of(
    st.sampled_from([0, 1, 1.0, 2, -1, True, False, None, "1", "", "a", 2.5, 2**53, 2**63 - 1]),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=4),
)
#: "a" is indexed (ensure_indexes at the start), "b" and "c" are scanned
_where_keys = st.sampled_from(["a", "b", "c", 'q"'])
_job_data = st.one_of(
    st.dictionaries(
        _where_keys, st.one_of(_where_values, st.lists(_where_values, max_size=1)), max_size=3
    ),
    st.sampled_from([None, 1, "a", [1], ["a", 1]]),
)
#: where filters, valid or not (values the kernel refuses: NaN, huge ints, lists, surrogates)
_wheres = st.dictionaries(
    st.one_of(_where_keys, st.sampled_from(["", "x" * 201, "\ud800"])),
    weighted(
        (10, _where_values),
        (
            1,
            st.sampled_from(
                [float("nan"), float("inf"), 2**63, -(2**63) - 1, [1], {"k": 1}, "\udfff", b"x"]
            ),
        ),
    ),
    max_size=3,
)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store_harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    url = {
        "memory": lambda: "memory://",
        "sqlite": lambda: f"sqlite:///{tmp_path / 'w.db'}",
        "postgres": lambda: postgres_url(request),
    }[request.param]()
    clock = VirtualClock(T0)
    kernel = Kernel(url, tasks=registry(), clock=clock)
    with start_blocking_portal("asyncio") as portal:
        portal.call(kernel.open)
        assert kernel.driver is not None
        portal.call(kernel.driver.ensure_indexes, ["a"])
        try:
            yield Harness(portal, kernel, clock)
        finally:
            portal.call(kernel.stop)


@SHARED
@given(
    datas=st.lists(st.tuples(_job_data, st.integers(0, 3)), max_size=12),
    where=_wheres,
    limit=st.one_of(st.none(), st.integers(0, 5)),
    after=st.integers(0, 12),
)
def test_where_answers_as_select_jobs(
    store_harness: Harness, datas: list[tuple[Any, int]], where: Any, limit: Any, after: int
) -> None:
    from tickkit import Cursor
    from tickkit.driver import select_jobs
    from tickkit.manage import check_where

    try:
        checked = check_where(where)
    except TickkitError as err:
        check_refusal(err, where)
        return
    driver = store_harness.kernel.driver
    assert driver is not None
    added = [
        store_harness.call(
            lambda d=data, m=minutes: driver.add_job(  # type: ignore[misc]
                Job(
                    id=None,
                    name="known",
                    data=d,
                    next_run_at=T0 + timedelta(minutes=m),
                    scheduled_at=T0 + timedelta(minutes=m),
                    created_at=T0,
                )
            )
        )
        for data, minutes in datas
    ]
    try:
        every = store_harness.call(lambda: driver.list_jobs())
        cursor = None
        if every and after < len(every):
            cursor = Cursor(every[after].next_run_at, every[after].id or "")
        want = select_jobs(every, where=checked, limit=limit, after=cursor)
        got = store_harness.call(lambda: driver.list_jobs(where=checked, limit=limit, after=cursor))
        assert [j.id for j in got] == [j.id for j in want]
        counts = store_harness.call(lambda: driver.count_jobs(where=checked))
        assert sum(counts.values()) == len(select_jobs(every, where=checked))
        event(f"matched: {min(len(want), 3)}")
    finally:
        for job_id in added:
            store_harness.call(lambda j=job_id: driver.remove_job(j))  # type: ignore[misc]


@SHARED
@given(data=data_values, minutes=st.one_of(st.none(), st.integers(-(10**6), 10**6)))
def test_update_job_reads_back_or_stores_nothing(
    store_harness: Harness, data: Any, minutes: int | None
) -> None:
    driver = store_harness.kernel.driver
    assert driver is not None
    job_id = store_harness.call(
        lambda: driver.add_job(
            Job(id=None, name="known", data={"a": 1}, next_run_at=T0, scheduled_at=T0)
        )
    )
    try:
        before = store_harness.call(lambda: driver.get_job(job_id))
        at = T0 + timedelta(minutes=minutes) if minutes is not None else None
        try:
            if at is None:
                updated = store_harness.call(lambda: driver.update_job(job_id, data=data))
            else:
                updated = store_harness.call(
                    lambda: driver.update_job(
                        job_id, data=data, schedule={"type": "date"}, next_run_at=at
                    )
                )
        except TickkitError as err:
            check_refusal(err, data)
            assert store_harness.call(lambda: driver.get_job(job_id)) == before
            return
        stored = store_harness.call(lambda: driver.get_job(job_id))
        assert updated is not None and stored is not None
        assert updated.data == stored.data == jsonable(data)
        if at is not None:
            assert stored.next_run_at == stored.scheduled_at == at
            assert stored.schedule == {"type": "date"}
        else:
            assert stored.next_run_at == T0
        # the where index follows the new data
        found = store_harness.call(lambda: driver.list_jobs(where={"a": 1}))
        assert (job_id in [j.id for j in found]) == (
            isinstance(stored.data, dict)
            and "a" in stored.data
            and stored.data["a"] == 1
            and not isinstance(stored.data["a"], bool)
        )
    finally:
        store_harness.call(lambda: driver.remove_job(job_id))
