"""The SQLite driver (``sqlite:///tasks.db``): jobs in one SQLite file, built on aiosqlite.

Jobs survive a restart, and several processes on one host (bot shards) can share the file:
every due occurrence runs in exactly one of them. See docs/drivers/sqlite.md.

Design in short:

- one row per job in ``tickkit_jobs``; times are integer epoch milliseconds; task data is the
  kernel codec's JSON text; the schema version is recorded in ``tickkit_version`` and older
  files are migrated forward when a driver starts;
- the index ``(state, next_run_at)`` makes "the next due job" a seek;
- a claim is a lease (owner, token, expiry) taken in one ``BEGIN IMMEDIATE`` transaction; an
  expired lease (its process died) is taken over with the attempt counted;
- the outcome of a run and the job's next occurrence are written by one statement;
- an idle dispatcher does not query the store: each poll reads ``PRAGMA data_version`` on a
  second connection (microseconds, no lock) and re-reads the jobs only when another connection
  committed something or the next known due time or lease expiry has come.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
import sqlite3
import time
import uuid
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

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
    import aiosqlite
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError(
        "the SQLite driver (tickkit.drivers.sqlite)", "sqlite", "aiosqlite"
    ) from exc

__all__ = ["LATEST_VERSION", "MIGRATIONS", "DeadLetter", "Migration", "SQLiteDriver"]

T = TypeVar("T")


# --- schema ------------------------------------------------------------------------------


@attrs.frozen
class Migration:
    """One forward step of the schema: ``statements`` take a store to ``version``."""

    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "jobs table with leases; due-time and lease indexes",
        (
            """CREATE TABLE tickkit_version (
                version INTEGER PRIMARY KEY,
                description TEXT NOT NULL,
                applied_at INTEGER NOT NULL
            )""",
            """CREATE TABLE tickkit_jobs (
                id TEXT PRIMARY KEY NOT NULL,
                name TEXT NOT NULL,
                data TEXT NOT NULL,
                schedule TEXT,
                next_run_at INTEGER,
                scheduled_at INTEGER,
                state TEXT NOT NULL,
                static INTEGER NOT NULL DEFAULT 0,
                attempt INTEGER NOT NULL DEFAULT 0,
                max_attempts INTEGER,
                backoff TEXT,
                created_at INTEGER,
                last_run_at INTEGER,
                last_outcome TEXT,
                last_error TEXT,
                runs INTEGER NOT NULL DEFAULT 0,
                meta TEXT NOT NULL DEFAULT '{}',
                pause_requested INTEGER NOT NULL DEFAULT 0,
                lease_owner TEXT,
                lease_token TEXT,
                lease_expires_at INTEGER
            )""",
            "CREATE INDEX tickkit_jobs_due ON tickkit_jobs (state, next_run_at)",
            "CREATE INDEX tickkit_jobs_lease ON tickkit_jobs (lease_expires_at) "
            "WHERE state = 'running'",
            "CREATE INDEX tickkit_jobs_name ON tickkit_jobs (name)",
            "CREATE INDEX tickkit_jobs_static ON tickkit_jobs (id) WHERE static = 1",
        ),
    ),
    Migration(
        2,
        "finish time and traceback for retention and the dead-letter view",
        (
            "ALTER TABLE tickkit_jobs ADD COLUMN finished_at INTEGER",
            "ALTER TABLE tickkit_jobs ADD COLUMN last_traceback TEXT",
            "UPDATE tickkit_jobs SET finished_at = last_run_at "
            "WHERE state IN ('completed', 'missed', 'failed')",
            "CREATE INDEX tickkit_jobs_done ON tickkit_jobs (finished_at) "
            "WHERE static = 0 AND state IN ('completed', 'missed')",
            "CREATE INDEX tickkit_jobs_failed ON tickkit_jobs (finished_at) "
            "WHERE static = 0 AND state = 'failed'",
        ),
    ),
    Migration(
        3,
        "job revision for updates; run history; indexed data keys",
        (
            "ALTER TABLE tickkit_jobs ADD COLUMN revision INTEGER NOT NULL DEFAULT 0",
            """CREATE TABLE tickkit_runs (
                job_id TEXT NOT NULL,
                name TEXT,
                scheduled_at INTEGER,
                started_at INTEGER,
                finished_at INTEGER,
                attempt INTEGER,
                outcome TEXT,
                error TEXT,
                worker TEXT
            )""",
            "CREATE INDEX tickkit_runs_job ON tickkit_runs (job_id, finished_at, attempt)",
            "CREATE INDEX tickkit_runs_finished ON tickkit_runs (finished_at)",
            """CREATE TABLE tickkit_indexes (
                key TEXT PRIMARY KEY NOT NULL,
                created_at INTEGER NOT NULL
            )""",
        ),
    ),
    Migration(
        4,
        "per-minute run counters; the name index in the list order",
        (
            # the jobs of one task in the list order (next_run_at, id): a page is an index
            # walk that stops at its end (the name index gains the order)
            "DROP INDEX tickkit_jobs_name",
            "CREATE INDEX tickkit_jobs_name ON tickkit_jobs (name, next_run_at, id)",
            """CREATE TABLE tickkit_run_counts (
                minute INTEGER NOT NULL,
                outcome TEXT NOT NULL,
                runs INTEGER NOT NULL,
                PRIMARY KEY (minute, outcome)
            ) WITHOUT ROWID""",
        ),
    ),
)

#: the schema version this code writes
LATEST_VERSION = MIGRATIONS[-1].version

_COLUMNS = (
    "id, name, data, schedule, next_run_at, scheduled_at, state, static, attempt, max_attempts, "
    "backoff, created_at, last_run_at, last_outcome, last_error, runs, meta"
)
_INSERT_COLUMNS = _COLUMNS + ", finished_at"
_INSERT_VALUES = ", ".join("?" for _ in _INSERT_COLUMNS.split(","))

_NCOLS = len(_COLUMNS.split(","))

#: the last millisecond of year 9999: a stored time past it (or of another type) cannot be read
MAX_MS = 253_402_300_799_999
#: the first millisecond of year 1
MIN_MS = -62_135_596_800_000
#: how a defect found by this driver begins
_UNREADABLE = "the stored row cannot be read: "
_KNOWN_STATES = sorted(state.value for state in JobState)
#: index ranges of (state, next_run_at) that hold exactly the states tickkit does not know
#: (numbers sort before text, blobs after it)
_UNKNOWN_STATES = (
    [f"state < '{_KNOWN_STATES[0]}'"]
    + [f"state > '{a}' AND state < '{b}'" for a, b in itertools.pairwise(_KNOWN_STATES)]
    + [f"state > '{_KNOWN_STATES[-1]}'"]
)
#: scheduled rows whose next_run_at cannot be read, and rows in a state tickkit does not know:
#: index ranges of tickkit_jobs_due
_UNREADABLE_ROWS = " OR ".join(
    [
        "(state = 'scheduled' AND next_run_at > :max)",
        "(state = 'scheduled' AND next_run_at IS NULL)",
        *(f"({cond})" for cond in _UNKNOWN_STATES),
    ]
)
_PAD = ", ".join(["NULL"] * (_NCOLS - 1))


def claim_read_sql(excluded: int) -> str:
    """The one read behind a claim, in parts: (0) jobs whose lease expired, oldest first, and
    running jobs whose lease cannot be read (NULL, text, out of range: taken over); (1)
    scheduled jobs that are due, oldest first; (2) the earliest lease expiry; (3) the earliest
    due time after now; (4) with ``excluded`` task names, the earliest due time among their
    jobs; (5) scheduled jobs whose ``next_run_at`` cannot be read (NULL, text, a blob, past
    year 9999) and jobs in a state tickkit does not know: the kernel fails them with their
    defect. Every part is an index seek (5: one seek per range, a multi-index OR).

    SQLite is dynamically typed: a column may hold text where tickkit writes integers, and
    text and blobs sort after every number. So every comparison with a time is bounded by
    ``:max`` (the last millisecond of year 9999), which keeps other types out of the parts
    that read times, and (5) seeks exactly the rows past that bound.

    Named parameters (``claim_read_params``): now, max, limit, limit1 (limit + 1), x0, x1, ...
    (the excluded names).
    """
    skip = marks = ""
    if excluded:
        marks = ", ".join(f":x{i}" for i in range(excluded))
        skip = f" AND name NOT IN ({marks})"
    lease = (
        f"SELECT {_COLUMNS} FROM tickkit_jobs INDEXED BY tickkit_jobs_lease WHERE state = 'running'"
    )
    due = f"SELECT {_COLUMNS} FROM tickkit_jobs INDEXED BY tickkit_jobs_due WHERE"
    parts = [
        f"SELECT 0, * FROM ({lease} AND lease_expires_at <= :now{skip} "
        "ORDER BY lease_expires_at LIMIT :limit)",
        f"SELECT 0, * FROM ({lease} AND lease_expires_at > :max{skip} LIMIT :limit)",
        f"SELECT 0, * FROM ({lease} AND lease_expires_at IS NULL{skip} LIMIT :limit)",
        f"SELECT 1, * FROM ({due} state = 'scheduled' AND next_run_at <= :now{skip} "
        "ORDER BY next_run_at LIMIT :limit1)",
        "SELECT 2, (SELECT MIN(lease_expires_at) FROM tickkit_jobs INDEXED BY tickkit_jobs_lease "
        f"WHERE state = 'running' AND lease_expires_at <= :max), {_PAD}",
        "SELECT 3, (SELECT MIN(next_run_at) FROM tickkit_jobs INDEXED BY tickkit_jobs_due "
        f"WHERE state = 'scheduled' AND next_run_at > :now AND next_run_at <= :max), {_PAD}",
        # one multi-index OR: a seek for each range of rows that cannot be read
        f"SELECT 5, * FROM ({due} ({_UNREADABLE_ROWS}){skip} LIMIT :limit)",
    ]
    if excluded:
        parts.append(
            "SELECT 4, (SELECT MIN(next_run_at) FROM tickkit_jobs "
            f"WHERE state = 'scheduled' AND name IN ({marks}) AND next_run_at <= :max), {_PAD}"
        )
    return " UNION ALL ".join(parts)


def claim_read_params(now_ms: int, limit: int, names: Sequence[str]) -> dict[str, Any]:
    """The named parameters of ``claim_read_sql(len(names))``."""
    params: dict[str, Any] = {"now": now_ms, "max": MAX_MS, "limit": limit, "limit1": limit + 1}
    params.update({f"x{i}": name for i, name in enumerate(names)})
    return params


#: the claim itself: only rows still claimable change (another process may have won the race)
SQL_CLAIM = (
    "UPDATE tickkit_jobs SET state = 'running', attempt = attempt + 1, lease_owner = ?, "
    "lease_token = ?, lease_expires_at = ? WHERE id IN ({ids}) AND ("
    "(state = 'scheduled' AND (next_run_at <= ? OR next_run_at > ? OR next_run_at IS NULL)) "
    "OR (state = 'running' AND (lease_expires_at <= ? OR lease_expires_at > ? "
    "OR lease_expires_at IS NULL)) "
    "OR state NOT IN (" + ", ".join(f"'{s.value}'" for s in JobState) + "))"
)
_DONE = "static = 0 AND state IN ('completed', 'missed')"
_FINISHED = "'completed', 'failed', 'missed'"
_FAILED = "static = 0 AND state = 'failed'"
_RESUMED_STATE = "CASE WHEN pause_requested THEN 'paused' ELSE 'scheduled' END"
_NO_LEASE = "lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, pause_requested = 0"
#: the run history row of an outcome, written only while the claim still holds its lease
_SQL_RUN = (
    "INSERT INTO tickkit_runs (job_id, name, scheduled_at, started_at, finished_at, attempt, "
    "outcome, error, worker) SELECT :id, :run_name, :run_scheduled, :run_started, "
    ":run_finished, :run_attempt, :outcome, :run_error, :worker WHERE EXISTS (SELECT 1 FROM "
    "tickkit_jobs WHERE id = :id AND lease_token = :token AND state = 'running')"
)
#: the job's history beyond history_limit rows
_SQL_RUN_PRUNE = (
    "DELETE FROM tickkit_runs WHERE rowid IN (SELECT rowid FROM tickkit_runs "
    "INDEXED BY tickkit_runs_job WHERE job_id = :id "
    "ORDER BY finished_at DESC, attempt DESC LIMIT -1 OFFSET :keep_runs)"
)
#: the runs of one minute and outcome among those of a batch whose lease is still held (the
#: (id, token) pair of each claim follows: each id with its own token, as one acquire gives
#: its claims one token); run before the updates, which end the leases
_SQL_COUNT = (
    "INSERT INTO tickkit_run_counts (minute, outcome, runs) SELECT ?, ?, n FROM (SELECT "
    "COUNT(*) AS n FROM tickkit_jobs WHERE (id, lease_token) IN (VALUES {pairs}) "
    "AND state = 'running') WHERE n > 0 "
    "ON CONFLICT (minute, outcome) DO UPDATE SET runs = runs + excluded.runs"
)
#: minute buckets of run counters kept (at least RUN_COUNTS_KEPT)
_COUNTED_MINUTES = int(RUN_COUNTS_KEPT.total_seconds() // 60)
#: reads a claim makes at most when other processes keep winning the race for the due rows
_CLAIM_ROUNDS = 10
#: SQLite's default limit on bound parameters is 999 before 3.32
_CHUNK = 500


@attrs.frozen
class DeadLetter:
    """A job whose last attempt failed with no retry left, as kept by the driver."""

    job: Job
    #: when the last attempt finished
    failed_at: datetime | None
    #: the formatted traceback of the last failure (None for a timeout)
    traceback: str | None


@attrs.frozen
class _Retention:
    """What to keep of finished one-off jobs of one kind."""

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
        f"got {value!r}"
    )


#: the longest duration option (finite: a lease or timeout of inf or 1e300 s overflowed later)
_MAX_SECONDS = MAX_DURATION.total_seconds()


def _seconds(value: object, option: str, *, minimum: float, allow_zero: bool = False) -> float:
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DriverError(f"{option} must be a number of seconds or a timedelta, got {value!r}")
    seconds = float(value) if abs(value) <= _MAX_SECONDS else float("inf")
    if not (seconds >= minimum or (allow_zero and seconds == 0)) or not seconds <= _MAX_SECONDS:
        raise DriverError(
            f"{option} must be at least {minimum:g} seconds and at most {_MAX_SECONDS:g}, "
            f"got {short(value)}"
        )
    return seconds


_SYNCHRONOUS = ("off", "normal", "full", "extra")
_URL_OPTIONS = {
    "poll_interval",
    "lease_duration",
    "busy_timeout",
    "synchronous",
    "keep_failed",
    "history_limit",
    "history_max_age",
}


#: an outcome waiting to be written: (statements, parameters, state to prune, future)
_Outcome = tuple[
    tuple[str, ...], dict[str, Any], "tuple[JobState, int] | None", "asyncio.Future[None]"
]


@attrs.define
class _Attempt:
    """One try of a transaction (see ``SQLiteDriver._session``)."""

    last: bool
    again: bool = False


def _attempts() -> Iterator[_Attempt]:
    """The tries of a transaction: a second one only when the first failed on a full disk and
    a checkpoint then gave space back."""
    first = _Attempt(last=False)
    yield first
    if first.again:
        yield _Attempt(last=True)


@attrs.define
class _Idle:
    """What the last full read found, to answer idle polls without querying."""

    version: int | None
    exclude: frozenset[str]
    #: the earliest due time or lease expiry (epoch ms) at which the answer may change
    valid_until: float
    next_due: datetime | None


class SQLiteDriver(Driver):
    """Jobs in a SQLite file (WAL mode), shared safely by several processes on one host.

    Arguments:
        path: the database file (created with its schema when missing).
        poll_interval: seconds between checks for changes made by other processes (default 1).
        lease_duration: seconds a claim is held without renewal; a process that dies holding
            one leaves it to expire, then another process runs the job again (default 30).
        busy_timeout: seconds a statement waits for another process's write lock before it
            fails with :class:`~tickkit.DriverError` (default 5).
        keep_completed: what to keep of one-off jobs that finished (completed or missed):
            False (default) removes them, True keeps them all, an int keeps that many of the
            most recent ones, a timedelta keeps those that finished within that age.
        keep_failed: the same for one-off jobs that failed with no retry left (the dead-letter
            view, :meth:`dead_letters`); default True keeps them all.
        synchronous: SQLite's ``synchronous`` setting: ``"normal"`` (default; in WAL mode a
            committed change survives a crash of the process, the last commits may be lost on
            power loss) or ``"full"`` (survives power loss too, one fsync per commit).
        history_limit: finished runs kept per job in the run history (:meth:`get_runs`,
            table ``tickkit_runs``; default 100, 0 keeps none).
        history_max_age: seconds (or a timedelta) a run stays in the history (default 7
            days; None: no age limit). Both hold after the job itself is gone.

    Static jobs (the schedules of static tasks) are always kept.
    """

    supports_trio = False

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        poll_interval: float | timedelta = 1.0,
        lease_duration: float | timedelta = 30.0,
        busy_timeout: float | timedelta = 5.0,
        keep_completed: bool | int | timedelta = False,
        keep_failed: bool | int | timedelta = True,
        synchronous: str = "normal",
        history_limit: int = DEFAULT_HISTORY_LIMIT,
        history_max_age: float | timedelta | None = DEFAULT_HISTORY_MAX_AGE,
    ) -> None:
        text = os.fspath(path)
        if not isinstance(text, str) or not text:
            raise DriverError(f"the SQLite driver needs a file path, got {path!r}")
        if "\x00" in text or any("\ud800" <= c <= "\udfff" for c in text):
            # sqlite3 and the file system take neither (ValueError / UnicodeEncodeError later)
            raise DriverError(f"the SQLite file path {text!r} holds a NUL or a lone surrogate")
        if text == ":memory:" or text.startswith("file::memory:"):
            raise DriverError(
                f"the SQLite driver needs a file, not {text!r}: use 'memory://' for jobs that "
                "live only in this process"
            )
        self.path = Path(text).expanduser().absolute()
        self.poll_interval: float | None = _seconds(poll_interval, "poll_interval", minimum=0.01)
        self.lease_duration: float | None = _seconds(lease_duration, "lease_duration", minimum=0.1)
        self.busy_timeout = _seconds(busy_timeout, "busy_timeout", minimum=0.0, allow_zero=True)
        self.keep_completed = _retention(keep_completed, "keep_completed")
        self.keep_failed = _retention(keep_failed, "keep_failed")
        if not isinstance(synchronous, str) or synchronous.lower() not in _SYNCHRONOUS:
            raise DriverError(
                f"synchronous must be one of {', '.join(_SYNCHRONOUS)}, got {synchronous!r}"
            )
        self.synchronous = synchronous.lower()
        self.history_limit, self.history_max_age = check_history_options(
            history_limit, history_max_age
        )
        #: the data keys recorded in ``tickkit_indexes`` (read at start and by ensure_indexes)
        self._indexed: set[str] = set()
        self._conn: aiosqlite.Connection | None = None
        self._probe: sqlite3.Connection | None = None
        self._lock: anyio.Lock | None = None
        self._pending = 0
        #: statements sent to the database thread (tests read it to check that idle polls
        #: cost nothing)
        self.io_calls = 0
        self._idle: _Idle | None = None
        self._outcomes: list[_Outcome] = []
        self._io_started = time.monotonic()
        #: what a checkpoint after a full disk did in this session ("", tried, incomplete, done)
        self._full_checkpoint = ""
        self._writing_outcomes = False
        #: the latest minute bucket up to which old run counters were pruned
        self._counts_pruned = -1

    def __repr__(self) -> str:
        return f"SQLiteDriver({str(self.path)!r})"

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SQLiteDriver:
        """``sqlite:///relative/tasks.db`` or ``sqlite:////absolute/tasks.db``; the query string
        may set ``poll_interval``, ``lease_duration``, ``busy_timeout`` (seconds),
        ``synchronous``, ``keep_failed`` (true/false), ``history_limit`` (an integer) and
        ``history_max_age`` (seconds); keyword options win over it."""
        try:
            return cls._from_url(url, **options)
        except (DriverError, InvalidArgumentError) as exc:
            # a key or value taken from a URL whose password holds a raw '?' or '/' is a piece
            # of that password: every piece of the URL's secrets is masked
            raise type(exc)(scrub(str(exc), url)) from None
        except ValueError as exc:  # urlsplit: 'sqlite://[::1' and the like
            raise DriverError(
                scrub(f"invalid sqlite URL {redact_url(url)!r}: {exc}", url)
            ) from None

    @classmethod
    def _from_url(cls, url: str, **options: Any) -> SQLiteDriver:
        parts = urlsplit(url)
        # errors name the URL with its credentials masked (a host part may carry a password)
        shown = redact_url(url)
        if parts.scheme.lower() != "sqlite":
            raise DriverError(f"not a sqlite URL: {shown!r}")
        if parts.netloc not in ("", "localhost"):
            raise DriverError(
                f"sqlite URL {shown!r} names a host ({urlsplit(shown).netloc!r}); "
                "write sqlite:///relative.db or sqlite:////absolute/path.db"
            )
        path = unquote(parts.path)
        if path.startswith("/"):
            path = path[1:]
        if not path:
            raise DriverError(
                f"sqlite URL {shown!r} has no file path; write sqlite:///tasks.db (relative) or "
                "sqlite:////var/lib/bot/tasks.db (absolute)"
            )
        from_query: dict[str, Any] = {}
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key not in _URL_OPTIONS:
                raise DriverError(
                    f"unknown option {key!r} in sqlite URL {shown!r} "
                    f"(known: {', '.join(sorted(_URL_OPTIONS))})"
                )
            if key == "synchronous":
                from_query[key] = value
            elif key == "keep_failed":
                if value.lower() not in ("true", "false", "1", "0"):
                    raise DriverError(f"keep_failed in sqlite URL {shown!r} must be true or false")
                from_query[key] = value.lower() in ("true", "1")
            elif key == "history_max_age":
                try:
                    from_query[key] = float(value)
                except ValueError:
                    raise InvalidArgumentError(
                        f"history_max_age in sqlite URL {shown!r} must be a number of seconds, "
                        f"got {value!r}"
                    ) from None
            elif key == "history_limit":
                try:
                    from_query[key] = int(value)
                except ValueError:
                    raise InvalidArgumentError(
                        f"history_limit in sqlite URL {shown!r} must be an integer, got {value!r}"
                    ) from None
            else:
                try:
                    from_query[key] = float(value)
                except ValueError:
                    raise DriverError(
                        f"{key} in sqlite URL {shown!r} must be a number of seconds, got {value!r}"
                    ) from None
        return cls(path, **{**from_query, **options})

    # --- plumbing -----------------------------------------------------------------------

    def io_pending(self) -> bool:
        return self._pending > 0

    async def _io(self, awaitable: Awaitable[T]) -> T:
        self._pending += 1
        self.io_calls += 1
        # when the statement started: an error message says how long it waited for a lock
        self._io_started = time.monotonic()
        try:
            return await awaitable
        finally:
            self._pending -= 1

    def _db(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise DriverError(f"the SQLite driver for {self.path} is not started (or stopped)")
        return self._conn

    async def _exec(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> int:
        """Run one statement; return the number of rows it changed."""
        cursor = await self._retry_when_full(lambda: self._db().execute(sql, params))
        return int(cursor.rowcount)

    async def _many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        await self._retry_when_full(lambda: self._db().executemany(sql, rows))

    async def _retry_when_full(self, statement: Callable[[], Awaitable[T]]) -> T:
        """Run a statement; when the disk is full and it ran on its own (not inside a
        transaction, which SQLite has rolled back then), checkpoint the write-ahead log into
        the database and truncate it, which gives its space back, and run it once more."""
        alone = not self._db().in_transaction
        try:
            return await self._io(statement())
        except sqlite3.Error as exc:
            if not (alone and _is_full(exc)) or not await self._checkpoint():
                raise
        return await self._io(statement())

    async def _checkpoint(self) -> bool:
        """``PRAGMA wal_checkpoint(TRUNCATE)`` after a write failed on a full disk: copy the
        write-ahead log into the database and truncate it to zero bytes, so that the space it
        held is free again. Return whether it completed (readers in other processes can keep
        it from truncating)."""
        self._full_checkpoint = "tried"
        try:
            rows = await self._io(self._db().execute_fetchall("PRAGMA wal_checkpoint(TRUNCATE)"))
        except sqlite3.Error as exc:
            self.ctx.logger.warning(
                "SQLite store %s: the disk is full and a WAL checkpoint failed too (%s)",
                self.path,
                exc,
            )
            return False
        busy = bool(next(iter(rows))[0])
        self._full_checkpoint = "incomplete" if busy else "done"
        self.ctx.logger.warning(
            "SQLite store %s: a write failed on a full disk; the write-ahead log was "
            "checkpointed%s",
            self.path,
            " but not truncated (another connection is reading)" if busy else " and truncated",
        )
        return not busy

    async def _all(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[Any]:
        return list(await self._io(self._db().execute_fetchall(sql, params)))

    @asynccontextmanager
    async def _session(
        self, *, write: bool = False, attempt: _Attempt | None = None, snapshot: bool = False
    ) -> AsyncIterator[None]:
        """Use the connection alone; ``write``: inside a ``BEGIN IMMEDIATE`` transaction;
        ``snapshot``: reads inside one ``BEGIN`` (deferred) transaction, so that several
        statements see one state of the store (another process may commit between them).

        The body is shielded from cancellation so that a transaction is never left open, and a
        SQLite error becomes a DriverError that names the file.

        With ``attempt`` (from :func:`_attempts`), a transaction that failed on a full disk and
        after which a checkpoint gave the write-ahead log's space back ends quietly, with
        ``attempt.again`` set: the caller's loop runs it once more.
        """
        self._db()
        assert self._lock is not None
        async with self._lock:
            with anyio.CancelScope(shield=True):
                try:
                    self._full_checkpoint = ""
                    if write or snapshot:
                        if write:
                            self._idle = None
                        await self._exec("BEGIN IMMEDIATE" if write else "BEGIN")
                        try:
                            yield
                        except BaseException:
                            await self._rollback()
                            raise
                        try:
                            await self._exec("COMMIT")
                        except BaseException:
                            await self._rollback()
                            raise
                    else:
                        yield
                except sqlite3.Error as exc:
                    if _is_full(exc) and not self._full_checkpoint:
                        # a transaction failed on a full disk (rolled back): give the space of
                        # the write-ahead log back, so that the next write can use it
                        freed = await self._checkpoint()
                        if freed and attempt is not None and not attempt.last:
                            attempt.again = True
                            return
                    raise self._error(exc) from exc

    async def _rollback(self) -> None:
        try:
            await self._exec("ROLLBACK")
        except sqlite3.Error:
            pass  # SQLite already rolled the transaction back (a full disk, for example)

    def _error(self, exc: sqlite3.Error) -> DriverError:
        """A DriverError for a SQLite error, naming the file and what to do."""
        name = str(getattr(exc, "sqlite_errorname", "") or "")
        text = str(exc)
        low = text.lower()
        where = f"SQLite store {self.path}"
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in low:
            waited = max(time.monotonic() - self._io_started, 0.0)
            code = f"{name}: {text}" if name else text
            if self.busy_timeout > 0 and waited >= self.busy_timeout * 0.9:
                return DriverError(
                    f"{where} is locked by another connection and stayed locked past "
                    f"busy_timeout={self.busy_timeout:g}s ({code}); nothing was changed, try "
                    "again or raise busy_timeout"
                )
            why = (
                "another connection wrote to the file after this one began reading"
                if name == "SQLITE_BUSY_SNAPSHOT"
                else "another connection holds a lock"
            )
            return DriverError(
                f"{where} refused the change at once, after {waited:.3f}s ({code}): {why}, and "
                f"SQLite does not wait busy_timeout={self.busy_timeout:g}s in this case; nothing "
                "was changed, try again"
            )
        if name.startswith("SQLITE_READONLY") or "readonly" in low or "read-only" in low:
            return DriverError(
                f"{where} is read-only ({text}): tickkit needs to write the file and to create "
                f"'{self.path.name}-wal' and '{self.path.name}-shm' next to it; check the "
                "permissions of the file and its directory. Nothing was changed."
            )
        if name == "SQLITE_FULL" or "disk is full" in low:
            tried = {
                "done": "; a WAL checkpoint (TRUNCATE) freed the write-ahead log's space but not "
                "enough",
                "incomplete": "; a WAL checkpoint could not truncate the write-ahead log while "
                "another connection reads it",
                "tried": "; a WAL checkpoint failed too",
            }.get(self._full_checkpoint, "")
            return DriverError(
                f"the disk holding {where} is full ({text}): the change was rolled back and the "
                f"jobs already stored are intact{tried}; free some space and try again"
            )
        if name == "SQLITE_NOTADB" or "not a database" in low:
            return IncompatibleStoreError(
                f"{self.path} is not a SQLite database ({text}); tickkit did not change it: "
                "give the SQLite driver a new file or a tickkit store"
            )
        if name.startswith("SQLITE_CANTOPEN") or "unable to open" in low:
            return DriverError(
                f"cannot open {where} ({text}): check that its directory exists and is writable"
            )
        if name.startswith("SQLITE_CORRUPT") or "malformed" in low:
            return DriverError(
                f"{where} is damaged ({text}); check it with "
                f"`sqlite3 {self.path} 'PRAGMA integrity_check'`"
            )
        return DriverError(f"{where}: {type(exc).__name__}: {text}")

    def _data_version(self) -> int | None:
        """``PRAGMA data_version`` on the probe connection: it changes whenever any other
        connection (this driver's own included) commits a change to the file."""
        if self._probe is None:
            return None
        try:
            row = self._probe.execute("PRAGMA data_version").fetchone()
        except sqlite3.Error:
            return None
        return int(row[0])

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self, ctx: DriverContext) -> None:
        await super().start(ctx)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise DriverError(
                "the SQLite driver runs on asyncio only (it is built on aiosqlite); run the "
                "kernel with asyncio, or use 'memory://' or 'redis://' on trio"
            ) from None
        self._lock = anyio.Lock()
        path = self.path
        if path.is_dir():
            raise DriverError(f"SQLite store {path} is a directory; give the path of a file")
        if not path.parent.is_dir():
            raise DriverError(
                f"cannot create SQLite store {path}: the directory {path.parent} does not exist"
            )
        self._create_private(path)
        try:
            self._conn = await self._io(
                aiosqlite.connect(str(path), isolation_level=None, timeout=self.busy_timeout)
            )
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        try:
            await self._open_store()
            try:
                self._probe = sqlite3.connect(
                    str(path), timeout=0, isolation_level=None, check_same_thread=False
                )
            except sqlite3.Error as exc:
                raise self._error(exc) from exc
        except BaseException:
            await self.stop()
            raise

    def _create_private(self, path: Path) -> None:
        """Create a missing store file with mode 0600 (owner only), whatever the umask: the
        jobs' data is nobody else's business. SQLite gives the ``-wal`` and ``-shm`` files it
        creates the mode of the database file, so they are 0600 too. An existing file keeps
        its mode. The process umask is not touched (other threads may create files)."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return  # another process created it meanwhile, or it exists: its mode is kept
        except OSError as exc:
            raise DriverError(
                f"cannot create SQLite store {path} ({exc.strerror or exc}): check that its "
                "directory is writable"
            ) from None
        os.close(fd)

    async def _open_store(self) -> None:
        """Check what the file is before changing anything, then set it up and migrate it."""
        async with self._session():
            version = await self._stored_version()
            await self._exec(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            # a write that is rolled back: fails at once on a read-only file
            await self._exec("BEGIN IMMEDIATE")
            try:
                await self._exec("CREATE TABLE tickkit_write_check (x INTEGER)")
            finally:
                await self._rollback()
            mode = await self._use_wal()
            if mode != "wal":
                raise DriverError(
                    f"SQLite store {self.path} cannot use WAL mode (journal_mode stays "
                    f"{mode!r}); put it on a local file system"
                )
            await self._exec(f"PRAGMA synchronous = {self.synchronous}")
        if version < LATEST_VERSION:
            async with self._session(write=True):
                # another process may have migrated the file meanwhile
                await self._migrate(await self._stored_version())
        await self._prune_all(to_millis(self.ctx.clock.now()))
        async with self._session():
            await self._read_indexed()

    async def _use_wal(self) -> str:
        """Switch the file to WAL unless it is in WAL already; return the journal mode.

        Changing the journal mode needs the file to itself, and SQLite refuses it at once with
        "database is locked" (without waiting busy_timeout) while another process has the file
        open in the middle of the same step, as when several processes open a new store
        together. So the switch is retried here, within busy_timeout, re-reading the mode each
        time (the other process may have switched it meanwhile).
        """
        started = time.monotonic()
        deadline = started + self.busy_timeout
        delay = 0.005
        while True:
            rows = await self._all("PRAGMA journal_mode")
            if str(rows[0][0]).lower() == "wal":
                return "wal"
            try:
                rows = await self._all("PRAGMA journal_mode = WAL")
                return str(rows[0][0]).lower()
            except sqlite3.OperationalError as exc:
                busy = str(getattr(exc, "sqlite_errorname", "") or "").startswith("SQLITE_BUSY")
                if not (busy or "locked" in str(exc).lower()) or time.monotonic() > deadline:
                    self._io_started = started  # the error says how long it was retried
                    raise
            # a wait on another process's file lock: real time, not the kernel's clock
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)

    async def _stored_version(self) -> int:
        """The store's schema version (0 for an empty file); raises for other files."""
        names = {
            row[0]
            for row in await self._all(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'view')"
            )
        }
        names = {n for n in names if not n.startswith("sqlite_")}
        if not names:
            return 0
        if "tickkit_version" not in names:
            shown = ", ".join(sorted(names)[:5]) + (", ..." if len(names) > 5 else "")
            raise IncompatibleStoreError(
                f"{self.path} is a SQLite database but not a tickkit store (it has the tables "
                f"{shown} and no tickkit_version table); tickkit did not change it: give the "
                "SQLite driver a file of its own"
            )
        rows = await self._all("SELECT MAX(version) FROM tickkit_version")
        version = int(rows[0][0] or 0)
        if version > LATEST_VERSION:
            raise IncompatibleStoreError(
                f"{self.path} has tickkit schema version {version}, newer than the versions this "
                f"tickkit knows (up to {LATEST_VERSION}): it was written by a newer tickkit; "
                "upgrade tickkit to use it. tickkit did not change the file."
            )
        return version

    async def _migrate(self, version: int, target: int = LATEST_VERSION) -> None:
        """Apply every migration after ``version`` up to ``target`` (inside a transaction)."""
        now = to_millis(self.ctx.clock.now())
        for migration in MIGRATIONS:
            if version < migration.version <= target:
                for statement in migration.statements:
                    await self._exec(statement)
                await self._exec(
                    "INSERT INTO tickkit_version (version, description, applied_at) "
                    "VALUES (?, ?, ?)",
                    (migration.version, migration.description, now),
                )
                self.ctx.logger.info(
                    "SQLite store %s: schema migrated to version %d (%s)",
                    self.path,
                    migration.version,
                    migration.description,
                )

    async def stop(self) -> None:
        if self._probe is not None:
            self._probe.close()
            self._probe = None
        conn, self._conn = self._conn, None
        self._idle = None
        if conn is not None:
            with anyio.CancelScope(shield=True):
                try:
                    await self._io(conn.close())
                except sqlite3.Error as exc:
                    raise self._error(exc) from exc

    # --- rows ---------------------------------------------------------------------------

    def _to_job(self, row: Sequence[Any]) -> Job:
        """The job of a row. Never raises: a column that cannot be read (written by an older
        version, another tool or by hand) is None in the job (``meta``: empty, ``static``:
        False) and named, with what is wrong, in ``Job.defect``."""
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
            name=read("name", row[1], _text),
            data=read("data", row[2], lambda v: self.ctx.codec.decode(_text(v))),
            schedule=read("schedule", row[3], _schedule),
            next_run_at=read("next_run_at", row[4], _time),
            scheduled_at=read("scheduled_at", row[5], _time),
            state=state,
            static=bool(read("static", row[7], _flag)),
            attempt=attempt,
            max_attempts=read("max_attempts", row[9], _max_attempts),
            backoff=read("backoff", row[10], _backoff),
            created_at=read("created_at", row[11], _time),
            last_run_at=read("last_run_at", row[12], _time),
            last_outcome=read("last_outcome", row[13], _outcome),
            last_error=read("last_error", row[14], _optional_text),
            runs=read("runs", row[15], _count),
            meta=read("meta", row[16], _meta) or {},
        )
        read("id", row[0], _text)
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
            int(job.static),
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

    # --- managing jobs ------------------------------------------------------------------

    async def add_job(self, job: Job, *, replace: bool = False) -> str:
        job_id = job.id if job.id is not None else uuid.uuid4().hex
        params = self._params(job, job_id)
        verb = "INSERT OR REPLACE" if replace else "INSERT"
        async with self._session():
            self._idle = None
            try:
                await self._exec(
                    f"{verb} INTO tickkit_jobs ({_INSERT_COLUMNS}) VALUES ({_INSERT_VALUES})",
                    params,
                )
            except sqlite3.IntegrityError:
                raise JobExistsError(
                    f"a job with id {job_id!r} exists; pass replace=True to replace it"
                ) from None
        return job_id

    async def add_jobs(self, jobs: Sequence[Job], *, replace: bool = False) -> list[str]:
        """Store many new jobs in one transaction (all or none); return their ids.

        Same rules as :meth:`add_job`; when an id exists and ``replace`` is False, nothing is
        stored and :class:`~tickkit.JobExistsError` names the id. Call ``kernel.wakeup()``
        afterwards when a kernel runs on this driver.
        """
        ids = [job.id if job.id is not None else uuid.uuid4().hex for job in jobs]
        if len(set(ids)) != len(ids):
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            raise JobExistsError(f"the batch gives the job id(s) {dupes!r} more than once")
        rows = [self._params(job, job_id) for job, job_id in zip(jobs, ids, strict=True)]
        verb = "INSERT OR REPLACE" if replace else "INSERT"
        given = [job.id for job in jobs if job.id is not None] if not replace else []
        for attempt in _attempts():
            async with self._session(write=True, attempt=attempt):
                for chunk in _chunks(given):
                    found = await self._all(
                        f"SELECT id FROM tickkit_jobs WHERE id IN ({_marks(chunk)})", chunk
                    )
                    if found:
                        raise JobExistsError(
                            f"a job with id {found[0][0]!r} exists; pass replace=True to "
                            "replace it (nothing of the batch was stored)"
                        )
                await self._many(
                    f"{verb} INTO tickkit_jobs ({_INSERT_COLUMNS}) VALUES ({_INSERT_VALUES})",
                    rows,
                )
        return ids

    async def sync_static(self, jobs: Sequence[Job], now: datetime) -> None:
        wanted = {job.id: job for job in jobs}
        for attempt in _attempts():
            async with self._session(write=True, attempt=attempt):
                stored = {
                    row[0]: row
                    for row in await self._all(
                        "SELECT id, schedule, static FROM tickkit_jobs "
                        "INDEXED BY tickkit_jobs_static WHERE static = 1"
                    )
                }
                for chunk in _chunks([i for i in wanted if i not in stored]):
                    for row in await self._all(
                        "SELECT id, schedule, static FROM tickkit_jobs "
                        f"WHERE id IN ({_marks(chunk)})",
                        chunk,
                    ):
                        stored[row[0]] = row
                gone = [i for i, row in stored.items() if row[2] and i not in wanted]
                for chunk in _chunks(gone):
                    await self._exec(
                        f"DELETE FROM tickkit_jobs WHERE id IN ({_marks(chunk)})", chunk
                    )
                for job_id, job in wanted.items():
                    assert job_id is not None
                    old = stored.get(job_id)
                    same = old is not None and old[2] == 1 and _same_schedule(old[1], job.schedule)
                    if same:
                        # same schedule: keep next_run_at, attempt and state (catch-up on restart)
                        await self._exec(
                            "UPDATE tickkit_jobs SET data = ?, max_attempts = ?, backoff = ? "
                            "WHERE id = ?",
                            (
                                self.ctx.encode_data(job),
                                job.max_attempts,
                                json.dumps(job.backoff.to_dict()) if job.backoff else None,
                                job_id,
                            ),
                        )
                    else:
                        await self._exec(
                            f"INSERT OR REPLACE INTO tickkit_jobs ({_INSERT_COLUMNS}) "
                            f"VALUES ({_INSERT_VALUES})",
                            self._params(job, job_id),
                        )

    async def get_job(self, job_id: str) -> Job | None:
        async with self._session():
            rows = await self._all(f"SELECT {_COLUMNS} FROM tickkit_jobs WHERE id = ?", (job_id,))
        return self._to_job(rows[0]) if rows else None

    def _filters(
        self,
        *,
        name: str | None,
        state: JobState | None,
        static: bool | None,
        where: Where | None,
    ) -> tuple[list[str], list[Any]]:
        """SQL conditions and their parameters for list_jobs' and count_jobs' filters. Values
        are always parameters; a key is written into the SQL only when it is recorded in
        ``tickkit_indexes`` (checked there to hold no quote, backslash or control character),
        because SQLite uses an expression index only for the very same expression."""
        conds: list[str] = []
        params: list[Any] = []
        if name is not None:
            conds.append("name = ?")
            params.append(name)
        if state is not None:
            conds.append("state = ?")
            params.append(JobState(state).value)
        if static is not None:
            conds.append("static = ?")
            params.append(int(static))
        for key, value in (where or {}).items():
            if key in self._indexed:
                cond, values = _indexed_match(key, value)
            else:
                cond, values = _scan_match(key, value)
            conds.append(cond)
            params.extend(values)
        return conds, params

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
        conds, params = self._filters(name=name, state=state, static=static, where=where)
        # the list order in two parts, each made of index walks that stop at the limit: the
        # jobs with a next run by (next_run_at, id), then those without one by id (one sort of
        # ORDER BY next_run_at IS NULL, ... sorted every matching row first). A task's jobs
        # walk tickkit_jobs_name, a state's tickkit_jobs_due; all jobs walk tickkit_jobs_due
        # once per state (tickkit_jobs_due holds no id: equal times are sorted, a few rows),
        # merged; other filters seek their own index and sort what they find.
        arms = [""]
        if name is None and state is None and not where:
            unknown = " OR ".join(f"({cond})" for cond in _UNKNOWN_STATES)
            arms = [f"state = '{known}' AND " for known in _KNOWN_STATES] + [f"({unknown}) AND "]
        parts: list[tuple[list[str], list[Any], str]] = []
        if after is None or after.next_run_at is not None:
            timed = [*conds, "next_run_at IS NOT NULL"]
            timed_params = list(params)
            if after is not None and after.next_run_at is not None:
                timed.append("(next_run_at, id) > (?, ?)")
                timed_params += [to_millis(after.next_run_at), after.id]
            parts.append((timed, timed_params, "next_run_at, id"))
        untimed = [*conds, "next_run_at IS NULL"]
        untimed_params = list(params)
        if after is not None and after.next_run_at is None:
            untimed.append("id > ?")
            untimed_params.append(after.id)
        parts.append((untimed, untimed_params, "id"))
        rows: list[Any] = []
        # the two parts read one state of the store: a job that another process finishes
        # between them would be listed twice (with and without a next run), or not at all
        async with self._session(snapshot=len(parts) > 1):
            for part_conds, part_params, order in parts:
                wanted = None if limit is None else max(int(limit), 0) - len(rows)
                if wanted is not None and wanted <= 0:
                    break
                cut = "" if wanted is None else f" LIMIT {wanted}"
                selects = [
                    f"SELECT * FROM (SELECT {_COLUMNS} FROM tickkit_jobs WHERE {arm}"
                    f"{' AND '.join(part_conds)} ORDER BY {order}{cut})"
                    for arm in arms
                ]
                sql = " UNION ALL ".join(selects) + f" ORDER BY {order}{cut}"
                rows += await self._all(sql, part_params * len(arms))
        return [self._to_job(row) for row in rows]

    async def remove_job(self, job_id: str) -> bool:
        async with self._session():
            self._idle = None
            return await self._exec("DELETE FROM tickkit_jobs WHERE id = ?", (job_id,)) > 0

    async def remove_jobs(self, *, name: str) -> int:
        async with self._session():
            self._idle = None
            return await self._exec(
                "DELETE FROM tickkit_jobs WHERE name = ? AND static = 0", (name,)
            )

    async def set_paused(self, job_id: str, paused: bool) -> Job | None:
        flag = int(bool(paused))
        for attempt in _attempts():
            async with self._session(write=True, attempt=attempt):
                await self._exec(
                    "UPDATE tickkit_jobs SET "
                    "pause_requested = "
                    "CASE WHEN state = 'running' THEN :p ELSE pause_requested END, "
                    "state = CASE WHEN :p AND state = 'scheduled' THEN 'paused' "
                    "WHEN NOT :p AND state = 'paused' THEN 'scheduled' ELSE state END "
                    "WHERE id = :id",
                    {"p": flag, "id": job_id},
                )
                rows = await self._all(
                    f"SELECT {_COLUMNS} FROM tickkit_jobs WHERE id = ?", (job_id,)
                )
        return self._to_job(rows[0]) if rows else None

    async def move_to(self, job_id: str, when: datetime) -> bool:
        at = to_millis(when)
        async with self._session():
            self._idle = None
            changed = await self._exec(
                "UPDATE tickkit_jobs SET next_run_at = ?, scheduled_at = ? "
                "WHERE id = ? AND state = 'scheduled'",
                (at, at, job_id),
            )
        return changed > 0

    async def count_jobs(
        self,
        *,
        name: str | None = None,
        state: JobState | None = None,
        static: bool | None = None,
        where: Where | None = None,
    ) -> dict[JobState, int]:
        conds, params = self._filters(name=name, state=state, static=static, where=where)
        sql = "SELECT state, COUNT(*) FROM tickkit_jobs"
        if conds:
            sql += " WHERE " + " AND ".join(conds)
        async with self._session():
            rows = await self._all(sql + " GROUP BY state", params)
        # a state tickkit does not know is not counted (a worker fails such a job when it
        # claims it; list_jobs shows it with its defect)
        known = {s.value for s in JobState}
        return {JobState(state): int(count) for state, count in rows if state in known}

    async def count_by_name(self, *, state: JobState | None = None) -> dict[str, int]:
        # a walk of the name index (tickkit_jobs_name) that counts each name's entries
        sql = "SELECT name, COUNT(*) FROM tickkit_jobs"
        params: list[Any] = []
        if state is not None:
            sql += " WHERE state = ?"
            params.append(JobState(state).value)
        async with self._session():
            rows = await self._all(sql + " GROUP BY name", params)
        return {name: int(count) for name, count in rows if isinstance(name, str) and count}

    async def count_runs(self, since: datetime) -> dict[Outcome, int] | None:
        async with self._session():
            rows = await self._all(
                "SELECT outcome, SUM(runs) FROM tickkit_run_counts WHERE minute >= ? "
                "GROUP BY outcome",
                (minute_of(since),),
            )
        # an outcome tickkit does not know is not counted
        known = {o.value for o in Outcome}
        return {Outcome(o): int(n) for o, n in rows if o in known and n}

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
        sets: list[str] = []
        params: dict[str, Any] = {"id": job_id}
        if not isinstance(data, Unset):
            sets.append("data = :data")
            params["data"] = self.ctx.codec.encode(data)  # refuses before anything is written
        if not isinstance(schedule, Unset):
            sets.append("schedule = :schedule")
            params["schedule"] = (
                json.dumps(schedule, sort_keys=True) if schedule is not None else None
            )
        if not isinstance(next_run_at, Unset):
            params["next"] = to_millis(next_run_at)
            sets += [
                "next_run_at = :next",
                "scheduled_at = :next",
                "revision = revision + 1",
                "attempt = CASE WHEN state = 'running' THEN attempt ELSE 0 END",
                f"state = CASE WHEN state IN ({_FINISHED}) THEN 'scheduled' ELSE state END",
                f"finished_at = CASE WHEN state IN ({_FINISHED}) THEN NULL ELSE finished_at END",
            ]
        rows: list[Any] = []
        for attempt in _attempts():
            async with self._session(write=True, attempt=attempt):
                if sets:
                    await self._exec(
                        f"UPDATE tickkit_jobs SET {', '.join(sets)} WHERE id = :id", params
                    )
                rows = await self._all(
                    f"SELECT {_COLUMNS} FROM tickkit_jobs WHERE id = ?", (job_id,)
                )
        return self._to_job(rows[0]) if rows else None

    async def get_runs(self, job_id: str, *, limit: int = 20) -> list[RunRecord]:
        """The job's kept runs, newest first. A row that cannot be read whole (edited by hand,
        another tool) is returned with what can be read (an unreadable optional column is
        None); one whose finish time, attempt or outcome cannot be read is left out and
        logged, naming the row: the listing never fails on it."""
        sql = (
            "SELECT rowid, job_id, name, scheduled_at, started_at, finished_at, attempt, "
            "outcome, error, worker FROM tickkit_runs WHERE job_id = ?"
        )
        params: list[Any] = [job_id]
        if self.history_max_age is not None:
            sql += " AND NOT (finished_at < ?)"
            params.append(to_millis(self.ctx.clock.now()) - int(self.history_max_age * 1000))
        sql += " ORDER BY finished_at DESC, attempt DESC, rowid DESC LIMIT ?"
        params.append(max(int(limit), 0))
        async with self._session():
            rows = await self._all(sql, params)
        records: list[RunRecord] = []
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
            self.ctx.logger.warning(
                "SQLite store %s: run history row %s of job %s cannot be read (%s); left out",
                self.path,
                row[0],
                _short(row[1]),
                why,
            )
            return None
        return RunRecord(
            job_id=str(row[1]),
            name=read("name", row[2], _text) or "",
            scheduled_at=read("scheduled_at", row[3], _time),
            started_at=read("started_at", row[4], _time),
            finished_at=finished,
            attempt=attempt,
            outcome=outcome,
            error=read("error", row[8], _optional_text),
            worker=read("worker", row[9], _optional_text),
        )

    async def ensure_indexes(self, keys: Iterable[str]) -> None:
        """Record ``keys`` in ``tickkit_indexes`` and create their expression indexes
        (``CREATE INDEX IF NOT EXISTS``, which indexes the stored jobs), in one transaction:
        several processes may do it at once."""
        try:
            wanted = check_index_keys(list(keys), "ensure_indexes")
        except TickkitError as exc:
            raise InvalidArgumentError(str(exc)) from None
        now = to_millis(self.ctx.clock.now())
        for attempt in _attempts():
            async with self._session(write=True, attempt=attempt):
                for key in wanted:
                    await self._exec(
                        "INSERT OR IGNORE INTO tickkit_indexes (key, created_at) VALUES (?, ?)",
                        (key, now),
                    )
                await self._read_indexed()
        self._idle = None

    async def _read_indexed(self) -> None:
        """Read the recorded index keys and create any index missing (in a session)."""
        rows = await self._all("SELECT key FROM tickkit_indexes")
        keys = set()
        for (key,) in rows:
            try:
                keys.update(check_index_keys([key]))
            except (TickkitError, TypeError):
                self.ctx.logger.warning(
                    "SQLite store %s: tickkit_indexes holds the key %s, which cannot be "
                    "indexed; where on it scans",
                    self.path,
                    _short(key),
                )
        for key in sorted(keys - self._indexed):
            await self._exec(
                f"CREATE INDEX IF NOT EXISTS {_index_name(key)} ON tickkit_jobs "
                f"({_value_expr(key)})"
            )
        self._indexed = keys

    async def dead_letters(
        self, *, name: str | None = None, limit: int | None = None
    ) -> list[DeadLetter]:
        """Jobs whose last attempt failed with no retry left, most recent failure first, with
        their error (``job.last_error``), attempts (``job.attempt``) and traceback."""
        sql = f"SELECT {_COLUMNS}, finished_at, last_traceback FROM tickkit_jobs WHERE state = ?"
        params: list[Any] = [JobState.FAILED.value]
        if name is not None:
            sql += " AND name = ?"
            params.append(name)
        sql += " ORDER BY finished_at DESC, rowid DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(max(int(limit), 0))
        async with self._session():
            rows = await self._all(sql, params)
        return [
            DeadLetter(
                self._to_job(row),
                _safe_dt(row[17]),
                row[18] if isinstance(row[18], str) else None,
            )
            for row in rows
        ]

    # --- running jobs -------------------------------------------------------------------

    async def acquire(
        self, *, now: datetime, limit: int, exclude: frozenset[str] = frozenset()
    ) -> Acquired:
        now_ms = to_millis(now)
        idle = self._idle
        if (
            idle is not None
            and idle.exclude == exclude
            and now_ms < idle.valid_until
            and idle.version is not None
            and self._data_version() == idle.version
        ):
            return Acquired([], idle.next_due)
        version = self._data_version()
        names = sorted(exclude)
        claims: list[Claim] = []
        async with self._session():
            # No transaction: each statement is atomic, and the claim's WHERE re-checks that a
            # row is still claimable, so of several processes racing for a row one wins. A
            # process that lost every row of a round reads again at once (the winners' rows
            # are no longer due), so that it does not sleep a poll interval with work left.
            for _round in range(_CLAIM_ROUNDS):
                found = await self._all(
                    claim_read_sql(len(names)), claim_read_params(now_ms, limit, names)
                )
                expired = [r[1:] for r in found if r[0] == 0]
                # rows that cannot be read come first: the kernel fails them at once
                unreadable = [r[1:] for r in found if r[0] == 5]
                scheduled = sorted((r[1:] for r in found if r[0] == 1), key=lambda r: r[4])
                next_lease = next((r[1] for r in found if r[0] == 2), None)
                next_future = next((r[1] for r in found if r[0] == 3), None)
                next_excluded = next((r[1] for r in found if r[0] == 4), None)
                wanted = (expired + unreadable)[:limit]
                due = scheduled[: limit - len(wanted)]
                wanted += due
                left = scheduled[len(due) :]
                if not wanted:
                    break
                self._idle = None
                claims = await self._claim(wanted, {r[0] for r in expired}, now_ms)
                if claims:
                    break
        first_left = left[0][4] if left else next_future
        times = [t for t in (first_left, next_excluded) if t is not None]
        next_run = min(times) if times else None
        next_due = _dt(next_run)
        if not wanted:
            bounds = [t for t in (next_run, next_lease) if t is not None]
            self._idle = _Idle(
                version=version,
                exclude=exclude,
                valid_until=min(bounds) if bounds else float("inf"),
                next_due=next_due,
            )
        return Acquired(claims, next_due)

    async def _claim(self, wanted: list[Any], taken_over: set[Any], now_ms: int) -> list[Claim]:
        """Claim the rows ``wanted`` that are still claimable; return their claims.

        A row that cannot be read is claimed too, with ``Job.defect`` saying what is wrong:
        the kernel completes such a claim once as failed. The defect is read from the row as
        it was before the claim (the claim rewrites its state, attempt and lease)."""
        token = uuid.uuid4().hex
        expires = now_ms + self.lease_duration_ms
        ids = [r[0] for r in wanted]
        # the claim rewrites state and attempt: what was wrong with them is read before it
        defects = {r[0]: d for r in wanted if (d := _claim_defect(r)) is not None}
        for chunk in _chunks(ids):
            await self._exec(
                SQL_CLAIM.format(ids=_marks(chunk)),
                (self.ctx.owner, token, expires, *chunk, now_ms, MAX_MS, now_ms, MAX_MS),
            )
        got: dict[Any, Any] = {}
        for chunk in _chunks(ids):
            for row in await self._all(
                f"SELECT {_COLUMNS}, revision FROM tickkit_jobs "
                f"WHERE id IN ({_marks(chunk)}) AND lease_token = ?",
                (*chunk, token),
            ):
                got[row[0]] = row
        lease_expires_at = from_millis(expires)
        claims: list[Claim] = []
        for job_id in ids:
            row = got.get(job_id)
            if row is None:
                continue  # another process claimed it first
            job = self._to_job(row)  # its attempt: the attempts before this one
            before = defects.get(job_id)
            if before is not None:
                after = (job.defect or "").removeprefix(_UNREADABLE)
                job.defect = f"{before}; {after}" if after else before
            if job_id in taken_over:
                self.ctx.logger.warning(
                    "job %s: the lease of another worker expired; running it again (attempt %d)",
                    job_id,
                    (job.attempt or 0) + 1,
                )
            scheduled_at = job.scheduled_at or job.next_run_at or from_millis(now_ms)
            claims.append(
                Claim(
                    job=job,
                    scheduled_at=scheduled_at,
                    attempt=(job.attempt or 0) + 1,
                    token=token,
                    lease_expires_at=lease_expires_at,
                    handle=row[_NCOLS],  # the revision the completion compares
                )
            )
        return claims

    @property
    def lease_duration_ms(self) -> int:
        assert self.lease_duration is not None
        return int(self.lease_duration * 1000)

    async def renew(self, claims: Sequence[Claim], now: datetime) -> list[Claim]:
        mine = [c for c in claims if c.token is not None and c.job.id is not None]
        if not mine:
            return []
        expires = to_millis(now) + self.lease_duration_ms
        ids = [c.job.id for c in mine if c.job.id is not None]
        held: set[tuple[str, str]] = set()
        for attempt in _attempts():
            async with self._session(write=True, attempt=attempt):
                held.clear()
                for chunk in _chunks(ids):
                    rows = await self._all(
                        "SELECT id, lease_token FROM tickkit_jobs "
                        f"WHERE id IN ({_marks(chunk)}) AND state = 'running'",
                        chunk,
                    )
                    held.update((row[0], row[1]) for row in rows)
                renewed = [(c.job.id, c.token) for c in mine if (c.job.id, c.token) in held]
                if renewed:
                    await self._many(
                        "UPDATE tickkit_jobs SET lease_expires_at = ? "
                        "WHERE id = ? AND lease_token = ?",
                        [(expires, job_id, token) for job_id, token in renewed],
                    )
        lost: list[Claim] = []
        for claim in mine:
            assert claim.job.id is not None and claim.token is not None
            if (claim.job.id, claim.token) in held:
                claim.lease_expires_at = from_millis(expires)
            else:
                lost.append(claim)
        return lost

    async def complete(self, claim: Claim, result: RunResult) -> None:
        job_id = claim.job.id
        if claim.token is None or job_id is None:
            return
        finished = to_millis(result.finished_at)
        common = {
            "id": job_id,
            "token": claim.token,
            "rev": claim.handle if isinstance(claim.handle, int) else 0,
            "last_run_at": to_millis(result.started_at or result.finished_at),
            "outcome": result.outcome.value,
            "error": result.error,
            "traceback": result.traceback,
            # the run history row
            "run_name": claim.job.name if isinstance(claim.job.name, str) else "",
            "run_scheduled": to_millis(claim.scheduled_at),
            "run_started": _ms(result.started_at),
            "run_finished": finished,
            "run_attempt": claim.attempt,
            "run_error": result.traceback or result.error,
            "worker": self.ctx.owner,
            "keep_runs": self.history_limit,
        }
        history: tuple[str, ...] = ()
        if result.outcome is not Outcome.MISSED:
            # a run: counted in its minute's counter (by _write_outcomes, for the whole batch)
            common["minute"] = minute_of(result.finished_at)
            if self.history_limit > 0:
                history = (_SQL_RUN, _SQL_RUN_PRUNE)  # before the update, which ends the lease
        recorded = (
            "last_run_at = :last_run_at, last_outcome = :outcome, last_error = :error, "
            "last_traceback = :traceback, runs = runs + 1, " + _NO_LEASE
        )
        mine = "WHERE id = :id AND lease_token = :token AND state = 'running'"
        # updated while it ran (update_job changed its timing): the stored next run stays
        same = "revision IS :rev"
        if result.retry_at is not None:
            sql = (
                f"UPDATE tickkit_jobs SET state = {_RESUMED_STATE}, "
                f"attempt = CASE WHEN {same} THEN :attempt ELSE 0 END, "
                f"next_run_at = CASE WHEN {same} THEN :next ELSE next_run_at END, "
                f"{recorded} {mine}"
            )
            params = {**common, "attempt": claim.attempt, "next": to_millis(result.retry_at)}
        elif result.next_run_at is not None:
            sql = (
                f"UPDATE tickkit_jobs SET state = {_RESUMED_STATE}, attempt = 0, "
                f"next_run_at = CASE WHEN {same} THEN :next ELSE next_run_at END, "
                f"scheduled_at = CASE WHEN {same} THEN :next ELSE scheduled_at END, "
                f"{recorded} {mine}"
            )
            params = {**common, "next": to_millis(result.next_run_at)}
        else:
            final = result.final_state
            retention = self.keep_failed if final is JobState.FAILED else self.keep_completed
            attempt = claim.attempt if result.outcome is not Outcome.MISSED else claim.attempt - 1
            sql = (
                f"UPDATE tickkit_jobs SET "
                f"state = CASE WHEN {same} THEN :final ELSE {_RESUMED_STATE} END, "
                f"attempt = CASE WHEN {same} THEN :attempt ELSE 0 END, "
                f"next_run_at = CASE WHEN {same} THEN NULL ELSE next_run_at END, "
                f"finished_at = CASE WHEN {same} THEN :finished ELSE finished_at END, "
                f"{recorded} {mine}"
            )
            params = {**common, "final": final.value, "attempt": attempt, "finished": finished}
            if not claim.job.static and not retention.keeps_any:
                # removed at once, unless updated while it ran (then it runs again)
                await self._record(
                    (
                        *history,
                        sql + " AND revision IS NOT :rev",
                        "DELETE FROM tickkit_jobs WHERE id = :id AND lease_token = :token "
                        "AND state = 'running' AND revision IS :rev",
                    ),
                    params,
                )
                return
            if not claim.job.static and not retention.keep_all:
                await self._record((*history, sql), params, prune=(final, finished))
                return
        await self._record((*history, sql), params)

    async def _record(
        self,
        statements: tuple[str, ...],
        params: dict[str, Any],
        *,
        prune: tuple[JobState, int] | None = None,
    ) -> None:
        """Write one outcome (its statements, in order, in one transaction). Outcomes that
        arrive while a write is under way are written together in the next transaction, so
        that many runs finishing at once cost one commit instead of one each."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._outcomes.append((statements, params, prune, future))
        if not self._writing_outcomes:
            self._writing_outcomes = True
            try:
                while self._outcomes:
                    batch, self._outcomes = self._outcomes, []
                    await self._write_outcomes(batch)
            finally:
                self._writing_outcomes = False
        await future

    async def _write_outcomes(self, batch: list[_Outcome]) -> None:
        # outcomes of the same statements run as one executemany per statement, in order
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for statements, params, _prune, _future in batch:
            groups.setdefault(statements, []).append(params)
        # retention counts ages from the latest finish time in the batch
        prunes: dict[JobState, int] = {}
        latest: int | None = None
        # the batch's runs per minute bucket and outcome: (job id, lease token) of each
        counted: dict[tuple[int, str], list[tuple[str, str]]] = {}
        for _statements, params, prune, _future in batch:
            if prune is not None:
                prunes[prune[0]] = max(prunes.get(prune[0], prune[1]), prune[1])
            if _SQL_RUN in _statements:
                finished = params["run_finished"]
                latest = finished if latest is None else max(latest, finished)
            if "minute" in params:
                key = (params["minute"], params["outcome"])
                counted.setdefault(key, []).append((params["id"], params["token"]))
        # old counter buckets go once per minute bucket this process reaches, not per run
        minute = max((m for m, _o in counted), default=None)
        if minute is not None and minute <= self._counts_pruned:
            minute = None
        several = len(batch) > 1 or any(len(statements) > 1 for statements in groups)
        try:
            for attempt in _attempts():
                async with self._session(
                    write=several or bool(prunes) or latest is not None or bool(counted),
                    attempt=attempt,
                ):
                    self._idle = None
                    await self._count_runs(counted)
                    for statements, rows in groups.items():
                        for sql in statements:
                            if len(rows) == 1:
                                await self._exec(sql, rows[0])
                            else:
                                await self._many(sql, rows)
                    for state, now_ms in prunes.items():
                        keep = self.keep_failed if state is JobState.FAILED else self.keep_completed
                        await self._prune(state, keep, now_ms)
                    if latest is not None:
                        await self._prune_runs(latest)
                    if minute is not None:
                        await self._exec(
                            "DELETE FROM tickkit_run_counts WHERE minute < ?",
                            (minute - _COUNTED_MINUTES,),
                        )
            if minute is not None:
                self._counts_pruned = minute
        except BaseException as exc:
            for *_rest, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            for *_rest, future in batch:
                if not future.done():
                    future.set_result(None)

    async def _count_runs(self, counted: dict[tuple[int, str], list[tuple[str, str]]]) -> None:
        """Add a batch's runs to their minute buckets, counting only the runs whose lease is
        still held (in a txn): one statement per minute and outcome and per 250 runs (SQLite's
        old limit of 999 parameters)."""
        for (minute, outcome), claims in counted.items():
            for start in range(0, len(claims), _CHUNK // 2):
                chunk = claims[start : start + _CHUNK // 2]
                await self._exec(
                    _SQL_COUNT.format(pairs=", ".join("(?, ?)" for _ in chunk)),
                    [minute, outcome, *(v for pair in chunk for v in pair)],
                )

    async def _prune_runs(self, now_ms: int) -> None:
        """Drop history rows older than ``history_max_age`` (in a transaction)."""
        if self.history_max_age is not None:
            await self._exec(
                "DELETE FROM tickkit_runs WHERE finished_at < ?",
                (now_ms - int(self.history_max_age * 1000),),
            )

    async def release(self, claims: Sequence[Claim]) -> None:
        rows = [(c.job.id, c.token) for c in claims if c.token is not None and c.job.id]
        if not rows:
            return
        for attempt in _attempts():
            async with self._session(write=True, attempt=attempt):
                await self._many(
                    f"UPDATE tickkit_jobs SET state = {_RESUMED_STATE}, attempt = attempt - 1, "
                    f"{_NO_LEASE} WHERE id = ? AND lease_token = ? AND state = 'running'",
                    rows,
                )

    # --- retention ----------------------------------------------------------------------

    async def _prune(self, state: JobState, retention: _Retention, now_ms: int) -> None:
        """Remove finished one-off jobs of ``state``'s kind beyond ``retention`` (in a txn)."""
        kind, index = (
            (_FAILED, "tickkit_jobs_failed")
            if state is JobState.FAILED
            else (_DONE, "tickkit_jobs_done")
        )
        if retention.keep_all:
            return
        if retention.age_ms is not None:
            await self._exec(
                f"DELETE FROM tickkit_jobs WHERE id IN (SELECT id FROM tickkit_jobs "
                f"INDEXED BY {index} WHERE {kind} AND finished_at < ?)",
                (now_ms - retention.age_ms,),
            )
        if retention.count is not None:
            await self._exec(
                f"DELETE FROM tickkit_jobs WHERE id IN (SELECT id FROM tickkit_jobs "
                f"INDEXED BY {index} WHERE {kind} ORDER BY finished_at DESC LIMIT -1 OFFSET ?)",
                (retention.count,),
            )
        if retention.age_ms is None and retention.count is None:
            await self._exec(f"DELETE FROM tickkit_jobs WHERE {kind}")

    async def _prune_all(self, now_ms: int) -> None:
        for attempt in _attempts():
            async with self._session(write=True, attempt=attempt):
                await self._prune(JobState.COMPLETED, self.keep_completed, now_ms)
                await self._prune(JobState.FAILED, self.keep_failed, now_ms)
                await self._prune_runs(now_ms)


def _is_full(exc: sqlite3.Error) -> bool:
    name = str(getattr(exc, "sqlite_errorname", "") or "")
    return name == "SQLITE_FULL" or "disk is full" in str(exc).lower()


def _dt(ms: int | None) -> datetime | None:
    return from_millis(ms) if ms is not None else None


# --- reading columns (each raises for a value it cannot read; _to_job names the column) ----


def _short(value: Any) -> str:
    """A short repr of a stored value, for messages."""
    if isinstance(value, bytes):
        text = f"X'{value[:24].hex()}{'...' if len(value) > 24 else ''}'"
    else:
        text = repr(value[:60] if isinstance(value, str) else value)
    return text if len(text) <= 80 else text[:77] + "..."


def _reason(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) <= 200 else text[:197] + "..."


def _sql_type(value: Any) -> str:
    if value is None:
        return "NULL"
    return {bytes: "a blob", str: "text", int: "an integer", float: "a real"}.get(
        type(value), type(value).__name__
    )


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{_sql_type(value)}, not text")
    return value


def _optional_text(value: Any) -> str | None:
    return None if value is None else _text(value)


def _integer(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{_sql_type(value)}, not an integer")
    return value


def _count(value: Any) -> int:
    if _integer(value) < 0:
        raise ValueError("negative")
    return int(value)


def _flag(value: Any) -> bool:
    if _integer(value) not in (0, 1):
        raise ValueError("not 0 or 1")
    return bool(value)


def _max_attempts(value: Any) -> int | None:
    if value is not None and _integer(value) < 1:
        raise ValueError("less than 1")
    return value


def _time(value: Any) -> datetime | None:
    """An epoch-milliseconds column."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{_sql_type(value)}, not epoch milliseconds")
    if not MIN_MS <= value <= MAX_MS:
        raise ValueError("epoch milliseconds outside years 1 to 9999")
    return from_millis(value)


def _json(value: Any) -> Any:
    try:
        return json.loads(_text(value))
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
        return JobState(_text(value))
    except ValueError:
        raise ValueError(f"not a job state ({', '.join(s.value for s in JobState)})") from None


def _outcome(value: Any) -> Outcome | None:
    if value is None:
        return None
    try:
        return Outcome(_text(value))
    except ValueError:
        raise ValueError(f"not an outcome ({', '.join(o.value for o in Outcome)})") from None


def _same_schedule(stored: Any, schedule: dict[str, Any] | None) -> bool:
    """Whether a stored schedule column holds ``schedule`` (one it cannot read does not)."""
    try:
        return stored is not None and _schedule(stored) == schedule
    except (TypeError, ValueError):
        return False


def _claim_defect(row: Sequence[Any]) -> str | None:
    """What is wrong with the state and attempt of a row about to be claimed (the columns the
    claim rewrites, and a NULL next_run_at, which a running row may have), in the words of
    ``SQLiteDriver._to_job``; None when nothing is."""
    problems = []
    for column, value, reader in (("state", row[6], _state), ("attempt", row[8], _count)):
        try:
            reader(value)
        except Exception as exc:
            problems.append(f"{column} = {_short(value)}: {_reason(exc)}")
    if row[6] == JobState.SCHEDULED.value and row[4] is None:
        problems.append("next_run_at is NULL in state 'scheduled'")
    return _UNREADABLE + "; ".join(problems) if problems else None


def _safe_dt(value: Any) -> datetime | None:
    try:
        return _time(value)
    except (TypeError, ValueError):
        return None


def _ms(dt: datetime | None) -> int | None:
    return to_millis(dt) if dt is not None else None


def _marks(values: Sequence[Any]) -> str:
    return ", ".join("?" for _ in values)


def _chunks(values: Sequence[T]) -> list[Sequence[T]]:
    return [values[i : i + _CHUNK] for i in range(0, len(values), _CHUNK)]


# --- where ----------------------------------------------------------------------------------


def _index_name(key: str) -> str:
    """The name of the expression index of a data key (the same in every process)."""
    return "tickkit_where_" + hashlib.sha256(key.encode()).hexdigest()[:20]


def _path(key: str) -> str:
    """The JSON path of an indexed key as a SQL string literal. Index keys hold no '"', '\\'
    or control character (check_index_keys); a "'" is doubled."""
    return "'$.\"" + key.replace("'", "''") + "\"'"


def _value_expr(key: str) -> str:
    """The indexed expression: the key's value in the data (NULL when the data is not JSON,
    not an object, or lacks the key). json_valid keeps a row edited into bad JSON from failing
    every write and read."""
    return f"CASE WHEN json_valid(data) THEN json_extract(data, {_path(key)}) END"


def _type_expr(key: str) -> str:
    return f"CASE WHEN json_valid(data) THEN json_type(data, {_path(key)}) END"


def _indexed_match(key: str, value: Any) -> tuple[str, list[Any]]:
    """A where condition on an indexed key: a seek on the index of ``_value_expr`` (the very
    expression), then the JSON type, which json_extract does not tell (true is 1)."""
    expr, kind = _value_expr(key), _type_expr(key)
    if value is None:
        return f"({expr} IS NULL AND {kind} = 'null')", []
    if isinstance(value, bool):
        return f"({expr} = ? AND {kind} = ?)", [int(value), "true" if value else "false"]
    if isinstance(value, str):
        return f"({expr} = ? AND {kind} = 'text')", [value]
    return f"({expr} = ? AND {kind} IN ('integer', 'real'))", [value]


def _scan_match(key: str, value: Any) -> tuple[str, list[Any]]:
    """A where condition on a key that is not indexed: json_each of the row's data, the key a
    parameter (any key works, quotes included), rows whose data is not a JSON object skipped."""
    source = (
        "json_each(CASE WHEN json_valid(tickkit_jobs.data) THEN CASE WHEN "
        "json_type(tickkit_jobs.data) = 'object' THEN tickkit_jobs.data END END)"
    )
    head = f"EXISTS (SELECT 1 FROM {source} AS e WHERE e.key = ? AND "
    if value is None:
        return head + "e.type = 'null')", [key]
    if isinstance(value, bool):
        return head + "e.type = ?)", [key, "true" if value else "false"]
    if isinstance(value, str):
        return head + "e.type = 'text' AND e.atom = ?)", [key, value]
    return head + "e.type IN ('integer', 'real') AND e.atom = ?)", [key, value]
