"""Latency of the operators' reads (the dashboard's data endpoints and ``GET /_demand``) with
100 000 queued jobs on PostgreSQL, on loopback only, bounded in count and time.

Makes a throwaway PostgreSQL database (``BENCH_POSTGRES_URL``'s server, as ``load.py``), starts
one ``workerfacing-api serve`` on it, inserts 100 000 queued jobs spread over a dozen hardware
classes directly (one INSERT … SELECT, then VACUUM ANALYZE), an hour of history (finished and
failed jobs with their attempts, time-outs) and a fleet of nodes seen (half of them holding a
running job), then times N sequential GETs of ``/ui/api/overview``, of ``/ui/api/jobs/{id}`` (a
queued job, whose page asks why it waits, and a failed one) with an operator's bearer token, and
of ``/_demand`` with the internal key (as an autoscaler asks; and for one offer, when the
service takes the offer's query parameters), and of the jobs view ``/ui/api/jobs`` (its first
page, failed jobs, queued jobs of one class, a page deep in the queue, one worker's jobs, a search
by ``meta.job_id``). Prints one JSON line per endpoint: p50, p95, p99
and mean in milliseconds, the 1-minute load average at its end (a busy machine's figures are not
the service's), and for ``/_demand`` what the answer held.

    uv run python benchmarks/dashboard.py [--requests 500] [--queued 100000] [--classes 12]
        [--nodes 40] [--only demand,demand_offer]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.parse import urlencode
from urllib.request import Request, urlopen

import aiohttp
import asyncpg
import uvloop

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from load import API_KEY, Rig, database, job_body, machine, percentile  # noqa: E402

from workerfacing_api.adapters.identity import LocalIssuer  # noqa: E402

# Hardware classes of the queued jobs: (environment, cpu_cores, memory, gpu_mem, gpu_model),
# the first --classes of them, round-robin. The A100 and H100 ones need more GPU memory than any
# node has: no node can run them.
CLASSES = [
    ("local", 4, 16000, 8000, None),
    ("local", 8, 32000, 24000, "RTX"),
    ("cloud", 8, 32000, 16000, None),
    ("any", 0, 0, 0, None),
    ("local", 16, 64000, 40000, "A100"),
    ("local", 2, 8000, 0, None),
    ("local", 8, 32000, 12000, None),
    ("cloud", 4, 16000, 0, None),
    ("cloud", 16, 64000, 16000, "T4"),
    ("cloud", 64, 256000, 80000, "H100"),
    ("any", 4, 16000, 8000, None),
    ("local", 16, 64000, 24000, None),
]
# The nodes seen, round-robin over these offers: (environment, cpu_cores, memory, gpu_mem,
# gpu_model, gpu_archi). Accounts w0…w4 own them, as they own the history's attempts.
FLEET = [
    ("local", 16, 64000, 24000, "RTX", "ampere"),
    ("local", 8, 32000, 12000, "GTX", "turing"),
    ("cloud", 16, 64000, 16000, "T4", "turing"),
    ("cloud", 8, 32000, 0, None, None),
]
# The machine an autoscaler asks about (/_demand's offer filter, when there is one): a cloud
# node with an RTX card, which would run 4 of the 12 classes.
OFFER = {
    "environment": "cloud",
    "memory": 64000,
    "cpu_cores": 16,
    "gpu_mem": 24000,
    "gpu_model": "RTX",
}
HISTORY = 3000  # finished jobs in the last hour
FAILED = 300  # jobs that ended in error, with runtime_details
TIMEOUTS = 300  # attempts the sweep took back


async def fill(db_url: str, queued: int, classes: int, nodes: int) -> dict[str, int]:
    """The queue, its last hour and its nodes; returns ids of a queued and a failed job."""
    spec = json.dumps(job_body(0)["job"])
    paths = json.dumps({"output": "/o", "log": "/l", "artifact": "/a"})
    conn = await asyncpg.connect(db_url)
    try:
        kinds = json.dumps(CLASSES[:classes])
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
            kinds,
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
            INSERT INTO nodes (node, account, address, instance, environment, cpu_cores, memory,
                gpu_mem, gpu_model, gpu_archi, groups, older_than, first_seen_at, last_seen_at)
            SELECT 'n' || g, 'w' || (g % 5), '10.0.0.' || g, 'i-' || g, f->>0, (f->>1)::bigint,
                (f->>2)::bigint, (f->>3)::bigint, f->>4, f->>5, '[]', 0,
                now() - interval '1 day', now() - (g % 60) * interval '1 second'
            FROM generate_series(0, $2 - 1) g,
                LATERAL (SELECT ($1::jsonb)->(g % jsonb_array_length($1::jsonb)) AS f) AS k
            """,
            json.dumps(FLEET),
            nodes,
        )
        # Half the nodes hold a running job (the nodes' read joins their active jobs).
        await conn.execute(
            """
            INSERT INTO jobs (upstream_id, status, environment, priority, req_cpu_cores,
                req_memory, req_gpu_mem, spec, paths_upload, created_at, updated_at, worker,
                node, attempt, last_heartbeat_at)
            SELECT 20000000 + row_number() OVER (), 'running', environment, 5, 0, 0, 0, $1, $2,
                now() - interval '1 hour', now(), account, node, 1, now()
            FROM nodes WHERE substr(node, 2)::int % 2 = 0
            """,
            spec,
            paths,
        )
        # Steady state: autovacuum would otherwise start on the new rows mid-measurement (and
        # an index-only scan needs the visibility map it writes).
        await conn.execute("VACUUM ANALYZE")
        waiting = await conn.fetchval(
            "SELECT id FROM jobs WHERE status = 'queued' AND req_gpu_mem = 24000 "
            "ORDER BY created_at DESC LIMIT 1"
        )
        failed = await conn.fetchval("SELECT id FROM jobs WHERE status = 'error' LIMIT 1")
        middle = await conn.fetchval(
            "SELECT id FROM jobs WHERE status = 'queued' ORDER BY id OFFSET $1 LIMIT 1", queued // 2
        )
    finally:
        await conn.close()
    return {"queued": int(waiting), "failed": int(failed), "middle": int(middle)}


async def time_gets(url: str, headers: dict[str, str], count: int) -> list[float]:
    latencies = []
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            t0 = time.perf_counter()
            async with session.get(url, headers=headers) as response:
                assert response.status == 200, await response.text()
                await response.read()
            latencies.append(time.perf_counter() - t0)
    return latencies


def get_json(url: str, headers: dict[str, str] | None = None) -> Any:
    with urlopen(Request(url, headers=headers or {}), timeout=10) as answer:
        return json.load(answer)


def get_status(url: str, headers: dict[str, str]) -> int:
    """The status code of a GET (an error's too)."""
    try:
        with urlopen(Request(url, headers=headers), timeout=30) as answer:
            return int(answer.status)
    except HTTPError as exc:
        return exc.code


def takes_offer(base: str) -> bool:
    """Whether this service's ``/_demand`` takes an offer (its OpenAPI document lists ``memory``
    among the operation's parameters): the figure is measured only then."""
    document = get_json(f"{base}/openapi.json")
    operation = document["paths"].get("/_demand", {}).get("get", {})
    return any(p.get("name") == "memory" for p in operation.get("parameters", []))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=500, help="GETs per endpoint")
    parser.add_argument("--queued", type=int, default=100_000, help="queued jobs")
    parser.add_argument(
        "--classes", type=int, default=len(CLASSES), help=f"hardware classes (1-{len(CLASSES)})"
    )
    parser.add_argument("--nodes", type=int, default=40, help="nodes seen")
    parser.add_argument("--only", default="", help="comma-separated endpoints (default: all)")
    args = parser.parse_args()
    requests = max(1, min(args.requests, 10_000))
    queued = max(1, min(args.queued, 1_000_000))
    classes = max(1, min(args.classes, len(CLASSES)))
    nodes = max(1, min(args.nodes, 1000))
    with (
        tempfile.TemporaryDirectory(prefix="wf-bench-") as tmp,
        database("postgres", Path(tmp)) as db_url,
    ):
        rig = Rig(Path(tmp), db_url, 1)
        try:
            rig.start(upstream=False)
            ids = uvloop.run(fill(db_url, queued, classes, nodes))
            issuer = LocalIssuer(Path(tmp) / "state" / "identity.key")
            token = issuer.mint("ops", ["operators"], timedelta(hours=1), datetime.now(UTC))
            operator = {"Authorization": f"Bearer {token}"}
            internal = {"x-api-key": API_KEY}
            base = rig.urls[0]
            targets = {
                "overview": (f"{base}/ui/api/overview", operator),
                "job_queued": (f"{base}/ui/api/jobs/{ids['queued']}", operator),
                "job_failed": (f"{base}/ui/api/jobs/{ids['failed']}", operator),
                "demand": (f"{base}/_demand", internal),
            }
            # The jobs view (its first page, filtered pages, a page deep in the queue, a search),
            # when the service has it.
            if get_status(f"{base}/ui/api/jobs?limit=1", operator) == 200:
                env, cpu, memory, gpu_mem, model = CLASSES[1]
                klass = f"{env}:{cpu}:{memory}:{gpu_mem}:{model or ''}:"
                views = {
                    "jobs_first_page": {},
                    "jobs_failed": {"state": "error"},
                    "jobs_queued_of_class": {"state": "queued", "class": klass},
                    "jobs_deep_page": {"state": "queued", "before": str(ids["middle"])},
                    "jobs_by_worker": {"worker": "w3"},
                    "jobs_search_meta_id": {"job_id": str(queued // 3)},
                }
                for name, query in views.items():
                    targets[name] = (f"{base}/ui/api/jobs?{urlencode(query)}", operator)
            else:
                print("# no jobs view (/ui/api/jobs) yet: not measured", flush=True)
            if takes_offer(base):
                targets["demand_offer"] = (f"{base}/_demand?{urlencode(OFFER)}", internal)
            else:
                print("# /_demand takes no offer yet: demand_offer not measured", flush=True)
            only = {name for name in args.only.split(",") if name}
            for name, (url, headers) in targets.items():
                if only and name not in only:
                    continue
                uvloop.run(time_gets(url, headers, 20))  # warm-up: connections, plans
                latencies = uvloop.run(time_gets(url, headers, requests))
                row: dict[str, Any] = {
                    "endpoint": name,
                    "db": "postgres",
                    "queued": queued,
                    "classes": classes,
                    "nodes": nodes,
                    "requests": requests,
                    "p50_ms": round(1000 * percentile(latencies, 0.5), 3),
                    "p95_ms": round(1000 * percentile(latencies, 0.95), 3),
                    "p99_ms": round(1000 * percentile(latencies, 0.99), 3),
                    "mean_ms": round(1000 * statistics.fmean(latencies), 3),
                    "load_avg_1m": round(os.getloadavg()[0], 2),  # others' work skews the figures
                    "machine": machine(),
                }
                if name.startswith("demand"):  # what was measured: the answer's size
                    report = get_json(url, headers)
                    row["answer"] = {
                        k: len(report[k]) if k == "classes" else report[k]
                        for k in ("classes", "queued", "no_node_can_run", "nodes_seen")
                    }
                print(json.dumps(row), flush=True)
        finally:
            rig.stop()


if __name__ == "__main__":
    main()
