"""Hot reload: tests write files in a temporary folder and wait on the reload updates.

Time in the kernel is a VirtualClock; the file watcher is real (watchfiles), so waits on its
updates are bounded (``anyio.fail_after``), never fixed sleeps.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream

from tickkit import UTC, JobState, Kernel, MissingExtraError, TaskRegistry, TickkitError
from tickkit.plugins.folder import FolderUpdate
from tickkit.plugins.reload import Reloader, reloader_of
from tickkit.testing import VirtualClock

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=UTC)
WAIT = 20  # seconds: an upper bound for the watcher to report a change, never waited out


def write(root: Path, rel: str, body: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(body))
    return path


def task_file(
    name: str, schedule: object = None, tag: str = "v1", *, immediate: bool = False
) -> str:
    options = f", schedule={schedule!r}" if schedule is not None else ""
    if immediate:
        options += ", immediate=True"
    return f"""\
        from tickkit import task


        @task(name={name!r}{options})
        async def run(ctx):
            ctx.runs.append(({name!r}, {tag!r}, ctx.scheduled_at))
        """


class Reloading:
    def __init__(self, kernel: Kernel, reloader: Reloader, root: Path) -> None:
        self.kernel = kernel
        self.reloader = reloader
        self.root = root
        self.updates: MemoryObjectReceiveStream[FolderUpdate] = reloader.subscribe()

    @property
    def runs(self) -> list[tuple[str, str, datetime]]:
        runs: list[tuple[str, str, datetime]] = self.kernel.context["runs"]
        return runs

    async def update(self, until: Callable[[FolderUpdate], bool]) -> FolderUpdate:
        """The first update that satisfies ``until`` (an editor may save in several steps)."""
        with anyio.fail_after(WAIT):
            while True:
                update = await self.updates.receive()
                if until(update):
                    return update


@asynccontextmanager
async def reloading(root: Path, clock: VirtualClock, **kw: Any) -> AsyncIterator[Reloading]:
    kernel = Kernel(
        tasks=TaskRegistry(),
        clock=clock,
        context={"runs": []},
        settings={"tasks_dir": str(root), "reload": True},
        **kw,
    )
    async with kernel:
        reloader = reloader_of(kernel)
        assert reloader is not None
        with anyio.fail_after(WAIT):
            await reloader.ready.wait()
        r = Reloading(kernel, reloader, root)
        yield r
        r.updates.close()
    assert reloader_of(kernel) is None


async def test_editing_a_file_replaces_its_tasks_without_a_double_or_a_lost_run(
    tmp_path: Path, virtual_clock: VirtualClock
) -> None:
    write(tmp_path, "tick.py", task_file("tick", "* * * * *", "v1"))
    async with reloading(tmp_path, virtual_clock) as r:
        old = r.kernel.tasks.get("tick")
        (job,) = await r.kernel.list_tasks(static=True)
        await virtual_clock.advance(timedelta(minutes=3))
        write(tmp_path, "tick.py", task_file("tick", "* * * * *", "v2"))
        update = await r.update(lambda u: u.replaced_names == ["tick"])
        assert update.added == () and update.removed == () and update.errors == ()
        assert r.kernel.tasks.get("tick") is not old
        (same,) = await r.kernel.list_tasks(static=True)
        assert same.next_run_at == T0 + timedelta(minutes=4)  # the schedule did not move
        await virtual_clock.advance(timedelta(minutes=3))
    assert [(tag, at) for _, tag, at in r.runs] == [
        ("v1", T0 + timedelta(minutes=1)),
        ("v1", T0 + timedelta(minutes=2)),
        ("v1", T0 + timedelta(minutes=3)),
        ("v2", T0 + timedelta(minutes=4)),
        ("v2", T0 + timedelta(minutes=5)),
        ("v2", T0 + timedelta(minutes=6)),
    ]
    assert job.next_run_at == T0 + timedelta(minutes=1)


async def test_a_changed_schedule_replaces_the_stored_one(
    tmp_path: Path, virtual_clock: VirtualClock
) -> None:
    write(tmp_path, "report.py", task_file("report", "0 * * * *"))
    async with reloading(tmp_path, virtual_clock) as r:
        write(tmp_path, "report.py", task_file("report", "30 * * * *"))
        await r.update(lambda u: u.replaced_names == ["report"])
        (job,) = await r.kernel.list_tasks(static=True)
        assert job.schedule is not None and job.schedule["value"] == "30 * * * *"
        assert job.next_run_at == T0 + timedelta(minutes=30)
        await virtual_clock.advance(timedelta(hours=1))
    assert [at for _, _, at in r.runs] == [T0 + timedelta(minutes=30)]


async def test_new_deleted_and_renamed_files(tmp_path: Path, virtual_clock: VirtualClock) -> None:
    write(tmp_path, "keep.py", task_file("keep"))
    async with reloading(tmp_path, virtual_clock) as r:
        # a new file (in a new sub-folder) adds its tasks and their static schedules
        write(tmp_path, "jobs/hourly.py", task_file("hourly", "0 * * * *"))
        update = await r.update(lambda u: "hourly" in u.added_names)
        assert update.files == ((tmp_path / "jobs" / "hourly.py").resolve(),)
        assert r.kernel.tasks.names() == ["hourly", "keep"]
        assert [j.id for j in await r.kernel.list_tasks(static=True)] == ["hourly"]
        await virtual_clock.advance(timedelta(hours=1))
        assert [name for name, _, _ in r.runs] == ["hourly"]

        # renamed: the same tasks, the schedule untouched
        (tmp_path / "jobs" / "hourly.py").rename(tmp_path / "jobs" / "every_hour.py")
        update = await r.update(lambda u: u.replaced_names == ["hourly"])
        assert update.removed == ()
        (job,) = await r.kernel.list_tasks(static=True)
        assert job.next_run_at == T0 + timedelta(hours=2)

        # renamed to a skipped name: gone, with its static schedule
        (tmp_path / "jobs" / "every_hour.py").rename(tmp_path / "jobs" / "_every_hour.py")
        update = await r.update(lambda u: u.removed == ("hourly",))
        assert r.kernel.tasks.names() == ["keep"]
        assert await r.kernel.list_tasks(static=True) == []

        # a deleted file removes its tasks
        (tmp_path / "keep.py").unlink()
        await r.update(lambda u: u.removed == ("keep",))
        assert r.kernel.tasks.names() == []
        await virtual_clock.advance(timedelta(hours=3))
        assert [name for name, _, _ in r.runs] == ["hourly"]


async def test_a_syntax_error_keeps_the_old_definitions_and_shows_the_error(
    tmp_path: Path, virtual_clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path, "tick.py", task_file("tick", "*/10 * * * *", "v1"))
    async with reloading(tmp_path, virtual_clock) as r:
        old = r.kernel.tasks.get("tick")
        write(tmp_path, "tick.py", task_file("tick", "*/10 * * * *", "v2").replace("def", "df"))
        update = await r.update(lambda u: bool(u.errors))
        (error,) = update.errors
        assert error.path == path.resolve()
        assert error.line == 5 and error.message.startswith("SyntaxError")
        assert f"{path.resolve()}:5: SyntaxError" in caplog.text
        assert update.added == update.replaced == () and update.removed == ()
        assert r.kernel.tasks.get("tick") is old
        await virtual_clock.advance(timedelta(minutes=10))
        # fixed: the new definition loads
        write(tmp_path, "tick.py", task_file("tick", "*/10 * * * *", "v2"))
        update = await r.update(lambda u: u.replaced_names == ["tick"])
        assert update.errors == ()
        await virtual_clock.advance(timedelta(minutes=10))
    assert [(tag, at) for _, tag, at in r.runs] == [
        ("v1", T0 + timedelta(minutes=10)),
        ("v2", T0 + timedelta(minutes=20)),
    ]


async def test_immediate_tasks_do_not_fire_again_on_reload(
    tmp_path: Path, virtual_clock: VirtualClock
) -> None:
    write(tmp_path, "beat.py", task_file("beat", "0 * * * *", "v1", immediate=True))
    async with reloading(tmp_path, virtual_clock) as r:
        await virtual_clock.advance(timedelta(seconds=1))
        assert [tag for _, tag, _ in r.runs] == ["v1"]  # the run at start
        write(tmp_path, "beat.py", task_file("beat", "0 * * * *", "v2", immediate=True))
        await r.update(lambda u: u.replaced_names == ["beat"])
        write(tmp_path, "other.py", task_file("other", "0 * * * *", immediate=True))
        await r.update(lambda u: u.added_names == ["other"])
        await virtual_clock.advance(timedelta(minutes=59))
        assert [tag for _, tag, _ in r.runs] == ["v1"]
        await virtual_clock.advance(timedelta(minutes=1))
        assert sorted((name, tag) for name, tag, _ in r.runs[1:]) == [
            ("beat", "v2"),
            ("other", "v1"),
        ]


async def test_dynamic_jobs_stay_and_fail_clearly_once_their_task_is_gone(
    tmp_path: Path, virtual_clock: VirtualClock
) -> None:
    write(tmp_path, "remind.py", task_file("remind"))
    async with reloading(tmp_path, virtual_clock) as r:
        early = await r.kernel.create_task("remind", None, timedelta(minutes=5))
        late = await r.kernel.create_task("remind", None, timedelta(minutes=30))
        await virtual_clock.advance(timedelta(minutes=10))
        assert len(r.runs) == 1
        (tmp_path / "remind.py").unlink()
        await r.update(lambda u: u.removed == ("remind",))
        job = await r.kernel.get_task(late)
        assert job is not None and job.state is JobState.SCHEDULED  # dynamic: left alone
        await virtual_clock.advance(timedelta(minutes=30))
        job = await r.kernel.get_task(late)
        assert job is not None and job.state is JobState.FAILED
        assert job.last_error is not None and "no task named 'remind'" in job.last_error
        assert len(r.runs) == 1
        assert await r.kernel.get_task(early) is None  # ran and finished before


async def test_a_name_taken_by_another_file_is_an_error_until_it_is_free(
    tmp_path: Path, virtual_clock: VirtualClock
) -> None:
    write(tmp_path, "a.py", task_file("shared", tag="from-a"))
    async with reloading(tmp_path, virtual_clock) as r:
        write(tmp_path, "b.py", task_file("shared", tag="from-b"))
        update = await r.update(lambda u: bool(u.errors))
        (error,) = update.errors
        assert error.path == (tmp_path / "b.py").resolve()
        assert "'shared'" in error.message
        assert str((tmp_path / "a.py").resolve()) in error.message
        assert str((tmp_path / "b.py").resolve()) in error.message
        assert r.reloader.folder.owner("shared") == (tmp_path / "a.py").resolve()
        # once a.py is gone, b.py's definition is taken up
        (tmp_path / "a.py").unlink()
        update = await r.update(lambda u: u.replaced_names == ["shared"])
        assert r.reloader.folder.owner("shared") == (tmp_path / "b.py").resolve()
        await r.kernel.create_task("shared")
        await virtual_clock.advance(timedelta(seconds=1))
    assert [tag for _, tag, _ in r.runs] == ["from-b"]


async def test_an_edit_made_before_the_watcher_started_is_not_lost(
    tmp_path: Path, virtual_clock: VirtualClock
) -> None:
    write(tmp_path, "a.py", task_file("a"))
    kernel = Kernel(
        tasks=TaskRegistry(),
        clock=virtual_clock,
        context={"runs": []},
        settings={"tasks_dir": tmp_path, "reload": True},
    )
    async with kernel:
        reloader = reloader_of(kernel)
        assert reloader is not None
        updates = reloader.subscribe()
        write(tmp_path, "b.py", task_file("b"))  # the watcher may not watch yet
        with anyio.fail_after(WAIT):
            while "b" not in kernel.tasks:
                await updates.receive()
        updates.close()
        assert kernel.tasks.names() == ["a", "b"]


async def test_reload_needs_its_extra(
    tmp_path: Path, virtual_clock: VirtualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "watchfiles", None)  # as if it were not installed
    kernel = Kernel(
        tasks=TaskRegistry(), clock=virtual_clock, settings={"tasks_dir": tmp_path, "reload": True}
    )
    with pytest.raises(MissingExtraError, match=r"pip install tickkit\[reload\]"):
        await kernel.start()
    await kernel.stop()


async def test_bad_reload_setting_and_reload_without_a_folder(
    tmp_path: Path,
    virtual_clock: VirtualClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    kernel = Kernel(tasks=TaskRegistry(), clock=virtual_clock, settings={"reload": "yes"})
    with pytest.raises(TickkitError, match="'yes'"):
        await kernel.start()
    await kernel.stop()
    monkeypatch.chdir(tmp_path)  # no app/tasks here
    async with Kernel(tasks=TaskRegistry(), clock=virtual_clock, settings={"reload": True}) as k:
        assert reloader_of(k) is None
    assert "no tasks folder" in caplog.text
