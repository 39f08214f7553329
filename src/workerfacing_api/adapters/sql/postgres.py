"""The queue on PostgreSQL (production, several API processes): ``JobQueue``, ``Outbox``,
``UploadLedger``, ``WorkerRegistry`` and ``DashboardReads`` straight on asyncpg's connection
pool.

Each operation is one statement (``queries/postgres.sql`` and ``queries/common.sql``), run
without an explicit transaction: PostgreSQL runs a statement atomically, data-modifying CTEs
included, so a claim, its attempt and its status event commit together in one round trip.
(Through SQLAlchemy's execution layer, the same statements cost this service about five times
the CPU; SQLAlchemy still defines the schema and drives the migrations.) Only a submission and a
cancellation, which are rare, take a transaction of a few statements.

Delivered events are deleted lazily: ``complete_events`` only remembers their ids, and the next
statement this process sends deletes them on the side, or a flush does shortly after when
nothing else comes (see ``postgres.sql``). The upstream's answers (``confirm_upstream``, one per
delivery) are written by that flush as well, batched; until then this process reads its jobs
with them applied, so it sees its own confirmations at once, and the others see them within
the flush delay.

A lost connection (the server restarted, failed over or ended it) is reported as
``Unavailable``, which workers see as a 503 they retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

import asyncpg
import msgspec

from workerfacing_api.adapters.sql import queries
from workerfacing_api.adapters.sql.changes import JobChanges
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
    queue_stats,
    submission_values,
    throughput_from,
    waiting_class_from,
    worker_values,
    workers_from,
    workers_tried,
)
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
    OutcomeCounts,
    QueueStats,
    StatusEvent,
    Submission,
    WaitingClass,
    WorkerProfile,
    WorkerRecord,
)

T = TypeVar("T")
log = logging.getLogger("workerfacing_api.queue")


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


_SQL = queries.load("postgres")

GET_JOB = Statement(_SQL["get_job"])
ACTIVE_JOBS_OF_WORKER = Statement(_SQL["active_jobs_of_worker"])
FIND_EXPIRED = Statement(_SQL["find_expired"])
CANCEL_LIVE_JOBS_OF_UPSTREAM_ID = Statement(_SQL["cancel_live_jobs_of_upstream_id"])
INSERT_JOB = Statement(_SQL["insert_job"])
CANCEL_JOB = Statement(_SQL["cancel_job"])
DROP_EVENTS_OF_JOBS = Statement(_SQL["drop_events_of_jobs"])
# common.sql's compare-and-set statements, each run with the event it records. A worker's
# update may claim a keep-alive; the events this process delivered do not hold it back.
_COMPARE_AND_SET = {
    "record_update": queries.fill(
        _SQL["record_update"],
        keepalive=queries.fill(_SQL["keepalive_due"], not_delivered=_SQL["not_delivered"]),
    ),
    "end_silent_attempt": _SQL["end_silent_attempt"],
    "retry_failed": _SQL["retry_failed"],
}
CHANGES = {
    name: Statement(queries.fill(_SQL["change_job"], change=sql))
    for name, sql in _COMPARE_AND_SET.items()
}
RECORD_UPLOAD = Statement(_SQL["record_upload"])
UPLOADS_SINCE = Statement(_SQL["uploads_since"])
LEASE_EVENTS = Statement(_SQL["lease_events"])
FLUSH_DEFERRED = Statement(_SQL["flush_deferred"])
POSTPONE_EVENTS = Statement(_SQL["postpone_events"])
EXPEDITE_EVENTS = Statement(_SQL["expedite_events"])
LIVE_JOB = Statement(_SQL["live_job"])
SCHEMA_REVISION = Statement(_SQL["schema_revision"])
COUNT_JOBS_BY_STATUS = Statement(_SQL["count_jobs_by_status"])
OLDEST_QUEUED_JOB = Statement(_SQL["oldest_queued_job"])
OUTBOX_BACKLOG = Statement(_SQL["outbox_backlog"])
COUNT_AHEAD = Statement(
    queries.fill(
        _SQL["count_ahead"],
        group_rank=_SQL["group_rank"],
        fits=_SQL["fits"],
        not_attempted=_SQL["not_attempted"],
    )
)
RECORD_SEEN = Statement(_SQL["record_seen"])
WORKERS_SEEN_SINCE = Statement(queries.fill(_SQL["workers_with_jobs"], which=_SQL["seen_since"]))
WORKER_NAMED = Statement(queries.fill(_SQL["workers_with_jobs"], which=_SQL["named"]))
OUTCOMES_OF = Statement(_SQL["outcomes_of"])
OUTCOME_COUNTS = Statement(_SQL["outcome_counts"])
SET_ASIDE = Statement(_SQL["set_aside"])
END_COOL_OFF = Statement(_SQL["end_cool_off"])
WORKER_KNOWN = Statement(_SQL["worker_known"])
THROUGHPUT = Statement(
    queries.fill(
        _SQL["throughput"],
        pulled_minute=queries.fill(_SQL["minute_of"], column="pulled_at"),
        ended_minute=queries.fill(_SQL["minute_of"], column="ended_at"),
    )
)
WAITING_CLASSES = Statement(_SQL["waiting_classes"])
RECENT_FAILURES = Statement(_SQL["recent_failures"])
ATTEMPTS_OF_JOB = Statement(_SQL["attempts_of_job"])
EVENTS_OF_JOB = Statement(_SQL["events_of_job"])
NOTE_COOL_OFF_ENDS = Statement(
    queries.fill(_SQL["note_cool_off_ends"], mark=_SQL["mark_cool_off_ends"])
)


def memory_class(memory: int) -> int:
    """The worker's memory rounded up to a power of two (a few dozen classes in all)."""
    return 0 if memory <= 0 else 1 << (min(memory, 2**62) - 1).bit_length()


@functools.cache
def claim_statement(*, groups: bool, memory_class: int) -> Statement:
    """``claim_jobs`` for a worker that prefers ``groups`` or not, with its memory class."""
    slots = {
        "fits": _SQL["fits"],
        "memory_class": str(int(memory_class)),
        "not_attempted": _SQL["not_attempted"],
        "not_set_aside": _SQL["worker_not_set_aside"],
    }
    if groups:
        pick = queries.fill(_SQL["pick_preferring_groups"], group_rank=_SQL["group_rank"], **slots)
    else:
        pick = queries.fill(_SQL["pick_in_queue_order"], **slots)
    return Statement(queries.fill(_SQL["claim_jobs"], pick=pick))


# The connection is gone: the server ended it (restart, failover, pg_terminate_backend, idle
# timeout), refused it, is starting up or shutting down (57P03), or did not answer the connect
# in time. The statement then did not commit, except in the rare case of a connection lost
# after the commit and before its answer: at least once, as everywhere here.
_LOST = (
    OSError,  # refused, reset, unreachable; also the connect timeout (TimeoutError)
    asyncpg.PostgresConnectionError,  # 08xxx, e.g. "connection was closed in the middle of …"
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
)
_DEADLOCK_RETRIES = 3


def _lost(conn: asyncpg.Connection) -> bool:
    """Whether ``conn``'s connection to the server is gone. The pool detaches its proxy from a
    connection that broke mid-transaction; asking the proxy then raises (seen while the server
    shut down under load), which says the same."""
    try:
        return bool(conn.is_closed())
    except asyncpg.InterfaceError:
        return True


def _unavailable(exc: BaseException) -> Unavailable:
    return Unavailable(f"lost the connection to the queue's database ({exc}); retry")


def _keep_latest(kept: dict[int, datetime], answered: Mapping[int, datetime]) -> None:
    """Add ``answered`` to ``kept``, keeping the latest answer per job (as the database does)."""
    for job_id, at in answered.items():
        known = kept.get(job_id)
        if known is None or known < at:
            kept[job_id] = at


async def _no_reset(_conn: asyncpg.Connection) -> None:
    """Nothing to reset on a returned connection: every operation here is one statement or a
    transaction that ends (``async with conn.transaction()``), and nothing sets session state,
    so asyncpg's reset query (another round trip per operation) would find nothing to undo."""


class PostgresQueue(JobChanges):
    """``JobQueue``, ``Outbox``, ``UploadLedger`` and ``WorkerRegistry`` on PostgreSQL."""

    def __init__(
        self,
        dsn: str,
        *,
        record_events: bool,
        lease_seconds: float = 30.0,
        pool_size: int = 10,
        flush_delay: float = 0.05,
        connect_timeout: float = 10.0,
        max_queries: int = 20_000,
        max_idle_seconds: float = 60.0,
    ) -> None:
        self._dsn = dsn
        self._record = record_events
        self._lease = timedelta(seconds=lease_seconds)
        self._pool_size = pool_size
        self._pool_options: dict[str, Any] = {
            "min_size": 0,  # none opened before use, and no floor kept up in the background
            "max_size": pool_size,
            "timeout": connect_timeout,
            # A bounded life: a connection is replaced after this many statements, and closed
            # after sitting idle this long (before a firewall or the server's idle timeout
            # cuts it silently).
            "max_queries": max_queries,
            "max_inactive_connection_lifetime": max_idle_seconds,
            "reset": _no_reset,
            # Each connection prepares a statement once and keeps it: the claim comes in one
            # variant per memory class and group preference, the others once each.
            "statement_cache_size": 256,
            "server_settings": {
                "application_name": "workerfacing-api",
                # Plan each statement once per connection, not at every execution: planning
                # costs PostgreSQL more CPU than running these statements. The one statement
                # whose best plan depends on its values, the claim, carries them (see
                # claim_statement).
                "plan_cache_mode": "force_generic_plan",
                # A plan made while a table is nearly empty (a new queue, a drained outbox)
                # would be kept after it grows; every query here has an index to take.
                "enable_seqscan": "off",
                # No JIT compilation: these statements run in milliseconds, and compiling costs
                # tens of them. With seq scans off, the planner's cost of a statement over a
                # table that has no index to take (an empty outbox's count) looks huge and
                # crossed jit_above_cost: 30 ms of compiling for a count of nothing.
                "jit": "off",
            },
        }
        # Created on first use, in the loop that uses it (asyncpg binds a pool to its loop).
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()
        self._closed = False
        # Delivered events not deleted yet (see postgres.sql).
        self._delivered: set[int] = set()
        # The upstream's latest answer per job, not written yet (confirm_upstream); and those
        # a flush is writing now, still applied to what this process reads until it commits.
        self._answered: dict[int, datetime] = {}
        self._answering: list[dict[int, datetime]] = []
        self._flush_delay = flush_delay
        self._flush_task: asyncio.Task[None] | None = None

    async def _open_pool(self) -> asyncpg.Pool:
        async with self._opening:
            if self._closed:
                raise Unavailable("the queue is closed (the service is shutting down); retry")
            if self._pool is None:
                self._pool = await asyncpg.create_pool(self._dsn, **self._pool_options)
            return self._pool

    async def _run(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """``work`` on a pooled connection, with a lost connection reported as ``Unavailable``.

        ``work`` runs again when it cannot have changed anything: on another connection when
        its connection turned out broken before anything was sent, and when PostgreSQL aborted
        it to break a deadlock."""
        pool = self._pool if self._pool is not None else await self._open_pool()
        broken = deadlocks = 0
        while True:
            try:
                async with pool.acquire() as conn:
                    try:
                        return await work(conn)
                    except asyncpg.InternalClientError as exc:
                        # asyncpg found the connection's protocol out of step and sent nothing:
                        # the server ended the connection while it sat idle in the pool (its
                        # farewell was read, the socket is not closed yet). Such a connection is
                        # dropped, so this ends once each pooled connection was tried at most
                        # once, and then on a new one.
                        conn.terminate()
                        broken += 1
                        if broken > self._pool_size:
                            raise _unavailable(exc) from exc
                        continue
                    except asyncpg.InterfaceError as exc:
                        if _lost(conn):
                            raise _unavailable(exc) from exc
                        raise  # a misuse of asyncpg: a bug, not an outage
            except asyncpg.exceptions.DeadlockDetectedError:
                deadlocks += 1
                if deadlocks == _DEADLOCK_RETRIES:
                    raise
            except _LOST as exc:
                raise _unavailable(exc) from exc

    async def _fetch(self, stmt: Statement, params: dict[str, Any]) -> list[asyncpg.Record]:
        args = stmt.args(params)
        rows: list[asyncpg.Record] = await self._run(lambda conn: conn.fetch(stmt.sql, *args))
        return rows

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
        if self._delivered or self._answered:
            # Else the events are sent again (at least once), and the answers are lost: a
            # clean-up after a delete may then remove files stored before it.
            with contextlib.suppress(Unavailable, asyncpg.PostgresError):
                await self.flush()
        async with self._opening:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            with contextlib.suppress(TimeoutError):
                # Waits for connections in use; past the bound, asyncpg terminates them all.
                await asyncio.wait_for(pool.close(), timeout=10)

    # -- JobQueue ------------------------------------------------------------------------------

    async def add(self, submission: Submission, now: datetime) -> tuple[Job, tuple[int, ...]]:
        values = submission_values(submission) | {"now": now}

        async def supersede_and_insert(conn: asyncpg.Connection) -> tuple[Job, tuple[int, ...]]:
            async with conn.transaction():
                rows = await conn.fetch(
                    CANCEL_LIVE_JOBS_OF_UPSTREAM_ID.sql,
                    *CANCEL_LIVE_JOBS_OF_UPSTREAM_ID.args(values),
                )
                superseded = tuple(sorted(r["id"] for r in rows))
                if superseded:
                    await conn.execute(DROP_EVENTS_OF_JOBS.sql, list(superseded))
                row = await conn.fetchrow(INSERT_JOB.sql, *INSERT_JOB.args(values))
            return job_from(row), superseded

        # Two racing submissions of one meta.job_id: the unique index on live jobs makes the
        # later one fail; run again, it supersedes the earlier one like any resubmission.
        for attempt in range(3):
            try:
                return await self._run(supersede_and_insert)
            except asyncpg.UniqueViolationError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def get(self, job_id: int) -> Job | None:
        rows = await self._fetch(GET_JOB, {"id": job_id})
        return self._as_answered(job_from(rows[0])) if rows else None

    async def claim_jobs(
        self,
        worker: WorkerProfile,
        limit: int,
        now: datetime,
        *,
        exclude_attempted: bool,
        lease: bool = True,
    ) -> list[Claimed]:
        params = fit_values(worker, now - timedelta(seconds=worker.older_than)) | {
            "limit": limit,
            "exclude_attempted": exclude_attempted,
            "groups": list(worker.groups),
            "now": now,
            "record": int(self._record),
            "lease_until": now + self._lease if lease else None,
        }
        stmt = claim_statement(groups=bool(worker.groups), memory_class=memory_class(worker.memory))
        rows = await self._fetch_done(stmt, params)
        claimed = []
        for row in rows:
            job = self._as_answered(job_from(row))
            event = None
            if row["event_leased_until"] is not None:
                event = fresh_event(row["event_id"], job, None, now)
            claimed.append(Claimed(job=job, event=event))
        # The statement returns rows in no particular order; hand them out in pull order.
        claimed.sort(key=lambda c: pull_order(c.job, worker.groups))
        return claimed

    async def live_job(self, upstream_id: int) -> Job | None:
        rows = await self._fetch(LIVE_JOB, {"upstream_id": upstream_id})
        return self._as_answered(job_from(rows[0])) if rows else None

    async def count_ahead(
        self,
        job: Job,
        worker: WorkerProfile,
        now: datetime,
        *,
        exclude_attempted: bool,
        cap: int = 1000,
    ) -> int:
        params = (
            fit_values(worker, now - timedelta(seconds=worker.older_than))
            | ahead_values(job, worker.groups)
            | {"exclude_attempted": exclude_attempted, "groups": list(worker.groups), "cap": cap}
        )
        rows = await self._fetch(COUNT_AHEAD, params)
        return int(rows[0]["n"])

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
        lease_until = now + self._lease if lease else None
        rows = await self._fetch_done(
            CHANGES[statement], values | {"now": now, "lease_until": lease_until}
        )
        if not rows:
            return None
        changed = self._as_answered(changed_job(job, rows[0]))
        event = None
        if rows[0]["event_leased_until"] is not None:
            event = fresh_event(rows[0]["event_id"], changed, values["details"], now)
        return Committed(
            job=changed, event=event, keepalive=claimed_keepalive(changed, rows[0], now)
        )

    async def find_expired(self, heartbeat_before: datetime, limit: int) -> list[ExpiredJob]:
        rows = await self._fetch(FIND_EXPIRED, {"before": heartbeat_before, "limit": limit})
        return [
            ExpiredJob(job=self._as_answered(job_from(r)), workers_tried=workers_tried(r))
            for r in rows
        ]

    async def cancel(self, job_id: int, now: datetime) -> bool:
        params = {"id": job_id, "now": now}

        async def cancel_and_drop_events(conn: asyncpg.Connection) -> bool:
            async with conn.transaction():
                cancelled = await conn.fetch(CANCEL_JOB.sql, *CANCEL_JOB.args(params))
                await conn.execute(DROP_EVENTS_OF_JOBS.sql, [job_id])
            return bool(cancelled)

        return await self._run(cancel_and_drop_events)

    async def active_jobs_of(self, worker: str) -> list[Job]:
        rows = await self._fetch(ACTIVE_JOBS_OF_WORKER, {"worker": worker})
        return [self._as_answered(job_from(r)) for r in rows]

    async def stats(self, now: datetime) -> QueueStats:
        counts = {r["status"]: r["n"] for r in await self._fetch(COUNT_JOBS_BY_STATUS, {})}
        oldest = await self._fetch(OLDEST_QUEUED_JOB, {})
        (backlog,) = await self._fetch(OUTBOX_BACKLOG, {})
        return queue_stats(counts, oldest[0] if oldest else None, backlog, now)

    async def schema_revision(self) -> str | None:
        """The database's schema revision; ``Unavailable`` when it does not answer."""
        rows = await self._fetch(SCHEMA_REVISION, {})
        return str(rows[0]["version_num"]) if rows else None

    def pool_usage(self) -> tuple[int, int]:
        """Connections of the pool (in use, idle); (0, 0) before the first statement."""
        if self._pool is None:
            return 0, 0
        idle = self._pool.get_idle_size()
        return self._pool.get_size() - idle, idle

    async def confirm_upstream(self, answered: Mapping[int, datetime]) -> None:
        # One per delivery: batched into the next flush instead of a statement each.
        if answered:
            _keep_latest(self._answered, answered)
            self._flush_soon()

    def _as_answered(self, job: Job) -> Job:
        """``job`` as read, with the upstream's answers this process has not written yet: it
        reads what it confirmed at once, as if the write had not been put off."""
        if not self._answered and not self._answering:
            return job
        latest = job.upstream_ok_at
        for answered in (self._answered, *self._answering):
            at = answered.get(job.id)
            if at is not None and (latest is None or latest < at):
                latest = at
        if latest == job.upstream_ok_at:
            return job
        return msgspec.structs.replace(job, upstream_ok_at=latest)

    # -- WorkerRegistry ------------------------------------------------------------------------

    async def record_seen(self, worker: WorkerProfile, now: datetime) -> None:
        await self._fetch(RECORD_SEEN, worker_values(worker) | {"now": now})

    async def workers(self, seen_since: datetime | None) -> list[WorkerRecord]:
        since = EARLIEST if seen_since is None else seen_since
        return workers_from(await self._fetch(WORKERS_SEEN_SINCE, {"seen_since": since}))

    async def worker(self, name: str) -> WorkerRecord | None:
        found = workers_from(await self._fetch(WORKER_NAMED, {"name": name}))
        return found[0] if found else None

    async def outcomes_of(self, worker: str, since: datetime, limit: int) -> list[AttemptOutcome]:
        values = {"worker": worker, "since": since, "limit": limit}
        return [outcome_from(r) for r in await self._fetch(OUTCOMES_OF, values)]

    async def outcome_counts(self, since: datetime, *, excluding: str) -> OutcomeCounts:
        (row,) = await self._fetch(OUTCOME_COUNTS, {"since": since, "excluding": excluding})
        return OutcomeCounts(finished=row["finished"], failed=row["failed"])

    async def set_aside(
        self, worker: str, until: datetime, reason: str, now: datetime, *, strikes: int
    ) -> bool:
        values = {"name": worker, "until": until, "reason": reason, "now": now, "strikes": strikes}
        return bool(await self._fetch(SET_ASIDE, values))

    async def release(self, worker: str, now: datetime) -> bool | None:
        if await self._fetch(END_COOL_OFF, {"name": worker, "now": now}):
            return True
        # Not set aside now; or never seen (a worker's row, once written, is never deleted).
        return False if await self._fetch(WORKER_KNOWN, {"name": worker}) else None

    async def note_cool_off_ends(self, now: datetime) -> list[WorkerRecord]:
        return workers_from(await self._fetch(NOTE_COOL_OFF_ENDS, {"now": now}))

    # -- DashboardReads ------------------------------------------------------------------------

    async def throughput(self, since: datetime, now: datetime) -> list[tuple[datetime, int, int]]:
        return throughput_from(await self._fetch(THROUGHPUT, {"since": since, "now": now}))

    async def waiting_classes(self, limit: int) -> list[WaitingClass]:
        return [waiting_class_from(r) for r in await self._fetch(WAITING_CLASSES, {"limit": limit})]

    async def recent_failures(self, limit: int) -> list[Failure]:
        return [failure_from(r) for r in await self._fetch(RECENT_FAILURES, {"limit": limit})]

    async def attempts_of(self, job_id: int) -> list[AttemptRecord]:
        return [attempt_record_from(r) for r in await self._fetch(ATTEMPTS_OF_JOB, {"id": job_id})]

    async def pending_events_of(self, job_id: int) -> list[StatusEvent]:
        # The events this process delivered and has not deleted yet are no longer pending.
        rows = await self._fetch(EVENTS_OF_JOB, {"id": job_id})
        return [event_from(r) for r in rows if r["id"] not in self._delivered]

    # -- UploadLedger --------------------------------------------------------------------------

    async def record_upload(self, job_id: int, attempt: int, file_id: str, now: datetime) -> None:
        values = {"job_id": job_id, "attempt": attempt, "file_id": file_id, "now": now}
        await self._fetch(RECORD_UPLOAD, values)

    async def uploads_since(self, job_id: int, since: datetime | None) -> list[str]:
        values = {"job_id": job_id, "since": EARLIEST if since is None else since}
        return [r["file_id"] for r in await self._fetch(UPLOADS_SINCE, values)]

    # -- Outbox --------------------------------------------------------------------------------

    async def lease_events(
        self, now: datetime, lease_seconds: float, limit: int
    ) -> list[StatusEvent]:
        until = now + timedelta(seconds=lease_seconds)
        rows = await self._fetch_done(LEASE_EVENTS, {"now": now, "limit": limit, "until": until})
        return sorted((event_from(r) for r in rows), key=lambda e: e.id)

    async def complete_events(self, event_ids: Sequence[int]) -> None:
        self._delivered.update(event_ids)
        self._flush_soon()

    def _flush_soon(self) -> None:
        if self._flush_task is None or self._flush_task.done():
            self._flush_task = asyncio.create_task(self._flush_later())

    async def _flush_later(self) -> None:
        # Until nothing is left: what arrives while a flush runs is not left for the next
        # delivery to pick up, which may be long in coming.
        while self._delivered or self._answered:
            await asyncio.sleep(self._flush_delay)
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Kept (flush puts back what it did not write): the next statement, flush or
                # close() writes it. Nobody awaits this task, so it says what happened itself.
                log.warning(
                    "could not write delivered status events yet (%s); will retry",
                    getattr(exc, "detail", None) or exc,
                )
                return

    async def flush(self) -> None:
        """Write now what this process put off: delete the events it delivered, and keep the
        upstream's answers it was told of (``flush_deferred``). The rest of the time this runs
        shortly after either, unless another statement took the events along first."""
        if not self._delivered and not self._answered:
            return
        answered, self._answered = self._answered, {}
        self._answering.append(answered)
        params = {"answered_ids": list(answered), "answered_at": list(answered.values())}
        try:
            await self._fetch_done(FLUSH_DEFERRED, params)
        except BaseException:
            _keep_latest(self._answered, answered)  # not written: the next flush takes them
            raise
        finally:
            self._answering.remove(answered)

    async def expedite(self, now: datetime) -> None:
        await self._fetch(EXPEDITE_EVENTS, {"now": now})

    async def postpone_events(self, event_ids: Sequence[int], until: datetime, error: str) -> None:
        if event_ids:
            params = {"ids": list(event_ids), "until": until, "error": error}
            await self._fetch(POSTPONE_EVENTS, params)
