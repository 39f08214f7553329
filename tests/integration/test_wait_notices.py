"""The user told why their job waits (ARCHITECTURE §3, ``core.notices``), specified once and run
against every queue (the in-memory model, SQLite and PostgreSQL) with a fake clock and a recording
user-facing API: a job no node seen can run is forwarded as ``queued`` with the reason once it has
waited ``WAIT_NOTICE_AFTER``, once per reason however often the sweep runs, and a last time when a
node that can run it is seen; with ``QUEUED_LIMIT`` it fails with the reason.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.inprocess import API_KEY, assemble, serving
from tests.queues import Queue, at, core_on, submission, worker
from tests.unit.helpers import RecordingUpstream
from workerfacing_api.core.clock import FakeClock
from workerfacing_api.core.jobs import JobService
from workerfacing_api.core.model import JobStatus
from workerfacing_api.core.notices import WaitNotices
from workerfacing_api.core.sync import StatusSync

BIG = {"gpu_mem": 80000}
SHORT = "no local worker seen in the last 15 minutes has 80 000 MiB of GPU memory"


@dataclass
class Service:
    queue: Queue
    clock: FakeClock
    upstream: RecordingUpstream
    jobs: JobService
    sync: StatusSync

    def notices(self, *, after: float = 600, limit: float | None = None) -> WaitNotices:
        return WaitNotices(
            self.queue,
            self.queue,
            self.queue,
            self.sync,
            self.clock,
            seen_window=900,
            notice_after=after,
            queued_limit=limit,
        )

    async def seen(self, name: str, seconds: float, **offer: object) -> None:
        """Worker ``name`` asks for jobs at ``seconds`` (it gets what fits, if anything)."""
        self.clock.set(at(seconds))
        await self.jobs.pull(worker(name, **offer), 1)

    def told(self, upstream_id: int) -> list[tuple[str, str | None]]:
        return self.upstream.delivered(upstream_id)


@pytest.fixture
async def service(queue: Queue) -> Service:
    c = core_on(queue)
    return Service(queue, c.clock, c.upstream, c.jobs, c.sync)


async def test_the_user_is_told_once_per_reason_and_when_a_node_can_run_it(
    service: Service,
) -> None:
    s = service
    await s.jobs.submit(submission(7, hardware=BIG))
    await s.jobs.submit(submission(8))  # fits the workers seen: never a notice
    notices = s.notices()
    await s.seen("w1", 60, gpu_mem=24000)  # takes job 8
    s.clock.set(at(599))
    assert (await notices.run()).told == ()  # not waiting long enough yet
    s.clock.set(at(601))
    report = await notices.run()
    assert len(report.told) == 1
    assert s.told(7) == [("queued", f"the job waits: {SHORT}; the largest has 24 000")]
    for second in (660, 720, 780):  # sweep after sweep: nothing more to say
        s.clock.set(at(second))
        assert await notices.run() == type(report)()
    assert len(s.told(7)) == 1
    assert [status for status, _ in s.told(8)] == ["pulled"]

    # A larger node comes, still too small: the reason changed, so the user hears it.
    await s.seen("w2", 800, gpu_mem=40000)
    await notices.run()
    assert s.told(7)[1:] == [("queued", f"the job waits: {SHORT}; the largest has 40 000")]
    await notices.run()
    assert len(s.told(7)) == 2

    # A node that can run it is seen: the last notice, then silence; it waits its turn.
    await s.seen("w3", 900, gpu_mem=80000, memory=64000, cpu_cores=16)
    assert await s.jobs.status_of(1) is JobStatus.PULLED  # w3 took it at once
    assert s.told(7)[-1] == ("pulled", None)
    assert await notices.run() == type(report)()  # pulled: nothing more to tell
    assert len(s.told(7)) == 3


async def test_the_last_notice_comes_when_a_node_that_can_run_it_is_seen_busy(
    service: Service,
) -> None:
    s = service
    await s.jobs.submit(submission(1, hardware=BIG))
    await s.jobs.submit(submission(7, hardware=BIG))
    notices = s.notices()
    await s.seen("small", 0, gpu_mem=24000)
    s.clock.set(at(700))
    await notices.run()
    assert len(s.told(7)) == 1
    big = {"gpu_mem": 80000}
    await s.seen("big", 710, **big)  # takes job 1, and is then busy with it
    report = await notices.run()
    assert report.cleared == (2,)
    assert s.told(7)[-1] == (
        "queued",
        "the job waits its turn: 1 worker node(s) seen in the last 15 minutes can run it",
    )
    await notices.run()
    assert len(s.told(7)) == 2
    # The big node is gone for longer than the window: the user hears why again.
    s.clock.set(at(710 + 901))
    await s.seen("small", 710 + 901, gpu_mem=24000)
    await notices.run()
    assert s.told(7)[-1] == ("queued", f"the job waits: {SHORT}; the largest has 24 000")
    assert len(s.told(7)) == 3


async def test_nobody_seen_at_all_is_a_reason_too_and_never_is_never(service: Service) -> None:
    s = service
    await s.jobs.submit(submission(7))
    s.clock.set(at(601))
    assert await s.notices(after=0).run() == type(await s.notices(after=0).run())()
    assert s.told(7) == []
    await s.notices().run()
    assert s.told(7) == [
        ("queued", "the job waits: no worker has asked for jobs in the last 15 minutes")
    ]


async def test_a_job_past_the_queued_limit_fails_with_the_reason(service: Service) -> None:
    s = service
    await s.jobs.submit(submission(7, hardware=BIG))
    await s.jobs.submit(submission(8, hardware=BIG))
    notices = s.notices(limit=3600)
    await s.seen("w1", 0, gpu_mem=24000)
    s.clock.set(at(1800))
    await s.jobs.submit(submission(9, hardware=BIG))  # younger: not failed at 3600
    s.clock.set(at(3601))
    await s.seen("w1", 3601, gpu_mem=24000)
    report = await notices.run()
    assert report.failed == (1, 2)
    reason = f"{SHORT}; the largest has 24 000"
    assert s.told(7)[-1] == (
        "error",
        f"the job failed after waiting 60 minutes for a worker that can run it: {reason}",
    )
    assert await s.jobs.status_of(1) is JobStatus.ERROR
    assert await s.jobs.status_of(3) is JobStatus.QUEUED
    assert s.told(9) == [("queued", f"the job waits: {reason}")]
    # A job that some node seen can run never fails for waiting, however long.
    await s.jobs.submit(submission(10))
    s.clock.set(at(3601 + 7200))
    await s.seen("busy", 3601 + 7200, gpu_mem=0)  # fits job 10's class, but holds a job
    report = await notices.run()
    assert 4 not in report.failed


async def test_sweepers_racing_tell_each_user_once(service: Service) -> None:
    s = service
    for n in range(1, 21):
        await s.jobs.submit(submission(n, hardware=BIG))
    s.clock.set(at(601))
    reports = await asyncio.gather(*(s.notices().run() for _ in range(3)))
    told = sorted(j for r in reports for j in r.told)
    assert told == list(range(1, 21))
    assert all(len(s.told(n)) == 1 for n in range(1, 21))


async def test_a_requeued_job_is_told_again(service: Service) -> None:
    """A worker fell silent: the job is queued again (the user hears the time-out), and why
    it waits is news again."""
    s = service
    await s.jobs.submit(submission(7, hardware={"gpu_mem": 40000}))
    await s.seen("big", 0, gpu_mem=40000)  # takes it, then falls silent
    await s.seen("small", 400, gpu_mem=24000)
    s.clock.set(at(400))
    await s.jobs.sweep()
    assert await s.jobs.status_of(1) is JobStatus.QUEUED
    s.clock.set(at(1001))
    await s.notices().run()
    status, details = s.told(7)[-1]
    assert (status, details) == (
        "queued",
        "the job waits: " + SHORT.replace("80 000", "40 000") + "; the largest has 24 000",
    )


async def test_the_service_tells_and_fails_as_configured(tmp_path: Path) -> None:
    """Through the app the container builds: WAIT_NOTICE_AFTER and QUEUED_LIMIT as set, the
    user-facing API hearing what the real one would show the user, and explain agreeing."""
    assembled = assemble(tmp_path, wait_notice_after=60, queued_limit=180)
    async with serving(assembled) as api:
        await api.submit(7, hardware=BIG)
        assert await api.pull("w1", gpu_mem=24000) == {}
        notices = api.container.notices()
        api.clock.advance(61)
        await notices.run()
        reason = f"{SHORT}; the largest has 24 000"
        assert api.upstream.delivered(7) == [("queued", f"the job waits: {reason}")]
        explained = await api.client.get("/_jobs/7/explain", headers={"x-api-key": API_KEY})
        assert explained.json()["reason"] == reason
        api.clock.advance(60)
        await notices.run()
        assert len(api.upstream.delivered(7)) == 1
        api.clock.advance(60)
        assert await api.pull("w1", gpu_mem=24000) == {}  # seen again: still too small
        await notices.run()
        assert api.upstream.delivered(7)[-1] == (
            "error",
            f"the job failed after waiting 3 minutes for a worker that can run it: {reason}",
        )
        explained = await api.client.get("/_jobs/7/explain", headers={"x-api-key": API_KEY})
        assert explained.json()["status"] == "error"
