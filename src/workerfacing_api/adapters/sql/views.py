"""Operator views of the queue (``workerfacing-api jobs stats|show``), on either database."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from workerfacing_api.adapters.sql import queries
from workerfacing_api.adapters.sql.rows import (
    attempt_record_from,
    event_from,
    job_from,
    queue_stats,
)
from workerfacing_api.core.model import AttemptRecord, Job, QueueStats, StatusEvent

_SQL = queries.load()  # common.sql: SQLAlchemy runs it on either database

COUNT_JOBS_BY_STATUS = text(_SQL["count_jobs_by_status"])
OLDEST_QUEUED_JOB = text(_SQL["oldest_queued_job"])
OUTBOX_BACKLOG = text(_SQL["outbox_backlog"])
GET_JOB = text(_SQL["get_job"])
ATTEMPTS_OF_JOB = text(_SQL["attempts_of_job"])
EVENTS_OF_JOB = text(_SQL["events_of_job"])


async def read_stats(conn: AsyncConnection, now: datetime) -> QueueStats:
    """The queue at a glance, through SQLAlchemy (SQLite's queue, and the operator's views)."""
    counts = {r.status: r.n for r in await conn.execute(COUNT_JOBS_BY_STATUS)}
    oldest = (await conn.execute(OLDEST_QUEUED_JOB)).first()
    backlog = (await conn.execute(OUTBOX_BACKLOG)).one()
    return queue_stats(counts, None if oldest is None else oldest._mapping, backlog._mapping, now)


class QueueViews:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def stats(self, now: datetime) -> QueueStats:
        """Counts per state, the oldest queued job, and the outbox backlog."""
        async with self._engine.connect() as conn:
            return await read_stats(conn, now)

    async def job(self, job_id: int) -> tuple[Job, list[AttemptRecord], list[StatusEvent]] | None:
        """A job with its attempts and its undelivered events."""
        async with self._engine.connect() as conn:
            row = (await conn.execute(GET_JOB, {"id": job_id})).first()
            if row is None:
                return None
            attempts = [
                attempt_record_from(r._mapping)
                for r in await conn.execute(ATTEMPTS_OF_JOB, {"id": job_id})
            ]
            events = [
                event_from(r._mapping) for r in await conn.execute(EVENTS_OF_JOB, {"id": job_id})
            ]
        return job_from(row._mapping), attempts, events
