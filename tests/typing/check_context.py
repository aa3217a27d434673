"""Type-checked, never run: ``mypy tests/typing`` (tox -e type). Each ``assert_type`` line is
what a type checker must infer; each ``# type: ignore[...]`` line must be an error (mypy's
``warn_unused_ignores``, on in strict mode, fails the check when one is not)."""

from __future__ import annotations

from typing import Any, TypedDict

import discord
from typing_extensions import assert_type

from tickkit import Kernel, TaskContext, TaskDefinition, task


class ReminderData(TypedDict):
    user_id: int
    channel_id: int
    text: str


# --- the data, typed ------------------------------------------------------------------------


@task(name="remind")
async def remind(ctx: TaskContext[ReminderData, discord.Client]) -> None:
    assert_type(ctx.data, ReminderData)
    assert_type(ctx.data["user_id"], int)
    assert_type(ctx.data["text"], str)
    assert_type(ctx.client, discord.Client)
    channel = ctx.client.get_channel(ctx.data["channel_id"])  # the bot's API type-checks
    if isinstance(channel, discord.TextChannel):
        await channel.send(ctx.data["text"])
    ctx.data["missing"]  # type: ignore[typeddict-item]
    ctx.data["user_id"] = "42"  # type: ignore[typeddict-item]
    ctx.client.get_channel("not an id")  # type: ignore[arg-type]
    ctx.client.no_such_method()  # type: ignore[attr-defined]


assert_type(remind, TaskDefinition)


# --- data only: the client stays Any ----------------------------------------------------------


async def data_only(ctx: TaskContext[ReminderData]) -> None:
    assert_type(ctx.data, ReminderData)
    assert_type(ctx.client, Any)


task(name="data-only", execute=data_only)


# --- a bare TaskContext: Any, as before (existing code type-checks unchanged) ------------------


async def untyped(ctx: TaskContext) -> None:
    assert_type(ctx.data, Any)
    assert_type(ctx.client, Any)
    assert_type(ctx.job_id, str)
    assert_type(ctx.attempt, int)
    assert_type(ctx.store, dict[str, Any])
    ctx.data["anything"]["goes"] = 1
    assert_type(ctx.db, Any)  # other context objects: Any, through __getattr__


task(name="untyped", execute=untyped)


# --- plain def tasks (run in a worker thread) ---------------------------------------------------


@task(name="sync-remind", prepare=lambda ctx: bool(ctx.data))
def sync_remind(ctx: TaskContext[ReminderData]) -> int:
    assert_type(ctx.data["user_id"], int)
    return ctx.data["user_id"]


assert_type(sync_remind, TaskDefinition)


def is_enabled(ctx: TaskContext[ReminderData]) -> bool:
    return ctx.data["text"] != ""


task(name="gated", prepare=is_enabled, execute=remind.execute)


# --- what stays an error --------------------------------------------------------------------------

TaskContext[ReminderData, discord.Client, int]  # type: ignore[misc]
Kernel(thread_limit="4")  # type: ignore[arg-type]
task(name="no-context", execute=lambda: None)  # type: ignore[arg-type,misc]
