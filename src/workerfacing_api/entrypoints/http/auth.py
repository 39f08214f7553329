"""Credentials read off a request, and the checks of the routes that need them. The rules (who
may call what) are the core's ``Access``; here is only where HTTP keeps them: the bearer token in
``Authorization``, the shared key in ``x-api-key``.

A check is built for an app from the container's ``access`` provider (``create_app``), and asks
it on every request, so that a provider overridden before the first request is the one used.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from litestar.connection import ASGIConnection, Request
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


# Who may call a group of routes is checked by a hook the group's router runs before each of its
# handlers (``before_request``), not by a Litestar guard: a guard is handed a copy of the route's
# handler on every request, a measured 2-3 % of the API's CPU a job cycle. The hook runs before
# the request's body or parameters are read, as a guard would.
Hook = Callable[[Request[Any, Any, Any]], Awaitable[None]]


def workers_only(access: Callable[[], Access]) -> Hook:
    """Workers' routes: the handler reads who calls from ``request.user`` (the identity)."""

    async def check(request: Request[Any, Any, Any]) -> None:
        if request.route_handler.opt.get(PUBLIC):
            return
        identity = await access().worker(bearer_token(request))
        set_worker(identity.username)
        request.scope["user"] = identity

    return check


def internal_only(access: Callable[[], Access]) -> Hook:
    """The user-facing API's routes: runs before the body is even read."""

    async def check(request: Request[Any, Any, Any]) -> None:
        access().internal(api_key(request))

    return check


def operators_only(access: Callable[[], Access]) -> Hook:
    """Operators' reads (``/metrics``): the internal key, or a token of group ``operators``."""

    async def check(request: Request[Any, Any, Any]) -> None:
        await access().operator(bearer_token(request), api_key(request))

    return check
