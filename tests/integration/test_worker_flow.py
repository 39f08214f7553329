"""A whole job, driven the way the DECODE worker drives it, against a real ``serve`` process."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from tests.integration.conftest import Server

# Real processes on 127.0.0.1 (serve, the fake upstream, moto): docs/TESTING.md.
pytestmark = pytest.mark.e2e


def test_job_runs_end_to_end_like_the_decode_worker(server: Server, tmp_path: Path) -> None:
    submitted = server.submit()
    token = server.token("gpu-box-1")
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"

    # Pull with the worker's query: limit, cpu_cores, memory in MiB, GPU name and memory.
    query: dict[str, str | int] = {
        "limit": 1,
        "cpu_cores": 16,
        "memory": 64000,
        "gpu_model": "RTX",
        "gpu_memory": 8000,
    }
    response = session.get(f"{server.url}/jobs", params=query, timeout=10)
    assert response.status_code == 200
    jobs = response.json()
    assert len(jobs) == 1
    job_id, job = jobs.popitem()
    assert job == submitted["job"]  # exactly as submitted

    def status(value: str, **extra: str) -> None:
        r = session.put(
            f"{server.url}/jobs/{job_id}/status", params={"status": value, **extra}, timeout=10
        )
        assert r.status_code == 204, r.text

    status("preprocessing")
    status("preprocessing")  # the pinger repeats itself

    # Download every input through /files/{id}/url, sending the answer as is (no token added).
    workdir = tmp_path / "worker" / job_id
    for local, file_id in job["handler"]["files_down"].items():
        url_response = session.get(f"{server.url}/files/{file_id}/url", timeout=10)
        assert url_response.status_code == 200, url_response.text
        request = url_response.json()
        assert "Authorization" not in request["headers"]  # the token is never echoed
        download = requests.request(**request, timeout=10)
        assert download.status_code == 200
        target = workdir / local
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(download.content)
        assert target.read_bytes() == Path(file_id).read_bytes()

    status("running")
    status("postprocessing")

    # Upload results: one request for the URL, then the multipart POST as returned.
    outputs = {
        ("output", "output"): ("emitter.h5", b"\x89HDF\r\n" + bytes(range(256)) * 64),
        ("log", "log"): ("train.log", b"epoch 1 loss 0.5\n"),
        ("artifact", "model/sub"): ("model_0.pt", b"weights" * 1000),
    }
    for (kind, base_path), (name, content) in outputs.items():
        url_response = session.post(
            f"{server.url}/jobs/{job_id}/files/url",
            params={"base_path": base_path, "type": kind},
            timeout=10,
        )
        assert url_response.status_code == 201, url_response.text
        upload = requests.request(
            **url_response.json(), files={"file": (name, content)}, timeout=10
        )
        assert upload.status_code == 201, upload.text

    status("finished", runtime_details="")
    assert session.get(f"{server.url}/jobs/{job_id}/status", timeout=10).json() == "finished"

    for (kind, base_path), (name, content) in outputs.items():
        stored = Path(submitted["paths_upload"][kind]) / base_path / name
        assert stored.read_bytes() == content


def test_failed_job_reports_error_then_logs(server: Server) -> None:
    """On failure the worker sends error, pings postprocessing while uploading the logs, then
    sends error again with the logs' tail; every call is accepted and the job stays failed."""
    server.submit()
    (job_id,) = server.pull("w").keys()
    assert server.put_status(job_id, "running", "w").status_code == 204
    assert server.put_status(job_id, "error", "w", runtime_details="exit code 1").status_code == 204
    assert server.put_status(job_id, "postprocessing", "w").status_code == 204
    logs = "Logs:\n" + "x" * 1000
    assert server.put_status(job_id, "error", "w", runtime_details=logs).status_code == 204
    assert server.put_status(job_id, "finished", "w").status_code == 409
    r = requests.get(f"{server.url}/jobs/{job_id}/status", headers=server.auth("w"), timeout=10)
    assert r.json() == "error"


def test_openapi_document_is_served_for_clients_and_people(server: Server) -> None:
    ui = requests.get(f"{server.url}/docs", timeout=10)
    assert ui.status_code == 200
    assert "html" in ui.headers["content-type"]
    spec = requests.get(f"{server.url}/docs/openapi.json", timeout=10).json()
    assert requests.get(f"{server.url}/openapi.json", timeout=10).json() == spec
    assert {"/jobs", "/jobs/{job_id}/status", "/_jobs", "/files/{file_id}/url"} <= set(
        spec["paths"]
    )


def test_submission_is_echoed_as_sent(server: Server) -> None:
    body = server.job_body(priority=None, group="lab")
    body["job"]["meta"]["owner"] = "alice"
    echo = server.submit(body)
    assert echo == body  # null priority stays null: it means "the default" to the sender


def test_a_limit_beyond_the_cap_hands_out_what_fits(server: Server) -> None:
    for _ in range(3):
        server.submit()
    jobs = server.pull("w", limit=1000)
    assert len(jobs) == 3
    assert server.pull("w", limit=1000) == {}
