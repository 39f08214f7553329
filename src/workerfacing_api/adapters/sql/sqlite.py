"""The queue on SQLite (one machine): ``JobQueue``, ``Outbox``, ``UploadLedger``,
``WorkerRegistry`` and ``DashboardReads`` through SQLAlchemy + aiosqlite.

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
    ahead_values,
    attempt_record_from,
    changed_job,
    claimed_keepalive,
    event_from,
    failure_from,
    fit_values,
    fresh_event,
    job_from,
    outcome_from,
    submission_values,
    throughput_from,
    waiting_class_from,
    worker_values,
    workers_from,
    workers_tried,
)
from workerfacing_api.adapters.sql.views import read_stats
from workerfacing_api.core.errors import Unavailable
from workerfacing_api.core.matching import pull_order
from workerfacing_api.core.model import (
    AttemptOutcome,
    AttemptRecord,
    Claimed,
    Committed,
    ExpiredJob,
    Failure,
    Job,
    Outcome,
    OutcomeCounts,
    QueueStats,
    StatusEvent,
    Submission,
    WaitingClass,
    WorkerProfile,
    WorkerRecord,
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
CANCEL_LIVE_JOBS_OF_UPSTREAM_ID = _statement("cancel_live_jobs_of_upstream_id")
INSERT_JOB = _statement("insert_job")
CANCEL_JOB = _statement("cancel_job")
DROP_EVENTS_OF_JOBS = _statement("drop_events_of_jobs", "ids")
# The claim's picks: what fits, RETRY_DIFFERENT, and no job for a worker set aside.
_PICK_SLOTS = {
    "fits": _SQL["fits"],
    "not_attempted": _SQL["not_attempted"],
    "not_set_aside": _SQL["worker_not_set_aside"],
}
PICK_FROM_HEAD = _statement("pick_from_head", **_PICK_SLOTS)
PICK_FITTING = _statement("pick_fitting", "groups", group_rank=_SQL["group_rank"], **_PICK_SLOTS)
TAKE_JOBS = _statement("take_jobs", "ids")
RECORD_ATTEMPT = _statement("record_attempt")
ADD_EVENT = _statement("add_event")
CHANGES = {
    # Delivered events are deleted at once here: every event left is pending.
    "record_update": _statement(
        "record_update", keepalive=queries.fill(_SQL["keepalive_due"], not_delivered="")
    ),
    "end_silent_attempt": _statement("end_silent_attempt"),
    "retry_failed": _statement("retry_failed"),
}
CONFIRM_UPSTREAM = _statement("confirm_upstream")
SCHEMA_REVISION = _statement("schema_revision")
RECORD_UPLOAD = _statement("record_upload")
UPLOADS_SINCE = _statement("uploads_since")
EXPEDITE_EVENTS = _statement("expedite_events")
DELIVERABLE_EVENTS = _statement("deliverable_events")
LEASE_EVENTS = _statement("lease_events", "ids")
COMPLETE_EVENTS = _statement("complete_events", "ids")
POSTPONE_EVENTS = _statement("postpone_events", "ids")
LIVE_JOB = _statement("live_job")
COUNT_AHEAD = _statement(
    "count_ahead",
    "groups",
    group_rank=_SQL["group_rank"],
    fits=_SQL["fits"],
    not_attempted=_SQL["not_attempted"],
)
RECORD_SEEN = _statement("record_seen")
WORKERS_SEEN_SINCE = _statement("workers_with_jobs", which=_SQL["seen_since"])
WORKER_NAMED = _statement("workers_with_jobs", which=_SQL["named"])
RECORD_OUTCOME = _statement("record_outcome")
OUTCOMES_OF = _statement("outcomes_of")
OUTCOME_COUNTS = _statement("outcome_counts")
SET_ASIDE = _statement("set_aside")
CLEAR_STRIKES = _statement("clear_strikes")
END_COOL_OFF = _statement("end_cool_off")
WORKER_KNOWN = _statement("worker_known")
MARK_COOL_OFF_ENDS = _statement("mark_cool_off_ends")
THROUGHPUT = _statement(
    "throughput",
    pulled_minute=queries.fill(_SQL["minute_of"], column="pulled_at"),
    ended_minute=queries.fill(_SQL["minute_of"], column="ended_at"),
)
WAITING_CLASSES = _statement("waiting_classes")
RECENT_FAILURES = _statement("recent_failures")
ATTEMPTS_OF_JOB = _statement("attempts_of_job")
EVENTS_OF_JOB = _statement("events_of_job")

# How many jobs at the head of the queue a claim looks at first (see pick_from_head).
_HEAD_WINDOW = 200


def _unavailable(exc: OperationalError) -> Unavailable:
    # Locked beyond the busy timeout, unreadable, disk full: the caller may retry later.
    return Unavailable(f"the queue's SQLite database is unavailable ({exc.orig})")


def stamp(value: datetime) -> str:
    """Fixed-width UTC text: SQLite compares it as text, so it must sort like time."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


class SqliteQueue(JobChanges):
    """``JobQueue``, ``Outbox``, ``UploadLedger`` and ``WorkerRegistry`` on one SQLite database
    file."""

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
            "now": at,
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

    async def live_job(self, upstream_id: int) -> Job | None:
        async with self._read() as conn:
            row = (await conn.execute(LIVE_JOB, {"upstream_id": upstream_id})).one_or_none()
        return None if row is None else job_from(row._mapping)

    async def count_ahead(
        self,
        job: Job,
        worker: WorkerProfile,
        now: datetime,
        *,
        exclude_attempted: bool,
        cap: int = 1000,
    ) -> int:
        ahead = ahead_values(job, worker.groups)
        params = (
            fit_values(worker, stamp(now - timedelta(seconds=worker.older_than)))
            | ahead
            | {
                "created_at": stamp(ahead["created_at"]),
                "exclude_attempted": exclude_attempted,
                "groups": list(worker.groups),
                "cap": cap,
            }
        )
        async with self._read() as conn:
            return int((await conn.execute(COUNT_AHEAD, params)).scalar_one())

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
            if values["ended"] is not None:  # the change ended the attempt: note how
                outcome = {"job_id": job.id, "attempt": job.attempt, "outcome": values["ended"]}
                await conn.execute(RECORD_OUTCOME, outcome | {"now": stamp(now)})
                if values["ended"] == Outcome.FINISHED.value and job.worker is not None:
                    await conn.execute(CLEAR_STRIKES, {"name": job.worker})
            event = None
            if forward:
                event = await self._add_event(conn, changed, values["details"], now, lease)
        return Committed(
            job=changed, event=event, keepalive=claimed_keepalive(changed, row._mapping, now)
        )

    async def find_expired(self, heartbeat_before: datetime, limit: int) -> list[ExpiredJob]:
        values = {"before": stamp(heartbeat_before), "limit": limit}
        async with self._read() as conn:
            rows = (await conn.execute(FIND_EXPIRED, values)).all()
        return [
            ExpiredJob(job=job_from(r._mapping), workers_tried=workers_tried(r._mapping))
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

    async def stats(self, now: datetime) -> QueueStats:
        async with self._read() as conn:
            return await read_stats(conn, now)

    async def schema_revision(self) -> str | None:
        """The database's schema revision; ``Unavailable`` when it cannot be read."""
        async with self._read() as conn:
            row = (await conn.execute(SCHEMA_REVISION)).first()
        return None if row is None else str(row.version_num)

    def pool_usage(self) -> tuple[int, int]:
        """Connections of the pool (in use, idle)."""
        pool = self._engine.pool
        checked_out = int(getattr(pool, "checkedout", lambda: 0)())
        idle = int(getattr(pool, "checkedin", lambda: 0)())
        return checked_out, idle

    async def confirm_upstream(self, answered: Mapping[int, datetime]) -> None:
        if answered:
            async with self._write() as conn:
                await conn.execute(
                    CONFIRM_UPSTREAM,
                    [{"id": job_id, "at": stamp(at)} for job_id, at in answered.items()],
                )

    # -- WorkerRegistry ------------------------------------------------------------------------

    async def record_seen(self, worker: WorkerProfile, now: datetime) -> None:
        async with self._write() as conn:
            await conn.execute(RECORD_SEEN, worker_values(worker) | {"now": stamp(now)})

    async def workers(self, seen_since: datetime | None) -> list[WorkerRecord]:
        since = stamp(EARLIEST if seen_since is None else seen_since)
        async with self._read() as conn:
            rows = (await conn.execute(WORKERS_SEEN_SINCE, {"seen_since": since})).all()
        return workers_from(r._mapping for r in rows)

    async def worker(self, name: str) -> WorkerRecord | None:
        async with self._read() as conn:
            return await self._worker_named(conn, name)

    async def outcomes_of(self, worker: str, since: datetime, limit: int) -> list[AttemptOutcome]:
        values = {"worker": worker, "since": stamp(since), "limit": limit}
        async with self._read() as conn:
            rows = (await conn.execute(OUTCOMES_OF, values)).all()
        return [outcome_from(r._mapping) for r in rows]

    async def outcome_counts(self, since: datetime, *, excluding: str) -> OutcomeCounts:
        values = {"since": stamp(since), "excluding": excluding}
        async with self._read() as conn:
            row = (await conn.execute(OUTCOME_COUNTS, values)).one()
        return OutcomeCounts(finished=row.finished, failed=row.failed)

    async def set_aside(
        self, worker: str, until: datetime, reason: str, now: datetime, *, strikes: int
    ) -> bool:
        values = {"name": worker, "until": stamp(until), "reason": reason, "strikes": strikes}
        async with self._write() as conn:
            row = (await conn.execute(SET_ASIDE, values | {"now": stamp(now)})).first()
        return row is not None

    async def release(self, worker: str, now: datetime) -> bool | None:
        async with self._write() as conn:
            if (await conn.execute(END_COOL_OFF, {"name": worker, "now": stamp(now)})).first():
                return True
            known = (await conn.execute(WORKER_KNOWN, {"name": worker})).first()
        return False if known is not None else None

    async def note_cool_off_ends(self, now: datetime) -> list[WorkerRecord]:
        # Marked and read in one write transaction: no other process marks them meanwhile.
        async with self._write() as conn:
            names = sorted(
                r.name for r in await conn.execute(MARK_COOL_OFF_ENDS, {"now": stamp(now)})
            )
            ended = [await self._worker_named(conn, name) for name in names]
        return [w for w in ended if w is not None]

    @staticmethod
    async def _worker_named(conn: AsyncConnection, name: str) -> WorkerRecord | None:
        rows = (await conn.execute(WORKER_NAMED, {"name": name})).all()
        found = workers_from(r._mapping for r in rows)
        return found[0] if found else None

    # -- DashboardReads ------------------------------------------------------------------------

    async def throughput(self, since: datetime, now: datetime) -> list[tuple[datetime, int, int]]:
        async with self._read() as conn:
            rows = await conn.execute(THROUGHPUT, {"since": stamp(since), "now": stamp(now)})
            return throughput_from(r._mapping for r in rows)

    async def waiting_classes(self, limit: int) -> list[WaitingClass]:
        async with self._read() as conn:
            rows = await conn.execute(WAITING_CLASSES, {"limit": limit})
            return [waiting_class_from(r._mapping) for r in rows]

    async def recent_failures(self, limit: int) -> list[Failure]:
        async with self._read() as conn:
            rows = await conn.execute(RECENT_FAILURES, {"limit": limit})
            return [failure_from(r._mapping) for r in rows]

    async def attempts_of(self, job_id: int) -> list[AttemptRecord]:
        async with self._read() as conn:
            rows = await conn.execute(ATTEMPTS_OF_JOB, {"id": job_id})
            return [attempt_record_from(r._mapping) for r in rows]

    async def pending_events_of(self, job_id: int) -> list[StatusEvent]:
        # Delivered events are deleted at once here: every event left is pending.
        async with self._read() as conn:
            rows = await conn.execute(EVENTS_OF_JOB, {"id": job_id})
            return [event_from(r._mapping) for r in rows]

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
