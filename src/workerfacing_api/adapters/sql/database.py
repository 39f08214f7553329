"""What the SQL adapters ask of a database, whichever it is: run a named statement of its dialect
and fetch one row, all rows or none; run a change (a compare-and-set and what follows from it);
run several statements as one transaction. ``postgres.PostgresDatabase`` and
``sqlite.SqliteDatabase`` answer it; they hold only what truly differs between the two
(connecting, the parameter style, how a change and its consequences commit together, time
conversion). Each port adapter (jobs, outbox, uploads, workers, dashboard) is written once over
it, as procrastinate's connectors share one set of queries.

Every text parameter goes through ``storable`` here, on both dialects: characters no database
can hold (NUL, lone surrogates) are replaced, never refused, so that a worker's report always
lands and every backend agrees on what was stored (the in-memory model does the same).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar

from workerfacing_api.core.text import storable

T = TypeVar("T")


class Row(Protocol):
    """A result row by column name: asyncpg's Record or sqlite3's Row."""

    def __getitem__(self, key: str, /) -> Any: ...


class Conflict(Exception):
    """A unique index refused the write (two racing submissions of one upstream id)."""


class Session(Protocol):
    """Statements inside one transaction (``Database.transaction``)."""

    async def fetch_one(self, name: str, /, **params: Any) -> Row | None: ...

    async def fetch_all(self, name: str, /, **params: Any) -> list[Row]: ...

    async def execute(self, name: str, /, **params: Any) -> None: ...


class Database(Protocol):
    """One database of the queue, shared by the port adapters of a process.

    ``literals`` are written into the statement's text (integers only; see
    ``queries.Statement``); the rest are parameters. A lost or unusable connection is reported
    as the core's ``Unavailable`` (a 503 the workers retry), a unique index's refusal as
    ``Conflict``."""

    dialect: str

    async def fetch_one(
        self, name: str, /, *, literals: Mapping[str, int] | None = None, **params: Any
    ) -> Row | None: ...

    async def fetch_all(
        self, name: str, /, *, literals: Mapping[str, int] | None = None, **params: Any
    ) -> list[Row]: ...

    async def execute(self, name: str, /, **params: Any) -> None: ...

    async def change(self, name: str, /, **params: Any) -> Row | None:
        """A compare-and-set with what follows from it, all or nothing; None (and nothing
        written) when the compare-and-set found the row moved on."""
        ...

    async def transaction(self, work: Callable[[Session], Awaitable[T]]) -> T:
        """``work`` on one connection in one transaction, committed when it returns. It may
        run again when it cannot have changed anything (a connection found broken before it
        sent a statement, a deadlock the database broke)."""
        ...

    async def schema_revision(self) -> str | None:
        """The migration the schema is at; None when it was never migrated."""
        ...

    def connections(self) -> tuple[int, int]:
        """This process's connections to the database: (in use, idle)."""
        ...

    async def open(self) -> None:
        """Get ready to serve (a pool, a connection); otherwise the first statement does."""
        ...

    async def close(self) -> None: ...


Literals = tuple[tuple[str, int], ...]  # a statement's literals, in a hashable form


class Statements(ABC):
    """``fetch_one``, ``fetch_all``, ``execute`` and ``change`` of a ``Database`` or a
    ``Session``, over the one method a dialect writes: ``_rows``."""

    @abstractmethod
    async def _rows(
        self, name: str, literals: Literals, params: Mapping[str, Any], *, change: bool
    ) -> list[Row]:
        """The rows of the named statement; with ``change``, none when it changed nothing."""

    async def fetch_all(
        self, name: str, /, *, literals: Mapping[str, int] | None = None, **params: Any
    ) -> list[Row]:
        return await self._rows(name, tuple(sorted((literals or {}).items())), params, change=False)

    async def fetch_one(
        self, name: str, /, *, literals: Mapping[str, int] | None = None, **params: Any
    ) -> Row | None:
        rows = await self.fetch_all(name, literals=literals, **params)
        return rows[0] if rows else None

    async def execute(self, name: str, /, **params: Any) -> None:
        await self._rows(name, (), params, change=False)

    async def change(self, name: str, /, **params: Any) -> Row | None:
        rows = await self._rows(name, (), params, change=True)
        return rows[0] if rows else None


RunStatement = Callable[[str, Literals, Mapping[str, Any], bool], Awaitable[list[Row]]]


class OnConnection(Statements):
    """The ``Session`` of a transaction: statements run by ``run`` (name, literals, parameters,
    change) on the transaction's connection."""

    def __init__(self, run: RunStatement) -> None:
        self._run = run

    async def _rows(
        self, name: str, literals: Literals, params: Mapping[str, Any], *, change: bool
    ) -> list[Row]:
        return await self._run(name, literals, params, change)


def text_safe(value: Any) -> Any:
    """``value`` with its text storable: a string, or each string of a list."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, list | tuple):
        return [storable(v) if isinstance(v, str) else v for v in value]
    return value
