"""Logging for the ``tickkit`` command: one handler on the ``tickkit`` logger.

Records of a run (``ctx.logger`` in a task, and the worker's own run records) carry ``task``,
``job_id`` and ``attempt``; both formats show them. ``text`` prints readable lines, ``json``
prints one JSON object per line with ``time``, ``level``, ``logger``, ``message`` and, when
present, ``task``, ``job_id``, ``attempt`` and ``exc`` (the formatted traceback).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import Any, TextIO

#: record attributes that identify a run
RUN_FIELDS = ("task", "job_id", "attempt")
FORMATS = ("text", "json")
LEVELS = ("debug", "info", "warning", "error", "critical")

_HANDLER_NAME = "tickkit-cli"


class TextFormatter(logging.Formatter):
    """``2026-11-28 21:05:00.123 INFO  tickkit.worker: message [task=x job=y attempt=1]``."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created).astimezone()
        line = (
            f"{stamp.strftime('%Y-%m-%d %H:%M:%S')}.{int(record.msecs):03d} "
            f"{record.levelname:<7} {record.name}: {record.getMessage()}"
        )
        run = [
            f"{key}={getattr(record, key)}"
            for key in RUN_FIELDS
            if getattr(record, key, None) not in (None, "")
        ]
        if run:
            line += f" [{' '.join(run)}]"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        elif record.exc_text:
            line += "\n" + record.exc_text
        return line


class JSONFormatter(logging.Formatter):
    """One JSON object per line (for log shippers)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in RUN_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, default=str, ensure_ascii=False)


def configure(level: str = "info", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Send ``tickkit`` records at ``level`` and above to ``stream`` (default stderr) in ``fmt``.

    Calling it again replaces the handler it installed before (nothing else is touched).
    """
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {FORMATS}, got {fmt!r}")
    if level.lower() not in LEVELS:
        raise ValueError(f"log level must be one of {LEVELS}, got {level!r}")
    logger = logging.getLogger("tickkit")
    for old in list(logger.handlers):
        if old.get_name() == _HANDLER_NAME:
            logger.removeHandler(old)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    # the command owns the output: records do not also reach a root handler
    logger.propagate = False
