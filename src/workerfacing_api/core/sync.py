"""Forwarding status changes to the user-facing API: at least once, in order per job.

Each change is committed together with an outbox event (see ``ports.Outbox``). The request that
made the change first delivers its own events inline, so a healthy upstream sees it at once;
whatever could not be delivered then (upstream down, slow, or an earlier event of the same job
still pending) is delivered by ``dispatch_due``, which every API process runs in the background.
A 404 from upstream means the user deleted the job: the job is cancelled here.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import msgspec

from workerfacing_api.core.model import Delivery, StatusEvent
from workerfacing_api.core.ports import Clock, JobQueue, Outbox, UpstreamNotifier

log = logging.getLogger("workerfacing_api.sync")


class Backoff(msgspec.Struct, frozen=True, kw_only=True):
    """Capped exponential back-off with jitter, in seconds."""

    base: float = 1.0
    cap: float = 60.0

    def delay(self, attempts: int, jitter: float) -> float:
        """Delay after ``attempts`` failed tries; ``jitter`` in [0, 1) spreads retries out so
        that a recovering upstream is not hit by every process at the same instant."""
        ceiling = min(self.cap, self.base * 2.0 ** min(attempts, 30))
        return ceiling * (0.5 + 0.5 * jitter)


class StatusSync:
    def __init__(
        self,
        queue: JobQueue,
        outbox: Outbox | None,
        upstream: UpstreamNotifier | None,
        clock: Clock,
        *,
        backoff: Backoff | None = None,
        lease_seconds: float = 30.0,
        inline_timeout: float = 2.0,
        dispatch_timeout: float = 10.0,
        inline_pause_seconds: float = 5.0,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._queue = queue
        self._outbox = outbox if upstream is not None else None
        self._upstream = upstream
        self._clock = clock
        self._backoff = backoff or Backoff()
        # Both timeouts stay well inside the lease: a slow delivery must not outlive its lease,
        # or another deliverer could send the job's next event before this one.
        self._lease_seconds = lease_seconds
        self._inline_timeout = inline_timeout
        self._dispatch_timeout = dispatch_timeout
        self._jitter = jitter
        # After a failed delivery, requests stop trying inline for a while and leave their events
        # to the dispatcher: a down or hanging upstream must not slow down the workers' calls.
        self._inline_paused_until: datetime | None = None
        self._inline_pause = timedelta(seconds=inline_pause_seconds)

    @property
    def enabled(self) -> bool:
        return self._outbox is not None

    def inline(self) -> bool:
        """Whether requests should deliver their events themselves right now. Not while the
        upstream is failing: then the dispatcher retries, and workers are not kept waiting."""
        if self._inline_paused_until is None:
            return True
        return self._clock.now() >= self._inline_paused_until

    async def deliver_now(self, events: Sequence[StatusEvent | None]) -> set[int]:
        """Deliver events just committed and leased to this caller (None: nothing to send).

        Returns the ids of events whose job the upstream reported deleted (now cancelled).
        """
        leased = [e for e in events if e is not None]
        if not leased or self._outbox is None:
            return set()
        return (await self._deliver(leased, self._inline_timeout)).gone

    async def dispatch_due(self, limit: int = 100) -> int:
        """Deliver due events of any job, oldest first; returns how many got through (0: the
        caller should wait before trying again).

        While the upstream is failing, one event at a time probes it. When a probe gets
        through, every waiting event is made due at once and whole batches go again."""
        if self._outbox is None:
            return 0
        failing = not self.inline()
        batch = 1 if failing else limit
        events = await self._outbox.lease_events(self._clock.now(), self._lease_seconds, batch)
        if not events:
            return 0
        outcome = await self._deliver(events, self._dispatch_timeout)
        if failing and outcome.progress:
            log.info("user-facing API reachable again; sending the waiting status events")
            await self._outbox.expedite(self._clock.now())
        return outcome.progress

    async def _deliver(self, events: list[StatusEvent], within: float) -> _Outcome:
        """Send leased events (at most one per job, so they may go out concurrently)."""
        assert self._outbox is not None
        assert self._upstream is not None
        upstream = self._upstream
        if len(events) == 1:  # the common case: no task to create
            outcomes = [await upstream.notify(events[0], within)]
        else:
            outcomes = await asyncio.gather(*(upstream.notify(e, within) for e in events))
        gone: set[int] = set()
        delivered: list[int] = []
        failed: list[StatusEvent] = []
        for event, outcome in zip(events, outcomes, strict=True):
            if outcome is Delivery.DELIVERED:
                delivered.append(event.id)
            elif outcome is Delivery.GONE:
                gone.add(event.id)
                log.info(
                    "upstream reports job %s (meta.job_id %s) deleted; cancelling it",
                    event.job_id,
                    event.upstream_id,
                )
                # Cancelling drops the job's pending events, this one included.
                await self._queue.cancel(event.job_id, self._clock.now())
            else:
                failed.append(event)
        if delivered:
            await self._outbox.complete_events(delivered)
        now = self._clock.now()
        if failed:
            if self._inline_paused_until is None or now >= self._inline_paused_until:
                log.warning(
                    "user-facing API unreachable or refusing; %d status event(s) wait for "
                    "retry with back-off",
                    len(failed),
                )
            self._inline_paused_until = now + self._inline_pause
            wait = self._backoff.delay(max(e.attempts for e in failed), self._jitter())
            await self._outbox.postpone_events(
                [e.id for e in failed], now + timedelta(seconds=wait), "upstream unavailable"
            )
        elif delivered:
            self._inline_paused_until = None
        return _Outcome(gone=gone, progress=len(delivered) + len(gone))


class _Outcome(msgspec.Struct, frozen=True):
    gone: set[int]  # events whose job the upstream reported deleted
    progress: int  # events resolved (delivered or gone)
