"""The upstream client against real servers on 127.0.0.1, over http and https (a certificate
authority made by the test, given to the client): what it sends, how it reads the answers the
user-facing API or a proxy in front of it may give, that it keeps connections alive and closes
them, and how it fails.

Most tests use a small asyncio socket server that writes scripted answers byte for byte, because
the answers that matter here (interim ``1xx`` heads, chunked bodies arriving in pieces, bodies
delimited by the end of the connection, garbage) are ones a web framework will not produce; one
plays the user-facing API on an aiohttp web server, whose strict parser must accept the
requests."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from aiohttp import web

from tests.certificates import LoopbackTls, make_loopback_tls
from workerfacing_api.adapters.upstream import HttpUpstream
from workerfacing_api.core.model import Delivery, JobStatus, StatusEvent

EVENT = StatusEvent(
    id=7,
    job_id=3,
    upstream_id=42,
    status=JobStatus.RUNNING,
    runtime_details=None,
    created_at=datetime(2026, 11, 28, tzinfo=UTC),
)
OTHER_EVENT = StatusEvent(
    id=8,
    job_id=4,
    upstream_id=43,
    status=JobStatus.FINISHED,
    runtime_details="epoch 3/3 done",
    created_at=datetime(2026, 11, 28, tzinfo=UTC),
)

# An answer is written as is; a tuple is written piece by piece, each after a pause, so that the
# client has seen the first pieces before the rest arrives; None is never answered.
Answer = bytes | tuple[bytes, ...] | None


def reply(status: int, body: bytes = b'{"detail":"ok"}', *, extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 {status} Whatever\r\ncontent-type: application/json\r\n{extra}"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body


def chunked(status: int, *chunks: bytes) -> tuple[bytes, ...]:
    """A chunked answer in pieces: the head, each chunk (with an extension), the end with a
    trailer."""
    head = f"HTTP/1.1 {status} Whatever\r\ntransfer-encoding: chunked\r\n\r\n".encode()
    pieces = [b"%x;ext=1\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks]
    return (head, *pieces, b"0\r\nx-trailer: yes\r\n\r\n")


@dataclass
class Received:
    line: str
    headers: list[tuple[str, str]]  # as sent, in order
    body: bytes
    connection: int  # 1 for the first connection the server accepted, and so on

    def header(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name]


@dataclass
class ScriptedApi:
    """Answers the n-th request with the n-th answer (the last one repeats). An answer that says
    ``connection: close``, or is HTTP/1.0, is followed by closing the connection."""

    answers: list[Answer]
    drop_idle: bool = False  # close every connection after one answer, without saying so
    url: str = ""
    requests: list[Received] = field(default_factory=list)
    connections: int = 0
    open_connections: int = 0
    all_closed: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        self.writers.add(writer)
        self.connections += 1
        self.open_connections += 1
        self.all_closed.clear()
        number = self.connections
        try:
            while await self._answer_one(reader, writer, number):
                pass
        except ConnectionError:
            pass
        finally:
            writer.close()
            self.open_connections -= 1
            if not self.open_connections:
                self.all_closed.set()
            self.tasks.discard(task)
            self.writers.discard(writer)

    async def stop(self, server: asyncio.Server) -> None:
        """Stop listening and end the connections still open; their handlers then return (a
        cancelled handler would make asyncio 3.11 log an error)."""
        server.close()
        for writer in list(self.writers):
            writer.transport.abort()
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=5)
        await server.wait_closed()

    async def _answer_one(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int
    ) -> bool:
        """Read a request and answer it; False when the connection is to end."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False  # the client closed the connection
        line, *fields = head.decode("latin-1").split("\r\n")[:-2]
        # Only the optional white space around a value is dropped (RFC 9110 5.5): a stray line
        # break sent inside a value stays visible.
        headers = [(k, v.strip(" \t")) for k, _, v in (f.partition(":") for f in fields)]
        length = int({k.lower(): v for k, v in headers}.get("content-length", "0"))
        self.requests.append(Received(line, headers, await reader.readexactly(length), number))
        answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
        if answer is None:
            await reader.read()  # until the client gives up and closes
            return False
        pieces = (answer,) if isinstance(answer, bytes) else answer
        for index, piece in enumerate(pieces):
            if index:
                await asyncio.sleep(0.02)  # not a wait: the pieces arrive apart
            writer.write(piece)
            await writer.drain()
        head = pieces[0].lower()
        return not (self.drop_idle or b"connection: close" in head or head.startswith(b"http/1.0"))


StartApi = Callable[..., Awaitable[ScriptedApi]]
Connect = Callable[..., HttpUpstream]


@pytest.fixture(autouse=True)
def no_proxy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> LoopbackTls:
    return make_loopback_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(params=["http", "https"])
def scheme(request: pytest.FixtureRequest) -> str:
    scheme: str = request.param
    return scheme


@pytest.fixture
async def start_api(scheme: str, tls: LoopbackTls) -> AsyncIterator[StartApi]:
    started: list[tuple[asyncio.Server, ScriptedApi]] = []

    async def start(*answers: Answer, drop_idle: bool = False) -> ScriptedApi:
        api = ScriptedApi(list(answers), drop_idle=drop_idle)
        server = await asyncio.start_server(
            api.serve,
            "127.0.0.1",
            0,
            ssl=tls.server_context() if scheme == "https" else None,
        )
        api.url = f"{scheme}://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        started.append((server, api))
        return api

    yield start
    for server, api in started:
        await api.stop(server)


@pytest.fixture
async def connect(scheme: str, tls: LoopbackTls) -> AsyncIterator[Connect]:
    """An ``HttpUpstream`` for a URL, trusting the test CA on https; closed after the test."""
    clients: list[HttpUpstream] = []

    def make(url: str, api_key: str = "k") -> HttpUpstream:
        context = tls.client_context() if url.startswith("https:") else None
        client = HttpUpstream(url, api_key, ssl_context=context)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


async def test_sends_the_status_put_the_user_facing_api_expects(
    start_api: StartApi, connect: Connect
) -> None:
    api = await start_api(reply(200))
    upstream = connect(f"{api.url}/prefix/", "s3cret")
    assert await upstream.notify(EVENT, 2) is Delivery.DELIVERED
    assert await upstream.notify(OTHER_EVENT, 2) is Delivery.DELIVERED
    first, second = api.requests
    port = api.url.rsplit(":", 1)[1]
    for request in (first, second):
        assert request.line == "PUT /prefix/_job_status HTTP/1.1"
        assert {name.lower(): value for name, value in request.headers} == {
            "host": f"127.0.0.1:{port}",
            "x-api-key": "s3cret",
            "content-type": "application/json",
            "content-length": str(len(request.body)),
            "user-agent": "workerfacing-api",
        }
        assert len(request.headers) == 5  # each once
    assert json.loads(first.body) == {"job_id": 42, "status": "running", "runtime_details": ""}
    assert json.loads(second.body) == {
        "job_id": 43,
        "status": "finished",
        "runtime_details": "epoch 3/3 done",
    }


async def test_a_web_framework_playing_the_user_facing_api_understands_the_calls(
    scheme: str, tls: LoopbackTls, connect: Connect
) -> None:
    jobs = {42: "queued"}  # the user-facing API knows job 42 only

    async def job_status(request: web.Request) -> web.Response:
        if request.headers.get("x-api-key") != "s3cret":
            return web.json_response({"detail": "bad key"}, status=401)
        update = await request.json()
        if update["job_id"] not in jobs:
            return web.json_response({"detail": "Job not found"}, status=404)
        jobs[update["job_id"]] = update["status"]
        return web.json_response(update)

    app = web.Application()
    app.router.add_put("/api/_job_status", job_status)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(
        runner, "127.0.0.1", 0, ssl_context=tls.server_context() if scheme == "https" else None
    )
    await site.start()
    try:
        port = runner.addresses[0][1]
        upstream = connect(f"{scheme}://127.0.0.1:{port}/api", "s3cret\n")
        assert await upstream.notify(EVENT, 2) is Delivery.DELIVERED
        assert jobs == {42: "running"}
        assert await upstream.notify(OTHER_EVENT, 2) is Delivery.GONE  # job 43 was deleted
        wrong_key = connect(f"{scheme}://127.0.0.1:{port}/api", "other")
        assert await wrong_key.notify(EVENT, 2) is Delivery.RETRY
    finally:
        await runner.cleanup()


async def test_a_secret_read_with_its_newline_is_sent_stripped(
    start_api: StartApi, connect: Connect
) -> None:
    api = await start_api(reply(204, b""))
    upstream = connect(api.url, "  s3cret\n")
    assert await upstream.notify(EVENT, 2) is Delivery.DELIVERED
    assert await upstream.notify(EVENT, 2) is Delivery.DELIVERED
    assert [request.header("x-api-key") for request in api.requests] == [["s3cret"], ["s3cret"]]
    assert [request.line for request in api.requests] == ["PUT /_job_status HTTP/1.1"] * 2


@pytest.mark.parametrize("key", ["s3c\nret", "s3c\r\nx-evil: 1", "s3c\tret", "s3c\x00ret", "\x7f"])
def test_a_secret_with_a_control_character_is_refused_naming_the_variable(key: str) -> None:
    with pytest.raises(ValueError, match="INTERNAL_API_KEY_SECRET") as refused:
        HttpUpstream("http://127.0.0.1:1", key)
    assert key.strip() not in str(refused.value)  # the secret itself is not shown


@pytest.mark.parametrize(
    ("status", "outcome", "misconfigured"),
    [
        (200, Delivery.DELIVERED, False),
        (201, Delivery.DELIVERED, False),
        (204, Delivery.DELIVERED, False),
        (404, Delivery.GONE, False),
        (500, Delivery.RETRY, False),
        (503, Delivery.RETRY, False),
        (429, Delivery.RETRY, False),
        (408, Delivery.RETRY, False),
        (401, Delivery.RETRY, True),  # wrong key: kept and retried, never dropped
        (422, Delivery.RETRY, True),
        (307, Delivery.RETRY, True),  # not followed: the key would go wherever it points
    ],
)
async def test_answers_map_to_outcomes_and_refusals_are_logged(
    start_api: StartApi,
    connect: Connect,
    caplog: pytest.LogCaptureFixture,
    status: int,
    outcome: Delivery,
    misconfigured: bool,
) -> None:
    body = b"" if status == 204 else b'{"detail":"Job not found"}'
    extra = "location: http://127.0.0.1:1/_job_status\r\n" if status == 307 else ""
    api = await start_api(reply(status, body, extra=extra))
    upstream = connect(api.url)
    with caplog.at_level(logging.DEBUG, logger="workerfacing_api.upstream"):
        assert await upstream.notify(EVENT, 2) is outcome
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    if misconfigured:
        assert errors == [
            f"upstream refused status running of job 42 with HTTP {status}; will retry"
        ]
    else:
        assert errors == []
    assert len(api.requests) == 1


@pytest.mark.parametrize(
    "answer",
    [
        b"garbage\r\n\r\n",
        b'HTTP/1.1 200 OK\r\ncontent-length: 100\r\nconnection: close\r\n\r\n{"cut',
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n{}",
    ],
    ids=["not-http", "truncated-body", "conflicting-lengths"],
)
async def test_unreadable_answers_mean_retry(
    start_api: StartApi, connect: Connect, caplog: pytest.LogCaptureFixture, answer: bytes
) -> None:
    api = await start_api(answer, reply(200))
    upstream = connect(api.url)
    assert await upstream.notify(EVENT, 2) is Delivery.RETRY
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warning.startswith("upstream answered something unreadable: ")
    assert "\n" not in warning
    assert await upstream.notify(EVENT, 2) is Delivery.DELIVERED  # on a fresh connection


@pytest.mark.parametrize(
    "interim",
    [
        b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n",
    ],
    ids=["103", "100-then-102"],
)
@pytest.mark.parametrize("split", [False, True], ids=["one-write", "interim-first"])
async def test_interim_answers_are_skipped_and_the_next_event_reads_its_own_answer(
    start_api: StartApi, connect: Connect, interim: bytes, split: bool
) -> None:
    final = reply(404, b'{"detail":"Job not found"}')
    api = await start_api((interim, final) if split else interim + final, reply(204, b""))
    upstream = connect(api.url)
    # The 404 belongs to the first event: read as the second's answer, it would cancel a job
    # the user did not delete.
    assert await upstream.notify(EVENT, 2) is Delivery.GONE
    assert await upstream.notify(OTHER_EVENT, 2) is Delivery.DELIVERED
    assert [request.connection for request in api.requests] == [1, 1]


async def test_one_kept_alive_connection_carries_sequential_events(
    start_api: StartApi, connect: Connect
) -> None:
    api = await start_api(reply(200))
    upstream = connect(api.url)
    for _ in range(5):
        assert await upstream.notify(EVENT, 2) is Delivery.DELIVERED
    assert len(api.requests) == 5
    assert api.connections == 1


async def test_answers_with_bodies_leave_the_connection_reusable(
    start_api: StartApi, connect: Connect
) -> None:
    large = b'{"detail":"%s"}' % (b"x" * 300_000)  # more than the socket buffers hold
    api = await start_api(
        reply(200, b'{"job_id":42,"status":"running"}'),
        reply(404, b'{"detail":"Job not found"}'),
        reply(503, large),
        chunked(200, b'{"job_id"', b":42}"),
        chunked(404, b'{"detail":"gone"}'),
        chunked(500, large),
        reply(204, b""),
    )
    upstream = connect(api.url)
    outcomes = [await upstream.notify(EVENT, 5) for _ in range(7)]
    assert outcomes == [
        Delivery.DELIVERED,
        Delivery.GONE,
        Delivery.RETRY,
        Delivery.DELIVERED,
        Delivery.GONE,
        Delivery.RETRY,
        Delivery.DELIVERED,
    ]
    assert api.connections == 1


@pytest.mark.parametrize(
    "answer",
    [
        reply(200, extra="connection: close\r\n"),
        b'HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n{"ends":"with the connection"}',
        b'HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n{"http":"1.0"}',
    ],
    ids=["with-length", "delimited-by-close", "http-1.0"],
)
async def test_connection_close_is_honoured(
    start_api: StartApi, connect: Connect, answer: bytes
) -> None:
    api = await start_api(answer)
    upstream = connect(api.url)
    for _ in range(3):
        assert await upstream.notify(EVENT, 2) is Delivery.DELIVERED
    assert len(api.requests) == 3
    assert api.connections == 3


async def test_a_connection_the_server_dropped_while_idle_is_replaced(
    start_api: StartApi, connect: Connect
) -> None:
    api = await start_api(reply(200), drop_idle=True)
    upstream = connect(api.url)
    for _ in range(3):
        assert await upstream.notify(EVENT, 2) is Delivery.DELIVERED
        await asyncio.wait_for(api.all_closed.wait(), 5)  # dropped before the next event
    assert len(api.requests) == 3
    assert api.connections == 3


async def test_aclose_closes_the_kept_connections(start_api: StartApi, connect: Connect) -> None:
    api = await start_api(reply(200))
    upstream = connect(api.url)
    assert await upstream.notify(EVENT, 2) is Delivery.DELIVERED
    assert await upstream.notify(EVENT, 2) is Delivery.DELIVERED
    assert api.open_connections == 1
    await upstream.aclose()
    await asyncio.wait_for(api.all_closed.wait(), 5)
    assert api.open_connections == 0


async def test_refused_connections_mean_retry(scheme: str, connect: Connect) -> None:
    with socket.socket() as held:  # bound, not listening: connections are refused
        held.bind(("127.0.0.1", 0))
        upstream = connect(f"{scheme}://127.0.0.1:{held.getsockname()[1]}")
        assert await upstream.notify(EVENT, 2) is Delivery.RETRY


@pytest.fixture
def never_accepting(scheme: str) -> Iterator[str]:
    """A listening socket nobody accepts on: the kernel completes the TCP handshake, then
    nothing (no TLS handshake either)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield f"{scheme}://127.0.0.1:{listener.getsockname()[1]}"


@pytest.mark.parametrize("where", ["never-answers", "never-accepts"])
async def test_a_silent_upstream_means_retry_within_the_deadline(
    start_api: StartApi, connect: Connect, never_accepting: str, where: str
) -> None:
    url = (await start_api(None)).url if where == "never-answers" else never_accepting
    upstream = connect(url)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await upstream.notify(EVENT, 0.3) is Delivery.RETRY
    assert loop.time() - started < 2  # bounded by the deadline, not by a default of minutes


def test_can_be_built_before_any_event_loop_runs() -> None:
    """The container builds the adapter before the server's loop exists; it is used inside it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    upstream = HttpUpstream(f"http://127.0.0.1:{listener.getsockname()[1]}", "k")

    async def use_it() -> list[Delivery]:
        api = ScriptedApi([reply(200)])
        server = await asyncio.start_server(api.serve, sock=listener)
        try:
            return [await upstream.notify(EVENT, 2) for _ in range(2)]
        finally:
            await upstream.aclose()
            await api.stop(server)

    assert asyncio.run(use_it()) == [Delivery.DELIVERED] * 2


async def test_a_proxy_from_the_environment_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = ScriptedApi([reply(200)])
    server = await asyncio.start_server(proxy.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    monkeypatch.setenv("HTTP_PROXY", f"http://proxy-user:pa%24s@127.0.0.1:{port}")
    monkeypatch.setenv("NO_PROXY", "localhost")
    # A reserved name that never resolves: only the proxy can deliver this.
    upstream = HttpUpstream("http://user-facing.invalid:8000/api", "k")
    try:
        assert await upstream.notify(EVENT, 2) is Delivery.DELIVERED
    finally:
        await upstream.aclose()
        await proxy.stop(server)
    (request,) = proxy.requests
    assert request.line == "PUT http://user-facing.invalid:8000/api/_job_status HTTP/1.1"
    assert request.header("x-api-key") == ["k"]
    assert request.header("proxy-authorization") == [
        "Basic " + base64.b64encode(b"proxy-user:pa$s").decode()
    ]


async def test_no_proxy_exempts_the_upstream(monkeypatch: pytest.MonkeyPatch) -> None:
    api = ScriptedApi([reply(200)])
    server = await asyncio.start_server(api.serve, "127.0.0.1", 0)
    with socket.socket() as held:  # a proxy that refuses connections
        held.bind(("127.0.0.1", 0))
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{held.getsockname()[1]}")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        upstream = HttpUpstream(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", "k")
        try:
            assert await upstream.notify(EVENT, 2) is Delivery.DELIVERED
        finally:
            await upstream.aclose()
            await api.stop(server)
    assert len(api.requests) == 1


@pytest.mark.parametrize("scheme", ["https"])
async def test_an_untrusted_certificate_is_refused_and_logged(
    start_api: StartApi, caplog: pytest.LogCaptureFixture
) -> None:
    api = await start_api(reply(200))
    # Without the test CA (the system's CAs only), the server's certificate is not trusted.
    upstream = HttpUpstream(api.url, "k")
    try:
        assert await upstream.notify(EVENT, 2) is Delivery.RETRY
    finally:
        await upstream.aclose()
    assert api.requests == []  # the key never left
    (error,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert error.startswith("TLS with the user-facing API failed:")
    assert "certificate verify failed" in error
