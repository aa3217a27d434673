"""tickkit.manage: the checks and bodies behind list_tasks(where/after), count_tasks,
update_task and get_runs (issue 14), on the memory driver. The drivers' side is in the
contract suite (kernel/testing/contract.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from tickkit import (
    Driver,
    InvalidArgumentError,
    InvalidDataError,
    InvalidJobIdError,
    InvalidTaskError,
    Job,
    JobNotFoundError,
    JobState,
    Kernel,
    TaskContext,
    TaskRegistry,
    manage,
    task,
)
from tickkit.drivers.memory import MemoryDriver
from tickkit.testing import VirtualClock

pytestmark = pytest.mark.anyio
UTC = timezone.utc
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def driver() -> AsyncIterator[Driver]:
    registry = TaskRegistry()

    async def run(ctx: TaskContext) -> None:
        pass

    task(name="remind", execute=run, indexes=["user"], registry=registry)
    kernel = Kernel(MemoryDriver(), tasks=registry, clock=VirtualClock(T0))
    await kernel.open()
    assert kernel.driver is not None
    try:
        yield kernel.driver
    finally:
        await kernel.stop()


def _job(i: int, user: int) -> Job:
    at = T0 + timedelta(minutes=i)
    return Job(id=f"j{i:03d}", name="remind", data={"user": user}, next_run_at=at, scheduled_at=at)


@pytest.mark.parametrize(
    ("where", "named"),
    [
        ([("user", 1)], "[('user', 1)]"),
        ({"": 1}, "''"),
        ({"x" * 201: 1}, "xxxx"),
        ({1: 1}, "1"),
        ({"k\ud800": 1}, "k\\ud800"),
        ({"user": float("nan")}, "nan"),
        ({"user": float("inf")}, "inf"),
        ({"user": 2**63}, "9223372036854775808"),
        ({"user": -(2**63) - 1}, "-9223372036854775809"),
        ({"user": [1]}, "[1]"),
        ({"user": {"a": 1}}, "{'a': 1}"),
        ({"user": "x\udfff"}, "x\\udfff"),
        ({"user": b"x"}, "b'x'"),
    ],
)
def test_check_where_refuses_naming_the_value(where: Any, named: str) -> None:
    with pytest.raises(InvalidArgumentError) as err:
        manage.check_where(where)
    assert named in str(err.value)


def test_check_where_accepts_json_scalars() -> None:
    where = {"a": 1, "b": 1.5, "c": True, "d": None, "e": "x", "f": 2**63 - 1, "g": -(2**63)}
    assert manage.check_where(where) == where
    assert manage.check_where(None) == {}


def test_other_checks() -> None:
    assert manage.check_limit(None) is None and manage.check_limit(0) == 0
    for bad in (-1, True, 1.0, "3", 2**63):
        with pytest.raises(InvalidArgumentError, match="limit"):
            manage.check_limit(bad)
    assert manage.check_after("abc") == "abc"
    for bad in ("", 5, "\ud800", Job(id=None, name="x")):
        with pytest.raises(InvalidArgumentError, match="after"):
            manage.check_after(bad)
    assert manage.check_state("paused") is JobState.PAUSED
    with pytest.raises(InvalidArgumentError, match="'sleeping'"):
        manage.check_state("sleeping")
    with pytest.raises(InvalidArgumentError, match="'yes'"):
        manage.check_static("yes")
    with pytest.raises(InvalidArgumentError, match="update_task needs"):
        manage.check_update_given(manage.UNSET, manage.UNSET)
    assert manage.check_history_options(0, None) == (0, None)
    with pytest.raises(InvalidArgumentError, match="-1"):
        manage.check_history_options(-1, 10)


def test_task_indexes() -> None:
    registry = TaskRegistry()

    async def run(ctx: TaskContext) -> None:
        pass

    defined = task(name="a", execute=run, indexes=["user", "guild", "user"], registry=registry)
    assert defined.indexes == ("user", "guild")
    assert task(name="b", execute=run, registry=registry).indexes == ()
    for bad in (['a"b'], ["a\\b"], ["tab\there"], [""], ["x" * 201], [5], "user", 5):
        with pytest.raises(InvalidTaskError, match="'c'"):
            task(name="c", execute=run, indexes=bad, registry=registry)
    assert "c" not in registry


async def test_list_count_and_paging_through_manage(driver: Driver) -> None:
    for i in range(30):
        await driver.add_job(_job(i, i % 3))
    await driver.ensure_indexes(["user"])
    mine = await manage.list_jobs(driver, "remind", where={"user": 1})
    assert [j.id for j in mine] == [f"j{i:03d}" for i in range(1, 30, 3)]
    assert await manage.count_jobs(driver, "remind", where={"user": 1}) == 10
    assert await manage.count_jobs(driver, where={"user": 1}, state="paused") == 0
    pages: list[str] = []
    after: Any = None
    while True:
        page = await manage.list_jobs(driver, where={"user": 1}, limit=4, after=after)
        if not page:
            break
        pages += [j.id or "" for j in page]
        after = page[-1].id
    assert pages == [j.id for j in mine]
    # a removed job: its id no longer gives a position, the Job still does
    gone = mine[4]
    await driver.remove_job(gone.id or "")
    with pytest.raises(JobNotFoundError, match=f"{gone.id}.*pass the last Job object"):
        await manage.list_jobs(driver, where={"user": 1}, after=gone.id)
    rest = await manage.list_jobs(driver, where={"user": 1}, after=gone)
    assert [j.id for j in rest] == [j.id for j in mine[5:]]
    with pytest.raises(InvalidArgumentError, match="nan"):
        await manage.list_jobs(driver, where={"user": float("nan")})
    with pytest.raises(InvalidTaskError, match="ud800"):
        await manage.count_jobs(driver, "\ud800")


async def test_update_and_runs_through_manage(driver: Driver) -> None:
    await driver.add_job(_job(1, 1))
    later = T0 + timedelta(hours=2)

    def check_data(data: Any) -> Any:
        if data == "bad":
            raise InvalidDataError(f"task data must be JSON: {data!r}")
        return data

    def plan(job: Job, schedule: Any) -> tuple[dict[str, Any] | None, datetime]:
        assert job.name == "remind"
        return None, later

    updated = await manage.update_job(
        driver, "j001", data={"user": 2}, check_data=check_data, plan_schedule=plan
    )
    assert updated.data == {"user": 2} and updated.next_run_at == T0 + timedelta(minutes=1)
    moved = await manage.update_job(
        driver, "j001", schedule="2h", check_data=check_data, plan_schedule=plan
    )
    assert moved.next_run_at == later and moved.data == {"user": 2}
    with pytest.raises(InvalidDataError, match="bad"):
        await manage.update_job(
            driver, "j001", data="bad", schedule="1h", check_data=check_data, plan_schedule=plan
        )
    stored = await driver.get_job("j001")
    assert stored is not None and stored.data == {"user": 2} and stored.next_run_at == later
    with pytest.raises(JobNotFoundError, match="'nope'"):
        await manage.update_job(driver, "nope", data=1, check_data=check_data, plan_schedule=plan)
    with pytest.raises(InvalidArgumentError, match="update_task needs"):
        await manage.update_job(driver, "j001", check_data=check_data, plan_schedule=plan)
    assert await manage.get_runs(driver, "j001") == []
    with pytest.raises(InvalidJobIdError, match="5"):
        await manage.get_runs(driver, 5)
    with pytest.raises(InvalidArgumentError, match="-2"):
        await manage.get_runs(driver, "j001", limit=-2)


async def test_memory_history_of_a_removed_job_expires() -> None:
    """The memory driver keeps one age entry per job: the history of a job that is gone is
    dropped whole once its newest run is older than history_max_age (memory stays bounded)."""
    from tickkit import Outcome, RunResult

    clock = VirtualClock(T0)
    memory = MemoryDriver(history_limit=2, history_max_age=3600)
    kernel = Kernel(memory, tasks=TaskRegistry(), clock=clock)
    await kernel.open()
    try:
        for i in (1, 2):
            await memory.add_job(_job(i, 1))
        await clock.jump(timedelta(minutes=5))
        first, second = (await memory.acquire(now=clock.now(), limit=2)).claims
        await memory.complete(first, RunResult(Outcome.SUCCEEDED, clock.now()))
        await memory.remove_job(first.job.id or "")
        assert len(await memory.get_runs(first.job.id or "")) == 1
        await clock.jump(timedelta(hours=2))
        await memory.complete(second, RunResult(Outcome.SUCCEEDED, clock.now()))
        assert await memory.get_runs(first.job.id or "") == []
        assert first.job.id not in memory._runs and len(memory._run_order) == 1
    finally:
        await kernel.stop()
