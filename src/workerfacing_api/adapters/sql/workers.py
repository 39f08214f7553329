"""The ``WorkerRegistry`` port on a SQL database: the workers seen pulling, how their attempts
ended (noted by the changes that end them, see ``jobs.SqlJobQueue``), and which are set aside
(the claims read that themselves)."""

from __future__ import annotations

from datetime import datetime

from workerfacing_api.adapters.sql.database import Database
from workerfacing_api.adapters.sql.rows import (
    EARLIEST,
    outcome_from,
    worker_values,
    workers_from,
)
from workerfacing_api.core.model import AttemptOutcome, OutcomeCounts, WorkerProfile, WorkerRecord


class SqlWorkerRegistry:
    """Implements ``WorkerRegistry``."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def record_seen(self, worker: WorkerProfile, now: datetime) -> None:
        await self._db.execute("record_seen", **worker_values(worker), now=now)

    async def workers(self, seen_since: datetime | None) -> list[WorkerRecord]:
        since = EARLIEST if seen_since is None else seen_since
        return workers_from(await self._db.fetch_all("workers_seen_since", seen_since=since))

    async def worker(self, name: str) -> WorkerRecord | None:
        found = workers_from(await self._db.fetch_all("worker_named", name=name))
        return found[0] if found else None

    async def outcomes_of(self, worker: str, since: datetime, limit: int) -> list[AttemptOutcome]:
        rows = await self._db.fetch_all("outcomes_of", worker=worker, since=since, limit=limit)
        return [outcome_from(r) for r in rows]

    async def outcome_counts(self, since: datetime, *, excluding: str) -> OutcomeCounts:
        row = await self._db.fetch_one("outcome_counts", since=since, excluding=excluding)
        assert row is not None
        return OutcomeCounts(finished=row["finished"], failed=row["failed"])

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
        # Not set aside now; or never seen (a worker's row, once written, is never deleted).
        return False if await self._db.fetch_one("worker_known", name=worker) else None

    async def note_cool_off_ends(self, now: datetime) -> list[WorkerRecord]:
        return workers_from(await self._db.fetch_all("note_cool_off_ends", now=now))
