"""The queue on SQLite (one machine): ``JobQueue`` and ``Outbox`` through SQLAlchemy + aiosqlite.

SQLite has one writer at a time. Every change runs as a few short statements inside one
``BEGIN IMMEDIATE`` transaction, which takes that write lock up front: the claim's read and its
update see the same queue, and a change and the event it records commit together. Reads run
without a transaction. Timestamps are stored as fixed-width UTC text, so text order is time order.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import TextClause, bindparam, text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from workerfacing_api.adapters.sql.engine import READ_ONLY
from workerfacing_api.adapters.sql.rows import (
    ACTIVE,
    EVENT_COLUMNS,
    JOB_COLUMNS,
    event_from,
    fresh_event,
    job_from,
    submission_values,
)
from workerfacing_api.core.errors import Unavailable
from workerfacing_api.core.matching import pull_order
from workerfacing_api.core.model import (
    DEFAULT_PRIORITY,
    Claimed,
    Committed,
    ExpiredJob,
    Job,
    JobStatus,
    StatusEvent,
    Submission,
    WorkerProfile,
)


def _expanding(sql: str, *names: str) -> TextClause:
    return text(sql).bindparams(*(bindparam(n, expanding=True) for n in names))


GET_JOB = text(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = :id")
ACTIVE_JOBS_OF_WORKER = text(
    f"SELECT {JOB_COLUMNS} FROM jobs WHERE worker = :worker AND status IN {ACTIVE} ORDER BY id"
)
# Only active jobs time out; the oldest silence goes first.
FIND_EXPIRED = text(
    f"SELECT {JOB_COLUMNS} FROM jobs WHERE status IN {ACTIVE} AND last_heartbeat_at < :before "
    "ORDER BY last_heartbeat_at, id LIMIT :limit"
)
WORKERS_TRIED = _expanding(
    "SELECT job_id, worker FROM job_attempts WHERE job_id IN :ids ORDER BY job_id, attempt", "ids"
)
# A resubmitted meta.job_id supersedes every older job with that id that is not cancelled yet:
# the old one must never report into the new job's status or folders.
CANCEL_SAME_UPSTREAM_ID = text(
    "UPDATE jobs SET status = 'cancelled', updated_at = :now "
    "WHERE upstream_id = :upstream_id AND status <> 'cancelled' RETURNING id"
)
INSERT_JOB = text(
    "INSERT INTO jobs (upstream_id, status, environment, job_group, priority, req_cpu_cores, "
    "req_memory, req_gpu_mem, req_gpu_model, req_gpu_archi, spec, paths_upload, attempt, "
    "num_retries, event_seq, attempted_by, created_at, updated_at) VALUES (:upstream_id, "
    "'queued', :environment, :job_group, :priority, :req_cpu_cores, :req_memory, :req_gpu_mem, "
    ":req_gpu_model, :req_gpu_archi, :spec, :paths_upload, 0, 0, 0, '[]', :now, :now) "
    f"RETURNING {JOB_COLUMNS}"
)
# A cancelled job leaves the queue for good, and nothing more is said about it upstream.
CANCEL_JOB = text(
    "UPDATE jobs SET status = 'cancelled', updated_at = :now "
    "WHERE id = :id AND status <> 'cancelled' RETURNING id"
)
DROP_EVENTS_OF_JOBS = _expanding("DELETE FROM status_events WHERE job_id IN :ids", "ids")
COMPLETE_EVENTS = _expanding("DELETE FROM status_events WHERE id IN :ids", "ids")
POSTPONE_EVENTS = _expanding(
    "UPDATE status_events SET due_at = :until, leased_until = NULL, "
    "attempts = attempts + 1, last_error = :error WHERE id IN :ids",
    "ids",
)

# The claim's filter: DESIGN §3's matching over the sentinel-encoded requirement columns.
_FITS = (
    "status = 'queued' "
    "AND (environment = :environment OR (environment = 'any' AND created_at <= :any_before)) "
    "AND req_cpu_cores <= :cpu_cores AND req_memory <= :memory AND req_gpu_mem <= :gpu_mem "
    "AND (req_gpu_model IS NULL OR req_gpu_model = :gpu_model) "
    "AND (req_gpu_archi IS NULL OR req_gpu_archi = :gpu_archi)"
)
# RETRY_DIFFERENT: exact worker identity, never a substring.
_NOT_ATTEMPTED = (
    " AND NOT EXISTS (SELECT 1 FROM json_each(jobs.attempted_by) WHERE json_each.value = :worker)"
)


@functools.cache
def _pick(*, groups: bool, exclude_attempted: bool) -> TextClause:
    """Fitting jobs in hand-out order, found through the "fits" index: a range of the jobs of
    the worker's environment that need no more memory than it has, sorted."""
    where = _FITS + (_NOT_ATTEMPTED if exclude_attempted else "")
    order = ("CASE WHEN job_group IN :groups THEN 0 ELSE 1 END, " if groups else "") + _ORDER
    sql = (
        f"SELECT id FROM jobs INDEXED BY ix_jobs_queued_fit WHERE {where} "
        f"ORDER BY {order} LIMIT :limit"
    )
    return _expanding(sql, "groups") if groups else text(sql)


@functools.cache
def _pick_from_head(*, exclude_attempted: bool) -> TextClause:
    """The same among the first :window queued jobs in hand-out order: when most jobs fit, the
    first fitting ones are there, and nothing needs sorting. Fewer than :limit found (and more
    jobs queued than the window) means few fit: then ``_pick`` finds them."""
    where = _FITS + (_NOT_ATTEMPTED if exclude_attempted else "")
    return text(
        "SELECT id FROM (SELECT * FROM jobs INDEXED BY ix_jobs_queued_order "
        f"WHERE status = 'queued' ORDER BY {_ORDER} LIMIT :window) AS jobs "
        f"WHERE {where} ORDER BY {_ORDER} LIMIT :limit"
    )


_ORDER = "priority DESC, created_at, id"
_HEAD_WINDOW = 200


TAKE = _expanding(
    "UPDATE jobs SET status = 'pulled', worker = :worker, attempt = attempt + 1, "
    "attempted_by = json_insert(attempted_by, '$[#]', :worker), event_seq = event_seq + :record, "
    "last_heartbeat_at = :now, updated_at = :now WHERE id IN :ids AND status = 'queued' "
    f"RETURNING {JOB_COLUMNS}",
    "ids",
)
RECORD_ATTEMPT = text(
    "INSERT INTO job_attempts (job_id, attempt, worker, pulled_at) "
    "VALUES (:job_id, :attempt, :worker, :now)"
)
# An event is leased to the request that recorded it only when it is the one event of its job
# still undelivered; otherwise the dispatcher sends it after its predecessors.
ADD_EVENT = text(
    "INSERT INTO status_events (job_id, upstream_id, status, runtime_details, created_at, "
    "due_at, leased_until, attempts) VALUES (:job_id, :upstream_id, :status, :details, :now, "
    ":now, CASE WHEN EXISTS (SELECT 1 FROM status_events WHERE job_id = :job_id) THEN NULL "
    "ELSE :lease_until END, 0) RETURNING id, leased_until"
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
# Compare-and-set on (id, status, attempt), and on event_seq when recording an event.
# A cancelled job never changes again.
_CAS = (
    "WHERE id = :id AND status = :expected_status AND attempt = :expected_attempt "
    "AND status <> 'cancelled'"
)
_SAME_EVENTS = " AND event_seq = :expected_event_seq"
# The sweep acts only on an active job that is still silent: a keep-alive that won the race
# keeps it.
_STILL_SILENT = f" AND status IN {ACTIVE} AND last_heartbeat_at < :heartbeat_before"


@functools.cache
def _change(assignments: str, guard: str, record: bool) -> TextClause:
    bump = ", event_seq = event_seq + 1" if record else ""
    same = _SAME_EVENTS if record else ""
    return text(f"UPDATE jobs SET {assignments}{bump} {_CAS}{same}{guard} RETURNING {JOB_COLUMNS}")


EXPEDITE = text("UPDATE status_events SET due_at = :now WHERE due_at > :now")
# An event may go out only when it heads its job's line and nobody else holds it.
DELIVERABLE = text(
    "SELECT e.id FROM status_events e WHERE e.due_at <= :now "
    "AND (e.leased_until IS NULL OR e.leased_until <= :now) "
    "AND NOT EXISTS (SELECT 1 FROM status_events p WHERE p.job_id = e.job_id AND p.id < e.id) "
    "ORDER BY e.id LIMIT :limit"
)
LEASE = _expanding(
    f"UPDATE status_events SET leased_until = :until WHERE id IN :ids RETURNING {EVENT_COLUMNS}",
    "ids",
)


def _unavailable(exc: OperationalError) -> Unavailable:
    # Locked beyond the busy timeout, unreadable, disk full: the caller may retry later.
    return Unavailable(f"the queue's SQLite database is unavailable ({exc.orig})")


def stamp(value: datetime) -> str:
    """Fixed-width UTC text: SQLite compares it as text, so it must sort like time."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


class SqliteQueue:
    """``JobQueue`` and ``Outbox`` on one SQLite database file."""

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
        sub = submission.job
        values = submission_values(
            sub.job.meta.job_id,
            sub.environment,
            sub.group,
            DEFAULT_PRIORITY if sub.priority is None else sub.priority,
            sub.job.hardware,
            submission.spec,
            sub.paths_upload,
        ) | {"now": stamp(now)}
        for attempt in range(3):
            try:
                async with self._write() as conn:
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
                return job_from(row._mapping), cancelled
            except IntegrityError:  # pragma: no cover - SQLite serializes writers
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

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
        params: dict[str, Any] = {
            "environment": worker.environment.value,
            "any_before": stamp(now - timedelta(seconds=worker.older_than)),
            "cpu_cores": worker.cpu_cores,
            "memory": worker.memory,
            "gpu_mem": worker.gpu_mem,
            "gpu_model": worker.gpu_model,
            "gpu_archi": worker.gpu_archi,
            "worker": worker.worker,
            "limit": limit,
        }
        if worker.groups:
            params["groups"] = list(worker.groups)
        claimed: list[Claimed] = []
        async with self._write() as conn:
            ids: list[int] = []
            if not worker.groups:  # group preference reorders the queue: no head to look at
                head = _pick_from_head(exclude_attempted=exclude_attempted)
                ids = [r.id for r in await conn.execute(head, params | {"window": _HEAD_WINDOW})]
            if len(ids) < limit:
                pick = _pick(groups=bool(worker.groups), exclude_attempted=exclude_attempted)
                ids = [r.id for r in await conn.execute(pick, params)]
            if not ids:
                return []
            rows = await conn.execute(
                TAKE,
                {"ids": ids, "worker": worker.worker, "now": at, "record": int(self._record)},
            )
            for row in rows.all():
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

    async def record_update(
        self,
        job: Job,
        status: JobStatus,
        runtime_details: str | None,
        now: datetime,
        *,
        forward: bool,
        lease: bool = True,
    ) -> Committed | None:
        params = {"status": status.value, "details": runtime_details}
        return await self._change(_UPDATE_SET, "", job, params, now, forward, lease)

    async def requeue(
        self,
        job: Job,
        detail: str,
        now: datetime,
        *,
        heartbeat_before: datetime,
        lease: bool = True,
    ) -> Committed | None:
        params = {"details": detail, "heartbeat_before": stamp(heartbeat_before)}
        return await self._change(_REQUEUE_SET, _STILL_SILENT, job, params, now, True, lease)

    async def fail(
        self,
        job: Job,
        detail: str,
        now: datetime,
        *,
        heartbeat_before: datetime,
        lease: bool = True,
    ) -> Committed | None:
        params = {"details": detail, "heartbeat_before": stamp(heartbeat_before)}
        return await self._change(_FAIL_SET, _STILL_SILENT, job, params, now, True, lease)

    async def _change(
        self,
        assignments: str,
        guard: str,
        job: Job,
        params: dict[str, Any],
        now: datetime,
        forward: bool,
        lease: bool,
    ) -> Committed | None:
        record = forward and self._record
        params |= {
            "id": job.id,
            "expected_status": job.status.value,
            "expected_attempt": job.attempt,
            "expected_event_seq": job.event_seq,
            "now": stamp(now),
        }
        async with self._write() as conn:
            row = (await conn.execute(_change(assignments, guard, record), params)).one_or_none()
            if row is None:
                return None
            changed = job_from(row._mapping)
            event = None
            if forward:
                event = await self._add_event(conn, changed, params["details"], now, lease)
        return Committed(job=changed, event=event)

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

    # -- Outbox --------------------------------------------------------------------------------

    async def lease_events(
        self, now: datetime, lease_seconds: float, limit: int
    ) -> list[StatusEvent]:
        until = stamp(now + timedelta(seconds=lease_seconds))
        async with self._write() as conn:
            ids = [
                r.id for r in await conn.execute(DELIVERABLE, {"now": stamp(now), "limit": limit})
            ]
            if not ids:
                return []
            rows = (await conn.execute(LEASE, {"ids": ids, "until": until})).all()
        return sorted((event_from(r._mapping) for r in rows), key=lambda e: e.id)

    async def complete_events(self, event_ids: Sequence[int]) -> None:
        if event_ids:
            async with self._write() as conn:
                await conn.execute(COMPLETE_EVENTS, {"ids": list(event_ids)})

    async def expedite(self, now: datetime) -> None:
        async with self._write() as conn:
            await conn.execute(EXPEDITE, {"now": stamp(now)})

    async def postpone_events(self, event_ids: Sequence[int], until: datetime, error: str) -> None:
        if event_ids:
            async with self._write() as conn:
                await conn.execute(
                    POSTPONE_EVENTS, {"ids": list(event_ids), "until": stamp(until), "error": error}
                )
