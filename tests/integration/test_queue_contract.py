"""The queue port's contract, specified once and run against every implementation: the
in-memory reference model, SQLite and PostgreSQL (ARCHITECTURE §3, §6)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.queues import Queue, at, open_queue, submission, worker
from workerfacing_api.core.model import (
    Committed,
    Environment,
    Job,
    JobStatus,
    KeepAlive,
    WorkerProfile,
)


async def claim(q: Queue, w: WorkerProfile, limit: int = 1, now: float = 0) -> list[int]:
    return [
        c.job.id
        for c in await q.claim_jobs(w, limit, at(now), exclude_attempted=True, max_held=100)
    ]


async def test_submitted_job_is_stored_exactly_as_sent(queue: Queue) -> None:
    sub = submission(7, extra_meta={"owner": "alice", "tags": [1, 2]}, priority=None)
    job, superseded = await queue.add(sub, at(0))
    assert superseded == ()
    stored = await queue.get(job.id)
    assert stored is not None
    assert stored.spec == sub.spec
    assert stored.status is JobStatus.QUEUED
    assert stored.upstream_id == 7
    assert stored.priority == 5  # null priority → the default
    assert stored.created_at == at(0)
    assert await queue.get(job.id + 1000) is None


async def test_claim_assigns_the_job_once_and_records_the_attempt(queue: Queue) -> None:
    job, _ = await queue.add(submission(1), at(0))
    (claimed,) = await queue.claim_jobs(
        worker("w1"), 5, at(10), exclude_attempted=False, max_held=100
    )
    assert claimed.job.id == job.id
    assert claimed.job.status is JobStatus.PULLED
    assert claimed.job.worker == "w1"
    assert claimed.job.attempt == 1
    assert claimed.job.last_heartbeat_at == at(10)
    assert claimed.event is not None  # the "pulled" event, leased for delivery right away
    assert (claimed.event.status, claimed.event.upstream_id) == (JobStatus.PULLED, 1)
    assert await claim(queue, worker("w2"), 5) == []


@pytest.mark.parametrize(
    ("requirement", "fits"),
    [
        ({}, True),
        ({"cpu_cores": 8}, True),
        ({"cpu_cores": 9}, False),
        ({"memory": 16000}, True),
        ({"memory": 16001}, False),
        ({"gpu_mem": 8000}, True),
        ({"gpu_mem": 8001}, False),
        ({"gpu_model": "RTX"}, True),
        ({"gpu_model": "A100"}, False),
        ({"gpu_archi": "ampere"}, True),
        ({"gpu_archi": "hopper"}, False),
    ],
)
async def test_hardware_requirements(
    queue: Queue, requirement: dict[str, object], fits: bool
) -> None:
    await queue.add(submission(1, hardware=requirement), at(0))
    assert bool(await claim(queue, worker())) is fits


async def test_null_gpu_model_of_worker_fits_only_jobs_without_one(queue: Queue) -> None:
    await queue.add(submission(1, hardware={"gpu_model": "RTX"}), at(0))
    await queue.add(submission(2), at(1))
    cpu_only = worker(gpu_model=None, gpu_archi=None, gpu_mem=0)
    assert await claim(queue, cpu_only, 5) == [2]


async def test_environment_matching_and_older_than(queue: Queue) -> None:
    local, _ = await queue.add(submission(1, environment="local"), at(0))
    cloud, _ = await queue.add(submission(2, environment="cloud"), at(0))
    anywhere, _ = await queue.add(submission(3, environment=None), at(0))
    # A cloud worker never takes a local job; an "any" job only once it waited older_than.
    cloud_worker = worker("c", environment=Environment.CLOUD, older_than=60)
    assert await claim(queue, cloud_worker, 5, now=30) == [cloud.id]
    assert await claim(queue, cloud_worker, 5, now=60) == [anywhere.id]
    assert await claim(queue, worker("l"), 5, now=60) == [local.id]


async def test_pull_order_groups_then_priority_then_age_then_id(queue: Queue) -> None:
    a, _ = await queue.add(submission(1, priority=1), at(0))
    b, _ = await queue.add(submission(2, priority=9), at(5))
    c, _ = await queue.add(submission(3, priority=9), at(1))
    d, _ = await queue.add(submission(4, priority=0, group="lab"), at(9))
    e, _ = await queue.add(submission(5, priority=9), at(1))
    order = await claim(queue, worker(groups=("lab", "other")), 10, now=20)
    assert order == [d.id, c.id, e.id, b.id, a.id]


async def test_groups_are_a_preference_not_a_restriction(queue: Queue) -> None:
    job, _ = await queue.add(submission(1, group="someone-else"), at(0))
    assert await claim(queue, worker(groups=("mine",))) == [job.id]


async def test_limit_caps_the_claim(queue: Queue) -> None:
    for i in range(5):
        await queue.add(submission(i + 1), at(i))
    assert len(await claim(queue, worker(), 3)) == 3
    assert len(await claim(queue, worker("w2"), 3)) == 2


async def test_retry_different_excludes_exact_worker_only(queue: Queue) -> None:
    job, _ = await queue.add(submission(1), at(0))
    (claimed,) = await queue.claim_jobs(
        worker("w10"), 1, at(1), exclude_attempted=True, max_held=100
    )
    requeued = await queue.requeue(claimed.job, "timeout", at(500), heartbeat_before=at(400))
    assert requeued is not None
    assert await claim(queue, worker("w10"), now=501) == []  # attempted: excluded
    assert await claim(queue, worker("w1"), now=501) == [job.id]  # not a substring match


async def test_without_retry_different_the_same_worker_may_retry(queue: Queue) -> None:
    await queue.add(submission(1), at(0))
    (claimed,) = await queue.claim_jobs(worker(), 1, at(1), exclude_attempted=False, max_held=100)
    await queue.requeue(claimed.job, "timeout", at(500), heartbeat_before=at(400))
    (again,) = await queue.claim_jobs(worker(), 1, at(501), exclude_attempted=False, max_held=100)
    assert again.job.attempt == 2


async def test_update_is_a_compare_and_set_on_status_and_attempt(queue: Queue) -> None:
    await queue.add(submission(1), at(0))
    (claimed,) = await queue.claim_jobs(worker(), 1, at(1), exclude_attempted=True, max_held=100)
    first = await queue.record_update(claimed.job, JobStatus.RUNNING, None, at(2), forward=True)
    assert first is not None
    assert first.job.status is JobStatus.RUNNING
    assert first.job.last_heartbeat_at == at(2)
    # The same (stale) snapshot again: the job moved on, nothing changes.
    stale = await queue.record_update(
        claimed.job, JobStatus.PREPROCESSING, None, at(3), forward=True
    )
    assert stale is None
    current = await queue.get(claimed.job.id)
    assert current is not None
    assert current.status is JobStatus.RUNNING


async def test_runtime_details_are_kept_until_replaced(queue: Queue) -> None:
    await queue.add(submission(1), at(0))
    (claimed,) = await queue.claim_jobs(worker(), 1, at(1), exclude_attempted=True, max_held=100)
    done = await queue.record_update(claimed.job, JobStatus.ERROR, "logs", at(2), forward=True)
    assert done is not None
    kept = await queue.record_update(done.job, JobStatus.ERROR, None, at(3), forward=False)
    assert kept is not None
    assert kept.job.runtime_details == "logs"
    assert kept.event is None  # not forwarded: no outbox event


async def test_late_worker_update_cannot_touch_a_requeued_job(queue: Queue) -> None:
    await queue.add(submission(1), at(0))
    (first,) = await queue.claim_jobs(worker("a"), 1, at(1), exclude_attempted=True, max_held=100)
    assert await queue.requeue(first.job, "t", at(400), heartbeat_before=at(300)) is not None
    (second,) = await queue.claim_jobs(
        worker("b"), 1, at(401), exclude_attempted=True, max_held=100
    )
    assert second.job.attempt == 2
    late = await queue.record_update(first.job, JobStatus.RUNNING, None, at(402), forward=True)
    assert late is None
    current = await queue.get(first.job.id)
    assert current is not None
    assert (current.worker, current.status) == ("b", JobStatus.PULLED)


async def test_sweep_acts_only_on_silent_active_jobs(queue: Queue) -> None:
    await queue.add(submission(1), at(0))
    await queue.add(submission(2), at(0))
    await queue.add(submission(3), at(0))
    claimed = await queue.claim_jobs(worker(), 3, at(10), exclude_attempted=True, max_held=100)
    quiet, chatty, done = (c.job for c in claimed)
    alive = await queue.record_update(chatty, JobStatus.RUNNING, None, at(200), forward=False)
    finished = await queue.record_update(done, JobStatus.FINISHED, None, at(20), forward=True)
    assert alive is not None
    assert finished is not None
    expired = await queue.find_expired(at(100), 10)
    assert [e.job.id for e in expired] == [quiet.id]
    assert expired[0].workers_tried == ("w1",)
    # A keep-alive that lands between the sweeper's read and its write keeps the job.
    assert await queue.requeue(alive.job, "t", at(300), heartbeat_before=at(100)) is None


async def test_requeue_and_fail(queue: Queue) -> None:
    await queue.add(submission(1), at(0))
    (claimed,) = await queue.claim_jobs(worker(), 1, at(1), exclude_attempted=False, max_held=100)
    assert claimed.event is not None
    await queue.complete_events([claimed.event.id])
    back = await queue.requeue(claimed.job, "timeout", at(500), heartbeat_before=at(400))
    assert back is not None
    assert (back.job.status, back.job.worker, back.job.num_retries) == (JobStatus.QUEUED, None, 1)
    assert back.job.runtime_details == "timeout"
    assert back.event is not None
    assert (back.event.status, back.event.runtime_details) == (JobStatus.QUEUED, "timeout")
    assert await queue.requeue(claimed.job, "again", at(501), heartbeat_before=at(400)) is None
    (again,) = await queue.claim_jobs(worker(), 1, at(502), exclude_attempted=False, max_held=100)
    failed = await queue.fail(again.job, "max retries reached", at(900), heartbeat_before=at(800))
    assert failed is not None
    assert (failed.job.status, failed.job.num_retries) == (JobStatus.ERROR, 1)


async def test_resubmission_supersedes_the_live_job_with_that_id(queue: Queue) -> None:
    old, _ = await queue.add(submission(42), at(0))
    (claimed,) = await queue.claim_jobs(worker(), 1, at(1), exclude_attempted=True, max_held=100)
    new, superseded = await queue.add(submission(42), at(2))
    assert superseded == (old.id,)
    stale = await queue.get(old.id)
    assert stale is not None
    assert stale.status is JobStatus.CANCELLED
    assert (
        await queue.record_update(claimed.job, JobStatus.RUNNING, None, at(3), forward=True) is None
    )
    assert await queue.lease_events(at(3), 30, 10) == []  # the old job's events are dropped
    assert await claim(queue, worker("w2"), 5, now=4) == [new.id]


async def test_cancel_takes_the_job_out_for_good(queue: Queue) -> None:
    job, _ = await queue.add(submission(1), at(0))
    assert await queue.cancel(job.id, at(1)) is True
    assert await queue.cancel(job.id, at(2)) is False
    assert await claim(queue, worker()) == []
    assert await queue.find_expired(at(10_000), 10) == []


async def test_active_jobs_of_a_worker(queue: Queue) -> None:
    for i in range(3):
        await queue.add(submission(i + 1), at(i))
    a, b, c = (
        x.job
        for x in await queue.claim_jobs(worker(), 3, at(5), exclude_attempted=True, max_held=100)
    )
    await queue.record_update(c, JobStatus.FINISHED, None, at(6), forward=True)
    assert sorted(j.id for j in await queue.active_jobs_of("w1")) == sorted([a.id, b.id])
    assert await queue.active_jobs_of("w2") == []


# -- outbox ------------------------------------------------------------------------------------


async def test_an_event_is_leased_to_its_recorder_only_when_it_heads_its_line(
    queue: Queue,
) -> None:
    await queue.add(submission(1), at(0))
    await queue.add(submission(2), at(0))
    claims = await queue.claim_jobs(worker(), 2, at(1), exclude_attempted=True, max_held=100)
    a, b = (c.job for c in claims)
    pulled_a, pulled_b = (c.event for c in claims)
    assert pulled_a is not None
    assert pulled_b is not None
    # The "pulled" event of a is still out: a's next event waits for it.
    ran = await queue.record_update(a, JobStatus.RUNNING, "go", at(2), forward=True)
    assert ran is not None
    assert ran.event is None
    assert await queue.lease_events(at(3), 30, 10) == []  # both "pulled" events are leased
    await queue.complete_events([pulled_a.id])
    (second,) = await queue.lease_events(at(4), 30, 10)
    assert (second.job_id, second.status, second.runtime_details) == (a.id, JobStatus.RUNNING, "go")
    assert second.upstream_id == 1
    await queue.complete_events([second.id, pulled_b.id])
    # Nothing older is left: b's next event goes out with the request that made it.
    done = await queue.record_update(b, JobStatus.FINISHED, "", at(5), forward=True)
    assert done is not None
    assert done.event is not None
    assert (done.event.job_id, done.event.status) == (b.id, JobStatus.FINISHED)
    assert await queue.lease_events(at(6), 30, 10) == []


async def test_events_wait_in_order_per_job(queue: Queue) -> None:
    await queue.add(submission(1), at(0))
    (claimed,) = await queue.claim_jobs(worker(), 1, at(1), exclude_attempted=True, max_held=100)
    current = claimed.job
    statuses = [JobStatus.PREPROCESSING, JobStatus.RUNNING, JobStatus.POSTPROCESSING]
    for i, status in enumerate(statuses):
        changed = await queue.record_update(current, status, None, at(2 + i), forward=True)
        assert changed is not None
        current = changed.job
    assert claimed.event is not None
    await queue.postpone_events([claimed.event.id], at(10), "upstream down")  # delivery failed
    seen = []
    for second in range(10, 20):
        for event in await queue.lease_events(at(second), 30, 10):
            seen.append(event.status)
            await queue.complete_events([event.id])
    assert seen == [JobStatus.PULLED, *statuses]


async def test_lease_expiry_and_postponing(queue: Queue) -> None:
    await queue.add(submission(1), at(0))
    (claimed,) = await queue.claim_jobs(worker(), 1, at(1), exclude_attempted=True, max_held=100)
    assert claimed.event is not None
    assert await queue.lease_events(at(30), 30, 1) == []  # still leased to the claimer
    (again,) = await queue.lease_events(at(31), 30, 1)  # lease ran out: someone else may try
    assert again.id == claimed.event.id
    await queue.postpone_events([again.id], at(60), "upstream down")
    assert await queue.lease_events(at(59), 30, 1) == []
    (retry,) = await queue.lease_events(at(60), 30, 1)
    assert retry.attempts == 1


@pytest.mark.parametrize("kind", ["memory", "sqlite", "postgres"])
async def test_no_events_without_an_upstream(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    pg = request.getfixturevalue("postgres_url") if kind == "postgres" else None
    async with open_queue(kind, tmp_path, pg, record_events=False) as q:
        await q.add(submission(1), at(0))
        (claimed,) = await q.claim_jobs(worker(), 1, at(1), exclude_attempted=True, max_held=100)
        assert claimed.event is None
        done = await q.record_update(claimed.job, JobStatus.RUNNING, "x", at(2), forward=True)
        assert done is not None
        assert done.event is None
        assert await q.lease_events(at(3), 30, 10) == []
        assert done.job.forwarded_at is None  # nothing went upstream


async def test_an_event_is_recorded_once_per_snapshot(queue: Queue) -> None:
    """Two changes decided on the same snapshot: one commits, the other must decide again."""
    await queue.add(submission(1), at(0))
    (claimed,) = await queue.claim_jobs(worker(), 1, at(1), exclude_attempted=True, max_held=100)
    first = await queue.record_update(claimed.job, JobStatus.PULLED, "a", at(2), forward=True)
    second = await queue.record_update(claimed.job, JobStatus.PULLED, "b", at(2), forward=True)
    assert first is not None
    assert second is None


# -- concurrency -------------------------------------------------------------------------------


async def test_concurrent_claims_hand_each_job_out_once(queue: Queue) -> None:
    for i in range(60):
        await queue.add(submission(i + 1), at(0))

    async def pull_all(name: str) -> list[int]:
        got: list[int] = []
        while ids := await claim(queue, worker(name), 2, now=1):
            got.extend(ids)
        return got

    results = await asyncio.gather(*(pull_all(f"w{i}") for i in range(12)))
    handed = [job_id for ids in results for job_id in ids]
    assert len(handed) == 60
    assert len(set(handed)) == 60


async def test_concurrent_sweeps_requeue_each_job_once(queue: Queue) -> None:
    for i in range(30):
        await queue.add(submission(i + 1), at(0))
    claimed = await queue.claim_jobs(worker(), 30, at(1), exclude_attempted=False, max_held=100)

    async def sweep() -> list[int]:
        done = []
        for expired in await queue.find_expired(at(100), 100):
            if await queue.requeue(expired.job, "t", at(200), heartbeat_before=at(100)):
                done.append(expired.job.id)
        return done

    results = await asyncio.gather(*(sweep() for _ in range(4)))
    requeued = [job_id for ids in results for job_id in ids]
    assert sorted(requeued) == sorted(c.job.id for c in claimed)
    for job_id in requeued:
        job = await queue.get(job_id)
        assert job is not None
        assert job.num_retries == 1


async def test_without_lease_the_event_waits_for_the_dispatcher(queue: Queue) -> None:
    """While the upstream is failing, requests record events without taking them."""
    await queue.add(submission(1), at(0))
    (claimed,) = await queue.claim_jobs(
        worker(), 1, at(1), exclude_attempted=True, max_held=100, lease=False
    )
    assert claimed.event is None
    ran = await queue.record_update(
        claimed.job, JobStatus.RUNNING, None, at(2), forward=True, lease=False
    )
    assert ran is not None
    assert ran.event is None
    leased = await queue.lease_events(at(3), 30, 10)
    assert [e.status for e in leased] == [JobStatus.PULLED]


# -- keep-alives forwarded upstream (ARCHITECTURE §3)
# -----------------------------------------------


async def test_changes_that_record_an_event_count_as_forwarded(queue: Queue) -> None:
    job, _ = await queue.add(submission(1), at(0))
    assert (job.forwarded_at, job.upstream_ok_at) == (None, None)
    (claimed,) = await queue.claim_jobs(worker(), 1, at(1), exclude_attempted=False, max_held=100)
    assert claimed.job.forwarded_at == at(1)  # "pulled"
    quiet = await queue.record_update(claimed.job, JobStatus.RUNNING, None, at(2), forward=False)
    assert quiet is not None
    assert (quiet.job.forwarded_at, quiet.keepalive) == (at(1), None)
    ran = await queue.record_update(quiet.job, JobStatus.RUNNING, "x", at(3), forward=True)
    assert ran is not None
    assert (ran.job.forwarded_at, ran.keepalive) == (at(3), None)
    back = await queue.requeue(ran.job, "timeout", at(500), heartbeat_before=at(400))
    assert back is not None
    assert back.job.forwarded_at == at(500)
    stored = await queue.get(job.id)
    assert stored is not None
    assert stored.forwarded_at == at(500)


async def ping(queue: Queue, job: Job, now: float, interval: float = 5.0) -> Committed:
    """A worker's plain keep-alive, as the service makes it with an upstream configured."""
    committed = await queue.record_update(
        job,
        JobStatus.RUNNING,
        None,
        at(now),
        forward=False,
        keepalive_before=at(now - interval),
    )
    assert committed is not None
    assert committed.event is None
    return committed


async def test_a_keep_alive_goes_once_per_interval_and_never_ahead_of_an_event(
    queue: Queue,
) -> None:
    await queue.add(submission(7), at(0))
    (claimed,) = await queue.claim_jobs(worker(), 1, at(1), exclude_attempted=True, max_held=100)
    assert claimed.event is not None
    # "pulled" is not delivered yet: a keep-alive must not overtake it.
    waiting = await ping(queue, claimed.job, 10)
    assert (waiting.keepalive, waiting.job.forwarded_at) == (None, at(1))
    await queue.complete_events([claimed.event.id])
    sent = await ping(queue, waiting.job, 11)
    assert sent.keepalive == KeepAlive(
        job_id=claimed.job.id, upstream_id=7, status=JobStatus.RUNNING, created_at=at(11)
    )
    assert sent.job.forwarded_at == at(11)
    assert (await ping(queue, sent.job, 15.999999)).keepalive is None  # within the interval
    again = await ping(queue, sent.job, 16)  # the interval is over
    assert again.keepalive is not None
    assert again.job.forwarded_at == at(16)
    assert (await ping(queue, again.job, 16, interval=0)).keepalive is not None  # 0: each one
    # Not asked for (no upstream, or it is failing): none, however long it has been.
    plain = await queue.record_update(again.job, JobStatus.RUNNING, None, at(100), forward=False)
    assert plain is not None
    assert (plain.keepalive, plain.job.forwarded_at) == (None, at(16))
    # An update that records an event sends the event, not a keep-alive.
    changed = await queue.record_update(
        plain.job, JobStatus.POSTPROCESSING, None, at(101), forward=True, keepalive_before=at(96)
    )
    assert changed is not None
    assert changed.keepalive is None
    assert changed.event is not None
    assert changed.job.forwarded_at == at(101)
    # The next change waits for that event, and so does a keep-alive.
    assert (await ping(queue, changed.job, 200)).keepalive is None
    stored = await queue.get(claimed.job.id)
    assert stored is not None
    assert stored.forwarded_at == at(101)


async def test_a_stale_snapshot_claims_no_keep_alive(queue: Queue) -> None:
    await queue.add(submission(1), at(0))
    (claimed,) = await queue.claim_jobs(
        worker(), 1, at(1), exclude_attempted=True, max_held=100, lease=False
    )
    assert await queue.requeue(claimed.job, "t", at(100), heartbeat_before=at(50)) is not None
    late = await queue.record_update(
        claimed.job, JobStatus.RUNNING, None, at(101), forward=False, keepalive_before=at(96)
    )
    assert late is None


async def test_of_simultaneous_pings_exactly_one_claims_the_keep_alive(queue: Queue) -> None:
    """Several API processes see a job's pings at once (a retried request, a second worker
    thread): the upstream hears one keep-alive."""
    await queue.add(submission(1), at(0))
    (claimed,) = await queue.claim_jobs(worker(), 1, at(1), exclude_attempted=True, max_held=100)
    assert claimed.event is not None
    await queue.complete_events([claimed.event.id])
    running = await queue.record_update(claimed.job, JobStatus.RUNNING, None, at(2), forward=False)
    assert running is not None
    pings = await asyncio.gather(*(ping(queue, running.job, 10) for _ in range(8)))
    assert sum(p.keepalive is not None for p in pings) == 1


# -- the upstream's answers -------------------------------------------------------------------


async def test_the_latest_upstream_answer_is_kept(queue: Queue) -> None:
    a, _ = await queue.add(submission(1), at(0))
    b, _ = await queue.add(submission(2), at(0))
    await queue.confirm_upstream({a.id: at(5)})
    # Answers come back in any order (deliveries run side by side): an older one changes nothing.
    await queue.confirm_upstream({a.id: at(3), b.id: at(4)})
    stored_a, stored_b = await queue.get(a.id), await queue.get(b.id)
    assert stored_a is not None
    assert stored_b is not None
    assert (stored_a.upstream_ok_at, stored_b.upstream_ok_at) == (at(5), at(4))
    # Every read of a job carries it, the answers of a compare-and-set included.
    claimed = await queue.claim_jobs(worker(), 2, at(6), exclude_attempted=True, max_held=100)
    assert [c.job.upstream_ok_at for c in claimed] == [at(5), at(4)]
    await queue.confirm_upstream({a.id: at(7)})
    ran = await queue.record_update(claimed[0].job, JobStatus.RUNNING, None, at(8), forward=False)
    assert ran is not None
    assert ran.job.upstream_ok_at == at(7)
    held = {j.id: j.upstream_ok_at for j in await queue.active_jobs_of("w1")}
    assert held == {a.id: at(7), b.id: at(4)}
    expired = await queue.find_expired(at(100), 10)
    assert {e.job.id: e.job.upstream_ok_at for e in expired} == held


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_answers_and_deliveries_outlive_the_process_that_learnt_them(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """What one process learnt of the upstream is in the database when the call returns:
    another process reads it, after the first is gone."""
    pg = request.getfixturevalue("postgres_url") if kind == "postgres" else None
    async with open_queue(kind, tmp_path, pg) as first:
        job, _ = await first.add(submission(1), at(0))
        (claimed,) = await first.claim_jobs(
            worker(), 1, at(1), exclude_attempted=True, max_held=100
        )
        assert claimed.event is not None
        await first.complete_events([claimed.event.id])
        await first.confirm_upstream({job.id: at(1)})
    async with open_queue(kind, tmp_path, pg, empty=False) as second:
        stored = await second.get(job.id)
        assert stored is not None
        assert stored.upstream_ok_at == at(1)
        assert await second.lease_events(at(100), 30, 10) == []  # "pulled" is not sent again


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_processes_see_each_others_answers_and_keep_the_latest(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    pg = request.getfixturevalue("postgres_url") if kind == "postgres" else None
    async with (
        open_queue(kind, tmp_path, pg) as one,
        open_queue(kind, tmp_path, pg, empty=False) as other,
    ):
        job, _ = await one.add(submission(1), at(0))
        await one.confirm_upstream({job.id: at(7)})
        seen = await other.get(job.id)
        assert seen is not None
        assert seen.upstream_ok_at == at(7)
        await other.confirm_upstream({job.id: at(5)})  # answered later, sent earlier
        await one.confirm_upstream({job.id: at(6)})
        for queue in (one, other):
            stored = await queue.get(job.id)
            assert stored is not None
            assert stored.upstream_ok_at == at(7)


# -- the upload ledger ------------------------------------------------------------------------


async def test_uploads_since_a_time_are_listed_once_in_storage_order(queue: Queue) -> None:
    a, _ = await queue.add(submission(1), at(0))
    b, _ = await queue.add(submission(2), at(0))
    for job, attempt, file_id, second in [
        (a, 1, "/d/a/log.txt", 1),
        (a, 1, "/d/a/model.pt", 2),
        (a, 1, "/d/a/log.txt", 3),  # stored again: listed once
        (b, 1, "/d/b/out.h5", 4),
        (a, 2, "/d/shared.txt", 5),
        (b, 1, "/d/shared.txt", 6),  # stored again later by another job: its file now
        (a, 2, "/d/a/late.txt", 8),
        (a, 2, "/d/a/skewed.txt", 7),  # from a process whose clock is behind
    ]:
        await queue.record_upload(job.id, attempt, file_id, at(second))
    everything = ["/d/a/log.txt", "/d/a/model.pt", "/d/a/late.txt", "/d/a/skewed.txt"]
    assert await queue.uploads_since(a.id, None) == everything
    assert await queue.uploads_since(a.id, at(2)) == ["/d/a/log.txt", *everything[2:]]
    assert await queue.uploads_since(a.id, at(3)) == everything[2:]  # strictly after
    assert await queue.uploads_since(a.id, at(7)) == ["/d/a/late.txt"]
    assert await queue.uploads_since(a.id, at(8)) == []
    assert await queue.uploads_since(b.id, None) == ["/d/b/out.h5", "/d/shared.txt"]
    assert await queue.uploads_since(b.id + 1, None) == []


async def test_a_file_stored_again_by_another_job_is_that_jobs(queue: Queue) -> None:
    a, _ = await queue.add(submission(1), at(0))
    b, _ = await queue.add(submission(2), at(0))
    for job, file_id, second in [
        (a, "/d/x", 1),
        (a, "/d/w", 1.5),
        (b, "/d/x", 2),
        (a, "/d/x", 3),  # a's again: listed where a stored it last
        (b, "/d/y", 4),
        (a, "/d/y", 5),  # b stored it first: a's
        (a, "/d/z", 6),
        (b, "/d/z", 6),  # at the same instant, not later: a's too
    ]:
        await queue.record_upload(job.id, 1, file_id, at(second))
    assert await queue.uploads_since(a.id, None) == ["/d/w", "/d/x", "/d/y", "/d/z"]
    assert await queue.uploads_since(b.id, None) == ["/d/z"]
