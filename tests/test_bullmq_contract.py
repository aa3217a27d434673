"""The driver contract suite on the BullMQ driver, against a real redis-server."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta

import pytest

from tickkit.drivers.bullmq import BullMQDriver
from tickkit.testing.contract import DriverContract

pytestmark = pytest.mark.redis


class TestBullMQDriver(DriverContract):
    shared_store = True
    honours_exclude = False
    orders_by_due_time = False  # BullMQ's wait list is FIFO by the time a job became ready
    # four Redis round trips per occurrence: three hours of minutely runs keep the test short
    cron_span = timedelta(hours=3)

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"  # redis-py's client is asyncio-only

    @pytest.fixture
    def make_driver(self, redis_url: str) -> Callable[[], BullMQDriver]:
        queue = f"contract-{uuid.uuid4().hex[:12]}"
        # the marker listener wakes kernels; a slower safety-net poll keeps the virtual day short
        return lambda: BullMQDriver(redis_url, queue=queue, poll_interval=60.0)
