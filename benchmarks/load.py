"""Load benchmark of the worker-facing API, on loopback only, bounded in count and time.

Starts real ``workerfacing-api serve`` processes on a fresh database (SQLite or a throwaway
PostgreSQL database), a minimal status-forwarding upstream stub, fills the queue, then lets W
concurrent workers (one aiohttp client process) run job cycles: a cycle is a pull plus two status
updates (running, finished); every change is forwarded upstream (3 calls per cycle). Prints job
cycles/s, status updates/s, p50/p99 latencies, the CPU the API processes spent per cycle, and
duplicate hand-outs (must be 0).

On PostgreSQL it also reports what a cycle costs the database: commits and rows written per cycle
(``pg_stat_database``) and, with ``--pg-cluster`` (a throwaway cluster of its own that loads
``pg_stat_statements``, durable commits as in production), statements, buffers dirtied and
written, and WAL records and bytes per cycle; ``--statements`` lists the statements a cycle runs
most.

With ``--pull-latency`` it measures instead the latency of a pull that finds nothing, with 100,
10 000 and 100 000 queued jobs that do not fit the worker.

    uv run python benchmarks/load.py --db postgres --processes 3 --workers 64
    uv run python benchmarks/load.py --db postgres --processes 1 --workers 64 --pg-cluster
    uv run python benchmarks/load.py --pull-latency --db postgres
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import uvloop

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from devtools.aws_local import MotoServer, UserPool, create_user_pool, start_moto  # noqa: E402

from workerfacing_api.adapters.identity import LocalIssuer  # noqa: E402

ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
API_KEY = "bench-key"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def postgres_cpu() -> float:
    """CPU seconds of every PostgreSQL server process (this machine's server, loopback)."""
    total = 0.0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "comm").read_text().strip() != "postgres":
                continue
            total += cpu_seconds(int(proc.name))
        except (OSError, ValueError):
            continue  # the process ended meanwhile
    return total


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- the rig -------------------------------------------------------------------------------------


@contextmanager
def database(kind: str, workdir: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{workdir / 'queue.db'}"
        return
    name = f"wf_bench_{uuid.uuid4().hex[:10]}"
    admin = ADMIN_URL

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.rsplit("/", 1)[0] + f"/{name}"
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@dataclass
class Rig:
    workdir: Path
    db_url: str
    processes: int
    # The interpreter of the serve processes: another checkout's venv measures that checkout
    # with this very script (before and after, side by side, with one instrument).
    python: str = sys.executable
    cognito: bool = False
    env: dict[str, str] = field(default_factory=dict)
    servers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    stub: subprocess.Popen[bytes] | None = None
    stub_url: str = ""
    closed_port: socket.socket | None = None
    moto: MotoServer | None = None
    pool: UserPool | None = None

    def start(
        self, *, upstream: bool = True, upstream_down: bool = False, upstream_delay: float = 0.0
    ) -> None:
        state = self.workdir / "state"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("QUEUE_", "COGNITO_"))},
            "QUEUE_DB_URL": self.db_url,
            "LOCAL_STATE_DIR": str(state),
            "USER_DATA_ROOT_PATH": str(self.workdir / "data"),
            "INTERNAL_API_KEY_SECRET": API_KEY,
            # The service logs each request by default; production sites that keep the load
            # balancer's log turn it off. BENCH_ACCESS_LOG=1 measures with it.
            "ACCESS_LOG": os.environ.get("BENCH_ACCESS_LOG", "0"),
            "LOG_LEVEL": "INFO" if os.environ.get("BENCH_ACCESS_LOG") == "1" else "WARNING",
            "SWEEP_INTERVAL": "3600",
        }
        if upstream_down:
            # A port held but not listening: every delivery is refused, as when the upstream is
            # down (and no other process of the rig can be given this port meanwhile).
            self.closed_port = socket.socket()
            self.closed_port.bind(("127.0.0.1", 0))
            self.env["USERFACING_API_URL"] = f"http://127.0.0.1:{self.closed_port.getsockname()[1]}"
        elif upstream:
            port = free_port()
            self.stub = subprocess.Popen(
                [
                    sys.executable,
                    str(ROOT / "benchmarks" / "upstream_stub.py"),
                    str(port),
                    *(("--delay", str(upstream_delay)) if upstream_delay else ()),
                ]
            )
            self.stub_url = f"http://127.0.0.1:{port}"
            self.env["USERFACING_API_URL"] = self.stub_url
        if self.cognito:
            # Workers sign in to a Cognito user pool on a moto server, as in production.
            self.moto = start_moto(self.workdir / "moto.log")
            self.pool = create_user_pool(self.moto)
            self.env |= {
                **self.moto.env(),
                "COGNITO_USER_POOL_ID": self.pool.pool_id,
                "COGNITO_CLIENT_ID": self.pool.client_id,
                "COGNITO_REGION": self.pool.region,
            }
        cli = [self.python, "-m", "workerfacing_api.entrypoints.cli"]
        subprocess.run([*cli, "db", "upgrade"], env=self.env, check=True, capture_output=True)
        for _ in range(self.processes):
            port = free_port()
            self.servers.append(
                subprocess.Popen(
                    [*cli, "serve", "--port", str(port)],
                    env=self.env,
                    cwd=self.workdir,
                    stdout=subprocess.DEVNULL,
                    stderr=(self.workdir / f"serve-{port}.log").open("wb"),
                )
            )
            self.urls.append(f"http://127.0.0.1:{port}")
        asyncio.run(self._wait_ready())

    async def _wait_ready(self) -> None:
        async with aiohttp.ClientSession() as session:
            for url in [*self.urls, *([self.stub_url + "/_count"] if self.stub else [])]:
                deadline = time.monotonic() + 60
                while True:
                    try:
                        async with session.get(url) as response:
                            if response.status == 200:
                                break
                    except aiohttp.ClientError:
                        pass
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{url} did not come up")
                    await asyncio.sleep(0.1)

    def tokens(self, count: int) -> list[str]:
        if self.pool is not None:
            tokens = []
            for i in range(count):
                self.pool.add_user(f"w{i}")
                tokens.append(self.pool.sign_in(f"w{i}")["IdToken"])
            return tokens
        issuer = LocalIssuer(self.workdir / "state" / "identity.key")
        now = datetime.now(UTC)
        return [issuer.mint(f"w{i}", ["workers"], timedelta(hours=1), now) for i in range(count)]

    def api_cpu(self) -> float:
        return sum(cpu_seconds(p.pid) for p in self.servers)

    def stop(self) -> None:
        if self.closed_port is not None:
            self.closed_port.close()
        others = [p for p in (self.stub, self.moto.process if self.moto else None) if p]
        for process in [*self.servers, *others]:
            process.terminate()
        for process in [*self.servers, *others]:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def job_body(job_id: int, memory: int | None = None) -> dict[str, Any]:
    return {
        "job": {
            "app": {"cmd": ["/docker/entrypoint.sh", "--train"], "env": {}},
            "handler": {
                "image_url": "decode:v0_10_1",
                "image_name": "decode",
                "image_version": "v0_10_1",
                "entrypoint": "train",
                "files_down": {"config/param.yaml": f"/data/alice/config/{job_id}/param.yaml"},
                "files_up": {"log": "log", "artifact": "model"},
            },
            "meta": {"job_id": job_id, "date_created": "2026-11-28T08:20:32.883437"},
            "hardware": {
                "cpu_cores": None,
                "memory": memory,
                "gpu_model": None,
                "gpu_archi": None,
                "gpu_mem": None,
            },
        },
        "environment": "local",
        "group": None,
        "priority": 0,
        "paths_upload": {"output": "/o", "log": "/l", "artifact": "/a"},
    }


async def fill(urls: list[str], count: int, start_id: int = 1) -> None:
    connector = aiohttp.TCPConnector(limit=32)
    async with aiohttp.ClientSession(connector=connector) as session:
        semaphore = asyncio.Semaphore(32)

        async def submit(i: int) -> None:
            async with (
                semaphore,
                session.post(
                    f"{urls[i % len(urls)]}/_jobs",
                    data=json.dumps(job_body(start_id + i)),
                    headers={"x-api-key": API_KEY, "content-type": "application/json"},
                ) as response,
            ):
                assert response.status == 201, await response.text()

        await asyncio.gather(*(submit(i) for i in range(count)))


# -- job cycles ----------------------------------------------------------------------------------


@dataclass
class CycleResult:
    cycles: int = 0
    updates: int = 0
    errors: int = 0
    error_statuses: dict[int, int] = field(default_factory=dict)
    handed: list[str] = field(default_factory=list)
    pull_latency: list[float] = field(default_factory=list)
    update_latency: list[float] = field(default_factory=list)


class WorkerClient:
    """One worker: an aiohttp session with one keep-alive connection and its own token."""

    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1),
            headers={"authorization": f"Bearer {token}"},
            skip_auto_headers=("Accept-Encoding", "User-Agent"),
        )

    async def request(self, method: str, target: str) -> tuple[int, bytes]:
        async with self.session.request(method, self.base + target) as response:
            return response.status, await response.read()

    async def close(self) -> None:
        await self.session.close()


async def run_cycles(
    urls: list[str], tokens: list[str], target: int, seconds: float, updates: list[str]
) -> tuple[CycleResult, float]:
    result = CycleResult()
    deadline = time.monotonic() + seconds
    pull = "/jobs?limit=1&cpu_cores=8&memory=64000"

    async def worker(index: int) -> None:
        client = WorkerClient(urls[index % len(urls)], tokens[index])
        try:
            while result.cycles < target and time.monotonic() < deadline:
                t0 = time.perf_counter()
                status, body = await client.request("GET", pull)
                result.pull_latency.append(time.perf_counter() - t0)
                if status != 200:
                    result.errors += 1
                    result.error_statuses[status] = result.error_statuses.get(status, 0) + 1
                    continue
                jobs = json.loads(body)
                if not jobs:
                    return  # the queue is drained
                (job_id,) = jobs
                result.handed.append(job_id)
                for new in updates:
                    t1 = time.perf_counter()
                    status, _ = await client.request("PUT", f"/jobs/{job_id}/status?status={new}")
                    if status != 204:
                        result.errors += 1
                        result.error_statuses[status] = result.error_statuses.get(status, 0) + 1
                    result.update_latency.append(time.perf_counter() - t1)
                    result.updates += 1
                result.cycles += 1
        finally:
            await client.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(len(tokens))))
    elapsed = time.perf_counter() - started
    return result, elapsed


async def analyze(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def stub_count(url: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/_count") as r:
        return int(await r.text())


@dataclass(frozen=True)
class Options:
    """How each run is set up (the same for every size of a sweep)."""

    upstream_down: bool = False
    upstream_delay: float = 0.0
    no_upstream: bool = False
    cognito: bool = False
    python: str = sys.executable
    updates: tuple[str, ...] = ("running", "finished")
    settle: float = 5.0  # seconds to wait for deliveries after the cycles
    show_statements: bool = False  # print the statements a cycle runs most (pg_stat_statements)


# -- what a cycle costs the database ---------------------------------------------------------------

_DB_COUNTERS = """
SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted, blks_hit, blks_read
FROM pg_stat_database WHERE datname = current_database()
"""
_STATEMENT_COUNTERS = """
SELECT coalesce(sum(calls), 0) AS calls, coalesce(sum(rows), 0) AS rows,
    coalesce(sum(shared_blks_dirtied), 0) AS blks_dirtied,
    coalesce(sum(shared_blks_written), 0) AS blks_written,
    coalesce(sum(wal_records), 0) AS wal_records, coalesce(sum(wal_bytes), 0) AS wal_bytes
FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
    AND query NOT LIKE '%pg_stat%'
"""
_TOP_STATEMENTS = """
SELECT calls, rows, total_exec_time, total_plan_time,
    left(regexp_replace(query, '\\s+', ' ', 'g'), 110) AS query
FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
    AND query NOT LIKE '%pg_stat%'
ORDER BY calls DESC LIMIT 12
"""


async def db_counters(url: str, *, reset: bool = False) -> dict[str, Any]:
    """The database's own counters (pg_stat_database: commits, rows written, blocks) and, where
    the server loads pg_stat_statements (``--pg-cluster``), its statements' calls, rows, blocks
    dirtied and written, and WAL. With ``reset``, pg_stat_statements starts from zero."""
    conn = await asyncpg.connect(url)
    try:
        await asyncio.sleep(1.2)  # backends flush their statistics at most once a second
        counters: dict[str, Any] = dict(await conn.fetchrow(_DB_COUNTERS) or {})
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            if reset:
                await conn.execute("SELECT pg_stat_statements_reset()")
            else:
                counters |= dict(await conn.fetchrow(_STATEMENT_COUNTERS) or {})
                counters["top"] = [dict(r) for r in await conn.fetch(_TOP_STATEMENTS)]
        except asyncpg.PostgresError:
            pass  # not loaded by this server: pg_stat_database's counters only
        return counters
    finally:
        await conn.close()


def per_cycle(before: dict[str, Any], after: dict[str, Any], cycles: int) -> dict[str, Any]:
    """The database's counters per job cycle; statements only where pg_stat_statements ran."""

    def delta(key: str) -> float:
        return float(after.get(key, 0)) - float(before.get(key, 0))

    figures: dict[str, Any] = {
        "commits_per_cycle": round(delta("xact_commit") / cycles, 2),
        "rows_written_per_cycle": round(
            (delta("tup_inserted") + delta("tup_updated") + delta("tup_deleted")) / cycles, 2
        ),
    }
    if "calls" in after:  # reset before the cycles: the totals are the cycles'
        figures |= {
            "statements_per_cycle": round(float(after["calls"]) / cycles, 2),
            "statement_rows_per_cycle": round(float(after["rows"]) / cycles, 2),
            "buffers_dirtied_per_cycle": round(float(after["blks_dirtied"]) / cycles, 2),
            "buffers_written_per_cycle": round(float(after["blks_written"]) / cycles, 2),
            "wal_records_per_cycle": round(float(after["wal_records"]) / cycles, 2),
            "wal_bytes_per_cycle": round(float(after["wal_bytes"]) / cycles, 1),
        }
    return figures


@contextmanager
def stats_cluster() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on a free loopback port that loads pg_stat_statements
    (durable commits, as in production: fsync and synchronous_commit on); yields its admin
    URL."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        raise SystemExit("--pg-cluster needs PostgreSQL's server binaries (initdb)")
    bin_dir = found[-1].parent
    home = Path(tempfile.mkdtemp(prefix="wf-pg-"))
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_postgres:
        shutil.chown(home, "postgres", "postgres")
    port = free_port()

    def run(*args: str) -> None:
        command = [*as_postgres, str(bin_dir / args[0]), *args[1:]]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    run("initdb", "-D", str(home / "data"), "-A", "trust", "-U", "postgres")
    options = (
        f"-p {port} -c listen_addresses=127.0.0.1 -k {home} -c max_connections=200 "
        "-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all "
        "-c shared_buffers=256MB"
    )
    run("pg_ctl", "-D", str(home / "data"), "-o", options, "-l", str(home / "log"), "-w", "start")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        run("pg_ctl", "-D", str(home / "data"), "-m", "fast", "-w", "stop")
        shutil.rmtree(home, ignore_errors=True)


def cycles_benchmark(
    kind: str, processes: int, workers: int, jobs: int, seconds: float, options: Options
) -> dict[str, Any]:
    upstream_down = options.upstream_down
    with tempfile.TemporaryDirectory(prefix="wf-bench-") as tmp, database(kind, Path(tmp)) as url:
        rig = Rig(Path(tmp), url, processes, python=options.python, cognito=options.cognito)
        try:
            rig.start(
                upstream=not options.no_upstream,
                upstream_down=upstream_down,
                upstream_delay=options.upstream_delay,
            )
            uvloop.run(fill(rig.urls, jobs))
            if kind == "postgres":
                # As autovacuum soon would in production: a brand-new table has no statistics.
                uvloop.run(analyze(url))
            tokens = rig.tokens(workers)
            print(f"# {kind}, {processes} process(es), {workers} worker(s): cycling", flush=True)
            events_before = uvloop.run(stub_count(rig.stub_url)) if rig.stub else 0
            counted = kind == "postgres"
            db_counted = uvloop.run(db_counters(url, reset=True)) if counted else {}
            cpu_before = rig.api_cpu()
            db_before = postgres_cpu()
            stub_before = cpu_seconds(rig.stub.pid) if rig.stub else 0.0
            client_before = time.process_time()
            result, elapsed = uvloop.run(
                run_cycles(rig.urls, tokens, jobs, seconds, list(options.updates))
            )
            api_cpu = rig.api_cpu() - cpu_before
            client_cpu = time.process_time() - client_before
            db_cpu = postgres_cpu() - db_before
            stub_cpu = (cpu_seconds(rig.stub.pid) if rig.stub else 0.0) - stub_before
            events = 0
            if rig.stub:
                # Deliveries still in flight (a slow upstream) or waiting for the dispatcher
                # arrive after the cycles: wait for them (bounded), then once more for any
                # sent twice.
                expected = result.cycles * (1 + len(set(options.updates)))
                deadline = time.monotonic() + options.settle
                while events < expected and time.monotonic() < deadline:
                    time.sleep(0.5)
                    events = uvloop.run(stub_count(rig.stub_url)) - events_before
                time.sleep(0.5)
                events = uvloop.run(stub_count(rig.stub_url)) - events_before
            # After the deliveries: what they cost the database is the cycles' too.
            db_after = uvloop.run(db_counters(url)) if counted else {}
        finally:
            rig.stop()
    cycles = max(result.cycles, 1)
    database_figures = per_cycle(db_counted, db_after, cycles) if db_after else {}
    for top in db_after.get("top", []) if options.show_statements else []:
        print(
            f"#   {top['calls'] / cycles:6.2f}/cycle"
            f"  {top['total_exec_time'] / cycles:5.3f} ms  {top['query']}",
            flush=True,
        )
    return {
        "db": kind,
        "upstream": "none" if options.no_upstream else "down" if upstream_down else "up",
        "upstream_delay_s": options.upstream_delay,
        "tokens": "cognito" if options.cognito else "local",
        "cycle": "pull," + ",".join(options.updates),
        "python": options.python,
        "metrics": os.environ.get("METRICS", "1"),  # passed on to the serve processes
        "processes": processes,
        "workers": workers,
        "cycles": result.cycles,
        "seconds": round(elapsed, 2),
        "cycles_per_s": round(result.cycles / elapsed, 1),
        "updates_per_s": round(result.updates / elapsed, 1),
        "pull_p50_ms": round(1000 * percentile(result.pull_latency, 0.5), 2),
        "pull_p99_ms": round(1000 * percentile(result.pull_latency, 0.99), 2),
        "update_p50_ms": round(1000 * percentile(result.update_latency, 0.5), 2),
        "update_p99_ms": round(1000 * percentile(result.update_latency, 0.99), 2),
        "api_cpu_ms_per_cycle": round(1000 * api_cpu / cycles, 3),
        "client_cpu_ms_per_cycle": round(1000 * client_cpu / cycles, 3),
        "postgres_cpu_ms_per_cycle": round(1000 * db_cpu / cycles, 3)
        if kind == "postgres"
        else None,
        "stub_cpu_ms_per_cycle": round(1000 * stub_cpu / cycles, 3),
        **database_figures,
        "upstream_events": events,
        "state_changes": result.cycles * (1 + len(set(options.updates))),
        "duplicates": len(result.handed) - len(set(result.handed)),
        "errors": result.errors,
        "error_statuses": result.error_statuses,
    }


# -- pull latency with a large non-fitting queue -------------------------------------------------


async def insert_non_fitting(db_url: str, count: int) -> None:
    """Queued jobs that need more memory than any worker here has."""
    spec = json.dumps(job_body(0, memory=10**9)["job"])
    paths = json.dumps({"output": "/o", "log": "/l", "artifact": "/a"})
    if db_url.startswith("postgresql"):
        conn = await asyncpg.connect(db_url)
        try:
            await conn.execute(
                "INSERT INTO jobs (upstream_id, status, environment, priority, req_cpu_cores, "
                "req_memory, req_gpu_mem, spec, paths_upload, created_at, updated_at) "
                "SELECT 1000000 + g, 'queued', 'local', g % 10, 0, 1000000000, 0, $1, $2, "
                "now() - g * interval '1 second', now() FROM generate_series(1, $3) g",
                spec,
                paths,
                count,
            )
            # Steady state: autovacuum would otherwise start on the new rows mid-measurement.
            await conn.execute("VACUUM ANALYZE jobs")
        finally:
            await conn.close()
    else:
        import sqlite3

        stamp = datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
        with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
            conn.executemany(
                "INSERT INTO jobs (upstream_id, status, environment, priority, req_cpu_cores, "
                "req_memory, req_gpu_mem, spec, paths_upload, created_at, updated_at, attempt, "
                "num_retries) VALUES (?, 'queued', 'local', ?, 0, 1000000000, 0, ?, ?, ?, ?, 0, 0)",
                [(1_000_000 + i, i % 10, spec, paths, stamp, stamp) for i in range(count)],
            )
            conn.execute("ANALYZE")


async def time_pulls(url: str, token: str, count: int) -> list[float]:
    latencies = []
    headers = {"Authorization": f"Bearer {token}"}
    query = {"limit": "1", "cpu_cores": "8", "memory": "64000"}
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            t0 = time.perf_counter()
            async with session.get(f"{url}/jobs", params=query, headers=headers) as r:
                assert r.status == 200
                assert await r.read() == b"{}"
            latencies.append(time.perf_counter() - t0)
    return latencies


def pull_latency_benchmark(
    kind: str, sizes: list[int], pulls: int, python: str = sys.executable
) -> list[dict[str, Any]]:
    rows = []
    for size in sizes:
        with (
            tempfile.TemporaryDirectory(prefix="wf-bench-") as tmp,
            database(kind, Path(tmp)) as url,
        ):
            rig = Rig(Path(tmp), url, 1, python=python)
            try:
                rig.start(upstream=False)
                uvloop.run(insert_non_fitting(url, size))
                (token,) = rig.tokens(1)
                uvloop.run(time_pulls(rig.urls[0], token, 50))  # warm-up
                latencies = uvloop.run(time_pulls(rig.urls[0], token, pulls))
            finally:
                rig.stop()
        rows.append(
            {
                "db": kind,
                "python": python,
                "queued_not_fitting": size,
                "pulls": pulls,
                "p50_ms": round(1000 * percentile(latencies, 0.5), 3),
                "p99_ms": round(1000 * percentile(latencies, 0.99), 3),
                "mean_ms": round(1000 * statistics.fmean(latencies), 3),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    pg = shutil.which("psql")
    pg_version = (
        subprocess.run([pg, "--version"], capture_output=True, text=True).stdout.strip()
        if pg
        else "-"
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "postgres_client": pg_version,
        "kernel": platform.release(),
    }


def cycle_rows(
    kinds: list[str], args: argparse.Namespace, options: Options
) -> list[dict[str, Any]]:
    rows = []
    for kind in kinds:
        for processes in (int(p) for p in args.processes.split(",")):
            for workers in (int(w) for w in args.workers.split(",")):
                row = cycles_benchmark(kind, processes, workers, args.jobs, args.seconds, options)
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--processes", default="1,3", help="comma-separated API process counts")
    parser.add_argument("--workers", default="1,8,64", help="comma-separated worker counts")
    parser.add_argument("--jobs", type=int, default=3000, help="jobs per run (bounded)")
    parser.add_argument("--seconds", type=float, default=30, help="time limit per run")
    parser.add_argument("--pull-latency", action="store_true")
    parser.add_argument(
        "--upstream-down", action="store_true", help="forward to a port nobody listens on"
    )
    parser.add_argument(
        "--no-upstream", action="store_true", help="no USERFACING_API_URL: nothing forwarded"
    )
    parser.add_argument(
        "--upstream-delay", type=float, default=0.0, help="seconds the upstream stub waits"
    )
    parser.add_argument(
        "--cognito", action="store_true", help="Cognito tokens (a moto server) instead of local"
    )
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter of the serve processes (another checkout's .venv/bin/python)",
    )
    parser.add_argument(
        "--cycle",
        default="running,finished",
        help="status updates after each pull, e.g. running,running,finished (a keep-alive)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=5.0,
        help="seconds to wait for deliveries still under way after the cycles",
    )
    parser.add_argument(
        "--pg-cluster",
        action="store_true",
        help="run PostgreSQL in a throwaway cluster of its own that loads pg_stat_statements: "
        "statements, rows, buffers and WAL per cycle beside the commits",
    )
    parser.add_argument(
        "--statements",
        action="store_true",
        help="with --pg-cluster: also print the statements a cycle runs most, per cycle",
    )
    parser.add_argument("--sizes", default="100,10000,100000")
    parser.add_argument("--pulls", type=int, default=1000)
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    kinds = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    print(json.dumps({"machine": machine()}), flush=True)
    rows: list[dict[str, Any]] = []
    if args.pull_latency:
        for kind in kinds:
            rows += pull_latency_benchmark(
                kind, [int(s) for s in args.sizes.split(",")], args.pulls, args.python
            )
    else:
        options = Options(
            upstream_down=args.upstream_down,
            upstream_delay=args.upstream_delay,
            no_upstream=args.no_upstream,
            cognito=args.cognito,
            python=args.python,
            updates=tuple(args.cycle.split(",")),
            settle=args.settle,
            show_statements=args.statements,
        )
        with contextlib.ExitStack() as stack:
            if args.pg_cluster and "postgres" in kinds:
                global ADMIN_URL
                ADMIN_URL = stack.enter_context(stats_cluster())
            rows += cycle_rows(kinds, args, options)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
