"""The domain's vocabulary: job specifications as clients exchange them, and the queue's records.

Wire shapes (``JobSpecs``, ``SubmittedJob``) are defined here because they *are* the domain: the
user-facing API submits them and workers receive them back byte for byte. The queue's own view of
a job (``Job``) adds what this service tracks: state, assignment, attempts and heartbeats.
"""

from __future__ import annotations

import enum
import hashlib
from datetime import datetime
from typing import Annotated

import msgspec

from workerfacing_api.core.text import storable

# Postgres BIGINT bounds every integer that reaches the database; larger values are bad input.
MAX_DB_INT = 2**63 - 1
NonNegative = Annotated[int, msgspec.Meta(ge=0, le=MAX_DB_INT)]

# Text without control characters (Unicode category Cc: U+0000 to U+001F, U+007F to U+009F): a
# name or path holding one breaks log lines, file listings and the PostgreSQL driver (NUL). The
# pattern reads the same in Python's ``re`` (which msgspec and Litestar validate with) and in the
# ECMA-262 dialect of JSON Schema: ``(?!\n)`` only stops Python's ``$`` from also matching before
# a final line feed.
NO_CONTROL_CHARACTERS = r"^[^\x00-\x1f\x7f-\x9f]*$(?!\n)"
# The longest name (a group, a GPU model or architecture, a worker's user name) in characters:
# more than any real one (Cognito user names stop at 128), and few enough that a PostgreSQL index
# entry holding two of them (2 040 bytes at most, 4 a character) fits its size limit (2 704).
NAME_MAX = 255
Name = Annotated[str, msgspec.Meta(max_length=NAME_MAX, pattern=NO_CONTROL_CHARACTERS)]
# A file system path or S3 key, as the user-facing API writes it: bounded by the storage, not
# here, but without control characters.
PathText = Annotated[str, msgspec.Meta(pattern=NO_CONTROL_CHARACTERS)]


def in_words(message: str) -> str:
    """A validation message of msgspec with the control-character pattern said in words: the
    client reads the answer, and a regular expression tells it little."""
    return message.replace(
        f"`str` matching regex {NO_CONTROL_CHARACTERS!r}", "text without control characters"
    )


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    PULLED = "pulled"
    PREPROCESSING = "preprocessing"
    RUNNING = "running"
    POSTPROCESSING = "postprocessing"
    FINISHED = "finished"
    ERROR = "error"
    # Internal only: the job left the queue because the user deleted it upstream or a newer
    # submission reused its id. Workers never see this value; they get 404s.
    CANCELLED = "cancelled"


# Forward order of the lifecycle; a lower rank never replaces a higher one.
STATUS_RANK: dict[JobStatus, int] = {
    JobStatus.QUEUED: 0,
    JobStatus.PULLED: 1,
    JobStatus.PREPROCESSING: 2,
    JobStatus.RUNNING: 3,
    JobStatus.POSTPROCESSING: 4,
    JobStatus.FINISHED: 5,
    JobStatus.ERROR: 5,
}
ACTIVE_STATUSES = frozenset(
    {JobStatus.PULLED, JobStatus.PREPROCESSING, JobStatus.RUNNING, JobStatus.POSTPROCESSING}
)
FINAL_STATUSES = frozenset({JobStatus.FINISHED, JobStatus.ERROR})
WORKER_STATUSES = frozenset(
    {
        JobStatus.PREPROCESSING,
        JobStatus.RUNNING,
        JobStatus.POSTPROCESSING,
        JobStatus.FINISHED,
        JobStatus.ERROR,
    }
)


class Environment(enum.StrEnum):
    CLOUD = "cloud"
    LOCAL = "local"


class FileType(enum.StrEnum):
    OUTPUT = "output"
    LOG = "log"
    ARTIFACT = "artifact"


# ---------------------------------------------------------------------------------------------
# Wire shapes, as the user-facing API submits them and the DECODE worker reads them.


class HardwareSpecs(msgspec.Struct, kw_only=True):
    """Hardware a job requires (null = anything) or, for a worker, what it offers."""

    cpu_cores: NonNegative | None = None
    memory: NonNegative | None = None
    gpu_model: Name | None = None
    gpu_archi: Name | None = None
    gpu_mem: NonNegative | None = None


class AppSpecs(msgspec.Struct, kw_only=True):
    cmd: list[str] | None = None
    env: dict[str, str] | None = None


class HandlerSpecs(msgspec.Struct, kw_only=True):
    image_url: str
    image_name: str | None = None
    image_version: str | None = None
    entrypoint: str | None = None
    files_down: dict[PathText, PathText] | None = None
    files_up: dict[FileType, PathText] | None = None


class MetaSpecs(msgspec.Struct, kw_only=True):
    """Job metadata. Fields beyond these two are kept: the stored job is the submitted bytes."""

    job_id: NonNegative
    date_created: str


class JobSpecs(msgspec.Struct, kw_only=True):
    """What the worker runs. All four parts are required: the DECODE worker reads each of them."""

    app: AppSpecs
    handler: HandlerSpecs
    meta: MetaSpecs
    hardware: HardwareSpecs


class PathsUpload(msgspec.Struct, kw_only=True):
    output: PathText
    log: PathText
    artifact: PathText

    def folder(self, file_type: FileType) -> str:
        return {
            FileType.OUTPUT: self.output,
            FileType.LOG: self.log,
            FileType.ARTIFACT: self.artifact,
        }[file_type]


DEFAULT_PRIORITY = 5  # what the user-facing API's own queue used when none was given


class SubmittedJob(msgspec.Struct, kw_only=True):
    job: JobSpecs
    paths_upload: PathsUpload
    environment: Environment | None = None
    group: Name | None = None
    priority: Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31 - 1)] | None = None


def _whole_numbers(value: object) -> object:
    """``value`` with every float that is a whole number as an int."""
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, dict):
        return {k: _whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(v) for v in value]
    return value


class _RawSubmission(msgspec.Struct):
    job: msgspec.Raw


class Submission(msgspec.Struct, frozen=True, kw_only=True):
    """A validated submission together with the job document exactly as it was sent."""

    job: SubmittedJob
    spec: bytes  # the JSON text of ``job.job``, byte for byte as submitted

    @classmethod
    def from_json(cls, body: bytes) -> Submission:
        """Validate a ``POST /_jobs`` body; raises ``msgspec.ValidationError``/``DecodeError``.

        Strict, but JSON's: a number with no fractional part (``8.0``) is an integer, as JSON
        Schema has it; a string (``"8"``) is not a number."""
        try:
            document = _whole_numbers(msgspec.json.decode(body))
        except RecursionError:
            raise msgspec.ValidationError("JSON nested too deeply") from None
        try:
            job = msgspec.convert(document, SubmittedJob)
        except msgspec.ValidationError as exc:
            raise msgspec.ValidationError(in_words(str(exc))) from None
        return cls(job=job, spec=cls.raw_job(body))

    @staticmethod
    def raw_job(body: bytes) -> bytes:
        """The ``job`` member of a submission body, byte for byte."""
        return bytes(msgspec.json.decode(body, type=_RawSubmission).job)


# ---------------------------------------------------------------------------------------------
# The queue's own records.


class Job(msgspec.Struct, frozen=True, kw_only=True):
    """A job as the queue holds it. ``spec`` is the submitted job document, untouched."""

    id: int
    upstream_id: int  # meta.job_id: the user-facing API's id, used when forwarding status
    status: JobStatus
    environment: Environment | None
    group: str | None
    priority: int
    hardware: HardwareSpecs
    created_at: datetime
    spec: bytes
    paths_upload: PathsUpload
    worker: str | None = None  # the account holding it (who may report on it)
    node: str | None = None  # the node holding it (whose health its outcome tells)
    attempt: int = 0  # number of times the job was pulled; the current attempt's number
    num_retries: int = 0
    # Status events recorded for this job so far. A change that records an event also
    # compares this, so two events of one job are never recorded concurrently; that keeps
    # "is this event the first undelivered one of its job?" decidable in the same statement.
    event_seq: int = 0
    last_heartbeat_at: datetime | None = None
    updated_at: datetime | None = None
    runtime_details: str | None = None
    # When a message about this job was last sent upstream (an event recorded, a keep-alive
    # claimed): keep-alives go at most once per UPSTREAM_KEEPALIVE_INTERVAL, across processes.
    forwarded_at: datetime | None = None
    # When the upstream last answered anything but 404 about this job (the sending time of that
    # message): a delete the user made must have come later, and so did the files stored after it.
    upstream_ok_at: datetime | None = None
    # Why it waits, as last told to its user (core.notices); None: nothing told, or since told
    # that a worker can run it.
    wait_notice: str | None = None

    def files_down(self) -> dict[str, str]:
        return msgspec.json.decode(self.spec, type=_FilesDownView).handler.files_down or {}


class _HandlerFilesView(msgspec.Struct):
    files_down: dict[str, str] | None = None


class _FilesDownView(msgspec.Struct):
    handler: _HandlerFilesView


class WorkerProfile(msgspec.Struct, frozen=True, kw_only=True):
    """Who is pulling and what it offers; built from the token and the query of ``GET /jobs``."""

    worker: str
    environment: Environment
    cpu_cores: int
    memory: int
    gpu_mem: int = 0
    gpu_model: str | None = None
    gpu_archi: str | None = None
    groups: tuple[str, ...] = ()
    older_than: float = 0.0  # seconds a job with no environment must wait before it fits
    # Where the pull came from: the client's address (the peer, or X-Forwarded-For from a
    # trusted proxy) and the instance id a worker may send. With the account and the hardware
    # they tell the worker's machines apart: its node (``node_id``).
    address: str = ""
    instance: str | None = None

    @property
    def node(self) -> str:
        return node_id(self)


def node_id(worker: WorkerProfile) -> str:
    """The node a pull comes from, as a short stable id: the account, the client address, the
    hardware offered and the instance id, if any. Fetchers that agree on all of these are one
    node (ARCHITECTURE §3). Names count as they are stored (``storable``): two that differ only in
    what no database holds are one name, and one node."""
    parts = (
        worker.worker,
        worker.address,
        str(worker.cpu_cores),
        str(worker.memory),
        str(worker.gpu_mem),
        worker.gpu_model or "",
        worker.gpu_archi or "",
        worker.instance if worker.instance is not None else "\x1e",
    )
    text = storable("\x1f".join(parts)).encode()
    digest = hashlib.blake2b(text, digest_size=6).hexdigest()
    return f"n-{digest}"


class StatusEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One status change to forward upstream, kept in the outbox until delivered."""

    id: int
    job_id: int  # queue id
    upstream_id: int  # meta.job_id, what the user-facing API knows the job by
    status: JobStatus
    runtime_details: str | None
    created_at: datetime
    attempts: int = 0


class KeepAlive(msgspec.Struct, frozen=True, kw_only=True):
    """A keep-alive of an active job, forwarded best effort: never stored in the outbox and never
    retried. The user-facing API never says when a user deletes a job; its 404 to this is how
    the service learns it while the job runs (ARCHITECTURE §3)."""

    job_id: int  # queue id
    upstream_id: int
    status: JobStatus
    created_at: datetime  # when it was decided (and sent)
    runtime_details: str | None = None


# What goes upstream: a durable status event from the outbox, or a keep-alive.
Message = StatusEvent | KeepAlive


class ExpiredJob(msgspec.Struct, frozen=True, kw_only=True):
    job: Job
    workers_tried: tuple[str, ...]


class Claimed(msgspec.Struct, frozen=True, kw_only=True):
    job: Job
    # The "pulled" event, leased to the caller for delivery right away; None when no event was
    # recorded (no upstream) or an older event of the job must go first (the dispatcher's job).
    event: StatusEvent | None = None


class Committed(msgspec.Struct, frozen=True, kw_only=True):
    """A compare-and-set that won, with its event leased to the caller as for ``Claimed``, or
    the keep-alive it claimed the right to forward."""

    job: Job
    event: StatusEvent | None = None
    keepalive: KeepAlive | None = None


class Delivery(enum.Enum):
    DELIVERED = "delivered"
    GONE = "gone"  # the user-facing API answered 404: the user deleted the job
    RETRY = "retry"  # upstream down, 5xx or timeout: try again later


class SweepReport(msgspec.Struct, frozen=True, kw_only=True):
    requeued: tuple[int, ...] = ()
    failed: tuple[int, ...] = ()


class PresignedRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Keyword arguments for ``requests.request(**it)``: what the worker sends as is."""

    method: str
    url: str
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    data: dict[str, str] = msgspec.field(default_factory=dict)


class Identity(msgspec.Struct, frozen=True, kw_only=True):
    username: str
    groups: frozenset[str]

    @property
    def environment(self) -> Environment:
        return Environment.CLOUD if "cloud" in self.groups else Environment.LOCAL


# ---------------------------------------------------------------------------------------------
# The fleet: the workers seen pulling, and how their attempts ended.


class Outcome(enum.StrEnum):
    """How an attempt ended, as far as the worker's health is concerned."""

    FINISHED = "finished"
    ERROR = "error"  # the worker reported error
    TIMEOUT = "timeout"  # the worker fell silent and the sweep took the job back
    STOPPED = "stopped"  # an operator failed the job: no evidence about the worker


class AttemptOutcome(msgspec.Struct, frozen=True, kw_only=True):
    job_id: int  # queue id
    attempt: int
    worker: str
    outcome: Outcome
    pulled_at: datetime
    ended_at: datetime
    node: str = ""


class FleetBaseline(msgspec.Struct, frozen=True, kw_only=True):
    """How the other nodes (those not set aside) fared lately, one vote each: a node's many
    failures count once, so that one node's mass failure cannot outweigh the rest."""

    healthy: int = 0  # nodes that finished more attempts than they failed
    failing: int = 0  # nodes that failed at least as many as they finished


class WorkerRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A worker node as the registry knows it: its account, address, instance id and what it
    offered at its last pull (``profile``), and its standing."""

    node: str  # node_id(profile)
    profile: WorkerProfile
    first_seen_at: datetime
    last_seen_at: datetime
    strikes: int = 0  # times set aside since it last finished a job
    aside_at: datetime | None = None  # when its latest cool-off began
    aside_until: datetime | None = None  # when its latest cool-off ends (or ended)
    aside_reason: str | None = None
    active_jobs: tuple[int, ...] = ()  # queue ids it holds now

    @property
    def name(self) -> str:
        """The node's id: what the registry, the CLI and the dashboard know it by."""
        return self.node

    @property
    def account(self) -> str:
        return self.profile.worker

    def aside(self, now: datetime) -> bool:
        return self.aside_until is not None and self.aside_until > now


class QueueStats(msgspec.Struct, frozen=True, kw_only=True):
    """The queue at a glance: for operators, ``/metrics`` and the dashboard."""

    by_status: dict[str, int]
    oldest_queued_id: int | None
    oldest_queued_age: float | None  # seconds
    outbox_backlog: int
    oldest_event_age: float | None  # seconds


# ---------------------------------------------------------------------------------------------
# The operators' dashboard (ARCHITECTURE §7): read-only views of the queue's history.


class WaitingClass(msgspec.Struct, frozen=True, kw_only=True):
    """Queued jobs that ask for the same environment and hardware. "Anything" is 0 for the
    numbers and None for the names (the SQL tables store it so); None environment: any."""

    environment: Environment | None
    cpu_cores: int
    memory: int
    gpu_mem: int
    gpu_model: str | None
    gpu_archi: str | None
    jobs: int
    oldest_created_at: datetime

    @property
    def hardware(self) -> HardwareSpecs:
        """The requirement as a job states it (null: anything)."""
        return HardwareSpecs(
            cpu_cores=self.cpu_cores or None,
            memory=self.memory or None,
            gpu_mem=self.gpu_mem or None,
            gpu_model=self.gpu_model,
            gpu_archi=self.gpu_archi,
        )


class FailureKind(enum.StrEnum):
    FAILED = "failed"  # the job ended in error
    REQUEUED = "requeued"  # its worker fell silent and the sweep put it back in the queue


class Failure(msgspec.Struct, frozen=True, kw_only=True):
    """A job that failed, or an attempt the sweep took back: what an operator looks into."""

    job_id: int  # queue id
    upstream_id: int  # meta.job_id
    kind: FailureKind
    attempt: int
    worker: str | None
    at: datetime  # when it failed (the job's last update) or was taken back
    # The job's runtime_details (the worker's, or the sweep's for a time-out); None for a
    # time-out whose job was pulled again since (the later attempt wrote its own).
    runtime_details: str | None


class AttemptRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One attempt of a job: who pulled it, when, and how it ended (None: it has not)."""

    attempt: int
    worker: str
    pulled_at: datetime
    ended_at: datetime | None
    outcome: Outcome | None
    node: str | None = None


# ---------------------------------------------------------------------------------------------
# What operators do (ARCHITECTURE §7): the jobs view, and the audit log of their actions.


class ClassKey(msgspec.Struct, frozen=True, kw_only=True):
    """A hardware class as the queue stores it (``WaitingClass`` without its counts): the
    environment (``any`` for none) and each requirement, 0 or None for "anything"."""

    environment: str
    cpu_cores: int = 0
    memory: int = 0
    gpu_mem: int = 0
    gpu_model: str | None = None
    gpu_archi: str | None = None


class JobQuery(msgspec.Struct, frozen=True, kw_only=True):
    """Which jobs the jobs view lists, newest first; every filter given must hold."""

    states: tuple[JobStatus, ...] = ()  # any of these; none: every state
    environment: str | None = None  # cloud, local or any
    worker: str | None = None  # the account that holds it, or ended it
    node: str | None = None
    hardware: ClassKey | None = None
    created_before: datetime | None = None  # older than an age
    created_after: datetime | None = None  # younger than an age
    upstream_id: int | None = None  # meta.job_id
    queue_id: int | None = None
    before_id: int | None = None  # the page after the one that ended with this id


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One operator's action, as the audit log keeps it."""

    id: int = 0  # given by the log
    at: datetime
    actor: str  # who: an operator's name, "internal key", or "cli:<user>"
    action: str  # retry, release or fail
    target: str  # what it named: job ids, a node or an account
    jobs: tuple[int, ...] = ()  # the jobs it changed or named
    detail: str = ""  # the reason given, and what became of each
