"""The ``Outbox`` port on a SQL database: status events waiting to go upstream, each written
with the change it describes (see ``jobs.SqlJobQueue``) and delivered at least once, in order
per job: only the oldest undelivered event of a job is ever leased."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from workerfacing_api.adapters.sql.database import Database
from workerfacing_api.adapters.sql.rows import event_from
from workerfacing_api.core.model import StatusEvent


class SqlOutbox:
    """Implements ``Outbox``."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def lease_events(
        self, now: datetime, lease_seconds: float, limit: int
    ) -> list[StatusEvent]:
        until = now + timedelta(seconds=lease_seconds)
        rows = await self._db.fetch_all("lease_events", now=now, limit=limit, until=until)
        return sorted((event_from(r) for r in rows), key=lambda e: e.id)

    async def complete_events(self, event_ids: Sequence[int]) -> None:
        if event_ids:
            await self._db.execute("complete_events", ids=list(event_ids))

    async def expedite(self, now: datetime) -> None:
        await self._db.execute("expedite_events", now=now)

    async def postpone_events(self, event_ids: Sequence[int], until: datetime, error: str) -> None:
        if event_ids:
            await self._db.execute("postpone_events", ids=list(event_ids), until=until, error=error)
