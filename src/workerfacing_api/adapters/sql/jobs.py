"""The ``JobQueue`` port on a SQL database (PostgreSQL or SQLite, see ``database.Database``).

Each method is written once: it names the statements of ``queries/`` it runs and turns rows into
records. A claim and every change of a job commit with what follows from them (the attempt, its
outcome, the status event), in one statement or one transaction as the dialect can.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import msgspec

from workerfacing_api.adapters.sql.database import Conflict, Database, Session
from workerfacing_api.adapters.sql.rows import (
    ahead_values,
    changed_job,
    claimed_keepalive,
    fit_values,
    fresh_event,
    job_from,
    queue_stats,
    submission_values,
    workers_tried,
)
from workerfacing_api.core.matching import pull_order
from workerfacing_api.core.model import (
    ACTIVE_STATUSES,
    Claimed,
    Committed,
    ExpiredJob,
    Job,
    JobStatus,
    Outcome,
    QueueStats,
    Submission,
    WaitingClass,
    WorkerProfile,
)
from workerfacing_api.core.text import storable

# How many jobs at the head of the queue a claim looks at first on SQLite (its claim_jobs).
HEAD_WINDOW = 200
# Claims of one node that found their count of its jobs outdated by a concurrent one, in a row,
# before a pull answers nothing (the worker asks again at its next poll).
_CLAIM_ROUNDS = 8
_RACING_SUBMISSIONS = 3


def memory_class(memory: int) -> int:
    """The worker's memory rounded up to a power of two (a few dozen classes in all): written
    into the claim as a literal, so that PostgreSQL plans each class for what it is."""
    return 0 if memory <= 0 else 1 << (min(memory, 2**62) - 1).bit_length()


class SqlJobQueue:
    """Implements ``JobQueue``. ``record_events``: status changes leave outbox events (only
    when an upstream is configured); ``lease_seconds``: how long a recorded event stays leased
    to the request that made it, for delivery right away."""

    def __init__(
        self, database: Database, *, record_events: bool, lease_seconds: float = 30.0
    ) -> None:
        self._db = database
        self._record = record_events
        self._lease = timedelta(seconds=lease_seconds)

    async def add(self, submission: Submission, now: datetime) -> tuple[Job, tuple[int, ...]]:
        values = submission_values(submission) | {"now": now}

        async def supersede_and_insert(tx: Session) -> tuple[Job, tuple[int, ...]]:
            rows = await tx.fetch_all("cancel_live_jobs_of_upstream_id", **values)
            superseded = tuple(sorted(r["id"] for r in rows))
            if superseded:
                await tx.execute("drop_events_of_jobs", ids=list(superseded))
            row = await tx.fetch_one("insert_job", **values)
            assert row is not None
            return job_from(row), superseded

        # Two racing submissions of one meta.job_id (PostgreSQL: SQLite's write lock puts them
        # one after the other): the unique index on live jobs makes the later one fail; run
        # again, it supersedes the earlier one like any resubmission.
        for attempt in range(_RACING_SUBMISSIONS):
            try:
                return await self._db.transaction(supersede_and_insert)
            except Conflict:
                if attempt == _RACING_SUBMISSIONS - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def get(self, job_id: int) -> Job | None:
        row = await self._db.fetch_one("get_job", id=job_id)
        return None if row is None else job_from(row)

    async def claim_jobs(
        self,
        worker: WorkerProfile,
        limit: int,
        now: datetime,
        *,
        exclude_attempted: bool,
        max_held: int,
        lease: bool = True,
    ) -> list[Claimed]:
        params = fit_values(worker, now - timedelta(seconds=worker.older_than)) | {
            "limit": min(limit, max_held),
            "max_held": max_held,
            "window": HEAD_WINDOW,
            "exclude_attempted": exclude_attempted,
            "groups": list(worker.groups),
            "now": now,
            "record": int(self._record),
            "details": None,
            "acknowledged": [],
            "lease_until": now + self._lease if lease else None,
        }
        name = "claim_jobs_preferring_groups" if worker.groups else "claim_jobs"
        literals = {"memory_class": memory_class(worker.memory)}
        claimed = []
        rows = await self._db.fetch_all(name, literals=literals, **params)
        for _ in range(_CLAIM_ROUNDS):
            # PostgreSQL: a concurrent claim of the node outdated the count of its jobs; run
            # again on a fresh snapshot (postgres.sql's claim_picked).
            if not rows or not rows[0]["retry"]:
                break
            rows = await self._db.fetch_all(name, literals=literals, **params)
        for row in rows:
            if row["id"] is None:  # PostgreSQL's answer when it took nothing
                continue
            job = job_from(row)
            event = None
            if row["event_leased_until"] is not None:
                event = fresh_event(row["event_id"], job, None, now)
            claimed.append(Claimed(job=job, event=event))
        # The statements return rows in no particular order; hand them out in pull order.
        claimed.sort(key=lambda c: pull_order(c.job, worker.groups))
        return claimed

    async def live_job(self, upstream_id: int) -> Job | None:
        row = await self._db.fetch_one("live_job", upstream_id=upstream_id)
        return None if row is None else job_from(row)

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
        row = await self._db.fetch_one("count_ahead", **params)
        assert row is not None
        return int(row["n"])

    async def retry_failed(
        self, job: Job, detail: str, now: datetime, *, lease: bool = True
    ) -> Committed | None:
        # The upstream hears that the job is queued again, as of any status change.
        values = {"details": detail, "ended": None}
        return await self._change("retry_failed", job, values, now, forward=True, lease=lease)

    async def waiting_in_class(
        self,
        waiting: WaitingClass,
        queued_before: datetime,
        *,
        not_told: str | None,
        after: int,
        limit: int,
    ) -> list[Job]:
        literals = {
            "gpu_model_any": int(waiting.gpu_model is None),
            "gpu_archi_any": int(waiting.gpu_archi is None),
            "any_notice": int(not_told is None),
        }
        rows = await self._db.fetch_all(
            "waiting_in_class",
            literals=literals,
            environment=waiting.environment.value if waiting.environment else "any",
            cpu_cores=waiting.cpu_cores,
            memory=waiting.memory,
            gpu_mem=waiting.gpu_mem,
            gpu_model=waiting.gpu_model,
            gpu_archi=waiting.gpu_archi,
            queued_before=queued_before,
            notice=not_told or "",
            after=after,
            limit=limit,
        )
        return [job_from(r) for r in rows]

    async def told_why_waiting(self, after: int, limit: int) -> list[Job]:
        rows = await self._db.fetch_all("told_why_waiting", after=after, limit=limit)
        return [job_from(r) for r in rows]

    async def tell_why_waiting(
        self, job: Job, notice: str | None, detail: str, now: datetime, *, lease: bool = True
    ) -> Committed | None:
        values = {"notice": notice, "details": detail, "ended": None}
        done = await self._change("tell_why_waiting", job, values, now, forward=True, lease=lease)
        if done is None:
            return None
        # The notice as the database keeps it (``Database`` stores every text parameter so).
        kept = None if notice is None else storable(notice)
        return msgspec.structs.replace(
            done, job=msgspec.structs.replace(done.job, wait_notice=kept)
        )

    async def fail_on_operators_word(
        self, job: Job, reason: str, now: datetime, *, lease: bool = True
    ) -> Committed | None:
        # A running attempt ends as stopped: the operator's word, no evidence about the node.
        ended = Outcome.STOPPED.value if job.status in ACTIVE_STATUSES else None
        values = {"details": reason, "ended": ended}
        return await self._change(
            "fail_on_operators_word", job, values, now, forward=True, lease=lease
        )

    async def fail_waiting(
        self, job: Job, detail: str, now: datetime, *, lease: bool = True
    ) -> Committed | None:
        values = {"details": detail, "ended": None}
        return await self._change("fail_waiting", job, values, now, forward=True, lease=lease)

    async def record_update(
        self,
        job: Job,
        status: JobStatus,
        runtime_details: str | None,
        now: datetime,
        *,
        forward: bool,
        lease: bool = True,
        keepalive_before: datetime | None = None,
        ended: Outcome | None = None,
        acknowledged: Sequence[int] = (),
    ) -> Committed | None:
        values = {
            "status": status.value,
            "details": runtime_details,
            "keepalive_before": keepalive_before,
            "ended": None if ended is None else ended.value,
            "acknowledged": list(acknowledged),
        }
        return await self._change("record_update", job, values, now, forward=forward, lease=lease)

    async def requeue(
        self,
        job: Job,
        detail: str,
        now: datetime,
        *,
        heartbeat_before: datetime,
        lease: bool = True,
    ) -> Committed | None:
        return await self._end_silent_attempt(job, True, detail, now, heartbeat_before, lease)

    async def fail(
        self,
        job: Job,
        detail: str,
        now: datetime,
        *,
        heartbeat_before: datetime,
        lease: bool = True,
    ) -> Committed | None:
        return await self._end_silent_attempt(job, False, detail, now, heartbeat_before, lease)

    async def _end_silent_attempt(
        self,
        job: Job,
        requeue: bool,
        detail: str,
        now: datetime,
        heartbeat_before: datetime,
        lease: bool,
    ) -> Committed | None:
        values = {
            "requeue": int(requeue),
            "details": detail,
            "heartbeat_before": heartbeat_before,
            "ended": Outcome.TIMEOUT.value,  # the worker fell silent: a time-out, its failure
        }
        # The sweep's changes are always forwarded upstream.
        return await self._change("end_silent_attempt", job, values, now, forward=True, lease=lease)

    async def _change(
        self,
        name: str,
        job: Job,
        values: dict[str, Any],
        now: datetime,
        *,
        forward: bool,
        lease: bool,
    ) -> Committed | None:
        """A compare-and-set on the snapshot ``job`` with what follows from it: the attempt's
        outcome when ``values["ended"]`` gives one (a finished attempt clearing its worker's
        strikes) and, when ``forward`` and events are recorded, the new state's event, leased
        to the caller when ``lease`` and it heads its job's line. None: the snapshot was stale,
        and nothing changed."""
        row = await self._db.change(
            name,
            **{"acknowledged": []} | values,
            id=job.id,
            expected_status=job.status.value,
            expected_attempt=job.attempt,
            expected_event_seq=job.event_seq,
            job_node=job.node,
            record=int(forward and self._record),
            now=now,
            lease_until=now + self._lease if lease else None,
        )
        if row is None:
            return None
        changed = changed_job(job, row)
        event = None
        if row["event_leased_until"] is not None:
            event = fresh_event(row["event_id"], changed, values["details"], now)
        return Committed(job=changed, event=event, keepalive=claimed_keepalive(changed, row, now))

    async def find_expired(self, heartbeat_before: datetime, limit: int) -> list[ExpiredJob]:
        rows = await self._db.fetch_all("find_expired", before=heartbeat_before, limit=limit)
        return [ExpiredJob(job=job_from(r), workers_tried=workers_tried(r)) for r in rows]

    async def cancel(self, job_id: int, now: datetime) -> bool:
        async def cancel_and_drop_events(tx: Session) -> bool:
            cancelled = await tx.fetch_one("cancel_job", id=job_id, now=now)
            await tx.execute("drop_events_of_jobs", ids=[job_id])
            return cancelled is not None

        return await self._db.transaction(cancel_and_drop_events)

    async def active_jobs_of(self, worker: str) -> list[Job]:
        rows = await self._db.fetch_all("active_jobs_of_worker", worker=worker)
        return [job_from(r) for r in rows]

    async def stats(self, now: datetime) -> QueueStats:
        counts = {r["status"]: r["n"] for r in await self._db.fetch_all("count_jobs_by_status")}
        oldest = await self._db.fetch_one("oldest_queued_job")
        backlog = await self._db.fetch_one("outbox_backlog")
        assert backlog is not None
        return queue_stats(counts, oldest, backlog, now)

    async def confirm_upstream(self, answered: Mapping[int, datetime]) -> None:
        for job_id, at in answered.items():
            await self._db.execute("confirm_upstream", id=job_id, at=at)
