"""Conversions between tickkit's models and BullMQ's Redis hashes (no I/O here)."""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from tickkit import (
    Backoff,
    Codec,
    InvalidDataError,
    InvalidJobIdError,
    InvalidScheduleError,
    Job,
    JobState,
    Outcome,
)
from tickkit.driver import from_millis

#: schedule types a job scheduler can hold
RECURRING_TYPES = ("cron", "interval")
#: schedule types stored as one-off BullMQ jobs
ONE_OFF_TYPES = ("date", "delay")

#: where a job is, as found in Redis -> its tickkit state
_STATE_OF = {
    "delayed": JobState.SCHEDULED,
    "wait": JobState.SCHEDULED,
    "prioritized": JobState.SCHEDULED,
    "paused": JobState.PAUSED,
    "active": JobState.RUNNING,
    "completed": JobState.COMPLETED,
    "failed": JobState.FAILED,
}


#: key suffixes of a BullMQ 6 queue (QueueKeys.getKeys in BullMQ's classes/queue-keys, and the
#: keys its scripts build: metrics, dn) and this driver's own ``tk:*`` keys: a job whose id is
#: one of them would be stored over the queue's own key (or its ``<id>:...`` keys over the
#: queue's ``<suffix>:...`` keys)
RESERVED_IDS = frozenset(
    {
        "active",
        "wait",
        "waiting-children",
        "paused",
        "id",
        "delayed",
        "prioritized",
        "stalled-check",
        "completed",
        "failed",
        "stalled",
        "repeat",
        "limiter",
        "meta",
        "events",
        "pc",
        "marker",
        "de",
        "dn",
        "metrics",
        "tk",
    }
)


def check_job_id(job_id: str) -> str:
    """BullMQ's rules for custom job ids (not an integer, no ':', not empty) and the names the
    queue's own keys use."""
    if not isinstance(job_id, str) or not job_id or ":" in job_id or job_id.isdigit():
        raise InvalidJobIdError(
            f"invalid job id {_short(job_id)} for BullMQ: it must be a non-empty string that is "
            "not an integer and has no ':'"
        )
    if job_id in RESERVED_IDS:
        raise InvalidJobIdError(
            f"invalid job id {job_id!r} for BullMQ: it is the name of one of the queue's own "
            f"keys (reserved: {', '.join(sorted(RESERVED_IDS))})"
        )
    return job_id


def _short(value: Any, limit: int = 80) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def encode_return(value: Any) -> str:
    """A return value as strict JSON that Node's ``JSON.parse`` reads back: no NaN or
    infinity, no integer past a double's range, no lone surrogate. Raises InvalidDataError
    naming the value."""
    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
        _check_numbers(value)
        text.encode("utf-8")
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise InvalidDataError(
            f"the return value {_short(value)} cannot be stored as JSON: {exc}"
        ) from None
    return text


def _check_numbers(value: Any) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, int) and not isinstance(item, bool):
            float(item)  # OverflowError past a double's range (Node would read Infinity)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)


def spec_to_repeat(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A tickkit recurring schedule spec -> BullMQ repeat fields (``pattern`` + ``tz`` or
    ``every``). The time zone is always written: Node would use its local zone without one."""
    kind = spec.get("type")
    if kind == "cron":
        return {"pattern": str(spec["value"]), "tz": str(spec.get("timezone") or "UTC")}
    if kind == "interval":
        every = round(float(spec["value"]) * 1000)
        if every <= 0:
            raise InvalidScheduleError(f"interval {spec!r} is shorter than one millisecond")
        return {"every": every}
    raise InvalidScheduleError(
        f"the BullMQ driver stores cron and interval schedules as job schedulers and dates as "
        f"delayed jobs; it cannot store schedule {dict(spec)!r}"
    )


def repeat_to_spec(fields: Mapping[str, str]) -> dict[str, Any] | None:
    """A scheduler hash (or a job's ``opts.repeat``) -> a tickkit schedule spec."""
    pattern = fields.get("pattern")
    if pattern:
        return {"type": "cron", "value": pattern, "timezone": fields.get("tz") or "UTC"}
    every = fields.get("every")
    if every not in (None, ""):
        try:
            value = float(every) / 1000  # type: ignore[arg-type]
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value) or value <= 0:
            raise InvalidScheduleError(
                f"field 'every' of a job scheduler is not a positive number of ms: {_short(every)}"
            )
        return {"type": "interval", "value": value}
    return None


def backoff_to_opts(backoff: Backoff | None) -> dict[str, Any] | None:
    if backoff is None:
        return None
    out: dict[str, Any] = {"type": backoff.kind, "delay": round(backoff.delay * 1000)}
    if backoff.jitter:
        out["jitter"] = backoff.jitter
    return out


def backoff_from_opts(value: Any) -> Backoff | None:
    """BullMQ's ``backoff`` (a number or ``{type, delay, jitter}``, ms) -> a Backoff."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return Backoff.fixed(value / 1000)
    if isinstance(value, Mapping) and value.get("type") in ("fixed", "exponential"):
        jitter = value.get("jitter") or 0.0
        try:
            return Backoff(str(value["type"]), float(value.get("delay") or 0) / 1000, None, jitter)
        except (TypeError, ValueError):
            return None
    return None  # a custom backoff strategy of a Node worker: the task's own applies


#: job.meta keys that are a trace context (what OpenTelemetry's text-map propagators write):
#: they travel in BullMQ's own trace-context job option too, so that Node's telemetry
#: (bullmq-otel) continues a trace started in tickkit and the other way round
TRACE_KEYS = ("traceparent", "tracestate", "baggage")


def telemetry_metadata(meta: Mapping[str, str]) -> str | None:
    """BullMQ's ``opts.telemetry.metadata`` (stored as ``opts.tm``) for ``job.meta``: the
    propagation carrier as a JSON object, what bullmq-otel's context manager writes."""
    carrier = {k: meta[k] for k in TRACE_KEYS if isinstance(meta.get(k), str)}
    return json.dumps(carrier, separators=(",", ":")) if "traceparent" in carrier else None


def trace_meta(opts: Mapping[str, Any]) -> dict[str, str]:
    """The trace context a producer left in BullMQ's ``opts.tm`` (``telemetry.metadata``),
    as job.meta entries; nothing when it is absent, unreadable or ``omc`` (omitContext)."""
    text = opts.get("tm")
    if not isinstance(text, str) or opts.get("omc") is True:
        return {}
    carrier = parse_json(text)
    if not isinstance(carrier, dict):
        return {}
    return {k: v for k, v in carrier.items() if k in TRACE_KEYS and isinstance(v, str)}


def job_opts(job: Job, retention: Mapping[str, Any]) -> dict[str, Any]:
    """The ``opts`` JSON written for a job or a scheduler's template."""
    opts: dict[str, Any] = {"attempts": job.max_attempts or 0}
    backoff = backoff_to_opts(job.backoff)
    if backoff is not None:
        opts["backoff"] = backoff
    opts.update(retention)
    metadata = telemetry_metadata(job.meta)
    if metadata is not None:
        opts["tm"] = metadata
    return opts


def parse_json(text: str | None, default: Any = None) -> Any:
    if text is None or text == "":
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


def _int(text: str | None, default: int = 0) -> int:
    try:
        return int(float(text)) if text not in (None, "") else default  # type: ignore[arg-type]
    except (ValueError, OverflowError):
        return default


def _ms(text: str | None) -> datetime | None:
    if text in (None, ""):
        return None
    try:
        return from_millis(float(text))  # type: ignore[arg-type]
    except (ValueError, OverflowError):
        return None


def decode_data(codec: Codec, text: str | None) -> Any:
    """Job data for views: JSON decoded, or the raw text when it is not JSON."""
    if text is None:
        return None
    try:
        return codec.decode(text)
    except ValueError:
        return text


def int_of(text: str | None) -> int:
    """An integer field as the views read it (0 when it is none)."""
    return _int(text)


def ms_of(text: str | None) -> datetime | None:
    """A time field (ms) as the views read it (None when it is none)."""
    return _ms(text)


def nominal_ms(h: Mapping[str, str], opts: Mapping[str, Any]) -> int:
    """The nominal time of a job's occurrence: tickkit's ``tk.at``, a scheduler job's
    ``prevMillis``, else creation time plus delay."""
    at = h.get("tk.at")
    if at:
        return _int(at)
    prev = opts.get("prevMillis")
    if isinstance(prev, (int, float)) and h.get("rjk"):
        return int(prev)
    return _int(h.get("timestamp")) + _int(str(opts.get("delay") or 0))


_INTEGER = re.compile(r"-?[0-9]{1,18}")
#: job hash fields that must hold integers (what takeJobs in lua/common.lua checks)
INTEGER_FIELDS = ("timestamp", "delay", "atm", "ats", "stc", "priority", "tk.at")


def defects_of(h: Mapping[str, str], codec: Codec | None = None) -> list[str]:
    """What cannot be read in a job hash, each naming the field (the checks of takeJobs'
    ``unreadable`` in lua/common.lua, plus data and tickkit's own JSON fields)."""
    found: list[str] = []
    if h.get("tk.defect"):
        found.append(h["tk.defect"])
    if h.get("name") is None:
        found.append("field 'name' is missing")
    data = h.get("data")
    if data is None:
        found.append("field 'data' is missing")
    elif codec is not None:
        try:
            codec.decode(data)
        except ValueError as exc:
            found.append(f"field 'data' is not JSON ({exc}): {_short(data)}")
    opts = h.get("opts")
    if opts is not None and not isinstance(parse_json(opts), dict):
        found.append(f"field 'opts' is not a JSON object: {_short(opts)}")
    if h.get("timestamp") is None:
        found.append("field 'timestamp' is missing")
    for name in INTEGER_FIELDS:
        value = h.get(name)
        if value is not None and not _INTEGER.fullmatch(value):
            found.append(f"field {name!r} is not an integer: {_short(value)}")
    for name in ("tk.spec", "tk.meta"):
        value = h.get(name)
        if value is not None and not isinstance(parse_json(value), dict):
            found.append(f"field {name!r} is not a JSON object: {_short(value)}")
    return found


def unreadable_view(job_id: str, where: str | None, reason: str) -> Job:
    """A job whose record cannot be read at all (its key is not a hash): listable, failed."""
    return Job(
        id=job_id,
        name="",
        state=_STATE_OF.get(where or "", JobState.FAILED),
        last_outcome=Outcome.FAILED if where == "failed" else None,
        last_error=reason,
        meta={"bullmq_job_id": job_id},
        defect=reason,
    )


def meta_of(h: Mapping[str, str]) -> dict[str, str]:
    meta = parse_json(h.get("tk.meta"), {})
    return {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}


#: the job hash fields :func:`nominal_of` reads
NOMINAL_FIELDS = ("tk.at", "rjk", "timestamp", "delay", "opts", "tk.defect")


def nominal_of(h: Mapping[str, str], defects: Sequence[str] | None = None) -> datetime | None:
    """The nominal time :func:`one_off_view` gives a job (its ``scheduled_at``, and the
    ``next_run_at`` of a job in wait): None when a field it needs cannot be read. Reads only
    :data:`NOMINAL_FIELDS` (``defects``: what :func:`defects_of` found in ``h``)."""
    if defects is None:
        defects = defects_of(h)
    opts = parse_json(h.get("opts"), {})
    if not isinstance(opts, dict):
        opts = {}
    nominal_known = (
        h.get("tk.at") or (h.get("rjk") and opts.get("prevMillis")) or h.get("timestamp")
    )
    unread = {d.split("'")[1] for d in defects if d.startswith("field '")}
    if nominal_known and not unread & {"tk.at", "timestamp", "delay"}:
        return _ms(str(nominal_ms(h, opts)))
    return None


def one_off_view(
    codec: Codec,
    job_id: str,
    h: Mapping[str, str],
    where: str | None,
    score: float | None,
) -> Job:
    """A tickkit Job for a BullMQ job hash found in container ``where``."""
    defects = defects_of(h, codec)
    opts = parse_json(h.get("opts"), {})
    if not isinstance(opts, dict):
        opts = {}
    unread = {d.split("'")[1] for d in defects if d.startswith("field '")}
    nominal = nominal_of(h, defects)
    state = _STATE_OF.get(where or "", JobState.SCHEDULED)
    outcome_text = h.get("tk.outcome")
    if state is JobState.COMPLETED and outcome_text == Outcome.MISSED.value:
        state = JobState.MISSED
    next_run: datetime | None = None
    if where == "delayed" and score is not None:
        next_run = from_millis(int(score) // 4096)
    elif where == "paused" and score is not None:
        next_run = from_millis(score)
    elif where in ("wait", "prioritized"):
        next_run = nominal
    try:
        last_outcome = Outcome(outcome_text) if outcome_text else None
    except ValueError:
        last_outcome = None
    if last_outcome is None and where in ("completed", "failed"):
        last_outcome = Outcome.SUCCEEDED if where == "completed" else Outcome.FAILED
    spec = parse_json(h.get("tk.spec"))
    attempts = _int(str(opts.get("attempts") or 0))
    meta = {**trace_meta(opts), **meta_of(h)}
    meta["bullmq_job_id"] = job_id
    return Job(
        id=job_id,
        name=h.get("name", ""),
        data=None if "data" in unread else decode_data(codec, h.get("data")),
        schedule=spec if isinstance(spec, dict) else None,
        next_run_at=next_run,
        scheduled_at=nominal,
        state=state,
        static=h.get("tk.static") == "1",
        # a BullMQ job is one run; recurring jobs are job schedulers (scheduler_view)
        recurring=False,
        attempt=_int(h.get("atm")),
        max_attempts=attempts if attempts > 0 else None,
        backoff=backoff_from_opts(opts.get("backoff")),
        created_at=None if "timestamp" in unread else _ms(h.get("timestamp")),
        last_run_at=_ms(h.get("tk.lastRun") or h.get("processedOn")),
        last_outcome=last_outcome,
        last_error=h.get("failedReason") or None,
        # (tk.runs0: runs before update_job rescheduled the job and reset atm)
        runs=_int(h.get("atm")) + _int(h.get("tk.runs0")),
        meta=meta,
        defect="; ".join(defects) or None,
    )


#: the job hash fields a claim carries, in this order (CLAIM_FIELDS in lua/common.lua)
CLAIM_FIELDS = (
    "name",
    "data",
    "opts",
    "timestamp",
    "atm",
    "rjk",
    "tk.at",
    "tk.meta",
    "tk.spec",
    "tk.static",
    "tk.outcome",
    "tk.lastRun",
    "failedReason",
)


@functools.lru_cache(maxsize=512)
def opts_info(text: str | None) -> tuple[dict[str, Any], int | None, Backoff | None]:
    """A job's ``opts`` JSON -> (opts, max attempts or None, backoff), cached: the jobs of one
    producer share one opts text. The returned dict is shared: read it, never change it."""
    opts = parse_json(text, {})
    if not isinstance(opts, dict):
        opts = {}
    attempts = _int(str(opts.get("attempts") or 0))
    return opts, attempts if attempts > 0 else None, backoff_from_opts(opts.get("backoff"))


def claimed_view(
    job_id: str, values: Sequence[str | None], data: Any, now_ms: int | None = None
) -> Job:
    """The tickkit Job of a BullMQ job just moved to active, from its CLAIM_FIELDS values
    (``data`` already decoded). Same fields as :func:`one_off_view` gives for state active.

    A one-off job taken before its nominal time was promoted (Node's ``job.promote()``, a
    dashboard's "promote", which clear only the hash's ``delay``): it runs now, so its
    nominal time is ``now_ms``."""
    (
        name,
        _data,
        opts_text,
        timestamp,
        atm,
        rjk,
        at,
        meta_text,
        spec_text,
        static,
        outcome_text,
        last_run,
        failed_reason,
    ) = values
    opts, max_attempts, backoff = opts_info(opts_text)
    nominal = nominal_ms({"tk.at": at or "", "rjk": rjk or "", "timestamp": timestamp or ""}, opts)
    if now_ms is not None and not rjk and nominal > now_ms:
        nominal = now_ms
    try:
        last_outcome = Outcome(outcome_text) if outcome_text else None
    except ValueError:
        last_outcome = None
    spec = parse_json(spec_text) if spec_text else None
    meta = {**trace_meta(opts), **(meta_of({"tk.meta": meta_text}) if meta_text else {})}
    meta["bullmq_job_id"] = job_id
    attempt = _int(atm)
    return Job(
        id=job_id,
        name=name or "",
        data=data,
        schedule=spec if isinstance(spec, dict) else None,
        next_run_at=None,
        scheduled_at=from_millis(nominal),
        state=JobState.RUNNING,
        static=static == "1",
        recurring=False,
        attempt=attempt,
        max_attempts=max_attempts,
        backoff=backoff,
        created_at=_ms(timestamp),
        last_run_at=_ms(last_run),
        last_outcome=last_outcome,
        last_error=failed_reason or None,
        runs=attempt,
        meta=meta,
    )


def scheduler_view(
    codec: Codec,
    scheduler_id: str,
    sh: Mapping[str, str],
    next_ms: float | None,
    current: Mapping[str, str] | None,
    where: str | None,
) -> Job:
    """A tickkit recurring Job for a BullMQ job scheduler and its pending (current) job."""
    defects: list[str] = []
    opts = parse_json(sh.get("opts"), {}) if sh.get("opts") is not None else {}
    if not isinstance(opts, dict) or (sh.get("opts") and parse_json(sh.get("opts")) is None):
        defects.append(f"field 'opts' is not a JSON object: {_short(sh.get('opts'))}")
        opts = {}
    try:
        schedule = repeat_to_spec(sh)
    except InvalidScheduleError as exc:
        defects.append(str(exc))
        schedule = None
    data: Any = None
    try:
        data = codec.decode(sh.get("data", "{}"))
    except ValueError as exc:
        defects.append(f"field 'data' is not JSON ({exc}): {_short(sh.get('data'))}")
    pending = current is not None and where in ("delayed", "wait", "prioritized", "paused")
    if sh.get("tk.paused") == "1":
        state = JobState.PAUSED
    elif where == "active":
        state = JobState.RUNNING
    elif pending:
        state = JobState.SCHEDULED
    else:
        state = JobState.COMPLETED
    at = from_millis(next_ms) if next_ms is not None else None
    try:
        last_outcome = Outcome(sh["tk.lastOutcome"]) if sh.get("tk.lastOutcome") else None
    except ValueError:
        last_outcome = None
    attempts = _int(str(opts.get("attempts") or 0))
    return Job(
        id=scheduler_id,
        name=sh.get("name", ""),
        data=data,
        schedule=schedule,
        next_run_at=at if pending or state is JobState.PAUSED else None,
        scheduled_at=at,
        state=state,
        static=sh.get("tk.static") == "1",
        # a job scheduler repeats (schedule None: its repeat options could not be read)
        recurring=schedule is not None,
        attempt=_int(current.get("atm")) if current is not None and pending else 0,
        max_attempts=attempts if attempts > 0 else None,
        backoff=backoff_from_opts(opts.get("backoff")),
        created_at=_ms(sh.get("tk.created")),
        last_run_at=_ms(sh.get("tk.lastRun")),
        last_outcome=last_outcome,
        last_error=sh.get("tk.lastError") or None,
        runs=_int(sh.get("tk.runs")),
        meta={**trace_meta(opts), **meta_of(sh)},
        defect="; ".join(defects) or None,
    )
