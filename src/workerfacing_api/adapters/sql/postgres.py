"""The queue on PostgreSQL (production, several API processes): ``JobQueue`` and ``Outbox``
straight on an asyncpg pool.

Each operation is one statement, run without an explicit transaction: PostgreSQL runs a
statement atomically, data-modifying CTEs included, so a claim, its attempt and its status event
commit together in one round trip. (Through SQLAlchemy's execution layer, the same statements
cost this service about five times the CPU; SQLAlchemy still defines the schema and drives the
migrations.)

Delivered events are deleted lazily: ``complete_events`` only remembers their ids, and the next
statement this process sends deletes them on the side (``WITH done AS (DELETE …)``), or a flush
does shortly after when nothing else comes. A successor event is leased only in the same
statement that deletes its predecessor, so no crash can ever resend an event after a later one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from workerfacing_api.adapters.sql.pgpool import ConnectionPool, raise_if_lost
from workerfacing_api.adapters.sql.rows import (
    ACTIVE,
    EVENT_COLUMNS,
    JOB_COLUMNS,
    event_from,
    fresh_event,
    job_from,
    prefixed,
    submission_values,
)
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


class Statement:
    """SQL written with ``:name`` placeholders, numbered once for asyncpg (``$1``…)."""

    def __init__(self, sql: str) -> None:
        names: list[str] = []

        def number(match: re.Match[str]) -> str:
            if match.group(1) not in names:
                names.append(match.group(1))
            return f"${names.index(match.group(1)) + 1}"

        # ":name", but not the "::type" of a cast.
        self.sql = re.sub(r"(?<![:\w]):([a-z_]+)", number, sql)
        self.names = tuple(names)

    def args(self, params: dict[str, Any]) -> list[Any]:
        return [params[name] for name in self.names]


# Every statement that may lease an event first deletes the events this process delivered
# (:done) and treats them as gone: they are, once the statement commits.
_DONE = "done AS (DELETE FROM status_events WHERE id = ANY(:done::bigint[]))"
# "No older undelivered event of this job": the event may be sent right away. (The dispatcher's
# form; requests use _OLDER, a LATERAL probe that cannot be turned into a scan of the outbox.)
_HEADS_LINE = (
    "NOT EXISTS (SELECT 1 FROM status_events p WHERE p.job_id = {job} "
    "AND p.id <> ALL(:done::bigint[]){older})"
)
_OLDER = (
    "LEFT JOIN LATERAL (SELECT p.id FROM status_events p WHERE p.job_id = c.id "
    "AND p.id <> ALL(:done::bigint[]) LIMIT 1) older ON true"
)

GET_JOB = Statement(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = :id")
ACTIVE_JOBS_OF_WORKER = Statement(
    f"SELECT {JOB_COLUMNS} FROM jobs WHERE worker = :worker AND status IN {ACTIVE} ORDER BY id"
)
# Only active jobs time out (the partial index on active jobs finds them); oldest silence first.
FIND_EXPIRED = Statement(
    f"SELECT {JOB_COLUMNS} FROM jobs WHERE status IN {ACTIVE} AND last_heartbeat_at < :before "
    "ORDER BY last_heartbeat_at, id LIMIT :limit"
)
WORKERS_TRIED = Statement(
    "SELECT job_id, worker FROM job_attempts WHERE job_id = ANY(:ids::bigint[]) "
    "ORDER BY job_id, attempt"
)
# A resubmitted meta.job_id supersedes every older job with that id that is not cancelled yet
# (the old one must never report into the new job's status or folders), with its events.
SUPERSEDE = Statement(
    "WITH old AS (UPDATE jobs SET status = 'cancelled', updated_at = :now "
    "WHERE upstream_id = :upstream_id AND status <> 'cancelled' RETURNING id), "
    "gone AS (DELETE FROM status_events WHERE job_id IN (SELECT id FROM old)) "
    "SELECT coalesce(array_agg(id ORDER BY id), '{}') AS ids FROM old"
)
INSERT_JOB = Statement(
    "INSERT INTO jobs (upstream_id, status, environment, job_group, priority, req_cpu_cores, "
    "req_memory, req_gpu_mem, req_gpu_model, req_gpu_archi, spec, paths_upload, attempt, "
    "num_retries, event_seq, attempted_by, created_at, updated_at) VALUES (:upstream_id, "
    "'queued', :environment, :job_group, :priority, :req_cpu_cores, :req_memory, :req_gpu_mem, "
    ":req_gpu_model, :req_gpu_archi, :spec, :paths_upload, 0, 0, 0, '[]', :now, :now) "
    f"RETURNING {JOB_COLUMNS}"
)
# A cancelled job leaves the queue for good, and nothing more is said about it upstream.
CANCEL_JOB = Statement(
    "WITH cancelled AS (UPDATE jobs SET status = 'cancelled', updated_at = :now "
    "WHERE id = :id AND status <> 'cancelled' RETURNING id), "
    "gone AS (DELETE FROM status_events WHERE job_id = :id) "
    "SELECT count(*) AS n FROM cancelled"
)
COMPLETE_EVENTS = Statement("DELETE FROM status_events WHERE id = ANY(:done::bigint[])")
POSTPONE_EVENTS = Statement(
    "UPDATE status_events SET due_at = :until, leased_until = NULL, attempts = attempts + 1, "
    "last_error = :error WHERE id = ANY(:ids::bigint[])"
)
EXPEDITE = Statement("UPDATE status_events SET due_at = :now WHERE due_at > :now")
# Lease due events that head their job's line. SKIP LOCKED: dispatchers in several processes
# take disjoint events without waiting on each other.
LEASE_EVENTS = Statement(
    f"WITH {_DONE}, picked AS (SELECT e.id FROM status_events e "
    "WHERE e.id <> ALL(:done::bigint[]) AND e.due_at <= :now "
    "AND (e.leased_until IS NULL OR e.leased_until <= :now) AND "
    + _HEADS_LINE.format(job="e.job_id", older=" AND p.id < e.id")
    + " ORDER BY e.id LIMIT :limit FOR UPDATE SKIP LOCKED) "
    "UPDATE status_events SET leased_until = :until FROM picked "
    f"WHERE status_events.id = picked.id RETURNING {prefixed('status_events', EVENT_COLUMNS)}"
)


def memory_class(memory: int) -> int:
    """The worker's memory rounded up to a power of two (a few dozen classes in all)."""
    return 0 if memory <= 0 else 1 << (min(memory, 2**62) - 1).bit_length()


@functools.cache
def claim_statement(*, groups: bool, exclude_attempted: bool, memory_class: int) -> Statement:
    """Claim up to :limit fitting jobs for :worker in one statement.

    SKIP LOCKED: concurrent pulls take different rows and never wait on each other; the rows are
    locked by the same statement that updates them, so no job is ever handed out twice.

    The best plan depends on how many queued jobs fit: walk the queue in order when most do,
    range-scan the "fits" index when few do. Plans are generic (made once per connection), so
    the statement carries the worker's memory class as a constant for the planner to weigh
    against its statistics; the exact limit stays a parameter.
    """
    not_attempted = " AND NOT (attempted_by ? :worker::text)" if exclude_attempted else ""
    preferred = "CASE WHEN job_group = ANY(:groups::text[]) THEN 0 ELSE 1 END, " if groups else ""
    return Statement(
        f"WITH {_DONE}, picked AS (SELECT id FROM jobs WHERE status = 'queued' "
        "AND (environment = :environment OR (environment = 'any' AND created_at <= :any_before)) "
        f"AND req_memory <= {int(memory_class)} "
        "AND req_cpu_cores <= :cpu_cores AND req_memory <= :memory AND req_gpu_mem <= :gpu_mem "
        "AND (req_gpu_model IS NULL OR req_gpu_model = :gpu_model) "
        f"AND (req_gpu_archi IS NULL OR req_gpu_archi = :gpu_archi){not_attempted} "
        f"ORDER BY {preferred}priority DESC, created_at, id LIMIT :limit FOR UPDATE SKIP LOCKED), "
        "claimed AS (UPDATE jobs SET status = 'pulled', worker = :worker::text, "
        "attempt = jobs.attempt + 1, "
        "attempted_by = jobs.attempted_by || jsonb_build_array(:worker::text), "
        "event_seq = jobs.event_seq + :record, last_heartbeat_at = :now, updated_at = :now "
        f"FROM picked WHERE jobs.id = picked.id RETURNING {prefixed('jobs', JOB_COLUMNS)}), "
        "attempts AS (INSERT INTO job_attempts (job_id, attempt, worker, pulled_at) "
        "SELECT id, attempt, worker, :now FROM claimed), "
        "events AS (INSERT INTO status_events (job_id, upstream_id, status, created_at, due_at, "
        "leased_until, attempts) SELECT c.id, c.upstream_id, 'pulled', :now::timestamptz, "
        ":now::timestamptz, CASE WHEN older.id IS NULL THEN :lease_until::timestamptz END, 0 "
        f"FROM claimed c {_OLDER} WHERE :record::int = 1 RETURNING id, job_id, leased_until) "
        "SELECT claimed.*, events.id AS event_id, events.leased_until AS event_leased_until "
        "FROM claimed LEFT JOIN events ON events.job_id = claimed.id"
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
# The sweep acts only on an active job that is still silent: a keep-alive that won the race
# keeps it.
_STILL_SILENT = f" AND status IN {ACTIVE} AND last_heartbeat_at < :heartbeat_before"


@functools.cache
def _change(assignments: str, guard: str, record: bool) -> Statement:
    """Compare-and-set on (id, status, attempt), and on event_seq when the change records an
    event.

    A decision taken on a stale snapshot changes nothing: a late sweep cannot undo a worker's
    update, a late worker update cannot touch a job that was re-queued and pulled by someone
    else. Comparing event_seq too makes two events of one job commit one after the other, so
    the second statement to commit always sees the first event when it checks the line.
    """
    cas = (  # a cancelled job never changes again
        "WHERE id = :id AND status = :expected_status AND attempt = :expected_attempt "
        f"AND status <> 'cancelled'{guard}"
    )
    if not record:
        return Statement(
            f"WITH {_DONE} UPDATE jobs SET {assignments} {cas} "
            f"RETURNING {JOB_COLUMNS}, NULL::bigint AS event_id, "
            "NULL::timestamptz AS event_leased_until"
        )
    return Statement(
        f"WITH {_DONE}, changed AS (UPDATE jobs SET {assignments}, event_seq = event_seq + 1 "
        f"{cas} AND event_seq = :expected_event_seq RETURNING {JOB_COLUMNS}), "
        "event AS (INSERT INTO status_events (job_id, upstream_id, status, runtime_details, "
        "created_at, due_at, leased_until, attempts) SELECT c.id, c.upstream_id, c.status, "
        ":details::text, :now::timestamptz, :now::timestamptz, "
        "CASE WHEN older.id IS NULL THEN :lease_until::timestamptz END, 0 "
        f"FROM changed c {_OLDER} RETURNING id, leased_until) "
        "SELECT changed.*, event.id AS event_id, event.leased_until AS event_leased_until "
        "FROM changed LEFT JOIN event ON true"
    )


_DEADLOCK_RETRIES = 3


class PostgresQueue:
    """``JobQueue`` and ``Outbox`` on PostgreSQL."""

    def __init__(
        self,
        dsn: str,
        *,
        record_events: bool,
        lease_seconds: float = 30.0,
        pool_size: int = 10,
        flush_delay: float = 0.05,
    ) -> None:
        self._dsn = dsn
        self._record = record_events
        self._lease = timedelta(seconds=lease_seconds)
        self._pool_size = pool_size
        self._pool = ConnectionPool(
            dsn,
            max_size=pool_size,
            server_settings={
                "application_name": "workerfacing-api",
                # Plan each statement once per connection, not at every execution: planning
                # costs PostgreSQL more CPU than running these statements. The one statement
                # whose best plan depends on its values, the claim, carries them (see
                # claim_statement).
                "plan_cache_mode": "force_generic_plan",
                # A plan made while a table is nearly empty (a new queue, a drained outbox)
                # would be kept after it grows; every query here has an index to take.
                "enable_seqscan": "off",
            },
        )
        # Delivered events not deleted yet (see the module docstring).
        self._delivered: set[int] = set()
        self._flush_delay = flush_delay
        self._flush_task: asyncio.Task[None] | None = None

    async def _fetch(self, stmt: Statement, params: dict[str, Any]) -> list[asyncpg.Record]:
        args = stmt.args(params)
        for attempt in range(_DEADLOCK_RETRIES):
            try:
                return await self._pool.fetch(stmt.sql, args)
            except asyncpg.exceptions.DeadlockDetectedError:
                # PostgreSQL aborted this statement to break a lock cycle with another: it
                # changed nothing, so it is run again.
                if attempt == _DEADLOCK_RETRIES - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _fetch_done(self, stmt: Statement, params: dict[str, Any]) -> list[asyncpg.Record]:
        """Run a statement that also deletes this process's delivered events (:done).

        The ids go with exactly one statement at a time: two statements deleting the same rows
        at once would wait on each other."""
        done = list(self._delivered)
        self._delivered.difference_update(done)
        try:
            return await self._fetch(stmt, params | {"done": done})
        except BaseException:
            self._delivered.update(done)  # not deleted: the next statement takes them
            raise

    async def close(self) -> None:
        if self._flush_task is not None:
            self._flush_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flush_task
        if self._delivered:
            with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await self._flush_now()  # else they are sent again: at least once
        await self._pool.close()

    # -- JobQueue ------------------------------------------------------------------------------

    async def add(self, submission: Submission, now: datetime) -> tuple[Job, tuple[int, ...]]:
        sub = submission.job
        v = submission_values(
            sub.job.meta.job_id,
            sub.environment,
            sub.group,
            DEFAULT_PRIORITY if sub.priority is None else sub.priority,
            sub.job.hardware,
            submission.spec,
            sub.paths_upload,
        )
        v["now"] = now
        # Two racing submissions of one meta.job_id: the unique index on live jobs makes the
        # later one fail; retried, it supersedes the earlier one like any resubmission.
        for attempt in range(3):
            conn = await self._pool.connection()
            failure: BaseException | None = None
            try:
                async with conn.transaction():
                    superseded = tuple(await conn.fetchval(SUPERSEDE.sql, *SUPERSEDE.args(v)))
                    row = await conn.fetchrow(INSERT_JOB.sql, *INSERT_JOB.args(v))
                assert row is not None
                return job_from(row), superseded
            except asyncpg.UniqueViolationError:
                if attempt == 2:
                    raise
            except asyncpg.InternalClientError as exc:
                # A connection the server ended while idle, found before the commit was sent:
                # the transaction did not happen, so it is tried on another connection.
                failure = exc
                if attempt == 2:
                    raise_if_lost(exc)
            except BaseException as exc:
                failure = exc
                raise_if_lost(exc)
                raise
            finally:
                self._pool.release(conn, failure)
        raise AssertionError("unreachable")  # pragma: no cover

    async def get(self, job_id: int) -> Job | None:
        rows = await self._fetch(GET_JOB, {"id": job_id})
        return job_from(rows[0]) if rows else None

    async def claim_jobs(
        self,
        worker: WorkerProfile,
        limit: int,
        now: datetime,
        *,
        exclude_attempted: bool,
        lease: bool = True,
    ) -> list[Claimed]:
        params: dict[str, Any] = {
            "environment": worker.environment.value,
            "any_before": now - timedelta(seconds=worker.older_than),
            "cpu_cores": worker.cpu_cores,
            "memory": worker.memory,
            "gpu_mem": worker.gpu_mem,
            "gpu_model": worker.gpu_model,
            "gpu_archi": worker.gpu_archi,
            "worker": worker.worker,
            "limit": limit,
            "now": now,
            "record": int(self._record),
            "lease_until": now + self._lease if lease else None,
            "groups": list(worker.groups),
        }
        stmt = claim_statement(
            groups=bool(worker.groups),
            exclude_attempted=exclude_attempted,
            memory_class=memory_class(worker.memory),
        )
        rows = await self._fetch_done(stmt, params)
        claimed = []
        for row in rows:
            job = job_from(row)
            event = None
            if row["event_leased_until"] is not None:
                event = fresh_event(row["event_id"], job, None, now)
            claimed.append(Claimed(job=job, event=event))
        # The statement returns rows in no particular order; hand them out in pull order.
        claimed.sort(key=lambda c: pull_order(c.job, worker.groups))
        return claimed

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
        params = {"details": detail, "heartbeat_before": heartbeat_before}
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
        params = {"details": detail, "heartbeat_before": heartbeat_before}
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
            "now": now,
            "lease_until": now + self._lease if lease else None,
        }
        rows = await self._fetch_done(_change(assignments, guard, record), params)
        if not rows:
            return None
        changed = job_from(rows[0])
        event = None
        if rows[0]["event_leased_until"] is not None:
            event = fresh_event(rows[0]["event_id"], changed, params["details"], now)
        return Committed(job=changed, event=event)

    async def find_expired(self, heartbeat_before: datetime, limit: int) -> list[ExpiredJob]:
        rows = await self._fetch(FIND_EXPIRED, {"before": heartbeat_before, "limit": limit})
        if not rows:
            return []
        tried: dict[int, list[str]] = {}
        for r in await self._fetch(WORKERS_TRIED, {"ids": [r["id"] for r in rows]}):
            tried.setdefault(r["job_id"], []).append(r["worker"])
        return [
            ExpiredJob(job=job_from(r), workers_tried=tuple(tried.get(r["id"], ()))) for r in rows
        ]

    async def cancel(self, job_id: int, now: datetime) -> bool:
        rows = await self._fetch(CANCEL_JOB, {"id": job_id, "now": now})
        return bool(rows[0]["n"])

    async def active_jobs_of(self, worker: str) -> list[Job]:
        return [job_from(r) for r in await self._fetch(ACTIVE_JOBS_OF_WORKER, {"worker": worker})]

    # -- Outbox --------------------------------------------------------------------------------

    async def lease_events(
        self, now: datetime, lease_seconds: float, limit: int
    ) -> list[StatusEvent]:
        until = now + timedelta(seconds=lease_seconds)
        rows = await self._fetch_done(LEASE_EVENTS, {"now": now, "limit": limit, "until": until})
        return sorted((event_from(r) for r in rows), key=lambda e: e.id)

    async def complete_events(self, event_ids: Sequence[int]) -> None:
        self._delivered.update(event_ids)
        if self._flush_task is None or self._flush_task.done():
            self._flush_task = asyncio.create_task(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(self._flush_delay)
        if self._delivered:
            await self._flush_now()

    async def _flush_now(self) -> None:
        await self._fetch_done(COMPLETE_EVENTS, {})

    async def expedite(self, now: datetime) -> None:
        await self._fetch(EXPEDITE, {"now": now})

    async def postpone_events(self, event_ids: Sequence[int], until: datetime, error: str) -> None:
        if event_ids:
            params = {"ids": list(event_ids), "until": until, "error": error}
            await self._fetch(POSTPONE_EVENTS, params)
