"""The one place that assembles the HTTP service: routes and who may call them, dependencies,
error handlers, docs, the headers every answer carries, and the background duties (sweeper,
status dispatcher) that run beside it.

Everything comes from the container: the handlers' dependencies are its providers
(``litestar.di.Provide``), the routers' checks of who calls ask its ``access``, and the app's
lifespan opens and closes what its adapters hold (``container.running``). Nothing is kept
beside it.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from litestar import Litestar, Router
from litestar.datastructures import MutableScopeHeaders
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityRequirement
from litestar.static_files import create_static_files_router
from litestar.types import Message, Scope

from workerfacing_api import __version__
from workerfacing_api.container import Container, start, stop, warm_up
from workerfacing_api.entrypoints.duties import Duties
from workerfacing_api.entrypoints.http.access import Observe, RequestLog, note_route
from workerfacing_api.entrypoints.http.auth import internal_only, operators_only, workers_only
from workerfacing_api.entrypoints.http.errors import EXCEPTION_HANDLERS
from workerfacing_api.entrypoints.http.head import HeadAsGet
from workerfacing_api.entrypoints.http.openapi import (
    BEARER,
    DASHBOARD_SESSION,
    INTERNAL_KEY,
    ExactJsonRenderPlugin,
    ExactSwaggerRenderPlugin,
    security_schemes,
)
from workerfacing_api.entrypoints.http.routes import (
    INTERNAL_ROUTES,
    OPERATOR_ROUTES,
    PUBLIC_ROUTES,
    WORKER_ROUTES,
)
from workerfacing_api.entrypoints.http.routing import FileIdPaths
from workerfacing_api.entrypoints.http.ui import COOKIE, SESSION_STORE, dashboard_routes

log = logging.getLogger("workerfacing_api.http")

# On every answer of the API and of the dashboard, errors included (ARCHITECTURE §7): the pages load
# scripts, styles and data from this origin only, and no inline script or style (ui/ has none);
# no other page may frame them (clickjacking; X-Frame-Options for browsers without CSP); a
# response is read as the type it says (nosniff); and a link followed to another site does not
# tell it the address (a job's id) it was followed from.
SECURITY_HEADERS = (
    ("content-security-policy", "default-src 'self'; frame-ancestors 'none'"),
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "same-origin"),
)


# The API's documentation page (Swagger UI, Litestar's plugin) loads its script, style and icon
# from this service (``DOCS_ASSETS``) and starts with an inline script that holds the document:
# that one page allows an inline script, and the icons Swagger UI's style sheet holds as data:
# URLs; nothing else, and nothing from another origin (the page works offline).
DOCS_PAGES = frozenset({"/docs", "/docs/"})
DOCS_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self'; "
    "img-src 'self' data:; frame-ancestors 'none'"
)
# Swagger UI's files, from the package that ships them (swagger-ui-py's ``static`` folder; found
# without importing the package, whose own code is for other frameworks).
DOCS_ASSETS = "/docs/assets"


def _swagger_ui_files() -> Path:
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or spec.origin is None:  # pragma: no cover - a dependency of the project
        raise RuntimeError("the package swagger-ui-py is missing: run `uv sync`")
    return Path(spec.origin).parent / "static"


def _docs_page() -> ExactSwaggerRenderPlugin:
    """Swagger UI at /docs, every file it loads served here (no CDN)."""
    return ExactSwaggerRenderPlugin(
        path="/",
        js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
        css_url=f"{DOCS_ASSETS}/swagger-ui.css",
        standalone_preset_js_url=f"{DOCS_ASSETS}/swagger-ui-standalone-preset.js",
        favicon=f"<link rel='icon' type='image/png' href='{DOCS_ASSETS}/favicon-32x32.png'>",
        style="",  # Litestar's default is an inline <style>, which the page's policy refuses
    )


# Who may call each group of routes, as the document tells it (the routers' checks enforce it). The
# dashboard's data also answers the key and an operator's token; they are listed before the
# browser's cookie (schemathesis judges a request by the first alternative it carries, and takes
# a cookie it made up beside a valid key for a bypass).
WORKERS: list[SecurityRequirement] = [{BEARER: []}]
INTERNAL: list[SecurityRequirement] = [{INTERNAL_KEY: []}]
OPERATORS: list[SecurityRequirement] = [{INTERNAL_KEY: []}, {BEARER: []}]
DASHBOARD: list[SecurityRequirement] = [*OPERATORS, {DASHBOARD_SESSION: []}]


def _one_charset(content_type: str) -> str:
    """``content_type`` with its first charset only. Litestar appends one to every text/*
    media type, also to one that names it already (Prometheus' text format does)."""
    kept: list[str] = []
    for part in content_type.split(";"):
        if part.strip().lower().startswith("charset=") and any(
            p.strip().lower().startswith("charset=") for p in kept
        ):
            continue
        kept.append(part)
    return ";".join(kept)


async def _secure_every_answer(message: Message, scope: Scope) -> None:
    """Litestar's ``before_send`` hook: it sees every answer the app sends, its own refusals
    (no such route, no such method, a 500) included."""
    if message["type"] != "http.response.start":
        return
    headers = MutableScopeHeaders.from_message(message)
    for name, value in SECURITY_HEADERS:
        headers[name] = value
    if scope.get("path") in DOCS_PAGES:
        headers["content-security-policy"] = DOCS_POLICY
    content_type = headers.get("content-type")
    if content_type is not None and content_type.lower().count("charset=") > 1:
        headers["content-type"] = _one_charset(content_type)


def _tune_garbage_collector() -> None:
    """Once started, what exists lives as long as the process (modules, the app, pools,
    sessions): keep the collector off it, and let it run less often (a request allocates some
    thousand objects). Measured: done before the server and the app start instead, the
    collector's full passes keep walking those objects and a job cycle costs more CPU."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


def _dependency(provider: Callable[[], Any]) -> Provide:
    """The container's ``provider`` as a Litestar dependency: asked once, when a request first
    needs it (in the server's loop), then kept; a provider overridden before the first request
    is what every request uses."""

    def provide() -> Any:
        return provider()

    return Provide(provide, use_cache=True, sync_to_thread=False)


def create_app(
    container: Container,
    *,
    run_duties: bool = True,
    tune_gc: bool = False,
    observe: Observe | None = None,
) -> RequestLog:
    """The ASGI application for ``container``; with ``run_duties`` the sweeper and the status
    dispatcher run in the background while it serves. ``tune_gc`` is for a process that only
    serves this app (``serve``): an application embedded elsewhere leaves its host's garbage
    collector be. ``observe`` is told route template, method, status and seconds of every
    request (by default the container's ``request_observer``: the metrics, when they are on)."""
    settings = container.settings()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await start(container)  # the database's pool, the upstream's client
        await warm_up(container)  # Cognito's keys, before the first worker needs them
        container.health()  # learns the schema's head now (Alembic is slow), not on a request
        if tune_gc:
            _tune_garbage_collector()
        duties = None
        if run_duties:
            duties = Duties(
                container.jobs(),
                container.sync(),
                container.notices(),
                sweep_interval=settings.sweep_interval,
            )
            duties.start()
        try:
            yield
        finally:
            if duties is not None:
                await duties.stop()
            # Deliveries still in flight finish (each is bounded); those cut short are handed
            # back at once (due for any process), so nothing is lost and nothing waits.
            await container.sync().stop(10)
            # Shielded: should the shutdown be cancelled, closing still completes, so that the
            # connections are handed back.
            await asyncio.shield(stop(container))

    dependencies = {
        name: _dependency(getattr(container, name))
        for name in (
            "jobs",
            "files",
            "signer",
            "access",
            "explainer",
            "probes",
            "overview",
            "demand",
            "operations",
            "dashboard_reads",
            "settings",
            "clock",
        )
    }
    app = Litestar(
        route_handlers=[
            Router("/", route_handlers=PUBLIC_ROUTES),
            Router(
                "/",
                route_handlers=WORKER_ROUTES,
                before_request=workers_only(container.access),
                security=WORKERS,
            ),
            Router(
                "/",
                route_handlers=INTERNAL_ROUTES,
                before_request=internal_only(container.access),
                security=INTERNAL,
            ),
            Router(
                "/",
                route_handlers=OPERATOR_ROUTES,
                before_request=operators_only(container.access),
                security=OPERATORS,
            ),
            Router("/", route_handlers=dashboard_routes(), security=DASHBOARD),
            create_static_files_router(
                DOCS_ASSETS, directories=[_swagger_ui_files()], name="swagger_ui_assets"
            ),
        ],
        dependencies=dependencies,
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        lifespan=[lifespan],
        openapi_config=OpenAPIConfig(
            title="DECODE OpenCloud worker-facing API",
            version=__version__,
            path="/docs",
            render_plugins=[_docs_page(), ExactJsonRenderPlugin()],
            components=Components(security_schemes=security_schemes(COOKIE)),
        ),
        logging_config=None,
        debug=False,
        middleware=[note_route],
        before_send=[_secure_every_answer],
        # The dashboard's sessions: the container's store (the queue's database).
        stores={SESSION_STORE: container.ui_sessions()},
    )
    if observe is None:
        observe = container.request_observer()
    return RequestLog(HeadAsGet(FileIdPaths(app)), access_log=settings.access_log, observe=observe)
