"""The discord.py extension, with a real ``discord.ext.commands.Bot`` that never logs in."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

discord = pytest.importorskip("discord")  # the `discord` extra
from discord.ext import commands  # noqa: E402

from tickkit import Kernel, TaskContext, TaskRegistry, TickkitError, task  # noqa: E402
from tickkit.plugins.discord import kernel_of  # noqa: E402
from tickkit.testing import VirtualClock  # noqa: E402

pytestmark = pytest.mark.anyio

EXTENSION = "tickkit.plugins.discord"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # discord.py runs on asyncio only


def make_bot(**options: Any) -> commands.Bot:
    bot = commands.Bot(command_prefix="!", intents=discord.Intents.none())
    if options:
        bot.tickkit_options = options  # type: ignore[attr-defined]
    return bot


def recording_tasks(seen: list[tuple[Any, Any]]) -> TaskRegistry:
    registry = TaskRegistry()

    async def greet(ctx: TaskContext) -> None:
        seen.append((ctx.client, ctx.data))

    task(name="greet", execute=greet, registry=registry)
    return registry


async def test_extension_runs_the_kernel_with_the_bot_as_client(
    virtual_clock: VirtualClock,
) -> None:
    seen: list[tuple[Any, Any]] = []
    bot = make_bot(clock=virtual_clock, tasks=recording_tasks(seen), context={"extra": 1})
    await bot.load_extension(EXTENSION)
    kernel = kernel_of(bot)
    assert isinstance(kernel, Kernel)
    assert bot.tickkit is kernel  # type: ignore[attr-defined]
    assert kernel.state == "running"
    assert kernel.context == {"extra": 1, "client": bot}
    await kernel.create_task("greet", {"hi": "there"}, timedelta(minutes=1))
    await virtual_clock.advance(timedelta(minutes=1))
    assert seen == [(bot, {"hi": "there"})]
    await bot.close()  # unloads the extension: the kernel stops
    assert kernel.state == "stopped"
    assert bot.tickkit is None  # type: ignore[attr-defined]
    assert EXTENSION not in bot.extensions


async def test_started_from_setup_hook_and_stopped_by_unload(virtual_clock: VirtualClock) -> None:
    class MyBot(commands.Bot):
        async def setup_hook(self) -> None:
            self.tickkit_options = {"clock": virtual_clock, "tasks": TaskRegistry()}
            await self.load_extension(EXTENSION)

    bot = MyBot(command_prefix="!", intents=discord.Intents.none())
    await bot.setup_hook()  # what discord.py's login() calls
    kernel = kernel_of(bot)
    assert kernel.state == "running"
    await bot.unload_extension(EXTENSION)
    assert kernel.state == "stopped"
    with pytest.raises(TickkitError, match="load_extension"):
        kernel_of(bot)
    await bot.close()


async def test_a_kernel_that_cannot_start_fails_the_extension_load(
    virtual_clock: VirtualClock,
) -> None:
    bot = make_bot(clock=virtual_clock, tasks=TaskRegistry(), driver="nosuch://x")
    with pytest.raises(commands.ExtensionFailed, match="nosuch"):
        await bot.load_extension(EXTENSION)
    assert EXTENSION not in bot.extensions
    assert getattr(bot, "tickkit", None) is None
    await bot.close()


async def test_bad_options_are_refused(virtual_clock: VirtualClock) -> None:
    bot = make_bot()
    bot.tickkit_options = ["driver", "memory://"]  # type: ignore[attr-defined]
    with pytest.raises(commands.ExtensionFailed, match="tickkit_options"):
        await bot.load_extension(EXTENSION)
    await bot.close()
