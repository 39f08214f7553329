"""Builders shared by the unit tests: submissions shaped like the user-facing API's, the service
as the container builds it over the in-memory queue, and a brute-force reading of the pull rules
of ARCHITECTURE §3.

The reference pull here is deliberately written from the design text, not from
``core.matching``: it is what the matching code is held to.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
from dependency_injector import providers

from tests.bodies import job_document
from workerfacing_api.config import Settings
from workerfacing_api.container import build_container, use_in_memory_queue
from workerfacing_api.core.clock import FakeClock
from workerfacing_api.core.fleet import AsidePolicy, Fleet
from workerfacing_api.core.jobs import JobService
from workerfacing_api.core.lifecycle import RetryPolicy
from workerfacing_api.core.memory import InMemoryQueue
from workerfacing_api.core.model import (
    DEFAULT_PRIORITY,
    Delivery,
    Environment,
    JobStatus,
    Message,
    Submission,
    WorkerProfile,
)
from workerfacing_api.core.ports import UpstreamNotifier
from workerfacing_api.core.sync import Backoff, StatusSync


def submission_body(job_id: int = 1, **fields: Any) -> dict[str, Any]:
    """A ``POST /_jobs`` body as the user-facing API sends it (local storage)."""
    return job_document(job_id, **fields)


def make_submission(job_id: int = 1, **fields: Any) -> Submission:
    """A ``Submission`` decoded from JSON the same way the HTTP layer decodes it."""
    return Submission.from_json(msgspec.json.encode(submission_body(job_id, **fields)))


def worker_profile(
    worker: str = "w1",
    *,
    environment: Environment = Environment.LOCAL,
    cpu_cores: int = 8,
    memory: int = 64_000,
    gpu_mem: int = 0,
    gpu_model: str | None = None,
    gpu_archi: str | None = None,
    groups: tuple[str, ...] = (),
    older_than: float = 0.0,
    address: str = "",
    instance: str | None = None,
) -> WorkerProfile:
    return WorkerProfile(
        worker=worker,
        address=address,
        instance=instance,
        environment=environment,
        cpu_cores=cpu_cores,
        memory=memory,
        gpu_mem=gpu_mem,
        gpu_model=gpu_model,
        gpu_archi=gpu_archi,
        groups=groups,
        older_than=older_than,
    )


class RecordingUpstream:
    """A fake user-facing API: records every event it is sent and answers, per ``meta.job_id``,
    what the test told it to (``DELIVERED`` unless told otherwise)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Message, Delivery]] = []
        self.answers: dict[int, Delivery] = {}

    async def notify(self, event: Message, within: float) -> Delivery:
        outcome = self.answers.get(event.upstream_id, Delivery.DELIVERED)
        self.calls.append((event, outcome))
        return outcome

    async def aclose(self) -> None:
        return None

    def delivered(self, upstream_id: int | None = None) -> list[tuple[str, str | None]]:
        """(status, runtime_details) of the events accepted, in the order they arrived."""
        return [
            (event.status.value, event.runtime_details)
            for event, outcome in self.calls
            if outcome is Delivery.DELIVERED
            and (upstream_id is None or event.upstream_id == upstream_id)
        ]


@dataclass
class Stack:
    """A ``JobService`` over an ``InMemoryQueue`` with a fake clock, as the tests drive it."""

    clock: FakeClock
    queue: InMemoryQueue
    sync: StatusSync
    service: JobService
    fleet: Fleet


# The local issuer's key of the containers below (made by build_container, never used here).
_STATE = Path(tempfile.mkdtemp(prefix="wf-unit-tests-"))
atexit.register(shutil.rmtree, _STATE, True)


def make_stack(
    policy: RetryPolicy | None = None,
    *,
    upstream: UpstreamNotifier | None = None,
    backoff: Backoff | None = None,
    jitter: float = 0.0,
    inline_pause_seconds: float = 5.0,
    inline_wait: float = 0.2,
    aside: AsidePolicy | None = None,
    ack_delay: float = 0.0,
    max_jobs_per_node: int = 8,
) -> Stack:
    """The service as ``serve`` builds it (the container), with the in-memory queue, a fake
    clock and ``upstream`` (None: no user-facing API configured) put in its place, and the
    policies given as settings. Acknowledgements are written at once unless ``ack_delay``."""
    policy = policy or RetryPolicy()
    aside = aside or AsidePolicy()
    settings = Settings(
        user_data_root_path=str(_STATE / "user_data"),
        local_state_dir=str(_STATE),
        queue_db_url=f"sqlite:///{_STATE / 'never-opened.db'}",
        internal_api_key_secret="unit-tests",
        max_retries=policy.max_retries,
        timeout_failure=int(policy.timeout_failure),
        retry_different=policy.retry_different,
        aside_after_failures=aside.after_failures,
        aside_cool_off=aside.cool_off,
        aside_cool_off_max=aside.cool_off_max,
        aside_window=aside.window,
        max_jobs_per_node=max_jobs_per_node,
        metrics=False,
    )
    container = build_container(settings)
    clock = FakeClock()
    queue = InMemoryQueue(record_events=upstream is not None)
    use_in_memory_queue(container, queue)
    container.clock.override(providers.Object(clock))
    container.upstream.override(providers.Object(upstream))
    if backoff is not None:
        container.backoff.override(providers.Object(backoff))
    container.sync.add_kwargs(
        inline_pause_seconds=inline_pause_seconds,
        inline_wait=inline_wait,
        jitter=lambda: jitter,
        ack_delay=ack_delay,
    )
    return Stack(
        clock=clock,
        queue=queue,
        sync=container.sync(),
        service=container.jobs(),
        fleet=container.fleet(),
    )


# ---------------------------------------------------------------------------------------------
# A brute-force reading of "Matching for a pull by worker W" (ARCHITECTURE §3).


@dataclass
class JobRecord:
    """What the test itself knows about one submitted job, independent of the queue."""

    id: int
    upstream_id: int
    environment: str | None
    group: str | None
    priority: int | None  # as submitted; null means the default
    hardware: dict[str, Any]
    created_at: datetime
    status: JobStatus = JobStatus.QUEUED
    worker: str | None = None
    attempt: int = 0
    num_retries: int = 0
    heartbeat: datetime | None = None
    tried: list[str] = field(default_factory=list)

    @property
    def effective_priority(self) -> int:
        return DEFAULT_PRIORITY if self.priority is None else self.priority


def _meets_hardware(need: dict[str, Any], worker: WorkerProfile) -> bool:
    offered = {
        "cpu_cores": worker.cpu_cores,
        "memory": worker.memory,
        "gpu_mem": worker.gpu_mem,
        "gpu_model": worker.gpu_model,
        "gpu_archi": worker.gpu_archi,
    }
    for key, required in need.items():
        if required is None:
            continue  # a null requirement accepts anything
        if key in {"cpu_cores", "memory", "gpu_mem"}:
            if not required <= offered[key]:
                return False
        elif required != offered[key]:
            return False
    return True


def reference_pull(
    jobs: Iterable[JobRecord],
    worker: WorkerProfile,
    limit: int,
    now: datetime,
    *,
    retry_different: bool,
) -> list[int]:
    """Ids of the jobs ``worker`` should get, in the order they are handed out."""
    fitting: list[JobRecord] = []
    for job in jobs:
        if job.status is not JobStatus.QUEUED:
            continue
        if job.environment is None:
            # "older than T": with the default T = 0 a fresh job must fit, so the bound is
            # inclusive (age >= T).
            if now - job.created_at < timedelta(seconds=worker.older_than):
                continue
        elif job.environment != worker.environment.value:
            continue
        if not _meets_hardware(job.hardware, worker):
            continue
        if retry_different and worker.worker in job.tried:
            continue
        fitting.append(job)
    preferred = [j for j in fitting if j.group is not None and j.group in worker.groups]
    others = [j for j in fitting if not (j.group is not None and j.group in worker.groups)]
    ordered: list[JobRecord] = []
    for part in (preferred, others):
        ordered.extend(
            sorted(part, key=lambda j: (-j.effective_priority, j.created_at, j.id)),
        )
    return [j.id for j in ordered[:limit]]
