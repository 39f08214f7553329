"""What operators do from the dashboard (ARCHITECTURE §7): the audit log of their actions, and
the jobs by state in id order for the jobs view's pages (replacing the index of the state
alone, so that a change of state writes no more index entries than before).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "actor",
            sa.Text(),
            nullable=False,
            comment="an operator, 'internal key' or 'cli:<user>'",
        ),
        sa.Column("action", sa.String(16), nullable=False, comment="retry, release or fail"),
        sa.Column(
            "target", sa.Text(), nullable=False, comment="the job ids, node or account it named"
        ),
        sa.Column("jobs", sa.Text(), nullable=False, comment="the job ids it named, a JSON array"),
        sa.Column(
            "detail", sa.Text(), nullable=False, comment="the reason given, what became of each"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
        comment="what operators did, from the CLI or the dashboard: never changed, never deleted",
        sqlite_autoincrement=True,
    )
    op.create_index("ix_jobs_status_id", "jobs", ["status", "id"])
    op.drop_index("ix_jobs_status", table_name="jobs")


def downgrade() -> None:
    op.create_index("ix_jobs_status", "jobs", ["status"])
    op.drop_index("ix_jobs_status_id", table_name="jobs")
    op.drop_table("audit_log")
