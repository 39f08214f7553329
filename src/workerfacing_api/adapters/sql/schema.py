"""The queue's tables. Alembic migrations create them; this module is what the migrations are
checked against (a test fails if autogenerate finds a difference).

Timestamps are UTC. Hardware requirements are stored with "anything" as 0 (numbers) and the
environment "any" as ``'any'`` so that a pull can range-scan an index; the job document as
submitted (``spec``) keeps the nulls the user-facing API sent.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
_Id = BigInteger().with_variant(Integer(), "sqlite")
_Timestamp = DateTime(timezone=True)
# A JSON array of names (workers, groups): JSONB on PostgreSQL (its ``?`` operator tests
# membership exactly), JSON text on SQLite (tested with json_each).
_Names = JSON().with_variant(JSONB(), "postgresql")
# A name (a group, a GPU model or architecture, a worker): TEXT, so that a column holds whatever
# the wire schema admits (core.model.Name bounds it, the same for every backend; migration 0005).
# SQLite never enforces a declared length, VARCHAR(255) and TEXT alike store text, and changing
# the declaration would mean copying each table (with foreign keys on, dropping the old ``jobs``
# would delete its attempts, events and uploads): its tables keep the declaration they were
# created with.
_Name = Text().with_variant(String(255), "sqlite")

STATUSES = (
    "queued",
    "pulled",
    "preprocessing",
    "running",
    "postprocessing",
    "finished",
    "error",
    "cancelled",
)
_ACTIVE = "status IN ('pulled', 'preprocessing', 'running', 'postprocessing')"

jobs = Table(
    "jobs",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("upstream_id", BigInteger, nullable=False, comment="meta.job_id of the user-facing API"),
    Column("status", String(16), nullable=False),
    Column("environment", String(8), nullable=False, comment="cloud, local or any"),
    Column("job_group", _Name),
    Column("priority", Integer, nullable=False),
    Column("req_cpu_cores", BigInteger, nullable=False),
    Column("req_memory", BigInteger, nullable=False),
    Column("req_gpu_mem", BigInteger, nullable=False),
    Column("req_gpu_model", _Name),
    Column("req_gpu_archi", _Name),
    Column("spec", Text, nullable=False, comment="the job document exactly as submitted"),
    Column("paths_upload", Text, nullable=False),
    Column("worker", _Name),  # the account holding the job: who may report on it
    Column("node", String(16), comment="the node holding the job (nodes.node)"),
    Column("attempt", Integer, nullable=False, server_default=text("0")),
    Column("num_retries", Integer, nullable=False, server_default=text("0")),
    Column("event_seq", Integer, nullable=False, server_default=text("0")),
    # Every worker that ever pulled the job, also kept (as history) in job_attempts. Kept on
    # the row so that RETRY_DIFFERENT is a filter on the candidate itself: a join would make
    # the pull's plan depend on table statistics, which lag behind a busy queue.
    Column("attempted_by", _Names, nullable=False, server_default=text("'[]'")),
    Column("runtime_details", Text),
    Column("created_at", _Timestamp, nullable=False),
    Column("updated_at", _Timestamp, nullable=False),
    Column("last_heartbeat_at", _Timestamp),
    # When a message about the job last went upstream (an event recorded, a keep-alive
    # claimed): keep-alives go at most once per interval, whichever process sees the pings.
    Column("forwarded_at", _Timestamp),
    # When the upstream last answered anything but 404 about the job (the sending time of that
    # message): what was stored for the job after it may postdate the user's delete.
    Column("upstream_ok_at", _Timestamp),
    # Whether the latest compare-and-set on the row (record_update, end_silent_attempt) claimed
    # the job's keep-alive. Read only in that statement's RETURNING: PostgreSQL 15 and SQLite
    # return the new row alone, and whether forwarded_at moved cannot be told from its new
    # value (it may have been set at that same instant before).
    Column("keepalive_claimed", Boolean, nullable=False, server_default=text("false")),
    # Why the queued job waits, as last told to its user (core.notices): no worker seen can run
    # it. Null: nothing told, or the user was told since that a worker can. A re-queue or a
    # retry starts it over.
    Column("wait_notice", Text),
    CheckConstraint(f"status IN {STATUSES!r}", name="status"),
    CheckConstraint("environment IN ('cloud', 'local', 'any')", name="environment"),
    postgresql_with={"fillfactor": 85},  # room on each page for in-place (HOT) updates
    sqlite_autoincrement=True,  # an id, once handed to a worker, never names another job
)

# Pull, when few queued jobs fit: range-scan the jobs of the worker's environment that need no
# more memory than it has, then sort those few.
Index(
    "ix_jobs_queued_fit",
    jobs.c.environment,
    jobs.c.req_memory,
    postgresql_where=text("status = 'queued'"),
    sqlite_where=text("status = 'queued'"),
)
# Pull, when many queued jobs fit: walk the queue in hand-out order and stop at the first fits.
Index(
    "ix_jobs_queued_order",
    jobs.c.priority.desc(),
    jobs.c.created_at,
    jobs.c.id,
    postgresql_where=text("status = 'queued'"),
    sqlite_where=text("status = 'queued'"),
)
# Downloads (the active jobs of one account), the hold cap of a claim (those of one of its nodes)
# and the sweep (all active jobs: as many as there are busy workers). Keep-alives only move
# last_heartbeat_at, which no index holds, so PostgreSQL can update them in place (HOT) without
# touching any index.
Index(
    "ix_jobs_active_worker",
    jobs.c.worker,
    jobs.c.node,
    postgresql_where=text(_ACTIVE),
    sqlite_where=text(_ACTIVE),
)
# One live job per upstream id: a resubmission cancels the older job in the same transaction,
# and two racing resubmissions cannot both stay live.
Index(
    "ix_jobs_live_upstream_id",
    jobs.c.upstream_id,
    unique=True,
    postgresql_where=text("status <> 'cancelled'"),
    sqlite_where=text("status <> 'cancelled'"),
)

# The dashboard's waiting jobs by hardware class (common.sql's waiting_classes): every column
# the grouping reads, in its order, so that it is one index-only pass over the queued jobs.
Index(
    "ix_jobs_queued_class",
    jobs.c.environment,
    jobs.c.req_cpu_cores,
    jobs.c.req_memory,
    jobs.c.req_gpu_mem,
    jobs.c.req_gpu_model,
    jobs.c.req_gpu_archi,
    jobs.c.created_at,
    postgresql_where=text("status = 'queued'"),
    sqlite_where=text("status = 'queued'"),
)
# Jobs by state, in id order within a state: an index-only count by state (stats: the dashboard,
# every few seconds, and /metrics) instead of a sort of the whole table; and the jobs view's
# pages of one state, newest first, each a short range of it. A change of state rewrites index
# entries anyway (status is in the predicates of the partial indexes above), and this is the
# one index of the state, so keep-alives stay in-place (HOT) updates.
Index("ix_jobs_status_id", jobs.c.status, jobs.c.id)
# The oldest queued job (stats): one index entry, not a pass over the queue.
Index(
    "ix_jobs_queued_created_at",
    jobs.c.created_at,
    jobs.c.id,
    postgresql_where=text("status = 'queued'"),
    sqlite_where=text("status = 'queued'"),
)
# The queued jobs whose users were told that no worker can run them (core.notices): the few
# the sweep looks at every round to tell them when a worker that can appears.
Index(
    "ix_jobs_wait_noticed",
    jobs.c.id,
    postgresql_where=text("status = 'queued' AND wait_notice IS NOT NULL"),
    sqlite_where=text("status = 'queued' AND wait_notice IS NOT NULL"),
)
# The dashboard's recent failures: the jobs in error, without reading the others. Not keyed on
# updated_at: every keep-alive moves updated_at, and a column in any index would turn those
# in-place (HOT) updates into index writes; the few jobs in error are sorted instead.
Index(
    "ix_jobs_error",
    jobs.c.id,
    postgresql_where=text("status = 'error'"),
    sqlite_where=text("status = 'error'"),
)

job_attempts = Table(
    "job_attempts",
    metadata,
    # No foreign key to jobs (migration 0010): an attempt is inserted by the very statement that
    # claims its job, and jobs are never deleted; a key would cost every claim a lookup and a
    # lock of the job's row (ARCHITECTURE §3: a cycle runs no statement it does not need).
    Column("job_id", _Id, primary_key=True),
    Column("attempt", Integer, primary_key=True),
    Column("worker", _Name, nullable=False),
    # Set by every claim since migration 0006 (which filled in the older rows); nullable so that
    # adding it rebuilt no table.
    Column("node", String(16), comment="the node that pulled it (nodes.node)"),
    Column("pulled_at", _Timestamp, nullable=False),
    # How the attempt ended, as evidence of its worker's health: finished, error or timeout
    # (core.model.Outcome), noted once, when it ended. NULL while it runs, and for attempts
    # that ended before the fleet was watched.
    Column("outcome", String(16)),
    Column("ended_at", _Timestamp),
)
# A node's latest outcomes (judging it after a failure): a range of one node's ended attempts,
# read backwards in the order they are wanted, without a sort.
Index(
    "ix_job_attempts_node_ended_at",
    job_attempts.c.node,
    job_attempts.c.ended_at,
    job_attempts.c.job_id,
    job_attempts.c.attempt,
    postgresql_where=text("ended_at IS NOT NULL"),
    sqlite_where=text("ended_at IS NOT NULL"),
)
# How the rest of the fleet fared lately (the same judgement): a range of ended_at. Attempts
# still running are not in either index.
Index(
    "ix_job_attempts_ended_at",
    job_attempts.c.ended_at,
    postgresql_where=text("ended_at IS NOT NULL"),
    sqlite_where=text("ended_at IS NOT NULL"),
)

# The dashboard's throughput: the attempts pulled in the last hour, a range of pulled_at.
Index("ix_job_attempts_pulled_at", job_attempts.c.pulled_at)
# The dashboard's re-queues: the latest attempts the sweep took back, without reading the
# (many more) attempts that ended otherwise.
Index(
    "ix_job_attempts_timeout_ended_at",
    job_attempts.c.ended_at,
    job_attempts.c.job_id,
    job_attempts.c.attempt,
    postgresql_where=text("outcome = 'timeout'"),
    sqlite_where=text("outcome = 'timeout'"),
)

nodes = Table(
    "nodes",
    metadata,
    Column("node", String(16), primary_key=True, comment="core.model.node_id"),
    # What tells an account's machines apart (ARCHITECTURE §3).
    Column("account", _Name, nullable=False, comment="the worker's user name"),
    Column("address", _Name, nullable=False, comment="client address of its pulls ('': unknown)"),
    Column("instance", _Name, comment="the instance id it sends, if any"),
    # What it offered at its latest pull (core.model.WorkerProfile).
    Column("environment", String(8), nullable=False),
    Column("cpu_cores", BigInteger, nullable=False),
    Column("memory", BigInteger, nullable=False),
    Column("gpu_mem", BigInteger, nullable=False),
    Column("gpu_model", _Name),
    Column("gpu_archi", _Name),
    Column("groups", _Names, nullable=False, server_default=text("'[]'")),
    Column("older_than", Double, nullable=False, server_default=text("0")),
    Column("first_seen_at", _Timestamp, nullable=False),
    Column("last_seen_at", _Timestamp, nullable=False),
    # Its standing: times set aside since it last finished a job, and its latest cool-off.
    Column("strikes", Integer, nullable=False, server_default=text("0")),
    Column("aside_at", _Timestamp),
    Column("aside_until", _Timestamp, comment="its pulls get no job before this time"),
    Column("aside_reason", Text),
    # Whether the end of its latest cool-off was reported (note_cool_off_ends, or the
    # operator's release): each end is reported once, whichever process sees it first.
    Column("aside_end_noted", Boolean, nullable=False, server_default=text("false")),
    # Claims that took jobs for the node so far. Each such claim moves it, in its own statement:
    # a claim that finds it moved since its snapshot counted the node's jobs too early, and is
    # run again (postgres.sql's claim_picked), so the hold cap holds under concurrent pulls.
    Column("claim_seq", BigInteger, nullable=False, server_default=text("0")),
    CheckConstraint("environment IN ('cloud', 'local')", name="environment"),
    comment="the worker nodes seen pulling, and which are set aside",
    postgresql_with={"fillfactor": 70},  # each pull may rewrite its node's row: kept HOT
)
# An account's nodes (workers release ACCOUNT).
Index("ix_nodes_account", nodes.c.account)
# The cool-offs whose end is not reported yet (note_cool_off_ends, at every sweep): at most the
# workers set aside now, whatever the size of the fleet. A pull's rewrite of its worker's row
# touches none of these columns, so it stays an in-place (HOT) update on PostgreSQL.
Index(
    "ix_nodes_cool_off_ends",
    nodes.c.aside_until,
    postgresql_where=text("aside_until IS NOT NULL AND NOT aside_end_noted"),
    sqlite_where=text("aside_until IS NOT NULL AND NOT aside_end_noted"),
)

status_events = Table(
    "status_events",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    # No foreign key to jobs, as for job_attempts: an event is inserted by the statement that
    # changes its job, and jobs are never deleted.
    Column("job_id", _Id, nullable=False),
    Column("upstream_id", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("runtime_details", Text),
    Column("created_at", _Timestamp, nullable=False),
    Column("due_at", _Timestamp, nullable=False),
    Column("leased_until", _Timestamp),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("last_error", Text),
    comment="outbox: status changes not yet delivered to the user-facing API",
    # A late "delivered" for an event deleted meanwhile must not delete a newer event.
    sqlite_autoincrement=True,
)
# In order per job: an event may be delivered only when no older event of its job is left.
Index("ix_status_events_job_id_id", status_events.c.job_id, status_events.c.id)

job_uploads = Table(
    "job_uploads",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),  # storage order
    Column("job_id", _Id, ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("file_id", Text, nullable=False, comment="canonical file id, as the storage names it"),
    Column("stored_at", _Timestamp, nullable=False),
    comment="files stored for jobs: what to remove when the user turns out to have deleted one",
)
# What a job stored after a time (the clean-up after its user deleted it).
Index("ix_job_uploads_job_id_stored_at", job_uploads.c.job_id, job_uploads.c.stored_at)
# Whether another job stored the same file again later (it is that job's file then). A hash
# index on PostgreSQL: a file id is a path of any length, and a B-tree entry has a size limit.
Index("ix_job_uploads_file_id", job_uploads.c.file_id, postgresql_using="hash")

ui_sessions = Table(
    "ui_sessions",
    metadata,
    Column("key", Text, primary_key=True, comment="the session id the browser's cookie holds"),
    Column(
        "value", LargeBinary, nullable=False, comment="the session's data, as Litestar wrote it"
    ),
    Column("expires_at", _Timestamp, comment="gone from this time on (null: never)"),
    comment="the operators' dashboard sessions (Litestar's Store): signing out deletes one",
)
# The expired sessions, removed as new ones are written.
Index("ix_ui_sessions_expires_at", ui_sessions.c.expires_at)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("at", _Timestamp, nullable=False),
    Column("actor", Text, nullable=False, comment="an operator, 'internal key' or 'cli:<user>'"),
    Column("action", String(16), nullable=False, comment="retry, release or fail"),
    Column("target", Text, nullable=False, comment="the job ids, node or account it named"),
    Column("jobs", Text, nullable=False, comment="the job ids it named, a JSON array"),
    Column("detail", Text, nullable=False, comment="the reason given, what became of each"),
    comment="what operators did, from the CLI or the dashboard: never changed, never deleted",
    sqlite_autoincrement=True,
)
