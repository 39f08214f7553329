"""Status changes reach the user-facing API at once, in order, at least once, through outages
and restarts; a job the user deleted is cancelled (ARCHITECTURE §1, §3, §4, §6)."""

from __future__ import annotations

import signal
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from tests.integration.conftest import Server, Upstream, upstream_env

# Real processes on 127.0.0.1 (serve, the fake upstream, moto): docs/TESTING.md.
pytestmark = pytest.mark.e2e


def meta_id(server: Server, queue_id: str) -> int:
    assert server.db_path is not None
    with sqlite3.connect(server.db_path) as conn:
        (upstream_id,) = conn.execute(
            "SELECT upstream_id FROM jobs WHERE id = ?", (int(queue_id),)
        ).fetchone()
    return int(upstream_id)


def outbox_size(server: Server) -> int:
    assert server.db_path is not None
    with sqlite3.connect(server.db_path) as conn:
        (count,) = conn.execute("SELECT count(*) FROM status_events").fetchone()
    return int(count)


def test_every_change_is_forwarded_at_once_and_keepalives_are_not(
    server_factory: Callable[..., Server], upstream: Upstream
) -> None:
    server = server_factory(upstream_env(upstream))
    body = server.submit()
    job_id = body["job"]["meta"]["job_id"]
    (queue_id,) = server.pull("w")
    # Inline delivery: the upstream has each change by the time the call returns.
    assert upstream.statuses(job_id) == ["pulled"]
    for status in ("preprocessing", "preprocessing", "running", "running", "postprocessing"):
        assert server.put_status(queue_id, status, "w").status_code == 204
    assert upstream.statuses(job_id) == ["pulled", "preprocessing", "running", "postprocessing"]
    assert server.put_status(queue_id, "running", "w", runtime_details="epoch 3").status_code == 204
    assert server.put_status(queue_id, "finished", "w", runtime_details="").status_code == 204
    assert server.put_status(queue_id, "postprocessing", "w").status_code == 204  # no-op
    assert server.put_status(queue_id, "finished", "w", runtime_details="logs").status_code == 204
    events = [e for e in upstream.events() if e["job_id"] == job_id]
    assert [(e["status"], e["runtime_details"]) for e in events] == [
        ("pulled", ""),
        ("preprocessing", ""),
        ("running", ""),
        ("postprocessing", ""),
        ("postprocessing", "epoch 3"),  # a backward move is a keep-alive; its details go up
        ("finished", ""),
        ("finished", "logs"),
    ]
    # Nothing left waiting, once the last acknowledgement is written (within ACK_DELAY).
    upstream.wait_for(lambda: outbox_size(server) == 0, seconds=5)


def test_updates_arrive_in_order_per_job_under_concurrency(
    server_factory: Callable[..., Server], upstream: Upstream
) -> None:
    server = server_factory(upstream_env(upstream))
    bodies = [server.submit() for _ in range(12)]
    steps = ["preprocessing", "running", "postprocessing", "finished"]

    def work(i: int) -> int:
        jobs = server.pull(f"w{i}")
        (queue_id,) = jobs
        for status in steps:
            assert server.put_status(queue_id, status, f"w{i}").status_code == 204
        return int(jobs[queue_id]["meta"]["job_id"])

    with ThreadPoolExecutor(max_workers=12) as pool:
        done = sorted(pool.map(work, range(12)))
    assert done == sorted(b["job"]["meta"]["job_id"] for b in bodies)
    upstream.wait_for(lambda: all(len(upstream.statuses(j)) == 5 for j in done))
    for job in done:
        assert upstream.statuses(job) == ["pulled", *steps]


def test_nothing_is_lost_while_upstream_is_down_and_the_service_restarts(
    server_factory: Callable[..., Server], upstream: Upstream
) -> None:
    env = upstream_env(upstream)
    server = server_factory(env, name="a")
    bodies = [server.submit() for _ in range(4)]
    upstream.stop()
    pulled: dict[str, Any] = {}
    # The upstream is unreachable: workers are still served, nothing answers 5xx.
    for i in range(4):
        pulled.update(server.pull(f"w{i}"))
    owners = {queue_id: f"w{i}" for i, queue_id in enumerate(pulled)}
    for queue_id, owner in owners.items():
        for status in ("preprocessing", "running"):
            assert server.put_status(queue_id, status, owner).status_code == 204
    assert outbox_size(server) == 12
    # The service dies hard and comes back on the same database while upstream is still down.
    server.process.send_signal(signal.SIGKILL)
    server.process.wait()
    db_url = f"sqlite:///{server.db_path}"
    restarted = server_factory(env, name="b", db_url=db_url)
    restarted.db_path = server.db_path
    for queue_id, owner in owners.items():
        assert restarted.put_status(queue_id, "postprocessing", owner).status_code == 204
    upstream.start()
    job_ids = [b["job"]["meta"]["job_id"] for b in bodies]
    expected = ["pulled", "preprocessing", "running", "postprocessing"]
    upstream.wait_for(lambda: all(len(upstream.statuses(j)) >= 4 for j in job_ids))
    for job in job_ids:
        seen = upstream.statuses(job)
        # At least once, in order: duplicates may only repeat the latest status.
        deduplicated = [s for k, s in enumerate(seen) if k == 0 or s != seen[k - 1]]
        assert deduplicated == expected, seen
    upstream.wait_for(lambda: outbox_size(restarted) == 0)


def test_upstream_deletion_cancels_the_job_and_the_worker_is_told(
    server_factory: Callable[..., Server], upstream: Upstream
) -> None:
    server = server_factory(upstream_env(upstream))
    body = server.submit()
    (queue_id,) = server.pull("w")
    assert server.put_status(queue_id, "preprocessing", "w").status_code == 204
    upstream.set(gone=[body["job"]["meta"]["job_id"]])  # the user deletes the job
    # The upstream's 404 to this change cancels the job, and came in time: this very call
    # answers 404 (stop)...
    assert server.put_status(queue_id, "running", "w").status_code == 404
    # ...and so does every later call on it.
    assert server.put_status(queue_id, "running", "w").status_code == 404
    url = requests.post(
        f"{server.url}/jobs/{queue_id}/files/url",
        params={"type": "log", "base_path": ""},
        headers=server.auth("w"),
        timeout=10,
    )
    assert url.status_code == 404
    status = requests.get(f"{server.url}/jobs/{queue_id}/status", headers=server.auth(), timeout=10)
    assert status.status_code == 404


def test_a_deleted_job_is_never_handed_out(
    server_factory: Callable[..., Server], upstream: Upstream
) -> None:
    server = server_factory(upstream_env(upstream))
    deleted = server.submit(server.job_body(priority=9))
    kept = server.submit(server.job_body(priority=1))
    upstream.set(gone=[deleted["job"]["meta"]["job_id"]])
    jobs = server.pull("w")
    # The pull skipped the deleted job and took the next one.
    assert [j["meta"]["job_id"] for j in jobs.values()] == [kept["job"]["meta"]["job_id"]]
    assert server.pull("w2") == {}


def test_without_upstream_no_events_pile_up(server: Server) -> None:
    server.submit()
    (queue_id,) = server.pull("w")
    for status in ("preprocessing", "running", "finished"):
        assert server.put_status(queue_id, status, "w").status_code == 204
    assert outbox_size(server) == 0
