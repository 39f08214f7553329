"""Developer sessions: ``nox -s tests``, ``nox -s lint``, ``nox -s typecheck`` (uv environments)."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "uv"
nox.options.sessions = ["lint", "typecheck", "tests"]


def _sync(session: nox.Session) -> None:
    session.run_install(
        "uv",
        "sync",
        "--locked",
        env={"UV_PROJECT_ENVIRONMENT": session.virtualenv.location},
        external=True,
    )


@nox.session(python="3.11")
def tests(session: nox.Session) -> None:
    """The test suite (PostgreSQL tests skip without a server, except with CI=true)."""
    _sync(session)
    session.run("pytest", *session.posargs)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    _sync(session)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("lint-imports", "--no-cache")


@nox.session(python="3.11")
def typecheck(session: nox.Session) -> None:
    _sync(session)
    session.run("mypy", "--strict")
