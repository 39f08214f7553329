"""The queue on SQLite (one machine): ``JobQueue``, ``Outbox`` and ``UploadLedger`` through
SQLAlchemy + aiosqlite.

SQLite has one writer at a time. Every change runs as a few short statements inside one
``BEGIN IMMEDIATE`` transaction, which takes that write lock up front: the claim's read and its
update see the same queue, and a change and the event it records commit together. Reads run
without a transaction. Timestamps are stored as fixed-width UTC text, so text order is time order.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import TextClause, bindparam, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from workerfacing_api.adapters.sql import queries
from workerfacing_api.adapters.sql.changes import JobChanges
from workerfacing_api.adapters.sql.engine import READ_ONLY
from workerfacing_api.adapters.sql.rows import (
    EARLIEST,
    changed_job,
    claimed_keepalive,
    event_from,
    fit_values,
    fresh_event,
    job_from,
    submission_values,
)
from workerfacing_api.core.errors import Unavailable
from workerfacing_api.core.matching import pull_order
from workerfacing_api.core.model import (
    Claimed,
    Committed,
    ExpiredJob,
    Job,
    StatusEvent,
    Submission,
    WorkerProfile,
)

_SQL = queries.load("sqlite")


def _statement(name: str, *lists: str, **slots: str) -> TextClause:
    """A named statement with its slots filled; ``lists`` are its ``IN :name`` parameters,
    bound as expanding lists."""
    sql = queries.fill(_SQL[name], **slots)
    return text(sql).bindparams(*(bindparam(n, expanding=True) for n in lists))


GET_JOB = _statement("get_job")
ACTIVE_JOBS_OF_WORKER = _statement("active_jobs_of_worker")
FIND_EXPIRED = _statement("find_expired")
WORKERS_TRIED = _statement("workers_tried", "ids")
CANCEL_LIVE_JOBS_OF_UPSTREAM_ID = _statement("cancel_live_jobs_of_upstream_id")
INSERT_JOB = _statement("insert_job")
CANCEL_JOB = _statement("cancel_job")
DROP_EVENTS_OF_JOBS = _statement("drop_events_of_jobs", "ids")
PICK_FROM_HEAD = _statement("pick_from_head", fits=_SQL["fits"])
PICK_FITTING = _statement("pick_fitting", "groups", fits=_SQL["fits"])
TAKE_JOBS = _statement("take_jobs", "ids")
RECORD_ATTEMPT = _statement("record_attempt")
ADD_EVENT = _statement("add_event")
CHANGES = {
    # Delivered events are deleted at once here: every event left is pending.
    "record_update": _statement(
        "record_update", keepalive=queries.fill(_SQL["keepalive_due"], not_delivered="")
    ),
    "end_silent_attempt": _statement("end_silent_attempt"),
}
CONFIRM_UPSTREAM = _statement("confirm_upstream")
RECORD_UPLOAD = _statement("record_upload")
UPLOADS_SINCE = _statement("uploads_since")
EXPEDITE_EVENTS = _statement("expedite_events")
DELIVERABLE_EVENTS = _statement("deliverable_events")
LEASE_EVENTS = _statement("lease_events", "ids")
COMPLETE_EVENTS = _statement("complete_events", "ids")
POSTPONE_EVENTS = _statement("postpone_events", "ids")

# How many jobs at the head of the queue a claim looks at first (see pick_from_head).
_HEAD_WINDOW = 200


def _unavailable(exc: OperationalError) -> Unavailable:
    # Locked beyond the busy timeout, unreadable, disk full: the caller may retry later.
    return Unavailable(f"the queue's SQLite database is unavailable ({exc.orig})")


def stamp(value: datetime) -> str:
    """Fixed-width UTC text: SQLite compares it as text, so it must sort like time."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


class SqliteQueue(JobChanges):
    """``JobQueue``, ``Outbox`` and ``UploadLedger`` on one SQLite database file."""

    def __init__(
        self, engine: AsyncEngine, *, record_events: bool, lease_seconds: float = 30.0
    ) -> None:
        self._engine = engine
        self._record = record_events
        self._lease = timedelta(seconds=lease_seconds)

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self._engine.connect() as conn:
                yield await conn.execution_options(**{READ_ONLY: True})
        except OperationalError as exc:
            raise _unavailable(exc) from exc

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self._engine.begin() as conn:
                yield conn
        except OperationalError as exc:
            raise _unavailable(exc) from exc

    async def close(self) -> None:
        await self._engine.dispose()

    # -- JobQueue ------------------------------------------------------------------------------

    async def add(self, submission: Submission, now: datetime) -> tuple[Job, tuple[int, ...]]:
        # Unlike on PostgreSQL, a submission never meets the unique index of live upstream ids:
        # the write lock, taken up front, puts submissions one after the other, so the
        # superseding below always sees the earlier job of the same id.
        values = submission_values(submission) | {"now": stamp(now)}
        async with self._write() as conn:
            rows = await conn.execute(CANCEL_LIVE_JOBS_OF_UPSTREAM_ID, values)
            superseded = tuple(sorted(r.id for r in rows))
            if superseded:
                await conn.execute(DROP_EVENTS_OF_JOBS, {"ids": list(superseded)})
            row = (await conn.execute(INSERT_JOB, values)).one()
        return job_from(row._mapping), superseded

    async def get(self, job_id: int) -> Job | None:
        async with self._read() as conn:
            row = (await conn.execute(GET_JOB, {"id": job_id})).one_or_none()
        return None if row is None else job_from(row._mapping)

    async def claim_jobs(
        self,
        worker: WorkerProfile,
        limit: int,
        now: datetime,
        *,
        exclude_attempted: bool,
        lease: bool = True,
    ) -> list[Claimed]:
        at = stamp(now)
        params = fit_values(worker, stamp(now - timedelta(seconds=worker.older_than))) | {
            "limit": limit,
            "exclude_attempted": exclude_attempted,
            "groups": list(worker.groups),
        }
        claimed: list[Claimed] = []
        async with self._write() as conn:
            ids: list[int] = []
            if not worker.groups:  # a group preference reorders the queue: no head to look at
                head = params | {"window": _HEAD_WINDOW}
                ids = [r.id for r in await conn.execute(PICK_FROM_HEAD, head)]
            if len(ids) < limit:
                ids = [r.id for r in await conn.execute(PICK_FITTING, params)]
            if not ids:
                return []
            taken = {"ids": ids, "worker": worker.worker, "now": at, "record": int(self._record)}
            for row in (await conn.execute(TAKE_JOBS, taken)).all():
                job = job_from(row._mapping)
                await conn.execute(
                    RECORD_ATTEMPT,
                    {"job_id": job.id, "attempt": job.attempt, "worker": job.worker, "now": at},
                )
                event = await self._add_event(conn, job, None, now, lease)
                claimed.append(Claimed(job=job, event=event))
        claimed.sort(key=lambda c: pull_order(c.job, worker.groups))
        return claimed

    async def _add_event(
        self, conn: AsyncConnection, job: Job, details: str | None, now: datetime, lease: bool
    ) -> StatusEvent | None:
        """Record ``job``'s new status; return it if it is leased to the caller."""
        if not self._record:
            return None
        row = (
            await conn.execute(
                ADD_EVENT,
                {
                    "job_id": job.id,
                    "upstream_id": job.upstream_id,
                    "status": job.status.value,
                    "details": details,
                    "now": stamp(now),
                    "lease_until": stamp(now + self._lease) if lease else None,
                },
            )
        ).one()
        return None if row.leased_until is None else fresh_event(row.id, job, details, now)

    async def _change(
        self,
        statement: str,
        job: Job,
        values: dict[str, Any],
        now: datetime,
        *,
        forward: bool,
        lease: bool,
    ) -> Committed | None:
        # Timestamps go in as fixed-width UTC text, like every timestamp on SQLite.
        params = {k: stamp(v) if isinstance(v, datetime) else v for k, v in values.items()}
        async with self._write() as conn:
            row = (
                await conn.execute(CHANGES[statement], params | {"now": stamp(now)})
            ).one_or_none()
            if row is None:
                return None
            changed = changed_job(job, row._mapping)
            event = None
            if forward:
                event = await self._add_event(conn, changed, values["details"], now, lease)
        return Committed(
            job=changed, event=event, keepalive=claimed_keepalive(changed, row._mapping, now)
        )

    async def find_expired(self, heartbeat_before: datetime, limit: int) -> list[ExpiredJob]:
        async with self._read() as conn:
            rows = (
                await conn.execute(
                    FIND_EXPIRED, {"before": stamp(heartbeat_before), "limit": limit}
                )
            ).all()
            if not rows:
                return []
            tried: dict[int, list[str]] = {}
            for r in await conn.execute(WORKERS_TRIED, {"ids": [r.id for r in rows]}):
                tried.setdefault(r.job_id, []).append(r.worker)
        return [
            ExpiredJob(job=job_from(r._mapping), workers_tried=tuple(tried.get(r.id, ())))
            for r in rows
        ]

    async def cancel(self, job_id: int, now: datetime) -> bool:
        async with self._write() as conn:
            done = (await conn.execute(CANCEL_JOB, {"id": job_id, "now": stamp(now)})).first()
            await conn.execute(DROP_EVENTS_OF_JOBS, {"ids": [job_id]})
        return done is not None

    async def active_jobs_of(self, worker: str) -> list[Job]:
        async with self._read() as conn:
            rows = (await conn.execute(ACTIVE_JOBS_OF_WORKER, {"worker": worker})).all()
        return [job_from(r._mapping) for r in rows]

    async def confirm_upstream(self, answered: Mapping[int, datetime]) -> None:
        if answered:
            async with self._write() as conn:
                await conn.execute(
                    CONFIRM_UPSTREAM,
                    [{"id": job_id, "at": stamp(at)} for job_id, at in answered.items()],
                )

    # -- UploadLedger --------------------------------------------------------------------------

    async def record_upload(self, job_id: int, attempt: int, file_id: str, now: datetime) -> None:
        values = {"job_id": job_id, "attempt": attempt, "file_id": file_id, "now": stamp(now)}
        async with self._write() as conn:
            await conn.execute(RECORD_UPLOAD, values)

    async def uploads_since(self, job_id: int, since: datetime | None) -> list[str]:
        values = {"job_id": job_id, "since": stamp(EARLIEST if since is None else since)}
        async with self._read() as conn:
            return [r.file_id for r in await conn.execute(UPLOADS_SINCE, values)]

    # -- Outbox --------------------------------------------------------------------------------

    async def lease_events(
        self, now: datetime, lease_seconds: float, limit: int
    ) -> list[StatusEvent]:
        until = stamp(now + timedelta(seconds=lease_seconds))
        async with self._write() as conn:
            deliverable = {"now": stamp(now), "limit": limit}
            ids = [r.id for r in await conn.execute(DELIVERABLE_EVENTS, deliverable)]
            if not ids:
                return []
            rows = (await conn.execute(LEASE_EVENTS, {"ids": ids, "until": until})).all()
        return sorted((event_from(r._mapping) for r in rows), key=lambda e: e.id)

    async def complete_events(self, event_ids: Sequence[int]) -> None:
        if event_ids:
            async with self._write() as conn:
                await conn.execute(COMPLETE_EVENTS, {"ids": list(event_ids)})

    async def expedite(self, now: datetime) -> None:
        async with self._write() as conn:
            await conn.execute(EXPEDITE_EVENTS, {"now": stamp(now)})

    async def postpone_events(self, event_ids: Sequence[int], until: datetime, error: str) -> None:
        if event_ids:
            async with self._write() as conn:
                await conn.execute(
                    POSTPONE_EVENTS, {"ids": list(event_ids), "until": stamp(until), "error": error}
                )
