"""discord.py extension: the opt-in reminders cog (``/remind``, ``/reminders``,
``/remind-zone``) with the tickkit kernel it needs (``discord`` extra).

Load it in the bot's ``setup_hook`` instead of ``tickkit.plugins.discord``::

    class MyBot(commands.Bot):
        async def setup_hook(self) -> None:
            self.tickkit_options = {"driver": "sqlite:///reminders.db"}   # Kernel arguments
            self.tickkit_reminders = {"default_zone": "Europe/Berlin"}    # Reminders arguments
            await self.load_extension("tickkit.plugins.discord_reminders")
            await self.tree.sync()

``setup(bot)`` starts the kernel as ``tickkit.plugins.discord`` does (``ctx.client`` is the bot,
``bot.tickkit`` the kernel), with the :class:`~tickkit.plugins.reminders.RemindersPlugin` added
to its plugins so that the reminder task and its ``user_id`` index exist from the start, then adds
the :class:`~tickkit.plugins.reminders.Reminders` cog. A kernel already running for the bot is
used when it has the reminder task (give it ``plugins=[RemindersPlugin()]``); ``teardown`` (also
called by ``Bot.close()``) stops the kernel when this extension started it. See docs/bots.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from discord.ext import commands

from tickkit import Kernel, TickkitError
from tickkit.plugins.discord import kernel_of, start, stop
from tickkit.plugins.reminders import REMINDER_TASK, Reminders, RemindersPlugin

__all__ = ["OPTIONS_ATTRIBUTE", "setup", "teardown"]

#: the bot attribute whose mapping holds the :class:`Reminders` keyword arguments ``setup`` uses
OPTIONS_ATTRIBUTE = "tickkit_reminders"
# set on the bot when this extension started the kernel (its teardown then stops it)
_STARTED = "_tickkit_reminders_started"


async def setup(bot: commands.Bot) -> None:
    """discord.py's extension entry point: start the kernel with the reminder task (from
    ``bot.tickkit_options``, as ``tickkit.plugins.discord`` does) unless one runs already, and
    add the :class:`Reminders` cog (its options from ``bot.tickkit_reminders``)."""
    options = getattr(bot, OPTIONS_ATTRIBUTE, None) or {}
    if not isinstance(options, Mapping):
        raise TickkitError(f"bot.{OPTIONS_ATTRIBUTE} must be a mapping, got {options!r}")
    task_name = options.get("task_name", REMINDER_TASK)
    cog = Reminders(bot, **dict(options))
    try:
        kernel: Kernel | None = kernel_of(bot)
    except TickkitError:
        kernel = None
    if kernel is None:
        kernel_options = getattr(bot, "tickkit_options", None) or {}
        if not isinstance(kernel_options, Mapping):
            raise TickkitError(f"bot.tickkit_options must be a mapping, got {kernel_options!r}")
        kernel_options = dict(kernel_options)
        plugins: Sequence[object] = kernel_options.pop("plugins", None) or ()
        await start(bot, plugins=[*plugins, RemindersPlugin(task_name)], **kernel_options)
        setattr(bot, _STARTED, True)
    elif kernel.tasks.get(task_name) is None:
        raise TickkitError(
            f"the tickkit kernel of {bot!r} runs without the task {task_name!r}: load "
            "tickkit.plugins.discord_reminders instead of tickkit.plugins.discord (it starts the "
            "kernel with that task), or give the kernel plugins=[RemindersPlugin()]"
        )
    try:
        await bot.add_cog(cog)
    except BaseException:
        if getattr(bot, _STARTED, False):
            setattr(bot, _STARTED, False)
            await stop(bot)
        raise


async def teardown(bot: commands.Bot) -> None:
    """discord.py's extension exit point (also called by ``Bot.close()``): remove the cog, and
    stop the kernel when this extension started it."""
    cog = bot.get_cog(Reminders.__cog_name__)
    if isinstance(cog, Reminders):
        await bot.remove_cog(cog.__cog_name__)
    if getattr(bot, _STARTED, False):
        setattr(bot, _STARTED, False)
        await stop(bot)
