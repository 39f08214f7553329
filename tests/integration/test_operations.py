"""The service as its operators and their machines meet it (ARCHITECTURE §7): liveness and readiness
for a load balancer, Prometheus metrics, and a deploy's SIGTERM under load."""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import (
    Cluster,
    Server,
    Upstream,
    as_json,
    start_server,
    stop_server,
    upstream_env,
)

# Real processes on 127.0.0.1 (serve, the fake upstream, moto): docs/TESTING.md.
pytestmark = pytest.mark.e2e

# -- health ------------------------------------------------------------------------------------


def test_liveness_and_readiness_need_no_credentials(server: Server) -> None:
    live = requests.get(f"{server.url}/health/live", timeout=5)
    assert (live.status_code, as_json(live)) == (200, {"status": "live"})
    ready = requests.get(f"{server.url}/health/ready", timeout=5)
    assert (ready.status_code, as_json(ready)) == (200, {"status": "ready"})


@pytest.mark.postgres
def test_readiness_follows_the_database(
    server_factory: Callable[..., Server], cluster: Cluster
) -> None:
    server = server_factory(db_url=cluster.url)

    def ready() -> requests.Response:
        return requests.get(f"{server.url}/health/ready", timeout=10)

    assert ready().status_code == 200
    cluster.stop("fast")
    down = ready()
    assert down.status_code == 503
    assert down.headers["retry-after"] == "5"
    assert "database" in as_json(down)["detail"]
    # Liveness does no I/O: the process is up, whatever the database does.
    assert requests.get(f"{server.url}/health/live", timeout=5).status_code == 200
    cluster.start()
    deadline = time.monotonic() + 20
    while ready().status_code != 200:
        assert time.monotonic() < deadline, "not ready again 20 s after the database came back"
        time.sleep(0.2)


# -- metrics -----------------------------------------------------------------------------------


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(server: Server, **headers: str) -> Samples:
    """Every sample of /metrics by (name, labels)."""
    response = requests.get(
        f"{server.url}/metrics", headers=headers or {"x-api-key": server.api_key}, timeout=10
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_are_protected(server: Server) -> None:
    url = f"{server.url}/metrics"
    assert requests.get(url, timeout=5).status_code == 401
    assert requests.get(url, headers={"x-api-key": "wrong"}, timeout=5).status_code == 401
    worker = requests.get(url, headers=server.auth("w1"), timeout=5)
    assert worker.status_code == 403
    assert "operators" in as_json(worker)["detail"]
    operator = server.auth("ops", groups=("operators",))
    assert requests.get(url, headers=operator, timeout=5).status_code == 200


def test_metrics_move_as_jobs_flow(server: Server) -> None:
    before = scrape(server)
    assert value(before, "workerfacing_jobs", state="queued") == 0
    server.submit()
    server.submit()
    (job_id,) = server.pull("w1")
    assert server.put_status(job_id, "running", "w1").status_code == 204
    assert server.put_status(job_id, "finished", "w1").status_code == 204
    assert server.put_status(424242, "running", "w1").status_code == 404
    server.pull("w2", memory=1)  # nothing fits: an empty pull... or the other job
    after = scrape(server)
    assert value(after, "workerfacing_jobs", state="finished") == 1
    assert (
        value(after, "workerfacing_jobs", state="queued")
        + value(after, "workerfacing_jobs", state="pulled")
        == 1
    )
    assert value(after, "workerfacing_pulls_total", outcome="job") >= 1
    assert value(after, "workerfacing_jobs_pulled_total") >= 1
    assert value(after, "workerfacing_status_updates_total", outcome="accepted") == 2
    assert value(after, "workerfacing_status_updates_total", outcome="not_found") == 1
    assert value(after, "workerfacing_workers_seen") == 2
    assert value(after, "workerfacing_oldest_queued_job_age_seconds") >= 0
    status_route = "/jobs/{job_id}/status"
    assert (
        value(
            after,
            "workerfacing_http_requests_total",
            route=status_route,
            method="PUT",
            status="204",
        )
        == 2
    )
    assert (
        value(
            after,
            "workerfacing_http_request_duration_seconds_count",
            route=status_route,
            method="PUT",
        )
        == 3
    )
    # Bounded labels: no job id or worker name anywhere in the exposition.
    for name, labels in after:
        for _, label in labels:
            assert "/jobs/{job_id}" in label or f"/jobs/{job_id}" not in label, (name, labels)
            assert label not in {"w1", "w2"}, (name, labels)


def test_metrics_off_answers_404(server_factory: Callable[..., Server]) -> None:
    server = server_factory({"METRICS": "0"})
    response = requests.get(
        f"{server.url}/metrics", headers={"x-api-key": server.api_key}, timeout=5
    )
    assert response.status_code == 404
    assert "METRICS=0" in as_json(response)["detail"]


# -- SIGTERM under load ------------------------------------------------------------------------


class Load:
    """Workers that cycle jobs like the DECODE worker, each request on a new connection (as
    through a load balancer), against whichever service ``url`` names now."""

    def __init__(self, server: Server, workers: int) -> None:
        self.server = server
        self.url = server.url
        self.answers: Counter[int] = Counter()
        self.refused = 0  # no connection: the process had stopped listening
        # Reset by the kernel: connections still in the listening socket's backlog when the
        # process closes it; or closed without an answer by the server as it shut down, the
        # request not read yet (uvicorn closes the connections that have no request under
        # way). The service never saw them (checked against its log by id).
        self.reset: dict[str, str] = {}  # request id -> the request
        self.broken: list[str] = []  # anything else that is not an answer: must not happen
        self.stop = threading.Event()
        self.finished: set[str] = set()
        self.threads = [
            threading.Thread(target=self._run, args=(f"w{i}",), daemon=True) for i in range(workers)
        ]

    def finish(self, jobs: int, seconds: float = 60) -> None:
        """Wait until ``jobs`` jobs finished, stop the workers, and check that every request
        that reached the service got a whole answer, 200 or 204."""
        deadline = time.monotonic() + seconds
        while len(self.finished) < jobs:
            assert time.monotonic() < deadline, f"{len(self.finished)} of {jobs} jobs finished"
            time.sleep(0.1)
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)
        assert self.broken == []
        assert set(self.answers) <= {200, 204}, self.answers
        log = self.server.log_path.read_text()
        seen = {rid: request for rid, request in self.reset.items() if rid in log}
        assert seen == {}, "requests the service took in were dropped without an answer"

    def _call(self, method: str, path: str, name: str, **params: Any) -> requests.Response | None:
        request_id = uuid.uuid4().hex
        headers = {**self.server.auth(name), "Connection": "close", "X-Request-ID": request_id}
        try:
            response = requests.request(
                method, f"{self.url}{path}", params=params, headers=headers, timeout=30
            )
        except requests.ConnectionError as exc:
            if "refused" in str(exc).lower():
                self.refused += 1
                time.sleep(0.05)
            elif any(m in str(exc).lower() for m in ("reset by peer", "without response")):
                self.reset[request_id] = f"{method} {path}"
                time.sleep(0.05)
            else:
                self.broken.append(f"{method} {path}: {exc}")
            return None
        self.answers[response.status_code] += 1
        return response

    def _run(self, name: str) -> None:
        while not self.stop.is_set():
            pulled = self._call("GET", "/jobs", name, limit=1, cpu_cores=8, memory=64000)
            if pulled is None or pulled.status_code != 200:
                continue
            jobs = pulled.json()
            if not jobs:
                time.sleep(0.05)
                continue
            (job_id,) = jobs
            for status in ("running", "finished"):
                while not self.stop.is_set():
                    done = self._call("PUT", f"/jobs/{job_id}/status", name, status=status)
                    if done is not None and done.status_code in (204, 404):
                        break
            self.finished.add(job_id)


def test_sigterm_under_load_answers_every_request_and_loses_nothing(
    tmp_path: Path, upstream: Upstream
) -> None:
    env = {
        **upstream_env(upstream),
        "SHUTDOWN_GRACE": "10",
        "LOCAL_STATE_DIR": str(tmp_path / "state"),
        "ACCESS_LOG": "1",  # every request the service takes in leaves its id in the log
    }
    first = start_server(tmp_path / "one", env)
    second: Server | None = None
    try:
        meta_ids = [first.submit()["job"]["meta"]["job_id"] for _ in range(60)]
        load = Load(first, workers=6)
        for thread in load.threads:
            thread.start()
        while len(load.finished) < 10:
            time.sleep(0.05)
        first.process.send_signal(signal.SIGTERM)
        assert first.process.wait(timeout=30) == 0  # a clean exit
        # The next process takes over (as a deploy's new task would); the workers go on.
        second = start_server(tmp_path / "two", env)
        load.url = second.url
        load.finish(60)
        upstream.wait_for(
            lambda: all(upstream.statuses(m)[-1:] == ["finished"] for m in meta_ids), 30
        )
        log = first.log_path.read_text()
        assert "Traceback" not in log, log[-3000:]
        assert " ERROR " not in log, log[-3000:]
    finally:
        for server in (first, second):
            if server is not None and server.process.poll() is None:
                stop_server(server)


def test_a_slow_upload_in_flight_finishes_after_sigterm(
    server_factory: Callable[..., Server],
) -> None:
    server = server_factory({"SHUTDOWN_GRACE": "10"})
    server.submit()
    (job_id,) = server.pull("w1")
    grant = requests.post(
        f"{server.url}/jobs/{job_id}/files/url",
        params={"type": "output", "base_path": ""},
        headers=server.auth("w1"),
        timeout=10,
    ).json()
    sent = threading.Event()

    def slow_body() -> Any:
        boundary = "xYz"
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            'filename="model.pt"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        for _ in range(10):
            yield b"\x00" * 1000
            sent.set()
            time.sleep(0.15)
        yield f"\r\n--{boundary}--\r\n".encode()

    result: dict[str, Any] = {}

    def upload() -> None:
        result["response"] = requests.post(
            grant["url"],
            data=slow_body(),
            headers={**grant["headers"], "Content-Type": "multipart/form-data; boundary=xYz"},
            timeout=30,
        )

    thread = threading.Thread(target=upload)
    thread.start()
    sent.wait(10)
    server.process.send_signal(signal.SIGTERM)
    thread.join(30)
    assert result["response"].status_code == 201, result["response"].text
    assert server.process.wait(timeout=30) == 0
    stored = list((server.data_root / "alice" / "output").rglob("model.pt"))
    assert len(stored) == 1
    assert stored[0].stat().st_size == 10_000


# -- several processes on one port -------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def test_serve_with_several_processes_on_one_port(tmp_path: Path, upstream: Upstream) -> None:
    server = start_server(tmp_path, upstream_env(upstream), args=("--workers", "2"))
    try:
        meta_ids = [server.submit()["job"]["meta"]["job_id"] for _ in range(40)]
        load = Load(server, workers=4)
        for thread in load.threads:
            thread.start()
        load.finish(40)
        upstream.wait_for(
            lambda: all(upstream.statuses(m) == ["pulled", "running", "finished"] for m in meta_ids)
        )
        # Two serving processes, started by uvicorn's supervisor (multiprocessing's spawn).
        servers = [
            pid
            for pid in _children(server.process.pid)
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]
        assert len(servers) == 2
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0
        assert all(not Path(f"/proc/{pid}").exists() for pid in servers)
    finally:
        if server.process.poll() is None:
            stop_server(server)
