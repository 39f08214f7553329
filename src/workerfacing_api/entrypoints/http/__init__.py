"""The Litestar HTTP entry point."""

from workerfacing_api.entrypoints.http.app import create_app

__all__ = ["create_app"]
