"""The state of a kernel: where it is in its life, and what it holds while open."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .codec import Codec
    from .dispatch import Dispatcher
    from .driver import Driver
    from .manager import Hooks


class KernelState(str, enum.Enum):
    """Where a kernel is in its life: ``new`` -> ``open`` (driver open, not dispatching) ->
    ``running`` -> ``stopping`` -> ``stopped`` (startable again). Equal to its string."""

    NEW = "new"
    OPEN = "open"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"

    def __str__(self) -> str:
        return self.value


class Live:
    """What an open kernel holds, none of it optional: the driver, the hooks, the codec, and
    the dispatcher with its worker pool."""

    __slots__ = ("codec", "driver", "hooks", "pool")

    def __init__(self, driver: Driver, hooks: Hooks, codec: Codec, pool: Dispatcher) -> None:
        self.driver = driver
        self.hooks = hooks
        self.codec = codec
        self.pool = pool
