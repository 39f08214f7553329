"""Developer sessions: ``nox -s tests``, ``nox -s lint``, ``nox -s typecheck`` (uv environments),
and the container's: ``docker_build``, ``docker_serve``, ``docker_stop``, ``docker_cleanup``
(run only when named; each needs a running Docker engine and says so in one line without one)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv"
nox.options.sessions = ["lint", "typecheck", "tests"]

ROOT = Path(__file__).resolve().parent
IMAGE = "workerfacing-api:dev"
CONTAINER = "workerfacing-api"
VOLUME = "workerfacing-api-data"  # holds /data: the SQLite queue, local files, generated keys
PORT = 8001
# Seconds `docker stop` waits before SIGKILL. Docker's own default is 10 s, less than what
# `serve` may take after SIGTERM: SHUTDOWN_GRACE (default 20 s) for requests in flight, then up
# to 10 s for status deliveries still under way.
STOP_TIMEOUT = 40


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


# -- the container ----------------------------------------------------------------------------


def _docker(*args: str) -> subprocess.CompletedProcess[str]:
    """A docker command run quietly, for a question (does it exist, is it running)."""
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=30, check=False
    )


def _require_engine(session: nox.Session) -> None:
    """Stop the session with one line when no Docker engine answers: the docker CLI alone
    (as on a machine without the daemon) would fail later, in several lines, mid-way."""
    try:
        probe = _docker("info", "--format", "{{.ServerVersion}}")
    except FileNotFoundError:
        reason = "no docker command on PATH"
    except subprocess.TimeoutExpired:
        reason = "no answer within 30 s"
    else:
        if probe.returncode == 0:
            return
        lines = [line.strip() for line in probe.stderr.splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit status {probe.returncode}"
    session.error(f"{session.name} needs a running Docker engine (docker info failed: {reason})")


def _image(session: nox.Session) -> str:
    if len(session.posargs) > 1:
        session.error(f"{session.name} takes at most one argument, the image tag")
    return session.posargs[0] if session.posargs else IMAGE


@nox.session(python=False)
def docker_build(session: nox.Session) -> None:
    """Build the image, tagged workerfacing-api:dev (or: nox -s docker_build -- TAG)."""
    _require_engine(session)
    session.run("docker", "build", "--tag", _image(session), str(ROOT), external=True)


@nox.session(python=False)
def docker_serve(session: nox.Session) -> None:
    """Run the image detached: container workerfacing-api, port 8001, /data in a volume.

    The volume is workerfacing-api-data; the variables of .env are passed when it exists (docker
    reads it literally: one VAR=value a line, no quotes, no `export`). Optional argument: the
    image tag (nox -s docker_serve -- TAG)."""
    _require_engine(session)
    image = _image(session)
    state = _docker("container", "inspect", "--format", "{{.State.Running}}", CONTAINER)
    if state.returncode == 0:
        if state.stdout.strip() == "true":
            session.error(f"container {CONTAINER} is already running; nox -s docker_stop first")
        session.run("docker", "rm", CONTAINER, external=True)  # a stopped one: its name is free
    env_file = ROOT / ".env"
    session.run(
        "docker",
        "run",
        "--detach",
        "--name",
        CONTAINER,
        "--publish",
        f"{PORT}:{PORT}",
        "--volume",
        f"{VOLUME}:/data",
        "--stop-timeout",
        str(STOP_TIMEOUT),
        *(("--env-file", str(env_file)) if env_file.is_file() else ()),
        # After the env file, so that a HOST or PORT in .env cannot break the published port.
        "--env",
        "HOST=0.0.0.0",
        "--env",
        f"PORT={PORT}",
        image,
        external=True,
    )
    session.log(
        f"serving on http://127.0.0.1:{PORT} (health: /health/ready); "
        f"logs: docker logs -f {CONTAINER}; stop: nox -s docker_stop"
    )


@nox.session(python=False)
def docker_stop(session: nox.Session) -> None:
    """Stop container workerfacing-api and remove it; its volume (queue, files) stays.

    SIGTERM first: the service finishes the requests in flight, then exits (SIGKILL after
    40 s)."""
    _require_engine(session)
    if _docker("container", "inspect", CONTAINER).returncode != 0:
        session.log(f"no container {CONTAINER}; nothing to stop")
        return
    session.run("docker", "stop", "--time", str(STOP_TIMEOUT), CONTAINER, external=True)
    session.run("docker", "rm", CONTAINER, external=True)


@nox.session(python=False)
def docker_cleanup(session: nox.Session) -> None:
    """Remove the container, the image and the volume (with the queue and files in it).

    The image is workerfacing-api:dev, or the tag given (nox -s docker_cleanup -- TAG)."""
    _require_engine(session)
    image = _image(session)
    if _docker("container", "inspect", CONTAINER).returncode == 0:
        session.run("docker", "rm", "--force", CONTAINER, external=True)
    if _docker("image", "inspect", image).returncode == 0:
        session.run("docker", "image", "rm", image, external=True)
    if _docker("volume", "inspect", VOLUME).returncode == 0:
        session.run("docker", "volume", "rm", VOLUME, external=True)
    session.log(f"removed what existed of container {CONTAINER}, image {image}, volume {VOLUME}")
