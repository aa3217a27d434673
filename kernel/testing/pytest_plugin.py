"""pytest plugin (entry point ``pytest11``): fixtures for testing tickkit tasks.

``virtual_clock``: a :class:`~tickkit.testing.VirtualClock` starting at 2026-01-01 00:00 UTC.
Pass it as ``Kernel(clock=virtual_clock)`` and move time with ``await virtual_clock.advance(...)``.
Async tests run under anyio's pytest plugin (``@pytest.mark.anyio``).
"""

from __future__ import annotations

import pytest

from . import VirtualClock


@pytest.fixture
def virtual_clock() -> VirtualClock:
    """A virtual clock at 2026-01-01 00:00 UTC."""
    return VirtualClock()
