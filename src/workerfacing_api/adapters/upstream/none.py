"""No user-facing API configured (``USERFACING_API_URL`` unset): nothing is forwarded.

The queue then records no outbox events at all, so nothing piles up waiting for an upstream that
does not exist; this adapter only answers if asked.
"""

from __future__ import annotations

from workerfacing_api.core.model import Delivery, StatusEvent


class NoUpstream:
    async def notify(self, event: StatusEvent, within: float) -> Delivery:
        return Delivery.DELIVERED

    async def aclose(self) -> None:
        return None
