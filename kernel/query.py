"""Queries over jobs a driver has in hand: the list order, ``where`` matching, and the minute
buckets of run counters. Part of the driver SPI (re-exported by ``tickkit.driver``)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from .clock import UTC
from .models import Cursor, Job, JobState, Where

#: how long a driver keeps its per-minute run counters (:meth:`Driver.count_runs`), at least
RUN_COUNTS_KEPT = timedelta(days=2)


def minute_of(at: datetime) -> int:
    """The run-counter bucket of ``at``: whole minutes since the Unix epoch (UTC)."""
    return int(at.timestamp() // 60)


def select_jobs(
    jobs: Iterable[Job],
    *,
    name: str | None = None,
    state: JobState | None = None,
    static: bool | None = None,
    where: Where | None = None,
    limit: int | None = None,
    after: Cursor | None = None,
) -> list[Job]:
    """:meth:`Driver.list_jobs`'s filters and order, for a driver that has its jobs in hand:
    those matching every filter given, in the list order (:func:`list_order`), only those
    strictly after ``after``, at most ``limit``."""
    position = list_order(after) if after is not None else None
    found = [
        job
        for job in jobs
        if (name is None or job.name == name)
        and (state is None or job.state is state)
        and (static is None or job.static == static)
        and (not where or matches_where(job.data, where))
        and (position is None or list_order(job) > position)
    ]
    found.sort(key=list_order)
    return found[:limit] if limit is not None else found


def list_order(job: Job | Cursor) -> tuple[bool, datetime, str]:
    """The key of the list order, a total order: ``next_run_at`` (None last), then the id
    (string order, which is UTF-8 byte order too)."""
    at = job.next_run_at
    return (at is None, at if at is not None else _NO_TIME, job.id or "")


_NO_TIME = datetime(1970, 1, 1, tzinfo=UTC)


def matches_where(data: Any, where: Where) -> bool:
    """Whether task ``data`` matches every ``key: value`` of ``where``: ``data`` is an object
    holding each key with a JSON-equal value (``1 == 1.0``; ``True != 1``; ``None`` matches
    JSON null only, not a missing key)."""
    if not isinstance(data, dict):
        return False
    for key, value in where.items():
        if key not in data or not json_equal(data[key], value):
            return False
    return True


def json_equal(stored: Any, wanted: Any) -> bool:
    """JSON equality of two scalars: numbers by value (int or float), booleans only with
    booleans, strings with strings, null with null; objects and arrays equal nothing."""
    if wanted is None or stored is None:
        return wanted is None and stored is None
    if isinstance(wanted, bool) or isinstance(stored, bool):
        return isinstance(wanted, bool) and isinstance(stored, bool) and wanted == stored
    if isinstance(wanted, str) or isinstance(stored, str):
        return isinstance(wanted, str) and isinstance(stored, str) and wanted == stored
    if isinstance(wanted, (int, float)) and isinstance(stored, (int, float)):
        return bool(wanted == stored)
    return False
