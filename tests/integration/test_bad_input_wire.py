"""Bad input that only the real server and its socket decide (the rest of bad input runs in this
process: test_bad_input.py): a raw path with ``..`` segments, which an HTTP client library
resolves before sending; a request head beyond serve's limit and bytes that are not HTTP,
answered by the server's protocol before the app sees them; a client hanging up in the middle
of an upload.

One ``serve`` serves the whole module; every check compares the database and the file tree just
before and just after its own request, so the order of the tests does not matter.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.integration.conftest import Server, as_json, start_server, stop_server

# Real processes on 127.0.0.1 (serve): docs/TESTING.md.
pytestmark = pytest.mark.e2e

HOLDER = "holder-1"  # the worker that pulled the module's job
STATE_DIR = ".workerfacing-api"


@dataclass(frozen=True)
class Queue:
    server: Server
    held: str  # queue id of a job pulled by HOLDER
    stray: Path  # a file in the data root that no job names


@pytest.fixture(scope="module")
def queue(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Queue]:
    server = start_server(tmp_path_factory.mktemp("bad-input-wire"))
    try:
        server.submit()
        ((held, _),) = server.pull(HOLDER).items()
        stray = server.data_root / "alice" / "data" / "stray.mat"
        stray.write_bytes(b"an input of no job")
        yield Queue(server=server, held=held, stray=stray)
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
    server: Server, send: Callable[[], requests.Response], status: int, names: str
) -> str:
    """Send a request that must be refused with ``status`` and a detail mentioning ``names``;
    the database and the files must be unchanged. Returns the detail."""
    rows, files = server.db_snapshot(), files_of(server.root)
    assert rows, "nothing in the database to compare"
    response = send()
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


@pytest.mark.parametrize("action", ["url", "download"])
@pytest.mark.parametrize(
    ("file_id", "status", "names"),
    [
        pytest.param("{root}/../serve.log", 403, "outside the data root", id="parent-of-root"),
        pytest.param(
            "{root}/alice/data/../data/stray.mat", 404, "not an input", id="dots-to-unnamed-file"
        ),
    ],
)
def test_file_endpoints_refuse_a_raw_path_with_dot_segments(
    queue: Queue, action: str, file_id: str, status: int, names: str
) -> None:
    server = queue.server
    assert queue.stray.exists()
    target = file_id.format(root=server.data_root)
    url = f"{server.url}/files/{target}/{action}"

    def send() -> requests.Response:
        return send_raw("GET", url, headers=server.auth(HOLDER))

    detail = assert_refused(server, send, status, names)
    # The path reached the service as written: resolved, it would be refused all the same.
    assert repr(target) in detail, detail


def send_a_huge_head(server: Server, prefix: bytes) -> tuple[bytes, int]:
    """Send ``prefix`` then up to 1 MiB more of the same request's head, 16 KiB at a time, the
    way the probe did; meanwhile another client asks for /health/live. Returns what the server
    answered (b"" when it closed without one) and how many bytes it took before it stopped
    reading."""
    host, port = server.url.removeprefix("http://").split(":")
    sent = 0
    answer = b""
    with socket.create_connection((host, int(port)), timeout=10) as client:
        client.sendall(prefix)
        try:
            while sent < 1024 * 1024:
                client.sendall(b"a" * 16384)
                sent += 16384
        except OSError:
            pass  # the server closed the connection: it read no further
        # Another client is served meanwhile, at once (e2e: a real server, a real clock).
        started = time.monotonic()
        assert requests.get(f"{server.url}/health/live", timeout=10).status_code == 200
        assert time.monotonic() - started < 2.0
        try:
            answer = client.recv(4096)
        except OSError:
            answer = b""
    return answer, sent


def test_a_huge_request_head_is_refused_early_and_stalls_no_one(queue: Queue) -> None:
    """The probe: a 1 MiB header on /health/live, no token needed (a 32 MiB one was read whole
    and answered 200 after 3.5 s). serve keeps at most 64 KiB of an incomplete head: the
    request is refused with 431 (or the connection closed) long before the megabyte."""
    answer, sent = send_a_huge_head(
        queue.server, b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Big: "
    )
    assert answer.startswith(b"HTTP/1.1 431") or sent < 1024 * 1024, (sent, answer[:100])


def exchange(server: Server, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """``request`` sent whole on a connection of its own; the status, headers and body that the
    server answered before it closed the connection."""
    host, port = server.url.removeprefix("http://").split(":")
    answer = b""
    with socket.create_connection((host, int(port)), timeout=10) as client:
        client.sendall(request)
        while chunk := client.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines)
    return int(status_line.split()[1]), headers, body


def test_a_request_head_one_byte_over_the_limit_gets_431_in_json(queue: Queue) -> None:
    """64 KiB of request line and headers is the limit: one byte more, still incomplete, is
    refused with a JSON 431 naming the limit, and the connection closed; the app never sees
    it. (Exactly one byte over: the server has then read everything sent, so its answer is
    not lost to a reset.)"""
    server = queue.server
    rows = server.db_snapshot()
    start = b"GET /jobs?memory=1 HTTP/1.1\r\nHost: x\r\nX-Big: "
    status, headers, body = exchange(server, start + b"a" * (64 * 1024 + 1 - len(start)))
    assert status == 431, body
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert "64 KiB" in json.loads(body)["detail"]
    assert server.db_snapshot() == rows


def test_bytes_that_are_not_http_get_400_in_json(queue: Queue) -> None:
    status, headers, body = exchange(queue.server, b"HELLO /jobs WORLD\r\n\r\n")
    assert status == 400, body
    assert headers["content-type"] == "application/json"
    assert "invalid HTTP request" in json.loads(body)["detail"]


def test_bodies_are_never_counted_as_heads(queue: Queue) -> None:
    """An upload of 300 KiB (its end arrives in a read of its own, after the head was read) and
    two requests with 100 KiB bodies sent whole on one kept-alive connection are the app's to
    answer: only what arrives while a head is incomplete counts against the limit."""
    server = queue.server
    uploaded = requests.post(
        f"{server.url}/jobs/{queue.held}/files/upload",
        params={"type": "output"},
        headers=server.auth(HOLDER),
        files={"file": ("big.bin", b"\x01" * 300 * 1024)},
        timeout=10,
    )
    assert uploaded.status_code == 201, uploaded.text
    body = b"x" * 100 * 1024
    request = (
        b"PUT /jobs/%s/status HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (queue.held.encode(), len(body), body)
    )
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as client:
        client.sendall(request + request)
        answers = b""
        while answers.count(b"HTTP/1.1 ") < 2 or not answers.endswith(b"}"):
            chunk = client.recv(65536)
            assert chunk, answers
            answers += chunk
    # No token: the app's 401 (JSON), twice; never the server's 431.
    assert answers.count(b"HTTP/1.1 401") == 2, answers[:400]


def test_heads_sent_in_small_pieces_are_counted_per_request(queue: Queue) -> None:
    """The limit counts an incomplete head over many reads, and starts again with each request:
    two requests of 40 KiB heads on one kept-alive connection, each sent 1 KiB at a time, are
    both answered."""
    host, port = queue.server.url.removeprefix("http://").split(":")
    request = b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 40_000 + b"\r\n\r\n"
    with socket.create_connection((host, int(port)), timeout=10) as client:
        for _ in range(2):
            for at in range(0, len(request), 1024):
                client.sendall(request[at : at + 1024])
            answer = b""
            while b"\r\n\r\n" not in answer:
                answer += client.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
            head, _, rest = answer.partition(b"\r\n\r\n")
            length = int(
                next(
                    line.split(b":")[1]
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
            )
            while len(rest) < length:
                rest += client.recv(65536)


def test_a_query_string_of_a_megabyte_is_refused_and_changes_nothing(queue: Queue) -> None:
    server = queue.server
    rows = server.db_snapshot()
    answer, sent = send_a_huge_head(server, b"GET /jobs?memory=1&padding=")
    assert answer.startswith(b"HTTP/1.1 431") or sent < 1024 * 1024, (sent, answer[:100])
    assert server.db_snapshot() == rows
    # A long query string that is no attack (60 000 characters) is still the app's to answer.
    fits = requests.get(
        f"{server.url}/jobs",
        params={"memory": "1", "padding": "x" * 60_000},
        headers=server.auth(HOLDER),
        timeout=10,
    )
    assert fits.status_code == 200, fits.text


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


def test_head_of_health_is_answered_by_the_running_server(queue: Queue) -> None:
    """What a load balancer or an uptime check sends (it answered 405)."""
    answer = requests.head(f"{queue.server.url}/health/live", timeout=10)
    assert answer.status_code == 200
    assert answer.content == b""
    assert requests.head(f"{queue.server.url}/jobs", timeout=10).status_code == 405
