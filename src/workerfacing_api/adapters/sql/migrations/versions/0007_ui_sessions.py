"""The operators' dashboard sessions in the queue's database (ARCHITECTURE §7): every API process
reads the same sessions, so signing out in one ends the session in all of them.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ui_sessions",
        sa.Column(
            "key", sa.Text(), nullable=False, comment="the session id the browser's cookie holds"
        ),
        sa.Column(
            "value",
            sa.LargeBinary(),
            nullable=False,
            comment="the session's data, as Litestar wrote it",
        ),
        sa.Column(
            "expires_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="gone from this time on (null: never)",
        ),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_ui_sessions")),
        comment="the operators' dashboard sessions (Litestar's Store): signing out deletes one",
    )
    op.create_index("ix_ui_sessions_expires_at", "ui_sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_ui_sessions_expires_at", table_name="ui_sessions")
    op.drop_table("ui_sessions")
