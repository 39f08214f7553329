"""Building every implementation of the queue port, for the one contract suite they share."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
from sqlalchemy import text

from tests.bodies import job_document
from workerfacing_api.adapters import sql
from workerfacing_api.core.memory import InMemoryQueue
from workerfacing_api.core.model import Submission

KINDS = ["memory", "sqlite", "postgres"]

Queue = InMemoryQueue | sql.SqliteQueue | sql.PostgresQueue


@asynccontextmanager
async def open_queue(
    kind: str, tmp: Path, postgres_url: str | None, *, record_events: bool = True
) -> AsyncIterator[Queue]:
    """A fresh, empty queue of ``kind``; PostgreSQL tables are emptied first."""
    if kind == "memory":
        yield InMemoryQueue(record_events=record_events)
        return
    url = sql.database_url(
        f"sqlite:///{tmp / 'queue.db'}" if kind == "sqlite" else postgres_url or ""
    )
    engine = sql.create_engine(url)
    try:
        if kind == "sqlite":
            await sql.upgrade(engine)
        else:
            async with engine.begin() as conn:
                await conn.execute(
                    text("TRUNCATE jobs, job_attempts, status_events RESTART IDENTITY CASCADE")
                )
    finally:
        await engine.dispose()
    queue = sql.open_queue(url, record_events=record_events, pool_size=20)
    try:
        yield queue
    finally:
        await queue.close()


def submission(
    job_id: int,
    *,
    environment: str | None = "local",
    group: str | None = None,
    priority: int | None = 0,
    hardware: dict[str, Any] | None = None,
    files_down: dict[str, str] | None = None,
    extra_meta: dict[str, Any] | None = None,
) -> Submission:
    """A submission shaped like the user-facing API's, decoded the way the HTTP layer does."""
    body = job_document(
        job_id,
        environment=environment,
        group=group,
        priority=priority,
        hardware=hardware,
        files_down=files_down,
        extra_meta=extra_meta,
    )
    return Submission.from_json(msgspec.json.encode(body))
