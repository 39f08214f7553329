"""The Alembic migrations and the table definitions the code uses must agree, on both databases:
autogenerate against a freshly migrated database finds nothing to do."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from workerfacing_api.adapters.sql import create_engine, database_url, upgrade
from workerfacing_api.adapters.sql.migrate import current
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
        assert await current(engine) == "0001"
    finally:
        await engine.dispose()


async def test_pull_uses_an_index_not_a_table_scan(postgres_url: str) -> None:
    """With many queued jobs that do not fit, the claim's filter reads an index range."""
    engine = create_engine(database_url(postgres_url))
    try:
        async with engine.begin() as conn:
            await conn.execute(text("TRUNCATE jobs, job_attempts, status_events CASCADE"))
            await conn.execute(
                text(
                    "INSERT INTO jobs (upstream_id, status, environment, priority, req_cpu_cores, "
                    "req_memory, req_gpu_mem, spec, paths_upload, created_at, updated_at) "
                    "SELECT g, 'queued', 'local', 0, 0, 999999, 0, '{}', '{}', now(), now() "
                    "FROM generate_series(1, 20000) g"
                )
            )
            await conn.execute(text("ANALYZE jobs"))
            plan = "\n".join(
                r[0]
                for r in await conn.execute(
                    text(
                        "EXPLAIN SELECT id FROM jobs WHERE status = 'queued' AND "
                        "(environment = 'local' OR (environment = 'any' AND created_at <= now()))"
                        " AND req_cpu_cores <= 8 AND req_memory <= 16000 AND req_gpu_mem <= 0 "
                        "ORDER BY priority DESC, created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED"
                    )
                )
            )
            await conn.execute(text("TRUNCATE jobs, job_attempts, status_events CASCADE"))
        assert "Seq Scan" not in plan, plan
        assert "ix_jobs_queued_fit" in plan, plan
    finally:
        await engine.dispose()
