"""The HTTP server's side of bad input, for ``serve``: uvicorn's httptools protocol (its parser,
llhttp, is native code) with a limit on a request's head and JSON for what it refuses.

httptools keeps no limit of its own on a request line and headers (a 32 MiB header was once read
whole and stalled the process); uvicorn's h11 protocol has one, but parses in Python, for about
0.35 ms of CPU more per job cycle (docs/PERFORMANCE.md). So this protocol counts what arrives
while a request's head is still incomplete, and past ``MAX_REQUEST_HEAD`` answers 431 and closes
the connection, before it reads more. A request the parser refuses (bytes that are not HTTP/1.1)
gets a 400; both answers are JSON, as every error of this service."""

from __future__ import annotations

import msgspec
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_REQUEST_HEAD = 64 * 1024  # bytes of a request line and headers, together

_TOO_LARGE = msgspec.json.encode(
    {
        "detail": f"request head too large: the request line and headers must be at most "
        f"{MAX_REQUEST_HEAD // 1024} KiB together (a query string that long is refused)"
    }
)
_NOT_HTTP = msgspec.json.encode(
    {"detail": "invalid HTTP request: the request line and headers must be HTTP/1.1"}
)


class BoundedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with at most ``MAX_REQUEST_HEAD`` bytes of an incomplete
    request head, and JSON answers for the requests it refuses.

    A chunk the transport reads counts whole when it only carries a head's bytes: no head and no
    request ended in it, and a head is awaited or under way. A chunk in which one ended may carry
    a body's end or the next pipelined request's start, and starts the count afresh; so a head is
    refused after at most the limit plus two reads of the transport, and a body never counts."""

    _head_bytes = 0  # received while the current request's head is incomplete
    _in_head = True  # a request's head is awaited or under way (not its body)
    _ends = 0  # heads and requests that ended on this connection

    def data_received(self, data: bytes) -> None:
        ends = self._ends
        super().data_received(data)
        if self._ends != ends:
            self._head_bytes = 0
        elif self._in_head and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > MAX_REQUEST_HEAD:
                self.logger.warning("Request head over %d bytes refused.", MAX_REQUEST_HEAD)
                self._refuse(b"431 Request Header Fields Too Large", _TOO_LARGE)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._ends += 1
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True  # the next request's head, on a kept-alive connection
        self._ends += 1

    def send_400_response(self, msg: str) -> None:
        self._refuse(b"400 Bad Request", _NOT_HTTP)

    def _refuse(self, status: bytes, body: bytes) -> None:
        head = [b"HTTP/1.1 ", status, b"\r\n"]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head.append(
            b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
            % len(body)
        )
        self.transport.write(b"".join(head) + body)
        self.transport.close()
