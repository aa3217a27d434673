"""Node BullMQ creates job schedulers with cron-parser's ``#`` and ``L`` patterns in a time zone;
a tickkit worker (BullMQ driver, real redis) runs their occurrences at the instants Node's
cron-parser computes, each once (docs/time.md, "Cron syntax").

On the wall clock: the patterns fire every few seconds today (``*/2 * * * * <today's weekday>#<n>``
and ``*/3 * * <today>,L * *``); patterns that fire later in the month (``5L``, ``1#2``) are
compared by their next instant, which Node computed when it created the scheduler.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tickkit import UTC, Kernel, TaskContext, TaskRegistry, next_runs, task
from tickkit.drivers.bullmq import BullMQDriver

from . import test_bullmq_interop as bullmq_interop
from .waiting import wait_for

pytestmark = [pytest.mark.interop, pytest.mark.redis, pytest.mark.anyio]
INTEROP = bullmq_interop.INTEROP
run_node = bullmq_interop.run_node
#: the node binary (fixture shared with tests/test_bullmq_interop.py)
node = bullmq_interop.node
ZONES = ["Asia/Kolkata", "Europe/Berlin", "America/New_York", "Pacific/Auckland", "Asia/Tokyo"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def quiet_zone() -> ZoneInfo:
    """A zone where the local date does not change for the next hour."""
    for name in ZONES:
        zone = ZoneInfo(name)
        if 1 <= datetime.now(zone).hour <= 21:
            return zone
    raise AssertionError("no zone between 01:00 and 22:00")  # pragma: no cover


def cron_parser_chain(node_bin: str, pattern: str, tz: str, after_ms: int, count: int) -> list[int]:
    done = subprocess.run(
        [node_bin, "cron-parser.js"],
        cwd=INTEROP,
        input=json.dumps({"pattern": pattern, "tz": tz, "from": after_ms, "count": count}) + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result = json.loads(done.stdout.splitlines()[1])
    assert "error" not in result, result
    times: list[int] = result["times"]
    return times


async def test_node_schedulers_with_hash_and_l_run_in_tickkit(node: str, redis_url: str) -> None:
    zone = quiet_zone()
    tz = zone.key
    today = datetime.now(zone)
    weekday = today.isoweekday() % 7  # cron: Sunday is 0
    nth = (today.day - 1) // 7 + 1
    patterns = {
        "hash": f"*/2 * * * * {weekday}#{nth}",
        "last": f"*/3 * * {today.day},L * *",
        "last-friday": "0 30 18 * * 5L",
        "second-monday": "0 0 9 * * 1#2",
        "first-and-last": "0 0 0 1,L * *",
    }
    queue = f"cron-{uuid.uuid4().hex[:8]}"
    created = datetime.now(UTC)
    run_node(
        node,
        "produce",
        {
            "url": redis_url,
            "queue": queue,
            "prefix": "bull",
            "schedulers": [
                {"id": key, "repeat": {"pattern": p, "tz": tz}, "template": {"name": "record"}}
                for key, p in patterns.items()
            ],
        },
    )
    runs: list[tuple[str, datetime, str]] = []
    reg = TaskRegistry()

    async def record(ctx: TaskContext) -> None:
        assert ctx.job.id is not None
        runs.append((ctx.job.id, ctx.scheduled_at, str(ctx.job.meta.get("bullmq_job_id", ""))))

    task(name="record", execute=record, registry=reg)
    async with Kernel(BullMQDriver(redis_url, queue=queue), tasks=reg) as kernel:
        # the far patterns: Node's next instant is tickkit's
        for key in ("last-friday", "second-monday", "first-and-last"):
            job = await kernel.get_task(key)
            assert job is not None and job.schedule is not None
            assert job.schedule["value"] == patterns[key]
            ours = next_runs(patterns[key], after=created - timedelta(seconds=1), timezone=tz)
            assert job.next_run_at == ours[0], key

        def count(key: str) -> int:
            return sum(1 for r in runs if r[0] == key)

        await wait_for(lambda: count("hash") >= 4 and count("last") >= 3, 30, "occurrences")
        for key in ("hash", "last"):
            assert await kernel.delete_task(key)
    for key in ("hash", "last"):
        mine = [r for r in runs if r[0] == key]
        instants = [round(r[1].timestamp() * 1000) for r in mine]
        assert len(set(instants)) == len(instants), f"{key}: an occurrence ran twice"
        assert instants == sorted(instants)
        # the first occurrence is the one Node created, with Node's instant in its id
        assert mine[0][2] == f"repeat:{key}:{instants[0]}"
        chain = cron_parser_chain(node, patterns[key], tz, instants[0] - 1, 3 * len(instants))
        assert set(instants) <= set(chain), (key, instants, chain)
        assert instants[:2] == chain[:2]
