"""The dashboard's Starlette application: routes, safety (token, CSRF, same origin) and the
server-rendered pages (every value escaped with :func:`html.escape`)."""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from importlib import resources
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlencode, urlsplit

import anyio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from tickkit import (
    DriverError,
    InvalidDataError,
    Job,
    JobNotFoundError,
    JobState,
    Kernel,
    Outcome,
    RunRecord,
    TaskRegistry,
    TickkitError,
    redact,
    redact_url,
)
from tickkit.plugin_api import UTC, scrub

from . import tokens_equal

TOKEN_COOKIE = "tickkit_dashboard_token"
CSRF_COOKIE = "tickkit_dashboard_csrf"
#: the jobs an overview samples for the run counts of the last hour and day
SAMPLE_JOBS = 100
#: how the note under runs sampled from some jobs' history begins
SAMPLED = "Sampled from"
#: task names the overview shows, at most (those with the most jobs)
MAX_TASKS = 50
#: jobs the timeline shows, at most
TIMELINE_LIMIT = 200
STATES = [str(s) for s in JobState]
STATIC_FILES = {"dashboard.css": "text/css", "dashboard.js": "text/javascript"}

Handler = Callable[[Request], Awaitable[Response]]
T = TypeVar("T")

#: a count that took a while is reused for this many times what it took to make, so that a
#: store where counting 1,000,000 jobs takes seconds (Redis) is not counted again at every
#: page and poll; counts that took under COUNT_FAST seconds are never reused (an action
#: forgets them all). Real elapsed time: it measures the store's cost, not the schedule.
COUNT_REUSE = 10
COUNT_REUSE_MAX = 60.0
COUNT_FAST = 0.05
COUNTS_KEPT = 256


def e(value: object) -> str:
    """Escaped text for HTML (credentials of any URL in it masked)."""
    return html.escape(redact(str(value)), quote=True)


def iso(dt: datetime | None) -> str:
    return dt.astimezone(UTC).isoformat(timespec="seconds") if dt is not None else ""


def when(dt: datetime | None, *, zone_text: bool = False) -> str:
    """A ``<time>`` in UTC that the browser script shows in the viewer's zone too."""
    if dt is None:
        return "-"
    shown = dt if zone_text else dt.astimezone(UTC)
    text = shown.strftime("%Y-%m-%d %H:%M:%S ") + (shown.tzname() or "")
    return f'<time datetime="{e(iso(dt))}" class="t">{e(text)}</time>'


def compact(value: Any, limit: int = 120) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_where(items: list[str]) -> dict[str, Any]:
    """``key=value`` items; the value is read as a JSON scalar when it is one, else kept as
    the string typed (as ``tickkit list --where`` reads it)."""
    where: dict[str, Any] = {}
    for item in items:
        item = item.strip()
        if not item:
            continue
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"expected key=value, got {item!r}")
        try:
            value: Any = json.loads(raw)
        except (ValueError, RecursionError):
            value = raw
        if isinstance(value, (dict, list)):
            raise ValueError(f"the value of {item!r} is not a scalar")
        where[key] = value
    return where


def local_path(target: str) -> bool:
    """``target`` is a path on this server (not ``//host``, ``/\\host`` or a URL), so
    redirecting to it cannot send the browser elsewhere."""
    return (
        target.startswith("/")
        and not target.startswith(("//", "/\\"))
        and not any(c in target for c in "\r\n\t\\")
    )


def traceback_block(error: str) -> str:
    """A traceback folded under its last line."""
    lines = error.strip().splitlines()
    return (
        f"<details><summary>{e(lines[-1] if lines else 'error')}</summary>"
        f'<pre class="tb">{e(error)}</pre></details>'
    )


async def open_kernel(url: str) -> Kernel:
    """A kernel on ``url`` with its driver open (not dispatching). A failure is one
    :class:`~tickkit.DriverError` naming the store with its credentials masked."""
    kernel = Kernel(url, tasks=TaskRegistry(), settings={"reload": False})
    try:
        await kernel.open()
    except Exception as exc:
        if kernel.driver is not None:
            with anyio.CancelScope(shield=True):
                try:
                    await kernel.driver.stop()
                except Exception:
                    pass
        if isinstance(exc, TickkitError) and redact_url(url) != url:
            reason = scrub(str(exc), url)
        else:
            reason = scrub(f"{type(exc).__name__}: {' '.join(str(exc).split())}", url)
        raise DriverError(f"cannot open the store {redact_url(url)}: {reason}") from None
    return kernel


class Dashboard:
    def __init__(
        self,
        source: Kernel | str,
        *,
        token: str | None,
        refresh: float,
        page_size: int,
        title: str,
    ) -> None:
        self.source = source
        self.token = token
        self.refresh = refresh
        self.page_size = page_size
        self.title = title
        self._kernel: Kernel | None = source if isinstance(source, Kernel) else None
        self._owned = False
        self._lock = anyio.Lock()
        #: slow counts: key -> (reuse until (time.monotonic()), made at, value)
        self._counts: dict[tuple[Any, ...], tuple[float, float, Any]] = {}
        #: the sign-in cookie: derived from the token (the token itself is never stored in
        #: the browser)
        self.session = (
            hmac.new(token.encode(), b"tickkit-dashboard-session", hashlib.sha256).hexdigest()
            if token is not None
            else ""
        )

    # --- the store --------------------------------------------------------------------------

    @property
    def store_name(self) -> str:
        if isinstance(self.source, str):
            return redact_url(self.source)
        driver = self.source.driver
        return type(driver).__name__ if driver is not None else "not open"

    async def kernel(self) -> Kernel:
        if self._kernel is not None:
            return self._kernel
        async with self._lock:
            if self._kernel is None:
                assert isinstance(self.source, str)
                self._kernel = await open_kernel(self.source)
                self._owned = True
        return self._kernel

    async def close(self) -> None:
        if self._owned and self._kernel is not None:
            kernel, self._kernel, self._owned = self._kernel, None, False
            await kernel.stop()

    async def counted(self, key: tuple[Any, ...], make: Callable[[], Awaitable[T]]) -> T:
        """``make()``, or its value of a moment ago when it was slow (COUNT_REUSE)."""
        start = time.monotonic()
        kept = self._counts.get(key)
        if kept is not None and start < kept[0]:
            return kept[2]  # type: ignore[no-any-return]
        value = await make()
        took = time.monotonic() - start
        if took >= COUNT_FAST:
            if len(self._counts) >= COUNTS_KEPT:
                self._counts.clear()
            self._counts[key] = (
                start + took + min(COUNT_REUSE * took, COUNT_REUSE_MAX),
                start,
                value,
            )
        return value

    def counts_age(self) -> str:
        """A note on reused counts (empty when every count shown is fresh)."""
        now = time.monotonic()
        ages = [now - made for until, made, _v in self._counts.values() if now < until]
        if not ages:
            return ""
        return (
            f'<p class="note">Counts on this store are slow to make: those shown may be up to '
            f"{max(ages):.0f} s old (an action recounts).</p>"
        )

    def now(self) -> datetime:
        kernel = self._kernel
        return kernel.clock.now() if kernel is not None else datetime.now(UTC)

    def schedule_of(self, kernel: Kernel, job: Job) -> Any:
        if not job.schedule or kernel.hooks is None:
            return None
        try:
            return kernel.hooks.parse_spec(job.schedule)
        except Exception:
            return None

    # --- safety -----------------------------------------------------------------------------

    def authorized(self, request: Request) -> bool:
        if self.token is None:
            return True
        cookie = request.cookies.get(TOKEN_COOKIE)
        if cookie is not None:
            return tokens_equal(cookie, self.session)
        given = request.headers.get("x-tickkit-token")
        auth = request.headers.get("authorization", "")
        if given is None and auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        return tokens_equal(given, self.token)

    @staticmethod
    def same_origin(request: Request) -> bool:
        """The POST comes from a page of this dashboard: its Origin (or, without one, its
        Referer) is this server's scheme and host."""
        own = f"{request.url.scheme}://{request.url.netloc}"
        origin = request.headers.get("origin")
        if origin is not None and origin != "null":
            return origin.rstrip("/") == own
        referer = request.headers.get("referer")
        if referer:
            parts = urlsplit(referer)
            return f"{parts.scheme}://{parts.netloc}" == own
        return False

    def guard(self, handler: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            if not self.authorized(request):
                return self.login_page(request)
            try:
                response = await handler(request)
            except TickkitError as exc:
                response = self.page(request, "Error", f'<p class="error">{e(exc)}</p>', status=400)
            if CSRF_COOKIE not in request.cookies and isinstance(response, HTMLResponse):
                self.set_csrf(request, response)
            return response

        return guarded

    def csrf_token(self, request: Request) -> str:
        token = request.cookies.get(CSRF_COOKIE) or getattr(request.state, "csrf", None)
        if token is None:
            token = secrets.token_urlsafe(32)
            request.state.csrf = token
        return str(token)

    def set_csrf(self, request: Request, response: Response) -> None:
        response.set_cookie(
            CSRF_COOKIE,
            self.csrf_token(request),
            httponly=True,
            samesite="strict",
            path="/",
        )

    # --- rendering --------------------------------------------------------------------------

    def base(self, request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

    def url(self, request: Request, path: str, **query: Any) -> str:
        pairs = [(k, v) for k, v in query.items() if v not in (None, "", [])]
        flat: list[tuple[str, Any]] = []
        for k, v in pairs:
            if isinstance(v, list):
                flat += [(k, item) for item in v]
            else:
                flat.append((k, v))
        return self.base(request) + path + (f"?{urlencode(flat)}" if flat else "")

    def page(self, request: Request, title: str, body: str, *, status: int = 200) -> Response:
        body += self.counts_age()
        digest = hashlib.sha256(body.encode()).hexdigest()[:16]
        if request.headers.get("x-tickkit-live") == "1":
            return HTMLResponse(body, status_code=status, headers={"x-tickkit-digest": digest})
        b = self.base(request)
        here = ' class="here"'
        nav = "".join(
            f'<a href="{e(b + path)}"{here if request.url.path == b + path else ""}>{label}</a>'
            for path, label in [
                ("/", "Overview"),
                ("/jobs", "Jobs"),
                ("/timeline", "Timeline"),
                ("/failures", "Failures"),
            ]
        )
        doc = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)} · {e(self.title)}</title>
<link rel="stylesheet" href="{e(b)}/static/dashboard.css">
</head><body data-refresh="{self.refresh:g}">
<header><span class="brand">{e(self.title)}</span><nav>{nav}</nav>
<span class="store" title="store">{e(self.store_name)}</span>
<span class="live" id="live">live</span></header>
<main id="main" data-digest="{digest}">{body}</main>
<script src="{e(b)}/static/dashboard.js"></script>
</body></html>"""
        return HTMLResponse(doc, status_code=status)

    def login_page(self, request: Request) -> Response:
        if request.url.path.startswith(self.base(request) + "/api/") or request.method != "GET":
            return JSONResponse({"error": "a token is needed"}, status_code=401)
        body = f"""<h1>Sign in</h1>
<p>This dashboard needs its token (<code>--token</code> or
<code>TICKKIT_DASHBOARD_TOKEN</code>).</p>
<form method="get" action="{e(self.base(request))}/login" class="login">
<input type="password" name="token" placeholder="token" autocomplete="current-password" required>
<input type="hidden" name="next" value="{e(request.url.path)}">
<button type="submit">Sign in</button></form>"""
        return self.page(request, "Sign in", body, status=401)

    def action_form(
        self, request: Request, action: str, job_id: str, label: str, back: str, *, danger: bool
    ) -> str:
        cls = ' class="danger"' if danger else ""
        confirm = ' data-confirm="Delete this job?"' if action == "delete" else ""
        return (
            f'<form method="post" action="{e(self.base(request))}/action" class="inline"{confirm}>'
            f'<input type="hidden" name="csrf" value="{e(self.csrf_token(request))}">'
            f'<input type="hidden" name="action" value="{e(action)}">'
            f'<input type="hidden" name="id" value="{e(job_id)}">'
            f'<input type="hidden" name="next" value="{e(back)}">'
            f'<button type="submit"{cls} data-action="{e(action)}">{e(label)}</button></form>'
        )

    def actions(self, request: Request, job: Job, back: str) -> str:
        if job.id is None:
            return ""
        out = []
        if job.state is JobState.PAUSED:
            out.append(self.action_form(request, "resume", job.id, "Resume", back, danger=False))
        elif job.state in (JobState.SCHEDULED, JobState.RUNNING):
            out.append(self.action_form(request, "pause", job.id, "Pause", back, danger=False))
        label = "Retry" if job.state is JobState.FAILED else "Run now"
        out.append(self.action_form(request, "run_now", job.id, label, back, danger=False))
        out.append(self.action_form(request, "delete", job.id, "Delete", back, danger=True))
        return "".join(out)

    def edit_form(self, request: Request, job: Job, data: str, back: str) -> str:
        """Change the data and/or the schedule (``update_task``)."""
        if job.id is None or job.static:
            return ""
        return f"""<details class="edit"><summary>Edit data or schedule</summary>
<form method="post" action="{e(self.base(request))}/action" class="edit">
<input type="hidden" name="csrf" value="{e(self.csrf_token(request))}">
<input type="hidden" name="action" value="update">
<input type="hidden" name="id" value="{e(job.id)}">
<input type="hidden" name="next" value="{e(back)}">
<label>data (JSON)<textarea name="data" rows="6" cols="60">{e(data)}</textarea></label>
<label>new schedule (empty: unchanged; e.g. <code>0 9 * * 1-5</code>, <code>2h</code>,
an ISO time)<input name="schedule" size="40"></label>
<button type="submit" data-action="update">Save</button></form></details>"""

    def job_link(self, request: Request, job: Job) -> str:
        if job.id is None:
            return "-"
        return f'<a href="{e(self.url(request, "/job", id=job.id))}">{e(job.id)}</a>'

    def jobs_table(self, request: Request, jobs: list[Job], back: str) -> str:
        if not jobs:
            return '<p class="empty">no jobs</p>'
        rows = []
        for job in jobs:
            rows.append(
                f'<tr data-id="{e(job.id or "")}"><td>{self.job_link(request, job)}</td>'
                f"<td>{e(job.name)}</td>"
                f'<td><span class="state {e(job.state)}">{e(job.state)}</span></td>'
                f"<td>{when(job.next_run_at)}</td>"
                f"<td>{e(job.last_outcome or '-')}</td>"
                f'<td class="data">{e(compact(job.data))}</td>'
                f'<td class="actions">{self.actions(request, job, back)}</td></tr>'
            )
        return (
            '<table class="jobs"><thead><tr><th>id</th><th>task</th><th>state</th>'
            "<th>next run (UTC)</th><th>last outcome</th><th>data</th><th></th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>"
        )

    def flash(self, request: Request) -> str:
        msg = request.query_params.get("msg")
        return f'<p class="flash">{e(msg)}</p>' if msg else ""

    # --- pages ------------------------------------------------------------------------------

    async def overview(self, request: Request) -> Response:
        kernel = await self.kernel()
        now = self.now()
        by_state = {
            str(s): n for s, n in (await self.counted(("state",), kernel.count_by_state)).items()
        }
        total = sum(by_state.values())
        upcoming = await kernel.list_tasks(state="scheduled", limit=10)
        per_name = await self.counted(("task",), kernel.count_by_task)
        top = sorted(per_name.items(), key=lambda item: (-item[1], item[0]))[:MAX_TASKS]
        stats, note = await self.run_stats(kernel, now)
        state_cells = "".join(
            f'<a class="card {e(s)}" href="{e(self.url(request, "/jobs", state=s))}">'
            f'<span class="n" data-count="{e(s)}">{n}</span><span>{e(s)}</span></a>'
            for s, n in by_state.items()
        )
        task_rows = "".join(
            f'<tr><td><a href="{e(self.url(request, "/jobs", task=n))}">{e(n)}</a></td>'
            f"<td>{c}</td></tr>"
            for n, c in top
        )
        hidden = len(per_name) - len(top)
        more_tasks = (
            f'<p class="note" id="more-tasks">and {hidden} more task name(s) with fewer jobs</p>'
            if hidden > 0
            else ""
        )
        body = f"""{self.flash(request)}<h1>Overview</h1>
<section class="cards"><div class="card total"><span class="n">{total}</span><span>jobs</span></div>
{state_cells}</section>
<section class="cols"><div><h2>Runs</h2>
<table class="stats"><tr><th></th><th>runs</th><th>failures</th></tr>
<tr><td>last hour</td><td id="runs-hour">{stats["runs_hour"]}</td>
<td id="fail-hour">{stats["fail_hour"]}</td></tr>
<tr><td>last day</td><td id="runs-day">{stats["runs_day"]}</td>
<td id="fail-day">{stats["fail_day"]}</td></tr></table>
<p class="note" id="runs-note">{note}</p></div>
<div><h2>Jobs per task</h2>
<table class="stats">{task_rows or "<tr><td>none</td></tr>"}</table>{more_tasks}</div>
</section>
<h2>Next runs</h2>{self.jobs_table(request, upcoming, self.url(request, "/"))}"""
        return self.page(request, "Overview", body)

    async def run_stats(self, kernel: Kernel, now: datetime) -> tuple[dict[str, int], str]:
        """Runs and failures (failed or timed out) over the last hour and day, and a note
        saying how they were counted: from the store's run counters, or, for a driver that
        keeps none, sampled from the run history of some jobs."""
        hour = await kernel.count_runs(now - timedelta(hours=1))
        day = await kernel.count_runs(now - timedelta(days=1)) if hour is not None else None
        if hour is None or day is None:
            return await self.sampled_run_stats(kernel, now)
        bad = (Outcome.FAILED, Outcome.TIMED_OUT)
        stats = {
            "runs_hour": sum(hour.values()),
            "fail_hour": sum(hour[o] for o in bad),
            "runs_day": sum(day.values()),
            "fail_day": sum(day[o] for o in bad),
        }
        return stats, (
            "Every run the store recorded (whole minutes: the hour starts at the minute an "
            "hour ago); failures failed or timed out."
        )

    async def sampled_run_stats(self, kernel: Kernel, now: datetime) -> tuple[dict[str, int], str]:
        """The approximation for a driver without run counters: the run history of the jobs
        due soonest and of some failed ones."""
        sample = await kernel.list_tasks(limit=SAMPLE_JOBS)
        failed = await kernel.list_tasks(state="failed", limit=SAMPLE_JOBS // 2)
        hour, day = now - timedelta(hours=1), now - timedelta(days=1)
        stats = {"runs_hour": 0, "fail_hour": 0, "runs_day": 0, "fail_day": 0}
        seen: set[str] = set()
        for job in [*sample, *failed]:
            if job.id is None or job.id in seen or job.last_run_at is None:
                continue
            seen.add(job.id)
            if job.last_run_at < day:
                continue
            for run in await kernel.get_runs(job.id, limit=100):
                if run.finished_at is None or run.finished_at < day:
                    continue
                bad = str(run.outcome) not in ("succeeded", "skipped")
                stats["runs_day"] += 1
                stats["fail_day"] += bad
                if run.finished_at >= hour:
                    stats["runs_hour"] += 1
                    stats["fail_hour"] += bad
        return stats, (
            f"{SAMPLED} the run history of {len(seen)} jobs (the {SAMPLE_JOBS} due "
            f"soonest and up to {SAMPLE_JOBS // 2} failed ones): this store's driver keeps no "
            "run counters; jobs deleted since are not counted."
        )

    async def jobs(self, request: Request) -> Response:
        kernel = await self.kernel()
        q = request.query_params
        task = q.get("task") or None
        state = q.get("state") or None
        where_items = q.getlist("where")
        after = q.get("after") or None
        error = ""
        jobs: list[Job] = []
        count: int | None = None
        try:
            where = parse_where(where_items)
            count = await self.counted(
                ("jobs", task, json.dumps(where, sort_keys=True), state),
                lambda: kernel.count_tasks(task, where=where or None, state=state),
            )
            jobs = await kernel.list_tasks(
                task, where=where or None, state=state, limit=self.page_size, after=after
            )
        except JobNotFoundError:
            error = "the job this page started after is gone: start from the first page"
        except (TickkitError, ValueError) as exc:
            error = str(exc)
        except TypeError as exc:
            # a driver written before where/after: it refuses the keyword
            error = f"this store's driver cannot filter or page this way: {exc}"
        options = "".join(
            f'<option value="{e(s)}"{" selected" if s == state else ""}>{e(s or "any")}</option>'
            for s in ["", *STATES]
        )
        where_text = " ".join(where_items)
        here = self.url(request, "/jobs", task=task, state=state, where=where_items, after=after)
        more = ""
        if len(jobs) == self.page_size and jobs[-1].id is not None:
            nxt = self.url(
                request, "/jobs", task=task, state=state, where=where_items, after=jobs[-1].id
            )
            more = f'<a class="next" id="next-page" href="{e(nxt)}">next page →</a>'
        first = ""
        if after:
            start = self.url(request, "/jobs", task=task, state=state, where=where_items)
            first = f'<a class="first" href="{e(start)}">← first page</a>'
        body = f"""{self.flash(request)}<h1>Jobs</h1>
<form method="get" action="{e(self.base(request))}/jobs" class="filters" id="filters">
<label>task <input name="task" value="{e(task or "")}"></label>
<label>state <select name="state">{options}</select></label>
<label>data <input name="where" value="{e(where_text)}" placeholder="key=value"></label>
<button type="submit">Filter</button></form>
{f'<p class="error">{e(error)}</p>' if error else ""}
<p class="count">{"" if count is None else f"{count} matching job(s)"}</p>
{self.jobs_table(request, jobs, here)}
<p class="paging">{first} {more}</p>"""
        return self.page(request, "Jobs", body)

    async def job(self, request: Request) -> Response:
        kernel = await self.kernel()
        job_id = request.query_params.get("id", "")
        job = await kernel.get_task(job_id) if job_id else None
        runs: list[RunRecord] = await kernel.get_runs(job_id) if job_id else []
        if job is None:
            body = f'<h1>Job {e(job_id)}</h1><p class="error">no job with this id</p>'
            body += self.runs_table(runs)
            return self.page(request, "Job", body, status=404)
        schedule = self.schedule_of(kernel, job)
        fire: list[datetime] = []
        zone = getattr(schedule, "zone", None)
        if job.next_run_at is not None:
            # the next run, then the occurrences after the one it is for (a retry's next run is
            # not an occurrence of the schedule)
            at: datetime | None = job.next_run_at
            base = job.scheduled_at or job.next_run_at
            while at is not None and len(fire) < 10:
                fire.append(at.astimezone(zone) if zone is not None else at.astimezone(UTC))
                if schedule is None or not schedule.recurring:
                    break
                try:
                    at = base = schedule.next_fire(base)
                except Exception:
                    break
        fire_rows = "".join(
            f"<tr><td>{when(t, zone_text=True)}</td>"
            f'<td><time class="local" datetime="{e(iso(t))}">{e(iso(t))}</time></td></tr>'
            for t in fire
        )
        described = schedule.describe() if schedule is not None else "once"
        back = self.url(request, "/job", id=job.id)
        of_max = f" of {job.max_attempts}" if job.max_attempts else ""
        data = json.dumps(job.data, indent=2, ensure_ascii=False, sort_keys=True, default=repr)
        zone_name = getattr(zone, "key", None) or "UTC"
        body = f"""{self.flash(request)}<h1>Job <code>{e(job.id)}</code></h1>
<p class="actions">{self.actions(request, job, back)}</p>
<table class="kv">
<tr><th>task</th><td>{e(job.name)}</td></tr>
<tr><th>state</th>
<td><span class="state {e(job.state)}" id="job-state">{e(job.state)}</span></td></tr>
<tr><th>kind</th><td>{"static (defined in code)" if job.static else "dynamic"}</td></tr>
<tr><th>schedule</th><td id="schedule">{e(described)}</td></tr>
<tr><th>next run</th><td>{when(job.next_run_at)}</td></tr>
<tr><th>attempt</th><td>{job.attempt}{of_max}</td></tr>
<tr><th>runs</th><td>{job.runs}</td></tr>
<tr><th>created</th><td>{when(job.created_at)}</td></tr>
<tr><th>last run</th><td>{when(job.last_run_at)} {e(job.last_outcome or "")}</td></tr>
{f"<tr><th>defect</th><td>{e(job.defect)}</td></tr>" if job.defect else ""}
</table>
<h2>Data</h2><pre class="data" id="job-data">{e(data)}</pre>
{self.edit_form(request, job, data, back)}
<h2>Next {len(fire)} fire time(s)</h2>
<table class="fire"><thead><tr><th>in the job's zone ({e(zone_name)})</th>
<th>in yours</th></tr></thead>
<tbody>{fire_rows or '<tr><td colspan="2">none</td></tr>'}</tbody></table>
{f'<h2>Last error</h2><pre class="tb">{e(job.last_error)}</pre>' if job.last_error else ""}
<h2>Run history</h2>{self.runs_table(runs)}"""
        return self.page(request, f"Job {job.id}", body)

    @staticmethod
    def runs_table(runs: list[RunRecord]) -> str:
        if not runs:
            return '<p class="empty">no runs recorded</p>'
        rows = []
        for run in runs:
            tb = traceback_block(run.error) if run.error else ""
            rows.append(
                f"<tr><td>{when(run.finished_at)}</td><td>{when(run.scheduled_at)}</td>"
                f'<td>{run.attempt}</td><td><span class="outcome {e(run.outcome)}">'
                f"{e(run.outcome)}</span></td><td>{e(run.worker or '-')}</td><td>{tb}</td></tr>"
            )
        return (
            '<table class="runs"><thead><tr><th>finished</th><th>scheduled</th><th>attempt</th>'
            "<th>outcome</th><th>worker</th><th>error</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>"
        )

    async def timeline(self, request: Request) -> Response:
        kernel = await self.kernel()
        # whole minutes: the page stays the same (no live replacement) within a minute
        now = self.now().replace(second=0, microsecond=0)
        end = now + timedelta(hours=24)
        jobs: list[Job] = []
        after: Job | None = None
        # the scheduled jobs in time order, page by page, until one is due after 24 hours
        while len(jobs) < TIMELINE_LIMIT:
            page = await kernel.list_tasks(state="scheduled", limit=100, after=after)
            inside = [j for j in page if j.next_run_at is not None and j.next_run_at <= end]
            jobs += inside
            if len(inside) < len(page) or len(page) < 100:
                break
            after = page[-1]
        jobs = jobs[:TIMELINE_LIMIT]
        hours: dict[int, list[Job]] = {}
        for job in jobs:
            assert job.next_run_at is not None
            slot = max(0, int((job.next_run_at - now).total_seconds() // 3600))
            hours.setdefault(slot, []).append(job)
        blocks = []
        for slot in range(24):
            start = now + timedelta(hours=slot)
            items = "".join(
                f'<li>{when(j.next_run_at)} <a href="{e(self.url(request, "/job", id=j.id))}">'
                f'{e(j.name)}</a> <span class="muted">{e(j.id)}</span></li>'
                for j in hours.get(slot, [])
            )
            n = len(hours.get(slot, []))
            blocks.append(
                f'<div class="hour"><div class="label">{when(start)}'
                f'<span class="bar" style="width:{min(100, n * 5)}%"></span> {n}</div>'
                f"<ul>{items}</ul></div>"
            )
        capped = (
            f'<p class="note">showing the first {TIMELINE_LIMIT} runs</p>'
            if len(jobs) >= TIMELINE_LIMIT
            else ""
        )
        body = f"""<h1>The next 24 hours</h1>
<p class="note">{len(jobs)} scheduled job(s) due before {when(end)};
a recurring job shows its next run.</p>
{capped}<div class="timeline">{"".join(blocks)}</div>"""
        return self.page(request, "Timeline", body)

    async def failures(self, request: Request) -> Response:
        kernel = await self.kernel()
        after = request.query_params.get("after") or None
        count = await self.counted(
            ("jobs", None, "{}", "failed"), lambda: kernel.count_tasks(state="failed")
        )
        try:
            jobs = await kernel.list_tasks(state="failed", limit=self.page_size, after=after)
        except JobNotFoundError:
            jobs, after = await kernel.list_tasks(state="failed", limit=self.page_size), None
        back = self.url(request, "/failures", after=after)
        rows = []
        for job in jobs:
            err = job.last_error or ""
            if job.id is not None:
                # the traceback of the last failure is in the run history (when the store
                # keeps one); the job itself holds its last line
                last = await kernel.get_runs(job.id, limit=1)
                if last and last[0].error:
                    err = last[0].error
            rows.append(
                f'<tr data-id="{e(job.id or "")}"><td>{self.job_link(request, job)}</td>'
                f"<td>{e(job.name)}</td><td>{when(job.last_run_at)}</td><td>{job.attempt}</td>"
                f"<td>{traceback_block(err) if err else '-'}</td>"
                f'<td class="actions">{self.actions(request, job, back)}</td></tr>'
            )
        more = ""
        if len(jobs) == self.page_size and jobs[-1].id is not None:
            nxt = self.url(request, "/failures", after=jobs[-1].id)
            more = f'<a class="next" id="next-page" href="{e(nxt)}">next page →</a>'
        table = (
            '<table class="jobs"><thead><tr><th>id</th><th>task</th><th>failed</th>'
            f"<th>attempts</th><th>error</th><th></th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
            if rows
            else '<p class="empty">no failed jobs</p>'
        )
        body = f"""{self.flash(request)}<h1>Failures</h1>
<p class="count">{count} failed job(s): their last attempt failed with no retry left.
Retry runs the job once more (an extra run); delete removes it.</p>
{table}<p class="paging">{more}</p>"""
        return self.page(request, "Failures", body)

    async def api_summary(self, request: Request) -> Response:
        kernel = await self.kernel()
        now = self.now()
        counts = {
            str(s): n for s, n in (await self.counted(("state",), kernel.count_by_state)).items()
        }
        nxt = await kernel.list_tasks(state="scheduled", limit=1)
        stats, note = await self.run_stats(kernel, now)
        return JSONResponse(
            {
                "counts": counts,
                "next_run_at": iso(nxt[0].next_run_at) if nxt else None,
                "now": iso(now),
                "runs": {
                    "last_hour": {"runs": stats["runs_hour"], "failures": stats["fail_hour"]},
                    "last_day": {"runs": stats["runs_day"], "failures": stats["fail_day"]},
                    "sampled": note.startswith(SAMPLED),
                },
            }
        )

    # --- actions ----------------------------------------------------------------------------

    async def action(self, request: Request) -> Response:
        if not self.same_origin(request):
            return HTMLResponse("refused: this request does not come from the dashboard", 403)
        body = (await request.body()).decode("utf-8", "replace")
        form = {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}
        cookie = request.cookies.get(CSRF_COOKIE)
        if not cookie or not tokens_equal(form.get("csrf"), cookie):
            return HTMLResponse("refused: missing or wrong CSRF token (reload the page)", 403)
        kernel = await self.kernel()
        self._counts.clear()  # what the action changed is counted again
        action, job_id = form.get("action", ""), form.get("id", "")
        back = form.get("next") or self.url(request, "/jobs")
        if not back.startswith(self.base(request) + "/") or not local_path(back):
            back = self.url(request, "/jobs")
        try:
            if action == "pause":
                await kernel.pause_task(job_id)
                msg = f"paused {job_id}"
            elif action == "resume":
                await kernel.resume_task(job_id)
                msg = f"resumed {job_id}"
            elif action == "run_now":
                ran = await kernel.run_task_now(job_id)
                msg = f"{job_id} runs now" + (f" as the extra job {ran}" if ran != job_id else "")
            elif action == "update":
                changes: dict[str, Any] = {}
                if "data" in form:
                    try:
                        changes["data"] = json.loads(form["data"])
                    except (ValueError, RecursionError) as exc:
                        raise InvalidDataError(f"the data is not JSON: {exc}") from None
                if form.get("schedule", "").strip():
                    changes["schedule"] = form["schedule"].strip()
                await kernel.update_task(job_id, **changes)
                msg = f"updated {job_id}"
            elif action == "delete":
                gone = await kernel.delete_task(job_id)
                msg = f"deleted {job_id}" if gone else f"no job {job_id} to delete"
                if back.startswith(self.base(request) + "/job?"):
                    back = self.url(request, "/jobs")
            else:
                return HTMLResponse(f"unknown action {e(action)}", 400)
        except TickkitError as exc:
            msg = f"{action} {job_id}: {exc}"
        sep = "&" if "?" in back else "?"
        return RedirectResponse(f"{back}{sep}{urlencode({'msg': msg})}", status_code=303)

    async def login(self, request: Request) -> Response:
        given = request.query_params.get("token")
        nxt = request.query_params.get("next") or "/"
        if not local_path(nxt):
            nxt = "/"
        if self.token is None:
            return RedirectResponse(self.base(request) + nxt, status_code=303)
        if not tokens_equal(given, self.token):
            return self.login_page(request)
        response = RedirectResponse(
            nxt if nxt.startswith(self.base(request) + "/") else self.base(request) + nxt,
            status_code=303,
        )
        response.set_cookie(TOKEN_COOKIE, self.session, httponly=True, samesite="strict", path="/")
        return response

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC_FILES:
            return Response("not found", 404)
        text = resources.files(__package__).joinpath("static").joinpath(name).read_bytes()
        return Response(
            text, media_type=STATIC_FILES[name], headers={"cache-control": "max-age=300"}
        )


SECURITY_HEADERS: Mapping[str, str] = {
    "content-security-policy": (
        "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
}


def build_app(
    source: Kernel | str, *, token: str | None, refresh: float, page_size: int, title: str
) -> Starlette:
    dash = Dashboard(source, token=token, refresh=refresh, page_size=page_size, title=title)

    async def action(request: Request) -> Response:
        if not dash.authorized(request):
            return JSONResponse({"error": "a token is needed"}, status_code=401)
        return await dash.action(request)

    routes = [
        Route("/", dash.guard(dash.overview)),
        Route("/jobs", dash.guard(dash.jobs)),
        Route("/job", dash.guard(dash.job)),
        Route("/timeline", dash.guard(dash.timeline)),
        Route("/failures", dash.guard(dash.failures)),
        Route("/api/summary", dash.guard(dash.api_summary)),
        Route("/action", action, methods=["POST"]),
        Route("/login", dash.login),
        Route("/static/{name}", dash.static),
    ]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await dash.close()

    app = Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(SecurityHeaders)])
    app.state.dashboard = dash
    return app


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every HTTP response that does not set them."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                have = {k.lower() for k, _ in headers}
                headers += [
                    (k.encode(), v.encode())
                    for k, v in SECURITY_HEADERS.items()
                    if k.encode() not in have
                ]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with)
