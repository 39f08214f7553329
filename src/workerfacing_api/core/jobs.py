"""Use cases of the job queue: submit, pull, read status, update status, sweep silent jobs, and
an operator's retry of failed jobs.

``JobService`` holds the rules of ARCHITECTURE §3 and applies them through the ``JobQueue`` port
with compare-and-set, re-reading and re-deciding when a concurrent change won the race.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from datetime import datetime

from workerfacing_api.core.errors import (
    DomainError,
    InvalidRequest,
    InvalidStatus,
    JobNotFound,
    StatusConflict,
    Unavailable,
)
from workerfacing_api.core.fleet import Fleet
from workerfacing_api.core.lifecycle import (
    Fail,
    OutageGrace,
    RetryPolicy,
    decide_expiry,
    decide_update,
    ensure_assigned,
    parse_worker_status,
)
from workerfacing_api.core.model import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    MAX_DB_INT,
    Job,
    JobStatus,
    Outcome,
    StatusEvent,
    Submission,
    SweepReport,
    WorkerProfile,
)
from workerfacing_api.core.ports import Clock, JobQueue, Metrics, NoMetrics
from workerfacing_api.core.sync import StatusSync
from workerfacing_api.core.text import storable, trim_details

log = logging.getLogger("workerfacing_api.jobs")

MAX_PULL_LIMIT = 100
DEFAULT_MAX_JOBS_PER_NODE = 8
# A compare-and-set loses only when the job changed meanwhile; each retry sees a newer state, so
# a handful of rounds is plenty even under heavy contention from one worker's retried requests.
_CAS_ROUNDS = 8
_SWEEP_BATCH = 500
# What became of a job an operator retried or failed, when it was done: the words start so
# (``action_done``); anything else says why it was not.
RETRIED = "queued again"
FAILED = "failed"
# The longest reason an operator may give for failing a job (the user reads it).
MAX_OPERATOR_REASON = 1000
_RECENT_JOBS = 10_000  # snapshots kept for optimistic updates (about 3 kB each)


def action_done(result: str) -> bool:
    """Whether ``result`` (what ``retry`` or ``fail_on_operators_word`` said of a job) says it
    was done: the CLI's exit code and the dashboard's count read it alike."""
    return result == RETRIED or result.startswith(f"{FAILED} (")


class JobService:
    def __init__(
        self,
        queue: JobQueue,
        clock: Clock,
        policy: RetryPolicy,
        sync: StatusSync,
        fleet: Fleet,
        *,
        max_jobs_per_node: int = DEFAULT_MAX_JOBS_PER_NODE,
        metrics: Metrics | None = None,
    ) -> None:
        self._queue = queue
        self._clock = clock
        self._policy = policy
        self._sync = sync
        self._fleet = fleet
        self._max_held = max_jobs_per_node
        self._outages = OutageGrace()
        self._metrics = metrics or NoMetrics()
        self._recent: OrderedDict[int, Job] = OrderedDict()

    @property
    def policy(self) -> RetryPolicy:
        return self._policy

    async def submit(self, submission: Submission) -> Job:
        # A job this one supersedes loses its undelivered events: the answers to those already
        # delivered are kept first, for the clean-up after its delete.
        await self._sync.write_acknowledgements()
        job, superseded = await self._queue.add(submission, self._clock.now())
        for old in superseded:
            self._recent.pop(old, None)
            log.info(
                "job %s supersedes job %s (same meta.job_id %s): the older one is cancelled",
                job.id,
                old,
                job.upstream_id,
            )
            # The user deleted the older job (the only way its id comes again): what its worker
            # stored since then must not stay in the user's folders.
            await self._sync.after_cancel(old)
        return job

    async def pull(self, worker: WorkerProfile, limit: int) -> list[Job]:
        """Hand out up to ``limit`` fitting jobs to ``worker``, as many as its node may hold
        beside the jobs it holds already (``MAX_JOBS_PER_NODE``).

        A job whose ``pulled`` event the user-facing API rejects as deleted is cancelled and not
        handed out; the pull then takes the next fitting job.
        """
        if not 1 <= limit <= MAX_PULL_LIMIT:
            raise InvalidRequest(f"limit must be between 1 and {MAX_PULL_LIMIT}, got {limit}")
        await self._fleet.seen(worker, self._clock.now())
        handed: list[Job] = []
        while len(handed) < limit:
            claimed = await self._queue.claim_jobs(
                worker,
                limit - len(handed),
                self._clock.now(),
                exclude_attempted=self._policy.retry_different,
                max_held=self._max_held,
                lease=self._sync.inline(),
            )
            if not claimed:
                break
            gone = await self._sync.deliver_now([c.event for c in claimed])
            for c in claimed:
                if c.job.id not in gone:
                    handed.append(c.job)
                    self._remember(c.job)
            if not gone:
                break
        self._metrics.pulled(len(handed))
        return handed

    async def status_of(self, job_id: int) -> JobStatus:
        job = await self._get(job_id)
        if job is None or job.status is JobStatus.CANCELLED:
            raise JobNotFound(f"job {job_id} not found")
        return job.status

    async def update_status(
        self, job_id: int, worker: str, status: str, runtime_details: str | None
    ) -> Job:
        """Apply a worker's status report (or keep-alive) to a job it holds. Details beyond
        ``MAX_RUNTIME_DETAILS`` keep their end: the report lands whatever its size."""
        if runtime_details is not None:
            # As it is stored, so that the upstream hears what the outbox keeps.
            runtime_details = storable(trim_details(runtime_details))
        try:
            job = await self._update_status(job_id, worker, status, runtime_details)
        except JobNotFound:
            self._metrics.status_update("not_found")
            raise
        except StatusConflict:
            self._metrics.status_update("conflict")
            raise
        except InvalidStatus:
            self._metrics.status_update("invalid")
            raise
        self._metrics.status_update("accepted")
        return job

    async def _update_status(
        self, job_id: int, worker: str, status: str, runtime_details: str | None
    ) -> Job:
        target = parse_worker_status(status)
        # First try the snapshot this process last committed for the job (a worker's calls
        # usually follow each other here): the compare-and-set proves it still current, which
        # saves reading the job first. Any doubt (a failed check, a lost race) re-reads it.
        snapshot = self._recent.get(job_id)
        for _ in range(_CAS_ROUNDS):
            fresh = snapshot is None
            if snapshot is None:
                snapshot = await self._get(job_id)
            try:
                job = ensure_assigned(snapshot, worker, job_id)
                decision = decide_update(job, target, runtime_details)
            except DomainError:
                self._recent.pop(job_id, None)
                if fresh:
                    raise
                snapshot = None
                continue
            now = self._clock.now()
            # A plain keep-alive of an active job may go upstream too (best effort): it is how a
            # user's delete reaches the worker while its job runs.
            keepalive = (
                self._sync.keepalive_before(now)
                if not decision.forward and job.status in ACTIVE_STATUSES
                else None
            )
            # An active job becoming final ends the attempt: how it ended is the fleet's
            # evidence of the worker's health, noted with the change.
            ended = None
            if job.status in ACTIVE_STATUSES and decision.status in FINAL_STATUSES:
                finished = decision.status is JobStatus.FINISHED
                ended = Outcome.FINISHED if finished else Outcome.ERROR
            # Its events this process delivered: acknowledged by this change, so that its own
            # event may go inline (the job's line is clear once they are gone).
            acknowledged = self._sync.take_acknowledgements(job_id)
            try:
                committed = await self._queue.record_update(
                    job,
                    decision.status,
                    runtime_details if decision.forward else None,
                    now,
                    forward=decision.forward,
                    lease=self._sync.inline(),
                    keepalive_before=keepalive,
                    ended=ended,
                    acknowledged=acknowledged,
                )
            except BaseException:
                self._sync.give_back_acknowledgements(acknowledged, job_id)
                raise
            if committed is None:
                self._sync.give_back_acknowledgements(acknowledged, job_id)
                # The job moved on meanwhile: decide again on its new state.
                self._recent.pop(job_id, None)
                snapshot = None
                continue
            self._remember(committed.job)
            # Tell the user-facing API at once. Should it answer in time that the job was
            # deleted, the job is cancelled and this very call answers 404 (the worker stops);
            # a later answer makes the next call 404.
            gone = await self._sync.deliver_now([committed.event or committed.keepalive])
            if job_id in gone:
                self._recent.pop(job_id, None)
                raise JobNotFound(f"job {job_id} was deleted by its user; stop working on it")
            if ended is Outcome.ERROR and job.node is not None:
                await self._fleet.judge(job.node, now)
            return committed.job
        raise StatusConflict(f"job {job_id} is changing too fast to apply {status!r}; retry")

    async def sweep(self) -> SweepReport:
        """Take back active jobs whose keep-alive stopped: re-queue them, or fail them once
        ``MAX_RETRIES`` is reached. Safe to run in several processes at once: each change is a
        compare-and-set that also requires the heartbeat to still be old. Time the database
        was out of reach does not count as silence (``OutageGrace``)."""
        now = self._clock.now()
        try:
            report = await self._sweep(now, self._outages.cutoff(now, self._policy))
        except Unavailable:
            self._outages.failed(now)
            raise
        self._outages.succeeded(now)
        return report

    async def _sweep(self, now: datetime, cutoff: datetime) -> SweepReport:
        requeued: list[int] = []
        failed: list[int] = []
        events: list[StatusEvent | None] = []
        seen: set[int] = set()
        while True:
            batch = await self._queue.find_expired(cutoff, _SWEEP_BATCH)
            fresh = [e for e in batch if e.job.id not in seen]
            for expired in fresh:
                seen.add(expired.job.id)
                decision = decide_expiry(expired.job, expired.workers_tried, self._policy)
                ending = isinstance(decision, Fail)
                apply = self._queue.fail if ending else self._queue.requeue
                done = await apply(
                    expired.job,
                    decision.detail,
                    now,
                    heartbeat_before=cutoff,
                    lease=self._sync.inline(),
                )
                if done is not None:  # None: a keep-alive or another sweeper came first
                    (failed if ending else requeued).append(expired.job.id)
                    events.append(done.event)
                    self._recent.pop(expired.job.id, None)
                    if expired.job.node is not None:  # its time-out counts against its node
                        await self._fleet.judge(expired.job.node, now)
            if len(batch) < _SWEEP_BATCH or not fresh:
                break
        if events:
            await self._sync.deliver_now(events)
        await self._fleet.note_cool_off_ends(now)  # logs each worker's return to work
        self._metrics.swept(len(requeued), len(failed))
        if requeued or failed:
            log.info(
                "sweep: re-queued %d job(s) %s, failed %d job(s) %s",
                len(requeued),
                requeued,
                len(failed),
                failed,
            )
        return SweepReport(requeued=tuple(requeued), failed=tuple(failed))

    async def retry(self, job_ids: list[int]) -> dict[int, str]:
        """An operator puts failed jobs back in the queue: each starts over (a new attempt, its
        retries and the workers it tried forgotten) and the upstream hears ``queued``. Returns
        what became of each id, in words."""
        results: dict[int, str] = {}
        events: list[StatusEvent | None] = []
        for job_id in job_ids:
            job = await self._get(job_id)
            if job is None:
                results[job_id] = "does not exist"
                continue
            if job.status is not JobStatus.ERROR:
                results[job_id] = f"not retried: it is {job.status.value}, not error"
                continue
            committed = await self._queue.retry_failed(
                job, "retried by an operator", self._clock.now(), lease=self._sync.inline()
            )
            if committed is None:
                results[job_id] = "not retried: it changed meanwhile; try again"
                continue
            self._recent.pop(job_id, None)
            events.append(committed.event)
            results[job_id] = RETRIED
            log.info("job %s retried by an operator: queued again", job_id)
        if events:
            await self._sync.deliver_now(events)
        return results

    async def fail_on_operators_word(self, job_ids: list[int], reason: str) -> dict[int, str]:
        """An operator fails queued or active jobs with ``reason``: each ends in ``error``, the
        upstream hears it with the reason, and the worker that held it gets 404 at its next
        call, so that it stops. Returns what became of each id, in words."""
        reason = reason.strip()
        if not reason:
            raise InvalidRequest("say why the job is failed: the reason is shown to its user")
        if len(reason) > MAX_OPERATOR_REASON:
            raise InvalidRequest(
                f"the reason is {len(reason)} characters long; at most {MAX_OPERATOR_REASON}"
            )
        results: dict[int, str] = {}
        events: list[StatusEvent | None] = []
        for job_id in job_ids:
            job = await self._get(job_id)
            if job is None:
                results[job_id] = "does not exist"
                continue
            if job.status is not JobStatus.QUEUED and job.status not in ACTIVE_STATUSES:
                results[job_id] = f"not failed: it is {job.status.value}"
                continue
            committed = await self._queue.fail_on_operators_word(
                job, reason, self._clock.now(), lease=self._sync.inline()
            )
            if committed is None:
                results[job_id] = "not failed: it changed meanwhile; try again"
                continue
            self._recent.pop(job_id, None)
            events.append(committed.event)
            was = job.status.value + (f" on worker {job.worker}" if job.worker else "")
            results[job_id] = f"{FAILED} (it was {was})"
            log.warning("job %s failed by an operator (it was %s): %s", job_id, was, reason)
        if events:
            await self._sync.deliver_now(events)
        return results

    def _remember(self, job: Job) -> None:
        self._recent[job.id] = job
        self._recent.move_to_end(job.id)
        if len(self._recent) > _RECENT_JOBS:
            self._recent.popitem(last=False)

    async def _get(self, job_id: int) -> Job | None:
        # Ids outside the database's integer range cannot exist; asking would be an error there.
        if not 0 < job_id <= MAX_DB_INT:
            return None
        return await self._queue.get(job_id)
