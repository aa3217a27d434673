"""discord.py extension: run a tickkit kernel for as long as a bot runs (``discord`` extra).

Load it from the bot's ``setup_hook``::

    class MyBot(commands.Bot):
        async def setup_hook(self) -> None:
            self.tickkit_options = {"driver": "sqlite:///tasks.db",
                                    "settings": {"tasks_dir": "app/tasks"}}
            await self.load_extension("tickkit.plugins.discord")

``setup(bot)`` creates a :class:`~tickkit.Kernel` with ``context={"client": bot}`` (tasks read
the bot as ``ctx.client``) and the keyword arguments in ``bot.tickkit_options`` (any ``Kernel``
argument: ``driver``, ``settings``, ``plugins``, ``context``, ``concurrency``, ``clock``...),
starts it in a task of its own, and sets ``bot.tickkit`` to it. ``teardown(bot)`` stops it
gracefully; discord.py calls it from ``unload_extension`` and from ``Bot.close()``, so the kernel
stops when the bot closes. :func:`start` and :func:`stop` do the same for code that does not use
extensions. See docs/bots.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tickkit import Kernel, TickkitError

if TYPE_CHECKING:
    from discord import Client

__all__ = ["OPTIONS_ATTRIBUTE", "kernel_of", "setup", "start", "stop", "teardown"]

#: the bot attribute whose mapping holds the ``Kernel`` arguments ``setup`` uses
OPTIONS_ATTRIBUTE = "tickkit_options"
# discord.py imports an extension afresh on every load, so state lives on the bot, not here
_KERNEL = "tickkit"
_RUNNER = "_tickkit_runner"


class _Runner:
    """Runs a kernel in its own task: started and stopped in that one task, as anyio needs."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(started), name="tickkit kernel")
        try:
            await started
        except asyncio.CancelledError:
            self._stop.set()
            await asyncio.shield(self._task)
            raise

    async def _run(self, started: asyncio.Future[None]) -> None:
        try:
            await self.kernel.start()
        except BaseException as exc:
            if not started.done():
                started.set_exception(exc)
            await self.kernel.stop()
            return
        if not started.done():
            started.set_result(None)
        try:
            await self._stop.wait()
        finally:
            await self.kernel.stop()

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task


async def start(bot: Client, **options: Any) -> Kernel:
    """Start a kernel for ``bot`` (``ctx.client`` is the bot) with these ``Kernel`` arguments;
    return it once it runs. ``bot.tickkit`` is set to it."""
    if getattr(bot, _RUNNER, None) is not None:
        raise TickkitError(f"a tickkit kernel already runs for {bot!r}")
    extra = options.pop("context", None) or {}
    if not isinstance(extra, Mapping):
        raise TickkitError(f"tickkit option 'context' must be a mapping, got {extra!r}")
    kernel = Kernel(context={**extra, "client": bot}, **options)
    runner = _Runner(kernel)
    await runner.start()
    setattr(bot, _RUNNER, runner)
    setattr(bot, _KERNEL, kernel)
    return kernel


async def stop(bot: Client) -> None:
    """Stop the kernel started for ``bot`` (running tasks get ``shutdown_timeout`` to finish)."""
    runner: _Runner | None = getattr(bot, _RUNNER, None)
    if runner is None:
        return
    setattr(bot, _RUNNER, None)
    try:
        await runner.stop()
    finally:
        setattr(bot, _KERNEL, None)


def kernel_of(bot: Client) -> Kernel:
    """The kernel running for ``bot``."""
    kernel: Kernel | None = getattr(bot, _KERNEL, None)
    if kernel is None:
        raise TickkitError(
            f"no tickkit kernel runs for {bot!r}: "
            "`await bot.load_extension('tickkit.plugins.discord')` in setup_hook"
        )
    return kernel


async def setup(bot: Client) -> None:
    """discord.py's extension entry point: start the kernel (options from
    ``bot.tickkit_options``)."""
    options = getattr(bot, OPTIONS_ATTRIBUTE, None) or {}
    if not isinstance(options, Mapping):
        raise TickkitError(f"bot.{OPTIONS_ATTRIBUTE} must be a mapping, got {options!r}")
    await start(bot, **dict(options))


async def teardown(bot: Client) -> None:
    """discord.py's extension exit point (also called by ``Bot.close()``): stop the kernel."""
    await stop(bot)
