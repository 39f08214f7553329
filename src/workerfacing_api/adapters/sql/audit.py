"""The ``AuditLog`` port on a SQL database: what operators did, one row per action, kept for
good (the dashboard and ``workerfacing-api audit`` read it newest first)."""

from __future__ import annotations

from workerfacing_api.adapters.sql.database import Database
from workerfacing_api.adapters.sql.rows import audit_entry_from, audit_values
from workerfacing_api.core.model import AuditEntry


class SqlAuditLog:
    """Implements ``AuditLog``."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def record_action(self, entry: AuditEntry) -> AuditEntry:
        row = await self._db.fetch_one("record_action", **audit_values(entry))
        assert row is not None
        return audit_entry_from(row)

    async def actions(self, before_id: int | None, limit: int) -> list[AuditEntry]:
        rows = await self._db.fetch_all(
            "audit_actions",
            literals={"paged": int(before_id is not None)},
            before_id=before_id or 0,
            limit=limit,
        )
        return [audit_entry_from(r) for r in rows]
