"""Bringing a database's schema up to date with the packaged Alembic migrations."""

from __future__ import annotations

import functools

from alembic import command
from alembic.config import Config
from alembic.util.exc import CommandError
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from workerfacing_api.adapters.sql.engine import create_engine

SCRIPT_LOCATION = "workerfacing_api.adapters.sql:migrations"


class MigrationFailed(Exception):
    """The schema could not be brought up to date; the message says why, in one line."""


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    return config


@functools.cache
def revisions() -> tuple[str, frozenset[str]]:
    """The revision the packaged migrations lead to, and every revision they know."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    head = script.get_current_head()
    assert head is not None
    return head, frozenset(r.revision for r in script.walk_revisions())


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Apply every pending migration. Several processes may call this at once: on PostgreSQL
    an advisory lock lets one migrate while the others wait, then find nothing to do."""
    async with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            await conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7465721)")
        await conn.run_sync(_upgrade, revision)


async def upgrade_database(url: URL, revision: str = "head") -> None:
    """``upgrade`` through an engine of its own, disposed afterwards. ``MigrationFailed`` when
    the database cannot be used: unreachable, refused, or at a schema these migrations do not
    know (a newer release's)."""
    engine = create_engine(url)
    try:
        await upgrade(engine, revision)
    except (OSError, DBAPIError, CommandError) as exc:
        reason = str(getattr(exc, "orig", exc) or exc).splitlines()[0]
        raise MigrationFailed(reason) from None
    finally:
        await engine.dispose()


async def current(engine: AsyncEngine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    async with engine.connect() as conn:
        return await conn.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision()
        )


def _upgrade(connection: object, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)
