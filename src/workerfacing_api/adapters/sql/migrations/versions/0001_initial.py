"""Initial schema: jobs, their attempts, and the outbox of status events.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)
_QUEUED = sa.text("status = 'queued'")
_ACTIVE = sa.text("status IN ('pulled', 'preprocessing', 'running', 'postprocessing')")
_LIVE = sa.text("status <> 'cancelled'")


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column(
            "upstream_id",
            sa.BigInteger(),
            nullable=False,
            comment="meta.job_id of the user-facing API",
        ),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("environment", sa.String(8), nullable=False, comment="cloud, local or any"),
        sa.Column("job_group", sa.String(255), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("req_cpu_cores", sa.BigInteger(), nullable=False),
        sa.Column("req_memory", sa.BigInteger(), nullable=False),
        sa.Column("req_gpu_mem", sa.BigInteger(), nullable=False),
        sa.Column("req_gpu_model", sa.String(255), nullable=True),
        sa.Column("req_gpu_archi", sa.String(255), nullable=True),
        sa.Column(
            "spec", sa.Text(), nullable=False, comment="the job document exactly as submitted"
        ),
        sa.Column("paths_upload", sa.Text(), nullable=False),
        sa.Column("worker", sa.String(255), nullable=True),
        sa.Column("attempt", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("num_retries", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("event_seq", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "attempted_by",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            server_default=sa.text("'[]'"),
            nullable=False,
        ),
        sa.Column("runtime_details", sa.Text(), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("last_heartbeat_at", _TS, nullable=True),
        sa.CheckConstraint(
            "environment IN ('cloud', 'local', 'any')", name=op.f("ck_jobs_environment")
        ),
        sa.CheckConstraint(
            "status IN ('queued', 'pulled', 'preprocessing', 'running', 'postprocessing', "
            "'finished', 'error', 'cancelled')",
            name=op.f("ck_jobs_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        postgresql_with={"fillfactor": 85},
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_jobs_queued_fit",
        "jobs",
        ["environment", "req_memory"],
        postgresql_where=_QUEUED,
        sqlite_where=_QUEUED,
    )
    op.create_index(
        "ix_jobs_queued_order",
        "jobs",
        [sa.text("priority DESC"), "created_at", "id"],
        postgresql_where=_QUEUED,
        sqlite_where=_QUEUED,
    )
    op.create_index(
        "ix_jobs_active_worker", "jobs", ["worker"], postgresql_where=_ACTIVE, sqlite_where=_ACTIVE
    )
    op.create_index(
        "ix_jobs_live_upstream_id",
        "jobs",
        ["upstream_id"],
        unique=True,
        postgresql_where=_LIVE,
        sqlite_where=_LIVE,
    )

    op.create_table(
        "job_attempts",
        sa.Column("job_id", _ID, nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(255), nullable=False),
        sa.Column("pulled_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["jobs.id"],
            name=op.f("fk_job_attempts_job_id_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("job_id", "attempt", name=op.f("pk_job_attempts")),
    )

    op.create_table(
        "status_events",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("job_id", _ID, nullable=False),
        sa.Column("upstream_id", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("runtime_details", sa.Text(), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("due_at", _TS, nullable=False),
        sa.Column("leased_until", _TS, nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["jobs.id"],
            name=op.f("fk_status_events_job_id_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_status_events")),
        comment="outbox: status changes not yet delivered to the user-facing API",
        sqlite_autoincrement=True,
    )
    op.create_index("ix_status_events_job_id_id", "status_events", ["job_id", "id"])

    if op.get_bind().dialect.name == "postgresql":
        # The queue's tables change all the time: keep the planner's statistics fresh, so that
        # pulls keep choosing between the "fits" and the "order" index well.
        for table in ("jobs", "job_attempts", "status_events"):
            op.execute(
                f"ALTER TABLE {table} SET (autovacuum_analyze_scale_factor = 0.02, "
                "autovacuum_analyze_threshold = 200, autovacuum_vacuum_scale_factor = 0.05)"
            )


def downgrade() -> None:
    op.drop_table("status_events")
    op.drop_table("job_attempts")
    op.drop_table("jobs")
