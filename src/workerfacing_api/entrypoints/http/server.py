"""The HTTP server's side of bad input: a request the HTTP parser refuses (a request line or
headers beyond its limit, about 64 KiB, or bytes that are not HTTP) never reaches the app, and
uvicorn answers it with a plain-text 400. Every error of this service is JSON, so ``serve`` runs
uvicorn's own httptools protocol with that one answer replaced."""

from __future__ import annotations

import msgspec
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

REFUSED = msgspec.json.encode(
    {
        "detail": "invalid HTTP request: the request line and headers must be HTTP/1.1 and at "
        "most 64 KiB together (a query string that long is refused)"
    }
)


class JsonErrorsHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol, answering requests its parser refuses with JSON."""

    def send_400_response(self, msg: str) -> None:
        head = [b"HTTP/1.1 400 Bad Request\r\n"]
        for name, value in self.server_state.default_headers:
            head.append(b"%s: %s\r\n" % (name, value))
        head.append(
            b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
            % len(REFUSED)
        )
        self.transport.write(b"".join(head) + REFUSED)
        self.transport.close()
