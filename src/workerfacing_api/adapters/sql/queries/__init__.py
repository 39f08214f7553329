"""The queue's SQL, kept in the ``.sql`` files beside this module and loaded once, by name.

``common.sql`` holds what PostgreSQL and SQLite run alike; ``postgres.sql`` and ``sqlite.sql``
hold what only one dialect can say. In a file, each statement stands whole under a
``-- name: <intent>`` line, with comments saying what it is for and the invariant it keeps.
Comment lines are left out of the loaded text (a ``:name`` in a comment must not become a
parameter). Parameters are written ``:name``. A few statements carry a slot, ``{name}``, that
the adapter fills with another named piece (the comment of the statement says which); ``fill``
refuses to leave one empty.
"""

from __future__ import annotations

import functools
import re
from importlib import resources

_NAME = re.compile(r"^-- name: ([a-z_]+)\s*$")
_SLOT = re.compile(r"\{[a-z_]+\}")


@functools.cache
def _read(file: str) -> dict[str, str]:
    statements: dict[str, str] = {}
    name: str | None = None
    lines: list[str] = []
    text = resources.files(__name__).joinpath(file).read_text(encoding="utf-8")
    for line in [*text.splitlines(), "-- name: end_of_file"]:
        header = _NAME.match(line)
        if header is None:
            if not line.lstrip().startswith("--") and line.strip():
                lines.append(line.rstrip())
            continue
        if name is not None:
            if name in statements or not lines:
                raise ValueError(f"{file}: {name} is defined twice or is empty")
            statements[name] = "\n".join(lines).removesuffix(";")
        elif lines:
            raise ValueError(f"{file}: SQL before the first '-- name:' line")
        name, lines = header.group(1), []
    return statements


def load(dialect: str | None = None) -> dict[str, str]:
    """The statements of ``common.sql``, and of ``<dialect>.sql`` when given, by name (a name in
    both is an error: a statement is written once)."""
    common = _read("common.sql")
    if dialect is None:
        return common
    own = _read(f"{dialect}.sql")
    if twice := common.keys() & own.keys():
        raise ValueError(f"{dialect}.sql redefines {sorted(twice)} of common.sql")
    return common | own


def fill(statement: str, **slots: str) -> str:
    """``statement`` with each ``{slot}`` replaced; every slot it has must be given."""
    for slot, value in slots.items():
        marker = "{" + slot + "}"
        if marker not in statement:
            raise KeyError(f"no slot {marker} in the statement")
        statement = statement.replace(marker, value)
    if left := _SLOT.search(statement):
        raise KeyError(f"slot {left.group()} left unfilled")
    return statement
