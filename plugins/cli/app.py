"""The ``tickkit`` command line: argument parsing, dispatch, exit codes and error lines.

Exit codes: 0 success, 1 failure (a one-line ``tickkit: error: ...`` on stderr; the traceback
only with ``--debug``), 2 usage error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import traceback
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, NoReturn, TypeVar

import anyio

from tickkit import JobState, TickkitError, __version__

from . import commands, logs, worker

Command = Callable[[argparse.Namespace], Awaitable[int]]

EPILOG = "exit codes: 0 success, 1 failure, 2 usage error. Docs: docs/cli.md"


class Parser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(2)


# --- argument types (a bad value is a usage error naming the value) ---------------------------

#: how much of a bad value an error line shows
SHOWN = 60


def _shown(text: str) -> str:
    """``repr(text)``, cut to :data:`SHOWN` characters (a 5,000-digit value stays one line);
    credentials are masked before the cut, which would hide the URL they belong to."""
    shown = repr(logs.scrub(text))
    return shown if len(shown) <= SHOWN else shown[: SHOWN - 4] + "...'"


_T = TypeVar("_T")


def _argument_type(func: Callable[[str], _T]) -> Callable[[str], _T]:
    """``func`` as an argparse type whose every failure is a usage error naming the value.

    argparse turns only ``ArgumentTypeError``, ``TypeError`` and ``ValueError`` into usage
    errors; anything else (an ``OverflowError`` from a huge duration, a ``RecursionError`` from
    deeply nested JSON, a ``TickkitError``) would escape as a traceback.
    """

    @functools.wraps(func)
    def checked(text: str) -> _T:
        try:
            return func(text)
        except argparse.ArgumentTypeError:
            raise
        except Exception as exc:
            reason = " ".join(logs.scrub(str(exc)).split()) or type(exc).__name__
            raise argparse.ArgumentTypeError(f"bad value {_shown(text)}: {reason[:200]}") from None

    return checked


@_argument_type
def _duration(text: str) -> timedelta:
    from tickkit.plugins.schedules import parse_duration

    parsed = parse_duration(text)
    if parsed is None or parsed <= timedelta(0):
        raise argparse.ArgumentTypeError(
            f"not a duration: {_shown(text)} (use e.g. 45s, 10m, 1h30m, 2d)"
        )
    return parsed


@_argument_type
def _datetime(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 time: {_shown(text)} (use e.g. 2026-12-24T18:00 or "
            "2026-12-24T18:00:00+01:00)"
        ) from None


@_argument_type
def _zone(text: str) -> str:
    from tickkit.plugins.schedules.zones import get_zone

    try:
        get_zone(text)
    except TickkitError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


@_argument_type
def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise argparse.ArgumentTypeError(f"not JSON: {_shown(text)} ({reason})") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


@_argument_type
def _where_item(text: str) -> tuple[str, Any]:
    """``KEY=VALUE``: VALUE is read as a JSON scalar when it is one (``42``, ``true``, ``null``,
    ``"42"``), else kept as the string typed (``bob``)."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(
            f"expected KEY=VALUE (e.g. user_id=42), got {_shown(text)}"
        )
    try:
        value = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return key, raw
    if isinstance(value, (dict, list)):
        raise argparse.ArgumentTypeError(
            f"the value of {_shown(text)} is JSON but not a scalar: --where compares one "
            "string, number, true, false or null"
        )
    return key, value


@_argument_type
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {_shown(text)}")
    return value


#: the most run times ``tickkit next`` prints
MAX_COUNT = 1000


@_argument_type
def _count(text: str) -> int:
    value = _positive_int(text)
    if value > MAX_COUNT:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_COUNT}, got {_shown(text)}")
    return value


@_argument_type
def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {_shown(text)}")
    return value


@_argument_type
def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port (0 to 65535), got {_shown(text)}")
    return value


@_argument_type
def _address(text: str) -> str:
    """A host name or IP address to bind (``[::1]`` as in a URL is accepted)."""
    addr = text.strip()
    if addr.startswith("[") and addr.endswith("]"):
        addr = addr[1:-1]
    if not addr or any(c.isspace() or c in "/[]@" for c in addr):
        raise argparse.ArgumentTypeError(
            f"expected a host name or IP address (e.g. 127.0.0.1, ::1, 0.0.0.0), got {_shown(text)}"
        )
    return addr


# --- the parser ---------------------------------------------------------------------------------


def _common(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """Options every command accepts, before or after the command name."""

    def default(value: object) -> object:
        return value if top else argparse.SUPPRESS

    group = parser.add_argument_group("output and logging")
    group.add_argument(
        "--debug",
        action="store_true",
        default=default(False),
        help="show the traceback of an error (and log at debug level)",
    )
    group.add_argument(
        "--log-level",
        choices=logs.LEVELS,
        type=str.lower,
        default=default(None),
        help="lowest level logged to stderr (default: info for run, warning otherwise)",
    )
    group.add_argument(
        "--log-format",
        choices=logs.FORMATS,
        default=default("text"),
        help="text: readable lines; json: one JSON object per line",
    )


def _driver(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--driver",
        metavar="URL",
        help="the store: memory://, sqlite:///tasks.db, redis://localhost:6379/0 "
        "(default: $TICKKIT_DRIVER, else memory://)",
    )


def _tasks(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tasks",
        metavar="DIR",
        help="the folder of task modules (default: app/tasks when it exists)",
    )


def _where_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--where",
        action="append",
        type=_where_item,
        metavar="KEY=VALUE",
        help="only jobs whose data has KEY equal to VALUE (repeat: all must match). VALUE is "
        'read as JSON when it is a JSON scalar (42, 4.5, true, null, "42" for the string), '
        "else as the string typed (bob)",
    )


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="tickkit",
        description="Schedule and run tasks: run a worker, manage the jobs in a store, preview "
        "schedules.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"tickkit {__version__}")
    _common(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    def command(name: str, help: str, func: Command, description: str | None = None) -> Parser:
        p: Parser = sub.add_parser(name, help=help, description=description or help, epilog=EPILOG)
        p.set_defaults(func=func)
        _common(p, top=False)
        return p

    p = command(
        "run",
        "run a worker: static tasks from a folder and dynamic jobs from the store",
        _cmd_run,
        "Run a worker until SIGINT or SIGTERM. On a signal it takes no new jobs, lets running "
        "tasks finish (up to --shutdown-timeout), releases the rest for another worker and "
        "exits 0. A second signal exits at once.",
    )
    _tasks(p)
    _driver(p)
    p.add_argument("--reload", action="store_true", help="reload tasks when their files change")
    p.add_argument(
        "--concurrency", type=_positive_int, default=64, metavar="N", help="runs at once (64)"
    )
    p.add_argument(
        "--shutdown-timeout",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="how long running tasks get to finish at shutdown (30)",
    )
    p.add_argument(
        "--metrics-port",
        type=_port,
        metavar="PORT",
        help="serve Prometheus metrics on this port (the prometheus plugin)",
    )
    p.add_argument(
        "--metrics-addr",
        type=_address,
        metavar="ADDR",
        help="the address the metrics server binds (default 127.0.0.1: this machine only; "
        "0.0.0.0 or :: for every interface; IPv6 such as ::1 works)",
    )
    p.add_argument(
        "--for",
        dest="run_for",
        type=_seconds,
        metavar="SECONDS",
        help="stop gracefully after this many seconds (demos, tests)",
    )

    p = command("list", "list the jobs in the store", commands.cmd_list)
    _driver(p)
    p.add_argument("--task", metavar="NAME", help="only jobs of this task")
    p.add_argument("--state", choices=[s.value for s in JobState], help="only jobs in this state")
    p.add_argument(
        "--kind", choices=("static", "dynamic"), help="only static schedules or dynamic jobs"
    )
    _where_option(p)
    p.add_argument("--limit", type=_positive_int, metavar="N", help="at most N jobs")
    p.add_argument(
        "--after",
        metavar="ID",
        help="the page after the job with this id (the last one of the previous page)",
    )
    _json_flag(p)

    p = command(
        "count",
        "count the jobs in the store",
        commands.cmd_count,
        "Count the jobs of task NAME (all tasks without it) that match every --where and --state.",
    )
    p.add_argument("name", metavar="NAME", nargs="?", help="only jobs of this task")
    p.add_argument("--state", choices=[s.value for s in JobState], help="only jobs in this state")
    _where_option(p)
    _driver(p)
    _json_flag(p)

    p = command(
        "show",
        "show one job",
        commands.cmd_show,
        "Show one job; after a failed run, the traceback of its last failure in full.",
    )
    p.add_argument("id", metavar="ID", help="the job id")
    _driver(p)
    _json_flag(p)

    p = command(
        "runs",
        "show a job's past runs, newest first, with tracebacks",
        commands.cmd_runs,
        "Show the run history of a job, newest first: when each run was scheduled and "
        "finished, its outcome, attempt and worker, and the traceback of each failure. The "
        "history outlives the job for the store's retention (docs/cli.md).",
    )
    p.add_argument("id", metavar="ID", help="the job id")
    p.add_argument(
        "--limit", type=_positive_int, default=20, metavar="N", help="at most N runs (20)"
    )
    _driver(p)
    _json_flag(p)

    p = command(
        "add",
        "create a dynamic job of a task",
        commands.cmd_add,
        "Create a dynamic job of task NAME. Without --in, --at, --cron or --every it runs as "
        "soon as a worker takes it.",
    )
    p.add_argument("name", metavar="NAME", help="the task name (loaded from --tasks)")
    when = p.add_mutually_exclusive_group()
    when.add_argument(
        "--in", dest="in_", type=_duration, metavar="DURATION", help="run once after e.g. 10m"
    )
    when.add_argument(
        "--at",
        type=_datetime,
        metavar="TIME",
        help="run once at an ISO 8601 time (naive: --tz, else local time)",
    )
    when.add_argument("--cron", metavar="EXPR", help="run on a cron schedule")
    when.add_argument("--every", type=_duration, metavar="DURATION", help="run every e.g. 1h")
    p.add_argument("--tz", type=_zone, metavar="ZONE", help="IANA time zone for --cron and --at")
    p.add_argument("--data", type=_json, metavar="JSON", help="the job's data, as JSON")
    p.add_argument("--id", metavar="ID", help="a job id of your choice (default: generated)")
    p.add_argument("--replace", action="store_true", help="replace a job that has this --id")
    _tasks(p)
    _driver(p)
    _json_flag(p)

    p = command(
        "update",
        "change a job's data or schedule",
        commands.cmd_update,
        "Change the data and/or the schedule of job ID, checked like `add`. A running "
        "occurrence finishes with what it had; the next one uses the new values.",
    )
    p.add_argument("id", metavar="ID", help="the job id")
    p.add_argument(
        "--data",
        type=_json,
        default=commands.NO_DATA,
        metavar="JSON",
        help="the job's new data, as JSON",
    )
    when = p.add_mutually_exclusive_group()
    when.add_argument(
        "--in", dest="in_", type=_duration, metavar="DURATION", help="run once after e.g. 10m"
    )
    when.add_argument(
        "--at",
        type=_datetime,
        metavar="TIME",
        help="run once at an ISO 8601 time (naive: --tz, else local time)",
    )
    when.add_argument("--cron", metavar="EXPR", help="run on a cron schedule")
    when.add_argument("--every", type=_duration, metavar="DURATION", help="run every e.g. 1h")
    p.add_argument("--tz", type=_zone, metavar="ZONE", help="IANA time zone for --cron and --at")
    _tasks(p)
    _driver(p)
    _json_flag(p)

    p = command("delete", "delete a job (or every dynamic job of a task)", commands.cmd_delete)
    p.add_argument("id", metavar="ID", nargs="?", help="the job id")
    p.add_argument("--task", metavar="NAME", help="delete every dynamic job of this task instead")
    _driver(p)
    _json_flag(p)

    for name, text in (
        ("pause", "pause a job: no worker takes it until it is resumed"),
        ("resume", "resume a paused job"),
    ):
        p = command(name, text, commands.cmd_pause)
        p.add_argument("id", metavar="ID", help="the job id")
        _driver(p)
        _json_flag(p)

    p = command(
        "run-now",
        "run a job now (a recurring job gets one extra run)",
        commands.cmd_run_now,
    )
    p.add_argument("id", metavar="ID", help="the job id")
    _driver(p)
    _json_flag(p)

    p = command(
        "next",
        "show the next fire times of a schedule",
        commands.cmd_next,
        "Show the next fire times of a cron expression (or any schedule tickkit accepts), with a "
        "note where a daylight saving change moves or merges a run.",
    )
    p.add_argument("expression", metavar="EXPR", help='e.g. "0 9 * * 1-5" or "*/10 * * * * *"')
    p.add_argument("--tz", type=_zone, metavar="ZONE", help="IANA time zone (default UTC)")
    p.add_argument(
        "-n",
        "--count",
        type=_count,
        default=5,
        metavar="N",
        help=f"how many (5, at most {MAX_COUNT})",
    )
    p.add_argument(
        "--after", type=_datetime, metavar="TIME", help="start after this ISO 8601 time (now)"
    )
    p.add_argument("--key", metavar="NAME", help="task name or job id that a cron H is hashed from")
    _json_flag(p)

    p = command(
        "dashboard",
        "serve the web dashboard of a store (pip install 'tickkit[dashboard]')",
        commands.cmd_dashboard,
        "Serve the web dashboard (docs/dashboard.md) of the store until Ctrl-C: see what is "
        "scheduled, what ran and what failed; pause, resume, run now, retry and delete jobs. "
        "It listens on 127.0.0.1 unless told otherwise, and refuses any other address without "
        "a token.",
    )
    _driver(p)
    p.add_argument(
        "--host",
        type=_address,
        default="127.0.0.1",
        metavar="ADDR",
        help="address to listen on (127.0.0.1; any other needs --token)",
    )
    p.add_argument(
        "--port", type=_port, default=8787, metavar="PORT", help="port to listen on (8787)"
    )
    p.add_argument(
        "--token",
        metavar="TOKEN",
        help="a secret every request must carry (default: $TICKKIT_DASHBOARD_TOKEN); sign in "
        "at /login?token=TOKEN",
    )
    p.add_argument(
        "--refresh",
        type=_seconds,
        default=5.0,
        metavar="SECONDS",
        help="how often open pages update themselves (5; 0: never)",
    )
    p.add_argument(
        "--page-size",
        type=_positive_int,
        default=50,
        metavar="N",
        help="jobs per table page (50, at most 500)",
    )

    p = command(
        "drivers",
        "list installed drivers (tickkit.drivers entry points)",
        commands.cmd_entry_points,
    )
    _json_flag(p)
    p = command(
        "plugins",
        "list installed plugins (tickkit.plugins entry points)",
        commands.cmd_entry_points,
    )
    _json_flag(p)
    return parser


async def _cmd_run(args: argparse.Namespace) -> int:
    if args.metrics_addr is not None and args.metrics_port is None:
        raise commands.UsageError("--metrics-addr needs --metrics-port")
    if args.metrics_port is not None:
        # fail the command, not only the metrics server, when the address cannot be served
        await anyio.to_thread.run_sync(
            worker.check_metrics_address, args.metrics_addr, args.metrics_port
        )
    kernel = worker.build_kernel(
        driver=commands.driver_url(args),
        tasks_dir=commands.tasks_dir(args),
        reload=args.reload,
        concurrency=args.concurrency,
        shutdown_timeout=args.shutdown_timeout,
        metrics_port=args.metrics_port,
        metrics_addr=args.metrics_addr,
    )
    await worker.serve(kernel, args.run_for)
    return 0


# --- errors -----------------------------------------------------------------------------------


def _leaf(exc: BaseException) -> BaseException:
    """The one exception inside (nested) exception groups, or the group itself."""
    while True:
        inner = getattr(exc, "exceptions", None)
        if not isinstance(inner, tuple) or len(inner) != 1:
            return exc
        exc = inner[0]


def _text(exc: BaseException) -> str:
    """``str(exc)``, which never fails here (a broken ``__str__`` gives the type's name)."""
    try:
        return str(exc)
    except Exception:
        return ""


def _one_line(exc: BaseException) -> str:
    """The error line of ``exc``, with every credential masked (see :func:`logs.scrub`)."""
    text = " ".join(_text(exc).split())
    if isinstance(exc, (TickkitError, commands.UsageError)):
        line = text or type(exc).__name__
    else:
        line = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return logs.scrub(line)


def _is_text(arg: object) -> bool:
    if not isinstance(arg, str):
        return False
    try:
        arg.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _parse(argv: Sequence[str] | None) -> argparse.Namespace | int:
    """The parsed command line, or the exit code when there is nothing to run."""
    parser = build_parser()
    for arg in sys.argv[1:] if argv is None else argv:
        if not _is_text(arg):
            # bytes that are not UTF-8 reach Python as lone surrogates, which no store can keep
            sys.stderr.write(
                f"tickkit: error: argument {_shown(arg)} is not valid UTF-8 text "
                "(see `tickkit --help`)\n"
            )
            return 2
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else 0
    except Exception as err:  # never a traceback for a command line, whatever it holds
        sys.stderr.write(f"tickkit: error: {_one_line(err)} (see `tickkit --help`)\n")
        return 2
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    level = args.log_level or (
        "debug" if args.debug else "info" if args.command == "run" else "warning"
    )
    logs.configure(level, args.log_format)
    # the store URL's password never reaches a log line, an error line or the output
    logs.add_secrets_of(commands.driver_url(args))
    return args


def _failed(args: argparse.Namespace, raw: BaseException) -> int:
    """Report a command's failure (one line; the traceback with ``--debug``); its exit code."""
    exc = _leaf(raw)
    if isinstance(exc, SystemExit):
        return exc.code if isinstance(exc.code, int) else 1
    if isinstance(exc, KeyboardInterrupt):
        sys.stderr.write("tickkit: interrupted\n")
        return 130
    if args.debug:
        text = "".join(traceback.format_exception(type(raw), raw, raw.__traceback__))
        sys.stderr.write(logs.scrub(text))
    hint = (
        ""
        if args.debug or isinstance(exc, (TickkitError, commands.UsageError))
        else (" (run with --debug for the traceback)")
    )
    sys.stderr.write(f"tickkit: error: {_one_line(exc)}{hint}\n")
    return 2 if isinstance(exc, commands.UsageError) else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``tickkit`` command; return its exit code."""
    args = _parse(argv)
    if isinstance(args, int):
        return args
    func: Command = args.func
    try:
        return anyio.run(func, args)
    except KeyboardInterrupt:
        sys.stderr.write("tickkit: interrupted\n")
        return 130
    except BaseException as raw:  # every failure ends as one line (or a traceback with --debug)
        return _failed(args, raw)


async def run(argv: Sequence[str]) -> int:
    """Run one ``tickkit`` command in the running event loop (in-process, as :func:`main` does
    in a loop of its own) and return its exit code: output, error lines and exit codes are
    those of the command. With :func:`~tickkit.plugins.cli.commands.use_kernel`, store commands
    act on an open kernel of this program. ``run`` (the worker) is not for this."""
    args = _parse(argv)
    if isinstance(args, int):
        return args
    func: Command = args.func
    try:
        if args.command == "run":
            raise commands.UsageError("`tickkit run` runs in a process of its own: use main()")
        return await func(args)
    except Exception as raw:
        return _failed(args, raw)
