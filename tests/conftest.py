"""Shared fixtures: the service as the container builds it, with the outside world faked, and
its app in this process (``assembled``, ``api``: see tests/inprocess.py), and throwaway
databases (SQLite files, a fresh PostgreSQL database per run).

PostgreSQL tests need a server: ``TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``). Without one they skip, saying how to enable
them, except with ``CI=true``, where a missing server fails the run: CI must exercise them.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
from sqlalchemy.engine import URL, make_url

from tests.inprocess import TABLES, Api, Assembled, Stored, assemble, serving

T = TypeVar("T")

ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture
def assembled(tmp_path: Path) -> Assembled:
    """The service's container with its outside world faked (``tests.inprocess.assemble``)."""
    return assemble(tmp_path)


@pytest.fixture
async def api(assembled: Assembled, tmp_path: Path) -> AsyncIterator[Api]:
    """The app of ``assembled``, in this process, and the calls a DECODE client makes."""
    async with serving(assembled) as api:
        yield api
    assert not (tmp_path / "state" / "queue.db").exists(), "the overridden queue was bypassed"


@pytest.fixture(params=["sqlite", "postgres"])
async def db_api(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Api]:
    """``api`` over the real SQL adapters, once on a fresh SQLite file and once on this
    session's PostgreSQL database emptied first; ``api.stored`` reads its tables."""
    from workerfacing_api.container import migrate

    kind: str = request.param
    sqlite_path = tmp_path / "state" / "queue.db"
    pg: asyncpg.Connection | None = None
    if kind == "postgres":
        url: str = request.getfixturevalue("postgres_url")  # migrated once per session
        pg = await asyncpg.connect(url)
        await pg.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
    else:
        url = f"sqlite:///{sqlite_path}"
    try:
        assembled = assemble(tmp_path, database=url)
        if kind == "sqlite":
            await migrate(assembled.container)
        async with serving(assembled, Stored(kind, sqlite_path, pg)) as api:
            yield api
    finally:
        if pg is not None:
            await pg.close()


def run_blocking(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on its own loop in another thread: session fixtures may be
    first requested from inside an async test, where the running loop cannot be re-entered."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _plain(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(_plain(make_url(ADMIN_URL)), timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _postgres_unavailable() -> str | None:
    try:
        run_blocking(_admin("SELECT 1"))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return str(exc) or type(exc).__name__
    return None


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test session, dropped afterwards."""
    problem = _postgres_unavailable()
    if problem is not None:
        message = (
            f"PostgreSQL not reachable at {ADMIN_URL} ({problem}); start it "
            "(pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start) "
            "or point TEST_POSTGRES_URL at a server"
        )
        if IN_CI:
            pytest.fail(f"CI=true but {message}")
        pytest.skip(message)
    name = f"wf_test_{uuid.uuid4().hex[:12]}"
    run_blocking(_admin(f'CREATE DATABASE "{name}"'))
    url = _plain(make_url(ADMIN_URL).set(database=name))
    try:
        run_blocking(_migrate(url))
        yield url
    finally:
        run_blocking(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def emptied_postgres_url(postgres_url: str) -> str:
    """This session's PostgreSQL database with every table of the queue emptied: for a test
    that serves a process on it and counts what it finds there (other tests of the session
    leave their rows behind)."""
    pg = await asyncpg.connect(postgres_url)
    try:
        await pg.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
    finally:
        await pg.close()
    return postgres_url


async def _migrate(url: str) -> None:
    from workerfacing_api.adapters.sql import create_engine, database_url, upgrade

    engine = create_engine(database_url(url))
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


# Fixtures that start real processes on 127.0.0.1 (tests/integration/conftest.py): a test using
# one is end to end (``e2e``), whatever module it is in.
_PROCESSES = {"server", "server_factory", "upstream", "cluster", "moto"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        fixtures = set(getattr(item, "fixturenames", ()))
        if "postgres_url" in fixtures or (
            callspec is not None and "postgres" in callspec.id.split("-")
        ):
            item.add_marker(pytest.mark.postgres)
        if fixtures & _PROCESSES:
            item.add_marker(pytest.mark.e2e)


_POSTGRES_OUTCOMES: dict[str, int] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "postgres" not in report.keywords:
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        _POSTGRES_OUTCOMES[report.outcome] = _POSTGRES_OUTCOMES.get(report.outcome, 0) + 1


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _POSTGRES_OUTCOMES:
        counts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(_POSTGRES_OUTCOMES.items()))
        terminalreporter.write_line(f"PostgreSQL tests: {counts} (server {ADMIN_URL})")
