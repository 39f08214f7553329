"""Litestar's ``Store`` on the queue's database: where the operators' dashboard keeps its
sessions (ARCHITECTURE §7), in table ``ui_sessions``. Litestar's server-side session middleware
reads a session here when a request brings its cookie, writes it when an answer has one, and deletes
it when the operator signs out; every API process reads the same rows and keeps no copy, so signing
out in one process ends the session in all of them.

Time is the container's clock (expiry is decided in the statements, against ``now``); values are
bytes, as the middleware serialises them.
"""

from __future__ import annotations

from datetime import timedelta

from litestar.stores.base import Store

from workerfacing_api.adapters.sql.database import Database
from workerfacing_api.adapters.sql.rows import utc
from workerfacing_api.core.ports import Clock

# How far an unchanged session's expiry may lag: see ``write_session`` in queries/common.sql.
RENEWAL_STEP = timedelta(minutes=1)


def _duration(value: int | timedelta) -> timedelta:
    return value if isinstance(value, timedelta) else timedelta(seconds=value)


class SqlSessionStore(Store):
    """Implements Litestar's ``Store`` (``litestar.stores.base``)."""

    def __init__(self, database: Database, clock: Clock) -> None:
        self._db = database
        self._clock = clock

    async def set(
        self, key: str, value: str | bytes, expires_in: int | timedelta | None = None
    ) -> None:
        now = self._clock.now()
        expires_at = None if expires_in is None else now + _duration(expires_in)
        await self._db.execute(
            "keep_session",
            key=key,
            value=value.encode() if isinstance(value, str) else value,
            expires_at=expires_at,
            renew_before=None if expires_at is None else expires_at - RENEWAL_STEP,
            now=now,
        )

    async def get(self, key: str, renew_for: int | timedelta | None = None) -> bytes | None:
        now = self._clock.now()
        if renew_for is not None:
            renewed = now + _duration(renew_for)
            await self._db.execute("renew_session", key=key, expires_at=renewed, now=now)
        row = await self._db.fetch_one("session_value", key=key, now=now)
        return None if row is None else bytes(row["value"])

    async def delete(self, key: str) -> None:
        await self._db.execute("end_session", key=key)

    async def delete_all(self) -> None:
        await self._db.execute("end_every_session")

    async def exists(self, key: str) -> bool:
        row = await self._db.fetch_one("session_expiry", key=key, now=self._clock.now())
        return row is not None

    async def expires_in(self, key: str) -> int | None:
        now = self._clock.now()
        row = await self._db.fetch_one("session_expiry", key=key, now=now)
        if row is None:
            return None
        if row["expires_at"] is None:
            return -1  # as Litestar's own stores (memory, file, Redis) say "never"
        return int((utc(row["expires_at"]) - now).total_seconds())
