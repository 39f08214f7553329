"""Keep-alives forwarded upstream and files stored per job: when a message about a job last went
upstream and when the upstream last answered it, and a ledger of uploads, so that what a worker
stored after its user deleted the job can be removed again (ARCHITECTURE §3).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    # Nullable, or with a constant default: on both databases adding them rewrites nothing.
    op.add_column("jobs", sa.Column("forwarded_at", _TS, nullable=True))
    op.add_column("jobs", sa.Column("upstream_ok_at", _TS, nullable=True))
    op.add_column(
        "jobs",
        sa.Column(
            "keepalive_claimed", sa.Boolean(), server_default=sa.text("false"), nullable=False
        ),
    )

    op.create_table(
        "job_uploads",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("job_id", _ID, nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column(
            "file_id",
            sa.Text(),
            nullable=False,
            comment="canonical file id, as the storage names it",
        ),
        sa.Column("stored_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["jobs.id"],
            name=op.f("fk_job_uploads_job_id_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_uploads")),
        comment="files stored for jobs: what to remove when the user turns out to have deleted one",
    )
    op.create_index("ix_job_uploads_job_id_stored_at", "job_uploads", ["job_id", "stored_at"])
    op.create_index("ix_job_uploads_file_id", "job_uploads", ["file_id"], postgresql_using="hash")


def downgrade() -> None:
    op.drop_table("job_uploads")
    op.drop_column("jobs", "keepalive_claimed")
    op.drop_column("jobs", "upstream_ok_at")
    op.drop_column("jobs", "forwarded_at")
