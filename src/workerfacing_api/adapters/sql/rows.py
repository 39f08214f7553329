"""Between rows and domain records, shared by the SQLite and PostgreSQL queues: rows read back as
records (jobs, events, workers, attempts' outcomes), and the parameter values the shared
statements (``queries/common.sql``) take."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import msgspec

from workerfacing_api.adapters.sql.schema import STATUSES
from workerfacing_api.core.matching import pull_order
from workerfacing_api.core.model import (
    DEFAULT_PRIORITY,
    AttemptOutcome,
    AttemptRecord,
    AuditEntry,
    Environment,
    Failure,
    FailureKind,
    HardwareSpecs,
    Job,
    JobStatus,
    KeepAlive,
    Outcome,
    PathsUpload,
    QueueStats,
    StatusEvent,
    Submission,
    WaitingClass,
    WorkerProfile,
    WorkerRecord,
)
from workerfacing_api.core.text import storable


class Row(Protocol):
    """A result row by column name: asyncpg's Record or SQLAlchemy's RowMapping."""

    def __getitem__(self, key: str, /) -> Any: ...


class _StoredHardware(msgspec.Struct, kw_only=True):
    cpu_cores: int | None = None
    memory: int | None = None
    gpu_model: str | None = None
    gpu_archi: str | None = None
    gpu_mem: int | None = None


class _HardwareView(msgspec.Struct):
    hardware: _StoredHardware


class _StoredPaths(msgspec.Struct, kw_only=True):
    output: str
    log: str
    artifact: str


# What was stored is read back as it is, without the wire's bounds (``Name``, ``PathText``):
# a job an earlier release accepted is read whatever its names hold, and its worker's calls on
# it never fail for that. Lax too where only an integer written as 8.0 can differ.
_hardware = msgspec.json.Decoder(_HardwareView, strict=False)
_paths = msgspec.json.Decoder(_StoredPaths)
_names = msgspec.json.Decoder(tuple[str, ...])  # a JSON array of worker or group names
_ids = msgspec.json.Decoder(list[int])  # a JSON array of job ids


# uploads_since's :since when the caller wants every upload: before anything stored.
EARLIEST = datetime.min.replace(tzinfo=UTC)


def utc(value: Any) -> datetime:
    """A stored timestamp as an aware UTC datetime (SQLite keeps fixed-width UTC text)."""
    if isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
    return value  # type: ignore[no-any-return]


def utc_or_none(value: Any) -> datetime | None:
    return None if value is None else utc(value)


def job_from(row: Row) -> Job:
    spec = row["spec"].encode()
    return Job(
        id=row["id"],
        upstream_id=row["upstream_id"],
        status=JobStatus(row["status"]),
        environment=None if row["environment"] == "any" else Environment(row["environment"]),
        group=row["job_group"],
        priority=row["priority"],
        hardware=HardwareSpecs(**msgspec.structs.asdict(_hardware.decode(spec).hardware)),
        created_at=utc(row["created_at"]),
        spec=spec,
        paths_upload=PathsUpload(**msgspec.structs.asdict(_paths.decode(row["paths_upload"]))),
        worker=row["worker"],
        node=row["node"],
        attempt=row["attempt"],
        num_retries=row["num_retries"],
        event_seq=row["event_seq"],
        last_heartbeat_at=utc_or_none(row["last_heartbeat_at"]),
        updated_at=utc(row["updated_at"]),
        runtime_details=row["runtime_details"],
        forwarded_at=utc_or_none(row["forwarded_at"]),
        upstream_ok_at=utc_or_none(row["upstream_ok_at"]),
        wait_notice=row["wait_notice"],
    )


def workers_tried(row: Row) -> tuple[str, ...]:
    """The workers that pulled the job since it last started over, in pull order (its
    ``attempted_by``: JSON text from either driver)."""
    return _names.decode(row["attempted_by"])


def changed_job(job: Job, row: Row) -> Job:
    """``job`` after a compare-and-set on it won: the columns the change may touch come from
    ``row``, and ``upstream_ok_at``, which moves without changing the snapshot; the others
    cannot have changed (the snapshot matched), so they are not read back."""
    return msgspec.structs.replace(
        job,
        status=JobStatus(row["status"]),
        worker=row["worker"],
        node=row["node"],
        attempt=row["attempt"],
        num_retries=row["num_retries"],
        event_seq=row["event_seq"],
        runtime_details=row["runtime_details"],
        updated_at=utc(row["updated_at"]),
        last_heartbeat_at=utc_or_none(row["last_heartbeat_at"]),
        forwarded_at=utc_or_none(row["forwarded_at"]),
        upstream_ok_at=utc_or_none(row["upstream_ok_at"]),
    )


def claimed_keepalive(job: Job, row: Row, now: datetime) -> KeepAlive | None:
    """The keep-alive a compare-and-set claimed for ``job`` (its state after the change), to be
    sent upstream now; None when it claimed none."""
    if not row["keepalive_claimed"]:
        return None
    return KeepAlive(job_id=job.id, upstream_id=job.upstream_id, status=job.status, created_at=now)


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


def submission_values(submission: Submission) -> dict[str, Any]:
    """Column values of a new job (``insert_job``). Requirements: "anything" is 0, and
    environment null is 'any', so that the pull filters on plain ranges an index can serve."""
    sub = submission.job
    hardware = sub.job.hardware
    return {
        "upstream_id": sub.job.meta.job_id,
        "environment": sub.environment.value if sub.environment else "any",
        "job_group": sub.group,
        "priority": DEFAULT_PRIORITY if sub.priority is None else sub.priority,
        "req_cpu_cores": hardware.cpu_cores or 0,
        "req_memory": hardware.memory or 0,
        "req_gpu_mem": hardware.gpu_mem or 0,
        "req_gpu_model": hardware.gpu_model,
        "req_gpu_archi": hardware.gpu_archi,
        "spec": submission.spec.decode(),
        "paths_upload": msgspec.json.encode(sub.paths_upload).decode(),
    }


def fit_values(worker: WorkerProfile, any_before: Any) -> dict[str, Any]:
    """The parameters of the ``fits`` predicate (and of RETRY_DIFFERENT) for ``worker``; a job
    of no environment fits once it was created at ``any_before`` or earlier."""
    return {
        "environment": worker.environment.value,
        "any_before": any_before,
        "cpu_cores": worker.cpu_cores,
        "memory": worker.memory,
        "gpu_mem": worker.gpu_mem,
        "gpu_model": worker.gpu_model,
        "gpu_archi": worker.gpu_archi,
        "worker": worker.worker,
        "node": worker.node,
    }


def ahead_values(job: Job, groups: tuple[str, ...]) -> dict[str, Any]:
    """``job``'s own place in a worker's pull order (``count_ahead`` compares the others with
    it), from the snapshot: ``pull_order`` decides, as it does for the in-memory queue."""
    preferred, _, created_at, job_id = pull_order(job, groups)
    return {
        "preferred": preferred,
        "priority": job.priority,
        "created_at": created_at,
        "id": job_id,
    }


def worker_values(worker: WorkerProfile) -> dict[str, Any]:
    """Column values of a node's row (``record_seen``): what it offered at this pull."""
    return {
        "node": worker.node,
        "name": worker.worker,
        "address": worker.address,
        "instance": worker.instance,
        "environment": worker.environment.value,
        "cpu_cores": worker.cpu_cores,
        "memory": worker.memory,
        "gpu_mem": worker.gpu_mem,
        "gpu_model": worker.gpu_model,
        "gpu_archi": worker.gpu_archi,
        # JSON text made here, so its names are made storable here (a NUL escaped in JSON is
        # still one PostgreSQL's JSONB refuses).
        "groups": msgspec.json.encode([storable(g) for g in worker.groups]).decode(),
        "older_than": float(worker.older_than),
    }


def workers_from(rows: Iterable[Row]) -> list[WorkerRecord]:
    """Nodes from rows of ``workers_with_jobs``: one row per job a node holds (``active_job``,
    NULL when none), a node's rows together, its jobs in order."""
    records: list[WorkerRecord] = []
    held: list[int] = []
    for row in rows:
        if not records or records[-1].node != row["node"]:
            if records:
                records[-1] = msgspec.structs.replace(records[-1], active_jobs=tuple(held))
            records.append(_worker_from(row))
            held = []
        if row["active_job"] is not None:
            held.append(row["active_job"])
    if records:
        records[-1] = msgspec.structs.replace(records[-1], active_jobs=tuple(held))
    return records


def _worker_from(row: Row) -> WorkerRecord:
    return WorkerRecord(
        node=row["node"],
        profile=WorkerProfile(
            worker=row["account"],
            address=row["address"],
            instance=row["instance"],
            environment=Environment(row["environment"]),
            cpu_cores=row["cpu_cores"],
            memory=row["memory"],
            gpu_mem=row["gpu_mem"],
            gpu_model=row["gpu_model"],
            gpu_archi=row["gpu_archi"],
            groups=_names.decode(row["groups"]),
            older_than=float(row["older_than"]),
        ),
        first_seen_at=utc(row["first_seen_at"]),
        last_seen_at=utc(row["last_seen_at"]),
        strikes=row["strikes"],
        aside_at=utc_or_none(row["aside_at"]),
        aside_until=utc_or_none(row["aside_until"]),
        aside_reason=row["aside_reason"],
    )


def outcome_from(row: Row) -> AttemptOutcome:
    return AttemptOutcome(
        job_id=row["job_id"],
        attempt=row["attempt"],
        worker=row["worker"],
        outcome=Outcome(row["outcome"]),
        pulled_at=utc(row["pulled_at"]),
        ended_at=utc(row["ended_at"]),
        node=row["node"],
    )


def queue_stats(
    counts: Mapping[str, int], oldest: Row | None, backlog: Row, now: datetime
) -> QueueStats:
    """``QueueStats`` from the rows of count_jobs_by_status, oldest_queued_job and
    outbox_backlog (common.sql)."""
    return QueueStats(
        by_status={s: counts.get(s, 0) for s in STATUSES},
        oldest_queued_id=None if oldest is None else oldest["id"],
        oldest_queued_age=(
            None if oldest is None else (now - utc(oldest["created_at"])).total_seconds()
        ),
        outbox_backlog=backlog["n"],
        oldest_event_age=(
            None if backlog["oldest"] is None else (now - utc(backlog["oldest"])).total_seconds()
        ),
    )


# -- the operators' dashboard (DashboardReads) --------------------------------------------------


def minute_from(value: Any) -> datetime:
    """A minute of ``throughput``: a timestamp (PostgreSQL) or 'YYYY-MM-DD HH:MM' (SQLite)."""
    if isinstance(value, str):
        return utc(value + ":00")
    return utc(value)


def throughput_from(rows: Iterable[Row]) -> list[tuple[datetime, int, int]]:
    return [(minute_from(r["minute"]), int(r["pulled"]), int(r["finished"])) for r in rows]


def waiting_class_from(row: Row) -> WaitingClass:
    return WaitingClass(
        environment=None if row["environment"] == "any" else Environment(row["environment"]),
        cpu_cores=row["req_cpu_cores"],
        memory=row["req_memory"],
        gpu_mem=row["req_gpu_mem"],
        gpu_model=row["req_gpu_model"],
        gpu_archi=row["req_gpu_archi"],
        jobs=row["jobs"],
        oldest_created_at=utc(row["oldest"]),
    )


def failure_from(row: Row) -> Failure:
    return Failure(
        job_id=row["job_id"],
        upstream_id=row["upstream_id"],
        kind=FailureKind(row["kind"]),
        attempt=row["attempt"],
        worker=row["worker"],
        at=utc(row["at"]),
        runtime_details=row["runtime_details"],
    )


def attempt_record_from(row: Row) -> AttemptRecord:
    return AttemptRecord(
        attempt=row["attempt"],
        worker=row["worker"],
        pulled_at=utc(row["pulled_at"]),
        ended_at=utc_or_none(row["ended_at"]),
        outcome=None if row["outcome"] is None else Outcome(row["outcome"]),
        node=row["node"],
    )


def audit_values(entry: AuditEntry) -> dict[str, Any]:
    return {
        "at": entry.at,
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target,
        "jobs": msgspec.json.encode(list(entry.jobs)).decode(),
        "detail": entry.detail,
    }


def audit_entry_from(row: Row) -> AuditEntry:
    return AuditEntry(
        id=row["id"],
        at=utc(row["at"]),
        actor=row["actor"],
        action=row["action"],
        target=row["target"],
        jobs=tuple(_ids.decode(row["jobs"])),
        detail=row["detail"],
    )
