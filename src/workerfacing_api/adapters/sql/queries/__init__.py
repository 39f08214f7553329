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

_HEADER = re.compile(r"^-- name: ([a-z_]+)[ \t]*$", re.MULTILINE)
_SLOT = re.compile(r"\{[a-z_]+\}")


@functools.cache
def _read(file: str) -> dict[str, str]:
    text = resources.files(__name__).joinpath(file).read_text(encoding="utf-8")
    preamble, *named = _HEADER.split(text)
    if _code(preamble):
        raise ValueError(f"{file}: SQL before the first '-- name:' line")
    statements: dict[str, str] = {}
    for name, body in zip(named[::2], named[1::2], strict=True):
        if name in statements or not _code(body):
            raise ValueError(f"{file}: {name} is defined twice or is empty")
        statements[name] = _code(body).removesuffix(";")
    return statements


def _code(body: str) -> str:
    """``body`` without its comment lines and blank lines."""
    lines = (line.rstrip() for line in body.splitlines())
    return "\n".join(line for line in lines if line and not line.lstrip().startswith("--"))


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
