"""The dashboard (tickkit.plugins.dashboard) through Starlette's TestClient, on the memory and
SQLite stores: pages, filters, paging, actions, and its safety (token, CSRF, same origin,
binding, credentials)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")

from starlette.testclient import TestClient

from tickkit import UTC, Job, JobState, Kernel, Outcome, PluginError
from tickkit.drivers.memory import MemoryDriver
from tickkit.plugins.dashboard import check_bind, create_app

from .dashboard_helpers import N_REMINDERS, SECRET, fill, registry, wait_until

ORIGIN = "http://testserver"


class Env:
    def __init__(self, client: TestClient, kernel: Kernel, ids: dict[str, Any]) -> None:
        self.client = client
        self.kernel = kernel
        self.ids = ids

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        assert self.client.portal is not None
        return self.client.portal.call(lambda: fn(*args, **kwargs))

    def job(self, job_id: str) -> Any:
        return self.call(self.kernel.get_task, job_id)

    def csrf(self) -> str:
        self.client.get("/")
        token = self.client.cookies.get("tickkit_dashboard_csrf")
        assert token
        return token

    def post(self, action: str, job_id: str, **extra: Any) -> Any:
        form = {"csrf": self.csrf(), "action": action, "id": job_id, "next": "/jobs"}
        form.update(extra.pop("form", {}))
        headers = extra.pop("headers", {"origin": ORIGIN})
        return self.client.post(
            "/action", data=form, headers=headers, follow_redirects=False, **extra
        )


def _url(kind: str, tmp_path: Path) -> str:
    return "memory://" if kind == "memory" else f"sqlite:///{tmp_path / 'tasks.db'}"


@pytest.fixture(params=["memory", "sqlite"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    kernel = Kernel(_url(request.param, tmp_path), tasks=registry())
    app = create_app(kernel, page_size=3, refresh=60)
    with TestClient(app, base_url=ORIGIN) as client:
        assert client.portal is not None
        running, _ = client.portal.start_task(kernel.serve)
        try:
            ids = client.portal.call(fill, kernel)
            e = Env(client, kernel, ids)
            wait_until(lambda: e.job(ids["boom"]).state is JobState.FAILED)
            yield e
        finally:
            client.portal.call(kernel.stop)
            running.result(timeout=30)


def ids_on(page: str) -> list[str]:
    return re.findall(r'<tr data-id="([^"]+)"', page)


def test_every_page_renders(env: Env) -> None:
    for path, marker in [
        ("/", "Overview"),
        ("/jobs", "matching job(s)"),
        (f"/job?id={env.ids['cron']}", "Next 10 fire time(s)"),
        ("/timeline", "The next 24 hours"),
        ("/failures", "Traceback (most recent call last)"),
    ]:
        r = env.client.get(path)
        assert r.status_code == 200, path
        assert marker in r.text, path
        assert "<script>alert" not in r.text, path
        assert SECRET not in r.text, path
    assert env.client.get("/static/dashboard.css").status_code == 200
    assert "Intl.DateTimeFormat" in env.client.get("/static/dashboard.js").text


def test_overview_counts(env: Env) -> None:
    page = env.client.get("/").text
    # 7 reminders + the cron job scheduled, the static report too; one failed
    assert re.search(r'data-count="failed">1<', page)
    assert re.search(r'data-count="scheduled">9<', page)
    assert "report" in page and "boom" in page
    # the failed run is counted among the runs of the last hour
    assert re.search(r'id="runs-hour">1<', page)


def test_overview_runs_from_the_run_counters(env: Env) -> None:
    """Memory and SQLite keep run counters: the runs table counts every run the store
    recorded, failures being failed or timed-out runs; the api summary says the same."""
    page = env.client.get("/").text
    assert re.search(r'id="runs-day">1<', page) and re.search(r'id="fail-hour">1<', page)
    assert re.search(r'id="fail-day">1<', page)
    assert "Every run the store recorded" in page and "Sampled from" not in page
    runs = env.client.get("/api/summary").json()["runs"]
    assert runs == {
        "last_hour": {"runs": 1, "failures": 1},
        "last_day": {"runs": 1, "failures": 1},
        "sampled": False,
    }
    # a job deleted since still counts (the sample would have lost it)
    env.post("delete", env.ids["boom"])
    assert re.search(r'id="fail-hour">1<', env.client.get("/").text)


class NoCounters(MemoryDriver):
    """A driver written before run counters: count_runs is the base implementation's None."""

    async def count_runs(self, since: datetime) -> dict[Outcome, int] | None:
        return None


def test_overview_runs_sampled_without_counters() -> None:
    kernel = Kernel(NoCounters(), tasks=registry())
    app = create_app(kernel, page_size=3, refresh=60)
    with TestClient(app, base_url=ORIGIN) as client:
        assert client.portal is not None
        running, _ = client.portal.start_task(kernel.serve)
        try:
            env = Env(client, kernel, client.portal.call(fill, kernel))
            wait_until(lambda: env.job(env.ids["boom"]).state is JobState.FAILED)
            page = client.get("/").text
            assert "Sampled from the run history of" in page
            assert "keeps no run counters" in page
            assert re.search(r'id="runs-hour">1<', page) and re.search(r'id="fail-day">1<', page)
            assert re.search(r'data-count="failed">1<', page)
            summary = client.get("/api/summary").json()
            assert summary["runs"]["sampled"] is True
            assert summary["runs"]["last_day"] == {"runs": 1, "failures": 1}
        finally:
            client.portal.call(kernel.stop)
            running.result(timeout=30)


def test_overview_shows_the_biggest_tasks_and_how_many_more() -> None:
    kernel = Kernel("memory://", tasks=registry())
    app = create_app(kernel, page_size=3, refresh=60)
    with TestClient(app, base_url=ORIGIN) as client:
        assert client.portal is not None
        later = datetime(2100, 1, 1, tzinfo=UTC)
        # 53 task names: "big" with 5 jobs, t00..t51 with 1 each
        jobs = [Job(id=None, name="big", next_run_at=later) for _ in range(5)]
        jobs += [Job(id=None, name=f"t{i:02d}", next_run_at=later) for i in range(52)]
        client.portal.call(kernel.open)

        async def add() -> None:
            for job in jobs:
                await kernel.driver.add_job(job)  # type: ignore[union-attr]

        client.portal.call(add)
        page = client.get("/").text
        listed = re.findall(r'href="/jobs\?task=([^"]+)">', page)
        assert listed[0] == "big" and len(listed) == 50
        assert listed[1:] == [f"t{i:02d}" for i in range(49)]
        assert "and 3 more task name(s) with fewer jobs" in page
        assert re.search(r'data-count="scheduled">57<', page)
        client.portal.call(kernel.stop)


class SlowCounts(MemoryDriver):
    """A store where counting takes a while (as Redis at 1,000,000 jobs): each count of
    every job's state sleeps 0.2 s of real time and is counted."""

    def __init__(self) -> None:
        super().__init__()
        self.counts = 0

    async def count_jobs(self, **filters: Any) -> dict[JobState, int]:
        self.counts += 1
        await asyncio.sleep(0.2)
        return await super().count_jobs(**filters)


def test_slow_counts_are_reused_for_a_while_and_an_action_recounts() -> None:
    driver = SlowCounts()
    kernel = Kernel(driver, tasks=registry())
    app = create_app(kernel, page_size=3, refresh=60)
    with TestClient(app, base_url=ORIGIN) as client:
        assert client.portal is not None
        client.portal.call(kernel.open)
        env = Env(client, kernel, {})
        job_id = env.call(kernel.create_task, "remind", {"user": 1}, "1h")
        first = client.get("/").text
        made = driver.counts
        assert "Counts on this store are slow to make" in first
        assert re.search(r'data-count="scheduled">1<', first)
        # the overview and the live summary again: the slow count is reused, not made again
        client.get("/")
        assert client.get("/api/summary").json()["counts"]["scheduled"] == 1
        assert driver.counts == made
        # an action forgets the counts: the next page counts again and shows the change
        assert env.post("pause", job_id).status_code == 303
        page = client.get("/").text
        assert driver.counts > made
        assert re.search(r'data-count="paused">1<', page)
        assert re.search(r'data-count="scheduled">0<', page)
        client.portal.call(kernel.stop)


def test_job_page(env: Env) -> None:
    page = env.client.get(f"/job?id={env.ids['cron']}").text
    assert page.count('class="local"') == 10
    assert "07:30" in page  # the job's own zone (UTC here)
    boom = env.client.get(f"/job?id={env.ids['boom']}").text
    assert "RuntimeError: the printer is on fire" in boom
    assert "Traceback" in boom
    assert env.client.get("/job?id=nope").status_code == 404


def test_static_job_in_its_zone(env: Env) -> None:
    jobs = env.call(env.kernel.list_tasks, "report")
    page = env.client.get(f"/job?id={jobs[0].id}").text
    assert "Europe/Berlin" in page
    assert page.count("09:00:00 CE") == 10


def test_filters(env: Env) -> None:
    page = env.client.get("/jobs", params={"task": "remind", "where": "user_id=3"}).text
    assert ids_on(page) == [env.ids["reminders"][3]]
    assert "1 matching job(s)" in page
    page = env.client.get("/jobs", params={"state": "failed"}).text
    assert ids_on(page) == [env.ids["boom"]]
    page = env.client.get("/jobs", params={"where": "user_id"}).text
    assert "expected key=value" in page
    page = env.client.get("/jobs", params={"state": "bogus"}).text
    assert 'class="error"' in page


def test_paging_lists_every_job_once(env: Env) -> None:
    seen: list[str] = []
    path: str | None = "/jobs?task=remind"
    pages = 0
    while path:
        page = env.client.get(path).text
        got = ids_on(page)
        assert len(got) <= 3
        seen += got
        pages += 1
        m = re.search(r'id="next-page" href="([^"]+)"', page)
        path = m.group(1).replace("&amp;", "&") if m else None
    expected = [*env.ids["reminders"], env.ids["cron"]]
    assert sorted(seen) == sorted(expected)
    assert len(seen) == len(set(seen)) == N_REMINDERS + 1
    assert pages >= 3


def test_actions_change_the_store(env: Env) -> None:
    rid = env.ids["reminders"][0]
    r = env.post("pause", rid)
    assert r.status_code == 303 and "msg=paused" in r.headers["location"]
    assert env.job(rid).state is JobState.PAUSED
    env.post("resume", rid)
    assert env.job(rid).state is JobState.SCHEDULED
    # retry a failed job: an extra run of it, which runs (and fails again) at once
    r = env.post("run_now", env.ids["boom"])
    m = re.search(r"extra\+job\+([0-9a-z]+)", r.headers["location"])
    assert m, r.headers["location"]
    extra = m.group(1)
    wait_until(lambda: len(env.call(env.kernel.get_runs, extra)) == 1)
    assert env.job(env.ids["boom"]).state is JobState.FAILED
    env.post("delete", rid)
    assert env.job(rid) is None
    r = env.post("delete", env.ids["boom"], form={"next": f"/job?id={env.ids['boom']}"})
    assert env.job(env.ids["boom"]) is None
    assert r.headers["location"].startswith("/jobs?")


def test_run_now_moves_a_one_off_job(env: Env) -> None:
    rid = env.ids["reminders"][6]
    before = env.job(rid).next_run_at
    env.post("run_now", rid)
    assert before is not None and before > env.kernel.clock.now()
    # it ran (hours early): its run is in the history, and the one-off job is done
    wait_until(lambda: len(env.call(env.kernel.get_runs, rid)) == 1)
    done = env.job(rid)
    assert done is None or done.state is JobState.COMPLETED


def test_csrf_and_origin_refused(env: Env) -> None:
    rid = env.ids["reminders"][1]
    r = env.post("pause", rid, form={"csrf": "forged"})
    assert r.status_code == 403
    r = env.post("pause", rid, headers={"origin": "http://evil.example"})
    assert r.status_code == 403
    r = env.post("pause", rid, headers={})
    assert r.status_code == 403
    r = env.post("pause", rid, headers={"referer": "http://evil.example/x"})
    assert r.status_code == 403
    assert env.job(rid).state is JobState.SCHEDULED
    # a GET never changes anything: the action route takes POST only
    assert env.client.get(f"/action?action=delete&id={rid}").status_code == 405
    assert env.job(rid) is not None
    # a same-origin Referer (no Origin) with the right token is accepted
    r = env.post("pause", rid, headers={"referer": f"{ORIGIN}/jobs"})
    assert r.status_code == 303
    assert env.job(rid).state is JobState.PAUSED


def test_token_needed_everywhere(tmp_path: Path) -> None:
    kernel = Kernel(_url("sqlite", tmp_path), tasks=registry())
    app = create_app(kernel, token="t0ken")
    with TestClient(app, base_url=ORIGIN) as client:
        assert client.portal is not None
        client.portal.call(kernel.open)
        try:
            ids = client.portal.call(fill, kernel)
            for path in ["/", "/jobs", "/timeline", "/failures", f"/job?id={ids['cron']}"]:
                r = client.get(path)
                assert r.status_code == 401 and "Sign in" in r.text
                assert "reminder" not in r.text
            assert client.get("/api/summary").status_code == 401
            r = client.post(
                "/action", data={"action": "delete", "id": ids["cron"]}, headers={"origin": ORIGIN}
            )
            assert r.status_code == 401
            assert client.get("/login?token=wrong").status_code == 401
            assert client.get("/", headers={"x-tickkit-token": "t0ken"}).status_code == 200
            assert client.get("/", headers={"authorization": "Bearer t0ken"}).status_code == 200
            r = client.get("/login?token=t0ken&next=/jobs", follow_redirects=False)
            assert r.status_code == 303 and r.headers["location"] == "/jobs"
            assert client.get("/jobs").status_code == 200
            csrf = client.cookies.get("tickkit_dashboard_csrf")
            r = client.post(
                "/action",
                data={"csrf": csrf, "action": "delete", "id": ids["cron"]},
                headers={"origin": ORIGIN},
                follow_redirects=False,
            )
            assert r.status_code == 303
            assert client.portal.call(kernel.get_task, ids["cron"]) is None
        finally:
            client.portal.call(kernel.stop)


def test_binding_elsewhere_needs_a_token() -> None:
    check_bind("127.0.0.1", None)
    check_bind("::1", None)
    check_bind("localhost", None)
    for host in ["0.0.0.0", "192.168.1.5", "::", "example.com"]:
        with pytest.raises(PluginError, match="without a token"):
            check_bind(host, None)
        check_bind(host, "secret")
    with pytest.raises(PluginError, match="non-empty"):
        check_bind("0.0.0.0", "  ")


def test_credentials_never_reach_a_page(tmp_path: Path) -> None:
    url = f"redis://:{SECRET}@127.0.0.1:1/0"
    with TestClient(create_app(url), base_url=ORIGIN) as client:
        r = client.get("/")
        assert r.status_code == 400
        assert "cannot open the store" in r.text
        assert SECRET not in r.text
        assert "redis://:***@127.0.0.1:1/0" in r.text


def test_url_source_opens_and_closes_its_kernel(tmp_path: Path) -> None:
    url = _url("sqlite", tmp_path)
    with TestClient(create_app(url), base_url=ORIGIN) as client:
        assert client.portal is not None
        # no store yet: the SQLite driver creates an empty one
        page = client.get("/jobs").text
        assert "0 matching job(s)" in page
        assert str(tmp_path) in page  # the store's URL (no credentials) is shown


def test_security_headers(env: Env) -> None:
    r = env.client.get("/")
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY"
    cookie = r.headers.get("set-cookie", "")
    assert "tickkit_dashboard_csrf" in cookie and "samesite=strict" in cookie.lower()


def test_live_fragment(env: Env) -> None:
    r = env.client.get("/", headers={"x-tickkit-live": "1"})
    assert r.status_code == 200
    assert "<html" not in r.text and "Overview" in r.text
    data = env.client.get("/api/summary").json()
    assert data["counts"]["failed"] == 1


def test_create_app_refuses_bad_arguments() -> None:
    with pytest.raises(PluginError, match="Kernel or a driver URL"):
        create_app(42)  # type: ignore[arg-type]
    with pytest.raises(PluginError, match="token"):
        create_app("memory://", token="")
    with pytest.raises(PluginError, match="page_size"):
        create_app("memory://", page_size=0)


# --- the CLI and the kernel setting -----------------------------------------------------------


def test_cli_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tickkit.plugins.cli.app import main

    db = tmp_path / "tasks.db"
    assert main(["dashboard", "--driver", f"sqlite:///{db}", "--host", "0.0.0.0"]) == 1
    assert "refuses to listen on '0.0.0.0' without a token" in capsys.readouterr().err
    assert main(["dashboard", "--driver", f"sqlite:///{db}"]) == 1
    assert "no SQLite store" in capsys.readouterr().err
    assert main(["dashboard", "--driver", "memory://"]) == 2
    assert "needs a persistent store" in capsys.readouterr().err
    assert main(["dashboard", "--driver", f"sqlite:///{db}", "--port", "99999"]) == 2
    assert not db.exists()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_served_beside_a_worker(tmp_path: Path) -> None:
    import httpx

    port = _free_port()
    kernel = Kernel(
        _url("sqlite", tmp_path),
        tasks=registry(),
        plugins=["tickkit.plugins.dashboard"],
        settings={"dashboard": {"port": port}},
    )
    async with kernel:
        ids = await fill(kernel)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(100):
                try:
                    r = await client.get("/jobs", params={"where": "user_id=5"})
                    break
                except httpx.TransportError:
                    await anyio.sleep(0.05)
            assert r.status_code == 200
            assert ids["reminders"][5] in r.text


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"host": "0.0.0.0"}, "without a token"),
        ({"port": "80"}, "port must be an int"),
        ({"colour": "red"}, "unknown dashboard setting"),
        ("yes", "must be a mapping"),
    ],
)
async def test_kernel_setting_refused(tmp_path: Path, setting: Any, message: str) -> None:
    kernel = Kernel(
        _url("sqlite", tmp_path),
        tasks=registry(),
        plugins=["tickkit.plugins.dashboard"],
        settings={"dashboard": setting},
    )
    with pytest.raises(PluginError, match=message):
        async with kernel:
            pass
    assert kernel.state == "stopped"


def test_mounted_in_another_app(tmp_path: Path) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    kernel = Kernel(_url("sqlite", tmp_path), tasks=registry())
    outer = Starlette(routes=[Mount("/tickkit", app=create_app(kernel))])
    with TestClient(outer, base_url=ORIGIN) as client:
        assert client.portal is not None
        client.portal.call(kernel.open)
        try:
            ids = client.portal.call(fill, kernel)
            page = client.get("/tickkit/jobs").text
            assert f'href="/tickkit/job?id={ids["cron"]}"' in page
            assert 'href="/tickkit/static/dashboard.css"' in page
            assert client.get("/tickkit/static/dashboard.css").status_code == 200
            csrf = client.cookies.get("tickkit_dashboard_csrf")
            r = client.post(
                "/tickkit/action",
                data={"csrf": csrf, "action": "pause", "id": ids["cron"], "next": "/tickkit/jobs"},
                headers={"origin": ORIGIN},
                follow_redirects=False,
            )
            assert r.status_code == 303 and r.headers["location"].startswith("/tickkit/jobs?")
            job = client.portal.call(kernel.get_task, ids["cron"])
            assert job is not None and job.state is JobState.PAUSED
        finally:
            client.portal.call(kernel.stop)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_port_in_use_does_not_end_the_worker(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        kernel = Kernel(
            _url("sqlite", tmp_path),
            tasks=registry(),
            plugins=["tickkit.plugins.dashboard"],
            settings={"dashboard": {"port": port}},
        )
        async with kernel:
            for _ in range(200):
                if "cannot listen" in caplog.text:
                    break
                await anyio.sleep(0.05)
            assert "cannot listen" in caplog.text
            assert kernel.state == "running"
            assert await kernel.count_tasks() == 1  # the static report job
        assert f"127.0.0.1:{port}" in caplog.text


def test_cli_port_in_use(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    from tickkit.plugins.cli.app import main

    db = tmp_path / "tasks.db"
    db.touch()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = main(["dashboard", "--driver", f"sqlite:///{db}", "--port", str(port)])
    assert code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_sign_in_cookie_is_not_the_token(tmp_path: Path) -> None:
    app = create_app(_url("sqlite", tmp_path), token="t0ken")
    with TestClient(app, base_url=ORIGIN) as client:
        client.get("/login?token=t0ken", follow_redirects=False)
        cookie = client.cookies.get("tickkit_dashboard_token")
        assert cookie and "t0ken" not in cookie
        assert client.get("/jobs").status_code == 200
        client.cookies.clear()
        client.cookies.set("tickkit_dashboard_token", "t0ken")
        assert client.get("/jobs").status_code == 401


def test_never_lists_a_whole_store(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every list the pages make is one page (a limit), so a store of a million jobs costs
    what a store of ten does (counts come from count_tasks)."""
    calls: list[dict[str, Any]] = []
    real = env.kernel.list_tasks

    async def recorded(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return await real(*args, **kwargs)

    monkeypatch.setattr(env.kernel, "list_tasks", recorded)
    for path in [
        "/",
        "/jobs",
        "/jobs?task=remind&where=user_id%3D3",
        f"/jobs?after={env.ids['reminders'][2]}",
        f"/job?id={env.ids['cron']}",
        "/timeline",
        "/failures",
        "/api/summary",
    ]:
        assert env.client.get(path).status_code == 200, path
    assert calls
    for kwargs in calls:
        assert kwargs.get("limit") is not None and 1 <= kwargs["limit"] <= 500, kwargs


def test_update_data_and_schedule(env: Env) -> None:
    rid = env.ids["reminders"][5]
    page = env.client.get(f"/job?id={rid}").text
    assert 'data-action="update"' in page
    r = env.post(
        "update", rid, form={"data": '{"user_id": 5, "text": "later"}', "schedule": "0 9 * * 1-5"}
    )
    assert r.status_code == 303 and "msg=updated" in r.headers["location"]
    job = env.job(rid)
    assert job.data == {"user_id": 5, "text": "later"}
    assert job.recurring and job.next_run_at.hour == 9
    r = env.post("update", rid, form={"data": "{not json"})
    assert "not+JSON" in r.headers["location"] or "not%20JSON" in r.headers["location"]
    assert env.job(rid).data == {"user_id": 5, "text": "later"}
    r = env.post("update", rid, form={"data": "1", "schedule": "every blue moon"})
    assert "msg=update" in r.headers["location"]
    assert env.job(rid).data == {"user_id": 5, "text": "later"}  # nothing stored


@pytest.mark.parametrize("target", ["//evil.example/x", "/\\evil.example", "https://evil.example"])
def test_no_open_redirect(env: Env, target: str) -> None:
    r = env.post("pause", env.ids["reminders"][0], form={"next": target})
    assert r.status_code == 303 and r.headers["location"].startswith("/jobs?")
    r = env.client.get("/login", params={"next": target}, follow_redirects=False)
    assert r.headers["location"] == "/"


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_on_trio_the_worker_runs_without_it(caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("trio")
    kernel = Kernel(
        "memory://",
        tasks=registry(),
        plugins=["tickkit.plugins.dashboard"],
        settings={"dashboard": {"port": 0}},
    )
    async with kernel:
        for _ in range(200):
            if "asyncio only" in caplog.text:
                break
            await anyio.sleep(0.01)
        assert "the dashboard server runs on asyncio only" in caplog.text
        assert kernel.state == "running"
