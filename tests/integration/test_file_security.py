"""Who may read and write which files (ARCHITECTURE §3, §4, §6): downloads only of inputs named by
the caller's active jobs, uploads only into the folders of a job the caller still holds on the same
attempt, signed links that break when touched, nothing outside the data root — not through
``..``, not through a symlink — and uploads that appear whole or not at all."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
import requests

from tests.integration.conftest import Server, as_json, start_server, stop_server
from workerfacing_api.adapters.signing import UrlSigner

# Real processes on 127.0.0.1 (serve, the fake upstream, moto): docs/TESTING.md.
pytestmark = pytest.mark.e2e


@dataclass
class Lane(Server):
    """The module's one service as a single test sees it: every job the test submits requires a
    GPU model named after the test, and every pull offers that model, so tests sharing the
    service never pull each other's jobs. (Files and job ids are unique per job anyway.)"""

    gpu: str = ""

    def job_body(self, job_id: int | None = None, **overrides: Any) -> dict[str, Any]:
        body = super().job_body(job_id, **overrides)
        body["job"]["hardware"]["gpu_model"] = self.gpu
        return body

    def pull(self, username: str = "worker-1", **params: Any) -> dict[str, Any]:
        return super().pull(username, **{"gpu_model": self.gpu, **params})


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("file-security"))
    yield server
    stop_server(server)


@pytest.fixture
def server(service: Server, request: pytest.FixtureRequest) -> Server:
    """Shadows the fresh-service fixture of conftest: one service per module, one lane per test
    (a start costs about a second; this module would need a dozen)."""
    shared = {f.name: getattr(service, f.name) for f in fields(service) if f.init}
    return Lane(**shared, gpu=f"gpu-of-{request.node.name}")


def pull_one(server: Server, worker: str) -> tuple[str, dict[str, Any]]:
    ((job_id, job),) = server.pull(worker).items()
    return job_id, job


def download_link(server: Server, worker: str, file_id: str) -> str:
    response = requests.get(
        f"{server.url}/files/{file_id}/url", headers=server.auth(worker), timeout=10
    )
    assert response.status_code == 200, response.text
    request = response.json()
    assert request["method"] == "get"
    assert request["headers"] == {}  # the worker's token is never echoed back
    url: str = request["url"]
    return url


def upload_link(
    server: Server, worker: str, job_id: str, file_type: str = "output", base_path: str = ""
) -> str:
    response = requests.post(
        f"{server.url}/jobs/{job_id}/files/url",
        params={"type": file_type, "base_path": base_path},
        headers=server.auth(worker),
        timeout=10,
    )
    assert response.status_code == 201, response.text
    request = response.json()
    assert request["method"] == "post"
    assert request["headers"] == {}
    url: str = request["url"]
    return url


def upload_to(url: str, name: str, content: bytes) -> requests.Response:
    """The DECODE worker's upload: the link as handed out, no token, one multipart field."""
    return requests.post(url, files={"file": (name, content)}, timeout=10)


def bearer_download(server: Server, worker: str, file_id: str) -> requests.Response:
    return requests.get(
        f"{server.url}/files/{file_id}/download", headers=server.auth(worker), timeout=10
    )


def bearer_upload(
    server: Server, worker: str, job_id: str, name: str, file_type: str = "output", **params: str
) -> requests.Response:
    return requests.post(
        f"{server.url}/jobs/{job_id}/files/upload",
        params={"type": file_type, **params},
        headers=server.auth(worker),
        files={"file": (name, b"uploaded")},
        timeout=10,
    )


def edit_link(url: str, path: str | None = None, **params: str | None) -> str:
    """``url`` with another path and with query parameters replaced (None: removed)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    for key, value in params.items():
        if value is None:
            query.pop(key, None)
        else:
            query[key] = value
    return urlunsplit(parts._replace(path=path or parts.path, query=urlencode(query)))


def query_of(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


def flipped(signature: str) -> str:
    return ("0" if signature[0] != "0" else "1") + signature[1:]


def files_below(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its content; a symlink by its target, not followed."""
    found: dict[str, bytes] = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder, name)
            content = os.readlink(path).encode() if path.is_symlink() else path.read_bytes()
            found[str(path.relative_to(root))] = content
    return found


def partial_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".part")]


def detail(response: requests.Response) -> str:
    text: str = as_json(response)["detail"]
    return text


# --- downloads ---------------------------------------------------------------------------------


def test_downloads_only_inputs_of_the_callers_active_jobs(server: Server) -> None:
    alices = server.submit()
    bobs = server.submit()
    alice_job, _ = pull_one(server, "alice")
    pull_one(server, "bob")
    stray = server.data_root / "alice" / "data" / "stray.mat"
    stray.write_bytes(b"named by no job")

    def refused(worker: str, file_id: str) -> None:
        # 404, which the DECODE worker reads as "stop" (it crashes on a 403).
        via_url = requests.get(
            f"{server.url}/files/{file_id}/url", headers=server.auth(worker), timeout=10
        )
        assert via_url.status_code == 404, via_url.text
        assert "not an input" in detail(via_url)
        direct = bearer_download(server, worker, file_id)
        assert direct.status_code == 404, direct.text

    for file_id in alices["job"]["handler"]["files_down"].values():
        assert requests.get(download_link(server, "alice", file_id), timeout=10).content == (
            Path(file_id).read_bytes()
        )
        assert bearer_download(server, "alice", file_id).content == Path(file_id).read_bytes()
        refused("bob", file_id)  # another worker's job
    for file_id in bobs["job"]["handler"]["files_down"].values():
        refused("alice", file_id)
    refused("alice", str(stray))  # in the data root, but no job names it

    # Once the job is over, its inputs are no longer the worker's to read.
    assert server.put_status(alice_job, "finished", "alice").status_code == 204
    for file_id in alices["job"]["handler"]["files_down"].values():
        refused("alice", file_id)

    # Bob's job is superseded by a resubmission of its meta.job_id: cancelled, so closed too.
    server.submit(server.job_body(job_id=bobs["job"]["meta"]["job_id"]))
    for file_id in bobs["job"]["handler"]["files_down"].values():
        refused("bob", file_id)


@pytest.mark.parametrize("ending", ["finished", "cancelled"])
def test_a_signed_download_link_ends_with_its_job(server: Server, ending: str) -> None:
    submitted = server.submit()
    job_id, job = pull_one(server, "alice")
    file_id = job["handler"]["files_down"]["data/calib.mat"]
    link = download_link(server, "alice", file_id)
    assert requests.get(link, timeout=10).status_code == 200
    if ending == "finished":
        assert server.put_status(job_id, "finished", "alice").status_code == 204
    else:
        server.submit(server.job_body(job_id=submitted["job"]["meta"]["job_id"]))
        assert server.put_status(job_id, "running", "alice").status_code == 404
    late = requests.get(link, timeout=10)
    assert late.status_code == 404, late.text


def test_signed_download_link_needs_no_token_and_breaks_when_touched(server: Server) -> None:
    server.submit()
    _, job = pull_one(server, "alice")
    config = job["handler"]["files_down"]["config/param_run_in.yaml"]
    calib = job["handler"]["files_down"]["data/calib.mat"]
    link = download_link(server, "alice", config)
    assert server.token("alice") not in link

    fetched = requests.get(link, timeout=10)
    assert fetched.status_code == 200, fetched.text
    assert fetched.content == Path(config).read_bytes()

    query = query_of(link)
    tampered = {
        "other-file-of-the-same-job": edit_link(link, path=f"/files/{calib}/download"),
        "file-outside-the-root": edit_link(link, path="/files//etc/passwd/download"),
        "other-worker": edit_link(link, worker="bob"),
        "worker-removed": edit_link(link, worker=None),
        "later-expiry": edit_link(link, expires=str(int(query["expires"]) + 3600)),
        "changed-signature": edit_link(link, signature=flipped(query["signature"])),
        "empty-signature": edit_link(link, signature=""),
        "no-signature": edit_link(link, signature=None),
        "extra-parameter": edit_link(link, base_path="x"),
    }
    for what, url in tampered.items():
        response = requests.get(url, timeout=10)
        assert response.status_code == 401, (what, response.text)
        assert response.content != Path(config).read_bytes()

    # Signed with the service's own key, but expired; the same link signed now works.
    signer = UrlSigner(server.api_key)
    path = f"/files/{config}/download"
    expired = signer.sign("GET", server.url, path, {"worker": "alice"}, time.time() - 3600)
    assert requests.get(expired, timeout=10).status_code == 401
    fresh = signer.sign("GET", server.url, path, {"worker": "alice"}, time.time())
    assert requests.get(fresh, timeout=10).status_code == 200


def test_signed_upload_link_needs_no_token_and_breaks_when_touched(server: Server) -> None:
    server.submit()
    server.submit()
    first = server.pull("alice", limit=2)
    job_id, other_job_id = first
    link = upload_link(server, "alice", job_id, "output", "results")
    assert server.token("alice") not in link
    query = query_of(link)
    before = files_below(server.data_root)

    tampered = {
        "other-job-of-the-same-worker": edit_link(link, path=f"/jobs/{other_job_id}/files/upload"),
        "other-type": edit_link(link, type="log"),
        "other-base-path": edit_link(link, base_path="elsewhere"),
        "base-path-upwards": edit_link(link, base_path="../.."),
        "other-worker": edit_link(link, worker="bob"),
        "other-attempt": edit_link(link, attempt="2"),
        "later-expiry": edit_link(link, expires=str(int(query["expires"]) + 3600)),
        "changed-signature": edit_link(link, signature=flipped(query["signature"])),
        "empty-signature": edit_link(link, signature=""),
        "no-signature": edit_link(link, signature=None),
        "extra-parameter": edit_link(link, runtime_details="x"),
    }
    for what, url in tampered.items():
        response = upload_to(url, "result.h5", b"forged")
        assert response.status_code == 401, (what, response.text)
    assert files_below(server.data_root) == before

    signer = UrlSigner(server.api_key)
    path = f"/jobs/{job_id}/files/upload"
    params = {"type": "output", "base_path": "results", "worker": "alice", "attempt": "1"}
    expired = signer.sign("POST", server.url, path, params, time.time() - 3600)
    assert upload_to(expired, "result.h5", b"late").status_code == 401
    assert files_below(server.data_root) == before

    stored = upload_to(link, "result.h5", b"the result")
    assert stored.status_code == 201, stored.text
    (output,) = server.data_root.glob("alice/output/*/results/result.h5")
    assert output.read_bytes() == b"the result"


# --- paths outside the data root ---------------------------------------------------------------


def test_files_outside_the_data_root_are_refused_even_when_a_job_names_them(
    server: Server, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"secret")
    body = server.job_body()
    body["job"]["handler"]["files_down"].update(
        {"passwd": "/etc/passwd", "secret": str(outside / "secret.txt")}
    )
    body["paths_upload"]["output"] = str(outside / "results")
    server.submit(body)
    job_id, _ = pull_one(server, "alice")

    for file_id in ("/etc/passwd", str(outside / "secret.txt")):
        via_url = requests.get(
            f"{server.url}/files/{file_id}/url", headers=server.auth("alice"), timeout=10
        )
        assert via_url.status_code == 403, via_url.text
        assert "outside the data root" in detail(via_url)
        assert bearer_download(server, "alice", file_id).status_code == 403
    url = requests.post(
        f"{server.url}/jobs/{job_id}/files/url",
        params={"type": "output"},
        headers=server.auth("alice"),
        timeout=10,
    )
    assert url.status_code == 403, url.text
    assert bearer_upload(server, "alice", job_id, "r.txt").status_code == 403
    assert files_below(outside) == {"secret.txt": b"secret"}


def test_symlinks_out_of_the_data_root_are_refused(server: Server, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"secret")
    shared = server.data_root / "alice" / "shared"
    shared.parent.mkdir(parents=True, exist_ok=True)
    shared.symlink_to(outside, target_is_directory=True)
    body = server.job_body()
    body["job"]["handler"]["files_down"]["secret"] = str(shared / "secret.txt")
    body["paths_upload"]["log"] = str(shared)  # an upload folder that is a symlink out
    server.submit(body)
    job_id, job = pull_one(server, "alice")

    # Download through a symlinked folder.
    file_id = str(shared / "secret.txt")
    via_url = requests.get(
        f"{server.url}/files/{file_id}/url", headers=server.auth("alice"), timeout=10
    )
    assert via_url.status_code == 403, via_url.text
    assert bearer_download(server, "alice", file_id).status_code == 403

    # A link handed out for a real input, whose file is then replaced by a symlink out.
    config = Path(job["handler"]["files_down"]["config/param_run_in.yaml"])
    link = download_link(server, "alice", str(config))
    config.unlink()
    config.symlink_to(outside / "secret.txt")
    swapped = requests.get(link, timeout=10)
    assert swapped.status_code == 403, swapped.text
    assert b"secret" not in swapped.content

    # Upload into a folder that is a symlink out.
    log_url = requests.post(
        f"{server.url}/jobs/{job_id}/files/url",
        params={"type": "log"},
        headers=server.auth("alice"),
        timeout=10,
    )
    assert log_url.status_code == 403, log_url.text
    assert bearer_upload(server, "alice", job_id, "train.log", "log").status_code == 403

    # Upload below a base_path that is a symlink out, before and after the link was granted.
    output = Path(body["paths_upload"]["output"])
    output.mkdir(parents=True)
    (output / "escape").symlink_to(outside, target_is_directory=True)
    escape_url = requests.post(
        f"{server.url}/jobs/{job_id}/files/url",
        params={"type": "output", "base_path": "escape"},
        headers=server.auth("alice"),
        timeout=10,
    )
    assert escape_url.status_code == 403, escape_url.text
    later = upload_link(server, "alice", job_id, "output", "later")
    (output / "later").symlink_to(outside, target_is_directory=True)
    assert upload_to(later, "pwned.txt", b"pwned").status_code == 403

    # A file name that is a symlink out is replaced, not written through.
    (output / "result.txt").symlink_to(outside / "secret.txt")
    replaced = upload_to(upload_link(server, "alice", job_id), "result.txt", b"result")
    assert replaced.status_code == 201, replaced.text
    assert not (output / "result.txt").is_symlink()
    assert (output / "result.txt").read_bytes() == b"result"

    assert files_below(outside) == {"secret.txt": b"secret"}


# --- uploads after the job left the worker -----------------------------------------------------


def test_superseded_job_takes_no_more_reports_or_uploads(server: Server) -> None:
    body = server.job_body(job_id=77)
    server.submit(body)
    old_id, _ = pull_one(server, "old-worker")
    link = upload_link(server, "old-worker", old_id, "output", "")
    assert server.put_status(old_id, "running", "old-worker").status_code == 204
    output = Path(body["paths_upload"]["output"])

    # The user deleted job 77 and submitted a new one that got the same id: the old job is
    # cancelled, and its worker is told to stop (404) wherever it turns.
    server.submit(server.job_body(job_id=77))
    status = requests.get(
        f"{server.url}/jobs/{old_id}/status", headers=server.auth("old-worker"), timeout=10
    )
    assert status.status_code == 404, status.text
    assert server.put_status(old_id, "running", "old-worker").status_code == 404
    url = requests.post(
        f"{server.url}/jobs/{old_id}/files/url",
        params={"type": "output"},
        headers=server.auth("old-worker"),
        timeout=10,
    )
    assert url.status_code == 404, url.text
    assert upload_to(link, "stale.h5", b"stale").status_code == 404
    assert bearer_upload(server, "old-worker", old_id, "stale.h5").status_code == 404
    assert list(output.rglob("stale.h5")) == []

    # The new job, with the same folders, is not the old worker's to report into.
    new_id, _ = pull_one(server, "new-worker")
    assert new_id != old_id
    assert server.put_status(new_id, "running", "old-worker").status_code == 404
    assert bearer_upload(server, "old-worker", new_id, "stale.h5").status_code == 404
    assert list(output.rglob("stale.h5")) == []
    fresh = upload_to(upload_link(server, "new-worker", new_id), "fresh.h5", b"fresh")
    assert fresh.status_code == 201, fresh.text
    assert (output / "fresh.h5").read_bytes() == b"fresh"


def test_requeued_job_takes_no_more_uploads(server_factory: Callable[..., Server]) -> None:
    """The sweeper takes back a silent job: its worker's links die, and when the same worker
    pulls the job again (RETRY_DIFFERENT=0) a link of the earlier attempt stays dead."""
    # Two seconds of silence and the job is taken back; that is also the time the test has,
    # once the worker pulled the job again, before the sweeper takes it back once more.
    server = server_factory(
        {"TIMEOUT_FAILURE": "2", "SWEEP_INTERVAL": "0.1", "RETRY_DIFFERENT": "0"}
    )
    body = server.job_body()
    server.submit(body)
    job_id, _ = pull_one(server, "w1")
    link = upload_link(server, "w1", job_id)

    deadline = time.monotonic() + 15
    while True:  # no keep-alive is sent: the sweeper re-queues the job
        status = requests.get(
            f"{server.url}/jobs/{job_id}/status", headers=server.auth("w1"), timeout=10
        )
        if status.json() == "queued":
            break
        assert time.monotonic() < deadline, "the sweeper did not re-queue the job"
        time.sleep(0.1)

    assert upload_to(link, "late.h5", b"late").status_code == 404
    assert bearer_upload(server, "w1", job_id, "late.h5").status_code == 404
    again, _ = pull_one(server, "w1")
    assert again == job_id
    earlier = upload_to(link, "late.h5", b"late")
    assert earlier.status_code == 404, earlier.text
    assert "no longer yours" in detail(earlier)
    assert list(server.data_root.rglob("late.h5")) == []
    current = upload_to(upload_link(server, "w1", job_id), "current.h5", b"current")
    assert current.status_code == 201, current.text


def test_upload_is_allowed_after_the_job_finished(server: Server) -> None:
    """The DECODE worker uploads the logs of a job it already reported finished or failed."""
    server.submit()
    job_id, _ = pull_one(server, "w1")
    link = upload_link(server, "w1", job_id, "log")
    assert server.put_status(job_id, "error", "w1").status_code == 204
    assert upload_to(link, "train.log", b"the logs").status_code == 201
    assert upload_to(upload_link(server, "w1", job_id, "log"), "more.log", b"+").status_code == 201


# --- atomic and bounded uploads ----------------------------------------------------------------

BOUNDARY = "wf-atomic-boundary"


def multipart(name: str, content: bytes, *, complete: bool = True) -> bytes:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode() if complete else b""
    return head + content + tail


def post_multipart(url: str, body: bytes) -> requests.Response:
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    return requests.post(url, data=body, headers=headers, timeout=10)


def abort_upload(url: str, body: bytes) -> None:
    """Announce ``body`` but send only half of it, then hang up, like a worker that crashed."""
    parts = urlsplit(url)
    head = (
        f"POST {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    assert parts.hostname is not None
    assert parts.port is not None
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as conn:
        conn.sendall(head + body[: len(body) // 2])
        time.sleep(0.2)  # let the service start writing before the connection drops


def test_upload_is_atomic(server: Server) -> None:
    body = server.job_body()
    server.submit(body)
    job_id, _ = pull_one(server, "w1")
    output = Path(body["paths_upload"]["output"])
    first = bytes(range(256)) * 2048  # 512 KiB, more than one chunk
    second = b"\x00second version\xff" * 40000

    assert upload_to(upload_link(server, "w1", job_id), "model.pt", first).status_code == 201
    assert (output / "model.pt").read_bytes() == first
    assert upload_to(upload_link(server, "w1", job_id), "model.pt", second).status_code == 201
    assert (output / "model.pt").read_bytes() == second
    assert partial_files(server.data_root) == []

    # A body that ends inside the file: refused, and the earlier version is still whole.
    link = upload_link(server, "w1", job_id)
    truncated = post_multipart(link, multipart("model.pt", first, complete=False))
    assert truncated.status_code == 422, truncated.text
    assert (output / "model.pt").read_bytes() == second
    new = post_multipart(link, multipart("new.pt", first, complete=False))
    assert new.status_code == 422, new.text
    assert not (output / "new.pt").exists()
    assert partial_files(server.data_root) == []

    # A worker that hangs up half-way leaves neither a file nor a temporary one behind.
    abort_upload(link, multipart("model.pt", first + first))
    abort_upload(link, multipart("aborted.pt", first + first))
    deadline = time.monotonic() + 10
    while partial_files(server.data_root) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert partial_files(server.data_root) == []
    assert (output / "model.pt").read_bytes() == second
    assert not (output / "aborted.pt").exists()
    assert sorted(p.name for p in output.iterdir()) == ["model.pt"]


def test_upload_over_the_limit_is_refused(server_factory: Callable[..., Server]) -> None:
    server = server_factory({"MAX_UPLOAD_BYTES": "1000"})
    body = server.job_body()
    server.submit(body)
    job_id, _ = pull_one(server, "w1")
    output = Path(body["paths_upload"]["output"])

    assert upload_to(upload_link(server, "w1", job_id), "exact.bin", b"e" * 1000).status_code == 201
    assert (output / "exact.bin").read_bytes() == b"e" * 1000

    for name, size in (("one-more.bin", 1001), ("huge.bin", 3 * 2**20)):
        response = upload_to(upload_link(server, "w1", job_id), name, b"x" * size)
        assert response.status_code == 413, (name, response.text)
        assert "MAX_UPLOAD_BYTES" in detail(response)
        assert not (output / name).exists()
    # An oversized overwrite leaves the earlier file as it was.
    response = upload_to(upload_link(server, "w1", job_id), "exact.bin", b"y" * 1001)
    assert response.status_code == 413, response.text
    assert (output / "exact.bin").read_bytes() == b"e" * 1000
    assert partial_files(server.data_root) == []
