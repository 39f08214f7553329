"""The ``DashboardReads`` port on a SQL database: what the operators' dashboard reads of the
queue's history. Each read is bounded and served by an index (``queries/common.sql``)."""

from __future__ import annotations

from datetime import datetime

from workerfacing_api.adapters.sql.database import Database
from workerfacing_api.adapters.sql.rows import (
    EARLIEST,
    attempt_record_from,
    event_from,
    failure_from,
    job_from,
    throughput_from,
    waiting_class_from,
)
from workerfacing_api.core.model import (
    AttemptRecord,
    ClassKey,
    Failure,
    Job,
    JobQuery,
    StatusEvent,
    WaitingClass,
)


class SqlDashboardReads:
    """Implements ``DashboardReads``."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def throughput(self, since: datetime, now: datetime) -> list[tuple[datetime, int, int]]:
        return throughput_from(await self._db.fetch_all("throughput", since=since, now=now))

    async def waiting_classes(self, limit: int) -> list[WaitingClass]:
        rows = await self._db.fetch_all("waiting_classes", limit=limit)
        return [waiting_class_from(r) for r in rows]

    async def list_jobs(self, query: JobQuery, limit: int) -> list[Job]:
        q = query
        environment = q.environment
        if q.hardware is not None:
            if environment is not None and environment != q.hardware.environment:
                return []  # two environments asked at once: no job is in both
            environment = q.hardware.environment
        one_state = len(q.states) == 1
        literals = {
            "by_environment": int(environment is not None),
            "by_worker": int(q.worker is not None),
            "by_node": int(q.node is not None),
            "by_class": int(q.hardware is not None),
            "gpu_model_any": int(q.hardware is None or q.hardware.gpu_model is None),
            "gpu_archi_any": int(q.hardware is None or q.hardware.gpu_archi is None),
            "older": int(q.created_before is not None),
            "younger": int(q.created_after is not None),
            "by_upstream_id": int(q.upstream_id is not None),
            "by_queue_id": int(q.queue_id is not None),
            "paged": int(q.before_id is not None),
        }
        hardware = q.hardware or ClassKey(environment="any")
        by_state: dict[str, object]
        if one_state:
            name, by_state = "list_jobs_of_state", {"state": q.states[0].value}
        else:
            literals["some_states"] = int(bool(q.states))
            name, by_state = "list_jobs", {"states": [s.value for s in q.states]}
        rows = await self._db.fetch_all(
            name,
            literals=literals,
            **by_state,
            environment=environment or "",
            worker=q.worker or "",
            node=q.node or "",
            cpu_cores=hardware.cpu_cores,
            memory=hardware.memory,
            gpu_mem=hardware.gpu_mem,
            gpu_model=hardware.gpu_model or "",
            gpu_archi=hardware.gpu_archi or "",
            created_before=q.created_before or EARLIEST,
            created_after=q.created_after or EARLIEST,
            upstream_id=q.upstream_id or 0,
            queue_id=q.queue_id or 0,
            before_id=q.before_id or 0,
            limit=limit,
        )
        return [job_from(r) for r in rows]

    async def recent_failures(self, limit: int) -> list[Failure]:
        return [failure_from(r) for r in await self._db.fetch_all("recent_failures", limit=limit)]

    async def attempts_of(self, job_id: int) -> list[AttemptRecord]:
        rows = await self._db.fetch_all("attempts_of_job", id=job_id)
        return [attempt_record_from(r) for r in rows]

    async def pending_events_of(self, job_id: int) -> list[StatusEvent]:
        return [event_from(r) for r in await self._db.fetch_all("events_of_job", id=job_id)]
