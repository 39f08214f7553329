"""Bad input on every endpoint (ARCHITECTURE §4, §6): each answers a 4xx whose JSON ``detail`` names
the problem, never a 500, and leaves the queue database, the files on disk and what the upstream was
told as they were.

The app is built as ``serve`` builds it, from the container, over a real SQLite file and over the
real PostgreSQL database (``db_api``), driven in this process by Litestar's test client. Each
test sets up its own queue (a job held by ``HOLDER``, a bait job every bad pull would fit, a
stray file in the data root). A family of refused requests is one test whose cases are subtests
against that one queue; each case compares the tables, the file tree and what the upstream was
told just before and just after its own request (``assert_refused``), so a case that changed
anything fails by itself. A request that is accepted, or changes what the next case would see,
is a test of its own.

What only the real server and its socket decide (a raw path with ``..`` segments, which the test
client would resolve before sending; a query string beyond the HTTP parser's limit; a client
hanging up mid-upload) is in ``test_bad_input_wire.py``.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.inprocess import API_KEY, Api, Stored

HOLDER = "holder-1"  # the worker that pulled the test's job
INTRUDER = "intruder-1"  # a valid worker that holds nothing
HUGE = "99999999999999999999999"  # beyond any database integer
BAIT_GPU = "bait-gpu"  # hardware of a queued job that every bad pull below would fit
NEVER_GPU = "no-such-gpu"  # hardware of submissions that must never be pulled by accident
HELD_JOB, BAIT_JOB, OTHER_JOB = 1, 2, 3  # upstream job ids


@dataclass(frozen=True)
class Queue:
    api: Api
    stored: Stored
    held: str  # queue id of a job pulled by HOLDER
    held_file: str  # one of that job's files_down
    stray: Path  # a file in the data root that no job names
    data_root: Path  # USER_DATA_ROOT_PATH


@pytest.fixture
async def queue(db_api: Api) -> Queue:
    api = db_api
    assert api.stored is not None
    await api.submit(HELD_JOB)
    ((held, job),) = (await api.pull(HOLDER)).items()
    # Should a bad pull be accepted after all, it claims this job and the database changes.
    await api.submit(BAIT_JOB, hardware={"gpu_model": BAIT_GPU})
    stray = api.user_root / "data" / "stray.mat"
    stray.write_bytes(b"an input of no job")
    held_file = job["handler"]["files_down"]["data/calib.mat"]
    made = Queue(api, api.stored, held, held_file, stray, api.user_root.parent)
    # What a refused request must leave as it was is there to compare: not nothing.
    rows = await made.stored.everything()
    assert len(rows["jobs"]) == 2, rows
    assert rows["job_attempts"], rows
    assert {Path(held_file), stray} <= {made.data_root / f for f in files_of(made.data_root)}
    return made


def files_of(root: Path) -> dict[str, bytes]:
    """Every file under the data root with its content, symlinks not followed: what a rejected
    request must leave untouched."""
    found: dict[str, bytes] = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder, name)
            content = os.readlink(path).encode() if path.is_symlink() else path.read_bytes()
            found[str(path.relative_to(root))] = content
    return found


Send = Callable[[], Awaitable[httpx.Response]]


async def assert_refused(queue: Queue, send: Send, status: int | None, names: str) -> str:
    """Send a request that must be refused with ``status`` (None: any 4xx) and a detail
    mentioning ``names``; the database, the files and the upstream must be unchanged. Returns
    the detail."""
    rows, files = await queue.stored.everything(), files_of(queue.data_root)
    heard = len(queue.api.upstream.calls)
    response = await send()
    if status is None:
        assert 400 <= response.status_code < 500, response.text
    else:
        assert response.status_code == status, response.text
    assert response.headers.get("content-type", "").startswith("application/json"), response.text
    body = json.loads(response.content)
    assert isinstance(body, dict), body
    assert set(body) == {"detail"}, body
    detail = body["detail"]
    assert isinstance(detail, str), detail
    assert names.lower() in detail.lower(), detail
    assert await queue.stored.everything() == rows, "a refused request changed the database"
    assert files_of(queue.data_root) == files, "a refused request changed the files"
    assert len(queue.api.upstream.calls) == heard, "a refused request was told upstream"
    return detail


def query(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` as ``requests`` sends them: a parameter set to None is left out (httpx would
    send it empty)."""
    return {k: v for k, v in params.items() if v is not None}


def multipart(filename: str, content: bytes, field: str = "file") -> tuple[bytes, str]:
    """A one-file multipart body and its content type, the file name written as given: httpx
    would escape a backslash, percent-encode a NUL and leave out an empty name."""
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
            f'filename="{filename}"\r\n\r\n'
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


async def post_file(
    queue: Queue,
    path: str,
    params: dict[str, Any],
    filename: str,
    content: bytes,
    user: str = HOLDER,
) -> httpx.Response:
    body, content_type = multipart(filename, content)
    headers = {**queue.api.auth(user), "Content-Type": content_type}
    return await queue.api.client.post(path, params=query(params), headers=headers, content=body)


async def get_as_written(queue: Queue, path: str, user: str = HOLDER) -> httpx.Response:
    """GET ``path`` with the client's word that it goes out exactly as written."""
    request = queue.api.client.build_request("GET", path, headers=queue.api.auth(user))
    assert request.url.raw_path == path.encode(), request.url.raw_path
    return await queue.api.client.send(request)


# --- GET /jobs ---------------------------------------------------------------------------------

FITS_THE_BAIT: dict[str, Any] = {"limit": 1, "cpu_cores": 8, "memory": 64000, "gpu_model": BAIT_GPU}

# case: (query parameters over a pull that fits the bait job, what the detail names)
PULL_CASES: dict[str, tuple[dict[str, Any], str]] = {
    "memory-missing": ({"memory": None}, "memory"),
    "memory-not-a-number": ({"memory": "abc"}, "memory"),
    "memory-negative": ({"memory": -1}, "memory"),
    "memory-huge": ({"memory": HUGE}, "memory"),
    "memory-fraction": ({"memory": "1.5"}, "memory"),
    "cpu-cores-not-a-number": ({"cpu_cores": "abc"}, "cpu_cores"),
    "cpu-cores-negative": ({"cpu_cores": -2}, "cpu_cores"),
    "gpu-memory-negative": ({"gpu_memory": -5}, "gpu_memory"),
    "gpu-mem-not-a-number": ({"gpu_mem": "lots"}, "gpu_mem"),
    "limit-0": ({"limit": 0}, "limit"),
    "limit-huge": ({"limit": 2**64}, "limit"),
    "limit-not-a-number": ({"limit": "abc"}, "limit"),
    "limit-negative": ({"limit": -1}, "limit"),
    "older-than-negative": ({"older_than": -1}, "older_than"),
    "older-than-nan": ({"older_than": "nan"}, "older_than"),
    "older-than-not-a-number": ({"older_than": "soon"}, "older_than"),
}


async def test_pull_refuses_bad_query(queue: Queue, subtests: pytest.Subtests) -> None:
    for case, (params, names) in PULL_CASES.items():
        with subtests.test(case=case):
            sent = {**FITS_THE_BAIT, **params}
            send = partial(
                queue.api.client.get, "/jobs", params=query(sent), headers=queue.api.auth(HOLDER)
            )
            await assert_refused(queue, send, 422, names)


async def test_pull_ignores_unknown_parameters(queue: Queue) -> None:
    """The DECODE worker may send more than the contract names; a query parameter called
    ``environment`` does not override the token's environment either."""
    submitted = await queue.api.submit(OTHER_JOB, hardware={"gpu_model": "unknown-params-gpu"})
    sent: dict[str, str | int] = {
        "memory": 1,
        "gpu_model": "unknown-params-gpu",
        "hostname": "x",
        "environment": "cloud",
        "foo": "bar",
    }
    response = await queue.api.client.get("/jobs", params=sent, headers=queue.api.auth("curious-1"))
    assert response.status_code == 200, response.text
    assert list(response.json().values()) == [submitted["job"]]


# --- job ids: GET/PUT /jobs/{id}/status, POST /jobs/{id}/files/url, POST /jobs/{id}/files/upload

JOB_ENDPOINTS: dict[str, tuple[str, str, dict[str, str]]] = {
    "get-status": ("GET", "/jobs/{id}/status", {}),
    "put-status": ("PUT", "/jobs/{id}/status", {"status": "running"}),
    "upload-url": ("POST", "/jobs/{id}/files/url", {"type": "output"}),
    "upload": ("POST", "/jobs/{id}/files/upload", {"type": "output"}),
}


async def job_request(queue: Queue, endpoint: str, job_id: str, user: str) -> httpx.Response:
    method, path, params = JOB_ENDPOINTS[endpoint]
    url = path.format(id=job_id)
    if endpoint == "upload":
        return await post_file(queue, url, params, "result.txt", b"result", user)
    return await queue.api.client.request(method, url, params=params, headers=queue.api.auth(user))


UNKNOWN_JOB_IDS = [HUGE, "-1", "0", "424242", "9223372036854775808"]
NOT_A_NUMBER_JOB_IDS = ["abc", "1.5", "%00"]


async def test_unknown_job_is_404(queue: Queue, subtests: pytest.Subtests) -> None:
    for endpoint in JOB_ENDPOINTS:
        for job_id in UNKNOWN_JOB_IDS:
            with subtests.test(endpoint=endpoint, job_id=job_id):
                await assert_refused(
                    queue, partial(job_request, queue, endpoint, job_id, HOLDER), 404, "not found"
                )


async def test_a_job_id_that_is_not_a_number_is_404_saying_so(
    queue: Queue, subtests: pytest.Subtests
) -> None:
    for endpoint in JOB_ENDPOINTS:
        for job_id in NOT_A_NUMBER_JOB_IDS:
            with subtests.test(endpoint=endpoint, job_id=job_id):
                send = partial(job_request, queue, endpoint, job_id, HOLDER)
                await assert_refused(queue, send, 404, "whole numbers")


async def test_job_of_another_worker_is_404(queue: Queue, subtests: pytest.Subtests) -> None:
    """The real worker reads a 404 as "stop"; it must not learn more about a job not its own."""
    for endpoint in ["put-status", "upload-url", "upload"]:
        with subtests.test(endpoint=endpoint):
            send = partial(job_request, queue, endpoint, queue.held, INTRUDER)
            await assert_refused(queue, send, 404, "not found")


# --- PUT /jobs/{id}/status ---------------------------------------------------------------------


BAD_STATUS_CASES: dict[str, dict[str, str]] = {
    "status-missing": {},
    "queued": {"status": "queued"},
    "pulled": {"status": "pulled"},
    "bogus": {"status": "bogus"},
    "empty": {"status": ""},
    "cancelled": {"status": "cancelled"},
    "upper-case": {"status": "RUNNING"},
}


async def test_status_update_refuses_bad_status(queue: Queue, subtests: pytest.Subtests) -> None:
    for case, params in BAD_STATUS_CASES.items():
        with subtests.test(case=case):
            send = partial(
                queue.api.client.put,
                f"/jobs/{queue.held}/status",
                params=params,
                headers=queue.api.auth(HOLDER),
            )
            await assert_refused(queue, send, 422, "status")


# --- POST /jobs/{id}/files/url -----------------------------------------------------------------

# case: (query parameters over a valid upload, what the detail names)
UPLOAD_QUERY_CASES: dict[str, tuple[dict[str, Any], str]] = {
    "type-missing": ({"type": None}, "type"),
    "type-bogus": ({"type": "bogus"}, "type"),
    "base-path-parent": ({"base_path": "../../x"}, "base_path"),
    "base-path-parent-inside": ({"base_path": "a/../../b"}, "base_path"),
    "base-path-dotdot": ({"base_path": ".."}, "base_path"),
    "base-path-backslashes": ({"base_path": "..\\..\\x"}, "base_path"),
    "base-path-absolute": ({"base_path": "/etc"}, "base_path"),
    "base-path-nul": ({"base_path": "a\x00b"}, "NUL"),
}


async def test_upload_url_refuses_bad_query(queue: Queue, subtests: pytest.Subtests) -> None:
    for case, (params, names) in UPLOAD_QUERY_CASES.items():
        with subtests.test(case=case):
            send = partial(
                queue.api.client.post,
                f"/jobs/{queue.held}/files/url",
                params=query({"type": "output", "base_path": "", **params}),
                headers=queue.api.auth(HOLDER),
            )
            await assert_refused(queue, send, 422, names)


# --- POST /jobs/{id}/files/upload --------------------------------------------------------------


def upload(queue: Queue, params: dict[str, Any], filename: str, content: bytes) -> Send:
    """HOLDER's upload of one file to its job, to send."""
    path = f"/jobs/{queue.held}/files/upload"
    return partial(post_file, queue, path, {"type": "output", **params}, filename, content)


async def test_upload_refuses_bad_query(queue: Queue, subtests: pytest.Subtests) -> None:
    for case, (params, names) in UPLOAD_QUERY_CASES.items():
        with subtests.test(case=case):
            send = upload(queue, {"base_path": "", **params}, "result.txt", b"result")
            await assert_refused(queue, send, 422, names)


FILE_NAMES_WITH_PATH_PARTS = [
    "../x",
    "a/b",
    "..",
    ".",
    "a\\b",
    "",
    "/etc/wf-test-upload",
    "ok\x00.txt",
]


async def test_upload_refuses_file_names_with_path_parts(
    queue: Queue, subtests: pytest.Subtests
) -> None:
    for filename in FILE_NAMES_WITH_PATH_PARTS:
        with subtests.test(case=filename):
            send = upload(queue, {}, filename, b"must not be written")
            await assert_refused(queue, send, 422, "file name")
            assert not Path("/etc/wf-test-upload").exists()


BOUNDARY = "wf-test-boundary"
PART_HEAD = (
    f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="r.txt"\r\n\r\n'
).encode()

# case: (body, content type (empty: none), what the detail names)
BODY_CASES: dict[str, tuple[bytes, str, str]] = {
    "plain-text": (b"plain bytes", "text/plain", "multipart"),
    "json": (b'{"file": "r.txt"}', "application/json", "multipart"),
    "no-content-type": (b"", "", "multipart"),
    "no-boundary": (PART_HEAD + b"x\r\n", "multipart/form-data", "multipart"),
    "garbage": (b"garbage", f"multipart/form-data; boundary={BOUNDARY}", "multipart"),
    "truncated": (
        PART_HEAD + b"half a file",
        f"multipart/form-data; boundary={BOUNDARY}",
        "ended inside",
    ),
    "no-file-field": (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="other"; filename="r.txt"\r\n\r\n'
        f"x\r\n--{BOUNDARY}--\r\n".encode(),
        f"multipart/form-data; boundary={BOUNDARY}",
        "'file'",
    ),
    "field-without-file-name": (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"\r\n\r\n'
        f"x\r\n--{BOUNDARY}--\r\n".encode(),
        f"multipart/form-data; boundary={BOUNDARY}",
        "file name",
    ),
}


async def post_upload_body(
    queue: Queue, body: bytes, content_type: str, **params: str
) -> httpx.Response:
    """HOLDER's upload with ``body`` as it is, under ``content_type`` (none if empty)."""
    headers = queue.api.auth(HOLDER)
    if content_type:
        headers["Content-Type"] = content_type
    request = queue.api.client.build_request(
        "POST",
        f"/jobs/{queue.held}/files/upload",
        params={"type": "output", **params},
        headers=headers,
        content=body,
    )
    assert request.headers.get("content-type") == (content_type or None), request.headers
    return await queue.api.client.send(request)


async def test_upload_refuses_a_body_that_is_not_a_multipart_file(
    queue: Queue, subtests: pytest.Subtests
) -> None:
    for case, (body, content_type, names) in BODY_CASES.items():
        with subtests.test(case=case):
            send = partial(post_upload_body, queue, body, content_type)
            await assert_refused(queue, send, 422, names)


async def test_traversal_writes_nothing_outside_the_data_root(queue: Queue) -> None:
    """Every way of naming a place outside the job's folder is refused, and nothing appears
    there: not under the test's directory, not in /etc or /tmp, not beside the test's
    directory."""
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
        params = {"type": "output", "base_path": base_path}
        send = partial(post_file, queue, f"/jobs/{queue.held}/{action}", params, filename, b"x")
        await assert_refused(queue, send, 422, "")
    places = (Path("/etc"), Path("/tmp"), queue.data_root.parent, queue.data_root.parent.parent)
    for place in places:
        assert not (place / name).exists(), place


UNMAKEABLE_FOLDERS = {
    "component-too-long": "a" * 300,
    "path-too-long": "/".join(["d"] * 3000),
    "an-existing-file": "blocker",
    "through-an-existing-file": "blocker/sub",
}


async def test_upload_refuses_a_folder_the_file_system_cannot_make(
    queue: Queue, subtests: pytest.Subtests
) -> None:
    """A base_path that passes the '..' check but cannot become a folder: the worker must get a
    4xx it can act on, not a 500 it retries forever."""
    # A file where a folder goes, uploaded once: every case below leaves it as it is.
    blocker = await upload(queue, {"base_path": ""}, "blocker", b"content")()
    assert blocker.status_code == 201, blocker.text
    for case, base_path in UNMAKEABLE_FOLDERS.items():
        with subtests.test(case=case):
            send = upload(queue, {"base_path": base_path}, "r.txt", b"content")
            await assert_refused(queue, send, None, "")


async def test_upload_accepts_every_file_name_it_declares_acceptable(queue: Queue) -> None:
    name = "n" * 255  # check_file_name: "a plain name (no path), at most 255 bytes"
    response = await upload(queue, {"base_path": "long-names"}, name, b"content")()
    assert response.status_code == 201, response.text
    stored = queue.api.user_root / "output"
    assert [p.read_bytes() for p in stored.glob(f"*/long-names/{name}")] == [b"content"]


# --- GET /files/{id}/url and /download ----------------------------------------------------------

# A path with literal ``..`` segments is in test_bad_input_wire.py: the test client resolves them
# before sending, a raw socket does not.
# case: (file id, status, what the detail names)
FILE_ID_CASES: dict[str, tuple[str, int, str]] = {
    "etc-passwd": ("/etc/passwd", 403, "outside the data root"),
    "encoded-dots": (
        "{root}/alice/data/%2E%2E/%2E%2E/%2E%2E/serve.log",
        403,
        "outside the data root",
    ),
    "relative": ("relative/x", 403, "outside the data root"),
    # Inside the root but no input of the caller's jobs: 404, which the worker reads as "stop"
    # (ARCHITECTURE §4); 403 is only for what lies outside the root.
    "unnamed-file": ("{stray}", 404, "not an input"),
    "missing-file": ("{root}/alice/nothing-here.txt", 404, "not an input"),
    "the-root": ("{root}", 404, "not an input"),
    "s3-on-local-storage": ("s3://bucket/key", 422, "S3"),
}


async def test_file_endpoints_refuse_files_outside_the_callers_jobs(
    queue: Queue, subtests: pytest.Subtests
) -> None:
    for case, (file_id, status, names) in FILE_ID_CASES.items():
        for action in ["url", "download"]:
            with subtests.test(case=case, action=action):
                target = file_id.format(root=queue.data_root, stray=queue.stray)
                send = partial(get_as_written, queue, f"/files/{target}/{action}")
                await assert_refused(queue, send, status, names)


@pytest.mark.parametrize("action", ["url", "download"])
async def test_file_of_another_workers_job_is_not_found_for_the_caller(
    queue: Queue, action: str
) -> None:
    path = f"/files/{queue.held_file}/{action}"
    await assert_refused(queue, partial(get_as_written, queue, path, INTRUDER), 404, "not an input")
    # The holder may: the refusal above is about the caller, not the file.
    response = await get_as_written(queue, path, HOLDER)
    assert response.status_code == 200, response.text


# --- POST /_jobs -------------------------------------------------------------------------------

DROP = object()

# case: (dotted place in a valid submission, its new value or DROP, what the detail names)
SUBMISSION_CASES: dict[str, tuple[str, object, str]] = {
    "job-missing": ("job", DROP, "job"),
    "paths-upload-missing": ("paths_upload", DROP, "paths_upload"),
    "paths-upload-log-missing": ("paths_upload.log", DROP, "log"),
    "meta-missing": ("job.meta", DROP, "meta"),
    "job-id-missing": ("job.meta.job_id", DROP, "job_id"),
    "job-id-string": ("job.meta.job_id", "7", "job_id"),
    "job-id-negative": ("job.meta.job_id", -1, "job_id"),
    "job-id-huge": ("job.meta.job_id", 2**64, "job_id"),
    "job-id-fraction": ("job.meta.job_id", 1.5, "job_id"),
    "date-created-null": ("job.meta.date_created", None, "date_created"),
    "environment-mars": ("environment", "mars", "environment"),
    "priority-string": ("priority", "high", "priority"),
    "priority-huge": ("priority", 2**40, "priority"),
    "memory-negative": ("job.hardware.memory", -1, "memory"),
    "image-url-missing": ("job.handler.image_url", DROP, "image_url"),
    "files-up-bogus-type": ("job.handler.files_up", {"bogus": "x"}, "files_up"),
    "files-down-list": ("job.handler.files_down", ["a"], "files_down"),
    "cmd-string": ("job.app.cmd", "train", "cmd"),
}


def edit(body: dict[str, Any], dotted: str, value: object) -> None:
    *parents, last = dotted.split(".")
    node = body
    for key in parents:
        node = node[key]
    if value is DROP:
        del node[last]
    else:
        node[last] = value


async def post_submission(
    queue: Queue,
    *,
    json: dict[str, Any] | None = None,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    return await queue.api.client.post(
        "/_jobs", json=json, content=data, headers={"x-api-key": API_KEY, **(headers or {})}
    )


async def test_submission_refuses_invalid_job(queue: Queue, subtests: pytest.Subtests) -> None:
    for case, (where, value, names) in SUBMISSION_CASES.items():
        with subtests.test(case=case):
            body = queue.api.job_body(OTHER_JOB)
            body["job"]["hardware"]["gpu_model"] = NEVER_GPU  # never pulled, should it be stored
            edit(body, where, value)
            await assert_refused(queue, partial(post_submission, queue, json=body), 422, names)


JSON_HEADERS = {"Content-Type": "application/json"}

# case: (body, what the detail names)
NOT_A_JOB_CASES: dict[str, tuple[bytes, str]] = {
    "not-json": (b"not json", "JSON"),
    "truncated": (b'{"job": {"app": ', "truncated"),
    "array": (b"[1, 2]", "object"),
    "string": (b'"a job"', "object"),
    "null": (b"null", "object"),
    "empty": (b"", ""),
    "nested-arrays": (b"[" * 5000, "nested"),
}


async def test_submission_refuses_a_body_that_is_not_a_job(
    queue: Queue, subtests: pytest.Subtests
) -> None:
    for case, (data, names) in NOT_A_JOB_CASES.items():
        with subtests.test(case=case):
            send = partial(post_submission, queue, data=data, headers=JSON_HEADERS)
            await assert_refused(queue, send, 422, names)


async def test_submission_without_a_body_says_what_is_missing(queue: Queue) -> None:
    response = await post_submission(queue, data=b"", headers=JSON_HEADERS)
    assert response.status_code == 422
    detail = response.json()["detail"].lower()
    assert "body" in detail or "json" in detail or "job" in detail, detail


async def test_submission_nested_deeper_than_the_decoder_goes_is_refused(queue: Queue) -> None:
    body = queue.api.job_body(OTHER_JOB)
    body["job"]["meta"]["deep"] = "DEEP"
    data = json.dumps(body).replace('"DEEP"', '{"a": ' * 3000 + "{}" + "}" * 3000).encode()
    send = partial(post_submission, queue, data=data, headers=JSON_HEADERS)
    await assert_refused(queue, send, 422, "nested")


# --- what a black-box probe found (docs/RELIABILITY.md) ----------------------------------------


async def test_a_submission_that_is_not_utf8_is_refused(queue: Queue) -> None:
    send = partial(post_submission, queue, data=b'{"job": "\xff\xfe"}', headers=JSON_HEADERS)
    await assert_refused(queue, send, 422, "UTF-8")


async def test_a_multipart_boundary_longer_than_the_parser_takes_is_refused(queue: Queue) -> None:
    boundary = "b" * 300
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\n'
        f"hello\r\n--{boundary}--\r\n"
    ).encode()
    content_type = f"multipart/form-data; boundary={boundary}"
    send = partial(post_upload_body, queue, body, content_type, type="log")
    await assert_refused(queue, send, 422, "boundary")


CONTROL_CHARACTER_DISPOSITIONS = {
    "newline": 'filename="a\nb.bin"',
    "tab": 'filename="tab\there.txt"',
    "bell": 'filename="bell\x07.log"',
    "delete": 'filename="del\x7f.txt"',
}


async def test_upload_refuses_file_names_with_control_characters(
    queue: Queue, subtests: pytest.Subtests
) -> None:
    for case, disposition in CONTROL_CHARACTER_DISPOSITIONS.items():
        with subtests.test(case=case):
            # Written by hand: a client library would percent-encode the name, which is then
            # harmless.
            body = (
                f'--x\r\nContent-Disposition: form-data; name="file"; {disposition}\r\n\r\n'
                "content\r\n--x--\r\n"
            ).encode()
            send = partial(post_upload_body, queue, body, "multipart/form-data; boundary=x")
            await assert_refused(queue, send, 422, "control")


async def test_options_of_the_status_path_name_both_methods(queue: Queue) -> None:
    answer = await queue.api.client.options(f"/jobs/{queue.held}/status")
    assert {m.strip() for m in answer.headers["allow"].split(",")} == {"GET", "PUT", "OPTIONS"}
