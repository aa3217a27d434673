"""``Job`` constructors by kind, ``recurring`` as data, and the codec running once per write."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tickkit import (
    UTC,
    Backoff,
    Job,
    JobState,
    JSONCodec,
    Kernel,
    TaskContext,
    TaskRegistry,
    hookimpl,
    task,
)
from tickkit.testing import VirtualClock

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CRON = {"type": "cron", "value": "0 * * * *", "timezone": "UTC"}


def test_one_off() -> None:
    job = Job.one_off("remind", {"x": 1}, at=T0, id="a", created_at=T0, meta={"k": "v"})
    assert (job.id, job.name, job.data, job.schedule) == ("a", "remind", {"x": 1}, None)
    assert (job.next_run_at, job.scheduled_at, job.created_at) == (T0, T0, T0)
    assert job.state is JobState.SCHEDULED and not job.static and not job.recurring
    assert job.meta == {"k": "v"}


def test_repeating() -> None:
    job = Job.repeating("remind", None, schedule=CRON, first=T0, backoff=Backoff.fixed(5))
    assert job.recurring and job.schedule == CRON and not job.static
    assert (job.id, job.next_run_at, job.scheduled_at) == (None, T0, T0)
    assert job.backoff == Backoff.fixed(5)


def test_static_task() -> None:
    job = Job.static_task("hourly", schedule=CRON, recurring=True, first=T0, max_attempts=3)
    assert (job.id, job.name, job.static, job.recurring) == ("hourly", "hourly", True, True)
    assert job.state is JobState.SCHEDULED and job.max_attempts == 3
    # a date in the past: stored, finished, not recurring
    date = {"type": "date", "value": "2020-01-01T00:00:00+00:00"}
    done = Job.static_task("once", schedule=date, recurring=False, first=None)
    assert done.state is JobState.COMPLETED and not done.recurring and done.next_run_at is None


def test_recurring_is_data_not_a_guess() -> None:
    # a plugin's schedule type that does not repeat: the constructor's word counts
    spec = {"type": "twice", "value": "x"}
    assert not Job.static_task("t", schedule=spec, recurring=False, first=T0).recurring
    # the read path of records stored before recurring was data: inferred from the spec once
    assert Job(id="a", name="t", schedule=CRON).recurring
    assert not Job(id="a", name="t", schedule={"type": "date", "value": 1}).recurring
    assert not Job(id="a", name="t").recurring


def test_extra_run() -> None:
    of = Job.repeating(
        "remind", {"x": 1}, schedule=CRON, first=T0, id="r", max_attempts=2, meta={"k": "v"}
    )
    of.state = JobState.PAUSED
    now = T0 + timedelta(minutes=5)
    extra = Job.extra_run(of, now)
    assert (extra.id, extra.name, extra.data, extra.schedule) == (None, "remind", {"x": 1}, None)
    assert (extra.next_run_at, extra.scheduled_at, extra.created_at) == (now, now, now)
    assert extra.state is JobState.SCHEDULED and not extra.recurring and not extra.static
    assert extra.max_attempts == 2 and extra.meta == {"k": "v", "run_now_of": "r"}
    assert of.meta == {"k": "v"} and of.state is JobState.PAUSED  # left as it was


def test_data_text_is_not_compared() -> None:
    a = Job.one_off("t", [1], at=T0, data_text="[1]")
    assert a == Job.one_off("t", [1], at=T0)
    assert "data_text" not in repr(a)


class CountingCodec(JSONCodec):
    def __init__(self) -> None:
        self.encoded: list[Any] = []

    def encode(self, data: Any) -> str:
        self.encoded.append(data)
        return super().encode(data)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_the_codec_runs_once_per_write(store: str, tmp_path: Path) -> None:
    codec = CountingCodec()

    class Plugin:
        @hookimpl
        def tickkit_data_codec(self) -> CountingCodec:
            return codec

    async def run(ctx: TaskContext) -> None:
        pass

    registry = TaskRegistry()
    task(name="t", execute=run, registry=registry)
    url = "memory://" if store == "memory" else f"sqlite:///{tmp_path / 'jobs.db'}"
    kernel = Kernel(url, tasks=registry, clock=VirtualClock(T0), plugins=[Plugin()])
    async with kernel:
        job_id = await kernel.create_task("t", {"x": (1, 2)}, "1h")
        assert codec.encoded == [{"x": (1, 2)}]
        job = await kernel.get_task(job_id)
        assert job is not None and job.data == {"x": [1, 2]}
        assert job.data_text is None  # the kernel's hand-over, not part of a stored job
        # moving the one-off job writes no data; an extra run of it (paused) is a write of
        # data the kernel did not encode: once in a store that keeps text, never in memory
        codec.encoded.clear()
        assert await kernel.run_task_now(job_id) == job_id
        assert codec.encoded == []
        await kernel.pause_task(job_id)
        assert await kernel.run_task_now(job_id) != job_id
        assert codec.encoded == ([] if store == "memory" else [{"x": [1, 2]}])
