"""The queue's use cases over the in-memory reference queue (ARCHITECTURE §3): any interleaving of
submissions, pulls, worker updates, upstream deletions and sweeps keeps every job in one state,
with one holder, within its retry budget; plus the sweep, supersede and pull-limit rules."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any, TypeVar

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tests.unit.helpers import (
    JobRecord,
    RecordingUpstream,
    Stack,
    make_stack,
    make_submission,
    reference_pull,
    worker_profile,
)
from tests.unit.test_matching import job_fields, profiles
from workerfacing_api.core.errors import (
    InvalidRequest,
    InvalidStatus,
    JobNotFound,
    StatusConflict,
    Unavailable,
)
from workerfacing_api.core.fleet import AsidePolicy
from workerfacing_api.core.jobs import MAX_PULL_LIMIT
from workerfacing_api.core.lifecycle import RetryPolicy
from workerfacing_api.core.model import Environment, Job, JobStatus, SweepReport, WorkerProfile
from workerfacing_api.core.text import MAX_RUNTIME_DETAILS, trim_details

T = TypeVar("T")

WORKERS = ["w1", "w10", "w2"]
ACTIVE = {JobStatus.PULLED, JobStatus.PREPROCESSING, JobStatus.RUNNING, JobStatus.POSTPROCESSING}
FINAL = {JobStatus.FINISHED, JobStatus.ERROR}
RANK = {
    JobStatus.PULLED: 1,
    JobStatus.PREPROCESSING: 2,
    JobStatus.RUNNING: 3,
    JobStatus.POSTPROCESSING: 4,
}
TARGETS = ["preprocessing", "running", "postprocessing", "finished", "error"]

# Workers that fit most jobs, so that interleavings are busy, mixed with arbitrary ones.
busy_workers = st.one_of(
    profiles,
    st.builds(
        worker_profile,
        st.sampled_from(WORKERS),
        environment=st.sampled_from(list(Environment)),
        cpu_cores=st.just(16),
        memory=st.just(16000),
        gpu_mem=st.just(16000),
        gpu_model=st.sampled_from([None, "A100", "T4"]),
        gpu_archi=st.sampled_from([None, "ampere", "turing"]),
        groups=st.lists(st.sampled_from(["g1", "g2", "g3"]), unique=True, max_size=2).map(tuple),
    ),
)


class QueueMachine(RuleBasedStateMachine):
    """Drives ``JobService`` and keeps its own model of every job, written from ARCHITECTURE §3."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.stack: Stack | None = None
        self.policy = RetryPolicy()
        self.records: list[JobRecord] = []
        self.handed: set[tuple[int, int]] = set()  # (job id, attempt) returned by some pull

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    @property
    def service(self) -> Any:
        assert self.stack is not None
        return self.stack.service

    def record(self, job_id: int) -> JobRecord | None:
        return next((r for r in self.records if r.id == job_id), None)

    def pick_id(self, pick: int) -> int:
        """One of the jobs, or (one time in len + 1) an id the queue never issued."""
        ids = [r.id for r in self.records]
        ids.append(max(ids, default=0) + 1)
        return ids[pick % len(ids)]

    @initialize(
        retry_different=st.booleans(),
        max_retries=st.integers(0, 2),
        jobs=st.lists(st.tuples(job_fields, st.integers(1, 20)), max_size=6),
    )
    def start(
        self, retry_different: bool, max_retries: int, jobs: list[tuple[dict[str, Any], int]]
    ) -> None:
        self.policy = RetryPolicy(
            max_retries=max_retries, timeout_failure=30.0, retry_different=retry_different
        )
        # The rules this machine models: the job lifecycle and the pull (reference_pull). A
        # worker set aside for its failures is the fleet's rule, modelled and tested in
        # test_fleet_contract.py: the service here never sets one aside (after_failures=0), so
        # that the model covers every rule the service applies.
        self.stack = make_stack(self.policy, aside=AsidePolicy(after_failures=0))
        for fields, upstream_id in jobs:
            self.submit(fields, upstream_id)

    @rule(fields=job_fields, upstream_id=st.integers(1, 20))
    def submit(self, fields: dict[str, Any], upstream_id: int) -> None:
        assert self.stack is not None
        job = self.run(self.service.submit(make_submission(upstream_id, **fields)))
        for old in self.records:
            if old.upstream_id != upstream_id or old.status is JobStatus.CANCELLED:
                continue
            if old.status is JobStatus.QUEUED or old.status in ACTIVE:
                old.status = JobStatus.CANCELLED  # superseded (ARCHITECTURE §3)
            else:
                # The design only speaks of queued or active jobs; a final one may stay final
                # or be cancelled, but nothing else.
                now = self.run(self.stack.queue.get(old.id))
                assert now is not None
                assert now.status in {old.status, JobStatus.CANCELLED}
                old.status = now.status
        self.records.append(
            JobRecord(
                id=job.id,
                upstream_id=upstream_id,
                environment=fields["environment"],
                group=fields["group"],
                priority=fields["priority"],
                hardware=fields["hardware"],
                created_at=self.stack.clock.now(),
            )
        )

    def apply_pull(self, profile: WorkerProfile, got: list[Job]) -> None:
        assert self.stack is not None
        for job in got:
            rec = self.record(job.id)
            assert rec is not None
            assert rec.status is JobStatus.QUEUED, "a job that was not queued was handed out"
            assert job.attempt == rec.attempt + 1
            assert (job.id, job.attempt) not in self.handed, "one attempt handed out twice"
            self.handed.add((job.id, job.attempt))
            rec.status = JobStatus.PULLED
            rec.worker = profile.worker
            rec.attempt = job.attempt
            rec.heartbeat = self.stack.clock.now()
            rec.tried.append(profile.worker)

    @rule(profile=busy_workers, limit=st.integers(1, 3))
    def pull(self, profile: WorkerProfile, limit: int) -> None:
        assert self.stack is not None
        expected = reference_pull(
            self.records,
            profile,
            limit,
            self.stack.clock.now(),
            retry_different=self.policy.retry_different,
        )
        got: list[Job] = self.run(self.service.pull(profile, limit))
        assert [j.id for j in got] == expected
        self.apply_pull(profile, got)

    @rule(group=st.lists(busy_workers, min_size=2, max_size=4), limit=st.integers(1, 3))
    def pull_at_once(self, group: list[WorkerProfile], limit: int) -> None:
        """Several workers pull at the same time: no job goes to two of them."""

        async def together() -> list[list[Job]]:
            return list(await asyncio.gather(*(self.service.pull(p, limit) for p in group)))

        results = self.run(together())
        ids = [j.id for got in results for j in got]
        assert len(ids) == len(set(ids)), "a job was handed to two workers"
        for profile, got in zip(group, results, strict=True):
            self.apply_pull(profile, got)

    @rule(
        worker=st.sampled_from(WORKERS),
        pick=st.integers(0, 1000),
        status=st.sampled_from(TARGETS * 4 + ["queued", "pulled", "bogus"]),
        details=st.sampled_from([None, "", "logs"]),
    )
    def update(self, worker: str, pick: int, status: str, details: str | None) -> None:
        self.check_update(worker, self.pick_id(pick), status, details)

    def check_update(self, worker: str, job_id: int, status: str, details: str | None) -> None:
        assert self.stack is not None
        rec = self.record(job_id)
        call = self.service.update_status(job_id, worker, status, details)
        if status not in TARGETS:
            with pytest.raises(InvalidStatus):
                self.run(call)
            return
        if (
            rec is None
            or rec.worker != worker
            or rec.status is JobStatus.CANCELLED
            or rec.status is JobStatus.QUEUED
        ):
            with pytest.raises(JobNotFound):
                self.run(call)
            return
        target = JobStatus(status)
        if rec.status in FINAL and target in FINAL and target is not rec.status:
            with pytest.raises(StatusConflict):
                self.run(call)
            return
        job: Job = self.run(call)
        if rec.status in ACTIVE and (target in FINAL or RANK[target] > RANK[rec.status]):
            rec.status = target  # forward only; final states stay as they are
        rec.heartbeat = self.stack.clock.now()
        assert job.status is rec.status

    @precondition(lambda self: any(r.worker is not None for r in self.records))
    @rule(
        pick=st.integers(0, 1000),
        status=st.sampled_from(TARGETS),
        details=st.sampled_from([None, "", "logs"]),
    )
    def update_by_holder(self, pick: int, status: str, details: str | None) -> None:
        """The worker a job was last handed to reports on it (it may since have lost it)."""
        held = [r for r in self.records if r.worker is not None]
        rec = held[pick % len(held)]
        assert rec.worker is not None
        self.check_update(rec.worker, rec.id, status, details)

    @rule(pick=st.integers(0, 1000))
    def upstream_deletes(self, pick: int) -> None:
        """What ``StatusSync`` does when the user-facing API answers 404 for a job."""
        assert self.stack is not None
        job_id = self.pick_id(pick)
        rec = self.record(job_id)
        cancelled = self.run(self.stack.queue.cancel(job_id, self.stack.clock.now()))
        assert cancelled is (rec is not None and rec.status is not JobStatus.CANCELLED)
        if rec is not None:
            rec.status = JobStatus.CANCELLED

    @rule(seconds=st.sampled_from([0.0, 0.5, 1.0, 5.0, 10.0, 29.0, 30.0, 31.0, 45.0]))
    def advance(self, seconds: float) -> None:
        assert self.stack is not None
        self.stack.clock.advance(seconds)

    @rule(seconds=st.sampled_from([0.0, 15.0, 30.0, 31.0, 60.0]))
    def sweep(self, seconds: float) -> None:
        """Time passes, then the sweeper runs."""
        assert self.stack is not None
        now = self.stack.clock.advance(seconds)
        silent_since = now - timedelta(seconds=self.policy.timeout_failure)
        expected_requeued: set[int] = set()
        expected_failed: set[int] = set()
        for rec in self.records:
            if rec.status not in ACTIVE:
                continue
            assert rec.heartbeat is not None
            if rec.heartbeat >= silent_since:
                continue  # heard from within the timeout
            if rec.num_retries >= self.policy.max_retries:
                rec.status = JobStatus.ERROR
                expected_failed.add(rec.id)
            else:
                rec.status = JobStatus.QUEUED
                rec.worker = None
                rec.num_retries += 1
                expected_requeued.add(rec.id)
        report = self.run(self.service.sweep())
        assert set(report.requeued) == expected_requeued
        assert set(report.failed) == expected_failed

    @invariant()
    def every_job_is_where_the_model_says(self) -> None:
        if self.stack is not None:
            self.run(self.check_jobs(self.stack))

    async def check_jobs(self, stack: Stack) -> None:
        for rec in self.records:
            job = await stack.queue.get(rec.id)
            assert job is not None
            assert job.status is rec.status, f"job {rec.id}"
            assert job.attempt == rec.attempt
            assert job.num_retries == rec.num_retries
            assert job.num_retries <= self.policy.max_retries
            if rec.status in ACTIVE or rec.status in FINAL:
                assert job.worker == rec.worker
            if rec.status is JobStatus.CANCELLED:
                with pytest.raises(JobNotFound):
                    await stack.service.status_of(rec.id)
            else:
                assert await stack.service.status_of(rec.id) is rec.status

    @invariant()
    def no_job_is_held_by_two_workers(self) -> None:
        if self.stack is not None:
            self.run(self.check_holders(self.stack))

    async def check_holders(self, stack: Stack) -> None:
        seen: set[int] = set()
        for worker in WORKERS:
            held = {j.id for j in await stack.queue.active_jobs_of(worker)}
            assert not held & seen, "a job is active for two workers"
            seen |= held
            assert held == {r.id for r in self.records if r.status in ACTIVE and r.worker == worker}

    def teardown(self) -> None:
        self.loop.close()


QueueMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
TestQueueInterleavings = QueueMachine.TestCase


# ---------------------------------------------------------------------------------------------
# Sweep

POLICY = RetryPolicy(max_retries=2, timeout_failure=30.0, retry_different=True)


async def pull_one(stack: Stack, worker: str) -> Job:
    (job,) = await stack.service.pull(worker_profile(worker), 1)
    return job


async def test_a_silent_job_is_re_queued_naming_the_timeout_and_the_workers_tried() -> None:
    upstream = RecordingUpstream()
    stack = make_stack(POLICY, upstream=upstream)
    job = await stack.service.submit(make_submission(1))
    await pull_one(stack, "w1")
    stack.clock.advance(31)

    report = await stack.service.sweep()

    assert report.requeued == (job.id,)
    assert report.failed == ()
    requeued = await stack.queue.get(job.id)
    assert requeued is not None
    assert requeued.status is JobStatus.QUEUED
    assert requeued.num_retries == 1
    assert requeued.runtime_details is not None
    assert "timeout" in requeued.runtime_details
    assert "30" in requeued.runtime_details  # the TIMEOUT_FAILURE that ran out
    assert "w1" in requeued.runtime_details
    assert upstream.delivered()[-1] == ("queued", requeued.runtime_details)

    await pull_one(stack, "w2")
    stack.clock.advance(31)
    await stack.service.sweep()
    again = await stack.queue.get(job.id)
    assert again is not None
    assert again.num_retries == 2
    assert again.runtime_details is not None
    assert "w1" in again.runtime_details
    assert "w2" in again.runtime_details


async def test_a_job_that_used_up_its_retries_ends_in_error() -> None:
    upstream = RecordingUpstream()
    stack = make_stack(POLICY, upstream=upstream)
    job = await stack.service.submit(make_submission(1))
    for worker in ["w1", "w2"]:
        await pull_one(stack, worker)
        stack.clock.advance(31)
        assert (await stack.service.sweep()).requeued == (job.id,)
    await pull_one(stack, "w3")
    stack.clock.advance(31)

    report = await stack.service.sweep()

    assert report.failed == (job.id,)
    failed = await stack.queue.get(job.id)
    assert failed is not None
    assert failed.status is JobStatus.ERROR
    assert failed.num_retries == POLICY.max_retries
    assert failed.runtime_details is not None
    assert "max retries reached" in failed.runtime_details
    assert upstream.delivered()[-1] == ("error", failed.runtime_details)
    assert await stack.service.pull(worker_profile("w4"), 1) == []


async def test_with_no_retries_allowed_the_first_timeout_fails_the_job() -> None:
    stack = make_stack(RetryPolicy(max_retries=0, timeout_failure=30.0))
    job = await stack.service.submit(make_submission(1))
    await pull_one(stack, "w1")
    stack.clock.advance(31)
    assert (await stack.service.sweep()).failed == (job.id,)


async def test_a_keep_alive_just_before_the_sweep_keeps_the_job() -> None:
    stack = make_stack(POLICY)
    job = await stack.service.submit(make_submission(1))
    await pull_one(stack, "w1")
    stack.clock.advance(29)
    await stack.service.update_status(job.id, "w1", "preprocessing", None)
    stack.clock.advance(29)  # 58 s since the pull, 29 s since the keep-alive
    assert await stack.service.sweep() == SweepReport()
    assert await stack.service.status_of(job.id) is JobStatus.PREPROCESSING

    stack.clock.advance(1)  # exactly TIMEOUT_FAILURE: not yet older than it
    assert (await stack.service.sweep()).requeued == ()
    stack.clock.advance(0.5)
    assert (await stack.service.sweep()).requeued == (job.id,)


async def test_a_final_job_is_never_swept() -> None:
    stack = make_stack(POLICY)
    job = await stack.service.submit(make_submission(1))
    await pull_one(stack, "w1")
    await stack.service.update_status(job.id, "w1", "finished", "")
    stack.clock.advance(10_000)
    report = await stack.service.sweep()
    assert job.id not in report.requeued + report.failed
    assert await stack.service.status_of(job.id) is JobStatus.FINISHED


async def test_a_long_error_report_lands_with_its_end_kept() -> None:
    upstream = RecordingUpstream()
    stack = make_stack(POLICY, upstream=upstream)
    job = await stack.service.submit(make_submission(1))
    await pull_one(stack, "w1")
    details = "log line\n" * 5_000 + "RuntimeError: CUDA out of memory"
    failed = await stack.service.update_status(job.id, "w1", "error", details)
    assert failed.status is JobStatus.ERROR
    assert failed.runtime_details == trim_details(details)
    assert len(failed.runtime_details) == MAX_RUNTIME_DETAILS
    assert failed.runtime_details.endswith("RuntimeError: CUDA out of memory")
    assert upstream.delivered()[-1] == ("error", trim_details(details))


async def test_retry_different_compares_worker_identities_exactly() -> None:
    stack = make_stack(POLICY)
    job = await stack.service.submit(make_submission(1))
    await pull_one(stack, "w10")
    stack.clock.advance(31)
    await stack.service.sweep()

    assert await stack.service.pull(worker_profile("w10"), 1) == []
    assert [j.id for j in await stack.service.pull(worker_profile("w1"), 1)] == [job.id]


async def test_without_retry_different_the_same_worker_may_get_the_job_again() -> None:
    stack = make_stack(RetryPolicy(max_retries=2, timeout_failure=30.0, retry_different=False))
    job = await stack.service.submit(make_submission(1))
    await pull_one(stack, "w1")
    stack.clock.advance(31)
    await stack.service.sweep()
    assert [j.id for j in await stack.service.pull(worker_profile("w1"), 1)] == [job.id]


# ---------------------------------------------------------------------------------------------
# Supersede


async def test_a_submission_reusing_meta_job_id_cancels_the_active_older_job() -> None:
    stack = make_stack(POLICY)
    old = await stack.service.submit(make_submission(7))
    await pull_one(stack, "w1")
    new = await stack.service.submit(make_submission(7))

    assert new.id != old.id
    with pytest.raises(JobNotFound):
        await stack.service.status_of(old.id)
    with pytest.raises(JobNotFound):  # the old job's worker is told to stop
        await stack.service.update_status(old.id, "w1", "running", None)
    assert await stack.service.status_of(new.id) is JobStatus.QUEUED
    assert [j.id for j in await stack.service.pull(worker_profile("w2"), 5)] == [new.id]


async def test_a_submission_reusing_meta_job_id_replaces_the_queued_older_job() -> None:
    stack = make_stack(POLICY)
    old = await stack.service.submit(make_submission(7))
    other = await stack.service.submit(make_submission(8))
    new = await stack.service.submit(make_submission(7))
    with pytest.raises(JobNotFound):
        await stack.service.status_of(old.id)
    pulled = [j.id for j in await stack.service.pull(worker_profile("w1"), 5)]
    assert sorted(pulled) == sorted([other.id, new.id])


# ---------------------------------------------------------------------------------------------
# Pull limit


@pytest.mark.parametrize("limit", [0, -1, MAX_PULL_LIMIT + 1, 10**9])
async def test_a_pull_limit_out_of_range_is_refused_and_hands_out_nothing(limit: int) -> None:
    stack = make_stack(POLICY)
    job = await stack.service.submit(make_submission(1))
    with pytest.raises(InvalidRequest) as caught:
        await stack.service.pull(worker_profile("w1"), limit)
    assert str(MAX_PULL_LIMIT) in caught.value.detail
    assert await stack.service.status_of(job.id) is JobStatus.QUEUED


async def test_a_pull_hands_out_at_most_limit_jobs() -> None:
    stack = make_stack(POLICY, max_jobs_per_node=1000)
    for upstream_id in range(1, MAX_PULL_LIMIT + 3):
        await stack.service.submit(make_submission(upstream_id))
    assert len(await stack.service.pull(worker_profile("w1"), 2)) == 2
    assert len(await stack.service.pull(worker_profile("w1"), MAX_PULL_LIMIT)) == MAX_PULL_LIMIT


async def test_a_node_holds_at_most_max_jobs_per_node() -> None:
    """A pull answers only what fits under the node's cap; a job ended frees a place, and the
    cap is the node's: another node of the account, or one with an instance id, pulls on."""
    stack = make_stack(POLICY, max_jobs_per_node=3)
    for upstream_id in range(1, 11):
        await stack.service.submit(make_submission(upstream_id))
    gpu0 = worker_profile("lab", address="10.0.0.5")
    held = await stack.service.pull(gpu0, 100)
    assert len(held) == 3
    assert await stack.service.pull(gpu0, 1) == []
    await stack.service.update_status(held[0].id, "lab", "finished", None)
    assert len(await stack.service.pull(gpu0, 100)) == 1
    other_machine = worker_profile("lab", address="10.0.0.6")
    assert len(await stack.service.pull(other_machine, 100)) == 3
    same_machine_gpu1 = worker_profile("lab", address="10.0.0.5", instance="gpu1")
    assert len(await stack.service.pull(same_machine_gpu1, 100)) == 3


async def test_time_the_database_was_down_does_not_count_as_silence() -> None:
    """After an outage longer than TIMEOUT_FAILURE, workers whose keep-alives failed with 503
    meanwhile keep their jobs; a job silent before the outage still times out, counting only
    the time the database could be reached."""
    stack = make_stack(POLICY)  # TIMEOUT_FAILURE 30 s
    kept = await stack.service.submit(make_submission(1))
    silent = await stack.service.submit(make_submission(2))
    await pull_one(stack, "w1")
    await pull_one(stack, "w2")
    reachable = stack.queue.find_expired

    async def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise Unavailable("the database does not answer")

    stack.clock.advance(20)
    await stack.service.update_status(kept.id, "w1", "running", None)  # w1 pinged at 20
    stack.queue.find_expired = unreachable  # type: ignore[method-assign]
    for _ in range(8):  # down from 20 s to 100 s: every sweep fails
        with pytest.raises(Unavailable):
            await stack.service.sweep()
        stack.clock.advance(10)
    stack.queue.find_expired = reachable  # type: ignore[method-assign]
    # Back at 100 s: neither job is taken back at once, though both heartbeats are older
    # than 30 s by the clock.
    assert await stack.service.sweep() == SweepReport()
    stack.clock.advance(5)
    await stack.service.update_status(kept.id, "w1", "running", None)  # w1's next ping
    # w2 said nothing since 0 s: 20 s before the outage, and now 11 s after it.
    stack.clock.advance(6)
    assert (await stack.service.sweep()).requeued == (silent.id,)
    stack.clock.advance(24)  # 135 s: w1 silent for 30 s since its ping at 105 s
    assert (await stack.service.sweep()).requeued == ()
    stack.clock.advance(1)  # 31 s, all of them with the database up
    assert (await stack.service.sweep()).requeued == (kept.id,)
