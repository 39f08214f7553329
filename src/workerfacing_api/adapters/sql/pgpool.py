"""A small connection pool for the PostgreSQL queue.

Every queue operation is one statement on one connection, so the pool only needs to hand out
an idle connection and take it back; asyncpg's own pool does more per round trip (a reset query,
timers) than a pull's whole SQL costs this process. Connections that fail are dropped, not
reused; waiters are served in arrival order.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import asyncpg

from workerfacing_api.core.errors import Unavailable

# After these, a connection's protocol state is unknown: drop it rather than reuse it.
_FATAL = (
    OSError,
    asyncio.CancelledError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,
)


class ConnectionPool:
    def __init__(self, dsn: str, *, max_size: int, server_settings: dict[str, str]) -> None:
        self._dsn = dsn
        self._max_size = max_size
        self._server_settings = server_settings
        self._idle: list[asyncpg.Connection] = []
        self._waiters: collections.deque[asyncio.Future[asyncpg.Connection]] = collections.deque()
        self._size = 0  # open connections, idle or in use, plus those being opened
        self._prepared: dict[tuple[int, str], asyncpg.prepared_stmt.PreparedStatement] = {}
        self._closed = False

    async def acquire(self) -> asyncpg.Connection:
        while True:
            if self._closed:
                raise asyncpg.InterfaceError("the queue's connection pool is closed")
            while self._idle:
                idle = self._idle.pop()
                if not idle.is_closed():
                    return idle
                self._size -= 1  # the server closed it while it was idle
                self._forget(idle)
            if self._size < self._max_size:
                self._size += 1
                try:
                    conn: asyncpg.Connection = await asyncpg.connect(
                        self._dsn, server_settings=self._server_settings
                    )
                except BaseException:
                    self._size -= 1
                    self._wake_one_to_connect()
                    raise
                return conn
            waiter: asyncio.Future[asyncpg.Connection] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                return await waiter
            except _Reconnect:
                continue  # a slot was freed: open a connection (next round)
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    self.release(waiter.result())  # handed over just as we gave up: pass it on
                raise

    def release(self, conn: asyncpg.Connection, error: BaseException | None = None) -> None:
        """Give ``conn`` back; after a connection-level ``error`` it is closed instead."""
        if self._closed or conn.is_closed() or isinstance(error, _FATAL):
            self._size -= 1
            self._forget(conn)
            conn.terminate()
            self._wake_one_to_connect()
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._idle.append(conn)

    def _forget(self, conn: asyncpg.Connection) -> None:
        key = id(conn)
        for stale in [k for k in self._prepared if k[0] == key]:
            del self._prepared[stale]

    def _wake_one_to_connect(self) -> None:
        # A slot freed up: the first waiter opens a connection of its own.
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(_Reconnect())
                return

    async def connection(self) -> asyncpg.Connection:
        """``acquire``, with an unreachable database reported as ``Unavailable``."""
        try:
            return await self.acquire()
        except (OSError, TimeoutError, asyncpg.PostgresConnectionError) as exc:
            raise Unavailable(f"the queue's PostgreSQL database is unreachable ({exc})") from exc

    async def fetch(self, sql: str, args: list[Any]) -> list[asyncpg.Record]:
        for attempt in range(2):
            conn = await self.connection()
            try:
                # Prepared once per connection and kept: no statement-cache lookup per call.
                prepared = self._prepared.get((id(conn), sql))
                if prepared is None:
                    prepared = await conn.prepare(sql)
                    self._prepared[(id(conn), sql)] = prepared
                rows: list[asyncpg.Record] = await prepared.fetch(*args)
            except BaseException as exc:
                self.release(conn, exc)
                if attempt == 0 and isinstance(exc, asyncpg.InternalClientError):
                    # The connection was found broken (the server ended it while it sat
                    # idle) before anything was sent: the statement did not run, so it runs
                    # once more on another connection.
                    continue
                raise_if_lost(exc)
                raise
            self.release(conn)
            return rows
        raise AssertionError("unreachable")  # pragma: no cover

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            self._size -= 1
            self._forget(conn)
            await conn.close()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(asyncpg.InterfaceError("pool closed"))


def raise_if_lost(exc: BaseException) -> None:
    """Raise ``Unavailable`` (a 503 the worker retries) when ``exc`` means a lost connection."""
    if isinstance(exc, _FATAL) and not isinstance(exc, asyncio.CancelledError):
        raise Unavailable(f"lost the connection to the queue's database ({exc}); retry") from exc


class _Reconnect(Exception):
    """Internal: the waiter should try ``acquire`` again (a slot was freed)."""
