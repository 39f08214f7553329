"""The queue's SQLite files are the service's alone (docs/RELIABILITY.md, finding 6): the database,
its write-ahead log and its shared-memory index hold every job's paths, worker names and runtime
details, so they are created readable by the service's user only (0600), as the key files are,
whatever the process's umask; files an older release left readable by others are narrowed at
start."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.inprocess import assemble, serving
from workerfacing_api.container import migrate

SUFFIXES = ("", "-wal", "-shm")


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    """The umask of most shells and services (022): what a file gets unless it asks."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def modes(database: Path) -> dict[str, str]:
    """The permission bits of the database's files that exist, by suffix."""
    found = {}
    for suffix in SUFFIXES:
        path = Path(f"{database}{suffix}")
        if path.exists():
            found[suffix or ".db"] = oct(stat.S_IMODE(path.stat().st_mode))
    return found


async def test_a_new_queue_database_and_its_wal_and_shm_are_0600(tmp_path: Path) -> None:
    database = tmp_path / "state" / "queue.db"
    assembled = assemble(tmp_path, database=f"sqlite:///{database}")
    await migrate(assembled.container)  # creates the file, as `serve` does at start
    assert modes(database)[".db"] == "0o600"
    async with serving(assembled) as api:
        await api.submit(1)  # a row written: the WAL and its index exist now
        (queue_id,) = await api.pull()
        assert (await api.put_status(queue_id, "running")).status_code == 204
        assert modes(database) == {".db": "0o600", "-wal": "0o600", "-shm": "0o600"}


async def test_files_an_older_release_left_0644_are_narrowed_to_0600_at_start(
    tmp_path: Path,
) -> None:
    database = tmp_path / "state" / "queue.db"
    assembled = assemble(tmp_path, database=f"sqlite:///{database}")
    await migrate(assembled.container)
    async with serving(assembled) as api:
        await api.submit(1)
    for suffix in SUFFIXES:  # as a release before this one left them (those still there)
        path = Path(f"{database}{suffix}")
        if path.exists():
            path.chmod(0o644)
    assert set(modes(database).values()) == {"0o644"}

    again = assemble(tmp_path, database=f"sqlite:///{database}")
    await migrate(again.container)
    async with serving(again) as api:
        await api.submit(2)
        assert modes(database) == {".db": "0o600", "-wal": "0o600", "-shm": "0o600"}
