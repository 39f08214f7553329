"""SQL adapter: the job queue and its outbox on PostgreSQL or SQLite, with Alembic migrations."""

from workerfacing_api.adapters.sql.engine import DatabaseUrlError, create_engine, database_url
from workerfacing_api.adapters.sql.migrate import upgrade
from workerfacing_api.adapters.sql.queue import SqlQueue

__all__ = ["DatabaseUrlError", "SqlQueue", "create_engine", "database_url", "upgrade"]
