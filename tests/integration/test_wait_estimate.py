"""A queued job's estimated start (``explain``: its place in line and the fitting nodes' recent
finish rate), checked on a replayed trace: a fleet of five nodes runs jobs of 8 to 12 minutes
while jobs arrive faster than it ends them, then slower; each job's estimate, asked when it was
submitted, is compared with when it was actually pulled. Over the in-memory model and SQLite
(the reads it makes, ``count_ahead`` and ``outcomes_of``, are held to PostgreSQL's answers by the
contract suites), on a fake clock.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.queues import at, core_on, open_queue, submission, worker
from workerfacing_api.core.waiting import WaitExplainer

STEP = 10.0  # seconds between two looks of the fleet at the queue (the workers' poll)
NODES = [worker("lab", instance=f"gpu{n}") for n in range(5)]


@dataclass
class Estimated:
    asked_at: float
    start_in: float | None  # what explain said
    started_at: float | None = None  # when a node pulled it


def arrivals(seed: int) -> list[float]:
    """A day's busy stretch: two hours at 0.65 jobs a minute (the fleet ends about 0.5), then
    one hour at 0.3, as Poisson arrivals."""
    rng = random.Random(seed)
    times: list[float] = []
    t = 0.0
    for until, per_minute in ((7200.0, 0.65), (10800.0, 0.3)):
        while True:
            t += rng.expovariate(per_minute / 60)
            if t >= until:
                t = until
                break
            times.append(t)
    return times


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@pytest.mark.parametrize("seed", [1, 2])
async def test_the_estimate_is_within_half_of_the_wait_for_most_jobs(
    kind: str, seed: int, tmp_path: Path
) -> None:
    async with open_queue(kind, tmp_path, None) as queue:
        core = core_on(queue, timeout_failure=3600)
        clock, jobs = core.clock, core.jobs
        explainer = WaitExplainer(queue, queue, clock, seen_window=900, exclude_attempted=False)
        rng = random.Random(seed)
        pending = arrivals(seed)
        estimates: dict[int, Estimated] = {}
        running: dict[str, tuple[int, float]] = {}  # instance -> (queue id, ends at)
        now = 0.0
        upstream_id = 0
        while pending or running or any(e.started_at is None for e in estimates.values()):
            clock.set(at(now))
            for node in NODES:
                held = running.get(node.instance or "")
                if held is not None and held[1] <= now:
                    await jobs.update_status(held[0], node.worker, "finished", None)
                    del running[node.instance or ""]
            while pending and pending[0] <= now:
                pending.pop(0)
                upstream_id += 1
                job = await jobs.submit(submission(upstream_id))
                why = await explainer.explain_upstream(upstream_id)
                estimates[job.id] = Estimated(asked_at=now, start_in=why.estimated_start_seconds)
            for node in NODES:
                if (node.instance or "") not in running:
                    for job in await jobs.pull(node, 1):
                        estimates[job.id].started_at = now
                        running[node.instance or ""] = (job.id, now + rng.uniform(480, 720))
            now += STEP
            assert now < 6 * 3600, "the trace does not drain"

    waited = [e for e in estimates.values() if e.started_at is not None]
    assert len(waited) == len(estimates)
    long_waits = [e for e in waited if e.started_at - e.asked_at > 60]  # type: ignore[operator]
    assert len(long_waits) >= 40  # the trace builds a real queue
    close = [
        e
        for e in long_waits
        if e.start_in is not None
        and abs(e.start_in - (e.started_at - e.asked_at)) <= 0.5 * (e.started_at - e.asked_at)  # type: ignore[operator]
    ]
    assert len(close) >= 0.8 * len(long_waits), (
        f"{len(close)} of {len(long_waits)} estimates within ±50 %"
    )
