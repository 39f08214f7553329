"""Forwarding status changes to the user-facing API: at least once, in order per job, and never
at the pace of a slow upstream.

Each change is committed together with an outbox event (see ``ports.Outbox``). The request that
made the change starts delivering its event at once and waits for the answer only briefly
(``inline_wait``): a healthy upstream sees the change immediately, a slow one never slows the
worker down, and a delivery still in flight when the request stops waiting goes on in the
background under its lease, so it is never sent a second time for that reason. Whatever could
not be delivered then (upstream down, or an earlier event of the same job still pending) is
delivered by ``dispatch_due``, which every API process runs in the background.

A delivered event is acknowledged (forgotten in the outbox, its answer kept) by
``Acknowledgements``, in batches: one statement for the events delivered within
``ack_delay`` seconds instead of one each, written before anything that reads what they change
(the dispatcher's next lease, a cancellation, a shutdown).

Keep-alives of active jobs are forwarded too, best effort: at most one per job every
``keepalive_interval`` seconds, only when none of the job's events is pending (so one never
overtakes a change), never stored; a worker's request for an upload URL counts as one
(``keep_alive``). Their only purpose is the answer: the user-facing API never says that a user
deleted a job, but answers 404 to anything about it. A 404 cancels the job here, removes the
files stored for it since the last answer that was not a 404 (the delete came after that), and
the worker learns it from a 404 to its next call — to the very call, when the answer came within
the wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta

import msgspec

from workerfacing_api.core.errors import Unavailable
from workerfacing_api.core.model import (
    ACTIVE_STATUSES,
    Delivery,
    Job,
    KeepAlive,
    Message,
    StatusEvent,
)
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


class Acknowledgements:
    """Delivered status events, forgotten in the outbox in batches (``Outbox.complete_events``,
    which also keeps each job's latest answer).

    Until its batch is written, an event still looks undelivered to everyone, except to the next
    update of its job from this process, which acknowledges its job's events itself
    (``take``; ``JobQueue.record_update``'s ``acknowledged``): a worker's next call then finds
    its job's line clear, and its own change goes inline. Otherwise, at worst, a job's next
    event is delivered by the dispatcher instead of inline, or a keep-alive waits for the next
    ping, and after a crash an event is delivered again (at least once, as everywhere here). An
    acknowledgement is never lost: what a write could not take stays for the next one. With
    ``delay`` 0 each is written at once."""

    def __init__(self, outbox: Outbox, *, delay: float) -> None:
        self._outbox = outbox
        self._delay = delay
        self._pending: dict[int, int] = {}  # event id -> its job's id, in delivery order
        self._writer: asyncio.Task[None] | None = None

    @property
    def pending(self) -> tuple[int, ...]:
        """Delivered events not written yet."""
        return tuple(self._pending)

    async def add(self, event: StatusEvent) -> None:
        self._pending[event.id] = event.job_id
        if self._delay <= 0:
            await self.flush()
        elif self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_soon())

    def take(self, job_id: int) -> list[int]:
        """The job's events waiting here, handed to a change that acknowledges them itself
        (``give_back`` what it did not)."""
        mine = [e for e, job in self._pending.items() if job == job_id]
        for event_id in mine:
            del self._pending[event_id]
        return mine

    def give_back(self, event_ids: list[int], job_id: int) -> None:
        for event_id in event_ids:
            self._pending[event_id] = job_id

    async def flush(self) -> None:
        """Write every acknowledgement taken so far."""
        done, self._pending = self._pending, {}
        if not done:
            return
        try:
            await self._outbox.complete_events(list(done))
        except BaseException:
            self._pending = done | self._pending  # not written: the next write takes them
            raise

    async def _write_soon(self) -> None:
        await asyncio.sleep(self._delay)
        try:
            await self.flush()
        except Unavailable as exc:  # kept for the next write: the dispatcher's, at the latest
            log.warning("could not acknowledge delivered status events yet: %s", exc.detail)

    async def stop(self) -> None:
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer


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
        ack_delay: float = 0.0,
        max_in_flight: int = 128,
        on_cancelled: CancelHook | None = None,
        jitter: Callable[[], float] = random.random,
        metrics: Metrics | None = None,
    ) -> None:
        self._metrics = metrics or NoMetrics()
        self._queue = queue
        self._outbox = outbox if upstream is not None else None
        self._acks = (
            None if self._outbox is None else Acknowledgements(self._outbox, delay=ack_delay)
        )
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

    async def keep_alive(self, job: Job) -> bool:
        """A sign of life of a job other than a status report (its worker asks for an upload
        URL): for an active job, forwarded upstream as a keep-alive under the rule of pings (at
        most one per job every ``keepalive_interval``, none while an event of the job is
        pending), so that a worker that only uploads learns of its user's delete within one
        interval. A keep-alive sent is recorded as one (``JobQueue.record_update``: the
        heartbeat too). True when the upstream answered within the wait that the job was
        deleted: it is cancelled, and its worker must be told to stop."""
        if job.status not in ACTIVE_STATUSES:
            return False  # a final job's uploads are its last words: nothing to ask upstream
        now = self._clock.now()
        before = self.keepalive_before(now)
        if before is None or (job.forwarded_at is not None and job.forwarded_at > before):
            return False  # not forwarding now, or forwarded within the interval: no write
        acknowledged = self.take_acknowledgements(job.id)
        try:
            committed = await self._queue.record_update(
                job,
                job.status,
                None,
                now,
                forward=False,
                lease=self.inline(),
                keepalive_before=before,
                acknowledged=acknowledged,
            )
        except Unavailable as exc:  # best effort: the request it rides on still goes ahead
            self.give_back_acknowledgements(acknowledged, job.id)
            log.warning("could not forward a keep-alive of job %s: %s", job.id, exc.detail)
            return False
        except BaseException:
            self.give_back_acknowledgements(acknowledged, job.id)
            raise
        if committed is None:  # the job changed meanwhile: that change was forwarded itself
            self.give_back_acknowledgements(acknowledged, job.id)
            return False
        return job.id in await self.deliver_now([committed.keepalive])

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
        if self._outbox is None or self._acks is None:
            return 0
        await self._acks.flush()  # what was delivered is not leased again, and its successor is
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

    @property
    def unacknowledged(self) -> tuple[int, ...]:
        """Delivered events whose acknowledgement is not written yet."""
        return () if self._acks is None else self._acks.pending

    def take_acknowledgements(self, job_id: int) -> list[int]:
        """The job's delivered events not acknowledged yet, for its next change to acknowledge
        in its own transaction (``JobQueue.record_update``'s ``acknowledged``); what the change
        did not take goes back with ``give_back_acknowledgements``."""
        return [] if self._acks is None else self._acks.take(job_id)

    def give_back_acknowledgements(self, event_ids: list[int], job_id: int) -> None:
        if self._acks is not None and event_ids:
            self._acks.give_back(event_ids, job_id)

    async def write_acknowledgements(self) -> None:
        """Write the acknowledgements taken so far now (before a change that drops events)."""
        if self._acks is not None:
            await self._acks.flush()

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
        """Let the deliveries in flight finish (at shutdown, or in tests), at most ``seconds``,
        and write their acknowledgements."""
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=seconds)
        if self._acks is not None:
            await self._acks.flush()

    async def stop(self, seconds: float) -> None:
        """At shutdown: let the deliveries in flight finish for at most ``seconds``, then stop
        the rest and hand their events back (due at once, for any process), so that none waits
        for its lease to run out."""
        try:
            await self.wait_idle(seconds)
        except Unavailable as exc:  # the events are delivered again later (at least once)
            log.warning("could not acknowledge delivered status events: %s", exc.detail)
        if self._acks is not None:
            await self._acks.stop()
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
                assert self._acks is not None
                await self._acks.add(message)
            else:
                await self._queue.confirm_upstream({message.job_id: message.created_at})
            return
        if outcome is Delivery.GONE:
            log.info(
                "upstream reports job %s (meta.job_id %s) deleted; cancelling it",
                message.job_id,
                message.upstream_id,
            )
            # The answers to its earlier events first: the clean-up after the delete starts
            # from the latest. Cancelling drops the job's pending events, this one included.
            if self._acks is not None:
                await self._acks.flush()
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


__all__ = ["Acknowledgements", "Backoff", "KeepAlive", "StatusSync"]
