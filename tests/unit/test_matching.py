"""Which jobs a pull hands out, and in which order (ARCHITECTURE §3 "Matching"), held to a
brute-force reading of the design in ``tests.unit.helpers.reference_pull``."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.helpers import (
    JobRecord,
    Stack,
    make_stack,
    make_submission,
    reference_pull,
    worker_profile,
)
from workerfacing_api.core.lifecycle import RetryPolicy
from workerfacing_api.core.model import Environment, JobStatus, WorkerProfile

WORKERS = ["w1", "w10", "w2"]
GROUPS = ["g1", "g2", "g3"]

hardware_needs = st.fixed_dictionaries(
    {
        # Mostly no requirement, as most real jobs, so that pulls often find something.
        "cpu_cores": st.sampled_from([None, None, None, 1, 2, 4, 8]),
        "memory": st.sampled_from([None, None, None, 1000, 4000, 16000]),
        "gpu_mem": st.sampled_from([None, None, None, 0, 4000, 8000]),
        "gpu_model": st.sampled_from([None, None, None, None, "A100", "T4"]),
        "gpu_archi": st.sampled_from([None, None, None, None, "ampere", "turing"]),
    }
)
job_fields = st.fixed_dictionaries(
    {
        "environment": st.sampled_from([None, "local", "cloud"]),
        "group": st.sampled_from([None, *GROUPS]),
        "priority": st.sampled_from([None, -3, 0, 5, 10]),
        "hardware": hardware_needs,
    }
)
# Submissions with time passing (or not: equal ages exercise the id tie-break) in between.
submissions = st.lists(st.tuples(job_fields, st.sampled_from([0, 0, 1, 5, 30])), max_size=12)

profiles = st.builds(
    worker_profile,
    st.sampled_from(WORKERS),
    environment=st.sampled_from(list(Environment)),
    cpu_cores=st.sampled_from([1, 2, 4, 8, 16]),
    memory=st.sampled_from([500, 1000, 4000, 16000]),
    gpu_mem=st.sampled_from([0, 4000, 8000, 16000]),
    gpu_model=st.sampled_from([None, "A100", "T4"]),
    gpu_archi=st.sampled_from([None, "ampere", "turing"]),
    groups=st.lists(st.sampled_from(GROUPS), unique=True, max_size=3).map(tuple),
    older_than=st.sampled_from([0.0, 0.0, 1.0, 10.0, 30.0, 3600.0]),
)

Op = (
    tuple[Literal["pull"], WorkerProfile, int, bool]  # profile, limit, through the service?
    | tuple[Literal["wait"], int]
    | tuple[Literal["expire"]]  # every pulled job falls silent and the sweeper re-queues it
)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("pull"), profiles, st.integers(1, 4), st.booleans()),
        st.tuples(st.just("wait"), st.integers(0, 40)),
        st.just(("expire",)),
    ),
    min_size=1,
    max_size=10,
)

POLICY_TIMEOUT = 30.0


async def replay(
    stack: Stack, jobs: list[tuple[dict[str, Any], int]], steps: list[Op], retry_different: bool
) -> None:
    records: list[JobRecord] = []
    for number, (fields, wait) in enumerate(jobs, start=1):
        job = await stack.service.submit(make_submission(number, **fields))
        records.append(
            JobRecord(
                id=job.id,
                upstream_id=number,
                environment=fields["environment"],
                group=fields["group"],
                priority=fields["priority"],
                hardware=fields["hardware"],
                created_at=stack.clock.now(),
            )
        )
        stack.clock.advance(wait)
    by_id = {r.id: r for r in records}

    for step in steps:
        if step[0] == "wait":
            stack.clock.advance(step[1])
            continue
        if step[0] == "expire":
            stack.clock.advance(POLICY_TIMEOUT + 1)
            report = await stack.service.sweep()
            held = {r.id for r in records if r.status is JobStatus.PULLED}
            assert set(report.requeued) == held
            assert report.failed == ()
            for job_id in held:
                by_id[job_id].status = JobStatus.QUEUED
            continue
        _, profile, limit, via_service = step
        now = stack.clock.now()
        expected = reference_pull(records, profile, limit, now, retry_different=retry_different)
        if via_service:
            got = [j.id for j in await stack.service.pull(profile, limit)]
        else:
            claimed = await stack.queue.claim_jobs(
                profile, limit, now, exclude_attempted=retry_different, max_held=100
            )
            got = [c.job.id for c in claimed]
        assert got == expected, f"pull by {profile} at {now}"
        for job_id in got:
            by_id[job_id].status = JobStatus.PULLED
            by_id[job_id].tried.append(profile.worker)
            current = await stack.queue.get(job_id)
            assert current is not None
            assert current.status is JobStatus.PULLED
            assert current.worker == profile.worker


@settings(max_examples=200, deadline=None)
@given(jobs=submissions, steps=ops, retry_different=st.booleans())
def test_a_pull_hands_out_exactly_what_the_design_says(
    jobs: list[tuple[dict[str, Any], int]], steps: list[Op], retry_different: bool
) -> None:
    policy = RetryPolicy(
        max_retries=100, timeout_failure=POLICY_TIMEOUT, retry_different=retry_different
    )
    asyncio.run(replay(make_stack(policy), jobs, steps, retry_different))


# ---------------------------------------------------------------------------------------------
# Examples


async def pull_ids(stack: Stack, profile: WorkerProfile, limit: int = 100) -> list[int]:
    return [j.id for j in await stack.service.pull(profile, limit)]


async def test_groups_are_a_preference_not_a_restriction() -> None:
    stack = make_stack()
    other = await stack.service.submit(make_submission(1, group="g2", priority=10))
    mine = await stack.service.submit(make_submission(2, group="g1", priority=0))
    assert await pull_ids(stack, worker_profile(groups=("g1",))) == [mine.id, other.id]


async def test_priority_then_age_then_id_decide_the_order() -> None:
    stack = make_stack()
    old_low = await stack.service.submit(make_submission(1, priority=0))
    stack.clock.advance(1)
    new_high = await stack.service.submit(make_submission(2, priority=9))
    same_time_a = await stack.service.submit(make_submission(3, priority=None))  # default 5
    same_time_b = await stack.service.submit(make_submission(4, priority=5))
    assert await pull_ids(stack, worker_profile()) == [
        new_high.id,
        same_time_a.id,
        same_time_b.id,
        old_low.id,
    ]


async def test_a_job_for_any_environment_waits_older_than_before_it_fits() -> None:
    stack = make_stack()
    job = await stack.service.submit(make_submission(1, environment=None))
    patient = worker_profile(environment=Environment.CLOUD, older_than=60)
    stack.clock.advance(59)
    assert await pull_ids(stack, patient) == []
    stack.clock.advance(1)
    assert await pull_ids(stack, patient) == [job.id]


async def test_a_job_for_one_environment_never_goes_to_the_other() -> None:
    stack = make_stack()
    await stack.service.submit(make_submission(1, environment="cloud"))
    stack.clock.advance(10_000)
    assert await pull_ids(stack, worker_profile(environment=Environment.LOCAL)) == []
    assert len(await pull_ids(stack, worker_profile(environment=Environment.CLOUD))) == 1


@pytest.mark.parametrize(
    ("need", "fits"),
    [
        ({"gpu_model": "A100"}, False),  # the worker has no GPU model at all
        ({"gpu_mem": 8001}, False),
        ({"gpu_mem": 8000}, True),
        ({"memory": 16000, "cpu_cores": 4}, True),
        ({"memory": 16001}, False),
        ({"cpu_cores": 5}, False),
        ({"gpu_archi": "ampere"}, False),
    ],
)
async def test_hardware_requirements_are_met_or_the_job_stays_queued(
    need: dict[str, Any], fits: bool
) -> None:
    stack = make_stack()
    job = await stack.service.submit(make_submission(1, hardware=need))
    worker = worker_profile(cpu_cores=4, memory=16000, gpu_mem=8000)
    assert await pull_ids(stack, worker) == ([job.id] if fits else [])
    assert (await stack.service.status_of(job.id) is JobStatus.PULLED) is fits
