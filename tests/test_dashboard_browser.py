"""The dashboard end to end in a real browser: Debian's chromium driven by selenium, against
``tickkit dashboard`` (a real uvicorn server in a process of its own, on a free port) on SQLite
and on Redis, while a worker of this test process runs the jobs.

With ``TICKKIT_SCREENSHOTS=1`` the SQLite run saves a screenshot of each page to
docs/dashboard/*.png (docs/dashboard.md shows them). Under ``CI=true`` a missing chromium or
chromedriver fails the run instead of skipping it.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.from_thread
import pytest

from tickkit import JobState, Kernel

from .dashboard_helpers import N_REMINDERS, SECRET, fill, registry, wait_until

pytestmark = pytest.mark.slow

CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
SHOTS = os.environ.get("TICKKIT_SCREENSHOTS", "").strip() == "1"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "dashboard"
PAGE_SIZE = 3
_T = TypeVar("_T")
EXTRA_REMINDERS = 5


def _need(what: str) -> None:
    if CI:
        pytest.fail(
            f"{what} is missing: .ci/run installs it (apt-get install chromium chromium-driver)"
        )
    pytest.skip(f"{what} is missing (apt-get install chromium chromium-driver)")


def _browser_paths() -> tuple[str, str]:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if binary is None:
        _need("chromium")
    if driver is None:
        _need("chromedriver")
    assert binary is not None and driver is not None
    return binary, driver


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    binary, driver_path = _browser_paths()
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _need("selenium (the test extra)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,900",
        "--lang=en-US",
    ):
        options.add_argument(arg)
    # the viewer is in another zone than the jobs: the page shows both
    service = Service(executable_path=driver_path, env={**os.environ, "TZ": "America/New_York"})
    drv = webdriver.Chrome(service=service, options=options)
    drv.set_page_load_timeout(30)
    try:
        yield drv
    finally:
        drv.quit()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Store:
    """A worker of this process on the store (in a thread with its own event loop)."""

    def __init__(self, portal: Any, kernel: Kernel, ids: dict[str, Any]) -> None:
        self.portal = portal
        self.kernel = kernel
        self.ids = ids

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return self.portal.call(lambda: fn(*args, **kwargs))

    def job(self, job_id: str) -> Any:
        return self.call(self.kernel.get_task, job_id)

    def ran(self, job_id: str) -> bool:
        """The one-off job ran: it is gone or completed (whatever the store's retention),
        having run once (not every driver of this base keeps a run history)."""
        job = self.job(job_id)
        return job is None or job.state is JobState.COMPLETED or job.runs >= 1


def _store_url(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'tasks.db'}"
    base: str = request.getfixturevalue("redis_url")
    import redis

    url = base.rsplit("/", 1)[0] + "/9"
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    yield from _store(request, tmp_path)


def _store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    url = _store_url(request.param, tmp_path, request)
    kernel = Kernel(url, tasks=registry())
    with anyio.from_thread.start_blocking_portal() as portal:
        running, _ = portal.start_task(kernel.serve)
        try:
            ids = portal.call(fill, kernel)
            now = kernel.clock.now()
            for i in range(EXTRA_REMINDERS):
                portal.call(
                    lambda i=i: kernel.create_task(
                        "remind", {"user_id": 10 + i}, now + timedelta(hours=30 + i)
                    )
                )
            s = Store(portal, kernel, ids)
            wait_until(lambda: s.job(ids["boom"]).state is JobState.FAILED)
            s.kind = request.param  # type: ignore[attr-defined]
            s.url = url  # type: ignore[attr-defined]
            yield s
        finally:
            portal.call(kernel.stop)
            running.result(timeout=30)


@pytest.fixture
def server(store: Store, tmp_path: Path) -> Iterator[str]:
    with _server(store, tmp_path) as base:
        yield base


@contextmanager
def _server(store: Store, tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    script = Path(sys.executable).with_name("tickkit")
    log = (tmp_path / "dashboard.log").open("wb")
    proc = subprocess.Popen(
        [
            str(script),
            "dashboard",
            "--driver",
            store.url,  # type: ignore[attr-defined]
            "--port",
            str(port),
            "--page-size",
            str(PAGE_SIZE),
            "--refresh",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.close()
                    raise AssertionError(
                        "the dashboard did not start: "
                        + (tmp_path / "dashboard.log").read_text(errors="replace")
                    ) from None
                time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def shot(browser: Any, store: Store, name: str) -> None:
    if SHOTS and store.kind == "sqlite":  # type: ignore[attr-defined]
        DOCS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(DOCS / f"{name}.png"))


def live(read: Callable[[], _T]) -> _T:
    """``read()`` of the page; again when the live update replaced an element meanwhile (the
    pages update themselves every second here)."""
    from selenium.common.exceptions import StaleElementReferenceException

    for _ in range(20):
        try:
            return read()
        except StaleElementReferenceException:
            time.sleep(0.1)
    raise AssertionError("the page kept changing")


def row_ids(browser: Any) -> list[str]:
    from selenium.webdriver.common.by import By

    return live(
        lambda: [
            el.get_attribute("data-id")
            for el in browser.find_elements(By.CSS_SELECTOR, "table.jobs tr[data-id]")
        ]
    )


def text_of(browser: Any, selector: str) -> str:
    from selenium.webdriver.common.by import By

    return str(live(lambda: browser.find_element(By.CSS_SELECTOR, selector).text))


def click(browser: Any, selector: str) -> None:
    """Click the element; again when the live update replaced it meanwhile."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    for _ in range(5):
        try:
            browser.find_element(By.CSS_SELECTOR, selector).click()
            return
        except StaleElementReferenceException:
            time.sleep(0.1)
    raise AssertionError(f"{selector} kept being replaced")


def click_action(browser: Any, action: str) -> None:
    before = browser.current_url
    click(browser, f'button[data-action="{action}"]')
    wait_until(lambda: browser.current_url != before and "msg=" in browser.current_url)


def test_in_a_real_browser(browser: Any, store: Store, server: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    # overview
    browser.get(server + "/")
    assert browser.title.startswith("Overview")
    assert text_of(browser, '[data-count="failed"]') == "1"
    assert SECRET not in browser.page_source
    shot(browser, store, "overview")

    # by state
    browser.get(server + "/jobs")
    Select(browser.find_element(By.NAME, "state")).select_by_value("failed")
    browser.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
    wait_until(lambda: "state=failed" in browser.current_url)
    assert row_ids(browser) == [store.ids["boom"]]

    # live update: a job created meanwhile shows without a reload
    browser.get(server + "/jobs?task=remind")
    count = text_of(browser, "p.count")
    store.call(store.kernel.create_task, "remind", {"user_id": 77}, "5h")
    wait_until(lambda: text_of(browser, "p.count") != count, 20)

    # a job's page: pause, resume, run now
    rid = store.ids["reminders"][1]
    browser.get(server + f"/job?id={rid}")
    assert "Run history" in browser.page_source
    click_action(browser, "pause")
    assert store.job(rid).state is JobState.PAUSED
    click_action(browser, "resume")
    assert store.job(rid).state is JobState.SCHEDULED
    click_action(browser, "run_now")
    wait_until(lambda: store.ran(rid))

    # the cron job: its next 10 fire times, converted to the viewer's zone by the script
    browser.get(server + f"/job?id={store.ids['cron']}")
    local = live(lambda: [t.text for t in browser.find_elements(By.CSS_SELECTOR, "time.local")])
    assert len(local) == 10
    assert all("+00:00" not in t for t in local)  # no longer the ISO text
    assert all(("EST" in t or "GMT-5" in t) for t in local)  # the viewer's zone
    # the static job of a task defined in Europe/Berlin: its zone and the viewer's
    report = store.call(store.kernel.list_tasks, "report")[0]
    browser.get(server + f"/job?id={report.id}")
    assert "Europe/Berlin" in browser.page_source
    shot(browser, store, "job")

    # delete (confirmed in the browser's dialog)
    rid = store.ids["reminders"][2]
    browser.get(server + f"/job?id={rid}")
    before = browser.current_url
    click(browser, 'button[data-action="delete"]')
    browser.switch_to.alert.accept()
    wait_until(lambda: browser.current_url != before and "msg=" in browser.current_url)
    assert store.job(rid) is None

    # timeline
    browser.get(server + "/timeline")
    assert "The next 24 hours" in browser.page_source
    assert store.ids["reminders"][4] in browser.page_source
    shot(browser, store, "timeline")

    # failures: the traceback, retry, delete
    browser.get(server + "/failures")
    browser.find_element(By.CSS_SELECTOR, "details summary").click()
    assert "RuntimeError: the printer is on fire" in browser.page_source
    shot(browser, store, "failures")
    boom = store.ids["boom"]
    click_action(browser, "run_now")
    m = re.search(r"extra\+job\+([0-9A-Za-z:_-]+)", browser.current_url)
    assert m, browser.current_url
    # the extra run ran (and failed again); the failed job itself is left as it was
    wait_until(lambda: store.job(m.group(1)).state is JobState.FAILED)
    assert store.job(boom).state is JobState.FAILED
    before = browser.current_url
    click(browser, f'tr[data-id="{boom}"] button[data-action="delete"]')
    browser.switch_to.alert.accept()
    wait_until(lambda: browser.current_url != before and "msg=" in browser.current_url)
    assert store.job(boom) is None


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=[pytest.mark.redis])])
def paged_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    yield from _store(request, tmp_path)


def test_filter_page_and_edit_in_a_real_browser(
    browser: Any, paged_store: Store, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    store = paged_store
    with _server(store, tmp_path) as server:
        # jobs: filter by task and data
        browser.get(server + "/jobs")
        form = browser.find_element(By.ID, "filters")
        form.find_element(By.NAME, "task").send_keys("remind")
        form.find_element(By.NAME, "where").send_keys("user_id=3")
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait_until(lambda: "where=" in browser.current_url)
        assert row_ids(browser) == [store.ids["reminders"][3]]
        # the markup in the job's data is shown as text, never run
        assert "<script>alert('x')</script>" in text_of(browser, "td.data")
        assert SECRET not in browser.page_source

        # page through every reminder, PAGE_SIZE at a time
        browser.get(server + "/jobs?task=remind")
        shot(browser, store, "jobs")
        seen: list[str] = []
        pages = 0
        while True:
            got = row_ids(browser)
            assert 0 < len(got) <= PAGE_SIZE
            seen += got
            pages += 1
            links = browser.find_elements(By.ID, "next-page")
            if not links:
                break
            links[0].click()
            wait_until(lambda got=got: row_ids(browser) != got or not row_ids(browser))
        assert len(seen) == len(set(seen)) == N_REMINDERS + 1 + EXTRA_REMINDERS
        assert pages >= 4

        # edit a job's data
        rid = store.ids["reminders"][5]
        browser.get(server + f"/job?id={rid}")
        click(browser, "details.edit summary")
        box = browser.find_element(By.CSS_SELECTOR, "form.edit textarea[name=data]")
        box.clear()
        box.send_keys('{"user_id": 5, "text": "edited in the browser"}')
        click_action(browser, "update")
        assert store.job(rid).data == {"user_id": 5, "text": "edited in the browser"}
