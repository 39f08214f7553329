"""Why a job waits: its state and, for a queued job, the workers seen lately that could take it,
how many of them are busy or set aside, where it stands in their line, and one sentence a user
understands ("no worker seen in the last 15 minutes has 40 000 MiB of GPU memory; the largest
has 24 000").

Read-only, and made of the same rules the pull applies (``core.matching``): the answer never
disagrees with what a pull would do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import msgspec

from workerfacing_api.core.errors import JobNotFound
from workerfacing_api.core.fleet import duration
from workerfacing_api.core.matching import fits
from workerfacing_api.core.model import (
    ACTIVE_STATUSES,
    MAX_DB_INT,
    Environment,
    HardwareSpecs,
    Job,
    JobStatus,
    WorkerProfile,
    WorkerRecord,
)
from workerfacing_api.core.ports import Clock, JobQueue, WorkerRegistry

_CAP = 1000  # jobs ahead counted at most: "1 000 or more" says enough
# Ended attempts read per fitting node for the finish rate: a node ends far fewer in a window.
_ENDED_READ = 10_000
# How long the fitting nodes take a job: the attempts they ended in the last hour.
_RATE_WINDOW = 3600.0


class Explanation(msgspec.Struct, frozen=True, kw_only=True):
    job_id: int  # meta.job_id, as the user-facing API knows the job
    queue_id: int
    status: str
    worker: str | None  # who holds it, when it is active or ended
    waiting_seconds: float | None  # how long it has been queued (since its last hand-back)
    workers_seen: int  # workers seen in the window
    workers_fitting: int  # of those, the ones whose environment and hardware fit the job
    fitting_busy: int  # fitting, not set aside, holding a job
    fitting_set_aside: int
    fitting_idle: int
    ahead: int | None  # jobs the first free fitting worker would take before this one
    reason: str
    # When it may start: from the place in line and how long the fitting nodes took a job lately
    # (each job they end frees a place). None: no estimate (not waiting for a fitting node, or
    # those nodes ended no job in the last hour).
    estimated_start_seconds: float | None = None  # from now
    finish_rate_per_hour: float | None = None  # jobs the fitting nodes end an hour, at that pace
    estimate: str | None = None  # the estimate in one sentence, with the figures it came from


class _Estimate(msgspec.Struct, frozen=True):
    seconds: float | None
    rate_per_hour: float | None
    sentence: str | None


_NO_ESTIMATE = _Estimate(seconds=None, rate_per_hour=None, sentence=None)


def _number(value: int) -> str:
    return f"{value:,}".replace(",", " ")


def _window(seconds: float) -> str:
    return f"in the last {duration(seconds)}"


def why_none_fits(
    environment: Environment | None,
    need: HardwareSpecs,
    seen: Sequence[WorkerRecord],
    seen_window: float,
) -> str:
    """Why no worker of ``seen`` (those seen in the last ``seen_window`` seconds) fits a job of
    ``environment`` (None: any) needing ``need``: the dashboard's sentence for a hardware class
    that waits with no worker that fits."""
    window = _window(seen_window)
    if not seen:
        return f"no worker has asked for jobs {window}"
    return _shortfall(environment, need, seen, window)


def _shortfall(
    environment: Environment | None,
    need: HardwareSpecs,
    seen: Sequence[WorkerRecord],
    window: str,
) -> str:
    """Why none of ``seen`` fits a job of ``environment`` that needs ``need``: the first
    requirement that none of them meets."""
    kind = "worker" if environment is None else f"{environment.value} worker"
    pool = [w for w in seen if environment is None or w.profile.environment is environment]
    if not pool:
        others = sorted({w.profile.environment.value for w in seen})
        return f"no {kind} was seen {window} (the workers seen are {', '.join(others)})"
    numeric: list[tuple[int | None, Callable[[WorkerProfile], int], str, str]] = [
        (need.gpu_mem, lambda p: p.gpu_mem, "MiB of GPU memory", "largest"),
        (need.memory, lambda p: p.memory, "MiB of memory", "largest"),
        (need.cpu_cores, lambda p: p.cpu_cores, "CPU cores", "most"),
    ]
    for required, offered, unit, most in numeric:
        if required is not None and all(offered(w.profile) < required for w in pool):
            best = max(offered(w.profile) for w in pool)
            if best == 0 and unit == "MiB of GPU memory":
                # A worker reports gpu_mem=0 when it has no GPU: "the largest has 0" reads as
                # a GPU without memory.
                return (
                    f"no {kind} seen {window} has a GPU; the job needs {_number(required)} {unit}"
                )
            return (
                f"no {kind} seen {window} has {_number(required)} {unit}; "
                f"the {most} has {_number(best)}"
            )
    named: list[tuple[str | None, Callable[[WorkerProfile], str | None], str]] = [
        (need.gpu_model, lambda p: p.gpu_model, "GPU model"),
        (need.gpu_archi, lambda p: p.gpu_archi, "GPU architecture"),
    ]
    for wanted, offered_name, what in named:
        if wanted is not None and all(offered_name(w.profile) != wanted for w in pool):
            names = sorted({offered_name(w.profile) or "none" for w in pool})
            return f"no {kind} seen {window} has the {what} {wanted}; seen: {', '.join(names)}"
    return f"no single {kind} seen {window} meets all of its hardware requirements together"


class WaitExplainer:
    """``GET /_jobs/{job_id}/explain`` and ``workerfacing-api jobs why``."""

    def __init__(
        self,
        queue: JobQueue,
        registry: WorkerRegistry,
        clock: Clock,
        *,
        seen_window: float,
        exclude_attempted: bool,
    ) -> None:
        self._queue = queue
        self._registry = registry
        self._clock = clock
        self._seen_window = seen_window
        self._exclude_attempted = exclude_attempted

    async def explain_upstream(self, upstream_id: int) -> Explanation:
        """For the job the user-facing API knows as ``upstream_id`` (``meta.job_id``)."""
        job = await self._queue.live_job(upstream_id) if 0 <= upstream_id <= MAX_DB_INT else None
        if job is None:
            raise JobNotFound(f"no job with meta.job_id {upstream_id} is in the queue")
        return await self.explain(job)

    async def explain_queue_id(self, job_id: int) -> Explanation:
        job = await self._queue.get(job_id) if 0 < job_id <= MAX_DB_INT else None
        if job is None:
            raise JobNotFound(f"job {job_id} does not exist")
        return await self.explain(job)

    async def explain(self, job: Job) -> Explanation:
        now = self._clock.now()
        if job.status is not JobStatus.QUEUED:
            return Explanation(
                job_id=job.upstream_id,
                queue_id=job.id,
                status=job.status.value,
                worker=job.worker,
                waiting_seconds=None,
                workers_seen=0,
                workers_fitting=0,
                fitting_busy=0,
                fitting_set_aside=0,
                fitting_idle=0,
                ahead=None,
                reason=self._not_waiting(job),
            )
        window = _window(self._seen_window)
        seen = await self._registry.workers(now - timedelta(seconds=self._seen_window))
        # Environment and hardware, as the pull matches them; "any" jobs' age is looked at below.
        fitting = [w for w in seen if fits(job, _patient(w.profile), now)]
        aside = [w for w in fitting if w.aside(now)]
        available = [w for w in fitting if not w.aside(now)]
        ready = [w for w in available if fits(job, w.profile, now)]
        busy = [w for w in ready if w.active_jobs]
        idle = [w for w in ready if not w.active_jobs]
        waiting = (now - (job.updated_at or job.created_at)).total_seconds()
        ahead: int | None = None
        estimate = _NO_ESTIMATE
        if not seen:
            reason = f"no worker has asked for jobs {window}"
        elif not fitting:
            reason = _shortfall(job.environment, job.hardware, seen, window)
        elif not available:
            back = min(w.aside_until for w in aside if w.aside_until is not None)
            reason = (
                f"all {len(fitting)} fitting worker node(s) seen {window} are set aside after "
                f"repeated failures; the first is back at {back.isoformat(timespec='seconds')}"
            )
        elif not ready:
            patience = min(w.profile.older_than for w in available)
            age = (now - job.created_at).total_seconds()
            reason = (
                f"the job may run in any environment, and the fitting workers take such a job "
                f"only once it is {duration(patience)} old; it is {duration(age)} old"
            )
        else:
            # Where it stands for the first fitting worker that is free (or, all busy, the first
            # to be): one count, bounded, so that asking stays cheap in a long queue.
            line = idle or busy
            ahead = await self._queue.count_ahead(
                job, line[0].profile, now, exclude_attempted=self._exclude_attempted, cap=_CAP
            )
            if ahead == 0:
                place = "it is next in line"
            elif ahead >= _CAP:
                place = f"{_number(_CAP)} or more jobs come before it in line"
            else:
                place = f"{_number(ahead)} job(s) come before it in line"
            if idle:
                reason = (
                    f"{len(idle)} fitting worker node(s) idle; {place}, to be taken at their "
                    "next pull"
                )
            else:
                reason = f"all {len(ready)} fitting worker node(s) are busy; {place}"
            estimate = await self._estimate(ready, len(idle), ahead, now)
        return Explanation(
            job_id=job.upstream_id,
            queue_id=job.id,
            status=job.status.value,
            worker=None,
            waiting_seconds=waiting,
            workers_seen=len(seen),
            workers_fitting=len(fitting),
            fitting_busy=len(busy),
            fitting_set_aside=len(aside),
            fitting_idle=len(idle),
            ahead=ahead,
            reason=reason,
            estimated_start_seconds=estimate.seconds,
            finish_rate_per_hour=estimate.rate_per_hour,
            estimate=estimate.sentence,
        )

    async def _estimate(
        self, ready: list[WorkerRecord], idle: int, ahead: int, now: datetime
    ) -> _Estimate:
        """When the job may start. Each idle fitting node takes one job at its next pull; after
        that a place frees up each time one of the fitting nodes ends a job, which it does every
        so long: the mean time the attempts they ended in the last hour took. So the fleet frees
        places at (nodes / mean time), and the job waits for those ahead of it. A model of a
        steady fleet: it does not know the nodes an autoscaler is about to start."""
        if ahead >= _CAP:
            return _NO_ESTIMATE
        if ahead < idle:
            return _Estimate(
                seconds=0.0,
                rate_per_hour=None,
                sentence=f"expected at the next pull of one of the {idle} idle fitting node(s)",
            )
        since = now - timedelta(seconds=_RATE_WINDOW)
        took: list[float] = []
        for w in ready:
            for ended in await self._registry.outcomes_of(w.node, since, _ENDED_READ):
                took.append((ended.ended_at - ended.pulled_at).total_seconds())
        if not took:
            return _Estimate(
                seconds=None,
                rate_per_hour=0.0,
                sentence=(
                    f"no estimate: the {len(ready)} fitting node(s) ended no job in the last "
                    f"{duration(_RATE_WINDOW)}"
                ),
            )
        per_job = max(sum(took) / len(took), 1.0)
        places = ahead + 1 - idle  # jobs that must end before a place is free for it
        seconds = places * per_job / len(ready)
        per_hour = len(ready) * 3600.0 / per_job
        return _Estimate(
            seconds=seconds,
            rate_per_hour=per_hour,
            sentence=(
                f"expected to start in about {duration(seconds)}: {_number(places)} job(s) "
                f"must end first, and the {len(ready)} fitting node(s) take about "
                f"{duration(per_job)} a job (the mean of the {_number(len(took))} they ended "
                f"in the last {duration(_RATE_WINDOW)}), {per_hour:.1f} jobs an hour"
            ),
        )

    @staticmethod
    def _not_waiting(job: Job) -> str:
        if job.status in ACTIVE_STATUSES:
            return f"the job is not waiting: it is {job.status.value} on worker {job.worker}" + (
                f" (node {job.node})" if job.node is not None else ""
            )
        if job.status is JobStatus.CANCELLED:
            return "the job is not waiting: it was cancelled (deleted by its user, or replaced)"
        return f"the job is not waiting: it ended as {job.status.value}"


def _patient(profile: WorkerProfile) -> WorkerProfile:
    """``profile`` as if it took "any" jobs at once: to tell hardware from waiting time."""
    return msgspec.structs.replace(profile, older_than=0.0)
