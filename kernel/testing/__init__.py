"""Testing helpers for tickkit users and driver authors.

- :class:`VirtualClock`: time that moves only when a test moves it; ``await clock.advance(...)``
  runs every timer due on the way, in order, letting the kernel settle between them.
- the pytest plugin (``tickkit.testing.pytest_plugin``, loaded automatically through the
  ``pytest11`` entry point): the ``virtual_clock`` fixture.
- ``tickkit.testing.contract``: the driver contract suite (see docs/writing-a-driver.md).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import anyio

from ..clock import UTC, Clock

__all__ = ["VirtualClock", "settle"]


async def _settle_asyncio() -> None:
    import asyncio

    this = asyncio.current_task()
    quiet = 0
    for _ in range(100_000):
        await asyncio.sleep(0)
        busy = False
        for task in asyncio.all_tasks():
            if task is this:
                continue
            waiter = getattr(task, "_fut_waiter", None)
            if waiter is None or waiter.done():
                busy = True
                break
        if busy:
            quiet = 0
            continue
        quiet += 1
        if quiet >= 2:
            return


def _backend() -> str:
    import asyncio

    try:
        asyncio.current_task()
    except RuntimeError:
        return "trio"
    return "asyncio"


async def settle(probes: list[Callable[[], bool]] | None = None) -> None:
    """Return once every other task is blocked and every probe says it is idle."""
    backend = _backend()
    for _ in range(100_000):
        if backend == "asyncio":
            await _settle_asyncio()
        else:
            from trio.testing import wait_all_tasks_blocked

            await wait_all_tasks_blocked()
        if not probes or all(probe() for probe in probes):
            return
        await anyio.sleep(0.0005)  # a worker thread is still busy: give it real time


class _Waiter:
    __slots__ = ("alive", "deadline", "event")

    def __init__(self, deadline: datetime, event: anyio.Event) -> None:
        self.deadline = deadline
        self.event = event
        self.alive = True


class VirtualClock(Clock):
    """A clock for tests: ``now()`` is fixed until :meth:`advance`, :meth:`advance_to` or
    :meth:`jump` moves it. No test waits on the wall clock.

    ``advance`` walks through every deadline on the way in order (timers fire in sequence, the
    kernel settles after each), like real time passing fast. ``jump`` sets the time at once
    (like a suspended laptop or a wall-clock step): every passed deadline fires together.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = (start or datetime(2026, 1, 1, tzinfo=UTC)).astimezone(UTC)
        self._heap: list[tuple[datetime, int, _Waiter]] = []
        self._counter = itertools.count()
        self._probes: list[Callable[[], bool]] = []

    def now(self) -> datetime:
        return self._now

    def attach(self, obj: Any) -> None:
        """Called by a kernel that uses this clock: wait for its driver's I/O when settling."""
        probe = getattr(obj, "io_pending", None)
        if probe is not None:
            self._probes.append(lambda: not probe())

    async def wait_until(self, deadline: datetime | None, event: anyio.Event) -> None:
        if event.is_set():
            await anyio.lowlevel.checkpoint()
            return
        if deadline is None:
            await event.wait()
            return
        if deadline <= self._now:
            await anyio.lowlevel.checkpoint()
            return
        waiter = _Waiter(deadline, event)
        heapq.heappush(self._heap, (deadline, next(self._counter), waiter))
        try:
            await event.wait()
        finally:
            waiter.alive = False

    def _next_deadline(self) -> datetime | None:
        while self._heap and not self._heap[0][2].alive:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def _fire_due(self) -> None:
        while self._heap and self._heap[0][0] <= self._now:
            _, _, waiter = heapq.heappop(self._heap)
            if waiter.alive:
                waiter.alive = False
                waiter.event.set()

    async def settle(self) -> None:
        """Let every task run until all are blocked (on this clock or on events)."""
        await settle(self._probes)

    async def advance(self, delta: timedelta | float) -> None:
        """Move time forward by ``delta`` (seconds or timedelta), firing timers in order."""
        if not isinstance(delta, timedelta):
            delta = timedelta(seconds=delta)
        if delta < timedelta(0):
            raise ValueError(f"a clock cannot go back: advance({delta!r})")
        await self.advance_to(self._now + delta)

    async def advance_to(self, target: datetime, *, max_steps: int = 10_000_000) -> None:
        """Move time forward to ``target``, firing timers in order."""
        await self.settle()
        for _ in range(max_steps):
            nxt = self._next_deadline()
            if nxt is None or nxt > target:
                break
            if nxt > self._now:
                self._now = nxt
            self._fire_due()
            await self.settle()
        else:  # pragma: no cover - a runaway schedule
            raise RuntimeError(f"more than {max_steps} timer steps before {target}")
        if target > self._now:
            self._now = target
        self._fire_due()
        await self.settle()

    async def jump(self, delta: timedelta | float) -> None:
        """Step the time forward at once; all timers that passed fire together."""
        if not isinstance(delta, timedelta):
            delta = timedelta(seconds=delta)
        await self.settle()
        self._now += delta
        self._fire_due()
        await self.settle()
