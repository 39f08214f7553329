"""The changes of a job that both SQL queues make alike: a worker's update (which may claim the
job's keep-alive), the sweep's re-queue or failure of a silent job, and an operator's retry of a
failed job (the ``JobQueue`` methods ``record_update``, ``requeue``, ``fail`` and
``retry_failed``). Each is a compare-and-set statement of
``queries/common.sql`` on the snapshot the core decided on; an adapter only says how it runs one
together with the event it records.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime
from typing import Any

from workerfacing_api.core.model import Committed, Job, JobStatus, Outcome


class JobChanges(ABC):
    _record: bool  # status events are recorded (for the outbox)

    @abstractmethod
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
        """Run ``statement`` (a compare-and-set of common.sql on ``job``) with ``values``; note
        the attempt's outcome when ``values["ended"]`` gives one (clearing the worker's strikes
        when it finished); when ``forward``, record the new state's event with it, leased to
        the caller when ``lease`` and it heads its job's line, and return the keep-alive the
        change claimed, if any. None: the snapshot was stale, and nothing changed."""

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
    ) -> Committed | None:
        values = self._snapshot(job, forward) | {
            "status": status.value,
            "details": runtime_details,
            "keepalive_before": keepalive_before,
            "ended": None if ended is None else ended.value,
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
        return await self._end_silent_attempt(
            job, JobStatus.QUEUED, detail, now, heartbeat_before, lease
        )

    async def fail(
        self,
        job: Job,
        detail: str,
        now: datetime,
        *,
        heartbeat_before: datetime,
        lease: bool = True,
    ) -> Committed | None:
        return await self._end_silent_attempt(
            job, JobStatus.ERROR, detail, now, heartbeat_before, lease
        )

    async def _end_silent_attempt(
        self,
        job: Job,
        status: JobStatus,
        detail: str,
        now: datetime,
        heartbeat_before: datetime,
        lease: bool,
    ) -> Committed | None:
        # The sweep's changes are always forwarded upstream.
        values = self._snapshot(job, True) | {
            "requeue": int(status is JobStatus.QUEUED),
            "details": detail,
            "heartbeat_before": heartbeat_before,
            "ended": Outcome.TIMEOUT.value,  # the worker fell silent: a time-out, its failure
        }
        return await self._change("end_silent_attempt", job, values, now, forward=True, lease=lease)

    async def retry_failed(
        self, job: Job, detail: str, now: datetime, *, lease: bool = True
    ) -> Committed | None:
        # The upstream hears that the job is queued again, as of any status change.
        values = self._snapshot(job, True) | {"details": detail, "ended": None}
        return await self._change("retry_failed", job, values, now, forward=True, lease=lease)

    def _snapshot(self, job: Job, forward: bool) -> dict[str, Any]:
        """What the compare-and-set compares, and whether the change records an event."""
        return {
            "id": job.id,
            "expected_status": job.status.value,
            "expected_attempt": job.attempt,
            "expected_event_seq": job.event_seq,
            "record": int(forward and self._record),
        }
