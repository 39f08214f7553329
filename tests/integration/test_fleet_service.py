"""Fleet health on a running service, as the DECODE worker and operators meet it: a broken
worker's pulls get ``{}`` during its cool-off (and the worker just keeps polling), the operator's
``workers``, ``workers release``, ``jobs retry`` and ``jobs why``, and ``GET /_jobs/{id}/explain``
for the user-facing API."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from tests.integration.conftest import Server, Upstream, as_json, upstream_env
from tests.integration.test_cli import cli

# Real processes on 127.0.0.1 (serve, the fake upstream, moto): docs/TESTING.md.
pytestmark = pytest.mark.e2e

# The worker's own query (ARCHITECTURE §4): limit, cores, memory in MiB, GPU name and memory.
GPU_BOX: dict[str, str | int] = {
    "limit": 1,
    "cpu_cores": 16,
    "memory": 64000,
    "gpu_model": "RTX",
    "gpu_memory": 24000,
}


class DecodeLikeWorker:
    """Polls and runs jobs the way the DECODE worker does: ``GET /jobs`` with its hardware; an
    empty object means "nothing for you now": sleep and poll again; a job is pinged through
    preprocessing and running, then ends ``finished`` — or, on a broken node, ``error``,
    ``postprocessing`` (while the logs upload) and ``error`` with the end of the logs."""

    def __init__(self, server: Server, name: str, *, broken: bool) -> None:
        self.server = server
        self.name = name
        self.broken = broken
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {server.token(name)}"
        self.empty_polls = 0
        self.ran: list[str] = []

    def poll_once(self) -> str | None:
        """One turn of the worker's loop: the id of the job it ran, or None after ``{}``."""
        response = self.session.get(f"{self.server.url}/jobs", params=GPU_BOX, timeout=10)
        response.raise_for_status()  # the real worker crashes on anything but 200
        jobs = response.json()
        assert isinstance(jobs, dict)
        if not jobs:
            self.empty_polls += 1
            return None
        (job_id,) = jobs
        for status in ("preprocessing", "running"):
            self._status(job_id, status)
        if self.broken:
            self._status(job_id, "error", runtime_details="CUDA error: no kernel image")
            self._status(job_id, "postprocessing")
            self._status(job_id, "error", runtime_details="...CUDA error: no kernel image")
        else:
            self._status(job_id, "postprocessing")
            self._status(job_id, "finished", runtime_details="")
        self.ran.append(job_id)
        return str(job_id)

    def poll_until_a_job(self, seconds: float, every: float = 0.2) -> str:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            job_id = self.poll_once()
            if job_id is not None:
                return job_id
            time.sleep(every)
        raise AssertionError(f"{self.name} got no job within {seconds} s")

    def _status(self, job_id: str, status: str, **params: str) -> None:
        response = self.session.put(
            f"{self.server.url}/jobs/{job_id}/status",
            params={"status": status, **params},
            timeout=10,
        )
        assert response.status_code == 204, response.text


def operator(server: Server, *args: str) -> Any:
    env = {
        "QUEUE_DB_URL": f"sqlite:///{server.db_path}",
        "LOCAL_STATE_DIR": str(server.root / ".workerfacing-api"),
    }
    result = cli(*args, cwd=server.root, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout) if "--json" in args else result.stdout


def test_a_broken_gpu_node_is_set_aside_and_the_worker_keeps_polling(
    server_factory: Callable[..., Server],
) -> None:
    # Long enough for the operator's commands below to see the cool-off (each takes ~1.5 s).
    server = server_factory({"ASIDE_COOL_OFF": "8", "ASIDE_COOL_OFF_MAX": "60"})
    for _ in range(20):
        server.submit()
    good = DecodeLikeWorker(server, "good-box", broken=False)
    bad = DecodeLikeWorker(server, "broken-box", broken=True)
    good.poll_once()
    good.poll_once()
    for _ in range(3):
        assert bad.poll_once() is not None
    # Set aside: "{}" while jobs wait, which the worker takes as "nothing now" and polls on.
    assert bad.poll_once() is None
    assert bad.poll_once() is None
    assert good.poll_once() is not None  # the healthy worker keeps getting jobs
    listing = {w["account"]: w for w in operator(server, "workers", "--json")}
    assert listing["broken-box"]["set_aside"] is True
    assert "last 3 attempts failed" in listing["broken-box"]["aside_reason"]
    assert listing["broken-box"]["recent"] == "error 3"
    assert listing["good-box"]["set_aside"] is False
    assert listing["good-box"]["gpu_model"] == "RTX"
    assert listing["good-box"]["gpu_mem"] == 24000
    assert "of broken-box (until" in operator(server, "jobs", "stats")
    assert "set aside" in server.log_path.read_text()
    # After the cool-off the worker gets work again, at one of its ordinary polls.
    bad.poll_until_a_job(seconds=20)
    # Failing again, it is set aside for longer; an operator can end that early.
    bad.poll_until_a_job(seconds=10)
    bad.poll_until_a_job(seconds=10)
    assert bad.poll_once() is None
    listing = {w["account"]: w for w in operator(server, "workers", "--json")}
    assert listing["broken-box"]["strikes"] == 2
    assert "released" in operator(server, "workers", "release", "broken-box")
    assert bad.poll_once() is not None
    assert bad.empty_polls >= 3


def test_workers_lists_what_the_pulls_told(server: Server) -> None:
    assert "no worker has pulled" in operator(server, "workers")
    server.pull("box-a", gpu_model="A100", gpu_archi="ampere", gpu_mem=40000)
    server.submit()
    server.pull("box-b")
    text = operator(server, "workers")
    assert "account box-a: 1 node(s)" in text
    assert "127.0.0.1, no instance id  local" in text
    assert "A100 (ampere, 40\u2009000 MiB)" in text
    assert "jobs now: none" in text
    listing = operator(server, "workers", "--json")
    assert [(w["account"], w["address"]) for w in listing] == [
        ("box-a", "127.0.0.1"),
        ("box-b", "127.0.0.1"),
    ]
    assert len(listing[1]["active_jobs"]) == 1
    released = cli(
        "workers",
        "release",
        "nobody",
        cwd=server.root,
        env={
            "QUEUE_DB_URL": f"sqlite:///{server.db_path}",
            "LOCAL_STATE_DIR": str(server.root / ".workerfacing-api"),
        },
    )
    assert released.returncode == 2
    assert "nobody" in released.stderr
    assert len(released.stderr.strip().splitlines()) == 1
    assert "not set aside" in operator(server, "workers", "release", "box-a")


def test_jobs_retry_requeues_a_failed_job_and_upstream_hears_queued(
    server_factory: Callable[..., Server], upstream: Upstream
) -> None:
    server = server_factory(upstream_env(upstream))
    body = server.job_body(77)
    server.submit(body)
    (queue_id,) = server.pull("w1")
    assert server.put_status(queue_id, "error", "w1", runtime_details="boom").status_code == 204
    env = {
        **upstream_env(upstream),
        "QUEUE_DB_URL": f"sqlite:///{server.db_path}",
        "LOCAL_STATE_DIR": str(server.root / ".workerfacing-api"),
    }
    result = cli("jobs", "retry", queue_id, cwd=server.root, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"job {queue_id}: queued again"
    upstream.wait_for(lambda: upstream.statuses(77) == ["pulled", "error", "queued"])
    assert list(server.pull("w1")) == [queue_id]  # it starts over: any worker may take it
    again = cli("jobs", "retry", queue_id, "999999", cwd=server.root, env=env)
    assert again.returncode == 1
    assert f"job {queue_id}: not retried: it is pulled, not error" in again.stdout
    assert "job 999999: does not exist" in again.stdout


def test_explain_says_why_a_job_waits(server: Server) -> None:
    def explain(job_id: int | str, key: str | None = server.api_key) -> requests.Response:
        headers = {"x-api-key": key} if key is not None else {}
        return requests.get(f"{server.url}/_jobs/{job_id}/explain", headers=headers, timeout=10)

    body = server.job_body(501)
    body["job"]["hardware"]["gpu_mem"] = 40000
    server.submit(body)
    server.pull("box-24", gpu_model="RTX", gpu_memory=24000)
    server.pull("box-16", gpu_model="RTX", gpu_memory=16000)
    response = explain(501)
    assert response.status_code == 200
    why = as_json(response)
    assert (why["job_id"], why["status"], why["workers_seen"]) == (501, "queued", 2)
    assert why["reason"] == (
        "no local worker seen in the last 15 minutes has 40 000 MiB of GPU memory; "
        "the largest has 24 000"
    )
    # The operator's view of the same job, by queue id or by meta.job_id.
    text = operator(server, "jobs", "why", "501", "--meta")
    assert "40 000 MiB of GPU memory" in text
    by_queue_id = operator(server, "jobs", "why", str(why["queue_id"]), "--json")
    assert by_queue_id == why | {"waiting_seconds": by_queue_id["waiting_seconds"]}
    assert explain(501, key=None).status_code == 401
    assert explain(501, key="wrong").status_code == 401
    missing = explain(502)
    assert missing.status_code == 404
    assert "502" in as_json(missing)["detail"]
    assert explain(2**63).status_code == 404
    assert explain("abc").status_code == 404
    assert as_json(explain("501.0"))["job_id"] == 501  # as the submission took 501.0


class Instance(DecodeLikeWorker):
    """A cloud worker of the shared account on its own address (127.0.0.N): the real fetcher
    sends no instance id, so the service tells the instances apart by their address."""

    def __init__(self, server: Server, number: int, *, broken: bool) -> None:
        super().__init__(server, "cloud-workers", broken=broken)
        adapter = requests.adapters.HTTPAdapter()
        adapter.init_poolmanager(1, 1, source_address=(f"127.0.0.{number}", 0))
        self.session.mount("http://", adapter)


def test_one_broken_instance_of_a_shared_account_never_idles_the_others(
    server_factory: Callable[..., Server],
) -> None:
    """The cloud-like scenario, black-box: one account, ten instances on 127.0.0.2 … 127.0.0.11,
    the last one broken. Only it is set aside; the nine keep getting jobs."""
    server = server_factory()
    for _ in range(40):
        server.submit()
    healthy = [Instance(server, n, broken=False) for n in range(2, 11)]
    broken = Instance(server, 11, broken=True)
    for instance in healthy:
        assert instance.poll_once() is not None
    for _ in range(3):
        assert broken.poll_once() is not None
    assert broken.poll_once() is None  # set aside
    for instance in healthy:  # the same account, other nodes: still working
        assert instance.poll_once() is not None
    listing = operator(server, "workers", "--json")
    assert {w["account"] for w in listing} == {"cloud-workers"}
    by_address = {w["address"]: w for w in listing}
    assert sorted(by_address) == sorted(f"127.0.0.{n}" for n in range(2, 12))
    assert by_address["127.0.0.11"]["set_aside"] is True
    assert "X-Worker-Instance" in by_address["127.0.0.11"]["aside_reason"]
    assert not any(by_address[f"127.0.0.{n}"]["set_aside"] for n in range(2, 11))
    # X-Forwarded-For from an untrusted peer (TRUSTED_PROXIES is empty) changes nothing.
    spoof = Instance(server, 11, broken=False)
    spoof.session.headers["X-Forwarded-For"] = "127.0.0.2"
    assert spoof.poll_once() is None
    # The instance id tells apart what the address cannot.
    spoof.session.headers["X-Worker-Instance"] = "gpu-1"
    assert spoof.poll_once() is not None
