"""The remind-me bot: ``/remind-me time message`` creates a dynamic tickkit task.

    DISCORD_TOKEN=... python contrib/examples/remind_me_bot.py

Environment: ``DISCORD_TOKEN`` (required), ``TICKKIT_DRIVER`` (the store; default ``memory://``,
use ``sqlite:///reminders.db`` or ``redis://...`` so reminders survive a restart),
``DISCORD_GUILD_ID`` (sync the command to one server at once instead of globally).

The kernel runs through the ``tickkit.plugins.discord`` extension, loaded in ``setup_hook``; it
loads the tasks in ``contrib/examples/tasks`` (the ``remind-me`` task sends the reminder).
The command's work is :func:`remind_me`, a plain coroutine that tests call without Discord.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from pathlib import Path

import discord
from discord import app_commands
from discord.ext import commands

import tickkit
from tickkit.plugins.schedules import parse_duration

HERE = Path(__file__).resolve().parent
#: the longest delay accepted
MAX_DELAY = timedelta(days=365)


async def remind_me(
    *,
    when: str,
    message: str,
    channel_id: int,
    user_id: int,
    kernel: tickkit.Kernel | None = None,
) -> str:
    """Schedule a reminder ``when`` (``"10m"``, ``"6h"``, ``"1d"``, ``"1h30m"``) from now and
    return the reply, with Discord's relative timestamp (``<t:...:R>``)."""
    delay = parse_duration(when)
    if delay is None or delay <= timedelta(0):
        return f"I can't read {when!r} as a time from now: use forms like 10m, 6h, 1d or 1h30m."
    if delay > MAX_DELAY:
        return f"{when!r} is too far ahead: reminders go up to 365 days."
    message = message.strip()
    if not message:
        return "What should I remind you of? Add a message."
    kernel = kernel or tickkit.current_kernel()
    at = kernel.clock.now() + delay
    data = {"channel_id": channel_id, "user_id": user_id, "message": message}
    await kernel.create_task("remind-me", data, at)
    return f"Okay, I'll remind you <t:{int(at.timestamp())}:R>: {message}"


@app_commands.command(name="remind-me", description="Remind you of something later")
@app_commands.describe(time="when, from now: 10m, 6h, 1d, 1h30m", message="what to remind you of")
async def remind_me_command(interaction: discord.Interaction, time: str, message: str) -> None:
    reply = await remind_me(
        when=time,
        message=message,
        channel_id=interaction.channel_id or 0,
        user_id=interaction.user.id,
    )
    await interaction.response.send_message(reply, allowed_mentions=discord.AllowedMentions.none())


class RemindMeBot(commands.Bot):
    def __init__(self) -> None:
        super().__init__(command_prefix=commands.when_mentioned, intents=discord.Intents.default())
        self.tickkit_options = {
            "driver": os.environ.get("TICKKIT_DRIVER", "memory://"),
            "settings": {"tasks_dir": str(HERE / "tasks")},
        }

    async def setup_hook(self) -> None:
        await self.load_extension("tickkit.plugins.discord")  # the kernel runs from here on
        self.tree.add_command(remind_me_command)
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
