"""The one place that assembles the HTTP service: routes, dependencies, error handlers, docs,
and the background duties (sweeper, status dispatcher) that run beside it."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin

from workerfacing_api import __version__
from workerfacing_api.adapters.identity import CognitoVerifier
from workerfacing_api.adapters.metrics import PrometheusMetrics
from workerfacing_api.container import Container, close_adapters
from workerfacing_api.entrypoints.duties import Duties
from workerfacing_api.entrypoints.http.access import Observe, RequestLog, note_route
from workerfacing_api.entrypoints.http.errors import EXCEPTION_HANDLERS
from workerfacing_api.entrypoints.http.openapi import ExactJsonRenderPlugin
from workerfacing_api.entrypoints.http.probes import Probes
from workerfacing_api.entrypoints.http.routes import ROUTES, Services
from workerfacing_api.entrypoints.http.routing import FileIdPaths
from workerfacing_api.entrypoints.http.ui import UI_ROUTES

log = logging.getLogger("workerfacing_api.http")


def _tune_garbage_collector() -> None:
    """Once started, what exists lives as long as the process (modules, the app, pools,
    sessions): keep the collector off it, and let it run less often (a request allocates some
    thousand objects). Measured: done before the server and the app start instead, the
    collector's full passes keep walking those objects and a job cycle costs more CPU."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


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
    request (see ``access.RequestLog``).

    Every service comes from the container, read when first needed (in the server's loop), so
    a provider overridden before the first request is what the requests use."""
    settings = container.settings()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        verifier = container.verifier()
        if isinstance(verifier, CognitoVerifier):
            await verifier.warm_up()  # the pool's keys, before the first worker needs them
        container.health()  # learns the schema's head now, not on a request
        if tune_gc:
            _tune_garbage_collector()
        duties = None
        if run_duties:
            duties = Duties(
                container.jobs(), container.sync(), sweep_interval=settings.sweep_interval
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
            # Shielded: should the shutdown be cancelled, closing still completes, so the queue
            # writes down the events it delivered (else they go out again) and hands back its
            # connections.
            await asyncio.shield(close_adapters(container))

    @functools.cache
    def probes() -> Probes:
        return Probes(
            container.queue(),
            container.health(),
            container.fleet(),
            container.metrics(),
            container.clock(),
            seen_window=settings.worker_seen_window,
        )

    def services() -> Services:
        return Services(
            jobs=container.jobs(),
            files=container.files(),
            signer=container.signer(),
            identity=container.identity(),
            settings=settings,
            explainer=container.explainer(),
            probes=probes(),
            overview=container.overview(),
        )

    dependencies = {"api": Provide(services, use_cache=True, sync_to_thread=False)}
    app = Litestar(
        route_handlers=[*ROUTES, *UI_ROUTES],
        dependencies=dependencies,
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        lifespan=[lifespan],
        state=State({"internal_api_key": container.internal_api_key()}),
        openapi_config=OpenAPIConfig(
            title="DECODE OpenCloud worker-facing API",
            version=__version__,
            path="/docs",
            render_plugins=[SwaggerRenderPlugin(path="/"), ExactJsonRenderPlugin()],
        ),
        logging_config=None,
        debug=False,
        middleware=[note_route],
    )
    if observe is None:  # the process's own metrics, when they are on
        metrics = container.metrics()
        if isinstance(metrics, PrometheusMetrics):
            observe = metrics.observe_request
    return RequestLog(FileIdPaths(app), access_log=settings.access_log, observe=observe)
