"""The dashboard's session store (Litestar's ``Store``), as the container builds it: Litestar's
``MemoryStore`` with the in-memory queue, ``SqlSessionStore`` on SQLite and PostgreSQL. One
contract, for what Litestar's session middleware asks of it; expiry on the fake clock (the SQL
stores' time is the container's clock)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest
from litestar.stores.base import Store

from tests.inprocess import Assembled, Stored, assemble
from workerfacing_api.container import migrate, running

KINDS = ["memory", "sqlite", "postgres"]
SQL_KINDS = ["sqlite", "postgres"]
HOUR = 3600


@asynccontextmanager
async def store_of(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Store, Assembled, Stored | None]]:
    """The container's session store for the queue ``kind``, empty, with its container (and so
    its fake clock) and, on a database, its tables read behind its back."""
    if kind == "memory":
        assembled = assemble(tmp_path)
        async with running(assembled.container):
            yield assembled.container.ui_sessions(), assembled, None
        return
    pg = None
    if kind == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        pg = await asyncpg.connect(url)
        await pg.execute("TRUNCATE ui_sessions")
    else:
        url = f"sqlite:///{tmp_path / 'state' / 'queue.db'}"
    try:
        assembled = assemble(tmp_path, database=url)
        if kind == "sqlite":
            await migrate(assembled.container)
        stored = Stored(kind, tmp_path / "state" / "queue.db", pg)
        async with running(assembled.container):
            yield assembled.container.ui_sessions(), assembled, stored
    finally:
        if pg is not None:
            await pg.close()


@pytest.mark.parametrize("kind", KINDS)
async def test_a_session_is_kept_replaced_and_deleted(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    async with store_of(kind, tmp_path, request) as (store, _, _):
        assert await store.get("a") is None
        assert not await store.exists("a")
        await store.set("a", b'{"user":"olga"}', expires_in=HOUR)
        await store.set("b", '{"user":"omar"}')  # text is kept as its UTF-8 bytes
        assert await store.get("a") == b'{"user":"olga"}'
        assert await store.get("b") == b'{"user":"omar"}'
        assert await store.exists("a")

        await store.set("a", b'{"user":"olga","seen":1}', expires_in=HOUR)
        assert await store.get("a") == b'{"user":"olga","seen":1}'

        await store.delete("a")
        await store.delete("a")  # deleting what is gone is no error
        await store.delete("never")
        assert await store.get("a") is None
        assert not await store.exists("a")
        assert await store.get("b") == b'{"user":"omar"}'

        await store.delete_all()
        assert await store.get("b") is None


@pytest.mark.parametrize("kind", KINDS)
async def test_expires_in_says_how_long_a_session_has(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    async with store_of(kind, tmp_path, request) as (store, _, _):
        await store.set("a", b"x", expires_in=HOUR)
        left = await store.expires_in("a")
        assert left is not None
        assert HOUR - 5 <= left <= HOUR
        await store.set("forever", b"x")
        assert await store.expires_in("forever") == -1  # Litestar's stores say "never" so
        assert await store.expires_in("never") is None


@pytest.mark.parametrize("kind", SQL_KINDS)
async def test_an_expired_session_is_gone_and_removed_by_the_next_write(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    async with store_of(kind, tmp_path, request) as (store, assembled, stored):
        assert stored is not None
        await store.set("old", b"x", expires_in=HOUR)
        await store.set("forever", b"x")
        assembled.clock.advance(HOUR - 1)
        assert await store.get("old") == b"x"
        assembled.clock.advance(1)
        assert await store.get("old") is None
        assert not await store.exists("old")
        assert await store.expires_in("old") is None

        await store.set("new", b"y", expires_in=HOUR)
        keys = await stored.rows("SELECT key FROM ui_sessions ORDER BY key")
        assert keys == [("forever",), ("new",)]


@pytest.mark.parametrize("kind", SQL_KINDS)
async def test_a_session_written_again_lives_from_then_within_a_minute(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The middleware writes a session with every answer: each write moves its expiry (by a
    minute at least, so that a refresh every 5 s writes no row), and a new value at once."""
    async with store_of(kind, tmp_path, request) as (store, assembled, _):
        await store.set("a", b"x", expires_in=HOUR)
        assembled.clock.advance(30)
        await store.set("a", b"x", expires_in=HOUR)  # 30 s later: not worth a write
        left = await store.expires_in("a")
        assert left is not None
        assert HOUR - 60 <= left <= HOUR
        assembled.clock.advance(HOUR - 31)
        await store.set("a", b"x", expires_in=HOUR)  # an hour on: it lives another hour
        assembled.clock.advance(HOUR - 60)
        assert await store.get("a") == b"x"
        await store.set("a", b"changed", expires_in=HOUR)
        assert await store.get("a") == b"changed"


@pytest.mark.parametrize("kind", SQL_KINDS)
async def test_a_read_with_renewal_moves_the_expiry(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    async with store_of(kind, tmp_path, request) as (store, assembled, _):
        await store.set("a", b"x", expires_in=60)
        await store.set("forever", b"x")
        assembled.clock.advance(50)
        assert await store.get("a", renew_for=60) == b"x"
        assert await store.get("forever", renew_for=60) == b"x"
        assembled.clock.advance(50)
        assert await store.get("a") == b"x"
        assert await store.expires_in("forever") == -1  # one that never expires stays so
        assembled.clock.advance(11)
        assert await store.get("a", renew_for=60) is None  # expired: renewal brings nothing back
