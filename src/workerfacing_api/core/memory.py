"""In-memory queue, outbox, upload ledger and worker registry: the reference model of the
``JobQueue``, ``Outbox``, ``UploadLedger``, ``WorkerRegistry`` and ``DashboardReads`` ports.

Written for obviousness, not speed. The SQL adapter is property-tested against it, and it serves
tests and embedders that need a queue without a database. Not shared between processes. It keeps
text as a database does (``core.text.storable``: what none can hold is U+FFFD), so that every
backend answers alike.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from workerfacing_api.core.matching import fits, pull_order
from workerfacing_api.core.model import (
    ACTIVE_STATUSES,
    DEFAULT_PRIORITY,
    AttemptOutcome,
    AttemptRecord,
    AuditEntry,
    Claimed,
    Committed,
    Environment,
    ExpiredJob,
    Failure,
    FailureKind,
    FleetBaseline,
    Job,
    JobQuery,
    JobStatus,
    KeepAlive,
    Outcome,
    QueueStats,
    StatusEvent,
    Submission,
    WaitingClass,
    WorkerProfile,
    WorkerRecord,
)
from workerfacing_api.core.text import storable


def _text(value: str | None) -> str | None:
    return None if value is None else storable(value)


def _stored_profile(worker: WorkerProfile) -> WorkerProfile:
    """What a worker offers, its names as they are stored and compared."""
    return msgspec.structs.replace(
        worker,
        worker=storable(worker.worker),
        gpu_model=_text(worker.gpu_model),
        gpu_archi=_text(worker.gpu_archi),
        groups=tuple(storable(g) for g in worker.groups),
    )


def _as_matched(job: Job) -> Job:
    """``job`` with its requirements' names as a database holds them (the job's document, and
    so its ``hardware``, stays as submitted)."""
    need = job.hardware
    model, archi = _text(need.gpu_model), _text(need.gpu_archi)
    if (model, archi) == (need.gpu_model, need.gpu_archi):
        return job
    return msgspec.structs.replace(
        job, hardware=msgspec.structs.replace(need, gpu_model=model, gpu_archi=archi)
    )


def _class_of(job: Job) -> tuple[str, int, int, int, str | None, str | None]:
    """The hardware class of ``job``, as ``waiting_classes`` groups them: "anything" is 0
    (numbers) whether the job said null or 0, as the SQL tables say."""
    need = _as_matched(job).hardware
    return (
        job.environment.value if job.environment is not None else "any",
        need.cpu_cores or 0,
        need.memory or 0,
        need.gpu_mem or 0,
        need.gpu_model,
        need.gpu_archi,
    )


def _minute_of(at: datetime) -> datetime:
    """The start of the minute ``at`` falls in, UTC."""
    return at.astimezone(UTC).replace(second=0, microsecond=0)


class _Event(msgspec.Struct, kw_only=True):
    event: StatusEvent
    due_at: datetime
    leased_until: datetime | None = None


class _Attempt(msgspec.Struct, kw_only=True):
    worker: str
    node: str
    pulled_at: datetime
    outcome: Outcome | None = None
    ended_at: datetime | None = None


class InMemoryQueue:
    """Implements ``JobQueue``, ``Outbox``, ``UploadLedger``, ``WorkerRegistry``,
    ``DashboardReads`` and ``AuditLog``.
    ``record_events`` says whether status changes leave outbox events (only when an upstream
    is configured)."""

    def __init__(self, *, record_events: bool = False, lease_seconds: float = 30.0) -> None:
        self._jobs: dict[int, Job] = {}
        self._attempts: dict[int, list[str]] = {}
        self._events: dict[int, _Event] = {}
        self._next_job_id = 1
        self._next_event_id = 1
        self._record_events = record_events
        self._lease = timedelta(seconds=lease_seconds)
        self._lock = asyncio.Lock()
        self._uploads: list[tuple[int, str, datetime]] = []  # (job id, file id, stored at)
        self._history: dict[tuple[int, int], _Attempt] = {}  # (job id, attempt) -> attempt
        self._workers: dict[str, WorkerRecord] = {}  # without active_jobs (computed on read)
        self._end_noted: set[str] = set()  # workers whose latest cool-off's end was reported
        self._audit: list[AuditEntry] = []

    # -- JobQueue ------------------------------------------------------------------------------

    async def add(self, submission: Submission, now: datetime) -> tuple[Job, tuple[int, ...]]:
        async with self._lock:
            sub = submission.job
            upstream_id = sub.job.meta.job_id
            superseded = tuple(
                j.id
                for j in self._jobs.values()
                if j.upstream_id == upstream_id and j.status is not JobStatus.CANCELLED
            )
            for job_id in superseded:
                self._cancel(job_id, now)
            job = Job(
                id=self._next_job_id,
                upstream_id=upstream_id,
                status=JobStatus.QUEUED,
                environment=sub.environment,
                group=_text(sub.group),
                priority=DEFAULT_PRIORITY if sub.priority is None else sub.priority,
                hardware=sub.job.hardware,
                created_at=now,
                spec=submission.spec,
                paths_upload=sub.paths_upload,
                updated_at=now,
            )
            self._next_job_id += 1
            self._jobs[job.id] = job
            self._attempts[job.id] = []
            return job, superseded

    async def get(self, job_id: int) -> Job | None:
        return self._jobs.get(job_id)

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
        node = worker.node
        worker = _stored_profile(worker)
        async with self._lock:
            known = self._workers.get(node)
            if known is not None and known.aside(now):
                return []
            held = sum(
                1 for j in self._jobs.values() if j.node == node and j.status in ACTIVE_STATUSES
            )
            limit = min(limit, max_held - held)
            candidates = [
                j
                for j in self._jobs.values()
                if fits(_as_matched(j), worker, now)
                and not (exclude_attempted and worker.worker in self._attempts[j.id])
            ]
            candidates.sort(key=lambda j: pull_order(j, worker.groups))
            claimed: list[Claimed] = []
            for job in candidates[:limit]:
                taken = msgspec.structs.replace(
                    job,
                    status=JobStatus.PULLED,
                    worker=worker.worker,
                    node=node,
                    attempt=job.attempt + 1,
                    last_heartbeat_at=now,
                    updated_at=now,
                    event_seq=job.event_seq + int(self._record_events),
                    forwarded_at=now if self._record_events else job.forwarded_at,
                )
                self._jobs[job.id] = taken
                self._attempts[job.id].append(worker.worker)
                self._history[(job.id, taken.attempt)] = _Attempt(
                    worker=worker.worker, node=node, pulled_at=now
                )
                claimed.append(Claimed(job=taken, event=self._event(taken, None, now, lease)))
            return claimed

    async def live_job(self, upstream_id: int) -> Job | None:
        return next(
            (
                j
                for j in self._jobs.values()
                if j.upstream_id == upstream_id and j.status is not JobStatus.CANCELLED
            ),
            None,
        )

    async def count_ahead(
        self,
        job: Job,
        worker: WorkerProfile,
        now: datetime,
        *,
        exclude_attempted: bool,
        cap: int = 1000,
    ) -> int:
        worker = _stored_profile(worker)
        mine = pull_order(job, worker.groups)
        ahead = sum(
            1
            for j in self._jobs.values()
            if j.id != job.id
            and fits(_as_matched(j), worker, now)
            and not (exclude_attempted and worker.worker in self._attempts[j.id])
            and pull_order(j, worker.groups) < mine
        )
        return min(ahead, cap)

    async def retry_failed(
        self, job: Job, detail: str, now: datetime, *, lease: bool = True
    ) -> Committed | None:
        done = await self._commit(
            job,
            (JobStatus.ERROR,),
            storable(detail),
            now,
            lease,
            status=JobStatus.QUEUED,
            worker=None,
            node=None,
            num_retries=0,
            runtime_details=storable(detail),
            updated_at=now,
            wait_notice=None,
        )
        if done is not None:  # no await since the change: still atomic with it
            self._attempts[job.id] = []  # it starts over: every worker may take it again
        return done

    async def waiting_in_class(
        self,
        waiting: WaitingClass,
        queued_before: datetime,
        *,
        not_told: str | None,
        after: int,
        limit: int,
    ) -> list[Job]:
        key = (
            waiting.environment.value if waiting.environment is not None else "any",
            waiting.cpu_cores,
            waiting.memory,
            waiting.gpu_mem,
            waiting.gpu_model,
            waiting.gpu_archi,
        )
        found = [
            j
            for j in self._jobs.values()
            if j.status is JobStatus.QUEUED
            and j.id > after
            and _class_of(j) == key
            and (j.updated_at or j.created_at) < queued_before
            and (not_told is None or j.wait_notice != storable(not_told))
        ]
        return sorted(found, key=lambda j: j.id)[:limit]

    async def told_why_waiting(self, after: int, limit: int) -> list[Job]:
        found = [
            j
            for j in self._jobs.values()
            if j.status is JobStatus.QUEUED and j.wait_notice is not None and j.id > after
        ]
        return sorted(found, key=lambda j: j.id)[:limit]

    async def tell_why_waiting(
        self, job: Job, notice: str | None, detail: str, now: datetime, *, lease: bool = True
    ) -> Committed | None:
        notice = _text(notice)
        return await self._commit(
            job,
            (JobStatus.QUEUED,),
            storable(detail),
            now,
            lease,
            unless=lambda current: current.wait_notice == notice,
            wait_notice=notice,
        )

    async def fail_waiting(
        self, job: Job, detail: str, now: datetime, *, lease: bool = True
    ) -> Committed | None:
        detail = storable(detail)
        return await self._commit(
            job,
            (JobStatus.QUEUED,),
            detail,
            now,
            lease,
            status=JobStatus.ERROR,
            runtime_details=detail,
            updated_at=now,
        )

    async def fail_on_operators_word(
        self, job: Job, reason: str, now: datetime, *, lease: bool = True
    ) -> Committed | None:
        reason = storable(reason)
        return await self._commit(
            job,
            (JobStatus.QUEUED, *ACTIVE_STATUSES),
            reason,
            now,
            lease,
            ended=Outcome.STOPPED if job.status in ACTIVE_STATUSES else None,
            status=JobStatus.ERROR,
            worker=None,
            node=None,
            runtime_details=reason,
            updated_at=now,
        )

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
        runtime_details = _text(runtime_details)
        async with self._lock:
            record = forward and self._record_events
            if not self._unchanged(job, same_events=record):
                return None
            self._complete([i for i in acknowledged if self._event_of(i) == job.id])
            if ended is not None:
                self._note_outcome(job.id, job.attempt, ended, now)
                if ended is Outcome.FINISHED and job.node is not None:
                    self._clear_strikes(job.node)
            current = self._jobs[job.id]
            # A keep-alive goes upstream when nothing went for the job lately and none of its
            # events waits (it must not overtake one).
            ping = (
                not record
                and keepalive_before is not None
                and (current.forwarded_at is None or current.forwarded_at <= keepalive_before)
                and all(e.event.job_id != job.id for e in self._events.values())
            )
            updated = msgspec.structs.replace(
                current,
                status=status,
                last_heartbeat_at=now,
                updated_at=now,
                runtime_details=current.runtime_details
                if runtime_details is None
                else runtime_details,
                event_seq=current.event_seq + int(record),
                forwarded_at=now if record or ping else current.forwarded_at,
            )
            self._jobs[job.id] = updated
            event = self._event(updated, runtime_details, now, lease) if forward else None
            keepalive = None
            if ping:
                keepalive = KeepAlive(
                    job_id=job.id, upstream_id=job.upstream_id, status=status, created_at=now
                )
            return Committed(job=updated, event=event, keepalive=keepalive)

    async def requeue(
        self,
        job: Job,
        detail: str,
        now: datetime,
        *,
        heartbeat_before: datetime,
        lease: bool = True,
    ) -> Committed | None:
        return await self._expire(job, JobStatus.QUEUED, detail, now, heartbeat_before, lease)

    async def fail(
        self,
        job: Job,
        detail: str,
        now: datetime,
        *,
        heartbeat_before: datetime,
        lease: bool = True,
    ) -> Committed | None:
        return await self._expire(job, JobStatus.ERROR, detail, now, heartbeat_before, lease)

    async def find_expired(self, heartbeat_before: datetime, limit: int) -> list[ExpiredJob]:
        expired = [
            j
            for j in self._jobs.values()
            if j.status in ACTIVE_STATUSES
            and j.last_heartbeat_at is not None
            and j.last_heartbeat_at < heartbeat_before
        ]
        expired.sort(key=lambda j: (j.last_heartbeat_at, j.id))
        return [
            ExpiredJob(job=j, workers_tried=tuple(self._attempts[j.id])) for j in expired[:limit]
        ]

    async def cancel(self, job_id: int, now: datetime) -> bool:
        async with self._lock:
            return self._cancel(job_id, now)

    async def active_jobs_of(self, worker: str) -> list[Job]:
        worker = storable(worker)
        return [
            j for j in self._jobs.values() if j.worker == worker and j.status in ACTIVE_STATUSES
        ]

    async def stats(self, now: datetime) -> QueueStats:
        by_status = {s.value: 0 for s in JobStatus}
        for j in self._jobs.values():
            by_status[j.status.value] += 1
        queued = [j for j in self._jobs.values() if j.status is JobStatus.QUEUED]
        oldest = min(queued, key=lambda j: (j.created_at, j.id), default=None)
        first_event = min((e.event.created_at for e in self._events.values()), default=None)
        return QueueStats(
            by_status=by_status,
            oldest_queued_id=None if oldest is None else oldest.id,
            oldest_queued_age=None if oldest is None else (now - oldest.created_at).total_seconds(),
            outbox_backlog=len(self._events),
            oldest_event_age=None if first_event is None else (now - first_event).total_seconds(),
        )

    async def confirm_upstream(self, answered: Mapping[int, datetime]) -> None:
        async with self._lock:
            self._keep_answers(answered)

    def _keep_answers(self, answered: Mapping[int, datetime]) -> None:
        """The latest answer per job stays, whatever order the answers come in."""
        for job_id, at in answered.items():
            current = self._jobs.get(job_id)
            if current is not None and (
                current.upstream_ok_at is None or current.upstream_ok_at < at
            ):
                self._jobs[job_id] = msgspec.structs.replace(current, upstream_ok_at=at)

    # -- WorkerRegistry ------------------------------------------------------------------------

    async def record_seen(self, worker: WorkerProfile, now: datetime) -> None:
        node = worker.node
        worker = _stored_profile(worker)
        async with self._lock:
            known = self._workers.get(node)
            if known is None:
                self._workers[node] = WorkerRecord(
                    node=node, profile=worker, first_seen_at=now, last_seen_at=now
                )
            else:
                self._workers[node] = msgspec.structs.replace(
                    known, profile=worker, last_seen_at=max(known.last_seen_at, now)
                )

    async def workers(self, seen_since: datetime | None) -> list[WorkerRecord]:
        return [
            self._with_jobs(w)
            for w in sorted(self._workers.values(), key=lambda w: (w.account, w.node))
            if seen_since is None or w.last_seen_at >= seen_since
        ]

    async def worker(self, node: str) -> WorkerRecord | None:
        known = self._workers.get(node)
        return None if known is None else self._with_jobs(known)

    def _note_outcome(self, job_id: int, attempt: int, outcome: Outcome, now: datetime) -> None:
        row = self._history.get((job_id, attempt))
        if row is not None and row.outcome is None:  # once per attempt
            row.outcome = outcome
            row.ended_at = now

    async def outcomes_of(self, node: str, since: datetime, limit: int) -> list[AttemptOutcome]:
        # An operator's stop says nothing of the node.
        ended = [
            o
            for o in self._outcomes()
            if o.node == node and o.ended_at > since and o.outcome is not Outcome.STOPPED
        ]
        return ended[:limit]

    async def baseline(self, since: datetime, now: datetime, *, excluding: str) -> FleetBaseline:
        votes: dict[str, int] = {}  # node -> finished minus failed
        for o in self._outcomes():
            if o.node == excluding or o.ended_at <= since or o.outcome is Outcome.STOPPED:
                continue
            known = self._workers.get(o.node)
            if known is not None and known.aside(now):
                continue
            votes[o.node] = votes.get(o.node, 0) + (1 if o.outcome is Outcome.FINISHED else -1)
        healthy = sum(1 for v in votes.values() if v > 0)
        return FleetBaseline(healthy=healthy, failing=len(votes) - healthy)

    async def set_aside(
        self, worker: str, until: datetime, reason: str, now: datetime, *, strikes: int
    ) -> bool:
        reason = storable(reason)
        async with self._lock:
            known = self._workers.get(worker)
            if known is None or known.strikes != strikes or known.aside(now):
                return False
            self._workers[worker] = msgspec.structs.replace(
                known, strikes=strikes + 1, aside_at=now, aside_until=until, aside_reason=reason
            )
            self._end_noted.discard(worker)
            return True

    def _clear_strikes(self, worker: str) -> None:
        known = self._workers.get(worker)
        if known is not None and known.strikes:
            self._workers[worker] = msgspec.structs.replace(known, strikes=0)

    async def release(self, worker: str, now: datetime) -> bool | None:
        async with self._lock:
            known = self._workers.get(worker)
            if known is None:
                return None
            if not known.aside(now):
                return False
            self._workers[worker] = msgspec.structs.replace(known, aside_until=now)
            self._end_noted.add(worker)  # the operator's release is the report of its end
            return True

    async def note_cool_off_ends(self, now: datetime) -> list[WorkerRecord]:
        async with self._lock:
            ended = [
                w
                for name, w in sorted(self._workers.items(), key=lambda i: (i[1].account, i[0]))
                if w.aside_until is not None
                and w.aside_until <= now
                and name not in self._end_noted
            ]
            self._end_noted.update(w.name for w in ended)
            return [self._with_jobs(w) for w in ended]

    def _with_jobs(self, record: WorkerRecord) -> WorkerRecord:
        held = tuple(
            sorted(
                j.id
                for j in self._jobs.values()
                if j.node == record.node and j.status in ACTIVE_STATUSES
            )
        )
        return msgspec.structs.replace(record, active_jobs=held)

    def _outcomes(self) -> list[AttemptOutcome]:
        """Ended attempts, the latest first (ties: the higher job id, then attempt, first)."""
        ended = [
            AttemptOutcome(
                job_id=job_id,
                attempt=attempt,
                worker=row.worker,
                outcome=row.outcome,
                pulled_at=row.pulled_at,
                ended_at=row.ended_at,
                node=row.node,
            )
            for (job_id, attempt), row in self._history.items()
            if row.outcome is not None and row.ended_at is not None
        ]
        ended.sort(key=lambda o: (o.ended_at, o.job_id, o.attempt), reverse=True)
        return ended

    # -- DashboardReads ------------------------------------------------------------------------

    async def throughput(self, since: datetime, now: datetime) -> list[tuple[datetime, int, int]]:
        pulled: dict[datetime, int] = {}
        finished: dict[datetime, int] = {}
        for row in self._history.values():
            if since <= row.pulled_at <= now:
                minute = _minute_of(row.pulled_at)
                pulled[minute] = pulled.get(minute, 0) + 1
            if (
                row.outcome is Outcome.FINISHED
                and row.ended_at is not None
                and since <= row.ended_at <= now
            ):
                minute = _minute_of(row.ended_at)
                finished[minute] = finished.get(minute, 0) + 1
        return [
            (minute, pulled.get(minute, 0), finished.get(minute, 0))
            for minute in sorted(pulled.keys() | finished.keys())
        ]

    async def waiting_classes(self, limit: int) -> list[WaitingClass]:
        groups: dict[tuple[str, int, int, int, str | None, str | None], list[Job]] = {}
        for j in self._jobs.values():
            if j.status is JobStatus.QUEUED:
                groups.setdefault(_class_of(j), []).append(j)
        classes = [
            WaitingClass(
                environment=None if env == "any" else Environment(env),
                cpu_cores=cpu,
                memory=memory,
                gpu_mem=gpu_mem,
                gpu_model=model,
                gpu_archi=archi,
                jobs=len(jobs),
                oldest_created_at=min(j.created_at for j in jobs),
            )
            for (env, cpu, memory, gpu_mem, model, archi), jobs in groups.items()
        ]
        classes.sort(
            key=lambda c: (
                -c.jobs,
                c.oldest_created_at,
                c.environment.value if c.environment is not None else "any",
                c.cpu_cores,
                c.memory,
                c.gpu_mem,
                c.gpu_model or "",
                c.gpu_archi or "",
            )
        )
        return classes[:limit]

    async def list_jobs(self, query: JobQuery, limit: int) -> list[Job]:
        q = query
        # Names as stored (``storable``), as a database compares the text it was given.
        worker = _text(q.worker)
        hardware = None
        if q.hardware is not None:
            h = q.hardware
            hardware = (
                h.environment,
                h.cpu_cores,
                h.memory,
                h.gpu_mem,
                _text(h.gpu_model),
                _text(h.gpu_archi),
            )
        found = [
            j
            for j in self._jobs.values()
            if (not q.states or j.status in q.states)
            and (q.environment is None or _class_of(j)[0] == q.environment)
            and (worker is None or j.worker == worker)
            and (q.node is None or j.node == q.node)
            and (hardware is None or _class_of(j) == hardware)
            and (q.created_before is None or j.created_at < q.created_before)
            and (q.created_after is None or j.created_at >= q.created_after)
            and (q.upstream_id is None or j.upstream_id == q.upstream_id)
            and (q.queue_id is None or j.id == q.queue_id)
            and (q.before_id is None or j.id < q.before_id)
        ]
        return sorted(found, key=lambda j: -j.id)[:limit]

    async def recent_failures(self, limit: int) -> list[Failure]:
        failures = [
            Failure(
                job_id=j.id,
                upstream_id=j.upstream_id,
                kind=FailureKind.FAILED,
                attempt=j.attempt,
                worker=j.worker,
                at=j.updated_at or j.created_at,
                runtime_details=j.runtime_details,
            )
            for j in self._jobs.values()
            if j.status is JobStatus.ERROR
        ]
        for (job_id, attempt), row in self._history.items():
            job = self._jobs[job_id]
            if row.outcome is not Outcome.TIMEOUT or row.ended_at is None:
                continue
            if job.status is JobStatus.ERROR and job.attempt == attempt:
                continue  # the time-out that failed the job: listed as its failure
            failures.append(
                Failure(
                    job_id=job_id,
                    upstream_id=job.upstream_id,
                    kind=FailureKind.REQUEUED,
                    attempt=attempt,
                    worker=row.worker,
                    at=row.ended_at,
                    runtime_details=job.runtime_details if job.attempt == attempt else None,
                )
            )
        failures.sort(key=lambda f: (f.at, f.job_id, f.attempt), reverse=True)
        return failures[:limit]

    async def attempts_of(self, job_id: int) -> list[AttemptRecord]:
        return [
            AttemptRecord(
                attempt=attempt,
                worker=row.worker,
                pulled_at=row.pulled_at,
                ended_at=row.ended_at,
                outcome=row.outcome,
                node=row.node,
            )
            for (owner, attempt), row in sorted(self._history.items())
            if owner == job_id
        ]

    async def pending_events_of(self, job_id: int) -> list[StatusEvent]:
        return [e for e in self.pending_events() if e.job_id == job_id]

    # -- UploadLedger --------------------------------------------------------------------------

    async def record_upload(self, job_id: int, attempt: int, file_id: str, now: datetime) -> None:
        self._uploads.append((job_id, storable(file_id), now))

    async def uploads_since(self, job_id: int, since: datetime | None) -> list[str]:
        found: list[str] = []
        for index, (owner, file_id, at) in enumerate(self._uploads):
            if owner != job_id or (since is not None and at <= since) or file_id in found:
                continue
            # Stored again later by another job: that job's file now, not ours to remove.
            if any(
                other != job_id and path == file_id and when > at
                for other, path, when in self._uploads[index + 1 :]
            ):
                continue
            found.append(file_id)
        return found

    # -- Outbox --------------------------------------------------------------------------------

    async def lease_events(
        self, now: datetime, lease_seconds: float, limit: int
    ) -> list[StatusEvent]:
        async with self._lock:
            heads: dict[int, _Event] = {}
            for ev in sorted(self._events.values(), key=lambda e: e.event.id):
                heads.setdefault(ev.event.job_id, ev)
            leased: list[StatusEvent] = []
            for ev in sorted(heads.values(), key=lambda e: e.event.id):
                if len(leased) >= limit:
                    break
                if ev.due_at > now or (ev.leased_until is not None and ev.leased_until > now):
                    continue
                ev.leased_until = now + timedelta(seconds=lease_seconds)
                leased.append(ev.event)
            return leased

    async def complete_events(self, event_ids: Sequence[int]) -> None:
        async with self._lock:
            self._complete(event_ids)

    def _complete(self, event_ids: Sequence[int]) -> None:
        """Forget delivered events, keeping their jobs' latest answers."""
        answered: dict[int, datetime] = {}
        for event_id in event_ids:
            done = self._events.pop(event_id, None)
            if done is not None:
                job_id, at = done.event.job_id, done.event.created_at
                answered[job_id] = max(at, answered.get(job_id, at))
        self._keep_answers(answered)

    def _event_of(self, event_id: int) -> int | None:
        """The job of a pending event."""
        pending = self._events.get(event_id)
        return None if pending is None else pending.event.job_id

    async def expedite(self, now: datetime) -> None:
        async with self._lock:
            for ev in self._events.values():
                ev.due_at = min(ev.due_at, now)

    async def postpone_events(self, event_ids: Sequence[int], until: datetime, error: str) -> None:
        async with self._lock:
            for event_id in event_ids:
                ev = self._events.get(event_id)
                if ev is not None:
                    ev.event = msgspec.structs.replace(ev.event, attempts=ev.event.attempts + 1)
                    ev.due_at = until
                    ev.leased_until = None

    # -- AuditLog ------------------------------------------------------------------------------

    async def record_action(self, entry: AuditEntry) -> AuditEntry:
        async with self._lock:
            kept = msgspec.structs.replace(
                entry,
                id=len(self._audit) + 1,
                actor=storable(entry.actor),
                target=storable(entry.target),
                detail=storable(entry.detail),
            )
            self._audit.append(kept)
            return kept

    async def actions(self, before_id: int | None, limit: int) -> list[AuditEntry]:
        kept = [e for e in reversed(self._audit) if before_id is None or e.id < before_id]
        return kept[:limit]

    def pending_events(self) -> list[StatusEvent]:
        """Undelivered events, oldest first (for tests and operators)."""
        return [e.event for e in sorted(self._events.values(), key=lambda e: e.event.id)]

    # -- internals -----------------------------------------------------------------------------

    def _unchanged(self, job: Job, *, same_events: bool = False) -> bool:
        current = self._jobs.get(job.id)
        return (
            current is not None
            and current.status is not JobStatus.CANCELLED  # a cancelled job never changes again
            and current.status is job.status
            and current.attempt == job.attempt
            and current.worker == job.worker
            and (not same_events or current.event_seq == job.event_seq)
        )

    async def _commit(
        self,
        job: Job,
        allowed: Collection[JobStatus],
        detail: str,
        now: datetime,
        lease: bool,
        *,
        unless: Callable[[Job], bool] | None = None,
        ended: Outcome | None = None,
        **changes: Any,
    ) -> Committed | None:
        """A compare-and-set on ``job`` (its state one of ``allowed``, and not ``unless``) that
        makes ``changes`` and records the new state's event with ``detail``; the attempt ends
        as ``ended`` when given. None, and nothing changed, when the snapshot is stale."""
        async with self._lock:
            current = self._jobs.get(job.id)
            if (
                current is None
                or current.status not in allowed
                or not self._unchanged(job, same_events=self._record_events)
                or (unless is not None and unless(current))
            ):
                return None
            if ended is not None:
                self._note_outcome(job.id, job.attempt, ended, now)
            updated = msgspec.structs.replace(
                current,
                **changes,
                event_seq=current.event_seq + int(self._record_events),
                forwarded_at=now if self._record_events else current.forwarded_at,
            )
            self._jobs[job.id] = updated
            return Committed(job=updated, event=self._event(updated, detail, now, lease))

    async def _expire(
        self,
        job: Job,
        status: JobStatus,
        detail: str,
        now: datetime,
        heartbeat_before: datetime,
        lease: bool,
    ) -> Committed | None:
        detail = storable(detail)
        async with self._lock:
            current = self._jobs.get(job.id)
            if (
                current is None
                or not self._unchanged(job, same_events=self._record_events)
                or current.status not in ACTIVE_STATUSES
                or current.last_heartbeat_at is None
                or current.last_heartbeat_at >= heartbeat_before
            ):
                return None
            requeue = status is JobStatus.QUEUED
            self._note_outcome(job.id, job.attempt, Outcome.TIMEOUT, now)
            updated = msgspec.structs.replace(
                current,
                status=status,
                worker=None if requeue else current.worker,
                node=None if requeue else current.node,
                num_retries=current.num_retries + 1 if requeue else current.num_retries,
                runtime_details=detail,
                updated_at=now,
                event_seq=current.event_seq + int(self._record_events),
                forwarded_at=now if self._record_events else current.forwarded_at,
                wait_notice=None,
            )
            self._jobs[job.id] = updated
            return Committed(job=updated, event=self._event(updated, detail, now, lease))

    def _cancel(self, job_id: int, now: datetime) -> bool:
        current = self._jobs.get(job_id)
        if current is None or current.status is JobStatus.CANCELLED:
            return False
        self._jobs[job_id] = msgspec.structs.replace(
            current, status=JobStatus.CANCELLED, updated_at=now
        )
        for event_id in [e.event.id for e in self._events.values() if e.event.job_id == job_id]:
            del self._events[event_id]
        return True

    def _event(
        self, job: Job, runtime_details: str | None, now: datetime, lease: bool
    ) -> StatusEvent | None:
        """Record an event; lease it to the caller if it is the only one of its job left."""
        if not self._record_events:
            return None
        event = StatusEvent(
            id=self._next_event_id,
            job_id=job.id,
            upstream_id=job.upstream_id,
            status=job.status,
            runtime_details=runtime_details,
            created_at=now,
        )
        self._next_event_id += 1
        first = lease and all(e.event.job_id != job.id for e in self._events.values())
        self._events[event.id] = _Event(
            event=event, due_at=now, leased_until=now + self._lease if first else None
        )
        return event if first else None
