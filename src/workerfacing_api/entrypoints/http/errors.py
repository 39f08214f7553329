"""The one table that turns errors into HTTP responses: ``{"detail": "..."}`` with a status code.

Domain errors carry their own sentence; framework errors (a missing query parameter, a body that
is not JSON) are reworded to name the parameter. Anything else is a bug: logged with its
traceback, answered with a bare 500.
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from workerfacing_api.core.errors import (
    AccessDenied,
    DomainError,
    FileNotFound,
    InvalidRequest,
    InvalidStatus,
    JobNotFound,
    NotSupported,
    PayloadTooLarge,
    StatusConflict,
    Unauthenticated,
    Unavailable,
)
from workerfacing_api.core.model import in_words
from workerfacing_api.entrypoints.http.multipart import ClientHungUp

log = logging.getLogger("workerfacing_api.http")

STATUS_OF: dict[type[DomainError], int] = {
    JobNotFound: 404,
    FileNotFound: 404,
    InvalidStatus: 422,
    InvalidRequest: 422,
    StatusConflict: 409,
    AccessDenied: 403,
    Unauthenticated: 401,
    PayloadTooLarge: 413,
    NotSupported: 400,
    Unavailable: 503,
}


def _json(status: int, detail: str, headers: dict[str, str] | None = None) -> Response[Any]:
    return Response({"detail": detail}, status_code=status, headers=headers)


def domain_error(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    assert isinstance(exc, DomainError)
    status = next((s for t, s in STATUS_OF.items() if isinstance(exc, t)), 400)
    headers = None
    if status == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    elif status == 503:
        # An outage of the database, answered as it should be: not an error of this service.
        log.warning("%s", exc.detail)
        headers = {"Retry-After": "5"}  # the DECODE worker retries 5xx with back-off
    return _json(status, exc.detail, headers)


def validation_error(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    assert isinstance(exc, ValidationException)
    problems = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if not isinstance(item, dict):
            continue
        key, message = item.get("key"), in_words(str(item.get("message", "")))
        if key == "data":  # the whole body is missing or not an object
            key = "request body"
        source = getattr(item.get("source"), "value", item.get("source"))
        where = f"{source} parameter {key!r}" if source and source != "body" else (key or "body")
        problems.append(f"{where}: {message}".strip())
    return _json(422, "; ".join(problems) or str(exc.detail))


def http_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    assert isinstance(exc, HTTPException)
    if exc.status_code >= 500:
        return internal_error(request, exc)
    detail = str(exc.detail)
    if exc.status_code == 404 and detail == "Not Found":  # no route matched the path
        detail = f"not found: no endpoint {request.method} {request.url.path}"
        if request.url.path.startswith("/jobs/"):
            detail += " (job ids are whole numbers)"
    return _json(exc.status_code, detail, exc.headers)


def invalid_submission(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if isinstance(exc, ValidationException):
        return validation_error(request, exc)
    assert isinstance(exc, HTTPException)
    if exc.status_code == 400:
        return _json(422, f"invalid job submission: {exc.detail}")
    return http_error(request, exc)


def nested_submission(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    answer = nested_too_deeply(request, exc)
    if answer.status_code == 400:
        return _json(422, "invalid job submission: JSON nested too deeply")
    return answer


def nested_too_deeply(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """A JSON body nested deeper than the decoder recurses: bad input, not a bug."""
    if "deserializ" not in str(exc):  # msgspec's words; any other RecursionError is a bug
        return internal_error(request, exc)
    return _json(400, "request body: JSON nested too deeply")


def invalid_encoding(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """A body that is not UTF-8 where JSON (always UTF-8) is expected: bad input."""
    return _json(400, f"request body is not valid UTF-8 ({exc.__class__.__name__})")


def invalid_encoding_of_submission(
    request: Request[Any, Any, Any], exc: Exception
) -> Response[Any]:
    return _json(422, "invalid job submission: the body is not valid UTF-8 JSON")


def client_hung_up(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Not an error of the service: an upload cut short by its client (a worker killed, a
    network gone). Its partial file is already removed; nobody is left to read this answer."""
    log.info(
        "client hung up during %s %s; the partial upload was dropped",
        request.method,
        request.url.path,
    )
    return _json(400, "the request body ended before it was complete")


def internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return _json(HTTP_500_INTERNAL_SERVER_ERROR, "internal server error")


EXCEPTION_HANDLERS: dict[type[Exception], Any] = {
    DomainError: domain_error,
    ValidationException: validation_error,
    HTTPException: http_error,
    RecursionError: nested_too_deeply,
    UnicodeDecodeError: invalid_encoding,
    ClientHungUp: client_hung_up,
    Exception: internal_error,
}
