"""The job lifecycle: which worker updates are accepted, and what the sweeper does to silent jobs.

Pure decisions over a ``Job`` snapshot. The caller applies a decision with a compare-and-set on the
snapshot's state and attempt, so a decision taken on a stale snapshot can never be applied.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import msgspec

from workerfacing_api.core.errors import InvalidStatus, JobNotFound, StatusConflict
from workerfacing_api.core.model import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    STATUS_RANK,
    WORKER_STATUSES,
    Job,
    JobStatus,
)


class UpdateDecision(msgspec.Struct, frozen=True, kw_only=True):
    status: JobStatus  # the state the job has after the update
    forward: bool  # the update must reach the user-facing API


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    max_retries: int = 3
    timeout_failure: float = 300.0  # seconds without keep-alive before a job is taken back
    retry_different: bool = True

    def cutoff(self, now: datetime) -> datetime:
        return now - timedelta(seconds=self.timeout_failure)


def parse_worker_status(value: str) -> JobStatus:
    """The status a worker asked for, or ``InvalidStatus`` naming the allowed values."""
    try:
        status = JobStatus(value)
    except ValueError:
        status = None
    if status not in WORKER_STATUSES:
        allowed = ", ".join(sorted(s.value for s in WORKER_STATUSES))
        raise InvalidStatus(f"status {value!r} cannot be set by a worker; use one of: {allowed}")
    return status


def ensure_assigned(job: Job | None, worker: str, job_id: int) -> Job:
    """The job if ``worker`` holds it now; otherwise the 404 the worker reads as "stop"."""
    if job is None or job.status is JobStatus.CANCELLED or job.worker != worker:
        raise JobNotFound(f"job {job_id} not found among the jobs assigned to you")
    if job.status is JobStatus.QUEUED:  # re-queued after a timeout: no longer this worker's
        raise JobNotFound(f"job {job_id} not found among the jobs assigned to you")
    return job


def decide_update(job: Job, target: JobStatus, runtime_details: str | None) -> UpdateDecision:
    """Outcome of a worker update on a job it holds (see ARCHITECTURE §3).

    Late or retried requests arrive out of order, so a backward move is a keep-alive and never
    moves the state back. After a final state only the same final state is news (its
    runtime_details carry the job's logs); other non-final pings are harmless no-ops, because the
    DECODE worker pings ``postprocessing`` while it uploads the logs of a failed job.
    """
    has_details = bool(runtime_details)
    if job.status in FINAL_STATUSES:
        if target is job.status:
            return UpdateDecision(status=job.status, forward=has_details)
        if target in FINAL_STATUSES:
            raise StatusConflict(
                f"job {job.id} already ended as {job.status.value!r}; it cannot become "
                f"{target.value!r}"
            )
        return UpdateDecision(status=job.status, forward=False)
    if job.status not in ACTIVE_STATUSES:  # pragma: no cover - ensure_assigned rules these out
        raise JobNotFound(f"job {job.id} is not active")
    if STATUS_RANK[target] > STATUS_RANK[job.status]:
        return UpdateDecision(status=target, forward=True)
    return UpdateDecision(status=job.status, forward=has_details)


class OutageGrace:
    """Time the sweeper could not reach the database does not count as a worker's silence.

    While the database is down, workers' keep-alives fail too (503; they retry), so their jobs'
    heartbeats grow old through no fault of theirs. Were the first sweep after a long outage to
    judge by the clock alone, it would take back healthy jobs before their workers' next ping.
    So, from the first failed sweep until ``TIMEOUT_FAILURE`` after the first one that worked
    again, a job is silent only when its heartbeat is older than the timeout *plus* the
    outage. (An outage the sweeper never saw was shorter than ``SWEEP_INTERVAL``.)"""

    def __init__(self) -> None:
        self._down_since: datetime | None = None
        self._back_at: datetime | None = None
        self._outage = timedelta(0)

    def failed(self, now: datetime) -> None:
        if self._down_since is None:
            self._down_since = now

    def succeeded(self, now: datetime) -> None:
        if self._down_since is not None:
            self._outage = now - self._down_since
            self._back_at = now
            self._down_since = None

    def cutoff(self, now: datetime, policy: RetryPolicy) -> datetime:
        """Heartbeats older than this are silent, at ``now``."""
        grace = timedelta(0)
        if self._down_since is not None:  # this very sweep may be the first to get through
            grace = now - self._down_since
        elif self._back_at is not None and now < self._back_at + timedelta(
            seconds=policy.timeout_failure
        ):
            grace = self._outage
        return policy.cutoff(now) - grace


class Requeue(msgspec.Struct, frozen=True, kw_only=True):
    detail: str


class Fail(msgspec.Struct, frozen=True, kw_only=True):
    detail: str


def decide_expiry(job: Job, workers_tried: tuple[str, ...], policy: RetryPolicy) -> Requeue | Fail:
    """What happens to an active job whose heartbeat is older than ``TIMEOUT_FAILURE``."""
    tried = ", ".join(workers_tried) if workers_tried else "none"
    timeout = f"no keep-alive for {policy.timeout_failure:g} s (timeout); workers tried: {tried}"
    if job.num_retries >= policy.max_retries:
        return Fail(detail=f"max retries reached ({policy.max_retries}); {timeout}")
    return Requeue(
        detail=f"re-queued, retry {job.num_retries + 1} of {policy.max_retries}: {timeout}"
    )
