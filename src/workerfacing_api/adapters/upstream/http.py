"""The user-facing API over HTTP: ``PUT {USERFACING_API_URL}/_job_status`` with ``x-api-key``.

Each job cycle makes three of these calls, on 2-core machines where CPU per cycle is the budget:
measured here, one call costs about 1 ms of client CPU with httpx, 0.37 ms with aiohttp and
0.1 ms with the few lines below (docs/PERFORMANCE.md). So this adapter speaks the little HTTP/1.1
it needs itself: keep-alive connections to one origin, a PUT with a JSON body, and a response
read by Content-Length or chunked encoding. TLS is asyncio's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from urllib.parse import urlsplit

import msgspec

from workerfacing_api.core.model import Delivery, StatusEvent

log = logging.getLogger("workerfacing_api.upstream")

_MAX_HEADER_BYTES = 64 * 1024


class _StatusBody(msgspec.Struct):
    job_id: int
    status: str
    runtime_details: str


class UpstreamProtocolError(Exception):
    """The upstream's answer is not HTTP/1.1 we can read."""


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        self.writer.close()

    async def exchange(self, request: bytes) -> tuple[int, bool]:
        """Send one request; return the status and whether the connection may be reused."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        if len(head) > _MAX_HEADER_BYTES:
            raise UpstreamProtocolError("response headers too large")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise UpstreamProtocolError(f"not an HTTP/1.x status line: {lines[0]!r}")
        status = int(parts[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            await self._skip_chunked()
        elif "content-length" in headers:
            await self.reader.readexactly(int(headers["content-length"]))
        elif status not in (204, 304) and not 100 <= status < 200:
            await self.reader.read()  # delimited by the end of the connection
            return status, False
        reusable = headers.get("connection", "").lower() != "close" and parts[0] == "HTTP/1.1"
        return status, reusable

    async def _skip_chunked(self) -> None:
        while True:
            size_line = await self.reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                while (await self.reader.readuntil(b"\r\n")) != b"\r\n":
                    pass  # trailers
                return
            await self.reader.readexactly(size + 2)


class HttpUpstream:
    """Implements ``UpstreamNotifier``."""

    def __init__(self, base_url: str, api_key: str, *, max_connections: int = 32) -> None:
        url = urlsplit(base_url.rstrip("/"))
        self._host = url.hostname or "localhost"
        self._tls = url.scheme == "https"
        self._port = url.port or (443 if self._tls else 80)
        authority = url.netloc.rsplit("@", 1)[-1]
        self._head = (
            f"PUT {url.path}/_job_status HTTP/1.1\r\nhost: {authority}\r\n"
            f"x-api-key: {api_key}\r\ncontent-type: application/json\r\n"
            "user-agent: workerfacing-api\r\ncontent-length: "
        ).encode("latin-1")
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(max_connections)
        self._encoder = msgspec.json.Encoder()
        self._ssl: ssl.SSLContext | None = ssl.create_default_context() if self._tls else None

    async def _open(self) -> _Connection:
        reader, writer = await asyncio.open_connection(
            self._host,
            self._port,
            ssl=self._ssl,
            server_hostname=self._host if self._tls else None,
            limit=_MAX_HEADER_BYTES,
        )
        return _Connection(reader, writer)

    async def notify(self, event: StatusEvent, within: float) -> Delivery:
        body = self._encoder.encode(
            _StatusBody(
                job_id=event.upstream_id,
                status=event.status.value,
                runtime_details=event.runtime_details or "",
            )
        )
        request = b"%s%d\r\n\r\n%s" % (self._head, len(body), body)
        try:
            async with asyncio.timeout(within), self._slots:
                status = await self._send(request)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            log.debug("upstream unreachable for job %s: %r", event.job_id, exc)
            return Delivery.RETRY
        except (asyncio.LimitOverrunError, UpstreamProtocolError) as exc:
            log.warning("upstream answered something unreadable: %s", exc)
            return Delivery.RETRY
        if 200 <= status < 300:
            return Delivery.DELIVERED
        if status == 404:
            return Delivery.GONE
        if status not in (408, 429) and status < 500:
            # 401/422: a misconfiguration (wrong INTERNAL_API_KEY_SECRET?) that an operator must
            # fix; the event is kept and retried meanwhile, never dropped.
            log.error(
                "upstream refused status %s of job %s with HTTP %s; will retry",
                event.status.value,
                event.upstream_id,
                status,
            )
        return Delivery.RETRY

    async def _send(self, request: bytes) -> int:
        # A kept-alive connection may have been closed by the server meanwhile; the PUT is
        # idempotent, so it is sent once more on a fresh connection if the old one fails.
        while self._idle:
            conn = self._idle.pop()
            try:
                status, reusable = await conn.exchange(request)
            except (OSError, asyncio.IncompleteReadError):
                conn.close()
                continue
            except BaseException:
                conn.close()
                raise
            self._keep(conn, reusable)
            return status
        conn = await self._open()
        try:
            status, reusable = await conn.exchange(request)
        except BaseException:
            conn.close()
            raise
        self._keep(conn, reusable)
        return status

    def _keep(self, conn: _Connection, reusable: bool) -> None:
        if reusable:
            self._idle.append(conn)
        else:
            conn.close()

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
            with contextlib.suppress(OSError):
                await conn.writer.wait_closed()
