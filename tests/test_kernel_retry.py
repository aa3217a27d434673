"""The retry decision, a pure function beside ``plan_occurrence``: ``plan_retry``."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from tickkit import (
    Backoff,
    Job,
    Outcome,
    PrepareResultError,
    TaskContext,
    TaskDefinition,
    TaskRegistry,
    task,
)
from tickkit.schedule import plan_retry

UTC = timezone.utc
NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)


async def _noop(ctx: TaskContext) -> None:
    pass


def _definition(retries: int = 2, backoff: Any = 10.0) -> TaskDefinition:
    return task(name="t", execute=_noop, retries=retries, backoff=backoff, registry=TaskRegistry())


def _job(**kw: Any) -> Job:
    return Job(id="j", name="t", next_run_at=NOW, scheduled_at=NOW, **kw)


@pytest.mark.parametrize("outcome", [Outcome.FAILED, Outcome.TIMED_OUT])
def test_a_failed_or_timed_out_run_with_attempts_left_is_retried(outcome: Outcome) -> None:
    d = _definition(retries=2, backoff=10.0)
    at = plan_retry(_job(), d, attempt=1, outcome=outcome, now=NOW)
    assert at == NOW + timedelta(seconds=10)
    at = plan_retry(_job(), d, attempt=2, outcome=outcome, now=NOW)
    assert at == NOW + timedelta(seconds=10)
    # attempt 3 of 3: no retry left
    assert plan_retry(_job(), d, attempt=3, outcome=outcome, now=NOW) is None


@pytest.mark.parametrize("outcome", [Outcome.SUCCEEDED, Outcome.SKIPPED, Outcome.MISSED])
def test_other_outcomes_are_never_retried(outcome: Outcome) -> None:
    d = _definition(retries=5)
    assert plan_retry(_job(), d, attempt=1, outcome=outcome, now=NOW) is None


def test_a_prepare_result_error_is_never_retried() -> None:
    d = _definition(retries=5)
    error = PrepareResultError("prepare returned 'yes'")
    assert plan_retry(_job(), d, attempt=1, outcome=Outcome.FAILED, now=NOW, error=error) is None
    at = plan_retry(  # any other error is
        _job(), d, attempt=1, outcome=Outcome.FAILED, now=NOW, error=KeyError("x")
    )
    assert at == NOW + timedelta(seconds=10)


def test_the_jobs_own_policy_wins_over_the_tasks() -> None:
    d = _definition(retries=0, backoff=10.0)
    job = _job(max_attempts=3, backoff=Backoff.exponential(2.0))
    assert plan_retry(job, d, attempt=1, outcome=Outcome.FAILED, now=NOW) == NOW + timedelta(
        seconds=2
    )
    assert plan_retry(job, d, attempt=2, outcome=Outcome.FAILED, now=NOW) == NOW + timedelta(
        seconds=4
    )
    assert plan_retry(job, d, attempt=3, outcome=Outcome.FAILED, now=NOW) is None
    # without a policy of its own, the task's: no retries
    assert plan_retry(_job(), d, attempt=1, outcome=Outcome.FAILED, now=NOW) is None


def test_jitter_is_drawn_from_the_given_rng() -> None:
    d = _definition(retries=3, backoff={"type": "fixed", "delay": 100, "jitter": 0.5})
    first = plan_retry(_job(), d, attempt=1, outcome=Outcome.FAILED, now=NOW, rng=random.Random(7))
    again = plan_retry(_job(), d, attempt=1, outcome=Outcome.FAILED, now=NOW, rng=random.Random(7))
    assert first == again  # pure: the same inputs, the same answer
    assert first is not None
    assert NOW + timedelta(seconds=50) <= first <= NOW + timedelta(seconds=100)
