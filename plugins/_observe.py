"""The run-scope plumbing observer plugins share (OpenTelemetry, Prometheus).

An observer follows each run from ``tickkit_wrap_run`` to ``tickkit_run_finished``. Two things
are the same for all of them and live here:

- :class:`RunScope`, the async context manager ``tickkit_wrap_run`` returns: it calls the
  observer on entry and exit, and reports a run that ended by a ``BaseException`` that is not an
  ``Exception`` (cancelled by shutdown, interrupted): such a run gets no
  ``tickkit_run_finished``, so the scope is the only place that sees it end;
- :class:`RunStates`, an observer's per-run state, keyed by the run's ``TaskContext`` object
  (not ``id(ctx)``, which a later run may get again once a context is gone).
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from tickkit import TaskContext

S = TypeVar("S")

__all__ = ["RunScope", "RunStates", "run_duration"]


def run_duration(ctx: TaskContext) -> float:
    """Seconds since the run started, on the kernel's clock."""
    return (ctx.kernel.clock.now() - ctx.started_at).total_seconds()


class RunStates(Generic[S]):
    """One state object per run in progress (an observer's span, say)."""

    __slots__ = ("_by_run",)

    def __init__(self) -> None:
        self._by_run: dict[TaskContext, S] = {}

    def put(self, ctx: TaskContext, state: S) -> S:
        self._by_run[ctx] = state
        return state

    def get(self, ctx: TaskContext) -> S | None:
        return self._by_run.get(ctx)

    def pop(self, ctx: TaskContext) -> S | None:
        """The run's state, forgotten (call it when the run ends)."""
        return self._by_run.pop(ctx, None)

    def __len__(self) -> int:
        return len(self._by_run)


class RunScope:
    """What an observer's ``tickkit_wrap_run`` returns.

    ``enter(ctx)`` runs when the run starts, ``exit(ctx)`` when it ends whatever the outcome,
    then ``cancelled(ctx, duration)`` when it ended by a ``BaseException`` that is not an
    ``Exception`` (no ``tickkit_run_finished`` follows such a run).
    """

    __slots__ = ("_cancelled", "_enter", "_exit", "ctx")

    def __init__(
        self,
        ctx: TaskContext,
        *,
        cancelled: Callable[[TaskContext, float], None],
        enter: Callable[[TaskContext], None] | None = None,
        exit: Callable[[TaskContext], None] | None = None,
    ) -> None:
        self.ctx = ctx
        self._cancelled = cancelled
        self._enter = enter
        self._exit = exit

    async def __aenter__(self) -> None:
        if self._enter is not None:
            self._enter(self.ctx)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._exit is not None:
            self._exit(self.ctx)
        if exc is not None and not isinstance(exc, Exception):
            self._cancelled(self.ctx, run_duration(self.ctx))
