"""Fleet health per node (ARCHITECTURE §3): the registry's rows become nodes, an account's machines
told apart by client address, hardware and instance id; jobs and attempts say which node holds
or held them; a node's outcomes are read by node.

Each worker row of 0003 becomes one node of its account whose address is unknown (''): its
strikes and cool-off are kept there, and the attempts and active jobs of the account are that
node's. The account's fetchers, pulling again, are new nodes (their address is known now) and
start with a clean standing; the former row stays listed, under its account, as history.

The downgrade folds the nodes back into one row per account (the one seen last) and drops the
node columns.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-20
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from workerfacing_api.core.model import Environment, WorkerProfile, node_id

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)
_ENDED = sa.text("ended_at IS NOT NULL")
_ACTIVE = sa.text("status IN ('pulled', 'preprocessing', 'running', 'postprocessing')")
_NOT_NOTED = sa.text("aside_until IS NOT NULL AND NOT aside_end_noted")
_NAME = sa.Text().with_variant(sa.String(255), "sqlite")
_NAMES = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_COLUMNS = (
    "environment, cpu_cores, memory, gpu_mem, gpu_model, gpu_archi, groups, older_than, "
    "first_seen_at, last_seen_at, strikes, aside_at, aside_until, aside_reason, aside_end_noted"
)


def _former_node(account: str, row: sa.Row[tuple[object, ...]] | None) -> str:
    """The node a worker row of 0003 becomes: its account and hardware, address unknown."""
    if row is None:
        return node_id(
            WorkerProfile(worker=account, environment=Environment.LOCAL, cpu_cores=0, memory=0)
        )
    return node_id(
        WorkerProfile(
            worker=account,
            environment=Environment(row.environment),
            cpu_cores=int(row.cpu_cores),
            memory=int(row.memory),
            gpu_mem=int(row.gpu_mem),
            gpu_model=row.gpu_model,
            gpu_archi=row.gpu_archi,
        )
    )


def upgrade() -> None:
    conn = op.get_bind()
    op.create_table(
        "nodes",
        sa.Column("node", sa.String(16), nullable=False, comment="core.model.node_id"),
        sa.Column("account", _NAME, nullable=False, comment="the worker's user name"),
        sa.Column(
            "address", _NAME, nullable=False, comment="client address of its pulls ('': unknown)"
        ),
        sa.Column("instance", _NAME, nullable=True, comment="the instance id it sends, if any"),
        sa.Column("environment", sa.String(8), nullable=False),
        sa.Column("cpu_cores", sa.BigInteger(), nullable=False),
        sa.Column("memory", sa.BigInteger(), nullable=False),
        sa.Column("gpu_mem", sa.BigInteger(), nullable=False),
        sa.Column("gpu_model", _NAME, nullable=True),
        sa.Column("gpu_archi", _NAME, nullable=True),
        sa.Column("groups", _NAMES, server_default=sa.text("'[]'"), nullable=False),
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
        sa.Column("claim_seq", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.CheckConstraint("environment IN ('cloud', 'local')", name=op.f("ck_nodes_environment")),
        sa.PrimaryKeyConstraint("node", name=op.f("pk_nodes")),
        comment="the worker nodes seen pulling, and which are set aside",
        postgresql_with={"fillfactor": 70},
    )
    op.create_index("ix_nodes_account", "nodes", ["account"])
    op.create_index(
        "ix_nodes_cool_off_ends",
        "nodes",
        ["aside_until"],
        postgresql_where=_NOT_NOTED,
        sqlite_where=_NOT_NOTED,
    )
    op.add_column(
        "jobs",
        sa.Column(
            "node", sa.String(16), nullable=True, comment="the node holding the job (nodes.node)"
        ),
    )
    op.add_column(
        "job_attempts",
        sa.Column(
            "node", sa.String(16), nullable=True, comment="the node that pulled it (nodes.node)"
        ),
    )

    # Each account's former row, its attempts and its active jobs become one node.
    rows = {r.name: r for r in conn.execute(sa.text(f"SELECT name, {_COLUMNS} FROM workers"))}
    accounts = set(rows) | {
        r[0] for r in conn.execute(sa.text("SELECT DISTINCT worker FROM job_attempts"))
    }
    for account in sorted(accounts):
        node = _former_node(account, rows.get(account))
        if account in rows:
            conn.execute(
                sa.text(
                    f"INSERT INTO nodes (node, account, address, instance, {_COLUMNS}) "
                    f"SELECT :node, name, '', NULL, {_COLUMNS} FROM workers WHERE name = :account"
                ),
                {"node": node, "account": account},
            )
        conn.execute(
            sa.text("UPDATE job_attempts SET node = :node WHERE worker = :account"),
            {"node": node, "account": account},
        )
        conn.execute(
            sa.text(f"UPDATE jobs SET node = :node WHERE worker = :account AND {_ACTIVE.text}"),
            {"node": node, "account": account},
        )
    op.drop_index("ix_job_attempts_worker_ended_at", table_name="job_attempts")
    op.create_index(
        "ix_job_attempts_node_ended_at",
        "job_attempts",
        ["node", "ended_at", "job_id", "attempt"],
        postgresql_where=_ENDED,
        sqlite_where=_ENDED,
    )
    op.drop_index("ix_jobs_active_worker", table_name="jobs")
    op.create_index(
        "ix_jobs_active_worker",
        "jobs",
        ["worker", "node"],
        postgresql_where=_ACTIVE,
        sqlite_where=_ACTIVE,
    )
    op.drop_table("workers")


def downgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("name", _NAME, nullable=False, comment="the worker's user name"),
        sa.Column("environment", sa.String(8), nullable=False),
        sa.Column("cpu_cores", sa.BigInteger(), nullable=False),
        sa.Column("memory", sa.BigInteger(), nullable=False),
        sa.Column("gpu_mem", sa.BigInteger(), nullable=False),
        sa.Column("gpu_model", _NAME, nullable=True),
        sa.Column("gpu_archi", _NAME, nullable=True),
        sa.Column("groups", _NAMES, server_default=sa.text("'[]'"), nullable=False),
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
    # One row per account: its node seen last.
    op.execute(
        f"INSERT INTO workers (name, {_COLUMNS}) SELECT account, {_COLUMNS} FROM nodes n "
        "WHERE NOT EXISTS (SELECT 1 FROM nodes o WHERE o.account = n.account AND "
        "(o.last_seen_at > n.last_seen_at "
        "OR (o.last_seen_at = n.last_seen_at AND o.node > n.node)))"
    )
    op.drop_index("ix_jobs_active_worker", table_name="jobs")
    op.create_index(
        "ix_jobs_active_worker", "jobs", ["worker"], postgresql_where=_ACTIVE, sqlite_where=_ACTIVE
    )
    op.drop_index("ix_job_attempts_node_ended_at", table_name="job_attempts")
    op.create_index(
        "ix_job_attempts_worker_ended_at",
        "job_attempts",
        ["worker", "ended_at", "job_id", "attempt"],
        postgresql_where=_ENDED,
        sqlite_where=_ENDED,
    )
    # Both dialects drop a column in place (SQLite since 3.35): no table is rebuilt, and no
    # attempt, event or upload is deleted through the foreign keys.
    op.execute("ALTER TABLE job_attempts DROP COLUMN node")
    op.execute("ALTER TABLE jobs DROP COLUMN node")
    op.drop_table("nodes")
