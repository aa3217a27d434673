"""Waiting on a condition with a bounded timeout, for tests that run on the wall clock because
a real peer (Redis, Node, another process) keeps its own time."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable


async def wait_for(
    condition: Callable[[], bool | Awaitable[bool]], timeout: float, what: str
) -> None:
    """Return once ``condition()`` (a plain or async callable) is true; fail after ``timeout``
    seconds, saying ``what`` was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        met = condition()
        if inspect.isawaitable(met):
            met = await met
        if met:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)
