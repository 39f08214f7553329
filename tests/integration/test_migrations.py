"""The Alembic migrations and the table definitions the code uses must agree, on both databases:
autogenerate against a freshly migrated database finds nothing to do."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import ADMIN_URL
from workerfacing_api.adapters.sql import create_engine, database_url, upgrade
from workerfacing_api.adapters.sql.jobs import memory_class
from workerfacing_api.adapters.sql.migrate import alembic_config, current
from workerfacing_api.adapters.sql.postgres import PLANNER_SETTINGS, numbered
from workerfacing_api.adapters.sql.schema import metadata
from workerfacing_api.core.model import Environment, WorkerProfile, node_id


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
        assert await current(engine) == "0010"
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
        "node": "n-000000000000",
        "limit": 1,
        "max_held": 8,
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


def _plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Every node of an EXPLAIN (ANALYZE, FORMAT JSON) plan."""
    return [plan, *(node for child in plan.get("Plans", []) for node in _plan_nodes(child))]


async def test_a_lease_after_an_outage_reads_the_backlog_once(postgres_url: str) -> None:
    """The plan of a dispatcher's lease is made while the outbox is nearly empty (events go
    inline) and kept on the connection; then an outage of the upstream leaves 2 000 events due.
    The lease of 50 chooses them in one pass, each "heads its job's line" a probe of one index
    entry. (As written before, "id IN (…)" with NOT EXISTS, the kept plan ran the choice again
    for every due event and read all of the index for each: minutes for this backlog.)"""
    settings = PLANNER_SETTINGS | {"statement_timeout": "10s"}
    conn = await asyncpg.connect(postgres_url, server_settings=settings)
    try:
        await conn.execute("TRUNCATE jobs, job_attempts, status_events CASCADE")
        await conn.execute("ANALYZE status_events")
        sql, names = numbered("lease_events", ())
        await conn.execute(f"PREPARE lease AS {sql}")
        arguments = {"now": "now()", "until": "now()", "limit": "50"}
        lease = f"EXECUTE lease({', '.join(arguments[name] for name in names)})"
        await conn.execute(lease)  # the plan, made on the empty outbox, is kept from here on
        await conn.execute(
            "INSERT INTO status_events (job_id, upstream_id, status, created_at, due_at, attempts)"
            " SELECT g % 1000, g, 'running', now(), now() - interval '1 minute', 1"
            " FROM generate_series(1, 2000) g"
        )
        explained = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {lease}")
        leased = await conn.fetch("SELECT job_id FROM status_events WHERE leased_until IS NOT NULL")
        await conn.execute("TRUNCATE status_events")
    finally:
        await conn.close()
    (plan,) = json.loads(explained)
    nodes = _plan_nodes(plan["Plan"])
    # 50 events, each the head of its job's line (one of its job's two events), once each.
    assert len(leased) == len({r["job_id"] for r in leased}) == 50
    chooser = next(n for n in nodes if n["Node Type"] == "Limit")  # the first: the outer one
    assert chooser["Actual Loops"] == 1, plan
    removed = sum(n.get("Rows Removed by Filter", 0) for n in nodes)
    removed += sum(n.get("Rows Removed by Join Filter", 0) for n in nodes)
    assert removed <= 100, plan


# The columns migration 0005 turns into TEXT on PostgreSQL.
NAME_COLUMNS = {
    ("jobs", "job_group"),
    ("jobs", "req_gpu_model"),
    ("jobs", "req_gpu_archi"),
    ("jobs", "worker"),
    ("job_attempts", "worker"),
    ("workers", "name"),
    ("workers", "gpu_model"),
    ("workers", "gpu_archi"),
}


@pytest.fixture
async def blank_engine(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[AsyncEngine]:
    """An engine on an empty database of ``kind``, dropped afterwards."""
    if kind == "sqlite":
        engine = create_engine(database_url(f"sqlite:///{tmp_path / 'blank.db'}"))
        yield engine
        await engine.dispose()
        return
    postgres_url = request.getfixturevalue("postgres_url")  # skips without a server
    name = f"wf_test_mig_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        engine = create_engine(database_url(postgres_url).set(database=name))
        try:
            yield engine
        finally:
            await engine.dispose()
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def _downgrade(engine: AsyncEngine, revision: str) -> None:
    def run(connection: object) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, revision)

    async with engine.begin() as conn:
        await conn.run_sync(run)


async def _counts(engine: AsyncEngine, registry: str = "workers") -> dict[str, int]:
    async with engine.connect() as conn:
        return {
            table: (await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()
            for table in ("jobs", "job_attempts", "status_events", "job_uploads", registry)
        }


async def _name_types(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT table_name, column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'public'"
            )
        )
        return {row[2] for row in rows if (row[0], row[1]) in NAME_COLUMNS}


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_names_as_text_keep_every_row_both_ways(blank_engine: AsyncEngine, kind: str) -> None:
    """0005 up and down on a queue in use: nothing is lost (on SQLite a rebuild of ``jobs``
    would delete its attempts, events and uploads through the foreign keys), and on PostgreSQL
    a name longer than the old VARCHAR(255) fits afterwards."""
    engine = blank_engine
    await upgrade(engine, "0004")
    await _queue_in_use(engine)
    before = await _counts(engine)
    assert set(before.values()) == {1}

    await upgrade(engine, "0005")
    assert await current(engine) == "0005"
    assert await _counts(engine) == before
    if kind == "postgres":
        assert await _name_types(engine) == {"text"}
        longest = "\U0001d518" * 300  # 300 characters of 4 bytes: more than VARCHAR(255) held
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE jobs SET worker = :w"), {"w": longest})
            assert (await conn.execute(text("SELECT worker FROM jobs"))).scalar_one() == longest
            await conn.execute(text("UPDATE jobs SET worker = 'w1'"))

    await _downgrade(engine, "0004")
    assert await current(engine) == "0004"
    assert await _counts(engine) == before
    if kind == "postgres":
        assert await _name_types(engine) == {"character varying"}
    await upgrade(engine, "0005")
    assert await _counts(engine) == before


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_per_account_rows_become_nodes_and_back(blank_engine: AsyncEngine, kind: str) -> None:
    """0006 on a queue in use: the account's row becomes a node of unknown address that keeps its
    cool-off, and its attempts and active job are that node's; down again, one row per account,
    and nothing lost either way."""
    engine = blank_engine
    await upgrade(engine, "0005")
    await _queue_in_use(engine)
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE workers SET strikes = 1, aside_until = :until, aside_reason = 'broken'"),
            {"until": datetime(2026, 12, 1, 1, tzinfo=UTC)},
        )
    before = await _counts(engine)

    await upgrade(engine, "0006")
    assert await current(engine) == "0006"
    assert list((await _counts(engine, "nodes")).values()) == list(before.values())
    former = node_id(
        WorkerProfile(
            worker="w1", environment=Environment.LOCAL, cpu_cores=8, memory=64000, gpu_model="A100"
        )
    )
    async with engine.connect() as conn:
        node = (
            await conn.execute(
                text("SELECT node, account, address, instance, strikes, aside_reason FROM nodes")
            )
        ).one()
        assert tuple(node) == (former, "w1", "", None, 1, "broken")
        assert (await conn.execute(text("SELECT node FROM job_attempts"))).scalar_one() == former
        assert (await conn.execute(text("SELECT node FROM jobs"))).scalar_one() == former

    await _downgrade(engine, "0005")
    assert await _counts(engine) == before
    async with engine.connect() as conn:
        row = (await conn.execute(text("SELECT name, strikes, aside_reason FROM workers"))).one()
        assert tuple(row) == ("w1", 1, "broken")


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_the_sessions_table_comes_and_goes_and_the_queue_stays(
    blank_engine: AsyncEngine, kind: str
) -> None:
    """0007 on a queue in use adds the dashboard's sessions; down again, they are gone (the
    operators sign in again) and nothing of the queue is touched either way."""
    engine = blank_engine
    await upgrade(engine, "0005")
    await _queue_in_use(engine)
    await upgrade(engine, "0006")
    before = await _counts(engine, "nodes")

    await upgrade(engine, "0007")
    assert await current(engine) == "0007"
    async with engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO ui_sessions (key, value, expires_at) VALUES ('k', :v, :at)"),
            {"v": b"{}", "at": datetime(2026, 12, 1, tzinfo=UTC)},
        )
    assert await _counts(engine, "nodes") == before

    await _downgrade(engine, "0006")
    assert await _counts(engine, "nodes") == before
    async with engine.connect() as conn:
        tables = await conn.run_sync(lambda sync: sync.dialect.get_table_names(sync))
    assert "ui_sessions" not in tables


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_wait_notices_come_and_go_and_the_queue_stays(
    blank_engine: AsyncEngine, kind: str
) -> None:
    """0008 on a queue in use adds what each queued job's user was told about its wait (nothing,
    for the jobs there); down again, the column goes and the jobs stay as they were."""
    engine = blank_engine
    await upgrade(engine, "0005")
    await _queue_in_use(engine)
    await upgrade(engine, "0007")
    before = await _counts(engine, "nodes")

    await upgrade(engine, "0008")
    assert await current(engine) == "0008"
    async with engine.begin() as conn:
        assert (await conn.execute(text("SELECT wait_notice FROM jobs"))).all() == [(None,)]
        await conn.execute(text("UPDATE jobs SET wait_notice = 'no worker', status = 'queued'"))
    assert await _counts(engine, "nodes") == before

    await _downgrade(engine, "0007")
    assert await current(engine) == "0007"
    assert await _counts(engine, "nodes") == before
    async with engine.connect() as conn:
        columns = await conn.run_sync(
            lambda sync: [c["name"] for c in sync.dialect.get_columns(sync, "jobs")]
        )
    assert "wait_notice" not in columns


async def _queue_in_use(engine: AsyncEngine) -> None:
    """One running job of worker w1, with an attempt, an event, an upload and w1's row."""
    now = datetime(2026, 12, 1, tzinfo=UTC)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO jobs (id, upstream_id, status, environment, job_group, priority, "
                "req_cpu_cores, req_memory, req_gpu_mem, req_gpu_model, spec, paths_upload, "
                "worker, created_at, updated_at) VALUES (1, 7, 'running', 'local', 'lab', 0, "
                "0, 0, 0, 'A100', '{}', '{}', 'w1', :now, :now)"
            ),
            {"now": now},
        )
        for statement in (
            "INSERT INTO job_attempts (job_id, attempt, worker, pulled_at) "
            "VALUES (1, 1, 'w1', :now)",
            "INSERT INTO status_events (job_id, upstream_id, status, created_at, due_at) "
            "VALUES (1, 7, 'running', :now, :now)",
            "INSERT INTO job_uploads (job_id, attempt, file_id, stored_at) "
            "VALUES (1, 1, '/data/x', :now)",
            "INSERT INTO workers (name, environment, cpu_cores, memory, gpu_mem, gpu_model, "
            "first_seen_at, last_seen_at) VALUES ('w1', 'local', 8, 64000, 0, 'A100', :now, :now)",
        ):
            await conn.execute(text(statement), {"now": now})


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_the_audit_log_comes_and_goes_and_the_queue_stays(
    blank_engine: AsyncEngine, kind: str
) -> None:
    """0009 adds the operators' audit log and indexes the jobs by state in id order instead of
    by state alone; down again, the log goes and the old index is back; the jobs stay."""
    engine = blank_engine
    await upgrade(engine, "0005")
    await _queue_in_use(engine)
    await upgrade(engine, "0008")
    before = await _counts(engine, "nodes")

    await upgrade(engine, "0009")
    assert await current(engine) == "0009"
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO audit_log (at, actor, action, target, jobs, detail) "
                "VALUES (:at, 'alice', 'fail', '1', '[1]', 'reason: stuck')"
            ),
            {"at": datetime(2026, 12, 6, tzinfo=UTC)},
        )
        indexes = await conn.run_sync(
            lambda sync: {i["name"] for i in sync.dialect.get_indexes(sync, "jobs")}
        )
    assert "ix_jobs_status_id" in indexes
    assert "ix_jobs_status" not in indexes
    assert await _counts(engine, "nodes") == before

    await _downgrade(engine, "0008")
    assert await current(engine) == "0008"
    assert await _counts(engine, "nodes") == before
    async with engine.connect() as conn:
        tables = await conn.run_sync(lambda sync: sync.dialect.get_table_names(sync))
        indexes = await conn.run_sync(
            lambda sync: {i["name"] for i in sync.dialect.get_indexes(sync, "jobs")}
        )
    assert "audit_log" not in tables
    assert "ix_jobs_status" in indexes
    assert "ix_jobs_status_id" not in indexes


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_the_cycles_foreign_keys_go_and_come_back_and_the_queue_stays(
    blank_engine: AsyncEngine, kind: str
) -> None:
    """0010 drops the keys of job_attempts and status_events on jobs (the cycle's lookups);
    down again they are back; the rows stay either way."""
    engine = blank_engine
    await upgrade(engine, "0005")
    await _queue_in_use(engine)
    await upgrade(engine, "0009")
    async with engine.begin() as conn:  # the newest event, delivered (deleted)
        given = await conn.execute(
            text(
                "INSERT INTO status_events (job_id, upstream_id, status, created_at, due_at) "
                "VALUES (1, 7, 'running', :at, :at) RETURNING id"
            ),
            {"at": datetime(2026, 12, 6, tzinfo=UTC)},
        )
        delivered = given.scalar_one()
        await conn.execute(text("DELETE FROM status_events WHERE id = :id"), {"id": delivered})
    before = await _counts(engine, "nodes")

    async def keys() -> set[str]:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda sync: {
                    f"{table}.{fk['name']}"
                    for table in ("job_attempts", "status_events", "job_uploads")
                    for fk in sync.dialect.get_foreign_keys(sync, table)
                }
            )

    assert await keys() == {
        "job_attempts.fk_job_attempts_job_id_jobs",
        "status_events.fk_status_events_job_id_jobs",
        "job_uploads.fk_job_uploads_job_id_jobs",
    }
    await upgrade(engine)
    assert await current(engine) == "0010"
    assert await keys() == {"job_uploads.fk_job_uploads_job_id_jobs"}
    assert await _counts(engine, "nodes") == before
    async with engine.begin() as conn:  # ids are never given twice, the rebuild (SQLite) or not
        new = await conn.execute(
            text(
                "INSERT INTO status_events (job_id, upstream_id, status, created_at, due_at) "
                "VALUES (1, 7, 'finished', :at, :at) RETURNING id"
            ),
            {"at": datetime(2026, 12, 6, tzinfo=UTC)},
        )
        assert new.scalar_one() > delivered
        await conn.execute(text("DELETE FROM status_events WHERE status = 'finished'"))
    await _downgrade(engine, "0009")
    assert len(await keys()) == 3
    assert await _counts(engine, "nodes") == before
