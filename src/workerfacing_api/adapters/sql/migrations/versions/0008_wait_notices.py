"""What a queued job's user was told about why it waits (ARCHITECTURE §3: no worker seen can run
it), so that the sweep tells it once per reason, in every process.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NOTICED = "status = 'queued' AND wait_notice IS NOT NULL"


def upgrade() -> None:
    op.add_column("jobs", sa.Column("wait_notice", sa.Text(), nullable=True))
    op.create_index(
        "ix_jobs_wait_noticed",
        "jobs",
        ["id"],
        postgresql_where=sa.text(_NOTICED),
        sqlite_where=sa.text(_NOTICED),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_wait_noticed", table_name="jobs")
    op.drop_column("jobs", "wait_notice")
