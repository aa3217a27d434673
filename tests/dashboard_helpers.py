"""A store with a known set of jobs for the dashboard tests (unit and browser)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from tickkit import JobState, Kernel, TaskContext, TaskRegistry, define_task

SECRET = "S3cretPassw0rd"
N_REMINDERS = 7


async def ok(ctx: TaskContext) -> None:
    return None


async def boom(ctx: TaskContext) -> None:
    raise RuntimeError("the printer is on fire")


def registry() -> TaskRegistry:
    return TaskRegistry(
        [
            define_task(name="remind", execute=ok, indexes=["user_id"]),
            define_task(name="boom", execute=boom),
            define_task(name="report", execute=ok, schedule="0 9 * * *", timezone="Europe/Berlin"),
        ]
    )


async def fill(kernel: Kernel) -> dict[str, Any]:
    """Reminders for users 0..6 over the next hours (user 3's data holds markup and a URL
    with a password), one cron job, and one failed job (run and failed for real)."""
    now = kernel.clock.now()
    ids: dict[str, Any] = {"reminders": []}
    for i in range(N_REMINDERS):
        data: dict[str, Any] = {"user_id": i, "text": f"reminder {i}"}
        if i == 3:
            data["text"] = "<script>alert('x')</script>"
            data["hook"] = f"redis://:{SECRET}@db.example:6379/0"
        ids["reminders"].append(
            await kernel.create_task("remind", data, now + timedelta(hours=i + 1, minutes=5))
        )
    ids["cron"] = await kernel.create_task("remind", {"user_id": 99, "text": "daily"}, "30 7 * * *")
    ids["boom"] = await kernel.create_task("boom", {"user_id": 100}, now)
    return ids


def wait_until(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def failed_state() -> JobState:
    return JobState.FAILED
