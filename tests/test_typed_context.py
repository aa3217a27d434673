"""TaskContext generic in its data and client, at run time (the static side is
tests/typing/check_context.py, checked by mypy in tox -e type)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypedDict

import anyio
import pytest

from tickkit import UTC, Kernel, TaskContext, TaskRegistry, task
from tickkit.drivers.memory import MemoryDriver
from tickkit.testing import VirtualClock

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class ReminderData(TypedDict):
    user_id: int
    text: str


class Bot:
    def get_channel(self, channel_id: int) -> str:
        return f"channel {channel_id}"


def test_the_context_is_subscriptable_with_one_or_two_types() -> None:
    # PEP 696 defaults: one parameter is allowed (typing_extensions before 3.13; on 3.10 the
    # default is not filled in at run time, from 3.11 on it is)
    assert TaskContext[ReminderData].__args__ in (  # type: ignore[attr-defined]
        (ReminderData,),
        (ReminderData, Any),
    )
    assert TaskContext[ReminderData, Bot].__args__ == (ReminderData, Bot)  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        TaskContext[ReminderData, Bot, int]  # type: ignore[misc]


async def test_a_typed_task_gets_its_data_and_client() -> None:
    registry = TaskRegistry()
    seen: list[Any] = []

    @task(name="remind", registry=registry)
    async def remind(ctx: TaskContext[ReminderData, Bot]) -> None:
        seen.append((ctx.data["user_id"], ctx.client.get_channel(7)))

    @task(name="no-client", registry=registry)
    async def no_client(ctx: TaskContext[ReminderData]) -> None:
        try:
            ctx.client  # noqa: B018
        except AttributeError as exc:
            seen.append(str(exc))

    clock = VirtualClock(T0)
    with anyio.fail_after(10):
        async with Kernel(
            MemoryDriver(), tasks=registry, clock=clock, context={"client": Bot()}
        ) as kernel:
            await kernel.create_task("remind", {"user_id": 42, "text": "hi"})
            await clock.advance(1)
        async with Kernel(MemoryDriver(), tasks=registry, clock=clock) as kernel:
            await kernel.create_task("no-client", {"user_id": 1, "text": ""})
            await clock.advance(1)
    assert seen[0] == (42, "channel 7")
    assert "TaskContext has no attribute 'client'" in seen[1]
