"""Which queued jobs fit a pulling worker, and in which order they are handed out (ARCHITECTURE §3).

The SQL adapter states the same rules in SQL; the in-memory queue uses these functions directly,
and the property tests hold both to a brute-force reading of the design.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from workerfacing_api.core.model import Job, JobStatus, WorkerProfile


def fits(job: Job, worker: WorkerProfile, now: datetime) -> bool:
    """True when ``worker`` may take ``job`` now (ignoring earlier attempts)."""
    if job.status is not JobStatus.QUEUED:
        return False
    if job.environment is None:
        # A job for "any" environment goes to its preferred kind of worker first; others take
        # it only once it waited ``older_than`` seconds.
        if job.created_at > now - timedelta(seconds=worker.older_than):
            return False
    elif job.environment is not worker.environment:
        return False
    need = job.hardware
    return (
        (need.cpu_cores is None or need.cpu_cores <= worker.cpu_cores)
        and (need.memory is None or need.memory <= worker.memory)
        and (need.gpu_mem is None or need.gpu_mem <= worker.gpu_mem)
        and (need.gpu_model is None or need.gpu_model == worker.gpu_model)
        and (need.gpu_archi is None or need.gpu_archi == worker.gpu_archi)
    )


def pull_order(job: Job, groups: tuple[str, ...]) -> tuple[int, int, datetime, int]:
    """Sort key: preferred groups first, then priority descending, oldest first, lowest id."""
    preferred = 0 if job.group is not None and job.group in groups else 1
    return (preferred, -job.priority, job.created_at, job.id)
