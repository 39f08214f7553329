"""Operator views of the queue (``workerfacing-api jobs stats|show``), on either database."""

from __future__ import annotations

from datetime import datetime

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from workerfacing_api.adapters.sql import queries
from workerfacing_api.adapters.sql.rows import event_from, job_from, utc
from workerfacing_api.adapters.sql.schema import STATUSES
from workerfacing_api.core.model import Job, StatusEvent

_SQL = queries.load()  # common.sql: SQLAlchemy runs it on either database

COUNT_JOBS_BY_STATUS = text(_SQL["count_jobs_by_status"])
OLDEST_QUEUED_JOB = text(_SQL["oldest_queued_job"])
OUTBOX_BACKLOG = text(_SQL["outbox_backlog"])
GET_JOB = text(_SQL["get_job"])
ATTEMPTS_OF_JOB = text(_SQL["attempts_of_job"])
EVENTS_OF_JOB = text(_SQL["events_of_job"])


class QueueStats(msgspec.Struct, frozen=True, kw_only=True):
    by_status: dict[str, int]
    oldest_queued_id: int | None
    oldest_queued_age: float | None  # seconds
    outbox_backlog: int
    oldest_event_age: float | None  # seconds


class Attempt(msgspec.Struct, frozen=True):
    attempt: int
    worker: str
    pulled_at: datetime


class QueueViews:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def stats(self, now: datetime) -> QueueStats:
        """Counts per state, the oldest queued job, and the outbox backlog."""
        async with self._engine.connect() as conn:
            counts = {r.status: r.n for r in await conn.execute(COUNT_JOBS_BY_STATUS)}
            oldest = (await conn.execute(OLDEST_QUEUED_JOB)).first()
            backlog = (await conn.execute(OUTBOX_BACKLOG)).one()
        return QueueStats(
            by_status={s: counts.get(s, 0) for s in STATUSES},
            oldest_queued_id=None if oldest is None else oldest.id,
            oldest_queued_age=(
                None if oldest is None else (now - utc(oldest.created_at)).total_seconds()
            ),
            outbox_backlog=backlog.n,
            oldest_event_age=(
                None if backlog.oldest is None else (now - utc(backlog.oldest)).total_seconds()
            ),
        )

    async def job(self, job_id: int) -> tuple[Job, list[Attempt], list[StatusEvent]] | None:
        """A job with its attempts and its undelivered events."""
        async with self._engine.connect() as conn:
            row = (await conn.execute(GET_JOB, {"id": job_id})).first()
            if row is None:
                return None
            attempts = [
                Attempt(r.attempt, r.worker, utc(r.pulled_at))
                for r in await conn.execute(ATTEMPTS_OF_JOB, {"id": job_id})
            ]
            events = [
                event_from(r._mapping) for r in await conn.execute(EVENTS_OF_JOB, {"id": job_id})
            ]
        return job_from(row._mapping), attempts, events
