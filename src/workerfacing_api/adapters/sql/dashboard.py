"""The ``DashboardReads`` port on a SQL database: what the operators' dashboard reads of the
queue's history. Each read is bounded and served by an index (``queries/common.sql``)."""

from __future__ import annotations

from datetime import datetime

from workerfacing_api.adapters.sql.database import Database
from workerfacing_api.adapters.sql.rows import (
    attempt_record_from,
    event_from,
    failure_from,
    throughput_from,
    waiting_class_from,
)
from workerfacing_api.core.model import AttemptRecord, Failure, StatusEvent, WaitingClass


class SqlDashboardReads:
    """Implements ``DashboardReads``."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def throughput(self, since: datetime, now: datetime) -> list[tuple[datetime, int, int]]:
        return throughput_from(await self._db.fetch_all("throughput", since=since, now=now))

    async def waiting_classes(self, limit: int) -> list[WaitingClass]:
        rows = await self._db.fetch_all("waiting_classes", limit=limit)
        return [waiting_class_from(r) for r in rows]

    async def recent_failures(self, limit: int) -> list[Failure]:
        return [failure_from(r) for r in await self._db.fetch_all("recent_failures", limit=limit)]

    async def attempts_of(self, job_id: int) -> list[AttemptRecord]:
        rows = await self._db.fetch_all("attempts_of_job", id=job_id)
        return [attempt_record_from(r) for r in rows]

    async def pending_events_of(self, job_id: int) -> list[StatusEvent]:
        return [event_from(r) for r in await self._db.fetch_all("events_of_job", id=job_id)]
