"""Alembic environment: runs on the connection handed over by ``migrate.upgrade`` (or, from the
``alembic`` command line, on ``QUEUE_DB_URL``)."""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection

from workerfacing_api.adapters.sql.engine import create_engine, database_url
from workerfacing_api.adapters.sql.schema import metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER much
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_from_url() -> None:
    url = database_url(
        os.environ.get("QUEUE_DB_URL", "sqlite:///./.workerfacing-api/queue.db"),
        os.environ.get("QUEUE_DB_SECRET"),
    )
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(_run)
    await engine.dispose()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    asyncio.run(_run_from_url())
