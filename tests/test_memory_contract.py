from __future__ import annotations

from collections.abc import Callable

import pytest

from tickkit.drivers.memory import MemoryDriver
from tickkit.testing.contract import DriverContract


class TestMemoryDriver(DriverContract):
    @pytest.fixture
    def make_driver(self) -> Callable[[], MemoryDriver]:
        return lambda: MemoryDriver(keep_completed=False)
