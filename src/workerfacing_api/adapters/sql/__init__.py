"""SQL adapters: the job queue and its outbox on PostgreSQL or SQLite, Alembic migrations, and
operator views."""

from __future__ import annotations

from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from workerfacing_api.adapters.sql.engine import (
    DatabaseUrlError,
    create_engine,
    database_url,
    is_sqlite,
)
from workerfacing_api.adapters.sql.postgres import PostgresQueue
from workerfacing_api.adapters.sql.sqlite import SqliteQueue
from workerfacing_api.adapters.sql.views import QueueViews

SqlQueue = SqliteQueue | PostgresQueue


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Apply pending migrations (Alembic is imported only when this runs: it is slow to load)."""
    from workerfacing_api.adapters.sql.migrate import upgrade as apply

    await apply(engine, revision)


def open_queue(url: URL, *, record_events: bool, pool_size: int = 10) -> SqlQueue:
    """The queue adapter for ``url`` (from ``database_url``); connects on first use."""
    if is_sqlite(url):
        return SqliteQueue(create_engine(url), record_events=record_events)
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    return PostgresQueue(dsn, record_events=record_events, pool_size=pool_size)


__all__ = [
    "DatabaseUrlError",
    "PostgresQueue",
    "QueueViews",
    "SqlQueue",
    "SqliteQueue",
    "create_engine",
    "database_url",
    "open_queue",
    "upgrade",
]
