"""A user's delete reaches the worker, and leaves nothing behind (DESIGN §3, §4; issue 9).

The user-facing API never says that a user deleted a job: it answers 404 to anything forwarded
about it. These tests play that API (``tests/fakes/upstream.py``), drive the service like the
DECODE worker does, and check that the worker is told to stop (404) at its next ping, that what
it uploaded after the delete is gone again, and that a slow upstream never slows the worker."""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.integration.conftest import Server, Upstream, upstream_env
from tests.integration.test_file_security import pull_one, upload_link, upload_to


def ping_until_404(server: Server, queue_id: str, every: float, seconds: float) -> float:
    """Ping ``running`` every ``every`` seconds, as the DECODE worker does; the time to the
    first 404 (the worker stops there)."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        answer = server.put_status(queue_id, "running", "w1")
        if answer.status_code == 404:
            return time.monotonic() - started
        assert answer.status_code == 204, answer.text
        time.sleep(every)
    raise AssertionError(f"the worker was not told to stop within {seconds} s")


def test_a_delete_stops_the_worker_within_3_s_with_1_s_pings(
    server_factory: Callable[..., Server], upstream: Upstream
) -> None:
    server = server_factory(upstream_env(upstream, UPSTREAM_KEEPALIVE_INTERVAL="1"))
    body = server.submit()
    meta_id = body["job"]["meta"]["job_id"]
    queue_id, _ = pull_one(server, "w1")
    assert server.put_status(queue_id, "running", "w1").status_code == 204
    for _ in range(3):  # training: keep-alives every second, the job is there
        time.sleep(1)
        assert server.put_status(queue_id, "running", "w1").status_code == 204

    upstream.set(gone=[meta_id])  # the user deletes the job
    assert ping_until_404(server, queue_id, every=1.0, seconds=10) <= 3.0
    # From then on every call about the job says stop.
    assert server.put_status(queue_id, "running", "w1").status_code == 404
    assert server.put_status(queue_id, "error", "w1").status_code == 404


@pytest.mark.slow
def test_with_the_default_interval_the_real_workers_next_ping_is_told(
    server_factory: Callable[..., Server], upstream: Upstream
) -> None:
    server = server_factory(upstream_env(upstream))  # UPSTREAM_KEEPALIVE_INTERVAL: 5 s
    body = server.submit()
    queue_id, _ = pull_one(server, "w1")
    assert server.put_status(queue_id, "running", "w1").status_code == 204
    upstream.set(gone=[body["job"]["meta"]["job_id"]])
    time.sleep(10)  # the DECODE worker's keep-alive period
    assert server.put_status(queue_id, "running", "w1").status_code == 404


def test_uploads_after_a_delete_are_removed_and_refused_and_earlier_ones_stay(
    server_factory: Callable[..., Server], upstream: Upstream
) -> None:
    server = server_factory(upstream_env(upstream, UPSTREAM_KEEPALIVE_INTERVAL="1"))
    body = server.submit()
    meta_id = body["job"]["meta"]["job_id"]
    log_folder = Path(body["paths_upload"]["log"])
    artifact_folder = Path(body["paths_upload"]["artifact"])
    queue_id, _ = pull_one(server, "w1")
    assert server.put_status(queue_id, "running", "w1").status_code == 204
    early = upload_to(upload_link(server, "w1", queue_id, "log"), "train.log", b"epoch 1")
    assert early.status_code == 201, early.text
    time.sleep(1.1)
    # A keep-alive after that upload is answered by the upstream: the job still existed then.
    assert server.put_status(queue_id, "running", "w1").status_code == 204
    assert [e["status"] for e in upstream.events() if e["job_id"] == meta_id][-1] == "running"

    upstream.set(gone=[meta_id])  # the user deletes the job (and the user-facing API its files)
    # The worker does not know yet: it goes on uploading, and the service cannot tell either.
    late_link = upload_link(server, "w1", queue_id, "artifact", "checkpoints/epoch2")
    late = upload_to(late_link, "model.pt", b"weights after the delete")
    assert late.status_code == 201, late.text
    late_log = upload_to(upload_link(server, "w1", queue_id, "log"), "train-2.log", b"epoch 2")
    assert late_log.status_code == 201, late_log.text

    time.sleep(1.1)
    assert server.put_status(queue_id, "running", "w1").status_code == 404  # stop
    # What was stored after the delete is gone, and so are the folders it recreated.
    assert not artifact_folder.exists(), list(artifact_folder.rglob("*"))
    assert sorted(p.name for p in log_folder.iterdir()) == ["train.log"]  # before: untouched
    assert (log_folder / "train.log").read_bytes() == b"epoch 1"
    assert "removed 2 file(s)" in server.log_path.read_text()

    # Every upload call about the job is a 404 now, the old links included.
    url = requests.post(
        f"{server.url}/jobs/{queue_id}/files/url",
        params={"type": "log"},
        headers=server.auth("w1"),
        timeout=10,
    )
    assert url.status_code == 404, url.text
    assert upload_to(late_link, "again.pt", b"x").status_code == 404
    assert not artifact_folder.exists()


def test_a_download_of_a_deleted_job_answers_404(
    server_factory: Callable[..., Server], upstream: Upstream
) -> None:
    server = server_factory(upstream_env(upstream, UPSTREAM_KEEPALIVE_INTERVAL="0"))
    body = server.submit()
    queue_id, job = pull_one(server, "w1")
    file_id = job["handler"]["files_down"]["data/calib.mat"]
    url = f"{server.url}/files/{file_id}/url"
    assert requests.get(url, headers=server.auth("w1"), timeout=10).status_code == 200
    upstream.set(gone=[body["job"]["meta"]["job_id"]])
    assert server.put_status(queue_id, "preprocessing", "w1").status_code == 404
    answer = requests.get(url, headers=server.auth("w1"), timeout=10)
    assert answer.status_code == 404, answer.text  # the real worker stops (403 crashed it)


def test_a_download_while_the_sweeper_requeues_the_job_answers_404(
    server_factory: Callable[..., Server],
) -> None:
    server = server_factory({"TIMEOUT_FAILURE": "1", "SWEEP_INTERVAL": "0.1"})
    server.submit()
    _, job = pull_one(server, "w1")
    file_id = job["handler"]["files_down"]["config/param_run_in.yaml"]
    url = f"{server.url}/files/{file_id}/url"
    answers = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # downloading, no keep-alive: the sweeper takes it back
        answers.append(requests.get(url, headers=server.auth("w1"), timeout=10).status_code)
        if answers[-1] != 200:
            break
        time.sleep(0.05)
    assert answers[-1] == 404, answers
    assert set(answers) <= {200, 404}


def test_a_slow_upstream_never_slows_the_worker_and_nothing_is_sent_twice(
    server_factory: Callable[..., Server], upstream: Upstream
) -> None:
    server = server_factory(upstream_env(upstream))
    upstream.set(delay=5.0)
    cycles = 200
    ids = [server.submit()["job"]["meta"]["job_id"] for _ in range(cycles)]
    pulls: list[float] = []
    updates: list[float] = []

    def worker(name: str, jobs: int) -> None:
        for _ in range(jobs):
            started = time.monotonic()
            queue_id, _ = pull_one(server, name)
            pulls.append(time.monotonic() - started)
            for status in ("running", "finished"):
                started = time.monotonic()
                assert server.put_status(queue_id, status, name).status_code == 204
                updates.append(time.monotonic() - started)

    with ThreadPoolExecutor(4) as pool:
        for done in [pool.submit(worker, f"w{i}", cycles // 4) for i in range(4)]:
            done.result()

    # Not a timing measurement (benchmarks/load.py --upstream-delay 5 gives the figures): with
    # the worker waiting for a 5 s answer, calls would take seconds; a bounded wait keeps every
    # one far below a second on any machine.
    pull_p99 = statistics.quantiles(pulls, n=100)[98]
    update_p99 = statistics.quantiles(updates, n=100)[98]
    print(f"slow upstream: pull p99 {pull_p99 * 1e3:.0f} ms, update p99 {update_p99 * 1e3:.0f} ms")
    assert max(pulls) < 1.0, sorted(pulls)[-5:]
    assert max(updates) < 1.0, sorted(updates)[-5:]

    # Every change arrives, each exactly once: nothing was sent again because we stopped
    # waiting for a slow answer.
    expected = Counter({(i, s): 1 for i in ids for s in ("pulled", "running", "finished")})

    def received() -> Counter[tuple[int, str]]:
        return Counter((e["job_id"], e["status"]) for e in upstream.events())

    upstream.wait_for(lambda: set(received()) >= set(expected), seconds=150)
    time.sleep(1)
    assert received() == expected
