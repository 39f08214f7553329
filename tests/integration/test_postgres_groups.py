"""Group commit on PostgreSQL (``postgres.Groups``): changes and claims that requests make at the
same time share one transaction, and each request still gets the answer it would have had alone.

What a transaction wrote is read back from PostgreSQL itself: the rows one transaction changed
carry its id (``xmin``). Requests started in one step of the event loop arrive before the group
that the first of them starts runs, so a burst of N changes commits in one transaction, not N.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.queues import Queue, SqlPorts, at, open_queue, submission, worker
from workerfacing_api.adapters import sql
from workerfacing_api.adapters.sql.postgres import GROUPS_TASK
from workerfacing_api.core.memory import InMemoryQueue
from workerfacing_api.core.model import Committed, Job, JobStatus

N = 8


@pytest.fixture
async def queue(tmp_path: Path, postgres_url: str) -> AsyncIterator[SqlPorts]:
    async with open_queue("postgres", tmp_path, postgres_url) as q:
        assert isinstance(q, SqlPorts)
        yield q


@pytest.fixture
async def db(postgres_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection of the test's own, to read what the queue's transactions wrote."""
    conn = await asyncpg.connect(sql.postgres_dsn(sql.database_url(postgres_url)), timeout=10)
    yield conn
    await conn.close()


async def transactions_of(db: asyncpg.Connection, table: str, ids: list[int]) -> int:
    """How many transactions last wrote these rows of ``table``."""
    column = "id" if table == "jobs" else "job_id"
    count: int = await db.fetchval(
        f"SELECT count(DISTINCT xmin::text) FROM {table} WHERE {column} = ANY($1::bigint[])", ids
    )
    return count


async def queued(queue: SqlPorts, count: int) -> list[int]:
    return [(await queue.add(submission(i + 1), at(0)))[0].id for i in range(count)]


async def pulled(queue: SqlPorts, count: int) -> list[Job]:
    """``count`` jobs, each pulled by a worker of its own (w0, w1, ...), one after the other."""
    await queued(queue, count)
    jobs = []
    for i in range(count):
        (claimed,) = await queue.claim_jobs(
            worker(f"w{i}"), 1, at(1), exclude_attempted=False, max_held=4
        )
        jobs.append(claimed.job)
    return jobs


async def report(queue: SqlPorts, job: Job, status: Any, seconds: float = 2) -> Any:
    return await queue.record_update(
        job, status, f"{job.worker} says so", at(seconds), forward=True
    )


async def test_claims_of_many_nodes_at_once_share_a_commit_and_hand_out_each_job_once(
    queue: SqlPorts, db: asyncpg.Connection
) -> None:
    ids = await queued(queue, 3 * N)
    workers = [worker(f"w{i}") for i in range(N)]
    answers = await asyncio.gather(
        *(queue.claim_jobs(w, 2, at(1), exclude_attempted=False, max_held=4) for w in workers)
    )
    for w, claimed in zip(workers, answers, strict=True):
        assert len(claimed) == 2
        assert {c.job.worker for c in claimed} == {w.worker}
        assert all(c.job.status is JobStatus.PULLED and c.event is not None for c in claimed)
    handed_out = [c.job.id for claimed in answers for c in claimed]
    assert len(set(handed_out)) == 2 * N
    rows = await db.fetch("SELECT id, worker FROM jobs WHERE status = 'pulled' ORDER BY id")
    assert {r["id"]: r["worker"] for r in rows} == {
        c.job.id: c.job.worker for claimed in answers for c in claimed
    }
    assert await transactions_of(db, "jobs", handed_out) == 1
    assert await transactions_of(db, "job_attempts", handed_out) == 1
    assert set(ids) - set(handed_out) == {
        r["id"] for r in await db.fetch("SELECT id FROM jobs WHERE status = 'queued'")
    }


async def test_updates_of_many_jobs_at_once_share_a_commit_each_answered_with_its_own_job(
    queue: SqlPorts, db: asyncpg.Connection
) -> None:
    jobs = await pulled(queue, N)
    answers = await asyncio.gather(*(report(queue, job, JobStatus.RUNNING) for job in jobs))
    for job, committed in zip(jobs, answers, strict=True):
        assert committed is not None
        assert (committed.job.id, committed.job.worker) == (job.id, job.worker)
        assert committed.job.status is JobStatus.RUNNING
        assert committed.job.runtime_details == f"{job.worker} says so"
    ids = [job.id for job in jobs]
    assert await transactions_of(db, "jobs", ids) == 1
    events = await db.fetch(
        "SELECT job_id, status FROM status_events WHERE status = 'running' ORDER BY job_id"
    )
    assert [(e["job_id"], e["status"]) for e in events] == [(i, "running") for i in sorted(ids)]


async def test_two_updates_of_one_job_at_once_run_one_after_the_other(
    queue: SqlPorts, db: asyncpg.Connection
) -> None:
    """Both start from the same snapshot: exactly one wins, as when they ran alone."""
    (job,) = await pulled(queue, 1)
    first, second = await asyncio.gather(
        report(queue, job, JobStatus.RUNNING), report(queue, job, JobStatus.FINISHED)
    )
    assert first is not None
    assert first.job.status is JobStatus.RUNNING
    assert second is None
    assert await db.fetchval("SELECT status FROM jobs WHERE id = $1", job.id) == "running"
    statuses = await db.fetch("SELECT status FROM status_events WHERE job_id = $1", job.id)
    assert sorted(e["status"] for e in statuses) == ["pulled", "running"]


async def test_a_change_that_fails_fails_alone_and_its_group_commits(
    queue: SqlPorts, db: asyncpg.Connection
) -> None:
    """A status the table refuses (its CHECK) aborts the group's transaction; the others run
    again and commit, and only the failing request sees the error."""
    jobs = await pulled(queue, N)
    bogus = SimpleNamespace(value="bogus")
    answers = await asyncio.gather(
        *(report(queue, job, JobStatus.RUNNING) for job in jobs[:-1]),
        report(queue, jobs[-1], bogus),
        return_exceptions=True,
    )
    assert isinstance(answers[-1], asyncpg.CheckViolationError)
    assert all(a is not None and not isinstance(a, BaseException) for a in answers[:-1])
    rows = await db.fetch("SELECT id, status FROM jobs ORDER BY id")
    assert [r["status"] for r in rows] == ["running"] * (N - 1) + ["pulled"]


async def test_a_caller_that_stops_waiting_does_not_hold_up_its_group(
    queue: SqlPorts, db: asyncpg.Connection
) -> None:
    jobs = await pulled(queue, 4)
    tasks = [asyncio.create_task(report(queue, job, JobStatus.RUNNING)) for job in jobs]
    await asyncio.sleep(0)  # each has sent its change on its way
    tasks[2].cancel()
    done = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=10)
    assert isinstance(done[2], asyncio.CancelledError)
    assert all(
        d is not None and not isinstance(d, BaseException) for i, d in enumerate(done) if i != 2
    )
    # Its change had reached the queue: it commits with its group, as a change whose answer
    # was lost on the way back would have.
    rows = await db.fetch("SELECT status FROM jobs ORDER BY id")
    assert [r["status"] for r in rows] == ["running"] * 4


async def test_two_claims_of_one_node_at_once_keep_its_hold_cap(
    queue: SqlPorts, db: asyncpg.Connection
) -> None:
    """Two pulls of one node never share a group: the later one sees what the first took, so
    a node allowed one job gets one, however its pulls arrive."""
    await queued(queue, 4)
    gpu = worker("lab")
    answers = await asyncio.gather(
        *(queue.claim_jobs(gpu, 1, at(1), exclude_attempted=False, max_held=1) for _ in range(3))
    )
    assert sorted(len(claimed) for claimed in answers) == [0, 0, 1]
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE status = 'pulled'") == 1


# A burst: updates of a few held jobs, all from the snapshots the workers hold (as requests that
# arrive at the same moment are), each a change of state (an event) or a keep-alive (none).
bursts = st.lists(
    st.tuples(
        st.integers(0, 3),  # which job
        st.sampled_from([None, JobStatus.RUNNING, JobStatus.FINISHED, JobStatus.ERROR]),
        st.sampled_from([None, "", "epoch 3", "stalled: 'quoted' \"and\" ünïcode\nline"]),
    ),
    min_size=2,
    max_size=12,
)


async def apply_burst(
    queue: Queue, burst: list[tuple[int, JobStatus | None, str | None]], *, at_once: bool
) -> tuple[list[tuple[str, str | None] | None], list[tuple[Any, ...]]]:
    """Four jobs pulled by four workers, then ``burst`` at once (gathered) or one by one; what
    each update answered and how the jobs and their events ended."""
    for i in range(4):
        await queue.add(submission(i + 1), at(0))
    held = []
    for i in range(4):
        (claimed,) = await queue.claim_jobs(
            worker(f"w{i}"), 1, at(1), exclude_attempted=False, max_held=4
        )
        held.append(claimed.job)
    held.sort(key=lambda job: job.id)

    def update(pick: int, status: JobStatus | None, details: str | None) -> Any:
        job = held[pick]
        return queue.record_update(
            job, status or job.status, details, at(2), forward=status is not None
        )

    answers: list[Committed | None]
    if at_once:
        answers = list(await asyncio.gather(*(update(*op) for op in burst)))
    else:
        answers = [await update(*op) for op in burst]
    jobs = [await queue.get(job.id) for job in held]
    events = [e for job in held for e in await queue.pending_events_of(job.id)]
    said = [None if a is None else (a.job.status.value, a.job.runtime_details) for a in answers]
    ended = [
        (j.status.value, j.runtime_details, j.event_seq, j.last_heartbeat_at)
        for j in jobs
        if j is not None
    ]
    return said, ended + [(e.job_id, e.status.value, e.runtime_details) for e in events]


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(burst=bursts)
def test_a_burst_of_updates_at_once_ends_as_the_reference_model_one_by_one(
    burst: list[tuple[int, JobStatus | None, str | None]], tmp_path: Path, postgres_url: str
) -> None:
    """Grouped, and reordered by job within a group: none of it shows. Each update answers,
    and the jobs and their events end, as the in-memory model says the same updates do one
    after the other in the order they arrived."""

    async def on_postgres() -> Any:
        async with open_queue("postgres", tmp_path, postgres_url) as q:
            return await apply_burst(q, burst, at_once=True)

    expected = asyncio.run(apply_burst(InMemoryQueue(record_events=True), burst, at_once=False))
    assert asyncio.run(on_postgres()) == expected


async def test_a_group_cancelled_before_it_began_cancels_its_requests_and_the_next_goes(
    queue: SqlPorts, db: asyncpg.Connection
) -> None:
    """At shutdown the event loop may cancel the group's task before it ran at all: its
    requests end (cancelled, none left hanging) and a later request starts a group again."""
    jobs = await pulled(queue, 2)
    first = asyncio.create_task(report(queue, jobs[0], JobStatus.RUNNING))
    await asyncio.sleep(0)  # the request waits; the group's task has not run yet
    (runner,) = [t for t in asyncio.all_tasks() if t.get_name() == GROUPS_TASK]
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(first, timeout=10)
    second = await asyncio.wait_for(report(queue, jobs[1], JobStatus.RUNNING), timeout=10)
    assert second is not None
    assert [r["status"] for r in await db.fetch("SELECT status FROM jobs ORDER BY id")] == [
        "pulled",
        "running",
    ]
