"""Names as TEXT: the columns of groups, GPU models and architectures and worker names hold
whatever the wire schema admits (``core.model.Name``, at most 255 characters), so every backend
accepts the same input and a refusal is a 4xx from the schema, not an error from a column.

PostgreSQL only. There VARCHAR to TEXT is binary-compatible: the catalogue changes, and no row
or index is rewritten. SQLite never enforced the declared length, and its tables keep the
declaration they were created with (see ``schema._Name``): rebuilding them to change it would
delete, through the foreign keys, every attempt, event and upload of the rebuilt ``jobs``.

The downgrade restores VARCHAR(255). It cannot fail on what this release stored: no longer name
gets past the wire schema.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-13
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, column, nullable) of every name column.
_NAMES = (
    ("jobs", "job_group", True),
    ("jobs", "req_gpu_model", True),
    ("jobs", "req_gpu_archi", True),
    ("jobs", "worker", True),
    ("job_attempts", "worker", False),
    ("workers", "name", False),
    ("workers", "gpu_model", True),
    ("workers", "gpu_archi", True),
)


def _retype(old: sa.types.TypeEngine[str], new: sa.types.TypeEngine[str]) -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    for table, column, nullable in _NAMES:
        op.alter_column(table, column, type_=new, existing_type=old, existing_nullable=nullable)


def upgrade() -> None:
    _retype(sa.String(255), sa.Text())


def downgrade() -> None:
    _retype(sa.Text(), sa.String(255))
