"""A real ``workerfacing-api serve`` in a subprocess on a free loopback port, configured like
the embedded default in a throwaway directory, plus helpers that act like the DECODE clients."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest
import requests

from tests.bodies import job_document
from tests.conftest import ADMIN_URL, IN_CI, run_blocking
from tests.queues import KINDS, Queue, open_queue
from workerfacing_api.adapters.identity import LocalIssuer

if TYPE_CHECKING:
    from devtools.aws_local import MotoServer
    from playwright.sync_api import Browser


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    """A running service and what a test needs to talk to it like the real clients do."""

    url: str
    root: Path  # working directory of the service
    data_root: Path  # USER_DATA_ROOT_PATH
    api_key: str
    process: subprocess.Popen[bytes]
    log_path: Path
    db_path: Path | None
    _issuer: LocalIssuer
    _next_job_id: list[int] = field(default_factory=lambda: [1000])

    def token(self, username: str = "worker-1", groups: tuple[str, ...] = ("workers",)) -> str:
        return self._issuer.mint(username, list(groups), timedelta(hours=1), datetime.now(UTC))

    def auth(
        self, username: str = "worker-1", groups: tuple[str, ...] = ("workers",)
    ) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(username, groups)}"}

    def job_body(self, job_id: int | None = None, **overrides: Any) -> dict[str, Any]:
        """A ``POST /_jobs`` body shaped exactly like the user-facing API's (local storage)."""
        if job_id is None:
            job_id = self._next_job_id[0]
            self._next_job_id[0] += 1
        user = self.data_root / "alice"
        body = job_document(job_id, root=str(user))
        for path in body["job"]["handler"]["files_down"].values():
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_bytes(b"param: 1\n" if path.endswith(".yaml") else b"\x00calib\x01")
        body.update(overrides)
        return body

    def submit(self, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = requests.post(
            f"{self.url}/_jobs",
            json=body if body is not None else self.job_body(),
            headers={"x-api-key": self.api_key},
            timeout=10,
        )
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result

    def pull(self, username: str = "worker-1", **params: Any) -> dict[str, Any]:
        query = {"limit": 1, "cpu_cores": 8, "memory": 64000, **params}
        response = requests.get(
            f"{self.url}/jobs", params=query, headers=self.auth(username), timeout=10
        )
        assert response.status_code == 200, response.text
        jobs: dict[str, Any] = response.json()
        return jobs

    def put_status(
        self, job_id: str | int, status: str, username: str = "worker-1", **params: Any
    ) -> requests.Response:
        return requests.put(
            f"{self.url}/jobs/{job_id}/status",
            params={"status": status, **params},
            headers=self.auth(username),
            timeout=10,
        )

    def db_snapshot(self) -> list[tuple[Any, ...]]:
        """Every row of every table, to show that a request changed nothing."""
        assert self.db_path is not None
        with sqlite3.connect(self.db_path) as conn:
            rows: list[tuple[Any, ...]] = []
            for table in ("jobs", "job_attempts", "status_events", "job_uploads"):
                rows.extend(
                    (table, *r) for r in conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2")
                )
            return rows


def start_server(
    tmp: Path,
    env: dict[str, str] | None = None,
    *,
    db_url: str | None = None,
    args: tuple[str, ...] = (),
) -> Server:
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    # Processes that share LOCAL_STATE_DIR (given in ``env``) share the local issuer's key.
    state = Path((env or {}).get("LOCAL_STATE_DIR", tmp / ".workerfacing-api"))
    data_root = tmp / "user_data"
    data_root.mkdir(exist_ok=True)
    db_path = None if db_url else state / "queue.db"
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("QUEUE_", "COGNITO_"))},
        "USER_DATA_ROOT_PATH": str(data_root),
        "LOCAL_STATE_DIR": str(state),
        "QUEUE_DB_URL": db_url or f"sqlite:///{db_path}",
        "ACCESS_LOG": "0",
        **(env or {}),
    }
    log_path = tmp / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "workerfacing_api.entrypoints.cli",
                "serve",
                "--port",
                str(port),
                *args,
            ],
            cwd=tmp,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"serve exited early:\n{log_path.read_text()}")
        try:
            if requests.get(f"{url}/", timeout=1).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"serve did not answer within 30 s:\n{log_path.read_text()}")
        time.sleep(0.05)  # not a wait: polls a real process (e2e machinery)
    api_key = (
        full_env.get("INTERNAL_API_KEY_SECRET") or (state / "internal-api-key").read_text().strip()
    )
    return Server(
        url=url,
        root=tmp,
        data_root=data_root,
        api_key=api_key,
        process=process,
        log_path=log_path,
        db_path=db_path,
        _issuer=LocalIssuer(state / "identity.key"),
    )


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(
        env: dict[str, str] | None = None, *, name: str = "srv", db_url: str | None = None
    ) -> Server:
        srv = start_server(tmp_path / name, env, db_url=db_url)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        stop_server(srv)


@pytest.fixture
def server(server_factory: Callable[..., Server]) -> Server:
    """A fresh service on the embedded default (SQLite, local files, local issuer)."""
    return server_factory()


def as_json(response: requests.Response) -> Any:
    assert response.headers.get("content-type", "").startswith("application/json"), response.text
    return json.loads(response.content)


@dataclass
class Upstream:
    """The fake user-facing API (tests/fakes/upstream.py) in its own process."""

    port: int
    api_key: str
    record: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "tests.fakes.upstream"),
                    *("--port", str(self.port), "--api-key", self.api_key),
                    *("--record", str(self.record)),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=Path(__file__).resolve().parents[2],
            )
        deadline = time.monotonic() + 20
        while True:
            try:
                requests.post(f"{self.url}/_control", json={}, timeout=1)
                return
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise RuntimeError(self.log_path.read_text()) from None
                time.sleep(0.05)  # not a wait: polls a real process (e2e machinery)

    def stop(self) -> None:
        """Gone from the network: connections are refused until ``start``."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def set(self, **change: Any) -> None:
        requests.post(f"{self.url}/_control", json=change, timeout=5).raise_for_status()

    def events(self) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines() if line]

    def statuses(self, job_id: int) -> list[str]:
        return [e["status"] for e in self.events() if e["job_id"] == job_id]

    def wait_for(self, predicate: Callable[[], bool], seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"upstream did not see it in {seconds} s: {self.events()}")
            time.sleep(0.05)  # not a wait: polls a real process (e2e machinery)


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Upstream]:
    fake = Upstream(
        port=free_port(),
        api_key="shared-secret",
        record=tmp_path / "upstream-events.jsonl",
        log_path=tmp_path / "upstream.log",
    )
    fake.start()
    yield fake
    fake.stop()


def upstream_env(fake: Upstream, **extra: str) -> dict[str, str]:
    """Service settings that forward to ``fake``."""
    return {
        "USERFACING_API_URL": fake.url,
        "INTERNAL_API_KEY_SECRET": fake.api_key,
        "UPSTREAM_BACKOFF_MAX": "1",
        **extra,
    }


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """A moto server standing in for AWS, shared by the session (tests use their own pools,
    buckets and secrets, named uniquely)."""
    from devtools.aws_local import start_moto

    server = start_moto(tmp_path_factory.mktemp("moto") / "moto.log")
    yield server
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(params=KINDS)
async def queue(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Queue]:
    """Each implementation of the queue port in turn, fresh and empty: the contract suites'."""
    pg = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    async with open_queue(request.param, tmp_path, pg) as q:
        yield q


# -- throwaway PostgreSQL: a cluster of its own, or a database on the machine's server -------


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        if IN_CI:
            pytest.fail("CI=true but no PostgreSQL server binaries (initdb) on this machine")
        pytest.skip("no PostgreSQL server binaries (initdb) to make a throwaway cluster")
    return Path(found[-1]).parent


@dataclass
class Cluster:
    """A throwaway PostgreSQL cluster on a free port, run as the postgres user."""

    bin: Path
    home: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/queue"

    def _run(self, *args: str) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:  # initdb and pg_ctl refuse to run as root
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.home} -c fsync=off "
            "-c max_connections=100"
        )
        self._run("pg_ctl", "-D", str(self.home / "data"), "-o", options, "-l",
                  str(self.home / "server.log"), "-w", "start")  # fmt: skip

    def stop(self, mode: str) -> None:
        self._run("pg_ctl", "-D", str(self.home / "data"), "-m", mode, "-w", "stop")


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    home = Path(tempfile.mkdtemp(prefix="wf-pg-"))
    if os.geteuid() == 0:
        shutil.chown(home, "postgres", "postgres")
    made = Cluster(bin=_pg_bin(), home=home, port=free_port())
    made._run("initdb", "-D", str(home / "data"), "-A", "trust", "-U", "postgres", "--no-sync")
    made.start()
    try:

        async def create() -> None:
            conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{made.port}/postgres")
            try:
                await conn.execute("CREATE DATABASE queue")
            finally:
                await conn.close()

        run_blocking(create())
        yield made
    finally:
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            made.stop("immediate")
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def fresh_database() -> Iterator[str]:
    name = f"wf_faults_{uuid.uuid4().hex[:10]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(ADMIN_URL)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    try:
        run_blocking(admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        if IN_CI:
            pytest.fail(f"CI=true but PostgreSQL is not reachable at {ADMIN_URL} ({exc})")
        pytest.skip(f"PostgreSQL not reachable at {ADMIN_URL} ({exc})")
    try:
        yield ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        run_blocking(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# -- a real browser: Debian's Chromium, driven by Playwright (never a browser download) --------

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture
def browser() -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright  # only the browser tests pay its import

    if not CHROMIUM.exists():
        reason = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
        if IN_CI:
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield launched
        launched.close()
