"""contrib/examples: the example tasks, the remind-me command handler and the plain service.

The command handler and the tasks run without Discord: the remind-me task gets a small client
object with the two calls it makes (``get_channel`` and ``channel.send``), standing in for the
network the tests cannot reach.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import subprocess
import sys
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import anyio
import pytest

from tickkit import UTC, JobState, Kernel, TaskRegistry
from tickkit.testing import VirtualClock

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "contrib" / "examples"
README_SCRIPT = "<!-- remind-me script: tests/test_examples.py runs this block -->"


def load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Channel:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    async def send(self, content: str, **kw: Any) -> None:
        self.sent.append((content, kw))


class Client:
    """Stands in for ``discord.Client``: only the calls the example tasks make."""

    def __init__(self) -> None:
        self.channels: dict[int, Channel] = {}

    def get_channel(self, channel_id: int) -> Channel:
        return self.channels.setdefault(channel_id, Channel())

    async def fetch_channel(self, channel_id: int) -> Channel:
        return self.get_channel(channel_id)


def example_kernel(clock: VirtualClock, **kw: Any) -> Kernel:
    return Kernel(
        tasks=TaskRegistry(), clock=clock, settings={"tasks_dir": EXAMPLES / "tasks"}, **kw
    )


@pytest.fixture
def bot_module() -> ModuleType:
    pytest.importorskip("discord")  # the `discord` extra
    return load(EXAMPLES / "remind_me_bot.py")


async def test_the_example_tasks_folder_loads(virtual_clock: VirtualClock) -> None:
    async with example_kernel(virtual_clock) as kernel:
        assert kernel.tasks.names() == ["daily-digest", "heartbeat", "remind-me"]
        statics = {j.id: j for j in await kernel.list_tasks(static=True)}
        # 09:00 in Berlin is 08:00 UTC in winter
        assert statics["daily-digest"].next_run_at == T0 + timedelta(hours=8)
        assert statics["heartbeat"].next_run_at == T0 + timedelta(seconds=5)


async def test_heartbeat_logs_at_start_and_every_five_seconds(
    virtual_clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tickkit.task")
    async with example_kernel(virtual_clock):
        await virtual_clock.advance(timedelta(seconds=12))
    beats = [r for r in caplog.records if r.getMessage().startswith("heartbeat")]
    assert [r.getMessage() for r in beats] == [
        "heartbeat: worker alive at 00:00:00",
        "heartbeat: worker alive at 00:00:05",
        "heartbeat: worker alive at 00:00:10",
    ]


def example_bot(bot_module: ModuleType, clock: VirtualClock) -> Any:
    """The example bot (never logged in), whose channel lookups return stand-ins."""
    client = Client()

    class Bot(bot_module.RemindMeBot):  # type: ignore[name-defined,misc]
        def get_channel(self, channel_id: int, /) -> Channel:
            return client.get_channel(channel_id)

    bot = Bot(sync_commands=False, clock=clock, tasks=TaskRegistry())
    bot.test_client = client
    return bot


class Interaction:
    """Stands in for ``discord.Interaction``: what the cog's commands read and answer."""

    def __init__(self, user_id: int, channel_id: int = 42) -> None:
        self.user = SimpleNamespace(id=user_id)
        self.channel_id = channel_id
        self.guild_id = 1
        self.replies: list[dict[str, Any]] = []
        self.response = SimpleNamespace(send_message=self._send)

    async def _send(self, content: str | None = None, **kw: Any) -> None:
        self.replies.append({"content": content, **kw})


async def remind(cog: Any, user: int, when: str, text: str) -> str:
    inter = Interaction(user)
    await cog.remind.callback(cog, inter, when=when, text=text)
    (reply,) = inter.replies
    assert reply["ephemeral"] is True
    return str(reply["content"])


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_remind_me_bot_reminds_through_the_cog(
    virtual_clock: VirtualClock,
    bot_module: ModuleType,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DIGEST_CHANNEL_ID", raising=False)
    monkeypatch.delenv("TICKKIT_DRIVER", raising=False)
    caplog.set_level(logging.INFO, logger="tickkit.task")
    bot = example_bot(bot_module, virtual_clock)
    await bot.setup_hook()  # what discord.py's login() calls
    try:
        kernel = bot.tickkit
        assert kernel.tasks.names() == [
            "daily-digest",
            "heartbeat",
            "remind-me",
            "tickkit-reminder",
        ]
        assert {"remind", "reminders", "remind-zone"} <= {c.name for c in bot.tree.get_commands()}
        await kernel.pause_task("heartbeat")  # quiet: hours pass in this test
        cog = bot.get_cog("Reminders")
        reply = await remind(cog, 7, "6h", "stretch your legs")
        at = T0 + timedelta(hours=6)
        assert reply.startswith(f"Okay, I'll remind you <t:{int(at.timestamp())}:f>")
        (job,) = await kernel.list_tasks("tickkit-reminder", where={"user_id": "7"})
        assert job.next_run_at == at and job.state is JobState.SCHEDULED
        assert job.data["text"] == "stretch your legs" and job.data["channel_id"] == "42"
        assert (await remind(cog, 7, "10m", "10m")).startswith("Okay")
        assert (await remind(cog, 7, "1d", "1d")).startswith("Okay")
        assert (await remind(cog, 7, "6x", "m")).startswith("I can't read '6x' as a time")

        channel = bot.test_client.get_channel(42)
        await virtual_clock.advance(timedelta(hours=6) - timedelta(seconds=1))
        assert [c for c, _ in channel.sent] == ["<@7> ⏰ 10m"]
        await virtual_clock.advance(timedelta(seconds=1))
        assert channel.sent[-1][0] == "<@7> ⏰ stretch your legs"
        mentions = channel.sent[-1][1]["allowed_mentions"]
        assert mentions.everyone is False and [u.id for u in mentions.users] == [7]

        # the daily digest counts what is still pending (the 1d reminder)
        await virtual_clock.advance(timedelta(hours=2))
        (digest,) = await kernel.list_tasks("daily-digest")
        assert digest.last_run_at == T0 + timedelta(hours=8)
        assert "daily digest: 1 reminder(s) pending" in caplog.text
    finally:
        await bot.close()
    assert kernel.state == "stopped"


async def test_remind_me_task_without_a_bot_logs_the_reminder(
    virtual_clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tickkit.task")
    async with example_kernel(virtual_clock) as kernel:
        data = {"channel_id": 5, "user_id": 9, "message": "tea"}
        await kernel.create_task("remind-me", data, "10m")
        await virtual_clock.advance(timedelta(minutes=10))
    assert "<@9> ⏰ reminder: tea (channel 5)" in caplog.text


async def test_plain_service_runs_its_demo_and_stops(
    virtual_clock: VirtualClock, capsys: pytest.CaptureFixture[str]
) -> None:
    service = load(EXAMPLES / "plain_service.py")
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(service.main, 3.5, clock=virtual_clock))
        await virtual_clock.advance(timedelta(seconds=3.5))
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "service started; stopping in 3.5s (Ctrl-C stops it sooner)",
        "tick at 00:00:01",
        "say: a dynamic job, 2s after start",
        "tick at 00:00:02",
        "tick at 00:00:03",
        "service stopped",
    ] or out == [  # the 2s job and the 2s tick are due together: either may print first
        "service started; stopping in 3.5s (Ctrl-C stops it sooner)",
        "tick at 00:00:01",
        "tick at 00:00:02",
        "say: a dynamic job, 2s after start",
        "tick at 00:00:03",
        "service stopped",
    ]


def _restore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a shell may start us with Ctrl-C ignored


def test_plain_service_as_a_program_stops_by_itself_and_on_ctrl_c() -> None:
    script = str(EXAMPLES / "plain_service.py")
    done = subprocess.run(
        [sys.executable, script, "--seconds", "1.5"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("service started") and lines[-1] == "service stopped"
    assert "tick at" in lines[1]

    proc = subprocess.Popen(
        [sys.executable, script, "--seconds", "600"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_restore_sigint,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("service started")
        assert proc.stdout.readline().startswith("tick at")  # running: now press Ctrl-C
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert out.splitlines()[-1] == "interrupted: service stopped"


def readme_block(marker: str, after_marker: int = 0) -> str:
    """The fenced code block that follows ``marker`` in README.md (the ``after_marker``-th
    block after it, 0 for the first)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert text.count(marker) == 1, f"README.md must hold {marker!r} once"
    rest = text.split(marker, 1)[1]
    blocks = rest.split("```")[1::2]  # the insides of the fences, the language line first
    return blocks[after_marker].split("\n", 1)[1]


def test_readme_remind_me_script_runs_and_prints_what_the_readme_says(tmp_path: Path) -> None:
    script = tmp_path / "remind.py"
    script.write_text(readme_block(README_SCRIPT), encoding="utf-8")
    expected = readme_block(README_SCRIPT, after_marker=1)
    env = {k: v for k, v in os.environ.items() if k != "TICKKIT_DRIVER"}
    env["REMIND_SECONDS"] = "1"  # margins of 0.5 s between what the script waits for
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,  # a reader's folder: nothing of the repository next to it
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == expected

    # the same on a SQLite file, as the script's comment says
    env["TICKKIT_DRIVER"] = "sqlite:///reminders.db"
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == expected
