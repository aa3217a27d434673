"""``tickkit list --where/--after``, ``count``, ``update``, ``runs`` and ``show``'s traceback, run
in-process (:func:`tickkit.plugins.cli.app.run`) on a SQLite file and on the memory store.

On SQLite the command opens the file itself, as a user's shell does; the memory store lives only
in the test's kernel, which the command uses through ``commands.use_kernel``. The jobs are made
and run by the test's kernel on a virtual clock.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tickkit import UTC, Kernel, TaskRegistry
from tickkit.plugins.cli import app, commands
from tickkit.testing import VirtualClock

pytestmark = pytest.mark.anyio

# the virtual clock starts at the real time: on SQLite the command runs on the system clock, and
# run history older than the store's retention (7 days) is not shown
T0 = datetime.now(UTC).replace(second=0, microsecond=0)

TASKS = """
from tickkit import task


@task(name="remind", indexes=["user_id"])
async def remind(ctx):
    pass


@task(name="boom", retries=1, backoff=1)
async def boom(ctx):
    raise RuntimeError("cannot reach redis://bot:hunter22@db:6379/0: gateway closed")
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the SQLite driver runs on asyncio


@pytest.fixture
def virtual_clock() -> VirtualClock:
    return VirtualClock(T0)


@dataclass
class Store:
    kernel: Kernel
    #: the --driver option a user gives (empty: the command uses the test's kernel)
    options: list[str]
    #: the --tasks option of the commands that load tasks
    tasks: list[str]
    capsys: pytest.CaptureFixture[str]

    async def cli(self, *argv: str) -> tuple[int, str, str]:
        """Run ``tickkit ARGV`` in-process; (exit code, stdout, stderr)."""
        self.capsys.readouterr()
        if self.options:
            extra = self.tasks if argv[0] in ("add", "update") else []
            code = await app.run([*argv, *self.options, *extra])
        else:
            with commands.use_kernel(self.kernel):
                code = await app.run(list(argv))
        out, err = self.capsys.readouterr()
        return code, out, err


@pytest.fixture(params=["sqlite", "memory"])
async def store(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    virtual_clock: VirtualClock,
    capsys: pytest.CaptureFixture[str],
) -> AsyncIterator[Store]:
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "tasks.py").write_text(TASKS)
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'tasks.db'}"
        options = ["--driver", url]
    else:
        url, options = "memory://", []
    kernel = Kernel(
        url, tasks=TaskRegistry(), clock=virtual_clock, settings={"tasks_dir": str(folder)}
    )
    async with kernel:
        yield Store(kernel, options, ["--tasks", str(folder)], capsys)


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


async def add_reminders(kernel: Kernel, users: Sequence[int]) -> dict[int, list[str]]:
    """One reminder per entry of ``users`` (a minute apart), by user id."""
    ids: dict[int, list[str]] = {}
    for i, user in enumerate(users):
        job_id = await kernel.create_task(
            "remind", {"user_id": user, "text": f"r{i}"}, timedelta(minutes=i + 1)
        )
        ids.setdefault(user, []).append(job_id)
    return ids


def listed_ids(out: str) -> list[str]:
    return [line.split()[0] for line in out.splitlines()[1:] if not line.startswith("next page")]


async def test_list_where_pages_through_one_users_jobs(store: Store) -> None:
    ids = await add_reminders(store.kernel, [42, 7, 42, 42, 9, 42, 7, 42, 42, 42])
    assert len(ids[42]) == 7
    seen: list[str] = []
    after: list[str] = []
    for _ in range(5):
        code, out, err = await store.cli("list", "--where", "user_id=42", "--limit", "3", *after)
        assert code == 0, err
        page = listed_ids(out)
        seen += page
        if len(page) < 3:
            assert "next page" not in out
            break
        assert out.splitlines()[-1] == f"next page: --after {page[-1]}"
        after = ["--after", page[-1]]
    assert seen == ids[42]  # every one once, in next-run order

    # a page's last job deleted meanwhile: the command says so (a program would pass the Job)
    await store.kernel.delete_task(ids[42][2])
    code, out, err = await store.cli("list", "--where", "user_id=42", "--after", ids[42][2])
    assert code == 1
    assert one_line(err) == (
        f"tickkit: error: --after '{ids[42][2]}': no job has this id any more (it ran or was "
        "deleted since that page was listed): list again without --after"
    )

    # every --where must match; a string "42" is not the number 42
    code, out, _ = await store.cli("list", "--where", "user_id=42", "--where", "text=r2", "--json")
    assert code == 0
    assert [job["id"] for job in json.loads(out)] == [ids[42][1]]
    code, out, _ = await store.cli("list", "--where", 'user_id="42"')
    assert (code, out) == (0, "no jobs\n")
    code, out, _ = await store.cli("list", "--where", "user_id=42", "--task", "boom", "--json")
    assert (code, json.loads(out)) == (0, [])


async def test_count_with_where_and_state(store: Store, virtual_clock: VirtualClock) -> None:
    await add_reminders(store.kernel, [42, 7, 42, 9])
    await store.kernel.create_task("boom", {"user_id": 42})
    await virtual_clock.advance(timedelta(seconds=5))  # both attempts fail: a dead letter
    for argv, expected in (
        (["count"], "5"),
        (["count", "remind"], "4"),
        (["count", "--where", "user_id=42"], "3"),
        (["count", "remind", "--where", "user_id=42"], "2"),
        (["count", "--state", "failed"], "1"),
        (["count", "remind", "--state", "failed"], "0"),
        (["count", "--where", "user_id=nobody"], "0"),
    ):
        code, out, err = await store.cli(*argv)
        assert (code, out.strip()) == (0, expected), (argv, err)
    code, out, _ = await store.cli("count", "remind", "--where", "user_id=7", "--json")
    assert json.loads(out) == {"task": "remind", "where": {"user_id": 7}, "state": None, "count": 1}


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["list", "--where", "user_id"], "expected KEY=VALUE (e.g. user_id=42), got 'user_id'"),
        (["list", "--where", "=42"], "expected KEY=VALUE"),
        (["count", "--where", "k=[1, 2]"], "is JSON but not a scalar"),
        (["list", "--where", "k=1", "--where", "k=2"], "--where 'k' is given twice"),
        (["count", "--where", "k=1", "--where", "k=1"], "--where 'k' is given twice"),
        (["update", "some-id"], "nothing to update"),
        (["update", "some-id", "--data", "{"], "not JSON: '{'"),
        (["update", "some-id", "--in", "10x"], "not a duration: '10x'"),
        (["update", "some-id", "--in", "1m", "--cron", "* * * * *"], "not allowed with"),
        (["update", "some-id", "--in", "1m", "--tz", "UTC"], "--tz applies to --cron and --at"),
        (["runs", "some-id", "--limit", "0"], "expected a whole number >= 1, got '0'"),
    ],
)
async def test_bad_input_is_one_line_and_exit_2(
    store: Store, argv: list[str], expected: str
) -> None:
    code, out, err = await store.cli(*argv)
    assert code == 2, err
    assert expected in one_line(err)
    assert out == ""


async def test_values_are_json_scalars_or_else_strings(store: Store) -> None:
    datas = [{"k": 1}, {"k": "1"}, {"k": True}, {"k": None}, {"k": "bob"}, {"k": 1.5}, {}]
    ids = [await store.kernel.create_task("remind", data, timedelta(hours=1)) for data in datas]
    for value, expected in (
        ("1", [0]),
        ("1.0", [0]),
        ('"1"', [1]),
        ("true", [2]),
        ("null", [3]),
        ("bob", [4]),
        ("1.5", [5]),
        ("NaN", []),  # not JSON: the string "NaN"
    ):
        code, out, err = await store.cli("list", "--where", f"k={value}", "--json")
        assert code == 0, err
        assert [job["id"] for job in json.loads(out)] == [ids[i] for i in expected], value


async def test_update_data_and_schedule(store: Store) -> None:
    kernel = store.kernel
    job_id = await kernel.create_task("remind", {"user_id": 1, "text": "tea"}, timedelta(hours=1))

    code, out, err = await store.cli("update", job_id, "--data", '{"user_id": 1, "text": "coffee"}')
    assert code == 0, err
    assert out.startswith(f"updated the data of job {job_id} (task remind): next run ")
    job = await kernel.get_task(job_id)
    assert job is not None and job.data == {"user_id": 1, "text": "coffee"}
    assert job.next_run_at == T0 + timedelta(hours=1)

    at = (T0 + timedelta(days=30)).replace(hour=9, minute=30)
    code, out, err = await store.cli(
        "update", job_id, "--at", at.replace(tzinfo=None).isoformat(), "--tz", "UTC"
    )
    assert code == 0, err
    job = await kernel.get_task(job_id)
    assert job is not None and job.next_run_at == at
    assert job.data == {"user_id": 1, "text": "coffee"}

    code, out, err = await store.cli(
        "update", job_id, "--cron", "0 9 * * *", "--tz", "Europe/Berlin", "--data", "[1]", "--json"
    )
    assert code == 0, err
    doc = json.loads(out)
    assert doc["id"] == job_id and doc["data"] == [1]
    assert doc["schedule"]["type"] == "cron" and doc["schedule"]["timezone"] == "Europe/Berlin"
    # the next 09:00 in Berlin (from the virtual clock's now, or on SQLite from the command's)
    next_run = datetime.fromisoformat(doc["next_run_at"])
    assert next_run.astimezone(ZoneInfo("Europe/Berlin")).time() == time(9, 0)
    assert T0 < next_run <= T0 + timedelta(days=1, minutes=5)
    job = await kernel.get_task(job_id)
    assert job is not None and job.data == [1] and job.recurring

    # a job found by --where after the update
    code, out, _ = await store.cli("count", "--where", "user_id=1")
    assert out.strip() == "0"


async def test_update_errors(store: Store) -> None:
    job_id = await store.kernel.create_task("remind", {"user_id": 1}, timedelta(hours=1))
    code, _, err = await store.cli("update", "nope", "--data", "1")
    assert code == 1
    assert "nope" in one_line(err)
    code, _, err = await store.cli("update", job_id, "--cron", "61 * * * *")
    assert code == 1
    assert "61 * * * *" in one_line(err)
    job = await store.kernel.get_task(job_id)
    assert job is not None and job.schedule is None and job.data == {"user_id": 1}


async def test_runs_newest_first_with_tracebacks_and_show_prints_the_last_one(
    store: Store, virtual_clock: VirtualClock
) -> None:
    job_id = await store.kernel.create_task("boom", {"n": 1}, timedelta(minutes=1))
    await virtual_clock.advance(timedelta(minutes=1, seconds=2))  # two attempts, both fail
    ok_id = await store.kernel.create_task("remind", {"user_id": 3})
    await virtual_clock.advance(timedelta(seconds=1))

    code, out, err = await store.cli("runs", job_id)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["FINISHED", "OUTCOME", "ATTEMPT", "SCHEDULED", "TOOK", "WORKER"]
    rows = [line for line in lines if not line.startswith(" ")]
    assert [row.split()[3:5] for row in rows[1:]] == [["failed", "2"], ["failed", "1"]]
    assert out.count("Traceback (most recent call last):") == 2
    assert out.count("RuntimeError: cannot reach redis://bot:***@db:6379/0: gateway closed") == 2
    assert "hunter22" not in out

    code, out, err = await store.cli("runs", job_id, "--limit", "1", "--json")
    assert code == 0, err
    (run,) = json.loads(out)
    assert run["job_id"] == job_id and run["task"] == "boom" and run["attempt"] == 2
    assert run["outcome"] == "failed" and run["worker"] == store.kernel.id
    assert run["scheduled_at"] == (T0 + timedelta(minutes=1)).isoformat()
    assert "Traceback" in run["error"] and "hunter22" not in run["error"]

    code, out, err = await store.cli("show", job_id)
    assert code == 0, err
    assert "last failure (failed, attempt 2, finished " in out
    assert "    Traceback (most recent call last):" in out
    assert 'raise RuntimeError("cannot reach' in out  # the source line: the traceback in full
    assert "hunter22" not in out
    code, out, _ = await store.cli("show", job_id, "--json")
    doc = json.loads(out)
    assert doc["last_failure"]["attempt"] == 2 and "Traceback" in doc["last_failure"]["error"]

    code, out, err = await store.cli("runs", ok_id)
    assert code == 0, err
    assert out.splitlines()[1].split()[3:5] == ["succeeded", "1"]
    code, out, _ = await store.cli("show", ok_id)
    assert "last failure" not in out and "Traceback" not in out

    code, _, err = await store.cli("runs", "nope")
    assert code == 1
    assert one_line(err) == (
        "tickkit: error: no job with id 'nope' and no run of it in the history"
    )
    waiting = await store.kernel.create_task("remind", {"user_id": 4}, timedelta(hours=1))
    code, out, _ = await store.cli("runs", waiting)
    assert (code, out) == (0, f"no runs of job {waiting} yet\n")


async def test_run_in_process_refuses_the_worker(capsys: pytest.CaptureFixture[str]) -> None:
    assert await app.run(["run", "--for", "0"]) == 2
    assert one_line(capsys.readouterr().err) == (
        "tickkit: error: `tickkit run` runs in a process of its own: use main()"
    )
