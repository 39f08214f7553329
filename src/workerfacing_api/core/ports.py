"""The ports: what the core needs from the outside world, as narrow ``typing.Protocol``s.

Adapters implement them (SQL, local disk, S3, Cognito, HTTP upstream); tests implement them with
in-memory fakes. Every rule that depends on time takes ``now`` from a ``Clock``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from workerfacing_api.core.model import (
    AttemptOutcome,
    AttemptRecord,
    AuditEntry,
    Claimed,
    Committed,
    Delivery,
    ExpiredJob,
    Failure,
    FleetBaseline,
    Identity,
    Job,
    JobQuery,
    JobStatus,
    Message,
    Outcome,
    PresignedRequest,
    QueueStats,
    StatusEvent,
    Submission,
    WaitingClass,
    WorkerProfile,
    WorkerRecord,
)

if TYPE_CHECKING:
    from workerfacing_api.core.demand import ClassDemand


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class JobQueue(Protocol):
    """The job store. Every state change is a compare-and-set on the snapshot it was decided on
    (same id, status and attempt, and same ``event_seq`` when it records an event); ``None``
    means the job moved on meanwhile.

    With events recorded (an upstream is configured), each change writes its status event in
    the same transaction and, with ``lease``, leases it to the caller for immediate delivery
    when no older event of the job is still undelivered (see ``Outbox``)."""

    async def add(self, submission: Submission, now: datetime) -> tuple[Job, tuple[int, ...]]:
        """Store a new queued job; cancel (and return the ids of) older jobs with its meta.job_id
        that are not cancelled yet, in the same transaction."""
        ...

    async def get(self, job_id: int) -> Job | None: ...

    async def claim_jobs(
        self,
        worker: WorkerProfile,
        limit: int,
        now: datetime,
        *,
        exclude_attempted: bool,
        max_held: int,
        lease: bool = True,
    ) -> list[Claimed]:
        """Atomically move up to ``limit`` fitting queued jobs to ``pulled`` for ``worker``'s
        account and node, in pull order, recording an attempt each. A job is claimed by one
        caller only. The node then holds at most ``max_held`` active jobs, however many claims
        of it run at once. A node set aside (``WorkerRegistry.set_aside``) until after ``now``
        gets nothing."""
        ...

    async def live_job(self, upstream_id: int) -> Job | None:
        """The job with this ``meta.job_id`` that is not cancelled, if any."""
        ...

    async def count_ahead(
        self,
        job: Job,
        worker: WorkerProfile,
        now: datetime,
        *,
        exclude_attempted: bool,
        cap: int = 1000,
    ) -> int:
        """How many queued jobs ``worker`` would take before ``job`` (fitting it, earlier in
        its pull order); counting stops at ``cap``."""
        ...

    async def retry_failed(
        self, job: Job, detail: str, now: datetime, *, lease: bool = True
    ) -> Committed | None:
        """An operator's retry: a job that ended in ``error`` goes back to ``queued`` and
        starts over (no worker, no retries used, no worker tried), recording a ``queued``
        event with ``detail``."""
        ...

    async def waiting_in_class(
        self,
        waiting: WaitingClass,
        queued_before: datetime,
        *,
        not_told: str | None,
        after: int,
        limit: int,
    ) -> list[Job]:
        """The queued jobs of ``waiting``'s class (as ``DashboardReads.waiting_classes`` groups
        them) queued since before ``queued_before`` and, unless ``not_told`` is None, whose
        users were not told ``not_told``; ids above ``after``, lowest first, ``limit`` at most."""
        ...

    async def told_why_waiting(self, after: int, limit: int) -> list[Job]:
        """The queued jobs whose users were told why they wait (``wait_notice`` set), ids above
        ``after``, lowest first, ``limit`` at most."""
        ...

    async def tell_why_waiting(
        self, job: Job, notice: str | None, detail: str, now: datetime, *, lease: bool = True
    ) -> Committed | None:
        """A queued job's user is told why it waits: its ``wait_notice`` becomes ``notice``
        (None: a worker that can run it appeared) and a ``queued`` event carries ``detail``.
        None, and nothing recorded, when the job moved on or already has that notice."""
        ...

    async def fail_waiting(
        self, job: Job, detail: str, now: datetime, *, lease: bool = True
    ) -> Committed | None:
        """A queued job that waited too long for a worker that can run it ends in ``error``
        with ``detail`` (recorded as its event); None when it is no longer queued as given."""
        ...

    async def fail_on_operators_word(
        self, job: Job, reason: str, now: datetime, *, lease: bool = True
    ) -> Committed | None:
        """An operator fails a queued or active job: it ends in ``error`` with ``reason`` (its
        event), held by no worker any more, so that its worker's next call answers 404; an
        active attempt ends as ``Outcome.STOPPED``. None when it is no longer as given."""
        ...

    async def record_update(
        self,
        job: Job,
        status: JobStatus,
        runtime_details: str | None,
        now: datetime,
        *,
        forward: bool,
        lease: bool = True,
        keepalive_before: datetime | None = None,
        ended: Outcome | None = None,
        acknowledged: Sequence[int] = (),
    ) -> Committed | None:
        """Set status (may be unchanged) and heartbeat, if ``job`` is still as given.

        ``ended``: the update ends the attempt (an active job became final); how it ended is
        noted for the fleet's health in the same transaction, and a finished attempt clears the
        worker's strikes (see ``WorkerRegistry``).

        An update that records no event but gives ``keepalive_before`` claims the job's
        keep-alive: when nothing was forwarded for the job since ``keepalive_before`` and none of
        its events is pending, ``forwarded_at`` becomes ``now`` and ``Committed.keepalive`` is set
        (one process wins it, however many see the job's pings).

        ``acknowledged``: events of this job the caller delivered and has not acknowledged yet
        (``Outbox.complete_events``); the update does so in the same transaction, before it
        decides on its own event's lease and on the keep-alive. Nothing of it happens when the
        update does not (None)."""
        ...

    async def requeue(
        self,
        job: Job,
        detail: str,
        now: datetime,
        *,
        heartbeat_before: datetime,
        lease: bool = True,
    ) -> Committed | None:
        """Put an expired job back to ``queued`` with one more retry. Like ``fail``, it notes
        the attempt's outcome as a time-out."""
        ...

    async def fail(
        self,
        job: Job,
        detail: str,
        now: datetime,
        *,
        heartbeat_before: datetime,
        lease: bool = True,
    ) -> Committed | None:
        """Move an expired job to ``error``."""
        ...

    async def find_expired(self, heartbeat_before: datetime, limit: int) -> list[ExpiredJob]:
        """Active jobs whose heartbeat is older than ``heartbeat_before``, oldest first."""
        ...

    async def cancel(self, job_id: int, now: datetime) -> bool:
        """Take a job out of the queue for good (its pending upstream events go too)."""
        ...

    async def active_jobs_of(self, worker: str) -> list[Job]:
        """Jobs currently assigned to ``worker`` and not yet final."""
        ...

    async def stats(self, now: datetime) -> QueueStats:
        """Jobs per state (every state, zeros included), the oldest queued job, the outbox."""
        ...

    async def confirm_upstream(self, answered: Mapping[int, datetime]) -> None:
        """The upstream answered (not 404) messages about these jobs sent at these times; keep
        the latest per job as ``upstream_ok_at`` (a delivered event's answer is kept by
        ``Outbox.complete_events``)."""
        ...


class UploadLedger(Protocol):
    """Which files the service stored for which job and when: what to take away again when it
    turns out the user had deleted the job (ARCHITECTURE §3)."""

    async def record_upload(self, job_id: int, attempt: int, file_id: str, now: datetime) -> None:
        """Note that ``file_id`` (canonical) was stored for an attempt of a job."""
        ...

    async def uploads_since(self, job_id: int, since: datetime | None) -> list[str]:
        """Files stored for the job after ``since`` (all with None), except those another job
        stored again since (they are that job's now)."""
        ...


class WorkerRegistry(Protocol):
    """The worker nodes seen pulling (``WorkerProfile.node``: an account's machines told
    apart), how their attempts ended, and which are set aside. Nodes are named by their id.

    Kept beside the queue: the claim consults it (a node set aside gets no job), and the
    changes that end an attempt note its outcome (``JobQueue.record_update``'s ``ended``, the
    sweep's time-outs), once per attempt."""

    async def record_seen(self, worker: WorkerProfile, now: datetime) -> None:
        """Insert or update the node's row: what it offered at this pull, and when."""
        ...

    async def workers(self, seen_since: datetime | None) -> list[WorkerRecord]:
        """Nodes seen since ``seen_since`` (all with None), by account then id, with their
        jobs."""
        ...

    async def worker(self, node: str) -> WorkerRecord | None: ...

    async def outcomes_of(self, node: str, since: datetime, limit: int) -> list[AttemptOutcome]:
        """The node's attempts that ended after ``since``, the latest first."""
        ...

    async def baseline(self, since: datetime, now: datetime, *, excluding: str) -> FleetBaseline:
        """How the other nodes not set aside at ``now`` fared with their attempts that ended
        after ``since``, one vote per node."""
        ...

    async def set_aside(
        self, node: str, until: datetime, reason: str, now: datetime, *, strikes: int
    ) -> bool:
        """Begin a cool-off until ``until``, if the node still has ``strikes`` strikes and is
        not set aside at ``now`` (a compare-and-set: of two processes deciding at once, one
        wins); it then has one strike more."""
        ...

    async def release(self, node: str, now: datetime) -> bool | None:
        """End the node's cool-off at ``now``: True if it was set aside, False if not, None
        if no such node was ever seen."""
        ...

    async def note_cool_off_ends(self, now: datetime) -> list[WorkerRecord]:
        """Cool-offs that ended by ``now`` and were not reported yet (each reported once)."""
        ...


class DashboardReads(Protocol):
    """What the operators' dashboard reads of the queue's history (ARCHITECTURE §7). Read-only.

    A port of its own rather than more of ``JobQueue``: the lifecycle never needs these, and a
    narrow port keeps that true. The queue adapters implement it beside the others (the rows
    are theirs); each read is bounded and served by an index, as the page is asked for every
    few seconds whatever the size of the queue."""

    async def throughput(self, since: datetime, now: datetime) -> list[tuple[datetime, int, int]]:
        """Per minute (its start, UTC) from ``since`` to ``now``: attempts pulled and attempts
        finished (``Outcome.FINISHED``) then; oldest first, minutes with neither left out."""
        ...

    async def waiting_classes(self, limit: int) -> list[WaitingClass]:
        """Queued jobs grouped by environment and hardware requirement, the most jobs first
        (then the oldest first), at most ``limit`` groups."""
        ...

    async def list_jobs(self, query: JobQuery, limit: int) -> list[Job]:
        """The jobs ``query`` selects, the highest id first, ``limit`` at most (keyset pages:
        ``query.before_id``); bounded by an index whatever the size of the queue."""
        ...

    async def recent_failures(self, limit: int) -> list[Failure]:
        """Jobs whose status is error (at: their last update) and attempts the sweep took back
        (outcome timeout, at: when), newest first, at most ``limit`` in all. A time-out that
        failed its job for good is the job's failure, not listed twice."""
        ...

    async def attempts_of(self, job_id: int) -> list[AttemptRecord]:
        """Every attempt of the job, first first."""
        ...

    async def pending_events_of(self, job_id: int) -> list[StatusEvent]:
        """The job's status events not delivered upstream yet, oldest first."""
        ...


class AuditLog(Protocol):
    """What operators did (ARCHITECTURE §7), kept in the database."""

    async def record_action(self, entry: AuditEntry) -> AuditEntry:
        """Keep ``entry``; it comes back with its id."""
        ...

    async def actions(self, before_id: int | None, limit: int) -> list[AuditEntry]:
        """The latest actions first, ids below ``before_id`` when given, ``limit`` at most."""
        ...


class Outbox(Protocol):
    """Status events waiting to be forwarded upstream, written with the change they describe.

    Delivery is at least once and in order per job: only the oldest undelivered event of a job
    can be leased, and a lease keeps other deliverers off it until it expires.
    """

    async def lease_events(
        self, now: datetime, lease_seconds: float, limit: int
    ) -> list[StatusEvent]:
        """Lease up to ``limit`` due events that head their job's line, oldest first."""
        ...

    async def complete_events(self, event_ids: Sequence[int]) -> None:
        """Forget delivered events. The upstream took each (it did not answer 404), so its job
        keeps the event's time as its latest answer (``Job.upstream_ok_at``), unless it knows a
        later one; an event forgotten already changes nothing."""
        ...

    async def expedite(self, now: datetime) -> None:
        """Make every waiting event due at ``now``: the upstream is back."""
        ...

    async def postpone_events(self, event_ids: Sequence[int], until: datetime, error: str) -> None:
        """Release the leases of events that could not be delivered; each counts one more try
        and waits until ``until``."""
        ...


class StoreHealth(Protocol):
    """Whether the store behind the queue's ports can serve now (readiness, ARCHITECTURE §7)."""

    async def not_ready(self) -> str | None:
        """Why the store cannot serve now (unreachable, schema not at the code's), in words;
        None when it can."""
        ...

    def connections(self) -> tuple[int, int] | None:
        """This process's connections to the store (in use, idle); None when it has none."""
        ...


class InProcessStore:
    """The health of a store kept in the process (the in-memory queue): always ready, and no
    connections to count."""

    async def not_ready(self) -> str | None:
        return None

    def connections(self) -> tuple[int, int] | None:
        return None


class FileStorage(Protocol):
    """Where job inputs are read from and results written to (local disk or S3).

    With direct transfer (local disk) files pass through this service's ``/download`` and
    ``/upload`` endpoints; otherwise the storage hands out pre-signed requests of its own.
    """

    @property
    def direct_transfer(self) -> bool: ...

    def canonical_id(self, file_id: str) -> str:
        """``file_id`` in canonical form; ``AccessDenied`` if it points outside the root."""
        ...

    def upload_folder(self, folder: str, base_path: str) -> str:
        """``folder``/``base_path`` in canonical form, kept inside the storage root."""
        ...

    def presign_upload(self, folder: str) -> PresignedRequest:
        """A request that uploads one file (multipart field ``file``) into ``folder``."""
        ...

    def presign_download(self, file_id: str) -> PresignedRequest:
        """A request that fetches ``file_id``."""
        ...

    async def ensure_exists(self, file_id: str) -> None:
        """``FileNotFound`` unless the canonical ``file_id`` names an existing file."""
        ...

    async def write(
        self, folder: str, filename: str, chunks: AsyncIterator[bytes], max_bytes: int
    ) -> int:
        """Write an uploaded file atomically into ``folder``; return its size in bytes."""
        ...

    async def remove(self, file_ids: Sequence[str], *, within: Sequence[str]) -> list[str]:
        """Delete these files (those already gone are skipped), then every folder left empty
        between them and the one of ``within`` that holds them, that folder included. Returns
        what was deleted."""
        ...

    async def written_since(self, folders: Sequence[str], since: datetime | None) -> list[str]:
        """Files under these upload folders (canonical, or as a job names them) that were
        uploaded straight into the storage, with a pre-signed request, after ``since`` (every
        one with None): the ``UploadLedger`` never saw them. A time the storage cannot tell
        apart from ``since`` counts as after it. A storage whose uploads all pass through
        ``write`` (and the ledger) has none."""
        ...

    def local_path(self, file_id: str) -> Path:
        """The regular file on disk behind ``file_id``; ``JobNotFound``-like errors if none."""
        ...


class IdentityVerifier(Protocol):
    async def verify(self, token: str) -> Identity:
        """The identity a bearer token proves, or ``Unauthenticated``."""
        ...


class UpstreamNotifier(Protocol):
    """The user-facing API, told about every status change."""

    async def notify(self, message: Message, within: float) -> Delivery:
        """Deliver one message within ``within`` seconds: ``DELIVERED``, ``GONE`` (the user
        deleted the job) or ``RETRY`` (down, overloaded, slow, or refusing)."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


class LinkSigner(Protocol):
    """Signs the links this service hands out to its own ``/download`` and ``/upload``
    endpoints (local storage), as S3 pre-signs its requests: the worker sends them back as they
    are, without its token."""

    lifetime: int  # seconds a link stays valid

    def sign(
        self, method: str, base_url: str, path: str, params: Mapping[str, str], now: float
    ) -> str:
        """An absolute URL to ``path`` carrying ``params``, an expiry and a signature."""
        ...

    def verify(self, method: str, path: str, params: Mapping[str, str], now: float) -> bool:
        """True when ``params`` carry an unexpired signature of exactly this request."""
        ...


class MetricsReport(Protocol):
    """The metrics of this process as text for a scraper (``GET /metrics``), with the gauges
    read from the queue at the scrape."""

    content_type: str

    def render(
        self,
        stats: QueueStats,
        workers: Sequence[WorkerRecord],
        connections: tuple[int, int] | None,
        now: datetime,
        demand: Sequence[ClassDemand] = (),
    ) -> bytes: ...


class Metrics(Protocol):
    """What the core counts as it works, for an operator's dashboards (``/metrics``). Cheap and
    synchronous: called on the paths of requests."""

    def pulled(self, jobs: int) -> None:
        """A pull handed out ``jobs`` jobs (0: it found none)."""
        ...

    def status_update(self, outcome: str) -> None:
        """A worker's status report: accepted, not_found, conflict or invalid."""
        ...

    def delivered(self, outcome: Delivery) -> None:
        """The upstream's answer to one message."""
        ...

    def swept(self, requeued: int, failed: int) -> None:
        """One sweep, and the jobs it took back."""
        ...

    def set_aside(self) -> None:
        """A worker was set aside."""
        ...


class NoMetrics:
    """Counts nothing: for embedders and tests, and with ``METRICS=0``."""

    def pulled(self, jobs: int) -> None:
        pass

    def status_update(self, outcome: str) -> None:
        pass

    def delivered(self, outcome: Delivery) -> None:
        pass

    def swept(self, requeued: int, failed: int) -> None:
        pass

    def set_aside(self) -> None:
        pass


__all__ = [
    "Clock",
    "DashboardReads",
    "FileStorage",
    "IdentityVerifier",
    "InProcessStore",
    "JobQueue",
    "LinkSigner",
    "Metrics",
    "MetricsReport",
    "NoMetrics",
    "Outbox",
    "StoreHealth",
    "UploadLedger",
    "UpstreamNotifier",
    "WorkerRegistry",
]
