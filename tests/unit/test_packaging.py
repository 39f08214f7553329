"""What the packaging promises the people who run the service: the image's health check, log
format and stop signal; the docker sessions of nox (named only, and one clear line without a
Docker engine); and docs/OPERATIONS.md, whose links, variables and commands must be real."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from workerfacing_api.config import VARIABLES, settings_from
from workerfacing_api.entrypoints.cli import parser

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
NOXFILE = ROOT / "noxfile.py"
OPERATIONS = ROOT / "docs" / "OPERATIONS.md"
DOCKER_SESSIONS = ("docker_build", "docker_serve", "docker_stop", "docker_cleanup")


# -- the image ----------------------------------------------------------------------------------


def _final_stage() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile's last stage, continuation lines joined."""
    logical: list[str] = []
    current = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # also inside a continued instruction, as Docker reads it
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    assert not current, "the Dockerfile ends inside a continued instruction"
    parsed = [(word.upper(), rest.strip()) for word, _, rest in (x.partition(" ") for x in logical)]
    start = max(i for i, (word, _) in enumerate(parsed) if word == "FROM")
    return parsed[start + 1 :]


def _one(instruction: str) -> str:
    found = [rest for word, rest in _final_stage() if word == instruction]
    assert found, f"the image has no {instruction}"
    return found[-1]  # the last one is the one in force


def _image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in _final_stage():
        if word == "ENV":
            for pair in shlex.split(rest):
                name, equals, value = pair.partition("=")
                assert equals, f"ENV {pair!r}: write NAME=value"
                env[name] = value
    return env


def _health_command() -> list[str]:
    _, cmd, command = _one("HEALTHCHECK").partition(" CMD ")
    assert cmd, "HEALTHCHECK without CMD"
    argv = json.loads(command)  # exec form: no shell between Docker and the check
    assert isinstance(argv, list)
    assert all(isinstance(word, str) for word in argv)
    return [str(word) for word in argv]


class _Ready(BaseHTTPRequestHandler):
    """Answers every GET with the server's ``status`` and notes the path asked for."""

    def do_GET(self) -> None:
        server = self.server
        assert isinstance(server, _ReadyServer)
        server.paths.append(self.path)
        self.send_response(server.status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


class _ReadyServer(ThreadingHTTPServer):
    def __init__(self, status: int) -> None:
        super().__init__(("127.0.0.1", 0), _Ready)
        self.status = status
        self.paths: list[str] = []


@pytest.fixture
def service() -> Iterator[_ReadyServer]:
    server = _ReadyServer(200)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("status", "exit_status"), [(200, 0), (503, 1)])
def test_the_health_check_asks_readiness_on_port_and_fails_unless_200(
    service: _ReadyServer, status: int, exit_status: int
) -> None:
    service.status = status
    argv = _health_command()
    assert argv[0] == "python"
    env = {k: v for k, v in os.environ.items() if k.lower() != "no_proxy"}
    env["PORT"] = str(service.server_address[1])
    # A proxy set for the upstream must not catch the check: this one would refuse it.
    env["http_proxy"] = env["HTTP_PROXY"] = "http://127.0.0.1:9"
    result = subprocess.run(
        [sys.executable, *argv[1:]], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == exit_status, result.stderr
    assert service.paths == ["/health/ready"]


def test_the_image_logs_json_and_its_environment_is_a_valid_configuration() -> None:
    env = _image_env()
    assert env["LOG_FORMAT"] == "json"
    service_variables = {name: value for name, value in env.items() if name in VARIABLES}
    # Anything else the image sets must be for Python or the shell; a misspelt variable of
    # the service would be ignored silently.
    assert set(env) - set(service_variables) <= {"PATH", "PYTHONUNBUFFERED"}
    settings = settings_from(service_variables)
    assert settings.log_format == "json"
    assert settings.host == "0.0.0.0"  # noqa: S104 (a container listens on every interface)
    assert settings.port == int(env["PORT"])
    assert settings.web_concurrency == 1


def test_the_image_stops_on_sigterm_and_serve_gets_the_signal_itself() -> None:
    assert _one("STOPSIGNAL") == "SIGTERM"
    # Exec form: with a shell in between, SIGTERM would reach /bin/sh, not serve.
    entrypoint = json.loads(_one("ENTRYPOINT"))
    assert json.loads(_one("CMD")) == ["serve"]  # serve reads WEB_CONCURRENCY itself
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert entrypoint == ["workerfacing-api"]
    assert "workerfacing-api" in scripts
    assert _one("EXPOSE") == _image_env()["PORT"]


# -- nox ----------------------------------------------------------------------------------------


def _nox(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nox", "-f", str(NOXFILE), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_nox_lists_the_docker_sessions_but_runs_them_only_when_named() -> None:
    listing = _nox("-l")
    assert listing.returncode == 0, listing.stderr
    listed = re.finditer(r"^(?P<mark>[*-]) (?P<name>\w+)", listing.stdout, re.MULTILINE)
    marks = {m["name"]: m["mark"] for m in listed}
    assert {name: marks.get(name) for name in DOCKER_SESSIONS} == dict.fromkeys(
        DOCKER_SESSIONS, "-"
    )
    assert {name: marks.get(name) for name in ("lint", "typecheck", "tests")} == dict.fromkeys(
        ("lint", "typecheck", "tests"), "*"
    )


@pytest.fixture(scope="module")
def no_docker_engine() -> None:
    try:
        probe = subprocess.run(["docker", "info"], capture_output=True, timeout=20, check=False)
    except FileNotFoundError:
        return  # no docker CLI at all: the sessions must say so just as clearly
    except subprocess.TimeoutExpired:
        pytest.skip("docker info does not answer within 20 s; the sessions would wait as long")
    if probe.returncode == 0:
        pytest.skip("a Docker engine answers here: the docker sessions would really run")


@pytest.mark.usefixtures("no_docker_engine")
@pytest.mark.parametrize("session", DOCKER_SESSIONS)
def test_a_docker_session_without_an_engine_fails_with_one_clear_line(session: str) -> None:
    result = _nox("-s", session)
    assert result.returncode != 0
    lines = (result.stdout + result.stderr).splitlines()
    about_engine = [line for line in lines if "Docker engine" in line]
    assert len(about_engine) == 1, lines
    assert f"{session} needs a running Docker engine (docker info failed: " in about_engine[0]
    assert not [line for line in lines if line.startswith("nox > docker ")], "it ran docker"


# -- docs/OPERATIONS.md -------------------------------------------------------------------------


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(markdown: Path) -> set[str]:
    text = markdown.read_text()
    return {_slug(m[1]) for m in re.finditer(r"^#{1,6} (.+)$", text, re.MULTILINE)}


def test_every_link_in_operations_md_reaches_a_file_of_the_repository() -> None:
    links = re.findall(r"\]\(([^)\s]+)\)", OPERATIONS.read_text())
    local = [link for link in links if not re.match(r"[a-z]+:", link)]
    assert len(local) >= 5
    broken = []
    for link in local:
        target, _, anchor = link.partition("#")
        path = (OPERATIONS.parent / target).resolve() if target else OPERATIONS
        missing = not path.is_relative_to(ROOT) or not path.exists()
        if missing or (anchor and path.suffix == ".md" and anchor not in _anchors(path)):
            broken.append(link)
    assert broken == []


# Upper-case words in backquotes that name no variable of this service.
_NOT_OUR_VARIABLES = {"ENTRYPOINT", "HEALTHCHECK", "INFO", "WARNING", "ERROR"}
LOAD_SCRIPT = ROOT / "benchmarks" / "load.py"


def test_every_variable_named_in_operations_md_is_one_the_service_reads() -> None:
    spans = re.findall(r"`([^`\n]+)`", OPERATIONS.read_text())
    named = {
        m[1]
        for span in spans
        if (m := re.fullmatch(r"([A-Z][A-Z0-9_]{2,})(=\S*)?", span)) is not None
    }
    assert len(named) >= 20
    # The benchmark's own variables are read by the benchmark.
    benchmark = LOAD_SCRIPT.read_text()
    unknown = {name for name in named - set(VARIABLES) if f'"{name}"' not in benchmark}
    assert sorted(unknown - _NOT_OUR_VARIABLES) == []


_PLACEHOLDERS = {"ID": "17", "ID…": "17", "JOB_ID": "4", "NAME": "gpu-box-1", "N": "2"}


def _documented_commands() -> list[list[str]]:
    text = OPERATIONS.read_text()
    found = re.findall(r"`workerfacing-api ([^`\n]+)`", text)
    found += re.findall(r'"workerfacing-api ([^"\n]+)"', text)  # inside an ECS Exec example
    return [[_PLACEHOLDERS.get(word, word) for word in line.split()] for line in found]


def test_every_command_in_operations_md_is_one_the_cli_takes() -> None:
    commands = _documented_commands()
    assert len(commands) >= 15
    refused = []
    for words in commands:
        try:
            parser().parse_args(words)
        except SystemExit:
            refused.append(" ".join(words))
    assert refused == []
