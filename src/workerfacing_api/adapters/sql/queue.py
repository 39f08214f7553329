"""The queue on SQL: ``JobQueue`` and ``Outbox`` on PostgreSQL (production) and SQLite (one
machine), through SQLAlchemy's async engine.

Every statement is written out below, named after its intent, with the invariant it keeps. On
PostgreSQL each operation is one statement (data-modifying CTEs), run in autocommit: one round
trip, one implicit transaction. SQLite has no ``SKIP LOCKED`` and no DML in CTEs, so there the
same operation runs as a few statements inside one ``BEGIN IMMEDIATE`` transaction, which holds
the database's single write lock throughout.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import TextClause, bindparam, text
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from workerfacing_api.adapters.sql.engine import READ_ONLY
from workerfacing_api.adapters.sql.schema import STATUSES
from workerfacing_api.core.matching import pull_order
from workerfacing_api.core.model import (
    DEFAULT_PRIORITY,
    Claimed,
    Committed,
    Environment,
    ExpiredJob,
    HardwareSpecs,
    Job,
    JobStatus,
    PathsUpload,
    StatusEvent,
    Submission,
    WorkerProfile,
)

JOB_COLUMNS = (
    "id, upstream_id, status, environment, job_group, priority, spec, paths_upload, worker, "
    "attempt, num_retries, runtime_details, created_at, updated_at, last_heartbeat_at"
)
EVENT_COLUMNS = "id, job_id, upstream_id, status, runtime_details, created_at, attempts"
ACTIVE = "('pulled', 'preprocessing', 'running', 'postprocessing')"


def _prefixed(prefix: str, columns: str) -> str:
    return ", ".join(f"{prefix}.{c.strip()}" for c in columns.split(","))


# ---------------------------------------------------------------------------------------------
# Statements shared by both databases.

GET_JOB = text(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = :id")

ACTIVE_JOBS_OF_WORKER = text(
    f"SELECT {JOB_COLUMNS} FROM jobs WHERE worker = :worker AND status IN {ACTIVE} ORDER BY id"
)

# Only active jobs time out; the oldest silence goes first.
FIND_EXPIRED = text(
    f"SELECT {JOB_COLUMNS} FROM jobs "
    f"WHERE status IN {ACTIVE} AND last_heartbeat_at < :before "
    "ORDER BY last_heartbeat_at, id LIMIT :limit"
)

WORKERS_TRIED = text(
    "SELECT job_id, worker FROM job_attempts WHERE job_id IN :ids ORDER BY job_id, attempt"
).bindparams(bindparam("ids", expanding=True))

# A resubmitted meta.job_id supersedes every older job with that id that is not cancelled yet:
# the old one must never report into the new job's status or folders.
CANCEL_SAME_UPSTREAM_ID = text(
    "UPDATE jobs SET status = 'cancelled', updated_at = :now "
    "WHERE upstream_id = :upstream_id AND status <> 'cancelled' RETURNING id"
)

INSERT_JOB = text(
    "INSERT INTO jobs (upstream_id, status, environment, job_group, priority, req_cpu_cores, "
    "req_memory, req_gpu_mem, req_gpu_model, req_gpu_archi, spec, paths_upload, attempt, "
    "num_retries, created_at, updated_at) VALUES (:upstream_id, 'queued', :environment, "
    ":job_group, :priority, :req_cpu_cores, :req_memory, :req_gpu_mem, :req_gpu_model, "
    ":req_gpu_archi, :spec, :paths_upload, 0, 0, :now, :now) "
    f"RETURNING {JOB_COLUMNS}"
)

# A cancelled job leaves the queue for good, and nothing more is said about it upstream.
CANCEL_JOB = text(
    "UPDATE jobs SET status = 'cancelled', updated_at = :now "
    "WHERE id = :id AND status <> 'cancelled' RETURNING id"
)
DROP_EVENTS_OF_JOBS = text("DELETE FROM status_events WHERE job_id IN :ids").bindparams(
    bindparam("ids", expanding=True)
)

COMPLETE_EVENTS = text("DELETE FROM status_events WHERE id IN :ids").bindparams(
    bindparam("ids", expanding=True)
)

POSTPONE_EVENT = text(
    "UPDATE status_events SET due_at = :until, leased_until = NULL, "
    "attempts = attempts + 1, last_error = :error WHERE id = :id"
)

# The claim's filter: DESIGN §3's matching, over the sentinel-encoded requirement columns.
_FITS = (
    "status = 'queued' "
    "AND (environment = :environment OR (environment = 'any' AND created_at <= :any_before)) "
    "AND req_cpu_cores <= :cpu_cores AND req_memory <= :memory AND req_gpu_mem <= :gpu_mem "
    "AND (req_gpu_model IS NULL OR req_gpu_model = :gpu_model) "
    "AND (req_gpu_archi IS NULL OR req_gpu_archi = :gpu_archi)"
)
# RETRY_DIFFERENT: exact worker identity, one index probe per candidate.
_NOT_ATTEMPTED = (
    " AND NOT EXISTS (SELECT 1 FROM job_attempts a WHERE a.job_id = jobs.id AND a.worker = :worker)"
)
_ORDER = "priority DESC, created_at, id"
_GROUPS_FIRST = "CASE WHEN job_group IN :groups THEN 0 ELSE 1 END, "

# An event may go out only when it heads its job's line and nobody else holds it.
_DELIVERABLE = (
    "e.due_at <= :now AND (e.leased_until IS NULL OR e.leased_until <= :now) "
    "AND NOT EXISTS (SELECT 1 FROM status_events p WHERE p.job_id = e.job_id AND p.id < e.id)"
)


@functools.cache
def _claim_filter(*, groups: bool, exclude_attempted: bool) -> tuple[str, str]:
    where = _FITS + (_NOT_ATTEMPTED if exclude_attempted else "")
    order = (_GROUPS_FIRST if groups else "") + _ORDER
    return where, order


def _expanding(stmt: TextClause, *names: str) -> TextClause:
    return stmt.bindparams(*(bindparam(n, expanding=True) for n in names))


# Operator views (`workerfacing-api jobs stats|show`).
COUNT_BY_STATUS = text("SELECT status, count(*) AS n FROM jobs GROUP BY status")
OLDEST_QUEUED = text(
    "SELECT id, created_at FROM jobs WHERE status = 'queued' ORDER BY created_at, id LIMIT 1"
)
OUTBOX_BACKLOG = text("SELECT count(*) AS n, min(created_at) AS oldest FROM status_events")
ATTEMPTS_OF_JOB = text(
    "SELECT attempt, worker, pulled_at FROM job_attempts WHERE job_id = :id ORDER BY attempt"
)
EVENTS_OF_JOB = text(f"SELECT {EVENT_COLUMNS} FROM status_events WHERE job_id = :id ORDER BY id")


class QueueStats(msgspec.Struct, frozen=True, kw_only=True):
    by_status: dict[str, int]
    oldest_queued_id: int | None
    oldest_queued_age: float | None  # seconds
    outbox_backlog: int
    oldest_event_age: float | None  # seconds


# ---------------------------------------------------------------------------------------------
# PostgreSQL: one statement per operation.


@functools.cache
def _pg_claim(*, groups: bool, exclude_attempted: bool) -> TextClause:
    where, order = _claim_filter(groups=groups, exclude_attempted=exclude_attempted)
    # SKIP LOCKED: concurrent pulls each take different rows and never wait on each other;
    # the lock is taken in the same statement that updates, so no row is handed out twice.
    sql = (
        f"WITH picked AS (SELECT id FROM jobs WHERE {where} ORDER BY {order} "
        "LIMIT :limit FOR UPDATE SKIP LOCKED), "
        "claimed AS (UPDATE jobs SET status = 'pulled', worker = :worker, "
        "attempt = jobs.attempt + 1, last_heartbeat_at = :now, updated_at = :now "
        f"FROM picked WHERE jobs.id = picked.id RETURNING {_prefixed('jobs', JOB_COLUMNS)}), "
        "attempts AS (INSERT INTO job_attempts (job_id, attempt, worker, pulled_at) "
        "SELECT id, attempt, worker, :now FROM claimed), "
        "events AS (INSERT INTO status_events (job_id, upstream_id, status, created_at, "
        "due_at, attempts) SELECT id, upstream_id, 'pulled', :now, :now, 0 FROM claimed "
        "WHERE :record_events RETURNING id, job_id) "
        "SELECT claimed.*, events.id AS event_id FROM claimed "
        "LEFT JOIN events ON events.job_id = claimed.id"
    )
    stmt = text(sql)
    return _expanding(stmt, "groups") if groups else stmt


def _pg_change(assignments: str, guard: str) -> TextClause:
    # Compare-and-set on (id, status, attempt): a decision taken on a stale snapshot changes
    # nothing, so a late sweep cannot undo a worker's update and a late worker update cannot
    # touch a job that was re-queued and pulled by someone else.
    return text(
        f"WITH changed AS (UPDATE jobs SET {assignments} "
        f"WHERE id = :id AND status = :expected_status AND attempt = :expected_attempt{guard} "
        f"RETURNING {JOB_COLUMNS}), "
        "event AS (INSERT INTO status_events (job_id, upstream_id, status, runtime_details, "
        "created_at, due_at, attempts) SELECT id, upstream_id, status, :details, :now, :now, 0 "
        "FROM changed WHERE :record_event RETURNING id) "
        "SELECT changed.*, (SELECT id FROM event) AS event_id FROM changed"
    )


_UPDATE_SET = (
    "status = :status, last_heartbeat_at = :now, updated_at = :now, "
    "runtime_details = COALESCE(:details, runtime_details)"
)
_REQUEUE_SET = (
    "status = 'queued', worker = NULL, num_retries = num_retries + 1, "
    "runtime_details = :details, updated_at = :now"
)
_FAIL_SET = "status = 'error', runtime_details = :details, updated_at = :now"
# The sweep acts only if the job is still silent: a keep-alive that won the race keeps it.
_STILL_SILENT = " AND last_heartbeat_at < :heartbeat_before"

PG_RECORD_UPDATE = _pg_change(_UPDATE_SET, "")
PG_REQUEUE = _pg_change(_REQUEUE_SET, _STILL_SILENT)
PG_FAIL = _pg_change(_FAIL_SET, _STILL_SILENT)

PG_LEASE_ANY = text(
    f"WITH picked AS (SELECT e.id FROM status_events e WHERE {_DELIVERABLE} "
    "ORDER BY e.id LIMIT :limit FOR UPDATE SKIP LOCKED) "
    "UPDATE status_events SET leased_until = :until FROM picked "
    f"WHERE status_events.id = picked.id RETURNING {_prefixed('status_events', EVENT_COLUMNS)}"
)
PG_LEASE_AMONG = _expanding(
    text(
        f"WITH picked AS (SELECT e.id FROM status_events e WHERE e.id IN :ids AND {_DELIVERABLE} "
        "ORDER BY e.id LIMIT :limit FOR UPDATE SKIP LOCKED) "
        "UPDATE status_events SET leased_until = :until FROM picked "
        f"WHERE status_events.id = picked.id "
        f"RETURNING {_prefixed('status_events', EVENT_COLUMNS)}"
    ),
    "ids",
)

# ---------------------------------------------------------------------------------------------
# SQLite: the same operations as short statement sequences inside BEGIN IMMEDIATE.


@functools.cache
def _lite_pick(*, groups: bool, exclude_attempted: bool) -> TextClause:
    where, order = _claim_filter(groups=groups, exclude_attempted=exclude_attempted)
    stmt = text(f"SELECT id FROM jobs WHERE {where} ORDER BY {order} LIMIT :limit")
    return _expanding(stmt, "groups") if groups else stmt


LITE_TAKE = _expanding(
    text(
        "UPDATE jobs SET status = 'pulled', worker = :worker, attempt = attempt + 1, "
        "last_heartbeat_at = :now, updated_at = :now WHERE id IN :ids AND status = 'queued' "
        f"RETURNING {JOB_COLUMNS}"
    ),
    "ids",
)
LITE_RECORD_ATTEMPT = text(
    "INSERT INTO job_attempts (job_id, attempt, worker, pulled_at) "
    "VALUES (:job_id, :attempt, :worker, :now)"
)
LITE_ADD_EVENT = text(
    "INSERT INTO status_events (job_id, upstream_id, status, runtime_details, created_at, "
    "due_at, attempts) VALUES (:job_id, :upstream_id, :status, :details, :now, :now, 0) "
    "RETURNING id"
)


def _lite_change(assignments: str, guard: str) -> TextClause:
    return text(
        f"UPDATE jobs SET {assignments} "
        f"WHERE id = :id AND status = :expected_status AND attempt = :expected_attempt{guard} "
        f"RETURNING {JOB_COLUMNS}"
    )


LITE_RECORD_UPDATE = _lite_change(_UPDATE_SET, "")
LITE_REQUEUE = _lite_change(_REQUEUE_SET, _STILL_SILENT)
LITE_FAIL = _lite_change(_FAIL_SET, _STILL_SILENT)

LITE_DELIVERABLE_ANY = text(
    f"SELECT e.id FROM status_events e WHERE {_DELIVERABLE} ORDER BY e.id LIMIT :limit"
)
LITE_DELIVERABLE_AMONG = _expanding(
    text(
        f"SELECT e.id FROM status_events e WHERE e.id IN :ids AND {_DELIVERABLE} "
        "ORDER BY e.id LIMIT :limit"
    ),
    "ids",
)
LITE_LEASE = _expanding(
    text(
        f"UPDATE status_events SET leased_until = :until WHERE id IN :ids RETURNING {EVENT_COLUMNS}"
    ),
    "ids",
)


# ---------------------------------------------------------------------------------------------


class SqlQueue:
    """``JobQueue`` and ``Outbox`` over one SQLAlchemy async engine."""

    def __init__(self, engine: AsyncEngine, *, record_events: bool) -> None:
        self._engine = engine
        self._pg = engine.dialect.name == "postgresql"
        self._record_events = record_events

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    # -- connections ---------------------------------------------------------------------------

    @asynccontextmanager
    async def _single(self) -> AsyncIterator[AsyncConnection]:
        """A connection for one self-contained statement (autocommit on PostgreSQL)."""
        async with self._engine.connect() as conn:
            if self._pg:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            else:
                conn = await conn.execution_options(**{READ_ONLY: True})
            yield conn

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction (``BEGIN IMMEDIATE`` on SQLite)."""
        async with self._engine.begin() as conn:
            yield conn

    def _ts(self, value: datetime) -> Any:
        """A timestamp as the driver wants it: aware datetimes for asyncpg, fixed-width UTC
        text for SQLite (so that text order is time order)."""
        if self._pg:
            return value
        return (
            value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
        )

    # -- JobQueue ------------------------------------------------------------------------------

    async def add(self, submission: Submission, now: datetime) -> tuple[Job, tuple[int, ...]]:
        sub = submission.job
        need = sub.job.hardware
        values = {
            "upstream_id": sub.job.meta.job_id,
            "environment": sub.environment.value if sub.environment else "any",
            "job_group": sub.group,
            "priority": DEFAULT_PRIORITY if sub.priority is None else sub.priority,
            "req_cpu_cores": need.cpu_cores or 0,
            "req_memory": need.memory or 0,
            "req_gpu_mem": need.gpu_mem or 0,
            "req_gpu_model": need.gpu_model,
            "req_gpu_archi": need.gpu_archi,
            "spec": submission.spec.decode(),
            "paths_upload": msgspec.json.encode(sub.paths_upload).decode(),
            "now": self._ts(now),
        }
        # Two racing submissions of one meta.job_id: the unique index on live jobs makes the
        # later one fail; retried, it supersedes the earlier one like any resubmission.
        for attempt in range(3):
            try:
                async with self._transaction() as conn:
                    cancelled = tuple(
                        r.id
                        for r in await conn.execute(
                            CANCEL_SAME_UPSTREAM_ID,
                            {"upstream_id": values["upstream_id"], "now": values["now"]},
                        )
                    )
                    if cancelled:
                        await conn.execute(DROP_EVENTS_OF_JOBS, {"ids": list(cancelled)})
                    row = (await conn.execute(INSERT_JOB, values)).one()
                return self._job(row), cancelled
            except IntegrityError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def get(self, job_id: int) -> Job | None:
        async with self._single() as conn:
            row = (await conn.execute(GET_JOB, {"id": job_id})).one_or_none()
        return None if row is None else self._job(row)

    async def claim_jobs(
        self,
        worker: WorkerProfile,
        limit: int,
        now: datetime,
        *,
        exclude_attempted: bool,
    ) -> list[Claimed]:
        params: dict[str, Any] = {
            "environment": worker.environment.value,
            "any_before": self._ts(now - timedelta(seconds=worker.older_than)),
            "cpu_cores": worker.cpu_cores,
            "memory": worker.memory,
            "gpu_mem": worker.gpu_mem,
            "gpu_model": worker.gpu_model,
            "gpu_archi": worker.gpu_archi,
            "worker": worker.worker,
            "limit": limit,
            "now": self._ts(now),
        }
        groups = bool(worker.groups)
        if groups:
            params["groups"] = list(worker.groups)
        if self._pg:
            params["record_events"] = self._record_events
            stmt = _pg_claim(groups=groups, exclude_attempted=exclude_attempted)
            async with self._single() as conn:
                rows = (await conn.execute(stmt, params)).all()
            claimed = [Claimed(job=self._job(r), event_id=r.event_id) for r in rows]
        else:
            claimed = await self._lite_claim(params, groups, exclude_attempted)
        # The statement returns rows in no particular order; hand them out in pull order.
        claimed.sort(key=lambda c: pull_order(c.job, worker.groups))
        return claimed

    async def _lite_claim(
        self, params: dict[str, Any], groups: bool, exclude_attempted: bool
    ) -> list[Claimed]:
        pick = _lite_pick(groups=groups, exclude_attempted=exclude_attempted)
        async with self._transaction() as conn:
            ids = [r.id for r in await conn.execute(pick, params)]
            if not ids:
                return []
            rows = (
                await conn.execute(
                    LITE_TAKE, {"ids": ids, "worker": params["worker"], "now": params["now"]}
                )
            ).all()
            claimed = []
            for row in rows:
                job = self._job(row)
                await conn.execute(
                    LITE_RECORD_ATTEMPT,
                    {
                        "job_id": job.id,
                        "attempt": job.attempt,
                        "worker": job.worker,
                        "now": params["now"],
                    },
                )
                event_id = await self._lite_event(conn, job, None, params["now"])
                claimed.append(Claimed(job=job, event_id=event_id))
            return claimed

    async def _lite_event(
        self, conn: AsyncConnection, job: Job, details: str | None, now: Any
    ) -> int | None:
        if not self._record_events:
            return None
        result = await conn.execute(
            LITE_ADD_EVENT,
            {
                "job_id": job.id,
                "upstream_id": job.upstream_id,
                "status": job.status.value,
                "details": details,
                "now": now,
            },
        )
        return int(result.scalar_one())

    async def record_update(
        self,
        job: Job,
        status: JobStatus,
        runtime_details: str | None,
        now: datetime,
        *,
        forward: bool,
    ) -> Committed | None:
        params = {"status": status.value, "details": runtime_details}
        if self._pg:
            return await self._pg_change(PG_RECORD_UPDATE, job, params, now, forward)
        return await self._lite_change(LITE_RECORD_UPDATE, job, params, now, forward)

    async def requeue(
        self, job: Job, detail: str, now: datetime, *, heartbeat_before: datetime
    ) -> Committed | None:
        params = {"details": detail, "heartbeat_before": self._ts(heartbeat_before)}
        if self._pg:
            return await self._pg_change(PG_REQUEUE, job, params, now, True)
        return await self._lite_change(LITE_REQUEUE, job, params, now, True)

    async def fail(
        self, job: Job, detail: str, now: datetime, *, heartbeat_before: datetime
    ) -> Committed | None:
        params = {"details": detail, "heartbeat_before": self._ts(heartbeat_before)}
        if self._pg:
            return await self._pg_change(PG_FAIL, job, params, now, True)
        return await self._lite_change(LITE_FAIL, job, params, now, True)

    async def _pg_change(
        self,
        stmt: TextClause,
        job: Job,
        params: dict[str, Any],
        now: datetime,
        forward: bool,
    ) -> Committed | None:
        params |= {
            "id": job.id,
            "expected_status": job.status.value,
            "expected_attempt": job.attempt,
            "now": now,
            "record_event": forward and self._record_events,
        }
        async with self._single() as conn:
            row = (await conn.execute(stmt, params)).one_or_none()
        if row is None:
            return None
        return Committed(job=self._job(row), event_id=row.event_id)

    async def _lite_change(
        self,
        stmt: TextClause,
        job: Job,
        params: dict[str, Any],
        now: datetime,
        forward: bool,
    ) -> Committed | None:
        stamp = self._ts(now)
        params |= {
            "id": job.id,
            "expected_status": job.status.value,
            "expected_attempt": job.attempt,
            "now": stamp,
        }
        async with self._transaction() as conn:
            row = (await conn.execute(stmt, params)).one_or_none()
            if row is None:
                return None
            changed = self._job(row)
            event_id = (
                await self._lite_event(conn, changed, params.get("details"), stamp)
                if forward
                else None
            )
        return Committed(job=changed, event_id=event_id)

    async def find_expired(self, heartbeat_before: datetime, limit: int) -> list[ExpiredJob]:
        async with self._single() as conn:
            rows = (
                await conn.execute(
                    FIND_EXPIRED, {"before": self._ts(heartbeat_before), "limit": limit}
                )
            ).all()
            if not rows:
                return []
            tried: dict[int, list[str]] = {}
            for r in await conn.execute(WORKERS_TRIED, {"ids": [r.id for r in rows]}):
                tried.setdefault(r.job_id, []).append(r.worker)
        return [
            ExpiredJob(job=self._job(r), workers_tried=tuple(tried.get(r.id, ()))) for r in rows
        ]

    async def cancel(self, job_id: int, now: datetime) -> bool:
        async with self._transaction() as conn:
            done = (await conn.execute(CANCEL_JOB, {"id": job_id, "now": self._ts(now)})).first()
            await conn.execute(DROP_EVENTS_OF_JOBS, {"ids": [job_id]})
        return done is not None

    async def active_jobs_of(self, worker: str) -> list[Job]:
        async with self._single() as conn:
            rows = (await conn.execute(ACTIVE_JOBS_OF_WORKER, {"worker": worker})).all()
        return [self._job(r) for r in rows]

    # -- Outbox --------------------------------------------------------------------------------

    async def lease_events(
        self,
        now: datetime,
        lease_seconds: float,
        limit: int,
        event_ids: Sequence[int] | None = None,
    ) -> list[StatusEvent]:
        params: dict[str, Any] = {
            "now": self._ts(now),
            "until": self._ts(now + timedelta(seconds=lease_seconds)),
            "limit": limit,
        }
        if event_ids is not None:
            params["ids"] = list(event_ids)
        if self._pg:
            stmt = PG_LEASE_ANY if event_ids is None else PG_LEASE_AMONG
            async with self._single() as conn:
                rows = (await conn.execute(stmt, params)).all()
        else:
            pick = LITE_DELIVERABLE_ANY if event_ids is None else LITE_DELIVERABLE_AMONG
            async with self._transaction() as conn:
                ids = [r.id for r in await conn.execute(pick, params)]
                if not ids:
                    return []
                rows = (
                    await conn.execute(LITE_LEASE, {"ids": ids, "until": params["until"]})
                ).all()
        return sorted((self._event(r) for r in rows), key=lambda e: e.id)

    async def complete_events(self, event_ids: Sequence[int]) -> None:
        if not event_ids:
            return
        if self._pg:
            async with self._single() as conn:
                await conn.execute(COMPLETE_EVENTS, {"ids": list(event_ids)})
        else:
            async with self._transaction() as conn:
                await conn.execute(COMPLETE_EVENTS, {"ids": list(event_ids)})

    async def postpone_event(self, event_id: int, until: datetime, error: str) -> None:
        async with self._transaction() as conn:
            await conn.execute(
                POSTPONE_EVENT, {"id": event_id, "until": self._ts(until), "error": error}
            )

    # -- operator views ------------------------------------------------------------------------

    async def stats(self, now: datetime) -> QueueStats:
        """Counts per state, the oldest queued job, and the outbox backlog."""
        async with self._single() as conn:
            counts = {r.status: r.n for r in await conn.execute(COUNT_BY_STATUS)}
            oldest_job = (await conn.execute(OLDEST_QUEUED)).first()
            backlog = (await conn.execute(OUTBOX_BACKLOG)).one()
        return QueueStats(
            by_status={s: counts.get(s, 0) for s in STATUSES},
            oldest_queued_id=None if oldest_job is None else oldest_job.id,
            oldest_queued_age=(
                None
                if oldest_job is None
                else (now - self._time(oldest_job.created_at)).total_seconds()
            ),
            outbox_backlog=backlog.n,
            oldest_event_age=(
                None
                if backlog.oldest is None
                else (now - self._time(backlog.oldest)).total_seconds()
            ),
        )

    async def history(
        self, job_id: int
    ) -> tuple[list[tuple[int, str, datetime]], list[StatusEvent]]:
        """A job's attempts (number, worker, pulled at) and its undelivered events."""
        async with self._single() as conn:
            attempts = [
                (r.attempt, r.worker, self._time(r.pulled_at))
                for r in await conn.execute(ATTEMPTS_OF_JOB, {"id": job_id})
            ]
            events = [self._event(r) for r in await conn.execute(EVENTS_OF_JOB, {"id": job_id})]
        return attempts, events

    # -- rows ----------------------------------------------------------------------------------

    def _time(self, value: Any) -> datetime:
        if isinstance(value, str):
            return datetime.fromisoformat(value).replace(tzinfo=UTC)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
        return value  # type: ignore[no-any-return]

    def _job(self, row: Row[Any]) -> Job:
        spec = row.spec.encode()
        return Job(
            id=row.id,
            upstream_id=row.upstream_id,
            status=JobStatus(row.status),
            environment=None if row.environment == "any" else Environment(row.environment),
            group=row.job_group,
            priority=row.priority,
            hardware=msgspec.json.decode(spec, type=_HardwareView).hardware,
            created_at=self._time(row.created_at),
            spec=spec,
            paths_upload=msgspec.json.decode(row.paths_upload, type=PathsUpload),
            worker=row.worker,
            attempt=row.attempt,
            num_retries=row.num_retries,
            last_heartbeat_at=(
                None if row.last_heartbeat_at is None else self._time(row.last_heartbeat_at)
            ),
            updated_at=self._time(row.updated_at),
            runtime_details=row.runtime_details,
        )

    def _event(self, row: Row[Any]) -> StatusEvent:
        return StatusEvent(
            id=row.id,
            job_id=row.job_id,
            upstream_id=row.upstream_id,
            status=JobStatus(row.status),
            runtime_details=row.runtime_details,
            created_at=self._time(row.created_at),
            attempts=row.attempts,
        )


class _HardwareView(msgspec.Struct):
    hardware: HardwareSpecs
