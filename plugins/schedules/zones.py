"""Time zone names: IANA names only, looked up once.

A name is accepted when it is ``"UTC"`` or one of the names of the IANA time zone database that
``zoneinfo.available_timezones()`` lists (the system's database, or the ``tzdata`` package).
Refused: anything that is not such a name, even when ``ZoneInfo`` would open it as a file:
``localtime`` (the machine's own zone: it differs from one host to the next), ``posixrules``,
``Factory``, the ``right/`` (leap-second) and ``posix/`` copies, paths, and non-strings.
"""

from __future__ import annotations

import threading
import zoneinfo
from datetime import tzinfo
from functools import lru_cache

from tickkit import UnknownTimezoneError
from tickkit.plugin_api import UTC, short

#: names in a system's zoneinfo folder that are not IANA time zone names
_NOT_IANA = frozenset({"localtime", "posixrules", "Factory"})
#: names that mean UTC itself (the kernel's stored default is "UTC")
_UTC_NAMES = frozenset({"UTC", "Etc/UTC"})

_lock = threading.Lock()
_names: frozenset[str] | None = None


def available_zones() -> frozenset[str]:
    """The accepted zone names (read once per process)."""
    global _names
    with _lock:
        if _names is None:
            found = {
                name
                for name in zoneinfo.available_timezones()
                if name not in _NOT_IANA and not name.startswith(("posix/", "right/"))
            }
            _names = frozenset(found | _UTC_NAMES)
        return _names


def get_zone(name: str | None) -> tzinfo:
    """The tzinfo for an IANA name (None and "UTC" give UTC); any other value raises
    UnknownTimezoneError naming it."""
    if name is None:
        return UTC
    if not isinstance(name, str):
        raise UnknownTimezoneError(
            f"a time zone must be an IANA name (a string such as 'Europe/Berlin'), "
            f"got {short(name)}"
        )
    return _zone(name)


@lru_cache(maxsize=512)
def _zone(name: str) -> tzinfo:
    if name in _UTC_NAMES:
        return UTC
    if name not in available_zones():
        raise UnknownTimezoneError(
            f"unknown time zone {short(name)} (use an IANA name such as 'Europe/Berlin')"
        )
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # removed since listed
        raise UnknownTimezoneError(
            f"unknown time zone {short(name)} (use an IANA name such as 'Europe/Berlin')"
        ) from None


def zone_name(zone: tzinfo) -> str:
    """The name stored for a zone from :func:`get_zone`."""
    return getattr(zone, "key", None) or "UTC"
