"""The remind-me bot: tickkit's reminders cog (``/remind``, ``/reminders``, ``/remind-zone``) in a
discord.py bot, with the example tasks folder running beside it.

    DISCORD_TOKEN=... TICKKIT_DRIVER=sqlite:///reminders.db python contrib/examples/remind_me_bot.py

Environment: ``DISCORD_TOKEN`` (required), ``TICKKIT_DRIVER`` (the store; default ``memory://``,
use ``sqlite:///reminders.db`` or ``redis://...`` so reminders survive a restart),
``REMINDERS_ZONE`` (the time zone of users who did not set one with ``/remind-zone``; default
UTC), ``DISCORD_GUILD_ID`` (sync the commands to one server at once instead of globally).

The kernel and the cog come from the ``tickkit.plugins.discord_reminders`` extension, loaded in
``setup_hook``; the kernel also loads the tasks in ``contrib/examples/tasks`` (a heartbeat and a
daily digest of pending reminders). ``tests/test_examples.py`` drives this bot's commands
without Discord.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import discord
from discord.ext import commands

HERE = Path(__file__).resolve().parent


class RemindMeBot(commands.Bot):
    def __init__(self, *, sync_commands: bool = True, **kernel_options: Any) -> None:
        super().__init__(command_prefix=commands.when_mentioned, intents=discord.Intents.default())
        self.sync_commands = sync_commands
        # any tickkit.Kernel argument (the tests give a virtual clock)
        self.tickkit_options = {
            "driver": os.environ.get("TICKKIT_DRIVER", "memory://"),
            "settings": {"tasks_dir": str(HERE / "tasks")},
            **kernel_options,
        }
        # any tickkit.plugins.reminders.Reminders argument
        self.tickkit_reminders = {"default_zone": os.environ.get("REMINDERS_ZONE", "UTC")}

    async def setup_hook(self) -> None:
        # starts the kernel (ctx.client is this bot) and adds the reminders cog
        await self.load_extension("tickkit.plugins.discord_reminders")
        if not self.sync_commands:
            return
        guild_id = os.environ.get("DISCORD_GUILD_ID")
        if guild_id:
            guild = discord.Object(id=int(guild_id))
            self.tree.copy_global_to(guild=guild)
            await self.tree.sync(guild=guild)
        else:
            await self.tree.sync()


def main() -> None:
    token = os.environ.get("DISCORD_TOKEN")
    if not token:
        raise SystemExit("set DISCORD_TOKEN to your bot's token")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    RemindMeBot().run(token, log_handler=None)  # closing the bot stops the kernel


if __name__ == "__main__":
    main()
