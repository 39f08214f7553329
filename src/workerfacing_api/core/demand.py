"""What the fleet is asked for: the queued jobs by hardware class, for an autoscaler and for
operators (``GET /_demand``, ``workerfacing-api demand``).

A class is the distinct requirement queued jobs state (environment, CPU cores, memory, GPU memory,
model and architecture; "anything" is 0 or None), as ``DashboardReads.waiting_classes`` groups
them: each queued job counts in exactly one class. For each class: how many jobs, how long the
oldest has waited, how many nodes seen in ``WORKER_SEEN_WINDOW`` could run it (the pull's own
rule, ``core.matching.fits``, waiting time aside), the smallest offer among them, and how many of
its jobs no node seen can run at all. Figures are read from the job rows when asked (one indexed
pass), never kept in counters that could drift.

An autoscaler that starts machines of one kind asks for the demand *such a machine* could serve
(``MachineOffer``, the query of a pull plus the environment): only the classes it would run are
listed, by the same rule, and the totals are theirs (0 when it would run none).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import msgspec

from workerfacing_api.core.matching import fits
from workerfacing_api.core.model import (
    Environment,
    Job,
    JobStatus,
    PathsUpload,
    WaitingClass,
    WorkerProfile,
    WorkerRecord,
)
from workerfacing_api.core.ports import Clock, DashboardReads, WorkerRegistry
from workerfacing_api.core.waiting import why_none_fits

# Classes read at most: far more than the kinds of GPU a fleet has; said when reached.
MAX_CLASSES = 1000


class Offer(msgspec.Struct, frozen=True, kw_only=True):
    """What a node offered at its last pull."""

    cpu_cores: int
    memory: int  # MiB
    gpu_mem: int  # MiB
    gpu_model: str | None
    gpu_archi: str | None


class MachineOffer(msgspec.Struct, frozen=True, kw_only=True):
    """What a machine of one kind would offer at its pull (``GET /jobs``'s query and defaults),
    and the environment of its token: the filter of ``Demand.report``."""

    environment: Environment = Environment.CLOUD
    cpu_cores: int = 1
    memory: int  # MiB
    gpu_mem: int = 0  # MiB; 0: no GPU
    gpu_model: str | None = None
    gpu_archi: str | None = None


def machine_offer(
    *,
    memory: int | None,
    cpu_cores: int | None = None,
    gpu_mem: int | None = None,
    gpu_model: str | None = None,
    gpu_archi: str | None = None,
    environment: Environment | None = None,
) -> MachineOffer | None:
    """The offer of a demand query, None when it asks for the whole demand: ``memory`` turns the
    filter on, as it is the one value a pull must send (the others have a pull's defaults).
    Without it the rest is not looked at; the report's ``offer`` (None) shows it."""
    if memory is None:
        return None
    return MachineOffer(
        environment=environment if environment is not None else Environment.CLOUD,
        cpu_cores=cpu_cores if cpu_cores is not None else 1,
        memory=memory,
        gpu_mem=gpu_mem if gpu_mem is not None else 0,
        gpu_model=gpu_model,
        gpu_archi=gpu_archi,
    )


class ClassDemand(msgspec.Struct, frozen=True, kw_only=True):
    environment: str  # cloud, local or any
    cpu_cores: int  # 0: anything
    memory: int  # MiB; 0: anything
    gpu_mem: int  # MiB; 0: anything
    gpu_model: str | None  # None: anything
    gpu_archi: str | None
    queued: int
    oldest_wait_seconds: float
    fitting_nodes_seen: int
    smallest_fitting_offer: Offer | None
    no_node_can_run: int  # the class's jobs when no node seen fits it, else 0
    reason: str | None  # why no node seen fits, in figures; None when one does


class DemandReport(msgspec.Struct, frozen=True, kw_only=True):
    at: datetime
    seen_window_seconds: float
    nodes_seen: int
    queued: int
    no_node_can_run: int
    classes: list[ClassDemand]
    complete: bool  # False: more than MAX_CLASSES classes, the rest not read
    offer: MachineOffer | None = None  # the filter asked for: classes such a machine would run


def stand_in(waiting: WaitingClass) -> Job:
    """A queued job of ``waiting``'s class, for ``fits`` to judge (its age that of the class's
    oldest job)."""
    return Job(
        id=0,
        upstream_id=0,
        status=JobStatus.QUEUED,
        environment=waiting.environment,
        group=None,
        priority=0,
        hardware=waiting.hardware,
        created_at=waiting.oldest_created_at,
        spec=b"{}",
        paths_upload=PathsUpload(output="", log="", artifact=""),
    )


def _offer(profile: WorkerProfile) -> Offer:
    return Offer(
        cpu_cores=profile.cpu_cores,
        memory=profile.memory,
        gpu_mem=profile.gpu_mem,
        gpu_model=profile.gpu_model,
        gpu_archi=profile.gpu_archi,
    )


def can_run(job: Job, profile: WorkerProfile, now: datetime) -> bool:
    """The pull's rule, waiting time aside: a job for any environment is old enough for every
    node (``older_than`` 0, and its age counted from no later than its own creation, so that
    another process's clock running ahead does not hide it)."""
    return fits(job, msgspec.structs.replace(profile, older_than=0.0), max(now, job.created_at))


def _profile(offer: MachineOffer) -> WorkerProfile:
    return WorkerProfile(
        worker="",
        environment=offer.environment,
        cpu_cores=offer.cpu_cores,
        memory=offer.memory,
        gpu_mem=offer.gpu_mem,
        gpu_model=offer.gpu_model,
        gpu_archi=offer.gpu_archi,
    )


def would_run(waiting: WaitingClass, offer: MachineOffer, now: datetime) -> bool:
    """Whether a machine offering ``offer`` would run ``waiting``'s jobs: pure."""
    return can_run(stand_in(waiting), _profile(offer), now)


def class_demand(
    waiting: WaitingClass, seen: list[WorkerRecord], now: datetime, window: float
) -> ClassDemand:
    """The demand of one class, given the nodes seen: pure."""
    job = stand_in(waiting)
    # Waiting time aside (an "any" job is old enough for everyone): hardware decides.
    fitting = [w.profile for w in seen if can_run(job, w.profile, now)]
    smallest = min(
        fitting,
        key=lambda p: (p.gpu_mem, p.memory, p.cpu_cores, p.gpu_model or "", p.gpu_archi or ""),
        default=None,
    )
    return ClassDemand(
        environment=waiting.environment.value if waiting.environment is not None else "any",
        cpu_cores=waiting.cpu_cores,
        memory=waiting.memory,
        gpu_mem=waiting.gpu_mem,
        gpu_model=waiting.gpu_model,
        gpu_archi=waiting.gpu_archi,
        queued=waiting.jobs,
        oldest_wait_seconds=max((now - waiting.oldest_created_at).total_seconds(), 0.0),
        fitting_nodes_seen=len(fitting),
        smallest_fitting_offer=None if smallest is None else _offer(smallest),
        no_node_can_run=0 if fitting else waiting.jobs,
        reason=None
        if fitting
        else why_none_fits(waiting.environment, waiting.hardware, seen, window),
    )


class Demand:
    """The demand by hardware class, read when asked."""

    def __init__(
        self,
        reads: DashboardReads,
        registry: WorkerRegistry,
        clock: Clock,
        *,
        seen_window: float,
    ) -> None:
        self._reads = reads
        self._registry = registry
        self._clock = clock
        self._seen_window = seen_window

    async def report(self, offer: MachineOffer | None = None) -> DemandReport:
        """The whole demand, or with ``offer`` the classes a machine offering it would run."""
        now = self._clock.now()
        seen = await self._registry.workers(now - timedelta(seconds=self._seen_window))
        waiting = await self._reads.waiting_classes(MAX_CLASSES + 1)
        classes = [
            class_demand(w, seen, now, self._seen_window)
            for w in waiting[:MAX_CLASSES]
            if offer is None or would_run(w, offer, now)
        ]
        return DemandReport(
            at=now,
            seen_window_seconds=self._seen_window,
            nodes_seen=len(seen),
            queued=sum(c.queued for c in classes),
            no_node_can_run=sum(c.no_node_can_run for c in classes),
            classes=classes,
            complete=len(waiting) <= MAX_CLASSES,
            offer=offer,
        )
