"""The Redis driver that speaks BullMQ 6's data format (see docs/drivers/bullmq.md)."""

from __future__ import annotations

import asyncio
import base64
import bisect
import itertools
import json
import logging
import math
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from importlib import resources
from typing import Any, Literal, overload
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio
import attrs

from tickkit import (
    Acquired,
    Claim,
    Driver,
    DriverContext,
    DriverError,
    InvalidArgumentError,
    InvalidDataError,
    InvalidScheduleError,
    Job,
    JobExistsError,
    JobState,
    MissingExtraError,
    Outcome,
    Plan,
    RunResult,
    redact,
    redact_url,
)
from tickkit.driver import (
    DEFAULT_HISTORY_LIMIT,
    DEFAULT_HISTORY_MAX_AGE,
    RUN_COUNTS_KEPT,
    UNSET,
    UTC,
    Cursor,
    RunRecord,
    Unset,
    Where,
    check_history_options,
    check_index_keys,
    from_millis,
    list_order,
    minute_of,
    scrub,
    select_jobs,
    to_millis,
)

# before .link, whose own guard then only meets a missing hiredis
try:
    import redis.asyncio as aioredis
    from redis.asyncio.connection import parse_url
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff
    from redis.exceptions import AuthenticationError, RedisError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise MissingExtraError("the redis:// driver", "redis", exc.name or "redis") from None

from . import mapping
from .link import Link, Script, Target, is_permanent

log = logging.getLogger("tickkit.drivers.bullmq")

_SCRIPTS = (
    "acquire",
    "add",
    "complete",
    "find",
    "index",
    "move_to",
    "next",
    "pause_job",
    "queue_pause",
    "release",
    "remove",
    "renew",
    "scheduler",
    "census",
    "stalled",
    "update",
)
#: containers a job can be in, checked in this order
#: the largest limit paged without the scan (a larger one is "everything": the scan reads every
#: job anyway, and Redis's counts are 64-bit, so limit + page_slack could not be sent)
_PAGE_LIMIT = 100_000
_ZSETS = ("delayed", "tk:paused", "prioritized", "completed", "failed")
_LISTS = ("wait", "active")
_WHERE = {"tk:paused": "paused"}
#: a container -> the state of the tickkit jobs in it (what mapping._STATE_OF gives)
_CONTAINER_STATE = {
    "delayed": JobState.SCHEDULED,
    "prioritized": JobState.SCHEDULED,
    "wait": JobState.SCHEDULED,
    "tk:paused": JobState.PAUSED,
    "active": JobState.RUNNING,
    "completed": JobState.COMPLETED,
    "failed": JobState.FAILED,
}
#: census.lua's codes for a job scheduler's state (mapping.scheduler_view's rules)
_SCHEDULER_STATE = {
    "bad": JobState.FAILED,
    "paused": JobState.PAUSED,
    "running": JobState.RUNNING,
    "scheduled": JobState.SCHEDULED,
    "completed": JobState.COMPLETED,
}
_MIN_REDIS = (6, 2)
_NO_TIME = datetime(1970, 1, 1, tzinfo=UTC)
#: how long a run-counter bucket lives after its last write: RUN_COUNTS_KEPT and an hour
_RUN_COUNTS_TTL_MS = int((RUN_COUNTS_KEPT + timedelta(hours=1)).total_seconds() * 1000)

Retention = bool | int | Mapping[str, int]

#: options a redis://, rediss:// or unix:// URL may carry (besides the credentials, host, port
#: and database of the URL itself)
URL_OPTIONS = (
    "queue",
    "prefix",
    "db",
    "socket_timeout",
    "socket_connect_timeout",
    "socket_keepalive",
    "health_check_interval",
    "ssl_cert_reqs",
    "ssl_ca_certs",
    "ssl_ca_path",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_check_hostname",
    "ssl_min_version",
    "ssl_ciphers",
    "history_limit",
    "history_max_age",
)
#: how long a management call (list, get, create... outside a worker) tries to reach Redis
MANAGEMENT_GIVE_UP = 5.0


def _invalid(url: str, shown: str, exc: BaseException) -> str:
    """The message for a URL a parser refused: the parser's own text only when the URL carries
    no credentials (a parser that cut an unencoded password at '/' or '?' quotes a piece of it)."""
    if shown != url:
        return (
            f"invalid Redis URL {shown!r} (the parser's message is withheld: it may quote a piece "
            "of the password; percent-encode '/', '#', '?' and '@' in a password)"
        )
    return scrub(f"invalid Redis URL {shown!r}: {exc}", url)


def _check_url(url: str) -> None:
    """Refuse a URL redis-py would fail on later with a bare TypeError or ValueError."""
    shown = redact_url(url)
    if "\x00" in url or any("\ud800" <= char <= "\udfff" for char in url):
        # (the kernel refuses such a URL too; from_url and the constructor are public)
        raise DriverError(
            f"Redis URL {shown!r} holds a NUL or a lone surrogate character; percent-encode it"
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        names = [name for name, _ in parse_qsl(parts.query, keep_blank_values=True)]
    except ValueError as exc:
        # a parser's message may echo a piece of an unencoded password: scrub names them all
        raise DriverError(_invalid(url, shown, exc)) from None
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise DriverError(f"not a redis://, rediss:// or unix:// URL: {shown!r}")
    for name in names:
        if name not in URL_OPTIONS:
            raise DriverError(
                scrub(
                    f"unknown option {name!r} in Redis URL {shown!r}; accepted options: "
                    f"{', '.join(URL_OPTIONS)}",
                    url,
                )
            )
        if name.startswith("ssl_") and parts.scheme != "rediss":
            # redis-py passes TLS options on to a plain connection, which fails with TypeError
            raise DriverError(
                scrub(f"option {name!r} in Redis URL {shown!r} needs a rediss:// URL (TLS)", url)
            )
    try:
        options = parse_url(url)
    except Exception as exc:
        raise DriverError(_invalid(url, shown, exc)) from None
    for name in ("socket_timeout", "socket_connect_timeout"):
        # 0, a negative, NaN or an infinity: redis-py versions differ (5.0 waits forever on 0)
        value = options.get(name)
        if value is not None and not (isinstance(value, float) and 0 < value < math.inf):
            raise DriverError(
                scrub(
                    f"option {name}={value!r} in Redis URL {shown!r} must be a number of "
                    "seconds above 0",
                    url,
                )
            )


def _permanent_redis_error(exc: BaseException) -> bool:
    """A redis-py error no reconnect cures: credentials refused, a database that is missing."""
    if isinstance(exc, AuthenticationError):
        return True
    text = str(exc)
    return is_permanent(text) or "Invalid Database" in text


class _Refused(DriverError):
    """Raised out of redis-py's retry loop for an error that must not be retried."""


class _Retry(Retry):
    """redis-py's retry, except that permanent errors (wrong password, NOAUTH, a missing
    database) end it at once."""

    async def call_with_retry(self, do: Any, fail: Any, *args: Any, **kwargs: Any) -> Any:
        async def guarded() -> Any:
            try:
                return await do()
            except RedisError as exc:
                if _permanent_redis_error(exc):
                    raise _Refused(f"Redis refused the connection: {redact(str(exc))}") from None
                raise

        return await super().call_with_retry(guarded, fail, *args, **kwargs)


def _load_lua() -> dict[str, str]:
    folder = resources.files(__package__).joinpath("lua")
    common = folder.joinpath("common.lua").read_text(encoding="utf-8")
    return {
        name: common + "\n" + folder.joinpath(f"{name}.lua").read_text(encoding="utf-8")
        for name in _SCRIPTS
    }


def _wrong_type(exc: Exception, what: str) -> str:
    """The defect of a record whose key Redis holds as another type than a hash."""
    if "WRONGTYPE" in str(exc):
        return f"the {what} key is not a hash (WRONGTYPE)"
    return f"the {what} record cannot be read: {redact(str(exc))}"


def _text(value: str) -> str:
    """An error text or traceback as valid UTF-8 (a lone surrogate from an exception message
    is written escaped): the outcome of a run is always recordable."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def _url_number(value: str) -> Any:
    """A number from a URL query option (left as text when it is none, for the check to name)."""
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return None if value.lower() == "none" else value


def _index_value(value: Any) -> str | None:
    """The index-set key part of a JSON scalar, as common.lua's indexValue writes it."""
    if isinstance(value, bool):
        return "b:true" if value else "b:false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return "s:" + value
    if isinstance(value, (int, float)):
        number = float(value)
        return "n:0" if number == 0 else "n:" + format(number, ".17g")
    return None


def _pairs(flat: Sequence[str]) -> dict[str, str]:
    """A hash as HGETALL returns it from a script (a flat list) -> a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _retention(value: Retention, what: str) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, Mapping) and set(value) <= {"count", "age"}:
        return dict(value)
    raise DriverError(
        f"{what} must be True, False, a count >= 0 or {{'count': n, 'age': seconds}}, got {value!r}"
    )


class BullMQDriver(Driver):
    """Jobs in Redis, in BullMQ 6's format, shared by any number of processes and hosts.

    ``url_or_connection``: a ``redis://`` or ``rediss://`` URL (password, database number and
    TLS come from it; ``?queue=...&prefix=...`` are accepted too) or a ``redis.asyncio.Redis``
    client. ``queue`` and ``prefix`` name the BullMQ queue (keys ``<prefix>:<queue>:...``).
    ``lock_duration`` (BullMQ's lockDuration, seconds) is the lease; ``stalled_interval`` and
    ``max_stalled_count`` follow BullMQ's stalled-job rules. ``remove_on_complete`` and
    ``remove_on_fail`` are BullMQ's retention options (True, False, a count or
    ``{"count", "age"}``), written into each job's opts so Node workers keep the same.
    """

    supports_trio = False
    fetches_on_complete = True
    #: members per census.lua call (count_jobs, count_by_name, pages): each call blocks Redis
    #: for about 10 ms at most (1-2 us per member)
    census_chunk = 10_000
    census_names_chunk = 5_000
    census_schedulers_chunk = 500
    #: a page reads this many more candidates than it lists (some turn out not to be jobs)
    page_slack = 16

    def __init__(
        self,
        url_or_connection: str | Any = "redis://localhost:6379/0",
        *,
        queue: str = "tickkit",
        prefix: str = "bull",
        lock_duration: float = 30.0,
        stalled_interval: float = 30.0,
        max_stalled_count: int = 1,
        remove_on_complete: Retention = 1000,
        remove_on_fail: Retention = False,
        poll_interval: float | None = 5.0,
        block_timeout: float = 10.0,
        connect_retries: int = 20,
        history_limit: int = DEFAULT_HISTORY_LIMIT,
        history_max_age: float | timedelta | None = DEFAULT_HISTORY_MAX_AGE,
    ) -> None:
        if not isinstance(queue, str) or not queue or ":" in queue:
            raise DriverError(f"invalid BullMQ queue name {queue!r}: non-empty, without ':'")
        if not isinstance(prefix, str) or not prefix:
            raise DriverError(f"invalid BullMQ key prefix {prefix!r}")
        if lock_duration <= 0 or stalled_interval <= 0 or max_stalled_count < 0:
            raise DriverError(
                f"lock_duration ({lock_duration!r}) and stalled_interval ({stalled_interval!r}) "
                f"must be > 0 and max_stalled_count ({max_stalled_count!r}) >= 0"
            )
        self.history_limit, self.history_max_age = check_history_options(
            history_limit, history_max_age
        )
        self._url: str | None = url_or_connection if isinstance(url_or_connection, str) else None
        self._given = None if isinstance(url_or_connection, str) else url_or_connection
        if self._url is not None:
            _check_url(self._url)
        self.queue = queue
        self.prefix = prefix
        self.key = f"{prefix}:{queue}:"
        self.lease_duration = float(lock_duration)
        self.stalled_interval = float(stalled_interval)
        self.max_stalled_count = int(max_stalled_count)
        self.poll_interval = poll_interval
        self.block_timeout = float(block_timeout)
        self.connect_retries = connect_retries
        self._retention = {
            "removeOnComplete": _retention(remove_on_complete, "remove_on_complete"),
            "removeOnFail": _retention(remove_on_fail, "remove_on_fail"),
        }
        self._keep_complete = json.dumps(self._retention["removeOnComplete"])
        self._keep_fail = json.dumps(self._retention["removeOnFail"])
        self._redis: Any = None
        self._blocker: Any = None
        self._scripts: dict[str, Script] = {}
        self._link: Link | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping: anyio.Event | None = None
        self._io = 0
        #: the next delayed time the kernel was told (ms), to ignore markers it knows about
        self._next_due_ms: int | None = None
        self._seq = itertools.count(1)
        #: set while our last claim found fewer jobs than asked: only then does the marker
        #: listener block (a busy worker finds new jobs through its own calls)
        self._drained: asyncio.Event | None = None

    def __repr__(self) -> str:
        where = redact_url(self._url) if self._url is not None else "a given client"
        return f"<BullMQDriver {where} queue={self.queue!r} prefix={self.prefix!r}>"

    @classmethod
    def from_url(cls, url: str, **options: Any) -> BullMQDriver:
        _check_url(url)
        parts = urlsplit(url)
        query = []
        for name, value in parse_qsl(parts.query):
            if name in ("queue", "prefix"):
                options.setdefault(name, value)
            elif name in ("history_limit", "history_max_age"):
                options.setdefault(name, _url_number(value))
            else:
                query.append((name, value))
        try:
            return cls(urlunsplit(parts._replace(query=urlencode(query))), **options)
        except (DriverError, InvalidArgumentError) as exc:
            # a queue or prefix taken from a URL whose password holds a raw '?' is a piece of it
            raise type(exc)(scrub(str(exc), url)) from None

    # --- connections ----------------------------------------------------------------------

    def _client_options(self) -> dict[str, Any]:
        # management calls go through this client: a few tries within a few seconds, then a
        # clear DriverError (a worker's own calls go through the link and retry for longer)
        return {
            "decode_responses": True,
            # (redis-py nests the connect retry inside the command retry: 3 and 3, ~3.5 s)
            "retry": _Retry(ExponentialBackoff(cap=1.0, base=0.05), min(self.connect_retries, 3)),
            "retry_on_error": [RedisConnectionError, RedisTimeoutError, ConnectionError],
            "health_check_interval": 15,
            "socket_connect_timeout": 2.0,
        }

    def _blocker_options(self) -> dict[str, Any]:
        """The marker connection: no retry inside redis-py, the listener retries (and logs)."""
        return {
            **self._client_options(),
            "retry": _Retry(ExponentialBackoff(cap=1.0, base=0.05), 0),
            "socket_timeout": None,
        }

    async def start(self, ctx: DriverContext) -> None:
        self.ctx = ctx
        name = f"{self.prefix}:{base64.b64encode(self.queue.encode()).decode()}"
        if self._url is not None:
            self._redis = aioredis.from_url(self._url, **self._client_options())
            # the blocking connection carries BullMQ's worker name, so dashboards list us
            self._blocker = aioredis.from_url(
                self._url, **self._blocker_options(), client_name=name
            )
        else:
            pool = self._given.connection_pool
            self._redis = self._given
            kwargs = {**pool.connection_kwargs, **self._blocker_options(), "client_name": name}
            self._blocker = aioredis.Redis(
                connection_pool=aioredis.ConnectionPool(
                    connection_class=pool.connection_class, **kwargs
                )
            )
        async with self._busy():
            info = await self._redis.info("server")
            version = tuple(int(p) for p in str(info.get("redis_version", "0.0")).split(".")[:2])
            if version < _MIN_REDIS:
                raise DriverError(
                    f"the BullMQ driver needs Redis 6.2 or newer; this server runs "
                    f"{info.get('redis_version')!r}"
                )
            policy = (await self._redis.config_get("maxmemory-policy")).get("maxmemory-policy")
            if policy not in (None, "noeviction"):
                log.warning(
                    "Redis maxmemory-policy is %r: set it to 'noeviction' or jobs may be evicted",
                    policy,
                )
        self._stopping = anyio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._scripts = {n: Script(src) for n, src in _load_lua().items()}
        target = (
            Target.from_url(self._url) if self._url is not None else Target.from_client(self._given)
        )
        self._link = Link(target, retries=self.connect_retries, give_up_after=MANAGEMENT_GIVE_UP)

    def _start_worker_tasks(self) -> None:
        """Start blocking on the marker and checking for stalled jobs: a worker's duties,
        begun at the first claim, so a kernel that only manages jobs (opened, not started)
        does neither, as a Node BullMQ Queue does neither."""
        if not self._tasks:
            if self._link is not None:
                self._link.give_up_after = None  # a worker keeps trying (and logs each try)
            self._tasks = [
                asyncio.create_task(self._listen(), name="tickkit-bullmq-marker"),
                asyncio.create_task(self._stalled_loop(), name="tickkit-bullmq-stalled"),
            ]

    async def stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()
        for task in self._tasks:
            if task.get_name() != "tickkit-bullmq-stalled":
                task.cancel()
        for task in self._tasks:
            try:
                await task
            except BaseException:
                pass
        self._tasks = []
        if self._blocker is not None:
            await self._blocker.aclose()
            self._blocker = None
        if self._link is not None:
            await self._link.close()
            self._link = None
        if self._redis is not None and self._given is None:
            await self._redis.aclose()
        self._redis = None

    def io_pending(self) -> bool:
        return self._io > 0

    @asynccontextmanager
    async def _busy(self) -> AsyncIterator[None]:
        """Count a management call in flight, and turn redis-py's errors into a DriverError
        whose message carries no credentials."""
        self._io += 1
        try:
            yield
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            raise DriverError(
                f"Redis call failed ({self._where()}): {type(exc).__name__}: {redact(str(exc))}"
            ) from None
        finally:
            self._io -= 1

    def _where(self) -> str:
        return redact_url(self._url) if self._url is not None else "a given client"

    async def _run(self, script: str, *args: Any) -> Any:
        link = self._link
        assert link is not None
        self._io += 1  # what _busy() does, inline: this is the per-job path
        try:
            return await link.run(self._scripts[script], (self.key, *args))
        finally:
            self._io -= 1

    def _now_ms(self) -> int:
        return to_millis(self.ctx.clock.now())

    # --- background: the marker and the stalled-job check ----------------------------------

    async def _listen(self) -> None:
        """Block on the queue's marker (no polling) and wake the kernel when work arrives."""
        delay = 0.05
        drained = self._drained
        assert drained is not None
        while True:
            await drained.wait()
            try:
                got = await self._blocker.bzpopmin(self.key + "marker", timeout=self.block_timeout)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "waiting on the BullMQ marker failed (%s); reconnecting in %.2fs",
                    redact(str(exc)) or type(exc).__name__,
                    delay,
                )
                await asyncio.sleep(delay)  # a network retry: real time, not the kernel's clock
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.05
            if got is None:
                continue
            _key, member, score = got
            known = self._next_due_ms
            if member == "1" and known is not None and float(score) >= known:
                continue  # a delayed job no earlier than the one the kernel waits for
            self.ctx.notify()

    async def _stalled_loop(self) -> None:
        stopping = self._stopping
        assert stopping is not None
        while not stopping.is_set():
            try:
                moved = await self.check_stalled()
                if moved:
                    log.warning("returned %d stalled job(s) to wait: %s", len(moved), moved)
                    self.ctx.notify()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("the stalled-job check failed: %s", exc)
            # locks expire in Redis's own (real) time, so this interval is real time too
            with anyio.move_on_after(self.stalled_interval):
                await stopping.wait()

    async def check_stalled(self) -> list[str]:
        """Run BullMQ's stalled-job check now (at most once per interval across workers)."""
        return list(
            await self._run(
                "stalled",
                self._now_ms(),
                self.max_stalled_count,
                int(self.stalled_interval * 1000),
            )
        )

    # --- managing jobs ----------------------------------------------------------------------

    def check_id(self, job_id: str) -> None:
        """BullMQ's id rules and the queue's own key names (see mapping.RESERVED_IDS)."""
        mapping.check_job_id(job_id)

    async def add_job(self, job: Job, *, replace: bool = False, _check_id: bool = True) -> str:
        if job.schedule is not None and job.schedule.get("type") in mapping.RECURRING_TYPES:
            return await self._add_scheduler(job, "replace" if replace else "create")
        if job.schedule is not None and job.schedule.get("type") not in mapping.ONE_OFF_TYPES:
            mapping.spec_to_repeat(job.schedule)  # raises the explanatory error
        if job.id is not None and _check_id:
            mapping.check_job_id(job.id)
        now = self._now_ms()
        at = to_millis(job.next_run_at) if job.next_run_at is not None else now
        opts = mapping.job_opts(job, self._retention)
        if job.id is not None:
            opts["jobId"] = job.id
        if at > now:
            opts["delay"] = at - now
        extra: dict[str, Any] = {"tk.at": at}
        if job.meta:
            extra["tk.meta"] = json.dumps(job.meta)
        if job.schedule is not None:
            extra["tk.spec"] = json.dumps(job.schedule)
        if job.static:
            extra["tk.static"] = "1"
        result = await self._run(
            "add",
            now,
            job.id or "",
            job.name,
            self.ctx.encode_data(job),
            json.dumps(opts),
            at,
            json.dumps(extra),
            "1" if replace else "0",
            "1" if job.state is JobState.PAUSED else "0",
        )
        if isinstance(result, list):
            raise JobExistsError(
                f"a job with id {job.id!r} exists; pass replace=True to replace it"
            )
        return str(result)

    async def _add_scheduler(self, job: Job, mode: str, *, check_id: bool = True) -> str:
        assert job.schedule is not None
        scheduler_id = job.id or uuid.uuid4().hex
        if check_id:
            mapping.check_job_id(scheduler_id)
        repeat = mapping.spec_to_repeat(job.schedule)
        now = self._now_ms()
        first = to_millis(job.next_run_at) if job.next_run_at is not None else now
        extra: dict[str, Any] = {"tk.created": to_millis(job.created_at or self.ctx.clock.now())}
        if job.meta:
            extra["tk.meta"] = json.dumps(job.meta)
        if job.static:
            extra["tk.static"] = "1"
        result = await self._run(
            "scheduler",
            now,
            scheduler_id,
            job.name,
            self.ctx.encode_data(job),
            json.dumps(mapping.job_opts(job, self._retention)),
            json.dumps(repeat),
            first,
            mode,
            json.dumps(extra),
            "1" if job.state is JobState.PAUSED else "0",
        )
        if result[0] == "exists":
            raise JobExistsError(
                f"a job with id {scheduler_id!r} exists; pass replace=True to replace it"
            )
        return scheduler_id

    async def sync_static(self, jobs: Sequence[Job], now: datetime) -> None:
        wanted: set[str] = set()
        for job in jobs:
            assert job.id is not None
            wanted.add(job.id)
            if job.schedule is not None and job.schedule.get("type") in mapping.RECURRING_TYPES:
                if job.next_run_at is None:
                    continue
                await self._add_scheduler(job, "keep")
            else:
                await self._sync_static_one_off(job)
        async with self._busy():
            if wanted:
                await self._redis.sadd(self.key + "tk:static", *wanted)
            stored = await self._redis.smembers(self.key + "tk:static")
        for gone in set(stored) - wanted:
            await self._run("remove", self._now_ms(), gone)

    async def _sync_static_one_off(self, job: Job) -> None:
        """A static task with a one-off schedule: a job with the task's name as custom id."""
        assert job.id is not None
        async with self._busy():
            spec, static = await self._redis.hmget(self.key + job.id, "tk.spec", "tk.static")
        if static == "1" and spec is not None and mapping.parse_json(spec) == job.schedule:
            return
        if job.next_run_at is None:
            return
        await self.add_job(job, replace=True)

    async def get_job(self, job_id: str) -> Job | None:
        async with self._busy():
            pipe = self._redis.pipeline(transaction=True)
            pipe.hgetall(f"{self.key}repeat:{job_id}")
            pipe.zscore(self.key + "repeat", job_id)
            pipe.hgetall(self.key + job_id)
            sh, next_ms, h = await pipe.execute(raise_on_error=False)
        if isinstance(sh, Exception):
            return mapping.unreadable_view(job_id, None, _wrong_type(sh, "job scheduler"))
        if isinstance(next_ms, Exception):
            next_ms = None
        if sh:
            current_id = f"repeat:{job_id}:{int(next_ms)}" if next_ms is not None else None
            current: dict[str, str] | None = None
            where: str | None = None
            if current_id is not None:
                current, where, _ = await self._locate(current_id)
                if isinstance(current, Exception):
                    current = None
            return mapping.scheduler_view(self.ctx.codec, job_id, sh, next_ms, current, where)
        if not h:
            return None
        h, where, score = await self._locate(job_id)
        if isinstance(h, Exception):
            return mapping.unreadable_view(job_id, where, _wrong_type(h, "job"))
        if not h:
            return None
        return mapping.one_off_view(self.ctx.codec, job_id, h, where, score)

    async def _locate(self, job_id: str) -> tuple[Any, str | None, float | None]:
        """A job's hash (or the error reading it: a key of another type), the container it is
        in and its score there (one transaction)."""
        async with self._busy():
            pipe = self._redis.pipeline(transaction=True)
            pipe.hgetall(self.key + job_id)
            for name in _ZSETS:
                pipe.zscore(self.key + name, job_id)
            for name in _LISTS:
                pipe.lpos(self.key + name, job_id)
            h, *found = await pipe.execute(raise_on_error=False)
        for name, value in zip((*_ZSETS, *_LISTS), found, strict=False):
            if value is not None:
                return h, _WHERE.get(name, name), float(value) if name in _ZSETS else None
        return h, None, None

    async def _snapshot(self) -> tuple[dict[str, tuple[str, float | None]], dict[str, float]]:
        """Every job id with its container and score, and every scheduler with its next run."""
        async with self._busy():
            pipe = self._redis.pipeline(transaction=True)
            for name in _ZSETS:
                pipe.zrange(self.key + name, 0, -1, withscores=True)
            for name in _LISTS:
                pipe.lrange(self.key + name, 0, -1)
            pipe.zrange(self.key + "repeat", 0, -1, withscores=True)
            *found, schedulers = await pipe.execute()
        where: dict[str, tuple[str, float | None]] = {}
        for name, members in zip((*_ZSETS, *_LISTS), found, strict=False):
            for member in members:
                job_id, score = member if name in _ZSETS else (member, None)
                where.setdefault(job_id, (_WHERE.get(name, name), score))
        return where, {sid: score for sid, score in schedulers}

    async def list_jobs(
        self,
        *,
        name: str | None = None,
        state: JobState | None = None,
        static: bool | None = None,
        where: Where | None = None,
        limit: int | None = None,
        after: Cursor | None = None,
    ) -> list[Job]:
        if where:
            jobs = await self._find(where)
            if jobs is not None:
                return select_jobs(
                    jobs,
                    name=name,
                    state=state,
                    static=static,
                    where=where,
                    limit=limit,
                    after=after,
                )
        if static is None and not where and limit is not None and 0 <= limit <= _PAGE_LIMIT:
            return await self._page(state, limit, after, name)
        return select_jobs(
            await self._all_jobs(),
            name=name,
            state=state,
            static=static,
            where=where,
            limit=limit,
            after=after,
        )

    # --- a page without reading every job (list_jobs(limit=...) without name or where) ----

    async def _page(
        self, state: JobState | None, limit: int, after: Cursor | None, name: str | None = None
    ) -> list[Job]:
        """The page select_jobs would cut from every job, reading the containers' members
        (ids and scores), the few fields of the jobs in wait (their time is in their hash) and
        the hashes of the jobs on the page only: first the jobs with a next run, merged from
        the sources in the list order (delayed and tk:paused by score, wait and prioritized
        by nominal time, schedulers by their next run), then the others by id. With ``name``
        the hashes are read in that order until the page is full (a rare name reads many)."""
        if limit == 0:
            return []

        def keep(job: Job) -> bool:
            return (state is None or job.state is state) and (name is None or job.name == name)

        position = list_order(after) if after is not None else None
        wanted = {c for c, s in _CONTAINER_STATE.items() if state is None or s is state} | (
            {"completed"} if state is JobState.MISSED else set()
        )
        codes = await self._scheduler_codes()
        ready: list[tuple[tuple[bool, datetime, str], str, str]] = []
        untimed: dict[str, str] = {}
        for container in ("prioritized", "wait"):
            if container in wanted:
                await self._ready_jobs(container, ready, untimed)
        for sid, score, code in codes:
            if code in ("scheduled", "paused") and state in (None, _SCHEDULER_STATE[code]):
                ready.append(((False, from_millis(score), sid), sid, "s"))
        found: list[Job] = []
        cache: dict[str, Job | None] = {}
        if position is None or not position[0]:
            found = await self._timed_page(keep, limit, position, wanted, ready, cache)
        if len(found) < limit:
            found += await self._untimed_page(
                state, keep, limit - len(found), position, wanted, untimed, codes, cache
            )
        return found

    async def _scheduler_codes(self) -> list[tuple[str, float, str]]:
        """Every job scheduler with its next run (ms) and census.lua's code for its state."""
        async with self._busy():
            schedulers = await self._redis.zrange(self.key + "repeat", 0, -1, withscores=True)
        found: list[tuple[str, float, str]] = []
        step = self.census_schedulers_chunk
        for first in range(0, len(schedulers), step):
            args: list[Any] = []
            for sid, score in schedulers[first : first + step]:
                args.extend((sid, repr(float(score))))
            out = await self._run("census", "schedulers", *args)
            for (sid, score), code in zip(schedulers[first : first + step], out[::2], strict=True):
                if code:
                    found.append((sid, float(score), code))
        return found

    async def _ready_jobs(
        self,
        container: str,
        ready: list[tuple[tuple[bool, datetime, str], str, str]],
        untimed: dict[str, str],
    ) -> None:
        """The jobs of wait or prioritized with their list position (their nominal time, read
        from a few fields); those without one (a key that is not a hash, an unreadable time)
        go to ``untimed``."""
        kind = "l" if container in _LISTS else "z"
        start, chunk = 0, self.census_names_chunk
        while True:
            out = await self._run(
                "census", "fields", container, kind, start, start + chunk - 1,
                *mapping.NOMINAL_FIELDS,
            )  # fmt: skip
            for i in range(1, len(out), 3):
                job_id, kind, value = out[i], out[i + 1], out[i + 2]
                at = None
                if kind == "at":
                    text = value
                    if len(text) <= 15:  # (exact in a float: what mapping's readers go through)
                        try:
                            at = from_millis(int(text))
                        except (ValueError, OverflowError):
                            at = None
                    else:
                        at = mapping.ms_of(str(mapping.int_of(text)))
                elif kind == "hash":
                    fields = zip(mapping.NOMINAL_FIELDS, value, strict=True)
                    at = mapping.nominal_of({k: v for k, v in fields if v is not None})
                if at is None:
                    untimed.setdefault(job_id, container)
                else:
                    ready.append(((False, at, job_id), job_id, container))
            if int(out[0]) < chunk:
                return
            start += chunk

    async def _timed_page(
        self,
        keep: Callable[[Job], bool],
        limit: int,
        position: tuple[bool, datetime, str] | None,
        wanted: set[str],
        ready: list[tuple[tuple[bool, datetime, str], str, str]],
        cache: dict[str, Job | None],
    ) -> list[Job]:
        """The first ``limit`` jobs with a next run after ``position``: the first ``n`` members
        of delayed and tk:paused from the position's time on, merged with ``ready``; only the
        keys before the last millisecond read of a zset not read to its end are sure (more
        members may share it), else ``n`` grows and the merge starts over."""
        zsets = [z for z in ("delayed", "tk:paused") if z in wanted]
        low_ms = to_millis(position[1]) if position is not None else None
        n = limit + self.page_slack
        while True:
            candidates = [c for c in ready if position is None or c[0] > position]
            bound: tuple[bool, datetime, str] | None = None
            for name in zsets:
                scale = 4096 if name == "delayed" else 1
                low = "-inf" if low_ms is None else low_ms * scale
                async with self._busy():
                    members = await self._redis.zrangebyscore(
                        self.key + name, low, "+inf", start=0, num=n, withscores=True
                    )
                for job_id, score in members:
                    if job_id.startswith("repeat:"):
                        continue
                    ms = int(score) // 4096 if name == "delayed" else score
                    key = (False, from_millis(ms), job_id)
                    if position is None or key > position:
                        candidates.append((key, job_id, name))
                if len(members) == n:
                    last = members[-1][1]
                    edge = (False, from_millis(int(last) // 4096 if scale > 1 else last), "")
                    bound = edge if bound is None else min(bound, edge)
            candidates.sort()
            if bound is not None:
                candidates = [c for c in candidates if c[0] < bound]
            found: list[Job] = []
            for batch in self._batches(candidates, limit):
                await self._materialize(batch, cache)
                for key, job_id, _ in batch:
                    job = cache.get(job_id)
                    if job is None or list_order(job) != key:
                        continue  # gone, or not where its container put it (unreadable)
                    if keep(job):
                        found.append(job)
                        if len(found) == limit:
                            return found
            if bound is None:
                return found
            n *= 4

    async def _untimed_page(
        self,
        state: JobState | None,
        keep: Callable[[Job], bool],
        limit: int,
        position: tuple[bool, datetime, str] | None,
        wanted: set[str],
        untimed: dict[str, str],
        codes: list[tuple[str, float, str]],
        cache: dict[str, Job | None],
    ) -> list[Job]:
        """The first ``limit`` jobs without a next run (after ``position``), by id: the
        members of active, completed and failed, the members of the other containers whose
        key is not a hash, the jobs of wait without a time, the schedulers that wait on
        nothing."""
        ids: dict[str, str] = {}
        async with self._busy():
            pipe = self._redis.pipeline(transaction=True)
            names: list[str] = [c for c in ("completed", "failed", "active") if c in wanted]
            for name in names:
                if name in _LISTS:
                    pipe.lrange(self.key + name, 0, -1)
                else:
                    pipe.zrange(self.key + name, 0, -1)
            listed = await pipe.execute()
        for name in ("delayed", "tk:paused"):
            if name in wanted:
                for job_id in await self._not_hashes(name):
                    ids.setdefault(job_id, name)
        for name, members in zip(names, listed, strict=True):
            for job_id in members:
                if not job_id.startswith("repeat:"):
                    ids.setdefault(job_id, name)
        for job_id, name in untimed.items():
            ids.setdefault(job_id, name)
        for sid, _score, code in codes:
            if code not in ("scheduled", "paused") and state in (None, _SCHEDULER_STATE[code]):
                ids[sid] = "s"
        order = sorted(ids)
        if position is not None and position[0]:
            order = order[bisect.bisect_right(order, position[2]) :]
        found: list[Job] = []
        keyed = [((True, _NO_TIME, i), i, ids[i]) for i in order]
        for batch in self._batches(keyed, limit):
            await self._materialize(batch, cache)
            for _, job_id, _ in batch:
                job = cache.get(job_id)
                if job is None or job.next_run_at is not None:
                    continue
                if keep(job):
                    found.append(job)
                    if len(found) == limit:
                        return found
        return found

    def _batches(self, items: list[Any], limit: int) -> Iterator[list[Any]]:
        """``items`` in batches of ``limit`` + page_slack, doubling up to 2,000 (a filter that
        keeps few of the jobs read reads on in bigger pipelines)."""
        first, step = 0, limit + self.page_slack
        while first < len(items):
            yield items[first : first + step]
            first += step
            step = min(step * 2, max(2000, limit))

    async def _not_hashes(self, container: str) -> list[str]:
        """The members of a zset container whose key is of another type than a hash."""
        found: list[str] = []
        start, chunk = 0, self.census_chunk
        while True:
            out = await self._run("census", "types", container, "z", start, start + chunk - 1)
            found.extend(out[1:])
            if int(out[0]) < chunk:
                return found
            start += chunk

    async def _materialize(
        self, batch: Sequence[tuple[Any, str, str]], cache: dict[str, Job | None]
    ) -> None:
        """The jobs of ``(key, id, container or "s" for a scheduler)`` into ``cache`` (None: no
        job), as the scan reads them."""
        todo = [(job_id, where) for _, job_id, where in batch if job_id not in cache]
        if not todo:
            return
        async with self._busy():
            pipe = self._redis.pipeline(transaction=False)
            for job_id, where in todo:
                if where == "s":
                    pipe.hgetall(f"{self.key}repeat:{job_id}")
                    pipe.zscore(self.key + "repeat", job_id)
                else:
                    pipe.hgetall(self.key + job_id)
                    pipe.zscore(self.key + where, job_id) if where in _ZSETS else pipe.echo("")
            found = await pipe.execute(raise_on_error=False)
        for (job_id, where), h, score in zip(todo, found[::2], found[1::2], strict=True):
            if isinstance(score, Exception) or score == "":
                score = None
            if where == "s":
                cache[job_id] = await self._scheduler_job(job_id, h, score)
                continue
            container = _WHERE.get(where, where)
            if isinstance(h, Exception):
                cache[job_id] = mapping.unreadable_view(job_id, container, _wrong_type(h, "job"))
            elif h:
                cache[job_id] = mapping.one_off_view(self.ctx.codec, job_id, h, container, score)
            else:
                cache[job_id] = None

    async def _scheduler_job(self, sid: str, sh: Any, score: float | None) -> Job | None:
        """A job scheduler as the scan reads it (its pending job located)."""
        if isinstance(sh, Exception):
            return mapping.unreadable_view(sid, None, _wrong_type(sh, "job scheduler"))
        if not sh or score is None:
            return None
        current, where, _ = await self._locate(f"repeat:{sid}:{int(score)}")
        if isinstance(current, Exception):
            current = None
        return mapping.scheduler_view(self.ctx.codec, sid, sh, score, current or None, where)

    async def count_jobs(
        self,
        *,
        name: str | None = None,
        state: JobState | None = None,
        static: bool | None = None,
        where: Where | None = None,
    ) -> dict[JobState, int]:
        if static is not None or where:
            return await self._count_scan(name=name, state=state, static=static, where=where)
        if name is None:
            totals = await self._census(state, names=False)
            return {s: n for s, n in totals.items() if n}
        counts: dict[JobState, int] = {}
        for s, by_name in (await self._census(state, names=True)).items():
            if by_name.get(name):
                counts[s] = by_name[name]
        return counts

    async def count_by_name(self, *, state: JobState | None = None) -> dict[str, int]:
        counts: dict[str, int] = {}
        for by_name in (await self._census(state, names=True)).values():
            for job_name, n in by_name.items():
                counts[job_name] = counts.get(job_name, 0) + n
        return {job_name: n for job_name, n in counts.items() if n}

    async def _count_scan(
        self,
        *,
        name: str | None = None,
        state: JobState | None = None,
        static: bool | None = None,
        where: Where | None = None,
    ) -> dict[JobState, int]:
        """count_jobs by listing every matching job (the filters sizes cannot answer; the
        oracle of the census in the tests): the base class's count."""
        return await super().count_jobs(name=name, state=state, static=static, where=where)

    @overload
    async def _census(
        self, state: JobState | None, *, names: Literal[False]
    ) -> dict[JobState, int]: ...

    @overload
    async def _census(
        self, state: JobState | None, *, names: Literal[True]
    ) -> dict[JobState, dict[str, int]]: ...

    async def _census(self, state: JobState | None, *, names: bool) -> Any:
        """Jobs per state (per state and name with ``names``) as the scan would list them,
        from the containers' members (census.lua, a chunk at a time, never a whole hash):
        every member of a state's containers is a job of that state, except the scheduler
        occurrences (``repeat:*`` ids) and, in ``completed``, the MISSED one-off jobs; each
        job scheduler is one job, in the state its hash and its pending job give.
        Without ``names`` no key per job is read but in ``completed`` (tk.outcome)."""
        totals: dict[JobState, Any] = {}

        def add(s: JobState, job_name: str, n: int) -> None:
            if names:
                by_name = totals.setdefault(s, {})
                by_name[job_name] = by_name.get(job_name, 0) + n
            else:
                totals[s] = totals.get(s, 0) + n

        containers = [c for c, s in _CONTAINER_STATE.items() if state is None or s is state] + (
            ["completed"] if state is JobState.MISSED else []
        )
        chunk = self.census_names_chunk if names else self.census_chunk
        for container in containers:
            kind = "l" if container in _LISTS else "z"
            done = "1" if container == "completed" else "0"
            s = _CONTAINER_STATE[container]
            start = 0
            while True:
                out = await self._run(
                    "census",
                    "jobs",
                    container,
                    kind,
                    start,
                    start + chunk - 1,
                    "names" if names else "count",
                    done,
                )
                if names:
                    for job_name, n in _pairs(out[1]).items():
                        add(s, job_name, int(n))
                    for job_name, n in _pairs(out[2]).items():
                        add(JobState.MISSED, job_name, int(n))
                else:
                    add(s, "", int(out[0]) - int(out[1]) - int(out[2]))
                    add(JobState.MISSED, "", int(out[2]))
                if int(out[0]) < chunk:
                    break
                start += chunk
        async with self._busy():
            schedulers = await self._redis.zrange(self.key + "repeat", 0, -1, withscores=True)
        for first in range(0, len(schedulers), self.census_schedulers_chunk):
            args: list[Any] = []
            for sid, score in schedulers[first : first + self.census_schedulers_chunk]:
                args.extend((sid, repr(float(score))))
            out = await self._run("census", "schedulers", *args)
            for code, job_name in zip(out[::2], out[1::2], strict=True):
                if code:
                    add(_SCHEDULER_STATE[code], job_name, 1)
        if state is not None:
            return {state: totals.get(state, {} if names else 0)}
        return totals

    async def update_job(
        self,
        job_id: str,
        *,
        data: Any = UNSET,
        schedule: dict[str, Any] | Unset | None = UNSET,
        next_run_at: datetime | Unset | None = UNSET,
    ) -> Job | None:
        repeat = ""
        spec = ""
        if not isinstance(schedule, Unset) and schedule is not None:
            if schedule.get("type") in mapping.RECURRING_TYPES:
                repeat = json.dumps(mapping.spec_to_repeat(schedule))
            elif schedule.get("type") not in mapping.ONE_OFF_TYPES:
                mapping.spec_to_repeat(schedule)  # raises the explanatory error
            spec = json.dumps(schedule)
        data_text = "" if data is UNSET else self.ctx.codec.encode(data)
        next_ms = (
            to_millis(next_run_at)
            if not isinstance(next_run_at, Unset) and next_run_at is not None
            else ""
        )
        result = await self._run(
            "update",
            self._now_ms(),
            job_id,
            "0" if data is UNSET else "1",
            data_text,
            "0" if isinstance(schedule, Unset) else "1",
            repeat,
            "0" if isinstance(next_run_at, Unset) else "1",
            next_ms,
            spec,
        )
        if result[0] == "missing":
            return None
        if result[0] == "kind":
            # a one-off job becomes recurring (a BullMQ job scheduler) or back: the job is
            # replaced under its id in one script (a running occurrence finishes unrecorded)
            current = await self.get_job(job_id)
            if current is None:
                return None
            assert not isinstance(schedule, Unset)
            replacement = attrs.evolve(
                current,
                data=current.data if data is UNSET else data,
                schedule=schedule,
                next_run_at=None if isinstance(next_run_at, Unset) else next_run_at,
                scheduled_at=None if isinstance(next_run_at, Unset) else next_run_at,
                attempt=0,
                state=JobState.PAUSED if current.state is JobState.PAUSED else JobState.SCHEDULED,
            )
            if repeat:
                # (an id BullMQ numbered is kept: the scheduler's key `repeat:<id>` and its jobs
                # `repeat:<id>:<ms>` collide with no numbered job, and the counter never
                # gives that number again)
                await self._add_scheduler(replacement, "replace", check_id=False)
            else:
                await self.add_job(replacement, replace=True, _check_id=False)
        return await self.get_job(job_id)

    async def get_runs(self, job_id: str, *, limit: int = 20) -> list[RunRecord]:
        if limit <= 0:
            return []
        oldest: int | str = "-inf"
        if self.history_max_age is not None:
            oldest = self._now_ms() - int(self.history_max_age * 1000)
        async with self._busy():
            try:
                members = await self._redis.zrevrangebyscore(
                    f"{self.key}tk:runs:{job_id}", "+inf", oldest, start=0, num=limit
                )
            except RedisError as exc:
                if "WRONGTYPE" in str(exc):
                    return []
                raise
        runs: list[RunRecord] = []
        for member in members:
            try:
                r = json.loads(member)
                runs.append(
                    RunRecord(
                        job_id=job_id,
                        name=str(r["n"]),
                        scheduled_at=from_millis(r["s"]) if r.get("s") is not None else None,
                        started_at=from_millis(r["b"]) if r.get("b") is not None else None,
                        finished_at=from_millis(r["f"]),
                        attempt=int(r["a"]),
                        outcome=Outcome(r["o"]),
                        error=r.get("e"),
                        worker=r.get("w"),
                    )
                )
            except (ValueError, TypeError, KeyError, AttributeError):
                log.warning("skipped an unreadable run record of job %s: %.200r", job_id, member)
        runs.sort(key=lambda run: (run.finished_at, run.attempt), reverse=True)
        return runs

    # --- indexes ----------------------------------------------------------------------------

    def _index_key(self, key: str, value: Any) -> str | None:
        part = _index_value(value)
        return None if part is None else f"{self.key}tk:idx:{key}:{part}"

    async def _find(self, where: Where) -> list[Job] | None:
        """The jobs the index sets give for ``where`` (a superset of the matches: the caller
        filters), read in one script; None when no key of ``where`` is indexed (scan)."""
        args: list[str] = []
        for k, v in where.items():
            part = _index_value(v)
            if part is None:
                return []  # a where value that is not a scalar matches nothing
            args.extend((k, f"tk:idx:{k}:{part}"))
        result = await self._run("find", *args)
        if result[0] == "scan":
            return None
        jobs: list[Job] = []
        codec = self.ctx.codec
        for row in result[1:]:
            job_id, kind = row[0], row[1]
            if kind == "s":
                current = _pairs(row[4]) if row[4] else None
                jobs.append(
                    mapping.scheduler_view(
                        codec,
                        job_id,
                        _pairs(row[2]),
                        float(row[3]) if row[3] is not None else None,
                        current,
                        _WHERE.get(row[5], row[5]) if row[5] else None,
                    )
                )
            elif kind == "j":
                container = _WHERE.get(row[3], row[3]) if row[3] else None
                score = float(row[4]) if row[4] is not None else None
                jobs.append(mapping.one_off_view(codec, job_id, _pairs(row[2]), container, score))
            else:
                reason = f"the {row[2]} key is not a hash (it holds a {row[3]})"
                jobs.append(mapping.unreadable_view(job_id, None, reason))
        return jobs

    async def _indexed_ids(self, where: Where) -> set[str] | None:
        """The ids the index sets give for ``where`` (a superset of the matches: the caller
        filters), or None when no key of ``where`` is indexed (the caller scans)."""
        keys = {k: self._index_key(k, v) for k, v in where.items()}
        async with self._busy():
            pipe = self._redis.pipeline(transaction=True)
            pipe.smembers(self.key + "tk:indexes:ready")
            for index_key in keys.values():
                if index_key is not None:
                    pipe.smembers(index_key)
            ready, *members = await pipe.execute()
        found: set[str] | None = None
        sets = iter(members)
        for k, index_key in keys.items():
            if index_key is None:
                continue  # (a where value that is not a scalar matches nothing)
            ids = set(next(sets))
            if k in ready:
                found = ids if found is None else found & ids
        return found

    async def ensure_indexes(self, keys: Iterable[str]) -> None:
        """Record ``keys`` as indexed (every process's scripts then index writes) and index
        the jobs stored before (once per key: a key is used for ``where`` only when its
        backfill finished)."""
        wanted = sorted(check_index_keys(list(keys), "ensure_indexes"))
        if not wanted:
            return
        async with self._busy():
            pipe = self._redis.pipeline(transaction=True)
            pipe.sadd(self.key + "tk:indexes", *wanted)
            pipe.smembers(self.key + "tk:indexes:ready")
            _, ready = await pipe.execute()
        missing = [k for k in wanted if k not in ready]
        if missing:
            await self.reindex(missing)

    async def reindex(self, keys: Iterable[str] | None = None) -> int:
        """Index every stored job under ``keys`` (default: every recorded index key), e.g.
        after Node BullMQ wrote jobs (its scripts do not index). Returns the jobs seen."""
        async with self._busy():
            recorded = await self._redis.smembers(self.key + "tk:indexes")
        chosen = sorted(set(keys) if keys is not None else set(recorded))
        if not chosen:
            return 0
        where, schedulers = await self._snapshot()
        ids = [i for i in where if ":" not in i] + list(schedulers)
        seen = 0
        for start in range(0, len(ids), 500):
            seen += int(await self._run("index", json.dumps(chosen), *ids[start : start + 500]))
        async with self._busy():
            await self._redis.sadd(self.key + "tk:indexes:ready", *chosen)
        return seen

    async def _all_jobs(self) -> list[Job]:
        """Every tickkit job (a scan of the whole queue)."""
        where, schedulers = await self._snapshot()
        ids = [job_id for job_id in where if not job_id.startswith("repeat:")]
        hashes = await self._hgetall_many(
            [self.key + job_id for job_id in ids]
            + [f"{self.key}repeat:{sid}" for sid in schedulers]
        )
        jobs: list[Job] = []
        for job_id, h in zip(ids, hashes[: len(ids)], strict=False):
            container, score = where[job_id]
            if isinstance(h, Exception):
                jobs.append(mapping.unreadable_view(job_id, container, _wrong_type(h, "job")))
            elif h:
                jobs.append(mapping.one_off_view(self.ctx.codec, job_id, h, container, score))
        currents = [f"repeat:{sid}:{int(score)}" for sid, score in schedulers.items()]
        current_hashes = await self._hgetall_many([self.key + c for c in currents])
        for (sid, score), sh, current_id, ch in zip(
            schedulers.items(), hashes[len(ids) :], currents, current_hashes, strict=False
        ):
            if isinstance(ch, Exception):
                ch = None
            if isinstance(sh, Exception):
                jobs.append(mapping.unreadable_view(sid, None, _wrong_type(sh, "job scheduler")))
            elif sh:
                container = where.get(current_id, (None, None))[0]
                jobs.append(
                    mapping.scheduler_view(self.ctx.codec, sid, sh, score, ch or None, container)
                )
        return jobs

    async def _hgetall_many(self, keys: list[str], chunk: int = 2000) -> list[Any]:
        """HGETALL of many keys, a pipeline of ``chunk`` at a time (one pipeline of a whole
        queue of 1,000,000 jobs timed out writing to the socket); an error is returned in
        place of its hash, as ``execute(raise_on_error=False)`` does."""
        found: list[Any] = []
        for start in range(0, len(keys), chunk):
            async with self._busy():
                pipe = self._redis.pipeline(transaction=False)
                for key in keys[start : start + chunk]:
                    pipe.hgetall(key)
                found.extend(await pipe.execute(raise_on_error=False))
        return found

    async def queue_counts(self) -> dict[str, int]:
        """Jobs per BullMQ state, as Node's ``Queue.getJobCounts()`` reports them."""
        async with self._busy():
            pipe = self._redis.pipeline(transaction=True)
            for name in ("wait", "active", "paused"):
                pipe.llen(self.key + name)
            for name in ("delayed", "prioritized", "completed", "failed", "waiting-children"):
                pipe.zcard(self.key + name)
            values = await pipe.execute()
        names = ("wait", "active", "paused", "delayed", "prioritized", "completed", "failed")
        counts = dict(zip(names, values, strict=False))
        counts["waiting-children"] = values[-1]
        return counts

    async def remove_job(self, job_id: str) -> bool:
        result = int(await self._run("remove", self._now_ms(), job_id))
        if result == -8:
            raise DriverError(
                f"job {job_id!r} is the pending job of a job scheduler: delete the scheduler "
                "(its id is the part between 'repeat:' and the last ':') instead"
            )
        return result == 1

    async def remove_jobs(self, *, name: str) -> int:
        removed = 0
        for job in await self.list_jobs(name=name, static=False):
            assert job.id is not None
            if int(await self._run("remove", self._now_ms(), job.id)) == 1:
                removed += 1
        return removed

    async def set_paused(self, job_id: str, paused: bool) -> Job | None:
        if not int(await self._run("pause_job", self._now_ms(), job_id, "1" if paused else "0")):
            return None
        return await self.get_job(job_id)

    async def move_to(self, job_id: str, when: datetime) -> bool:
        return bool(int(await self._run("move_to", self._now_ms(), job_id, to_millis(when))))

    # --- the queue ------------------------------------------------------------------------

    async def pause_queue(self) -> None:
        """Pause the whole queue like BullMQ 6's ``Queue.pause()`` (every worker stops taking
        jobs, Node's included; running jobs finish)."""
        await self._run("queue_pause", "paused")

    async def resume_queue(self) -> None:
        """Resume the queue like BullMQ 6's ``Queue.resume()``."""
        await self._run("queue_pause", "resumed")
        self.ctx.notify()

    async def queue_paused(self) -> bool:
        async with self._busy():
            return bool(await self._redis.hexists(self.key + "meta", "paused"))

    # --- running jobs ---------------------------------------------------------------------

    async def acquire(
        self, *, now: datetime, limit: int, exclude: frozenset[str] = frozenset()
    ) -> Acquired:
        # ``exclude`` cannot be honoured: BullMQ takes jobs in queue order (see the docs)
        if not self._tasks:
            self._start_worker_tasks()
        result = await self._run("acquire", to_millis(now), limit, *self._take_args())
        return await self._taken(result, now, limit)

    async def complete_and_acquire(
        self,
        claim: Claim,
        result: RunResult,
        *,
        now: datetime,
        limit: int,
        exclude: frozenset[str] = frozenset(),
    ) -> Acquired:
        if claim.handle is None:
            return await self.acquire(now=now, limit=limit, exclude=exclude)
        job_id = claim.handle[0]
        out = await self._finish(claim, result, fetch=limit, now=now)
        code = int(out[0])
        if code != 0:
            log.warning("the outcome of job %s was not recorded (lock lost, code %s)", job_id, code)
        return await self._taken(out[1:], now, limit)

    def _take_args(self) -> tuple[Any, ...]:
        """takeJobs' token prefix, lock duration and worker name."""
        return (
            f"{self.ctx.owner}:{next(self._seq)}",
            int(self.lease_duration * 1000),
            self.ctx.owner,
        )

    async def _taken(self, result: Sequence[Any], now: datetime, limit: int) -> Acquired:
        """Claims out of what takeJobs (common.lua) returned."""
        next_delayed, rate_ttl = int(result[0]), int(result[1])
        self._next_due_ms = next_delayed if next_delayed >= 0 else None
        claims: list[Claim] = []
        for i in range(2, len(result), 3):
            job_id, token, values = result[i], result[i + 1], result[i + 2]
            try:
                claim = await self._claim(job_id, token, values, now)
            except Exception as exc:
                # one job that cannot be read never costs the other jobs of this take: it is
                # handed to the kernel with its defect, which fails it once
                claim = self._defect_claim(
                    job_id, token, values, now, f"cannot read the job: {type(exc).__name__}: {exc}"
                )
            claims.append(claim)
        # while the queue has more for us, our own calls find it: block on the marker only
        # when drained (as BullMQ's worker does)
        drained = self._drained
        if drained is not None:
            if len(result) - 2 >= 3 * limit:
                drained.clear()
            else:
                drained.set()
        next_due = from_millis(self._next_due_ms) if self._next_due_ms is not None else None
        if rate_ttl > 0:
            limited = now + timedelta(milliseconds=rate_ttl)
            next_due = limited if next_due is None else min(next_due, limited)
        return Acquired(claims, next_due)

    def _defect_claim(
        self, job_id: str, token: str, values: Sequence[Any], now: datetime, defect: str
    ) -> Claim:
        """A claim the kernel fails once without running it (``Job.defect``)."""
        name = values[0] if values and isinstance(values[0], str) else ""
        job = Job(
            id=job_id,
            name=name,
            state=JobState.RUNNING,
            meta={"bullmq_job_id": job_id},
            defect=defect,
        )
        return Claim(
            job=job,
            scheduled_at=now,
            attempt=1,
            token=token,
            lease_expires_at=now + timedelta(seconds=self.lease_duration),
            plan=Plan(True, now, 0, None),
            handle=(job_id, token),
        )

    async def _claim(
        self, job_id: str, token: str, values: list[str | None], now: datetime
    ) -> Claim:
        lease_end = now + timedelta(seconds=self.lease_duration)
        try:
            data = self.ctx.codec.decode(values[1] or "null")
        except ValueError as exc:
            return self._defect_claim(
                job_id,
                token,
                values,
                now,
                f"job data is not JSON ({exc}): {mapping._short(values[1], 200)}",
            )
        view = mapping.claimed_view(job_id, values, data, to_millis(now))
        attempt = view.attempt + 1
        scheduler_id = values[5]
        if not scheduler_id:
            return Claim(
                job=view,
                scheduled_at=view.scheduled_at or now,
                attempt=attempt,
                token=token,
                lease_expires_at=lease_end,
                handle=(job_id, token),
            )
        opts = mapping.opts_info(values[2])[0]
        # a job a scheduler produced: the tickkit job is the scheduler
        repeat = opts.get("repeat") if isinstance(opts.get("repeat"), dict) else {}
        try:
            spec = mapping.repeat_to_spec({k: str(v) for k, v in repeat.items() if v is not None})
        except InvalidScheduleError as exc:
            return self._defect_claim(job_id, token, values, now, str(exc))
        assert view.scheduled_at is not None
        scheduled_at = view.scheduled_at
        job = Job(
            id=scheduler_id,
            name=view.name,
            data=data,
            schedule=spec,
            next_run_at=scheduled_at,
            scheduled_at=scheduled_at,
            state=JobState.RUNNING,
            recurring=True,
            attempt=view.attempt,
            max_attempts=view.max_attempts,
            backoff=view.backoff,
            created_at=view.created_at,
            meta={**mapping.trace_meta(opts), "bullmq_job_id": job_id},
        )
        try:
            plan = self.ctx.plan(job, scheduled_at, attempt, now)
        except Exception as exc:
            return self._defect_claim(
                job_id,
                token,
                values,
                now,
                f"cannot compute the next run of job scheduler {scheduler_id!r} "
                f"(schedule {spec!r}): {exc}",
            )
        if attempt == 1 and plan.next_run_at is not None:
            next_ms = to_millis(plan.next_run_at)
            # the kernel learns this time from acquire's next_due: the marker that the next job
            # sets needs no wake-up
            known = self._next_due_ms
            self._next_due_ms = next_ms if known is None else min(known, next_ms)
            await self._run("next", to_millis(now), scheduler_id, job_id, next_ms)
        return Claim(
            job=job,
            scheduled_at=scheduled_at,
            attempt=attempt,
            token=token,
            lease_expires_at=lease_end,
            plan=plan if attempt == 1 else Plan(True, scheduled_at, 0, None),
            handle=(job_id, token),
        )

    async def renew(self, claims: Sequence[Claim], now: datetime) -> list[Claim]:
        held = [c for c in claims if c.handle is not None]
        if not held:
            return []
        args: list[Any] = []
        for claim in held:
            args.extend(claim.handle)
        lost = set(await self._run("renew", int(self.lease_duration * 1000), *args))
        end = now + timedelta(seconds=self.lease_duration)
        out = []
        for claim in held:
            if claim.handle[0] in lost:
                out.append(claim)
            else:
                claim.lease_expires_at = end
        return out

    async def complete(self, claim: Claim, result: RunResult) -> None:
        if claim.handle is None:
            return
        job_id = claim.handle[0]
        code = int(await self._finish(claim, result))
        if code != 0:
            log.warning("the outcome of job %s was not recorded (lock lost, code %s)", job_id, code)

    def _run_record(self, claim: Claim, result: RunResult) -> str:
        """complete.lua's run-record argument: the record and the history retention."""
        if self.history_limit == 0 or claim.job.id is None:
            return ""
        failed = result.outcome in (Outcome.FAILED, Outcome.TIMED_OUT)
        record = {
            "j": claim.handle[0] if claim.handle else None,  # BullMQ's job id for this run
            "n": claim.job.name,
            "s": to_millis(claim.scheduled_at),
            "b": to_millis(result.started_at) if result.started_at is not None else None,
            "f": to_millis(result.finished_at),
            "a": claim.attempt,
            "o": result.outcome.value,
            "e": _text(result.traceback or result.error or result.outcome.value)
            if failed
            else None,
            "w": self.ctx.owner,
        }
        return json.dumps(
            {
                "k": claim.job.id,
                "r": json.dumps(record, ensure_ascii=False),
                "f": record["f"],
                "n": self.history_limit,
                "a": int(self.history_max_age * 1000) if self.history_max_age is not None else None,
            },
            ensure_ascii=False,
        )

    async def _finish(
        self,
        claim: Claim,
        result: RunResult,
        *,
        fetch: int = 0,
        now: datetime | None = None,
    ) -> Any:
        """complete.lua: the code, or with ``fetch`` > 0 ``[code, *takeJobs' result]``."""
        job_id, token = claim.handle
        failed = result.outcome in (Outcome.FAILED, Outcome.TIMED_OUT)
        if result.retry_at is not None:
            kind, value = "retry", _text(result.error or "")
        elif failed:
            kind, value = "finish", _text(result.error or result.outcome.value)
        else:
            try:
                kind, value = "finish", mapping.encode_return(result.return_value)
            except InvalidDataError as exc:
                # a value Redis or Node cannot hold fails this run alone: the job never stays
                # active (its lock would expire and it would run again)
                log.error("job %s: %s", job_id, exc)
                failed = True
                result = attrs.evolve(
                    result, outcome=Outcome.FAILED, error=str(exc), return_value=None
                )
                kind, value = "finish", str(exc)
        started = to_millis(result.started_at) if result.started_at is not None else ""
        take = (fetch, *self._take_args()) if fetch > 0 else ()
        now_ms = to_millis(now) if now is not None else self._now_ms()
        return await self._run(
            "complete",
            now_ms,
            job_id,
            token,
            kind,
            "failed" if failed else "completed",
            result.outcome.value,
            value,
            _text(result.traceback or ""),
            to_millis(result.retry_at) if result.retry_at is not None else "",
            self._keep_complete,
            self._keep_fail,
            started,
            _text(result.error or ""),
            self._run_record(claim, result),
            self._run_counter(result),
            *take,
        )

    def _run_counter(self, result: RunResult) -> str:
        """complete.lua's run-counter argument: the finish minute and how long its bucket is
        kept (``""``: a MISSED occurrence is not a run)."""
        if result.outcome is Outcome.MISSED:
            return ""
        return json.dumps({"m": minute_of(result.finished_at), "k": _RUN_COUNTS_TTL_MS})

    async def count_runs(self, since: datetime) -> dict[Outcome, int] | None:
        first = minute_of(since)
        async with self._busy():
            try:
                minutes = await self._redis.zrangebyscore(self.key + "tk:rc", first, "+inf")
            except RedisError as exc:
                if "WRONGTYPE" in str(exc):
                    return {}
                raise
            pipe = self._redis.pipeline(transaction=True)
            for minute in minutes:
                pipe.hgetall(f"{self.key}tk:rc:{minute}")
            buckets = await pipe.execute(raise_on_error=False) if minutes else []
        counts: dict[Outcome, int] = {}
        for bucket in buckets:
            if isinstance(bucket, Exception):
                continue  # (a bucket key overwritten by another type counts nothing)
            for text, n in bucket.items():
                try:
                    outcome = Outcome(text)
                    counts[outcome] = counts.get(outcome, 0) + int(n)
                except ValueError:
                    log.warning("skipped an unreadable run counter %r=%r", text, n)
        return counts

    async def release(self, claims: Sequence[Claim]) -> None:
        args: list[Any] = []
        for claim in claims:
            if claim.handle is not None:
                args.extend(claim.handle)
        if args:
            await self._run("release", self._now_ms(), *args)
