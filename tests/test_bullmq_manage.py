"""Issue 14 on the BullMQ driver: where through index sets, update_job, run history."""

from __future__ import annotations

import functools
import random
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import anyio
import pytest
from anyio.from_thread import start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tickkit import (
    InvalidArgumentError,
    Job,
    JobState,
    Kernel,
    TaskContext,
    TaskRegistry,
    task,
)
from tickkit.driver import select_jobs
from tickkit.drivers.bullmq import BullMQDriver
from tickkit.drivers.bullmq.driver import _index_value
from tickkit.models import Cursor, Outcome, RunResult
from tickkit.testing import VirtualClock
from tickkit.testing.contract import T0

pytestmark = [pytest.mark.redis, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def registry(runs: list[Any]) -> TaskRegistry:
    reg = TaskRegistry()

    async def record(ctx: TaskContext) -> None:
        runs.append((ctx.task.name, ctx.data, ctx.attempt))

    async def boom(ctx: TaskContext) -> None:
        runs.append((ctx.task.name, ctx.data, ctx.attempt))
        raise RuntimeError(f"boom {ctx.attempt}")

    task(name="remind", execute=record, registry=reg)
    task(name="boom", execute=boom, retries=2, backoff=1.0, registry=reg)
    return reg


@pytest.fixture
async def env(
    redis_url: str,
) -> AsyncIterator[tuple[Kernel, BullMQDriver, VirtualClock, list[Any]]]:
    runs: list[Any] = []
    clock = VirtualClock(T0)
    driver = BullMQDriver(
        redis_url, queue=f"manage-{uuid.uuid4().hex[:10]}", poll_interval=60, remove_on_complete=3
    )
    async with Kernel(driver, tasks=registry(runs), clock=clock) as k:
        yield k, driver, clock, runs


def test_history_options_validated() -> None:
    d = BullMQDriver.from_url("redis://h/0?history_limit=5&history_max_age=60")
    assert d.history_limit == 5 and d.history_max_age == 60.0
    assert BullMQDriver("redis://h").history_limit == 100
    assert BullMQDriver("redis://h").history_max_age == 604800.0
    with pytest.raises(InvalidArgumentError, match="'many'"):
        BullMQDriver.from_url("redis://h/0?history_limit=many")
    with pytest.raises(InvalidArgumentError, match="-1"):
        BullMQDriver("redis://h", history_limit=-1)
    with pytest.raises(InvalidArgumentError, match="0"):
        BullMQDriver("redis://h", history_max_age=0)
    with pytest.raises(InvalidArgumentError, match="True"):
        BullMQDriver("redis://h", history_limit=True)
    assert BullMQDriver.from_url("redis://h/0?history_max_age=none").history_max_age is None
    assert BullMQDriver("redis://h", history_max_age=timedelta(days=1)).history_max_age == 86400


def test_index_values_agree_with_json_equality() -> None:
    assert _index_value(1) == _index_value(1.0) == "n:1"
    assert _index_value(True) == "b:true" != _index_value(1)
    assert _index_value(0) == _index_value(-0.0) == "n:0"
    assert _index_value("1") == "s:1" and _index_value(None) == "null"
    assert _index_value([1]) is None


async def index_state(driver: BullMQDriver) -> dict[str, set[str]]:
    """Every tk:idx:* set as it is in Redis."""
    r = driver._redis
    out: dict[str, set[str]] = {}
    async for key in r.scan_iter(match=f"{driver.key}tk:idx:*"):
        out[key] = set(await r.smembers(key))
    return out


async def expected_index(driver: BullMQDriver, keys: list[str]) -> dict[str, set[str]]:
    """The index sets a scan of every job says there should be."""
    out: dict[str, set[str]] = {}
    for job in await driver._all_jobs():
        if not isinstance(job.data, dict):
            continue
        for k in keys:
            if k in job.data:
                index_key = driver._index_key(k, job.data[k])
                if index_key is not None:
                    assert job.id is not None
                    out.setdefault(index_key, set()).add(job.id)
    return out


async def assert_index_exact(driver: BullMQDriver, keys: list[str]) -> None:
    """The index sets equal what a scan says. The kernel may be finishing a run between the
    two reads (retention then removes a job): a real difference persists over retries."""
    for _ in range(20):
        actual = await index_state(driver)
        expected = await expected_index(driver, keys)
        if actual == expected and await index_state(driver) == actual:
            return
        await anyio.sleep(0.05)
    assert await index_state(driver) == await expected_index(driver, keys)


async def test_index_sets_exact_under_random_writes(env: Any) -> None:
    k, driver, clock, _runs = env
    rnd = random.Random(14)
    await driver.ensure_indexes(["user_id", "lang"])
    ids: list[str] = []
    for step in range(120):
        op = rnd.random()
        data = {"user_id": rnd.choice([1, 2, 3, 2.0, "2", True, None]), "lang": rnd.choice("ab")}
        if op < 0.4 or not ids:
            when = rnd.choice([None, timedelta(minutes=rnd.randint(1, 30))])
            ids.append(await k.create_task("remind", data, when))
        elif op < 0.5:
            ids.append(await k.create_task("remind", data, {"type": "interval", "value": 600}))
        elif op < 0.65:
            await k.delete_task(ids.pop(rnd.randrange(len(ids))))
        elif op < 0.85:
            job_id = rnd.choice(ids)
            new = rnd.choice([data, [1, 2], {"other": 1}])
            updated = await driver.update_job(job_id, data=new)
            if updated is not None:
                assert updated.data == new
        else:
            await clock.advance(timedelta(minutes=rnd.randint(1, 10)))
        if step % 10 == 9:
            await assert_index_exact(driver, ["user_id", "lang"])
    await clock.advance(timedelta(hours=1))
    await assert_index_exact(driver, ["user_id", "lang"])
    everything = await driver._all_jobs()
    # the indexed path answers what the scan answers, in the same total order
    for where in (
        {"user_id": 2},
        {"user_id": "2"},
        {"user_id": True},
        {"user_id": None},
        {"user_id": 1, "lang": "a"},
        {"user_id": 3, "missing": 1},
    ):
        by_index = await driver.list_jobs(where=where)
        assert by_index == select_jobs(everything, where=where), where
        assert await driver._indexed_ids(where) is not None
        # paging by cursor visits every match once
        seen: list[Job] = []
        after = None
        while True:
            page = await driver.list_jobs(where=where, limit=2, after=after)
            if not page:
                break
            seen.extend(page)
            after = Cursor(page[-1].next_run_at, page[-1].id or "")
        assert seen == by_index
        counts = await driver.count_jobs(where=where)
        assert sum(counts.values()) == len(by_index)
    # an unindexed key scans and answers the same
    assert await driver._indexed_ids({"other": 1}) is None
    assert await driver.list_jobs(where={"other": 1}) == select_jobs(everything, where={"other": 1})


async def test_ensure_indexes_backfills_and_is_idempotent(env: Any) -> None:
    k, driver, _clock, _runs = env
    a = await k.create_task("remind", {"user_id": 7}, timedelta(minutes=5))
    b = await k.create_task("remind", {"user_id": 7}, {"type": "cron", "value": "0 * * * *"})
    await k.create_task("remind", {"user_id": 8}, timedelta(minutes=5))
    assert await driver._indexed_ids({"user_id": 7}) is None  # not indexed yet: a scan
    await driver.ensure_indexes(["user_id"])
    await driver.ensure_indexes(["user_id"])
    assert await driver._indexed_ids({"user_id": 7}) == {a, b}
    assert [j.id for j in await driver.list_jobs(where={"user_id": 7})] == sorted(
        [a, b], key=lambda i: (i != a, i)
    )
    assert await driver._redis.smembers(driver.key + "tk:indexes") == {"user_id"}


async def test_poisoned_records_do_not_break_a_where_lookup(env: Any) -> None:
    k, driver, _clock, _runs = env
    await driver.ensure_indexes(["user_id"])
    good = await k.create_task("remind", {"user_id": 5}, timedelta(minutes=5))
    bad_data = await k.create_task("remind", {"user_id": 5}, timedelta(minutes=6))
    wrong_type = await k.create_task("remind", {"user_id": 5}, timedelta(minutes=7))
    r = driver._redis
    await r.hset(driver.key + bad_data, "data", "{not json")
    await r.delete(driver.key + wrong_type)
    await r.set(driver.key + wrong_type, "garbage")
    await r.sadd(driver.key + "tk:idx:user_id:n:5", "ghost")  # an id with no job at all
    found = await driver.list_jobs(where={"user_id": 5})
    assert [j.id for j in found] == [good]
    # an index set overwritten by another type: where falls back to the scan
    await r.set(driver.key + "tk:idx:user_id:n:6", "garbage")
    other = await k.create_task("remind", {"user_id": 6}, timedelta(minutes=5))
    assert [j.id for j in await driver.list_jobs(where={"user_id": 6})] == [other]
    await r.delete(driver.key + "tk:idx:user_id:n:6")
    # removing the poisoned ones leaves the index exact again
    await k.delete_task(bad_data)
    assert await driver._indexed_ids({"user_id": 5}) == {good, wrong_type, "ghost"} - {bad_data}


async def test_update_one_off_and_scheduler(env: Any) -> None:
    k, driver, clock, runs = env
    await driver.ensure_indexes(["user_id"])
    one = await k.create_task("remind", {"user_id": 1, "text": "a"}, timedelta(minutes=10))
    rec = await k.create_task("remind", {"user_id": 1}, {"type": "interval", "value": 600})
    assert await driver.update_job("nope", data={}) is None
    # data and next run of a one-off job, moved in the delayed set
    job = await driver.update_job(
        one, data={"user_id": 2, "text": "b"}, next_run_at=T0 + timedelta(minutes=2)
    )
    assert job is not None and job.data == {"user_id": 2, "text": "b"}
    assert job.next_run_at == T0 + timedelta(minutes=2)
    assert await driver._indexed_ids({"user_id": 2}) == {one}
    assert await driver._indexed_ids({"user_id": 1}) == {rec}
    # a scheduler's template and schedule: the pending job is produced again
    job = await driver.update_job(
        rec,
        data={"user_id": 3},
        schedule={"type": "interval", "value": 3600},
        next_run_at=T0 + timedelta(hours=1),
    )
    assert job is not None and job.schedule == {"type": "interval", "value": 3600.0}
    assert job.next_run_at == T0 + timedelta(hours=1) and job.data == {"user_id": 3}
    pending = await driver._redis.zrange(driver.key + "delayed", 0, -1)
    assert [p for p in pending if p.startswith(f"repeat:{rec}:")] == [
        f"repeat:{rec}:{int((T0 + timedelta(hours=1)).timestamp() * 1000)}"
    ]
    await clock.advance(timedelta(minutes=3))
    assert runs == [("remind", {"user_id": 2, "text": "b"}, 1)]
    await clock.advance(timedelta(hours=1))
    assert runs[-1] == ("remind", {"user_id": 3}, 1)
    # a one-off job turned into a recurring one (replaced under its id)
    numbered = await k.create_task("remind", {"user_id": 4}, timedelta(hours=5))
    job = await driver.update_job(
        numbered, schedule={"type": "interval", "value": 60}, next_run_at=clock.now()
    )
    assert job is not None and job.recurring and job.id == numbered
    assert await driver._redis.exists(f"{driver.key}repeat:{numbered}") == 1
    other = await k.create_task("remind", {"user_id": 4}, timedelta(hours=5), id="mine")
    job = await driver.update_job(
        other,
        schedule={"type": "interval", "value": 60},
        next_run_at=clock.now() + timedelta(minutes=1),
    )
    assert job is not None and job.recurring and job.data == {"user_id": 4}
    assert await driver._indexed_ids({"user_id": 4}) == {other, numbered}
    # and back to a one-off job
    job = await driver.update_job(
        other, schedule=None, next_run_at=clock.now() + timedelta(hours=1)
    )
    assert job is not None and not job.recurring and job.data == {"user_id": 4}
    assert await driver._redis.exists(f"{driver.key}repeat:{other}") == 0


async def test_running_job_keeps_its_data_and_the_update_wins(redis_url: str) -> None:
    """A one-off job updated while it runs: the run finishes with the old data, the job is
    scheduled again at the updated time with the new data."""
    clock = VirtualClock(T0)
    driver = BullMQDriver(redis_url, queue=f"running-{uuid.uuid4().hex[:10]}")
    kernel = Kernel(driver, tasks=registry([]), clock=clock)
    await kernel.open()  # managing only: no worker takes the job but this test
    try:
        one = await kernel.create_task("remind", {"user_id": 1, "v": "old"})
        acquired = await driver.acquire(now=clock.now(), limit=5)
        claim = next(c for c in acquired.claims if c.job.id == one)
        assert claim.job.data == {"user_id": 1, "v": "old"}
        later = clock.now() + timedelta(minutes=30)
        job = await driver.update_job(one, data={"user_id": 1, "v": "new"}, next_run_at=later)
        assert job is not None and job.state is JobState.RUNNING
        await driver.complete(
            claim, RunResult(Outcome.SUCCEEDED, clock.now(), started_at=clock.now())
        )
        after = await driver.get_job(one)
        assert after is not None and after.state is JobState.SCHEDULED
        assert after.next_run_at == later and after.data == {"user_id": 1, "v": "new"}
        assert after.runs == 1 and after.attempt == 0
        assert [r.outcome for r in await driver.get_runs(one)] == [Outcome.SUCCEEDED]
        # the next claim runs the new data
        acquired = await driver.acquire(now=later, limit=5)
        again = next(c for c in acquired.claims if c.job.id == one)
        assert again.job.data == {"user_id": 1, "v": "new"}
    finally:
        await kernel.stop()


async def test_run_history(env: Any) -> None:
    k, driver, clock, runs = env
    job_id = await k.create_task("boom", {"user_id": 1})
    await clock.advance(timedelta(seconds=30))
    assert [r[2] for r in runs] == [1, 2, 3]
    history = await driver.get_runs(job_id)
    assert [r.attempt for r in history] == [3, 2, 1]
    assert all(r.outcome is Outcome.FAILED for r in history)
    assert all(r.error is not None and "RuntimeError: boom" in r.error for r in history)
    assert "Traceback" in (history[0].error or "")
    assert {r.worker for r in history} == {k.id}
    assert history[0].finished_at >= history[1].finished_at
    assert history[-1].started_at is not None and history[-1].name == "boom"
    assert [r.attempt for r in await driver.get_runs(job_id, limit=2)] == [3, 2]
    # BullMQ's own hash holds the same: attempts made, the reason, earlier tracebacks
    h = await driver._redis.hgetall(driver.key + job_id)
    assert h["atm"] == "3" and h["failedReason"] == "RuntimeError: boom 3"
    assert h["pb"] == k.id
    # a history key overwritten by another type: runs are still recorded in BullMQ's hash
    await driver._redis.set(f"{driver.key}tk:runs:poisoned", "garbage")
    await k.create_task("remind", {"user_id": 1}, id="poisoned", replace=True)
    await clock.advance(timedelta(seconds=5))
    done = await driver.get_job("poisoned")
    assert done is not None and done.state is JobState.COMPLETED
    assert await driver.get_runs("poisoned") == []
    # history outlives the job
    await k.delete_task(job_id)
    assert len(await driver.get_runs(job_id)) == 3
    # a recurring job: one record per occurrence, each from its own produced BullMQ job
    rec = await k.create_task("remind", {"user_id": 1}, {"type": "interval", "value": 60})
    await clock.advance(timedelta(minutes=3, seconds=1))
    history = await driver.get_runs(rec)
    assert len(history) >= 3 and all(r.outcome is Outcome.SUCCEEDED for r in history)
    assert [r.scheduled_at for r in history] == sorted(
        (r.scheduled_at for r in history), reverse=True
    )


async def test_history_limit_and_age(redis_url: str) -> None:
    runs: list[Any] = []
    clock = VirtualClock(T0)
    driver = BullMQDriver(
        redis_url, queue=f"hist-{uuid.uuid4().hex[:10]}", history_limit=2, history_max_age=300
    )
    async with Kernel(driver, tasks=registry(runs), clock=clock) as k:
        rec = await k.create_task("remind", {}, {"type": "interval", "value": 60})
        await clock.advance(timedelta(minutes=4, seconds=1))
        history = await driver.get_runs(rec)
        assert len(history) == 2 and len(runs) >= 4
        assert await driver._redis.zcard(f"{driver.key}tk:runs:{rec}") == 2
        assert 0 < await driver._redis.pttl(f"{driver.key}tk:runs:{rec}") <= 300_000
        await k.delete_task(rec)
        await clock.advance(timedelta(minutes=6))
        assert await driver.get_runs(rec) == []  # older than history_max_age
    none = BullMQDriver(redis_url, queue=f"hist-{uuid.uuid4().hex[:10]}", history_limit=0)
    clock = VirtualClock(T0)
    async with Kernel(none, tasks=registry(runs), clock=clock) as k:
        job_id = await k.create_task("remind", {"n": "none"})
        await clock.advance(timedelta(seconds=5))
        assert ("remind", {"n": "none"}, 1) in runs
        assert await none.get_runs(job_id) == []
        assert await none._redis.exists(f"{none.key}tk:runs:{job_id}") == 0
    forever = BullMQDriver(redis_url, queue=f"hist-{uuid.uuid4().hex[:10]}", history_max_age=None)
    clock = VirtualClock(T0)
    async with Kernel(forever, tasks=registry(runs), clock=clock) as k:
        job_id = await k.create_task("remind", {"n": "forever"})
        await clock.advance(timedelta(seconds=5))
        assert [r.outcome for r in await forever.get_runs(job_id)] == [Outcome.SUCCEEDED]
        assert await forever._redis.pttl(f"{forever.key}tk:runs:{job_id}") == -1


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=3),
    st.sampled_from([0.0, -0.0, 1.0, 2.5, 1e20, 0.1, 2**53, 2**53 + 1]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=4),
)


@given(st.lists(SCALARS, min_size=1, max_size=12), st.lists(SCALARS, min_size=1, max_size=6))
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_indexed_where_answers_as_the_scan(
    redis_url: str, stored: list[Any], asked: list[Any]
) -> None:
    """Random values stored (by the scripts) and asked for: the index path answers exactly what
    select_jobs answers over every job (JSON equality: 1 == 1.0, True != 1, "1" != 1)."""

    async def check() -> None:
        driver = BullMQDriver(redis_url, queue=f"prop-{uuid.uuid4().hex[:10]}")
        kernel = Kernel(driver, tasks=registry([]), clock=VirtualClock(T0))
        await kernel.open()
        try:
            await driver.ensure_indexes(["v"])
            for i, value in enumerate(stored):
                data: Any = {"v": value} if i % 5 else [value]  # some data is not an object
                await kernel.create_task("remind", data, timedelta(minutes=i + 1))
            everything = await driver._all_jobs()
            for value in asked + stored[:3]:
                where = {"v": value}
                assert await driver._find(where) is not None
                assert await driver.list_jobs(where=where) == select_jobs(everything, where=where)
        finally:
            await kernel.stop()

    anyio.run(check)


class IndexMachine(RuleBasedStateMachine):
    """Random adds, updates, runs (claim + complete, with retention trimming) and removals of
    one-off and recurring jobs: after every step the index sets equal what a scan says."""

    redis_url = ""

    def __init__(self) -> None:
        super().__init__()
        self.portal_cm = start_blocking_portal("asyncio")
        self.portal = self.portal_cm.__enter__()
        self.clock = VirtualClock(T0)
        self.driver = BullMQDriver(
            self.redis_url, queue=f"sm-{uuid.uuid4().hex[:10]}", remove_on_complete=2
        )
        self.kernel = Kernel(self.driver, tasks=registry([]), clock=self.clock)
        self.portal.call(self.kernel.open)
        self.portal.call(self.driver.ensure_indexes, ["u"])
        self.ids: list[str] = []

    def teardown(self) -> None:
        self.portal.call(self.kernel.stop)
        self.portal_cm.__exit__(None, None, None)

    @rule(value=SCALARS, recurring=st.booleans(), minutes=st.integers(0, 5))
    def add(self, value: Any, recurring: bool, minutes: int) -> None:
        schedule: Any = {"type": "interval", "value": 60} if recurring else None
        when = self.clock.now() + timedelta(minutes=minutes)
        job = Job(id=None, name="remind", data={"u": value}, schedule=schedule, next_run_at=when)
        self.ids.append(self.portal.call(self.driver.add_job, job))

    @precondition(lambda self: bool(self.ids))
    @rule(pick=st.integers(0, 10**6), value=st.one_of(SCALARS, st.just([1])))
    def update(self, pick: int, value: Any) -> None:
        data = {"u": value} if not isinstance(value, list) else value
        job_id = self.ids[pick % len(self.ids)]
        self.portal.call(functools.partial(self.driver.update_job, job_id, data=data))

    @precondition(lambda self: bool(self.ids))
    @rule(pick=st.integers(0, 10**6))
    def remove(self, pick: int) -> None:
        self.portal.call(self.driver.remove_job, self.ids.pop(pick % len(self.ids)))

    @rule(outcome=st.sampled_from([Outcome.SUCCEEDED, Outcome.FAILED]), step=st.integers(0, 4))
    def run(self, outcome: Outcome, step: int) -> None:
        self.portal.call(self.clock.advance, timedelta(minutes=step))
        acquired = self.portal.call(
            functools.partial(self.driver.acquire, now=self.clock.now(), limit=3)
        )
        for claim in acquired.claims:
            result = RunResult(outcome, self.clock.now(), started_at=self.clock.now())
            self.portal.call(self.driver.complete, claim, result)

    @invariant()
    def index_is_exact(self) -> None:
        actual = self.portal.call(index_state, self.driver)
        assert actual == self.portal.call(expected_index, self.driver, ["u"])


def test_index_state_machine(redis_url: str) -> None:
    IndexMachine.redis_url = redis_url
    run_state_machine_as_test(
        IndexMachine,
        settings=settings(
            max_examples=15,
            stateful_step_count=15,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture],
        ),
    )
