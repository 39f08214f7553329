"""Demand by hardware class (``GET /_demand``, ``core.demand``): each queued job counts in exactly
one class, and "no node seen can run it" exactly when no seen offer fits, by the pull's own rule;
over the in-memory model, SQLite and PostgreSQL, and over HTTP with its access rule."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from tests.inprocess import API_KEY, Api
from tests.queues import Queue, at, submission, worker
from workerfacing_api.core.clock import FakeClock
from workerfacing_api.core.demand import Demand
from workerfacing_api.core.matching import fits
from workerfacing_api.core.model import Environment

NEEDS = st.fixed_dictionaries(
    {},
    optional={
        "gpu_mem": st.sampled_from([8000, 24000, 80000]),
        "memory": st.sampled_from([16000, 64000]),
        "gpu_model": st.sampled_from(["RTX", "A100"]),
        "cpu_cores": st.sampled_from([4, 16]),
    },
)
OFFERS = st.fixed_dictionaries(
    {
        "gpu_mem": st.sampled_from([0, 8000, 24000]),
        "memory": st.sampled_from([16000, 64000]),
        "gpu_model": st.sampled_from([None, "RTX", "A100"]),
        "cpu_cores": st.sampled_from([4, 16]),
        "environment": st.sampled_from([Environment.LOCAL, Environment.CLOUD]),
    }
)


Example = tuple[list[tuple[dict[str, object], str | None]], list[dict[str, object]]]


def drawn_examples(count: int) -> list[Example]:
    """Random queues and fleets, drawn by hypothesis ahead of the (async) test that runs them."""
    examples: list[Example] = []

    @settings(
        max_examples=count, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(
        jobs=st.lists(
            st.tuples(NEEDS, st.sampled_from([None, "local", "cloud"])), min_size=1, max_size=12
        ),
        offers=st.lists(OFFERS, max_size=4),
    )
    def draw(
        jobs: list[tuple[dict[str, object], str | None]], offers: list[dict[str, object]]
    ) -> None:
        examples.append((jobs, offers))

    draw()
    return examples


async def test_every_queued_job_counts_in_one_class_and_unrunnable_means_no_offer_fits(
    queue: Queue,
) -> None:
    upstream_id = 0
    for n, (jobs, offers) in enumerate(drawn_examples(15)):
        base = 10_000 * n  # each example's nodes are out of the seen window in the next
        now = at(base + 100)
        added = []
        for need, environment in jobs:
            upstream_id += 1
            job, _ = await queue.add(
                submission(upstream_id, hardware=need, environment=environment), at(base)
            )
            added.append(job)
        nodes = [worker(f"n{n}-{i}", **offer) for i, offer in enumerate(offers)]
        for node in nodes:
            await queue.record_seen(node, at(base + 50))
        report = await Demand(queue, queue, FakeClock(now), seen_window=900).report()
        assert report.complete
        assert report.queued == len(added)
        assert sum(c.queued for c in report.classes) == len(added)
        for c in report.classes:
            members = [
                j
                for j in added
                if (j.environment.value if j.environment else "any") == c.environment
                and (j.hardware.gpu_mem or 0) == c.gpu_mem
                and (j.hardware.memory or 0) == c.memory
                and (j.hardware.cpu_cores or 0) == c.cpu_cores
                and j.hardware.gpu_model == c.gpu_model
                and j.hardware.gpu_archi == c.gpu_archi
            ]
            assert len(members) == c.queued  # each job in exactly one class
            runnable = any(fits(members[0], node, now) for node in nodes)
            assert (c.no_node_can_run == 0) is runnable, (c, nodes)
            assert (c.fitting_nodes_seen > 0) is runnable
            assert (c.reason is None) is runnable
            assert (c.smallest_fitting_offer is not None) is runnable
        assert report.no_node_can_run == sum(c.no_node_can_run for c in report.classes)
        for job in added:  # out of the queue before the next example
            await queue.cancel(job.id, at(base + 200))


async def test_demand_over_http_for_the_internal_key_or_an_operator(api: Api) -> None:
    assert (await api.client.get("/_demand")).status_code == 401
    assert (await api.client.get("/_demand", headers=api.auth("w1"))).status_code == 403
    await api.submit(1, hardware={"gpu_mem": 80000})
    await api.submit(2)
    await api.submit(3)
    # A node with a 24 000 MiB GPU pulls one job: it is seen, and takes the one it fits.
    assert len(await api.pull("gpu-box", gpu_mem=24000)) == 1
    answer = await api.client.get("/_demand", headers={"x-api-key": API_KEY})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["queued"], body["nodes_seen"], body["no_node_can_run"]) == (2, 1, 1)
    by_gpu = {c["gpu_mem"]: c for c in body["classes"]}
    big, any_gpu = by_gpu[80000], by_gpu[0]
    assert (big["queued"], big["no_node_can_run"], big["fitting_nodes_seen"]) == (1, 1, 0)
    assert "80 000 MiB of GPU memory" in big["reason"]
    assert (any_gpu["queued"], any_gpu["no_node_can_run"]) == (1, 0)
    assert any_gpu["smallest_fitting_offer"]["gpu_mem"] == 24000
    operator = await api.client.get("/_demand", headers=api.auth("op", ("operators",)))
    assert operator.status_code == 200
    assert operator.json()["classes"] == body["classes"]


async def test_the_demand_gauges_parse_and_follow_the_queue(api: Api) -> None:
    """What a Prometheus (or KEDA) scaler reads: one series per class with queued jobs, parsed by
    prometheus_client's own parser; a class no longer queued leaves no series behind."""
    await api.submit(1, hardware={"gpu_mem": 80000})
    await api.submit(2)
    assert len(await api.pull("gpu-box", gpu_mem=24000)) == 1  # takes job 2, the one it fits

    async def series() -> dict[tuple[str, str], float]:
        answer = await api.client.get("/metrics", headers={"x-api-key": API_KEY})
        assert answer.status_code == 200, answer.text
        found: dict[tuple[str, str], float] = {}
        for family in text_string_to_metric_families(answer.text):
            if family.name.startswith("workerfacing_demand_"):
                for sample in family.samples:
                    found[(sample.name, sample.labels["gpu_mem_mib"])] = sample.value
        return found

    first = await series()
    assert first[("workerfacing_demand_queued_jobs", "80000")] == 1
    assert first[("workerfacing_demand_unrunnable_jobs", "80000")] == 1
    assert first[("workerfacing_demand_fitting_nodes", "80000")] == 0
    assert first[("workerfacing_demand_oldest_wait_seconds", "80000")] >= 0
    assert ("workerfacing_demand_queued_jobs", "0") not in first  # job 2 is pulled, not queued
    await api.submit(3, hardware={"gpu_mem": 80000})
    assert (await series())[("workerfacing_demand_queued_jobs", "80000")] == 2
    assert len(await api.pull("big-box", gpu_mem=81920, limit=2)) == 2
    assert not any(name == "workerfacing_demand_queued_jobs" for name, _ in await series())
