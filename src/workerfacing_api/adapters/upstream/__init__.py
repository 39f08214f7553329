"""Upstream adapters: telling the user-facing API about status changes."""

from workerfacing_api.adapters.upstream.http import HttpUpstream

__all__ = ["HttpUpstream"]
