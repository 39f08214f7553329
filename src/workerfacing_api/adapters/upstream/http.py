"""The user-facing API over HTTP: ``PUT {USERFACING_API_URL}/_job_status`` with ``x-api-key``.

Uses aiohttp: each job cycle makes three of these calls, and on this project's 2-core machines
an aiohttp request costs about a fifth of the client CPU of an httpx one (see
docs/PERFORMANCE.md). One connection pool per process, created lazily in the serving event loop.
"""

from __future__ import annotations

import logging

import aiohttp
import msgspec

from workerfacing_api.core.model import Delivery, StatusEvent

log = logging.getLogger("workerfacing_api.upstream")


class _StatusBody(msgspec.Struct):
    job_id: int
    status: str
    runtime_details: str


class HttpUpstream:
    """Implements ``UpstreamNotifier``."""

    def __init__(self, base_url: str, api_key: str, *, max_connections: int = 64) -> None:
        self._url = base_url.rstrip("/") + "/_job_status"
        self._headers = {"x-api-key": api_key, "content-type": "application/json"}
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._encoder = msgspec.json.Encoder()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections, ttl_dns_cache=300),
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def notify(self, event: StatusEvent, within: float) -> Delivery:
        body = self._encoder.encode(
            _StatusBody(
                job_id=event.upstream_id,
                status=event.status.value,
                runtime_details=event.runtime_details or "",
            )
        )
        try:
            async with self._client().put(
                self._url,
                data=body,
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=within),
            ) as response:
                status = response.status
                await response.read()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            log.debug("upstream unreachable for job %s: %r", event.job_id, exc)
            return Delivery.RETRY
        if 200 <= status < 300:
            return Delivery.DELIVERED
        if status == 404:
            return Delivery.GONE
        if status not in (408, 429) and status < 500:
            # 401/422: a misconfiguration (wrong INTERNAL_API_KEY_SECRET?) that an operator must
            # fix; the event is kept and retried meanwhile, never dropped.
            log.error(
                "upstream refused status %s of job %s with HTTP %s; will retry",
                event.status.value,
                event.upstream_id,
                status,
            )
        return Delivery.RETRY

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
