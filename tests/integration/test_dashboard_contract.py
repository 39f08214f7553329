"""The dashboard's reads (``DashboardReads``), specified once and run against every queue: the
in-memory reference model, SQLite and PostgreSQL; and the overview the core builds from them
(``core.overview``) over the in-memory queue, with a fake clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest

from tests.queues import Queue, at, submission, worker
from workerfacing_api.core.clock import FakeClock
from workerfacing_api.core.demand import Demand
from workerfacing_api.core.memory import InMemoryQueue
from workerfacing_api.core.model import (
    Environment,
    FailureKind,
    JobStatus,
    Outcome,
    WorkerProfile,
)
from workerfacing_api.core.overview import Overview
from workerfacing_api.core.sync import StatusSync
from workerfacing_api.core.waiting import WaitExplainer


@pytest.fixture(autouse=True)
async def _leave_no_jobs_behind(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Empty the session's PostgreSQL database after each test: the jobs here are pulled at a
    fixed time long past, and a later test's server would sweep them back into its queue."""
    params = getattr(request.node, "callspec", None)
    url = None
    if params is not None and params.params.get("queue") == "postgres":
        url = request.getfixturevalue("postgres_url")
    yield
    if url is not None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(
                "TRUNCATE jobs, job_attempts, status_events, job_uploads, nodes "
                "RESTART IDENTITY CASCADE"
            )
        finally:
            await conn.close()


async def claim(q: Queue, w: WorkerProfile, now: float, limit: int = 1) -> list[int]:
    return [
        c.job.id
        for c in await q.claim_jobs(w, limit, at(now), exclude_attempted=False, max_held=100)
    ]


async def end(queue: Queue, job_id: int, outcome: Outcome, seconds: float) -> None:
    """The job's worker ends its attempt as ``outcome`` (finished or error), at ``seconds``."""
    job = await queue.get(job_id)
    assert job is not None
    status = JobStatus.FINISHED if outcome is Outcome.FINISHED else JobStatus.ERROR
    details = "CUDA error: out of memory" if outcome is Outcome.ERROR else None
    done = await queue.record_update(job, status, details, at(seconds), forward=True, ended=outcome)
    assert done is not None


async def time_out(queue: Queue, job_id: int, seconds: float, *, final: bool = False) -> None:
    """The sweep takes the job back at ``seconds`` (``final``: its retries are used up)."""
    job = await queue.get(job_id)
    assert job is not None
    expire = queue.fail if final else queue.requeue
    detail = f"no word from worker {job.worker} for 60 s"
    assert await expire(job, detail, at(seconds), heartbeat_before=at(seconds))


async def test_throughput_counts_pulls_and_finishes_per_minute(queue: Queue) -> None:
    ids = [(await queue.add(submission(n), at(0)))[0].id for n in range(1, 5)]
    assert await claim(queue, worker("w1"), 10, limit=2) == ids[:2]
    assert await claim(queue, worker("w2"), 130) == ids[2:3]
    await end(queue, ids[0], Outcome.FINISHED, 140)
    await end(queue, ids[1], Outcome.ERROR, 150)  # ended, but not finished: not counted
    await end(queue, ids[2], Outcome.FINISHED, 179)
    assert await claim(queue, worker("w2"), 400) == ids[3:4]  # after "now": left out

    assert await queue.throughput(at(0), at(300)) == [
        (at(0), 2, 0),
        (at(120), 1, 2),
    ]
    # Only the minutes from "since": the pulls of minute 0 are before it.
    assert await queue.throughput(at(60), at(300)) == [(at(120), 1, 2)]
    assert await queue.throughput(at(500), at(600)) == []


async def test_waiting_classes_group_the_queued_jobs_by_requirement(queue: Queue) -> None:
    big = {"gpu_mem": 40000}
    for n in range(1, 4):
        await queue.add(submission(n, hardware=big), at(n))
    await queue.add(submission(4, hardware={"gpu_model": "A100", "cpu_cores": 4}), at(0))
    await queue.add(submission(5, environment=None), at(7))
    await queue.add(submission(6, environment=None, hardware={"gpu_mem": 0}), at(8))
    await queue.add(submission(7, hardware=big), at(9))
    # The oldest fitting job (1) leaves the queue.
    assert await claim(queue, worker("w1", gpu_mem=48000), 10) == [1]

    classes = await queue.waiting_classes(10)
    summary = [
        (c.environment, c.cpu_cores, c.memory, c.gpu_mem, c.gpu_model, c.gpu_archi, c.jobs)
        for c in classes
    ]
    # Most jobs first. "Anything" is 0 whether the job sent null or 0.
    assert summary == [
        (Environment.LOCAL, 0, 0, 40000, None, None, 3),
        (None, 0, 0, 0, None, None, 2),
        (Environment.LOCAL, 4, 0, 0, "A100", None, 1),
    ]
    assert [c.oldest_created_at for c in classes] == [at(2), at(7), at(0)]
    assert await queue.waiting_classes(1) == classes[:1]


async def test_waiting_classes_order_ties_by_age(queue: Queue) -> None:
    await queue.add(submission(1, hardware={"gpu_mem": 100}), at(5))
    await queue.add(submission(2, hardware={"gpu_mem": 200}), at(3))
    await queue.add(submission(3, hardware={"gpu_mem": 300}), at(3))
    await queue.add(submission(4, hardware={"gpu_mem": 300}), at(4))
    classes = await queue.waiting_classes(10)
    assert [(c.gpu_mem, c.jobs, c.oldest_created_at) for c in classes] == [
        (300, 2, at(3)),
        (200, 1, at(3)),
        (100, 1, at(5)),
    ]


async def test_recent_failures_list_errors_and_requeues_newest_first(queue: Queue) -> None:
    ids = [(await queue.add(submission(n), at(0)))[0].id for n in range(1, 5)]
    await queue.add(submission(9), at(0))  # queued, never failed: not listed
    assert await claim(queue, worker("w1"), 1, limit=4) == ids
    await end(queue, ids[0], Outcome.ERROR, 10)
    await end(queue, ids[1], Outcome.FINISHED, 11)
    await time_out(queue, ids[2], 20)  # back in the queue: a re-queue
    await time_out(queue, ids[3], 30, final=True)  # failed for good: one failure, not two
    assert await claim(queue, worker("w2"), 40) == [ids[2]]  # pulled again, still running

    failures = await queue.recent_failures(10)
    assert [(f.job_id, f.kind, f.attempt, f.worker, f.at) for f in failures] == [
        (ids[3], FailureKind.FAILED, 1, "w1", at(30)),
        (ids[2], FailureKind.REQUEUED, 1, "w1", at(20)),
        (ids[0], FailureKind.FAILED, 1, "w1", at(10)),
    ]
    assert failures[0].runtime_details == "no word from worker w1 for 60 s"
    # The re-queued job was pulled again since: the details on it are no longer that attempt's.
    assert failures[1].runtime_details is None
    assert failures[2].runtime_details == "CUDA error: out of memory"
    assert failures[2].upstream_id == 1
    assert await queue.recent_failures(2) == failures[:2]


async def test_a_requeue_keeps_its_details_until_the_job_is_pulled_again(queue: Queue) -> None:
    job, _ = await queue.add(submission(1), at(0))
    await claim(queue, worker("w1"), 1)
    await time_out(queue, job.id, 70)
    (failure,) = await queue.recent_failures(5)
    assert (failure.kind, failure.runtime_details) == (
        FailureKind.REQUEUED,
        "no word from worker w1 for 60 s",
    )


async def test_attempts_and_pending_events_of_a_job(queue: Queue) -> None:
    job, _ = await queue.add(submission(1), at(0))
    other, _ = await queue.add(submission(2), at(0))
    assert await queue.attempts_of(job.id) == []
    await claim(queue, worker("w1"), 5, limit=2)
    await time_out(queue, job.id, 70)
    await claim(queue, worker("w2"), 80)
    attempts = await queue.attempts_of(job.id)
    assert [(a.attempt, a.worker, a.pulled_at, a.ended_at, a.outcome) for a in attempts] == [
        (1, "w1", at(5), at(70), Outcome.TIMEOUT),
        (2, "w2", at(80), None, None),
    ]
    # Events are recorded (an upstream is configured) and none was delivered.
    events = await queue.pending_events_of(job.id)
    assert [e.status for e in events] == [JobStatus.PULLED, JobStatus.QUEUED, JobStatus.PULLED]
    assert all(e.job_id == job.id for e in events)
    await queue.complete_events([events[0].id])
    assert [e.id for e in await queue.pending_events_of(job.id)] == [e.id for e in events[1:]]
    assert [e.status for e in await queue.pending_events_of(other.id)] == [JobStatus.PULLED]
    assert await queue.pending_events_of(999) == []


# ---------------------------------------------------------------------------------------------
# The overview, built by the core.


def _overview(q: InMemoryQueue, clock: FakeClock) -> Overview:
    sync = StatusSync(q, q, None, clock)
    explainer = WaitExplainer(q, q, clock, seen_window=900, exclude_attempted=True)
    demand = Demand(q, q, clock, seen_window=900)
    return Overview(q, q, q, sync, explainer, demand, clock, seen_window=900)


async def test_the_overview_shows_the_last_hour_and_what_waits_for_hardware() -> None:
    q = InMemoryQueue()
    clock = FakeClock(at(3600 + 30))
    for n in range(1, 4):
        await q.add(submission(n, hardware={"gpu_mem": 40000}), at(3000))
    small, _ = await q.add(submission(4, hardware={"gpu_mem": 8000}), at(3000))
    await q.add(submission(5, environment="cloud"), at(3100))
    await q.record_seen(worker("gpu-1", gpu_mem=24000), at(3590))
    await q.record_seen(worker("gpu-2", gpu_mem=24000), at(100))  # not seen lately
    assert await claim(q, worker("gpu-1", gpu_mem=24000), 3595) == [small.id]

    view = await _overview(q, clock).overview()
    assert view.now == at(3630)
    assert view.stats.by_status["queued"] == 4
    assert len(view.throughput) == 60
    assert view.throughput[-1].minute == at(3600)
    assert view.throughput[0].minute == at(3600) - timedelta(minutes=59)
    assert [t.pulled for t in view.throughput[-2:]] == [1, 0]
    assert [w.account for w in view.workers] == ["gpu-1"]
    assert view.workers[0].active_jobs == (small.id,)
    assert (view.demand.queued, view.demand.no_node_can_run) == (4, 4)
    waiting = [
        (c.gpu_mem, c.environment, c.reason) for c in view.demand.classes if c.no_node_can_run
    ]
    assert waiting == [
        (
            40000,
            "local",
            "no local worker seen in the last 15 minutes has 40 000 MiB of GPU memory; "
            "the largest has 24 000",
        ),
        (
            0,
            "cloud",
            "no cloud worker was seen in the last 15 minutes (the workers seen are local)",
        ),
    ]
    assert (view.upstream.configured, view.upstream.healthy) == (False, True)


async def test_the_job_page_says_why_a_queued_job_waits() -> None:
    q = InMemoryQueue(record_events=True)
    clock = FakeClock(at(100))
    job, _ = await q.add(submission(1, hardware={"gpu_mem": 40000}), at(0))
    done, _ = await q.add(submission(2), at(0))
    await q.record_seen(worker("gpu-1"), at(50))
    assert await claim(q, worker("gpu-1"), 50) == [done.id]
    overview = _overview(q, clock)
    page = await overview.job_page(job.id)
    assert page is not None
    assert page.why is not None
    assert "40 000 MiB of GPU memory" in page.why.reason
    running = await overview.job_page(done.id)
    assert running is not None
    assert running.why is None
    assert [a.worker for a in running.attempts] == ["gpu-1"]
    assert [e.status for e in running.pending_events] == [JobStatus.PULLED]
    assert await overview.job_page(999) is None
    assert await overview.job_page(-1) is None
