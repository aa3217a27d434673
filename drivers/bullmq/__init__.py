"""The Redis driver in BullMQ's data format (see docs/drivers/bullmq.md).

``redis://`` and ``rediss://`` URLs resolve to :class:`BullMQDriver` through the
``tickkit.drivers`` entry-point group; it needs the ``redis`` extra.
"""

from __future__ import annotations

from .driver import BullMQDriver

__all__ = ["BullMQDriver"]
