"""Telling users why their job waits (ARCHITECTURE §3): a job queued longer than
``WAIT_NOTICE_AFTER`` that no node seen in ``WORKER_SEEN_WINDOW`` can run is forwarded once as
``queued`` with ``runtime_details`` saying why in figures (the user-facing API shows them to the
user), again only when the reason changes, and a last time when a node that can run it is seen.
With ``QUEUED_LIMIT`` such a job fails after that long, with the reason.

One round per sweep, in any number of processes: what a job's user was told is stored on the job
(``wait_notice``), and each notice is a compare-and-set on it, so a reason is told once whatever
runs at once. A round reads the waiting classes (``core.demand``: one indexed pass), then only the
jobs of the classes no node fits, and the few jobs told already.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import msgspec

from workerfacing_api.core.demand import MAX_CLASSES, can_run, class_demand
from workerfacing_api.core.fleet import duration
from workerfacing_api.core.model import Job, StatusEvent, WaitingClass, WorkerRecord
from workerfacing_api.core.ports import Clock, DashboardReads, JobQueue, WorkerRegistry
from workerfacing_api.core.sync import StatusSync

log = logging.getLogger("workerfacing_api.notices")

_BATCH = 500  # jobs read at once


class NoticeReport(msgspec.Struct, frozen=True, kw_only=True):
    told: tuple[int, ...] = ()  # users told that no worker can run their job (queue ids)
    cleared: tuple[int, ...] = ()  # users told that a worker that can run it appeared
    failed: tuple[int, ...] = ()  # jobs failed by QUEUED_LIMIT


def wait_notice(reason: str) -> str:
    """What the user reads when no worker can run the job."""
    return f"the job waits: {reason}"


def failed_notice(reason: str, limit: float) -> str:
    return f"the job failed after waiting {duration(limit)} for a worker that can run it: {reason}"


def runnable_notice(fitting: int, window: float) -> str:
    return (
        f"the job waits its turn: {fitting} worker node(s) seen in the last {duration(window)} "
        "can run it"
    )


class WaitNotices:
    """One round of notices, run by the sweeper."""

    def __init__(
        self,
        queue: JobQueue,
        reads: DashboardReads,
        registry: WorkerRegistry,
        sync: StatusSync,
        clock: Clock,
        *,
        seen_window: float,
        notice_after: float,
        queued_limit: float | None,
    ) -> None:
        self._queue = queue
        self._reads = reads
        self._registry = registry
        self._sync = sync
        self._clock = clock
        self._seen_window = seen_window
        self._notice_after = notice_after
        self._queued_limit = queued_limit

    @property
    def enabled(self) -> bool:
        return self._notice_after > 0 or self._queued_limit is not None

    async def run(self) -> NoticeReport:
        if not self.enabled:
            return NoticeReport()
        now = self._clock.now()
        seen = await self._registry.workers(now - timedelta(seconds=self._seen_window))
        told: list[int] = []
        failed: list[int] = []
        events: list[StatusEvent | None] = []
        for waiting in await self._reads.waiting_classes(MAX_CLASSES):
            reason = class_demand(waiting, seen, now, self._seen_window).reason
            if reason is None:  # a node seen can run this class
                continue
            if self._queued_limit is not None:
                limit = self._queued_limit
                detail = failed_notice(reason, limit)
                for job in await self._jobs_of(waiting, now - timedelta(seconds=limit), None):
                    done = await self._queue.fail_waiting(
                        job, detail, now, lease=self._sync.inline()
                    )
                    if done is not None:
                        failed.append(job.id)
                        events.append(done.event)
            if self._notice_after > 0:
                before = now - timedelta(seconds=self._notice_after)
                for job in await self._jobs_of(waiting, before, reason):
                    done = await self._queue.tell_why_waiting(
                        job, reason, wait_notice(reason), now, lease=self._sync.inline()
                    )
                    if done is not None:
                        told.append(job.id)
                        events.append(done.event)
        cleared = await self._clear(seen, now, events)
        if events:
            await self._sync.deliver_now(events)
        if told or cleared or failed:
            log.info(
                "wait notices: told %d user(s) no worker can run their job %s, %d that one can "
                "%s; failed %d job(s) after QUEUED_LIMIT %s",
                len(told),
                told,
                len(cleared),
                cleared,
                len(failed),
                failed,
            )
        return NoticeReport(told=tuple(told), cleared=tuple(cleared), failed=tuple(failed))

    async def _jobs_of(
        self, waiting: WaitingClass, queued_before: datetime, not_told: str | None
    ) -> list[Job]:
        found: list[Job] = []
        after = 0
        while True:
            batch = await self._queue.waiting_in_class(
                waiting, queued_before, not_told=not_told, after=after, limit=_BATCH
            )
            found.extend(batch)
            if len(batch) < _BATCH:
                return found
            after = batch[-1].id

    async def _clear(
        self, seen: list[WorkerRecord], now: datetime, events: list[StatusEvent | None]
    ) -> list[int]:
        """The last notice to the users told that no worker could run their job, once one that
        can is seen."""
        cleared: list[int] = []
        after = 0
        while True:
            batch = await self._queue.told_why_waiting(after, _BATCH)
            for job in batch:
                fitting = sum(1 for w in seen if can_run(job, w.profile, now))
                if not fitting:
                    continue
                detail = runnable_notice(fitting, self._seen_window)
                done = await self._queue.tell_why_waiting(
                    job, None, detail, now, lease=self._sync.inline()
                )
                if done is not None:
                    cleared.append(job.id)
                    events.append(done.event)
            if len(batch) < _BATCH:
                return cleared
            after = batch[-1].id
