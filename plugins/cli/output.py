"""How the ``tickkit`` command prints: tables, JSON documents, local and relative times."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TextIO

from tickkit import Job
from tickkit.plugin_api import EntryPointInfo

if TYPE_CHECKING:
    from tickkit import RunRecord

from .logs import scrub


def echo(text: str, stream: TextIO | None = None) -> None:
    """Print one line (or several), credentials masked (see :func:`logs.scrub`)."""
    out = stream or sys.stdout
    out.write(scrub(text) + "\n")


def emit_json(value: Any, stream: TextIO | None = None) -> None:
    """Print ``value`` as one indented JSON document, credentials masked."""
    out = stream or sys.stdout
    text = json.dumps(value, indent=2, sort_keys=False, default=str, ensure_ascii=False)
    out.write(scrub(text))
    out.write("\n")


def compact_json(value: Any) -> str:
    """``value`` as JSON on one line."""
    return json.dumps(value, default=str, ensure_ascii=False)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain text table, columns padded to their widest cell (no trailing spaces)."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [list(headers), *rows]:
        line = "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row))
        lines.append(line.rstrip())
    return "\n".join(lines)


def iso(dt: datetime | None) -> str | None:
    """ISO 8601 text of an aware datetime (None stays None)."""
    return dt.isoformat() if dt is not None else None


def local_time(dt: datetime | None) -> str:
    """``dt`` in this machine's local time zone, e.g. ``2026-11-28 21:05:00 CET``."""
    if dt is None:
        return "-"
    local = dt.astimezone()
    return f"{local.strftime('%Y-%m-%d %H:%M:%S')} {local.tzname() or local.strftime('%z')}"


def relative(dt: datetime | None, now: datetime) -> str:
    """``in 9m 59s``, ``3s ago``, ``now``: ``dt`` relative to ``now``."""
    if dt is None:
        return "-"
    seconds = round((dt - now).total_seconds())
    if seconds == 0:
        return "now"
    text = span(abs(seconds))
    return f"in {text}" if seconds > 0 else f"{text} ago"


def span(seconds: int) -> str:
    """A duration in its two largest units: ``2d 3h``, ``9m 59s``, ``45s``."""
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            count, seconds = divmod(seconds, size)
            parts.append(f"{count}{unit}")
    return " ".join(parts[:2]) if parts else "0s"


def short(text: str | None, width: int = 48) -> str:
    """One line of at most ``width`` characters (``-`` for nothing), credentials masked before
    it is cut (a cut URL would no longer be recognised as one)."""
    if not text:
        return "-"
    line = " ".join(scrub(text).split())
    return line if len(line) <= width else line[: width - 1] + "…"


def attempts(job: Job) -> str:
    """Attempts made at the current occurrence, out of the allowed total when known."""
    if job.max_attempts:
        return f"{job.attempt}/{job.max_attempts}"
    return str(job.attempt)


def job_to_dict(job: Job) -> dict[str, Any]:
    """A job as a JSON-able dict (times in ISO 8601, UTC)."""
    return {
        "id": job.id,
        "task": job.name,
        "state": str(job.state),
        "static": job.static,
        "schedule": job.schedule,
        "next_run_at": iso(job.next_run_at),
        "scheduled_at": iso(job.scheduled_at),
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "backoff": job.backoff.to_dict() if job.backoff is not None else None,
        "data": job.data,
        "created_at": iso(job.created_at),
        "last_run_at": iso(job.last_run_at),
        "last_outcome": str(job.last_outcome) if job.last_outcome is not None else None,
        "last_error": job.last_error,
        "runs": job.runs,
        "meta": dict(job.meta),
        "defect": job.defect,
    }


def indented(text: str, prefix: str = "    ") -> str:
    """Every line of ``text`` (a traceback) indented, trailing blank lines dropped."""
    return "\n".join(prefix + line if line else "" for line in text.rstrip().splitlines())


def run_to_dict(run: RunRecord) -> dict[str, Any]:
    """One run of the history as a JSON-able dict (times in ISO 8601, UTC)."""
    return {
        "job_id": run.job_id,
        "task": run.name,
        "scheduled_at": iso(run.scheduled_at),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "attempt": run.attempt,
        "outcome": str(run.outcome),
        "error": run.error,
        "worker": run.worker,
    }


def took(run: RunRecord) -> str:
    """How long a run took (``0.31s``, ``2m 5s``), ``-`` when its start is unknown."""
    if run.started_at is None:
        return "-"
    seconds = (run.finished_at - run.started_at).total_seconds()
    return f"{seconds:.2f}s" if seconds < 60 else span(round(seconds))


def runs_text(runs: Sequence[RunRecord]) -> str:
    """The ``tickkit runs`` output: one line per run, newest first, each failure followed by its
    traceback (indented)."""
    rows = [
        [
            local_time(run.finished_at),
            str(run.outcome),
            str(run.attempt),
            local_time(run.scheduled_at),
            took(run),
            run.worker or "-",
        ]
        for run in runs
    ]
    lines = table(["FINISHED", "OUTCOME", "ATTEMPT", "SCHEDULED", "TOOK", "WORKER"], rows)
    out = []
    for run, line in zip(runs, lines.splitlines()[1:], strict=True):
        out.append(line)
        if run.error:
            out.append(indented(run.error))
    return "\n".join([lines.splitlines()[0], *out])


def jobs_table(jobs: Sequence[Job], now: datetime) -> str:
    """The ``tickkit list`` table."""
    rows = [
        [
            job.id or "-",
            job.name or "-",
            str(job.state),
            local_time(job.next_run_at)
            + (f" ({relative(job.next_run_at, now)})" if job.next_run_at else ""),
            attempts(job),
            short(job.last_error),
        ]
        for job in jobs
    ]
    return table(["ID", "TASK", "STATE", "NEXT RUN", "ATTEMPTS", "LAST ERROR"], rows)


def entry_point_to_dict(info: EntryPointInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "value": info.value,
        "distribution": info.distribution,
        "version": info.version,
        "loaded": info.error is None,
        "error": info.error,
    }


def entry_points_table(found: Sequence[EntryPointInfo]) -> str:
    """The ``tickkit drivers`` / ``tickkit plugins`` table."""
    rows = [
        [
            info.name,
            info.value,
            f"{info.distribution or '?'} {info.version or ''}".strip(),
            # the last column: the whole reason, however long (it says how to fix it)
            "ok" if info.error is None else f"failed: {' '.join(info.error.split())}",
        ]
        for info in found
    ]
    return table(["NAME", "OBJECT", "FROM", "STATUS"], rows)
