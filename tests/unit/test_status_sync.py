"""Forwarding status changes to the user-facing API (ARCHITECTURE §3, §6 "Nothing lost"): in order
per job, at least once, retried with capped back-off while the upstream is down, and a job the
upstream reports deleted is cancelled here."""

from __future__ import annotations

import asyncio
import contextlib
import math
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.helpers import RecordingUpstream, Stack, make_stack, make_submission, worker_profile
from workerfacing_api.core.errors import JobNotFound
from workerfacing_api.core.lifecycle import RetryPolicy
from workerfacing_api.core.model import Delivery, Message, StatusEvent
from workerfacing_api.core.sync import Backoff

POLICY = RetryPolicy(max_retries=3, timeout_failure=300.0, retry_different=True)
# With jitter 0 a delay is half its ceiling: 1 s after the first failure, then 2 s, 4 s …
BACKOFF = Backoff(base=2.0, cap=60.0)
PATH = ["preprocessing", "running", "postprocessing", "finished"]


def stack_with(upstream: RecordingUpstream, *, jitter: float = 0.0) -> Stack:
    return make_stack(POLICY, upstream=upstream, backoff=BACKOFF, jitter=jitter)


def pending_of(stack: Stack, job_id: int) -> list[str]:
    return [e.status.value for e in stack.queue.pending_events() if e.job_id == job_id]


async def drain(stack: Stack, rounds: int = 50) -> None:
    """Let the background dispatcher run until nothing is left (time passing in between)."""
    for _ in range(rounds):
        stack.clock.advance(BACKOFF.cap)
        await stack.sync.dispatch_due()
        if not stack.queue.pending_events():
            return
    raise AssertionError(f"events still pending: {stack.queue.pending_events()}")


async def test_a_healthy_upstream_sees_every_change_at_once_in_order() -> None:
    upstream = RecordingUpstream()
    stack = stack_with(upstream)
    a = await stack.service.submit(make_submission(1))
    b = await stack.service.submit(make_submission(2))
    await stack.service.pull(worker_profile("w1"), 1)
    await stack.service.pull(worker_profile("w2"), 1)
    for status in PATH:
        await stack.service.update_status(a.id, "w1", status, None)
        await stack.service.update_status(b.id, "w2", status, None)

    expected = [("pulled", None)] + [(s, None) for s in PATH]
    assert upstream.delivered(1) == expected
    assert upstream.delivered(2) == expected
    assert stack.queue.pending_events() == []


async def test_a_retry_postpones_with_back_off_and_pauses_inline_delivery() -> None:
    upstream = RecordingUpstream()
    upstream.answers[1] = Delivery.RETRY
    stack = stack_with(upstream)
    a = await stack.service.submit(make_submission(1))
    await stack.service.submit(make_submission(2))

    (pulled,) = await stack.service.pull(worker_profile("w1"), 1)
    assert pulled.id == a.id  # a RETRY does not stop the worker from getting its job
    assert len(upstream.calls) == 1
    # Inline delivery is paused: neither another job's change nor this job's next one is sent.
    await stack.service.pull(worker_profile("w2"), 1)
    await stack.service.update_status(a.id, "w1", "preprocessing", None)
    assert len(upstream.calls) == 1
    assert pending_of(stack, a.id) == ["pulled", "preprocessing"]

    stack.clock.advance(0.9)  # the first retry of job 1 is due after 1 s
    assert await stack.sync.dispatch_due() == 1  # only job 2's change, which is due at once
    assert upstream.delivered(1) == []
    assert upstream.delivered(2) == [("pulled", None)]

    stack.clock.advance(0.1)
    assert await stack.sync.dispatch_due() == 0  # job 1 again: still down, no progress
    assert [e.status.value for e, _ in upstream.calls if e.upstream_id == 1] == ["pulled"] * 2
    stack.clock.advance(1.9)  # the second delay is twice the first
    assert await stack.sync.dispatch_due() == 0

    del upstream.answers[1]  # the upstream is back
    stack.clock.advance(0.1)
    await stack.sync.dispatch_due()
    await stack.sync.dispatch_due()
    assert upstream.delivered(1) == [("pulled", None), ("preprocessing", None)]
    assert stack.queue.pending_events() == []


async def test_inline_delivery_resumes_once_the_pause_is_over() -> None:
    upstream = RecordingUpstream()
    upstream.answers[1] = Delivery.RETRY
    stack = stack_with(upstream)
    for upstream_id in (1, 2, 3):
        await stack.service.submit(make_submission(upstream_id))
    await stack.service.pull(worker_profile("w1"), 1)  # job 1: RETRY, pauses inline delivery

    stack.clock.advance(4.9)
    await stack.service.pull(worker_profile("w2"), 1)
    assert upstream.delivered(2) == []
    stack.clock.advance(0.1)
    await stack.service.pull(worker_profile("w3"), 1)
    assert upstream.delivered(3) == [("pulled", None)]


async def test_gone_cancels_the_job_and_drops_its_pending_events() -> None:
    upstream = RecordingUpstream()
    upstream.answers[1] = Delivery.RETRY
    stack = stack_with(upstream)
    job = await stack.service.submit(make_submission(1))
    await stack.service.pull(worker_profile("w1"), 1)
    await stack.service.update_status(job.id, "w1", "preprocessing", None)
    await stack.service.update_status(job.id, "w1", "running", "epoch 1")
    assert pending_of(stack, job.id) == ["pulled", "preprocessing", "running"]

    upstream.answers[1] = Delivery.GONE  # the user deleted the job meanwhile
    stack.clock.advance(1)
    await stack.sync.dispatch_due()

    assert pending_of(stack, job.id) == []
    assert [outcome for _, outcome in upstream.calls] == [Delivery.RETRY, Delivery.GONE]
    with pytest.raises(JobNotFound):
        await stack.service.status_of(job.id)
    with pytest.raises(JobNotFound):  # the worker is told to stop
        await stack.service.update_status(job.id, "w1", "running", None)
    await drain(stack)
    assert len(upstream.calls) == 2


async def test_the_update_that_learns_of_a_delete_answers_404_and_so_does_every_later_one() -> None:
    upstream = RecordingUpstream()
    stack = stack_with(upstream)
    job = await stack.service.submit(make_submission(1))
    await stack.service.pull(worker_profile("w1"), 1)
    upstream.answers[1] = Delivery.GONE

    with pytest.raises(JobNotFound, match="deleted"):
        await stack.service.update_status(job.id, "w1", "running", None)
    with pytest.raises(JobNotFound):
        await stack.service.update_status(job.id, "w1", "running", None)
    with pytest.raises(JobNotFound):
        await stack.service.status_of(job.id)


async def test_a_pulled_job_deleted_upstream_is_not_handed_out_and_the_next_one_is() -> None:
    upstream = RecordingUpstream()
    upstream.answers[1] = Delivery.GONE
    stack = stack_with(upstream)
    deleted = await stack.service.submit(make_submission(1, priority=9))
    kept = await stack.service.submit(make_submission(2, priority=0))

    assert [j.id for j in await stack.service.pull(worker_profile("w1"), 1)] == [kept.id]
    with pytest.raises(JobNotFound):
        await stack.service.status_of(deleted.id)


async def test_a_superseded_job_never_reports_into_the_new_jobs_status() -> None:
    upstream = RecordingUpstream()
    upstream.answers[7] = Delivery.RETRY
    stack = stack_with(upstream)
    old = await stack.service.submit(make_submission(7))
    await stack.service.pull(worker_profile("w1"), 1)
    await stack.service.update_status(old.id, "w1", "running", None)
    new = await stack.service.submit(make_submission(7))
    del upstream.answers[7]

    assert pending_of(stack, old.id) == []
    await drain(stack)
    await stack.service.pull(worker_profile("w2"), 1)
    assert [e.job_id for e, o in upstream.calls if o is Delivery.DELIVERED] == [new.id]


async def test_a_superseded_finished_job_cannot_report_into_the_new_job() -> None:
    upstream = RecordingUpstream()
    stack = stack_with(upstream)
    old = await stack.service.submit(make_submission(7))
    await stack.service.pull(worker_profile("w1"), 1)
    await stack.service.update_status(old.id, "w1", "finished", "")
    await stack.service.submit(make_submission(7))
    before = len(upstream.calls)

    # The old job's worker repeats its final state with logs, as the DECODE worker may.
    with contextlib.suppress(JobNotFound):
        await stack.service.update_status(old.id, "w1", "finished", "old logs")
    await drain(stack)

    assert upstream.calls[before:] == []


async def test_dispatch_due_delivers_the_backlog_in_order_once_the_upstream_is_back() -> None:
    upstream = RecordingUpstream()
    stack = stack_with(upstream)
    jobs = [await stack.service.submit(make_submission(n)) for n in (1, 2, 3)]
    for n in (1, 2, 3):
        upstream.answers[n] = Delivery.RETRY
    for number, job in enumerate(jobs, start=1):
        await stack.service.pull(worker_profile(f"w{number}"), 1)
        for status in PATH[: number + 1]:
            stack.clock.advance(3)
            await stack.service.update_status(job.id, f"w{number}", status, None)
            await stack.sync.dispatch_due()
    assert not any(o is Delivery.DELIVERED for _, o in upstream.calls)

    upstream.answers.clear()
    await drain(stack)

    for number in (1, 2, 3):
        assert [s for s, _ in upstream.delivered(number)] == ["pulled", *PATH[: number + 1]]


# ---------------------------------------------------------------------------------------------
# Back-off

realistic_backoffs = st.builds(
    Backoff,
    base=st.floats(0.01, 10.0),
    cap=st.floats(10.0, 3600.0),
)


@given(
    backoff=realistic_backoffs,
    attempts=st.integers(0, 200),
    jitter=st.floats(0.0, 1.0, exclude_max=True),
)
def test_a_back_off_delay_is_capped_and_within_half_to_all_of_its_ceiling(
    backoff: Backoff, attempts: int, jitter: float
) -> None:
    ceiling = min(backoff.cap, backoff.base * 2**attempts)
    delay = backoff.delay(attempts, jitter)
    assert delay <= backoff.cap
    assert 0.5 * ceiling * (1 - 1e-12) <= delay <= ceiling * (1 + 1e-12)


@given(backoff=realistic_backoffs, jitter=st.floats(0.0, 1.0, exclude_max=True))
def test_a_back_off_delay_never_shrinks_and_survives_endless_failures(
    backoff: Backoff, jitter: float
) -> None:
    delays = [backoff.delay(n, jitter) for n in [*range(40), 10**6]]
    assert delays == sorted(delays)
    assert math.isfinite(delays[-1])
    assert delays[-1] <= backoff.cap


# ---------------------------------------------------------------------------------------------
# Any pattern of outages: in order per job, each change delivered exactly once in the end


class FlakyUpstream(RecordingUpstream):
    """Answers each call with the next outcome of a script (``DELIVERED`` once it runs out)."""

    def __init__(self, script: list[Delivery]) -> None:
        super().__init__()
        self.script = list(script)

    async def notify(self, event: Message, within: float) -> Delivery:
        assert isinstance(event, StatusEvent)  # no keep-alives in these runs
        outcome = self.script.pop(0) if self.script else Delivery.DELIVERED
        self.calls.append((event, outcome))
        return outcome


Op = (
    tuple[Literal["pull"], int]
    | tuple[Literal["progress"], int]
    | tuple[Literal["dispatch"], int]  # how many API processes dispatch at the same moment
    | tuple[Literal["wait"], float]
    | tuple[Literal["acknowledge"], int]  # what was delivered is acknowledged now
)
op_strategy = st.one_of(
    st.tuples(st.just("pull"), st.integers(0, 2)),
    st.tuples(st.just("progress"), st.integers(0, 2)),
    st.tuples(st.just("progress"), st.integers(0, 2)),
    st.tuples(st.just("dispatch"), st.integers(1, 3)),
    st.tuples(st.just("dispatch"), st.integers(1, 3)),
    st.tuples(st.just("wait"), st.sampled_from([0.0, 0.5, 1.0, 4.0, 30.0, 61.0])),
)


async def replay_outages(upstream: FlakyUpstream, stack: Stack, ops: list[Op]) -> None:
    jobs = [await stack.service.submit(make_submission(n)) for n in (1, 2, 3)]
    holder: dict[int, str] = {}
    progress: dict[int, int] = {}
    for op in ops:
        if op[0] == "pull":
            worker = f"w{op[1]}"
            for job in await stack.service.pull(worker_profile(worker), 1):
                holder[job.id] = worker
                progress[job.id] = 0
        elif op[0] == "progress":
            job_id = jobs[op[1]].id
            if job_id in holder and progress[job_id] < len(PATH):
                status = PATH[progress[job_id]]
                await stack.service.update_status(job_id, holder[job_id], status, None)
                progress[job_id] += 1
        elif op[0] == "dispatch":
            await asyncio.gather(*(stack.sync.dispatch_due() for _ in range(op[1])))
        elif op[0] == "acknowledge":
            await stack.sync.write_acknowledgements()
        else:
            stack.clock.advance(op[1])
    upstream.script.clear()  # the upstream is back for good
    await drain(stack)

    # In order: an event is only ever sent once every earlier event of its job was delivered.
    delivered: set[int] = set()
    produced: dict[int, list[int]] = {}
    for event, outcome in upstream.calls:
        assert isinstance(event, StatusEvent)  # every update here changes the state
        produced.setdefault(event.job_id, [])
        if event.id not in produced[event.job_id]:
            produced[event.job_id].append(event.id)
        earlier = [i for i in produced[event.job_id] if i < event.id]
        assert set(earlier) <= delivered, f"event {event.id} overtook an earlier one"
        if outcome is Delivery.DELIVERED:
            assert event.id not in delivered, f"event {event.id} delivered twice"
            delivered.add(event.id)
    # Nothing lost: each job's changes all arrived, in the order they happened.
    for job in jobs:
        expected = ["pulled", *PATH[: progress[job.id]]] if job.id in holder else []
        assert [s for s, _ in upstream.delivered(job.upstream_id)] == expected


@settings(max_examples=150, deadline=None)
@given(
    script=st.lists(
        st.sampled_from([Delivery.DELIVERED, Delivery.RETRY, Delivery.RETRY]), max_size=30
    ),
    ops=st.lists(op_strategy, max_size=40),
    jitter=st.floats(0.0, 1.0, exclude_max=True),
)
def test_any_pattern_of_outages_delivers_each_change_once_and_in_order(
    script: list[Delivery], ops: list[Op], jitter: float
) -> None:
    upstream = FlakyUpstream(script)
    stack = make_stack(POLICY, upstream=upstream, backoff=BACKOFF, jitter=jitter)
    asyncio.run(replay_outages(upstream, stack, ops))


# ---------------------------------------------------------------------------------------------
# Acknowledgements in batches (core.sync.Acknowledgements) in lock-step with one at a time


batched_op_strategy = st.one_of(op_strategy, st.tuples(st.just("acknowledge"), st.just(0)))


async def replay_in_lock_step(
    script: list[Delivery], ops: list[Op], jitter: float
) -> tuple[Stack, Stack, FlakyUpstream, FlakyUpstream]:
    """The same calls to a service that acknowledges each delivered event at once and to one
    that batches them (written only where the service must: before a lease, a cancellation, a
    submission, at the end, or when the test says ``acknowledge``; the timer never fires)."""
    sides = []
    for ack_delay in (0.0, 3600.0):
        upstream = FlakyUpstream(script)
        stack = make_stack(
            POLICY, upstream=upstream, backoff=BACKOFF, jitter=jitter, ack_delay=ack_delay
        )
        await replay_outages(upstream, stack, ops)
        sides.append((stack, upstream))
    (at_once, at_once_upstream), (batched, batched_upstream) = sides
    return at_once, batched, at_once_upstream, batched_upstream


@settings(max_examples=100, deadline=None)
@given(
    script=st.lists(
        st.sampled_from([Delivery.DELIVERED, Delivery.RETRY, Delivery.RETRY]), max_size=30
    ),
    ops=st.lists(batched_op_strategy, max_size=40),
    jitter=st.floats(0.0, 1.0, exclude_max=True),
)
def test_batched_acknowledgements_end_where_one_at_a_time_does(
    script: list[Delivery], ops: list[Op], jitter: float
) -> None:
    """Each side holds the outage invariants (in order per job, each change delivered once,
    nothing lost: ``replay_outages``). Once both are drained, they agree: the same jobs, the
    upstream's answers kept alike (upstream_ok_at), nothing left in either outbox or waiting
    to be acknowledged, and the upstream heard the same changes of each job."""
    at_once, batched, at_once_upstream, batched_upstream = asyncio.run(
        replay_in_lock_step(script, ops, jitter)
    )
    assert batched.queue.pending_events() == at_once.queue.pending_events() == []
    assert batched.sync.unacknowledged == ()
    for job_id in (1, 2, 3):
        assert asyncio.run(batched.queue.get(job_id)) == asyncio.run(at_once.queue.get(job_id))
        assert batched_upstream.delivered(job_id) == at_once_upstream.delivered(job_id)


# ---------------------------------------------------------------------------------------------
# Keep-alives (ARCHITECTURE §3): forwarded best effort, so that a user's delete reaches the worker.


async def running_job(stack: Stack) -> int:
    job = await stack.service.submit(make_submission(1))
    await stack.service.pull(worker_profile("w1"), 1)
    await stack.service.update_status(job.id, "w1", "running", None)
    return job.id


async def test_a_keep_alive_goes_upstream_at_most_once_per_interval_and_is_never_stored() -> None:
    upstream = RecordingUpstream()
    stack = stack_with(upstream)  # the default interval: 5 s
    job_id = await running_job(stack)
    assert upstream.delivered(1) == [("pulled", None), ("running", None)]

    stack.clock.advance(2)
    await stack.service.update_status(job_id, "w1", "running", None)  # too soon after "running"
    stack.clock.advance(3)
    await stack.service.update_status(job_id, "w1", "running", None)  # 5 s after: forwarded
    stack.clock.advance(1)
    await stack.service.update_status(job_id, "w1", "preprocessing", None)  # late: a keep-alive
    stack.clock.advance(4)
    await stack.service.update_status(job_id, "w1", "running", None)  # 5 s after the last one
    assert upstream.delivered(1) == [("pulled", None)] + [("running", None)] * 3
    assert stack.queue.pending_events() == []  # never queued in the outbox


async def test_a_keep_alive_never_overtakes_a_pending_change() -> None:
    upstream = RecordingUpstream()
    stack = stack_with(upstream)
    job_id = await running_job(stack)
    upstream.answers[1] = Delivery.RETRY  # "postprocessing" stays pending
    stack.clock.advance(6)
    await stack.service.update_status(job_id, "w1", "postprocessing", None)
    upstream.answers.pop(1)
    for _ in range(3):  # inline delivery pauses for 5 s after the failure
        stack.clock.advance(6)
        await stack.service.update_status(job_id, "w1", "postprocessing", None)
        assert pending_of(stack, job_id) == ["postprocessing"]
    assert [e.status.value for e, _ in upstream.calls] == [
        "pulled",
        "running",
        "postprocessing",
    ]
    await drain(stack)
    assert upstream.delivered(1)[-1] == ("postprocessing", None)


async def test_a_deleted_running_job_stops_its_worker_at_its_next_keep_alive() -> None:
    upstream = RecordingUpstream()
    stack = stack_with(upstream)
    job_id = await running_job(stack)
    upstream.answers[1] = Delivery.GONE  # the user deletes the job while it trains
    stack.clock.advance(10)  # the DECODE worker pings every 10 s
    with pytest.raises(JobNotFound, match="deleted"):
        await stack.service.update_status(job_id, "w1", "running", None)
    with pytest.raises(JobNotFound):
        await stack.service.update_status(job_id, "w1", "running", None)


async def test_keep_alives_are_not_forwarded_after_the_final_state_nor_without_an_upstream() -> (
    None
):
    upstream = RecordingUpstream()
    stack = stack_with(upstream)
    job_id = await running_job(stack)
    await stack.service.update_status(job_id, "w1", "finished", None)
    calls = len(upstream.calls)
    stack.clock.advance(60)
    await stack.service.update_status(job_id, "w1", "postprocessing", None)  # a no-op now
    assert len(upstream.calls) == calls

    plain = make_stack(POLICY)  # no upstream configured: nothing is forwarded, nothing fails
    job = await plain.service.submit(make_submission(2))
    await plain.service.pull(worker_profile("w1"), 1)
    plain.clock.advance(60)
    await plain.service.update_status(job.id, "w1", "running", None)


class HeldUpstream(RecordingUpstream):
    """An upstream slower than any wait: it answers only once the test lets it (``gate``)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.started = 0

    async def notify(self, event: Message, within: float) -> Delivery:
        self.started += 1
        await self.gate.wait()
        return await super().notify(event, within)


async def test_a_slow_upstream_does_not_hold_the_worker_and_nothing_is_sent_twice() -> None:
    upstream = HeldUpstream()
    stack = make_stack(POLICY, upstream=upstream, backoff=BACKOFF, inline_wait=0.01)
    job = await stack.service.submit(make_submission(1))
    # Every call returns while the upstream has not answered anything: the worker is held at
    # most the short inline wait, never for the upstream's answer.
    await stack.service.pull(worker_profile("w1"), 1)
    await stack.service.update_status(job.id, "w1", "running", None)
    await stack.service.update_status(job.id, "w1", "finished", None)
    assert upstream.calls == []
    assert upstream.started == 1  # the later changes wait for the first to be answered

    upstream.gate.set()  # the upstream answers at last
    await stack.sync.wait_idle(5)
    await drain(stack)
    await stack.sync.wait_idle(5)
    # Each change reached the upstream once: the deliveries the requests stopped waiting for
    # finished in the background instead of being sent again.
    assert upstream.delivered(1) == [("pulled", None), ("running", None), ("finished", None)]
    assert upstream.started == 3
