"""The job cycle's inserts check no foreign key (issue of the cycle's database cost): an attempt
and a status event are inserted by the very statement that changes their job, and jobs are never
deleted, so the keys of job_attempts and status_events on jobs only cost each claim and each
change a lookup and a lock of the job's row (4 of the 7 statements a cycle ran).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Each table, its key, and what SQLite's rebuild of it must keep (batch mode copies the table):
# status_events' ids never come back once used (AUTOINCREMENT), so a late acknowledgement of a
# deleted event can never delete a newer one.
_KEYS: tuple[tuple[str, str, dict[str, bool]], ...] = (
    ("job_attempts", "fk_job_attempts_job_id_jobs", {}),
    ("status_events", "fk_status_events_job_id_jobs", {"sqlite_autoincrement": True}),
)


def upgrade() -> None:
    with _event_ids_kept():
        for table, key, kept in _KEYS:
            with op.batch_alter_table(table, table_kwargs=kept) as batch:
                batch.drop_constraint(key, type_="foreignkey")


def downgrade() -> None:
    with _event_ids_kept():
        for table, key, kept in _KEYS:
            with op.batch_alter_table(table, table_kwargs=kept) as batch:
                batch.create_foreign_key(key, "jobs", ["job_id"], ["id"], ondelete="CASCADE")


@contextmanager
def _event_ids_kept() -> Iterator[None]:
    """SQLite: the rebuilt status_events counts on from the highest id it ever gave (not from
    the highest left in the table: delivered events were deleted)."""
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        yield
        return
    given = sa.text("SELECT seq FROM sqlite_sequence WHERE name = 'status_events'")
    highest = bind.execute(given).scalar() or 0
    yield
    if bind.execute(given).scalar() is None:
        bind.execute(sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES ('status_events', 0)"))
    bind.execute(
        sa.text("UPDATE sqlite_sequence SET seq = max(seq, :highest) WHERE name = 'status_events'"),
        {"highest": highest},
    )
