"""Latency of the operators' dashboard's data endpoints with 100 000 queued jobs on PostgreSQL,
on loopback only, bounded in count and time.

Makes a throwaway PostgreSQL database (``BENCH_POSTGRES_URL``'s server, as ``load.py``), starts
one ``workerfacing-api serve`` on it, inserts 100 000 queued jobs of a few hardware classes
directly (one INSERT … SELECT, then VACUUM ANALYZE), an hour of history (finished and failed
jobs with their attempts, time-outs) and a few workers, then times N sequential GETs of
``/ui/api/overview`` and of ``/ui/api/jobs/{id}`` (a queued job, whose page asks why it waits,
and a failed one) with an operator's bearer token. Prints one JSON line per endpoint: p50, p99
and mean in milliseconds.

    uv run python benchmarks/dashboard.py [--requests 500] [--queued 100000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import uvloop

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from load import Rig, database, job_body, machine, percentile  # noqa: E402

from workerfacing_api.adapters.identity import LocalIssuer  # noqa: E402

# Hardware classes of the queued jobs: (environment, cpu_cores, memory, gpu_mem, gpu_model).
# The last needs more GPU memory than any worker has: it is listed as waiting without one.
CLASSES = [
    ("local", 4, 16000, 8000, None),
    ("local", 8, 32000, 24000, "RTX"),
    ("cloud", 8, 32000, 16000, None),
    ("any", 0, 0, 0, None),
    ("local", 16, 64000, 40000, "A100"),
]
HISTORY = 3000  # finished jobs in the last hour
FAILED = 300  # jobs that ended in error, with runtime_details
TIMEOUTS = 300  # attempts the sweep took back


async def fill(db_url: str, queued: int) -> dict[str, int]:
    """The queue, its last hour and its workers; returns ids of a queued and a failed job."""
    spec = json.dumps(job_body(0)["job"])
    paths = json.dumps({"output": "/o", "log": "/l", "artifact": "/a"})
    conn = await asyncpg.connect(db_url)
    try:
        classes = json.dumps(CLASSES)
        # Queued jobs: created over the last day, in classes round-robin.
        await conn.execute(
            """
            INSERT INTO jobs (upstream_id, status, environment, priority, req_cpu_cores,
                req_memory, req_gpu_mem, req_gpu_model, spec, paths_upload, created_at,
                updated_at)
            SELECT g, 'queued', c->>0, g % 10, (c->>1)::bigint, (c->>2)::bigint,
                (c->>3)::bigint, c->>4, $1, $2,
                now() - (g % 86400) * interval '1 second', now()
            FROM generate_series(1, $3) g,
                LATERAL (SELECT ($4::jsonb)->(g % jsonb_array_length($4::jsonb)) AS c) AS k
            """,
            spec,
            paths,
            queued,
            classes,
        )
        # The last hour: finished jobs, failed ones, and time-outs re-queued and finished later.
        ended = HISTORY + FAILED + TIMEOUTS
        await conn.execute(
            """
            INSERT INTO jobs (upstream_id, status, environment, priority, req_cpu_cores,
                req_memory, req_gpu_mem, spec, paths_upload, created_at, updated_at, worker,
                attempt, last_heartbeat_at, runtime_details)
            SELECT 10000000 + g,
                CASE WHEN g <= $3 THEN 'finished' WHEN g <= $3 + $4 THEN 'error'
                    ELSE 'finished' END,
                'local', 5, 0, 0, 0, $1, $2,
                now() - interval '2 hours', now() - (g % 3600) * interval '1 second',
                'w' || (g % 5), CASE WHEN g > $3 + $4 THEN 2 ELSE 1 END,
                now() - (g % 3600) * interval '1 second',
                CASE WHEN g > $3 AND g <= $3 + $4
                    THEN 'CUDA error: an illegal memory access was encountered (job ' || g || ')'
                END
            FROM generate_series(1, $5) g
            """,
            spec,
            paths,
            HISTORY,
            FAILED,
            ended,
        )
        await conn.execute(
            """
            INSERT INTO job_attempts (job_id, attempt, worker, pulled_at, outcome, ended_at)
            SELECT id, 1, worker, updated_at - interval '5 minutes',
                CASE WHEN status = 'error' THEN 'error' WHEN attempt = 2 THEN 'timeout'
                    ELSE 'finished' END,
                CASE WHEN attempt = 2 THEN updated_at - interval '3 minutes' ELSE updated_at END
            FROM jobs WHERE upstream_id > 10000000;
            INSERT INTO job_attempts (job_id, attempt, worker, pulled_at, outcome, ended_at)
            SELECT id, 2, worker, updated_at - interval '2 minutes', 'finished', updated_at
            FROM jobs WHERE upstream_id > 10000000 AND attempt = 2;
            """
        )
        await conn.execute(
            """
            INSERT INTO workers (name, environment, cpu_cores, memory, gpu_mem, gpu_model,
                gpu_archi, groups, older_than, first_seen_at, last_seen_at)
            SELECT 'w' || g, CASE WHEN g = 4 THEN 'cloud' ELSE 'local' END, 16, 64000, 24000,
                'RTX', 'ampere', '[]', 0, now() - interval '1 day', now()
            FROM generate_series(0, 4) g
            """
        )
        # Steady state: autovacuum would otherwise start on the new rows mid-measurement (and
        # an index-only scan needs the visibility map it writes).
        await conn.execute("VACUUM ANALYZE")
        waiting = await conn.fetchval(
            "SELECT id FROM jobs WHERE status = 'queued' AND req_gpu_mem = 24000 "
            "ORDER BY created_at DESC LIMIT 1"
        )
        failed = await conn.fetchval("SELECT id FROM jobs WHERE status = 'error' LIMIT 1")
    finally:
        await conn.close()
    return {"queued": int(waiting), "failed": int(failed)}


async def time_gets(url: str, token: str, count: int) -> list[float]:
    latencies = []
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            t0 = time.perf_counter()
            async with session.get(url, headers=headers) as response:
                assert response.status == 200, await response.text()
                await response.read()
            latencies.append(time.perf_counter() - t0)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=500, help="GETs per endpoint")
    parser.add_argument("--queued", type=int, default=100_000, help="queued jobs")
    args = parser.parse_args()
    requests = max(1, min(args.requests, 10_000))
    queued = max(1, min(args.queued, 1_000_000))
    with (
        tempfile.TemporaryDirectory(prefix="wf-bench-") as tmp,
        database("postgres", Path(tmp)) as db_url,
    ):
        rig = Rig(Path(tmp), db_url, 1)
        try:
            rig.start(upstream=False)
            ids = uvloop.run(fill(db_url, queued))
            issuer = LocalIssuer(Path(tmp) / "state" / "identity.key")
            token = issuer.mint("ops", ["operators"], timedelta(hours=1), datetime.now(UTC))
            base = rig.urls[0]
            targets = {
                "overview": f"{base}/ui/api/overview",
                "job_queued": f"{base}/ui/api/jobs/{ids['queued']}",
                "job_failed": f"{base}/ui/api/jobs/{ids['failed']}",
            }
            for name, url in targets.items():
                uvloop.run(time_gets(url, token, 20))  # warm-up: connections, plans
                latencies = uvloop.run(time_gets(url, token, requests))
                row: dict[str, Any] = {
                    "endpoint": name,
                    "db": "postgres",
                    "queued": queued,
                    "requests": requests,
                    "p50_ms": round(1000 * percentile(latencies, 0.5), 3),
                    "p99_ms": round(1000 * percentile(latencies, 0.99), 3),
                    "mean_ms": round(1000 * statistics.fmean(latencies), 3),
                    "machine": machine(),
                }
                print(json.dumps(row), flush=True)
        finally:
            rig.stop()


if __name__ == "__main__":
    main()
