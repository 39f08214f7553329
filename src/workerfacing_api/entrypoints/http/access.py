"""The outermost layer of the HTTP service: it gives each request its id (the caller's
``X-Request-ID`` when that is a sane one, else a new one), echoes it in the answer, binds the
request's facts for every log line written while serving it, and when the answer is out writes
one access line and hands route, method, status and duration to an observer (the metrics).

The access line names the route by its template (``/jobs/{job_id}/status``), never the query
string, a header or the body: query strings carry link signatures and ``runtime_details``. A
path no route matched is shown as sent, its secrets masked (``logs.redact``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from time import perf_counter
from typing import Any, cast
from urllib.parse import quote
from uuid import uuid4

from litestar.types import ASGIApp, Message, Receive, Scope, Send

from workerfacing_api.entrypoints.logs import (
    RequestFacts,
    bind_request,
    current_request,
    redact,
    set_job_id,
    set_route,
    unbind_request,
)

access_log = logging.getLogger("workerfacing_api.access")

Observe = Callable[[str, str, int, float], None]

# The route an observer is told of when no route matched: metrics stay bounded however many
# paths clients make up.
UNMATCHED = "unmatched"
# nginx's status for "the client closed the connection before the answer was out".
CLIENT_HUNG_UP = 499

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"})
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_REQUEST_ID_HEADER = b"x-request-id"
_PATH_SHOWN = 200  # characters of an unmatched path the access line shows
# Characters of it searched for secrets before it is cut: a secret that starts among those shown
# ends well within these (a token is a few KiB), and a 60 KiB path costs no more than this.
_PATH_SEARCHED = 8192


def request_id_from(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The caller's ``X-Request-ID`` if it is 1 to 128 of ``A-Z a-z 0-9 . _ : -``, else a new
    id. Anything else is replaced rather than cleaned: an id that reaches the log must be one
    the caller can grep for exactly, and must not be able to forge a line or fill the disk."""
    for name, value in headers:
        if name == _REQUEST_ID_HEADER:
            if len(value) <= 128:
                text = value.decode("latin-1")
                if _REQUEST_ID.fullmatch(text):
                    return text
            break
    return uuid4().hex


def note_route(app: ASGIApp) -> ASGIApp:
    """Litestar middleware: tells the request's facts its route template and job id once the
    router has matched them, so the lines written while the handler runs carry them too.

    The outer layer cannot read them from its own scope afterwards: ``FileIdPaths`` routes a
    copy of the scope."""

    async def noted(scope: Scope, receive: Receive, send: Send) -> None:
        if current_request() is not None:
            template = scope.get("path_template")
            if template:
                set_route(template)
            job_id = scope.get("path_params", {}).get("job_id")
            if job_id is not None:
                set_job_id(job_id if isinstance(job_id, int) else str(job_id))
        await app(scope, receive, send)

    return noted


class _Exchange:
    """What the outer layer saw of one request's answer."""

    __slots__ = ("ended", "hung_up", "status")

    def __init__(self) -> None:
        self.status: int | None = None
        self.ended: float | None = None
        self.hung_up = False


class RequestLog:
    """Request ids, the access line and the observer, around ``app``; see the module."""

    def __init__(self, app: ASGIApp, *, access_log: bool, observe: Observe | None = None) -> None:
        self.app = app
        self.access_log = access_log
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # type: ignore[comparison-overlap]
            await self.app(scope, receive, send)
            return
        started = perf_counter()
        method: str = scope["method"]  # type: ignore[typeddict-item]
        if method not in _METHODS:
            method = "OTHER"  # any token is a method to the server; the metrics stay bounded
        facts = bind_request(request_id_from(scope["headers"]), method)
        echoed = (_REQUEST_ID_HEADER, facts.request_id.encode())
        exchange = _Exchange()

        async def send_noted(message: Message) -> None:
            event = cast("dict[str, Any]", message)  # Litestar's TypedDicts, one per kind
            kind = event["type"]
            if kind == "http.response.start":
                exchange.status = event["status"]
                event = {**event, "headers": [*event.get("headers", ()), echoed]}
            elif (
                kind == "http.response.body" and not event.get("more_body", False)
            ) or kind == "http.response.pathsend":
                exchange.ended = perf_counter()
            await send(cast("Message", event))

        async def receive_noted() -> Any:
            message = await receive()
            # The server says so once the client has gone (or the answer is complete): the
            # answer in the making reaches nobody.
            if message["type"] == "http.disconnect" and exchange.ended is None:
                exchange.hung_up = True
            return message

        try:
            await self.app(scope, receive_noted, send_noted)
        finally:
            try:
                self._finish(scope, facts, exchange, started)
            finally:
                unbind_request(facts)

    def _finish(
        self, scope: Scope, facts: RequestFacts, exchange: _Exchange, started: float
    ) -> None:
        seconds = (exchange.ended or perf_counter()) - started
        # No answer started: the app failed, and the server answers 500 in its place.
        status = exchange.status or 500
        if exchange.hung_up:
            status = CLIENT_HUNG_UP
        if self.observe is not None:
            self.observe(facts.route or UNMATCHED, facts.method, status, seconds)
        if self.access_log and access_log.isEnabledFor(logging.INFO):
            route = facts.route or _path_of(scope)
            milliseconds = seconds * 1000
            # Not an error of the service: said in words at INFO, like every access line.
            hung_up = " (client hung up)" if exchange.hung_up else ""
            access_log.info(
                "%s %s %d %.1f ms%s",
                facts.method,
                route,
                status,
                milliseconds,
                hung_up,
                extra={
                    "route": route,
                    "method": facts.method,
                    "status": status,
                    "duration_ms": round(milliseconds, 3),
                },
            )


def _path_of(scope: Scope) -> str:
    """The path as the client sent it, without the query string: still percent-encoded, so a
    ``%0A`` in it cannot start a forged line; its secrets masked (a client that sends the
    internal key or a token in a path must not find it in the log); then cut short, as nobody
    reads a 60 KiB path. Masked before it is cut: a secret cut in two would no longer be
    recognised, and its first part would show."""
    raw: bytes | None = scope.get("raw_path")
    if raw:
        # Some servers leave the query string on it (uvicorn does not).
        path = raw.partition(b"?")[0].decode("ascii", "backslashreplace")
    else:
        path = quote(scope["path"], safe="/:@!$&'()*+,;=-._~{}")
    shown = redact(path[:_PATH_SEARCHED])
    if len(shown) > _PATH_SHOWN or len(path) > _PATH_SEARCHED:
        return shown[:_PATH_SHOWN] + "…"
    return shown
