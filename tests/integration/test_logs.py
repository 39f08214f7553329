"""What an operator reads in the logs of a real ``serve``: one JSON object a line (or a plain
line) per record, each request's lines carrying its id, an access line per request naming the
route by its template, and never a token, key, signature or ``runtime_details``. Also the parts
in-process: the request id a caller may choose, the observer the metrics hang on, and the mask
laid over anything shaped like a secret."""

from __future__ import annotations

import io
import json
import logging
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from litestar import Litestar, get
from litestar.params import FromPath

from tests.integration.conftest import Server
from workerfacing_api.entrypoints.http.access import (
    CLIENT_HUNG_UP,
    UNMATCHED,
    RequestLog,
    note_route,
    request_id_from,
)
from workerfacing_api.entrypoints.logs import (
    JsonFormatter,
    PlainFormatter,
    RedactSecrets,
    RequestContext,
    redact,
    set_worker,
)

# Real processes on 127.0.0.1 (serve, the fake upstream, moto): docs/TESTING.md.
pytestmark = pytest.mark.e2e

JSON_LOGS = {"LOG_FORMAT": "json", "ACCESS_LOG": "1"}
GENERATED_ID = re.compile(r"[0-9a-f]{32}")


def records(server: Server) -> list[dict[str, Any]]:
    """Every line of the service's log, each of which must be one JSON object."""
    lines = [line for line in server.log_path.read_text().splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines]  # fails on any line that is not JSON
    assert all(isinstance(record, dict) for record in parsed)
    return parsed


def access_line(server: Server, request_id: str, seconds: float = 5) -> dict[str, Any]:
    """The access line of request ``request_id`` (written just after the answer went out)."""
    deadline = time.monotonic() + seconds
    while True:
        found = [
            r
            for r in records(server)
            if r["logger"] == "workerfacing_api.access" and r.get("request_id") == request_id
        ]
        if found:
            (line,) = found
            return line
        if time.monotonic() > deadline:
            raise AssertionError(f"no access line for {request_id}:\n{server.log_path.read_text()}")
        time.sleep(0.02)


def test_every_line_is_json_and_every_request_has_an_id(
    server_factory: Callable[..., Server],
) -> None:
    server = server_factory(JSON_LOGS)
    chosen = requests.get(f"{server.url}/", headers={"X-Request-ID": "abc-123"}, timeout=10)
    assert chosen.headers["x-request-id"] == "abc-123"
    made = requests.get(f"{server.url}/", timeout=10)
    made_id = made.headers["x-request-id"]
    assert GENERATED_ID.fullmatch(made_id)

    line = access_line(server, "abc-123")
    assert line["level"] == "INFO"
    assert line["message"].startswith("GET / 200 ")
    assert (line["route"], line["method"], line["status"]) == ("/", "GET", 200)
    assert line["duration_ms"] >= 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
    assert access_line(server, made_id)["status"] == 200
    for record in records(server):  # uvicorn's and alembic's lines too
        assert {"time", "level", "logger", "message"} <= record.keys(), record


def test_a_status_update_is_logged_with_route_job_and_worker(
    server_factory: Callable[..., Server],
) -> None:
    server = server_factory(JSON_LOGS)
    server.submit()
    (job_id,) = server.pull("gpu-box-1").keys()
    response = server.put_status(job_id, "running", "gpu-box-1")
    assert response.status_code == 204

    line = access_line(server, response.headers["x-request-id"])
    assert line["route"] == "/jobs/{job_id}/status"
    assert line["message"].startswith("PUT /jobs/{job_id}/status 204 ")
    assert (line["status"], line["job_id"], line["worker"]) == (204, int(job_id), "gpu-box-1")

    # A path no route matches is named as sent, without its query string.
    missing = requests.get(f"{server.url}/no/such/thing?signature=abc", timeout=10)
    line = access_line(server, missing.headers["x-request-id"])
    assert (line["route"], line["status"]) == ("/no/such/thing", 404)


def test_no_token_key_signature_or_runtime_details_reaches_the_log(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    """A whole job driven like the DECODE worker, then the log searched for every secret the
    exchange carried."""
    server = server_factory(JSON_LOGS)
    submitted = server.submit()
    token = server.token("gpu-box-1")
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    secrets = [token, server.api_key]

    jobs = session.get(f"{server.url}/jobs", params={"limit": 1, "memory": 64000}, timeout=10)
    ((job_id, job),) = jobs.json().items()

    def status(value: str, **extra: str) -> None:
        r = session.put(
            f"{server.url}/jobs/{job_id}/status", params={"status": value, **extra}, timeout=10
        )
        assert r.status_code == 204, r.text

    def signatures(url: str) -> list[str]:
        found = [v for k, v in parse_qsl(urlsplit(url).query) if "sig" in k.lower()]
        assert found, url  # a signed link: else this test would search for nothing
        return found

    status("preprocessing")
    for file_id in job["handler"]["files_down"].values():
        link = session.get(f"{server.url}/files/{file_id}/url", timeout=10).json()
        secrets += signatures(link["url"])
        assert requests.request(**link, timeout=10).status_code == 200
    status("running")
    link = session.post(
        f"{server.url}/jobs/{job_id}/files/url",
        params={"base_path": "out", "type": "output"},
        timeout=10,
    ).json()
    secrets += signatures(link["url"])
    upload = requests.request(**link, files={"file": ("emitter.h5", b"\x89HDF")}, timeout=10)
    assert upload.status_code == 201, upload.text
    details = "CUDA out of memory at step 8731 (quota-marker-q7z)"
    secrets.append(details)
    status("error", runtime_details=details)
    # A token that is not one is not echoed either.
    bogus = requests.get(
        f"{server.url}/jobs/{job_id}/status",
        headers={"Authorization": "Bearer bogus-token-x9k"},
        timeout=10,
    )
    assert bogus.status_code == 401
    secrets.append("bogus-token-x9k")

    access_line(server, bogus.headers["x-request-id"])  # the last request's line is out
    text = server.log_path.read_text()
    routes = {r.get("route") for r in records(server)}
    assert {"/files/{file_id}/download", "/jobs/{job_id}/files/upload"} <= routes
    assert submitted["job"]["meta"]["job_id"]  # the flow ran on a real submission
    for secret in secrets:
        assert secret not in text, f"{secret[:12]}… is in the log"
    assert not [r for r in records(server) if r["level"] == "ERROR"]


def test_a_client_that_hangs_up_mid_upload_is_not_an_error(
    server_factory: Callable[..., Server],
) -> None:
    server = server_factory(JSON_LOGS)
    server.submit()
    (job_id,) = server.pull("w").keys()
    host, port = server.url.removeprefix("http://").split(":")
    head = (
        f"POST /jobs/{job_id}/files/upload?type=output&base_path=out HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\nAuthorization: Bearer {server.token('w')}\r\n"
        "X-Request-ID: hang-up-1\r\n"
        "Content-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: 1000000\r\n\r\n"
        '--XyZ\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.encode() + b"\x00" * 10_000)
        time.sleep(0.2)  # the upload has begun on the server's side

    line = access_line(server, "hang-up-1")
    assert line["status"] == CLIENT_HUNG_UP
    assert line["level"] == "INFO"
    assert "client hung up" in line["message"]
    assert not [r for r in records(server) if r["level"] == "ERROR"]


def test_plain_lines_name_the_request(server_factory: Callable[..., Server]) -> None:
    server = server_factory({"LOG_FORMAT": "plain", "ACCESS_LOG": "1"})
    requests.get(f"{server.url}/", headers={"X-Request-ID": "plain-42"}, timeout=10)
    deadline = time.monotonic() + 5
    while "[plain-42]" not in server.log_path.read_text():
        assert time.monotonic() < deadline, server.log_path.read_text()
        time.sleep(0.02)
    lines = server.log_path.read_text().splitlines()
    record = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR) [\w.]+")
    assert all(record.match(line) for line in lines if line.strip()), lines
    (access,) = [line for line in lines if "[plain-42]" in line]
    assert re.search(r" INFO workerfacing_api\.access \[plain-42\]: GET / 200 [\d.]+ ms$", access)


def test_without_access_log_there_is_no_access_line_but_still_an_id(
    server_factory: Callable[..., Server],
) -> None:
    server = server_factory({"LOG_FORMAT": "json", "ACCESS_LOG": "0"})
    response = requests.get(f"{server.url}/", headers={"X-Request-ID": "quiet-1"}, timeout=10)
    assert response.headers["x-request-id"] == "quiet-1"
    requests.get(f"{server.url}/", timeout=10)
    assert not [r for r in records(server) if r["logger"] == "workerfacing_api.access"]


# --- in-process ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sent",
    [
        "x" * 129,
        "x" * 1000,
        "abc\n123",
        "abc\r\nX-Forged: 1",
        "",
        "a b",
        "ab/cd",
        "ünïcode",
    ],
)
def test_an_unusable_request_id_is_replaced(sent: str) -> None:
    made = request_id_from([(b"x-request-id", sent.encode())])
    assert GENERATED_ID.fullmatch(made)


@pytest.mark.parametrize("sent", ["abc-123", "x" * 128, "a", "trace:1.2_3-4"])
def test_a_usable_request_id_is_kept(sent: str) -> None:
    assert request_id_from([(b"host", b"h"), (b"x-request-id", sent.encode())]) == sent


def test_without_a_request_id_each_request_gets_its_own() -> None:
    assert request_id_from([]) != request_id_from([])


class Captured(logging.Handler):
    """Records as the service's handler sees them: with the request's facts added."""

    def __init__(self) -> None:
        super().__init__()
        self.addFilter(RequestContext())
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def captured() -> Iterator[Captured]:
    handler = Captured()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)


async def call(
    app: Any, path: str, headers: list[tuple[bytes, bytes]], *, client_gone: bool = False
) -> list[dict[str, Any]]:
    """One GET through ``app`` as a server would make it (from a client that has gone, with
    ``client_gone``); the messages the app sent."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if client_gone:
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test"), *headers],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    await app(scope, receive, send)
    return sent


async def test_lines_written_inside_a_request_carry_its_facts_and_metrics_see_templates(
    captured: Captured,
) -> None:
    @get("/jobs/{job_id:int}/status", sync_to_thread=False)
    def job_status(job_id: FromPath[int]) -> str:
        set_worker("gpu-box-1")
        logging.getLogger("workerfacing_api.fleet").warning("worker gpu-box-1 set aside")
        return "running"

    observed: list[tuple[str, str, int, float]] = []
    app = RequestLog(
        Litestar([job_status], middleware=[note_route], logging_config=None),
        access_log=True,
        observe=lambda *seen: observed.append(seen),
    )

    sent = await call(app, "/jobs/7/status", [(b"x-request-id", b"in-1")])
    assert (b"x-request-id", b"in-1") in sent[0]["headers"]
    warning, access = captured.records
    for record in (warning, access):
        assert record.__dict__["request_id"] == "in-1"
        assert record.__dict__["route"] == "/jobs/{job_id}/status"
        assert (record.__dict__["job_id"], record.__dict__["worker"]) == (7, "gpu-box-1")
    assert access.__dict__["status"] == 200
    await call(app, "/made/up/path-1", [])
    await call(app, "/made/up/path-2", [])
    routes = [(route, method, status) for route, method, status, _ in observed]
    assert routes == [
        ("/jobs/{job_id}/status", "GET", 200),
        (UNMATCHED, "GET", 404),
        (UNMATCHED, "GET", 404),
    ]
    assert all(seconds >= 0 for *_, seconds in observed)


async def test_a_client_gone_before_the_answer_is_observed_as_499(captured: Captured) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()  # the server reports the client gone
        await send({"type": "http.response.start", "status": 400, "headers": []})
        await send({"type": "http.response.body", "body": b"{}", "more_body": False})

    observed: list[int] = []
    wrapped = RequestLog(app, access_log=True, observe=lambda _r, _m, s, _t: observed.append(s))
    await call(wrapped, "/x", [], client_gone=True)
    assert observed == [CLIENT_HUNG_UP]
    (line,) = captured.records
    assert line.levelno == logging.INFO
    assert line.getMessage().startswith("GET /x 499 ")


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("GET /files/a/download?worker=w&expires=1&signature=9f8e7d6c", "9f8e7d6c"),
        ("https://b.s3.amazonaws.com/k?X-Amz-Signature=abc123def&X-Amz-Date=1", "abc123def"),
        ("https://b/k?X-Amz-Security-Token=FwoGZXIv%2Fabc", "FwoGZXIv"),
        ("POST /u?sig=s1g2n3", "s1g2n3"),
        ("callback?token=t0k3n&x=1", "t0k3n"),
        ("headers {'x-api-key': 'shared-k3y', 'accept': '*/*'}", "shared-k3y"),
        ("X-Api-Key: shared-k3y", "shared-k3y"),
        ("Authorization: Bearer opaque.t0ken", "opaque.t0ken"),
        ("sent bearer abcdef123", "abcdef123"),
        ("token eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ3In0.c2lnbmF0dXJl seen", "eyJhbGciOiJFUzI1"),
    ],
)
def test_secrets_are_masked(text: str, secret: str) -> None:
    assert secret not in redact(text)
    assert "[redacted]" in redact(text)


def test_ordinary_lines_are_left_alone() -> None:
    for text in (
        "worker gpu-1 set aside for 10 min: 3 failed attempts in a row",
        "GET /jobs/{job_id}/status 204 3.1 ms",
        "design=ok; key=alice/data/calib.mat",
    ):
        assert redact(text) == text


@pytest.mark.parametrize("fmt", ["plain", "json"])
def test_a_failure_is_one_record_without_its_secrets(fmt: str) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else PlainFormatter())
    handler.addFilter(RequestContext())
    handler.addFilter(RedactSecrets())
    log = logging.getLogger("test_logs.failure")
    log.addHandler(handler)
    log.propagate = False
    try:
        try:
            raise ValueError("upstream refused https://u/x?token=zzz-secret")
        except ValueError:
            log.exception("delivery failed\n2099-01-01T00:00:00 ERROR forged: sig=s3cr3t")
    finally:
        log.removeHandler(handler)
        log.propagate = True
    text = stream.getvalue()
    assert "zzz-secret" not in text
    assert "s3cr3t" not in text
    lines = text.splitlines()
    if fmt == "json":
        (line,) = lines
        record = json.loads(line)
        assert record["level"] == "ERROR"
        assert record["message"].startswith("delivery failed\n")
        assert "ValueError: upstream refused" in record["exc_info"]
    else:
        head, *traceback = lines
        assert head.endswith("delivery failed\\n2099-01-01T00:00:00 ERROR forged: sig=[redacted]")
        assert traceback[-1] == "  ValueError: upstream refused https://u/x?token=[redacted]"
        assert all(line.startswith("  ") for line in traceback)
