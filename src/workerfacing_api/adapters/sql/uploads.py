"""The ``UploadLedger`` port on a SQL database: which files the service stored for which job and
when, so that what a worker stored after its user deleted the job can be taken away again."""

from __future__ import annotations

from datetime import datetime

from workerfacing_api.adapters.sql.database import Database
from workerfacing_api.adapters.sql.rows import EARLIEST


class SqlUploadLedger:
    """Implements ``UploadLedger``."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def record_upload(self, job_id: int, attempt: int, file_id: str, now: datetime) -> None:
        await self._db.execute(
            "record_upload", job_id=job_id, attempt=attempt, file_id=file_id, now=now
        )

    async def uploads_since(self, job_id: int, since: datetime | None) -> list[str]:
        after = EARLIEST if since is None else since
        rows = await self._db.fetch_all("uploads_since", job_id=job_id, since=after)
        return [r["file_id"] for r in rows]
