"""The ``tickkit`` command under hostile conditions, run as a user runs it (subprocesses):

- credentials never reach a log line, an error line, the output (text or ``--json``) or the
  metrics page: a worker and the management commands on a real password-protected
  redis-server, and driver errors that show the URL;
- every bad value on the command line ends in one error line that names it and a non-zero exit
  code, never a traceback.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from .redis_server import RedisServer, free_port
from .test_cli import cli_env, one_error_line, tickkit

PASSWORD = "S3cretPW-obs7"

TASKS = """
import os

from tickkit import task


@task(name="ok")
async def ok(ctx):
    ctx.logger.info("ok ran with %s", ctx.data)


@task(name="leaky", retries=1, backoff=0.2)
async def leaky(ctx):
    # a task whose error shows the store URL, password and all
    raise ConnectionError(f"cannot reach {os.environ['LEAKY_URL']}")
"""


def _tasks_dir(root: Path) -> Path:
    folder = root / "app" / "tasks"
    folder.mkdir(parents=True)
    (folder / "jobs.py").write_text(TASKS)
    return folder


#: no part of the password either (a cut line could show its first characters)
PASSWORD_PART = PASSWORD[:6]


def _no_password(*procs: subprocess.CompletedProcess[str]) -> None:
    for proc in procs:
        for name, text in (("stdout", proc.stdout), ("stderr", proc.stderr)):
            assert PASSWORD_PART not in text, f"{proc.args}: password in {name}:\n{text}"


@pytest.fixture(scope="module")
def secured_redis() -> Iterator[RedisServer]:
    """A real redis-server of this module's own that requires PASSWORD."""
    if not shutil.which("redis-server"):
        message = "no redis-server on PATH"
        if os.environ.get("CI"):
            pytest.fail(f"{message}: CI needs a real Redis", pytrace=False)
        pytest.skip(message)
    with tempfile.TemporaryDirectory() as workdir:
        server = RedisServer(free_port(), workdir, ("--requirepass", PASSWORD))
        server.start()
        try:
            yield server
        finally:
            server.stop()


def _wait_for(path: Path, pattern: str, proc: subprocess.Popen[str], timeout: float = 60) -> str:
    """The first match of ``pattern`` in the file ``path`` (a worker's stderr), waited for."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ""
        found = re.search(pattern, text)
        if found:
            return found.group(0)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"no {pattern!r} in the worker's output:\n{path.read_text()}")


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_password_anywhere_with_a_password_protected_redis(
    secured_redis: RedisServer, tmp_path: Path, log_format: str
) -> None:
    """A worker (debug logs, a task failing with the URL in its error, a retry, the metrics
    server) and every management command on a Redis that needs a password: the password is in
    no log line, output, error line or metrics page; the masked URL is where the URL was."""
    queue = f"hardening-{log_format}"
    url = f"redis://:{PASSWORD}@127.0.0.1:{secured_redis.port}/0?queue={queue}"
    masked = f"redis://:***@127.0.0.1:{secured_redis.port}/0"
    _tasks_dir(tmp_path)
    env = cli_env(LEAKY_URL=url)
    log = ["--log-format", log_format]

    added = [
        tickkit("add", "ok", "--driver", url, "--data", '{"n": 1}', "--json", *log, cwd=tmp_path),
        tickkit("add", "leaky", "--driver", url, "--id", "leaky-1", *log, cwd=tmp_path, env=env),
    ]
    for proc in added:
        assert proc.returncode == 0, proc.stderr

    # the worker takes the store from TICKKIT_DRIVER (the other way to give it)
    err_path = tmp_path / "worker.err"
    with err_path.open("w") as err, (tmp_path / "worker.out").open("w") as out:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tickkit",
                "run",
                "--metrics-port",
                "0",
                "--log-level",
                "debug",
                *log,
                "--for",
                "60",
            ],
            cwd=tmp_path,
            env={**env, "TICKKIT_DRIVER": url},
            stdout=out,
            stderr=err,
            text=True,
        )
        try:
            metrics = _wait_for(err_path, r"http://127\.0\.0\.1:\d+/metrics", worker)
            # the retry of leaky-1 failed too: it is failed for good
            _wait_for(err_path, r"run of leaky failed(.|\n)*run of leaky failed", worker)
            with urllib.request.urlopen(metrics, timeout=10) as response:
                page = response.read().decode()
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(60)
    worker_err = err_path.read_text()
    worker_out = (tmp_path / "worker.out").read_text()
    assert worker.returncode == 0, worker_err
    assert PASSWORD_PART not in worker_err
    assert PASSWORD_PART not in worker_out
    assert PASSWORD_PART not in page
    assert 'tickkit_retries_total{task="leaky"} 1.0' in page
    # the worker's start line and the task's error show the URL masked
    assert f"running: driver {masked}" in worker_err
    assert f"cannot reach {masked}" in worker_err

    shown = [
        tickkit("list", "--driver", url, *log, cwd=tmp_path),
        tickkit("list", "--driver", url, "--json", *log, cwd=tmp_path),
        tickkit("show", "leaky-1", "--driver", url, *log, cwd=tmp_path),
        tickkit("show", "leaky-1", "--driver", url, "--json", "--debug", *log, cwd=tmp_path),
        tickkit("show", "missing", "--driver", url, "--debug", *log, cwd=tmp_path),
        tickkit("drivers", "--json", cwd=tmp_path, env={**env, "TICKKIT_DRIVER": url}),
        tickkit("plugins", cwd=tmp_path, env={**env, "TICKKIT_DRIVER": url}),
    ]
    _no_password(*added, *shown)
    assert [p.returncode for p in shown] == [0, 0, 0, 0, 1, 0, 0], [p.stderr for p in shown]
    leaky = json.loads(shown[3].stdout)
    assert leaky["state"] == "failed"
    assert leaky["last_error"].endswith(f"cannot reach {masked}?queue={queue}")
    assert f"cannot reach {masked}" in shown[2].stdout
    assert "cannot reach redis://:***@" in shown[0].stdout


def test_driver_errors_that_show_the_url_are_masked(tmp_path: Path) -> None:
    """A driver error naming the URL (and the URL's parts) is printed with the password masked,
    by every command and with --debug's traceback too."""
    closed = free_port()  # nothing listens there
    cases = [
        (["list", "--driver", f"sqlite://admin:{PASSWORD}@dbhost/tasks.db"], "admin:***@dbhost"),
        (
            ["run", "--for", "1", "--driver", f"sqlite://admin:{PASSWORD}@dbhost/tasks.db"],
            "admin:***@dbhost",
        ),
        (
            ["list", "--driver", f"redis://:{PASSWORD}@127.0.0.1:{closed}/0"],
            f"redis://:***@127.0.0.1:{closed}/0",
        ),
        (
            ["list", "--driver", f"redis://:{PASSWORD}@127.0.0.1:{closed}/0?bogus=1"],
            "'bogus'",
        ),
        (
            ["list", "--driver", f"sqlite:///tasks.db?password={PASSWORD}"],
            "password=***",
        ),
    ]
    # each plain and with --debug (whose traceback is masked too), side by side: an unreachable
    # Redis takes a while to give up
    argvs = [argv for argv, _ in cases] + [[*argv, "--debug"] for argv, _ in cases]
    results = _run_all(argvs, tmp_path, cli_env(), batch=len(argvs))
    for (_argv, expected), proc, debug in zip(
        cases, results[: len(cases)], results[len(cases) :], strict=True
    ):
        assert proc.returncode == 1, proc
        line = one_error_line(proc)
        assert expected in line, line
        assert debug.returncode == 1, debug
        assert "Traceback" in debug.stderr, debug  # --debug shows it, masked
        _no_password(proc, debug)
    # the same through TICKKIT_DRIVER
    proc = tickkit("list", cwd=tmp_path, env=cli_env(TICKKIT_DRIVER=cases[0][0][2]))
    assert proc.returncode == 1
    assert "admin:***@dbhost" in one_error_line(proc)
    _no_password(proc)


# --- hostile command lines ------------------------------------------------------------------


def _run_all(
    argvs: Sequence[Sequence[str]], cwd: Path, env: dict[str, str], batch: int = 6
) -> list[subprocess.CompletedProcess[str]]:
    """Run the commands a few at a time (the machine is shared)."""
    done: list[subprocess.CompletedProcess[str]] = []
    for start in range(0, len(argvs), batch):
        procs = [
            (
                argv,
                subprocess.Popen(
                    [sys.executable, "-m", "tickkit", *argv],
                    cwd=cwd,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                ),
            )
            for argv in argvs[start : start + batch]
        ]
        try:
            for argv, proc in procs:
                stdout, stderr = proc.communicate(timeout=60)
                done.append(
                    subprocess.CompletedProcess(list(argv), proc.returncode, stdout, stderr)
                )
        finally:
            for _, proc in procs:
                if proc.poll() is None:  # hung: leave no process behind
                    proc.kill()
                    proc.communicate()
    return done


#: (command line, exit code, text the one error line must hold)
HOSTILE: list[tuple[list[str], int, str]] = [
    (["add", "ok", "--data", "{bad"], 2, "'{bad'"),
    (["add", "ok", "--data", "[" * 100_000], 2, "nested too deeply"),
    (["add", "ok", "--data", "1" + "0" * 5000], 2, "not JSON"),
    (["add", "ok", "--in", "99999999999999d"], 2, "'99999999999999d'"),
    (["add", "ok", "--in", "soon"], 2, "'soon'"),
    (["add", "ok", "--every", "0s"], 2, "'0s'"),
    (["add", "ok", "--at", "next tuesday"], 2, "'next tuesday'"),
    (["add", "ok", "--at", "0001-01-01T00:00"], 1, "--at '0001-01-01T00:00:00'"),
    (["add", "ok", "--cron", "bogus"], 1, "'bogus'"),
    (["add", "ok", "--cron", "\u00b2 * * * *"], 1, "'\u00b2 * * * *'"),
    (["add", "ok", "--tz", "Mars/Base", "--cron", "* * * * *"], 2, "'Mars/Base'"),
    (["add", "ok", "--id", "\udcff"], 2, "'\\udcff'"),
    (["add", "ok", "--driver", "bogus"], 1, "'bogus'"),
    (["add", "ok", "--driver", "sqlite:///no/such/dir/x.db"], 1, "no/such/dir"),
    (["list", "--driver", "nosuch://host/x"], 1, "'nosuch'"),
    (["list", "--driver", "sqlite:///missing.db"], 1, "'missing.db'"),
    (["show", "x", "--driver", "sqlite:///missing.db"], 1, "'missing.db'"),
    (["delete", "x", "--driver", "sqlite:///missing.db"], 1, "'missing.db'"),
    (["list", "--limit", "1" + "0" * 5000], 2, "expected a whole number"),
    (["next", "* * * * *", "-n", "99999999999"], 2, "'99999999999'"),
    (["next", "* * * * *", "--after", "9999-12-31T23:59"], 1, "'* * * * *'"),
    (["run", "--metrics-port", "70000"], 2, "'70000'"),
    (["run", "--metrics-port", "0", "--metrics-addr", "bad host"], 2, "'bad host'"),
    (["run", "--metrics-addr", "::1"], 2, "--metrics-port"),
    (["run", "--metrics-port", "0", "--metrics-addr", "nosuchhost.invalid"], 1, "nosuchhost"),
    (["run", "--concurrency", "0"], 2, "'0'"),
    (["run", "--for", "nan"], 2, "'nan'"),
    (["run", "--tasks", "missing-folder"], 2, "'missing-folder'"),
]


def test_hostile_command_lines_end_in_one_error_line(tmp_path: Path) -> None:
    _tasks_dir(tmp_path)
    env = cli_env(TICKKIT_DRIVER="sqlite:///store.db")
    results = _run_all([argv for argv, _, _ in HOSTILE], tmp_path, env)
    wrong = []
    for (argv, code, expected), proc in zip(HOSTILE, results, strict=True):
        lines = proc.stderr.strip().splitlines()
        if (
            proc.returncode != code
            or len(lines) != 1
            or "Traceback" in proc.stderr
            or expected not in lines[0]
        ):
            wrong.append(f"{[a[:40] for a in argv]}: exit {proc.returncode}\n{proc.stderr[-800:]}")
    assert not wrong, "\n\n".join(wrong)
    # a read command did not create the store it could not find
    assert not (tmp_path / "missing.db").exists()


def test_metrics_port_in_use_fails_the_worker(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = tickkit("run", "--metrics-port", str(port), "--for", "5", cwd=tmp_path)
    assert proc.returncode == 1
    assert f"cannot serve metrics on 127.0.0.1:{port}" in one_error_line(proc)


def test_worker_serves_metrics_on_the_address_given(tmp_path: Path) -> None:
    """``--metrics-addr ::1`` (IPv6) is served and scraped; by default the worker serves
    127.0.0.1 only."""
    has_v6 = True
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        has_v6 = False
    for addr, pattern in (
        (None, r"http://127\.0\.0\.1:\d+/metrics"),
        *((("[::1]", r"http://\[::1\]:\d+/metrics"),) if has_v6 else ()),
    ):
        err_path = tmp_path / "worker.err"
        with err_path.open("w") as err:
            extra = ["--metrics-addr", addr] if addr else []
            worker = subprocess.Popen(
                [sys.executable, "-m", "tickkit", "run", "--metrics-port", "0", *extra],
                cwd=tmp_path,
                env=cli_env(),
                stdout=subprocess.DEVNULL,
                stderr=err,
                text=True,
            )
            try:
                url = _wait_for(err_path, pattern, worker)
                with urllib.request.urlopen(url, timeout=10) as response:
                    assert "tickkit_runs" in response.read().decode()
            finally:
                worker.send_signal(signal.SIGTERM)
                worker.wait(60)
        assert worker.returncode == 0, err_path.read_text()


def test_log_records_are_masked_in_both_formats() -> None:
    """The command's log formatters mask a URL's credentials in the message, the run fields and
    the traceback, and every secret of the command's own store URL wherever it appears."""
    import io
    import logging

    from tickkit.plugins.cli import logs

    logs.add_secrets_of(f"redis://:{PASSWORD}@h:6379/0")
    logger = logging.getLogger("tickkit.test-hardening")
    for fmt in logs.FORMATS:
        stream = io.StringIO()
        logs.configure("debug", fmt, stream)
        try:
            raise ConnectionError(f"refused by redis://user:{PASSWORD}@h:6379/0")
        except ConnectionError:
            logger.exception(
                "connecting to %s failed; the password %s alone",
                f"redis://:{PASSWORD}@h:6379/0",
                PASSWORD,
                extra={"task": f"t {PASSWORD}", "job_id": "j", "attempt": 1},
            )
        text = stream.getvalue()
        assert PASSWORD not in text, text
        assert "redis://:***@h:6379/0" in text
        assert "redis://user:***@h:6379/0" in text
        if fmt == "json":
            record = json.loads(text)
            assert record["task"] == "t ***"
            assert "Traceback" in record["exc"]
    logs.configure("warning", "text")
