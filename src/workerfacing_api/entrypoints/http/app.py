"""The one place that assembles the HTTP service: routes, dependencies, error handlers, docs,
and the background duties (sweeper, status dispatcher) that run beside it."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin

from workerfacing_api import __version__
from workerfacing_api.entrypoints.duties import Duties
from workerfacing_api.entrypoints.http.errors import EXCEPTION_HANDLERS
from workerfacing_api.entrypoints.http.routes import ROUTES, Services
from workerfacing_api.entrypoints.http.routing import FileIdPaths

if TYPE_CHECKING:
    from workerfacing_api.container import Container

log = logging.getLogger("workerfacing_api.http")


def create_app(container: Container, *, run_duties: bool = True) -> FileIdPaths:
    """The ASGI application for ``container``; with ``run_duties`` the sweeper and the status
    dispatcher run in the background while it serves."""
    settings = container.settings()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        # Everything created so far lives as long as the process: keep the garbage collector
        # off it, and let it run less often (a request allocates some thousand objects).
        gc.collect()
        gc.freeze()
        gc.set_threshold(10_000, 10, 10)
        duties = Duties(container) if run_duties else None
        if duties is not None:
            duties.start()
        try:
            yield
        finally:
            if duties is not None:
                await duties.stop()
            upstream = container.upstream()
            if upstream is not None:
                await upstream.aclose()
            await asyncio.shield(container.queue().close())

    def services() -> Services:
        return Services(
            jobs=container.jobs(),
            files=container.files(),
            signer=container.signer(),
            identity=container.identity(),
            settings=settings,
        )

    dependencies = {"api": Provide(services, use_cache=True, sync_to_thread=False)}
    app = Litestar(
        route_handlers=ROUTES,
        dependencies=dependencies,
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        lifespan=[lifespan],
        state=State({"internal_api_key": container.internal_api_key()}),
        openapi_config=OpenAPIConfig(
            title="DECODE OpenCloud worker-facing API",
            version=__version__,
            path="/docs",
            render_plugins=[SwaggerRenderPlugin(path="/"), JsonRenderPlugin()],
        ),
        logging_config=None,
        debug=False,
    )
    return FileIdPaths(app)
