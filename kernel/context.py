"""The object every ``prepare`` and ``execute`` receives."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic

if sys.version_info >= (3, 13):
    from typing import TypeVar
else:  # a TypeVar with a default (PEP 696)
    from typing_extensions import TypeVar

if TYPE_CHECKING:
    from .kernel import Kernel
    from .models import Job
    from .registry import TaskDefinition

_task_logger = logging.getLogger("tickkit.task")

#: the type of ``ctx.data`` (a TypedDict, say); Any when not given
DataT = TypeVar("DataT", default=Any)
#: the type of ``ctx.client`` (the bot: ``discord.Client``, say); Any when not given
ClientT = TypeVar("ClientT", default=Any)


class TaskContext(Generic[DataT, ClientT]):
    """One run of a task.

    Attributes: ``task`` (the TaskDefinition), ``data`` (the job's JSON data), ``job_id``,
    ``job``, ``scheduled_at`` (nominal time of the occurrence), ``started_at`` (actual start),
    ``attempt`` (1-based), ``store`` (a dict shared by prepare and execute of this run),
    ``kernel``, ``logger`` (records carry ``task``, ``job_id`` and ``attempt``). The objects a
    kernel was given as ``context`` are attributes too: ``Kernel(context={"client": bot})`` makes
    ``ctx.client``.

    For type checkers it is generic in its data and its client: ``TaskContext[ReminderData]``
    types ``ctx.data`` as ``ReminderData``, ``TaskContext[ReminderData, discord.Client]`` also
    ``ctx.client``; a bare ``TaskContext`` is ``TaskContext[Any, Any]``. Nothing is checked at
    run time: the data is the job's decoded JSON, the client whatever ``context`` held.
    """

    __slots__ = (
        "_extras",
        "_logger",
        "attempt",
        "data",
        "job",
        "job_id",
        "kernel",
        "scheduled_at",
        "started_at",
        "store",
        "task",
    )

    def __init__(
        self,
        *,
        task: TaskDefinition,
        job: Job,
        scheduled_at: datetime,
        started_at: datetime,
        attempt: int,
        kernel: Kernel,
        extras: Mapping[str, Any],
    ) -> None:
        self.task = task
        self.job = job
        self.data: DataT = job.data
        self.job_id: str = job.id or ""
        self.scheduled_at = scheduled_at
        self.started_at = started_at
        self.attempt = attempt
        self.store: dict[str, Any] = {}
        self.kernel = kernel
        self._extras = extras
        self._logger: logging.LoggerAdapter[logging.Logger] | None = None

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        if self._logger is None:
            self._logger = logging.LoggerAdapter(
                _task_logger,
                {"task": self.task.name, "job_id": self.job_id, "attempt": self.attempt},
            )
        return self._logger

    @property
    def client(self) -> ClientT:
        """The ``client`` context object (``Kernel(context={"client": bot})``)."""
        return self.__getattr__("client")  # type: ignore[no-any-return]

    @property
    def lateness(self) -> float:
        """Seconds between the nominal time and the actual start."""
        return (self.started_at - self.scheduled_at).total_seconds()

    def __getattr__(self, name: str) -> Any:
        extras = object.__getattribute__(self, "_extras")
        try:
            return extras[name]
        except KeyError:
            raise AttributeError(
                f"TaskContext has no attribute {name!r} (context objects: {sorted(extras)})"
            ) from None

    def __repr__(self) -> str:
        return (
            f"<TaskContext task={self.task.name!r} job_id={self.job_id!r} "
            f"attempt={self.attempt} scheduled_at={self.scheduled_at.isoformat()}>"
        )
