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
from datetime import datetime
from typing import Any, TextIO
from urllib.parse import parse_qsl, unquote, urlsplit

from tickkit import redact
from tickkit.plugin_api import MASK, SECRET_PARAMS, UTC

#: record attributes that identify a run
RUN_FIELDS = ("task", "job_id", "attempt")
FORMATS = ("text", "json")
LEVELS = ("debug", "info", "warning", "error", "critical")

_HANDLER_NAME = "tickkit-cli"

#: secrets shorter than this are masked only where :func:`tickkit.redact` finds them (in a
#: URL's userinfo or a secret query parameter): masking every "ab" in every line would garble
#: the output without protecting anything worth the name
MIN_SECRET_LENGTH = 4

#: the secrets of the URLs this command was given (see :func:`add_secrets_of`)
_secrets: set[str] = set()


def secrets_of(url: str) -> set[str]:
    """The secrets in ``url``: its password (or lone userinfo token) and the values of secret
    query parameters, each as written and percent-decoded."""
    found: set[str] = set()
    try:
        parts = urlsplit(url)
        userinfo, at, _host = parts.netloc.rpartition("@")
        if at and userinfo:
            user, colon, password = userinfo.partition(":")
            found.add(password if colon else user)
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key.lower() in SECRET_PARAMS:
                found.add(value)
    except ValueError:
        pass
    found |= {unquote(s) for s in found}
    return {s for s in found if len(s) >= MIN_SECRET_LENGTH and s != MASK}


def add_secrets_of(url: str) -> None:
    """Mask the secrets of ``url`` wherever this command prints them (logs, errors, output),
    also where a message shows them outside a URL (``names a host ('user:pw@host')``)."""
    _secrets.update(secrets_of(url))


def scrub(text: str) -> str:
    """``text`` safe to print: URL credentials masked (:func:`tickkit.redact`) and every known
    secret of this command's URLs replaced by ``***``."""
    text = redact(text)
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def _scrub_value(value: Any) -> Any:
    return scrub(value) if isinstance(value, str) else value


def _message(record: logging.LogRecord) -> str:
    """The record's message; a message whose arguments do not format says so (never raises)."""
    try:
        return record.getMessage()
    except Exception as exc:
        return f"{record.msg!r} (bad log arguments: {type(exc).__name__})"


class TextFormatter(logging.Formatter):
    """``2026-11-28 21:05:00.123 INFO  tickkit.worker: message [task=x job=y attempt=1]``."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created).astimezone()
        line = (
            f"{stamp.strftime('%Y-%m-%d %H:%M:%S')}.{int(record.msecs):03d} "
            f"{record.levelname:<7} {record.name}: {_message(record)}"
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
        # credentials never reach a log line (a driver URL, a connection error, a traceback)
        return scrub(line)


class JSONFormatter(logging.Formatter):
    """One JSON object per line (for log shippers)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": _message(record),
        }
        for key in RUN_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                out[key] = _scrub_value(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        out = {key: _scrub_value(value) for key, value in out.items()}
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
