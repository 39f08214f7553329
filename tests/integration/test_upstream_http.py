"""The upstream client against real sockets on 127.0.0.1: what it sends, how it reads the
answers the user-facing API (or a proxy in front of it) may give, and how it fails."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

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

Answer = Callable[[bytes, asyncio.StreamWriter], bytes | None]


def reply(status: int, body: bytes = b'"ok"', *, extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n{extra}"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body


@dataclass
class FakeApi:
    """A scripted HTTP server: each request gets the next answer (the last one repeats)."""

    answers: list[bytes | None]
    requests: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    connections: int = 0
    close_after_each: bool = False
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests.append((lines[0], headers, body))
                index = min(len(self.requests) - 1, len(self.answers) - 1)
                answer = self.answers[index]
                if answer is None:  # hang: never answer
                    await asyncio.sleep(3600)
                    return
                writer.write(answer)
                await writer.drain()
                if self.close_after_each:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def fake_api() -> AsyncIterator[Callable[..., FakeApi]]:
    servers: list[asyncio.Server] = []

    async def start(*answers: bytes | None, close_after_each: bool = False) -> FakeApi:
        api = FakeApi(list(answers), close_after_each=close_after_each)
        server = await asyncio.start_server(api.handle, "127.0.0.1", 0)
        api.port = server.sockets[0].getsockname()[1]
        servers.append(server)
        return api

    yield start  # type: ignore[misc]
    for server in servers:
        server.close()


async def test_sends_the_status_put_the_user_facing_api_expects(
    fake_api: Callable[..., FakeApi],
) -> None:
    api = await fake_api(reply(200))  # type: ignore[misc]
    upstream = HttpUpstream(f"http://127.0.0.1:{api.port}/prefix", "s3cret")
    try:
        assert await upstream.notify(EVENT, 2) is Delivery.DELIVERED
    finally:
        await upstream.aclose()
    ((line, headers, body),) = api.requests
    assert line == "PUT /prefix/_job_status HTTP/1.1"
    assert headers["x-api-key"] == "s3cret"
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {"job_id": 42, "status": "running", "runtime_details": ""}


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [
        (reply(200), Delivery.DELIVERED),
        (reply(204, b""), Delivery.DELIVERED),
        (reply(404, b'{"detail": "Job not found"}'), Delivery.GONE),
        (reply(503), Delivery.RETRY),
        (reply(429), Delivery.RETRY),
        (reply(401), Delivery.RETRY),  # wrong key: kept and retried, never dropped
        (reply(422), Delivery.RETRY),
        (b"garbage\r\n\r\n", Delivery.RETRY),
    ],
)
async def test_answers_map_to_outcomes(
    fake_api: Callable[..., FakeApi], answer: bytes, outcome: Delivery
) -> None:
    api = await fake_api(answer)  # type: ignore[misc]
    upstream = HttpUpstream(f"http://127.0.0.1:{api.port}", "k")
    try:
        assert await upstream.notify(EVENT, 2) is outcome
    finally:
        await upstream.aclose()


async def test_keeps_the_connection_alive_and_reads_chunked_answers(
    fake_api: Callable[..., FakeApi],
) -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        b'3\r\n"ok\r\n1;ext=1\r\n"\r\n0\r\nx-trailer: 1\r\n\r\n'
    )
    api = await fake_api(chunked, reply(200))  # type: ignore[misc]
    upstream = HttpUpstream(f"http://127.0.0.1:{api.port}", "k")
    try:
        for _ in range(3):
            assert await upstream.notify(EVENT, 2) is Delivery.DELIVERED
    finally:
        await upstream.aclose()
    assert len(api.requests) == 3
    assert api.connections == 1


async def test_reconnects_when_the_server_closed_the_connection(
    fake_api: Callable[..., FakeApi],
) -> None:
    api = await fake_api(reply(200), close_after_each=True)  # type: ignore[misc]
    upstream = HttpUpstream(f"http://127.0.0.1:{api.port}", "k")
    try:
        for _ in range(3):
            assert await upstream.notify(EVENT, 2) is Delivery.DELIVERED
    finally:
        await upstream.aclose()
    assert len(api.requests) == 3
    assert api.connections == 3


async def test_connection_close_is_honoured(fake_api: Callable[..., FakeApi]) -> None:
    api = await fake_api(reply(200, extra="connection: close\r\n"))  # type: ignore[misc]
    upstream = HttpUpstream(f"http://127.0.0.1:{api.port}", "k")
    try:
        assert await upstream.notify(EVENT, 2) is Delivery.DELIVERED
        assert await upstream.notify(EVENT, 2) is Delivery.DELIVERED
    finally:
        await upstream.aclose()
    assert api.connections == 2


async def test_down_or_silent_upstream_means_retry_within_the_deadline(
    fake_api: Callable[..., FakeApi],
) -> None:
    with socket.socket() as held:  # bound, not listening: connections are refused
        held.bind(("127.0.0.1", 0))
        refused = HttpUpstream(f"http://127.0.0.1:{held.getsockname()[1]}", "k")
        assert await refused.notify(EVENT, 2) is Delivery.RETRY
        await refused.aclose()
    api = await fake_api(None)  # type: ignore[misc]
    silent = HttpUpstream(f"http://127.0.0.1:{api.port}", "k")
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        assert await silent.notify(EVENT, 0.3) is Delivery.RETRY
    finally:
        await silent.aclose()
    assert loop.time() - started < 2
