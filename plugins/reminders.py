"""An opt-in reminders cog for discord.py bots (``discord`` extra), built only on tickkit's public
job API (``create_task``, ``list_tasks``, ``count_tasks``, ``get_task``, ``delete_task``).

The cog, its task and its plugin live here; the discord.py extension that adds them to a bot is
``tickkit.plugins.discord_reminders`` (discord.py imports an extension afresh on every load, so
the classes stay in this module). Load the extension instead of (or with)
``tickkit.plugins.discord``::

    class MyBot(commands.Bot):
        async def setup_hook(self) -> None:
            self.tickkit_options = {"driver": "sqlite:///reminders.db"}
            self.tickkit_reminders = {"default_zone": "Europe/Berlin"}   # optional
            await self.load_extension("tickkit.plugins.discord_reminders")
            await self.tree.sync()

Slash commands (every reply is ephemeral: only the user sees it):

- ``/remind when text``: ``when`` is a duration from now (``10m``, ``2h30m``, ``1d2h``, ``1w``),
  an ISO 8601 time (``2026-12-24T18:00``, with or without an offset; without one it is in the
  user's zone), or a time of day (``18:30``, ``6:30pm``, ``6pm``) in the user's zone, at its next
  occurrence.
- ``/reminders``: the user's own pending reminders, 5 a page, with Previous/Next buttons
  (keyset paging: ``list_tasks(where={"user_id": ...}, after=<the last job shown>)``).
- ``/reminders cancel:<id>``: cancel one of the user's own reminders; another user's id answers
  "not found" exactly as an unknown id does, and nothing is deleted.
- ``/remind-zone zone``: set the user's IANA time zone (without ``zone``: show it). Zones are
  kept in the ``zones`` mapping given to the cog (a dict in memory by default: pass a persistent
  mapping to keep them over restarts); a user without one gets ``default_zone`` (UTC).

The reminder task (``tickkit-reminder``, declared with ``indexes=["user_id"]`` so that one user's
reminders are found through an index) sends the text to the channel the command was used in,
through ``ctx.client`` (the bot), mentioning only that user; when the channel cannot be reached
(deleted, no access, a user-installed app) it sends a direct message instead. Its data:
``{"user_id": "<snowflake>", "channel_id": "<snowflake>" or null, "guild_id": ..., "text": ...}``;
ids are strings (JavaScript readers of a BullMQ store would round 64-bit numbers). See
docs/bots.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, MutableMapping
from datetime import datetime, time, timedelta, tzinfo
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from tickkit import (
    UTC,
    Job,
    Kernel,
    TaskContext,
    TaskDefinition,
    TaskRegistry,
    TickkitError,
    hookimpl,
    task,
)
from tickkit.plugins.discord import kernel_of
from tickkit.plugins.schedules import parse_duration
from tickkit.plugins.schedules.zones import get_zone

__all__ = [
    "MAX_TEXT",
    "REMINDER_TASK",
    "ReminderPages",
    "Reminders",
    "RemindersPlugin",
    "WhenError",
    "parse_when",
    "reminder_task",
    "send_reminder",
]

#: the name of the reminder task
REMINDER_TASK = "tickkit-reminder"
#: the longest reminder text (a Discord message holds 2,000 characters, the mention included)
MAX_TEXT = 1500


# --- when ---------------------------------------------------------------------------------------


class WhenError(ValueError):
    """A ``when`` that cannot be read, or is out of range; the message is the user's answer."""


_TIME_OF_DAY = re.compile(r"^(\d{1,2})(?::(\d{2}))?\s*([ap])\.?m\.?$|^(\d{1,2}):(\d{2})$")


def _time_of_day(text: str) -> time | None:
    """``18:30``, ``6:30pm``, ``6pm``, ``6 p.m.`` as a time, else None."""
    found = _TIME_OF_DAY.match(text.strip().lower())
    if found is None:
        return None
    if found.group(4) is not None:  # 24-hour clock
        hour, minute = int(found.group(4)), int(found.group(5))
        if hour > 23 or minute > 59:
            return None
    else:
        hour, minute = int(found.group(1)), int(found.group(2) or 0)
        if not 1 <= hour <= 12 or minute > 59:
            return None
        hour = hour % 12 + (12 if found.group(3) == "p" else 0)
    return time(hour, minute)


def parse_when(text: str, now: datetime, zone: tzinfo, *, max_ahead: timedelta) -> datetime:
    """The instant ``when`` names, seen from ``now`` by a user in ``zone``.

    A duration (``10m``, ``2h30m``, ``1d2h``) counts from ``now``; an ISO 8601 time without an
    offset and a time of day (``18:30``, ``6:30pm``) are in ``zone``, a time of day at its next
    occurrence. Raises :class:`WhenError` (whose message names ``text``) for anything else, a
    time that has passed, or one more than ``max_ahead`` away.
    """
    shown = text.strip()
    if not shown:
        raise WhenError("Give a time: a duration like 10m or 2h30m, 18:30, or 2026-12-24T18:00.")
    try:
        delay = parse_duration(shown)
    except (OverflowError, ValueError, ArithmeticError):
        raise WhenError(f"{shown!r} is too far ahead: at most {max_ahead.days} days.") from None
    if delay is not None:
        if delay <= timedelta(0):
            raise WhenError(f"{shown!r} is not a time in the future.")
        if delay > max_ahead:
            raise WhenError(f"{shown!r} is too far ahead: at most {max_ahead.days} days.")
        return now + delay
    local_now = now.astimezone(zone)
    of_day = _time_of_day(shown)
    if of_day is not None:
        at = datetime.combine(local_now.date(), of_day, tzinfo=zone)
        if at <= local_now:
            at = datetime.combine(local_now.date() + timedelta(days=1), of_day, tzinfo=zone)
        return at.astimezone(UTC)
    try:
        at = datetime.fromisoformat(shown.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise WhenError(
            f"I can't read {shown!r} as a time: use a duration (10m, 2h30m, 1d2h), a time of "
            "day (18:30, 6:30pm) or a date and time (2026-12-24T18:00)."
        ) from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=zone)
    try:
        at = at.astimezone(UTC)
    except (OverflowError, ValueError):
        raise WhenError(f"{shown!r} is out of range.") from None
    if at <= now:
        raise WhenError(f"{shown!r} is in the past.")
    if at - now > max_ahead:
        raise WhenError(f"{shown!r} is too far ahead: at most {max_ahead.days} days.")
    return at


# --- the reminder task ----------------------------------------------------------------------------


def _mention(user_id: int) -> discord.AllowedMentions:
    return discord.AllowedMentions(
        everyone=False, roles=False, users=[discord.Object(id=user_id)], replied_user=False
    )


async def send_reminder(ctx: TaskContext) -> None:
    """The reminder task: send the text to its channel through ``ctx.client`` (mentioning only
    its user), or as a direct message when the channel cannot be reached."""
    data: Mapping[str, Any] = ctx.data
    client = ctx.client
    user_id = int(data["user_id"])
    text = str(data["text"])
    channel_id = data.get("channel_id")
    if channel_id is not None:
        channel = client.get_channel(int(channel_id))
        if channel is None:
            try:
                channel = await client.fetch_channel(int(channel_id))
            except (discord.NotFound, discord.Forbidden):
                channel = None
        if channel is not None:
            try:
                await channel.send(f"<@{user_id}> ⏰ {text}", allowed_mentions=_mention(user_id))
                return
            except discord.Forbidden:
                ctx.logger.info("no access to channel %s: sending a direct message", channel_id)
    user = client.get_user(user_id) or await client.fetch_user(user_id)
    await user.send(f"⏰ {text}", allowed_mentions=_mention(user_id))


def reminder_task(name: str = REMINDER_TASK) -> TaskDefinition:
    """The reminder task's definition (not added to any registry of yours)."""
    return task(
        name=name,
        execute=send_reminder,
        indexes=["user_id"],
        retries=3,
        registry=TaskRegistry(),
    )


class RemindersPlugin:
    """The tickkit plugin that adds the reminder task to a kernel when it starts (so that the
    ``user_id`` index is known from the start)."""

    def __init__(self, task_name: str = REMINDER_TASK) -> None:
        self.task_name = task_name

    @hookimpl
    def tickkit_load_tasks(self, kernel: Kernel) -> list[TaskDefinition] | None:
        if kernel.tasks.get(self.task_name) is not None:
            return None
        return [reminder_task(self.task_name)]


# --- the cog ------------------------------------------------------------------------------------


def _ephemeral(text: str) -> dict[str, Any]:
    return {"content": text, "ephemeral": True, "allowed_mentions": discord.AllowedMentions.none()}


def _one_line(text: str, width: int = 80) -> str:
    line = " ".join(text.split()).replace("`", "'")
    return line if len(line) <= width else line[: width - 1] + "…"


class Reminders(commands.Cog):
    """``/remind``, ``/reminders`` and ``/remind-zone`` (see the module's docstring)."""

    def __init__(
        self,
        bot: commands.Bot,
        *,
        task_name: str = REMINDER_TASK,
        default_zone: str = "UTC",
        zones: MutableMapping[str, str] | None = None,
        page_size: int = 5,
        max_ahead: timedelta = timedelta(days=366),
        max_per_user: int | None = 25,
    ) -> None:
        get_zone(default_zone)  # an unknown zone fails here, naming it
        if (
            isinstance(page_size, bool)
            or not isinstance(page_size, int)
            or not 1 <= page_size <= 25
        ):
            raise TickkitError(f"page_size must be an int from 1 to 25, got {page_size!r}")
        if not isinstance(max_ahead, timedelta) or max_ahead <= timedelta(0):
            raise TickkitError(f"max_ahead must be a positive timedelta, got {max_ahead!r}")
        if max_per_user is not None and (
            isinstance(max_per_user, bool) or not isinstance(max_per_user, int) or max_per_user < 1
        ):
            raise TickkitError(f"max_per_user must be an int >= 1 or None, got {max_per_user!r}")
        self.bot = bot
        self.task_name = task_name
        self.default_zone = default_zone
        self.zones: MutableMapping[str, str] = zones if zones is not None else {}
        self.page_size = page_size
        self.max_ahead = max_ahead
        self.max_per_user = max_per_user

    @property
    def kernel(self) -> Kernel:
        return kernel_of(self.bot)

    def zone_name(self, user_id: int) -> str:
        return self.zones.get(str(user_id), self.default_zone)

    def owner_where(self, user_id: int) -> dict[str, Any]:
        return {"user_id": str(user_id)}

    # /remind ---------------------------------------------------------------------------------

    @app_commands.command(name="remind", description="Remind you of something later")
    @app_commands.describe(
        when="10m, 2h30m, 1d2h, 18:30, 6:30pm, or 2026-12-24T18:00 (your zone: /remind-zone)",
        text="what to remind you of",
    )
    async def remind(self, interaction: discord.Interaction, when: str, text: str) -> None:
        await interaction.response.send_message(
            **_ephemeral(await self.create(interaction, when, text))
        )

    async def create(self, interaction: discord.Interaction, when: str, text: str) -> str:
        """The work of ``/remind``: create the reminder; the reply."""
        kernel = self.kernel
        text = text.strip()
        if not text:
            return "What should I remind you of? Add a text."
        if len(text) > MAX_TEXT:
            return f"That text is too long: at most {MAX_TEXT} characters."
        try:
            zone = get_zone(self.zone_name(interaction.user.id))
        except TickkitError:
            zone = get_zone(self.default_zone)
        try:
            at = parse_when(when, kernel.clock.now(), zone, max_ahead=self.max_ahead)
        except WhenError as exc:
            return str(exc)
        where = self.owner_where(interaction.user.id)
        if self.max_per_user is not None:
            pending = await kernel.count_tasks(self.task_name, where=where, state="scheduled")
            if pending >= self.max_per_user:
                return (
                    f"You have {pending} reminders already (at most {self.max_per_user}): "
                    "cancel one with /reminders cancel:<id>."
                )
        data = {
            **where,
            "channel_id": str(interaction.channel_id) if interaction.channel_id else None,
            "guild_id": str(interaction.guild_id) if interaction.guild_id else None,
            "text": text,
        }
        job_id = await kernel.create_task(self.task_name, data, at)
        stamp = int(at.timestamp())
        return f"Okay, I'll remind you <t:{stamp}:f> (<t:{stamp}:R>): {text}\nid: `{job_id}`"

    # /remind-zone ----------------------------------------------------------------------------

    @app_commands.command(name="remind-zone", description="Set the time zone of your reminders")
    @app_commands.describe(zone="an IANA zone such as Europe/Berlin or America/New_York")
    async def remind_zone(self, interaction: discord.Interaction, zone: str | None = None) -> None:
        user = interaction.user.id
        if zone is None:
            reply = f"Your reminders use the time zone {self.zone_name(user)}."
        else:
            zone = zone.strip()
            try:
                get_zone(zone)
            except TickkitError:
                reply = (
                    f"I don't know the time zone {zone!r}: use an IANA name such as "
                    "Europe/Berlin or America/New_York."
                )
            else:
                self.zones[str(user)] = zone
                reply = f"Your reminders now use the time zone {zone}."
        await interaction.response.send_message(**_ephemeral(reply))

    # /reminders ------------------------------------------------------------------------------

    @app_commands.command(name="reminders", description="Your reminders, or cancel one")
    @app_commands.describe(cancel="the id of one of your reminders, to cancel it")
    async def reminders(self, interaction: discord.Interaction, cancel: str | None = None) -> None:
        if cancel is not None:
            await interaction.response.send_message(
                **_ephemeral(await self.cancel(interaction.user.id, cancel))
            )
            return
        view = ReminderPages(self, interaction.user.id)
        await view.load()
        await interaction.response.send_message(**_ephemeral(view.render()), view=view)

    async def cancel(self, user_id: int, job_id: str) -> str:
        """The work of ``/reminders cancel``: only the user's own reminder is deleted; any other
        id (unknown, malformed, another user's, another task's) answers the same "not found"."""
        job_id = job_id.strip()
        not_found = f"You have no reminder with id {_one_line(job_id, 60)!r}."
        try:
            job = await self.kernel.get_task(job_id)
        except TickkitError:  # not even a valid id
            return not_found
        if job is None or not self.owns(job, user_id):
            return not_found
        await self.kernel.delete_task(job_id)
        return f"Cancelled your reminder `{job_id}`: {_one_line(str(job.data.get('text', '')))}"

    def owns(self, job: Job, user_id: int) -> bool:
        return (
            job.name == self.task_name
            and isinstance(job.data, dict)
            and job.data.get("user_id") == str(user_id)
        )

    async def page(self, user_id: int, after: Job | None) -> tuple[list[Job], bool]:
        """One page of the user's pending reminders after ``after``; whether more follow."""
        jobs = await self.kernel.list_tasks(
            self.task_name,
            where=self.owner_where(user_id),
            state="scheduled",
            limit=self.page_size + 1,
            after=after,
        )
        return jobs[: self.page_size], len(jobs) > self.page_size

    async def count(self, user_id: int) -> int:
        return await self.kernel.count_tasks(
            self.task_name, where=self.owner_where(user_id), state="scheduled"
        )


class ReminderPages(discord.ui.View):
    """The ``/reminders`` message: one page of the user's reminders, Previous and Next."""

    def __init__(self, cog: Reminders, user_id: int, *, timeout: float = 300.0) -> None:
        super().__init__(timeout=timeout)
        self.cog = cog
        self.user_id = user_id
        #: the ``after`` of every page up to the one shown (None: the first page)
        self.starts: list[Job | None] = [None]
        self.jobs: list[Job] = []
        self.more = False
        self.total = 0

    async def load(self) -> None:
        self.jobs, self.more = await self.cog.page(self.user_id, self.starts[-1])
        self.total = await self.cog.count(self.user_id)
        self.previous.disabled = len(self.starts) == 1
        self.next.disabled = not self.more

    def render(self) -> str:
        if not self.jobs:
            if len(self.starts) == 1:
                return "You have no reminders. Create one with /remind."
            return "No more reminders."
        size = self.cog.page_size
        # reminders that fired since the first page make the count fall behind the pages seen
        pages = max(-(-self.total // size), len(self.starts) + self.more)
        lines = [f"Your reminders ({self.total}), page {len(self.starts)} of {pages}:"]
        for job in self.jobs:
            stamp = int(job.next_run_at.timestamp()) if job.next_run_at is not None else None
            when = f"<t:{stamp}:f> (<t:{stamp}:R>)" if stamp is not None else "-"
            lines.append(f"`{job.id}` {when}: {_one_line(str(job.data.get('text', '')))}")
        lines.append("Cancel one with /reminders cancel:<id>.")
        return "\n".join(lines)

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        return interaction.user.id == self.user_id

    @discord.ui.button(label="Previous", style=discord.ButtonStyle.secondary)
    async def previous(
        self, interaction: discord.Interaction, button: discord.ui.Button[Any]
    ) -> None:
        if len(self.starts) > 1:
            self.starts.pop()
        await self.load()
        await interaction.response.edit_message(content=self.render(), view=self)

    @discord.ui.button(label="Next", style=discord.ButtonStyle.secondary)
    async def next(self, interaction: discord.Interaction, button: discord.ui.Button[Any]) -> None:
        if self.jobs and self.more:
            # the Job, not its id: that reminder may fire before the button is pressed
            self.starts.append(self.jobs[-1])
        await self.load()
        await interaction.response.edit_message(content=self.render(), view=self)
