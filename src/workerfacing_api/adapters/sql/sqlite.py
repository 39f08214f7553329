"""The queue's database on SQLite (one machine), on one aiosqlite connection.

SQLite has one writer at a time, and one connection is all a process needs: every statement is a
hop to the connection's thread, and more threads would only contend for the GIL. Operations take
turns on it (an ``asyncio.Lock``), so one never runs inside another's transaction. A write runs
in a ``BEGIN IMMEDIATE`` transaction, which takes the database's write lock up front: a claim's
pick and its update see the same queue, and a change commits with its event. What PostgreSQL
does in one statement with data-modifying CTEs is a script here (see ``queries/sqlite.sql``).
Reads run without a transaction. Timestamps are stored as fixed-width UTC text, so that text
order is time order; id lists travel as JSON arrays.
"""

from __future__ import annotations

import asyncio
import functools
import re
import sqlite3
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import aiosqlite
import msgspec

from workerfacing_api.adapters.sql import queries
from workerfacing_api.adapters.sql.database import (
    Conflict,
    Literals,
    OnConnection,
    Row,
    Session,
    Statements,
    text_safe,
)
from workerfacing_api.adapters.sql.engine import private_sqlite_file
from workerfacing_api.core.errors import Unavailable

T = TypeVar("T")

_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=30000",
)


def stamp(value: datetime) -> str:
    """Fixed-width UTC text: SQLite compares it as text, so it must sort like time."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _value(value: Any) -> Any:
    if isinstance(value, datetime):
        return stamp(value)
    if isinstance(value, list | tuple):
        return msgspec.json.encode(text_safe(value)).decode()
    return text_safe(value)


@functools.cache
def _script(name: str, literals: Literals) -> tuple[tuple[str, ...], bool]:
    """The statements of ``name`` in order, and whether they only read."""
    sql = queries.load("sqlite")[name].text(dict(literals))
    statements = tuple(s.strip() for s in re.split(r";[ \t]*\n", sql) if s.strip())
    return statements, len(statements) == 1 and statements[0].upper().startswith("SELECT")


def _unavailable(exc: sqlite3.Error) -> Unavailable:
    # Locked beyond the busy timeout, unreadable, disk full, not migrated: retry later.
    return Unavailable(f"the queue's SQLite database is unavailable ({exc})")


async def _run(
    conn: aiosqlite.Connection,
    name: str,
    literals: Literals,
    params: Mapping[str, Any],
    change: bool,
) -> list[Row]:
    """Run the statements of ``name``; the rows of the one that returns rows are the answer.
    A change stops after its first statement when that changed no row."""
    statements, _ = _script(name, literals)
    values = {k: _value(v) for k, v in params.items()}
    answer: list[Row] = []
    for index, sql in enumerate(statements):
        if index == 0 and change:
            cursor = await conn.execute(sql, values)
            if cursor.rowcount == 0:
                return []  # the compare-and-set lost: nothing follows
            continue
        rows: list[Row] = list(await conn.execute_fetchall(sql, values))
        if rows:
            answer = rows
    return answer


class SqliteDatabase(Statements):
    """Implements ``database.Database`` on one SQLite file (or ``:memory:``)."""

    dialect = "sqlite"

    def __init__(self, path: str) -> None:
        self._path = path
        self._on_disk = path not in {"", ":memory:"}
        self._conn: aiosqlite.Connection | None = None
        self._turn = asyncio.Lock()  # one operation at a time on the one connection
        self._closed = False

    async def _connection(self) -> aiosqlite.Connection:
        if self._conn is None:
            if self._closed:
                raise Unavailable("the queue is closed (the service is shutting down); retry")
            if self._on_disk:  # its folder, and the file made private before SQLite opens it
                await asyncio.to_thread(private_sqlite_file, self._path)
            # No implicit transactions: writes issue BEGIN IMMEDIATE themselves (the sqlite3
            # module would defer the lock to the first write).
            conn = await aiosqlite.connect(self._path, timeout=30, isolation_level=None)
            conn.row_factory = sqlite3.Row
            for pragma in _PRAGMAS:
                await conn.execute(pragma)
            self._conn = conn
        return self._conn

    async def open(self) -> None:
        async with self._turn:
            await self._connection()

    async def _operation(
        self, work: Callable[[aiosqlite.Connection], Awaitable[T]], *, write: bool
    ) -> T:
        async with self._turn:
            try:
                conn = await self._connection()
                if not write:
                    return await work(conn)
                await conn.execute("BEGIN IMMEDIATE")
                try:
                    result = await work(conn)
                except BaseException:
                    await conn.execute("ROLLBACK")
                    raise
                await conn.execute("COMMIT")
                return result
            except sqlite3.IntegrityError as exc:
                raise Conflict(str(exc)) from exc
            except sqlite3.Error as exc:
                raise _unavailable(exc) from exc

    async def _rows(
        self, name: str, literals: Literals, params: Mapping[str, Any], *, change: bool
    ) -> list[Row]:
        _, read_only = _script(name, literals)
        return await self._operation(
            lambda conn: _run(conn, name, literals, params, change), write=not read_only
        )

    async def transaction(self, work: Callable[[Session], Awaitable[T]]) -> T:
        return await self._operation(
            lambda conn: work(OnConnection(functools.partial(_run, conn))), write=True
        )

    async def schema_revision(self) -> str | None:
        try:
            row = await self.fetch_one("schema_revision")
        except Unavailable as exc:
            if "no such table" in str(exc):
                return None  # never migrated
            raise
        return None if row is None else str(row["version_num"])

    def connections(self) -> tuple[int, int]:
        if self._conn is None:
            return 0, 0
        return (1, 0) if self._turn.locked() else (0, 1)

    async def close(self) -> None:
        async with self._turn:
            self._closed = True
            conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
