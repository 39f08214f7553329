"""Correct under concurrency (ARCHITECTURE §6) on PostgreSQL, with real processes: several ``serve``
processes and many workers pulling from one database hand every job out exactly once, and
several ``sweep --once`` processes at the same time re-queue every timed-out job exactly once.

Each test gets a throwaway database of its own (created beside the session's ``postgres_url``,
which decides whether PostgreSQL tests skip or, with ``CI=true``, fail), so no other test's rows
can blur the counts. Every request and every subprocess has a bounded timeout; every process
started here is stopped, also when an assertion fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import asyncpg
import pytest
from sqlalchemy.engine import make_url

from tests.bodies import job_document
from tests.conftest import ADMIN_URL, run_blocking
from tests.integration.conftest import Server, start_server, stop_server
from workerfacing_api.adapters.identity import LocalIssuer
from workerfacing_api.adapters.sql import create_engine, database_url, upgrade

# Real processes on 127.0.0.1 (serve, the fake upstream, moto): docs/TESTING.md.
pytestmark = pytest.mark.e2e

T = TypeVar("T")

API_KEY = "concurrency-test-key"
PULL = "/jobs?limit=1&cpu_cores=8&memory=64000"
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=20)
# A bound on a whole phase (submitting, draining), far above what it takes on 2 cores (~10 s):
# a hang fails the test instead of stalling CI.
PHASE_SECONDS = 120.0
SUBPROCESS_SECONDS = 60.0
SWEEP_LINE = re.compile(r"re-queued (\d+) job\(s\), failed (\d+) job\(s\)")


# -- a database of the test's own --------------------------------------------------------------


def _admin_dsn() -> str:
    return make_url(ADMIN_URL).set(drivername="postgresql").render_as_string(hide_password=False)


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(_admin_dsn(), timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _migrate(url: str) -> None:
    engine = create_engine(database_url(url))
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


@pytest.fixture
def own_database(postgres_url: str) -> Iterator[str]:
    """A fresh, migrated database for this test alone, dropped afterwards. Depends on
    ``postgres_url`` for its reachability check (skip locally, fail in CI) and its marker."""
    name = f"wf_conc_{uuid.uuid4().hex[:12]}"
    run_blocking(_admin(f'CREATE DATABASE "{name}"'))
    url = make_url(_admin_dsn()).set(database=name).render_as_string(hide_password=False)
    try:
        run_blocking(_migrate(url))
        yield url
    finally:
        run_blocking(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def query(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            rows: list[asyncpg.Record] = await conn.fetch(sql, *args, timeout=30)
            return rows
        finally:
            await conn.close()

    return run_blocking(run())


# -- the services ------------------------------------------------------------------------------


def service_env(shared: Path, **extra: str) -> dict[str, str]:
    """One state directory (identity key) and one internal key for every process, so a token or
    a submission is accepted by any of them; no upstream; no sweeps in the servers' background
    (the sweep test runs its own sweepers)."""
    return {
        "LOCAL_STATE_DIR": str(shared / "state"),
        "USER_DATA_ROOT_PATH": str(shared / "user_data"),
        "INTERNAL_API_KEY_SECRET": API_KEY,
        "USERFACING_API_URL": "",  # empty is unset: nothing forwarded, whatever the CI env holds
        "SWEEP_INTERVAL": "3600",
        "LOG_LEVEL": "WARNING",
        **extra,
    }


@contextmanager
def running_servers(tmp: Path, db_url: str, count: int, **extra: str) -> Iterator[list[Server]]:
    """``count`` real ``serve`` processes on ``db_url``, started in parallel, all stopped at the
    end (also when one of them fails to start); ``extra``: more of their variables."""
    env = service_env(tmp, **extra)
    (tmp / "user_data").mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=count) as pool:
        futures = [
            pool.submit(start_server, tmp / f"srv{i}", env, db_url=db_url) for i in range(count)
        ]
    started: list[Server] = []
    errors: list[BaseException] = []
    for future in futures:
        error = future.exception()
        if error is None:
            started.append(future.result())
        else:
            errors.append(error)
    try:
        if errors:
            raise errors[0]
        yield started
    finally:
        for server in started:
            stop_server(server)


def worker_tokens(tmp: Path, prefix: str, count: int) -> dict[str, str]:
    """``count`` distinct workers (names zero-padded, so none is a substring of another) and
    their tokens, minted with the key the servers share (``Server.token`` would use a per-server
    directory)."""
    issuer = LocalIssuer(tmp / "state" / "identity.key")
    now = datetime.now(UTC)
    names = [f"{prefix}-{i:02d}" for i in range(count)]
    return {name: issuer.mint(name, ["workers"], timedelta(hours=1), now) for name in names}


def job_body(data_root: Path, job_id: int) -> dict[str, Any]:
    """A ``POST /_jobs`` body shaped like the user-facing API's (local storage)."""
    return job_document(job_id, root=str(data_root / "alice"))


# -- clients -----------------------------------------------------------------------------------


@dataclass
class Record:
    """What the clients saw: every answer that was not the expected one, and the hand-outs."""

    unexpected: list[str] = field(default_factory=list)
    server_errors: list[str] = field(default_factory=list)
    handed: list[tuple[str, str]] = field(default_factory=list)  # (queue id, worker)

    def check(self, method: str, url: str, status: int, expected: int, body: str) -> bool:
        if status == expected:
            return True
        line = f"{method} {url} -> {status}: {body[:300]}"
        self.unexpected.append(line)
        if status >= 500:
            self.server_errors.append(line)
        return False


async def bounded(coro: Awaitable[T], what: str) -> T:
    try:
        return await asyncio.wait_for(coro, PHASE_SECONDS)
    except TimeoutError:
        raise AssertionError(f"{what} did not end within {PHASE_SECONDS:.0f} s") from None


async def submit_all(servers: list[Server], bodies: list[dict[str, Any]], record: Record) -> None:
    """``POST /_jobs`` for every body, 32 at a time, spread over the servers."""
    limit = asyncio.Semaphore(32)
    headers = {"x-api-key": API_KEY, "content-type": "application/json"}
    connector = aiohttp.TCPConnector(limit=32)
    async with aiohttp.ClientSession(connector=connector, timeout=REQUEST_TIMEOUT) as session:

        async def submit(index: int, body: dict[str, Any]) -> None:
            url = f"{servers[index % len(servers)].url}/_jobs"
            async with (
                limit,
                session.post(url, data=json.dumps(body), headers=headers) as response,
            ):
                record.check("POST", url, response.status, 201, await response.text())

        await bounded(
            asyncio.gather(*(submit(i, body) for i, body in enumerate(bodies))), "submitting"
        )


WorkerStep = Callable[[aiohttp.ClientSession, str, str], Awaitable[None]]


async def run_workers(
    servers: list[Server],
    tokens: dict[str, str],
    record: Record,
    pull: str,
    after_pull: WorkerStep | None,
) -> None:
    """One task per worker (a distinct user with its own keep-alive connection, bound to one
    server, round-robin); each pulls with ``pull`` until the answer is empty, and runs
    ``after_pull(session, server url, queue id)`` for every job it got."""

    async def worker(index: int, username: str, bearer: str) -> None:
        base = servers[index % len(servers)].url
        headers = {"Authorization": f"Bearer {bearer}"}
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(
            connector=connector, timeout=REQUEST_TIMEOUT, headers=headers
        ) as session:
            while True:
                async with session.get(base + pull) as response:
                    body = await response.text()
                    if not record.check("GET", base + pull, response.status, 200, body):
                        return  # reported; a worker that loops on errors would only add noise
                jobs: dict[str, Any] = json.loads(body)
                if not jobs:
                    return  # the queue is drained (for this worker)
                for queue_id in jobs:
                    record.handed.append((queue_id, username))
                    if after_pull is not None:
                        await after_pull(session, base, queue_id)

    await bounded(
        asyncio.gather(
            *(worker(i, name, bearer) for i, (name, bearer) in enumerate(tokens.items()))
        ),
        "the workers",
    )


def put_statuses(record: Record, *statuses: str) -> WorkerStep:
    async def step(session: aiohttp.ClientSession, base: str, queue_id: str) -> None:
        for status in statuses:
            url = f"{base}/jobs/{queue_id}/status?status={status}"
            async with session.put(url) as response:
                record.check("PUT", url, response.status, 204, await response.text())

    return step


def server_logs(servers: list[Server]) -> str:
    return "\n".join(f"--- {s.log_path}\n{s.log_path.read_text()[-3000:]}" for s in servers)


# -- 1. many workers, several API processes ----------------------------------------------------

JOBS = 3000
WORKERS = 64
PROCESSES = 3


@pytest.mark.slow
def test_three_servers_and_64_workers_hand_out_and_finish_each_job_once(
    own_database: str, tmp_path: Path
) -> None:
    record = Record()
    with running_servers(tmp_path, own_database, PROCESSES) as servers:
        bodies = [job_body(tmp_path / "user_data", job_id) for job_id in range(1, JOBS + 1)]
        asyncio.run(submit_all(servers, bodies, record))
        assert record.unexpected == [], record.unexpected[:10]
        queued = query(own_database, "SELECT count(*) AS n FROM jobs WHERE status = 'queued'")
        assert queued[0]["n"] == JOBS

        tokens = worker_tokens(tmp_path, "worker", WORKERS)
        started = time.monotonic()
        asyncio.run(
            run_workers(servers, tokens, record, PULL, put_statuses(record, "running", "finished"))
        )
        elapsed = time.monotonic() - started
        logs = server_logs(servers)

    # Not a timing assertion (docs/TESTING.md): shown with -s, to see that the test stays short.
    print(f"{JOBS} job cycles by {WORKERS} workers over {PROCESSES} processes in {elapsed:.1f} s")
    assert record.server_errors == [], f"{record.server_errors[:10]}\n{logs}"
    assert record.unexpected == [], record.unexpected[:10]

    times_handed = Counter(queue_id for queue_id, _ in record.handed)
    duplicates = sorted(q for q, n in times_handed.items() if n > 1)
    assert duplicates == [], f"handed out more than once: {duplicates[:20]}"
    assert len(times_handed) == JOBS
    handed_to = dict(record.handed)

    jobs = query(own_database, "SELECT id, status, attempt, worker FROM jobs ORDER BY id")
    assert {str(r["id"]) for r in jobs} == set(handed_to)
    wrong = [dict(r) for r in jobs if (r["status"], r["attempt"]) != ("finished", 1)]
    assert wrong == [], wrong[:10]
    assert [r["worker"] for r in jobs] == [handed_to[str(r["id"])] for r in jobs]

    attempts = query(
        own_database,
        "SELECT job_id, count(*) AS n, min(worker) AS worker, min(attempt) AS attempt "
        "FROM job_attempts GROUP BY job_id ORDER BY job_id",
    )
    assert len(attempts) == JOBS
    assert [r["n"] for r in attempts if r["n"] != 1] == []
    assert {(str(r["job_id"]), r["worker"], r["attempt"]) for r in attempts} == {
        (queue_id, worker, 1) for queue_id, worker in record.handed
    }


# -- 2. concurrent sweepers --------------------------------------------------------------------

SILENT_JOBS = 500
SWEEPERS = 3


def run_sweepers(tmp: Path, db_url: str, round_name: str) -> list[tuple[int, int]]:
    """``SWEEPERS`` ``sweep --once`` processes started together; their (re-queued, failed)."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("QUEUE_", "COGNITO_"))},
        **service_env(tmp),
        "QUEUE_DB_URL": db_url,
        "TIMEOUT_FAILURE": "60",
        "MAX_RETRIES": "3",
    }
    processes: list[subprocess.Popen[str]] = []
    outputs: list[tuple[str, str, int]] = []
    try:
        for i in range(SWEEPERS):
            cwd = tmp / f"{round_name}-{i}"
            cwd.mkdir()
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "workerfacing_api.entrypoints.cli", "sweep", "--once"],
                    cwd=cwd,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        deadline = time.monotonic() + SUBPROCESS_SECONDS
        for process in processes:
            try:
                out, err = process.communicate(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise AssertionError(
                    f"sweep --once did not end within {SUBPROCESS_SECONDS:.0f} s"
                ) from None
            outputs.append((out, err, process.returncode))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    counts: list[tuple[int, int]] = []
    for out, err, code in outputs:
        assert code == 0, err
        found = SWEEP_LINE.findall(out)
        assert len(found) == 1, out + err
        counts.append((int(found[0][0]), int(found[0][1])))
    return counts


@pytest.mark.slow
def test_three_concurrent_sweepers_requeue_each_timed_out_job_once(
    own_database: str, tmp_path: Path
) -> None:
    record = Record()
    # Ten workers each take their share of the 500 jobs (up to 50 a pull, as many as they like
    # to hold); every other job is moved on to ``running``, so the sweepers meet jobs in more
    # than one active state.
    with running_servers(tmp_path, own_database, 1, MAX_JOBS_PER_NODE="1000") as servers:
        bodies = [job_body(tmp_path / "user_data", job_id) for job_id in range(1, SILENT_JOBS + 1)]
        asyncio.run(submit_all(servers, bodies, record))
        tokens = worker_tokens(tmp_path, "victim", 10)

        running = put_statuses(record, "running")

        async def every_other(session: aiohttp.ClientSession, base: str, queue_id: str) -> None:
            if int(queue_id) % 2 == 0:
                await running(session, base, queue_id)

        asyncio.run(
            run_workers(
                servers, tokens, record, "/jobs?limit=50&cpu_cores=8&memory=64000", every_other
            )
        )
    # The server is stopped: only the sweepers below touch the jobs from here on.
    assert record.unexpected == [], record.unexpected[:10]
    assert len(record.handed) == SILENT_JOBS
    handed_to = dict(record.handed)
    assert len(handed_to) == SILENT_JOBS

    # Every worker went silent an hour ago (TIMEOUT_FAILURE is 60 s).
    query(own_database, "UPDATE jobs SET last_heartbeat_at = now() - interval '1 hour'")

    first = run_sweepers(tmp_path, own_database, "round1")
    print(f"re-queued per sweeper: {[n for n, _ in first]}")
    assert sum(n for n, _ in first) == SILENT_JOBS, first
    assert sum(f for _, f in first) == 0, first

    jobs = query(
        own_database,
        "SELECT id, status, num_retries, attempt, worker, runtime_details FROM jobs ORDER BY id",
    )
    assert {str(r["id"]) for r in jobs} == set(handed_to)
    wrong = [
        dict(r)
        for r in jobs
        if (r["status"], r["num_retries"], r["attempt"], r["worker"]) != ("queued", 1, 1, None)
    ]
    assert wrong == [], wrong[:10]
    # The detail names the timeout and the one worker that had the job, and no other.
    for r in jobs:
        details = r["runtime_details"] or ""
        assert "timeout" in details, details
        assert details.endswith(f"workers tried: {handed_to[str(r['id'])]}"), details
    attempts = query(own_database, "SELECT job_id, count(*) AS n FROM job_attempts GROUP BY job_id")
    assert len(attempts) == SILENT_JOBS
    assert all(r["n"] == 1 for r in attempts)

    # Nothing is silent any more: a second round of sweepers finds nothing to do.
    second = run_sweepers(tmp_path, own_database, "round2")
    assert second == [(0, 0)] * SWEEPERS, second
    again = query(
        own_database,
        "SELECT count(*) AS n FROM jobs WHERE status = 'queued' AND num_retries = 1",
    )
    assert again[0]["n"] == SILENT_JOBS
