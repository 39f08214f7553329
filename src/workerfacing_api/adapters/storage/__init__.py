"""Storage adapters: where job inputs are read and results written."""

from workerfacing_api.adapters.storage.local import LocalStorage

__all__ = ["LocalStorage"]
