"""The operators' dashboard: indexes that keep its reads bounded with 100 000 jobs queued
(jobs by state, the oldest queued job, waiting jobs by hardware class, the latest failures and
re-queues, throughput per minute).
Indexes only: nothing is rewritten, and an older release runs on this schema unchanged.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-12
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_QUEUED = sa.text("status = 'queued'")
_ERROR = sa.text("status = 'error'")
_TIMEOUT = sa.text("outcome = 'timeout'")


def upgrade() -> None:
    op.create_index("ix_jobs_status", "jobs", ["status"])
    op.create_index(
        "ix_jobs_queued_created_at",
        "jobs",
        ["created_at", "id"],
        postgresql_where=_QUEUED,
        sqlite_where=_QUEUED,
    )
    op.create_index(
        "ix_jobs_queued_class",
        "jobs",
        [
            "environment",
            "req_cpu_cores",
            "req_memory",
            "req_gpu_mem",
            "req_gpu_model",
            "req_gpu_archi",
            "created_at",
        ],
        postgresql_where=_QUEUED,
        sqlite_where=_QUEUED,
    )
    op.create_index(
        "ix_jobs_error",
        "jobs",
        ["id"],
        postgresql_where=_ERROR,
        sqlite_where=_ERROR,
    )
    op.create_index("ix_job_attempts_pulled_at", "job_attempts", ["pulled_at"])
    op.create_index(
        "ix_job_attempts_timeout_ended_at",
        "job_attempts",
        ["ended_at", "job_id", "attempt"],
        postgresql_where=_TIMEOUT,
        sqlite_where=_TIMEOUT,
    )


def downgrade() -> None:
    op.drop_index("ix_job_attempts_timeout_ended_at", table_name="job_attempts")
    op.drop_index("ix_job_attempts_pulled_at", table_name="job_attempts")
    op.drop_index("ix_jobs_error", table_name="jobs")
    op.drop_index("ix_jobs_queued_class", table_name="jobs")
    op.drop_index("ix_jobs_queued_created_at", table_name="jobs")
    op.drop_index("ix_jobs_status", table_name="jobs")
