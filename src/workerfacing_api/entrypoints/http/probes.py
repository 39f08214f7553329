"""What a load balancer and a Prometheus server ask (DESIGN §7): is the process up, can it serve
(database answers, schema at the code's revision), and the metrics text.

Readiness is cheap enough to be asked every second: one tiny statement. A scrape reads the queue
(counts by state, the oldest queued job, the outbox, the workers seen) and costs a few
milliseconds; Prometheus asks every 15 to 60 s.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Protocol, runtime_checkable

from workerfacing_api.adapters.metrics import PrometheusMetrics
from workerfacing_api.core.errors import Unavailable
from workerfacing_api.core.fleet import Fleet
from workerfacing_api.core.ports import Clock, JobQueue, Metrics


@runtime_checkable
class _Migrated(Protocol):
    async def schema_revision(self) -> str | None: ...


@runtime_checkable
class _Pooled(Protocol):
    def pool_usage(self) -> tuple[int, int]: ...


class Probes:
    def __init__(
        self,
        queue: JobQueue,
        fleet: Fleet,
        metrics: Metrics,
        clock: Clock,
        *,
        seen_window: float,
    ) -> None:
        self._queue = queue
        self._fleet = fleet
        self._metrics = metrics if isinstance(metrics, PrometheusMetrics) else None
        self._clock = clock
        self._seen_window = timedelta(seconds=seen_window)
        self._head: str | None = None
        self._known: frozenset[str] = frozenset()

    @property
    def metrics(self) -> PrometheusMetrics | None:
        """The process's metrics, or None when they are off (``METRICS=0``)."""
        return self._metrics

    def expect_head(self) -> None:
        """Learn the packaged migrations' head once, at start-up (Alembic is slow to load)."""
        if isinstance(self._queue, _Migrated):
            from workerfacing_api.adapters.sql.migrate import revisions

            self._head, self._known = revisions()

    async def not_ready(self) -> str | None:
        """Why the process cannot serve now, or None when it can."""
        if not isinstance(self._queue, _Migrated):
            return None  # an in-memory queue: nothing to reach
        if self._head is None:
            self.expect_head()
        try:
            revision = await self._queue.schema_revision()
        except Unavailable as exc:
            return f"the queue's database does not answer: {exc.detail}"
        except Exception as exc:  # e.g. no alembic_version table: not migrated
            return f"the queue's database cannot be read ({type(exc).__name__}: {exc})"
        # A revision this code does not know is a newer release's: its migrations only add
        # (docs/OPERATIONS.md), so this process still serves during a rolling deploy.
        if revision is None or (revision in self._known and revision != self._head):
            return (
                f"the database schema is at revision {revision or 'none'}, the code needs "
                f"{self._head} (run: workerfacing-api db upgrade)"
            )
        return None

    async def scrape(self) -> bytes:
        assert self._metrics is not None
        now = self._clock.now()
        stats = await self._queue.stats(now)
        workers = await self._fleet.workers(now - self._seen_window)
        pool = self._queue.pool_usage() if isinstance(self._queue, _Pooled) else None
        return self._metrics.render(stats, workers, pool, now)
