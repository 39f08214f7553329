"""When the queue's database drops its connections (a restart, a failover), is starting up, or
does not answer, workers get a 503 they retry, never a 500 or a request that hangs, and the
service recovers by itself."""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import asyncpg
import pytest
import requests

from tests.integration.conftest import Server
from workerfacing_api.adapters.sql import PostgresDatabase, SqlJobQueue
from workerfacing_api.core.errors import Unavailable


async def _drop_connections(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        dropped: int = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return dropped
    finally:
        await conn.close()


def test_lost_database_connections_answer_503_then_recover(
    server_factory: Callable[..., Server], emptied_postgres_url: str
) -> None:
    postgres_url = emptied_postgres_url
    server = server_factory(db_url=postgres_url)
    server.submit()
    (job_id,) = server.pull("w")
    assert server.put_status(job_id, "running", "w").status_code == 204
    assert asyncio.run(_drop_connections(postgres_url)) >= 1
    answers = []
    for _ in range(12):  # at most one failure per pooled connection, then fresh ones
        response = server.put_status(job_id, "running", "w")
        answers.append(response.status_code)
        if response.status_code == 503:
            assert response.headers["retry-after"] == "5"
            assert "database" in response.json()["detail"]
        if response.status_code == 204:
            break
    assert answers[-1] == 204, answers
    assert set(answers) <= {503, 204}, answers
    status = requests.get(f"{server.url}/jobs/{job_id}/status", headers=server.auth(), timeout=10)
    assert status.json() == "running"


def _retry_on_503(send: Callable[[], requests.Response], ok: int) -> list[int]:
    answers = []
    for _ in range(12):
        response = send()
        answers.append(response.status_code)
        if response.status_code != 503:
            break
    assert answers[-1] == ok, answers
    assert set(answers) <= {503, ok}, answers
    return answers


def test_submissions_and_pulls_survive_lost_connections(
    server_factory: Callable[..., Server], emptied_postgres_url: str
) -> None:
    postgres_url = emptied_postgres_url
    server = server_factory(db_url=postgres_url)
    server.submit()
    server.pull("w")  # the pool now holds a connection the next requests would reuse
    assert asyncio.run(_drop_connections(postgres_url)) >= 1
    body = server.job_body()
    _retry_on_503(
        lambda: requests.post(
            f"{server.url}/_jobs", json=body, headers={"x-api-key": server.api_key}, timeout=10
        ),
        201,
    )
    assert asyncio.run(_drop_connections(postgres_url)) >= 1
    pulled: list[dict[str, object]] = []

    def pull() -> requests.Response:
        response = requests.get(
            f"{server.url}/jobs",
            params={"limit": 5, "cpu_cores": 8, "memory": 64000},
            headers=server.auth("v"),
            timeout=10,
        )
        if response.status_code == 200:
            pulled.append(response.json())
        return response

    _retry_on_503(pull, 200)
    # The job submitted between the two outages is handed out once, to the worker that asked.
    assert len(pulled) == 1, pulled
    assert len(pulled[0]) == 1, pulled


@asynccontextmanager
async def _listener(
    answer: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[str]:
    """A TCP server on a loopback port that treats every connection with ``answer``; yields
    a DSN pointing at it."""
    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/queue?sslmode=disable"
    finally:
        server.close()


async def _starting_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    # What PostgreSQL answers a client while it starts up (or shuts down): the startup message
    # is read, then a FATAL error with SQLSTATE 57P03, and the connection is closed.
    (length,) = struct.unpack("!I", await reader.readexactly(4))
    await reader.readexactly(length - 4)
    fields = b"SFATAL\0VFATAL\0C57P03\0Mthe database system is starting up\0\0"
    writer.write(b"E" + struct.pack("!I", len(fields) + 4) + fields)
    await writer.drain()
    writer.close()


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()  # accepts, never answers: a host that hangs


async def test_a_database_starting_up_is_unavailable_not_an_error() -> None:
    async with _listener(_starting_up) as dsn:
        database = PostgresDatabase(dsn)
        try:
            with pytest.raises(Unavailable, match="starting up"):
                await SqlJobQueue(database, record_events=True).get(1)
        finally:
            await database.close()


async def test_a_database_that_does_not_answer_is_unavailable_after_the_connect_timeout() -> None:
    async with _listener(_silent) as dsn:
        database = PostgresDatabase(dsn, connect_timeout=0.5)
        started = time.monotonic()
        try:
            with pytest.raises(Unavailable):
                await SqlJobQueue(database, record_events=True).get(1)
        finally:
            await database.close()
        assert time.monotonic() - started < 5  # bounded by the timeout, not hanging


async def test_a_refused_connection_is_unavailable() -> None:
    async with _listener(_silent) as dsn:
        pass  # closed again: nobody listens on that port any more
    database = PostgresDatabase(dsn)
    try:
        with pytest.raises(Unavailable, match="lost the connection"):
            await SqlJobQueue(database, record_events=True).get(1)
    finally:
        await database.close()
