"""SQLite reads the queue through its indexes, whatever the size of the queue: no statement of
the dialect scans the jobs (or the attempts) row by row. PostgreSQL's claim plans are checked in
test_migrations.py; SQLite plans each statement as it runs, from the statement and the table's
statistics, so its plans can be read off here (EXPLAIN QUERY PLAN) on a queue of 20 000 jobs."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from pathlib import Path

import pytest

from workerfacing_api.adapters.sql import create_engine, database_url, queries, upgrade
from workerfacing_api.adapters.sql.sqlite import _script

# What a statement may read row by row: its own derived tables (a few rows each: the head of
# the queue, one row per minute or class...), the outbox (drained as it fills), the audit log
# (newest first along its rowid, a page at most) and Alembic's one row. Anything else (the jobs,
# their attempts and uploads, the workers, under any alias) must be read through an index, or it
# grows with the queue.
_MAY_SCAN = re.compile(
    r"SCAN (head_of_queue|head|answered|ahead|failed|requeued|failures|per_minute|per_node|room"
    r"|CONSTANT ROW"
    r"|status_events|e|audit_log|alembic_version|json_each VIRTUAL TABLE INDEX \d+:"
    r"|\(subquery-\d+\))$"
)
_INDEXED = re.compile(r"USING (COVERING )?INDEX|USING INTEGER PRIMARY KEY")


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("plans") / "queue.db"

    async def migrate() -> None:
        engine = create_engine(database_url(f"sqlite:///{path}"))
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()

    asyncio.run(migrate())
    # A queue as SQLite's planner sees it in production: many queued jobs, and statistics.
    with sqlite3.connect(path) as conn:
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000) "
            "INSERT INTO jobs (upstream_id, status, environment, priority, req_cpu_cores, "
            "req_memory, req_gpu_mem, spec, paths_upload, created_at, updated_at) "
            "SELECT i, 'queued', 'local', i % 10, 0, 1000000, 0, '{}', '{}', "
            "'2026-11-28 08:00:00.000000', '2026-11-28 08:00:00.000000' FROM n"
        )
        conn.execute("ANALYZE")
    return path


def _plans(path: Path) -> dict[str, list[str]]:
    """Every statement of the dialect (each of a script's), with its plan's lines."""
    plans: dict[str, list[str]] = {}
    with sqlite3.connect(path) as conn:
        for name in queries.whole("sqlite"):
            if name.startswith("list_jobs"):
                continue  # its filters change its plan: test_the_jobs_view_pages_through_an_index
            statement = queries.load("sqlite")[name]
            literals = dict.fromkeys(statement.slots, 1024)
            sqls, _ = _script(name, tuple(sorted(literals.items())))
            for index, sql in enumerate(sqls):
                params = dict.fromkeys(re.findall(r"(?<![:\w]):([a-z_]+)", sql))
                rows = conn.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()
                plans[f"{name}[{index}]"] = [str(r[-1]) for r in rows]
    return plans


def test_no_statement_scans_the_queue_row_by_row(migrated: Path) -> None:
    plans = _plans(migrated)
    assert "claim_jobs[3]" in plans  # each statement of the scripts is there
    scans = {
        (name, line)
        for name, lines in plans.items()
        for line in lines
        if line.startswith("SCAN ") and not _INDEXED.search(line) and not _MAY_SCAN.match(line)
    }
    assert scans == set()


def _list_jobs_plan(path: Path, name: str, **on: int) -> list[str]:
    statement = queries.load("sqlite")[name]
    literals = dict.fromkeys(statement.slots, 0) | on
    [sql], _ = _script(name, tuple(sorted(literals.items())))
    params = dict.fromkeys(re.findall(r"(?<![:\w]):([a-z_]+)", sql))
    with sqlite3.connect(path) as conn:
        return [str(r[-1]) for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]


def test_the_jobs_view_pages_through_an_index(migrated: Path) -> None:
    """A page of one state is a range of ix_jobs_status_id, newest first; a page of every job
    walks the primary key backwards and stops at the page's size; neither sorts the jobs."""
    one_state = _list_jobs_plan(migrated, "list_jobs_of_state", paged=1)
    assert any(
        "USING COVERING INDEX ix_jobs_status_id" in line or "USING INDEX ix_jobs_status_id" in line
        for line in one_state
    ), one_state
    every = _list_jobs_plan(migrated, "list_jobs")
    assert every[0] == "SCAN jobs", every  # the rowid backwards: ORDER BY id DESC, no sort
    of_class = _list_jobs_plan(migrated, "list_jobs_of_state", by_class=1, paged=1)
    for plan in (one_state, every, of_class):
        assert not any("TEMP B-TREE" in line for line in plan), plan
