"""``HEAD`` on every ``GET`` route (load balancers and uptime checks send it): the request is
served as a ``GET`` and its answer goes out without the body, its headers (``content-length``
included) as they are.

Except ``GET /jobs``: it is a pull, which hands jobs out. A ``HEAD`` must be safe (RFC 9110), and
one that claimed jobs would lose them to a caller that never sees them, so it is answered 405.
"""

from __future__ import annotations

from typing import cast

import msgspec
from litestar.types import ASGIApp, Message, Receive, Scope, Send

PULL = "/jobs"
_NOT_A_PULL = msgspec.json.encode(
    {"detail": "HEAD /jobs would hand jobs out without showing them; pull with GET"}
)


class HeadAsGet:
    """The ASGI layer that answers ``HEAD`` as ``GET`` without a body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "HEAD":  # type: ignore[comparison-overlap]
            await self.app(scope, receive, send)
            return
        if scope["path"].rstrip("/") == PULL:
            await _refuse(send)
            return

        async def without_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = cast(Message, {**message, "body": b""})
            await send(message)

        await self.app(cast(Scope, {**scope, "method": "GET"}), receive, without_body)


async def _refuse(send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 405,
            "headers": [
                (b"allow", b"GET"),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(_NOT_A_PULL)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"", "more_body": False})
