"""A daily cron task: every morning at 09:00 Berlin time, count the reminders still pending (the
``remind-me`` jobs of this folder and the reminders cog's ``tickkit-reminder`` jobs).

With a bot (``ctx.client``) and ``DIGEST_CHANNEL_ID`` set, the count is posted to that channel;
otherwise it is logged.
"""

from __future__ import annotations

import os

from tickkit import TaskContext, task


@task(name="daily-digest", schedule="0 9 * * *", timezone="Europe/Berlin")
async def daily_digest(ctx: TaskContext) -> str:
    pending = 0
    for name in ("remind-me", "tickkit-reminder"):
        pending += await ctx.kernel.count_tasks(name, state="scheduled")
    text = f"daily digest: {pending} reminder(s) pending"
    client = getattr(ctx, "client", None)
    channel_id = os.environ.get("DIGEST_CHANNEL_ID")
    if client is not None and channel_id:
        channel = client.get_channel(int(channel_id)) or await client.fetch_channel(int(channel_id))
        await channel.send(text)
    else:
        ctx.logger.info("%s", text)
    return text
