"""Adapters: the ports of ``workerfacing_api.core`` implemented on real infrastructure."""
