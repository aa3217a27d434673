"""The kernel's clock: every reading of the time and every timed wait goes through it.

Production code uses :class:`SystemClock`; tests use ``tickkit.testing.VirtualClock``, which
moves only when the test says so, so a month of cron runs takes milliseconds.
"""

from __future__ import annotations

import abc
from datetime import datetime, timedelta, timezone

import anyio

#: aware UTC, the one definition every room uses (``tickkit.UTC``)
UTC = timezone.utc

#: The longest a :class:`SystemClock` waits in one go before it reads the wall clock again,
#: so that a wall-clock jump (suspend, NTP step) is noticed within this many seconds.
MAX_WALL_SLEEP = 30.0


class Clock(abc.ABC):
    """Where the time comes from. All datetimes are aware and in UTC."""

    @abc.abstractmethod
    def now(self) -> datetime:
        """Return the current time as an aware UTC datetime."""

    @abc.abstractmethod
    async def wait_until(self, deadline: datetime | None, event: anyio.Event) -> None:
        """Wait until ``deadline`` passes or ``event`` is set, whichever comes first.

        ``deadline=None`` waits for the event alone. An implementation may set ``event`` itself
        when the deadline passes (the virtual clock does), so pass an event used only for this.
        """

    async def sleep_until(self, deadline: datetime) -> None:
        """Wait until ``deadline``."""
        await self.wait_until(deadline, anyio.Event())

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        await self.sleep_until(self.now() + timedelta(seconds=seconds))


class SystemClock(Clock):
    """The wall clock, read with :func:`datetime.now`; waits run on the event loop's timer."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def wait_until(self, deadline: datetime | None, event: anyio.Event) -> None:
        while True:
            if event.is_set():
                return
            if deadline is None:
                await event.wait()
                return
            remaining = (deadline - self.now()).total_seconds()
            if remaining <= 0:
                return
            with anyio.move_on_after(min(remaining, MAX_WALL_SLEEP)):
                await event.wait()
