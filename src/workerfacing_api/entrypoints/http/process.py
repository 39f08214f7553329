"""One `serve` process among several (``serve --workers N``): uvicorn starts each with this
factory, which builds the service from the environment as the parent did.

Each process has its own container, pool, sweeper and dispatcher; they share the database, where
compare-and-set, ``SKIP LOCKED`` and leases keep them apart (as separate machines would be).
The parent checked the configuration and migrated the database before it started them.
"""

from __future__ import annotations

from workerfacing_api.config import load_settings
from workerfacing_api.container import build_container
from workerfacing_api.entrypoints.http.access import RequestLog
from workerfacing_api.entrypoints.http.app import create_app
from workerfacing_api.entrypoints.logs import configure_logging


def app() -> RequestLog:
    settings = load_settings()
    container = build_container(settings)
    configure_logging(
        settings.log_level, settings.log_format, known_secrets=[container.internal_api_key()]
    )
    return create_app(container, tune_gc=True)
