"""The SQL queue in lock-step with the in-memory reference model (ARCHITECTURE §3, §6).

A hypothesis state machine drives the SQLite or the PostgreSQL adapter and ``InMemoryQueue``
through the same random submissions, pulls, worker updates (keep-alives claimed or not), sweeps,
cancellations, outbox deliveries, upstream answers and uploads under a fake clock, and asserts
after every step that both answered alike and hold the same jobs. Event ids are each adapter's
own (a sequence, a rowid), so events are matched by a key of their own: the job's id and its
``event_seq`` once the event was recorded.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tests.queues import Queue, open_queue, submission
from workerfacing_api.core.memory import InMemoryQueue
from workerfacing_api.core.model import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    Claimed,
    Committed,
    Environment,
    ExpiredJob,
    Job,
    JobStatus,
    KeepAlive,
    StatusEvent,
    WorkerProfile,
)

T = TypeVar("T")

T0 = datetime(2026, 11, 28, 8, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)  # what every adapter leases an event to its recorder for
MAX_JOBS = 10  # per example: every step compares them all
# "w1" and "w10": RETRY_DIFFERENT compares exact names, never substrings. The third needs
# escaping in JSON and SQL.
WORKERS = ("w1", "w10", "w'\"ü")
MAX_HELD = 2  # the active jobs a worker's node may hold (MAX_JOBS_PER_NODE)
DETAILS = (None, "", "logs", "stalled: \"quoted\" 'and' ünïcode\nsecond line")
UPDATE_TARGETS = (
    None,  # the job's status again: a keep-alive, the call a running worker makes most
    JobStatus.PULLED,
    JobStatus.PREPROCESSING,
    JobStatus.RUNNING,
    JobStatus.POSTPROCESSING,
    JobStatus.FINISHED,
    JobStatus.ERROR,
)
# UPSTREAM_KEEPALIVE_INTERVAL as the service passes it on (None: no keep-alive asked for; 0:
# every one), in seconds.
KEEPALIVE_INTERVALS = (None, None, 0.0, 5.0, 30.0)
# File ids as the storages name them; the last needs quoting in SQL.
FILE_IDS = ("/data/alice/log/j/log.txt", "/data/alice/artifact/j/model.pt", "s3://b/k 'ü\"")
# LOCKSTEP_EXAMPLES raises the number of examples (the repeated runs under load do).
SETTINGS = settings(
    max_examples=int(os.environ.get("LOCKSTEP_EXAMPLES", "25")),
    stateful_step_count=30,
    deadline=None,
)

Pair = tuple[Job, Job]  # one job as the reference model and as the SQL adapter returned it
EventKey = tuple[int, int]  # (job id, the job's event_seq once the event was recorded)
MEM, SQL = 0, 1

# Most jobs fit most workers, so that jobs get pulled and move on; some need more.
requirements: st.SearchStrategy[dict[str, Any]] = st.one_of(
    st.just({}),
    st.fixed_dictionaries(
        {},
        optional={
            "cpu_cores": st.sampled_from([0, 4, 16, 32]),
            "memory": st.sampled_from([0, 8000, 32000, 64000]),
            "gpu_mem": st.sampled_from([0, 8000, 16000]),
            "gpu_model": st.sampled_from(["RTX", "A100"]),
            "gpu_archi": st.sampled_from(["ampere", "hopper"]),
        },
    ),
)
submissions = st.fixed_dictionaries(
    {
        # Few upstream ids: resubmissions (which supersede the live job) are common.
        "job_id": st.integers(1, 10),
        "environment": st.sampled_from(["local", "local", "local", "cloud", None]),
        "group": st.sampled_from([None, "lab", "other"]),
        "priority": st.sampled_from([None, 0, 0, 9, -3]),
        "hardware": requirements,
    }
)
busy_workers = st.builds(  # fit most local jobs
    WorkerProfile,
    worker=st.sampled_from(WORKERS),
    environment=st.just(Environment.LOCAL),
    cpu_cores=st.just(32),
    memory=st.just(64000),
    gpu_mem=st.just(16000),
    gpu_model=st.sampled_from(["RTX", "A100"]),
    gpu_archi=st.sampled_from(["ampere", "hopper"]),
    groups=st.sampled_from([(), ("lab",), ("other", "lab")]),
)
workers = st.builds(
    WorkerProfile,
    worker=st.sampled_from(WORKERS),
    environment=st.sampled_from([Environment.LOCAL] * 3 + [Environment.CLOUD]),
    cpu_cores=st.sampled_from([32, 32, 4, 0]),
    memory=st.sampled_from([64000, 64000, 8000, 0]),
    gpu_mem=st.sampled_from([16000, 16000, 0]),
    gpu_model=st.sampled_from(["RTX", "A100", None]),
    gpu_archi=st.sampled_from(["ampere", "hopper", None]),
    groups=st.sampled_from([(), ("lab",), ("other", "lab")]),
    older_than=st.sampled_from([0.0, 30.0, 60.5]),
)
# Seconds that pass: around the lease (30 s) and sweep timeouts (10 s, 30 s), to the microsecond.
waits = st.sampled_from([0.0, 0.000001, 0.5, 10.0, 29.999999, 30.0, 31.0, 120.0])
# Clocks of other API processes, a little behind this one.
skews = st.sampled_from([0.0, 0.0, -1.0, -0.000001])
# What became of a delivery: the events leave the outbox, wait for a retry, or stay leased (a
# slow or crashed deliverer) until the lease runs out.
# "unacknowledged": delivered, its acknowledgement kept back (core.sync.Acknowledgements) until
# the job's next update takes it along (``acknowledge``) or a batch writes it.
outcomes = st.sampled_from(["delivered", "delivered", "failed", "slow", "unacknowledged"])
backoffs = st.sampled_from([0.0, 5.0, 60.0])
picks = st.lists(st.integers(0, 1000), min_size=1, max_size=3)


@dataclass
class Pending:
    """An undelivered event, as far as the test can tell from the answers it got."""

    key: EventKey
    batch: int  # events recorded by one call share it: their mutual order is unspecified
    due_at: datetime
    leased_until: datetime | None


def content(event: StatusEvent) -> tuple[Any, ...]:
    """An event without its id, which is each adapter's own."""
    return (
        event.job_id,
        event.upstream_id,
        event.status,
        event.runtime_details,
        event.created_at,
        event.attempts,
    )


class QueueLockstep(RuleBasedStateMachine):
    """One SQL queue and the reference model, given the same calls at the same fake time."""

    def __init__(self, kind: str, workdir: Path, postgres_url: str | None) -> None:
        super().__init__()
        self.kind = kind
        self.loop = asyncio.new_event_loop()
        self.now = T0
        self.mem = InMemoryQueue(record_events=True)
        self.sql_context: AbstractAsyncContextManager[Queue] = open_queue(
            kind, workdir, postgres_url, record_events=True
        )
        try:
            self.sql = self.run(self.sql_context.__aenter__())
        except BaseException:
            self.loop.close()
            raise
        self.max_retries = 1
        self.timeout = 30.0
        self.job_ids: list[int] = []
        self.snapshots: list[Pair] = []  # held jobs, as of some time: old ones test the CAS
        self.expired: list[tuple[ExpiredJob, ExpiredJob]] = []
        self.expired_before = T0
        self.outbox: dict[int, list[Pending]] = {}  # per job, oldest first
        self.batches = itertools.count()
        # Each adapter's id of every undelivered event it has handed out, and back.
        self.event_ids: tuple[dict[EventKey, int], dict[EventKey, int]] = ({}, {})
        self.event_keys: tuple[dict[int, EventKey], dict[int, EventKey]] = ({}, {})
        self.delivered: list[tuple[int, int]] = []  # each adapter's id of a completed event
        self.unacknowledged: dict[int, list[EventKey]] = {}  # per job: delivered, still there
        self.uploads: list[tuple[int, datetime]] = []  # (job id, stored at), in storage order

    def run(self, coro: Awaitable[T]) -> T:
        return self.loop.run_until_complete(coro)

    def both(self, call: Callable[[Queue, int], Awaitable[T]]) -> tuple[T, T]:
        """The same call on the model, then on the SQL adapter (``side`` picks the arguments
        each gets: its own snapshots and event ids)."""
        return self.run(call(self.mem, MEM)), self.run(call(self.sql, SQL))

    def teardown(self) -> None:
        try:
            self.run(self.sql_context.__aexit__(None, None, None))
            self.run(self.loop.shutdown_asyncgens())
        finally:
            self.loop.close()

    # -- bookkeeping: snapshots, and the test's own view of the outbox ------------------------

    def keep(self, pair: Pair) -> None:
        assert pair[MEM] == pair[SQL]
        if held(pair[MEM]):
            self.snapshots = [*self.snapshots[-40:], pair]

    def recorded(
        self,
        job: Job,
        events: tuple[StatusEvent | None, StatusEvent | None],
        lease: bool,
        batch: int,
    ) -> EventKey | None:
        """A change recorded an event: it is leased to its recorder, with ``lease``, exactly
        when no older event of its job is undelivered. Returns its key if it was."""
        key = (job.id, job.event_seq)
        line = self.outbox.setdefault(job.id, [])
        heads_line = lease and not line
        mem, sql = events
        assert (mem is not None, sql is not None) == (heads_line, heads_line)
        line.append(Pending(key, batch, self.now, self.now + LEASE if heads_line else None))
        if mem is None or sql is None:
            return None
        assert content(mem) == content(sql)
        assert content(mem)[:3] == (job.id, job.upstream_id, job.status)
        assert content(mem)[4:] == (self.now, 0)
        self.learn(key, mem.id, sql.id)
        return key

    def learn(self, key: EventKey, mem_id: int, sql_id: int) -> None:
        for side, event_id in ((MEM, mem_id), (SQL, sql_id)):
            known = self.event_keys[side].get(event_id)
            assert known in (None, key), f"event id {event_id} stands for {known} and {key}"
            assert self.event_ids[side].get(key, event_id) == event_id
            self.event_ids[side][key] = event_id
            self.event_keys[side][event_id] = key

    def forget(self, keys: Sequence[EventKey]) -> None:
        for key in keys:
            for side in (MEM, SQL):
                event_id = self.event_ids[side].pop(key, None)
                if event_id is not None:
                    del self.event_keys[side][event_id]

    def drop_events_of(self, job_id: int) -> None:
        self.unacknowledged.pop(job_id, None)
        self.forget([p.key for p in self.outbox.pop(job_id, [])])

    def pending(self, key: EventKey) -> Pending:
        return next(p for p in self.outbox[key[0]] if p.key == key)

    def settle(self, keys: Sequence[EventKey], outcome: str, backoff: float) -> None:
        """What a deliverer does with the events it sent, each adapter with its own ids."""
        if not keys or outcome == "slow":
            return
        if outcome == "unacknowledged":
            for key in keys:
                waiting = self.unacknowledged.setdefault(key[0], [])
                if key not in waiting:
                    waiting.append(key)
            return
        if outcome == "delivered":
            self.both(lambda q, side: q.complete_events([self.event_ids[side][k] for k in keys]))
            self.completed(keys)
            return
        until = self.now + timedelta(seconds=backoff)
        self.both(
            lambda q, side: q.postpone_events(
                [self.event_ids[side][k] for k in keys], until, "upstream unavailable"
            )
        )
        for key in keys:
            pending = self.pending(key)
            pending.due_at, pending.leased_until = until, None

    def completed(self, keys: Sequence[EventKey]) -> None:
        """The events are gone from the outbox: acknowledged, one way or another."""
        for key in keys:
            self.outbox[key[0]].remove(self.pending(key))
            self.delivered.append((self.event_ids[MEM][key], self.event_ids[SQL][key]))
            if key in self.unacknowledged.get(key[0], []):
                self.unacknowledged[key[0]].remove(key)
        self.forget(keys)

    # -- rules -------------------------------------------------------------------------------

    @precondition(lambda self: any(self.unacknowledged.values()))
    @rule()
    def acknowledge(self) -> None:
        """A batch of acknowledgements is written (the ones a job's update did not take)."""
        keys = [k for waiting in self.unacknowledged.values() for k in waiting]
        self.both(lambda q, side: q.complete_events([self.event_ids[side][k] for k in keys]))
        self.completed(keys)

    @initialize(
        max_retries=st.integers(0, 2),
        timeout=st.sampled_from([10.0, 30.0]),
        first=st.lists(st.tuples(submissions, skews), min_size=2, max_size=6),
    )
    def start(
        self, max_retries: int, timeout: float, first: list[tuple[dict[str, Any], float]]
    ) -> None:
        """The sweep's settings, and a few jobs to begin with."""
        self.max_retries = max_retries
        self.timeout = timeout
        for values, skew in first:
            self.submit(values, skew)

    @rule(seconds=st.sampled_from([30.0, 0.000001, 0.5, 10.0, 29.999999, 31.0, 120.0, -1.0]))
    def advance_clock(self, seconds: float) -> None:
        """Time passes; or, the next calls come from an API process whose clock is behind."""
        self.now += timedelta(seconds=seconds)

    @precondition(lambda self: len(self.job_ids) < MAX_JOBS)
    @rule(values=submissions, skew=skews)
    def submit(self, values: dict[str, Any], skew: float) -> None:
        """A submission, maybe to an API process whose clock is ``skew`` seconds off (so that
        creation order and id order differ); one reusing the meta.job_id of a live job
        supersedes it."""
        sub = submission(**values)
        at = self.now + timedelta(seconds=skew)
        mem, sql = self.both(lambda q, _: q.add(sub, at))
        assert mem == sql
        job, superseded = mem
        assert job.id == len(self.job_ids) + 1
        self.job_ids.append(job.id)
        for job_id in superseded:
            self.drop_events_of(job_id)

    @rule(
        worker=busy_workers,
        limit=st.integers(1, 3),
        exclude_attempted=st.booleans(),
        lease=st.booleans(),
        outcome=outcomes,
        backoff=backoffs,
    )
    def pull(
        self,
        worker: WorkerProfile,
        limit: int,
        exclude_attempted: bool,
        lease: bool,
        outcome: str,
        backoff: float,
    ) -> None:
        """A worker that fits most jobs pulls (the common case)."""
        self.settle(self.claim(worker, limit, exclude_attempted, lease), outcome, backoff)

    @rule(
        worker=workers,
        limit=st.integers(1, 3),
        exclude_attempted=st.booleans(),
        lease=st.booleans(),
        outcome=outcomes,
        backoff=backoffs,
    )
    def pull_as_anyone(
        self,
        worker: WorkerProfile,
        limit: int,
        exclude_attempted: bool,
        lease: bool,
        outcome: str,
        backoff: float,
    ) -> None:
        """Any worker pulls: environments, hardware, preferred groups and ``older_than``."""
        self.settle(self.claim(worker, limit, exclude_attempted, lease), outcome, backoff)

    def claim(
        self, worker: WorkerProfile, limit: int, exclude_attempted: bool, lease: bool
    ) -> list[EventKey]:
        def call(q: Queue, _: int) -> Awaitable[list[Claimed]]:
            return q.claim_jobs(
                worker,
                limit,
                self.now,
                exclude_attempted=exclude_attempted,
                # Small, so that the hold cap binds often: both must stop at it alike.
                max_held=MAX_HELD,
                lease=lease,
            )

        mem, sql = self.both(call)
        assert [c.job for c in mem] == [c.job for c in sql]
        batch = next(self.batches)
        leased = []
        for m, s in zip(mem, sql, strict=True):
            self.keep((m.job, s.job))
            key = self.recorded(m.job, (m.event, s.event), lease, batch)
            if key is not None:
                leased.append(key)
        return leased

    @precondition(lambda self: self.snapshots)
    @rule(
        pick=st.integers(0, 1000),
        status=st.sampled_from(UPDATE_TARGETS),
        details=st.sampled_from(DETAILS),
        forward=st.booleans(),
        lease=st.booleans(),
        outcome=outcomes,
        keepalive=st.sampled_from(KEEPALIVE_INTERVALS),
        acknowledge=st.booleans(),
    )
    def report(
        self,
        pick: int,
        status: JobStatus | None,
        details: str | None,
        forward: bool,
        lease: bool,
        outcome: str,
        keepalive: float | None,
        acknowledge: bool,
    ) -> None:
        """A worker's update on its job as it is now, as the service decides it; with
        ``acknowledge``, on a job that has delivered events not acknowledged yet, if any, and
        taking their acknowledgements along."""
        waiting = [p for p in self.snapshots if self.unacknowledged.get(p[MEM].id)]
        pair = self.now_of(waiting[pick % len(waiting)]) if acknowledge and waiting else None
        pair = pair or self.current(pick)
        self.update(pair, status, details, forward, lease, outcome, keepalive, acknowledge)

    @precondition(lambda self: self.snapshots)
    @rule(
        pick=st.integers(0, 1000),
        wait=st.sampled_from([0.0, 1.0, 4.999999, 5.0, 30.0]),
        keepalive=st.sampled_from(KEEPALIVE_INTERVALS[2:]),
        dispatches=st.integers(0, 2),
    )
    def ping(self, pick: int, wait: float, keepalive: float, dispatches: int) -> None:
        """After ``wait`` seconds, a worker's plain keep-alive on its job as it is now, as the
        service makes it with an upstream: it may go upstream too, at most once per interval
        and only when none of the job's events is pending, which ``dispatches`` (rounds of the
        dispatcher delivering what is due, just before) make likelier."""
        self.now += timedelta(seconds=wait)
        for _ in range(dispatches):
            self.dispatch(0.0, 4, 30.0, "delivered", 0.0, False)
        self.update(self.current(pick), None, None, False, True, "slow", keepalive)

    def current(self, pick: int) -> Pair:
        """A held job as it is now (a cancelled or re-queued one answers 404 before the queue
        is asked), or else the snapshot as it was."""
        return self.now_of(self.snapshots[pick % len(self.snapshots)])

    def now_of(self, snapshot: Pair) -> Pair:
        mem_now, sql_now = self.both(lambda q, _: q.get(snapshot[MEM].id))
        if mem_now is not None and sql_now is not None and held(mem_now):
            return mem_now, sql_now
        return snapshot

    @precondition(lambda self: self.snapshots)
    @rule(
        pick=st.integers(0, 1000),
        status=st.sampled_from(UPDATE_TARGETS),
        details=st.sampled_from(DETAILS),
        forward=st.booleans(),
        lease=st.booleans(),
        outcome=outcomes,
        keepalive=st.sampled_from(KEEPALIVE_INTERVALS),
    )
    def report_late(
        self,
        pick: int,
        status: JobStatus | None,
        details: str | None,
        forward: bool,
        lease: bool,
        outcome: str,
        keepalive: float | None,
    ) -> None:
        """A worker's update decided on an older snapshot of its job (a late or retried
        request): it applies only if the job has not moved on since."""
        snapshot = self.snapshots[pick % len(self.snapshots)]
        self.update(snapshot, status, details, forward, lease, outcome, keepalive)

    def update(
        self,
        snapshot: Pair,
        status: JobStatus | None,
        details: str | None,
        forward: bool,
        lease: bool,
        outcome: str,
        keepalive: float | None = None,
        acknowledge: bool = False,
    ) -> None:
        """A worker's update; with ``keepalive`` (seconds), one that may claim the job's
        keep-alive: once nothing went upstream about the job for that long and none of its
        events is pending, which the test's own view of the outbox tells. With
        ``acknowledge``, it forgets its job's delivered events that were not acknowledged yet,
        and keeps their answer, before it decides on its own event and keep-alive."""
        before = None if keepalive is None else self.now - timedelta(seconds=keepalive)
        acked = list(self.unacknowledged.get(snapshot[MEM].id, [])) if acknowledge else []

        def call(q: Queue, side: int) -> Awaitable[Committed | None]:
            return q.record_update(
                snapshot[side],
                snapshot[side].status if status is None else status,
                details,
                self.now,
                forward=forward,
                lease=lease,
                keepalive_before=before,
                acknowledged=[self.event_ids[side][k] for k in acked],
            )

        job = self.run(self.mem.get(snapshot[MEM].id))
        mem, sql = self.both(call)
        assert (mem is None) == (sql is None)
        if mem is None or sql is None:
            return
        self.completed(acked)
        self.keep((mem.job, sql.job))
        assert mem.keepalive == sql.keepalive
        due = (
            not forward
            and before is not None
            and job is not None
            and (job.forwarded_at is None or job.forwarded_at <= before)
            and not self.outbox.get(job.id)
        )
        assert (mem.keepalive is not None) == due
        if mem.keepalive is not None:
            assert mem.keepalive == KeepAlive(
                job_id=mem.job.id,
                upstream_id=mem.job.upstream_id,
                status=mem.job.status,
                created_at=self.now,
            )
        if forward or mem.keepalive is not None:
            assert mem.job.forwarded_at == self.now
        if not forward:
            assert (mem.event, sql.event) == (None, None)
            return
        key = self.recorded(mem.job, (mem.event, sql.event), lease, next(self.batches))
        self.settle([] if key is None else [key], outcome, 5.0)

    @rule(
        wait=waits,
        cutoff=st.sampled_from(["timeout", "timeout", "now", "a heartbeat"]),
        pick=st.integers(0, 1000),
        limit=st.integers(1, 4),
    )
    def find_expired(self, wait: float, cutoff: str, pick: int, limit: int) -> None:
        """Time passes, then the sweeper reads; it acts on these snapshots later (``expire``)."""
        self.now += timedelta(seconds=wait)
        before = self.now - timedelta(seconds=self.timeout)
        if cutoff == "now":
            before = self.now
        elif cutoff == "a heartbeat" and self.snapshots:
            # A heartbeat exactly at the cutoff is not silent yet.
            before = self.snapshots[pick % len(self.snapshots)][MEM].last_heartbeat_at or T0
        mem, sql = self.both(lambda q, _: q.find_expired(before, limit))
        assert mem == sql
        for expired in mem:
            assert len(expired.workers_tried) == expired.job.attempt
        self.expired = list(zip(mem, sql, strict=True))
        self.expired_before = before
        for m, s in self.expired:
            self.keep((m.job, s.job))

    @precondition(lambda self: self.expired)
    @rule(pick=st.integers(0, 1000), lease=st.booleans(), outcome=outcomes)
    def expire(self, pick: int, lease: bool, outcome: str) -> None:
        """The sweeper's write, maybe late: a keep-alive since its read keeps the job."""
        found = self.expired[pick % len(self.expired)]
        _, key = self.expire_one(found, self.expired_before, lease)
        self.settle([] if key is None else [key], outcome, 5.0)

    @rule(wait=waits, lease=st.booleans(), outcome=outcomes)
    def sweep(self, wait: float, lease: bool, outcome: str) -> None:
        """Time passes, then the whole sweep at once, as the service's sweeper runs it."""
        self.now += timedelta(seconds=wait)
        before = self.now - timedelta(seconds=self.timeout)
        mem, sql = self.both(lambda q, _: q.find_expired(before, 100))
        assert mem == sql
        for found in zip(mem, sql, strict=True):
            done, key = self.expire_one(found, before, lease)
            assert done
            self.settle([] if key is None else [key], outcome, 5.0)

    @rule(pick=st.integers(0, 1000), lease=st.booleans())
    def sweep_racing_a_keep_alive(self, pick: int, lease: bool) -> None:
        """The sweeper reads, a keep-alive lands at that very instant, then the sweeper writes:
        the job was heard from, so it stays (its heartbeat is not older than the cutoff)."""
        mem, sql = self.both(lambda q, _: q.find_expired(self.now, 100))
        assert mem == sql
        if not mem:
            return
        found = (mem[pick % len(mem)], sql[pick % len(sql)])
        self.update((found[MEM].job, found[SQL].job), None, None, False, lease, "slow", None)
        assert self.expire_one(found, self.now, lease) == (False, None)

    def expire_one(
        self, found: tuple[ExpiredJob, ExpiredJob], before: datetime, lease: bool
    ) -> tuple[bool, EventKey | None]:
        """Re-queue a silent job, or fail it once it used up its retries."""
        job = found[MEM].job
        assert found[MEM].workers_tried == found[SQL].workers_tried
        requeue = job.num_retries < self.max_retries
        detail = (
            f"timeout after {self.timeout:g} s; workers tried: "
            + ", ".join(found[MEM].workers_tried)
            if requeue
            else "max retries reached"
        )

        def call(q: Queue, side: int) -> Awaitable[Committed | None]:
            act = q.requeue if requeue else q.fail
            return act(found[side].job, detail, self.now, heartbeat_before=before, lease=lease)

        mem, sql = self.both(call)
        assert (mem is None) == (sql is None)
        if mem is None or sql is None:
            return False, None
        assert mem.job.status is (JobStatus.QUEUED if requeue else JobStatus.ERROR)
        self.keep((mem.job, sql.job))
        return True, self.recorded(mem.job, (mem.event, sql.event), lease, next(self.batches))

    @rule(pick=st.integers(0, 1000))
    def cancel(self, pick: int) -> None:
        """The upstream deleted a job (or names one this queue never had)."""
        job_id = pick % (len(self.job_ids) + 1) + 1
        mem, sql = self.both(lambda q, _: q.cancel(job_id, self.now))
        assert mem == sql
        self.drop_events_of(job_id)

    @rule(
        wait=waits,
        limit=st.integers(1, 4),
        lease_seconds=st.sampled_from([0.5, 30.0, 100.0]),
        outcome=outcomes,
        backoff=backoffs,
        probe=st.booleans(),
    )
    def dispatch(
        self,
        wait: float,
        limit: int,
        lease_seconds: float,
        outcome: str,
        backoff: float,
        probe: bool,
    ) -> None:
        """Time passes, then the dispatcher leases the due events that head their job's line,
        oldest first, and delivers them. A ``probe`` of an upstream that was failing that gets
        through makes every waiting event due at once."""
        self.now += timedelta(seconds=wait)
        heads = [line[0] for line in self.outbox.values() if line]
        due = sorted(
            (
                p
                for p in heads
                if p.due_at <= self.now and (p.leased_until is None or p.leased_until <= self.now)
            ),
            key=lambda p: p.batch,
        )
        # Events of one claim are equally old; which of them a limit cuts off is unspecified.
        while 0 < limit < len(due) and due[limit].batch == due[limit - 1].batch:
            limit += 1
        expected = {p.key for p in due[:limit]}
        mem, sql = self.both(lambda q, _: q.lease_events(self.now, lease_seconds, limit))
        got: list[dict[EventKey, StatusEvent]] = []
        for events in (mem, sql):
            assert [e.id for e in events] == sorted(e.id for e in events)
            assert all(self.outbox.get(e.job_id) for e in events), "an event none is pending"
            keys = [self.outbox[e.job_id][0].key for e in events]
            batches = [self.pending(k).batch for k in keys]
            assert batches == sorted(batches), "not oldest first"
            got.append(dict(zip(keys, events, strict=True)))
        assert set(got[MEM]) == set(got[SQL]) == expected
        for key in expected:
            assert content(got[MEM][key]) == content(got[SQL][key])
            self.learn(key, got[MEM][key].id, got[SQL][key].id)
            self.pending(key).leased_until = self.now + timedelta(seconds=lease_seconds)
        self.settle(sorted(expected), outcome, backoff)
        if probe and expected and outcome == "delivered":
            self.both(lambda q, _: q.expedite(self.now))
            for line in self.outbox.values():
                for pending in line:
                    pending.due_at = min(pending.due_at, self.now)

    @precondition(lambda self: self.event_ids[MEM])
    @rule(choices=picks, outcome=st.sampled_from(["delivered", "failed"]), backoff=backoffs)
    def deliver_late(self, choices: list[int], outcome: str, backoff: float) -> None:
        """A slow deliverer finishes after other steps, maybe after its lease ran out."""
        keys = [p.key for line in self.outbox.values() for p in line if p.key in self.event_ids[0]]
        self.settle(sorted({keys[c % len(keys)] for c in choices}), outcome, backoff)

    @precondition(lambda self: self.delivered)
    @rule(pick=st.integers(0, 1000))
    def complete_again(self, pick: int) -> None:
        """A deliverer whose lease ran out reports an event delivered that another deliverer
        delivered and completed meanwhile (at least once): nothing else may go."""
        ids = self.delivered[pick % len(self.delivered)]
        self.both(lambda q, side: q.complete_events([ids[side]]))

    @precondition(lambda self: self.job_ids)
    @rule(
        answers=st.lists(
            st.tuples(
                st.integers(0, 1000),
                st.sampled_from([-30.0, -1.0, -0.000001, 0.0, 0.000001, 5.0]),
            ),
            min_size=1,
            max_size=3,
        )
    )
    def confirm(self, answers: list[tuple[int, float]]) -> None:
        """The upstream answered messages about these jobs, sent at these times (not in order:
        deliveries run side by side)."""
        answered = {
            self.job_ids[pick % len(self.job_ids)]: self.now + timedelta(seconds=offset)
            for pick, offset in answers
        }
        self.both(lambda q, _: q.confirm_upstream(answered))

    @precondition(lambda self: self.job_ids)
    @rule(
        pick=st.integers(0, 1000),
        attempt=st.integers(0, 3),
        file_id=st.sampled_from(FILE_IDS),
        skew=skews,
    )
    def upload(self, pick: int, attempt: int, file_id: str, skew: float) -> None:
        """A file stored for a job, by an API process whose clock may be behind: storage order
        and time order need not agree."""
        job_id = self.job_ids[pick % len(self.job_ids)]
        at = self.now + timedelta(seconds=skew)
        self.both(lambda q, _: q.record_upload(job_id, attempt, file_id, at))
        self.uploads.append((job_id, at))

    @precondition(lambda self: self.uploads)
    @rule(pick=st.integers(0, 1000), since=st.integers(0, 1000), everything=st.booleans())
    def list_uploads(self, pick: int, since: int, everything: bool) -> None:
        """What a job that stored files stored after a time (the clean-up after its user
        deleted it): after one of its uploads, or of another job's, or now; or everything."""
        job_id = self.uploads[pick % len(self.uploads)][0]
        times = [at for _, at in self.uploads] + [self.now]
        after = None if everything else times[since % len(times)]
        mem, sql = self.both(lambda q, _: q.uploads_since(job_id, after))
        assert mem == sql

    # -- after every step --------------------------------------------------------------------

    @invariant()
    def same_jobs(self) -> None:
        """Both hold the same jobs, each in one consistent state, within its retry budget, and
        no job is active for two workers."""
        ids = [*self.job_ids, len(self.job_ids) + 1]
        mem_jobs, sql_jobs = self.both(lambda q, _: every_job(q, ids))
        active: dict[str, set[int]] = {}
        for job_id, mem, sql in zip(ids, mem_jobs, sql_jobs, strict=True):
            assert mem == sql, f"job {job_id}"
            if sql is None:
                assert job_id > len(self.job_ids)
                continue
            assert sql.num_retries <= self.max_retries
            assert sql.num_retries <= sql.attempt
            if sql.status is JobStatus.QUEUED:
                assert sql.worker is None
            elif sql.status in ACTIVE_STATUSES | FINAL_STATUSES:
                assert sql.worker is not None
                assert sql.last_heartbeat_at is not None
            if sql.status in ACTIVE_STATUSES and sql.worker is not None:
                active.setdefault(sql.worker, set()).add(sql.id)
        # The same events wait in both outboxes, as many as the test's own view says.
        mem_pending, sql_pending = self.both(lambda q, _: pending_events(q, self.job_ids))
        assert [[content(e) for e in line] for line in mem_pending] == [
            [content(e) for e in line] for line in sql_pending
        ]
        for job_id, line in zip(self.job_ids, sql_pending, strict=True):
            assert len(line) == len(self.outbox.get(job_id, [])), f"job {job_id}'s events"
        held: set[int] = set()
        mem_held, sql_held = self.both(lambda q, _: active_jobs(q))
        for worker, mem_list, sql_list in zip(WORKERS, mem_held, sql_held, strict=True):
            assert mem_list == sql_list
            ids_of_worker = {j.id for j in sql_list}
            assert ids_of_worker == active.get(worker, set())
            assert not ids_of_worker & held, "a job is active for two workers"
            held |= ids_of_worker


def held(job: Job) -> bool:
    """A job its worker may still report on."""
    return job.worker is not None and job.status in ACTIVE_STATUSES | FINAL_STATUSES


async def every_job(queue: Queue, ids: Sequence[int]) -> list[Job | None]:
    return [await queue.get(job_id) for job_id in ids]


async def pending_events(queue: Queue, ids: Sequence[int]) -> list[list[StatusEvent]]:
    return [await queue.pending_events_of(job_id) for job_id in ids]


async def active_jobs(queue: Queue) -> list[list[Job]]:
    return [await queue.active_jobs_of(worker) for worker in WORKERS]


def run_lockstep(kind: str, tmp_path: Path, postgres_url: str | None) -> None:
    examples = itertools.count()

    class Lockstep(QueueLockstep):
        """Each example: a fresh database in a directory of its own."""

        def __init__(self) -> None:
            workdir = tmp_path / f"example-{next(examples)}"
            workdir.mkdir()
            super().__init__(kind, workdir, postgres_url)

    run_state_machine_as_test(Lockstep, settings=SETTINGS)


def test_sqlite_queue_answers_like_the_reference_model(tmp_path: Path) -> None:
    run_lockstep("sqlite", tmp_path, None)


def test_postgres_queue_answers_like_the_reference_model(tmp_path: Path, postgres_url: str) -> None:
    run_lockstep("postgres", tmp_path, postgres_url)


@pytest.mark.parametrize(
    "kind",
    [
        "memory",
        "sqlite",
        "postgres",
    ],
)
async def test_completing_a_delivered_event_again_loses_no_other_event(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    pg = request.getfixturevalue("postgres_url") if kind == "postgres" else None
    worker = WorkerProfile(worker="w1", environment=Environment.LOCAL, cpu_cores=8, memory=16000)
    async with open_queue(kind, tmp_path, pg) as queue:
        await queue.add(submission(1), T0)
        (claimed,) = await queue.claim_jobs(worker, 1, T0, exclude_attempted=False, max_held=100)
        assert claimed.event is not None
        await queue.complete_events([claimed.event.id])
        ran = await queue.record_update(
            claimed.job, JobStatus.RUNNING, None, T0, forward=True, lease=False
        )
        assert ran is not None
        # Another deliverer, whose lease on the "pulled" event ran out, delivered it too.
        await queue.complete_events([claimed.event.id])
        leased = await queue.lease_events(T0, 30, 10)
        assert [(e.job_id, e.status) for e in leased] == [(ran.job.id, JobStatus.RUNNING)]
