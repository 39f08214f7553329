"""Rows to domain records, shared by the SQLite and PostgreSQL queues."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Protocol

import msgspec

from workerfacing_api.core.model import (
    Environment,
    HardwareSpecs,
    Job,
    JobStatus,
    PathsUpload,
    StatusEvent,
)

JOB_COLUMNS = (
    "id, upstream_id, status, environment, job_group, priority, spec, paths_upload, worker, "
    "attempt, num_retries, event_seq, runtime_details, created_at, updated_at, last_heartbeat_at"
)
EVENT_COLUMNS = "id, job_id, upstream_id, status, runtime_details, created_at, attempts"
ACTIVE = "('pulled', 'preprocessing', 'running', 'postprocessing')"


class Row(Protocol):
    """A result row by column name: asyncpg's Record or SQLAlchemy's RowMapping."""

    def __getitem__(self, key: str, /) -> Any: ...


def prefixed(prefix: str, columns: str) -> str:
    return ", ".join(f"{prefix}.{c.strip()}" for c in columns.split(","))


class _HardwareView(msgspec.Struct):
    hardware: HardwareSpecs


_hardware = msgspec.json.Decoder(_HardwareView)
_paths = msgspec.json.Decoder(PathsUpload)


def utc(value: Any) -> datetime:
    """A stored timestamp as an aware UTC datetime (SQLite keeps fixed-width UTC text)."""
    if isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
    return value  # type: ignore[no-any-return]


def job_from(row: Row) -> Job:
    spec = row["spec"].encode()
    heartbeat = row["last_heartbeat_at"]
    return Job(
        id=row["id"],
        upstream_id=row["upstream_id"],
        status=JobStatus(row["status"]),
        environment=None if row["environment"] == "any" else Environment(row["environment"]),
        group=row["job_group"],
        priority=row["priority"],
        hardware=_hardware.decode(spec).hardware,
        created_at=utc(row["created_at"]),
        spec=spec,
        paths_upload=_paths.decode(row["paths_upload"]),
        worker=row["worker"],
        attempt=row["attempt"],
        num_retries=row["num_retries"],
        event_seq=row["event_seq"],
        last_heartbeat_at=None if heartbeat is None else utc(heartbeat),
        updated_at=utc(row["updated_at"]),
        runtime_details=row["runtime_details"],
    )


def event_from(row: Row) -> StatusEvent:
    return StatusEvent(
        id=row["id"],
        job_id=row["job_id"],
        upstream_id=row["upstream_id"],
        status=JobStatus(row["status"]),
        runtime_details=row["runtime_details"],
        created_at=utc(row["created_at"]),
        attempts=row["attempts"],
    )


def fresh_event(event_id: int, job: Job, details: str | None, now: datetime) -> StatusEvent:
    """The event a change just recorded for ``job`` (returned leased to the caller)."""
    return StatusEvent(
        id=event_id,
        job_id=job.id,
        upstream_id=job.upstream_id,
        status=job.status,
        runtime_details=details,
        created_at=now,
    )


def submission_values(
    upstream_id: int,
    environment: Environment | None,
    group: str | None,
    priority: int,
    hardware: HardwareSpecs,
    spec: bytes,
    paths_upload: PathsUpload,
) -> dict[str, Any]:
    """Column values of a new job. Requirements: "anything" is 0, and environment null is
    'any', so that the pull filters on plain ranges an index can serve."""
    return {
        "upstream_id": upstream_id,
        "environment": environment.value if environment else "any",
        "job_group": group,
        "priority": priority,
        "req_cpu_cores": hardware.cpu_cores or 0,
        "req_memory": hardware.memory or 0,
        "req_gpu_mem": hardware.gpu_mem or 0,
        "req_gpu_model": hardware.gpu_model,
        "req_gpu_archi": hardware.gpu_archi,
        "spec": spec.decode(),
        "paths_upload": msgspec.json.encode(paths_upload).decode(),
    }
