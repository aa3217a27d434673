"""A heartbeat: logs every few seconds (and once at start), so a running worker shows life."""

from __future__ import annotations

from tickkit import TaskContext, task


@task(name="heartbeat", schedule={"type": "interval", "value": "5s"}, immediate=True)
async def heartbeat(ctx: TaskContext) -> None:
    ctx.logger.info("heartbeat: worker alive at %s", ctx.started_at.strftime("%H:%M:%S"))
