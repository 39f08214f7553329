"""SQL adapters: the queue's ports (jobs, outbox, upload ledger, worker registry, dashboard
reads, the operators' audit log), each written once over a ``Database`` of PostgreSQL or
SQLite; Alembic migrations; and the database URLs operators write."""

from __future__ import annotations

from typing import TYPE_CHECKING

from workerfacing_api.adapters.sql.audit import SqlAuditLog
from workerfacing_api.adapters.sql.dashboard import SqlDashboardReads
from workerfacing_api.adapters.sql.database import Conflict, Database
from workerfacing_api.adapters.sql.engine import (
    DatabaseUrlError,
    create_engine,
    database_url,
    is_sqlite,
    postgres_dsn,
    sqlite_path,
)
from workerfacing_api.adapters.sql.health import SqlHealth
from workerfacing_api.adapters.sql.jobs import SqlJobQueue
from workerfacing_api.adapters.sql.outbox import SqlOutbox
from workerfacing_api.adapters.sql.postgres import PostgresDatabase
from workerfacing_api.adapters.sql.sqlite import SqliteDatabase
from workerfacing_api.adapters.sql.uploads import SqlUploadLedger
from workerfacing_api.adapters.sql.workers import SqlWorkerRegistry

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Apply pending migrations (Alembic is imported only when this runs: it is slow to load)."""
    from workerfacing_api.adapters.sql.migrate import upgrade as apply

    await apply(engine, revision)


__all__ = [
    "Conflict",
    "Database",
    "DatabaseUrlError",
    "PostgresDatabase",
    "SqlAuditLog",
    "SqlDashboardReads",
    "SqlHealth",
    "SqlJobQueue",
    "SqlOutbox",
    "SqlUploadLedger",
    "SqlWorkerRegistry",
    "SqliteDatabase",
    "create_engine",
    "database_url",
    "is_sqlite",
    "postgres_dsn",
    "sqlite_path",
    "upgrade",
]
