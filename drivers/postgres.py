"""The PostgreSQL driver (``postgresql://user@host/db``): jobs in a PostgreSQL database, built
on asyncpg.

Jobs live in the database the bot may already have, in a schema of their own (``tickkit`` by
default); any number of processes on any number of hosts share it, and every due occurrence
runs in exactly one of them. See docs/drivers/postgres.md.

Design in short:

- one row per job in ``<schema>.jobs``; times are bigint epoch milliseconds; task data is the
  kernel codec's text; the schema version is recorded in ``<schema>.version`` and migrations
  run under a transaction-level advisory lock, so that many processes may start at once;
- a claim is one statement: the due rows are locked ``FOR UPDATE SKIP LOCKED`` and leased
  (owner, token, expiry) in the same statement; an expired lease (its process died) is taken
  over with the attempt counted;
- the outcome of a run, the job's next occurrence and the run history row are written in one
  transaction;
- wake-ups across processes through ``LISTEN/NOTIFY``: adding, moving, resuming or updating a
  job sends a notification in the writing transaction (so it is delivered on commit only); the
  dispatcher of every other process wakes up. ``poll_interval`` is only a slow safety net;
- ``where`` compares ``jsonb`` values (``1 = 1.0``, ``true <> 1``, ``'1' <> 1``), with an
  expression index ``((<schema>.jsonb_or_null(data) -> 'key'))`` for each indexed key;
- transactional create: ``async with driver.using(conn): await kernel.create_task(...)`` stores
  the job on the caller's own asyncpg connection, inside the caller's open transaction.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import json
import logging
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio
import attrs

from tickkit import (
    UNSET,
    Acquired,
    Backoff,
    Claim,
    Cursor,
    Driver,
    DriverContext,
    DriverError,
    IncompatibleStoreError,
    InvalidArgumentError,
    Job,
    JobExistsError,
    JobState,
    MissingExtraError,
    Outcome,
    RunRecord,
    RunResult,
    TickkitError,
    Where,
    redact,
)
from tickkit.driver import (
    DEFAULT_HISTORY_LIMIT,
    DEFAULT_HISTORY_MAX_AGE,
    MAX_DURATION,
    RUN_COUNTS_KEPT,
    Unset,
    check_history_options,
    check_index_keys,
    from_millis,
    minute_of,
    redact_url,
    scrub,
    short,
    to_millis,
)

try:
    import asyncpg
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError(
        "the PostgreSQL driver (tickkit.drivers.postgres)", "postgres", "asyncpg"
    ) from exc

__all__ = ["LATEST_VERSION", "MIGRATIONS", "DeadLetter", "Migration", "PostgresDriver"]

T = TypeVar("T")

#: ``add_jobs`` of at least this many jobs ends with ``ANALYZE`` of the jobs table
ANALYZE_AFTER_ROWS = 10_000

log = logging.getLogger("tickkit.driver")


# --- schema ------------------------------------------------------------------------------


@attrs.frozen
class Migration:
    """One forward step of the schema: ``statements`` (``{s}`` is the quoted schema name)
    take a store to ``version``."""

    version: int
    description: str
    statements: tuple[str, ...]


_KNOWN = ", ".join(f"'{s.value}'" for s in JobState)
#: the pauses (s) of ``acquire`` while another worker's claim holds due rows; None: the last look
_CLAIMED_ELSEWHERE: tuple[float | None, ...] = (0.005, 0.02, 0.05, None)
#: rows a claim must take although they are not due: a state tickkit does not know, or a
#: scheduled row without a due time (the kernel fails them with their defect)
_ODD = f"(state NOT IN ({_KNOWN}) OR (state = 'scheduled' AND next_run_at IS NULL))"

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "jobs with leases, run history, indexed data keys",
        (
            """CREATE TABLE {s}.version (
                version INTEGER PRIMARY KEY,
                description TEXT NOT NULL,
                applied_at BIGINT NOT NULL
            )""",
            """CREATE TABLE {s}.jobs (
                id TEXT COLLATE "C" PRIMARY KEY,
                name TEXT NOT NULL,
                data TEXT NOT NULL,
                schedule TEXT,
                next_run_at BIGINT,
                scheduled_at BIGINT,
                state TEXT NOT NULL,
                static BOOLEAN NOT NULL DEFAULT FALSE,
                attempt INTEGER NOT NULL DEFAULT 0,
                max_attempts INTEGER,
                backoff TEXT,
                created_at BIGINT,
                last_run_at BIGINT,
                last_outcome TEXT,
                last_error TEXT,
                runs INTEGER NOT NULL DEFAULT 0,
                meta TEXT NOT NULL DEFAULT '{{}}',
                pause_requested BOOLEAN NOT NULL DEFAULT FALSE,
                lease_owner TEXT,
                lease_token TEXT,
                lease_expires_at BIGINT,
                finished_at BIGINT,
                last_traceback TEXT,
                revision BIGINT NOT NULL DEFAULT 0
            )""",
            "CREATE INDEX jobs_due ON {s}.jobs (state, next_run_at)",
            "CREATE INDEX jobs_order ON {s}.jobs (next_run_at, id)",
            "CREATE INDEX jobs_lease ON {s}.jobs (lease_expires_at) WHERE state = 'running'",
            f"CREATE INDEX jobs_odd ON {{s}}.jobs (id) WHERE {_ODD}",
            "CREATE INDEX jobs_name ON {s}.jobs (name)",
            "CREATE INDEX jobs_static ON {s}.jobs (id) WHERE static",
            "CREATE INDEX jobs_done ON {s}.jobs (finished_at) "
            "WHERE NOT static AND state IN ('completed', 'missed')",
            "CREATE INDEX jobs_failed ON {s}.jobs (finished_at) "
            "WHERE NOT static AND state = 'failed'",
            """CREATE TABLE {s}.runs (
                seq BIGSERIAL PRIMARY KEY,
                job_id TEXT NOT NULL,
                name TEXT,
                scheduled_at BIGINT,
                started_at BIGINT,
                finished_at BIGINT,
                attempt INTEGER,
                outcome TEXT,
                error TEXT,
                worker TEXT
            )""",
            "CREATE INDEX runs_job ON {s}.runs (job_id, finished_at, attempt)",
            "CREATE INDEX runs_finished ON {s}.runs (finished_at)",
            """CREATE TABLE {s}.indexes (
                key TEXT PRIMARY KEY,
                created_at BIGINT NOT NULL
            )""",
            # the data as jsonb, NULL when it is not JSON (a codec may store other text, a
            # row may be edited by hand): where and its expression indexes never fail on it
            """CREATE FUNCTION {s}.jsonb_or_null(t TEXT) RETURNS JSONB
                LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
                BEGIN
                    RETURN t::jsonb;
                EXCEPTION WHEN others THEN
                    RETURN NULL;
                END
                $$""",
        ),
    ),
    Migration(
        2,
        "per-minute run counters; jsonb_or_null parallel unsafe",
        (
            # it catches errors, which takes a subtransaction: a parallel plan (a parallel
            # index build of a where key, a parallel scan of many rows) failed on it with
            # "cannot start subtransactions during a parallel operation"
            "ALTER FUNCTION {s}.jsonb_or_null(TEXT) PARALLEL UNSAFE",
            # a minute and outcome has a row per slot (the connection's backend pid modulo
            # _COUNT_SLOTS): concurrent completions on different connections do not wait for
            # each other's commit on one row
            """CREATE TABLE {s}.run_counts (
                minute BIGINT NOT NULL,
                outcome TEXT NOT NULL,
                slot INTEGER NOT NULL,
                runs BIGINT NOT NULL,
                PRIMARY KEY (minute, outcome, slot)
            )""",
        ),
    ),
)

#: the schema version this code writes
LATEST_VERSION = MIGRATIONS[-1].version

_COLUMNS = (
    "id, name, data, schedule, next_run_at, scheduled_at, state, static, attempt, max_attempts, "
    "backoff, created_at, last_run_at, last_outcome, last_error, runs, meta"
)
_NCOLS = len(_COLUMNS.split(","))
_INSERT_COLUMNS = _COLUMNS + ", finished_at"
_INSERT_VALUES = ", ".join(f"${i + 1}" for i in range(_NCOLS + 1))
#: what a replacing insert overwrites: every column, and the lease (a running occurrence of the
#: old job no longer changes the new one)
_REPLACE_SET = (
    ", ".join(f"{c.strip()} = EXCLUDED.{c.strip()}" for c in _INSERT_COLUMNS.split(",")[1:])
    + ", lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, "
    "pause_requested = FALSE, last_traceback = NULL"
)

#: the last millisecond of year 9999 and the first of year 1
MAX_MS = 253_402_300_799_999
MIN_MS = -62_135_596_800_000
_UNREADABLE = "the stored row cannot be read: "
_FINISHED = "'completed', 'failed', 'missed'"
_RESUMED_STATE = "CASE WHEN pause_requested THEN 'paused' ELSE 'scheduled' END"
_NO_LEASE = (
    "lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, pause_requested = FALSE"
)
#: minute buckets of run counters kept (at least RUN_COUNTS_KEPT)
_COUNTED_MINUTES = int(RUN_COUNTS_KEPT.total_seconds() // 60)
#: rows per minute and outcome in run_counts (see the migration to version 2)
_COUNT_SLOTS = 8
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,39}")
_MAX_SECONDS = MAX_DURATION.total_seconds()

#: options of the URL's query string the driver takes
_URL_OPTIONS = {
    "schema",
    "poll_interval",
    "lease_duration",
    "keep_failed",
    "history_limit",
    "history_max_age",
    "pool_size",
    "reconnect_timeout",
    "command_timeout",
}
#: libpq options asyncpg understands, passed on to it
_PASSED_ON = {
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslcrl",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "application_name",
    "connect_timeout",
    "target_session_attrs",
    "passfile",
    "krbsrvname",
    "gsslib",
    "direct_tls",
    "service",
}

#: the caller's connection for add_job (see PostgresDriver.using)
_USING: contextvars.ContextVar[tuple[PostgresDriver, Any] | None] = contextvars.ContextVar(
    "tickkit_postgres_using", default=None
)


@attrs.frozen
class DeadLetter:
    """A job whose last attempt failed with no retry left, as kept by the driver."""

    job: Job
    failed_at: datetime | None
    traceback: str | None


@attrs.frozen
class _Retention:
    keep_all: bool
    count: int | None = None
    age_ms: int | None = None

    @property
    def keeps_any(self) -> bool:
        return self.keep_all or bool(self.count) or self.age_ms is not None


def _retention(value: object, option: str) -> _Retention:
    if value is True:
        return _Retention(True)
    if value is False or value is None:
        return _Retention(False)
    if isinstance(value, timedelta):
        if value <= timedelta(0):
            raise DriverError(f"{option} must be a positive timedelta, got {value!r}")
        return _Retention(False, age_ms=int(value.total_seconds() * 1000))
    if isinstance(value, int) and value >= 0:
        return _Retention(False, count=value)
    raise DriverError(
        f"{option} must be True, False, a count of jobs (int >= 0) or an age (timedelta), "
        f"got {short(value)}"
    )


def _seconds(value: object, option: str, *, minimum: float) -> float:
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DriverError(
            f"{option} must be a number of seconds or a timedelta, got {short(value)}"
        )
    seconds = float(value) if abs(value) <= _MAX_SECONDS else float("inf")
    if not seconds >= minimum or not seconds <= _MAX_SECONDS:
        raise DriverError(
            f"{option} must be at least {minimum:g} seconds and at most {_MAX_SECONDS:g}, "
            f"got {short(value)}"
        )
    return seconds


def _is_connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` means the connection (not the statement) failed: worth a retry on a
    new connection."""
    if isinstance(
        exc,
        (
            asyncpg.PostgresConnectionError,
            asyncpg.exceptions.OperatorInterventionError,  # terminated backend, shutdown
            asyncpg.exceptions.ConnectionDoesNotExistError,
            # a connection left in a broken state by a cut (an operation never finished)
            asyncpg.exceptions.InternalClientError,
            ConnectionError,
            OSError,
            asyncio.TimeoutError,
        ),
    ):
        return True
    return isinstance(exc, asyncpg.InterfaceError) and "closed" in str(exc).lower()


class PostgresDriver(Driver):
    """Jobs in a PostgreSQL database, shared safely by any number of processes and hosts.

    Arguments:
        dsn: a ``postgresql://`` (or ``postgres://``) URL; libpq options asyncpg understands
            (``sslmode``, ``application_name``...) may be in its query string.
        schema: the schema holding tickkit's tables (default ``tickkit``; created when
            missing; lower-case letters, digits and ``_``, at most 40 characters).
        poll_interval: seconds between safety-net re-reads while idle (default 30): wake-ups
            come through LISTEN/NOTIFY, the poll only covers a lost notification.
        lease_duration: seconds a claim is held without renewal (default 30).
        keep_completed / keep_failed: what to keep of one-off jobs that finished (as the SQLite
            driver: False, True, a count, or a timedelta); defaults False / True.
        history_limit / history_max_age: run-history retention (100 runs per job, 7 days).
        pool_size: the most connections the driver opens (default 10; one more listens).
        command_timeout: seconds a statement, a connection attempt or a wait for a pooled
            connection may take before it counts as failed (default 60).
        reconnect_timeout: seconds a call retries on new connections after the connection
            failed (a restarted server, a terminated backend) before it raises (default 15).
    """

    supports_trio = False

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "tickkit",
        poll_interval: float | timedelta = 30.0,
        lease_duration: float | timedelta = 30.0,
        keep_completed: bool | int | timedelta = False,
        keep_failed: bool | int | timedelta = True,
        history_limit: int = DEFAULT_HISTORY_LIMIT,
        history_max_age: float | timedelta | None = DEFAULT_HISTORY_MAX_AGE,
        pool_size: int = 10,
        reconnect_timeout: float | timedelta = 15.0,
        command_timeout: float | timedelta = 60.0,
    ) -> None:
        if not isinstance(dsn, str) or urlsplit(dsn).scheme.lower() not in (
            "postgresql",
            "postgres",
        ):
            shown = redact_url(dsn) if isinstance(dsn, str) else short(dsn)
            raise DriverError(f"the PostgreSQL driver needs a postgresql:// URL, got {shown!r}")
        self.dsn = dsn
        if not isinstance(schema, str) or not _SCHEMA_NAME.fullmatch(schema):
            raise DriverError(
                f"schema must be 1 to 40 lower-case letters, digits or '_' (not first a "
                f"digit), got {short(schema)}"
            )
        self.schema = schema
        self.poll_interval: float | None = _seconds(poll_interval, "poll_interval", minimum=0.01)
        self.lease_duration: float | None = _seconds(lease_duration, "lease_duration", minimum=0.1)
        self.keep_completed = _retention(keep_completed, "keep_completed")
        self.keep_failed = _retention(keep_failed, "keep_failed")
        self.history_limit, self.history_max_age = check_history_options(
            history_limit, history_max_age
        )
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise DriverError(f"pool_size must be an integer of at least 1, got {short(pool_size)}")
        self.pool_size = pool_size
        self.reconnect_timeout = _seconds(reconnect_timeout, "reconnect_timeout", minimum=0.0)
        self.command_timeout = _seconds(command_timeout, "command_timeout", minimum=0.1)
        self._s = f'"{schema}"'
        self.channel = f"tickkit_{schema}"
        self._indexed: set[str] = set()
        self._pool: asyncpg.Pool | None = None
        self._io = 0
        self._listener: asyncio.Task[None] | None = None
        self._stopping = False
        #: notifications received from other processes (tests read it)
        self.notifications = 0
        #: the next due time (epoch ms) the last claim reported: the kernel wakes by then
        self._next_due_ms: int | None = None
        #: the latest minute bucket up to which old run counters were pruned
        self._counts_pruned = -1

    def __repr__(self) -> str:
        return f"PostgresDriver({redact_url(self.dsn)!r}, schema={self.schema!r})"

    # --- URL ----------------------------------------------------------------------------

    @classmethod
    def from_url(cls, url: str, **options: Any) -> PostgresDriver:
        """``postgresql://user:password@host:5432/dbname?schema=tickkit``; the query string
        may set ``schema``, ``poll_interval``, ``lease_duration``, ``reconnect_timeout``,
        ``command_timeout``
        (seconds), ``keep_failed`` (true/false), ``history_limit``, ``pool_size`` (integers),
        ``history_max_age`` (seconds), and libpq options asyncpg understands (``sslmode``,
        ``application_name``...); keyword options win over it."""
        try:
            return cls._from_url(url, **options)
        except (DriverError, InvalidArgumentError) as exc:
            raise type(exc)(scrub(str(exc), url)) from None
        except ValueError as exc:
            raise DriverError(
                scrub(f"invalid postgresql URL {redact_url(url)!r}: {exc}", url)
            ) from None

    @classmethod
    def _from_url(cls, url: str, **options: Any) -> PostgresDriver:
        parts = urlsplit(url)
        shown = redact_url(url)
        if parts.scheme.lower() not in ("postgresql", "postgres"):
            raise DriverError(f"not a postgresql URL: {shown!r}")
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        ours: dict[str, Any] = {}
        passed: list[tuple[str, str]] = []
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key in _PASSED_ON:
                passed.append((key, value))
                continue
            if key not in _URL_OPTIONS:
                raise DriverError(
                    f"unknown option {key!r} in postgresql URL {shown!r} (tickkit's: "
                    f"{', '.join(sorted(_URL_OPTIONS))}; libpq's passed on: "
                    f"{', '.join(sorted(_PASSED_ON))})"
                )
            if key == "schema":
                ours[key] = value
            elif key == "keep_failed":
                if value.lower() not in ("true", "false", "1", "0"):
                    raise DriverError(
                        f"keep_failed in postgresql URL {shown!r} must be true or false, "
                        f"got {value!r}"
                    )
                ours[key] = value.lower() in ("true", "1")
            elif key in ("history_limit", "pool_size"):
                try:
                    ours[key] = int(value)
                except ValueError:
                    raise DriverError(
                        f"{key} in postgresql URL {shown!r} must be an integer, got {value!r}"
                    ) from None
            else:
                try:
                    ours[key] = float(value)
                except ValueError:
                    raise DriverError(
                        f"{key} in postgresql URL {shown!r} must be a number of seconds, "
                        f"got {value!r}"
                    ) from None
        dsn = urlunsplit(parts._replace(query=urlencode(passed)))
        return cls(dsn, **{**ours, **options})

    # --- plumbing -----------------------------------------------------------------------

    def io_pending(self) -> bool:
        return self._io > 0

    def _where(self) -> str:
        return f"PostgreSQL store {redact_url(self.dsn)} (schema {self.schema})"

    def _error(self, exc: BaseException) -> DriverError:
        text = scrub(str(exc), self.dsn)
        return DriverError(f"{self._where()}: {type(exc).__name__}: {text}")

    def _require_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise DriverError(f"the PostgreSQL driver for {self._where()} is not started")
        return self._pool

    async def _call(self, fn: Callable[[Any, int], Awaitable[T]], *, shield: bool = False) -> T:
        """Run ``fn(connection, try_number)`` on a pooled connection. When the connection
        fails (a terminated backend, a restarting server), run it again on a new connection
        until ``reconnect_timeout`` has passed: every write is one transaction whose
        conditions make a second try harmless. PostgreSQL errors become DriverErrors without
        credentials."""
        pool = self._require_pool()
        self._io += 1
        try:
            with anyio.CancelScope(shield=shield):
                deadline = time.monotonic() + self.reconnect_timeout
                delay = 0.05
                tries = 0
                while True:
                    try:
                        # bounded: a statement or a wait for a connection never hangs a call
                        async with pool.acquire(timeout=self.command_timeout) as conn:
                            try:
                                return await fn(conn, tries)
                            except Exception as exc:
                                if _is_connection_error(exc) and not conn.is_closed():
                                    # never back to the pool: a cut can leave a connection in
                                    # a state where its reset or next statement waits for
                                    # command_timeout (asyncpg 0.29: InternalClientError)
                                    conn.terminate()
                                raise
                    except TickkitError:
                        raise
                    except Exception as exc:
                        if (
                            not _is_connection_error(exc)
                            or self._stopping
                            or time.monotonic() + delay > deadline
                        ):
                            raise self._error(exc) from None
                        if tries == 0:
                            log.warning(
                                "%s: the connection failed (%s); trying again on a new one",
                                self._where(),
                                scrub(f"{type(exc).__name__}: {exc}", self.dsn),
                            )
                    tries += 1
                    # a wait for the server: real time, not the kernel's clock
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 1.0)
        finally:
            self._io -= 1

    def _payload(self, due_ms: int | None, owner: str | None = None) -> str:
        """A notification: the sender (its kernel ignores it) and, when known, the earliest
        due time it made (a receiver that will wake by then anyway ignores it)."""
        sender = self.ctx.owner if owner is None else owner
        return sender if due_ms is None else f"{sender} {due_ms}"

    async def _notify(self, conn: Any, due_ms: int | None = None) -> None:
        await conn.execute("SELECT pg_notify($1, $2)", self.channel, self._payload(due_ms))

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self, ctx: DriverContext) -> None:
        await super().start(ctx)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise DriverError(
                "the PostgreSQL driver runs on asyncio only (it is built on asyncpg); run the "
                "kernel with asyncio, or use 'memory://' or 'redis://' on trio"
            ) from None
        self._stopping = False
        self._io += 1
        try:
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=1,
                max_size=self.pool_size,
                command_timeout=self.command_timeout,
                timeout=self.command_timeout,
            )
        except Exception as exc:
            raise DriverError(
                f"cannot connect to {self._where()}: {type(exc).__name__}: "
                f"{scrub(str(exc), self.dsn)}"
            ) from None
        finally:
            self._io -= 1
        try:
            await self._call(self._migrate)
            await self._call(self._prune_all)
            await self._call(lambda conn, _n: self._read_indexed(conn))
            listening = asyncio.Event()
            self._listener = asyncio.get_running_loop().create_task(self._listen(listening))
            self._io += 1
            try:
                await asyncio.wait_for(listening.wait(), timeout=max(self.reconnect_timeout, 1))
            except asyncio.TimeoutError:
                raise DriverError(f"{self._where()}: could not LISTEN in time") from None
            finally:
                self._io -= 1
        except BaseException:
            await self.stop()
            raise

    async def _listen(self, listening: asyncio.Event) -> None:
        """Keep one connection LISTENing on the store's channel; reconnect when it is lost
        (and wake the kernel then: a notification may have been missed meanwhile)."""
        delay = 0.05
        first = True
        while not self._stopping:
            conn = None
            try:
                conn = await asyncpg.connect(self.dsn, timeout=self.command_timeout)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(self.channel, self._on_notification)
                listening.set()
                if not first:
                    log.warning("%s: LISTEN connection restored", self._where())
                    self.ctx.notify()
                first = False
                delay = 0.05
                while not lost.is_set() and not conn.is_closed():
                    # a cut that the server did not announce shows at the next round trip
                    try:
                        await asyncio.wait_for(
                            lost.wait(), timeout=min(max(self.poll_interval or 30, 1), 30)
                        )
                    except asyncio.TimeoutError:
                        await asyncio.wait_for(conn.execute("SELECT 1"), timeout=10)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self._stopping:
                    log.warning(
                        "%s: the LISTEN connection failed (%s); reconnecting",
                        self._where(),
                        scrub(f"{type(exc).__name__}: {exc}", self.dsn),
                    )
            finally:
                if conn is not None and not conn.is_closed():
                    conn.terminate()
            if self._stopping:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _on_notification(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        sender, _, due = payload.partition(" ")
        if sender == self.ctx.owner:
            return  # this process's kernel knows already
        known = self._next_due_ms
        # a due time the kernel sleeps until (in the future): it wakes by then on its own; one
        # in the past (jobs left by a full or capped kernel) says nothing
        if due and known is not None and known > to_millis(self.ctx.clock.now()):
            try:
                if int(due) >= known:
                    return  # the kernel wakes by then anyway
            except ValueError:
                pass
        self.notifications += 1
        self.ctx.notify()

    async def stop(self) -> None:
        self._stopping = True
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            try:
                await listener
            except BaseException:
                pass
        pool, self._pool = self._pool, None
        if pool is not None:
            with anyio.CancelScope(shield=True):
                try:
                    await asyncio.wait_for(pool.close(), timeout=10)
                except Exception:
                    pool.terminate()

    async def _migrate(self, conn: Any, _try: int) -> None:
        """Create or migrate the schema under an advisory lock (many processes may start at
        once: one migrates, the others wait and find it done)."""
        s = self._s
        async with conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"tickkit:{self.schema}"
            )
            tables = await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = $1", self.schema
            )
            names = {row[0] for row in tables}
            version = 0
            if names:
                if "version" not in names:
                    shown = ", ".join(sorted(names)[:5]) + (", ..." if len(names) > 5 else "")
                    raise IncompatibleStoreError(
                        f"{self._where()}: the schema {self.schema!r} holds the tables {shown} "
                        "and no tickkit version table; tickkit did not change it: give the "
                        "driver a schema of its own (schema=...)"
                    )
                version = int(
                    await conn.fetchval(f"SELECT COALESCE(MAX(version), 0) FROM {s}.version")
                )
            if version > LATEST_VERSION:
                raise IncompatibleStoreError(
                    f"{self._where()} has tickkit schema version {version}, newer than the "
                    f"versions this tickkit knows (up to {LATEST_VERSION}): upgrade tickkit to "
                    "use it. tickkit did not change it."
                )
            if version == LATEST_VERSION:
                return
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
            now = to_millis(self.ctx.clock.now())
            for migration in MIGRATIONS:
                if version < migration.version:
                    for statement in migration.statements:
                        await conn.execute(statement.format(s=s))
                    await conn.execute(
                        f"INSERT INTO {s}.version (version, description, applied_at) "
                        "VALUES ($1, $2, $3)",
                        migration.version,
                        migration.description,
                        now,
                    )
                    log.info(
                        "%s: schema migrated to version %d (%s)",
                        self._where(),
                        migration.version,
                        migration.description,
                    )

    # --- rows ---------------------------------------------------------------------------

    def _to_job(self, row: Sequence[Any]) -> Job:
        """The job of a row. Never raises: a column that cannot be read is None in the job and
        named, with what is wrong, in ``Job.defect``."""
        problems: list[str] = []

        def read(column: str, value: Any, reader: Any) -> Any:
            try:
                return reader(value)
            except Exception as exc:
                problems.append(f"{column} = {_short(value)}: {_reason(exc)}")
                return None

        state = read("state", row[6], _state)
        attempt = read("attempt", row[8], _count)
        if state is JobState.RUNNING and attempt:
            attempt -= 1  # while running, the row counts the attempt in progress
        job = Job(
            id=row[0],
            name=row[1],
            data=read("data", row[2], self.ctx.codec.decode),
            schedule=read("schedule", row[3], _schedule),
            next_run_at=read("next_run_at", row[4], _time),
            scheduled_at=read("scheduled_at", row[5], _time),
            state=state,
            static=bool(row[7]),
            attempt=attempt,
            max_attempts=read("max_attempts", row[9], _max_attempts),
            backoff=read("backoff", row[10], _backoff),
            created_at=read("created_at", row[11], _time),
            last_run_at=read("last_run_at", row[12], _time),
            last_outcome=read("last_outcome", row[13], _outcome),
            last_error=row[14],
            runs=read("runs", row[15], _count),
            meta=read("meta", row[16], _meta) or {},
        )
        if state in (JobState.SCHEDULED, JobState.PAUSED) and row[4] is None:
            problems.append(f"next_run_at is NULL in state {state.value!r}")
        if state in (JobState.SCHEDULED, JobState.RUNNING, JobState.PAUSED) and row[5] is None:
            problems.append(f"scheduled_at is NULL in state {state.value!r}")
        if problems:
            job.defect = _UNREADABLE + "; ".join(problems)
        return job

    def _params(self, job: Job, job_id: str) -> tuple[Any, ...]:
        first = job.next_run_at
        return (
            job_id,
            job.name,
            self.ctx.encode_data(job),
            json.dumps(job.schedule, sort_keys=True) if job.schedule is not None else None,
            _ms(first),
            _ms(job.scheduled_at or first),
            job.state.value,
            bool(job.static),
            job.attempt,
            job.max_attempts,
            json.dumps(job.backoff.to_dict()) if job.backoff is not None else None,
            _ms(job.created_at),
            _ms(job.last_run_at),
            job.last_outcome.value if job.last_outcome is not None else None,
            job.last_error,
            job.runs,
            json.dumps(job.meta, sort_keys=True),
            None,
        )

    def _insert_sql(self, replace: bool) -> str:
        sql = f"INSERT INTO {self._s}.jobs ({_INSERT_COLUMNS}) VALUES ({_INSERT_VALUES}) "
        if replace:
            return (
                sql
                + f"ON CONFLICT (id) DO UPDATE SET {_REPLACE_SET}, "
                + (f"revision = {self._s}.jobs.revision + 1 RETURNING id")
            )
        return sql + "ON CONFLICT (id) DO NOTHING RETURNING id"

    # --- transactional create -----------------------------------------------------------

    def using(self, connection: Any) -> AbstractAsyncContextManager[None]:
        """Store the jobs created inside this block on ``connection``, the caller's own
        asyncpg connection (a pool's connection too), inside the transaction it has open::

            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("INSERT INTO reminders ...")
                async with driver.using(conn):
                    await kernel.create_task("remind", data, when)

        The job is visible to every worker when that transaction commits, and never exists
        when it rolls back; the wake-up notification is sent in the same transaction, so it
        is delivered on commit only. Only ``create_task`` (``add_job``) uses the connection;
        other calls inside the block use the driver's pool. Anything but an asyncpg connection
        is refused here, at the call; a create on a connection without an open transaction is
        refused at the create."""
        if not isinstance(connection, (asyncpg.Connection, asyncpg.pool.PoolConnectionProxy)):
            raise InvalidArgumentError(
                f"PostgresDriver.using needs an asyncpg connection, got {redact(short(connection))}"
            )
        return self._using(connection)

    @asynccontextmanager
    async def _using(self, connection: Any) -> AsyncIterator[None]:
        token = _USING.set((self, connection))
        try:
            yield
        finally:
            _USING.reset(token)

    def _given_connection(self) -> Any | None:
        using = _USING.get()
        return using[1] if using is not None and using[0] is self else None

    # --- managing jobs ------------------------------------------------------------------

    async def add_job(self, job: Job, *, replace: bool = False) -> str:
        job_id = job.id if job.id is not None else uuid.uuid4().hex
        params = self._params(job, job_id)
        wake = job.state is JobState.SCHEDULED
        n = _NCOLS + 1
        # one statement (one round trip, its own transaction unless the caller's is open): the
        # insert, and the notification only when a row was stored
        notify = f", pg_notify(${n + 1}::text, ${n + 2}::text)" if wake else ""
        sql = f"WITH ins AS ({self._insert_sql(replace)}) SELECT id{notify} FROM ins"

        due = _ms(job.next_run_at)

        async def insert(conn: Any, tries: int, owner: str) -> None:
            extra = (self.channel, self._payload(due, owner)) if wake else ()
            stored = await conn.fetchval(sql, *params, *extra)
            if stored is None:
                if tries and job.id is None:
                    return  # the first try committed (its answer was lost)
                raise JobExistsError(
                    f"a job with id {job_id!r} exists; pass replace=True to replace it"
                )

        await self._write(insert)
        return job_id

    async def _write(self, insert: Callable[[Any, int, str], Awaitable[None]]) -> None:
        """Run ``insert(conn, tries, owner)`` on the caller's connection inside
        :meth:`using` (in the caller's transaction: its notification is sent on its commit, to
        every process, this one's kernel included), else on the pool with reconnects."""
        given = self._given_connection()
        if given is None:
            await self._call(lambda conn, tries: insert(conn, tries, self.ctx.owner))
            return
        if not given.is_in_transaction():
            raise InvalidArgumentError(
                "the connection given to create jobs on has no open transaction (open one with "
                "conn.transaction()): the job would exist at once, whatever you do next"
            )
        self._io += 1
        try:
            await insert(given, 0, "")
        except TickkitError:
            raise
        except Exception as exc:
            raise self._error(exc) from None
        finally:
            self._io -= 1

    async def add_jobs(self, jobs: Sequence[Job], *, replace: bool = False) -> list[str]:
        """Store many new jobs in one transaction (all or none); return their ids. Same rules
        as :meth:`add_job`; when an id exists and ``replace`` is False, nothing is stored and
        :class:`~tickkit.JobExistsError` names the id. Uses the connection of
        :meth:`using` when inside one."""
        ids = [job.id if job.id is not None else uuid.uuid4().hex for job in jobs]
        if len(set(ids)) != len(ids):
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            raise JobExistsError(f"the batch gives the job id(s) {dupes!r} more than once")
        rows = [self._params(job, job_id) for job, job_id in zip(jobs, ids, strict=True)]
        wake = any(job.state is JobState.SCHEDULED for job in jobs)
        verb = self._insert_sql(True).removesuffix(" RETURNING id")
        plain = f"INSERT INTO {self._s}.jobs ({_INSERT_COLUMNS}) VALUES ({_INSERT_VALUES})"

        dues = [r[4] for r, j in zip(rows, jobs, strict=True) if j.state is JobState.SCHEDULED]
        due = min((d for d in dues if d is not None), default=None)

        async def insert(conn: Any, tries: int, owner: str) -> None:
            async with conn.transaction():
                if not replace:
                    found = await conn.fetchval(
                        f"SELECT id FROM {self._s}.jobs WHERE id = ANY($1::text[]) LIMIT 1", ids
                    )
                    if found is not None:
                        if tries:
                            return  # the first try committed
                        raise JobExistsError(
                            f"a job with id {found!r} exists; pass replace=True to replace it "
                            "(nothing of the batch was stored)"
                        )
                await conn.executemany(verb if replace else plain, rows)
                if wake:
                    await conn.execute(
                        "SELECT pg_notify($1, $2)", self.channel, self._payload(due, owner)
                    )

        if rows or self._given_connection() is not None:
            await self._write(insert)
        if len(rows) >= ANALYZE_AFTER_ROWS and self._given_connection() is None:
            # the planner's statistics now describe another table: a server without
            # autovacuum (or before its next round) would read every row for a `where` page.
            # Best effort: the jobs are stored, so a failure here must not fail the call
            try:
                await self._call(
                    lambda conn, _tries: conn.execute(f"ANALYZE {self._s}.jobs", timeout=30)
                )
            except Exception as exc:
                log.warning(
                    "%s: ANALYZE after storing %d jobs failed (%s); the jobs are stored and "
                    "autovacuum will analyze the table",
                    self._where(),
                    len(rows),
                    redact(_reason(exc)),
                )
        return ids

    async def sync_static(self, jobs: Sequence[Job], now: datetime) -> None:
        wanted = {job.id: job for job in jobs}
        s = self._s

        async def sync(conn: Any, _tries: int) -> None:
            async with conn.transaction():
                # processes starting together sync one at a time
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                    f"tickkit:{self.schema}:static",
                )
                stored = {
                    row[0]: row
                    for row in await conn.fetch(
                        f"SELECT id, schedule, static FROM {s}.jobs WHERE static "
                        "OR id = ANY($1::text[])",
                        list(wanted),
                    )
                }
                gone = [i for i, row in stored.items() if row[2] and i not in wanted]
                if gone:
                    await conn.execute(f"DELETE FROM {s}.jobs WHERE id = ANY($1::text[])", gone)
                woke = False
                for job_id, job in wanted.items():
                    assert job_id is not None
                    old = stored.get(job_id)
                    if old is not None and old[2] and _same_schedule(old[1], job.schedule):
                        await conn.execute(
                            f"UPDATE {s}.jobs SET data = $1, max_attempts = $2, backoff = $3 "
                            "WHERE id = $4",
                            self.ctx.encode_data(job),
                            job.max_attempts,
                            json.dumps(job.backoff.to_dict()) if job.backoff else None,
                            job_id,
                        )
                    else:
                        await conn.fetchval(self._insert_sql(True), *self._params(job, job_id))
                        woke = True
                if woke:
                    await self._notify(conn)

        await self._call(sync)

    async def get_job(self, job_id: str) -> Job | None:
        if _unstorable(job_id):
            return None
        row = await self._call(
            lambda conn, _n: conn.fetchrow(
                f"SELECT {_COLUMNS} FROM {self._s}.jobs WHERE id = $1", job_id
            )
        )
        return self._to_job(row) if row is not None else None

    def _filters(
        self,
        *,
        name: str | None,
        state: JobState | None,
        static: bool | None,
        where: Where | None,
        after: Cursor | None = None,
    ) -> tuple[list[str], list[Any]]:
        conds: list[str] = []
        params: list[Any] = []

        def p(value: Any) -> str:
            params.append(value)
            return f"${len(params)}"

        if name is not None:
            conds.append(f"name = {p(name)}")
        if state is not None:
            conds.append(f"state = {p(JobState(state).value)}")
        if static is not None:
            conds.append(f"static = {p(bool(static))}")
        for key, value in (where or {}).items():
            if isinstance(value, float) and not math.isfinite(value):
                conds.append("FALSE")  # JSON holds no NaN or infinity: nothing equals it
                continue
            wanted = p(json.dumps(value))
            if key in self._indexed:
                # the very expression of the key's index
                conds.append(f"({self._value_expr(key)}) = {wanted}::jsonb")
            else:
                conds.append(f"({self._s}.jsonb_or_null(data) -> {p(key)}::text) = {wanted}::jsonb")
        if after is not None:
            if after.next_run_at is None:
                conds.append(f"(next_run_at IS NULL AND id > {p(after.id)})")
            else:
                at = p(to_millis(after.next_run_at))
                conds.append(f"(next_run_at IS NULL OR (next_run_at, id) > ({at}, {p(after.id)}))")
        return conds, params

    def _value_expr(self, key: str) -> str:
        """The indexed expression of a data key (index keys hold no '"', '\\' or control
        character; a "'" is doubled)."""
        return f"{self._s}.jsonb_or_null(data) -> '{key.replace(chr(39), chr(39) * 2)}'::text"

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
        conds, params = self._filters(
            name=name, state=state, static=static, where=where, after=after
        )
        sql = f"SELECT {_COLUMNS} FROM {self._s}.jobs"
        if conds:
            sql += " WHERE " + " AND ".join(conds)
        # ascending puts NULLs last: the list order, and the index (next_run_at, id)
        sql += " ORDER BY next_run_at, id"
        if limit is not None:
            params.append(max(int(limit), 0))
            sql += f" LIMIT ${len(params)}"
        rows = await self._call(lambda conn, _n: conn.fetch(sql, *params))
        return [self._to_job(row) for row in rows]

    async def count_jobs(
        self,
        *,
        name: str | None = None,
        state: JobState | None = None,
        static: bool | None = None,
        where: Where | None = None,
    ) -> dict[JobState, int]:
        conds, params = self._filters(name=name, state=state, static=static, where=where)
        sql = f"SELECT state, COUNT(*) FROM {self._s}.jobs"
        if conds:
            sql += " WHERE " + " AND ".join(conds)
        rows = await self._call(lambda conn, _n: conn.fetch(sql + " GROUP BY state", *params))
        known = {s.value for s in JobState}
        return {JobState(st): int(n) for st, n in rows if st in known}

    async def count_by_name(self, *, state: JobState | None = None) -> dict[str, int]:
        sql = f"SELECT name, COUNT(*) FROM {self._s}.jobs"
        params: list[Any] = []
        if state is not None:
            sql += " WHERE state = $1"
            params.append(JobState(state).value)
        rows = await self._call(lambda conn, _n: conn.fetch(sql + " GROUP BY name", *params))
        return {name: int(n) for name, n in rows if isinstance(name, str) and n}

    async def count_runs(self, since: datetime) -> dict[Outcome, int] | None:
        rows = await self._call(
            lambda conn, _n: conn.fetch(
                f"SELECT outcome, SUM(runs) FROM {self._s}.run_counts WHERE minute >= $1 "
                "GROUP BY outcome",
                minute_of(since),
            )
        )
        known = {o.value for o in Outcome}
        return {Outcome(o): int(n) for o, n in rows if o in known and n}

    async def remove_job(self, job_id: str) -> bool:
        if _unstorable(job_id):
            return False
        status = await self._call(
            lambda conn, _n: conn.execute(f"DELETE FROM {self._s}.jobs WHERE id = $1", job_id)
        )
        return _rowcount(status) > 0

    async def remove_jobs(self, *, name: str) -> int:
        status = await self._call(
            lambda conn, _n: conn.execute(
                f"DELETE FROM {self._s}.jobs WHERE name = $1 AND NOT static", name
            )
        )
        return _rowcount(status)

    async def set_paused(self, job_id: str, paused: bool) -> Job | None:
        if _unstorable(job_id):
            return None
        flag = bool(paused)

        async def change(conn: Any, _tries: int) -> Any:
            async with conn.transaction():
                row = await conn.fetchrow(
                    f"UPDATE {self._s}.jobs SET "
                    "pause_requested = CASE WHEN state = 'running' THEN $1 "
                    "ELSE pause_requested END, "
                    "state = CASE WHEN $1 AND state = 'scheduled' THEN 'paused' "
                    "WHEN NOT $1 AND state = 'paused' THEN 'scheduled' ELSE state END "
                    f"WHERE id = $2 RETURNING {_COLUMNS}",
                    flag,
                    job_id,
                )
                if row is not None and not flag and row[6] == "scheduled":
                    await self._notify(conn, row[4])
                return row

        row = await self._call(change)
        return self._to_job(row) if row is not None else None

    async def move_to(self, job_id: str, when: datetime) -> bool:
        if _unstorable(job_id):
            return False
        at = to_millis(when)

        async def move(conn: Any, _tries: int) -> bool:
            async with conn.transaction():
                status = await conn.execute(
                    f"UPDATE {self._s}.jobs SET next_run_at = $1, scheduled_at = $1 "
                    "WHERE id = $2 AND state = 'scheduled'",
                    at,
                    job_id,
                )
                if _rowcount(status):
                    await self._notify(conn, at)
                    return True
                return False

        return await self._call(move)

    async def update_job(
        self,
        job_id: str,
        *,
        data: Any | Unset = UNSET,
        schedule: dict[str, Any] | Unset | None = UNSET,
        next_run_at: datetime | Unset = UNSET,
    ) -> Job | None:
        if next_run_at is None:
            raise InvalidArgumentError(
                f"update_job of {short(job_id)}: next_run_at must be a datetime, got None"
            )
        if _unstorable(job_id):
            return None
        sets: list[str] = []
        params: list[Any] = [job_id]

        def p(value: Any) -> str:
            params.append(value)
            return f"${len(params)}"

        if not isinstance(data, Unset):
            sets.append(f"data = {p(self.ctx.codec.encode(data))}")
        if not isinstance(schedule, Unset):
            spec = json.dumps(schedule, sort_keys=True) if schedule is not None else None
            sets.append(f"schedule = {p(spec)}")
        if not isinstance(next_run_at, Unset):
            at = p(to_millis(next_run_at))
            sets += [
                f"next_run_at = {at}",
                f"scheduled_at = {at}",
                "revision = revision + 1",
                "attempt = CASE WHEN state = 'running' THEN attempt ELSE 0 END",
                f"state = CASE WHEN state IN ({_FINISHED}) THEN 'scheduled' ELSE state END",
                f"finished_at = CASE WHEN state IN ({_FINISHED}) THEN NULL ELSE finished_at END",
            ]

        async def update(conn: Any, _tries: int) -> Any:
            async with conn.transaction():
                if not sets:
                    return await conn.fetchrow(
                        f"SELECT {_COLUMNS} FROM {self._s}.jobs WHERE id = $1", job_id
                    )
                row = await conn.fetchrow(
                    f"UPDATE {self._s}.jobs SET {', '.join(sets)} WHERE id = $1 "
                    f"RETURNING {_COLUMNS}",
                    *params,
                )
                if row is not None and not isinstance(next_run_at, Unset) and row[6] == "scheduled":
                    await self._notify(conn, row[4])
                return row

        row = await self._call(update)
        return self._to_job(row) if row is not None else None

    async def get_runs(self, job_id: str, *, limit: int = 20) -> list[RunRecord]:
        if _unstorable(job_id):
            return []
        sql = (
            "SELECT seq, job_id, name, scheduled_at, started_at, finished_at, attempt, outcome, "
            f"error, worker FROM {self._s}.runs WHERE job_id = $1"
        )
        params: list[Any] = [job_id]
        if self.history_max_age is not None:
            params.append(to_millis(self.ctx.clock.now()) - int(self.history_max_age * 1000))
            sql += " AND NOT (finished_at < $2)"
        params.append(max(int(limit), 0))
        sql += f" ORDER BY finished_at DESC, attempt DESC, seq DESC LIMIT ${len(params)}"
        rows = await self._call(lambda conn, _n: conn.fetch(sql, *params))
        records = []
        for row in rows:
            record = self._to_run(row)
            if record is not None:
                records.append(record)
        return records

    def _to_run(self, row: Sequence[Any]) -> RunRecord | None:
        problems: list[str] = []

        def read(column: str, value: Any, reader: Any) -> Any:
            try:
                return reader(value)
            except Exception as exc:
                problems.append(f"{column} = {_short(value)}: {_reason(exc)}")
                return None

        finished = read("finished_at", row[5], _time)
        attempt = read("attempt", row[6], _count)
        outcome = read("outcome", row[7], _outcome)
        if finished is None or attempt is None or outcome is None:
            why = "; ".join(problems) or "finished_at, attempt or outcome is NULL"
            log.warning(
                "%s: run history row %s of job %s cannot be read (%s); left out",
                self._where(),
                row[0],
                _short(row[1]),
                why,
            )
            return None
        return RunRecord(
            job_id=str(row[1]),
            name=row[2] or "",
            scheduled_at=read("scheduled_at", row[3], _time),
            started_at=read("started_at", row[4], _time),
            finished_at=finished,
            attempt=attempt,
            outcome=outcome,
            error=row[8],
            worker=row[9],
        )

    async def ensure_indexes(self, keys: Iterable[str]) -> None:
        """Record ``keys`` in ``<schema>.indexes`` and create their expression indexes, under
        the schema's advisory lock (several processes may do it at once)."""
        try:
            wanted = check_index_keys(list(keys), "ensure_indexes")
        except TickkitError as exc:
            raise InvalidArgumentError(str(exc)) from None
        now = to_millis(self.ctx.clock.now())

        async def ensure(conn: Any, _tries: int) -> None:
            async with conn.transaction():
                if wanted:
                    await conn.execute(
                        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                        f"tickkit:{self.schema}",
                    )
                    await conn.executemany(
                        f"INSERT INTO {self._s}.indexes (key, created_at) VALUES ($1, $2) "
                        "ON CONFLICT (key) DO NOTHING",
                        [(key, now) for key in wanted],
                    )
                await self._read_indexed(conn)

        await self._call(ensure)

    async def _read_indexed(self, conn: Any) -> None:
        """Read the recorded index keys and create any index missing."""
        keys: set[str] = set()
        for (key,) in await conn.fetch(f"SELECT key FROM {self._s}.indexes"):
            try:
                keys.update(check_index_keys([key]))
            except (TickkitError, TypeError):
                log.warning(
                    "%s: the indexes table holds the key %s, which cannot be indexed; where on "
                    "it scans",
                    self._where(),
                    _short(key),
                )
        missing = sorted(keys - self._indexed)
        if missing:
            async with conn.transaction():
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                    f"tickkit:{self.schema}",
                )
                existing = {
                    name
                    for (name,) in await conn.fetch(
                        "SELECT indexname FROM pg_indexes WHERE schemaname = $1", self.schema
                    )
                }
                created = False
                for key in missing:
                    if _index_name(key) in existing:
                        continue
                    await conn.execute(
                        f"CREATE INDEX IF NOT EXISTS {_index_name(key)} ON {self._s}.jobs "
                        f"(({self._value_expr(key)}))"
                    )
                    created = True
                if created:
                    # an expression index has no statistics until ANALYZE: without them the
                    # planner ignores it for `where` (a whole-table walk per page at 1M jobs)
                    await conn.execute(f"ANALYZE {self._s}.jobs")
        self._indexed = keys

    async def dead_letters(
        self, *, name: str | None = None, limit: int | None = None
    ) -> list[DeadLetter]:
        """Jobs whose last attempt failed with no retry left, most recent failure first."""
        sql = (
            f"SELECT {_COLUMNS}, finished_at, last_traceback FROM {self._s}.jobs "
            "WHERE state = 'failed'"
        )
        params: list[Any] = []
        if name is not None:
            params.append(name)
            sql += " AND name = $1"
        sql += " ORDER BY finished_at DESC NULLS LAST, id"
        if limit is not None:
            params.append(max(int(limit), 0))
            sql += f" LIMIT ${len(params)}"
        rows = await self._call(lambda conn, _n: conn.fetch(sql, *params))
        return [
            DeadLetter(self._to_job(row), _safe_dt(row[_NCOLS]), row[_NCOLS + 1]) for row in rows
        ]

    # --- running jobs -------------------------------------------------------------------

    @property
    def lease_duration_ms(self) -> int:
        assert self.lease_duration is not None
        return int(self.lease_duration * 1000)

    async def acquire(
        self, *, now: datetime, limit: int, exclude: frozenset[str] = frozenset()
    ) -> Acquired:
        now_ms = to_millis(now)
        token = uuid.uuid4().hex
        expires = now_ms + self.lease_duration_ms
        names = sorted(exclude)
        s = self._s
        skip = "AND NOT (name = ANY($5::text[]))"
        cols = ", ".join(f"j.{c.strip()}" for c in _COLUMNS.split(","))
        # one statement: lock the rows to claim (others skip them), lease them, return them
        # with their state and attempt as they were (a claim rewrites both)
        sql = f"""
            WITH expired AS (
                SELECT id, 0 AS prio, lease_expires_at AS k FROM {s}.jobs
                WHERE state = 'running' AND (lease_expires_at <= $1 OR lease_expires_at IS NULL)
                {skip} ORDER BY lease_expires_at NULLS FIRST LIMIT $4 FOR UPDATE SKIP LOCKED
            ), odd AS (
                SELECT id, 0 AS prio, next_run_at AS k FROM {s}.jobs
                WHERE {_ODD} {skip} LIMIT $4 FOR UPDATE SKIP LOCKED
            ), due AS (
                SELECT id, 1 AS prio, next_run_at AS k FROM {s}.jobs
                WHERE state = 'scheduled' AND next_run_at <= $1 {skip}
                ORDER BY next_run_at LIMIT $4 FOR UPDATE SKIP LOCKED
            ), picked AS (
                SELECT p.id, p.prio, p.k, o.state AS old_state, o.attempt AS old_attempt,
                    o.next_run_at AS old_next
                FROM (SELECT * FROM expired UNION ALL SELECT * FROM odd
                      UNION ALL SELECT * FROM due) p
                JOIN {s}.jobs o ON o.id = p.id
                ORDER BY p.prio, p.k NULLS FIRST LIMIT $4
            )
            UPDATE {s}.jobs j SET state = 'running', attempt = j.attempt + 1,
                lease_owner = $2, lease_token = $3, lease_expires_at = $6
            FROM picked WHERE j.id = picked.id
            RETURNING {cols}, j.revision, picked.old_state, picked.old_attempt,
                picked.old_next, picked.prio, picked.k
        """

        async def claimable(conn: Any, next_run: Any) -> bool:
            """Whether a job is due that this kernel may claim (its name not excluded)."""
            if not isinstance(next_run, int) or next_run > now_ms:
                return False
            return not names or await conn.fetchval(
                f"SELECT EXISTS (SELECT 1 FROM {s}.jobs WHERE state = 'scheduled' "
                "AND next_run_at <= $1 AND NOT (name = ANY($2::text[])))",
                now_ms,
                names,
            )

        # the jobs this acquire leased already: on a try after a lost connection, the claim of
        # the try before may have committed with its answer lost (they would wait for their
        # lease to expire, a stall of lease_duration)
        taken = f"""
            SELECT {cols}, j.revision, 'scheduled', j.attempt - 1, j.next_run_at, 1, j.next_run_at
            FROM {s}.jobs j WHERE j.state = 'running' AND j.lease_token = $1
        """

        async def claim(conn: Any, tries: int) -> tuple[list[Any], Any]:
            # the claim is one statement (its own transaction); the earliest due time among
            # the jobs left is read after it. A due job the claim skipped although this kernel
            # may claim it is locked by another worker's claim, committed a moment later: look
            # again after a pause, so that the due time returned is the true one (a due time in
            # the past, with nothing claimed, makes the kernel wait for a wake-up or the poll)
            for pause in _CLAIMED_ELSEWHERE:
                rows = await conn.fetch(taken, token) if tries else []
                if not rows:
                    rows = await conn.fetch(
                        sql, now_ms, self.ctx.owner, token, limit, names, expires
                    )
                next_run = await conn.fetchval(
                    f"SELECT MIN(next_run_at) FROM {s}.jobs WHERE state = 'scheduled' "
                    "AND next_run_at IS NOT NULL"
                )
                if rows or pause is None or not await claimable(conn, next_run):
                    break
                await asyncio.sleep(pause)  # another worker's statement: real time
            return rows, next_run

        rows, next_run = await self._call(claim, shield=True)
        self._next_due_ms = next_run if isinstance(next_run, int) else None
        rows = sorted(rows, key=lambda r: (r[-2], r[-1] if r[-1] is not None else MIN_MS - 1))
        lease_expires_at = from_millis(expires)
        claims: list[Claim] = []
        for row in rows:
            job = self._to_job(row)
            old_state, old_attempt, old_next, prio = row[-5], row[-4], row[-3], row[-2]
            before = _claim_defect(old_state, old_attempt, old_next)
            if before is not None:
                after = (job.defect or "").removeprefix(_UNREADABLE)
                job.defect = f"{before}; {after}" if after else before
            if old_state == JobState.RUNNING.value:
                log.warning(
                    "job %s: the lease of another worker expired; running it again (attempt %d)",
                    job.id,
                    (job.attempt or 0) + 1,
                )
            del prio
            claims.append(
                Claim(
                    job=job,
                    scheduled_at=job.scheduled_at or job.next_run_at or from_millis(now_ms),
                    attempt=(job.attempt or 0) + 1,
                    token=token,
                    lease_expires_at=lease_expires_at,
                    handle=row[_NCOLS],  # the revision the completion compares
                )
            )
        next_due = _safe_dt(next_run)
        return Acquired(claims, next_due)

    async def renew(self, claims: Sequence[Claim], now: datetime) -> list[Claim]:
        mine = [c for c in claims if c.token is not None and c.job.id is not None]
        if not mine:
            return []
        expires = to_millis(now) + self.lease_duration_ms
        ids = [c.job.id for c in mine]
        tokens = [c.token for c in mine]
        rows = await self._call(
            lambda conn, _n: conn.fetch(
                f"UPDATE {self._s}.jobs j SET lease_expires_at = $1 "
                "FROM unnest($2::text[], $3::text[]) AS c(id, token) "
                "WHERE j.id = c.id AND j.lease_token = c.token AND j.state = 'running' "
                "RETURNING j.id, j.lease_token",
                expires,
                ids,
                tokens,
            ),
            shield=True,
        )
        held = {(row[0], row[1]) for row in rows}
        lost: list[Claim] = []
        for claim in mine:
            if (claim.job.id, claim.token) in held:
                claim.lease_expires_at = from_millis(expires)
            else:
                lost.append(claim)
        return lost

    async def complete(self, claim: Claim, result: RunResult) -> None:
        job_id = claim.job.id
        if claim.token is None or job_id is None:
            return
        sql, params, prune = self._complete_sql(claim, result)
        minute = minute_of(result.finished_at)
        counted = result.outcome is not Outcome.MISSED

        async def record(conn: Any, _tries: int) -> None:
            # one statement, so one round trip and one transaction: the run counter, the
            # history row, the outcome and what follows, only while the claim holds its lease
            await conn.execute(sql, *params)
            if prune is not None:
                await self._prune(conn, prune, to_millis(result.finished_at))
            if counted and minute > self._counts_pruned:
                # old counter buckets go once per minute bucket this process reaches
                self._counts_pruned = minute
                await conn.execute(
                    f"DELETE FROM {self._s}.run_counts WHERE minute < $1",
                    minute - _COUNTED_MINUTES,
                )

        await self._call(record, shield=True)

    def _complete_sql(
        self, claim: Claim, result: RunResult
    ) -> tuple[str, list[Any], JobState | None]:
        """The one statement that records an outcome (data-modifying CTEs), its parameters,
        and the kind of finished job whose retention to apply afterwards (or None)."""
        s = self._s
        params: list[Any] = []

        def p(value: Any, cast: str) -> str:
            params.append(value)
            return f"${len(params)}::{cast}"

        job_id, token = p(claim.job.id, "text"), p(claim.token, "text")
        rev = p(claim.handle if isinstance(claim.handle, int) else 0, "bigint")
        finished = to_millis(result.finished_at)
        same = f"revision = {rev}"
        recorded = (
            f"last_run_at = {p(to_millis(result.started_at or result.finished_at), 'bigint')}, "
            f"last_outcome = {p(result.outcome.value, 'text')}, "
            f"last_error = {p(result.error, 'text')}, "
            f"last_traceback = {p(result.traceback, 'text')}, runs = runs + 1, {_NO_LEASE}"
        )
        remove = False
        prune: JobState | None = None
        if result.retry_at is not None:
            sets = (
                f"state = {_RESUMED_STATE}, "
                f"attempt = CASE WHEN {same} THEN {p(claim.attempt, 'int')} ELSE 0 END, "
                f"next_run_at = CASE WHEN {same} THEN {p(to_millis(result.retry_at), 'bigint')} "
                "ELSE next_run_at END"
            )
        elif result.next_run_at is not None:
            at = p(to_millis(result.next_run_at), "bigint")
            sets = (
                f"state = {_RESUMED_STATE}, attempt = 0, "
                f"next_run_at = CASE WHEN {same} THEN {at} ELSE next_run_at END, "
                f"scheduled_at = CASE WHEN {same} THEN {at} ELSE scheduled_at END"
            )
        else:
            final = result.final_state
            retention = self.keep_failed if final is JobState.FAILED else self.keep_completed
            attempt = claim.attempt if result.outcome is not Outcome.MISSED else claim.attempt - 1
            sets = (
                f"state = CASE WHEN {same} THEN {p(final.value, 'text')} "
                f"ELSE {_RESUMED_STATE} END, "
                f"attempt = CASE WHEN {same} THEN {p(attempt, 'int')} ELSE 0 END, "
                f"next_run_at = CASE WHEN {same} THEN NULL ELSE next_run_at END, "
                f"finished_at = CASE WHEN {same} THEN {p(finished, 'bigint')} "
                "ELSE finished_at END"
            )
            if not claim.job.static and not retention.keeps_any:
                remove = True  # removed at once, unless updated while it ran (it runs again)
            elif not claim.job.static and not retention.keep_all:
                prune = final
        parts = [
            f"held AS (SELECT id, revision FROM {s}.jobs WHERE id = {job_id} "
            f"AND lease_token = {token} AND state = 'running' FOR UPDATE)"
        ]
        if result.outcome is not Outcome.MISSED:
            parts.append(
                f"counted AS (INSERT INTO {s}.run_counts (minute, outcome, slot, runs) "
                f"SELECT {p(minute_of(result.finished_at), 'bigint')}, "
                f"{p(result.outcome.value, 'text')}, pg_backend_pid() % {_COUNT_SLOTS}, 1 "
                "FROM held ON CONFLICT (minute, outcome, slot) "
                "DO UPDATE SET runs = run_counts.runs + 1)"
            )
        if self.history_limit > 0 and result.outcome is not Outcome.MISSED:
            cutoff = (
                finished - int(self.history_max_age * 1000)
                if self.history_max_age is not None
                else None
            )
            values = ", ".join(
                [
                    job_id,
                    p(claim.job.name if isinstance(claim.job.name, str) else "", "text"),
                    p(to_millis(claim.scheduled_at), "bigint"),
                    p(_ms(result.started_at), "bigint"),
                    p(finished, "bigint"),
                    p(claim.attempt, "int"),
                    p(result.outcome.value, "text"),
                    p(result.traceback or result.error, "text"),
                    p(self.ctx.owner, "text"),
                ]
            )
            # a run already older than history_max_age is not kept at all
            fresh = "" if cutoff is None or finished >= cutoff else " WHERE FALSE"
            parts.append(
                f"run AS (INSERT INTO {s}.runs (job_id, name, scheduled_at, started_at, "
                f"finished_at, attempt, outcome, error, worker) SELECT {values} FROM held{fresh})"
            )
            # the statement does not see its own new row: keep history_limit - 1 older ones
            parts.append(
                f"trimmed AS (DELETE FROM {s}.runs WHERE EXISTS (SELECT 1 FROM held) AND seq IN "
                f"(SELECT seq FROM {s}.runs WHERE job_id = {job_id} "
                "ORDER BY finished_at DESC, attempt DESC, seq DESC "
                f"OFFSET {p(self.history_limit - (0 if fresh else 1), 'bigint')}))"
            )
            if cutoff is not None:
                parts.append(
                    f"aged AS (DELETE FROM {s}.runs WHERE EXISTS (SELECT 1 FROM held) "
                    f"AND finished_at < {p(cutoff, 'bigint')})"
                )
        keep = "TRUE"
        if remove:
            parts.append(
                f"gone AS (DELETE FROM {s}.jobs WHERE id IN "
                f"(SELECT id FROM held WHERE revision = {rev}))"
            )
            keep = f"revision <> {rev}"
        parts.append(
            f"done AS (UPDATE {s}.jobs SET {sets}, {recorded} "
            f"WHERE id IN (SELECT id FROM held WHERE {keep}))"
        )
        return "WITH " + ", ".join(parts) + " SELECT 1", params, prune

    async def release(self, claims: Sequence[Claim]) -> None:
        ids = [c.job.id for c in claims if c.token is not None and c.job.id]
        tokens = [c.token for c in claims if c.token is not None and c.job.id]
        if not ids:
            return

        async def give_back(conn: Any, _tries: int) -> None:
            async with conn.transaction():
                status = await conn.execute(
                    f"UPDATE {self._s}.jobs j SET state = {_RESUMED_STATE}, "
                    f"attempt = j.attempt - 1, {_NO_LEASE} "
                    "FROM unnest($1::text[], $2::text[]) AS c(id, token) "
                    "WHERE j.id = c.id AND j.lease_token = c.token AND j.state = 'running'",
                    ids,
                    tokens,
                )
                if _rowcount(status):
                    await self._notify(conn)

        await self._call(give_back, shield=True)

    # --- retention ----------------------------------------------------------------------

    async def _prune(self, conn: Any, state: JobState, now_ms: int) -> None:
        if state is JobState.FAILED:
            kind, retention = "NOT static AND state = 'failed'", self.keep_failed
        else:
            kind, retention = "NOT static AND state IN ('completed', 'missed')", self.keep_completed
        s = self._s
        if retention.keep_all:
            return
        if retention.age_ms is not None:
            await conn.execute(
                f"DELETE FROM {s}.jobs WHERE {kind} AND finished_at < $1",
                now_ms - retention.age_ms,
            )
        if retention.count is not None:
            await conn.execute(
                f"DELETE FROM {s}.jobs WHERE id IN (SELECT id FROM {s}.jobs WHERE {kind} "
                "ORDER BY finished_at DESC NULLS LAST OFFSET $1)",
                retention.count,
            )
        if retention.age_ms is None and retention.count is None:
            await conn.execute(f"DELETE FROM {s}.jobs WHERE {kind}")

    async def _prune_all(self, conn: Any, _tries: int) -> None:
        now_ms = to_millis(self.ctx.clock.now())
        async with conn.transaction():
            await self._prune(conn, JobState.COMPLETED, now_ms)
            await self._prune(conn, JobState.FAILED, now_ms)
            if self.history_max_age is not None:
                await conn.execute(
                    f"DELETE FROM {self._s}.runs WHERE finished_at < $1",
                    now_ms - int(self.history_max_age * 1000),
                )


# --- helpers --------------------------------------------------------------------------------


def _rowcount(status: str) -> int:
    """The row count of a command status such as ``UPDATE 3``."""
    try:
        return int(status.rsplit(" ", 1)[-1])
    except (ValueError, AttributeError):
        return 0


def _unstorable(job_id: str) -> bool:
    """An id no row can have: PostgreSQL's text holds no NUL character (a lookup of it finds
    nothing; the kernel's id rule keeps it out of every create)."""
    return "\x00" in job_id


def _index_name(key: str) -> str:
    return "jobs_where_" + hashlib.sha256(key.encode()).hexdigest()[:20]


def _short(value: Any) -> str:
    text = repr(value[:60] if isinstance(value, str) else value)
    return text if len(text) <= 80 else text[:77] + "..."


def _reason(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) <= 200 else text[:197] + "..."


def _count(value: Any) -> int:
    if not isinstance(value, int) or value < 0:
        raise ValueError("negative" if isinstance(value, int) else "not an integer")
    return value


def _max_attempts(value: Any) -> int | None:
    if value is not None and value < 1:
        raise ValueError("less than 1")
    return value  # type: ignore[no-any-return]


def _time(value: Any) -> datetime | None:
    if value is None:
        return None
    if not MIN_MS <= value <= MAX_MS:
        raise ValueError("epoch milliseconds outside years 1 to 9999")
    return from_millis(value)


def _safe_dt(value: Any) -> datetime | None:
    try:
        return _time(value)
    except (TypeError, ValueError):
        return None


def _ms(dt: datetime | None) -> int | None:
    return to_millis(dt) if dt is not None else None


def _json(value: Any) -> Any:
    try:
        return json.loads(value)
    except ValueError as exc:
        raise ValueError(f"not JSON ({exc})") from None


def _schedule(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    spec = _json(value)
    if not isinstance(spec, dict):
        raise TypeError(f"JSON {type(spec).__name__}, not an object")
    return spec


def _backoff(value: Any) -> Backoff | None:
    return None if value is None else Backoff.coerce(_json(value))


def _meta(value: Any) -> dict[str, str]:
    meta = _json(value)
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise TypeError("not a JSON object of strings")
    return meta


def _state(value: Any) -> JobState:
    try:
        return JobState(value)
    except ValueError:
        raise ValueError(f"not a job state ({', '.join(s.value for s in JobState)})") from None


def _outcome(value: Any) -> Outcome | None:
    if value is None:
        return None
    try:
        return Outcome(value)
    except ValueError:
        raise ValueError(f"not an outcome ({', '.join(o.value for o in Outcome)})") from None


def _same_schedule(stored: Any, schedule: dict[str, Any] | None) -> bool:
    try:
        return stored is not None and _schedule(stored) == schedule
    except (TypeError, ValueError):
        return False


def _claim_defect(state: Any, attempt: Any, next_run_at: Any) -> str | None:
    """What was wrong with the state, attempt or due time of a row before the claim rewrote
    them; None when nothing was."""
    problems = []
    for column, value, reader in (("state", state, _state), ("attempt", attempt, _count)):
        try:
            reader(value)
        except Exception as exc:
            problems.append(f"{column} = {_short(value)}: {_reason(exc)}")
    if state == JobState.SCHEDULED.value and next_run_at is None:
        problems.append("next_run_at is NULL in state 'scheduled'")
    return _UNREADABLE + "; ".join(problems) if problems else None
