"""Bad input on every endpoint (DESIGN §4, §6): each answers a 4xx whose JSON ``detail`` names the
problem, never a 500, and leaves both the queue database and the files on disk as they were.

One service serves the whole module; every check compares the database and the file tree just
before and just after its own request, so the order of the tests does not matter.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.integration.conftest import Server, as_json, start_server, stop_server

# Real processes on 127.0.0.1 (serve, the fake upstream, moto): docs/TESTING.md.
pytestmark = pytest.mark.e2e

HOLDER = "holder-1"  # the worker that pulled the module's job
INTRUDER = "intruder-1"  # a valid worker that holds nothing
HUGE = "99999999999999999999999"  # beyond any database integer
BAIT_GPU = "bait-gpu"  # hardware of a queued job that every bad pull below would fit
NEVER_GPU = "no-such-gpu"  # hardware of submissions that must never be pulled by accident
STATE_DIR = ".workerfacing-api"


@dataclass(frozen=True)
class Queue:
    server: Server
    held: str  # queue id of a job pulled by HOLDER
    held_file: str  # one of that job's files_down
    stray: Path  # a file in the data root that no job names


@pytest.fixture(scope="module")
def queue(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Queue]:
    server = start_server(tmp_path_factory.mktemp("bad-input"))
    try:
        server.submit()
        ((held, job),) = server.pull(HOLDER).items()
        # Should a bad pull be accepted after all, it claims this job and the database changes.
        bait = server.job_body()
        bait["job"]["hardware"]["gpu_model"] = BAIT_GPU
        server.submit(bait)
        stray = server.data_root / "alice" / "data" / "stray.mat"
        stray.write_bytes(b"an input of no job")
        held_file = job["handler"]["files_down"]["data/calib.mat"]
        yield Queue(server=server, held=held, held_file=held_file, stray=stray)
    finally:
        stop_server(server)


def files_of(root: Path) -> dict[str, bytes]:
    """Every file under the service's directory with its content (the database and the log of
    the service aside), symlinks not followed: what a rejected request must leave untouched."""
    found: dict[str, bytes] = {}
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d != STATE_DIR]
        for name in names:
            path = Path(folder, name)
            if path == root / "serve.log":
                continue
            content = os.readlink(path).encode() if path.is_symlink() else path.read_bytes()
            found[str(path.relative_to(root))] = content
    return found


def assert_refused(
    server: Server, send: Callable[[], requests.Response], status: int | None, names: str
) -> str:
    """Send a request that must be refused with ``status`` (None: any 4xx) and a detail
    mentioning ``names``; the database and the files must be unchanged. Returns the detail."""
    rows, files = server.db_snapshot(), files_of(server.root)
    response = send()
    if status is None:
        assert 400 <= response.status_code < 500, response.text
    else:
        assert response.status_code == status, response.text
    body = as_json(response)
    assert isinstance(body, dict), body
    assert set(body) == {"detail"}, body
    detail = body["detail"]
    assert isinstance(detail, str), detail
    assert names.lower() in detail.lower(), detail
    assert server.db_snapshot() == rows, "a refused request changed the database"
    assert files_of(server.root) == files, "a refused request changed the files"
    return detail


def send_raw(method: str, url: str, **kwargs: Any) -> requests.Response:
    """Send ``url`` exactly as written: ``requests`` itself would resolve ``..`` segments."""
    with requests.Session() as session:
        prepared = session.prepare_request(
            requests.Request(method, "http://placeholder/", **kwargs)
        )
        prepared.url = url
        return session.send(prepared, timeout=10)


# --- GET /jobs ---------------------------------------------------------------------------------

PULL_CASES = [
    pytest.param({"memory": None}, "memory", id="memory-missing"),
    pytest.param({"memory": "abc"}, "memory", id="memory-not-a-number"),
    pytest.param({"memory": -1}, "memory", id="memory-negative"),
    pytest.param({"memory": HUGE}, "memory", id="memory-huge"),
    pytest.param({"memory": "1.5"}, "memory", id="memory-fraction"),
    pytest.param({"cpu_cores": "abc"}, "cpu_cores", id="cpu-cores-not-a-number"),
    pytest.param({"cpu_cores": -2}, "cpu_cores", id="cpu-cores-negative"),
    pytest.param({"gpu_memory": -5}, "gpu_memory", id="gpu-memory-negative"),
    pytest.param({"gpu_mem": "lots"}, "gpu_mem", id="gpu-mem-not-a-number"),
    pytest.param({"limit": 0}, "limit", id="limit-0"),
    pytest.param({"limit": 2**64}, "limit", id="limit-huge"),
    pytest.param({"limit": "abc"}, "limit", id="limit-not-a-number"),
    pytest.param({"limit": -1}, "limit", id="limit-negative"),
    pytest.param({"older_than": -1}, "older_than", id="older-than-negative"),
    pytest.param({"older_than": "nan"}, "older_than", id="older-than-nan"),
    pytest.param({"older_than": "soon"}, "older_than", id="older-than-not-a-number"),
]


@pytest.mark.parametrize(("params", "names"), PULL_CASES)
def test_pull_refuses_bad_query(queue: Queue, params: dict[str, Any], names: str) -> None:
    server = queue.server
    query: dict[str, Any] = {"limit": 1, "cpu_cores": 8, "memory": 64000, "gpu_model": BAIT_GPU}
    query.update(params)

    def send() -> requests.Response:
        return requests.get(
            f"{server.url}/jobs", params=query, headers=server.auth(HOLDER), timeout=10
        )

    assert_refused(server, send, 422, names)


def test_pull_ignores_unknown_parameters(queue: Queue) -> None:
    """The DECODE worker may send more than the contract names; a query parameter called
    ``environment`` does not override the token's environment either."""
    server = queue.server
    body = server.job_body()
    body["job"]["hardware"]["gpu_model"] = "unknown-params-gpu"
    submitted = server.submit(body)
    query: dict[str, str | int] = {
        "memory": 1,
        "gpu_model": "unknown-params-gpu",
        "hostname": "x",
        "environment": "cloud",
        "foo": "bar",
    }
    response = requests.get(
        f"{server.url}/jobs", params=query, headers=server.auth("curious-1"), timeout=10
    )
    assert response.status_code == 200, response.text
    assert list(as_json(response).values()) == [submitted["job"]]


# --- job ids: GET/PUT /jobs/{id}/status, POST /jobs/{id}/files/url, POST /jobs/{id}/files/upload

JOB_ENDPOINTS: dict[str, tuple[str, str, dict[str, str]]] = {
    "get-status": ("GET", "/jobs/{id}/status", {}),
    "put-status": ("PUT", "/jobs/{id}/status", {"status": "running"}),
    "upload-url": ("POST", "/jobs/{id}/files/url", {"type": "output"}),
    "upload": ("POST", "/jobs/{id}/files/upload", {"type": "output"}),
}


def job_request(
    server: Server, endpoint: str, job_id: str, user: str, **extra: str
) -> requests.Response:
    method, path, params = JOB_ENDPOINTS[endpoint]
    files = {"file": ("result.txt", b"result")} if endpoint == "upload" else None
    return requests.request(
        method,
        server.url + path.format(id=job_id),
        params={**params, **extra},
        headers=server.auth(user),
        files=files,
        timeout=10,
    )


@pytest.mark.parametrize("job_id", [HUGE, "-1", "0", "424242", "9223372036854775808"])
@pytest.mark.parametrize("endpoint", list(JOB_ENDPOINTS))
def test_unknown_job_is_404(queue: Queue, endpoint: str, job_id: str) -> None:
    assert_refused(
        queue.server, lambda: job_request(queue.server, endpoint, job_id, HOLDER), 404, "not found"
    )


@pytest.mark.parametrize("job_id", ["abc", "1.5", "%00"])
@pytest.mark.parametrize("endpoint", list(JOB_ENDPOINTS))
def test_a_job_id_that_is_not_a_number_is_404_saying_so(
    queue: Queue, endpoint: str, job_id: str
) -> None:
    assert_refused(
        queue.server,
        lambda: job_request(queue.server, endpoint, job_id, HOLDER),
        404,
        "whole numbers",
    )


@pytest.mark.parametrize("endpoint", ["put-status", "upload-url", "upload"])
def test_job_of_another_worker_is_404(queue: Queue, endpoint: str) -> None:
    """The real worker reads a 404 as "stop"; it must not learn more about a job not its own."""
    assert_refused(
        queue.server,
        lambda: job_request(queue.server, endpoint, queue.held, INTRUDER),
        404,
        "not found",
    )


# --- PUT /jobs/{id}/status ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({}, id="status-missing"),
        pytest.param({"status": "queued"}, id="queued"),
        pytest.param({"status": "pulled"}, id="pulled"),
        pytest.param({"status": "bogus"}, id="bogus"),
        pytest.param({"status": ""}, id="empty"),
        pytest.param({"status": "cancelled"}, id="cancelled"),
        pytest.param({"status": "RUNNING"}, id="upper-case"),
    ],
)
def test_status_update_refuses_bad_status(queue: Queue, params: dict[str, str]) -> None:
    server = queue.server

    def send() -> requests.Response:
        return requests.put(
            f"{server.url}/jobs/{queue.held}/status",
            params=params,
            headers=server.auth(HOLDER),
            timeout=10,
        )

    assert_refused(server, send, 422, "status")


# --- POST /jobs/{id}/files/url -----------------------------------------------------------------

UPLOAD_QUERY_CASES = [
    pytest.param({"type": None}, "type", id="type-missing"),
    pytest.param({"type": "bogus"}, "type", id="type-bogus"),
    pytest.param({"base_path": "../../x"}, "base_path", id="base-path-parent"),
    pytest.param({"base_path": "a/../../b"}, "base_path", id="base-path-parent-inside"),
    pytest.param({"base_path": ".."}, "base_path", id="base-path-dotdot"),
    pytest.param({"base_path": "..\\..\\x"}, "base_path", id="base-path-backslashes"),
    pytest.param({"base_path": "/etc"}, "base_path", id="base-path-absolute"),
    pytest.param({"base_path": "a\x00b"}, "NUL", id="base-path-nul"),
]


@pytest.mark.parametrize(("params", "names"), UPLOAD_QUERY_CASES)
def test_upload_url_refuses_bad_query(queue: Queue, params: dict[str, Any], names: str) -> None:
    server = queue.server

    def send() -> requests.Response:
        return requests.post(
            f"{server.url}/jobs/{queue.held}/files/url",
            params={"type": "output", "base_path": "", **params},
            headers=server.auth(HOLDER),
            timeout=10,
        )

    assert_refused(server, send, 422, names)


# --- POST /jobs/{id}/files/upload --------------------------------------------------------------


@pytest.mark.parametrize(("params", "names"), UPLOAD_QUERY_CASES)
def test_upload_refuses_bad_query(queue: Queue, params: dict[str, Any], names: str) -> None:
    server = queue.server

    def send() -> requests.Response:
        return requests.post(
            f"{server.url}/jobs/{queue.held}/files/upload",
            params={"type": "output", "base_path": "", **params},
            headers=server.auth(HOLDER),
            files={"file": ("result.txt", b"result")},
            timeout=10,
        )

    assert_refused(server, send, 422, names)


@pytest.mark.parametrize(
    "filename", ["../x", "a/b", "..", ".", "a\\b", "", "/etc/wf-test-upload", "ok\x00.txt"]
)
def test_upload_refuses_file_names_with_path_parts(queue: Queue, filename: str) -> None:
    server = queue.server

    def send() -> requests.Response:
        return requests.post(
            f"{server.url}/jobs/{queue.held}/files/upload",
            params={"type": "output"},
            headers=server.auth(HOLDER),
            files={"file": (filename, b"must not be written")},
            timeout=10,
        )

    assert_refused(server, send, 422, "file name")
    assert not Path("/etc/wf-test-upload").exists()


BOUNDARY = "wf-test-boundary"
PART_HEAD = (
    f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="r.txt"\r\n\r\n'
).encode()

BODY_CASES = [
    pytest.param(b"plain bytes", "text/plain", "multipart", id="plain-text"),
    pytest.param(b'{"file": "r.txt"}', "application/json", "multipart", id="json"),
    pytest.param(b"", "", "multipart", id="no-content-type"),
    pytest.param(PART_HEAD + b"x\r\n", "multipart/form-data", "multipart", id="no-boundary"),
    pytest.param(
        b"garbage", f"multipart/form-data; boundary={BOUNDARY}", "multipart", id="garbage"
    ),
    pytest.param(
        PART_HEAD + b"half a file",
        f"multipart/form-data; boundary={BOUNDARY}",
        "ended inside",
        id="truncated",
    ),
    pytest.param(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="other"; filename="r.txt"\r\n\r\n'
        f"x\r\n--{BOUNDARY}--\r\n".encode(),
        f"multipart/form-data; boundary={BOUNDARY}",
        "'file'",
        id="no-file-field",
    ),
    pytest.param(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"\r\n\r\n'
        f"x\r\n--{BOUNDARY}--\r\n".encode(),
        f"multipart/form-data; boundary={BOUNDARY}",
        "file name",
        id="field-without-file-name",
    ),
]


@pytest.mark.parametrize(("body", "content_type", "names"), BODY_CASES)
def test_upload_refuses_a_body_that_is_not_a_multipart_file(
    queue: Queue, body: bytes, content_type: str, names: str
) -> None:
    server = queue.server
    headers = server.auth(HOLDER)
    if content_type:
        headers["Content-Type"] = content_type

    def send() -> requests.Response:
        return requests.post(
            f"{server.url}/jobs/{queue.held}/files/upload",
            params={"type": "output"},
            headers=headers,
            data=body,
            timeout=10,
        )

    assert_refused(server, send, 422, names)


def test_traversal_writes_nothing_outside_the_data_root(queue: Queue) -> None:
    """Every way of naming a place outside the job's folder is refused, and nothing appears
    there: not under the service's directory, not in /etc or /tmp, not beside the service."""
    server = queue.server
    name = f"wf-escape-{uuid.uuid4().hex}.txt"
    escapes = [
        ("files/url", "../../..", name),
        ("files/url", "/etc", name),
        ("files/upload", "../../..", name),
        ("files/upload", "/etc", name),
        ("files/upload", "/tmp", name),
        ("files/upload", "", f"../../../../{name}"),
        ("files/upload", "", f"/tmp/{name}"),
    ]
    for action, base_path, filename in escapes:

        def send(
            action: str = action, base_path: str = base_path, filename: str = filename
        ) -> requests.Response:
            return requests.post(
                f"{server.url}/jobs/{queue.held}/{action}",
                params={"type": "output", "base_path": base_path},
                headers=server.auth(HOLDER),
                files={"file": (filename, b"escaped")},
                timeout=10,
            )

        assert_refused(server, send, 422, "")
    for place in (Path("/etc"), Path("/tmp"), server.root.parent, server.data_root.parent):
        assert not (place / name).exists(), place


def upload_as_holder(queue: Queue, base_path: str, filename: str) -> requests.Response:
    return requests.post(
        f"{queue.server.url}/jobs/{queue.held}/files/upload",
        params={"type": "output", "base_path": base_path},
        headers=queue.server.auth(HOLDER),
        files={"file": (filename, b"content")},
        timeout=10,
    )


@pytest.mark.parametrize(
    "base_path",
    [
        pytest.param("a" * 300, id="component-too-long"),
        pytest.param("/".join(["d"] * 3000), id="path-too-long"),
        pytest.param("blocker", id="an-existing-file"),
        pytest.param("blocker/sub", id="through-an-existing-file"),
    ],
)
def test_upload_refuses_a_folder_the_file_system_cannot_make(queue: Queue, base_path: str) -> None:
    """A base_path that passes the '..' check but cannot become a folder: the worker must get a
    4xx it can act on, not a 500 it retries forever."""
    blocker = upload_as_holder(queue, "", "blocker")  # a file where base_path wants a folder
    assert blocker.status_code == 201, blocker.text
    assert_refused(queue.server, lambda: upload_as_holder(queue, base_path, "r.txt"), None, "")


def test_upload_accepts_every_file_name_it_declares_acceptable(queue: Queue) -> None:
    name = "n" * 255  # check_file_name: "a plain name (no path), at most 255 bytes"
    response = upload_as_holder(queue, "long-names", name)
    assert response.status_code == 201, response.text
    stored = queue.server.data_root / "alice" / "output"
    assert [p.read_bytes() for p in stored.glob(f"*/long-names/{name}")] == [b"content"]


# --- GET /files/{id}/url and /download ----------------------------------------------------------

FILE_ID_CASES = [
    pytest.param("/etc/passwd", 403, "outside the data root", id="etc-passwd"),
    pytest.param("{root}/../serve.log", 403, "outside the data root", id="parent-of-root"),
    pytest.param(
        "{root}/alice/data/%2E%2E/%2E%2E/%2E%2E/serve.log",
        403,
        "outside the data root",
        id="encoded-dots",
    ),
    pytest.param("relative/x", 403, "outside the data root", id="relative"),
    pytest.param(
        "{root}/alice/data/../data/stray.mat", 404, "not an input", id="dots-to-unnamed-file"
    ),
    # Inside the root but no input of the caller's jobs: 404, which the worker reads as "stop"
    # (DESIGN §4); 403 is only for what lies outside the root.
    pytest.param("{stray}", 404, "not an input", id="unnamed-file"),
    pytest.param("{root}/alice/nothing-here.txt", 404, "not an input", id="missing-file"),
    pytest.param("{root}", 404, "not an input", id="the-root"),
    pytest.param("s3://bucket/key", 422, "S3", id="s3-on-local-storage"),
]


@pytest.mark.parametrize("action", ["url", "download"])
@pytest.mark.parametrize(("file_id", "status", "names"), FILE_ID_CASES)
def test_file_endpoints_refuse_files_outside_the_callers_jobs(
    queue: Queue, action: str, file_id: str, status: int, names: str
) -> None:
    server = queue.server
    target = file_id.format(root=server.data_root, stray=queue.stray)
    url = f"{server.url}/files/{target}/{action}"
    assert_refused(server, lambda: send_raw("GET", url, headers=server.auth(HOLDER)), status, names)


@pytest.mark.parametrize("action", ["url", "download"])
def test_file_of_another_workers_job_is_not_found_for_the_caller(queue: Queue, action: str) -> None:
    server = queue.server
    url = f"{server.url}/files/{queue.held_file}/{action}"
    assert_refused(
        server,
        lambda: requests.get(url, headers=server.auth(INTRUDER), timeout=10),
        404,
        "not an input",
    )
    # The holder may: the refusal above is about the caller, not the file.
    response = requests.get(url, headers=server.auth(HOLDER), timeout=10)
    assert response.status_code == 200, response.text


# --- POST /_jobs -------------------------------------------------------------------------------

DROP = object()

SUBMISSION_CASES = [
    pytest.param("job", DROP, "job", id="job-missing"),
    pytest.param("paths_upload", DROP, "paths_upload", id="paths-upload-missing"),
    pytest.param("paths_upload.log", DROP, "log", id="paths-upload-log-missing"),
    pytest.param("job.meta", DROP, "meta", id="meta-missing"),
    pytest.param("job.meta.job_id", DROP, "job_id", id="job-id-missing"),
    pytest.param(
        "job.meta.job_id",
        "7",
        "job_id",
        id="job-id-string",
    ),
    pytest.param("job.meta.job_id", -1, "job_id", id="job-id-negative"),
    pytest.param("job.meta.job_id", 2**64, "job_id", id="job-id-huge"),
    pytest.param("job.meta.job_id", 1.5, "job_id", id="job-id-fraction"),
    pytest.param("job.meta.date_created", None, "date_created", id="date-created-null"),
    pytest.param("environment", "mars", "environment", id="environment-mars"),
    pytest.param("priority", "high", "priority", id="priority-string"),
    pytest.param("priority", 2**40, "priority", id="priority-huge"),
    pytest.param("job.hardware.memory", -1, "memory", id="memory-negative"),
    pytest.param("job.handler.image_url", DROP, "image_url", id="image-url-missing"),
    pytest.param("job.handler.files_up", {"bogus": "x"}, "files_up", id="files-up-bogus-type"),
    pytest.param("job.handler.files_down", ["a"], "files_down", id="files-down-list"),
    pytest.param("job.app.cmd", "train", "cmd", id="cmd-string"),
]


def edit(body: dict[str, Any], dotted: str, value: object) -> None:
    *parents, last = dotted.split(".")
    node = body
    for key in parents:
        node = node[key]
    if value is DROP:
        del node[last]
    else:
        node[last] = value


def post_submission(server: Server, **kwargs: Any) -> requests.Response:
    headers = {"x-api-key": server.api_key, **kwargs.pop("headers", {})}
    return requests.post(f"{server.url}/_jobs", headers=headers, timeout=10, **kwargs)


@pytest.mark.parametrize(("where", "value", "names"), SUBMISSION_CASES)
def test_submission_refuses_invalid_job(
    queue: Queue, where: str, value: object, names: str
) -> None:
    server = queue.server
    body = server.job_body()
    body["job"]["hardware"]["gpu_model"] = NEVER_GPU  # never pulled, should it be stored
    edit(body, where, value)
    assert_refused(server, lambda: post_submission(server, json=body), 422, names)


@pytest.mark.parametrize(
    ("data", "names"),
    [
        pytest.param(b"not json", "JSON", id="not-json"),
        pytest.param(b'{"job": {"app": ', "truncated", id="truncated"),
        pytest.param(b"[1, 2]", "object", id="array"),
        pytest.param(b'"a job"', "object", id="string"),
        pytest.param(b"null", "object", id="null"),
        pytest.param(b"", "", id="empty"),
        pytest.param(b"[" * 5000, "nested", id="nested-arrays"),
    ],
)
def test_submission_refuses_a_body_that_is_not_a_job(queue: Queue, data: bytes, names: str) -> None:
    server = queue.server
    headers = {"Content-Type": "application/json"}
    assert_refused(server, lambda: post_submission(server, data=data, headers=headers), 422, names)


def test_submission_without_a_body_says_what_is_missing(queue: Queue) -> None:
    response = post_submission(queue.server, data=b"", headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    detail = as_json(response)["detail"].lower()
    assert "body" in detail or "json" in detail or "job" in detail, detail


def test_submission_nested_deeper_than_the_decoder_goes_is_refused(queue: Queue) -> None:
    server = queue.server
    body = server.job_body()
    body["job"]["meta"]["deep"] = "DEEP"
    data = json.dumps(body).replace('"DEEP"', '{"a": ' * 3000 + "{}" + "}" * 3000).encode()
    headers = {"Content-Type": "application/json"}
    assert_refused(
        server, lambda: post_submission(server, data=data, headers=headers), 422, "nested"
    )


# --- issue 10: what a black-box probe found -----------------------------------------------------


def test_a_submission_that_is_not_utf8_is_refused(queue: Queue) -> None:
    server = queue.server
    headers = {"x-api-key": server.api_key, "content-type": "application/json"}
    assert_refused(
        server,
        lambda: post_submission(server, data=b'{"job": "\xff\xfe"}', headers=headers),
        422,
        "UTF-8",
    )


def test_a_multipart_boundary_longer_than_the_parser_takes_is_refused(queue: Queue) -> None:
    server = queue.server
    boundary = "b" * 300
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\n'
        f"hello\r\n--{boundary}--\r\n"
    ).encode()
    assert_refused(
        server,
        lambda: requests.post(
            f"{server.url}/jobs/{queue.held}/files/upload",
            params={"type": "log"},
            headers={
                **server.auth(HOLDER),
                "content-type": f"multipart/form-data; boundary={boundary}",
            },
            data=body,
            timeout=10,
        ),
        422,
        "boundary",
    )


def test_a_query_string_too_long_for_the_http_parser_gets_json(queue: Queue) -> None:
    server = queue.server
    answer = requests.get(
        f"{server.url}/jobs",
        params={"memory": "1", "padding": "x" * 70_000},
        headers=server.auth(HOLDER),
        timeout=10,
    )
    assert answer.status_code == 400
    assert answer.headers["content-type"] == "application/json"
    assert "64 KiB" in answer.json()["detail"]


@pytest.mark.parametrize(
    "disposition",
    [
        pytest.param('filename="a\nb.bin"', id="newline"),
        pytest.param('filename="tab\there.txt"', id="tab"),
        pytest.param('filename="bell\x07.log"', id="bell"),
        pytest.param('filename="del\x7f.txt"', id="delete"),
    ],
)
def test_upload_refuses_file_names_with_control_characters(queue: Queue, disposition: str) -> None:
    # Written by hand: requests would percent-encode the name, which is then harmless.
    body = (
        f'--x\r\nContent-Disposition: form-data; name="file"; {disposition}\r\n\r\n'
        "content\r\n--x--\r\n"
    ).encode()
    server = queue.server
    assert_refused(
        server,
        lambda: requests.post(
            f"{server.url}/jobs/{queue.held}/files/upload",
            params={"type": "output"},
            headers={**server.auth(HOLDER), "content-type": "multipart/form-data; boundary=x"},
            data=body,
            timeout=10,
        ),
        422,
        "control",
    )


def test_options_of_the_status_path_name_both_methods(queue: Queue) -> None:
    answer = requests.options(f"{queue.server.url}/jobs/{queue.held}/status", timeout=10)
    assert {m.strip() for m in answer.headers["allow"].split(",")} == {"GET", "PUT", "OPTIONS"}


def test_a_client_hanging_up_during_an_upload_is_no_error_and_leaves_nothing(
    queue: Queue,
) -> None:
    server = queue.server
    files = files_of(server.data_root)
    logged = server.log_path.read_text()
    head = (
        f"POST /jobs/{queue.held}/files/upload?type=output HTTP/1.1\r\n"
        f"host: 127.0.0.1\r\nauthorization: {server.auth(HOLDER)['Authorization']}\r\n"
        "content-type: multipart/form-data; boundary=x\r\ncontent-length: 10000000\r\n\r\n"
        '--x\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n\r\n'
    ).encode()
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as client:
        client.sendall(head + b"\x00" * 200_000)
        time.sleep(0.5)  # the upload is under way, then the worker is killed
    deadline = time.monotonic() + 10
    while "hung up" not in server.log_path.read_text()[len(logged) :]:
        assert time.monotonic() < deadline, server.log_path.read_text()[len(logged) :]
        time.sleep(0.05)
    added = server.log_path.read_text()[len(logged) :]
    assert "ERROR" not in added, added
    assert "Traceback" not in added, added
    assert files_of(server.data_root) == files  # no partial file left behind
