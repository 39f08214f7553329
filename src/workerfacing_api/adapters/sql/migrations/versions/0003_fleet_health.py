"""Fleet health: the workers seen pulling and their standing (set aside or not), and how each
attempt ended, as evidence of its worker's health (ARCHITECTURE §3).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-08
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)
_ENDED = sa.text("ended_at IS NOT NULL")
_NOT_NOTED = sa.text("aside_until IS NOT NULL AND NOT aside_end_noted")


def upgrade() -> None:
    # Nullable: on both databases adding them rewrites nothing, and the new indexes start empty
    # (no attempt has ended_at yet).
    op.add_column("job_attempts", sa.Column("outcome", sa.String(16), nullable=True))
    op.add_column("job_attempts", sa.Column("ended_at", _TS, nullable=True))
    op.create_index(
        "ix_job_attempts_worker_ended_at",
        "job_attempts",
        ["worker", "ended_at", "job_id", "attempt"],
        postgresql_where=_ENDED,
        sqlite_where=_ENDED,
    )
    op.create_index(
        "ix_job_attempts_ended_at",
        "job_attempts",
        ["ended_at"],
        postgresql_where=_ENDED,
        sqlite_where=_ENDED,
    )

    op.create_table(
        "workers",
        sa.Column("name", sa.String(255), nullable=False, comment="the worker's user name"),
        sa.Column("environment", sa.String(8), nullable=False),
        sa.Column("cpu_cores", sa.BigInteger(), nullable=False),
        sa.Column("memory", sa.BigInteger(), nullable=False),
        sa.Column("gpu_mem", sa.BigInteger(), nullable=False),
        sa.Column("gpu_model", sa.String(255), nullable=True),
        sa.Column("gpu_archi", sa.String(255), nullable=True),
        sa.Column(
            "groups",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            server_default=sa.text("'[]'"),
            nullable=False,
        ),
        sa.Column("older_than", sa.Double(), server_default=sa.text("0"), nullable=False),
        sa.Column("first_seen_at", _TS, nullable=False),
        sa.Column("last_seen_at", _TS, nullable=False),
        sa.Column("strikes", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("aside_at", _TS, nullable=True),
        sa.Column(
            "aside_until", _TS, nullable=True, comment="its pulls get no job before this time"
        ),
        sa.Column("aside_reason", sa.Text(), nullable=True),
        sa.Column("aside_end_noted", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.CheckConstraint(
            "environment IN ('cloud', 'local')", name=op.f("ck_workers_environment")
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_workers")),
        comment="the workers seen pulling, and which are set aside",
        postgresql_with={"fillfactor": 70},
    )
    op.create_index(
        "ix_workers_cool_off_ends",
        "workers",
        ["aside_until"],
        postgresql_where=_NOT_NOTED,
        sqlite_where=_NOT_NOTED,
    )


def downgrade() -> None:
    op.drop_table("workers")
    op.drop_index("ix_job_attempts_ended_at", table_name="job_attempts")
    op.drop_index("ix_job_attempts_worker_ended_at", table_name="job_attempts")
    op.drop_column("job_attempts", "ended_at")
    op.drop_column("job_attempts", "outcome")
