"""Database URLs and engines: the forms users write, mapped to the async drivers, and the
SQLAlchemy engine that Alembic's migrations run on (the queue itself runs on the drivers
directly: ``postgres.PostgresDatabase``, ``sqlite.SqliteDatabase``).

``QUEUE_DB_URL`` accepts ``sqlite:///relative.db``, ``sqlite:////abs.db``, ``postgresql://…`` (also
``postgres://`` and explicit ``+asyncpg``/``+aiosqlite`` drivers), and may hold a ``{}`` placeholder
that ``QUEUE_DB_SECRET`` fills, URL-escaped.

A SQLite database is the service's alone: ``private_sqlite_file`` creates it readable by the
service's user only (0600), as the key files are, before SQLite first opens it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import StaticPool

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger("workerfacing_api.database")

_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "sqlite+pysqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "postgresql+psycopg2": "postgresql+asyncpg",
    "postgresql+psycopg": "postgresql+asyncpg",
}


class DatabaseUrlError(ValueError):
    """``QUEUE_DB_URL`` cannot be used; the message says why."""


def database_url(raw: str, secret: str | None = None) -> URL:
    """The async-driver URL for ``raw``, with ``{}`` replaced by the URL-escaped ``secret``."""
    if "{}" in raw:
        if not secret:
            raise DatabaseUrlError("holds a {} placeholder but QUEUE_DB_SECRET is not set")
        raw = raw.replace("{}", quote(secret, safe=""))
    scheme = raw.split(":", 1)[0].lower()
    if scheme == "postgres":  # Heroku-style alias; SQLAlchemy only knows "postgresql"
        raw = "postgresql" + raw[len("postgres") :]
        scheme = "postgresql"
    driver = _DRIVERS.get(scheme)
    if driver is None:
        raise DatabaseUrlError(
            f"unsupported scheme {scheme!r}; use sqlite:///path.db or postgresql://user@host/db"
        )
    try:
        url = make_url(raw)
    except ArgumentError as exc:
        raise DatabaseUrlError(f"is not a database URL ({exc})") from None
    url = url.set(drivername=driver)
    if driver.startswith("postgresql") and not url.database:
        raise DatabaseUrlError("names no database (postgresql://user@host:5432/DATABASE)")
    return url


def is_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite"


def postgres_dsn(url: URL) -> str:
    """asyncpg takes a plain ``postgresql://`` DSN, password included."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def sqlite_path(url: URL) -> str:
    """The SQLite database file of ``url`` (``:memory:`` for none)."""
    return url.database or ":memory:"


# The database and the files SQLite keeps beside it: the write-ahead log, its shared-memory
# index, and the rollback journal of a database not (yet) in WAL mode.
_SQLITE_COMPANIONS = ("", "-wal", "-shm", "-journal")


def private_sqlite_file(path: str) -> None:
    """Create the SQLite database file ``path`` (with its folder) readable and writable by this
    user only (0600), and narrow to 0600 the files an older release left readable by others.

    Done before SQLite opens the file: SQLite creates the WAL, SHM and journal files with the
    permissions of the database file itself (whatever the umask), so a private database keeps
    its companions private too. The process's umask is left alone: it is shared by every thread.
    """
    if path in {"", ":memory:"}:
        return
    database = Path(path)  # as SQLite opens it
    database.parent.mkdir(parents=True, exist_ok=True)
    # O_EXCL: a file that exists is left as it is (narrowed below); an empty file is a valid,
    # empty database.
    with contextlib.suppress(FileExistsError):
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for suffix in _SQLITE_COMPANIONS:
        companion = Path(f"{database}{suffix}")
        try:
            mode = stat.S_IMODE(companion.stat().st_mode)
            if mode & 0o077:
                companion.chmod(mode & 0o700)
        except FileNotFoundError:
            continue
        except OSError as exc:  # another user's file: it still works, but is not private
            log.warning(
                "cannot make %s readable by this user only (%s); run: chmod 600 %s",
                companion,
                exc.strerror or exc,
                companion,
            )


def create_engine(url: URL, *, pool_size: int = 1) -> AsyncEngine:
    """An engine for migrations: SQLite in WAL mode with immediate write transactions,
    PostgreSQL with a pool of ``pool_size`` connections."""
    # Imported here: SQLAlchemy's asyncio layer brings its ORM along, a tenth of a second that a
    # command which never migrates (``token``, ``jobs``) need not pay.
    from sqlalchemy.ext.asyncio import create_async_engine

    if is_sqlite(url):
        return _sqlite_engine(url)
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
        connect_args={"server_settings": {"application_name": "workerfacing-api"}},
    )


def _sqlite_engine(url: URL) -> AsyncEngine:
    from sqlalchemy.ext.asyncio import create_async_engine

    database = url.database or ""
    in_memory = database in {"", ":memory:"}
    if not in_memory:
        private_sqlite_file(database)
    # One connection: SQLite has one writer at a time anyway, and every statement is a hop to
    # the connection's thread; more threads only contend for the GIL. Transactions always end
    # in commit or rollback here, so a returned connection needs no reset (another hop).
    kwargs: dict[str, Any] = (
        {"poolclass": StaticPool} if in_memory else {"pool_size": 1, "max_overflow": 0}
    )
    engine = create_async_engine(
        url, connect_args={"timeout": 30}, pool_reset_on_return=None, **kwargs
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let the hook below issue BEGIN itself (the sqlite3 module would defer the lock).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (
            "PRAGMA journal_mode=WAL",
            "PRAGMA synchronous=NORMAL",
            "PRAGMA foreign_keys=ON",
            "PRAGMA busy_timeout=30000",
        ):
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Migrations take the database lock up front: another process's writes wait for them.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine
