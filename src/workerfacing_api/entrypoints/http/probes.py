"""What a load balancer and a Prometheus server ask (DESIGN §7): is the process up, can it serve
(its store answers, schema at the code's revision), and the metrics text.

Readiness is cheap enough to be asked every second: one tiny statement. A scrape reads the queue
(counts by state, the oldest queued job, the outbox, the workers seen) and costs a few
milliseconds; Prometheus asks every 15 to 60 s.
"""

from __future__ import annotations

from datetime import timedelta

from workerfacing_api.adapters.metrics import PrometheusMetrics
from workerfacing_api.core.fleet import Fleet
from workerfacing_api.core.ports import Clock, JobQueue, Metrics, StoreHealth


class Probes:
    def __init__(
        self,
        queue: JobQueue,
        health: StoreHealth,
        fleet: Fleet,
        metrics: Metrics,
        clock: Clock,
        *,
        seen_window: float,
    ) -> None:
        self._queue = queue
        self._health = health
        self._fleet = fleet
        self._metrics = metrics if isinstance(metrics, PrometheusMetrics) else None
        self._clock = clock
        self._seen_window = timedelta(seconds=seen_window)

    @property
    def metrics(self) -> PrometheusMetrics | None:
        """The process's metrics, or None when they are off (``METRICS=0``)."""
        return self._metrics

    async def not_ready(self) -> str | None:
        """Why the process cannot serve now, or None when it can."""
        return await self._health.not_ready()

    async def scrape(self) -> bytes:
        assert self._metrics is not None
        now = self._clock.now()
        stats = await self._queue.stats(now)
        workers = await self._fleet.workers(now - self._seen_window)
        return self._metrics.render(stats, workers, self._health.connections(), now)
