"""What the operators' dashboard shows (ARCHITECTURE §7): the queue at a glance, and one job in
full.

``Overview`` reads the ports only: the queue's counts, its history (``DashboardReads``), the
workers seen (``WorkerRegistry``) and the upstream's health (``StatusSync``), and puts them
together with ``now`` from the clock. The queued jobs by hardware class, and those no worker
seen can run, are ``core.demand``'s report, the very answer of ``GET /_demand``: decided by the
pull's own rule and said in the sentence ``explain`` uses, so the page never disagrees with a
pull, with ``explain`` or with an autoscaler.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import msgspec

from workerfacing_api.core.demand import Demand, DemandReport
from workerfacing_api.core.model import (
    MAX_DB_INT,
    AttemptRecord,
    Failure,
    FailureKind,
    Job,
    JobStatus,
    QueueStats,
    StatusEvent,
    WorkerRecord,
)
from workerfacing_api.core.ports import Clock, DashboardReads, JobQueue, WorkerRegistry
from workerfacing_api.core.sync import StatusSync
from workerfacing_api.core.waiting import Explanation, WaitExplainer

THROUGHPUT_MINUTES = 60
FAILURES_SHOWN = 20


class ThroughputMinute(msgspec.Struct, frozen=True, kw_only=True):
    minute: datetime  # its start, UTC
    pulled: int
    finished: int


class UpstreamHealth(msgspec.Struct, frozen=True, kw_only=True):
    configured: bool  # status changes are forwarded to a user-facing API
    healthy: bool  # its last delivery got through (or none failed yet)
    outbox_backlog: int
    oldest_event_age: float | None  # seconds


class QueueOverview(msgspec.Struct, frozen=True, kw_only=True):
    now: datetime
    stats: QueueStats
    throughput: list[ThroughputMinute]  # THROUGHPUT_MINUTES entries, oldest first
    demand: DemandReport  # the queued jobs by hardware class, as GET /_demand has them
    workers: list[WorkerRecord]  # seen within the window
    recent_failures: list[Failure]
    upstream: UpstreamHealth


class JobPage(msgspec.Struct, frozen=True, kw_only=True):
    job: Job
    attempts: list[AttemptRecord]
    pending_events: list[StatusEvent]
    why: Explanation | None  # for a queued job: why it waits


def _minute_of(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


class Overview:
    """``GET /ui/api/overview`` and ``GET /ui/api/jobs/{id}``."""

    def __init__(
        self,
        queue: JobQueue,
        reads: DashboardReads,
        registry: WorkerRegistry,
        sync: StatusSync,
        explainer: WaitExplainer,
        demand: Demand,
        clock: Clock,
        *,
        seen_window: float,
    ) -> None:
        self._demand = demand
        self._queue = queue
        self._reads = reads
        self._registry = registry
        self._sync = sync
        self._explainer = explainer
        self._clock = clock
        self._seen_window = seen_window

    async def overview(self) -> QueueOverview:
        now = self._clock.now()
        stats = await self._queue.stats(now)
        seen = await self._registry.workers(now - timedelta(seconds=self._seen_window))
        failures = await self._reads.recent_failures(FAILURES_SHOWN)
        return QueueOverview(
            now=now,
            stats=stats,
            throughput=await self._throughput(now),
            demand=await self._demand.report(),
            workers=seen,
            recent_failures=[_described(f) for f in failures],
            upstream=UpstreamHealth(
                configured=self._sync.enabled,
                healthy=self._sync.healthy,
                outbox_backlog=stats.outbox_backlog,
                oldest_event_age=stats.oldest_event_age,
            ),
        )

    async def job_page(self, job_id: int) -> JobPage | None:
        """The job with queue id ``job_id`` in full; None when there is none."""
        job = await self._queue.get(job_id) if 0 < job_id <= MAX_DB_INT else None
        if job is None:
            return None
        why = await self._explainer.explain(job) if job.status is JobStatus.QUEUED else None
        return JobPage(
            job=job,
            attempts=await self._reads.attempts_of(job.id),
            pending_events=await self._reads.pending_events_of(job.id),
            why=why,
        )

    async def _throughput(self, now: datetime) -> list[ThroughputMinute]:
        """One entry per minute of the last hour, the current minute last, zeros included."""
        last = _minute_of(now)
        first = last - timedelta(minutes=THROUGHPUT_MINUTES - 1)
        counted = {m: (p, f) for m, p, f in await self._reads.throughput(first, now)}
        entries = []
        for i in range(THROUGHPUT_MINUTES):
            minute = first + timedelta(minutes=i)
            pulled, finished = counted.get(minute, (0, 0))
            entries.append(ThroughputMinute(minute=minute, pulled=pulled, finished=finished))
        return entries


def _described(failure: Failure) -> Failure:
    """A re-queue whose job was pulled again since has no details of its own left: say what
    happened instead."""
    if failure.kind is FailureKind.REQUEUED and failure.runtime_details is None:
        detail = (
            f"attempt {failure.attempt} timed out: worker {failure.worker} fell silent, and the "
            "job went back to the queue"
        )
        return msgspec.structs.replace(failure, runtime_details=detail)
    return failure


__all__ = ["JobPage", "Overview", "QueueOverview", "ThroughputMinute"]
