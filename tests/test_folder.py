"""The folder plugin: static tasks from a folder, errors, and reconciling schedules at start."""

from __future__ import annotations

import logging
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tickkit import (
    DuplicateTaskError,
    JobState,
    Kernel,
    Outcome,
    TaskRegistry,
    TickkitError,
    default_registry,
    task,
)
from tickkit.drivers.memory import MemoryDriver
from tickkit.plugins.folder import TaskFolder, folder_of
from tickkit.testing import VirtualClock

pytestmark = pytest.mark.anyio


def write(root: Path, rel: str, body: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(body))
    return path


def resolved(path: Path) -> Path:
    return path.resolve()


def task_file(name: str, schedule: str | None = None, tag: str = "v1") -> str:
    sched = f", schedule={schedule!r}" if schedule else ""
    return f"""\
        from tickkit import task


        @task(name={name!r}{sched})
        async def run(ctx):
            ctx.runs.append(({name!r}, {tag!r}, ctx.scheduled_at))
        """


def kernel_for(root: Path, clock: VirtualClock, **kw: Any) -> Kernel:
    kw.setdefault("tasks", TaskRegistry())
    kw.setdefault("context", {"runs": []})
    settings = {"tasks_dir": str(root), **kw.pop("settings", {})}
    return Kernel(clock=clock, settings=settings, **kw)


async def test_loads_recursively_and_skips_underscore_names(
    tmp_path: Path, virtual_clock: VirtualClock
) -> None:
    write(tmp_path, "a.py", task_file("a"))
    write(tmp_path, "sub/deeper/b.py", task_file("b"))
    write(tmp_path, "_private.py", "raise RuntimeError('must not be imported')\n")
    write(tmp_path, "sub/_helper.py", "raise RuntimeError('must not be imported')\n")
    write(tmp_path, "_skipped/c.py", task_file("c"))
    write(tmp_path, ".hidden/d.py", task_file("d"))
    write(tmp_path, "notes.txt", "not python\n")
    before = default_registry.names()
    kernel = kernel_for(tmp_path, virtual_clock)
    async with kernel:
        assert kernel.tasks.names() == ["a", "b"]
        folder = folder_of(kernel)
        assert folder is not None
        assert sorted(p.relative_to(resolved(tmp_path)).as_posix() for p in folder.files) == [
            "a.py",
            "sub/deeper/b.py",
        ]
        assert folder.errors == {}
        await kernel.create_task("b")
        await virtual_clock.advance(timedelta(seconds=1))
        assert [r[:2] for r in kernel.context["runs"]] == [("b", "v1")]
    # tasks of the folder were collected apart, not into the default registry
    assert default_registry.names() == before


async def test_default_folder_is_app_tasks_when_it_exists(
    tmp_path: Path, virtual_clock: VirtualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    async with Kernel(tasks=TaskRegistry(), clock=virtual_clock) as kernel:
        assert kernel.tasks.names() == []
        assert folder_of(kernel) is None
    write(tmp_path, "app/tasks/hello.py", task_file("hello"))
    async with Kernel(tasks=TaskRegistry(), clock=virtual_clock) as kernel:
        assert kernel.tasks.names() == ["hello"]


async def test_bad_tasks_dir_is_refused_by_name(
    tmp_path: Path, virtual_clock: VirtualClock
) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(TickkitError, match="nope"):
        await kernel_for(missing, virtual_clock).start()
    kernel = Kernel(tasks=TaskRegistry(), clock=virtual_clock, settings={"tasks_dir": 42})
    with pytest.raises(TickkitError, match="42"):
        await kernel.start()


async def test_two_files_defining_one_name_name_both_files(
    tmp_path: Path, virtual_clock: VirtualClock
) -> None:
    write(tmp_path, "one.py", task_file("same"))
    write(tmp_path, "sub/two.py", task_file("same"))
    with pytest.raises(DuplicateTaskError) as info:
        await kernel_for(tmp_path, virtual_clock).start()
    message = str(info.value)
    assert "'same'" in message
    assert str(resolved(tmp_path) / "one.py") in message
    assert str(resolved(tmp_path) / "sub" / "two.py") in message


async def test_one_file_defining_one_name_twice(
    tmp_path: Path, virtual_clock: VirtualClock
) -> None:
    body = task_file("twice") + "\n" + task_file("twice").replace("import task", "import task  ")
    write(tmp_path, "dup.py", body)
    with pytest.raises(DuplicateTaskError, match=r"'twice'.*dup\.py:4.*dup\.py:\d+"):
        await kernel_for(tmp_path, virtual_clock).start()


async def test_a_folder_task_cannot_take_the_name_of_a_task_in_code(
    tmp_path: Path, virtual_clock: VirtualClock
) -> None:
    registry = TaskRegistry()

    async def in_code(ctx: Any) -> None:
        return None

    task(name="taken", execute=in_code, registry=registry)
    write(tmp_path, "taken.py", task_file("taken"))
    with pytest.raises(DuplicateTaskError, match=r"'taken'.*test_folder\.py.*taken\.py"):
        await kernel_for(tmp_path, virtual_clock, tasks=registry).start()


async def test_a_broken_file_is_reported_with_file_and_line_and_the_rest_loads(
    tmp_path: Path, virtual_clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    write(tmp_path, "good.py", task_file("good"))
    syntax = write(tmp_path, "syntax.py", "x = 1\n\ndef broken(:\n    pass\n")
    raising = write(
        tmp_path,
        "raising.py",
        """\
        from tickkit import task

        value = 1
        raise ValueError("config missing")
        """,
    )
    bad_schedule = write(
        tmp_path,
        "bad_schedule.py",
        """\
        from tickkit import task


        @task(name="bad", schedule="not a cron")
        async def bad(ctx):
            pass
        """,
    )
    caplog.set_level(logging.ERROR, logger="tickkit.folder")
    kernel = kernel_for(tmp_path, virtual_clock)
    async with kernel:
        assert kernel.tasks.names() == ["good"]
        folder = folder_of(kernel)
        assert folder is not None
        errors = {p.name: (e.line, e.message) for p, e in folder.errors.items()}
        assert errors["syntax.py"][0] == 3 and errors["syntax.py"][1].startswith("SyntaxError")
        assert errors["raising.py"] == (4, "ValueError: config missing")
        # the decorator's line (Python 3.11+) or the def line below it (3.10)
        assert errors["bad_schedule.py"][0] in (4, 5)
        assert "not a cron" in errors["bad_schedule.py"][1]
        # the kernel runs
        await kernel.create_task("good")
        await virtual_clock.advance(timedelta(seconds=1))
        assert [r[0] for r in kernel.context["runs"]] == ["good"]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert f"{syntax.resolve()}:3: SyntaxError" in logged
    assert f"{raising.resolve()}:4: ValueError: config missing" in logged
    assert f"{bad_schedule.resolve()}:{errors['bad_schedule.py'][0]}:" in logged


async def test_static_schedules_are_reconciled_with_the_store_at_start(
    tmp_path: Path, virtual_clock: VirtualClock
) -> None:
    driver = MemoryDriver(keep_failed=True)  # one store across two kernel lives
    write(tmp_path, "hourly.py", task_file("hourly", "0 * * * *"))
    write(tmp_path, "changes.py", task_file("changes", "0 0 * * *"))
    write(tmp_path, "goes.py", task_file("goes", "*/5 * * * *"))
    first = kernel_for(tmp_path, virtual_clock, driver=driver)
    async with first:
        statics = {j.id: j for j in await first.list_tasks(static=True)}
        assert set(statics) == {"hourly", "changes", "goes"}
        keeps = await first.create_task("hourly", {"n": 1}, timedelta(hours=10))
        orphan = await first.create_task("goes", {"n": 2}, timedelta(hours=10))
    hourly_next = statics["hourly"].next_run_at

    await virtual_clock.advance(timedelta(minutes=90))  # nothing runs: no kernel
    write(tmp_path, "changes.py", task_file("changes", "30 * * * *"))
    (tmp_path / "goes.py").unlink()
    write(tmp_path, "new.py", task_file("new", "15 * * * *"))
    second = kernel_for(tmp_path, virtual_clock, driver=driver)
    async with second:
        now = virtual_clock.now()
        statics = {j.id: j for j in await second.list_tasks(static=True)}
        assert set(statics) == {"hourly", "changes", "new"}
        # unchanged: keeps its stored next run, so the missed one is caught up
        assert statics["hourly"].next_run_at == hourly_next
        # changed: the new schedule from now on
        assert statics["changes"].schedule is not None
        assert statics["changes"].schedule["value"] == "30 * * * *"
        assert statics["changes"].next_run_at == now + timedelta(hours=1)  # 02:30
        assert statics["new"].next_run_at == now.replace(minute=15) + timedelta(hours=1)
        # dynamic jobs are left alone
        assert {keeps, orphan} <= {j.id for j in await second.list_tasks(static=False)}
        await virtual_clock.advance(timedelta(hours=10))
        runs = second.context["runs"]
        assert ("hourly", "v1") in [r[:2] for r in runs]
        failed = await second.get_task(orphan)
        assert failed is not None and failed.state is JobState.FAILED
        assert failed.last_outcome is Outcome.FAILED
        assert failed.last_error is not None and "no task named 'goes'" in failed.last_error
        assert not [r for r in runs if r[0] == "goes"]


def test_refresh_reports_only_what_changed(tmp_path: Path) -> None:
    write(tmp_path, "a.py", task_file("a"))
    write(tmp_path, "b.py", task_file("b"))
    folder = TaskFolder(tmp_path)
    first = folder.refresh(strict=True)
    assert sorted(first.added_names) == ["a", "b"]
    assert not folder.refresh()  # nothing changed on disk
    write(tmp_path, "a.py", task_file("a", tag="v2"))
    (tmp_path / "b.py").rename(tmp_path / "c.py")
    update = folder.refresh()
    # b moved from b.py to c.py: defined again, never gone
    assert sorted(update.replaced_names) == ["a", "b"]
    assert update.added_names == [] and update.removed == ()
    assert update.files == (
        (tmp_path / "a.py").resolve(),
        (tmp_path / "b.py").resolve(),
        (tmp_path / "c.py").resolve(),
    )
    assert folder.owner("b") == (tmp_path / "c.py").resolve()


def test_a_file_rejected_for_a_clash_and_then_deleted_takes_its_tasks_along(
    tmp_path: Path,
) -> None:
    write(tmp_path, "a.py", task_file("a"))
    write(tmp_path, "b.py", task_file("b"))
    folder = TaskFolder(tmp_path)
    folder.refresh(strict=True)
    write(tmp_path, "b.py", task_file("a"))  # now clashes with a.py: b.py keeps task "b"
    update = folder.refresh()
    assert [e.path.name for e in update.errors] == ["b.py"]
    assert folder.owner("b") == resolved(tmp_path / "b.py")
    (tmp_path / "b.py").unlink()
    update = folder.refresh()
    assert update.removed == ("b",)
    assert folder.errors == {}
    assert [d.name for d in folder.definitions()] == ["a"]
