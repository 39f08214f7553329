"""The queue's SQL, kept in the ``.sql`` files beside this module and loaded once, by name.

``common.sql`` holds what PostgreSQL and SQLite say alike; ``postgres.sql`` and ``sqlite.sql``
hold what only one dialect can say. In a file, each statement or piece of a statement stands
whole under a ``-- name: <intent>`` line, with comments saying what it is for and the invariant
it keeps. Comment lines are left out of the loaded text (a ``:name`` in a comment must not become
a parameter). Parameters are written ``:name``.

A ``{name}`` in the text is the piece of that name, from the same dialect's statements (its own
file and ``common.sql``), put in when the dialect is loaded; a piece may be empty (it says, in
comments only, why this dialect needs nothing there). A ``{slot}`` that names no piece is a
literal the caller writes into the text at run time (see ``Statement.text``).
"""

from __future__ import annotations

import functools
import re
from importlib import resources

_HEADER = re.compile(r"^-- name: ([a-z_]+)[ \t]*$", re.MULTILINE)
_BRACES = re.compile(r"\{([a-z_]+)\}")
DIALECTS = ("postgres", "sqlite")


@functools.cache
def _read(file: str) -> dict[str, str]:
    text = resources.files(__name__).joinpath(file).read_text(encoding="utf-8")
    preamble, *named = _HEADER.split(text)
    if _code(preamble):
        raise ValueError(f"{file}: SQL before the first '-- name:' line")
    bodies: dict[str, str] = {}
    for name, body in zip(named[::2], named[1::2], strict=True):
        if name in bodies:
            raise ValueError(f"{file}: {name} is defined twice")
        bodies[name] = _code(body).removesuffix(";")
    return bodies


def _code(body: str) -> str:
    """``body`` without its comment lines and blank lines."""
    lines = (line.rstrip() for line in body.splitlines())
    return "\n".join(line for line in lines if line and not line.lstrip().startswith("--"))


class Statement:
    """A named statement of one dialect, its pieces put in; ``slots`` are the literals it still
    needs (``text`` writes them in)."""

    def __init__(self, name: str, sql: str) -> None:
        self.name = name
        self.sql = sql
        self.slots = frozenset(_BRACES.findall(sql))

    def text(self, literals: dict[str, int] | None = None) -> str:
        """The SQL with each slot replaced by its integer literal; every slot must be given."""
        given = literals or {}
        if given.keys() != self.slots:
            wanted = sorted(self.slots)
            raise KeyError(f"{self.name} takes the literals {wanted}, not {sorted(given)}")
        # Integers only: a literal is written into the SQL, so nothing else may go there.
        return _BRACES.sub(lambda m: str(int(given[m.group(1)])), self.sql)


@functools.cache
def whole(dialect: str) -> tuple[str, ...]:
    """The names of ``dialect`` that are statements: those no other name puts in as a piece."""
    bodies = _read("common.sql") | _read(f"{dialect}.sql")
    pieces = {m for body in bodies.values() for m in _BRACES.findall(body)}
    return tuple(sorted(bodies.keys() - pieces))


@functools.cache
def load(dialect: str) -> dict[str, Statement]:
    """Every statement of ``dialect`` by name, with its pieces put in (a name defined both in
    ``common.sql`` and in the dialect's file is an error: it is written once)."""
    if dialect not in DIALECTS:
        raise ValueError(f"no SQL dialect {dialect!r}")
    common = _read("common.sql")
    own = _read(f"{dialect}.sql")
    if twice := common.keys() & own.keys():
        raise ValueError(f"{dialect}.sql redefines {sorted(twice)} of common.sql")
    bodies = common | own

    @functools.cache
    def expand(name: str, within: tuple[str, ...] = ()) -> str:
        if name in within:
            raise ValueError(f"{dialect}: the piece {name} contains itself ({' > '.join(within)})")

        def piece(match: re.Match[str]) -> str:
            inner = match.group(1)
            if inner not in bodies:
                return match.group(0)  # a literal, written in at run time
            return expand(inner, (*within, name))

        return _BRACES.sub(piece, bodies[name])

    return {name: Statement(name, expand(name)) for name in bodies}
