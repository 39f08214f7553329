"""Credentials read off a request, and the guards of the routes that need them. The rules (who
may call what) are the core's ``Access``; here is only where HTTP keeps them: the bearer token in
``Authorization``, the shared key in ``x-api-key``.

A guard is built for an app from the container's ``access`` provider (``create_app``), and asks
it on every request, so that a provider overridden before the first request is the one used.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from workerfacing_api.core.access import Access
from workerfacing_api.core.errors import Unauthenticated
from workerfacing_api.entrypoints.logs import set_worker

AnyConnection = ASGIConnection[Any, Any, Any, Any]
Guard = Callable[[AnyConnection, BaseRouteHandler], Awaitable[None] | None]
# A handler that takes its credentials itself (a signed link, say) sets this in its ``opt``.
PUBLIC = "public"


def bearer_token(connection: AnyConnection) -> str | None:
    header = connection.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
    return token.strip()


def api_key(connection: AnyConnection) -> str | None:
    return connection.headers.get("x-api-key")


async def worker_of(connection: AnyConnection, access: Access) -> str:
    """The calling worker's name (401 without a valid token, 403 outside ``workers``); every
    later log line of the request names it."""
    identity = await access.worker(bearer_token(connection))
    set_worker(identity.username)
    return identity.username


def workers_only(access: Callable[[], Access]) -> Guard:
    """Workers' routes: the handler reads who calls from ``request.user`` (the identity)."""

    async def guard(connection: AnyConnection, handler: BaseRouteHandler) -> None:
        if handler.opt.get(PUBLIC):
            return
        identity = await access().worker(bearer_token(connection))
        set_worker(identity.username)
        connection.scope["user"] = identity

    return guard


def internal_only(access: Callable[[], Access]) -> Guard:
    """The user-facing API's routes: runs before the body is even read."""

    def guard(connection: AnyConnection, _handler: BaseRouteHandler) -> None:
        access().internal(api_key(connection))

    return guard


def operators_only(access: Callable[[], Access]) -> Guard:
    """Operators' reads (``/metrics``): the internal key, or a token of group ``operators``."""

    async def guard(connection: AnyConnection, _handler: BaseRouteHandler) -> None:
        await access().operator(bearer_token(connection), api_key(connection))

    return guard
