"""Hardening of the BullMQ driver against hostile input, stores and networks (issue 11), on a
real redis-server: the script link, reserved ids, return values, URLs and credentials,
permanent and transient connection errors, the optional imports."""

from __future__ import annotations

import asyncio
import logging
import math
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis

from tickkit import (
    DriverError,
    InvalidDataError,
    InvalidJobIdError,
    JobState,
    Kernel,
    Outcome,
    RunResult,
    TaskContext,
    TaskRegistry,
    TickkitError,
    task,
)
from tickkit.drivers.bullmq import BullMQDriver, mapping
from tickkit.drivers.bullmq.link import Link, Script, Target

from .redis_server import RedisServer, free_port
from .waiting import wait_for

pytestmark = [pytest.mark.redis, pytest.mark.anyio]

PASSWORD = "Hunter2-s3cret"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of this test alone (it is stopped and restarted)."""
    with tempfile.TemporaryDirectory() as workdir:
        server = RedisServer(free_port(), workdir)
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="module")
def protected() -> Iterator[RedisServer]:
    with tempfile.TemporaryDirectory() as workdir:
        server = RedisServer(free_port(), workdir, ("--requirepass", PASSWORD))
        server.start()
        try:
            yield server
        finally:
            server.stop()


def queue_name(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:8]}"


# --- 1. the link: an argument that cannot be encoded fails its own call only -------------------


async def test_an_unencodable_argument_fails_its_call_alone(redis_url: str) -> None:
    link = Link(Target.from_url(redis_url))
    echo = Script("return ARGV[1]")
    try:
        assert await link.call("PING") == "PONG"
        calls = [
            link.run(echo, ("bad \ud800 value",))
            if i == 7
            else link.call("SET", "\ud800", "x")
            if i == 12
            else link.run(echo, (f"v{i}",))
            for i in range(20)
        ]
        results = await asyncio.gather(*calls, return_exceptions=True)
        for i, got in enumerate(results):
            if i in (7, 12):
                assert isinstance(got, InvalidDataError), got
                assert "\\ud800" in str(got)
            else:
                assert got == f"v{i}"
        # the link is in step afterwards: every later call gets its own reply
        later = await asyncio.gather(*(link.call("ECHO", f"e{i}") for i in range(50)))
        assert later == [f"e{i}" for i in range(50)]
        with pytest.raises(InvalidDataError, match="object"):
            await link.call("ECHO", object())
        assert await link.call("ECHO", "after") == "after"
    finally:
        await link.close()


async def test_a_surrogate_in_data_or_name_does_not_desync_the_driver(redis_url: str) -> None:
    """The driver's own calls over the link: a job whose name or data cannot be sent is
    refused, every other job still runs."""
    ran: list[Any] = []
    reg = TaskRegistry()

    async def record(ctx: TaskContext) -> None:
        ran.append(ctx.data)

    task(name="record", execute=record, registry=reg)
    driver = BullMQDriver(redis_url, queue=queue_name("surrogate"))
    async with Kernel(driver, tasks=reg) as kernel:
        job = mapping_job("record", {"k": "\ud800"})
        with pytest.raises(TickkitError):
            await driver.add_job(job)
        with pytest.raises(TickkitError):
            await driver.add_job(mapping_job("bad\ud800name", {}))
        ids = [await kernel.create_task("record", {"i": i}) for i in range(5)]
        await wait_for(lambda: len(ran) == 5, 10, "the good jobs")
        assert sorted(r["i"] for r in ran) == list(range(5))
        assert len(ids) == 5
        assert (await driver.queue_counts())["wait"] == 0


def mapping_job(name: str, data: Any, job_id: str | None = None) -> Any:
    from tickkit import Job

    return Job(id=job_id, name=name, data=data)


# --- 2. ids and static task names that are the queue's own keys ---------------------------------


async def test_reserved_ids_are_refused_before_anything_is_stored(redis_url: str) -> None:
    queue = queue_name("reserved")
    ran: list[Any] = []
    reg = TaskRegistry()

    async def record(ctx: TaskContext) -> None:
        ran.append(ctx.data)

    task(name="record", execute=record, registry=reg)
    driver = BullMQDriver(redis_url, queue=queue)
    async with Kernel(driver, tasks=reg) as kernel:
        # the worker's first stalled-job check (a background loop started with the kernel)
        # writes the queue's meta and stalled-check keys; run it now, so that it cannot land
        # between the two reads below (it runs at most once per interval)
        await driver.check_stalled()
        before = sorted(await driver._redis.keys(f"bull:{queue}:*"))
        for reserved in sorted(mapping.RESERVED_IDS):
            with pytest.raises(InvalidJobIdError, match=f"'{reserved}'"):
                await kernel.create_task("record", {"x": 1}, id=reserved)
            with pytest.raises(InvalidJobIdError):
                await kernel.create_task("record", {"x": 1}, "* * * * *", id=reserved)
            with pytest.raises(InvalidJobIdError):
                driver.check_id(reserved)
        assert sorted(await driver._redis.keys(f"bull:{queue}:*")) == before
        assert await kernel.list_tasks() == []
        # the queue works
        await kernel.create_task("record", {"ok": 1})
        await wait_for(lambda: ran == [{"ok": 1}], 10, "a job after the refusals")


async def test_the_full_list_of_bullmq_key_suffixes_is_reserved() -> None:
    for suffix in (
        "wait",
        "active",
        "delayed",
        "events",
        "marker",
        "meta",
        "id",
        "prioritized",
        "repeat",
        "stalled",
        "stalled-check",
        "limiter",
        "paused",
        "completed",
        "failed",
        "waiting-children",
        "pc",
        "de",
        "metrics",
    ):
        assert suffix in mapping.RESERVED_IDS
    for fine in ("waiting", "report", "tick"):
        mapping.check_job_id(fine)


async def test_a_static_task_named_like_a_key_is_refused_at_start(redis_url: str) -> None:
    queue = queue_name("static-reserved")
    reg = TaskRegistry()

    async def noop(ctx: TaskContext) -> None:
        return None

    task(name="marker", schedule="* * * * *", execute=noop, registry=reg)
    driver = BullMQDriver(redis_url, queue=queue)
    with pytest.raises(InvalidJobIdError, match="'marker'"):
        async with Kernel(driver, tasks=reg):
            pass
    client = aioredis.from_url(redis_url, decode_responses=True)
    try:
        assert await client.keys(f"bull:{queue}:*") == []
    finally:
        await client.aclose()


# --- 4. return values that cannot be stored --------------------------------------------------


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (math.nan, "NaN"),
        (10**400, "too large"),
        (-math.inf, "inf"),
        ("lone \ud800", "surrogate"),
    ],
)
async def test_a_return_value_that_cannot_be_stored_never_runs_a_job_twice(
    redis_url: str, value: Any, why: str
) -> None:
    """10**400 made a successful job run twice and end "stalled more than allowable limit";
    NaN was stored as `NaN`. The kernel stores such a value as null (portable_value) and the
    run succeeds, once; the other job is untouched."""
    queue = queue_name("retval")
    runs: list[str] = []
    reg = TaskRegistry()

    async def give(ctx: TaskContext) -> Any:
        runs.append(ctx.job_id)
        return value if ctx.data["bad"] else {"fine": True}

    task(name="give", execute=give, registry=reg)
    driver = BullMQDriver(redis_url, queue=queue, lock_duration=1.0, stalled_interval=0.3)
    async with Kernel(driver, tasks=reg) as kernel:
        bad = await kernel.create_task("give", {"bad": True})
        good = await kernel.create_task("give", {"bad": False})
        await wait_for(lambda: {bad, good} <= set(runs), 10, "both runs")

        async def settled() -> bool:
            counts = await driver.queue_counts()
            return counts["active"] == 0 and counts["completed"] + counts["failed"] == 2

        await wait_for(settled, 10, "both jobs to finish")
        await asyncio.sleep(1.5)  # past the lock and a stalled check: nothing runs twice
        view = await kernel.get_task(bad)
        assert view is not None and view.state is JobState.COMPLETED, why
        assert await driver._redis.hget(f"bull:{queue}:{bad}", "returnvalue") == "null"
        good_view = await kernel.get_task(good)
        assert good_view is not None and good_view.state is JobState.COMPLETED
        stored = await driver._redis.hget(f"bull:{queue}:{good}", "returnvalue")
        assert stored == '{"fine":true}'
    assert sorted(runs) == sorted([bad, good])  # each ran once


async def test_the_driver_records_an_unstorable_return_value_as_a_failure(redis_url: str) -> None:
    """The driver itself (no kernel normalizing): complete() with values Redis or Node cannot
    hold, each claim alone; the job ends failed, never active."""
    queue = queue_name("retval-driver")
    driver = BullMQDriver(redis_url, queue=queue)
    reg = TaskRegistry()

    async def give(ctx: TaskContext) -> None:
        return None

    task(name="give", execute=give, registry=reg)
    kernel = Kernel(driver, tasks=reg)
    await kernel.open()
    try:
        values: list[Any] = [math.nan, {"x": [math.inf]}, 10**400, [10**5000], "\udc80", object()]
        ids = [await kernel.create_task("give", {"i": i}) for i in range(len(values) + 1)]
        now = kernel.clock.now()
        got = await driver.acquire(now=now, limit=len(ids))
        assert len(got.claims) == len(ids)
        by_id = {c.job.id: c for c in got.claims}
        for job_id, value in zip(ids, values, strict=False):
            await driver.complete(
                by_id[job_id], RunResult(Outcome.SUCCEEDED, now, return_value=value)
            )
        await driver.complete(
            by_id[ids[-1]], RunResult(Outcome.SUCCEEDED, now, return_value={"n": 1})
        )
        counts = await driver.queue_counts()
        assert counts["active"] == 0 and counts["failed"] == len(values)
        for job_id in ids[:-1]:
            view = await driver.get_job(job_id)
            assert view is not None and view.state is JobState.FAILED
            assert "cannot be stored" in (view.last_error or "")
            assert await driver._redis.hget(f"bull:{queue}:{job_id}", "returnvalue") is None
        done = await driver.get_job(ids[-1])
        assert done is not None and done.state is JobState.COMPLETED
    finally:
        await kernel.stop()


def test_encode_return_is_strict() -> None:
    assert mapping.encode_return({"a": [1, 2.5, None, "é"]}) == '{"a":[1,2.5,null,"é"]}'
    for bad in (math.nan, -math.inf, 10**400, [10**309], "\udfff", {1j: 2}):
        with pytest.raises(InvalidDataError):
            mapping.encode_return(bad)
    with pytest.raises(InvalidDataError, match="cannot be stored"):
        mapping.encode_return(10**5000)  # its repr alone would raise ValueError


# --- 6. permanent errors fail at once; transient ones are bounded or logged ---------------------


async def test_a_wrong_password_fails_at_once(protected: RedisServer) -> None:
    url = f"redis://:wrong-{PASSWORD}@127.0.0.1:{protected.port}/0"
    started = time.monotonic()
    with pytest.raises(DriverError) as info:
        async with Kernel(BullMQDriver(url, queue=queue_name("auth")), tasks=TaskRegistry()):
            pass
    assert time.monotonic() - started < 3
    assert "WRONGPASS" in str(info.value) or "invalid" in str(info.value).lower()
    assert PASSWORD not in str(info.value)
    # no password at all: NOAUTH, at once too
    started = time.monotonic()
    with pytest.raises(DriverError):
        async with Kernel(
            BullMQDriver(f"redis://127.0.0.1:{protected.port}/0", queue=queue_name("noauth")),
            tasks=TaskRegistry(),
        ):
            pass
    assert time.monotonic() - started < 3
    # the link alone, also at once
    link = Link(Target.from_url(url))
    started = time.monotonic()
    with pytest.raises(DriverError, match=r"WRONGPASS|invalid"):
        await link.call("PING")
    assert time.monotonic() - started < 3
    await link.close()


async def test_a_missing_database_fails_at_once(redis_url: str) -> None:
    url = redis_url.rsplit("/", 1)[0] + "/999"
    started = time.monotonic()
    with pytest.raises(DriverError):
        async with Kernel(BullMQDriver(url, queue=queue_name("db")), tasks=TaskRegistry()):
            pass
    link = Link(Target.from_url(url))
    with pytest.raises(DriverError, match="DB index"):
        await link.call("PING")
    await link.close()
    assert time.monotonic() - started < 3


async def test_management_commands_fail_within_seconds_when_redis_is_gone(
    private_redis: RedisServer,
) -> None:
    driver = BullMQDriver(private_redis.url, queue=queue_name("gone"))
    reg = TaskRegistry()

    async def noop(ctx: TaskContext) -> None:
        return None

    task(name="noop", execute=noop, registry=reg)
    kernel = Kernel(driver, tasks=reg)
    await kernel.open()
    try:
        await kernel.create_task("noop", {})
        await asyncio.to_thread(private_redis.stop)
        for call in (
            kernel.list_tasks,
            lambda: kernel.get_task("nope"),
            lambda: kernel.create_task("noop", {}),
        ):
            started = time.monotonic()
            with pytest.raises(DriverError, match=r"127\.0\.0\.1"):
                await call()
            assert time.monotonic() - started < 8
    finally:
        with anyio.fail_after(10):
            await kernel.stop()


async def test_a_worker_logs_each_reconnect_and_recovers(
    private_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[Any] = []
    reg = TaskRegistry()

    async def record(ctx: TaskContext) -> None:
        ran.append(ctx.data)

    task(name="record", execute=record, registry=reg)
    driver = BullMQDriver(private_redis.url, queue=queue_name("back"), block_timeout=0.5)
    with caplog.at_level(logging.WARNING):
        async with Kernel(driver, tasks=reg) as kernel:
            await kernel.create_task("record", {"n": 1})
            await wait_for(lambda: len(ran) == 1, 10, "the first job")
            await asyncio.to_thread(private_redis.stop)
            await asyncio.sleep(3)
            await asyncio.to_thread(private_redis.start)
            # a fresh server (no persistence): the worker reconnects and runs new jobs
            await wait_for(lambda: _created(kernel), 15, "a create after the restart")
            await wait_for(lambda: len(ran) == 2, 15, "the job created after the restart")
    reconnects = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "reconnecting in" in r.getMessage()
    ]
    assert reconnects, caplog.text
    assert any("s (attempt" in m for m in reconnects) or any(
        "marker failed" in m for m in reconnects
    )


_made: list[str] = []


async def _created(kernel: Kernel) -> bool:
    if _made:
        return True
    try:
        _made.append(await kernel.create_task("record", {"n": 2}))
    except DriverError:
        return False
    return True


# --- 7. URL options and credentials ---------------------------------------------------------


def test_unknown_url_options_are_a_driver_error() -> None:
    for url in (
        "redis://localhost:6379/0?bogus=1",
        f"redis://:{PASSWORD}@localhost/0?queue=q&socket_timeout=2&bogus=1",
    ):
        with pytest.raises(DriverError, match="'bogus'") as info:
            BullMQDriver.from_url(url)
        assert "socket_timeout" in str(info.value)  # the accepted ones are listed
        assert PASSWORD not in str(info.value)
        with pytest.raises(DriverError, match="'bogus'"):
            BullMQDriver(url)
    for url in (
        f"redis://:{PASSWORD}@localhost/0?db=abc",
        f"redis://:{PASSWORD}@localhost:notaport/0",
        f"http://:{PASSWORD}@localhost/0",
    ):
        with pytest.raises(DriverError) as info:
            BullMQDriver(url)
        assert PASSWORD not in str(info.value)
    ok = BullMQDriver.from_url("redis://localhost/0?queue=q&prefix=p&socket_timeout=2&db=1")
    assert ok.queue == "q"


@pytest.mark.parametrize(
    "url",
    [
        "redis://local\ud800host/0",
        "redis://localhost/0?queue=q\udfff",
        f"redis://:{PASSWORD}\ud800@localhost/0",
        "redis://localhost/0?queue=q\x00",
    ],
)
def test_urls_with_nul_or_lone_surrogates_are_refused_by_the_driver_itself(url: str) -> None:
    """from_url and the constructor are public: they refuse what the kernel refuses, with a
    DriverError (a lone surrogate used to reach redis-py as a UnicodeEncodeError)."""
    for make in (BullMQDriver.from_url, BullMQDriver):
        with pytest.raises(DriverError, match="NUL or a lone surrogate") as info:
            make(url)
        assert PASSWORD not in str(info.value)


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "1e400"])
@pytest.mark.parametrize("name", ["socket_timeout", "socket_connect_timeout"])
def test_url_timeouts_must_be_above_zero_and_finite(name: str, value: str) -> None:
    """redis-py 5.0 waited forever on socket_timeout=0; every version gets one clear refusal."""
    with pytest.raises(DriverError, match=f"option {name}=") as info:
        BullMQDriver.from_url(f"redis://:{PASSWORD}@localhost/0?{name}={value}")
    assert PASSWORD not in str(info.value)


async def test_credentials_never_reach_an_error_a_log_or_a_repr(
    protected: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:{protected.port}/0"
    driver = BullMQDriver(url, queue=queue_name("secret"))
    assert PASSWORD not in repr(driver) and "***" in repr(driver)
    ran: list[Any] = []
    reg = TaskRegistry()

    async def record(ctx: TaskContext) -> None:
        ran.append(1)

    task(name="record", execute=record, registry=reg)
    with caplog.at_level(logging.DEBUG):
        async with Kernel(driver, tasks=reg) as kernel:
            await kernel.create_task("record", {})
            await wait_for(lambda: bool(ran), 10, "a job on the protected server")
            assert PASSWORD not in repr(driver._link)
        # errors: a wrong password and an unreachable server, both naming where
        for bad in (
            f"redis://:{PASSWORD}x@127.0.0.1:{protected.port}/0",
            f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0",
        ):
            with pytest.raises(DriverError) as info:
                async with Kernel(BullMQDriver(bad), tasks=TaskRegistry()):
                    pass
            assert PASSWORD not in str(info.value)
            link = Link(Target.from_url(bad), retries=1)
            with pytest.raises(DriverError) as info:
                await link.call("PING")
            assert PASSWORD not in str(info.value)
            await link.close()
    assert PASSWORD not in caplog.text


# --- 8. the optional imports -------------------------------------------------------------------


@pytest.mark.parametrize("hidden", ["hiredis", "redis"])
def test_a_missing_extra_names_the_pip_command(hidden: str) -> None:
    code = (
        "import sys\n"
        f"sys.modules[{hidden!r}] = None\n"
        "try:\n"
        "    import tickkit.drivers.bullmq\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("MissingExtraError"), done.stdout
    assert "pip install tickkit[redis]" in done.stdout
    assert hidden in done.stdout


def test_tickkit_drivers_without_hiredis_shows_the_hint() -> None:
    code = (
        "import sys, runpy\n"
        "sys.modules['hiredis'] = None\n"
        "sys.argv = ['tickkit', 'drivers']\n"
        "runpy.run_module('tickkit', run_name='__main__')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    out = done.stdout + done.stderr
    assert "ModuleNotFoundError" not in out, out
    assert "pip install tickkit[redis]" in out, out


# --- a date before 1970: a negative delayed score is due at once, for Node's workers too -------


async def test_a_job_due_before_1970_is_taken_at_once(redis_url: str) -> None:
    from datetime import datetime, timezone

    from tickkit import Job

    queue = queue_name("pre1970")
    driver = BullMQDriver(redis_url, queue=queue)
    kernel = Kernel(driver, tasks=TaskRegistry())
    await kernel.open()
    try:
        when = datetime(1969, 7, 20, 20, 17, tzinfo=timezone.utc)
        job_id = await driver.add_job(Job(id=None, name="record", data={}, next_run_at=when))
        # BullMQ's own take (Node's moveToActive) promotes delayed scores from 0 up
        score = await driver._redis.zscore(f"bull:{queue}:delayed", job_id)
        assert score is not None and score >= 0
        got = await driver.acquire(now=kernel.clock.now(), limit=5)
        assert [c.job.id for c in got.claims] == [job_id]
        assert got.claims[0].scheduled_at == when  # the nominal time is kept
    finally:
        await kernel.stop()
