"""Fleet health, specified once and run against every queue: the in-memory reference model,
SQLite and PostgreSQL (ARCHITECTURE §3: a worker whose failures point at itself is set aside; jobs
that fail everywhere set nobody aside; operators retry jobs and release workers; why a job
waits).

The first part holds the adapters to the ports (``WorkerRegistry`` and the queue's additions);
the second drives the use cases (``JobService``, ``Fleet``, ``WaitExplainer``) over each queue with
a fake clock and a recording upstream, as the service runs them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

import msgspec
import pytest

from tests.queues import Queue, at, core_on, submission, worker
from tests.unit.helpers import RecordingUpstream
from workerfacing_api.core.clock import FakeClock
from workerfacing_api.core.errors import JobNotFound
from workerfacing_api.core.fleet import Fleet
from workerfacing_api.core.jobs import DEFAULT_MAX_JOBS_PER_NODE, JobService
from workerfacing_api.core.model import (
    Environment,
    JobStatus,
    Outcome,
    WorkerProfile,
)
from workerfacing_api.core.waiting import WaitExplainer


def node(name: str, **kw: object) -> str:
    """The node id of ``worker(name, **kw)``: a worker of that account, on no known address."""
    return worker(name, **kw).node


async def claim(q: Queue, w: WorkerProfile, now: float, limit: int = 1) -> list[int]:
    return [
        c.job.id
        for c in await q.claim_jobs(w, limit, at(now), exclude_attempted=True, max_held=100)
    ]


# ---------------------------------------------------------------------------------------------
# The ports.


async def test_the_registry_keeps_one_row_per_node_with_its_latest_pull(queue: Queue) -> None:
    """A node is the account, its address, its hardware and its instance id: the same fetcher
    pulling again is one row; another address, other hardware or an instance id is another."""
    gpu0 = worker("lab", address="10.0.0.5")
    await queue.record_seen(gpu0, at(0))
    await queue.record_seen(worker("w2"), at(5))
    await queue.record_seen(msgspec.structs.replace(gpu0, groups=("fast",)), at(10))
    rows = await queue.workers(None)
    assert [w.node for w in rows] == [gpu0.node, node("w2")]
    lab = rows[0]
    assert (lab.account, lab.profile.address, lab.profile.instance) == ("lab", "10.0.0.5", None)
    assert (lab.first_seen_at, lab.last_seen_at, lab.profile.groups) == (at(0), at(10), ("fast",))
    assert (lab.strikes, lab.aside_until, lab.active_jobs) == (0, None, ())
    assert [w.account for w in await queue.workers(at(6))] == ["lab"]
    others = [
        worker("lab", address="10.0.0.6"),
        worker("lab", address="10.0.0.5", memory=32000),
        worker("lab", address="10.0.0.5", instance="gpu1"),
    ]
    for n, other in enumerate(others):
        await queue.record_seen(other, at(20 + n))
    assert len({gpu0.node} | {o.node for o in others}) == 4
    lab_nodes = [w for w in await queue.workers(None) if w.account == "lab"]
    assert sorted(w.node for w in lab_nodes) == sorted([gpu0.node] + [o.node for o in others])
    assert await queue.worker("nobody") is None


async def test_the_registry_lists_the_jobs_a_worker_holds(queue: Queue) -> None:
    first, _ = await queue.add(submission(1), at(0))
    second, _ = await queue.add(submission(2), at(0))
    await queue.record_seen(worker("w1"), at(1))
    assert await claim(queue, worker("w1"), 1, limit=2) == [first.id, second.id]
    record = await queue.worker(node("w1"))
    assert record is not None
    assert record.active_jobs == (first.id, second.id)


async def test_a_worker_set_aside_gets_nothing_until_its_cool_off_ends(queue: Queue) -> None:
    job, _ = await queue.add(submission(1), at(0))
    await queue.record_seen(worker("w1"), at(0))
    assert await queue.set_aside(node("w1"), at(600), "broken", at(0), strikes=0)
    assert await claim(queue, worker("w1"), 10) == []
    assert await claim(queue, worker("w1"), 599) == []
    assert await claim(queue, worker("w1"), 600) == [job.id]
    record = await queue.worker(node("w1"))
    assert record is not None
    assert (record.strikes, record.aside_at, record.aside_until) == (1, at(0), at(600))
    assert record.aside_reason == "broken"


async def end(queue: Queue, job_id: int, outcome: Outcome, seconds: float) -> None:
    """The job's worker ends its attempt as ``outcome`` (finished or error), at ``seconds``."""
    job = await queue.get(job_id)
    assert job is not None
    status = JobStatus.FINISHED if outcome is Outcome.FINISHED else JobStatus.ERROR
    done = await queue.record_update(job, status, None, at(seconds), forward=True, ended=outcome)
    assert done is not None


async def test_setting_aside_is_a_compare_and_set(queue: Queue) -> None:
    job, _ = await queue.add(submission(1), at(0))
    await queue.record_seen(worker("w1"), at(0))
    assert await claim(queue, worker("w1"), 0) == [job.id]
    assert not await queue.set_aside(node("w1"), at(600), "stale", at(0), strikes=1)
    assert await queue.set_aside(node("w1"), at(600), "first", at(0), strikes=0)
    # Already set aside: a second process deciding at the same moment loses.
    assert not await queue.set_aside(node("w1"), at(900), "again", at(1), strikes=1)
    assert await queue.set_aside(node("w1"), at(1800), "repeat", at(700), strikes=1)
    record = await queue.worker(node("w1"))
    assert record is not None
    assert (record.strikes, record.aside_until) == (2, at(1800))
    assert not await queue.set_aside(node("nobody"), at(600), "x", at(0), strikes=0)
    # Finishing a job forgives the strikes (the next cool-off is the shortest again).
    await end(queue, job.id, Outcome.FINISHED, 800)
    record = await queue.worker(node("w1"))
    assert record is not None
    assert (record.strikes, record.aside_until) == (0, at(1800))


async def test_release_ends_a_cool_off_at_once(queue: Queue) -> None:
    job, _ = await queue.add(submission(1), at(0))
    await queue.record_seen(worker("w1"), at(0))
    assert await queue.release(node("nobody"), at(1)) is None
    assert await queue.release(node("w1"), at(1)) is False
    await queue.set_aside(node("w1"), at(600), "broken", at(0), strikes=0)
    assert await queue.release(node("w1"), at(10)) is True
    assert await claim(queue, worker("w1"), 10) == [job.id]
    # The release was the end of that cool-off: it is not reported again as ending.
    assert await queue.note_cool_off_ends(at(700)) == []


async def test_each_end_of_a_cool_off_is_reported_once(queue: Queue) -> None:
    await queue.record_seen(worker("w1"), at(0))
    await queue.record_seen(worker("w2"), at(0))
    await queue.set_aside(node("w1"), at(600), "broken", at(0), strikes=0)
    await queue.set_aside(node("w2"), at(900), "broken", at(0), strikes=0)
    assert await queue.note_cool_off_ends(at(599)) == []
    assert [w.account for w in await queue.note_cool_off_ends(at(600))] == ["w1"]
    assert await queue.note_cool_off_ends(at(601)) == []
    ended = await queue.note_cool_off_ends(at(1000))
    assert [(w.account, w.aside_reason) for w in ended] == [("w2", "broken")]
    await queue.set_aside(node("w1"), at(2000), "again", at(1000), strikes=1)
    assert [w.account for w in await queue.note_cool_off_ends(at(2000))] == ["w1"]


async def test_outcomes_are_kept_per_attempt_and_read_latest_first(queue: Queue) -> None:
    ids = [(await queue.add(submission(n), at(0)))[0].id for n in range(1, 5)]
    for n, job_id in enumerate(ids[:3]):
        assert await claim(queue, worker("w1"), 10 + n) == [job_id]
    assert await claim(queue, worker("w2"), 20) == [ids[3]]
    await end(queue, ids[0], Outcome.ERROR, 30)
    silent = await queue.get(ids[1])
    assert silent is not None  # the sweep takes it back: a time-out
    assert await queue.requeue(silent, "timeout", at(40), heartbeat_before=at(40))
    await end(queue, ids[2], Outcome.FINISHED, 50)
    finished = await queue.get(ids[2])
    assert finished is not None  # repeating the final state notes nothing more
    await queue.record_update(finished, JobStatus.FINISHED, "logs", at(55), forward=True)
    await end(queue, ids[3], Outcome.FINISHED, 60)
    mine = await queue.outcomes_of(node("w1"), at(0), 10)
    assert [(o.job_id, o.outcome) for o in mine] == [
        (ids[2], Outcome.FINISHED),
        (ids[1], Outcome.TIMEOUT),
        (ids[0], Outcome.ERROR),
    ]
    assert (mine[2].pulled_at, mine[2].ended_at, mine[2].attempt) == (at(10), at(30), 1)
    assert [o.job_id for o in await queue.outcomes_of(node("w1"), at(30), 10)] == [ids[2], ids[1]]
    assert [o.job_id for o in await queue.outcomes_of(node("w1"), at(0), 1)] == [ids[2]]
    # One vote per node: w1 finished 1 and failed 2 (failing); w2 finished its one (healthy).
    others = await queue.baseline(at(0), at(60), excluding=node("w2"))
    assert (others.healthy, others.failing) == (0, 1)
    others = await queue.baseline(at(0), at(60), excluding=node("w1"))
    assert (others.healthy, others.failing) == (1, 0)
    others = await queue.baseline(at(45), at(60), excluding=node("w2"))
    assert (others.healthy, others.failing) == (1, 0)  # only its finish is recent
    # A node set aside has no vote.
    await queue.record_seen(worker("w1"), at(60))
    assert await queue.set_aside(node("w1"), at(600), "broken", at(60), strikes=0)
    others = await queue.baseline(at(0), at(61), excluding=node("w2"))
    assert (others.healthy, others.failing) == (0, 0)


async def test_live_job_is_the_one_not_cancelled(queue: Queue) -> None:
    old, _ = await queue.add(submission(7), at(0))
    new, _ = await queue.add(submission(7), at(1))
    live = await queue.live_job(7)
    assert live is not None
    assert live.id == new.id != old.id
    await queue.cancel(new.id, at(2))
    assert await queue.live_job(7) is None
    assert await queue.live_job(8) is None


async def test_count_ahead_follows_the_pull_order(queue: Queue) -> None:
    low, _ = await queue.add(submission(1, priority=1), at(0))
    high, _ = await queue.add(submission(2, priority=9), at(1))
    same, _ = await queue.add(submission(3, priority=1), at(2))
    await queue.add(submission(4, priority=9, hardware={"gpu_mem": 99_000}), at(0))  # no fit
    await queue.add(submission(5, priority=9, environment="cloud"), at(0))  # no fit
    grouped, _ = await queue.add(submission(6, priority=0, group="lab"), at(3))
    w = worker("w1")
    for job, ahead in [(high, 0), (low, 1), (same, 2), (grouped, 3)]:
        assert await queue.count_ahead(job, w, at(10), exclude_attempted=True) == ahead
    # Counting stops at the cap: a long line is "that many or more".
    assert await queue.count_ahead(grouped, w, at(10), exclude_attempted=True, cap=2) == 2
    lab = worker("w1", groups=("lab",))
    assert await queue.count_ahead(grouped, lab, at(10), exclude_attempted=True) == 0
    assert await queue.count_ahead(same, lab, at(10), exclude_attempted=True) == 3


async def test_count_ahead_leaves_out_jobs_the_worker_tried(queue: Queue) -> None:
    first, _ = await queue.add(submission(1), at(0))
    second, _ = await queue.add(submission(2), at(1))
    assert await claim(queue, worker("w1"), 2) == [first.id]
    expired = (await queue.find_expired(at(100), 10))[0]
    assert await queue.requeue(expired.job, "timeout", at(100), heartbeat_before=at(100))
    w1 = worker("w1")
    assert await queue.count_ahead(second, w1, at(101), exclude_attempted=True) == 0
    assert await queue.count_ahead(second, w1, at(101), exclude_attempted=False) == 1


async def test_retry_failed_starts_a_failed_job_over(queue: Queue) -> None:
    job, _ = await queue.add(submission(1), at(0))
    await claim(queue, worker("w1"), 1)
    pulled = await queue.get(job.id)
    assert pulled is not None
    assert await queue.retry_failed(pulled, "retried", at(2)) is None  # not failed
    failed = await queue.record_update(pulled, JobStatus.ERROR, "boom", at(3), forward=True)
    assert failed is not None
    for _ in range(2):  # the upstream heard "pulled" and "error"
        await queue.complete_events([e.id for e in await queue.lease_events(at(40), 30, 10)])
    committed = await queue.retry_failed(failed.job, "retried by an operator", at(4))
    assert committed is not None
    again = committed.job
    assert (again.status, again.worker, again.num_retries) == (JobStatus.QUEUED, None, 0)
    assert again.runtime_details == "retried by an operator"
    # The "queued" event, for the upstream; a stale snapshot cannot retry it twice.
    assert committed.event is not None
    assert committed.event.status is JobStatus.QUEUED
    assert await queue.retry_failed(failed.job, "again", at(5)) is None
    # It starts over: the worker it failed on may take it again, as attempt 2, and the
    # workers tried before the retry are forgotten (a time-out names only the new ones).
    (claimed,) = await queue.claim_jobs(
        worker("w1"), 1, at(6), exclude_attempted=True, max_held=100
    )
    assert (claimed.job.id, claimed.job.attempt) == (job.id, 2)
    (expired,) = await queue.find_expired(at(1000), 10)
    assert expired.workers_tried == ("w1",)


# ---------------------------------------------------------------------------------------------
# The use cases, over each queue.


@dataclass
class Service:
    queue: Queue
    clock: FakeClock
    upstream: RecordingUpstream
    jobs: JobService
    fleet: Fleet
    explainer: WaitExplainer

    def at(self, seconds: float) -> None:
        self.clock.set(at(seconds))

    async def run(self, name: str, outcome: str, *, seconds: float = 0, **hw: object) -> int | None:
        """``name`` pulls one job and reports ``outcome`` for it after ``seconds``."""
        handed = await self.jobs.pull(worker(name, **hw), 1)
        if not handed:
            return None
        self.clock.advance(seconds)
        await self.jobs.update_status(handed[0].id, name, "running", None)
        await self.jobs.update_status(handed[0].id, name, outcome, None)
        return handed[0].id


@pytest.fixture
async def service(queue: Queue) -> Service:
    c = core_on(queue)
    explainer = WaitExplainer(queue, queue, c.clock, seen_window=900, exclude_attempted=True)
    return Service(queue, c.clock, c.upstream, c.jobs, c.fleet, explainer)


async def submit(s: Service, count: int, start: int = 1, **fields: object) -> None:
    for n in range(start, start + count):
        await s.jobs.submit(submission(n, **fields))  # type: ignore[arg-type]


async def test_a_worker_failing_what_others_finish_is_set_aside(service: Service) -> None:
    s = service
    await submit(s, 30)
    for _ in range(2):
        assert await s.run("good", "finished", seconds=60)
    for _ in range(3):
        assert await s.run("bad", "error", seconds=2)
    # Set aside: its pulls get nothing, while the healthy worker keeps getting jobs.
    assert await s.jobs.pull(worker("bad"), 1) == []
    assert await s.run("good", "finished", seconds=60)
    record = await s.queue.worker(node("bad"))
    assert record is not None
    assert record.aside(s.clock.now())
    assert record.aside_reason is not None
    assert "last 3 attempts failed" in record.aside_reason
    assert record.aside_until == record.aside_at + timedelta(seconds=600)  # type: ignore[operator]
    # After the cool-off it gets work again; failing again, it is set aside for twice as long.
    assert record.aside_until is not None
    s.clock.set(record.aside_until)
    assert [w.account for w in await s.fleet.note_cool_off_ends(s.clock.now())] == ["bad"]
    for _ in range(3):
        assert await s.run("bad", "error", seconds=2)
    again = await s.queue.worker(node("bad"))
    assert again is not None
    assert again.strikes == 2
    assert again.aside_until == again.aside_at + timedelta(seconds=1200)  # type: ignore[operator]
    assert await s.jobs.pull(worker("bad"), 1) == []
    # Released by an operator, it gets jobs at once; finishing one, its strikes are forgiven.
    assert await s.fleet.release("bad", s.clock.now()) == {node("bad"): True}  # the account
    assert await s.run("bad", "finished", seconds=60)
    forgiven = await s.queue.worker(node("bad"))
    assert forgiven is not None
    assert forgiven.strikes == 0


async def test_time_outs_count_against_the_worker(service: Service) -> None:
    s = service
    await submit(s, 10)
    assert await s.run("good", "finished", seconds=60)
    for _ in range(3):
        assert await s.jobs.pull(worker("hangs"), 1)
        s.clock.advance(301)
        await s.jobs.sweep()
    assert await s.jobs.pull(worker("hangs"), 1) == []
    record = await s.queue.worker(node("hangs"))
    assert record is not None
    assert "timed out" in (record.aside_reason or "")


async def test_jobs_that_fail_on_every_worker_set_no_worker_aside(service: Service) -> None:
    s = service
    await submit(s, 20)
    names = ["w1", "w2", "w3", "w4"]
    failed = 0
    while failed < 20:
        for name in names:
            if await s.run(name, "error", seconds=2):
                failed += 1
    for name in names:
        record = await s.queue.worker(node(name))
        assert record is not None
        assert record.strikes == 0
        assert not record.aside(s.clock.now())
    await submit(s, 1, start=100)
    assert await s.jobs.pull(worker("w1"), 1)


async def test_a_worker_that_fails_alone_in_the_fleet_is_not_set_aside(service: Service) -> None:
    s = service
    await submit(s, 5)
    for _ in range(5):
        assert await s.run("only", "error", seconds=2)
    record = await s.queue.worker(node("only"))
    assert record is not None
    assert record.strikes == 0


async def test_an_operator_retry_brings_a_failed_job_back_and_tells_upstream(
    service: Service,
) -> None:
    s = service
    await submit(s, 1, start=41)
    job_id = await s.run("w1", "error", seconds=5)
    assert job_id is not None
    results = await s.jobs.retry([job_id, job_id + 100])
    assert results == {job_id: "queued again", job_id + 100: "does not exist"}
    assert s.upstream.delivered(41)[-1] == ("queued", "retried by an operator")
    assert await s.jobs.status_of(job_id) is JobStatus.QUEUED
    assert [j.id for j in await s.jobs.pull(worker("w1"), 1)] == [job_id]
    assert (await s.jobs.retry([job_id]))[job_id] == "not retried: it is pulled, not error"


async def test_explain_when_no_worker_seen_has_the_hardware(service: Service) -> None:
    s = service
    await s.jobs.submit(submission(5, hardware={"gpu_mem": 40000}))
    await s.jobs.pull(worker("w1", gpu_mem=24000), 1)
    await s.jobs.pull(worker("w2", gpu_mem=16000), 1)
    why = await s.explainer.explain_upstream(5)
    assert (why.status, why.workers_seen, why.workers_fitting) == ("queued", 2, 0)
    assert why.reason == (
        "no local worker seen in the last 15 minutes has 40 000 MiB of GPU memory; "
        "the largest has 24 000"
    )
    # Workers seen longer ago than the window do not count.
    s.clock.advance(901)
    why = await s.explainer.explain_upstream(5)
    assert why.workers_seen == 0
    assert why.reason == "no worker has asked for jobs in the last 15 minutes"


async def test_explain_when_every_fitting_worker_is_busy(service: Service) -> None:
    s = service
    await submit(s, 3)
    assert await s.jobs.pull(worker("w1"), 1)
    assert await s.jobs.pull(worker("w2"), 1)
    why = await s.explainer.explain_upstream(3)
    assert (why.workers_fitting, why.fitting_busy, why.fitting_idle, why.ahead) == (2, 2, 0, 0)
    assert why.reason == "all 2 fitting worker node(s) are busy; it is next in line"


async def test_explain_estimates_the_start_from_the_fitting_nodes_pace(service: Service) -> None:
    s = service
    await submit(s, 6)
    assert await s.run("w1", "finished", seconds=600) == 1
    assert await s.run("w2", "finished", seconds=600) == 2
    assert await s.jobs.pull(worker("w1"), 1)
    assert await s.jobs.pull(worker("w2"), 1)
    why = await s.explainer.explain_upstream(6)
    # Job 5 and one more must end first; two nodes that take 10 minutes a job free a place
    # every 5 minutes.
    assert (why.ahead, why.estimated_start_seconds, why.finish_rate_per_hour) == (1, 600.0, 12.0)
    assert why.estimate == (
        "expected to start in about 10 minutes: 2 job(s) must end first, and the 2 fitting "
        "node(s) take about 10 minutes a job (the mean of the 2 they ended in the last 60 "
        "minutes), 12.0 jobs an hour"
    )
    # An hour later the pace is forgotten: no estimate rather than a stale one.
    s.clock.advance(3601)
    for name in ("w1", "w2"):  # seen again, still busy
        await s.queue.record_seen(worker(name), s.clock.now())
    why = await s.explainer.explain_upstream(6)
    assert (why.estimated_start_seconds, why.finish_rate_per_hour) == (None, 0.0)
    assert why.estimate == (
        "no estimate: the 2 fitting node(s) ended no job in the last 60 minutes"
    )


async def test_explain_when_a_fitting_worker_is_idle(service: Service) -> None:
    s = service
    await submit(s, 3)
    await s.jobs.pull(worker("w1", gpu_mem=0), 1)  # takes job 1; cannot take GPU jobs
    await s.jobs.update_status(1, "w1", "finished", None)
    why = await s.explainer.explain_upstream(3)
    assert (why.fitting_idle, why.ahead) == (1, 1)
    assert why.reason.startswith("1 fitting worker node(s) idle; 1 job(s) come before it")
    why = await s.explainer.explain_upstream(2)
    assert why.ahead == 0
    assert "it is next in line" in why.reason
    assert why.estimated_start_seconds == 0.0
    assert why.estimate == "expected at the next pull of one of the 1 idle fitting node(s)"


async def test_explain_an_any_job_waiting_for_older_than(service: Service) -> None:
    s = service
    await s.jobs.submit(submission(9, environment=None))
    await s.jobs.pull(worker("c1", environment=Environment.CLOUD, older_than=600), 1)
    s.clock.advance(60)
    why = await s.explainer.explain_upstream(9)
    assert (why.workers_fitting, why.fitting_idle) == (1, 0)
    assert why.reason == (
        "the job may run in any environment, and the fitting workers take such a job only "
        "once it is 10 minutes old; it is 60 s old"
    )


async def test_explain_when_fitting_workers_are_set_aside(service: Service) -> None:
    s = service
    await submit(s, 1, hardware={"memory": 1000})
    await s.jobs.pull(worker("w9", memory=8), 1)  # seen, but too small for the job
    await s.queue.record_seen(worker("w1"), s.clock.now())
    await s.queue.set_aside(node("w1"), at(600), "broken", s.clock.now(), strikes=0)
    why = await s.explainer.explain_upstream(1)
    assert (why.workers_fitting, why.fitting_set_aside) == (1, 1)
    assert why.reason.startswith("all 1 fitting worker node(s) seen in the last 15 minutes are set")


async def test_explain_a_job_that_is_not_queued_and_an_unknown_one(service: Service) -> None:
    s = service
    await submit(s, 1, start=3)
    await s.jobs.pull(worker("w1"), 1)
    why = await s.explainer.explain_upstream(3)
    assert (why.status, why.worker) == ("pulled", "w1")
    assert why.reason == f"the job is not waiting: it is pulled on worker w1 (node {node('w1')})"
    with pytest.raises(JobNotFound, match=r"meta\.job_id 4"):
        await s.explainer.explain_upstream(4)


# ---------------------------------------------------------------------------------------------
# Nodes: an account's machines judged apart (ARCHITECTURE §3).


def lab(n: int, **kw: object) -> dict[str, object]:
    """Machine ``n`` of a lab or cloud account: its own address."""
    return {"address": f"10.0.0.{n}", **kw}


async def test_one_broken_node_of_ten_is_set_aside_and_the_nine_keep_working(
    service: Service,
) -> None:
    """The cloud: one account, ten instances on their own addresses, one with a broken GPU."""
    s = service
    await submit(s, 120)
    for n in range(1, 10):  # the healthy nodes have finished jobs lately
        assert await s.run("cloud", "finished", seconds=60, **lab(n))
    broken_failed = 0
    for _ in range(10):  # the broken node keeps pulling, and the others keep working
        if await s.run("cloud", "error", seconds=1, **lab(10)):
            broken_failed += 1
        for n in range(1, 10):
            assert await s.run("cloud", "finished", seconds=5, **lab(n)), n
    # 450 s: within its first cool-off (600 s), at most ASIDE_AFTER_FAILURES failures.
    assert broken_failed == 3
    broken = await s.queue.worker(worker("cloud", **lab(10)).node)
    assert broken is not None
    assert broken.aside(s.clock.now())
    assert broken.aside_reason is not None
    assert "9 other node(s) finished more jobs than they failed" in broken.aside_reason
    for n in range(1, 10):
        healthy = await s.queue.worker(worker("cloud", **lab(n)).node)
        assert healthy is not None
        assert not healthy.aside(s.clock.now())
        assert healthy.strikes == 0
    # After its cool-off it gets work again, and fails at most 3 more before the next one.
    assert broken.aside_until is not None
    s.clock.set(broken.aside_until)
    failed_again = 0
    for _ in range(6):
        if await s.run("cloud", "error", seconds=1, **lab(10)):
            failed_again += 1
        assert await s.run("cloud", "finished", seconds=30, **lab(1))
    assert failed_again == 3


async def test_identical_fetchers_are_one_node_and_an_instance_id_tells_them_apart(
    service: Service,
) -> None:
    """One machine, four GPUs, one fetcher each, one account; GPU 3 is broken."""
    s = service
    await submit(s, 80)
    for _ in range(2):
        assert await s.run("other-lab", "finished", seconds=60, **lab(99))
    # Without an instance id the four look alike: one node, set aside together.
    for _ in range(3):
        assert await s.run("lab", "error", seconds=1, **lab(5))
    shared = await s.queue.worker(worker("lab", **lab(5)).node)
    assert shared is not None
    assert shared.aside(s.clock.now())
    assert shared.aside_reason is not None
    assert (
        "every fetcher of account lab at 10.0.0.5 offering this hardware is this one node"
        in shared.aside_reason
    )
    assert "X-Worker-Instance" in shared.aside_reason
    assert await s.jobs.pull(worker("lab", **lab(5)), 1) == []  # GPU 0, healthy, idles too
    # With instance ids, each GPU is a node: only the broken one is set aside.
    assert await s.fleet.release("lab", s.clock.now()) == {shared.node: True}
    for _ in range(3):
        assert await s.run("lab", "error", seconds=1, **lab(5, instance="gpu3"))
        for gpu in ("gpu0", "gpu1", "gpu2"):
            assert await s.run("lab", "finished", seconds=20, **lab(5, instance=gpu))
    gpu3 = await s.queue.worker(worker("lab", **lab(5, instance="gpu3")).node)
    assert gpu3 is not None
    assert gpu3.aside(s.clock.now())
    assert gpu3.aside_reason is not None
    assert "X-Worker-Instance" not in gpu3.aside_reason
    for gpu in ("gpu0", "gpu1", "gpu2"):
        assert await s.jobs.pull(worker("lab", **lab(5, instance=gpu)), 1), gpu


async def test_concurrent_pulls_of_one_node_hold_at_most_max_jobs_per_node(
    service: Service,
) -> None:
    s = service
    await submit(s, 150)
    runaway = worker("lab", **lab(7))
    pulls = await asyncio.gather(*(s.jobs.pull(runaway, 100) for _ in range(3)))
    assert sum(len(p) for p in pulls) == DEFAULT_MAX_JOBS_PER_NODE
    record = await s.queue.worker(runaway.node)
    assert record is not None
    assert len(record.active_jobs) == DEFAULT_MAX_JOBS_PER_NODE
    assert await s.jobs.pull(runaway, 100) == []
    # Another machine of the account is another node, with a cap of its own.
    assert len(await s.jobs.pull(worker("lab", **lab(8)), 100)) == DEFAULT_MAX_JOBS_PER_NODE


async def test_a_mass_failure_of_one_node_does_not_switch_the_rule_off_for_the_rest(
    service: Service,
) -> None:
    """A node failed 150 jobs (pulled in one burst before the cap, say) and was set aside; then
    another node fails 3 in a row while the rest finish: it is set aside too."""
    s = service
    await submit(s, 170)
    for n in (2, 3):
        assert await s.run("lab", "finished", seconds=60, **lab(n))
    burst = worker("runaway", **lab(1))
    await s.queue.record_seen(burst, s.clock.now())
    claimed = await s.queue.claim_jobs(
        burst, 100, s.clock.now(), exclude_attempted=True, max_held=1000
    )
    claimed += await s.queue.claim_jobs(
        burst, 50, s.clock.now(), exclude_attempted=True, max_held=1000
    )
    assert len(claimed) == 150
    s.clock.advance(1)
    for c in claimed:
        await s.jobs.update_status(c.job.id, "runaway", "error", None)
    runaway = await s.queue.worker(burst.node)
    assert runaway is not None
    assert runaway.aside(s.clock.now())
    for n in (2, 3):
        assert await s.run("lab", "finished", seconds=60, **lab(n))
    for _ in range(3):
        assert await s.run("flaky", "error", seconds=2, **lab(4))
    flaky = await s.queue.worker(worker("flaky", **lab(4)).node)
    assert flaky is not None
    assert flaky.aside(s.clock.now())
