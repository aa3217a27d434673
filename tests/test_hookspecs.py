"""Every hook is documented (summary, arguments, return, where it applies), and plugins found
through the ``tickkit.plugins`` entry-point group extend tickkit like the built-in ones."""

from __future__ import annotations

import inspect
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tickkit import Kernel, PluginError, TaskContext, TaskRegistry, hookspecs, task
from tickkit.manager import create_plugin_manager, list_plugins
from tickkit.testing import VirtualClock

UTC = timezone.utc
HOOKS = sorted(name for name in dir(hookspecs) if name.startswith("tickkit_"))


def test_hooks_exist() -> None:
    # the exact set: a hook added or removed is a change of the plugin API (docs/hooks.md)
    assert HOOKS == [
        "tickkit_data_codec",
        "tickkit_job_meta",
        "tickkit_kernel_services",
        "tickkit_kernel_started",
        "tickkit_kernel_stopping",
        "tickkit_load_tasks",
        "tickkit_parse_schedule",
        "tickkit_resolve_driver",
        "tickkit_run_failed",
        "tickkit_run_finished",
        "tickkit_run_missed",
        "tickkit_run_skipped",
        "tickkit_run_started",
        "tickkit_run_succeeded",
        "tickkit_run_timed_out",
        "tickkit_wrap_run",
    ]
    # each is a pluggy hook specification, not a stray function named like one
    for name in HOOKS:
        assert hasattr(getattr(hookspecs, name), "tickkit_spec"), name


@pytest.mark.parametrize("name", HOOKS)
def test_every_hook_is_documented(name: str) -> None:
    doc = inspect.getdoc(getattr(hookspecs, name)) or ""
    assert len(doc.splitlines()[0]) > 20, f"{name}: no summary line"
    assert "Arguments:" in doc, f"{name}: arguments are not documented"
    assert "Return:" in doc, f"{name}: the return value is not documented"
    assert "Applies" in doc, f"{name}: where the hook applies is not documented"
    for param in inspect.signature(getattr(hookspecs, name)).parameters:
        assert f"``{param}``" in doc, f"{name}: argument {param!r} is not documented"


def test_every_hook_is_in_the_plugin_guide() -> None:
    guide = Path(__file__).parent.parent / "docs" / "hooks.md"
    text = guide.read_text(encoding="utf-8")
    missing = [name for name in HOOKS if f"`{name}`" not in text]
    assert missing == [], f"docs/hooks.md does not document {missing}"


def test_unknown_hook_implementation_is_refused() -> None:
    from tickkit import hookimpl

    class Typo:
        @hookimpl
        def tickkit_run_sucessed(self, ctx: TaskContext) -> None:  # misspelt on purpose
            pass

    with pytest.raises(PluginError, match="tickkit_run_sucessed"):
        create_plugin_manager([Typo()])


PLUGIN = '''
from __future__ import annotations

from datetime import timedelta

from tickkit import Schedule, hookimpl


class EveryOtherHour(Schedule):
    """A third-party schedule type: fires at every even UTC hour."""

    kind = "even-hours"

    def next_fire(self, after):
        at = after.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        while at.hour % 2:
            at += timedelta(hours=1)
        return at

    def to_spec(self):
        return {"type": "even-hours"}

    def __eq__(self, other):
        return isinstance(other, EveryOtherHour)

    def __hash__(self):
        return 1


@hookimpl
def tickkit_parse_schedule(value, timezone):
    if value == "even hours" or (isinstance(value, dict) and value.get("type") == "even-hours"):
        return EveryOtherHour()
    return None
'''


@pytest.fixture
def installed_plugin(tmp_path: Path) -> Iterator[str]:
    """Install a plugin package the way pip does: the module plus a .dist-info directory with
    an entry_points.txt, on sys.path."""
    (tmp_path / "tickkit_even_hours.py").write_text(PLUGIN, encoding="utf-8")
    dist = tmp_path / "tickkit_even_hours-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: tickkit-even-hours\nVersion: 1.0\n", encoding="utf-8"
    )
    (dist / "entry_points.txt").write_text(
        "[tickkit.plugins]\neven-hours = tickkit_even_hours\n", encoding="utf-8"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        yield "tickkit_even_hours"
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("tickkit_even_hours", None)


@pytest.mark.anyio
async def test_entry_point_plugin_adds_a_schedule_type(installed_plugin: str) -> None:
    found = {p.name: p for p in list_plugins()}
    assert found["even-hours"].distribution == "tickkit-even-hours"
    assert found["even-hours"].version == "1.0"
    assert found["even-hours"].error is None
    clock = VirtualClock(datetime(2026, 1, 1, tzinfo=UTC))
    registry = TaskRegistry()
    runs: list[datetime] = []

    async def record(ctx: TaskContext) -> None:
        runs.append(ctx.scheduled_at)

    task(name="even", execute=record, registry=registry)
    async with Kernel(tasks=registry, clock=clock) as kernel:
        job_id = await kernel.create_task("even", None, "even hours")
        job = await kernel.get_task(job_id)
        assert job is not None and job.schedule == {"type": "even-hours"}
        await clock.advance(timedelta(hours=7))
    assert [r.hour for r in runs] == [2, 4, 6]


def test_broken_plugin_is_reported_not_fatal(tmp_path: Path) -> None:
    dist = tmp_path / "tickkit_broken-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: tickkit-broken\nVersion: 0.1\n", encoding="utf-8"
    )
    (dist / "entry_points.txt").write_text(
        "[tickkit.plugins]\nbroken = tickkit_does_not_exist\n", encoding="utf-8"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        found = {p.name: p for p in list_plugins()}
        assert "ModuleNotFoundError" in (found["broken"].error or "")
        pm = create_plugin_manager()  # still loads the others
        assert pm.get_plugin("schedules") is not None
    finally:
        sys.path.remove(str(tmp_path))
