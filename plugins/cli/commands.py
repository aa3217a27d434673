"""The commands that manage a store (``list``, ``count``, ``show``, ``runs``, ``add``,
``update``, ``delete``, ``pause``, ``resume``, ``run-now``) and those that need none (``next``,
``drivers``, ``plugins``)."""

from __future__ import annotations

import argparse
import contextvars
import os
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import anyio

import tickkit
from tickkit import (
    DriverError,
    Job,
    JobNotFoundError,
    Kernel,
    RunRecord,
    TaskRegistry,
    UnknownTaskError,
    redact_url,
)
from tickkit.plugin_api import UTC, list_drivers, list_plugins

from ..folder import DEFAULT_TASKS_DIR
from . import output
from .logs import scrub

DEFAULT_DRIVER = "memory://"


class UsageError(Exception):
    """The command line asks for something that cannot work (exit code 2)."""


# --- where the store and the tasks are --------------------------------------------------------


def driver_url(args: argparse.Namespace) -> str:
    """``--driver``, else ``$TICKKIT_DRIVER``, else the embedded default ``memory://``."""
    url: str | None = getattr(args, "driver", None) or os.environ.get("TICKKIT_DRIVER")
    return url or DEFAULT_DRIVER


def tasks_dir(args: argparse.Namespace) -> str | None:
    """``--tasks DIR`` (which must exist), else ``app/tasks`` when that folder exists."""
    given: str | None = getattr(args, "tasks", None)
    if given is not None:
        if not os.path.isdir(given):
            raise UsageError(f"--tasks {given!r} is not a folder")
        return given
    return str(DEFAULT_TASKS_DIR) if DEFAULT_TASKS_DIR.is_dir() else None


def sqlite_file(url: str) -> str | None:
    """The file of a ``sqlite:`` URL (as the SQLite driver reads it), else None."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() != "sqlite" or parts.netloc not in ("", "localhost"):
        return None
    path = unquote(parts.path)
    return path[1:] if path.startswith("/") else path or None


#: a kernel the store commands use instead of opening the store themselves (see
#: :func:`use_kernel`)
_GIVEN_KERNEL: contextvars.ContextVar[Kernel | None] = contextvars.ContextVar(
    "tickkit_cli_kernel", default=None
)


@contextmanager
def use_kernel(kernel: Kernel) -> Iterator[None]:
    """Run store commands (through :func:`tickkit.plugins.cli.app.run`) against ``kernel``, an
    open kernel of this program (any store, the memory store included), instead of opening the
    store of ``--driver``. The kernel is left open. For programs that embed the commands, and
    tests."""
    token = _GIVEN_KERNEL.set(kernel)
    try:
        yield
    finally:
        _GIVEN_KERNEL.reset(token)


@asynccontextmanager
async def open_store(
    args: argparse.Namespace, *, load_tasks: bool = False, create: bool = False
) -> AsyncIterator[Kernel]:
    """A kernel with its driver open but not dispatching, for managing the store.

    A SQLite file that does not exist is an error unless ``create`` (``add``): a command that
    reads or changes jobs must not create an empty store where a path was mistyped.
    """
    given = _GIVEN_KERNEL.get()
    if given is not None:
        yield given
        return
    url = driver_url(args)
    if url.split("://", 1)[0].lower() == "memory":
        raise UsageError(
            f"`tickkit {args.command}` needs a persistent store: the memory store lives only "
            "inside a running worker; pass e.g. --driver sqlite:///tasks.db (or set TICKKIT_DRIVER)"
        )
    path = sqlite_file(url)
    if path is not None and not create and not await anyio.Path(path).exists():
        raise DriverError(
            f"no SQLite store at {path!r} ({redact_url(url)}): check --driver or "
            "TICKKIT_DRIVER (`tickkit run` and `tickkit add` create a new store)"
        )
    folder = tasks_dir(args) if load_tasks else None
    settings: dict[str, Any] = {"reload": False}
    if folder is not None:
        settings["tasks_dir"] = folder
    kernel = await _open(url, settings)
    try:
        if load_tasks:
            assert kernel.hooks is not None
            for definition in kernel.hooks.load_tasks(kernel):
                kernel.tasks.add(definition)
        yield kernel
    finally:
        await kernel.stop()


async def _open(url: str, settings: dict[str, Any]) -> Kernel:
    """A kernel on ``url`` with its driver open. A failure is one error naming the store (its
    password masked): a tickkit error as it is, anything else (a refused connection, an option
    redis-py does not know) as a :class:`~tickkit.DriverError`."""
    kernel: Kernel | None = None
    try:
        # a registry of its own: the tasks of one command, however many run in one process
        kernel = Kernel(url, tasks=TaskRegistry(), settings=settings)
        await kernel.open()
        return kernel
    except BaseException as exc:
        if kernel is not None and kernel.driver is not None:
            # a driver that failed half way through its start may hold connections
            with anyio.CancelScope(shield=True):
                try:
                    await kernel.driver.stop()
                except Exception:
                    pass
        if isinstance(exc, tickkit.TickkitError) or not isinstance(exc, Exception):
            raise
        reason = " ".join(str(exc).split())
        raise DriverError(
            f"cannot open the store {redact_url(url)}: {type(exc).__name__}"
            + (f": {reason}" if reason else "")
        ) from exc


# --- store commands ---------------------------------------------------------------------------


def _where(args: argparse.Namespace) -> dict[str, Any] | None:
    """The ``--where KEY=VALUE`` options as one mapping (None when none was given); a key given
    twice is a usage error."""
    pairs: list[tuple[str, Any]] | None = getattr(args, "where", None)
    if not pairs:
        return None
    where: dict[str, Any] = {}
    for key, value in pairs:
        if key in where:
            raise UsageError(f"--where {key!r} is given twice (every --where must match)")
        where[key] = value
    return where


async def cmd_list(args: argparse.Namespace) -> int:
    static = {"static": True, "dynamic": False}.get(args.kind)
    where = _where(args)
    async with open_store(args) as kernel:
        try:
            jobs = await kernel.list_tasks(
                args.task,
                where=where,
                state=args.state,
                static=static,
                limit=args.limit,
                after=args.after,
            )
        except JobNotFoundError as exc:
            if args.after is None:
                raise
            raise JobNotFoundError(
                f"--after {args.after!r}: no job has this id any more (it ran or was deleted "
                "since that page was listed): list again without --after"
            ) from exc
        now = kernel.clock.now()
    if args.json:
        output.emit_json([output.job_to_dict(job) for job in jobs])
    elif not jobs:
        output.echo("no jobs")
    else:
        output.echo(output.jobs_table(jobs, now))
        if args.limit is not None and len(jobs) == args.limit:
            output.echo(f"next page: --after {jobs[-1].id}")
    return 0


async def cmd_count(args: argparse.Namespace) -> int:
    where = _where(args)
    async with open_store(args) as kernel:
        count = await kernel.count_tasks(args.name, where=where, state=args.state)
    if args.json:
        output.emit_json({"task": args.name, "where": where, "state": args.state, "count": count})
    else:
        output.echo(str(count))
    return 0


async def cmd_show(args: argparse.Namespace) -> int:
    async with open_store(args) as kernel:
        job = await kernel.get_task(args.id)
        if job is None:
            raise JobNotFoundError(f"no job with id {args.id!r}")
        now = kernel.clock.now()
        assert kernel.hooks is not None
        schedule = kernel.hooks.parse_spec(job.schedule) if job.schedule else None
        failed = await _last_failure(kernel, job)
    upcoming: list[datetime] = []
    if schedule is not None and schedule.recurring and job.next_run_at is not None:
        at: datetime | None = job.scheduled_at or job.next_run_at
        while at is not None and len(upcoming) < 3:
            at = schedule.next_fire(at)
            if at is not None:
                upcoming.append(at)
    if args.json:
        doc = output.job_to_dict(job)
        doc["schedule_text"] = schedule.describe() if schedule is not None else None
        doc["upcoming"] = [output.iso(t) for t in upcoming]
        doc["last_failure"] = output.run_to_dict(failed) if failed is not None else None
        output.emit_json(doc)
        return 0
    when = output.local_time(job.next_run_at)
    if job.next_run_at is not None:
        when += f" ({output.relative(job.next_run_at, now)}; {output.iso(job.next_run_at)})"
    rows = [
        ("id", job.id or "-"),
        ("task", job.name or "-"),
        ("state", str(job.state)),
        ("kind", "static (defined in code)" if job.static else "dynamic"),
        ("schedule", schedule.describe() if schedule is not None else "once"),
        ("next run", when),
    ]
    if job.scheduled_at is not None and job.scheduled_at != job.next_run_at:
        rows.append(("occurrence", output.local_time(job.scheduled_at)))
    if upcoming:
        rows.append(("then", ", ".join(output.local_time(t) for t in upcoming)))
    rows += [
        ("attempts", output.attempts(job)),
        ("runs", str(job.runs)),
        ("created", output.local_time(job.created_at)),
    ]
    if job.last_run_at is not None:
        rows.append(("last run", f"{output.local_time(job.last_run_at)} ({job.last_outcome})"))
    if job.last_error:
        rows.append(("last error", " ".join(job.last_error.split())))
    if job.defect:
        rows.append(("defect", job.defect))
    rows.append(("data", output.compact_json(job.data)))
    if job.meta:
        rows.append(("meta", ", ".join(f"{k}={v}" for k, v in sorted(job.meta.items()))))
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        output.echo(f"{key + ':':<{width + 1}} {value}")
    if failed is not None and failed.error:
        output.echo(
            f"last failure ({failed.outcome}, attempt {failed.attempt}, "
            f"finished {output.local_time(failed.finished_at)}):"
        )
        output.echo(output.indented(failed.error))
    elif job.last_error and "\n" in job.last_error.strip():
        output.echo("last error in full:")
        output.echo(output.indented(job.last_error))
    return 0


#: how many runs ``show`` looks through for the last failure
_SHOW_RUNS = 20


async def _last_failure(kernel: Kernel, job: Job) -> RunRecord | None:
    """The newest failed (or timed out) run among the job's last runs, when its last run did
    not succeed (a failure before a success is no longer the job's last error)."""
    if job.id is None or not job.last_error:
        return None
    for run in await kernel.get_runs(job.id, limit=_SHOW_RUNS):
        if run.error:
            return run
        if str(run.outcome) == "succeeded":
            return None
    return None


async def cmd_runs(args: argparse.Namespace) -> int:
    async with open_store(args) as kernel:
        runs = await kernel.get_runs(args.id, limit=args.limit)
        job = await kernel.get_task(args.id) if not runs else None
    if not runs and job is None:
        raise JobNotFoundError(f"no job with id {args.id!r} and no run of it in the history")
    if args.json:
        output.emit_json([output.run_to_dict(run) for run in runs])
    elif not runs:
        output.echo(f"no runs of job {args.id} yet")
    else:
        output.echo(output.runs_text(runs))
    return 0


def _schedule_from(args: argparse.Namespace) -> object:
    """The schedule ``add`` passes to ``create_task`` (None: run as soon as a worker can)."""
    if args.in_ is not None:
        return args.in_
    if args.every is not None:
        spec: dict[str, Any] = {"type": "interval", "value": args.every.total_seconds()}
        return spec
    if args.cron is not None:
        spec = {"type": "cron", "value": args.cron}
        if args.tz is not None:
            spec["timezone"] = args.tz
        return spec
    if args.at is not None:
        at: datetime = args.at
        if at.tzinfo is None:
            if args.tz is not None:
                from tickkit.plugins.schedules.zones import get_zone

                return at.replace(tzinfo=get_zone(args.tz))
            return at.astimezone()  # naive: this machine's local time
        return at
    return None


def _typed(args: argparse.Namespace, *, with_id: bool, no_data: object) -> str:
    """The options that shape a job (``add``, ``update``), as typed, for an error line;
    ``no_data``: the value ``args.data`` holds when --data was not given."""
    options = [("--in", args.in_), ("--at", args.at), ("--cron", args.cron)]
    options += [("--every", args.every), ("--tz", args.tz)]
    if with_id:
        options.append(("--id", args.id))
    shown = []
    for option, value in options:
        if value is not None:
            text = value.isoformat() if isinstance(value, datetime) else str(value)
            shown.append(f"{option} {text!r}")
    if args.data is not no_data:
        shown.append("--data " + _short_json(args.data))
    return ", ".join(shown)


def _given(args: argparse.Namespace) -> str:
    """The options of ``add`` that shape the job, as typed (for an error line)."""
    return _typed(args, with_id=True, no_data=None) or "no schedule"


@contextmanager
def _refused(args: argparse.Namespace) -> Iterator[None]:
    """Turn a plain ``ValueError``/``OverflowError``... raised for a value ``add`` was given (the
    kernel should refuse it with a TickkitError) into one error line that names the values."""
    try:
        yield
    except (ValueError, TypeError, ArithmeticError, RecursionError) as exc:
        if isinstance(exc, tickkit.TickkitError):
            raise
        raise tickkit.TickkitError(
            f"cannot add a job of task {args.name!r} with {_given(args)}: "
            f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        ) from exc


def _short_json(value: Any) -> str:
    try:
        text = scrub(output.compact_json(value))
    except (ValueError, RecursionError):
        text = "..."
    return text if len(text) <= 60 else text[:57] + "..."


async def cmd_add(args: argparse.Namespace) -> int:
    if args.tz is not None and args.cron is None and args.at is None:
        raise UsageError("--tz applies to --cron and --at only")
    with _refused(args):
        schedule = _schedule_from(args)
    async with open_store(args, load_tasks=True, create=True) as kernel:
        try:
            with _refused(args):
                job_id = await kernel.create_task(
                    args.name, args.data, schedule, id=args.id, replace=args.replace
                )
        except UnknownTaskError as exc:
            if tasks_dir(args) is None:
                raise UnknownTaskError(
                    f"{exc} (no tasks folder was loaded: pass --tasks DIR, or run from the folder "
                    "that holds app/tasks)"
                ) from exc
            raise
        job = await kernel.get_task(job_id)
        now = kernel.clock.now()
    if args.json:
        output.emit_json(output.job_to_dict(job) if job is not None else {"id": job_id})
    elif job is not None and job.next_run_at is not None:
        output.echo(
            f"added job {job_id} (task {args.name}): next run "
            f"{output.local_time(job.next_run_at)} ({output.relative(job.next_run_at, now)})"
        )
    else:
        output.echo(f"added job {job_id} (task {args.name})")
    return 0


def _update_given(args: argparse.Namespace) -> str:
    """The options of ``update`` as typed (for an error line)."""
    return _typed(args, with_id=False, no_data=NO_DATA)


#: ``update`` without ``--data`` (``--data null`` sets the data to null)
NO_DATA = object()


async def cmd_update(args: argparse.Namespace) -> int:
    scheduled = any(value is not None for value in (args.in_, args.at, args.cron, args.every))
    if args.tz is not None and args.cron is None and args.at is None:
        raise UsageError("--tz applies to --cron and --at only")
    if args.data is NO_DATA and not scheduled:
        raise UsageError(
            "nothing to update: give --data JSON and/or one of --in, --at, --cron, --every"
        )
    changes: dict[str, Any] = {}
    try:
        if scheduled:
            changes["schedule"] = _schedule_from(args)
        if args.data is not NO_DATA:
            changes["data"] = args.data
        async with open_store(args, load_tasks=True) as kernel:
            job = await kernel.update_task(args.id, **changes)
            now = kernel.clock.now()
    except (ValueError, TypeError, ArithmeticError, RecursionError) as exc:
        if isinstance(exc, tickkit.TickkitError):
            raise
        raise tickkit.TickkitError(
            f"cannot update job {args.id!r} with {_update_given(args)}: "
            f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        ) from exc
    if args.json:
        output.emit_json(output.job_to_dict(job))
        return 0
    what = " and ".join(k for k in ("data", "schedule") if k in changes)
    line = f"updated the {what} of job {job.id} (task {job.name})"
    if job.next_run_at is not None:
        line += (
            f": next run {output.local_time(job.next_run_at)} "
            f"({output.relative(job.next_run_at, now)})"
        )
    output.echo(line)
    return 0


async def cmd_delete(args: argparse.Namespace) -> int:
    if (args.id is None) == (args.task is None):
        raise UsageError("give a job ID or --task NAME (one of them)")
    async with open_store(args) as kernel:
        if args.task is not None:
            count = await kernel.delete_tasks(name=args.task)
            if args.json:
                output.emit_json({"task": args.task, "deleted": count})
            else:
                output.echo(f"deleted {count} dynamic job(s) of task {args.task}")
            return 0
        existed = await kernel.delete_task(args.id)
    if not existed:
        raise JobNotFoundError(f"no job with id {args.id!r}")
    if args.json:
        output.emit_json({"id": args.id, "deleted": True})
    else:
        output.echo(f"deleted job {args.id}")
    return 0


async def cmd_pause(args: argparse.Namespace) -> int:
    async with open_store(args) as kernel:
        if args.command == "pause":
            job = await kernel.pause_task(args.id)
        else:
            job = await kernel.resume_task(args.id)
        now = kernel.clock.now()
    if args.json:
        output.emit_json(output.job_to_dict(job))
    elif args.command == "pause":
        output.echo(f"paused job {job.id} (task {job.name})")
    else:
        output.echo(
            f"resumed job {job.id} (task {job.name}): next run "
            f"{output.local_time(job.next_run_at)} ({output.relative(job.next_run_at, now)})"
        )
    return 0


async def cmd_run_now(args: argparse.Namespace) -> int:
    async with open_store(args) as kernel:
        run_id = await kernel.run_task_now(args.id)
    if args.json:
        output.emit_json({"id": args.id, "run_id": run_id})
    elif run_id == args.id:
        output.echo(f"job {args.id} runs now")
    else:
        output.echo(f"job {args.id} runs now as the extra one-off job {run_id}")
    return 0


# --- the dashboard ----------------------------------------------------------------------------


async def cmd_dashboard(args: argparse.Namespace) -> int:
    from ..dashboard import TOKEN_ENV, check_bind, create_app, serve

    url = driver_url(args)
    if url.split("://", 1)[0].lower() == "memory":
        raise UsageError(
            "`tickkit dashboard` needs a persistent store: the memory store lives only inside "
            "a running worker (serve the dashboard from it with the kernel setting, see "
            "docs/dashboard.md); pass e.g. --driver sqlite:///tasks.db (or set TICKKIT_DRIVER)"
        )
    token = args.token or os.environ.get(TOKEN_ENV) or None
    check_bind(args.host, token)
    path = sqlite_file(url)
    if path is not None and not await anyio.Path(path).exists():
        raise DriverError(
            f"no SQLite store at {path!r} ({redact_url(url)}): check --driver or "
            "TICKKIT_DRIVER (`tickkit run` and `tickkit add` create a new store)"
        )
    app = create_app(url, token=token, refresh=args.refresh, page_size=args.page_size)
    host = f"[{args.host}]" if ":" in args.host else args.host
    output.echo(
        f"tickkit dashboard for {redact_url(url)} on http://{host}:{args.port}/"
        + (" (sign in with the token)" if token else "")
        + "; Ctrl-C stops it",
        stream=sys.stderr,
    )
    await serve(app, host=args.host, port=args.port, token=token, signals=True)
    return 0


# --- commands without a store -----------------------------------------------------------------


async def cmd_next(args: argparse.Namespace) -> int:
    try:
        after: datetime = args.after or datetime.now(UTC)
        if after.tzinfo is None:
            if args.tz is not None:
                from tickkit.plugins.schedules.zones import get_zone

                after = after.replace(tzinfo=get_zone(args.tz))
            else:
                after = after.astimezone()
        schedule = tickkit.parse_schedule(args.expression, args.tz)
        if args.key is not None:
            schedule = schedule.keyed(args.key)
        times = tickkit.next_runs(
            schedule.to_spec(), after=after, count=args.count, timezone=args.tz
        )
    except (ValueError, TypeError, ArithmeticError, RecursionError) as exc:
        if isinstance(exc, tickkit.TickkitError):
            raise
        # a value the schedules should have refused with a TickkitError: one line naming it
        since = f" after {args.after.isoformat()!r}" if args.after is not None else ""
        raise tickkit.TickkitError(
            f"cannot compute the runs of {args.expression!r}{since}: "
            f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        ) from exc
    dst_note = getattr(schedule, "dst_note", None)
    notes = [dst_note(t) if dst_note is not None else None for t in times]
    if args.json:
        output.emit_json(
            {
                "expression": args.expression,
                "timezone": args.tz,
                "schedule": schedule.describe(),
                "after": after.isoformat(),
                "runs": [
                    {"at": t.isoformat(), "utc": t.astimezone(UTC).isoformat(), "note": note}
                    for t, note in zip(times, notes, strict=True)
                ],
            }
        )
        return 0
    output.echo(f"{schedule.describe()}: next {len(times)} run(s) after {after.isoformat()}")
    if not times:
        output.echo("no run time is left")
    for t, note in zip(times, notes, strict=True):
        line = (
            f"  {t.strftime('%a %Y-%m-%d %H:%M:%S')} {t.tzname() or ''} ({t.strftime('%z')})  "
            f"{output.relative(t, after)}"
        )
        output.echo(line + (f"  note: {note}" if note else ""))
    return 0


async def cmd_entry_points(args: argparse.Namespace) -> int:
    found = list_drivers() if args.command == "drivers" else list_plugins()
    if args.json:
        output.emit_json([output.entry_point_to_dict(info) for info in found])
    elif not found:
        output.echo(f"no {args.command} found")
    else:
        output.echo(output.entry_points_table(found))
    return 0
