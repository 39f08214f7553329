"""What operators do (ARCHITECTURE §7), specified once and run against every queue (the in-memory
model, SQLite and PostgreSQL) with a fake clock and a recording user-facing API: failing a job on
an operator's word, the audit log of every action, and the jobs view's filtered, keyset pages.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.queues import Queue, at, core_on, submission, worker
from tests.unit.helpers import RecordingUpstream
from workerfacing_api.core.clock import FakeClock
from workerfacing_api.core.errors import InvalidRequest, JobNotFound
from workerfacing_api.core.fleet import Fleet
from workerfacing_api.core.jobs import JobService
from workerfacing_api.core.model import ClassKey, JobQuery, JobStatus, Outcome
from workerfacing_api.core.operations import Operations


@dataclass
class Service:
    queue: Queue
    clock: FakeClock
    upstream: RecordingUpstream
    jobs: JobService
    fleet: Fleet
    ops: Operations


@pytest.fixture
async def service(queue: Queue) -> Service:
    c = core_on(queue)
    operations = Operations(c.jobs, c.fleet, queue, c.clock)
    return Service(queue, c.clock, c.upstream, c.jobs, c.fleet, operations)


async def test_an_operator_fails_a_running_job_and_its_worker_is_told_to_stop(
    service: Service,
) -> None:
    s = service
    await s.jobs.submit(submission(41))
    await s.jobs.submit(submission(42))
    [running] = await s.jobs.pull(worker("w1"), 1)
    await s.jobs.update_status(running.id, "w1", "running", None)
    s.clock.set(at(60))
    results = await s.ops.fail("alice", [running.id, 2, 99], "  wrong calibration file  ")
    assert results == {
        running.id: "failed (it was running on worker w1)",
        2: "failed (it was queued)",
        99: "does not exist",
    }
    assert s.upstream.delivered(41)[-1] == ("error", "wrong calibration file")
    assert s.upstream.delivered(42) == [("error", "wrong calibration file")]
    # The worker's next call on it: 404, the real worker's "stop".
    with pytest.raises(JobNotFound):
        await s.jobs.update_status(running.id, "w1", "running", None)
    job = await s.queue.get(running.id)
    assert job is not None
    assert (job.status, job.worker, job.runtime_details) == (
        JobStatus.ERROR,
        None,
        "wrong calibration file",
    )
    # Its attempt ended as stopped: no evidence against the node, which is not judged for it.
    [attempt] = await s.queue.attempts_of(running.id)
    assert attempt.outcome is Outcome.STOPPED
    assert await s.queue.outcomes_of(worker("w1").node, at(0), 10) == []
    # Ended already: nothing to fail; and the reason is required.
    assert (await s.ops.fail("alice", [running.id], "again"))[running.id] == (
        "not failed: it is error"
    )
    with pytest.raises(InvalidRequest):
        await s.ops.fail("alice", [2], "   ")
    with pytest.raises(InvalidRequest):
        await s.ops.fail("alice", [], "no jobs")
    # A failed job can be retried like any other.
    assert (await s.ops.retry("bob", [running.id]))[running.id] == "queued again"


async def test_every_action_is_in_the_audit_log_newest_first(service: Service) -> None:
    s = service
    await s.jobs.submit(submission(1))
    [job] = await s.jobs.pull(worker("w1"), 1)
    s.clock.set(at(10))
    await s.ops.fail("alice", [job.id], "stuck")
    s.clock.set(at(20))
    await s.ops.retry("cli:root", [job.id, job.id])
    await s.queue.set_aside(worker("w1").node, at(900), "broken", at(20), strikes=0)
    s.clock.set(at(30))
    assert await s.ops.release("internal key", "w1") == {worker("w1").node: True}
    assert await s.ops.release("alice", "nobody") is None  # never seen: nothing recorded
    entries = await s.ops.actions()
    assert [(e.actor, e.action, e.target, e.jobs, e.at) for e in entries] == [
        ("internal key", "release", "w1", (), at(30)),
        ("cli:root", "retry", str(job.id), (job.id,), at(20)),
        ("alice", "fail", str(job.id), (job.id,), at(10)),
    ]
    assert entries[0].detail == f"node {worker('w1').node}: released"
    assert entries[1].detail == f"job {job.id}: queued again"
    assert entries[2].detail == f"reason: stuck; job {job.id}: failed (it was pulled on worker w1)"
    assert [e.id for e in await s.ops.actions(before_id=entries[0].id, limit=1)] == [entries[1].id]
    assert entries[0].id > entries[1].id > entries[2].id


async def test_the_jobs_view_filters_and_pages_newest_first(service: Service) -> None:
    s = service
    q = s.queue
    for n in range(1, 7):
        s.clock.set(at(n * 100))
        await s.jobs.submit(submission(n, hardware={"gpu_mem": 40000} if n % 2 else None))
    s.clock.set(at(700))
    await s.jobs.submit(submission(7, environment="cloud"))
    [pulled] = await s.jobs.pull(worker("w1"), 1)  # job 2: the oldest it fits
    await s.jobs.update_status(pulled.id, "w1", "error", "boom")

    async def ids(**query: object) -> list[int]:
        return [j.id for j in await q.list_jobs(JobQuery(**query), 50)]  # type: ignore[arg-type]

    assert await ids() == [7, 6, 5, 4, 3, 2, 1]
    assert await ids(states=(JobStatus.ERROR,)) == [2]
    assert await ids(states=(JobStatus.ERROR, JobStatus.QUEUED)) == [7, 6, 5, 4, 3, 2, 1]
    assert await ids(environment="cloud") == [7]
    assert await ids(worker="w1") == [2]
    assert await ids(node=worker("w1").node) == [2]
    assert await ids(hardware=ClassKey(environment="local", gpu_mem=40000)) == [5, 3, 1]
    assert await ids(hardware=ClassKey(environment="cloud", gpu_mem=40000)) == []
    assert await ids(environment="cloud", hardware=ClassKey(environment="local")) == []
    assert await ids(created_before=at(300)) == [2, 1]  # older than 400 s at 700
    assert await ids(created_after=at(500)) == [7, 6, 5]
    assert await ids(upstream_id=4) == [4]
    assert await ids(queue_id=3) == [3]
    assert await ids(states=(JobStatus.QUEUED,), hardware=ClassKey(environment="local")) == [6, 4]

    # Keyset pages: a job submitted between two pages neither repeats nor hides one.
    first = await q.list_jobs(JobQuery(), 3)
    assert [j.id for j in first] == [7, 6, 5]
    s.clock.set(at(800))
    await s.jobs.submit(submission(8))
    second = await q.list_jobs(JobQuery(before_id=first[-1].id), 3)
    third = await q.list_jobs(JobQuery(before_id=second[-1].id), 3)
    assert [j.id for j in second + third] == [4, 3, 2, 1]
    assert await ids(before_id=1) == []
