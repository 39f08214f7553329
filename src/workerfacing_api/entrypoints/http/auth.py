"""Who is calling: bearer tokens for workers, the shared key for the user-facing API, and
signatures for the links this service hands out."""

from __future__ import annotations

import hmac
from typing import Any

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from workerfacing_api.core.errors import AccessDenied, Unauthenticated
from workerfacing_api.core.model import Identity
from workerfacing_api.core.ports import IdentityVerifier

WORKERS_GROUP = "workers"
OPERATORS_GROUP = "operators"


def bearer_token(request: Request[Any, Any, Any]) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
    return token.strip()


async def authenticate_worker(
    request: Request[Any, Any, Any], verifier: IdentityVerifier
) -> Identity:
    """The calling worker: 401 without a valid token, 403 outside the ``workers`` group."""
    token = bearer_token(request)
    if token is None:
        raise Unauthenticated("missing bearer token: send 'Authorization: Bearer <token>'")
    identity = await verifier.verify(token)
    if WORKERS_GROUP not in identity.groups:
        raise AccessDenied(f"user {identity.username!r} is not in group {WORKERS_GROUP!r}")
    return identity


def require_api_key(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard of the user-facing API's endpoints: runs before the body is even read."""
    expected: str = connection.app.state.internal_api_key
    given = connection.headers.get("x-api-key")
    if not given:
        raise Unauthenticated("missing x-api-key header")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthenticated("wrong x-api-key")


async def authenticate_operator(
    request: Request[Any, Any, Any], verifier: IdentityVerifier, internal_api_key: str
) -> None:
    """An operator's reads (``/metrics``): the shared key in ``x-api-key``, or a bearer token
    of group ``operators``. 401 without either, 403 for an identity outside the group."""
    given = request.headers.get("x-api-key")
    if given:
        if not hmac.compare_digest(given.encode(), internal_api_key.encode()):
            raise Unauthenticated("wrong x-api-key")
        return
    token = bearer_token(request)
    if token is None:
        raise Unauthenticated(
            "send the internal key in x-api-key, or 'Authorization: Bearer <token>' of an "
            f"identity in group {OPERATORS_GROUP!r}"
        )
    identity = await verifier.verify(token)
    if OPERATORS_GROUP not in identity.groups:
        raise AccessDenied(f"user {identity.username!r} is not in group {OPERATORS_GROUP!r}")
