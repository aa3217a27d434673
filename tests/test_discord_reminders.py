"""The reminders cog (``tickkit.plugins.discord_reminders``), driven in-process: a real
``commands.Bot`` that never logs in, the app-command and button callbacks called with stand-in
``Interaction`` objects (no Discord server is reachable), and a real store (memory or a SQLite
file) checked for what the commands stored or deleted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import pytest

discord = pytest.importorskip("discord")  # the `discord` extra
from discord.ext import commands  # noqa: E402

from tickkit import UTC, JobState, Kernel, TaskRegistry  # noqa: E402
from tickkit.plugins.discord import kernel_of  # noqa: E402
from tickkit.plugins.reminders import (  # noqa: E402
    REMINDER_TASK,
    ReminderPages,
    Reminders,
    RemindersPlugin,
    WhenError,
    parse_when,
)
from tickkit.testing import VirtualClock  # noqa: E402

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=UTC)  # the virtual clock's start: a Thursday
BERLIN = ZoneInfo("Europe/Berlin")
EXTENSION = "tickkit.plugins.discord_reminders"
YEAR = timedelta(days=366)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # discord.py runs on asyncio only


# --- stand-ins for what Discord would send and receive ------------------------------------------


@dataclass
class Channel:
    id: int
    sent: list[tuple[str, Any]] = field(default_factory=list)
    forbidden: bool = False

    async def send(self, content: str, **kw: Any) -> None:
        if self.forbidden:
            raise discord.Forbidden(SimpleNamespace(status=403, reason="Forbidden"), "no access")
        self.sent.append((content, kw))


class Bot(commands.Bot):
    """A real bot whose channel and user lookups return stand-ins (it never logs in)."""

    def __init__(self) -> None:
        super().__init__(command_prefix="!", intents=discord.Intents.none())
        self.channels: dict[int, Channel] = {}
        self.dms: dict[int, Channel] = {}

    def get_channel(self, id: int, /) -> Any:
        return self.channels.get(id)

    async def fetch_channel(self, channel_id: int, /) -> Any:
        raise discord.NotFound(SimpleNamespace(status=404, reason="Not Found"), "Unknown Channel")

    def get_user(self, id: int, /) -> Any:
        return self.dms.setdefault(id, Channel(id))


class Response:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.edited: list[dict[str, Any]] = []

    async def send_message(self, content: str | None = None, **kw: Any) -> None:
        self.sent.append({"content": content, **kw})

    async def edit_message(self, **kw: Any) -> None:
        self.edited.append(kw)


class Interaction:
    def __init__(self, user_id: int, channel_id: int | None = 100, guild_id: int | None = 1):
        self.user = SimpleNamespace(id=user_id)
        self.channel_id = channel_id
        self.guild_id = guild_id
        self.response = Response()

    @property
    def reply(self) -> str:
        (last,) = self.response.sent[-1:]
        assert last["ephemeral"] is True
        return str(last["content"])


@dataclass
class Setup:
    bot: Bot
    cog: Reminders
    kernel: Kernel
    clock: VirtualClock

    async def remind(self, user: int, when: str, text: str, channel: int | None = 100) -> str:
        inter = Interaction(user, channel)
        await self.cog.remind.callback(self.cog, inter, when=when, text=text)  # type: ignore[arg-type]
        return inter.reply

    async def zone(self, user: int, zone: str | None) -> str:
        inter = Interaction(user)
        await self.cog.remind_zone.callback(self.cog, inter, zone=zone)  # type: ignore[arg-type]
        return inter.reply

    async def reminders(self, user: int, cancel: str | None = None) -> Interaction:
        inter = Interaction(user)
        await self.cog.reminders.callback(self.cog, inter, cancel=cancel)  # type: ignore[arg-type]
        return inter

    async def jobs(self, user: int | None = None) -> list[Any]:
        where = {"user_id": str(user)} if user is not None else None
        return await self.kernel.list_tasks(REMINDER_TASK, where=where)


@pytest.fixture(params=["memory", "sqlite"])
async def setup(
    request: pytest.FixtureRequest, tmp_path: Path, virtual_clock: VirtualClock
) -> AsyncIterator[Setup]:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'bot.db'}"
    bot = Bot()
    bot.tickkit_options = {"driver": url, "clock": virtual_clock, "tasks": TaskRegistry()}  # type: ignore[attr-defined]
    bot.tickkit_reminders = {"default_zone": "UTC"}  # type: ignore[attr-defined]
    await bot.load_extension(EXTENSION)
    cog = bot.get_cog("Reminders")
    assert isinstance(cog, Reminders)
    try:
        yield Setup(bot, cog, kernel_of(bot), virtual_clock)
    finally:
        await bot.close()


# --- when ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "zone", "expected"),
    [
        ("10m", UTC, T0 + timedelta(minutes=10)),
        ("2h30m", UTC, T0 + timedelta(hours=2, minutes=30)),
        ("1d2h", BERLIN, T0 + timedelta(days=1, hours=2)),  # a duration ignores the zone
        ("18:30", UTC, datetime(2026, 1, 1, 18, 30, tzinfo=UTC)),
        ("18:30", BERLIN, datetime(2026, 1, 1, 17, 30, tzinfo=UTC)),
        ("00:30", BERLIN, datetime(2026, 1, 1, 23, 30, tzinfo=UTC)),  # 00:30 Berlin passed: next
        ("00:00", UTC, datetime(2026, 1, 2, tzinfo=UTC)),  # now exactly: the next one
        ("6:30pm", UTC, datetime(2026, 1, 1, 18, 30, tzinfo=UTC)),
        ("6pm", BERLIN, datetime(2026, 1, 1, 17, tzinfo=UTC)),
        ("12am", UTC, datetime(2026, 1, 2, tzinfo=UTC)),
        ("12:15 PM", UTC, datetime(2026, 1, 1, 12, 15, tzinfo=UTC)),
        ("2026-12-24T18:00", BERLIN, datetime(2026, 12, 24, 17, tzinfo=UTC)),
        ("2026-12-24T18:00+05:00", BERLIN, datetime(2026, 12, 24, 13, tzinfo=UTC)),
        ("2026-06-01T08:00Z", BERLIN, datetime(2026, 6, 1, 8, tzinfo=UTC)),
        ("2026-06-01 10:00", BERLIN, datetime(2026, 6, 1, 8, tzinfo=UTC)),  # summer time
    ],
)
def test_parse_when(when: str, zone: Any, expected: datetime) -> None:
    assert parse_when(when, T0, zone, max_ahead=YEAR) == expected


@pytest.mark.parametrize(
    ("when", "message"),
    [
        ("soon", "I can't read 'soon' as a time"),
        ("10x", "I can't read '10x' as a time"),
        ("25:00", "I can't read '25:00' as a time"),
        ("13pm", "I can't read '13pm' as a time"),
        ("", "Give a time"),
        ("0m", "'0m' is not a time in the future"),
        ("2025-12-31T23:00", "'2025-12-31T23:00' is in the past"),
        ("400d", "'400d' is too far ahead: at most 366 days"),
        ("99999999999999999999d", "'99999999999999999999d' is too far ahead"),
        ("9999-12-31T23:59-05:00", "'9999-12-31T23:59-05:00' is out of range"),
        ("2030-01-01T00:00", "'2030-01-01T00:00' is too far ahead"),
    ],
)
def test_parse_when_refuses_naming_the_value(when: str, message: str) -> None:
    with pytest.raises(WhenError, match="^" + message.replace("(", r"\(")):
        parse_when(when, T0, UTC, max_ahead=YEAR)


# --- /remind and the reminder task ---------------------------------------------------------------


async def test_remind_stores_a_reminder_that_reaches_the_channel(setup: Setup) -> None:
    setup.bot.channels[100] = channel = Channel(100)
    reply = await setup.remind(42, "10m", "  stretch your legs ")
    (job,) = await setup.jobs(42)
    at = T0 + timedelta(minutes=10)
    stamp = int(at.timestamp())
    assert reply == (
        f"Okay, I'll remind you <t:{stamp}:f> (<t:{stamp}:R>): stretch your legs\nid: `{job.id}`"
    )
    assert job.next_run_at == at and job.state is JobState.SCHEDULED
    assert job.data == {
        "user_id": "42",
        "channel_id": "100",
        "guild_id": "1",
        "text": "stretch your legs",
    }
    await setup.clock.advance(timedelta(minutes=10))
    ((content, kw),) = channel.sent
    assert content == "<@42> ⏰ stretch your legs"
    mentions = kw["allowed_mentions"]
    assert mentions.everyone is False and mentions.roles is False
    assert [u.id for u in mentions.users] == [42]
    assert [j for j in await setup.jobs(42) if j.state is JobState.SCHEDULED] == []


async def test_a_channel_that_cannot_be_reached_gets_a_direct_message(setup: Setup) -> None:
    setup.bot.channels[200] = Channel(200, forbidden=True)
    await setup.remind(7, "1m", "in a locked channel", channel=200)
    await setup.remind(7, "2m", "in a deleted channel", channel=300)
    await setup.remind(7, "3m", "from a DM", channel=None)
    await setup.clock.advance(timedelta(minutes=3))
    assert [c for c, _ in setup.bot.dms[7].sent] == [
        "⏰ in a locked channel",
        "⏰ in a deleted channel",
        "⏰ from a DM",
    ]


async def test_remind_uses_the_users_zone(setup: Setup) -> None:
    assert await setup.zone(42, None) == "Your reminders use the time zone UTC."
    assert await setup.zone(42, "Mars/Base") == (
        "I don't know the time zone 'Mars/Base': use an IANA name such as Europe/Berlin or "
        "America/New_York."
    )
    assert await setup.zone(42, "Europe/Berlin") == (
        "Your reminders now use the time zone Europe/Berlin."
    )
    await setup.remind(42, "18:30", "Berlin evening")
    await setup.remind(7, "18:30", "UTC evening")  # another user keeps the default
    await setup.remind(42, "2026-07-01T09:00", "Berlin summer morning")
    (evening, summer) = await setup.jobs(42)
    assert evening.next_run_at == datetime(2026, 1, 1, 17, 30, tzinfo=UTC)
    assert summer.next_run_at == datetime(2026, 7, 1, 7, tzinfo=UTC)
    (other,) = await setup.jobs(7)
    assert other.next_run_at == datetime(2026, 1, 1, 18, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("when", "text", "reply"),
    [
        ("in a bit", "tea", "I can't read 'in a bit' as a time"),
        ("-5m", "tea", "I can't read '-5m' as a time"),
        ("2020-01-01T00:00", "tea", "'2020-01-01T00:00' is in the past."),
        ("10m", "   ", "What should I remind you of? Add a text."),
        ("10m", "x" * 1501, "That text is too long: at most 1500 characters."),
    ],
)
async def test_bad_input_answers_and_stores_nothing(
    setup: Setup, when: str, text: str, reply: str
) -> None:
    assert (await setup.remind(42, when, text)).startswith(reply)
    assert await setup.jobs() == []


async def test_a_user_has_at_most_max_per_user_reminders(setup: Setup) -> None:
    setup.cog.max_per_user = 3
    for i in range(3):
        assert (await setup.remind(42, f"{i + 1}m", "r")).startswith("Okay")
    assert (await setup.remind(42, "9m", "one more")).startswith(
        "You have 3 reminders already (at most 3)"
    )
    assert (await setup.remind(7, "9m", "someone else")).startswith("Okay")
    assert len(await setup.jobs(42)) == 3


# --- /reminders: paging and cancel ---------------------------------------------------------------


def shown_ids(text: str) -> list[str]:
    return [line.split("`")[1] for line in text.splitlines() if line.startswith("`")]


async def test_reminders_pages_with_buttons(setup: Setup) -> None:
    mine = []
    for i in range(12):
        await setup.remind(42, f"{i + 1}h", f"mine {i}")
        mine.append((await setup.jobs(42))[-1].id)
        if i % 4 == 0:
            await setup.remind(7, f"{i + 1}h{30}m", f"theirs {i}")
    assert len(await setup.jobs(7)) == 3

    inter = await setup.reminders(42)
    (sent,) = inter.response.sent
    assert sent["ephemeral"] is True
    view = sent["view"]
    assert isinstance(view, ReminderPages)
    assert sent["content"].splitlines()[0] == "Your reminders (12), page 1 of 3:"
    assert shown_ids(sent["content"]) == mine[:5]
    assert "mine 0" in sent["content"] and "theirs" not in sent["content"]
    assert view.previous.disabled and not view.next.disabled

    # another user cannot press this user's buttons
    assert await view.interaction_check(Interaction(7)) is False  # type: ignore[arg-type]
    assert await view.interaction_check(Interaction(42)) is True  # type: ignore[arg-type]

    pages = []
    for _ in range(2):
        press = Interaction(42)
        await view.next.callback(press)  # type: ignore[arg-type]
        (edit,) = press.response.edited
        assert edit["view"] is view
        pages.append(edit["content"])
    assert shown_ids(pages[0]) == mine[5:10]
    assert pages[0].splitlines()[0] == "Your reminders (12), page 2 of 3:"
    assert shown_ids(pages[1]) == mine[10:]
    assert view.next.disabled and not view.previous.disabled

    press = Interaction(42)
    await view.previous.callback(press)  # type: ignore[arg-type]
    assert shown_ids(press.response.edited[0]["content"]) == mine[5:10]
    press = Interaction(42)
    await view.previous.callback(press)  # type: ignore[arg-type]
    assert shown_ids(press.response.edited[0]["content"]) == mine[:5]
    assert view.previous.disabled


async def test_next_page_after_the_shown_reminders_fired(setup: Setup) -> None:
    mine = []
    for i in range(8):
        await setup.remind(42, f"{i + 1}m", f"mine {i}")
        mine.append((await setup.jobs(42))[-1].id)
    inter = await setup.reminders(42)
    view = inter.response.sent[0]["view"]
    assert shown_ids(inter.response.sent[0]["content"]) == mine[:5]
    await setup.clock.advance(timedelta(minutes=5))  # the five shown have fired meanwhile
    press = Interaction(42)
    await view.next.callback(press)  # type: ignore[arg-type]
    content = press.response.edited[0]["content"]
    assert shown_ids(content) == mine[5:]
    assert content.splitlines()[0] == "Your reminders (3), page 2 of 2:"
    assert view.next.disabled and not view.previous.disabled


async def test_no_reminders(setup: Setup) -> None:
    inter = await setup.reminders(42)
    assert inter.reply == "You have no reminders. Create one with /remind."
    view = inter.response.sent[0]["view"]
    assert view.previous.disabled and view.next.disabled


async def test_cancel_only_ones_own_reminder(setup: Setup) -> None:
    await setup.remind(42, "1h", "mine")
    await setup.remind(7, "1h", "theirs")
    (mine,) = await setup.jobs(42)
    (theirs,) = await setup.jobs(7)
    other = await setup.kernel.create_task(REMINDER_TASK, {"user_id": "8", "text": "x"}, "1h")

    for job_id in (theirs.id, "no-such-id", "", "bad id with spaces" * 20, other):
        inter = await setup.reminders(42, cancel=job_id)
        assert inter.reply.startswith("You have no reminder with id "), job_id
        assert "theirs" not in inter.reply
    assert [j.id for j in await setup.jobs(7)] == [theirs.id]  # untouched
    assert await setup.kernel.get_task(other) is not None

    inter = await setup.reminders(42, cancel=f" {mine.id} ")
    assert inter.reply == f"Cancelled your reminder `{mine.id}`: mine"
    assert await setup.jobs(42) == []
    inter = await setup.reminders(42, cancel=mine.id)  # twice: gone
    assert inter.reply.startswith("You have no reminder with id ")


# --- the extension -------------------------------------------------------------------------------


async def test_extension_registers_the_commands_and_the_indexed_task(setup: Setup) -> None:
    tree = setup.bot.tree
    assert {"remind", "reminders", "remind-zone"} <= {c.name for c in tree.get_commands()}
    options = {
        name: [(p.name, p.required) for p in tree.get_command(name).parameters]  # type: ignore[union-attr]
        for name in ("remind", "reminders", "remind-zone")
    }
    assert options == {
        "remind": [("when", True), ("text", True)],
        "reminders": [("cancel", False)],
        "remind-zone": [("zone", False)],
    }
    definition = setup.kernel.tasks.get(REMINDER_TASK)
    assert definition is not None and list(definition.indexes) == ["user_id"]
    kernel = setup.kernel
    await setup.bot.unload_extension(EXTENSION)  # the kernel it started stops with it
    assert kernel.state == "stopped"
    assert setup.bot.get_cog("Reminders") is None


async def test_loaded_after_the_plain_extension_it_says_what_to_do(
    virtual_clock: VirtualClock,
) -> None:
    bot = Bot()
    bot.tickkit_options = {"clock": virtual_clock, "tasks": TaskRegistry()}  # type: ignore[attr-defined]
    await bot.load_extension("tickkit.plugins.discord")
    with pytest.raises(commands.ExtensionFailed, match=r"instead of tickkit\.plugins\.discord"):
        await bot.load_extension(EXTENSION)
    await bot.close()

    # with the plugin given to the kernel, the cog joins the running kernel
    bot = Bot()
    bot.tickkit_options = {  # type: ignore[attr-defined]
        "clock": virtual_clock,
        "tasks": TaskRegistry(),
        "plugins": [RemindersPlugin()],
    }
    await bot.load_extension("tickkit.plugins.discord")
    await bot.load_extension(EXTENSION)
    assert isinstance(bot.get_cog("Reminders"), Reminders)
    await bot.close()
    assert getattr(bot, "tickkit", None) is None


async def test_bad_cog_options_fail_the_load(virtual_clock: VirtualClock) -> None:
    for options, message in (
        ({"default_zone": "Mars/Base"}, "Mars/Base"),
        ({"page_size": 0}, "page_size"),
        ({"nope": 1}, "nope"),
    ):
        bot = Bot()
        bot.tickkit_options = {"clock": virtual_clock, "tasks": TaskRegistry()}  # type: ignore[attr-defined]
        bot.tickkit_reminders = options  # type: ignore[attr-defined]
        with pytest.raises(commands.ExtensionFailed, match=message):
            await bot.load_extension(EXTENSION)
        assert getattr(bot, "tickkit", None) is None  # no kernel left running
        await bot.close()
