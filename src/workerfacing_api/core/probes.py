"""What a load balancer and a Prometheus server ask (ARCHITECTURE §7): can this process serve (its
store answers, with the schema of the code), and its metrics as text.

Readiness is cheap enough to be asked every second: one tiny statement. A scrape reads the queue
(counts by state, the oldest queued job, the outbox, the workers seen) and costs a few
milliseconds; Prometheus asks every 15 to 60 s.
"""

from __future__ import annotations

from datetime import timedelta

from workerfacing_api.core.demand import Demand
from workerfacing_api.core.errors import JobNotFound
from workerfacing_api.core.fleet import Fleet
from workerfacing_api.core.ports import Clock, JobQueue, MetricsReport, StoreHealth


class Probes:
    def __init__(
        self,
        queue: JobQueue,
        health: StoreHealth,
        fleet: Fleet,
        report: MetricsReport | None,
        clock: Clock,
        *,
        seen_window: float,
        demand: Demand | None = None,
    ) -> None:
        self._demand = demand
        self._queue = queue
        self._health = health
        self._fleet = fleet
        self._report = report
        self._clock = clock
        self._seen_window = timedelta(seconds=seen_window)

    async def not_ready(self) -> str | None:
        """Why the process cannot serve now, in words; None when it can."""
        return await self._health.not_ready()

    async def scrape(self) -> tuple[bytes, str]:
        """The metrics text and its content type; ``JobNotFound`` when metrics are off."""
        if self._report is None:
            raise JobNotFound("metrics are off here (METRICS=0)")
        now = self._clock.now()
        stats = await self._queue.stats(now)
        workers = await self._fleet.workers(now - self._seen_window)
        classes = (await self._demand.report()).classes if self._demand is not None else []
        text = self._report.render(stats, workers, self._health.connections(), now, classes)
        return text, self._report.content_type
