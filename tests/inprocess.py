"""The service in this process, as ``serve`` builds it (the container), its outside world faked:
the in-memory queue (or a real database), a fake clock and a recording user-facing API.
Litestar's test client drives the app over ASGI: no server process, no socket, and time moves
only when a test says so."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from dependency_injector import providers
from litestar.testing import AsyncTestClient

from tests.bodies import job_document
from tests.unit.helpers import RecordingUpstream
from workerfacing_api.config import Settings
from workerfacing_api.container import Container, build_container, use_in_memory_queue
from workerfacing_api.core.clock import FakeClock
from workerfacing_api.core.memory import InMemoryQueue
from workerfacing_api.entrypoints.http import create_app
from workerfacing_api.entrypoints.http.access import RequestLog

API_KEY = "shared-secret"
# What the DECODE worker sends with every pull: enough for any job of these tests.
BIG_WORKER = {"limit": 1, "cpu_cores": 8, "memory": 64_000}


@dataclass
class Assembled:
    """The service's container with its outside world faked."""

    container: Container
    queue: InMemoryQueue | None  # None: the queue is the database of QUEUE_DB_URL
    clock: FakeClock
    upstream: RecordingUpstream
    data_root: Path  # USER_DATA_ROOT_PATH


def assemble(tmp: Path, *, database: str | None = None, **settings: Any) -> Assembled:
    """A container configured like a deployment with an upstream (``settings`` change it), its
    providers overridden with fakes: the in-memory queue, or with ``database`` (a QUEUE_DB_URL,
    migrated by the caller) the real SQL adapters over it. A request waits for its delivery as
    long as it takes (the recording upstream answers at once), so what it tells the upstream is
    there when it returns, however loaded the machine; acknowledgements are written at once
    (their batching is tested on its own). Add overrides of your own before the first use of a
    service."""
    fields: dict[str, Any] = {
        "user_data_root_path": str(tmp / "user_data"),
        "local_state_dir": str(tmp / "state"),
        # Never opened unless ``database`` says so.
        "queue_db_url": database or f"sqlite:///{tmp / 'state' / 'queue.db'}",
        "userfacing_api_url": "http://userfacing.invalid",
        "internal_api_key_secret": API_KEY,
        "timeout_failure": 300,
        "max_retries": 3,
    }
    container = build_container(Settings(**(fields | settings)))
    queue = None if database else InMemoryQueue(record_events=True)
    clock = FakeClock(datetime.now(UTC))
    upstream = RecordingUpstream()
    if queue is not None:
        use_in_memory_queue(container, queue)
    container.clock.override(providers.Object(clock))
    container.upstream.override(providers.Object(upstream))
    container.sync.add_kwargs(ack_delay=0.0, inline_wait=30.0, delivery_timeout=25.0)
    return Assembled(container, queue, clock, upstream, tmp / "user_data")


@dataclass
class Api:
    """The app under test, its container, and the fakes standing in for the outside world; the
    calls a DECODE client makes."""

    client: AsyncTestClient[RequestLog]
    container: Container
    clock: FakeClock
    upstream: RecordingUpstream
    queue: InMemoryQueue | None
    user_root: Path  # alice's folder under USER_DATA_ROOT_PATH
    stored: Stored | None = None  # the tables, when the queue is a real database

    def auth(self, worker: str = "w1", groups: tuple[str, ...] = ("workers",)) -> dict[str, str]:
        # Tokens carry real timestamps: their expiry is checked against the wall clock.
        issuer = self.container.local_issuer()
        token = issuer.mint(worker, list(groups), timedelta(hours=1), datetime.now(UTC))
        return {"Authorization": f"Bearer {token}"}

    def job_body(self, job_id: int, **fields: Any) -> dict[str, Any]:
        """A submission with its two input files present on disk."""
        body = job_document(job_id, root=str(self.user_root), **fields)
        for path in body["job"]["handler"]["files_down"].values():
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_bytes(f"input of job {job_id}: {Path(path).name}".encode())
        return body

    async def submit(self, job_id: int, **fields: Any) -> dict[str, Any]:
        response = await self.client.post(
            "/_jobs", json=self.job_body(job_id, **fields), headers={"x-api-key": API_KEY}
        )
        assert response.status_code == 201, response.text
        echo: dict[str, Any] = response.json()
        return echo

    async def pull(self, worker: str = "w1", **params: Any) -> dict[str, Any]:
        response = await self.client.get(
            "/jobs", params={**BIG_WORKER, **params}, headers=self.auth(worker)
        )
        assert response.status_code == 200, response.text
        jobs: dict[str, Any] = response.json()
        return jobs

    async def put_status(
        self, queue_id: str, status: str, worker: str = "w1", **params: str
    ) -> httpx.Response:
        return await self.client.put(
            f"/jobs/{queue_id}/status",
            params={"status": status, **params},
            headers=self.auth(worker),
        )

    async def get_status(self, queue_id: str, worker: str = "w1") -> httpx.Response:
        return await self.client.get(f"/jobs/{queue_id}/status", headers=self.auth(worker))

    async def upload_link(
        self, queue_id: str, file_type: str = "output", base_path: str = "", worker: str = "w1"
    ) -> httpx.Response:
        return await self.client.post(
            f"/jobs/{queue_id}/files/url",
            params={"type": file_type, "base_path": base_path},
            headers=self.auth(worker),
        )

    async def upload_to(self, url: str, name: str, content: bytes) -> httpx.Response:
        """The DECODE worker's upload: the link as handed out, no token, one multipart field."""
        return await self.client.post(url, files={"file": (name, content)})

    async def upload(
        self, queue_id: str, file_type: str, name: str, content: bytes, base_path: str = ""
    ) -> httpx.Response:
        link = await self.upload_link(queue_id, file_type, base_path)
        assert link.status_code == 201, link.text
        return await self.upload_to(link.json()["url"], name, content)


@asynccontextmanager
async def serving(assembled: Assembled, stored: Stored | None = None) -> AsyncIterator[Api]:
    """The app of ``assembled`` (no background duties: a test sweeps and dispatches itself)."""
    app = create_app(assembled.container, run_duties=False)
    async with AsyncTestClient(app=app) as client:
        yield Api(
            client,
            assembled.container,
            assembled.clock,
            assembled.upstream,
            assembled.queue,
            assembled.data_root / "alice",
            stored,
        )


# Every table of the queue, in the order they are compared.
TABLES = (
    "jobs",
    "job_attempts",
    "status_events",
    "job_uploads",
    "nodes",
    "ui_sessions",
    "audit_log",
)


class Stored:
    """The queue's tables read behind the service's back: a real SQLite file, or a PostgreSQL
    database over one connection of the test's own."""

    def __init__(self, kind: str, sqlite_path: Path, pg: asyncpg.Connection | None) -> None:
        self.kind = kind
        self._sqlite_path = sqlite_path
        self._pg = pg

    async def rows(self, sql: str) -> list[tuple[Any, ...]]:
        if self._pg is not None:
            return [tuple(r) for r in await self._pg.fetch(sql)]
        with closing(sqlite3.connect(self._sqlite_path)) as conn:
            return list(conn.execute(sql))

    async def everything(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every table: what a refused request must leave as it was."""
        return {table: await self.rows(f"SELECT * FROM {table} ORDER BY 1, 2") for table in TABLES}
