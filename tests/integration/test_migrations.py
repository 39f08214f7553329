"""The Alembic migrations and the table definitions the code uses must agree, on both databases:
autogenerate against a freshly migrated database finds nothing to do."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from workerfacing_api.adapters.sql import create_engine, database_url, upgrade
from workerfacing_api.adapters.sql.jobs import memory_class
from workerfacing_api.adapters.sql.migrate import current
from workerfacing_api.adapters.sql.postgres import numbered
from workerfacing_api.adapters.sql.schema import metadata


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_models_and_migrations_agree(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = (
        request.getfixturevalue("postgres_url")
        if kind == "postgres"
        else f"sqlite:///{tmp_path / 'm.db'}"
    )
    engine = create_engine(database_url(url))
    try:
        await upgrade(engine)
        await upgrade(engine)  # idempotent: a second run (another process) finds nothing to do
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(sync, opts={"compare_type": True}), metadata
                )
            )
        assert diff == []
        assert await current(engine) == "0004"
    finally:
        await engine.dispose()


async def _claim_plan(conn: asyncpg.Connection, memory: int) -> str:
    """The generic plan PostgreSQL may keep for the adapter's real claim statement (after a
    few executions it plans once for any values), for a worker with ``memory`` MiB."""
    sql, names = numbered("claim_jobs", (("memory_class", memory_class(memory)),))
    now = datetime.now(UTC)
    values: dict[str, Any] = {
        "environment": "local",
        "any_before": now,
        "cpu_cores": 8,
        "memory": memory,
        "gpu_mem": 0,
        "gpu_model": None,
        "gpu_archi": None,
        "worker": "w",
        "limit": 1,
        "exclude_attempted": True,
        "now": now,
        "record": 1,
        "lease_until": now,
        "groups": [],
        "details": None,
        "acknowledged": [],
    }
    rows = await conn.fetch("EXPLAIN " + sql, *[values[n] for n in names])
    return "\n".join(r[0] for r in rows)


async def test_pull_reads_an_index_range_not_the_queue(postgres_url: str) -> None:
    """With 100 000 queued jobs that do not fit, the claim range-scans the "fits" index; with
    many that fit, it walks the queue in order and stops at the first. Never a table scan."""
    conn = await asyncpg.connect(
        postgres_url, server_settings={"plan_cache_mode": "force_generic_plan"}
    )
    try:
        await conn.execute("TRUNCATE jobs, job_attempts, status_events CASCADE")
        await conn.execute(
            "INSERT INTO jobs (upstream_id, status, environment, priority, req_cpu_cores, "
            "req_memory, req_gpu_mem, spec, paths_upload, created_at, updated_at) "
            "SELECT g, 'queued', 'local', g % 10, 0, 1000000000, 0, '{}', '{}', now(), now() "
            "FROM generate_series(1, 100000) g"
        )
        await conn.execute("ANALYZE jobs")
        few_fit = await _claim_plan(conn, 64000)
        await conn.execute("UPDATE jobs SET req_memory = 0")
        await conn.execute("ANALYZE jobs")
        many_fit = await _claim_plan(conn, 64000)
        await conn.execute("TRUNCATE jobs, job_attempts, status_events CASCADE")
    finally:
        await conn.close()
    assert "Seq Scan on jobs" not in few_fit, few_fit
    assert "ix_jobs_queued_fit" in few_fit, few_fit
    assert "Seq Scan on jobs" not in many_fit, many_fit
    assert "ix_jobs_queued_order" in many_fit, many_fit
