"""The ``tickkit`` command against real stores (a SQLite file; a real redis-server), run as a user
runs it: subprocesses, checked by their output, exit codes and what the store holds afterwards.

Workers are real processes; the tests wait on conditions (a file a task wrote, a log line) with
bounded timeouts, never on a fixed sleep.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tickkit import UTC

from .test_cli import cli_env, one_error_line, parallel, tickkit

NOTE = """
import json
from pathlib import Path

from tickkit import task

OUT = Path(__file__).resolve().parent.parent / "out"


@task(name="note")
async def note(ctx):
    ctx.logger.info("writing note %s", ctx.data["text"])
    with (OUT / "notes.jsonl").open("a") as f:
        f.write(json.dumps({"job": ctx.job_id, "data": ctx.data, "attempt": ctx.attempt}) + "\\n")
"""

FAIL = """
from tickkit import task


@task(name="fail")
async def fail(ctx):
    raise RuntimeError("gateway closed")
"""

SLOW = """
from pathlib import Path

import anyio
from tickkit import task

OUT = Path(__file__).resolve().parent.parent / "out"


@task(name="slow")
async def slow(ctx):
    (OUT / f"{ctx.job_id}.started").write_text(str(ctx.attempt))
    if not (OUT / "fast").exists():
        await anyio.sleep(ctx.data["seconds"])
    (OUT / f"{ctx.job_id}.finished").write_text(str(ctx.attempt))
"""

TICK = """
from pathlib import Path

from tickkit import task

OUT = Path(__file__).resolve().parent.parent.parent / "out"


@task(name="tick", schedule="* * * * * *")
async def tick(ctx):
    with (OUT / "ticks.txt").open("a") as f:
        f.write(ctx.scheduled_at.isoformat() + "\\n")
"""


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``condition`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(
    # each command against Redis costs ~1.5 s (importing the Redis client, opening the queue)
    params=["sqlite", pytest.param("redis", marks=[pytest.mark.redis, pytest.mark.slow])]
)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty store: a SQLite file in tmp_path, or a real Redis database."""
    if request.param == "sqlite":
        return "sqlite:///tasks.db"
    import redis

    base: str = request.getfixturevalue("redis_url")
    # a database of its own (flushed here), so that other tests' keys are left alone
    head, _, db = base.rpartition("/")
    url = f"{head}/7" if db.isdigit() else base
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()
    return url


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project folder: ``tasks/`` with the test tasks, ``out/`` for what they write."""
    (tmp_path / "out").mkdir()
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    for name, source in (("note", NOTE), ("fail", FAIL), ("slow", SLOW)):
        (tasks / f"{name}.py").write_text(source)
    return tmp_path


class Worker:
    """A ``tickkit run`` process whose log goes to a file."""

    def __init__(self, cwd: Path, env: dict[str, str], *args: str) -> None:
        self.log_path = cwd / "out" / f"worker-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tickkit", "run", *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def wait_running(self) -> None:
        wait_for(
            lambda: " running: driver " in self.log or self.proc.poll() is not None,
            20,
            "the worker to start",
        )
        assert self.proc.poll() is None, self.log

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 20) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._log.close()


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.kill()


def job_json(project: Path, env: dict[str, str], job_id: str) -> dict[str, object]:
    proc = tickkit("show", job_id, "--json", cwd=project, env=env)
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, object] = json.loads(proc.stdout)
    return doc


def listed(project: Path, env: dict[str, str], *args: str) -> list[dict[str, object]]:
    proc = tickkit("list", "--json", *args, cwd=project, env=env)
    assert proc.returncode == 0, proc.stderr
    jobs: list[dict[str, object]] = json.loads(proc.stdout)
    return jobs


# --- managing jobs -----------------------------------------------------------------------------


def test_add_list_and_show(project: Path, store: str) -> None:
    env = cli_env(TICKKIT_DRIVER=store)
    adds = parallel(
        [
            ["add", "note", "--in", "10m", "--data", '{"text": "hi"}', "--id", "n1"],
            ["add", "note", "--cron", "0 9 * * 1-5", "--tz", "Europe/Berlin", "--id", "daily",
             "--data", '{"text": "standup"}'],
            # a naive --at is local time (Central European Time here: 12:00 CET is 11:00 UTC)
            ["add", "note", "--at", "2030-01-02T12:00", "--data", '{"text": "later"}', "--json"],
            ["add", "note", "--at", "2030-01-02T12:00", "--tz", "America/New_York", "--id", "ny",
             "--data", '{"text": "ny"}', "--json"],
        ],
        cwd=project,
        env=env,
        extra=("--tasks", "tasks"),
    )  # fmt: skip
    for proc in adds:
        assert proc.returncode == 0, proc.stderr
    assert re.fullmatch(
        r"added job n1 \(task note\): next run \d{4}-\d\d-\d\d \d\d:\d\d:\d\d CES?T "
        r"\(in (10m|9m \d+s)\)\n",
        adds[0].stdout,
    ), adds[0].stdout
    later = json.loads(adds[2].stdout)
    assert later["next_run_at"] == "2030-01-02T11:00:00+00:00"
    assert (later["task"], later["data"], later["state"]) == (
        "note",
        {"text": "later"},
        "scheduled",
    )
    assert json.loads(adds[3].stdout)["next_run_at"] == "2030-01-02T17:00:00+00:00"

    table, full, first, fail, static, show, show_json, missing = parallel(
        [
            ["list"],
            ["list", "--json"],
            ["list", "--json", "--task", "note", "--limit", "1"],
            ["list", "--json", "--task", "fail"],
            ["list", "--json", "--kind", "static"],
            ["show", "daily"],
            ["show", "daily", "--json"],
            ["show", "missing"],
        ],
        cwd=project,
        env=env,
    )
    # list: a table ordered by next run, in local time and relative
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["ID", "TASK", "STATE", "NEXT", "RUN", "ATTEMPTS", "LAST", "ERROR"]
    ids = [row.split()[0] for row in rows]
    assert ids == ["n1", "daily", later["id"], "ny"]
    n1 = rows[0].split()
    assert n1[1:3] == ["note", "scheduled"]
    assert n1[-2:] == ["0/1", "-"]
    assert re.search(r" 09:00:00 CES?T \(in ", rows[1]), rows[1]

    # the store holds what was added
    jobs = {job["id"]: job for job in json.loads(full.stdout)}
    assert jobs["n1"]["data"] == {"text": "hi"}
    assert jobs["daily"]["schedule"] == {
        "type": "cron",
        "value": "0 9 * * 1-5",
        "timezone": "Europe/Berlin",
    }
    assert [j["id"] for j in json.loads(first.stdout)] == ["n1"]
    assert json.loads(fail.stdout) == []
    assert json.loads(static.stdout) == []

    # show
    assert show.returncode == 0, show.stderr
    fields = {k: v.strip() for k, v in (line.split(":", 1) for line in show.stdout.splitlines())}
    assert fields["task"] == "note"
    assert fields["kind"] == "dynamic"
    assert fields["schedule"] == "cron '0 9 * * 1-5' (Europe/Berlin)"
    assert fields["data"] == '{"text": "standup"}'
    assert len(fields["then"].split(",")) == 3
    doc = json.loads(show_json.stdout)
    assert len(doc["upcoming"]) == 3
    assert doc["schedule_text"] == "cron '0 9 * * 1-5' (Europe/Berlin)"
    assert missing.returncode == 1
    assert one_error_line(missing) == "tickkit: error: no job with id 'missing'"


def test_add_errors_and_replace(project: Path, store: str) -> None:
    env = cli_env(TICKKIT_DRIVER=store)
    proc = tickkit(
        "add", "note", "--in", "10m", "--id", "n1", "--tasks", "tasks", cwd=project, env=env
    )
    assert proc.returncode == 0, proc.stderr
    unknown, no_folder, duplicate, bad_cron, replaced = parallel(
        [
            ["add", "nope", "--in", "1m", "--tasks", "tasks"],
            ["add", "nope", "--in", "1m"],
            ["add", "note", "--in", "5m", "--id", "n1", "--tasks", "tasks"],
            ["add", "note", "--cron", "99 * * * *", "--tasks", "tasks"],
            ["add", "note", "--in", "5m", "--id", "n2", "--tasks", "tasks"],
        ],
        cwd=project,
        env=env,
    )
    assert (unknown.returncode, no_folder.returncode, duplicate.returncode) == (1, 1, 1)
    assert one_error_line(unknown).startswith(
        "tickkit: error: unknown task name 'nope' (loaded tasks: fail, note, slow)"
    )
    assert "no tasks folder was loaded: pass --tasks DIR" in one_error_line(no_folder)
    assert "'n1'" in one_error_line(duplicate)
    assert bad_cron.returncode == 1
    assert "99 * * * *" in one_error_line(bad_cron)
    assert replaced.returncode == 0, replaced.stderr
    proc = tickkit(
        "add", "note", "--in", "1h", "--id", "n1", "--replace", "--data", '{"text": "hey"}',
        "--tasks", "tasks", "--json", cwd=project, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["data"] == {"text": "hey"}
    jobs = json.loads(tickkit("list", "--json", cwd=project, env=env).stdout)
    assert [(j["id"], j["data"]) for j in jobs] == [("n2", None), ("n1", {"text": "hey"})]


@pytest.mark.slow  # several commands in a row, ~5 s
def test_pause_resume_run_now_delete(project: Path, store: str) -> None:
    env = cli_env(TICKKIT_DRIVER=store)
    adds = parallel(
        [
            ["add", "note", "--in", "1h", "--id", "once"],
            ["add", "note", "--cron", "0 9 * * *", "--id", "daily"],
            ["add", "fail", "--in", "2h", "--id", "f1"],
            ["add", "fail", "--in", "3h", "--id", "f2"],
        ],
        cwd=project,
        env=env,
        extra=("--tasks", "tasks"),
    )
    for proc in adds:
        assert proc.returncode == 0, proc.stderr

    before = datetime.now(UTC)
    # --driver instead of TICKKIT_DRIVER
    pause, run_once, delete_fail, pause_missing = parallel(
        [
            ["pause", "daily"],
            ["run-now", "once", "--json"],
            ["delete", "--task", "fail", "--json"],
            ["pause", "missing"],
        ],
        cwd=project,
        env=cli_env(),
        extra=("--driver", store),
    )
    assert (pause.returncode, pause.stdout) == (0, "paused job daily (task note)\n")
    assert pause_missing.returncode == 1
    assert one_error_line(pause_missing) == "tickkit: error: no job with id 'missing'"
    # run-now: a one-off job moves to now
    assert run_once.returncode == 0, run_once.stderr
    assert json.loads(run_once.stdout) == {"id": "once", "run_id": "once"}
    assert delete_fail.returncode == 0, delete_fail.stderr
    assert json.loads(delete_fail.stdout) == {"task": "fail", "deleted": 2}

    jobs = {j["id"]: j for j in json.loads(tickkit("list", "--json", cwd=project, env=env).stdout)}
    assert set(jobs) == {"once", "daily"}
    assert jobs["daily"]["state"] == "paused"
    moved = datetime.fromisoformat(jobs["once"]["next_run_at"])
    assert before - timedelta(seconds=1) <= moved <= datetime.now(UTC)

    resume, run_daily, delete_once = parallel(
        [["resume", "daily", "--json"], ["run-now", "daily"], ["delete", "once"]],
        cwd=project,
        env=env,
    )
    assert resume.returncode == 0, resume.stderr
    # a recurring job gets an extra one-off run; its schedule is unchanged
    assert run_daily.returncode == 0, run_daily.stderr
    extra = re.fullmatch(r"job daily runs now as the extra one-off job (\S+)\n", run_daily.stdout)
    assert extra, run_daily.stdout
    assert (delete_once.returncode, delete_once.stdout) == (0, "deleted job once\n")

    again, listing, nothing = parallel(
        [["delete", "once"], ["list", "--json"], ["delete"]], cwd=project, env=env
    )
    assert again.returncode == 1
    assert one_error_line(again) == "tickkit: error: no job with id 'once'"
    jobs = {j["id"]: j for j in json.loads(listing.stdout)}
    assert set(jobs) == {"daily", extra.group(1)}
    assert jobs["daily"]["state"] == "scheduled"
    assert jobs["daily"]["schedule"]["type"] == "cron"
    assert jobs[extra.group(1)]["task"] == "note"
    assert jobs[extra.group(1)]["meta"].get("run_now_of") == "daily"
    assert nothing.returncode == 2
    assert one_error_line(nothing) == "tickkit: error: give a job ID or --task NAME (one of them)"


# --- the worker --------------------------------------------------------------------------------


@pytest.mark.slow  # several commands in a row, ~5 s
def test_run_for_runs_due_jobs_and_logs_run_fields(project: Path, store: str) -> None:
    env = cli_env(TICKKIT_DRIVER=store)
    for args in (("note", "--id", "now1", "--data", '{"text": "hi"}'), ("fail", "--id", "bad1")):
        proc = tickkit("add", *args, "--tasks", "tasks", cwd=project, env=env)
        assert proc.returncode == 0, proc.stderr
    proc = tickkit(
        "run", "--tasks", "tasks", "--for", "2", "--log-format", "json", cwd=project, env=env
    )
    assert proc.returncode == 0, proc.stderr
    notes = [
        json.loads(line) for line in (project / "out" / "notes.jsonl").read_text().splitlines()
    ]
    assert notes == [{"job": "now1", "data": {"text": "hi"}, "attempt": 1}]

    records = [json.loads(line) for line in proc.stderr.splitlines()]
    mine = [r for r in records if r.get("job_id") == "now1"]
    assert {(r["task"], r["attempt"]) for r in mine} == {("note", 1)}
    task_record = next(r for r in mine if r["logger"] == "tickkit.task")
    assert task_record["message"] == "writing note hi"
    assert any(r["message"].startswith("run of note succeeded in ") for r in mine)
    failed = next(r for r in records if r.get("job_id") == "bad1" and r["level"] == "ERROR")
    assert failed["task"] == "fail"
    assert failed["attempt"] == 1
    assert failed["exc"].rstrip().endswith("RuntimeError: gateway closed")
    assert records[-1]["message"].endswith("stopped")

    # the store: the failed job is kept as the dead-letter view with its error
    bad, table, done = parallel(
        [["show", "bad1", "--json"], ["list", "--state", "failed"], ["show", "now1", "--json"]],
        cwd=project,
        env=env,
    )
    assert bad.returncode == 0, bad.stderr
    bad_job = json.loads(bad.stdout)
    assert bad_job["state"] == "failed"
    assert bad_job["last_error"] == "RuntimeError: gateway closed"
    assert table.returncode == 0, table.stderr
    row = table.stdout.splitlines()[1]
    assert row.split()[:3] == ["bad1", "fail", "failed"]
    assert row.endswith("RuntimeError: gateway closed")
    # a finished one-off job is gone, or kept as completed (the driver's retention decides)
    assert done.returncode == 1 or json.loads(done.stdout)["state"] == "completed"


def test_run_loads_app_tasks_by_default_and_runs_static_schedules(
    project: Path, store: str, workers: list[Worker]
) -> None:
    app_tasks = project / "app" / "tasks"
    app_tasks.mkdir(parents=True)
    (app_tasks / "tick.py").write_text(TICK)
    worker = Worker(project, cli_env(TICKKIT_DRIVER=store))
    workers.append(worker)
    worker.wait_running()
    assert "1 task(s) (tick)" in worker.log
    ticks = project / "out" / "ticks.txt"
    wait_for(lambda: ticks.exists() and len(ticks.read_text().splitlines()) >= 2, 15, "two ticks")
    worker.signal(signal.SIGINT)
    assert worker.wait() == 0, worker.log
    assert "received SIGINT: shutting down" in worker.log
    stored = listed(project, cli_env(TICKKIT_DRIVER=store), "--kind", "static")
    assert [(j["id"], j["task"], j["static"]) for j in stored] == [("tick", "tick", True)]
    assert stored[0]["state"] == "scheduled"
    assert int(stored[0]["runs"]) >= 2  # type: ignore[call-overload]


def test_sigterm_lets_a_running_task_finish(
    project: Path, store: str, workers: list[Worker]
) -> None:
    env = cli_env(TICKKIT_DRIVER=store)
    proc = tickkit(
        "add",
        "slow",
        "--id",
        "s1",
        "--data",
        '{"seconds": 1}',
        "--tasks",
        "tasks",
        cwd=project,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    worker = Worker(project, env, "--tasks", "tasks")
    workers.append(worker)
    worker.wait_running()
    out = project / "out"
    wait_for((out / "s1.started").exists, 15, "the slow task to start")
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.log
    assert (out / "s1.finished").exists(), worker.log
    log = worker.log
    assert "received SIGTERM: shutting down" in log
    assert "run of slow succeeded" in log
    assert log.index("received SIGTERM") < log.index("run of slow succeeded")
    assert log.rstrip().endswith("stopped")
    done = tickkit("show", "s1", "--json", cwd=project, env=env)
    assert done.returncode == 1 or json.loads(done.stdout)["state"] == "completed"


def test_sigterm_releases_a_task_past_the_shutdown_timeout_for_another_worker(
    project: Path, store: str, workers: list[Worker]
) -> None:
    env = cli_env(TICKKIT_DRIVER=store)
    proc = tickkit(
        "add",
        "slow",
        "--id",
        "s2",
        "--data",
        '{"seconds": 120}',
        "--tasks",
        "tasks",
        cwd=project,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    out = project / "out"
    first = Worker(project, env, "--tasks", "tasks", "--shutdown-timeout", "0.3")
    workers.append(first)
    first.wait_running()
    wait_for((out / "s2.started").exists, 15, "the slow task to start")
    assert job_json(project, env, "s2")["state"] == "running"
    first.signal(signal.SIGTERM)
    assert first.wait() == 0, first.log
    assert not (out / "s2.finished").exists()
    released = job_json(project, env, "s2")
    assert released["state"] == "scheduled"
    assert released["runs"] == 0
    assert released["last_error"] is None

    # another worker takes the released job and finishes it
    (out / "s2.started").unlink()
    (out / "fast").write_text("")
    second = Worker(project, env, "--tasks", "tasks")
    workers.append(second)
    second.wait_running()
    wait_for((out / "s2.finished").exists, 15, "the second worker to run the job")
    second.signal(signal.SIGTERM)
    assert second.wait() == 0, second.log
    assert (out / "s2.finished").read_text() == (out / "s2.started").read_text()


def test_a_second_signal_exits_at_once(project: Path, store: str, workers: list[Worker]) -> None:
    env = cli_env(TICKKIT_DRIVER=store)
    proc = tickkit(
        "add",
        "slow",
        "--id",
        "s3",
        "--data",
        '{"seconds": 120}',
        "--tasks",
        "tasks",
        cwd=project,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    worker = Worker(project, env, "--tasks", "tasks", "--shutdown-timeout", "60")
    workers.append(worker)
    worker.wait_running()
    wait_for((project / "out" / "s3.started").exists, 15, "the slow task to start")
    worker.signal(signal.SIGTERM)
    wait_for(lambda: "shutting down: taking no new jobs" in worker.log, 10, "the shutdown to begin")
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=10) == 1
    assert "received SIGTERM again: exiting now" in worker.log
    assert not (project / "out" / "s3.finished").exists()


def test_run_serves_prometheus_metrics(project: Path, workers: list[Worker]) -> None:
    import urllib.request

    worker = Worker(project, cli_env(), "--tasks", "tasks", "--metrics-port", "0")
    workers.append(worker)
    worker.wait_running()
    wait_for(lambda: "serving metrics on http://" in worker.log, 15, "the metrics server")
    found = re.search(r"serving metrics on http://[^:]+:(\d+)/metrics", worker.log)
    assert found, worker.log
    with urllib.request.urlopen(f"http://127.0.0.1:{found.group(1)}/metrics", timeout=10) as resp:
        body = resp.read().decode()
    assert "tickkit_" in body
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.log


def test_run_reload_picks_up_a_new_task_file(project: Path, workers: list[Worker]) -> None:
    worker = Worker(project, cli_env(), "--tasks", "tasks", "--reload")
    workers.append(worker)
    worker.wait_running()
    wait_for(lambda: "watching " in worker.log, 15, "the reload watcher")
    # the same every-second task as TICK, one folder level higher
    (project / "tasks" / "tick.py").write_text(
        TICK.replace("parent.parent.parent", "parent.parent")
    )
    ticks = project / "out" / "ticks.txt"
    wait_for(ticks.exists, 20, "the reloaded task to run")
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.log
    assert "reloaded tick.py: added ['tick']" in worker.log


def test_run_concurrency_limits_runs_at_once(project: Path, workers: list[Worker]) -> None:
    env = cli_env(TICKKIT_DRIVER="sqlite:///tasks.db")
    adds = parallel(
        [["add", "slow", "--id", job, "--data", '{"seconds": 0.3}'] for job in ("c1", "c2")],
        cwd=project,
        env=env,
        extra=("--tasks", "tasks"),
    )
    for proc in adds:
        assert proc.returncode == 0, proc.stderr
    worker = Worker(project, env, "--tasks", "tasks", "--concurrency", "1")
    workers.append(worker)
    worker.wait_running()
    out = project / "out"
    wait_for(
        lambda: (out / "c1.finished").exists() and (out / "c2.finished").exists(),
        20,
        "both jobs to finish",
    )
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.log
    spans = sorted(
        ((out / f"{j}.started").stat().st_mtime_ns, (out / f"{j}.finished").stat().st_mtime_ns)
        for j in ("c1", "c2")
    )
    # one at a time: the second run started after the first finished
    assert spans[0][1] <= spans[1][0], spans
