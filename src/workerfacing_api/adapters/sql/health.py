"""The ``StoreHealth`` port on a SQL database: whether it answers with the schema this code
needs (readiness, ARCHITECTURE §7), and the connections this process holds to it (``/metrics``)."""

from __future__ import annotations

from workerfacing_api.adapters.sql.database import Database
from workerfacing_api.core.errors import Unavailable


class SqlHealth:
    """Implements ``StoreHealth``. Learns the packaged migrations' head when built (Alembic is
    slow to load: the container builds this at start-up, not on a request)."""

    def __init__(self, database: Database) -> None:
        from workerfacing_api.adapters.sql.migrate import revisions

        self._db = database
        self._head, self._known = revisions()

    async def not_ready(self) -> str | None:
        try:
            revision = await self._db.schema_revision()
        except Unavailable as exc:
            return f"the queue's database does not answer: {exc.detail}"
        # A revision this code does not know is a newer release's: its migrations only add
        # (docs/OPERATIONS.md), so this process still serves during a rolling deploy.
        if revision is None or (revision in self._known and revision != self._head):
            return (
                f"the database schema is at revision {revision or 'none'}, the code needs "
                f"{self._head} (run: workerfacing-api db upgrade)"
            )
        return None

    def connections(self) -> tuple[int, int] | None:
        return self._db.connections()
