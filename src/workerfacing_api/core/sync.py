"""Forwarding status changes to the user-facing API: at least once, in order per job, and never
at the pace of a slow upstream.

Each change is committed together with an outbox event (see ``ports.Outbox``). The request that
made the change starts delivering its event at once and waits for the answer only briefly
(``inline_wait``): a healthy upstream sees the change immediately, a slow one never slows the
worker down, and a delivery still in flight when the request stops waiting goes on in the
background under its lease, so it is never sent a second time for that reason. Whatever could
not be delivered then (upstream down, or an earlier event of the same job still pending) is
delivered by ``dispatch_due``, which every API process runs in the background.

Keep-alives of active jobs are forwarded too, best effort: at most one per job every
``keepalive_interval`` seconds, only when none of the job's events is pending (so one never
overtakes a change), never stored. Their only purpose is the answer: the user-facing API never
says that a user deleted a job, but answers 404 to anything about it. A 404 cancels the job here,
removes the files stored for it since the last answer that was not a 404 (the delete came after
that), and the worker learns it from a 404 to its next call — to the very call, when the answer
came within the wait.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta

import msgspec

from workerfacing_api.core.errors import Unavailable
from workerfacing_api.core.model import Delivery, Job, KeepAlive, Message, StatusEvent
from workerfacing_api.core.ports import (
    Clock,
    JobQueue,
    Metrics,
    NoMetrics,
    Outbox,
    UpstreamNotifier,
)

log = logging.getLogger("workerfacing_api.sync")

CancelHook = Callable[[Job], Awaitable[object]]


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
        inline_wait: float = 0.2,
        delivery_timeout: float = 10.0,
        inline_pause_seconds: float = 5.0,
        keepalive_interval: float | None = 5.0,
        max_in_flight: int = 128,
        on_cancelled: CancelHook | None = None,
        jitter: Callable[[], float] = random.random,
        metrics: Metrics | None = None,
    ) -> None:
        self._metrics = metrics or NoMetrics()
        self._queue = queue
        self._outbox = outbox if upstream is not None else None
        self._upstream = upstream
        self._clock = clock
        self._backoff = backoff or Backoff()
        # A delivery never outlives its lease: another deliverer could otherwise send the job's
        # next event before this one is answered.
        assert delivery_timeout < lease_seconds
        self._lease_seconds = lease_seconds
        self._inline_wait = inline_wait
        self._delivery_timeout = delivery_timeout
        self._keepalive = (
            None if keepalive_interval is None else timedelta(seconds=keepalive_interval)
        )
        self._max_in_flight = max_in_flight
        self._on_cancelled = on_cancelled
        self._jitter = jitter
        self._in_flight: set[asyncio.Task[Delivery]] = set()
        self._messages: dict[asyncio.Task[Delivery], Message] = {}  # what each one sends
        # After a failed delivery, requests leave their events to the dispatcher for a while: a
        # down upstream must not cost every worker's call an attempt.
        self._pause = timedelta(seconds=inline_pause_seconds)
        self._failing_until: datetime | None = None
        # After an answer took longer than a request waits, requests stop waiting for a while:
        # their deliveries still start at once and finish in the background.
        self._slow_until: datetime | None = None

    @property
    def enabled(self) -> bool:
        return self._outbox is not None

    @property
    def healthy(self) -> bool:
        """For operators: the last delivery attempt reached the upstream (or none failed yet).
        False from a failed delivery until one gets through again. Read-only."""
        return self._failing_until is None

    def inline(self) -> bool:
        """Whether requests should deliver their events themselves right now: not while the
        upstream is failing (then the dispatcher probes and retries), nor while too many
        deliveries of this process are in flight already."""
        if len(self._in_flight) >= self._max_in_flight:
            return False
        return self._failing_until is None or self._clock.now() >= self._failing_until

    def keepalive_before(self, now: datetime) -> datetime | None:
        """For ``JobQueue.record_update``: forward a keep-alive of a job when nothing was
        forwarded for it since this time; None when keep-alives are not forwarded now."""
        if self._outbox is None or self._keepalive is None or not self.inline():
            return None
        return now - self._keepalive

    async def deliver_now(self, messages: Sequence[Message | None]) -> set[int]:
        """Start delivering messages a request just committed (events leased to it, or a
        keep-alive it claimed; None: nothing to send) and wait for the answers at most
        ``inline_wait`` seconds. Returns the queue ids of the jobs the upstream reported deleted
        within the wait (they are cancelled)."""
        if self._upstream is None:
            return set()
        started = {self._start(m): m.job_id for m in messages if m is not None}
        if not started:
            return set()
        if self._slow_until is not None and self._clock.now() < self._slow_until:
            return set()  # the upstream is slow: the deliveries go on without the worker
        done, pending = await asyncio.wait(started, timeout=self._inline_wait)
        if pending:
            self._slow_until = self._clock.now() + self._pause
        return {
            job_id
            for task, job_id in started.items()
            if task in done and not task.cancelled() and task.result() is Delivery.GONE
        }

    async def dispatch_due(self, limit: int = 100) -> int:
        """Deliver due events of any job, oldest first; returns how many got through (0: the
        caller should wait before trying again).

        While the upstream is failing, one event at a time probes it. When a probe gets
        through, every waiting event is made due at once and whole batches go again."""
        if self._outbox is None:
            return 0
        failing = self._failing_until is not None
        room = max(self._max_in_flight - len(self._in_flight), 1)
        batch = 1 if failing else min(limit, room)
        now = self._clock.now()
        events = await self._outbox.lease_events(now, self._lease_seconds, batch)
        if not events:
            return 0
        outcomes = await asyncio.gather(*(self._start(e) for e in events))
        progress = sum(o is not Delivery.RETRY for o in outcomes)
        if failing and progress:
            log.info("user-facing API reachable again; sending the waiting status events")
            await self._outbox.expedite(self._clock.now())
        return progress

    async def after_cancel(self, job_id: int) -> None:
        """A job was cancelled (the upstream reported it deleted, or a resubmission of its
        meta.job_id superseded it): let the cancel hook clear what was stored after the delete.
        Without an upstream there is nothing known about deletes, and nothing is removed."""
        if self._outbox is None or self._on_cancelled is None:
            return
        job = await self._queue.get(job_id)
        if job is not None:
            await self._on_cancelled(job)

    async def wait_idle(self, seconds: float) -> None:
        """Let the deliveries in flight finish (at shutdown, or in tests), at most ``seconds``."""
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=seconds)

    async def stop(self, seconds: float) -> None:
        """At shutdown: let the deliveries in flight finish for at most ``seconds``, then stop
        the rest and hand their events back (due at once, for any process), so that none waits
        for its lease to run out."""
        await self.wait_idle(seconds)
        unfinished = {t: m for t, m in self._messages.items() if not t.done()}
        for task in unfinished:
            task.cancel()
        if unfinished:
            await asyncio.wait(unfinished)
        events = [m.id for m in unfinished.values() if isinstance(m, StatusEvent)]
        if events and self._outbox is not None:
            try:
                await self._outbox.postpone_events(
                    events, self._clock.now(), "handed back at shutdown"
                )
            except Unavailable as exc:  # their leases run out instead: delivered later
                log.warning("could not hand back %d status event(s): %s", len(events), exc.detail)

    # -- one delivery ---------------------------------------------------------------------------

    def _start(self, message: Message) -> asyncio.Task[Delivery]:
        task = asyncio.create_task(self._deliver(message))
        self._in_flight.add(task)
        self._messages[task] = message
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Delivery]) -> None:
        self._in_flight.discard(task)
        self._messages.pop(task, None)

    async def _deliver(self, message: Message) -> Delivery:
        """Send one message and act on the answer. Runs as a task: a request that stops waiting
        does not cancel it, and nothing it raises goes unlogged."""
        assert self._upstream is not None
        outcome = await self._upstream.notify(message, self._delivery_timeout)
        self._metrics.delivered(outcome)
        try:
            await self._settle(message, outcome)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the database went away meanwhile: the lease runs out, and
            # the event is delivered again later (at least once)
            log.warning(
                "delivered %s of job %s upstream (%s) but could not record it: %s",
                message.status.value,
                message.job_id,
                outcome.value,
                getattr(exc, "detail", None) or exc,
            )
        return outcome

    async def _settle(self, message: Message, outcome: Delivery) -> None:
        assert self._outbox is not None
        now = self._clock.now()
        if outcome is Delivery.DELIVERED:
            self._failing_until = None
            if isinstance(message, StatusEvent):  # forgotten, and its answer kept with it
                await self._outbox.complete_events([message.id])
            else:
                await self._queue.confirm_upstream({message.job_id: message.created_at})
            return
        if outcome is Delivery.GONE:
            log.info(
                "upstream reports job %s (meta.job_id %s) deleted; cancelling it",
                message.job_id,
                message.upstream_id,
            )
            # Cancelling drops the job's pending events, this one included.
            if await self._queue.cancel(message.job_id, now):
                await self.after_cancel(message.job_id)
            return
        if self._failing_until is None or now >= self._failing_until:
            log.warning(
                "user-facing API unreachable or refusing; status events wait for retry with "
                "back-off, keep-alives are not forwarded meanwhile"
            )
        self._failing_until = now + self._pause
        if isinstance(message, StatusEvent):
            wait = self._backoff.delay(message.attempts, self._jitter())
            await self._outbox.postpone_events(
                [message.id], now + timedelta(seconds=wait), "upstream unavailable"
            )


__all__ = ["Backoff", "KeepAlive", "StatusSync"]
