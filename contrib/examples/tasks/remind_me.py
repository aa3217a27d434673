"""The remind-me task: a dynamic job per reminder, created from the shell
(``tickkit add remind-me``) or by your own command (the example bot uses the reminders cog and
its own task instead).

Data: ``{"channel_id": int, "user_id": int, "message": str}``. With a bot (``ctx.client``, set by
the ``tickkit.plugins.discord`` extension) the reminder is sent to the channel; without one
(``tickkit run``) it is logged.
"""

from __future__ import annotations

from typing import Any

from tickkit import TaskContext, task


def reminder_text(data: dict[str, Any]) -> str:
    return f"<@{data['user_id']}> ⏰ reminder: {data['message']}"


@task(name="remind-me", retries=2, backoff={"type": "exponential", "delay": 5})
async def remind_me(ctx: TaskContext) -> None:
    data = ctx.data
    text = reminder_text(data)
    client = getattr(ctx, "client", None)
    if client is None:
        ctx.logger.info("%s (channel %s)", text, data["channel_id"])
        return
    import discord

    channel = client.get_channel(data["channel_id"]) or await client.fetch_channel(
        data["channel_id"]
    )
    # mention the user who asked, nobody else (the message text is theirs)
    allowed = discord.AllowedMentions(
        everyone=False, roles=False, users=[discord.Object(id=data["user_id"])]
    )
    await channel.send(text, allowed_mentions=allowed)
