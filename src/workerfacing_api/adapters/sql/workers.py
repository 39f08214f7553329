"""The ``WorkerRegistry`` port on a SQL database: the worker nodes seen pulling, how their
attempts ended (noted by the changes that end them, see ``jobs.SqlJobQueue``), and which are set
aside (the claims read that themselves)."""

from __future__ import annotations

from datetime import datetime

from workerfacing_api.adapters.sql.database import Database
from workerfacing_api.adapters.sql.rows import (
    EARLIEST,
    outcome_from,
    worker_values,
    workers_from,
)
from workerfacing_api.core.model import AttemptOutcome, FleetBaseline, WorkerProfile, WorkerRecord


class SqlWorkerRegistry:
    """Implements ``WorkerRegistry``."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def record_seen(self, worker: WorkerProfile, now: datetime) -> None:
        await self._db.execute("record_seen", **worker_values(worker), now=now)

    async def workers(self, seen_since: datetime | None) -> list[WorkerRecord]:
        since = EARLIEST if seen_since is None else seen_since
        return workers_from(await self._db.fetch_all("workers_seen_since", seen_since=since))

    async def worker(self, node: str) -> WorkerRecord | None:
        found = workers_from(await self._db.fetch_all("worker_named", name=node))
        return found[0] if found else None

    async def outcomes_of(self, node: str, since: datetime, limit: int) -> list[AttemptOutcome]:
        rows = await self._db.fetch_all("outcomes_of", node=node, since=since, limit=limit)
        return [outcome_from(r) for r in rows]

    async def baseline(self, since: datetime, now: datetime, *, excluding: str) -> FleetBaseline:
        row = await self._db.fetch_one("baseline", since=since, now=now, excluding=excluding)
        assert row is not None
        return FleetBaseline(healthy=row["healthy"], failing=row["failing"])

    async def set_aside(
        self, worker: str, until: datetime, reason: str, now: datetime, *, strikes: int
    ) -> bool:
        won = await self._db.fetch_one(
            "set_aside", name=worker, until=until, reason=reason, now=now, strikes=strikes
        )
        return won is not None

    async def release(self, worker: str, now: datetime) -> bool | None:
        if await self._db.fetch_one("end_cool_off", name=worker, now=now) is not None:
            return True
        # Not set aside now; or never seen (a node's row, once written, is never deleted).
        return False if await self._db.fetch_one("worker_known", name=worker) else None

    async def note_cool_off_ends(self, now: datetime) -> list[WorkerRecord]:
        return workers_from(await self._db.fetch_all("note_cool_off_ends", now=now))
