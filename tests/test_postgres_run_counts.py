"""The PostgreSQL driver's run counters and per-name counts (issue 15) against a real server:
a store of the previous schema version upgrades in place, runs are counted in the statement
that records them (only while the lease is held), and old buckets go."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from tickkit import UTC, Job, JobState, Kernel, Outcome, RunResult, TaskRegistry
from tickkit.testing import VirtualClock

from .postgres_server import pg_database, pg_schema

postgres = pytest.importorskip("tickkit.drivers.postgres")
asyncpg = pytest.importorskip("asyncpg")
PostgresDriver = postgres.PostgresDriver

__all__ = ["pg_database", "pg_schema"]

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def job(job_id: str | None = None, at: datetime = T0, name: str = "record", **kw: Any) -> Job:
    return Job(id=job_id, name=name, next_run_at=at, scheduled_at=at, created_at=T0, **kw)


async def test_version_1_store_is_migrated_to_run_counters(
    pg_database: str, pg_schema: str
) -> None:
    conn = await asyncpg.connect(pg_database)
    try:
        s = f'"{pg_schema}"'
        await conn.execute(f"CREATE SCHEMA {s}")
        first = postgres.MIGRATIONS[0]
        for statement in first.statements:
            await conn.execute(statement.format(s=s))
        await conn.execute(
            f"INSERT INTO {s}.version VALUES ($1, $2, 0)", first.version, first.description
        )
        await conn.executemany(
            f"INSERT INTO {s}.jobs (id, name, data, next_run_at, scheduled_at, state) "
            "VALUES ($1, $2, '{\"user\": 7}', $3, $3, $4)",
            [
                ("due", "record", T0_MS, "scheduled"),
                ("later", "record", T0_MS + 86_400_000, "scheduled"),
                ("held", "other", T0_MS + 86_400_000, "paused"),
            ],
        )
        await conn.execute(
            f"INSERT INTO {s}.runs (job_id, name, finished_at, attempt, outcome) "
            "VALUES ('later', 'record', $1, 1, 'failed')",
            T0_MS - 60_000,
        )
        driver = PostgresDriver(pg_database, schema=pg_schema, poll_interval=3600)
        kernel = Kernel(driver, tasks=TaskRegistry(), clock=VirtualClock(T0))
        await kernel.open()
        try:
            assert [j.id for j in await driver.list_jobs()] == ["due", "held", "later"]
            assert await driver.count_by_name() == {"record": 2, "other": 1}
            assert await driver.count_by_name(state=JobState.PAUSED) == {"other": 1}
            (old_run,) = await driver.get_runs("later")
            assert old_run.outcome is Outcome.FAILED
            assert await driver.count_runs(T0 - timedelta(days=1)) == {}
            (claim,) = (await driver.acquire(now=T0, limit=1)).claims
            await driver.complete(claim, RunResult(Outcome.FAILED, T0, started_at=T0))
            assert await driver.count_runs(T0) == {Outcome.FAILED: 1}
        finally:
            await kernel.stop()
        versions = await conn.fetch(f"SELECT version FROM {s}.version ORDER BY version")
        assert [r[0] for r in versions] == [m.version for m in postgres.MIGRATIONS] == [1, 2]
        counts = await conn.fetch(
            f"SELECT minute, outcome, SUM(runs) FROM {s}.run_counts GROUP BY minute, outcome"
        )
        assert [tuple(r) for r in counts] == [(T0_MS // 60_000, "failed", 1)]
    finally:
        await conn.close()


async def test_run_counters_count_held_leases_only_and_old_buckets_go(
    pg_database: str, pg_schema: str
) -> None:
    driver = PostgresDriver(pg_database, schema=pg_schema, poll_interval=3600, lease_duration=10)
    kernel = Kernel(driver, tasks=TaskRegistry(), clock=VirtualClock(T0))
    await kernel.open()
    try:
        await driver.add_jobs([job(f"j{i}") for i in range(3)])
        claims = (await driver.acquire(now=T0, limit=3)).claims
        assert len(claims) == 3
        # the leases expire and j0's is taken over (a new claim): its first run is not counted
        later = T0 + timedelta(seconds=11)
        await driver.renew(claims[1:], later - timedelta(seconds=2))
        (taken,) = (await driver.acquire(now=later, limit=3)).claims
        assert taken.job.id == claims[0].job.id
        for claim in claims:
            await driver.complete(claim, RunResult(Outcome.SUCCEEDED, later, started_at=T0))
        assert await driver.count_runs(T0) == {Outcome.SUCCEEDED: 2}
        await driver.complete(taken, RunResult(Outcome.MISSED, later))
        assert await driver.count_runs(T0) == {Outcome.SUCCEEDED: 2}  # MISSED is not a run
        # three days later: the old buckets are pruned when the next run is counted
        far = T0 + timedelta(days=3)
        await driver.add_job(job("late", far))
        (claim,) = (await driver.acquire(now=far, limit=1)).claims
        await driver.complete(claim, RunResult(Outcome.SKIPPED, far, started_at=far))
        assert await driver.count_runs(T0) == {Outcome.SKIPPED: 1}
        conn = await asyncpg.connect(pg_database)
        try:
            assert await conn.fetchval(f'SELECT COUNT(*) FROM "{pg_schema}".run_counts') == 1
        finally:
            await conn.close()
    finally:
        await kernel.stop()


async def test_where_and_its_index_under_a_parallel_plan(pg_database: str, pg_schema: str) -> None:
    """jsonb_or_null catches errors (a subtransaction), which a parallel plan cannot run: it
    is parallel unsafe, so that indexing a where key on a big table and scanning one with a
    parallel plan work (they failed with "cannot start subtransactions during a parallel
    operation")."""
    driver = PostgresDriver(pg_database, schema=pg_schema, poll_interval=3600)
    kernel = Kernel(driver, tasks=TaskRegistry(), clock=VirtualClock(T0))
    await kernel.open()
    conn = await asyncpg.connect(pg_database)
    try:
        await driver.add_jobs([job(data={"user": i % 100, "n": i}) for i in range(5000)])
        s = f'"{pg_schema}"'
        for setting in (
            "parallel_setup_cost = 0",
            "parallel_tuple_cost = 0",
            "min_parallel_table_scan_size = 0",
            "max_parallel_workers_per_gather = 2",
            "max_parallel_maintenance_workers = 2",
        ):
            await conn.execute(f"SET {setting}")
        expr = f"{s}.jsonb_or_null(data) -> 'n'"
        assert await conn.fetchval(f"SELECT COUNT(*) FROM {s}.jobs WHERE {expr} = '7'") == 1
        await conn.execute(f"CREATE INDEX parallel_check ON {s}.jobs (({expr}))")
        # through the driver: the where key is indexed on the 5,000 rows and used
        await driver.ensure_indexes(["user"])
        assert len(await driver.list_jobs(where={"user": 3})) == 50
        assert await driver.count_jobs(where={"n": 4999}) == {JobState.SCHEDULED: 1}
    finally:
        await conn.close()
        await kernel.stop()
