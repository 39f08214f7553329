"""Worker status updates (ARCHITECTURE §3): a job never moves backward or out of a final state,
whatever order the worker's requests arrive in; 422 for statuses a worker may not set, 409 for the
other final state, 404 for a job that is not (or no longer) the caller's."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.helpers import RecordingUpstream, Stack, make_stack, make_submission, worker_profile
from workerfacing_api.core.errors import InvalidStatus, JobNotFound, StatusConflict
from workerfacing_api.core.lifecycle import (
    RetryPolicy,
    UpdateDecision,
    decide_update,
    parse_worker_status,
)
from workerfacing_api.core.model import HardwareSpecs, Job, JobStatus, PathsUpload

# The forward order of ARCHITECTURE §3, written out here rather than taken from the model.
RANK = {
    "queued": 0,
    "pulled": 1,
    "preprocessing": 2,
    "running": 3,
    "postprocessing": 4,
    "finished": 5,
    "error": 5,
}
FINAL = {"finished", "error"}
WORKER_TARGETS = ["preprocessing", "running", "postprocessing", "finished", "error"]
NOT_FOR_WORKERS = ["queued", "pulled", "cancelled", "bogus", "", "RUNNING", "finished "]
DETAILS: list[str | None] = [None, "", "epoch 3/10", "Traceback (most recent call last): …"]

POLICY = RetryPolicy(max_retries=2, timeout_failure=30.0, retry_different=True)


def snapshot(status: str) -> Job:
    return Job(
        id=7,
        upstream_id=7,
        status=JobStatus(status),
        environment=None,
        group=None,
        priority=0,
        hardware=HardwareSpecs(),
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        spec=b"{}",
        paths_upload=PathsUpload(output="/o", log="/l", artifact="/a"),
        worker="w1",
        attempt=1,
        last_heartbeat_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


# ---------------------------------------------------------------------------------------------
# The pure decision


@pytest.mark.parametrize("value", NOT_FOR_WORKERS)
def test_a_worker_cannot_set_statuses_outside_its_part_of_the_lifecycle(value: str) -> None:
    with pytest.raises(InvalidStatus) as caught:
        parse_worker_status(value)
    assert "preprocessing" in caught.value.detail  # the error says what is allowed


@pytest.mark.parametrize("value", WORKER_TARGETS)
def test_a_worker_may_set_each_status_of_its_part_of_the_lifecycle(value: str) -> None:
    assert parse_worker_status(value).value == value


@given(
    start=st.sampled_from(["pulled", "preprocessing", "running", "postprocessing", *FINAL]),
    target=st.sampled_from(WORKER_TARGETS),
    details=st.sampled_from(DETAILS),
)
def test_decide_update_never_moves_a_job_back_or_out_of_a_final_state(
    start: str, target: str, details: str | None
) -> None:
    job = snapshot(start)
    if start in FINAL and target in FINAL and target != start:
        with pytest.raises(StatusConflict):
            decide_update(job, JobStatus(target), details)
        return
    decision = decide_update(job, JobStatus(target), details)
    if start in FINAL:
        # Final is final; only the same final state again is news (it carries the logs).
        assert decision == UpdateDecision(
            status=JobStatus(start),
            forward=target == start and bool(details),
        )
    else:
        moves = RANK[target] > RANK[start]
        assert decision.status.value == (target if moves else start)
        assert decision.forward is (moves or bool(details))


# ---------------------------------------------------------------------------------------------
# Sequences of worker requests through the service

Step = (
    tuple[Literal["update"], str, str, str | None]  # worker, status, runtime_details
    | tuple[Literal["timeout"]]  # the worker falls silent; the sweeper re-queues the job
    | tuple[Literal["supersede"]]  # the user-facing API submits a job reusing meta.job_id
    | tuple[Literal["deleted"]]  # the user-facing API reports the job deleted (404)
)

updates = st.tuples(
    st.just("update"),
    st.sampled_from(["w1", "w1", "w1", "w10", "w2"]),
    st.sampled_from(WORKER_TARGETS * 3 + NOT_FOR_WORKERS),
    st.sampled_from(DETAILS),
)
random_steps = st.lists(
    st.one_of(
        updates,
        updates,
        updates,
        updates,
        st.sampled_from([("timeout",), ("supersede",), ("deleted",)]),
    ),
    max_size=25,
)


@st.composite
def real_worker_steps(draw: st.DrawFn) -> list[Step]:
    """What the DECODE worker sends: preprocessing pings, running, postprocessing while
    uploading, then ``finished`` with empty details — or on failure ``error``, ``postprocessing``
    while it uploads the logs, and ``error`` with the last 1 000 characters of the logs. Retried
    requests may arrive twice or late."""
    steps: list[Step] = []

    def send(status: str, details: str | None = None) -> None:
        for _ in range(draw(st.integers(1, 3))):  # retried by `requests` on 5xx
            steps.append(("update", "w1", status, details))

    for _ in range(draw(st.integers(1, 4))):
        send("preprocessing")
    send("running")
    failed = draw(st.booleans())
    if not failed:
        send("postprocessing")
        send("finished", "")
    else:
        send("error")
        send("postprocessing")
        send("error", "x" * 1000)
    # A late duplicate of an earlier request may still arrive.
    late = draw(st.lists(st.sampled_from(["preprocessing", "running", "postprocessing"])))
    steps.extend(("update", "w1", status, None) for status in late)
    return steps


async def play(stack: Stack, upstream: RecordingUpstream, steps: list[Step]) -> None:
    """Run ``steps`` against a job pulled by ``w1``, checking each answer against ARCHITECTURE
    §3."""
    service = stack.service
    job = await service.submit(make_submission(1))
    (pulled,) = await service.pull(worker_profile("w1"), 1)
    assert pulled.id == job.id
    state = "pulled"
    held = True  # the job is still w1's: not re-queued, superseded or deleted
    expected_events = ["pulled"]

    for step in steps:
        if step[0] == "timeout":
            stack.clock.advance(POLICY.timeout_failure + 1)
            report = await service.sweep()
            if held and state not in FINAL:
                assert job.id in report.requeued + report.failed
                state = "queued" if job.id in report.requeued else "error"
                held = state == "error"  # a failed job stays its worker's; a re-queued one not
                expected_events.append(state)
            else:
                assert job.id not in report.requeued + report.failed
            continue
        if step[0] == "supersede":
            await service.submit(make_submission(1))
            if state in FINAL:
                # ARCHITECTURE §3 speaks of queued or active jobs; a final one may stay or go.
                old = await stack.queue.get(job.id)
                assert old is not None
                assert old.status.value in {state, "cancelled"}
                state = old.status.value
            else:
                state = "cancelled"
            held = held and state in FINAL
            continue
        if step[0] == "deleted":
            await stack.queue.cancel(job.id, stack.clock.now())
            held = False
            state = "cancelled"
            continue

        _, worker, status, details = step
        previous = await stack.queue.get(job.id)
        assert previous is not None
        if status not in WORKER_TARGETS:
            with pytest.raises(InvalidStatus):
                await service.update_status(job.id, worker, status, details)
        elif worker != "w1" or not held:
            with pytest.raises(JobNotFound):
                await service.update_status(job.id, worker, status, details)
        elif state in FINAL and status in FINAL and status != state:
            with pytest.raises(StatusConflict):
                await service.update_status(job.id, worker, status, details)
        else:
            updated = await service.update_status(job.id, worker, status, details)
            if state in FINAL:
                if status == state and details:
                    expected_events.append(state)
            elif RANK[status] > RANK[state]:
                state = status
                expected_events.append(state)
            elif details:
                expected_events.append(state)  # a keep-alive that carries news
            assert updated.status.value == state
        current = await stack.queue.get(job.id)
        assert current is not None
        assert current.status.value == state
        if previous.status.value in FINAL:
            assert current.status is previous.status, "a worker update left a final state"
        elif previous.status.value in RANK:
            assert RANK[current.status.value] >= RANK[previous.status.value], "moved back"
        assert [e.status.value for e, _ in upstream.calls if e.job_id == job.id] == expected_events


@settings(max_examples=150, deadline=None)
@given(steps=st.one_of(random_steps, real_worker_steps()))
def test_no_sequence_of_worker_updates_moves_a_job_back_or_out_of_a_final_state(
    steps: list[Step],
) -> None:
    upstream = RecordingUpstream()
    stack = make_stack(POLICY, upstream=upstream)
    asyncio.run(play(stack, upstream, steps))


# ---------------------------------------------------------------------------------------------
# Examples a worker would notice


async def pulled_job(stack: Stack, worker: str = "w1") -> int:
    await stack.service.submit(make_submission(1))
    (job,) = await stack.service.pull(worker_profile(worker), 1)
    return job.id


async def test_the_real_workers_success_path_ends_finished_and_forwards_each_change_once() -> None:
    upstream = RecordingUpstream()
    stack = make_stack(POLICY, upstream=upstream)
    job_id = await pulled_job(stack)
    for status in ["preprocessing"] * 3 + ["running", "postprocessing", "finished"]:
        details = "" if status == "finished" else None
        await stack.service.update_status(job_id, "w1", status, details)

    assert await stack.service.status_of(job_id) is JobStatus.FINISHED
    assert upstream.delivered() == [
        ("pulled", None),
        ("preprocessing", None),
        ("running", None),
        ("postprocessing", None),
        ("finished", ""),
    ]


async def test_the_real_workers_failure_path_keeps_error_and_forwards_the_logs() -> None:
    upstream = RecordingUpstream()
    stack = make_stack(POLICY, upstream=upstream)
    job_id = await pulled_job(stack)
    await stack.service.update_status(job_id, "w1", "preprocessing", None)
    await stack.service.update_status(job_id, "w1", "error", None)
    # While uploading the logs of the failed job the worker pings postprocessing: a no-op.
    await stack.service.update_status(job_id, "w1", "postprocessing", None)
    logs = "CUDA out of memory" * 50
    job = await stack.service.update_status(job_id, "w1", "error", logs)

    assert job.status is JobStatus.ERROR
    assert job.runtime_details == logs
    assert await stack.service.status_of(job_id) is JobStatus.ERROR
    assert upstream.delivered() == [
        ("pulled", None),
        ("preprocessing", None),
        ("error", None),
        ("error", logs),
    ]


async def test_a_late_request_is_a_keep_alive_and_does_not_move_the_job_back() -> None:
    stack = make_stack(POLICY)
    job_id = await pulled_job(stack)
    await stack.service.update_status(job_id, "w1", "running", None)
    stack.clock.advance(10)
    job = await stack.service.update_status(job_id, "w1", "preprocessing", None)
    assert job.status is JobStatus.RUNNING
    assert job.last_heartbeat_at == stack.clock.now()


@pytest.mark.parametrize("value", ["queued", "pulled", "unknown"])
async def test_a_status_a_worker_may_not_set_is_refused_and_changes_nothing(value: str) -> None:
    stack = make_stack(POLICY)
    job_id = await pulled_job(stack)
    await stack.service.update_status(job_id, "w1", "running", None)
    with pytest.raises(InvalidStatus):
        await stack.service.update_status(job_id, "w1", value, None)
    assert await stack.service.status_of(job_id) is JobStatus.RUNNING


@pytest.mark.parametrize(("first", "second"), [("finished", "error"), ("error", "finished")])
async def test_the_other_final_state_is_a_conflict(first: str, second: str) -> None:
    stack = make_stack(POLICY)
    job_id = await pulled_job(stack)
    await stack.service.update_status(job_id, "w1", first, None)
    with pytest.raises(StatusConflict):
        await stack.service.update_status(job_id, "w1", second, None)
    assert (await stack.service.status_of(job_id)).value == first
    # The same final state again is accepted.
    assert (await stack.service.update_status(job_id, "w1", first, "logs")).status.value == first


@pytest.mark.parametrize("other", ["w10", "w", "W1", "w1 ", ""])
async def test_another_worker_cannot_update_the_job(other: str) -> None:
    stack = make_stack(POLICY)
    job_id = await pulled_job(stack, "w1")
    with pytest.raises(JobNotFound):
        await stack.service.update_status(job_id, other, "running", None)
    assert await stack.service.status_of(job_id) is JobStatus.PULLED


@pytest.mark.parametrize("job_id", [0, -1, 2, 2**63, 10**30])
async def test_an_unknown_job_is_not_found(job_id: int) -> None:
    stack = make_stack(POLICY)
    await pulled_job(stack)
    with pytest.raises(JobNotFound):
        await stack.service.update_status(job_id, "w1", "running", None)
    with pytest.raises(JobNotFound):
        await stack.service.status_of(job_id)


async def test_a_job_re_queued_after_a_timeout_is_no_longer_the_workers() -> None:
    stack = make_stack(POLICY)
    job_id = await pulled_job(stack)
    stack.clock.advance(POLICY.timeout_failure + 1)
    assert (await stack.service.sweep()).requeued == (job_id,)
    with pytest.raises(JobNotFound):
        await stack.service.update_status(job_id, "w1", "running", None)
    assert await stack.service.status_of(job_id) is JobStatus.QUEUED


async def test_a_job_deleted_upstream_answers_not_found_to_its_worker() -> None:
    stack = make_stack(POLICY)
    job_id = await pulled_job(stack)
    await stack.queue.cancel(job_id, stack.clock.now())
    with pytest.raises(JobNotFound):
        await stack.service.update_status(job_id, "w1", "running", None)
    with pytest.raises(JobNotFound):
        await stack.service.status_of(job_id)
