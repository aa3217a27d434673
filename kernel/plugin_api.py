"""The plugin SPI: what a plugin may import from the kernel besides ``tickkit``'s own names.

Everything here is public and kept stable like ``tickkit.__all__``; tickkit's own plugins
(``tickkit.plugins``) import nothing else from the kernel (import-linter checks the rooms, this
module the names; see docs/writing-a-plugin.md). Drivers have their own list in
``tickkit.driver``.
"""

from __future__ import annotations

from .clock import UTC
from .errors import short
from .manager import EntryPointInfo, list_drivers, list_plugins
from .models import (
    EARLIEST_TIME,
    LATEST_TIME,
    MAX_DURATION,
    MIN_EPOCH_MS,
    check_duration,
    check_time,
    from_millis,
    to_millis,
)
from .redact import MASK, SECRET_PARAMS, scrub
from .registry import collecting

__all__ = [
    "EARLIEST_TIME",
    "LATEST_TIME",
    "MASK",
    "MAX_DURATION",
    "MIN_EPOCH_MS",
    "SECRET_PARAMS",
    "UTC",
    "EntryPointInfo",
    "check_duration",
    "check_time",
    "collecting",
    "from_millis",
    "list_drivers",
    "list_plugins",
    "scrub",
    "short",
    "to_millis",
]
