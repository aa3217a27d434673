"""The kernel's internal tasks (the dispatcher, lease renewal, services, watchdogs), and
store calls awaited to their end."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc

log = logging.getLogger("tickkit")


class InternalTasks:
    """Internal tasks in the kernel's task group, each in a cancel scope of its own, counted
    so that a shutdown from any task can cancel them all and wait for them.

    Shutdown cancels these scopes, never the task group's, which would also cancel the body of
    the caller's ``async with``. A nested task group cannot replace this: only the task that
    opened the kernel's task group may close it, while a stop may come from any task."""

    def __init__(self) -> None:
        self._alive = 0
        self._scopes: set[anyio.CancelScope] = set()
        self._all_done: anyio.Event | None = None

    def spawn(
        self,
        tg: anyio.abc.TaskGroup,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        *,
        cancelled: bool,
    ) -> None:
        """Start ``fn(*args)`` in ``tg``. Its cancel scope is registered here, before the task
        first runs, so that a shutdown right after start cancels it too (``cancelled``: the
        kernel stops already)."""
        self._alive += 1
        scope = anyio.CancelScope()
        self._scopes.add(scope)
        if cancelled:
            scope.cancel()
        tg.start_soon(self._tracked, fn, args, scope)

    async def _tracked(
        self, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...], scope: anyio.CancelScope
    ) -> None:
        try:
            with scope:
                await fn(*args)
        except Exception:
            log.exception("tickkit kernel task %s failed", getattr(fn, "__name__", fn))
        finally:
            self._scopes.discard(scope)
            self._alive -= 1
            if not self._alive and self._all_done is not None:
                self._all_done.set()

    def cancel_all(self) -> None:
        for internal in list(self._scopes):
            internal.cancel()

    async def wait_all(self) -> None:
        """Wait until every internal task has ended (from a task that does not own the group)."""
        while self._alive:
            done = anyio.Event()
            self._all_done = done
            await done.wait()


async def to_the_end(call: Callable[[], Awaitable[None]], *, trio: bool) -> None:
    """Await a store call to its end even when this task is cancelled meanwhile, then
    raise the cancellation: a driver's start cut short (``asyncio.run`` cancels every task
    as it exits) can leave a connection thread that nothing closes."""
    if trio:
        with anyio.CancelScope(shield=True):  # trio cancels only through scopes
            await call()
        return
    inner = asyncio.get_running_loop().create_task(_awaited(call))
    try:
        await asyncio.shield(inner)
    except asyncio.CancelledError:
        with anyio.CancelScope(shield=True):
            while not inner.done():
                try:
                    await asyncio.wait([inner])
                except asyncio.CancelledError:
                    continue
        if not inner.cancelled():
            inner.exception()  # retrieved: the cancellation is what the caller sees
        raise


async def _awaited(call: Callable[[], Awaitable[None]]) -> None:
    await call()
