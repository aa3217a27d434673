"""The ``tickkit`` command, run as a user runs it: a subprocess, checked by output and exit code.

Commands that need no store: help, version, ``next``, ``drivers``, ``plugins``, usage errors,
``run`` with the memory store, and the log formats.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tickkit.plugins.cli import logs

COMMANDS = [
    "run",
    "list",
    "count",
    "show",
    "runs",
    "add",
    "update",
    "delete",
    "pause",
    "resume",
    "run-now",
    "next",
    "dashboard",
    "drivers",
    "plugins",
]


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a command: no TICKKIT_DRIVER from the caller; local time is Central
    European Time, given as a POSIX rule so that it needs no time zone files on the machine."""
    env = {k: v for k, v in os.environ.items() if k != "TICKKIT_DRIVER"}
    env["TZ"] = "CET-1CEST,M3.5.0,M10.5.0/3"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def tickkit(
    *args: str,
    cwd: Path | str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 30,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m tickkit ARGS`` and return the finished process."""
    return subprocess.run(
        [sys.executable, "-m", "tickkit", *args],
        cwd=cwd,
        env=env or cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a failed command (fails when there is more, or a traceback)."""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def parallel(
    argvs: Sequence[Sequence[str]],
    *,
    cwd: Path | str | None = None,
    env: dict[str, str] | None = None,
    extra: Sequence[str] = (),
) -> list[subprocess.CompletedProcess[str]]:
    """Run several ``python -m tickkit`` commands at once (they start in ~0.3 s each, so
    independent commands run side by side to keep tests short); ``extra`` is appended to each."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tickkit", *argv, *extra],
            cwd=cwd,
            env=env or cli_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for argv in argvs
    ]
    out = []
    try:
        for argv, proc in zip(argvs, procs, strict=True):
            stdout, stderr = proc.communicate(timeout=60)
            out.append(subprocess.CompletedProcess(list(argv), proc.returncode, stdout, stderr))
    finally:
        for proc in procs:
            if proc.poll() is None:  # timed out: leave no process behind
                proc.kill()
                proc.communicate()
    return out


# --- help and version -------------------------------------------------------------------------


def test_help_on_every_command() -> None:
    results = parallel([["--help"], *[[name, "--help"] for name in COMMANDS]])
    top = results[0]
    assert top.returncode == 0
    for name in COMMANDS:
        assert name in top.stdout
    assert "exit codes: 0 success, 1 failure, 2 usage error" in top.stdout
    for name, proc in zip(COMMANDS, results[1:], strict=True):
        assert proc.returncode == 0, (name, proc.stderr)
        assert proc.stdout.startswith(f"usage: tickkit {name}"), proc.stdout
        assert "--debug" in proc.stdout
        assert proc.stderr == ""


def test_console_script_and_version() -> None:
    script = Path(sys.executable).with_name("tickkit")
    assert script.exists(), f"the console script is not installed next to {sys.executable}"
    proc = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, env=cli_env(), check=False
    )
    import tickkit as package

    assert proc.returncode == 0
    assert proc.stdout.strip() == f"tickkit {package.__version__}"


def test_no_command_prints_help_and_exits_2() -> None:
    proc = tickkit()
    assert proc.returncode == 2
    assert "usage: tickkit" in proc.stderr
    assert proc.stdout == ""


# --- usage errors (exit 2, one line) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["add", "remind", "--in", "10x"], "argument --in: not a duration: '10x'"),
        (["add", "remind", "--at", "next tuesday"], "not an ISO 8601 time: 'next tuesday'"),
        (["add", "remind", "--data", "{oops"], "argument --data: not JSON: '{oops'"),
        (["add", "remind", "--in", "1m", "--cron", "* * * * *"], "not allowed with argument"),
        (["next", "* * * * *", "--tz", "Mars/Base"], "unknown time zone 'Mars/Base'"),
        (["next", "* * * * *", "-n", "0"], "expected a whole number >= 1, got '0'"),
        (["run", "--concurrency", "zero"], "expected a whole number >= 1, got 'zero'"),
        (["show"], "the following arguments are required: ID"),
        (["list", "--state", "sleeping"], "invalid choice: 'sleeping'"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(argv: list[str], expected: str) -> None:
    proc = tickkit(*argv)
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc)
    assert line.startswith("tickkit"), line
    assert ": error: " in line
    assert expected in line
    assert proc.stdout == ""


@pytest.mark.parametrize(
    "argv",
    [
        ["list"],
        ["list", "--where", "user_id=42", "--after", "x"],
        ["count"],
        ["show", "x"],
        ["runs", "x"],
        ["add", "remind", "--in", "10m"],
        ["update", "x", "--data", "1"],
        ["delete", "x"],
        ["pause", "x"],
        ["resume", "x"],
        ["run-now", "x"],
    ],
)
def test_store_commands_refuse_the_memory_store(argv: list[str]) -> None:
    proc = tickkit(*argv)
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert line.startswith(f"tickkit: error: `tickkit {argv[0]}` needs a persistent store")
    assert "--driver sqlite:///tasks.db" in line
    assert "TICKKIT_DRIVER" in line


def test_driver_comes_from_the_environment() -> None:
    proc = tickkit("list", env=cli_env(TICKKIT_DRIVER="nosuchscheme://somewhere"))
    assert proc.returncode == 1
    line = one_error_line(proc)
    assert line.startswith("tickkit: error: no driver handles the URL scheme 'nosuchscheme'")
    # --driver wins over the environment
    proc = tickkit("list", "--driver", "memory://", env=cli_env(TICKKIT_DRIVER="nosuchscheme://x"))
    assert proc.returncode == 2
    assert "needs a persistent store" in one_error_line(proc)


# --- next -------------------------------------------------------------------------------------


def test_next_notes_a_run_moved_by_dst() -> None:
    proc = tickkit(
        "next", "30 2 * * *", "--tz", "Europe/Berlin", "--after", "2026-03-27T00:00", "-n", "4"
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("cron '30 2 * * *' (Europe/Berlin): next 4 run(s)")
    runs = lines[1:]
    assert len(runs) == 4
    assert runs[0].strip().startswith("Fri 2026-03-27 02:30:00 CET (+0100)")
    assert "note" not in runs[0]
    # 02:30 does not exist on 29 March 2026 in Berlin: the run moves to 03:00 CEST
    assert runs[2].strip().startswith("Sun 2026-03-29 03:00:00 CEST (+0200)")
    assert "note: moved" in runs[2]
    assert runs[3].strip().startswith("Mon 2026-03-30 02:30:00 CEST (+0200)")
    assert "note" not in runs[3]


def test_next_json_notes_a_merged_run() -> None:
    proc = tickkit(
        "next",
        "30 2 * * *",
        "--tz",
        "Europe/Berlin",
        "--after",
        "2026-10-24T12:00",
        "-n",
        "2",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["timezone"] == "Europe/Berlin"
    assert doc["after"] == "2026-10-24T12:00:00+02:00"
    first, second = doc["runs"]
    # 02:30 happens twice on 25 October 2026: the run happens once, in the first pass (CEST)
    assert first["at"] == "2026-10-25T02:30:00+02:00"
    assert first["utc"] == "2026-10-25T00:30:00+00:00"
    assert first["note"].startswith("merged")
    assert second == {
        "at": "2026-10-26T02:30:00+01:00",
        "utc": "2026-10-26T01:30:00+00:00",
        "note": None,
    }


def test_next_defaults_to_utc_and_five_runs() -> None:
    proc = tickkit("next", "0 9 * * 1", "--after", "2026-01-01T00:00:00Z", "--json")
    assert proc.returncode == 0, proc.stderr
    runs = [r["at"] for r in json.loads(proc.stdout)["runs"]]
    assert runs == [
        "2026-01-05T09:00:00+00:00",
        "2026-01-12T09:00:00+00:00",
        "2026-01-19T09:00:00+00:00",
        "2026-01-26T09:00:00+00:00",
        "2026-02-02T09:00:00+00:00",
    ]


def test_next_with_a_bad_expression_fails_in_one_line_and_debug_shows_the_traceback() -> None:
    proc = tickkit("next", "61 * * * *")
    assert proc.returncode == 1
    line = one_error_line(proc)
    assert line.startswith("tickkit: error: ")
    assert "61 * * * *" in line
    debug = tickkit("next", "61 * * * *", "--debug")
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert "InvalidCronError" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1] == line


# --- drivers and plugins ------------------------------------------------------------------------


def _broken_distribution(root: Path) -> Path:
    """A real installed distribution (a dist-info folder on PYTHONPATH) whose entry points do
    not load."""
    info = root / "broken_tickkit_addon-1.2.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: broken-tickkit-addon\nVersion: 1.2.3\n"
    )
    (info / "entry_points.txt").write_text(
        "[tickkit.plugins]\nbroken = no_such_module_for_tickkit_tests\n\n"
        "[tickkit.drivers]\nbrokendb = no_such_module_for_tickkit_tests:Driver\n"
    )
    return root


def test_drivers_and_plugins_show_versions_and_load_errors(tmp_path: Path) -> None:
    env = cli_env(PYTHONPATH=str(_broken_distribution(tmp_path)))
    import tickkit as package

    proc = tickkit("drivers", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    drivers = {d["name"]: d for d in json.loads(proc.stdout)}
    assert drivers["memory"] == {
        "name": "memory",
        "value": "tickkit.drivers.memory:MemoryDriver",
        "distribution": "tickkit",
        "version": package.__version__,
        "loaded": True,
        "error": None,
    }
    broken = drivers["brokendb"]
    assert broken["loaded"] is False
    assert broken["distribution"] == "broken-tickkit-addon"
    assert broken["version"] == "1.2.3"
    assert broken["error"] == (
        "ModuleNotFoundError: No module named 'no_such_module_for_tickkit_tests'"
    )

    proc = tickkit("plugins", env=env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["NAME", "OBJECT", "FROM", "STATUS"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert rows["schedules"].split()[1:] == [
        "tickkit.plugins.schedules",
        "tickkit",
        package.__version__,
        "ok",
    ]
    assert "broken-tickkit-addon 1.2.3" in rows["broken"]
    assert "failed: ModuleNotFoundError: No module named" in rows["broken"]


# --- run with the memory store ------------------------------------------------------------------


def test_run_for_a_while_then_stops_cleanly(tmp_path: Path) -> None:
    proc = tickkit("run", "--for", "0.3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    log = proc.stderr
    assert "tickkit.worker: worker " in log
    assert "running: driver memory://, 0 task(s)" in log
    assert "--for 0.3s elapsed: shutting down" in log
    assert log.rstrip().endswith("stopped")


def test_run_logs_json_lines(tmp_path: Path) -> None:
    proc = tickkit(
        "run", "--for", "0.2", "--log-format", "json", "--concurrency", "3", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stderr.splitlines()]
    assert records, proc.stderr
    for record in records:
        assert set(record) >= {"time", "level", "logger", "message"}
        assert record["time"].endswith("+00:00")
    assert records[0]["logger"] == "tickkit.worker"
    assert records[0]["level"] == "INFO"
    assert "concurrency 3" in records[0]["message"]


def test_run_with_an_unknown_driver_fails_in_one_line(tmp_path: Path) -> None:
    proc = tickkit("run", "--driver", "nosuchscheme://x", "--for", "1", cwd=tmp_path)
    assert proc.returncode == 1
    assert one_error_line(proc).startswith(
        "tickkit: error: no driver handles the URL scheme 'nosuchscheme'"
    )


def test_run_with_a_missing_tasks_folder_is_a_usage_error(tmp_path: Path) -> None:
    proc = tickkit("run", "--tasks", str(tmp_path / "nope"), "--for", "1")
    assert proc.returncode == 2
    assert (
        one_error_line(proc)
        == f"tickkit: error: --tasks {str(tmp_path / 'nope')!r} is not a folder"
    )


# --- log formats (the formatters themselves) ------------------------------------------------------


def _run_record_logger() -> logging.LoggerAdapter[logging.Logger]:
    # the same shape as TaskContext.logger
    return logging.LoggerAdapter(
        logging.getLogger("tickkit.task"), {"task": "remind", "job_id": "j1", "attempt": 2}
    )


def test_text_log_lines_show_the_run_fields() -> None:
    stream = io.StringIO()
    logs.configure("info", "text", stream)
    _run_record_logger().info("sent %d reminders", 3)
    logging.getLogger("tickkit.worker").debug("not shown at info")
    logging.getLogger("tickkit.worker").warning("plain")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith(
        "INFO    tickkit.task: sent 3 reminders [task=remind job_id=j1 attempt=2]"
    )
    assert lines[1].endswith("WARNING tickkit.worker: plain")


def test_json_log_lines_carry_the_run_fields_and_the_exception() -> None:
    stream = io.StringIO()
    logs.configure("debug", "json", stream)
    try:
        raise ValueError("gateway closed")
    except ValueError:
        _run_record_logger().exception("task remind failed")
    logging.getLogger("tickkit.worker").debug("plain")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["level"] == "ERROR"
    assert first["logger"] == "tickkit.task"
    assert first["message"] == "task remind failed"
    assert (first["task"], first["job_id"], first["attempt"]) == ("remind", "j1", 2)
    assert first["exc"].startswith("Traceback (most recent call last)")
    assert first["exc"].endswith("ValueError: gateway closed")
    assert second == {
        "time": second["time"],
        "level": "DEBUG",
        "logger": "tickkit.worker",
        "message": "plain",
    }


@pytest.fixture(autouse=True)
def _restore_tickkit_logger() -> Iterator[None]:
    logger = logging.getLogger("tickkit")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]
