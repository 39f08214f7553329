"""Building every implementation of the queue port, for the one contract suite they share."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
from sqlalchemy import text

from tests.bodies import job_document
from tests.unit.helpers import RecordingUpstream
from workerfacing_api.adapters import sql
from workerfacing_api.core.clock import FakeClock
from workerfacing_api.core.fleet import AsidePolicy, Fleet
from workerfacing_api.core.jobs import JobService
from workerfacing_api.core.lifecycle import RetryPolicy
from workerfacing_api.core.memory import InMemoryQueue
from workerfacing_api.core.model import Environment, Submission, WorkerProfile
from workerfacing_api.core.sync import StatusSync

KINDS = ["memory", "sqlite", "postgres"]


class SqlPorts:
    """The SQL port adapters over one database, answering as one object like the in-memory
    reference model does (each method is looked up on the adapter of its port), so that one
    contract suite drives both."""

    def __init__(self, database: sql.Database, *, record_events: bool) -> None:
        self.database = database
        self.adapters: tuple[object, ...] = (
            sql.SqlJobQueue(database, record_events=record_events),
            sql.SqlOutbox(database),
            sql.SqlUploadLedger(database),
            sql.SqlWorkerRegistry(database),
            sql.SqlDashboardReads(database),
            sql.SqlAuditLog(database),
        )

    def __getattr__(self, name: str) -> Any:
        for adapter in self.adapters:
            if hasattr(adapter, name):
                return getattr(adapter, name)
        raise AttributeError(name)


Queue = InMemoryQueue | SqlPorts

T0 = datetime(2026, 11, 28, 8, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    """``seconds`` after the contract suites' fixed start time."""
    return T0 + timedelta(seconds=seconds)


@dataclass
class Core:
    """The core's use cases wired on one queue as ``serve`` wires them, with a fake clock at
    ``at(0)`` and a recording user-facing API, for the suites that drive the use cases."""

    queue: Queue
    clock: FakeClock
    upstream: RecordingUpstream
    sync: StatusSync
    fleet: Fleet
    jobs: JobService


def core_on(queue: Queue, *, timeout_failure: int = 300) -> Core:
    clock = FakeClock(at(0))
    upstream = RecordingUpstream()
    sync = StatusSync(queue, queue, upstream, clock)
    fleet = Fleet(queue, AsidePolicy(after_failures=3, cool_off=600, cool_off_max=3600))
    jobs = JobService(queue, clock, RetryPolicy(timeout_failure=timeout_failure), sync, fleet)
    return Core(queue, clock, upstream, sync, fleet, jobs)


def worker(name: str = "w1", **kw: object) -> WorkerProfile:
    """A local GPU worker; ``kw`` changes what it offers."""
    values: dict[str, object] = {
        "worker": name,
        "environment": Environment.LOCAL,
        "cpu_cores": 8,
        "memory": 16000,
        "gpu_mem": 8000,
        "gpu_model": "RTX",
        "gpu_archi": "ampere",
    }
    values.update(kw)
    return WorkerProfile(**values)  # type: ignore[arg-type]


@asynccontextmanager
async def open_queue(
    kind: str,
    tmp: Path,
    postgres_url: str | None,
    *,
    record_events: bool = True,
    empty: bool = True,
) -> AsyncIterator[Queue]:
    """A queue of ``kind``, fresh and empty (PostgreSQL tables are emptied first) or, with
    ``empty=False``, on what an earlier queue of the same test left (as another process)."""
    if kind == "memory":
        yield InMemoryQueue(record_events=record_events)
        return
    url = sql.database_url(
        f"sqlite:///{tmp / 'queue.db'}" if kind == "sqlite" else postgres_url or ""
    )
    engine = sql.create_engine(url)
    try:
        if kind == "sqlite":
            await sql.upgrade(engine)
        elif empty:
            async with engine.begin() as conn:
                await conn.execute(
                    text(
                        "TRUNCATE jobs, job_attempts, status_events, job_uploads, nodes, audit_log "
                        "RESTART IDENTITY CASCADE"
                    )
                )
    finally:
        await engine.dispose()
    database: sql.Database
    if kind == "sqlite":
        database = sql.SqliteDatabase(sql.sqlite_path(url))
    else:
        database = sql.PostgresDatabase(sql.postgres_dsn(url), pool_size=20)
    try:
        yield SqlPorts(database, record_events=record_events)
    finally:
        await database.close()


def submission(
    job_id: int,
    *,
    environment: str | None = "local",
    group: str | None = None,
    priority: int | None = 0,
    hardware: dict[str, Any] | None = None,
    files_down: dict[str, str] | None = None,
    extra_meta: dict[str, Any] | None = None,
) -> Submission:
    """A submission shaped like the user-facing API's, decoded the way the HTTP layer does."""
    body = job_document(
        job_id,
        environment=environment,
        group=group,
        priority=priority,
        hardware=hardware,
        files_down=files_down,
        extra_meta=extra_meta,
    )
    return Submission.from_json(msgspec.json.encode(body))
