"""When the queue's database drops its connections (a restart, a failover), workers get a 503
they retry, never a 500, and the service recovers by itself."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import requests

from tests.integration.conftest import Server


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
    server_factory: Callable[..., Server], postgres_url: str
) -> None:
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
    server_factory: Callable[..., Server], postgres_url: str
) -> None:
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
