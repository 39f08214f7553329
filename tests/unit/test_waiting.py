"""Why a job waits (``core.waiting``), as a user reads the sentence: over the in-memory queue and
a fake clock, the workers seen being the ones that pulled."""

from __future__ import annotations

from tests.unit.helpers import make_stack, make_submission, worker_profile
from workerfacing_api.core.waiting import WaitExplainer


async def test_when_no_worker_seen_has_a_gpu_the_reason_says_so_not_the_largest_has_0() -> None:
    stack = make_stack()
    explainer = WaitExplainer(
        stack.queue, stack.queue, stack.clock, seen_window=900, exclude_attempted=True
    )
    await stack.service.submit(make_submission(7, hardware={"gpu_mem": 40000}))
    assert await stack.service.pull(worker_profile("cpu-1", gpu_mem=0), 1) == []
    assert await stack.service.pull(worker_profile("cpu-2", gpu_mem=0), 1) == []

    why = await explainer.explain_upstream(7)

    assert (why.status, why.workers_seen, why.workers_fitting) == ("queued", 2, 0)
    assert why.reason == (
        "no local worker seen in the last 15 minutes has a GPU; "
        "the job needs 40 000 MiB of GPU memory"
    )

    # One worker with a smaller GPU: the sentence names the largest, as before.
    assert await stack.service.pull(worker_profile("gpu-1", gpu_mem=24000), 1) == []
    why = await explainer.explain_upstream(7)
    assert why.reason == (
        "no local worker seen in the last 15 minutes has 40 000 MiB of GPU memory; "
        "the largest has 24 000"
    )
