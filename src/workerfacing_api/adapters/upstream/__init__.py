"""Upstream adapters: telling the user-facing API about status changes."""

from workerfacing_api.adapters.upstream.http import HttpUpstream
from workerfacing_api.adapters.upstream.none import NoUpstream

__all__ = ["HttpUpstream", "NoUpstream"]
